//! `hydra notify --queued-only` delivers what is pending and exits: a
//! generated declarative specification is applied.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{hydra, run, stderr};

use hydra_db::status::BuildStatus;
use hydra_test_support::builds::TestBuild;
use hydra_test_support::{TestDb, shared_tempdir};

#[tokio::test]
async fn notify_queued_only_applies_a_generated_specification_and_exits() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
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
    // The machine's store is a chroot store: its paths live under `root`.
    let root = data.path().join("root");
    let conf = data.path().join("nix");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        format!("store = {}\nsubstituters =\n", root.display()),
    )
    .unwrap();
    let out = format!("/nix/store/{}-jobsets", "s".repeat(32));
    let real = root.join(out.trim_start_matches('/'));
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    let spec = serde_json::json!({
        "generated": {
            "enabled": 1, "hidden": false, "description": "made by the generator",
            "nixexprinput": "src", "nixexprpath": "release.nix", "checkinterval": 60,
            "schedulingshares": 100, "enableemail": false, "emailoverride": "", "keepnr": 3,
            "inputs": { "src": { "type": "path", "value": "/tmp", "emailresponsible": false } }
        }
    });
    std::fs::write(&real, spec.to_string()).unwrap();
    TestBuild::new(jobsets, "jobsets")
        .id(1)
        .drv(&format!("/nix/store/{}-jobsets.drv", "d".repeat(32)))
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &out)
        .insert(&db.pool)
        .await;
    db.exec("update Builds set notificationPendingSince = 10")
        .await;

    let result = run(hydra(data.path())
        .args(["notify", "--queued-only"])
        .env("HYDRA_DATABASE_URL", db.url())
        .env("NIX_CONF_DIR", &conf)
        .env("XDG_CACHE_HOME", data.path().join("cache")));
    assert!(result.status.success(), "{}", stderr(&result));
    let description: Option<String> = sqlx::query_scalar(
        "select description from Jobsets where project = 'p' and name = 'generated'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(description.as_deref(), Some("made by the generator"));
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from Builds where notificationPendingSince is not null",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending, 0, "delivered");
}

/// `hydra notify` killed (-9) while the build's pending status is on its
/// way, the build finishing while it is down: once it is back, the forge
/// has exactly one final status for the context, after the pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_notify_mid_build_still_ends_with_one_final_status_per_context() {
    use hydra_test_support::http::Recorder;
    use hydra_test_support::jobsets::{EvalInput, add_to_eval, create_eval};
    use std::sync::Arc;
    use std::time::Duration;

    const REV: &str = "89abcdef0123456789abcdef0123456789abcdef";
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let recorder = Arc::new(Recorder::start());
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "j", "src", "release.nix", &[])
            .await;
    let src = "https://github.com/owner/repo.git";
    create_eval(
        &db.pool,
        jobset,
        1,
        &[EvalInput::Revision("src", "git", src, REV)],
    )
    .await;
    TestBuild::new(jobset, "app").id(1).insert(&db.pool).await;
    add_to_eval(&db.pool, 1, 1).await;
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}github_api_url = {}\n\
             <github_authorization>\nowner = token secret\n</github_authorization>\n\
             <githubstatus>\njobs = p:j:.*\ninputs = src\n</githubstatus>\n",
            crate::common::FREE_PORTS,
            recorder.url()
        ),
    )
    .unwrap();
    let start = || {
        let mut notify = crate::common::Up::spawn(
            hydra(data.path())
                .arg("notify")
                .env("HYDRA_DATABASE_URL", db.url())
                .env("RUST_LOG", "info"),
        );
        assert!(
            notify.saw("notify started", Duration::from_secs(30)),
            "{}",
            notify.seen.join("\n")
        );
        notify
    };
    let wait_for = |n: usize| {
        let recorder = recorder.clone();
        tokio::task::spawn_blocking(move || recorder.wait_for(n, Duration::from_secs(30)))
    };

    // The pending status is received, but notify dies before it hears
    // the answer (the forge answers slowly).
    recorder.delay(Duration::from_secs(2));
    let notify = start();
    db.exec("select pg_notify('build_started', '1')").await;
    assert_eq!(wait_for(1).await.unwrap().len(), 1);
    notify.signal(nix::sys::signal::Signal::SIGKILL);
    drop(notify);
    recorder.delay(Duration::ZERO);

    // The build finishes while nobody listens.
    db.exec(
        "update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 2, \
         notificationPendingSince = 2 where id = 1; \
         select pg_notify('build_finished', '1')",
    )
    .await;

    let notify = start();
    let got = wait_for(2).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_after = recorder.requests();
    assert_eq!(got_after.len(), got.len(), "nothing more: {got_after:#?}");
    let states: Vec<(String, String)> = got_after
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["context"].as_str().unwrap().to_string(),
                body["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let context = "continuous-integration/hydra:p:j:app:1".to_string();
    assert_eq!(
        states,
        [
            (context.clone(), "pending".to_string()),
            (context, "success".to_string())
        ]
    );
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from Builds where notificationPendingSince is not null",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending, 0, "delivered");
    notify.stop();
}
