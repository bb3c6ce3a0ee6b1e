//! What the notify tests share: a project with an evaluation of one
//! revision, builds in it, the role run in the background or on its
//! backlog, NOTIFYs, and waiting for a recording server.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use hydra_db::status::BuildStatus;
use hydra_notify::{Context, Options};
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;
use hydra_test_support::http::{Recorder, Request};
use hydra_test_support::jobsets::{EvalInput, add_to_eval, create_eval};
use tokio_util::sync::CancellationToken;

pub const REV: &str = "0123456789abcdef0123456789abcdef01234567";
pub const BASE: &str = "https://hydra.example.org";

/// Project `p`, jobset `j` and its evaluation 1 of `src` (a git input at
/// `src_uri`, revision `REV`) with string inputs `strings`.
pub async fn setup(src_uri: &str, strings: &[(&str, &str)]) -> (TestDb, i32) {
    let db = TestDb::new().await;
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset = hydra_test_support::jobsets::create_jobset(
        &db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "git", src_uri)],
    )
    .await;
    db.exec("update JobsetInputs set emailResponsible = 1 where name = 'src'")
        .await;
    let mut inputs = vec![EvalInput::Revision("src", "git", src_uri, REV)];
    inputs.extend(
        strings
            .iter()
            .map(|(name, value)| EvalInput::Text(name, value)),
    );
    create_eval(&db.pool, jobset, 1, &inputs).await;
    (db, jobset)
}

/// Build `id` of `job`, queued, in evaluation 1.
pub async fn queued(db: &TestDb, jobset: i32, id: i32, job: &str) {
    TestBuild::new(jobset, job).id(id).insert(&db.pool).await;
    add_to_eval(&db.pool, 1, id).await;
}

/// Build `id` of `job`, finished with `status`, in evaluation 1, its
/// notifications pending.
pub async fn finished(db: &TestDb, jobset: i32, id: i32, job: &str, status: BuildStatus) {
    queued(db, jobset, id, job).await;
    finish(db, id, status).await;
}

/// Finishes queued build `id` with `status`, as the queue runner does
/// (its notifications pending).
pub async fn finish(db: &TestDb, id: i32, status: BuildStatus) {
    sqlx::query(
        "update Builds set finished = 1, buildStatus = $2, startTime = 10, stopTime = 20, \
         notificationPendingSince = 20 where id = $1",
    )
    .bind(id)
    .bind(status.code())
    .execute(&db.pool)
    .await
    .unwrap();
}

pub fn context(db: &TestDb, conf: &str) -> Context {
    let text = format!("base_uri = {BASE}\n{conf}");
    let (config, warnings) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), &text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir: hydra_config::DataDir::from(std::env::temp_dir()),
        local_root: None,
    }
}

/// Runs notify on the backlog and what is due, then stops.
pub async fn queued_only(cx: Context) {
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    hydra_notify::run(
        cx,
        plugins,
        Options { queued_only: true },
        CancellationToken::new(),
    )
    .await
    .unwrap();
}

/// Notify, running until the returned token is cancelled.
pub async fn start(db: &TestDb, cx: Context) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    let stop = CancellationToken::new();
    let (ready, started) = tokio::sync::oneshot::channel();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move {
            hydra_notify::run_with(cx, plugins, Options::default(), stop, Some(ready))
                .await
                .unwrap()
        }
    });
    // Listening, and the backlog read: builds finished from now on are
    // heard of once, by their event.
    started.await.unwrap();
    db.wait_for_listener().await;
    (stop, running)
}

pub async fn notify(db: &TestDb, channel: &str, payload: &str) {
    db.exec(&format!("select pg_notify('{channel}', E'{payload}')"))
        .await;
}

/// Waits until `n` requests arrived (without blocking the runtime).
pub async fn requests(recorder: &Arc<Recorder>, n: usize) -> Vec<Request> {
    let recorder = recorder.clone();
    tokio::task::spawn_blocking(move || recorder.wait_for(n, Duration::from_secs(20)))
        .await
        .unwrap()
}
