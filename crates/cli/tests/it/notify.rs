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
