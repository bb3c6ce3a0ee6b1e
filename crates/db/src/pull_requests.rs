//! Pull requests built as jobsets without a generator: a project's
//! settings (`ProjectPullRequests`), the forge's view of each pull request
//! (`PullRequests`, written by the web server's webhooks and the
//! evaluator's reconcile), approvals, and the template a pull request's
//! jobset is copied from.
//!
//! The web server records what the forge says and sends
//! [`PULL_REQUESTS_CHANGED`]; the evaluator makes the jobsets match (one
//! writer of jobsets, with the forge client that reads the trust policy).

use serde_json::{Map, Value, json};
use sqlx::PgPool;

use crate::ids::JobsetId;

/// Sent (payload: the project) when a pull request's row changed, so the
/// evaluator brings its jobset in line.
pub const PULL_REQUESTS_CHANGED: &str = "pull_requests_changed";

/// A forge whose pull requests a project can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type, serde::Serialize, serde::Deserialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    Github,
    Gitea,
    Gitlab,
}

impl Forge {
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitea => "gitea",
            Forge::Gitlab => "gitlab",
        }
    }

    pub fn parse(s: &str) -> Option<Forge> {
        match s.trim().to_ascii_lowercase().as_str() {
            "github" => Some(Forge::Github),
            "gitea" | "forgejo" => Some(Forge::Gitea),
            "gitlab" => Some(Forge::Gitlab),
            _ => None,
        }
    }

    /// The ref under which the base repository serves pull request `n`'s
    /// head (also for pull requests from forks).
    pub fn head_ref(self, n: i32) -> String {
        match self {
            Forge::Github | Forge::Gitea => format!("refs/pull/{n}/head"),
            Forge::Gitlab => format!("refs/merge-requests/{n}/head"),
        }
    }
}

/// A project's "build pull requests" settings.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Settings {
    pub project: String,
    pub forge: Forge,
    pub repository: String,
    #[sqlx(rename = "apiurl")]
    pub api_url: Option<String>,
    pub template: String,
    pub input: Option<String>,
    #[sqlx(rename = "trustedauthors")]
    pub trusted_authors: String,
    #[sqlx(rename = "trustedassociations")]
    pub trusted_associations: String,
}

/// The settings' select, followed by `$rest`.
macro_rules! settings_where {
    ($rest:literal) => {
        concat!(
            "select project, forge, repository, apiUrl, template, input, \
             trustedAuthors, trustedAssociations from ProjectPullRequests s ",
            $rest
        )
    };
}

/// Project `project`'s settings, if it builds pull requests.
pub async fn settings(pool: &PgPool, project: &str) -> Result<Option<Settings>, sqlx::Error> {
    sqlx::query_as(settings_where!("where project = $1"))
        .bind(project)
        .fetch_optional(pool)
        .await
}

/// Every project that builds pull requests.
pub async fn all_settings(pool: &PgPool) -> Result<Vec<Settings>, sqlx::Error> {
    sqlx::query_as(settings_where!(
        "where exists (select 1 from Projects p where p.name = s.project and p.enabled = 1) \
         order by project"
    ))
    .fetch_all(pool)
    .await
}

/// The projects that build the pull requests of `repository` on `forge`
/// (compared without case, as forges do).
pub async fn following(
    pool: &PgPool,
    forge: Forge,
    repository: &str,
) -> Result<Vec<Settings>, sqlx::Error> {
    sqlx::query_as(settings_where!(
        "where forge = $1 and lower(repository) = lower($2) order by project"
    ))
    .bind(forge)
    .bind(repository.trim_matches('/'))
    .fetch_all(pool)
    .await
}

/// Turns pull-request building on (or changes its settings).
pub async fn save_settings(pool: &PgPool, s: &Settings) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into ProjectPullRequests (project, forge, repository, apiUrl, template, input, \
           trustedAuthors, trustedAssociations) values ($1, $2, $3, $4, $5, $6, $7, $8) \
         on conflict (project) do update set forge = excluded.forge, repository = excluded.repository, \
           apiUrl = excluded.apiUrl, template = excluded.template, input = excluded.input, \
           trustedAuthors = excluded.trustedAuthors, trustedAssociations = excluded.trustedAssociations",
    )
    .bind(&s.project)
    .bind(s.forge)
    .bind(&s.repository)
    .bind(&s.api_url)
    .bind(&s.template)
    .bind(&s.input)
    .bind(&s.trusted_authors)
    .bind(&s.trusted_associations)
    .execute(pool)
    .await?;
    // Every pull request's jobset is made to match the new settings.
    sqlx::query("update PullRequests set syncedKey = null where project = $1")
        .bind(&s.project)
        .execute(pool)
        .await?;
    crate::notify::publish(pool, PULL_REQUESTS_CHANGED, &s.project).await
}

/// Turns pull-request building off (the jobsets stay as they are).
pub async fn remove_settings(pool: &PgPool, project: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from ProjectPullRequests where project = $1")
        .bind(project)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Open or closed (merged counts as closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum State {
    Open,
    Closed,
}

/// What a forge says about a pull request (a webhook delivery or one
/// entry of its list of open pull requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub number: i32,
    pub title: String,
    pub author: String,
    pub association: Option<String>,
    pub state: State,
    pub head_sha: String,
    /// The base repository's clone URL (it serves every head, forks' too).
    pub clone_url: String,
    pub fork: bool,
    pub default_branch: Option<String>,
    /// The forge's `updated_at`, in seconds.
    pub updated_at: i32,
}

/// What [`record`] did with an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Stored; the evaluator was told.
    Applied,
    /// Older than what is stored (an out-of-order delivery): ignored.
    Stale,
}

/// Stores what the forge says about a pull request of `project`, unless
/// an observation with a later `updated_at` is already stored.
pub async fn record(
    pool: &PgPool,
    project: &str,
    forge: Forge,
    seen: &Observed,
) -> Result<Recorded, sqlx::Error> {
    let stored: Option<i32> = sqlx::query_scalar(
        "insert into PullRequests (project, number, title, author, association, state, headSha, \
           headRef, cloneUrl, fork, defaultBranch, updatedAt) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         on conflict (project, number) do update set title = excluded.title, author = excluded.author, \
           association = excluded.association, state = excluded.state, headSha = excluded.headSha, \
           headRef = excluded.headRef, cloneUrl = excluded.cloneUrl, fork = excluded.fork, \
           defaultBranch = coalesce(excluded.defaultBranch, PullRequests.defaultBranch), \
           updatedAt = excluded.updatedAt \
         where PullRequests.updatedAt <= excluded.updatedAt \
         returning number",
    )
    .bind(project)
    .bind(seen.number)
    .bind(&seen.title)
    .bind(&seen.author)
    .bind(&seen.association)
    .bind(seen.state)
    .bind(&seen.head_sha)
    .bind(forge.head_ref(seen.number))
    .bind(&seen.clone_url)
    .bind(seen.fork)
    .bind(&seen.default_branch)
    .bind(seen.updated_at)
    .fetch_optional(pool)
    .await?;
    if stored.is_none() {
        return Ok(Recorded::Stale);
    }
    crate::notify::publish(pool, PULL_REQUESTS_CHANGED, project).await?;
    Ok(Recorded::Applied)
}

/// Closes the open pull requests of `project` that are not in `open` (the
/// forge's list, fetched at `listed_at`) and were not heard of since.
pub async fn close_missing(
    pool: &PgPool,
    project: &str,
    open: &[i32],
    listed_at: i32,
) -> Result<Vec<i32>, sqlx::Error> {
    let closed: Vec<i32> = sqlx::query_scalar(
        "update PullRequests set state = 'closed', updatedAt = $3 \
         where project = $1 and state = 'open' and number <> all($2) and updatedAt < $3 \
         returning number",
    )
    .bind(project)
    .bind(open)
    .bind(listed_at)
    .fetch_all(pool)
    .await?;
    if !closed.is_empty() {
        crate::notify::publish(pool, PULL_REQUESTS_CHANGED, project).await?;
    }
    Ok(closed)
}

/// A pull request as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PullRequest {
    pub project: String,
    pub number: i32,
    pub title: String,
    pub author: String,
    pub association: Option<String>,
    pub state: State,
    #[sqlx(rename = "headsha")]
    pub head_sha: String,
    #[sqlx(rename = "headref")]
    pub head_ref: String,
    #[sqlx(rename = "cloneurl")]
    pub clone_url: String,
    pub fork: bool,
    #[sqlx(rename = "defaultbranch")]
    pub default_branch: Option<String>,
    #[sqlx(rename = "updatedat")]
    pub updated_at: i32,
    #[sqlx(rename = "approvedsha")]
    pub approved_sha: Option<String>,
    #[sqlx(rename = "approvedby")]
    pub approved_by: Option<String>,
    #[sqlx(rename = "approvedat")]
    pub approved_at: Option<i32>,
    /// The author was trusted when the jobset was last updated.
    pub trusted: bool,
    #[serde(skip)]
    pub jobset_id: Option<i32>,
    #[serde(skip)]
    #[sqlx(rename = "syncedkey")]
    pub synced_key: Option<String>,
}

impl PullRequest {
    /// Whether the current head was approved.
    pub fn head_approved(&self) -> bool {
        self.approved_sha.as_deref() == Some(self.head_sha.as_str())
    }

    /// What the jobset must reflect: when this changes, it is updated.
    pub fn key(&self, trusted: bool) -> String {
        format!(
            "{:?} {} {}",
            self.state,
            self.head_sha,
            trusted || self.head_approved()
        )
    }
}

/// The pull requests' select, followed by `$rest`.
macro_rules! pull_requests_where {
    ($rest:literal) => {
        concat!(
            "select project, number, title, author, association, state, headSha, headRef, \
             cloneUrl, fork, defaultBranch, updatedAt, approvedSha, approvedBy, approvedAt, \
             trusted, jobset_id, syncedKey from PullRequests ",
            $rest
        )
    };
}

/// The pull requests of `project`, newest number first.
pub async fn of_project(pool: &PgPool, project: &str) -> Result<Vec<PullRequest>, sqlx::Error> {
    sqlx::query_as(pull_requests_where!(
        "where project = $1 order by number desc"
    ))
    .bind(project)
    .fetch_all(pool)
    .await
}

/// The pull request whose jobset is `jobset`, if any.
pub async fn of_jobset(
    pool: &PgPool,
    jobset: JobsetId,
) -> Result<Option<PullRequest>, sqlx::Error> {
    sqlx::query_as(pull_requests_where!("where jobset_id = $1"))
        .bind(jobset)
        .fetch_optional(pool)
        .await
}

/// Records that the jobset of pull request `number` is `jobset` and
/// matches `key`, its author `trusted` or not.
pub async fn mark_synced(
    pool: &PgPool,
    project: &str,
    number: i32,
    jobset: JobsetId,
    key: &str,
    trusted: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update PullRequests set jobset_id = $3, syncedKey = $4, trusted = $5 \
         where project = $1 and number = $2",
    )
    .bind(project)
    .bind(number)
    .bind(jobset)
    .bind(key)
    .bind(trusted)
    .execute(pool)
    .await?;
    Ok(())
}

/// Approves the current head of pull request `number` of `project` on
/// behalf of `user`; returns the approved revision (`None`: no such pull
/// request).
pub async fn approve(
    pool: &PgPool,
    project: &str,
    number: i32,
    user: &str,
    now: i32,
) -> Result<Option<String>, sqlx::Error> {
    let sha: Option<String> = sqlx::query_scalar(
        "update PullRequests set approvedSha = headSha, approvedBy = $3, approvedAt = $4 \
         where project = $1 and number = $2 returning approvedSha",
    )
    .bind(project)
    .bind(number)
    .bind(user)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    if sha.is_some() {
        crate::notify::publish(pool, PULL_REQUESTS_CHANGED, project).await?;
    }
    Ok(sha)
}

/// The name of pull request `number`'s jobset: the template's name with
/// `-pr-N`, the suffix commit-status contexts drop, so that they stay the
/// same from one pull request to the next.
pub fn jobset_name(template: &str, number: i32) -> String {
    format!("{template}-pr-{number}")
}

/// Jobset `template` of `project` as a declarative specification (the
/// form `declarative::update_jobset` takes), or `None` if it is gone.
pub async fn template_spec(
    pool: &PgPool,
    project: &str,
    template: &str,
) -> Result<Option<Value>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        r#type: i32,
        flake: Option<String>,
        nixexprinput: Option<String>,
        nixexprpath: Option<String>,
        schedulingshares: i32,
        enableemail: i32,
        emailoverride: String,
        keepnr: i32,
    }
    let Some(row): Option<Row> = sqlx::query_as(
        "select type, flake, nixExprInput, nixExprPath, schedulingShares, enableEmail, \
           emailOverride, keepnr from Jobsets where project = $1 and name = $2",
    )
    .bind(project)
    .bind(template)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let inputs: Vec<(String, String, Option<String>, i32)> = sqlx::query_as(
        "select i.name, i.type, a.value, i.emailResponsible from JobsetInputs i \
         left join JobsetInputAlts a on a.project = i.project and a.jobset = i.jobset and a.input = i.name and a.altnr = 0 \
         where i.project = $1 and i.jobset = $2 order by i.name",
    )
    .bind(project)
    .bind(template)
    .fetch_all(pool)
    .await?;
    let mut spec = Map::new();
    spec.insert("type".into(), json!(row.r#type));
    spec.insert("flake".into(), json!(row.flake.unwrap_or_default()));
    spec.insert(
        "nixexprinput".into(),
        json!(row.nixexprinput.unwrap_or_default()),
    );
    spec.insert(
        "nixexprpath".into(),
        json!(row.nixexprpath.unwrap_or_default()),
    );
    spec.insert("schedulingshares".into(), json!(row.schedulingshares));
    spec.insert("enableemail".into(), json!(row.enableemail != 0));
    spec.insert("emailoverride".into(), json!(row.emailoverride));
    spec.insert("keepnr".into(), json!(row.keepnr));
    // Evaluated when the forge reports a change, not on a timer.
    spec.insert("checkinterval".into(), json!(0));
    let inputs: Map<String, Value> = inputs
        .into_iter()
        .map(|(name, kind, value, responsible)| {
            (
                name,
                json!({
                    "type": kind,
                    "value": value.unwrap_or_default(),
                    "emailresponsible": responsible != 0,
                }),
            )
        })
        .collect();
    spec.insert("inputs".into(), Value::Object(inputs));
    Ok(Some(Value::Object(spec)))
}

/// Seconds since the epoch of a forge's time stamp: RFC 3339
/// (`2026-12-04T18:25:03Z`, fractions and offsets too) or GitLab's
/// webhook form (`2026-12-04 18:25:03 UTC`).
pub fn parse_time(text: &str) -> Option<i32> {
    let text = text.trim();
    let (date, rest) = text.split_at_checked(10)?;
    let mut d = date.split('-');
    let (year, month, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let rest = rest.strip_prefix(['T', 't', ' '])?;
    let (clock, zone) = rest.split_at_checked(8)?;
    let mut c = clock.split(':');
    let (hour, minute, second): (i64, i64, i64) = (
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Fractions of a second do not order deliveries any better.
    let zone = zone.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone.trim() {
        "Z" | "z" | "UTC" | "" => 0,
        z => {
            let sign = match z.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = z[1..]
                .split_once(':')
                .unwrap_or((&z[1..3.min(z.len())], &z[3.min(z.len())..]));
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().unwrap_or(0) * 60)
        }
    };
    // Days from the civil date (proleptic Gregorian).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    i32::try_from(days * 86_400 + hour * 3600 + minute * 60 + second - offset).ok()
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn number(v: &Value, key: &str) -> Option<i32> {
    v.get(key)?.as_i64().and_then(|n| i32::try_from(n).ok())
}

impl Observed {
    /// A GitHub or Gitea pull request object (a webhook's `pull_request`
    /// or an entry of the list of pull requests).
    pub fn from_github(pr: &Value) -> Result<Observed, String> {
        let number = number(pr, "number").ok_or("the pull request has no number")?;
        let need = |path: &[&str]| {
            text(pr, path)
                .map(str::to_owned)
                .ok_or_else(|| format!("pull request {number} has no {}", path.join(".")))
        };
        let base = text(pr, &["base", "repo", "full_name"]).unwrap_or_default();
        // A head repository that was deleted is a fork we cannot vouch for.
        let fork = text(pr, &["head", "repo", "full_name"])
            .is_none_or(|head| !head.eq_ignore_ascii_case(base));
        let updated = need(&["updated_at"])?;
        let state = match text(pr, &["state"]) {
            Some("open") => State::Open,
            Some(_) => State::Closed,
            None => return Err(format!("pull request {number} has no state")),
        };
        Ok(Observed {
            number,
            title: text(pr, &["title"]).unwrap_or_default().to_owned(),
            author: need(&["user", "login"])?,
            association: text(pr, &["author_association"]).map(str::to_owned),
            state,
            head_sha: need(&["head", "sha"])?,
            clone_url: need(&["base", "repo", "clone_url"])?,
            fork,
            default_branch: text(pr, &["base", "repo", "default_branch"]).map(str::to_owned),
            updated_at: parse_time(&updated)
                .ok_or_else(|| format!("pull request {number}: bad updated_at `{updated}`"))?,
        })
    }

    /// A GitLab merge request: a `Merge Request Hook` delivery (with its
    /// `object_attributes`, `user` and `project`), or an entry of the list
    /// of merge requests with the project's `clone_url` and default branch
    /// read separately.
    pub fn from_gitlab(
        mr: &Value,
        clone_url: Option<&str>,
        default_branch: Option<&str>,
    ) -> Result<Observed, String> {
        let hook = mr.get("object_attributes");
        let attrs = hook.unwrap_or(mr);
        let number = number(attrs, "iid").ok_or("the merge request has no iid")?;
        let missing = |what: &str| format!("merge request {number} has no {what}");
        let head_sha = text(attrs, &["last_commit", "id"])
            .or_else(|| text(attrs, &["sha"]))
            .ok_or_else(|| missing("head commit"))?;
        let author = match hook {
            Some(_) => text(mr, &["user", "username"]),
            None => text(attrs, &["author", "username"]),
        }
        .ok_or_else(|| missing("author"))?;
        let clone_url = clone_url
            .or_else(|| text(mr, &["project", "git_http_url"]))
            .ok_or_else(|| missing("project clone URL"))?;
        let default_branch = default_branch.or_else(|| text(mr, &["project", "default_branch"]));
        let fork = number_of(attrs, "source_project_id") != number_of(attrs, "target_project_id");
        let updated = text(attrs, &["updated_at"]).ok_or_else(|| missing("updated_at"))?;
        let state = match text(attrs, &["state"]) {
            Some("opened") => State::Open,
            Some(_) => State::Closed,
            None => return Err(missing("state")),
        };
        Ok(Observed {
            number,
            title: text(attrs, &["title"]).unwrap_or_default().to_owned(),
            author: author.to_owned(),
            association: None,
            state,
            head_sha: head_sha.to_owned(),
            clone_url: clone_url.to_owned(),
            fork,
            default_branch: default_branch.map(str::to_owned),
            updated_at: parse_time(updated)
                .ok_or_else(|| format!("merge request {number}: bad updated_at `{updated}`"))?,
        })
    }
}

fn number_of(v: &Value, key: &str) -> Option<i64> {
    v.get(key)?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_times_are_read_in_every_form() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-12-04T18:25:03Z"), Some(1_796_408_703));
        assert_eq!(parse_time("2026-12-04T18:25:03.250Z"), Some(1_796_408_703));
        assert_eq!(parse_time("2026-12-04T19:25:03+01:00"), Some(1_796_408_703));
        assert_eq!(parse_time("2026-12-04 18:25:03 UTC"), Some(1_796_408_703));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-04T18:25:03Z"), None);
    }

    fn github_pr(head_repo: Value) -> Value {
        json!({
            "number": 7, "title": "Fix it", "state": "open",
            "user": {"login": "mallory"}, "author_association": "NONE",
            "updated_at": "2026-12-04T18:25:03Z",
            "head": {"sha": "abc", "ref": "fix", "repo": head_repo},
            "base": {"ref": "main", "repo": {"full_name": "o/r", "clone_url": "https://example.org/o/r.git", "default_branch": "main"}},
        })
    }

    #[test]
    fn github_pull_requests_are_read_and_forks_recognised() {
        let own = Observed::from_github(&github_pr(json!({"full_name": "O/R"}))).unwrap();
        assert_eq!(own.number, 7);
        assert_eq!(own.author, "mallory");
        assert_eq!(own.association.as_deref(), Some("NONE"));
        assert_eq!(own.state, State::Open);
        assert_eq!(own.head_sha, "abc");
        assert_eq!(own.clone_url, "https://example.org/o/r.git");
        assert!(!own.fork, "same repository, whatever the case");
        assert_eq!(own.default_branch.as_deref(), Some("main"));
        let fork = Observed::from_github(&github_pr(json!({"full_name": "m/r"}))).unwrap();
        assert!(fork.fork);
        let deleted = Observed::from_github(&github_pr(Value::Null)).unwrap();
        assert!(deleted.fork, "a deleted head repository is a fork");
        let err = Observed::from_github(&json!({"number": 3})).unwrap_err();
        assert!(err.contains("pull request 3 has no"), "{err}");
    }

    #[test]
    fn gitlab_merge_requests_are_read_from_hooks_and_lists() {
        let hook = json!({
            "object_kind": "merge_request",
            "user": {"username": "alice"},
            "project": {"git_http_url": "https://gl.example.org/g/p.git", "default_branch": "main"},
            "object_attributes": {
                "iid": 4, "title": "T", "state": "opened",
                "last_commit": {"id": "def"},
                "source_project_id": 9, "target_project_id": 9,
                "updated_at": "2026-12-04 18:25:03 UTC"
            }
        });
        let seen = Observed::from_gitlab(&hook, None, None).unwrap();
        assert_eq!(
            (
                seen.number,
                seen.author.as_str(),
                seen.head_sha.as_str(),
                seen.fork
            ),
            (4, "alice", "def", false)
        );
        assert_eq!(seen.clone_url, "https://gl.example.org/g/p.git");
        assert_eq!(seen.updated_at, 1_796_408_703);
        let listed = json!({
            "iid": 5, "title": "U", "state": "merged", "sha": "123",
            "author": {"username": "bob"},
            "source_project_id": 10, "target_project_id": 9,
            "updated_at": "2026-12-04T18:25:03.000Z"
        });
        let seen = Observed::from_gitlab(&listed, Some("https://x/p.git"), Some("dev")).unwrap();
        assert_eq!(seen.state, State::Closed);
        assert!(seen.fork);
        assert_eq!(seen.default_branch.as_deref(), Some("dev"));
    }

    #[test]
    fn pull_request_jobsets_end_in_the_suffix_contexts_drop() {
        assert_eq!(jobset_name("main", 12), "main-pr-12");
        assert_eq!(Forge::Gitlab.head_ref(3), "refs/merge-requests/3/head");
        assert_eq!(Forge::Github.head_ref(3), "refs/pull/3/head");
    }
}
