//! The JSON shapes of Hydra's API objects, with Hydra's field names and
//! types, each loaded in one or a few indexed queries (never a query per
//! row).

pub(crate) mod account;
pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod blockers;
pub(crate) mod build;
pub(crate) mod channels;
pub(crate) mod downloads;
pub(crate) mod eval;
pub(crate) mod job;
pub(crate) mod project;
pub(crate) mod root;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use hydra_db::ids::{BuildId, EvalId, JobsetId};
use hydra_db::keyset::Position;

use crate::error::{ApiError, ApiResult};

/// Which builds: each field that is given must match.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Filter<'a> {
    pub project: Option<&'a str>,
    pub jobset: Option<&'a str>,
    pub job: Option<&'a str>,
    pub system: Option<&'a str>,
}

impl<'a> Filter<'a> {
    /// From optional request values (project, jobset, job, system).
    pub(crate) fn of(
        project: &'a Option<String>,
        jobset: &'a Option<String>,
        job: &'a Option<String>,
        system: &'a Option<String>,
    ) -> Filter<'a> {
        Filter {
            project: project.as_deref(),
            jobset: jobset.as_deref(),
            job: job.as_deref(),
            system: system.as_deref(),
        }
    }
}

/// The condition of a [`Filter`], bound as `$1` to `$4` (`b` is Builds,
/// `j` Jobsets).
const FILTER: &str = "($1::text is null or j.project = $1) and ($2::text is null or j.name = $2) \
    and ($3::text is null or b.job = $3) and ($4::text is null or b.system = $4)";

/// The latest successful build that matches `f` (`finished_evals`: in an
/// evaluation with no unfinished builds).
pub(crate) async fn latest_success(
    pool: &PgPool,
    f: &Filter<'_>,
    finished_evals: bool,
) -> ApiResult<Option<BuildId>> {
    let extra = if finished_evals {
        " and exists (select 1 from JobsetEvalMembers m where m.build = b.id and not exists \
         (select 1 from JobsetEvalMembers m2 join Builds b2 on b2.id = m2.build \
          where m2.eval = m.eval and b2.finished = 0))"
    } else {
        ""
    };
    let sql = format!(
        "select b.id from Builds b join Jobsets j on j.id = b.jobset_id \
         where b.finished = 1 and b.buildStatus = $5 and {FILTER}{extra} order by b.id desc limit 1"
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(f.project)
        .bind(f.jobset)
        .bind(f.job)
        .bind(f.system)
        .bind(hydra_db::status::BuildStatus::Succeeded)
        .fetch_optional(pool)
        .await?)
}

/// How far a scoped list's total is counted exactly; past it, the
/// database's estimate is given, as Hydra does for steps.
pub(crate) const COUNT_CAP: i64 = 1_000;

/// How many items a list has: counted, or estimated (past [`COUNT_CAP`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Total {
    pub count: i64,
    pub estimated: bool,
}

/// The sort key of the finished-build lists: newest finished first.
const FINISHED_ORDER: [&str; 2] = ["b.stopTime", "b.id"];

/// A page of the finished builds that match `f` (project, jobset and job;
/// not system), most recently finished first, with the page's links and
/// how many there are. Read by index whatever the page: all builds by
/// their finish time; a scope as one branch per jobset (its id written
/// out, so that a small jobset beside a huge one is read by its own
/// index), each reading from the page's start only as far as the page
/// needs, merged.
pub(crate) async fn finished_page(
    pool: &PgPool,
    f: &Filter<'_>,
    position: &Position,
    per_page: i64,
) -> ApiResult<(Total, Vec<BuildSummary>, serde_json::Map<String, Value>)> {
    let order = position.order(&FINISHED_ORDER, per_page);
    let (total, rows) = match f.project {
        None => {
            let sql = format!(
                "select {BUILD_SUMMARY_COLUMNS} from Builds b join Jobsets j on j.id = b.jobset_id \
                 where b.finished = 1 and {} {order}",
                position.condition(&FINISHED_ORDER, 1)
            );
            let count: i64 =
                sqlx::query_scalar("select count::bigint from NrBuilds where what = 'finished'")
                    .fetch_one(pool)
                    .await?;
            let rows: Vec<BuildSummary> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(position.key())
                .fetch_all(pool)
                .await?;
            let total = Total {
                count,
                estimated: false,
            };
            (total, rows)
        }
        Some(project) => {
            let jobsets = hydra_db::jobsets::ids_in(pool, project, f.jobset).await?;
            if jobsets.is_empty() {
                let total = Total {
                    count: 0,
                    estimated: false,
                };
                (total, Vec::new())
            } else {
                scoped_page(pool, &jobsets, f.job, position, per_page).await?
            }
        }
    };
    let (builds, links) = position.page(rows, per_page, |b| {
        vec![i64::from(b.stoptime.unwrap_or(0)), i64::from(b.id)]
    });
    Ok((total, builds, links))
}

/// [`finished_page`] for the builds of `jobsets` (of job `job`, if given).
async fn scoped_page(
    pool: &PgPool,
    jobsets: &[JobsetId],
    job: Option<&str>,
    position: &Position,
    per_page: i64,
) -> ApiResult<(Total, Vec<BuildSummary>)> {
    let job_condition = if job.is_some() { "and b.job = $1" } else { "" };
    // Ids are integers read from the database: written into the text.
    let branches = |columns: &str, condition: &str, order: &str| {
        jobsets
            .iter()
            .map(|id| {
                format!(
                    "(select {columns} from Builds b where b.jobset_id = {} and b.finished = 1 \
                     {job_condition} and {condition} {order})",
                    id.0
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ")
    };
    let sql = format!(
        "select {BUILD_SUMMARY_COLUMNS} from ({}) b join Jobsets j on j.id = b.jobset_id {}",
        branches(
            "b.*",
            &position.condition(&FINISHED_ORDER, 2),
            &position.part_order(&FINISHED_ORDER, per_page)
        ),
        position.order(&FINISHED_ORDER, per_page)
    );
    let rows: Vec<BuildSummary> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(job)
        .bind(position.key())
        .fetch_all(pool)
        .await?;
    let newest = format!(
        "order by b.stopTime desc, b.id desc limit {}",
        COUNT_CAP + 1
    );
    let count_sql = format!(
        "select count(*) from ({}) c",
        branches("1", "true", &newest)
    );
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
        .bind(job)
        .fetch_one(pool)
        .await?;
    if count <= COUNT_CAP {
        let total = Total {
            count,
            estimated: false,
        };
        return Ok((total, rows));
    }
    let ids: Vec<String> = jobsets.iter().map(|id| id.0.to_string()).collect();
    let estimate_sql = format!(
        "explain (format json) select 1 from Builds b where b.jobset_id in ({}) and b.finished = 1 {job_condition}",
        ids.join(", ")
    );
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(estimate_sql))
        .bind(job)
        .fetch_one(pool)
        .await?;
    let estimate = plan[0]["Plan"]["Plan Rows"]
        .as_f64()
        .map_or(0, |rows| rows as i64);
    let total = Total {
        count: estimate.max(count),
        estimated: true,
    };
    Ok((total, rows))
}

/// One statement that renders whole Build objects for a set of ids, in
/// Hydra's field order, so `/build/<id>` is a single round trip.
const BUILDS_JSON: &str = "select json_build_object(\
    'id', b.id, 'finished', b.finished, 'timestamp', b.timestamp, \
    'starttime', b.startTime, 'stoptime', b.stopTime, \
    'project', j.project, 'jobset', j.name, 'job', b.job, 'nixname', b.nixName, \
    'system', b.system, 'priority', b.priority, 'buildstatus', b.buildStatus, \
    'releasename', b.releaseName, 'drvpath', b.drvPath, \
    'jobsetevals', coalesce((select json_agg(m.eval order by m.eval) from JobsetEvalMembers m where m.build = b.id), '[]'::json), \
    'buildoutputs', coalesce((select json_object_agg(o.name, json_build_object('path', o.path) order by o.name) \
        from BuildOutputs o where o.build = b.id), '{}'::json), \
    'buildproducts', coalesce((select json_object_agg(p.productnr, json_build_object(\
        'type', p.type, 'subtype', p.subtype, 'name', p.name, 'filesize', p.fileSize, \
        'sha256hash', p.sha256hash, 'path', p.path, 'defaultpath', coalesce(p.defaultPath, '')) order by p.productnr) \
        from BuildProducts p where p.build = b.id), '{}'::json), \
    'buildmetrics', coalesce((select json_object_agg(x.name, json_build_object(\
        'unit', x.unit, 'value', x.value) order by x.name) \
        from BuildMetrics x where x.build = b.id), '{}'::json)\
    )::text from Builds b join Jobsets j on j.id = b.jobset_id";

/// The Build object of one build, as JSON text: one round trip.
pub(crate) async fn build_json(pool: &PgPool, id: BuildId) -> ApiResult<Option<String>> {
    let sql = format!("{BUILDS_JSON} where b.id = $1");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct BuildRow {
    id: i32,
    finished: i32,
    timestamp: i32,
    starttime: Option<i32>,
    stoptime: Option<i32>,
    #[sqlx(skip)]
    project: String,
    #[sqlx(skip)]
    jobset: String,
    job: String,
    nixname: Option<String>,
    system: String,
    priority: i32,
    buildstatus: Option<i32>,
    releasename: Option<String>,
    drvpath: String,
    #[serde(skip)]
    jobset_id: i32,
    #[sqlx(skip)]
    jobsetevals: Vec<i32>,
    #[sqlx(skip)]
    buildoutputs: BTreeMap<String, OutputJson>,
    #[sqlx(skip)]
    buildproducts: BTreeMap<i32, ProductJson>,
    #[sqlx(skip)]
    buildmetrics: BTreeMap<String, MetricJson>,
}

#[derive(Debug, Serialize)]
struct OutputJson {
    path: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct ProductJson {
    #[serde(skip)]
    build: i32,
    #[serde(skip)]
    productnr: i32,
    #[serde(rename = "type")]
    kind: String,
    subtype: String,
    name: Option<String>,
    filesize: Option<i64>,
    sha256hash: Option<String>,
    path: Option<String>,
    defaultpath: String,
}

#[derive(Debug, Serialize)]
struct MetricJson {
    unit: Option<String>,
    value: Value,
}

/// Build objects for `ids`, in the order of `ids`, as the text of one JSON
/// array. The same objects as [`build_json`], read as rows (one query per
/// table, run concurrently) and serialised here: for thousands of builds
/// that is several times faster than building the JSON in PostgreSQL.
pub(crate) async fn builds_json_text(pool: &PgPool, ids: &[BuildId]) -> ApiResult<String> {
    // Unordered and without the jobsets' names: a third of the work of
    // joining them and keeping the order in the database.
    let builds = sqlx::query_as::<_, BuildRow>(
        "select b.id, b.finished, b.timestamp, b.startTime as starttime, b.stopTime as stoptime, \
         b.job, b.nixName as nixname, b.system, b.priority, b.buildStatus as buildstatus, \
         b.releaseName as releasename, b.drvPath as drvpath, b.jobset_id \
         from Builds b where b.id = any($1)",
    )
    .bind(ids)
    .fetch_all(pool);
    let evals = sqlx::query_as::<_, (i32, i32)>(
        "select build, eval from JobsetEvalMembers where build = any($1) order by build, eval",
    )
    .bind(ids)
    .fetch_all(pool);
    let outputs = sqlx::query_as::<_, (i32, String, Option<String>)>(
        "select build, name, path from BuildOutputs where build = any($1)",
    )
    .bind(ids)
    .fetch_all(pool);
    let products = sqlx::query_as::<_, ProductJson>(
        "select build, productnr, type as kind, subtype, name, fileSize as filesize, sha256hash, path, \
         coalesce(defaultPath, '') as defaultpath from BuildProducts where build = any($1)",
    )
    .bind(ids)
    .fetch_all(pool);
    let metrics = sqlx::query_as::<_, (i32, String, Option<String>, f64)>(
        "select build, name, unit, value from BuildMetrics where build = any($1)",
    )
    .bind(ids)
    .fetch_all(pool);
    let (mut builds, evals, outputs, products, metrics) =
        tokio::try_join!(builds, evals, outputs, products, metrics)?;
    let position: std::collections::HashMap<i32, usize> =
        ids.iter().enumerate().map(|(n, id)| (id.0, n)).collect();
    builds.sort_by_key(|b| position.get(&b.id).copied().unwrap_or(usize::MAX));
    let mut jobset_ids: Vec<i32> = builds.iter().map(|b| b.jobset_id).collect();
    jobset_ids.sort_unstable();
    jobset_ids.dedup();
    let names: std::collections::HashMap<i32, (String, String)> =
        sqlx::query_as::<_, (i32, String, String)>(
            "select id, project, name from Jobsets where id = any($1)",
        )
        .bind(&jobset_ids)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, project, name)| (id, (project, name)))
        .collect();
    for b in &mut builds {
        if let Some((project, jobset)) = names.get(&b.jobset_id) {
            b.project.clone_from(project);
            b.jobset.clone_from(jobset);
        }
    }
    let mut by_id: std::collections::HashMap<i32, &mut BuildRow> =
        builds.iter_mut().map(|b| (b.id, b)).collect();
    for (build, eval) in evals {
        if let Some(b) = by_id.get_mut(&build) {
            b.jobsetevals.push(eval);
        }
    }
    for (build, name, path) in outputs {
        if let Some(b) = by_id.get_mut(&build) {
            b.buildoutputs.insert(name, OutputJson { path });
        }
    }
    for product in products {
        if let Some(b) = by_id.get_mut(&product.build) {
            b.buildproducts.insert(product.productnr, product);
        }
    }
    for (build, name, unit, value) in metrics {
        if let Some(b) = by_id.get_mut(&build) {
            let value = json_number(value);
            b.buildmetrics.insert(name, MetricJson { unit, value });
        }
    }
    drop(by_id);
    serde_json::to_string(&builds).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Builds read and written in the first chunk of a streamed list (the
/// first bytes go out at once); each next chunk is twice as large, up to
/// [`STREAM_CHUNK_MAX`] (fewer round trips for long lists).
const STREAM_CHUNK_FIRST: usize = 250;
const STREAM_CHUNK_MAX: usize = 2000;

/// [`builds_json_text`] for many builds, as a stream of pieces of the one
/// JSON array: a chunk of builds is read while the previous one is sent.
pub(crate) fn builds_json_stream(
    pool: PgPool,
    ids: Vec<BuildId>,
) -> impl futures_util::Stream<Item = ApiResult<String>> + Send + 'static {
    use futures_util::StreamExt;
    let mut chunks: Vec<Vec<BuildId>> = Vec::new();
    let mut size = STREAM_CHUNK_FIRST;
    let mut rest = &ids[..];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk.to_vec());
        rest = tail;
        size = (size * 2).min(STREAM_CHUNK_MAX);
    }
    let last = chunks.len().saturating_sub(1);
    let body = futures_util::stream::iter(chunks.into_iter().enumerate())
        .map(move |(i, chunk)| {
            let pool = pool.clone();
            async move {
                let text = builds_json_text(&pool, &chunk).await?;
                // The chunk's array without its brackets, joined by commas.
                let inner = text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or_default();
                let mut piece = String::with_capacity(inner.len() + 2);
                piece.push(if i == 0 { '[' } else { ',' });
                piece.push_str(inner);
                if i == last {
                    piece.push(']');
                }
                Ok(piece)
            }
        })
        .buffered(2);
    // No builds: the empty array, in one piece.
    let empty = ids.is_empty().then(|| Ok("[]".to_string()));
    futures_util::stream::iter(empty).chain(body)
}

/// A number as PostgreSQL's JSON shows it: integral values without `.0`.
pub(crate) fn json_number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// Build objects for `ids`, in the order of `ids`.
pub(crate) async fn builds_json(pool: &PgPool, ids: &[BuildId]) -> ApiResult<Vec<Value>> {
    let text = builds_json_text(pool, ids).await?;
    serde_json::from_str(&text).map_err(|e| ApiError::Internal(e.to_string()))
}

/// The short form used by build lists (`/queue`, `/api/latestbuilds`, …).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct BuildSummary {
    pub id: i32,
    pub project: String,
    pub jobset: String,
    pub job: String,
    pub system: String,
    pub nixname: Option<String>,
    pub finished: i32,
    pub timestamp: i32,
    pub starttime: Option<i32>,
    pub stoptime: Option<i32>,
    pub priority: i32,
    pub globalpriority: i32,
    pub buildstatus: Option<i32>,
    pub releasename: Option<String>,
}

pub(crate) const BUILD_SUMMARY_COLUMNS: &str = "b.id, j.project, j.name as jobset, b.job, b.system, b.nixName as nixname, \
    b.finished, b.timestamp, b.startTime as starttime, b.stopTime as stoptime, b.priority, \
    b.globalPriority as globalpriority, b.buildStatus as buildstatus, b.releaseName as releasename";

#[derive(Debug, Serialize)]
pub(crate) struct ProjectJson {
    pub name: String,
    pub displayname: String,
    pub description: String,
    pub homepage: String,
    pub owner: String,
    pub enabled: bool,
    pub hidden: bool,
    pub enable_dynamic_run_command: bool,
    pub jobsets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declarative: Option<Declarative>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Declarative {
    pub file: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

type ProjectRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i32,
    i32,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Vec<String>,
);

const PROJECT_SELECT: &str = "select p.name, p.displayName, p.description, p.homepage, p.owner, p.enabled, p.hidden, \
    p.enable_dynamic_run_command, p.declfile, p.decltype, p.declvalue, \
    coalesce(array(select j.name from Jobsets j where j.project = p.name order by j.name), '{}') \
    from Projects p";

fn project_json(row: ProjectRow) -> ProjectJson {
    let (
        name,
        displayname,
        description,
        homepage,
        owner,
        enabled,
        hidden,
        dyn_rc,
        file,
        kind,
        value,
        jobsets,
    ) = row;
    ProjectJson {
        name,
        displayname,
        description: description.unwrap_or_default(),
        homepage: homepage.unwrap_or_default(),
        owner,
        enabled: enabled == 1,
        hidden: hidden == 1,
        enable_dynamic_run_command: dyn_rc,
        jobsets,
        declarative: file.filter(|f| !f.is_empty()).map(|file| Declarative {
            file,
            kind: kind.unwrap_or_default(),
            value: value.unwrap_or_default(),
        }),
    }
}

pub(crate) async fn project(pool: &PgPool, name: &str) -> ApiResult<Option<ProjectJson>> {
    let sql = format!("{PROJECT_SELECT} where p.name = $1");
    let row: Option<ProjectRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(project_json))
}

/// Visible projects by name (hidden ones too when `hidden`).
pub(crate) async fn projects(pool: &PgPool, hidden: bool) -> ApiResult<Vec<ProjectJson>> {
    let sql = format!("{PROJECT_SELECT} where $1 or p.hidden = 0 order by p.enabled desc, p.name");
    let rows: Vec<ProjectRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(hidden)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(project_json).collect())
}

#[derive(Debug, Serialize)]
pub(crate) struct JobsetInputJson {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    pub emailresponsible: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct JobsetJson {
    pub name: String,
    pub project: String,
    pub description: String,
    pub nixexprinput: String,
    pub nixexprpath: String,
    pub errormsg: String,
    pub emailoverride: String,
    pub fetcherrormsg: String,
    #[serde(rename = "type")]
    pub kind: i32,
    pub flake: String,
    pub errortime: Option<i32>,
    pub lastcheckedtime: Option<i32>,
    pub triggertime: Option<i32>,
    pub enabled: i32,
    pub keepnr: i32,
    pub checkinterval: i32,
    pub schedulingshares: i32,
    pub starttime: Option<i32>,
    pub enableemail: bool,
    pub enable_dynamic_run_command: bool,
    pub visible: bool,
    pub inputs: std::collections::BTreeMap<String, JobsetInputJson>,
}

pub(crate) async fn jobset(
    pool: &PgPool,
    project: &str,
    name: &str,
) -> ApiResult<Option<JobsetJson>> {
    let mut conn = pool.acquire().await?;
    let Some(j) = hydra_db::rows::jobset(&mut conn, project, name).await? else {
        return Ok(None);
    };
    let inputs: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "select i.name, i.type, i.emailResponsible, \
         (select a.value from JobsetInputAlts a where a.project = i.project and a.jobset = i.jobset \
          and a.input = i.name order by a.altnr limit 1) \
         from JobsetInputs i where i.project = $1 and i.jobset = $2 order by i.name",
    )
    .bind(project)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(JobsetJson {
        name: j.name,
        project: j.project,
        description: j.description.unwrap_or_default(),
        nixexprinput: j.nix_expr_input.unwrap_or_default(),
        nixexprpath: j.nix_expr_path.unwrap_or_default(),
        errormsg: j.error_msg.unwrap_or_default(),
        emailoverride: j.email_override,
        fetcherrormsg: j.fetch_error_msg.unwrap_or_default(),
        kind: j.kind,
        flake: j.flake.unwrap_or_default(),
        errortime: j.error_time,
        lastcheckedtime: j.last_checked_time,
        triggertime: j.trigger_time,
        enabled: j.enabled,
        keepnr: j.keepnr,
        checkinterval: j.check_interval,
        schedulingshares: j.scheduling_shares,
        starttime: j.start_time,
        enableemail: j.enable_email == 1,
        enable_dynamic_run_command: j.enable_dynamic_run_command,
        visible: j.hidden == 0,
        inputs: inputs
            .into_iter()
            .map(|(name, kind, responsible, value)| {
                (
                    name.clone(),
                    JobsetInputJson {
                        name,
                        kind,
                        value: value.unwrap_or_default(),
                        emailresponsible: responsible != 0,
                    },
                )
            })
            .collect(),
    }))
}

/// JobsetEval objects for `ids` (in that order): Hydra's fields, with the
/// member builds and the inputs, in three queries whatever the count.
pub(crate) async fn evals_json(pool: &PgPool, ids: &[EvalId]) -> ApiResult<Vec<Value>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "select json_build_object(\
            'id', e.id, 'timestamp', e.timestamp, 'checkouttime', e.checkoutTime, \
            'evaltime', e.evalTime, 'hasnewbuilds', e.hasNewBuilds, 'flake', e.flake, \
            'builds', coalesce((select json_agg(m.build order by m.build) from JobsetEvalMembers m where m.eval = e.id), '[]'::json), \
            'jobsetevalinputs', coalesce((select json_object_agg(i.name, json_build_object(\
                'type', i.type, 'uri', i.uri, 'revision', i.revision, 'value', i.value, 'dependency', i.dependency) \
                order by i.name) from JobsetEvalInputs i where i.eval = e.id and i.altNr = 0), '{}'::json)\
         )::text from JobsetEvals e join unnest($1::integer[]) with ordinality as w(id, n) on w.id = e.id order by w.n",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| serde_json::from_str(r).map_err(|e| ApiError::Internal(e.to_string())))
        .collect()
}

/// A page of evaluations: Hydra's JSON, the total and the ids shown.
pub(crate) struct EvalsPage {
    pub body: Value,
    pub total: i64,
    pub ids: Vec<EvalId>,
}

/// A page of the evaluations that added builds (of jobset `jobset` only,
/// if given), with the paging fields.
pub(crate) async fn evals_page(
    pool: &PgPool,
    jobset: Option<JobsetId>,
    position: &Position,
    per_page: i64,
) -> ApiResult<EvalsPage> {
    let (total, ids, mut body) = hydra_db::evals::page(pool, jobset, position, per_page).await?;
    body.insert("evals".into(), Value::Array(evals_json(pool, &ids).await?));
    Ok(EvalsPage {
        body: Value::Object(body),
        total,
        ids,
    })
}
