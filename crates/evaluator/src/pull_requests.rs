//! Pull requests as jobsets, without a generator: the evaluator keeps one
//! jobset per open pull request of each project that builds them.
//!
//! The web server records what the forge's webhooks say (`PullRequests`)
//! and sends `pull_requests_changed`; every `pull_requests_reconcile_interval`
//! this task also reads each repository's open pull requests, so a missed
//! delivery is caught up. Then each pull request whose (state, head,
//! trust) changed gets its jobset made to match:
//!
//! - open and trusted (or its head approved): the template jobset, copied
//!   with the repository input (or flake) pinned to the head, enabled and
//!   triggered;
//! - open and not trusted: the same jobset, disabled until a project
//!   member approves the head;
//! - closed: disabled and hidden, never deleted.
//!
//! Trust: not from a fork, and the author's login or GitHub association
//! is in the project's set or in `.hydra/pull-requests.json`
//! (`{"trusted_authors": […], "trusted_associations": […]}`) as it is on
//! the repository's **default branch** — a pull request cannot vouch for
//! itself. Work of an earlier head that nothing live wants any more is
//! cancelled, lowered or kept as the project's superseded policy says.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use hydra_db::builds::CancelReason;
use hydra_db::ids::JobsetId;
use hydra_db::pull_requests::{self as prs, Forge, Observed, PullRequest, Settings, State};
use hydra_db::{Listener, Wakeup, superseded};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::inputs::pulls::{Query, client, items};

/// `s` as one URL path segment or query value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where a repository keeps the trust policy (read on its default branch).
pub(crate) const POLICY_FILE: &str = ".hydra/pull-requests.json";

/// Keeps the pull-request jobsets in line until `shutdown`.
pub(crate) async fn run(ctx: Context, shutdown: CancellationToken) {
    let mut listener = loop {
        match Listener::connect(&ctx.pool, &[prs::PULL_REQUESTS_CHANGED]).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::error!(error = %e, "pull requests: cannot listen; trying again in 10 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        }
    };
    let interval = Duration::from_secs(ctx.config.evaluator.pull_requests_reconcile_interval);
    let mut next_reconcile = Instant::now();
    // The settings each project was last reconciled with: a project
    // that starts building pull requests (or changes repository) is
    // read at once, not at the next interval.
    let mut reconciled: HashMap<String, Settings> = HashMap::new();
    // The project a notification named (`None`: every project).
    let mut only: Option<String> = None;
    loop {
        let everything = Instant::now() >= next_reconcile;
        if everything {
            next_reconcile = Instant::now() + interval;
        }
        reconcile_all(&ctx, &mut reconciled, everything).await;
        sync_all(&ctx, only.take().as_deref()).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            woken = listener.recv() => match woken {
                // One project's pull requests changed: only its jobsets
                // are looked at (and its trust policy read).
                Ok(Wakeup::Notification { payload, .. }) => only = Some(payload),
                // Missed notifications: the rows say what changed.
                Ok(Wakeup::Rescan) => {}
                Err(e) => {
                    tracing::error!(error = %e, "pull requests: lost the database; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            },
            _ = tokio::time::sleep_until(next_reconcile.into()) => {}
        }
    }
}

/// Reconciles every project (`everything`), or those whose settings
/// changed since they were last reconciled.
async fn reconcile_all(
    ctx: &Context,
    reconciled: &mut HashMap<String, Settings>,
    everything: bool,
) {
    let all = match prs::all_settings(&ctx.pool).await {
        Ok(all) => all,
        Err(e) => {
            tracing::error!(error = %e, "pull requests: cannot read the projects");
            return;
        }
    };
    reconciled.retain(|project, _| all.iter().any(|s| &s.project == project));
    for settings in all {
        if !everything && reconciled.get(&settings.project) == Some(&settings) {
            continue;
        }
        match reconcile(ctx, &settings).await {
            Ok(()) => {
                reconciled.insert(settings.project.clone(), settings);
            }
            Err(e) => {
                // Tried again at the next interval, not on every wakeup.
                reconciled.insert(settings.project.clone(), settings.clone());
                tracing::warn!(project = %settings.project, error = %e, "pull requests: cannot read the forge's open pull requests");
            }
        }
    }
}

/// Brings the jobsets of `only` (else of every project) in line.
async fn sync_all(ctx: &Context, only: Option<&str>) {
    let all = match prs::all_settings(&ctx.pool).await {
        Ok(all) => all,
        Err(e) => {
            tracing::error!(error = %e, "pull requests: cannot read the projects");
            return;
        }
    };
    for settings in all {
        if only.is_some_and(|p| p != settings.project) {
            continue;
        }
        if let Err(e) = sync(ctx, &settings).await {
            tracing::error!(project = %settings.project, error = %e, "pull requests: cannot update the jobsets");
        }
    }
}

/// A forge's API for one project's repository.
struct Api<'a> {
    settings: &'a Settings,
    base: String,
    headers: Vec<(&'static str, String)>,
}

impl<'a> Api<'a> {
    fn new(ctx: &Context, settings: &'a Settings) -> Result<Api<'a>, String> {
        let evaluator = &ctx.config.evaluator;
        let configured = settings
            .api_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty());
        let owner = settings.repository.split('/').next().unwrap_or_default();
        let (base, headers) = match settings.forge {
            Forge::Github => {
                let mut headers = vec![("Accept", "application/vnd.github.v3+json".to_string())];
                if let Some(token) = evaluator.github_authorization.get(owner) {
                    headers.push(("Authorization", token.expose().to_string()));
                }
                (
                    configured.unwrap_or_else(|| evaluator.github_api_url.clone()),
                    headers,
                )
            }
            Forge::Gitea => {
                let mut headers = Vec::new();
                if let Some(token) = evaluator.gitea_authorization.get(owner) {
                    headers.push(("Authorization", format!("token {}", token.expose())));
                }
                (
                    configured.ok_or("a Gitea repository needs the forge's URL")?,
                    headers,
                )
            }
            Forge::Gitlab => {
                let mut headers = Vec::new();
                if let Some(token) = evaluator.gitlab_authorization.get(&settings.repository) {
                    headers.push(("Private-Token", token.expose().to_string()));
                }
                (
                    configured.ok_or("a GitLab repository needs the forge's URL")?,
                    headers,
                )
            }
        };
        Ok(Api {
            settings,
            base,
            headers,
        })
    }

    fn gitlab_project(&self) -> String {
        format!(
            "{}/api/v4/projects/{}",
            self.base,
            encode(&self.settings.repository)
        )
    }

    /// The open pull requests, as the forge lists them.
    async fn open(&self) -> Result<Vec<Observed>, String> {
        let repo = &self.settings.repository;
        let what = format!("pull requests of {repo}");
        let list = |url: String| Query {
            url,
            headers: self.headers.clone(),
            items_in: None,
        };
        match self.settings.forge {
            Forge::Github | Forge::Gitea => {
                let url = match self.settings.forge {
                    Forge::Github => {
                        format!("{}/repos/{repo}/pulls?state=open&per_page=100", self.base)
                    }
                    _ => format!(
                        "{}/api/v1/repos/{repo}/pulls?state=open&limit=50",
                        self.base
                    ),
                };
                let found = items(&what, &list(url)).await.map_err(|e| e.0)?;
                found.iter().map(Observed::from_github).collect()
            }
            Forge::Gitlab => {
                let project: Value = self.get_json(&self.gitlab_project()).await?;
                let clone_url = project["http_url_to_repo"].as_str();
                let default_branch = project["default_branch"].as_str();
                let url = format!(
                    "{}/merge_requests?state=opened&per_page=100",
                    self.gitlab_project()
                );
                let found = items(&what, &list(url)).await.map_err(|e| e.0)?;
                found
                    .iter()
                    .map(|mr| Observed::from_gitlab(mr, clone_url, default_branch))
                    .collect()
            }
        }
    }

    async fn get(&self, url: &str, accept: Option<&str>) -> Result<Option<String>, String> {
        let client = client().map_err(|e| e.0)?;
        let mut request = client.get(url);
        for (name, value) in &self.headers {
            if accept.is_some() && *name == "Accept" {
                continue;
            }
            request = request.header(*name, value);
        }
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{url} answered {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        Ok(Some(text))
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let text = self
            .get(url, None)
            .await?
            .ok_or_else(|| format!("{url} answered 404"))?;
        serde_json::from_str(&text).map_err(|e| format!("{url} is not JSON: {e}"))
    }

    /// The trust policy file as it is on `branch` (`None`: there is none).
    async fn policy_file(&self, branch: &str) -> Result<Option<String>, String> {
        let repo = &self.settings.repository;
        let branch = encode(branch);
        let (url, accept) = match self.settings.forge {
            Forge::Github => (
                format!(
                    "{}/repos/{repo}/contents/{POLICY_FILE}?ref={branch}",
                    self.base
                ),
                Some("application/vnd.github.raw+json"),
            ),
            Forge::Gitea => (
                format!(
                    "{}/api/v1/repos/{repo}/raw/{POLICY_FILE}?ref={branch}",
                    self.base
                ),
                None,
            ),
            Forge::Gitlab => (
                format!(
                    "{}/repository/files/{}/raw?ref={branch}",
                    self.gitlab_project(),
                    encode(POLICY_FILE)
                ),
                None,
            ),
        };
        self.get(&url, accept).await
    }
}

/// Reads the forge's open pull requests into `PullRequests`, closing the
/// ones it no longer lists.
async fn reconcile(ctx: &Context, settings: &Settings) -> Result<(), String> {
    let api = Api::new(ctx, settings)?;
    let listed_at = hydra_db::now();
    let open = api.open().await?;
    let mut numbers = Vec::with_capacity(open.len());
    for seen in &open {
        numbers.push(seen.number);
        prs::record(&ctx.pool, &settings.project, settings.forge, seen)
            .await
            .map_err(|e| e.to_string())?;
    }
    let closed = prs::close_missing(&ctx.pool, &settings.project, &numbers, listed_at)
        .await
        .map_err(|e| e.to_string())?;
    tracing::debug!(project = %settings.project, open = numbers.len(), ?closed, "pull requests reconciled");
    Ok(())
}

/// Who is trusted: logins (compared without case) and GitHub author
/// associations.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Trust {
    authors: BTreeSet<String>,
    associations: BTreeSet<String>,
}

impl Trust {
    fn of_settings(settings: &Settings) -> Trust {
        let words = |s: &str| -> Vec<String> {
            s.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut trust = Trust::default();
        trust.add(
            words(&settings.trusted_authors),
            words(&settings.trusted_associations),
        );
        trust
    }

    fn add(&mut self, authors: Vec<String>, associations: Vec<String>) {
        self.authors
            .extend(authors.into_iter().map(|a| a.to_lowercase()));
        self.associations
            .extend(associations.into_iter().map(|a| a.to_uppercase()));
    }

    /// Adds the policy file's sets.
    pub(crate) fn add_file(&mut self, text: &str) -> Result<(), String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("{POLICY_FILE} is not JSON: {e}"))?;
        let list = |key: &str| -> Result<Vec<String>, String> {
            match value.get(key) {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{POLICY_FILE}: `{key}` must list strings"))
                    })
                    .collect(),
                Some(_) => Err(format!("{POLICY_FILE}: `{key}` must be a list")),
            }
        };
        let (authors, associations) = (list("trusted_authors")?, list("trusted_associations")?);
        self.add(authors, associations);
        Ok(())
    }

    /// Whether `pr` is built without an approval.
    pub(crate) fn trusts(&self, pr: &PullRequest) -> bool {
        !pr.fork
            && (self.authors.contains(&pr.author.to_lowercase())
                || pr
                    .association
                    .as_deref()
                    .is_some_and(|a| self.associations.contains(&a.to_uppercase())))
    }
}

/// Makes the jobset of each pull request of `settings.project` whose
/// state, head or trust changed match it.
async fn sync(ctx: &Context, settings: &Settings) -> Result<(), String> {
    let db = |e: sqlx::Error| e.to_string();
    let all = prs::of_project(&ctx.pool, &settings.project)
        .await
        .map_err(db)?;
    let mut trust_by_branch: HashMap<Option<String>, Trust> = HashMap::new();
    for pr in all {
        if pr.state == State::Closed && pr.jobset_id.is_none() {
            continue;
        }
        // A closed pull request's jobset is retired whoever wrote it.
        let trusted = pr.state == State::Open && {
            if !trust_by_branch.contains_key(&pr.default_branch) {
                let trust = trust(ctx, settings, pr.default_branch.as_deref()).await;
                trust_by_branch.insert(pr.default_branch.clone(), trust);
            }
            trust_by_branch
                .get(&pr.default_branch)
                .is_some_and(|t| t.trusts(&pr))
        };
        let key = pr.key(trusted);
        // A deleted jobset leaves `jobset_id` empty: it is made again.
        if pr.synced_key.as_deref() == Some(key.as_str()) && pr.jobset_id.is_some() {
            continue;
        }
        let name = prs::jobset_name(&settings.template, pr.number);
        let Some(jobset) = apply(ctx, settings, &pr, trusted, &name).await? else {
            continue;
        };
        prs::mark_synced(
            &ctx.pool,
            &settings.project,
            pr.number,
            jobset,
            &key,
            trusted,
        )
        .await
        .map_err(db)?;
        if pr.state == State::Open && (trusted || pr.head_approved()) {
            hydra_db::jobsets::trigger(&ctx.pool, &settings.project, &name, hydra_db::now(), false)
                .await
                .map_err(db)?;
        }
    }
    Ok(())
}

/// The trust of `settings.project`: its own sets and the policy file on
/// `default_branch`. A file that cannot be read widens nothing.
async fn trust(ctx: &Context, settings: &Settings, default_branch: Option<&str>) -> Trust {
    let mut trust = Trust::of_settings(settings);
    let Some(branch) = default_branch else {
        return trust;
    };
    let file = match Api::new(ctx, settings) {
        Ok(api) => api.policy_file(branch).await,
        Err(e) => Err(e),
    };
    match file {
        Ok(None) => {}
        Ok(Some(text)) => {
            if let Err(e) = trust.add_file(&text) {
                tracing::warn!(project = %settings.project, error = %e, "pull requests: ignoring the trust policy file");
            }
        }
        Err(e) => {
            tracing::warn!(project = %settings.project, error = %e, "pull requests: cannot read the trust policy file; only the project's settings apply");
        }
    }
    trust
}

/// Brings the jobset `name` of `pr` in line; returns its id (`None`: the
/// template is gone, logged).
async fn apply(
    ctx: &Context,
    settings: &Settings,
    pr: &PullRequest,
    trusted: bool,
    name: &str,
) -> Result<Option<JobsetId>, String> {
    let pool = &ctx.pool;
    let db = |e: sqlx::Error| e.to_string();
    let project = &settings.project;
    let policy = superseded::policy(pool, project).await.map_err(db)?;
    if pr.state == State::Closed {
        let Some(id) = hydra_db::jobsets::id_of(pool, project, name)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        hydra_db::jobsets::retire(pool, id).await.map_err(db)?;
        let cancelled = superseded::apply(pool, id, policy, CancelReason::Closed)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%project, jobset = name, number = pr.number, ?cancelled, "pull request closed; its jobset is retired");
        return Ok(Some(id));
    }
    let Some(template) = prs::template_spec(pool, project, &settings.template)
        .await
        .map_err(db)?
    else {
        tracing::error!(%project, template = %settings.template, "pull requests: the template jobset does not exist");
        return Ok(None);
    };
    let enabled = trusted || pr.head_approved();
    let spec = pull_request_spec(template, settings, pr, enabled)?;
    hydra_db::declarative::update_jobset(pool, project, name, &spec, false)
        .await
        .map_err(|e| format!("jobset {name}: {e}"))?;
    let id = hydra_db::jobsets::id_of(pool, project, name)
        .await
        .map_err(db)?
        .ok_or_else(|| format!("jobset {name} vanished"))?;
    if enabled {
        // Triggered by `sync` once the trust is recorded: the evaluator
        // refuses a pull request's jobset that is neither trusted nor
        // approved.
        tracing::info!(%project, jobset = name, number = pr.number, head = %pr.head_sha, "pull request head to evaluate");
    } else {
        // The earlier head's work is not wanted while the new one waits.
        superseded::apply(pool, id, policy, CancelReason::Superseded(None))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%project, jobset = name, number = pr.number, head = %pr.head_sha, author = %pr.author, "pull request waits for an approval");
    }
    Ok(Some(id))
}

/// The template's specification with the repository pinned to `pr`'s head.
pub(crate) fn pull_request_spec(
    mut spec: Value,
    settings: &Settings,
    pr: &PullRequest,
    enabled: bool,
) -> Result<Value, String> {
    let short = pr.head_sha.get(..12).unwrap_or(&pr.head_sha);
    let description = if enabled {
        format!(
            "Pull request #{}: {} (by {})",
            pr.number, pr.title, pr.author
        )
    } else {
        format!(
            "Pull request #{}: {} (by {}); head {short} waits for an approval by a project member",
            pr.number, pr.title, pr.author
        )
    };
    spec["enabled"] = json!(u8::from(enabled));
    spec["hidden"] = json!(false);
    spec["description"] = json!(description);
    match &settings.input {
        Some(input) => {
            let entry = spec["inputs"]
                .get_mut(input)
                .ok_or_else(|| format!("the template has no input `{input}`"))?;
            let old = entry["value"].as_str().unwrap_or_default().to_owned();
            entry["value"] = json!(pinned_git_value(
                &old,
                &pr.clone_url,
                &pr.head_sha,
                &pr.head_ref
            ));
        }
        None => {
            spec["flake"] = json!(format!(
                "git+{}?ref={}&rev={}",
                pr.clone_url, pr.head_ref, pr.head_sha
            ));
        }
    }
    Ok(spec)
}

/// A `git` input value (`URL [BRANCH [DEEPCLONE]] [KEY=VALUE …]`) pointed
/// at revision `sha` of `url`, fetched by `head_ref`; deep clone and other
/// options are kept.
pub(crate) fn pinned_git_value(old: &str, url: &str, sha: &str, head_ref: &str) -> String {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    for word in old.split_whitespace() {
        match word.split_once('=') {
            Some((k, _)) if !positional.is_empty() && !k.contains('/') => {
                if k != "ref" {
                    options.push(word.to_owned());
                }
            }
            _ => positional.push(word.to_owned()),
        }
    }
    let mut words = vec![url.to_owned(), sha.to_owned()];
    if let Some(deep) = positional.get(2) {
        words.push(deep.clone());
    }
    words.extend(options);
    words.push(format!("ref={head_ref}"));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            project: "p".into(),
            forge: Forge::Github,
            repository: "o/r".into(),
            api_url: None,
            template: "main".into(),
            input: Some("src".into()),
            trusted_authors: "Alice, bob".into(),
            trusted_associations: "OWNER MEMBER".into(),
        }
    }

    fn pr(author: &str, association: Option<&str>, fork: bool) -> PullRequest {
        PullRequest {
            project: "p".into(),
            number: 4,
            title: "T".into(),
            author: author.into(),
            association: association.map(str::to_owned),
            state: State::Open,
            head_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            head_ref: "refs/pull/4/head".into(),
            clone_url: "https://example.org/o/r.git".into(),
            fork,
            default_branch: Some("main".into()),
            updated_at: 1,
            approved_sha: None,
            approved_by: None,
            approved_at: None,
            trusted: false,
            jobset_id: None,
            synced_key: None,
        }
    }

    #[test]
    fn trust_needs_a_listed_author_or_association_and_no_fork() {
        let trust = Trust::of_settings(&settings());
        assert!(
            trust.trusts(&pr("alice", None, false)),
            "logins without case"
        );
        assert!(trust.trusts(&pr("carol", Some("member"), false)));
        assert!(!trust.trusts(&pr("carol", Some("CONTRIBUTOR"), false)));
        assert!(
            !trust.trusts(&pr("alice", Some("OWNER"), true)),
            "forks never"
        );
        let mut widened = Trust::of_settings(&settings());
        widened
            .add_file(r#"{"trusted_authors": ["carol"]}"#)
            .unwrap();
        assert!(widened.trusts(&pr("carol", None, false)));
        let err = widened
            .add_file(r#"{"trusted_authors": "carol"}"#)
            .unwrap_err();
        assert!(err.contains("must be a list"), "{err}");
    }

    #[test]
    fn the_repository_input_is_pinned_to_the_head() {
        assert_eq!(
            pinned_git_value(
                "https://old/r.git main 1 timeout=60",
                "https://x/r.git",
                "abc",
                "refs/pull/4/head"
            ),
            "https://x/r.git abc 1 timeout=60 ref=refs/pull/4/head"
        );
        assert_eq!(
            pinned_git_value("https://old/r.git", "u", "abc", "refs/pull/4/head"),
            "u abc ref=refs/pull/4/head"
        );
        let template = json!({"inputs": {"src": {"type": "git", "value": "https://old/r.git main"}}, "flake": ""});
        let waiting = pull_request_spec(
            template.clone(),
            &settings(),
            &pr("mallory", None, true),
            false,
        )
        .unwrap();
        assert_eq!(waiting["enabled"], json!(0));
        assert!(
            waiting["description"]
                .as_str()
                .unwrap()
                .contains("waits for an approval")
        );
        assert_eq!(
            waiting["inputs"]["src"]["value"],
            json!(
                "https://example.org/o/r.git 0123456789abcdef0123456789abcdef01234567 ref=refs/pull/4/head"
            )
        );
        let mut flake = settings();
        flake.input = None;
        let spec = pull_request_spec(template, &flake, &pr("alice", None, false), true).unwrap();
        assert_eq!(
            spec["flake"],
            json!(
                "git+https://example.org/o/r.git?ref=refs/pull/4/head&rev=0123456789abcdef0123456789abcdef01234567"
            )
        );
        let mut missing = settings();
        missing.input = Some("nope".into());
        assert!(
            pull_request_spec(json!({"inputs": {}}), &missing, &pr("a", None, false), true)
                .is_err()
        );
    }
}
