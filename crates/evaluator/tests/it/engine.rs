//! The evaluation engine against real Nix: jobs, nested attributes, meta,
//! and jobs that break their worker in every way Nix can.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hydra_evaluator::engine::{self, Arg, Expression, NixEnv, Request};
use hydra_test_support::NixStore;

fn request(store: &NixStore, src: &std::path::Path, file: &str, workers: usize) -> Request {
    let (_, args, env) = store.serve_command();
    Request {
        expression: Expression::Legacy {
            expr: format!("src/{file}"),
        },
        search_path: vec![("src".into(), src.display().to_string())],
        args: Vec::new(),
        workers,
        max_memory_mib: 1024,
        allow_import_from_derivation: false,
        nix: NixEnv { args, env },
        gc_roots_dir: None,
        timeout: Duration::from_secs(300),
    }
}

const BROKEN: &str = r#"
{ count ? 200 }:
let mk = name: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${name} > $out" ]; };
    healthy = builtins.listToAttrs (builtins.genList (i: { name = "job${toString i}"; value = mk "job${toString i}"; }) count);
in healthy // {
  aborts = abort "this job aborts";
  typeError = 1 + "one";
  missingAttribute = { }.nothere;
  infiniteRecursion = let x = x + 1; in x;
  throws = throw "this job throws";
}
"#;

#[tokio::test]
async fn five_broken_jobs_each_get_their_own_error_and_the_200_others_evaluate() {
    let store = NixStore::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("release.nix"), BROKEN).unwrap();
    for workers in [1, 2] {
        let outcome = engine::evaluate(&request(&store, src.path(), "release.nix", workers))
            .await
            .unwrap();
        assert_eq!(outcome.jobs.len(), 200, "workers={workers}");
        assert_eq!(outcome.errors.len(), 5, "{:#?}", outcome.errors);
        let e = |name: &str| outcome.errors[name].clone();
        assert!(
            e("aborts")
                .contains("evaluation aborted with the following error message: 'this job aborts'"),
            "{}",
            e("aborts")
        );
        assert!(
            e("typeError").contains("cannot add a string to an integer"),
            "{}",
            e("typeError")
        );
        assert!(
            e("missingAttribute").contains("attribute 'nothere' missing"),
            "{}",
            e("missingAttribute")
        );
        assert!(
            e("infiniteRecursion").contains("infinite recursion encountered"),
            "{}",
            e("infiniteRecursion")
        );
        assert!(e("throws").contains("this job throws"), "{}", e("throws"));
        for (name, text) in &outcome.errors {
            assert!(!text.contains("--show-trace"), "{name}: {text}");
            assert!(text.starts_with("error:"), "{name}: {text}");
        }
        let job = &outcome.jobs["job7"];
        assert!(job.drv_path.ends_with("-job7.drv"));
        assert!(
            store.real_path(&job.drv_path).is_file(),
            "the .drv is written to the store"
        );
        assert!(
            outcome.stats.workers_started >= 4,
            "a restart after each uncatchable error"
        );
    }
}

const NESTED: &str = r#"
{ greeting ? "hello" }:
let mk = name: extra: derivation ({ inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${greeting} > $out" ]; } // extra);
in {
  top = mk "top" { };
  packageset = { nested = mk "nested" { }; deeper = { still = mk "still" { }; }; nothing = null; };
  "packageset-nested" = mk "packageset-nested" { };
  "dotted.name" = mk "dotted" { };
  "with space" = mk "skipped" { };
  notRecursed = { recurseForDerivations = false; inside = mk "inside" { }; };
  fn = { greeting }: { called = mk "called-with-${greeting}" { }; };
  multi = mk "multi" { outputs = [ "out" "dev" ]; };
  withMeta = mk "with-meta" { } // {
    meta = {
      description = "A job with meta";
      license = [ { shortName = "MIT"; } "BSD" ];
      homepage = "https://example.org";
      maintainers = [ "alice@example.com" { email = "bob@not.found"; } ];
      maxSilent = 600;
      timeout = 1200;
      schedulingPriority = 5;
      isHydraChannel = true;
    };
  };
  number = 42;
}
"#;

#[tokio::test]
async fn nested_attributes_meta_and_inputs() {
    let store = NixStore::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("nested.nix"), NESTED).unwrap();
    let mut req = request(&store, src.path(), "nested.nix", 2);
    req.args.push(Arg::Str("greeting".into(), "hi".into()));
    let outcome = engine::evaluate(&req).await.unwrap();
    let names: Vec<&str> = outcome.jobs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "\"dotted.name\"",
            "fn.called",
            "multi",
            "notRecursed.inside",
            "packageset-nested",
            "packageset.deeper.still",
            "packageset.nested",
            "top",
            "withMeta"
        ]
    );
    assert_eq!(
        outcome.jobs["fn.called"].nix_name, "called-with-hi",
        "functions are called with the inputs"
    );
    assert_eq!(
        outcome.jobs["multi"].outputs.keys().collect::<Vec<_>>(),
        vec!["dev", "out"]
    );
    let meta = &outcome.jobs["withMeta"].meta;
    assert_eq!(meta.description.as_deref(), Some("A job with meta"));
    assert_eq!(meta.license.as_deref(), Some("MIT, BSD"));
    assert_eq!(meta.homepage.as_deref(), Some("https://example.org"));
    assert_eq!(
        meta.maintainers.as_deref(),
        Some("alice@example.com, bob@not.found")
    );
    assert_eq!(
        (meta.max_silent, meta.timeout, meta.scheduling_priority),
        (Some(600), Some(1200), Some(5))
    );
    assert!(meta.is_channel);
    let plain = &outcome.jobs["top"].meta;
    assert_eq!(
        (plain.scheduling_priority, plain.max_silent, plain.timeout),
        (Some(100), None, None)
    );
    assert_eq!(outcome.errors.len(), 1, "{:#?}", outcome.errors);
    assert!(outcome.errors["number"].contains("unsupported value"));
}

#[tokio::test]
async fn a_broken_expression_is_a_top_level_error() {
    let store = NixStore::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("syntax.nix"), "{ this is not nix").unwrap();
    std::fs::write(src.path().join("list.nix"), "[ 1 2 ]").unwrap();
    let err = engine::evaluate(&request(&store, src.path(), "syntax.nix", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("syntax error"), "{err}");
    let err = engine::evaluate(&request(&store, src.path(), "list.nix", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the top level is a list"), "{err}");
    let err = engine::evaluate(&request(&store, src.path(), "absent.nix", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.nix"), "{err}");
}

#[tokio::test]
async fn restricted_evaluation_keeps_the_expression_inside_its_inputs() {
    let store = NixStore::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("escape.nix"),
        "{ secret = builtins.readFile /etc/hostname; ok = derivation { name = \"ok\"; system = \"x\"; builder = \"/bin/sh\"; }; }",
    )
    .unwrap();
    let outcome = engine::evaluate(&request(&store, src.path(), "escape.nix", 1))
        .await
        .unwrap();
    assert!(outcome.jobs.contains_key("ok"));
    assert!(
        outcome.errors["secret"].contains("forbidden in restricted mode"),
        "{}",
        outcome.errors["secret"]
    );
}

const HUNGRY: &str = r#"
let mk = name: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
in {
  before = mk "before";
  hungry = builtins.deepSeq (builtins.genList (i: "string number ${toString i}") 30000000) (mk "never");
  after = mk "after";
  more = { a = mk "a"; b = mk "b"; };
}
"#;

#[tokio::test]
async fn a_job_past_the_memory_limit_kills_only_its_worker() {
    let store = NixStore::new();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("hungry.nix"), HUNGRY).unwrap();
    let roots = tempfile::tempdir().unwrap();
    let mut req = request(&store, src.path(), "hungry.nix", 1);
    req.max_memory_mib = 256;
    req.gc_roots_dir = Some(roots.path().to_path_buf());
    let outcome = engine::evaluate(&req).await.unwrap();
    assert_eq!(
        outcome.jobs.keys().collect::<Vec<_>>(),
        vec!["after", "before", "more.a", "more.b"],
        "{:#?}",
        outcome.errors
    );
    assert!(
        outcome.errors["hungry"].contains("memory limit of 256 MiB"),
        "{}",
        outcome.errors["hungry"]
    );
    assert!(
        outcome.stats.memory_kills >= 2,
        "killed, then killed again alone: {:?}",
        outcome.stats
    );
    // The limit holds: the largest resident size seen is the limit plus
    // what one 10 ms poll interval lets a worker grow.
    let peak_mib = outcome.stats.peak_rss >> 20;
    eprintln!("peak worker RSS: {peak_mib} MiB with a 256 MiB limit");
    assert!(peak_mib < 256 + 128, "peak {peak_mib} MiB");
    // Every evaluated .drv is a garbage collector root.
    for job in outcome.jobs.values() {
        let root = roots
            .path()
            .join(std::path::Path::new(&job.drv_path).file_name().unwrap());
        assert_eq!(
            std::fs::read_link(&root).unwrap(),
            std::path::Path::new(&job.drv_path)
        );
    }
}
