//! The queue runner through the real `hydra` binary: `build-one`, one
//! instance per database, and `kill -9` in the middle of a build followed
//! by a restart, which finishes the build exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Up, hydra, run, stderr};
use hydra_db::{Listener, Wakeup};
use hydra_test_support::jobsets::{create_jobset, create_project, queue_build};
use hydra_test_support::{NixStore, TestDb, fixtures_dir, shared_tempdir};

/// `hydra` using `db`, `store` as its Nix store (through `store`'s
/// nix.conf), `localhost` as the only machine.
fn hydra_with(db: &TestDb, store: &NixStore, data: &Path) -> Command {
    std::fs::write(
        data.join("machines"),
        "localhost x86_64-linux - 1 1 - - -\n",
    )
    .unwrap();
    std::fs::write(
        data.join("hydra.conf"),
        format!(
            "gc_roots_dir = {}\nmachines_file = {}\nqueue_runner_metrics_address = 127.0.0.1:0\nevaluator_metrics_address =\n",
            data.join("roots").display(),
            data.join("machines").display()
        ),
    )
    .unwrap();
    let mut cmd = hydra(data);
    cmd.env("HYDRA_DATABASE_URL", db.url())
        .env("NIX_CONF_DIR", store.conf_dir())
        .env("XDG_CACHE_HOME", data.join("cache"));
    cmd
}

const JOBS: &str = r#"
with import ./config.nix;
{
  quick = mkDerivation { name = "quick"; builder = builtins.toFile "q.sh" "echo quick > $out"; };
  slow = mkDerivation { name = "slow"; builder = builtins.toFile "s.sh" "sleep 3.75; echo slow > $out"; };
}
"#;

async fn setup() -> (TestDb, NixStore, tempfile::TempDir, std::path::PathBuf, i32) {
    let db = TestDb::new().await;
    let store = NixStore::new();
    let data = shared_tempdir();
    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    std::fs::copy(
        fixtures_dir().join("config.nix"),
        data.path().join("config.nix"),
    )
    .unwrap();
    let file = data.path().join("jobs.nix");
    std::fs::write(&file, JOBS).unwrap();
    (db, store, data, file, jobset)
}

#[tokio::test]
async fn build_one_builds_a_build_and_its_status_is_printed() {
    let (db, store, data, file, jobset) = setup().await;
    let id = queue_build(&db.pool, &store, jobset, &file, "quick", Default::default()).await;
    let out = run(hydra_with(&db, &store, data.path()).args(["build-one", &id.to_string()]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("build {id}: status 0\n")
    );
    let finished: i32 = sqlx::query_scalar("select finished from Builds where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(finished, 1);
    // A finished build is fine too.
    let out = run(hydra_with(&db, &store, data.path()).args(["build-one", &id.to_string()]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(hydra_with(&db, &store, data.path()).args(["build-one", "999999"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("build 999999 does not exist"));
}

async fn busy_steps(db: &TestDb, busy: i32) -> i64 {
    sqlx::query_scalar("select count(*) from BuildSteps where busy = $1")
        .bind(busy)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn kill_9_during_a_build_then_a_restart_finishes_it_exactly_once() {
    let (db, store, data, file, jobset) = setup().await;
    let mut finished_notes = Listener::connect(&db.pool, &["build_finished"])
        .await
        .unwrap();
    let id = queue_build(&db.pool, &store, jobset, &file, "slow", Default::default()).await;

    let mut first = Up::spawn(hydra_with(&db, &store, data.path()).arg("queue-runner"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while busy_steps(&db, 30).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the build did not start:\n{}",
            first.seen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second queue runner on the same database is refused.
    let out = run(hydra_with(&db, &store, data.path()).arg("queue-runner"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("another queue runner"),
        "{}",
        stderr(&out)
    );

    first.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = first.child.wait();
    let second = Up::spawn(hydra_with(&db, &store, data.path()).arg("queue-runner"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let finished: i32 = sqlx::query_scalar("select finished from Builds where id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if finished == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build was not finished after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status: Option<i32> = sqlx::query_scalar("select buildStatus from Builds where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, Some(0));
    let busy: i64 = sqlx::query_scalar("select count(*) from BuildSteps where busy <> 0")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(busy, 0, "no step is left busy");
    let interrupted: i64 =
        sqlx::query_scalar("select count(*) from BuildSteps where build = $1 and status = 3")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        interrupted, 1,
        "the interrupted step is recorded as aborted"
    );
    // build_finished was sent once.
    let mut finished_count = 0;
    while let Ok(Ok(Wakeup::Notification { payload, .. })) =
        tokio::time::timeout(Duration::from_millis(500), finished_notes.recv()).await
    {
        if payload.split('\t').next() == Some(id.to_string().as_str()) {
            finished_count += 1;
        }
    }
    assert_eq!(finished_count, 1);
    second.stop();
}
