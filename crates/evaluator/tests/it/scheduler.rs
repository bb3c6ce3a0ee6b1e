//! The scheduler (`hydra evaluator`) against real PostgreSQL and Nix: when
//! jobsets are evaluated, how many at once, and what is left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{Setup, source_dir};
use hydra_evaluator::metrics::SchedulerDecisions;
use hydra_evaluator::scheduler;
use hydra_test_support::jobsets::{create_jobset, create_project};
use tokio_util::sync::CancellationToken;

/// A jobset whose one job takes `work` million additions to evaluate.
fn expr(work: u32) -> String {
    format!(
        r#"
with import ./config.nix;
{{
  job = builtins.seq
    (builtins.foldl' (x: y: x + y) 0 (builtins.genList (x: x) ({work} * 1000000)))
    (mkDerivation {{ name = "job"; builder = builtins.toFile "b.sh" "echo > $out"; }});
}}
"#
    )
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), scheduler::SchedulerError>>,
}

impl Running {
    fn start(s: &Setup) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(scheduler::run(s.ctx.clone(), shutdown.clone()));
        Running { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits until the scheduler's decisions satisfy `done`; returns them.
async fn wait_for_decisions(
    s: &Setup,
    what: &str,
    done: impl Fn(&SchedulerDecisions) -> bool,
) -> SchedulerDecisions {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let decisions = s.ctx.metrics.scheduler_decisions();
        if done(&decisions) {
            return decisions;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {decisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `sql` (a boolean query) is true.
async fn wait_for(s: &Setup, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn jobset(s: &Setup, name: &str, work: u32) -> (tempfile::TempDir, i32) {
    let src = source_dir(&[("release.nix", &expr(work))]);
    let id = create_jobset(
        &s.db.pool,
        "p",
        name,
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    (src, id)
}

#[tokio::test]
async fn a_trigger_starts_an_evaluation_and_is_cleared() {
    let s = Setup::new().await;
    create_project(&s.db.pool, "p").await;
    let (_src, id) = jobset(&s, "j", 0).await;
    // Left over from an evaluator that died: cleared at start-up.
    s.db.exec(&format!(
        "update Jobsets set startTime = 12345 where id = {id}"
    ))
    .await;
    let running = Running::start(&s);
    wait_for(
        &s,
        "select count(*) = 0 from Jobsets where startTime = 12345",
        "startTime cleared",
    )
    .await;
    let decisions = wait_for_decisions(&s, "a pass of the scheduler", |d| d.passes >= 1).await;
    assert_eq!(
        (decisions.due, decisions.started),
        (0, 0),
        "interval 0 and no trigger: not due"
    );
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 0);

    s.db.exec(&format!(
        "update Jobsets set triggerTime = 1 where id = {id}"
    ))
    .await;
    wait_for(&s, "select count(*) = 1 from JobsetEvals", "the evaluation").await;
    wait_for(
        &s,
        &format!("select triggerTime is null and startTime is null and lastCheckedTime is not null from Jobsets where id = {id}"),
        "the end of the evaluation",
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn new_jobsets_are_evaluated_at_once_and_again_after_their_interval() {
    let s = Setup::new().await;
    create_project(&s.db.pool, "p").await;
    let running = Running::start(&s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_src, id) = jobset(&s, "j", 0).await;
    // create_jobset made it with interval 0; an interval of 2 s makes it
    // due now (never checked) and again 2 s after each check.
    s.db.exec(&format!(
        "update Jobsets set checkInterval = 2 where id = {id}"
    ))
    .await;
    wait_for(
        &s,
        &format!("select lastCheckedTime is not null from Jobsets where id = {id}"),
        "the first check",
    )
    .await;
    let first: i32 = sqlx::query_scalar("select lastCheckedTime from Jobsets where id = $1")
        .bind(id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    wait_for(
        &s,
        &format!(
            "select lastCheckedTime >= {} from Jobsets where id = {id}",
            first + 2
        ),
        "the second check",
    )
    .await;
    // The inputs did not change: one evaluation, then cached checks.
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 1);
    running.stop().await;
}

#[tokio::test]
async fn no_more_than_max_concurrent_evals_run_at_once() {
    let s = Setup::with_config("max_concurrent_evals = 1").await;
    create_project(&s.db.pool, "p").await;
    let (_a, _) = jobset(&s, "a", 2).await;
    let (_b, _) = jobset(&s, "b", 2).await;
    let (_c, _) = jobset(&s, "c", 2).await;
    s.db.exec("update Jobsets set triggerTime = 1").await;
    let running = Running::start(&s);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut max_seen = 0;
    loop {
        let (started, evals): (i64, i64) = sqlx::query_as(
            "select (select count(*) from Jobsets where startTime is not null), (select count(*) from JobsetEvals)",
        )
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        max_seen = max_seen.max(started);
        if evals == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the evaluations did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(max_seen, 1, "at most one evaluation at a time");
    running.stop().await;
}

#[tokio::test]
async fn disabled_jobsets_and_projects_are_not_evaluated() {
    let s = Setup::new().await;
    create_project(&s.db.pool, "p").await;
    create_project(&s.db.pool, "off").await;
    let (_a, _) = jobset(&s, "disabled", 0).await;
    let src = source_dir(&[("release.nix", &expr(0))]);
    create_jobset(
        &s.db.pool,
        "off",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    let (_b, _) = jobset(&s, "enabled", 0).await;
    s.db.exec("update Jobsets set triggerTime = 1; update Jobsets set enabled = 0 where name = 'disabled'; update Projects set enabled = 0 where name = 'off'").await;
    let running = Running::start(&s);
    wait_for(
        &s,
        "select count(*) = 1 from JobsetEvals",
        "the enabled jobset's evaluation",
    )
    .await;
    let decisions = wait_for_decisions(&s, "a pass of the scheduler", |d| d.passes >= 1).await;
    assert_eq!(decisions.started, 1, "only the enabled jobset was started");
    let evaluated = s
        .strings("select j.project || ':' || j.name from JobsetEvals e join Jobsets j on j.id = e.jobset_id")
        .await;
    assert_eq!(evaluated, ["p:enabled"]);
    running.stop().await;
}

#[tokio::test]
async fn one_at_a_time_jobsets_wait_for_their_builds() {
    let s = Setup::new().await;
    create_project(&s.db.pool, "p").await;
    let src = source_dir(&[("release.nix", &expr(0))]);
    // A path input re-read every time, so each check can see a change.
    let value = format!("{} 0", src.path().display());
    let id = create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", &value)],
    )
    .await;
    s.db.exec(&format!(
        "update Jobsets set enabled = 3, checkInterval = 1 where id = {id}"
    ))
    .await;
    let running = Running::start(&s);
    wait_for(
        &s,
        "select count(*) = 1 from JobsetEvals",
        "the first evaluation",
    )
    .await;
    // A change while the build is unfinished: due by the interval, but
    // waiting for the build, so not evaluated.
    std::fs::write(
        src.path().join("release.nix"),
        expr(0).replace("\"job\"", "\"job2\""),
    )
    .unwrap();
    let before = s.ctx.metrics.scheduler_decisions();
    let after = wait_for_decisions(&s, "a pass in which the jobset waits for its build", |d| {
        d.passes > before.passes && d.waiting_for_builds == 1
    })
    .await;
    assert_eq!(after.started, before.started);
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 1);
    // Once the build is done, the next check evaluates.
    s.db.exec("update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 1")
        .await;
    wait_for(
        &s,
        "select count(*) = 2 from JobsetEvals",
        "the second evaluation",
    )
    .await;
    running.stop().await;
}

#[tokio::test]
async fn an_evaluation_past_the_time_limit_is_stopped_and_recorded() {
    let s = Setup::with_config("evaluator_time_limit = 1").await;
    create_project(&s.db.pool, "p").await;
    let (_src, id) = jobset(&s, "j", 40).await;
    s.db.exec(&format!(
        "update Jobsets set triggerTime = 1 where id = {id}"
    ))
    .await;
    let started = Instant::now();
    let running = Running::start(&s);
    wait_for(
        &s,
        &format!("select errorMsg is not null and startTime is null from Jobsets where id = {id}"),
        "the failure",
    )
    .await;
    let error: String = sqlx::query_scalar("select errorMsg from Jobsets where id = $1")
        .bind(id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(error.contains("took longer than 1 s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 0);
    running.stop().await;
}
