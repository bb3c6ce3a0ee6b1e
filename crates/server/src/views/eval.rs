//! What the evaluation pages read besides the JobsetEval object.

use sqlx::PgPool;

use hydra_db::ids::{BuildId, EvalId, JobsetId};
use hydra_db::status::BuildStatus;

use crate::error::ApiResult;

/// Output paths of evaluation `id`'s successful builds that have a
/// `nix-build` product.
pub(crate) async fn store_paths(pool: &PgPool, id: EvalId) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select distinct o.path from JobsetEvalMembers m join Builds b on b.id = m.build \
         join BuildOutputs o on o.build = b.id \
         where m.eval = $1 and b.finished = 1 and b.buildStatus = $2 and o.path is not null \
         and exists (select 1 from BuildProducts p where p.build = b.id and p.type = 'nix-build') \
         order by o.path",
    )
    .bind(id)
    .bind(hydra_db::status::BuildStatus::Succeeded)
    .fetch_all(pool)
    .await?)
}

/// Evaluation `id`'s error text (empty when it had none).
pub(crate) async fn error_text(pool: &PgPool, id: EvalId) -> ApiResult<String> {
    let error: Option<Option<String>> = sqlx::query_scalar(
        "select x.errorMsg from JobsetEvals e join EvaluationErrors x on x.id = e.evaluationerror_id where e.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(error.flatten().unwrap_or_default())
}

/// The latest build of job `job` in evaluation `id`.
pub(crate) async fn build_of_job(
    pool: &PgPool,
    id: EvalId,
    job: &str,
) -> ApiResult<Option<BuildId>> {
    Ok(sqlx::query_scalar(
        "select b.id from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = $1 and b.job = $2 order by b.id desc limit 1",
    )
    .bind(id)
    .bind(job)
    .fetch_optional(pool)
    .await?)
}

/// An input of an evaluation that differs from the preceding evaluation's
/// (with new builds) of its jobset.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub(crate) struct InputChange {
    pub name: String,
    /// The new value in short: a revision, a URI or a value.
    pub value: String,
    /// The full revision, when `value` is a short one.
    pub revision: Option<String>,
    /// The build a build input now points at.
    pub build: Option<i32>,
    /// For a git or Mercurial input whose revision moved: the commits and
    /// the diff between the two (`/api/scmdiff`).
    pub diff: Option<String>,
}

/// A row of the evaluations table: an evaluation, the counts of its
/// builds, its input changes and the change in succeeded builds.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct EvalSummary {
    pub id: EvalId,
    pub project: String,
    pub jobset: String,
    pub timestamp: i32,
    pub checkout_time: Option<i32>,
    pub eval_time: Option<i32>,
    pub has_errors: bool,
    pub succeeded: i64,
    pub failed: i64,
    pub queued: i64,
    pub changes: Vec<InputChange>,
    /// Succeeded builds minus the preceding evaluation's.
    pub delta: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: EvalId,
    project: String,
    jobset: String,
    timestamp: i32,
    checkout_time: Option<i32>,
    eval_time: Option<i32>,
    has_errors: bool,
    succeeded: i64,
    failed: i64,
    queued: i64,
    previous: Option<EvalId>,
}

#[derive(Clone, sqlx::FromRow, PartialEq, Eq)]
struct InputRow {
    eval: EvalId,
    name: String,
    #[sqlx(rename = "type")]
    kind: String,
    uri: Option<String>,
    revision: Option<String>,
    value: Option<String>,
    dependency: Option<i32>,
}

impl InputRow {
    /// The same input in another evaluation.
    fn same_as(&self, other: &InputRow) -> bool {
        (
            &self.kind,
            &self.uri,
            &self.revision,
            &self.value,
            self.dependency,
        ) == (
            &other.kind,
            &other.uri,
            &other.revision,
            &other.value,
            other.dependency,
        )
    }

    /// What changed from `before` (the same input of the preceding
    /// evaluation, if it had one).
    fn change(&self, before: Option<&InputRow>) -> InputChange {
        let (value, revision) = match (&self.revision, &self.uri, &self.value) {
            (Some(r), _, _) if !r.is_empty() => {
                let short = if self.kind == "git" {
                    r.chars().take(12).collect()
                } else {
                    r.clone()
                };
                (short, Some(r.clone()))
            }
            (_, Some(u), _) if !u.is_empty() => (u.clone(), None),
            (_, _, v) => (v.clone().unwrap_or_default(), None),
        };
        let diff = match (before, &self.uri, &self.revision) {
            (Some(b), Some(uri), Some(new))
                if matches!(self.kind.as_str(), "git" | "hg")
                    && b.kind == self.kind
                    && b.uri.as_ref() == Some(uri)
                    && !new.is_empty() =>
            {
                b.revision
                    .as_ref()
                    .filter(|old| !old.is_empty())
                    .map(|old| {
                        let enc = |v: &str| {
                            percent_encoding::utf8_percent_encode(
                                v,
                                percent_encoding::NON_ALPHANUMERIC,
                            )
                            .to_string()
                        };
                        format!(
                            "/api/scmdiff?uri={}&type={}&rev1={}&rev2={}",
                            enc(uri),
                            self.kind,
                            enc(old),
                            enc(new)
                        )
                    })
            }
            _ => None,
        };
        InputChange {
            name: self.name.clone(),
            value,
            revision,
            build: self.dependency,
            diff,
        }
    }
}

/// The changed inputs of evaluation `inputs` against `previous`.
fn input_changes(inputs: &[&InputRow], previous: &[&InputRow]) -> Vec<InputChange> {
    inputs
        .iter()
        .filter(|i| !previous.iter().any(|p| p.name == i.name && p.same_as(i)))
        .map(|i| i.change(previous.iter().copied().find(|p| p.name == i.name)))
        .collect()
}

/// The evaluations table's rows for evaluations `ids`, in their order.
pub(crate) async fn summaries(pool: &PgPool, ids: &[EvalId]) -> ApiResult<Vec<EvalSummary>> {
    const ROWS: &str = "select e.id, j.project, j.name as jobset, e.timestamp, \
         e.checkoutTime as checkout_time, e.evalTime as eval_time, \
         coalesce(x.errorMsg, '') <> '' as has_errors, \
         count(b.id) filter (where b.finished = 1 and b.buildStatus = $2) as succeeded, \
         count(b.id) filter (where b.finished = 1 and b.buildStatus <> $2) as failed, \
         count(b.id) filter (where b.finished = 0) as queued, \
         (select p.id from JobsetEvals p where p.jobset_id = e.jobset_id and p.hasNewBuilds = 1 \
          and p.id < e.id order by p.id desc limit 1) as previous \
         from unnest($1::integer[]) with ordinality as w(id, n) join JobsetEvals e on e.id = w.id \
         join Jobsets j on j.id = e.jobset_id \
         left join EvaluationErrors x on x.id = e.evaluationerror_id \
         left join JobsetEvalMembers m on m.eval = e.id left join Builds b on b.id = m.build \
         group by e.id, j.project, j.name, x.errorMsg, w.n order by w.n";
    let succeeded = BuildStatus::Succeeded;
    let rows: Vec<SummaryRow> = sqlx::query_as(ROWS)
        .bind(ids)
        .bind(succeeded)
        .fetch_all(pool)
        .await?;
    let previous: Vec<EvalId> = rows
        .iter()
        .filter_map(|r| r.previous)
        .filter(|p| !ids.contains(p))
        .collect();
    let earlier: Vec<SummaryRow> = if previous.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(ROWS)
            .bind(&previous)
            .bind(succeeded)
            .fetch_all(pool)
            .await?
    };
    let all: Vec<EvalId> = ids.iter().copied().chain(previous).collect();
    let inputs: Vec<InputRow> = sqlx::query_as(
        "select eval, name, type, uri, revision, value, dependency from JobsetEvalInputs \
         where eval = any($1) and altNr = 0 order by eval, name",
    )
    .bind(&all)
    .fetch_all(pool)
    .await?;
    let of = |eval: EvalId| inputs.iter().filter(|i| i.eval == eval).collect::<Vec<_>>();
    let succeeded_in = |eval: EvalId| {
        rows.iter()
            .chain(&earlier)
            .find(|r| r.id == eval)
            .map(|r| r.succeeded)
    };
    Ok(rows
        .iter()
        .map(|r| {
            let (changes, delta) = match r.previous {
                Some(p) => (
                    input_changes(&of(r.id), &of(p)),
                    succeeded_in(p).map(|s| r.succeeded - s),
                ),
                None => (Vec::new(), None),
            };
            EvalSummary {
                id: r.id,
                project: r.project.clone(),
                jobset: r.jobset.clone(),
                timestamp: r.timestamp,
                checkout_time: r.checkout_time,
                eval_time: r.eval_time,
                has_errors: r.has_errors,
                succeeded: r.succeeded,
                failed: r.failed,
                queued: r.queued,
                changes,
                delta,
            }
        })
        .collect())
}

/// The latest `limit` evaluations with new builds of jobset `jobset`,
/// newest first.
pub(crate) async fn latest(
    pool: &PgPool,
    jobset: hydra_db::ids::JobsetId,
    limit: i64,
) -> ApiResult<Vec<EvalSummary>> {
    let first = hydra_db::keyset::Position::First;
    let (_, ids, _) = hydra_db::evals::page(pool, Some(jobset), &first, limit).await?;
    summaries(pool, &ids).await
}

/// A build of an evaluation, as the evaluation page compares it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct Member {
    pub id: BuildId,
    pub job: String,
    pub system: String,
    pub finished: i32,
    pub buildstatus: Option<i32>,
    pub nixname: Option<String>,
    pub releasename: Option<String>,
    pub timestamp: i32,
    pub stoptime: Option<i32>,
}

impl Member {
    fn key(&self) -> (&str, &str) {
        (&self.job, &self.system)
    }

    fn status(&self) -> Option<BuildStatus> {
        if self.finished == 0 {
            return None;
        }
        self.buildstatus.and_then(BuildStatus::from_code)
    }
}

/// The builds of evaluation `id` whose job name contains `filter` (any
/// case), by job and system.
pub(crate) async fn members(pool: &PgPool, id: EvalId, filter: &str) -> ApiResult<Vec<Member>> {
    Ok(sqlx::query_as(
        "select b.id, b.job, b.system, b.finished, b.buildStatus as buildstatus, \
         b.nixName as nixname, b.releaseName as releasename, b.timestamp, b.stopTime as stoptime \
         from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = $1 and strpos(lower(b.job), lower($2)) > 0 \
         order by b.job, b.system, b.id",
    )
    .bind(id)
    .bind(filter)
    .fetch_all(pool)
    .await?)
}

/// What the evaluation page compares an evaluation with (`?compare=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CompareTo {
    /// The preceding evaluation (with new builds) of the same jobset.
    Preceding,
    /// The same jobset's latest evaluation this many seconds earlier.
    Earlier(i64),
    /// An evaluation by id.
    Eval(EvalId),
    /// Another jobset of the same project: its latest finished evaluation.
    Jobset(String),
}

impl CompareTo {
    /// Reads `?compare=`: nothing, a negative number of seconds, an
    /// evaluation id, or a jobset name.
    pub(crate) fn parse(value: Option<&str>) -> CompareTo {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => CompareTo::Preceding,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n < 0 => CompareTo::Earlier(-n),
                Ok(n) => i32::try_from(n)
                    .map_or(CompareTo::Jobset(v.into()), |n| CompareTo::Eval(EvalId(n))),
                Err(_) => CompareTo::Jobset(v.into()),
            },
        }
    }
}

/// The evaluation `compare` names for evaluation `id` of `project:jobset`.
pub(crate) async fn comparison_target(
    pool: &PgPool,
    id: EvalId,
    project: &str,
    compare: &CompareTo,
) -> ApiResult<Option<EvalId>> {
    let earlier_in_jobset = |seconds: Option<i64>| {
        sqlx::query_scalar(
            "select o.id from JobsetEvals e join JobsetEvals o on o.jobset_id = e.jobset_id \
             where e.id = $1 and o.hasNewBuilds = 1 and o.id < e.id \
             and ($2::bigint is null or o.timestamp <= e.timestamp - $2) \
             order by o.id desc limit 1",
        )
        .bind(id)
        .bind(seconds)
        .fetch_optional(pool)
    };
    Ok(match compare {
        CompareTo::Preceding => earlier_in_jobset(None).await?,
        CompareTo::Earlier(seconds) => earlier_in_jobset(Some(*seconds)).await?,
        CompareTo::Eval(other) => {
            sqlx::query_scalar("select id from JobsetEvals where id = $1")
                .bind(other)
                .fetch_optional(pool)
                .await?
        }
        CompareTo::Jobset(name) => {
            hydra_db::evals::latest_finished(pool, project, name, None).await?
        }
    })
}

/// The other enabled jobsets of `project`, which an evaluation can be
/// compared with.
pub(crate) async fn other_jobsets(
    pool: &PgPool,
    project: &str,
    except: &str,
) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select name from Jobsets where project = $1 and name <> $2 and enabled <> $3 order by name",
    )
    .bind(project)
    .bind(except)
    .bind(hydra_db::status::JobsetState::Disabled)
    .fetch_all(pool)
    .await?)
}

/// A job and system that only the other evaluation has.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub(crate) struct RemovedJob {
    pub job: String,
    pub system: String,
}

/// An evaluation's builds sorted against another's, by job and system, as
/// the evaluation page's tabs show them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct Comparison {
    pub aborted: Vec<Member>,
    pub now_fail: Vec<Member>,
    pub now_succeed: Vec<Member>,
    pub new: Vec<Member>,
    pub removed: Vec<RemovedJob>,
    pub still_fail: Vec<Member>,
    pub still_succeed: Vec<Member>,
    pub unfinished: Vec<Member>,
}

/// How many of an evaluation's builds the actions on all of them would
/// take.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub(crate) struct ActionCounts {
    pub queued: usize,
    pub failed: usize,
    pub aborted: usize,
}

impl Comparison {
    /// This evaluation's builds, in every tab.
    fn members(&self) -> impl Iterator<Item = &Member> {
        [
            &self.aborted,
            &self.now_fail,
            &self.now_succeed,
            &self.new,
            &self.still_fail,
            &self.still_succeed,
            &self.unfinished,
        ]
        .into_iter()
        .flatten()
    }

    /// The builds that cancelling (and bumping), restarting the failed and
    /// restarting the aborted builds would take.
    pub(crate) fn counts(&self) -> ActionCounts {
        let mut counts = ActionCounts::default();
        for m in self.members() {
            match m.status() {
                None if m.finished == 0 => counts.queued += 1,
                Some(BuildStatus::Succeeded) => {}
                status => {
                    counts.failed += 1;
                    if matches!(
                        status,
                        Some(
                            BuildStatus::Aborted
                                | BuildStatus::Cancelled
                                | BuildStatus::Unsupported
                        )
                    ) {
                        counts.aborted += 1;
                    }
                }
            }
        }
        counts
    }
}

/// Sorts `this` evaluation's builds against the `other`'s. Aborted,
/// cancelled, timed-out and log-limited builds are listed apart; the rest
/// are matched by job and system (any non-zero status counts as failing).
/// An aborted build still matches its job, which is then not "removed".
pub(crate) fn compare(this: Vec<Member>, other: &[Member]) -> Comparison {
    use std::collections::BTreeMap;
    let mut theirs: BTreeMap<(&str, &str), &Member> = BTreeMap::new();
    for m in other {
        // The latest build of a job and system counts.
        theirs.insert(m.key(), m);
    }
    let mut seen = std::collections::HashSet::new();
    let mut c = Comparison::default();
    for m in this {
        let matched = theirs.get(&m.key()).copied();
        if let Some(o) = matched {
            seen.insert(o.key());
        }
        let aborted = matches!(
            m.status(),
            Some(
                BuildStatus::Aborted
                    | BuildStatus::Cancelled
                    | BuildStatus::TimedOut
                    | BuildStatus::LogLimitExceeded
            )
        );
        let list = match matched {
            _ if aborted => &mut c.aborted,
            None => &mut c.new,
            Some(o) if m.finished == 0 || o.finished == 0 => &mut c.unfinished,
            Some(o) => match (
                m.status() == Some(BuildStatus::Succeeded),
                o.status() == Some(BuildStatus::Succeeded),
            ) {
                (true, true) => &mut c.still_succeed,
                (false, false) => &mut c.still_fail,
                (true, false) => &mut c.now_succeed,
                (false, true) => &mut c.now_fail,
            },
        };
        list.push(m);
    }
    c.removed = theirs
        .into_keys()
        .filter(|k| !seen.contains(k))
        .map(|(job, system)| RemovedJob {
            job: job.into(),
            system: system.into(),
        })
        .collect();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: i32, job: &str, status: Option<BuildStatus>) -> Member {
        Member {
            id: BuildId(id),
            job: job.into(),
            system: "x86_64-linux".into(),
            finished: i32::from(status.is_some()),
            buildstatus: status.map(BuildStatus::code),
            nixname: None,
            releasename: None,
            timestamp: 0,
            stoptime: None,
        }
    }

    fn ids(list: &[Member]) -> Vec<i32> {
        list.iter().map(|m| m.id.0).collect()
    }

    #[test]
    fn builds_are_sorted_by_what_changed_since_the_other_evaluation() {
        use BuildStatus::*;
        let other = [
            member(1, "a", Some(Succeeded)),
            member(2, "b", Some(Failed)),
            member(3, "c", Some(Succeeded)),
            member(4, "d", Some(Failed)),
            member(5, "e", None),
            member(6, "gone", Some(Succeeded)),
            member(7, "f", Some(Succeeded)),
        ];
        let this = vec![
            member(11, "a", Some(Succeeded)),
            member(12, "b", Some(Succeeded)),
            member(13, "c", Some(DependencyFailed)),
            member(14, "d", Some(Failed)),
            member(15, "e", Some(Succeeded)),
            member(16, "new", None),
            member(17, "f", Some(TimedOut)),
        ];
        let c = compare(this, &other);
        assert_eq!(ids(&c.still_succeed), [11]);
        assert_eq!(ids(&c.now_succeed), [12]);
        assert_eq!(ids(&c.now_fail), [13], "any non-zero status fails");
        assert_eq!(ids(&c.still_fail), [14]);
        assert_eq!(ids(&c.unfinished), [15], "the other one is unfinished");
        assert_eq!(ids(&c.new), [16]);
        assert_eq!(ids(&c.aborted), [17]);
        assert_eq!(
            c.counts(),
            ActionCounts {
                queued: 1,
                failed: 3,
                aborted: 0
            },
            "a timed-out build is failed, not aborted"
        );
        assert_eq!(
            c.removed,
            [RemovedJob {
                job: "gone".into(),
                system: "x86_64-linux".into()
            }],
            "an aborted build's job is not removed"
        );
    }

    #[test]
    fn jobs_match_by_system_too() {
        let mut arm = member(2, "a", Some(BuildStatus::Succeeded));
        arm.system = "aarch64-linux".into();
        let c = compare(vec![arm], &[member(1, "a", Some(BuildStatus::Succeeded))]);
        assert_eq!(ids(&c.new), [2]);
        assert_eq!(c.removed.len(), 1);
    }

    #[test]
    fn compare_parameters() {
        assert_eq!(CompareTo::parse(None), CompareTo::Preceding);
        assert_eq!(CompareTo::parse(Some("")), CompareTo::Preceding);
        assert_eq!(CompareTo::parse(Some("-86400")), CompareTo::Earlier(86_400));
        assert_eq!(CompareTo::parse(Some("42")), CompareTo::Eval(EvalId(42)));
        assert_eq!(
            CompareTo::parse(Some("staging")),
            CompareTo::Jobset("staging".into())
        );
        assert_eq!(
            CompareTo::parse(Some("99999999999")),
            CompareTo::Jobset("99999999999".into())
        );
    }
}

/// A cell of the jobs matrix: a job's build in an evaluation.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct MatrixCell {
    pub job: String,
    pub eval: EvalId,
    pub build: BuildId,
    pub finished: i32,
    pub buildstatus: Option<i32>,
    pub system: String,
}

impl MatrixCell {
    /// What the matrix's status filter calls this build: `succeeded`,
    /// `failed` or `queued`.
    pub(crate) fn state(&self) -> &'static str {
        if self.finished == 0 {
            "queued"
        } else if self.buildstatus == Some(BuildStatus::Succeeded.code()) {
            "succeeded"
        } else {
            "failed"
        }
    }
}

/// The latest evaluations (with new builds) of `jobset` for the jobs
/// matrix: at most 20, fewer once they hold about 10,000 builds; id and
/// time, newest first.
pub(crate) async fn matrix_evals(
    pool: &PgPool,
    jobset: hydra_db::ids::JobsetId,
) -> ApiResult<Vec<(EvalId, i32)>> {
    let rows: Vec<(EvalId, i32, i64)> = sqlx::query_as(
        "select e.id, e.timestamp, (select count(*) from JobsetEvalMembers m where m.eval = e.id) \
         from JobsetEvals e where e.jobset_id = $1 and e.hasNewBuilds = 1 order by e.id desc limit 20",
    )
    .bind(jobset)
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    Ok(rows
        .into_iter()
        .take_while(|(_, _, n)| {
            let first = total == 0;
            total += n;
            first || total <= 10_000
        })
        .map(|(id, t, _)| (id, t))
        .collect())
}

/// The builds of `evals` whose job name contains `filter` (any case);
/// with `channels`, only builds with a channel product.
/// Jobs of jobset `id` that have builds but none among `shown`, whose
/// name holds `filter` (any case), by name: at most `limit`, and how many
/// there are.
pub(crate) async fn inactive_jobs(
    pool: &PgPool,
    id: JobsetId,
    shown: &[String],
    filter: &str,
    limit: i64,
) -> ApiResult<(Vec<String>, i64)> {
    let jobs: Vec<(String, i64)> = sqlx::query_as(
        "select job, count(*) over () from (select distinct job from Builds \
           where jobset_id = $1 and strpos(lower(job), lower($2)) > 0 and not (job = any($3))) j \
         order by job collate \"C\" limit $4",
    )
    .bind(id)
    .bind(filter)
    .bind(shown)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total = jobs.first().map_or(0, |(_, n)| *n);
    Ok((jobs.into_iter().map(|(j, _)| j).collect(), total))
}

pub(crate) async fn matrix_cells(
    pool: &PgPool,
    evals: &[EvalId],
    filter: &str,
    channels: bool,
) -> ApiResult<Vec<MatrixCell>> {
    Ok(sqlx::query_as(
        "select b.job, m.eval, b.id as build, b.finished, b.buildStatus as buildstatus, b.system \
         from JobsetEvalMembers m join Builds b on b.id = m.build \
         where m.eval = any($1) and strpos(lower(b.job), lower($2)) > 0 \
         and (not $3 or exists (select 1 from BuildProducts p where p.build = b.id and p.type = 'channel')) \
         order by b.job collate \"C\", m.eval desc, b.id desc",
    )
    .bind(evals)
    .bind(filter)
    .bind(channels)
    .fetch_all(pool)
    .await?)
}
