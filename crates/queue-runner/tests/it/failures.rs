//! Failing builds: dependants fail with 2 and point at the failure, failed
//! outputs are cached failures, time and log and output limits give their
//! statuses, and a restart builds again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use hydra_db::builds::NewBuild;
use hydra_db::ids::{BuildId, JobsetId};

use std::time::Duration;

use common::{Running, Setup};

const FAILING: &str = r#"
with import ./config.nix;
rec {
  bad = mkDerivation { name = "bad"; builder = builtins.toFile "b.sh" "echo about to fail; exit 1"; };
  top = mkDerivation { name = "top"; builder = builtins.toFile "t.sh" "cat $bad > $out"; inherit bad; };
  silent = mkDerivation { name = "silent"; builder = builtins.toFile "s.sh" "sleep 30; mkdir $out"; };
  chatty = mkDerivation { name = "chatty"; builder = builtins.toFile "c.sh" "for i in $(seq 1 100); do echo tick $i; sleep 0.2; done; mkdir $out"; };
  loud = mkDerivation { name = "loud"; builder = builtins.toFile "l.sh" "for i in $(seq 1 2000); do echo a rather long line of log output number $i; done; mkdir $out"; };
  big = mkDerivation { name = "big"; builder = builtins.toFile "g.sh" "head -c 100000 /dev/zero > $out"; };
  quick = mkDerivation { name = "quick"; builder = builtins.toFile "q.sh" "sleep 2; mkdir $out"; };
}
"#;

#[tokio::test]
async fn a_failing_dependency_fails_its_dependants_and_is_then_a_cached_failure() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    let bad = s.queue(&file, "bad").await;
    let top = s.queue(&file, "top").await;
    let running = Running::start(s.context(&s.localhost(1), ""));
    s.wait(&[bad, top], Duration::from_secs(60)).await;

    let row = s.build(bad).await;
    assert_eq!((row.status, row.cached), (Some(1), Some(0)));
    let row = s.build(top).await;
    assert_eq!((row.status, row.cached), (Some(2), Some(0)));
    // The dependant has a step row for the failed derivation, pointing at
    // the build that ran it.
    let (status, from): (Option<i32>, Option<i32>) =
        sqlx::query_as("select status, propagatedFrom from BuildSteps where build = $1")
            .bind(top)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!((status, from), (Some(1), Some(bad)));
    // The log has the builder's output.
    let log_path: String = sqlx::query_scalar("select drvPath from Builds where id = $1")
        .bind(bad)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let base = log_path.rsplit('/').next().unwrap();
    let log = std::fs::read_to_string(
        s.data
            .path()
            .join("build-logs")
            .join(&base[..2])
            .join(&base[2..]),
    )
    .unwrap();
    assert!(log.contains("about to fail"), "{log}");
    assert_eq!(s.scalar("select count(*) from FailedPaths").await, 1);

    // The same output again: a cached failure, nothing built.
    let again = s.queue(&file, "bad").await;
    s.wait(&[again], Duration::from_secs(30)).await;
    let row = s.build(again).await;
    assert_eq!((row.status, row.cached), (Some(1), Some(1)));
    let (status, from): (Option<i32>, Option<i32>) =
        sqlx::query_as("select status, propagatedFrom from BuildSteps where build = $1")
            .bind(again)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!((status, from), (Some(8), Some(bad)));

    // A restart forgets the failure and really builds again.
    hydra_db::builds::restart_builds(&s.db.pool, &[BuildId(again)])
        .await
        .unwrap();
    assert_eq!(s.scalar("select count(*) from FailedPaths").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.wait(&[again], Duration::from_secs(60)).await;
    let row = s.build(again).await;
    assert_eq!((row.status, row.cached), (Some(1), Some(0)));
    assert_eq!(
        s.scalar(&format!("select count(*) from BuildSteps where build = {again} and status = 1 and propagatedFrom is null")).await,
        1
    );
    running.stop().await;
}

#[tokio::test]
async fn max_silent_time_and_timeout_give_status_7_and_a_restart_with_more_time_builds() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    let silent = s.queue_with(&file, "silent", Some(1), None, 0).await;
    let chatty = s.queue_with(&file, "chatty", None, Some(2), 0).await;
    let quick = s.queue_with(&file, "quick", None, Some(1), 0).await;
    let running = Running::start(s.context(&s.localhost(3), ""));
    s.wait(&[silent, chatty, quick], Duration::from_secs(60))
        .await;
    assert_eq!(s.build(silent).await.status, Some(7));
    assert_eq!(s.build(chatty).await.status, Some(7));
    assert_eq!(s.build(quick).await.status, Some(7));
    // Timeouts are not cached: a restart with a longer timeout builds.
    s.db.exec(&format!(
        "update Builds set timeout = 60 where id = {quick}"
    ))
    .await;
    hydra_db::builds::restart_builds(&s.db.pool, &[BuildId(quick)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.wait(&[quick], Duration::from_secs(60)).await;
    assert_eq!(s.build(quick).await.status, Some(0));
    running.stop().await;
}

#[tokio::test]
async fn log_and_output_limits_give_10_and_11() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    let loud = s.queue(&file, "loud").await;
    let big = s.queue(&file, "big").await;
    let running = Running::start(s.context(
        &s.localhost(2),
        "max_log_size = 10000\nmax_output_size = 50000",
    ));
    s.wait(&[loud, big], Duration::from_secs(60)).await;
    assert_eq!(s.build(loud).await.status, Some(10));
    assert_eq!(s.build(big).await.status, Some(11));
    running.stop().await;
}

#[tokio::test]
async fn a_machines_file_that_turns_unreadable_keeps_the_machines_it_had() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    let ctx = s.context(&s.localhost(1), "");
    let machines = ctx.config.queue_runner.machines_file.clone().unwrap();
    let running = Running::start(ctx);
    // A byte that is not UTF-8 in a host name (and a NUL in another):
    // refused with the line, and the machines stay as they were.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut text = s.localhost(1).into_bytes();
    text.extend_from_slice(b"build\xffer x86_64-linux - 1 1\nnul\x00host x86_64-linux - 1 1\n");
    std::fs::write(&machines, text).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let quick = s.queue(&file, "quick").await;
    s.wait(&[quick], Duration::from_secs(60)).await;
    assert_eq!(s.build(quick).await.status, Some(0));
    running.stop().await;
}

const MANY: &str = r#"
with import ./config.nix;
let bad = mkDerivation { name = "bad-dependency"; builder = builtins.toFile "b.sh" "sleep 1; exit 1"; };
in builtins.listToAttrs (builtins.genList (i: {
  name = "j${toString i}";
  value = mkDerivation { name = "j${toString i}"; builder = builtins.toFile "j.sh" "cat $bad > $out"; inherit bad; };
}) 3000)
"#;

#[tokio::test]
async fn dependants_loaded_while_their_dependency_fails_fail_with_it() {
    let s = Setup::new().await;
    let file = s.write("many.nix", MANY);
    let drvs: Vec<String> = s
        .store
        .run("nix-instantiate", &[file.to_str().unwrap()])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.ends_with(".drv"))
        .collect();
    assert_eq!(drvs.len(), 3000);
    let jobs: Vec<String> = (0..drvs.len()).map(|i| format!("j{i}")).collect();
    let insert = |from: usize, to: usize| {
        let (jobs, drvs) = (&jobs[from..to], &drvs[from..to]);
        let pool = s.db.pool.clone();
        let jobset = s.jobset_id;
        async move {
            let outputs = std::collections::BTreeMap::new();
            let builds: Vec<NewBuild<'_>> = jobs
                .iter()
                .zip(drvs)
                .map(|(job, drv)| NewBuild {
                    job,
                    nix_name: job,
                    description: None,
                    drv_path: drv,
                    system: "x86_64-linux",
                    license: None,
                    homepage: None,
                    maintainers: None,
                    max_silent: None,
                    timeout: None,
                    is_channel: false,
                    priority: 100,
                    outputs: &outputs,
                })
                .collect();
            let mut conn = pool.acquire().await.unwrap();
            let ids = hydra_db::builds::reserve_ids(&mut conn, builds.len())
                .await
                .unwrap();
            hydra_db::builds::insert_queued(&mut conn, JobsetId(jobset), 1, &builds, &ids)
                .await
                .unwrap();
            hydra_db::notify::send(&mut conn, "builds_added", "")
                .await
                .unwrap();
            ids.into_iter().map(|id| id.0).collect::<Vec<i32>>()
        }
    };
    // A first thousand, then a steady stream of new dependants while the
    // dependency builds and fails: some are loaded (and linked) while its
    // failure is being recorded.
    let mut ids = insert(0, 1000).await;
    let running = Running::start(s.context(&s.localhost(2), "max_tries = 2\nretry_interval = 1\n"));
    for batch in 1..=40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ids.extend(insert(1000 + (batch - 1) * 50, 1000 + batch * 50).await);
    }
    s.wait(&ids, Duration::from_secs(300)).await;
    let statuses: Vec<(Option<i32>, i64)> = sqlx::query_as(
        "select buildStatus, count(*) from Builds where id = any($1) group by 1 order by 1",
    )
    .bind(&ids)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        statuses,
        [(Some(2), 3000)],
        "every dependant failed because its dependency did"
    );
    assert_eq!(
        s.scalar("select count(*) from BuildSteps where status = 3")
            .await,
        0,
        "no step ran without its dependency"
    );
    // Each points at the build whose step failed, or is that build.
    let unexplained: i64 = sqlx::query_scalar(
        "select count(*) from Builds b where b.id = any($1) and not exists \
         (select 1 from BuildSteps s where s.build = b.id and (s.propagatedFrom is not null or s.status = 1))",
    )
    .bind(&ids)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(unexplained, 0);
    running.stop().await;
}

/// The backend holding this database's advisory locks (the queue
/// runner's), once there is one.
async fn lock_holder(s: &Setup) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "select pid from pg_locks where locktype = 'advisory' and granted \
             and database = (select oid from pg_database where datname = current_database())",
        )
        .fetch_optional(&s.db.pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(std::time::Instant::now() < deadline, "no lock holder");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn terminate(s: &Setup, pid: i32) {
    sqlx::query("select pg_terminate_backend($1)")
        .bind(pid)
        .execute(&s.db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_instance_lock_is_taken_again_after_its_connection_is_lost() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    let running = Running::start(s.context(&s.localhost(1), ""));
    let first = lock_holder(&s).await;
    terminate(&s, first).await;
    // Taken again on a new connection, and building goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lock_holder(&s).await == first {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not taken again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quick = s.queue(&file, "quick").await;
    s.wait(&[quick], Duration::from_secs(60)).await;
    assert_eq!(s.build(quick).await.status, Some(0));
    running.stop().await;
}

#[tokio::test]
async fn a_queue_runner_whose_lock_was_taken_by_another_stops_dispatching() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    let running = Running::start(s.context(&s.localhost(1), ""));
    let first = lock_holder(&s).await;
    // Another queue runner takes the lock while this one's connection is
    // gone (as after a PostgreSQL restart).
    let mut other = s.db.pool.acquire().await.unwrap();
    terminate(&s, first).await;
    let key: i64 = 0x6879_6472_6171_7275;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sqlx::query_scalar::<_, bool>("select pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *other)
        .await
        .unwrap()
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let quick = s.queue(&file, "quick").await;
    let ended = tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("the queue runner stops")
        .unwrap();
    assert!(
        matches!(ended, Err(hydra_queue_runner::QueueError::LockLost)),
        "{ended:?}"
    );
    assert_eq!(
        s.scalar(&format!(
            "select count(*) from BuildSteps where build = {quick}"
        ))
        .await,
        0,
        "nothing was dispatched without the lock"
    );
}

#[tokio::test]
async fn a_step_whose_result_cannot_be_written_is_closed_once_the_database_takes_writes() {
    let s = Setup::new().await;
    let file = s.write("failing.nix", FAILING);
    // A fault in the database: while `outage` has a row, no step can be
    // finished (as when PostgreSQL is gone at the moment of writing).
    s.db.exec(
        "create table outage (x int);
         insert into outage values (1);
         create function refuse_finishing() returns trigger language plpgsql as $$
         begin
           if new.busy = 0 and exists (select 1 from outage) then
             raise exception 'simulated outage';
           end if;
           return new;
         end $$;
         create trigger refuse_finishing before update on BuildSteps
           for each row execute function refuse_finishing();",
    )
    .await;
    let running =
        Running::start(s.context(&s.localhost(1), "retry_interval = 1\nretry_backoff = 1\n"));
    let quick = s.queue(&file, "quick").await;
    // The build ran; its result could not be written: the row is busy.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while s
        .scalar(&format!(
            "select count(*) from BuildSteps where build = {quick} and busy <> 0"
        ))
        .await
        == 0
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.db.exec("delete from outage").await;
    // Closed as aborted with a stop time, and the build done by a retry.
    s.wait(&[quick], Duration::from_secs(60)).await;
    assert_eq!(s.build(quick).await.status, Some(0));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s
        .scalar(&format!(
            "select count(*) from BuildSteps where build = {quick} and busy <> 0"
        ))
        .await
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a step row stayed busy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = s
        .scalar(&format!(
            "select count(*) from BuildSteps where build = {quick} and status = 3 and stopTime is not null \
             and errorMsg like 'the queue runner could not record%'"
        ))
        .await;
    assert!(closed >= 1, "the abandoned row was closed as aborted");
    running.stop().await;
}
