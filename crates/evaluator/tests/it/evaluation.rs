//! Whole evaluations against real PostgreSQL and real Nix: what is
//! recorded, which builds are reused, and the NOTIFY sequences.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::common;

use common::{EVAL_CHANNELS, Recorder, Setup, source_dir, write_files};
use hydra_evaluator::evaluation::Outcome;
use hydra_test_support::jobsets::{create_jobset, create_project, set_inputs};

const TWO_JOBS: &str = r#"
with import ./config.nix;
{ version ? "1" }:
{
  a = mkDerivation { name = "a"; builder = builtins.toFile "a.sh" "echo a ${version} > $out"; };
  b = mkDerivation { name = "b"; builder = builtins.toFile "b.sh" "echo b > $out"; };
}
"#;

async fn two_job_jobset(s: &Setup) -> (tempfile::TempDir, i32) {
    let src = source_dir(&[("release.nix", TWO_JOBS)]);
    create_project(&s.db.pool, "p").await;
    // A validity of 0 s: every evaluation looks at the directory again.
    let value = format!("{} 0", src.path().display());
    let id = create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", &value)],
    )
    .await;
    (src, id)
}

#[tokio::test]
async fn notifications_for_first_unchanged_changed_and_broken_evaluations() {
    let s = Setup::new().await;
    let (src, jobset_id) = two_job_jobset(&s).await;
    let mut rec = Recorder::new(&s.db, EVAL_CHANNELS).await;

    // First evaluation: every build is new.
    let eval1 = s.eval_ok("p", "j").await;
    let got = rec.take().await;
    let channels: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        channels,
        [
            "eval_started",
            "build_queued",
            "build_queued",
            "eval_added",
            "builds_added"
        ]
    );
    let trace = got[0].1.split('\t').next().unwrap().to_string();
    assert_eq!(got[0].1, format!("{trace}\t{jobset_id}"));
    assert_eq!(got[3].1, format!("{trace}\t{jobset_id}\t{eval1}"));
    let builds: Vec<i32> = sqlx::query_scalar("select id from Builds order by id")
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(builds.len(), 2);
    assert_eq!(got[1].1, builds[0].to_string());
    assert_eq!(got[2].1, builds[1].to_string());
    assert_eq!(
        got[4].1,
        builds[0].to_string(),
        "builds_added carries the lowest new id"
    );

    // Unchanged: nothing but eval_cached, naming the previous evaluation.
    let summary = s.eval("p", "j").await;
    assert_eq!(
        summary.outcome,
        Outcome::Unchanged {
            previous_eval: eval1
        }
    );
    let got = rec.take().await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "eval_started");
    let trace = got[0].1.split('\t').next().unwrap();
    assert_eq!(
        got[1],
        (
            "eval_cached".into(),
            format!("{trace}\t{jobset_id}\t{eval1}")
        )
    );
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 1);

    // Changed: job a gets a new build, b is reused (still queued).
    std::fs::write(
        src.path().join("release.nix"),
        TWO_JOBS.replace("{ version ? \"1\" }", "{ version ? \"2\" }"),
    )
    .unwrap();
    let eval2 = s.eval_ok("p", "j").await;
    let got = rec.take().await;
    let channels: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        channels,
        [
            "eval_started",
            "build_queued",
            "cached_build_queued",
            "eval_added",
            "builds_added"
        ]
    );
    let new_a: i32 = got[1].1.parse().unwrap();
    assert!(new_a > builds[1]);
    assert_eq!(got[2].1, format!("{eval2}\t{}", builds[1]));

    // Broken: the source is gone.
    drop(src);
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::FetchFailed(ref e) if e.contains("does not exist")),
        "{summary}"
    );
    assert!(summary.failed());
    let channels = rec.channels().await;
    assert_eq!(channels, ["eval_started", "eval_failed"]);
    let fetch_error: Option<String> =
        sqlx::query_scalar("select fetchErrorMsg from Jobsets where id = $1")
            .bind(jobset_id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert!(fetch_error.unwrap().contains("does not exist"));
    assert_eq!(
        s.scalar_i64("select count(*) from JobsetEvals").await,
        2,
        "no evaluation for a failed fetch"
    );
}

#[tokio::test]
async fn an_evaluation_records_builds_outputs_members_inputs_and_gc_roots() {
    let s = Setup::new().await;
    let (src, jobset_id) = two_job_jobset(&s).await;
    let eval = s.eval_ok("p", "j").await;

    let (has_new, nr_builds, hash): (i32, Option<i32>, Option<String>) =
        sqlx::query_as("select hasNewBuilds, nrBuilds, hash from JobsetEvals where id = $1")
            .bind(eval)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!((has_new, nr_builds), (1, Some(2)));
    assert_eq!(hash.unwrap().len(), 64);

    let rows: Vec<(String, String, String, i32, i32, i32, String)> = sqlx::query_as(
        "select job, nixName, drvPath, finished, isCurrent, priority, system from Builds where jobset_id = $1 order by job",
    )
    .bind(jobset_id)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, "a");
    assert_eq!(rows[0].1, "a");
    assert_eq!((rows[0].3, rows[0].4, rows[0].5), (0, 1, 100));
    for row in &rows {
        assert!(
            std::path::Path::new(&row.2).exists(),
            "{} is in the store",
            row.2
        );
        let root = s.gc_roots().join(row.2.trim_start_matches("/nix/store/"));
        assert_eq!(std::fs::read_link(&root).unwrap().to_str().unwrap(), row.2);
    }
    let outputs = s
        .strings("select o.name || ' ' || o.path from BuildOutputs o join Builds b on b.id = o.build where b.job = 'a'")
        .await;
    assert_eq!(outputs.len(), 1);
    assert!(outputs[0].starts_with("out /nix/store/") && outputs[0].ends_with("-a"));
    assert_eq!(
        s.scalar_i64(&format!(
            "select count(*) from JobsetEvalMembers where eval = {eval} and isNew = 1"
        ))
        .await,
        2
    );
    let inputs: Vec<(
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as(
        "select name, type, uri, revision, path from JobsetEvalInputs where eval = $1",
    )
    .bind(eval)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].0, "src");
    assert_eq!(inputs[0].1, "path");
    assert_eq!(inputs[0].2.as_deref(), Some(src.path().to_str().unwrap()));
    assert!(
        inputs[0].3.as_ref().unwrap().contains(':'),
        "revision is time:hash"
    );
    assert!(inputs[0].4.as_ref().unwrap().starts_with("/nix/store/"));
    // Hydra's "no error" is an empty text with its time (`has_error` is
    // `errormsg != ''`), on the jobset and on the evaluation.
    let (checked, error, error_time): (Option<i32>, Option<String>, Option<i32>) =
        sqlx::query_as("select lastCheckedTime, errorMsg, errorTime from Jobsets where id = $1")
            .bind(jobset_id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert!(checked.is_some());
    assert_eq!(error.as_deref(), Some(""));
    assert_eq!(error_time, checked);
    let (eval_error, eval_error_time): (Option<String>, Option<i32>) = sqlx::query_as(
        "select e.errorMsg, e.errorTime from JobsetEvals j join EvaluationErrors e on e.id = j.evaluationerror_id",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(eval_error.as_deref(), Some(""));
    assert!(eval_error_time.is_some());
}

#[tokio::test]
async fn is_current_left_behind_by_a_killed_evaluator_is_moved_by_the_next_run() {
    let s = Setup::new().await;
    let (src, _) = two_job_jobset(&s).await;
    s.eval_ok("p", "j").await;
    std::fs::write(
        src.path().join("release.nix"),
        TWO_JOBS.replace("{ version ? \"1\" }", "{ version ? \"2\" }"),
    )
    .unwrap();
    s.eval_ok("p", "j").await;
    let current = "select job || ':' || id from Builds where isCurrent = 1 order by id";
    let wanted = s.strings(current).await;
    // What an evaluator killed after recording the second evaluation, but
    // before moving isCurrent, leaves: the first evaluation's builds.
    s.db.exec(
        "update Builds set isCurrent = 0;          update Builds set isCurrent = 1 where id in (select build from JobsetEvalMembers where eval = 1)",
    )
    .await;
    assert_ne!(s.strings(current).await, wanted);
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(summary.outcome, Outcome::Unchanged { .. }),
        "{summary}"
    );
    assert_eq!(s.strings(current).await, wanted);
}

#[tokio::test]
async fn reevaluation_reuses_builds_and_moves_is_current() {
    let s = Setup::new().await;
    let (src, _) = two_job_jobset(&s).await;
    let eval1 = s.eval_ok("p", "j").await;
    std::fs::write(
        src.path().join("release.nix"),
        TWO_JOBS.replace("{ version ? \"1\" }", "{ version ? \"2\" }"),
    )
    .unwrap();
    let eval2 = s.eval_ok("p", "j").await;
    // a twice (its version changed), b once.
    assert_eq!(
        s.strings("select job from Builds order by job, id").await,
        ["a", "a", "b"]
    );
    // The old build of a is no longer current; b's one build is in both.
    let current = s
        .strings("select job from Builds where isCurrent = 1 order by job")
        .await;
    assert_eq!(current, ["a", "b"]);
    assert_eq!(
        s.strings("select job from Builds where isCurrent = 0")
            .await,
        ["a"]
    );
    let b_evals = s
        .scalar_i64("select count(*) from JobsetEvalMembers m join Builds b on b.id = m.build where b.job = 'b'")
        .await;
    assert_eq!(b_evals, 2);
    assert_eq!(
        s.scalar_i64(&format!(
            "select count(*) from JobsetEvalMembers where eval = {eval2} and isNew = 0"
        ))
        .await,
        1
    );
    assert!(eval2 > eval1);

    // Back to the first version: a third build of a (Hydra's documented
    // behaviour: only the previous evaluation is looked at).
    std::fs::write(src.path().join("release.nix"), TWO_JOBS).unwrap();
    s.eval_ok("p", "j").await;
    assert_eq!(
        s.scalar_i64("select count(*) from Builds where job = 'a'")
            .await,
        3
    );
}

#[tokio::test]
async fn force_eval_evaluates_unchanged_inputs_and_is_cleared() {
    let s = Setup::new().await;
    let (_src, jobset_id) = two_job_jobset(&s).await;
    s.eval_ok("p", "j").await;
    sqlx::query("update Jobsets set forceEval = true where id = $1")
        .bind(jobset_id)
        .execute(&s.db.pool)
        .await
        .unwrap();
    let mut rec = Recorder::new(&s.db, EVAL_CHANNELS).await;
    let summary = s.eval("p", "j").await;
    let Outcome::Evaluated {
        new_builds,
        reused,
        changed,
        ..
    } = summary.outcome
    else {
        panic!("{summary}")
    };
    assert_eq!((new_builds, reused, changed), (0, 2, false));
    let channels = rec.channels().await;
    assert_eq!(
        channels,
        [
            "eval_started",
            "cached_build_queued",
            "cached_build_queued",
            "eval_added"
        ],
        "no builds_added without new builds"
    );
    let (force, nr): (Option<bool>, Option<i32>) = sqlx::query_as(
        "select j.forceEval, e.nrBuilds from Jobsets j join JobsetEvals e on e.jobset_id = j.id where j.id = $1 order by e.id desc limit 1",
    )
    .bind(jobset_id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(force, None);
    assert_eq!(nr, None, "an unchanged evaluation has no nrBuilds");
}

#[tokio::test]
async fn finished_builds_are_announced_as_cached_finished() {
    let s = Setup::new().await;
    let (_src, jobset_id) = two_job_jobset(&s).await;
    s.eval_ok("p", "j").await;
    s.db.exec("update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 1 where job = 'b'").await;
    sqlx::query("update Jobsets set forceEval = true where id = $1")
        .bind(jobset_id)
        .execute(&s.db.pool)
        .await
        .unwrap();
    let mut rec = Recorder::new(&s.db, &["cached_build_finished", "cached_build_queued"]).await;
    s.eval_ok("p", "j").await;
    let channels = rec.channels().await;
    assert_eq!(channels, ["cached_build_queued", "cached_build_finished"]);
}

const META: &str = r#"
with import ./config.nix;
{
  full = mkDerivation {
    name = "full-1.0";
    builder = builtins.toFile "b.sh" "echo > $out";
    meta = {
      description = "A job with every meta field";
      license = [ { shortName = "MIT"; } "BSD" ];
      homepage = "https://example.org/full";
      maintainers = [ "alice@example.com" { email = "bob@not.found"; } ];
      maxSilent = 17;
      timeout = 42;
      schedulingPriority = 7;
      isHydraChannel = true;
    };
  };
  bare = mkDerivation { name = "bare"; builder = builtins.toFile "b.sh" "echo > $out"; };
  multi = derivation {
    name = "multi"; system = builtins.currentSystem; builder = "/bin/sh";
    outputs = [ "out" "dev" "bin" ];
    args = [ "-c" "echo > $out; echo > $dev; echo > $bin" ];
  };
}
"#;

#[tokio::test]
async fn meta_fields_are_read_into_builds() {
    let s = Setup::new().await;
    let (_src, _) = s.simple_jobset(META).await;
    s.eval_ok("p", "j").await;
    #[allow(clippy::type_complexity)]
    let row: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i32>,
        Option<i32>,
        i32,
        Option<i32>,
        Option<String>,
    ) = sqlx::query_as(
        "select description, license, homepage, maintainers, maxsilent, timeout, priority, isChannel, nixName \
         from Builds where job = 'full'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(row.0.as_deref(), Some("A job with every meta field"));
    assert_eq!(row.1.as_deref(), Some("MIT, BSD"));
    assert_eq!(row.2.as_deref(), Some("https://example.org/full"));
    assert_eq!(row.3.as_deref(), Some("alice@example.com, bob@not.found"));
    assert_eq!(
        (row.4, row.5, row.6, row.7),
        (Some(17), Some(42), 7, Some(1))
    );
    assert_eq!(row.8.as_deref(), Some("full-1.0"));

    let bare: (Option<String>, Option<i32>, Option<i32>, i32, Option<i32>) = sqlx::query_as(
        "select description, maxsilent, timeout, priority, isChannel from Builds where job = 'bare'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(bare, (None, None, None, 100, Some(0)), "defaults");
    let outputs = s
        .strings("select o.name from BuildOutputs o join Builds b on b.id = o.build where b.job = 'multi' order by o.name")
        .await;
    assert_eq!(outputs, ["bin", "dev", "out"]);
}

const NESTED: &str = r#"
with import ./config.nix;
let mk = name: mkDerivation { inherit name; builder = builtins.toFile "b.sh" "echo > $out"; }; in
{ greeting ? "hi", enable ? false, number ? 0 }:
{
  top = mk "top-${greeting}";
  tests = {
    unit = mk "unit";
    deeper.still = mk "still";
    recurseForDerivations = true;
  };
  noRecurse = { inner = mk "inner"; };
  fn = { greeting }: { called = mk "called-${greeting}"; };
  nothing = null;
  "dotted.name" = mk "dotted";
  "has space" = mk "spaced";
  flags = if enable then mk "enabled-${toString number}" else null;
}
"#;

#[tokio::test]
async fn nested_attributes_functions_nulls_and_dotted_names() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", NESTED)]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[
            ("src", "path", src.path().to_str().unwrap()),
            ("greeting", "string", "hello-world"),
            ("enable", "boolean", "true"),
            ("number", "nix", "20 + 22"),
        ],
    )
    .await;
    s.eval_ok("p", "j").await;
    let jobs = s
        .strings("select job || '=' || nixName from Builds order by job")
        .await;
    // A name with a dot in an attribute cannot be a URL segment: a job
    // error (see attributes_that_cannot_be_job_names_are_job_errors_naming_them).
    assert!(
        s.jobset_error()
            .await
            .contains("the attribute path ‘\"dotted.name\"’ cannot be a job name")
    );
    assert_eq!(
        jobs,
        [
            "flags=enabled-42",
            "fn.called=called-hello-world",
            "noRecurse.inner=inner",
            "tests.deeper.still=still",
            "tests.unit=unit",
            "top=top-hello-world",
        ]
    );
    let kinds = s
        .strings("select name || ':' || type || ':' || coalesce(value, '') from JobsetEvalInputs order by name")
        .await;
    assert_eq!(
        kinds,
        [
            "enable:boolean:true",
            "greeting:string:hello-world",
            "number:nix:20 + 22",
            "src:path:",
        ]
    );
}

const BROKEN: &str = r#"
with import ./config.nix;
{
  good = mkDerivation { name = "good"; builder = builtins.toFile "b.sh" "echo > $out"; };
  bad = throw "this job is broken";
  worse = abort "this one aborts";
}
"#;

#[tokio::test]
async fn job_errors_are_recorded_with_the_evaluation_and_the_jobset() {
    let s = Setup::new().await;
    let (_src, jobset_id) = s.simple_jobset(BROKEN).await;
    let summary = s.eval("p", "j").await;
    let Outcome::Evaluated {
        eval_id,
        new_builds,
        job_errors,
        ..
    } = summary.outcome
    else {
        panic!("{summary}")
    };
    assert_eq!((new_builds, job_errors), (1, 2));
    let text: String = sqlx::query_scalar(
        "select e.errorMsg from JobsetEvals j join EvaluationErrors e on e.id = j.evaluationerror_id where j.id = $1",
    )
    .bind(eval_id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert!(
        text.starts_with("in job ‘bad’:\nerror: this job is broken"),
        "{text}"
    );
    assert!(text.contains("\n\nin job ‘worse’:\nerror: evaluation aborted with the following error message: 'this one aborts'"), "{text}");
    assert!(text.ends_with("\n\n"));
    let (jobset_error, error_time): (Option<String>, Option<i32>) =
        sqlx::query_as("select errorMsg, errorTime from Jobsets where id = $1")
            .bind(jobset_id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(jobset_error.as_deref(), Some(text.as_str()));
    assert!(error_time.is_some());
}

#[tokio::test]
async fn a_broken_expression_fails_the_evaluation_as_a_whole() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", "{ a = ; }")]);
    create_project(&s.db.pool, "p").await;
    let jobset_id = create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    let mut rec = Recorder::new(&s.db, EVAL_CHANNELS).await;
    let summary = s.eval("p", "j").await;
    let Outcome::Failed(text) = &summary.outcome else {
        panic!("{summary}")
    };
    assert!(text.contains("syntax error"), "{text}");
    assert_eq!(rec.channels().await, ["eval_started", "eval_failed"]);
    let error: Option<String> = sqlx::query_scalar("select errorMsg from Jobsets where id = $1")
        .bind(jobset_id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(error.unwrap().contains("syntax error"));
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 0);
}

#[tokio::test]
async fn restricted_evaluation_refuses_files_outside_the_inputs() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", "{ leak = builtins.readFile /etc/hostname; }")]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    let summary = s.eval("p", "j").await;
    let Outcome::Evaluated { job_errors, .. } = summary.outcome else {
        panic!("{summary}")
    };
    assert_eq!(job_errors, 1);
    let error = s.jobset_error().await;
    assert!(error.contains("forbidden in restricted mode"), "{error}");
}

#[tokio::test]
async fn one_shot_jobsets_are_disabled_after_evaluating() {
    let s = Setup::new().await;
    let (_src, jobset_id) = two_job_jobset(&s).await;
    sqlx::query("update Jobsets set enabled = 2 where id = $1")
        .bind(jobset_id)
        .execute(&s.db.pool)
        .await
        .unwrap();
    s.eval_ok("p", "j").await;
    assert_eq!(s.scalar_i64("select enabled::bigint from Jobsets").await, 0);
}

const FIXED_OUTPUT: &str = r#"
{ comment ? "first" }:
{
  fod = derivation {
    name = "fod"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "printf hello > $out # ${comment}" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
  };
}
"#;

#[tokio::test]
async fn a_reused_build_whose_derivation_changed_is_repointed_and_queued_again() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", FIXED_OUTPUT)]);
    create_project(&s.db.pool, "p").await;
    let value = format!("{} 0", src.path().display());
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", &value)],
    )
    .await;
    s.eval_ok("p", "j").await;
    let (id, drv1): (i32, String) = sqlx::query_as("select id, drvPath from Builds")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    s.db.exec("update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 1")
        .await;
    write_files(
        src.path(),
        &[(
            "release.nix",
            &FIXED_OUTPUT.replace("\"first\"", "\"second\""),
        )],
    );
    let mut rec = Recorder::new(&s.db, EVAL_CHANNELS).await;
    s.eval_ok("p", "j").await;
    let got = rec.take().await;
    assert!(
        got.iter()
            .any(|(c, p)| c == "cached_build_queued" && p.ends_with(&format!("\t{id}"))),
        "{got:?}"
    );
    let (count, drv2, finished, status): (i64, String, i32, Option<i32>) = sqlx::query_as(
        "select (select count(*) from Builds), drvPath, finished, buildStatus from Builds where id = $1",
    )
    .bind(id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(count, 1, "the build is reused, not duplicated");
    assert_ne!(drv1, drv2);
    assert_eq!((finished, status), (0, None));
}

#[tokio::test]
async fn set_inputs_helper_changes_what_is_evaluated() {
    // The helper the other tests rely on really replaces inputs.
    let s = Setup::new().await;
    let (src, _) = s.simple_jobset(NESTED).await;
    s.eval_ok("p", "j").await;
    assert_eq!(
        s.scalar_i64("select count(*) from Builds where job = 'flags'")
            .await,
        0
    );
    set_inputs(
        &s.db.pool,
        "p",
        "j",
        &[
            ("src", "path", src.path().to_str().unwrap()),
            ("enable", "boolean", "true"),
        ],
    )
    .await;
    s.eval_ok("p", "j").await;
    assert_eq!(
        s.scalar_i64("select count(*) from Builds where job = 'flags'")
            .await,
        1
    );
}

#[tokio::test]
async fn basic_fixture_jobs_are_queued() {
    let s = Setup::new().await;
    let fixtures = hydra_test_support::fixtures_dir();
    create_project(&s.db.pool, "tests").await;
    create_jobset(
        &s.db.pool,
        "tests",
        "basic",
        "jobs",
        "basic.nix",
        &[("jobs", "path", fixtures.to_str().unwrap())],
    )
    .await;
    s.eval_ok("tests", "basic").await;
    let jobs = s
        .strings("select job || ':' || coalesce(maintainers, '') from Builds order by job")
        .await;
    assert_eq!(
        jobs,
        [
            "empty_dir:alice@example.com",
            "fails:",
            "succeed_with_failed:"
        ]
    );
}

#[tokio::test]
async fn content_addressed_jobs_need_the_experimental_feature() {
    let s = Setup::new().await;
    let src = source_dir(&[(
        "release.nix",
        r#"{ ca = derivation { name = "ca"; system = builtins.currentSystem; builder = "/bin/sh";
             args = [ "-c" "echo > $out" ]; __contentAddressed = true;
             outputHashMode = "recursive"; outputHashAlgo = "sha256"; }; }"#,
    )]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 0,
                job_errors: 1,
                ..
            }
        ),
        "{summary}"
    );
    let error = s.jobset_error().await;
    assert!(error.contains("ca-derivations"), "{error}");
    assert_eq!(s.scalar_i64("select count(*) from Builds").await, 0);
}

#[tokio::test]
async fn a_job_past_the_memory_limit_is_an_error_and_the_others_evaluate() {
    let s = Setup::with_config("evaluator_max_memory_size = 256").await;
    let src = source_dir(&[(
        "release.nix",
        r#"with import ./config.nix;
        {
          fine = mkDerivation { name = "fine"; builder = builtins.toFile "b.sh" "echo > $out"; };
          hog = builtins.seq (builtins.foldl' (acc: x: acc ++ [ x ]) [ ] (builtins.genList (x: x) 100000)) null;
          zfine = mkDerivation { name = "zfine"; builder = builtins.toFile "b.sh" "echo > $out"; };
        }"#,
    )]);
    create_project(&s.db.pool, "p").await;
    create_jobset(
        &s.db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 2,
                job_errors: 1,
                ..
            }
        ),
        "{summary}"
    );
    let error = s.jobset_error().await;
    assert!(error.starts_with("in job ‘hog’:\n"), "{error}");
    assert!(error.contains("memory limit of 256 MiB"), "{error}");
}

const IFD: &str = r#"
with import ./config.nix;
let generated = mkDerivation { name = "generated"; builder = builtins.toFile "b.sh" "echo '{ x = 42; }' > $out"; };
in {
  ifd = mkDerivation { name = "ifd-${toString (import generated).x}"; builder = builtins.toFile "b.sh" "echo > $out"; };
  plain = mkDerivation { name = "plain"; builder = builtins.toFile "b.sh" "echo > $out"; };
}
"#;

#[tokio::test]
async fn import_from_derivation_is_refused_unless_allowed() {
    let s = Setup::new().await;
    let (_src, _) = s.simple_jobset(IFD).await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 1,
                job_errors: 1,
                ..
            }
        ),
        "{summary}"
    );
    let error = s.jobset_error().await;
    assert!(
        error.contains("in job ‘ifd’") && error.contains("allow-import-from-derivation"),
        "{error}"
    );

    let s = Setup::with_config("allow_import_from_derivation = true").await;
    let (_src, _) = s.simple_jobset(IFD).await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 2,
                job_errors: 0,
                ..
            }
        ),
        "{summary}"
    );
    assert_eq!(
        s.strings("select nixName from Builds where job = 'ifd'")
            .await,
        ["ifd-42"]
    );
}

#[tokio::test]
async fn errors_name_the_users_file_and_line_never_the_evaluators_files() {
    let s = Setup::new().await;
    let (_src, _) = s.simple_jobset("{ dep }:\n{ a = 1; }\n").await;
    let summary = s.eval("p", "j").await;
    let Outcome::Failed(text) = &summary.outcome else {
        panic!("expected a failed evaluation: {summary}")
    };
    assert!(
        text.contains("release.nix:1:1 called without required argument 'dep'"),
        "{text}"
    );
    assert!(!text.contains("worker"), "{text}");

    let s = Setup::new().await;
    let (_src, _) = s
        .simple_jobset(
            "with import ./config.nix;\n{\n  good = mkDerivation { name = \"good\"; builder = builtins.toFile \"b.sh\" \"echo > $out\"; };\n  nosystem = derivation { name = \"x\"; builder = \"/bin/sh\"; };\n}\n",
        )
        .await;
    s.eval_ok("p", "j").await;
    let text = s.jobset_error().await;
    assert!(
        text.starts_with("in job ‘nosystem’:\nerror: required attribute 'system' missing"),
        "{text}"
    );
    assert!(text.contains("release.nix:4:"), "{text}");
    assert!(!text.contains("worker"), "{text}");
}

#[tokio::test]
async fn attributes_that_cannot_be_job_names_are_job_errors_naming_them() {
    let s = Setup::new().await;
    let (_src, _) = s
        .simple_jobset(
            "with import ./config.nix;\nlet mk = name: mkDerivation { inherit name; builder = builtins.toFile \"b.sh\" \"echo > $out\"; }; in\n\
             { good = mk \"good\"; \"with space\" = mk \"s\"; \"dotted.name\" = mk \"d\"; \"\" = mk \"e\"; set.\"a/b\" = mk \"slash\"; }\n",
        )
        .await;
    let summary = s.eval("p", "j").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 1,
                job_errors: 3,
                ..
            }
        ),
        "{summary}"
    );
    assert_eq!(s.strings("select job from Builds").await, ["good"]);
    let text = s.jobset_error().await;
    // Names with spaces are skipped, as in Hydra.
    for name in ["", "\"dotted.name\"", "set.a/b"] {
        assert!(
            text.contains(&format!("the attribute path ‘{name}’ cannot be a job name")),
            "{name}: {text}"
        );
    }
    assert!(!text.contains("with space"), "{text}");
}

/// Two top-level attribute sets: two trivial jobs, and one whose name
/// costs a fold over a long list.
const COSTLY: &str = r#"
let
  mk = name: derivation {
    inherit name; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo ${name} > $out" ];
  };
  fold = n: builtins.foldl' (a: b: a + b) 0 (builtins.genList (x: x * 3) n);
in {
  quick = { a = mk "a"; b = mk "b"; };
  heavy = { c = mk "c-${toString (fold 1500000)}"; };
}
"#;

#[tokio::test]
async fn an_evaluation_keeps_what_each_top_level_attribute_and_its_slowest_jobs_cost() {
    let s = Setup::new().await;
    let (_src, _) = s.simple_jobset(COSTLY).await;
    let eval = s.eval_ok("p", "j").await;
    let rows: Vec<(String, String, i64, i32, i64)> = sqlx::query_as(
        "select kind, name, milliseconds, jobs, peakMemory from EvaluationCosts \
         where eval = $1 order by kind, name",
    )
    .bind(eval)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    let get = |kind: &str, name: &str| {
        rows.iter()
            .find(|r| r.0 == kind && r.1 == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {rows:?}"))
            .clone()
    };
    let (heavy, quick) = (get("attrset", "heavy"), get("attrset", "quick"));
    assert_eq!((heavy.3, quick.3), (1, 2), "the jobs of each: {rows:?}");
    assert!(
        heavy.2 > quick.2 && heavy.2 >= 50,
        "the fold costs more than two trivial jobs: {rows:?}"
    );
    assert!(heavy.4 > 0, "the worker's memory is known: {rows:?}");
    // The slowest jobs, the heavy one first.
    let jobs: Vec<&(String, String, i64, i32, i64)> =
        rows.iter().filter(|r| r.0 == "job").collect();
    assert_eq!(jobs.len(), 3, "{rows:?}");
    let slowest = jobs.iter().max_by_key(|r| r.2).unwrap();
    assert_eq!(slowest.1, "heavy.c");
}
