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

#[cfg(test)]
mod tests {
    use super::*;

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
