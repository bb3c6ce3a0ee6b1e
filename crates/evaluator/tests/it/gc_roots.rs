//! `hydra update-gc-roots`: which paths get roots (keepnr, keep, unfinished
//! builds, latest successes) and which roots are removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Setup, source_dir};
use hydra_evaluator::gc_roots;
use hydra_test_support::jobsets::{create_jobset, create_project};

const VERSIONED: &str = r#"
with import ./config.nix;
{ version }:
{
  app = mkDerivation { name = "app-${version}"; builder = builtins.toFile "b.sh" "echo ${version} > $out"; };
  tool = mkDerivation { name = "tool"; builder = builtins.toFile "b.sh" "echo tool > $out"; };
}
"#;

fn base(path: &str) -> String {
    path.trim_start_matches("/nix/store/").to_string()
}

async fn roots(s: &Setup) -> BTreeSet<String> {
    std::fs::read_dir(s.data.path().join("roots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

async fn set_version(s: &Setup, v: &str) {
    s.db.exec(&format!(
        "update JobsetInputAlts set value = '{v}' where input = 'version'"
    ))
    .await;
}

#[tokio::test]
async fn keepnr_evaluations_unfinished_builds_and_kept_builds_are_rooted() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", VERSIONED)]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[
            ("src", "path", src.path().to_str().unwrap()),
            ("version", "string", "1"),
        ],
    )
    .await;
    s.db.exec("update Jobsets set keepnr = 1").await;

    // Evaluation 1: both built. Evaluation 2: app 2 built, tool reused.
    // Evaluation 3: app 3 queued (unfinished).
    s.eval_ok("p", "j").await;
    let app1 = s.build_for_real("app").await;
    let tool = s.build_for_real("tool").await;
    set_version(&s, "2").await;
    s.eval_ok("p", "j").await;
    let app2 = s.build_for_real("app").await;
    set_version(&s, "3").await;
    s.eval_ok("p", "j").await;
    let app3_drv: String = sqlx::query_scalar("select drvPath from Builds where nixName = 'app-3'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();

    let dir = s.data.path().join("roots");
    std::fs::create_dir_all(&dir).unwrap();
    // A root nobody wants any more, and one for a path that is gone.
    std::fs::write(dir.join(base(&app1)), "").unwrap();
    std::fs::write(dir.join("00000000000000000000000000000000-gone"), "").unwrap();

    let report = gc_roots::update(&s.db.pool, &s.ctx.nix, &dir, Duration::ZERO)
        .await
        .unwrap();
    let got = roots(&s).await;
    // Evaluation 3 has an unfinished build: its builds are kept (app 3's
    // derivation, tool's output); evaluation 2 is the keepnr = 1 latest
    // finished one (app 2); evaluation 1 is not kept.
    let expected: BTreeSet<String> = [base(&app3_drv), base(&tool), base(&app2)]
        .into_iter()
        .collect();
    assert_eq!(got, expected, "{report:?}");
    assert_eq!(report.removed, 2);

    // A build marked keep is rooted even when its evaluation is not.
    s.db.exec(&format!(
        "update Builds set keep = 1 where id = (select build from BuildOutputs where path = '{app1}')"
    ))
    .await;
    gc_roots::update(&s.db.pool, &s.ctx.nix, &dir, Duration::ZERO)
        .await
        .unwrap();
    assert!(roots(&s).await.contains(&base(&app1)));

    // Young roots survive even when not wanted.
    std::fs::write(dir.join("11111111111111111111111111111111-young"), "").unwrap();
    let report = gc_roots::update(&s.db.pool, &s.ctx.nix, &dir, gc_roots::MIN_AGE)
        .await
        .unwrap();
    assert_eq!(report.spared, 1);
    assert!(
        roots(&s)
            .await
            .contains("11111111111111111111111111111111-young")
    );
}

#[tokio::test]
async fn abandoned_hidden_jobsets_are_not_kept() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", VERSIONED)]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[
            ("src", "path", src.path().to_str().unwrap()),
            ("version", "string", "1"),
        ],
    )
    .await;
    s.eval_ok("p", "j").await;
    let tool = s.build_for_real("tool").await;
    s.build_for_real("app").await;
    let dir = s.data.path().join("roots");
    gc_roots::update(&s.db.pool, &s.ctx.nix, &dir, Duration::ZERO)
        .await
        .unwrap();
    assert!(roots(&s).await.contains(&base(&tool)));

    s.db.exec("update Jobsets set enabled = 0, hidden = 1, lastCheckedTime = 1")
        .await;
    gc_roots::update(&s.db.pool, &s.ctx.nix, &dir, Duration::ZERO)
        .await
        .unwrap();
    assert!(roots(&s).await.is_empty());
}
