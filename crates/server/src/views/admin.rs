//! What the operations pages read: the steps running now.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::error::ApiResult;
use hydra_db::status::Busy;

type RunningRow = (
    i32,
    i32,
    String,
    String,
    Option<String>,
    Option<i32>,
    String,
    String,
    String,
);

/// The steps running now, by machine and start time.
pub(crate) async fn running_steps(pool: &PgPool) -> ApiResult<Vec<Value>> {
    let rows: Vec<RunningRow> = sqlx::query_as(
        "select s.build, s.stepnr, s.drvPath, s.machine, s.system, s.startTime, j.project, j.name, b.job \
         from BuildSteps s join Builds b on b.id = s.build join Jobsets j on j.id = b.jobset_id \
         where s.busy <> $1 order by s.machine, s.startTime",
    )
    .bind(Busy::NotRunning)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(build, stepnr, drv, machine, system, start, project, jobset, job)| {
            json!({
                "build": build, "stepnr": stepnr, "drvpath": drv, "machine": machine,
                "system": system, "starttime": start, "project": project, "jobset": jobset, "job": job,
            })
        })
        .collect())
}

/// Machine and start time of each step running now.
pub(crate) async fn running_step_starts(pool: &PgPool) -> ApiResult<Vec<(String, i32)>> {
    Ok(sqlx::query_as(
        "select machine, startTime from BuildSteps where busy <> $1 and startTime is not null order by machine",
    )
    .bind(Busy::NotRunning)
    .fetch_all(pool)
    .await?)
}

/// A user as the users' list shows it.
#[derive(Clone, Debug, serde::Serialize, sqlx::FromRow)]
pub(crate) struct UserRow {
    pub username: String,
    pub fullname: Option<String>,
    pub emailaddress: String,
    pub emailonerror: bool,
    pub roles: Vec<String>,
}

/// Every user with their roles, by name.
pub(crate) async fn users(pool: &PgPool) -> ApiResult<Vec<UserRow>> {
    Ok(sqlx::query_as(
        "select u.userName as username, u.fullName as fullname, u.emailAddress as emailaddress, \
         u.emailOnError <> 0 as emailonerror, \
         coalesce(array_agg(r.role order by r.role) filter (where r.role is not null), '{}') as roles \
         from Users u left join UserRoles r on r.userName = u.userName \
         group by u.userName order by u.userName",
    )
    .fetch_all(pool)
    .await?)
}
