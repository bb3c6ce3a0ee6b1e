//! A `file://` binary cache as the destination store: signed outputs that a
//! fresh Nix store fetches and verifies, logs in the cache, and outputs
//! already in the local store copied there instead of built.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{Recorder, Running, Setup};
use hydra_nix::narinfo::SecretKey;
use hydra_test_support::NixStore;

const JOBS: &str = r#"
with import ./config.nix;
rec {
  dep = mkDerivation { name = "dep"; builder = builtins.toFile "d.sh" "echo dependency > $out"; };
  top = mkDerivation { name = "top"; builder = builtins.toFile "t.sh" "echo building top; mkdir $out; cat $dep > $out/dep; ln -s $dep $out/link"; inherit dep; };
  prebuilt = mkDerivation { name = "prebuilt"; builder = builtins.toFile "p.sh" "echo made > $out"; };
}
"#;

/// Build `id`'s (one) output path and its derivation.
async fn output_and_drv(s: &Setup, id: i32) -> (String, String) {
    sqlx::query_as(
        "select o.path, b.drvPath from BuildOutputs o join Builds b on b.id = o.build where b.id = $1",
    )
    .bind(id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn outputs_go_to_a_signed_cache_that_a_fresh_store_can_use() {
    let s = Setup::new().await;
    let key = SecretKey::generate("hydra-test-1").unwrap();
    let key_file = s.data.path().join("sk");
    std::fs::write(&key_file, key.to_text()).unwrap();
    let cache = s.data.path().join("cache");
    let file = s.write("jobs.nix", JOBS);
    let top = s.queue(&file, "top").await;
    let extra = format!(
        "store_uri = file://{}?secret-key={}&compression=zstd&write-nar-listing=1\nupload_logs_to_binary_cache = 1",
        cache.display(),
        key_file.display()
    );
    let running = Running::start(s.context(&s.localhost(1), &extra));
    s.wait(&[top], Duration::from_secs(120)).await;
    assert_eq!(s.build(top).await.status, Some(0));
    let (out, drv) = output_and_drv(&s, top).await;

    let fresh = NixStore::new();
    let got = fresh
        .command("nix-store")
        .args(["--realise", &out])
        .args([
            "--option",
            "substituters",
            &format!("file://{}", cache.display()),
        ])
        .args([
            "--option",
            "trusted-public-keys",
            &key.public_key().to_text(),
        ])
        .args(["--option", "require-sigs", "true"])
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(fresh.real_path(&format!("{out}/dep"))).unwrap(),
        "dependency\n"
    );
    let log =
        std::fs::read_to_string(cache.join("log").join(drv.rsplit('/').next().unwrap())).unwrap();
    assert!(log.contains("building top"), "{log}");
    let hash = &out["/nix/store/".len()..][..32];
    assert!(cache.join(format!("{hash}.ls")).exists());
    // Sizes come from the cache.
    let closure: Option<i64> = sqlx::query_scalar("select closureSize from Builds where id = $1")
        .bind(top)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(closure.unwrap() > 0);
    // Every step's outputs are rooted in the machine's store, where they
    // are staged whatever the destination.
    let step_outputs: Vec<String> =
        sqlx::query_scalar("select path from BuildStepOutputs where build = $1")
            .bind(top)
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(step_outputs.len(), 2, "dep and top");
    for path in &step_outputs {
        let root = s
            .data
            .path()
            .join("gcroots")
            .join(&path["/nix/store/".len()..]);
        assert!(
            root.exists(),
            "no garbage collector root {}",
            root.display()
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn outputs_the_local_store_has_are_copied_not_built() {
    let s = Setup::new().await;
    let cache = s.data.path().join("cache");
    let file = s.write("jobs.nix", JOBS);
    // Built outside the queue runner, in its local store.
    s.store.build(&file, "prebuilt");
    let running = Running::start(s.context(
        &s.localhost(1),
        &format!("store_uri = file://{}", cache.display()),
    ));
    let mut rec = Recorder::new(
        &s.db,
        &[
            "build_started",
            "step_started",
            "step_finished",
            "build_finished",
        ],
    )
    .await;
    let id = s.queue(&file, "prebuilt").await;
    s.wait(&[id], Duration::from_secs(60)).await;
    let row = s.build(id).await;
    assert_eq!((row.status, row.cached), (Some(0), Some(1)));
    let steps: Vec<(i32, Option<i32>, i32)> =
        sqlx::query_as("select type, status, busy from BuildSteps where build = $1")
            .bind(id)
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(steps, [(1, Some(0), 0)], "one substitution step");
    let out: String = sqlx::query_scalar("select path from BuildOutputs where build = $1")
        .bind(id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(
        cache
            .join(format!("{}.narinfo", &out["/nix/store/".len()..][..32]))
            .exists()
    );
    assert!(
        s.data
            .path()
            .join("gcroots")
            .join(&out["/nix/store/".len()..])
            .exists(),
        "a substituted output is rooted too"
    );
    let got = rec.take().await;
    assert_eq!(got, [("build_finished".to_string(), id.to_string())]);
    running.stop().await;
}

#[tokio::test]
async fn outputs_and_logs_go_to_a_signed_s3_cache() {
    use hydra_test_support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let s = Setup::new().await;
    let s3 = S3Server::start();
    s3.create_bucket("outputs");
    let key = SecretKey::generate("hydra-s3-1").unwrap();
    let key_file = s.data.path().join("sk");
    std::fs::write(&key_file, key.to_text()).unwrap();
    let uri = format!(
        "s3://outputs?endpoint={}&region=us-east-1&secret-key={}&compression=zstd&log-compression=br",
        s3.url(),
        key_file.display()
    );
    let file = s.write("jobs.nix", JOBS);
    let top = s.queue(&file, "top").await;
    let mut context = s.context(
        &s.localhost(1),
        &format!("store_uri = {uri}\nupload_logs_to_binary_cache = 1"),
    );
    // The queue runner's environment holds the credentials.
    let mut env = context.local.clone();
    env.env
        .push(("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()));
    env.env
        .push(("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()));
    context.dest = std::sync::Arc::new(hydra_store::open(&uri, &env).unwrap());
    let running = Running::start(context.clone());
    s.wait(&[top], Duration::from_secs(120)).await;
    assert_eq!(s.build(top).await.status, Some(0));
    let (out, drv) = output_and_drv(&s, top).await;
    running.stop().await;

    let keys = s3.keys("outputs");
    let hash = &out["/nix/store/".len()..][..32];
    assert!(keys.contains(&format!("{hash}.narinfo")), "{keys:?}");
    assert!(
        keys.contains(&format!("log/{}", drv.rsplit('/').next().unwrap())),
        "{keys:?}"
    );
    let narinfo =
        String::from_utf8(s3.get("outputs", &format!("{hash}.narinfo")).unwrap()).unwrap();
    assert!(narinfo.contains("Sig: hydra-s3-1:"), "{narinfo}");
    assert!(narinfo.contains("Compression: zstd"), "{narinfo}");
    // A fresh store gets the output and its dependency from the bucket.
    let fresh = NixStore::new();
    let local = hydra_store::LocalStore::new(hydra_nix::env::NixEnv {
        args: Vec::new(),
        env: fresh.env(),
    });
    context
        .dest
        .copy_to_local(&local, &std::collections::BTreeSet::from([out.clone()]))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(fresh.real_path(&format!("{out}/dep"))).unwrap(),
        "dependency\n"
    );
}
