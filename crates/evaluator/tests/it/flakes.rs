//! Flake jobsets: `hydraJobs`, else `checks`, else an error; the locked
//! reference on the evaluation; offline `path:` and `git+file:` flakes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{EVAL_CHANNELS, Recorder, Setup};
use hydra_evaluator::evaluation::Outcome;
use hydra_test_support::GitRepo;
use hydra_test_support::jobsets::{create_flake_jobset, create_project};

fn flake(outputs: &str) -> String {
    format!(
        r#"{{
  outputs = {{ self }}: let
    mk = name: derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo ${{name}} > $out" ]; }};
  in {outputs};
}}
"#
    )
}

#[tokio::test]
async fn a_git_flake_with_hydra_jobs_is_locked_and_evaluated() {
    let s = Setup::new().await;
    let repo = GitRepo::new();
    let rev1 = repo.commit(
        &[(
            "flake.nix",
            &flake("{ hydraJobs = { hello = mk \"hello\"; nested.world = mk \"world\"; }; }"),
        )],
        "first",
    );
    create_project(&s.db.pool, "p").await;
    let id = create_flake_jobset(&s.db.pool, "p", "f", &format!("git+{}", repo.url())).await;

    let eval = s.eval_ok("p", "f").await;
    let jobs = s.strings("select job from Builds order by job").await;
    assert_eq!(jobs, ["hello", "nested.world"]);
    let locked: Option<String> = sqlx::query_scalar("select flake from JobsetEvals where id = $1")
        .bind(eval)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let locked = locked.unwrap();
    assert!(
        locked.starts_with("git+file://") && locked.contains(&rev1),
        "{locked}"
    );
    // What it fetched was on record before it was evaluated (for
    // evaluation statuses), under its trace id.
    let checkouts: Vec<(String, Option<String>)> =
        sqlx::query_as("select traceId, flake from JobsetCheckouts where jobset_id = $1")
            .bind(id)
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(checkouts.len(), 1, "{checkouts:?}");
    assert_eq!(checkouts[0].1.as_deref(), Some(locked.as_str()));
    let trace = hydra_db::commit_statuses::checkout(&s.db.pool, &checkouts[0].0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((trace.project.as_str(), trace.jobset.as_str()), ("p", "f"));

    // Unchanged: cached.
    let mut rec = Recorder::new(&s.db, EVAL_CHANNELS).await;
    let summary = s.eval("p", "f").await;
    assert_eq!(
        summary.outcome,
        Outcome::Unchanged {
            previous_eval: eval
        }
    );
    assert_eq!(rec.channels().await, ["eval_started", "eval_cached"]);

    // A new commit: a new evaluation at the new revision.
    let rev2 = repo.commit(
        &[(
            "flake.nix",
            &flake("{ hydraJobs = { hello = mk \"hello2\"; nested.world = mk \"world\"; }; }"),
        )],
        "second",
    );
    let eval2 = s.eval_ok("p", "f").await;
    let locked2: Option<String> = sqlx::query_scalar("select flake from JobsetEvals where id = $1")
        .bind(eval2)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(locked2.unwrap().contains(&rev2));
    // hello again (it changed); nested.world is reused.
    assert_eq!(
        s.strings("select job from Builds order by job, id").await,
        ["hello", "hello", "nested.world"]
    );
    let _ = id;
}

#[tokio::test]
async fn checks_are_used_when_there_are_no_hydra_jobs() {
    let s = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flake.nix"),
        flake("{ checks.x86_64-linux = { unit = mk \"unit\"; lint = mk \"lint\"; }; }"),
    )
    .unwrap();
    create_project(&s.db.pool, "p").await;
    create_flake_jobset(
        &s.db.pool,
        "p",
        "f",
        &format!("path:{}", dir.path().display()),
    )
    .await;
    let eval = s.eval_ok("p", "f").await;
    let jobs = s.strings("select job from Builds order by job").await;
    assert_eq!(jobs, ["x86_64-linux.lint", "x86_64-linux.unit"]);
    let locked: Option<String> = sqlx::query_scalar("select flake from JobsetEvals where id = $1")
        .bind(eval)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(locked.unwrap().contains("narHash="));
}

#[tokio::test]
async fn a_flake_without_jobs_or_checks_fails_the_evaluation() {
    let s = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flake.nix"), flake("{ packages = { }; }")).unwrap();
    create_project(&s.db.pool, "p").await;
    create_flake_jobset(
        &s.db.pool,
        "p",
        "f",
        &format!("path:{}", dir.path().display()),
    )
    .await;
    let summary = s.eval("p", "f").await;
    let Outcome::Failed(text) = &summary.outcome else {
        panic!("{summary}")
    };
    assert!(
        text.contains("does not provide any Hydra jobs or checks"),
        "{text}"
    );
}

#[tokio::test]
async fn a_flake_that_cannot_be_locked_is_a_fetch_error() {
    let s = Setup::new().await;
    create_project(&s.db.pool, "p").await;
    create_flake_jobset(&s.db.pool, "p", "f", "path:/does/not/exist").await;
    let mut rec = Recorder::new(&s.db, EVAL_CHANNELS).await;
    let summary = s.eval("p", "f").await;
    assert!(
        matches!(summary.outcome, Outcome::FetchFailed(ref e) if e.contains("/does/not/exist")),
        "{summary}"
    );
    assert_eq!(rec.channels().await, ["eval_started", "eval_failed"]);
}
