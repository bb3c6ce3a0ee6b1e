//! `RunCommandLogs`: one row per command run for a finished build, with
//! how it ended; its output is a file under `$HYDRA_DATA` (see
//! `hydra_config::DataDir::run_command_log`).

use sqlx::PgPool;

use crate::ids::BuildId;

/// A RunCommand run.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RunCommandLog {
    pub uuid: String,
    pub job_matcher: String,
    pub build_id: BuildId,
    pub command: String,
    pub start_time: Option<i32>,
    pub end_time: Option<i32>,
    pub error_number: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: Option<bool>,
}

impl RunCommandLog {
    /// Not finished yet (or not started).
    pub fn is_running(&self) -> bool {
        self.end_time.is_none()
    }

    /// Finished with exit code 0; `None` while running.
    pub fn did_succeed(&self) -> Option<bool> {
        if self.is_running() {
            return None;
        }
        Some(self.exit_code == Some(0))
    }
}

/// Whether `text` is a UUID as PostgreSQL writes it (8-4-4-4-12 hex
/// digits).
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The runs of build `id`, newest first.
pub async fn of_build(pool: &PgPool, id: BuildId) -> Result<Vec<RunCommandLog>, sqlx::Error> {
    sqlx::query_as(
        "select uuid::text as uuid, job_matcher, build_id, command, start_time, end_time, \
         error_number, exit_code, signal, core_dumped from RunCommandLogs where build_id = $1 \
         order by coalesce(start_time, 2147483647) desc, id desc",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// The run `uuid` (not a UUID: none).
pub async fn by_uuid(pool: &PgPool, uuid: &str) -> Result<Option<RunCommandLog>, sqlx::Error> {
    if !is_uuid(uuid) {
        return Ok(None);
    }
    sqlx::query_as(
        "select uuid::text as uuid, job_matcher, build_id, command, start_time, end_time, \
         error_number, exit_code, signal, core_dumped from RunCommandLogs where uuid = $1::uuid",
    )
    .bind(uuid)
    .fetch_optional(pool)
    .await
}

/// Records that `command` (matched by `matcher`) starts for `build` at
/// `now`; its UUID (a new version 4 one).
pub async fn start(
    pool: &PgPool,
    matcher: &str,
    build: BuildId,
    command: &str,
    now: i32,
) -> Result<String, sqlx::Error> {
    sqlx::query_scalar(
        "insert into RunCommandLogs (uuid, job_matcher, build_id, command, start_time) \
         values (gen_random_uuid(), $1, $2, $3, $4) returning uuid::text",
    )
    .bind(matcher)
    .bind(build)
    .bind(command)
    .bind(now)
    .fetch_one(pool)
    .await
}

/// How a command ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: Option<bool>,
    /// It could not be started: the system's error number.
    pub error_number: Option<i32>,
}

/// Records that run `uuid` ended at `now`, as `ended` says.
pub async fn finish(pool: &PgPool, uuid: &str, now: i32, ended: Ended) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update RunCommandLogs set end_time = $2, exit_code = $3, signal = $4, core_dumped = $5, \
         error_number = $6 where uuid = $1::uuid",
    )
    .bind(uuid)
    .bind(now)
    .bind(ended.exit_code)
    .bind(ended.signal)
    .bind(ended.core_dumped)
    .bind(ended.error_number)
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether `job` is a dynamic RunCommand hook: `runCommandHook.` and a
/// name.
pub fn is_hook(job: &str) -> bool {
    job.strip_prefix("runCommandHook.")
        .is_some_and(|name| !name.is_empty())
}

/// What decides whether build `id`'s output may run as a dynamic
/// RunCommand, besides the server's option.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct HookFacts {
    pub project: String,
    pub job: String,
    /// `enable_dynamic_run_command` of the project and of the jobset.
    pub project_allows: bool,
    pub jobset_allows: bool,
}

/// Build `id`'s [`HookFacts`], if the build exists.
pub async fn hook_facts(pool: &PgPool, id: BuildId) -> Result<Option<HookFacts>, sqlx::Error> {
    sqlx::query_as(
        "select j.project, b.job, p.enable_dynamic_run_command as project_allows, \
           j.enable_dynamic_run_command as jobset_allows \
         from Builds b join Jobsets j on j.id = b.jobset_id join Projects p on p.name = j.project \
         where b.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The document RunCommand gives a command about finished build `id`
/// (`HYDRA_JSON`): the build, its outputs, products and metrics, with
/// Hydra's keys.
pub async fn build_document(
    pool: &PgPool,
    id: BuildId,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let text: Option<String> = sqlx::query_scalar(
        "select json_build_object( \
           'event', 'buildFinished', 'build', b.id, 'finished', b.finished = 1, \
           'timestamp', b.timestamp, 'project', j.project, 'jobset', j.name, 'job', b.job, \
           'drvPath', b.drvPath, 'startTime', b.startTime, 'stopTime', b.stopTime, \
           'buildStatus', b.buildStatus, 'nixName', b.nixName, 'system', b.system, \
           'homepage', b.homepage, 'description', b.description, 'license', b.license, \
           'outputs', coalesce((select json_agg(json_build_object('name', o.name, 'path', o.path) \
                                 order by o.name) from BuildOutputs o where o.build = b.id), '[]'), \
           'products', coalesce((select json_agg(json_build_object('productNr', p.productnr, \
                                 'type', p.type, 'subtype', p.subtype, 'fileSize', p.fileSize, \
                                 'sha256hash', p.sha256hash, 'path', p.path, 'name', p.name, \
                                 'defaultPath', p.defaultPath) order by p.productnr) \
                                 from BuildProducts p where p.build = b.id), '[]'), \
           'metrics', coalesce((select json_agg(json_build_object('name', m.name, 'unit', m.unit, \
                                'value', m.value) order by m.name) \
                                from BuildMetrics m where m.build = b.id), '[]'))::text \
         from Builds b join Jobsets j on j.id = b.jobset_id where b.id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_the_prefix_a_dot_and_a_name() {
        assert!(is_hook("runCommandHook.deploy"));
        assert!(!is_hook("runCommandHook."));
        assert!(!is_hook("runCommandHookXY"));
        assert!(!is_hook("deploy"));
    }

    #[test]
    fn uuids_are_recognised_and_anything_else_is_not() {
        assert!(is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert!(is_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E"));
        for bad in [
            "",
            "0f8fad5b",
            "0f8fad5bd9cb469fa16570867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "../../etc/passwd",
            "0f8fad5b-d9cb-469f-a165-70867728950e-",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
