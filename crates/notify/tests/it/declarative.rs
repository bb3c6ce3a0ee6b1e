//! DeclarativeJobsets: the specification a `.jobsets` build generated is
//! applied once that build finishes, from the backlog (`--queued-only`)
//! and live; a failed generator is reported on `.jobsets`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hydra_db::status::BuildStatus;
use hydra_notify::{Context, Options};
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;
use tokio_util::sync::CancellationToken;

/// A declarative project `p` with its `.jobsets` jobset and an old jobset
/// the specification will not list; the store root for outputs.
async fn setup() -> (TestDb, Context, tempfile::TempDir, i32) {
    let db = TestDb::new().await;
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    db.exec("update Projects set declfile = 'spec.json', decltype = 'path', declvalue = '/x'")
        .await;
    let jobsets = hydra_test_support::jobsets::create_jobset(
        &db.pool,
        "p",
        ".jobsets",
        "decl",
        "spec.json",
        &[],
    )
    .await;
    hydra_test_support::jobsets::create_jobset(&db.pool, "p", "old", "src", "release.nix", &[])
        .await;
    let root = tempfile::tempdir().unwrap();
    let (config, _) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), "").unwrap();
    let cx = Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir: hydra_config::DataDir::from(root.path()),
        local_root: Some(root.path().to_path_buf()),
    };
    (db, cx, root, jobsets)
}

/// A finished, current build `id` of `.jobsets` whose output holds `spec`.
async fn generated(
    db: &TestDb,
    root: &std::path::Path,
    jobsets: i32,
    id: i32,
    status: BuildStatus,
    spec: &str,
) {
    let out = format!("/nix/store/{}-jobsets-{id}", "s".repeat(32));
    let real = root.join(out.trim_start_matches('/'));
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::write(&real, spec).unwrap();
    TestBuild::new(jobsets, "jobsets")
        .id(id)
        .drv(&format!("/nix/store/{}-jobsets-{id}.drv", "d".repeat(32)))
        .finished(status, 1, 2)
        .output("out", &out)
        .insert(&db.pool)
        .await;
    db.exec(&format!(
        "update Builds set notificationPendingSince = 10 where id = {id}"
    ))
    .await;
}

fn spec(description: &str) -> String {
    serde_json::json!({
        "main": {
            "enabled": 1, "hidden": false, "description": description,
            "nixexprinput": "src", "nixexprpath": "release.nix",
            "checkinterval": 300, "schedulingshares": 100, "enableemail": false,
            "emailoverride": "", "keepnr": 3,
            "inputs": { "src": { "type": "path", "value": "/tmp", "emailresponsible": false } }
        }
    })
    .to_string()
}

async fn description(db: &TestDb, name: &str) -> Option<String> {
    sqlx::query_scalar("select description from Jobsets where project = 'p' and name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten()
}

#[tokio::test]
async fn a_generated_specification_is_applied_from_the_backlog_with_queued_only() {
    let (db, cx, root, jobsets) = setup().await;
    generated(
        &db,
        root.path(),
        jobsets,
        1,
        BuildStatus::Succeeded,
        &spec("from the generator"),
    )
    .await;
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    hydra_notify::run(
        cx,
        plugins,
        Options { queued_only: true },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        description(&db, "main").await.as_deref(),
        Some("from the generator")
    );
    let old: (i32, i32) =
        sqlx::query_as("select enabled, hidden from Jobsets where project = 'p' and name = 'old'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        old,
        (0, 1),
        "a jobset the specification drops is disabled and hidden"
    );
    let pending: Option<i32> =
        sqlx::query_scalar("select notificationPendingSince from Builds where id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pending, None, "delivered");
}

#[tokio::test]
async fn a_specification_built_while_notify_runs_is_applied_and_a_failed_one_reported() {
    let (db, cx, root, jobsets) = setup().await;
    // Once it LISTENs (its backlog is empty), a build finishes.
    let (stop, running) = crate::common::start(&db, cx).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    generated(
        &db,
        root.path(),
        jobsets,
        2,
        BuildStatus::Succeeded,
        &spec("live"),
    )
    .await;
    db.exec("select pg_notify('build_finished', '2')").await;
    while description(&db, "main").await.as_deref() != Some("live") {
        assert!(tokio::time::Instant::now() < deadline, "not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A generator that failed: the `.jobsets` jobset says so.
    generated(&db, root.path(), jobsets, 3, BuildStatus::Failed, "{}").await;
    db.exec("select pg_notify('build_finished', '3')").await;
    let error = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select errorMsg from Jobsets where name = '.jobsets'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    while error().await.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        error().await.unwrap().contains("build 3"),
        "{:?}",
        error().await
    );
    assert_eq!(
        description(&db, "main").await.as_deref(),
        Some("live"),
        "kept"
    );
    stop.cancel();
    running.await.unwrap();
}
