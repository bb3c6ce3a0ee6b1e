//! Aggregate jobs: constituents given as derivations, job names and globs;
//! the rewritten derivation; the errors that fail an evaluation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;

use common::{Setup, source_dir};
use hydra_evaluator::evaluation::Outcome;
use hydra_nix::derivation::Derivation;
use hydra_test_support::jobsets::{create_jobset, create_project};

const CONSTITUENTS: &str = r#"
with import ./config.nix;
let mk = name: attrs: mkDerivation ({ inherit name; builder = builtins.toFile "b.sh" "mkdir $out"; } // attrs); in
rec {
  constituentA = mk "empty-dir-A" { };
  constituentB = mk "empty-dir-B" { };
  direct_aggregate = mk "direct_aggregate" { _hydraAggregate = true; constituents = [ constituentA ]; };
  indirect_aggregate = mk "indirect_aggregate" { _hydraAggregate = true; constituents = [ "constituentA" ]; };
  mixed_aggregate = mk "mixed_aggregate" { _hydraAggregate = true; constituents = [ "constituentA" constituentB ]; };
  # Names another aggregate: rewritten after it.
  outer_aggregate = mk "outer_aggregate" { _hydraAggregate = true; constituents = [ "indirect_aggregate" ]; };
}
"#;

async fn jobset(s: &Setup, expr: &str) {
    let src = source_dir(&[("release.nix", expr)]);
    create_project(&s.db.pool, "p").await;
    let value = src.path().to_str().unwrap().to_string();
    // The directory must outlive the evaluation only; the store has a copy.
    std::mem::forget(src);
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", &value)],
    )
    .await;
}

fn read_drv(path: &str) -> Derivation {
    Derivation::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn drv_of(s: &Setup, job: &str) -> String {
    sqlx::query_scalar("select drvPath from Builds where job = $1")
        .bind(job)
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
}

async fn constituents_of(s: &Setup, job: &str) -> BTreeSet<String> {
    s.strings(&format!(
        "select c.job from AggregateConstituents a join Builds b on b.id = a.aggregate \
         join Builds c on c.id = a.constituent where b.job = '{job}'"
    ))
    .await
    .into_iter()
    .collect()
}

#[tokio::test]
async fn direct_named_and_mixed_constituents() {
    let s = Setup::new().await;
    jobset(&s, CONSTITUENTS).await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 6,
                job_errors: 0,
                ..
            }
        ),
        "{summary}"
    );

    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        constituents_of(&s, "direct_aggregate").await,
        set(&["constituentA"])
    );
    assert_eq!(
        constituents_of(&s, "indirect_aggregate").await,
        set(&["constituentA"])
    );
    assert_eq!(
        constituents_of(&s, "mixed_aggregate").await,
        set(&["constituentA", "constituentB"])
    );
    assert_eq!(
        constituents_of(&s, "outer_aggregate").await,
        set(&["indirect_aggregate"])
    );
    assert!(constituents_of(&s, "constituentA").await.is_empty());

    // The named constituent is an input of the rewritten derivation, whose
    // output path was recomputed (Nix checked it when the .drv was added).
    let a = drv_of(&s, "constituentA").await;
    let indirect = drv_of(&s, "indirect_aggregate").await;
    let drv = read_drv(&indirect);
    assert_eq!(
        drv.input_drvs.get(&a),
        Some(&BTreeSet::from(["out".to_string()]))
    );
    let out: String = sqlx::query_scalar(
        "select o.path from BuildOutputs o join Builds b on b.id = o.build where b.job = 'indirect_aggregate'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(drv.outputs["out"].path, out);
    assert_eq!(drv.env["out"], out);
    // The outer aggregate depends on the rewritten inner one.
    let outer = read_drv(&drv_of(&s, "outer_aggregate").await);
    assert!(
        outer.input_drvs.contains_key(&indirect),
        "{:?}",
        outer.input_drvs
    );

    // Derivation-given constituents are inputs already and stay so.
    let direct = read_drv(&drv_of(&s, "direct_aggregate").await);
    assert!(direct.input_drvs.contains_key(&a));
}

#[tokio::test]
async fn aggregate_and_constituent_derivations_are_gc_rooted() {
    let s = Setup::new().await;
    jobset(&s, CONSTITUENTS).await;
    s.eval_ok("p", "j").await;
    for job in [
        "constituentA",
        "indirect_aggregate",
        "mixed_aggregate",
        "outer_aggregate",
    ] {
        let drv = drv_of(&s, job).await;
        let root = s.gc_roots().join(drv.trim_start_matches("/nix/store/"));
        assert_eq!(
            std::fs::read_link(&root).unwrap().to_str().unwrap(),
            drv,
            "{job}"
        );
    }
}

#[tokio::test]
async fn a_reevaluation_produces_the_same_rewritten_aggregate() {
    let s = Setup::new().await;
    jobset(&s, CONSTITUENTS).await;
    s.eval_ok("p", "j").await;
    let first = drv_of(&s, "mixed_aggregate").await;
    s.db.exec("update Jobsets set forceEval = true").await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 0,
                reused: 6,
                ..
            }
        ),
        "{summary}"
    );
    assert_eq!(drv_of(&s, "mixed_aggregate").await, first);
}

const GLOBS: &str = r#"
with import ./config.nix;
let mk = name: attrs: mkDerivation ({ inherit name; builder = builtins.toFile "b.sh" "mkdir $out"; } // attrs); in
{
  packages = { a = mk "a" { }; b = mk "b" { }; };
  tests.c = mk "c" { };
  all_packages = mk "all_packages" { _hydraAggregate = true; _hydraGlobConstituents = true; constituents = [ "packages.*" ]; };
  everything = mk "everything" { _hydraAggregate = true; _hydraGlobConstituents = true; constituents = [ "packages.*" "tests.c" ]; };
}
"#;

#[tokio::test]
async fn glob_constituents_select_jobs_by_pattern() {
    let s = Setup::new().await;
    jobset(&s, GLOBS).await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Evaluated { new_builds: 5, .. }),
        "{summary}"
    );
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        constituents_of(&s, "all_packages").await,
        set(&["packages.a", "packages.b"])
    );
    assert_eq!(
        constituents_of(&s, "everything").await,
        set(&["packages.a", "packages.b", "tests.c"])
    );
}

async fn expect_failure(expr: &str, wanted: &str) {
    let s = Setup::new().await;
    jobset(&s, expr).await;
    let summary = s.eval("p", "j").await;
    let Outcome::Failed(text) = &summary.outcome else {
        panic!("expected a failed evaluation: {summary}")
    };
    assert!(text.contains(wanted), "`{wanted}` not in:\n{text}");
    assert_eq!(
        s.scalar_i64("select count(*) from Builds").await,
        0,
        "nothing is scheduled"
    );
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 0);
    let error: Option<String> = sqlx::query_scalar("select errorMsg from Jobsets")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(error.unwrap().contains(wanted));
}

#[tokio::test]
async fn a_missing_named_constituent_fails_the_evaluation() {
    expect_failure(
        &CONSTITUENTS.replace(
            "constituents = [ \"constituentA\" ];",
            "constituents = [ \"doesntexist\" ];",
        ),
        "aggregate job ‘indirect_aggregate’ failed with the error: doesntexist: does not exist",
    )
    .await;
}

#[tokio::test]
async fn a_glob_without_matches_fails_the_evaluation() {
    expect_failure(
        &GLOBS.replace("[ \"packages.*\" ]", "[ \"nothing.*\" ]"),
        "aggregate job ‘all_packages’ failed with the error: nothing.*: constituent glob pattern had no matches",
    )
    .await;
}

#[tokio::test]
async fn a_failed_named_constituent_fails_the_evaluation() {
    expect_failure(
        &CONSTITUENTS
            .replace(
                "constituentB = mk \"empty-dir-B\" { };",
                "constituentB = throw \"B is broken\";",
            )
            .replace(
                "[ \"constituentA\" constituentB ]",
                "[ \"constituentA\" \"constituentB\" ]",
            ),
        "aggregate job ‘mixed_aggregate’ failed with the error: constituentB: error: B is broken",
    )
    .await;
}

#[tokio::test]
async fn a_cycle_between_aggregates_fails_the_evaluation() {
    let cyclic = r#"
with import ./config.nix;
let mk = name: attrs: mkDerivation ({ inherit name; builder = builtins.toFile "b.sh" "mkdir $out"; } // attrs); in
{
  x = mk "x" { };
  a = mk "a" { _hydraAggregate = true; constituents = [ "b" "x" ]; };
  b = mk "b" { _hydraAggregate = true; constituents = [ "a" ]; };
}
"#;
    // Nix resolves `a` first (by name), meets it again through `b`, and
    // reports the cycle on `a`.
    expect_failure(
        cyclic,
        "aggregate job ‘a’ failed with the error: Dependency cycle: a <-> b",
    )
    .await;
}

#[tokio::test]
async fn a_cycle_through_globs_fails_the_evaluation() {
    let cyclic = r#"
with import ./config.nix;
let mk = name: attrs: mkDerivation ({ inherit name; builder = builtins.toFile "b.sh" "mkdir $out"; } // attrs); in
{
  x = mk "x" { };
  aggregates.one = mk "one" { _hydraAggregate = true; _hydraGlobConstituents = true; constituents = [ "aggregates.*" ]; };
  aggregates.two = mk "two" { _hydraAggregate = true; _hydraGlobConstituents = true; constituents = [ "aggregates.*" ]; };
}
"#;
    expect_failure(
        cyclic,
        "aggregate job ‘aggregates.one’ failed with the error: Dependency cycle: aggregates.one <-> aggregates.two",
    )
    .await;
}

#[tokio::test]
async fn a_broken_aggregate_in_an_evaluation_without_builds_is_a_job_error() {
    // Nothing builds, so nothing changes: Hydra records the evaluation with
    // the aggregate's and its constituent's errors, and does not fail it.
    let broken = r#"
with import ./config.nix;
let mk = name: attrs: mkDerivation ({ inherit name; builder = builtins.toFile "b.sh" "mkdir $out"; } // attrs); in
{
  broken = throw "broken on purpose";
  all = mk "all" { _hydraAggregate = true; constituents = [ "broken" "missing" ]; };
}
"#;
    let s = Setup::new().await;
    jobset(&s, broken).await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 0,
                job_errors: 2,
                changed: false,
                ..
            }
        ),
        "{summary}"
    );
    assert!(!summary.failed());
    let text: String = sqlx::query_scalar(
        "select e.errorMsg from JobsetEvals j join EvaluationErrors e on e.id = j.evaluationerror_id",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert!(
        text.starts_with(
            "in job ‘all’:\nbroken: error: broken on purpose\nmissing: does not exist\n\n\nin job ‘broken’:\n"
        ),
        "{text}"
    );
    assert!(text.contains("broken on purpose"), "{text}");
    assert_eq!(s.jobset_error().await, text);
    assert_eq!(
        s.scalar_i64("select count(*) from JobsetEvals where hasNewBuilds = 0")
            .await,
        1
    );
}
