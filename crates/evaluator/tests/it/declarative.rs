//! Declarative projects: the `.jobsets` jobset with a static specification
//! (applied at once) and a generated one (evaluated into a `jobsets` build).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

use crate::common;

use common::{Setup, source_dir};
use hydra_evaluator::evaluation::Outcome;
use hydra_test_support::jobsets::{create_jobset, create_project};

async fn declarative_project(s: &Setup, dir: &std::path::Path, file: &str) -> i32 {
    create_project(&s.db.pool, "p").await;
    sqlx::query(
        "update Projects set declfile = $1, decltype = 'path', declvalue = $2 where name = 'p'",
    )
    .bind(file)
    .bind(dir.to_str().unwrap())
    .execute(&s.db.pool)
    .await
    .unwrap();
    create_jobset(&s.db.pool, "p", ".jobsets", "", "", &[]).await
}

const RELEASE: &str = r#"
with import ./config.nix;
{ a = mkDerivation { name = "a"; builder = builtins.toFile "b.sh" "echo > $out"; }; }
"#;

#[tokio::test]
async fn a_static_specification_creates_updates_and_hides_jobsets() {
    let s = Setup::new().await;
    let src = source_dir(&[("release.nix", RELEASE)]);
    let spec = serde_json::json!({
        "main": {
            "enabled": 1, "hidden": false, "description": "the main jobset",
            "nixexprinput": "src", "nixexprpath": "release.nix",
            "checkinterval": 600, "schedulingshares": 42, "enableemail": false,
            "emailoverride": "ops@example.org", "keepnr": 7,
            "inputs": {
                "src": { "type": "path", "value": src.path().to_str().unwrap(), "emailresponsible": false },
                "flag": { "type": "boolean", "value": "true" }
            }
        },
        "flakey": { "enabled": 1, "type": 1, "flake": "path:/nowhere", "nixexprinput": "ignored" },
        "bad": { "enabled": 1, "nixexprinput": "src", "nixexprpath": "x.nix", "colour": "red" }
    });
    let decl = source_dir(&[("spec.json", &spec.to_string())]);
    declarative_project(&s, decl.path(), "spec.json").await;
    // A jobset the specification no longer lists.
    create_jobset(&s.db.pool, "p", "old", "src", "release.nix", &[]).await;

    let summary = s.eval("p", ".jobsets").await;
    assert_eq!(
        summary.outcome,
        Outcome::SpecApplied { jobsets: 2 },
        "{summary}"
    );

    let main: (i32, i32, Option<String>, Option<String>, Option<String>, i32, i32, i32, String, i32, i32) = sqlx::query_as(
        "select enabled, hidden, description, nixExprInput, nixExprPath, checkInterval, schedulingShares, enableEmail, \
         emailOverride, keepnr, type from Jobsets where name = 'main'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        main,
        (
            1,
            0,
            Some("the main jobset".into()),
            Some("src".into()),
            Some("release.nix".into()),
            600,
            42,
            0,
            "ops@example.org".into(),
            7,
            0
        )
    );
    let inputs = s
        .strings("select i.name || ':' || i.type || ':' || a.value from JobsetInputs i join JobsetInputAlts a \
                  on a.project = i.project and a.jobset = i.jobset and a.input = i.name where i.jobset = 'main' order by i.name")
        .await;
    assert_eq!(
        inputs,
        [
            "flag:boolean:true".to_string(),
            format!("src:path:{}", src.path().display())
        ]
    );
    let flakey: (i32, Option<String>, Option<String>) =
        sqlx::query_as("select type, flake, nixExprInput from Jobsets where name = 'flakey'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(
        flakey,
        (1, Some("path:/nowhere".into()), None),
        "type 1 drops the legacy fields"
    );
    assert_eq!(
        s.scalar_i64("select count(*) from Jobsets where name = 'bad'")
            .await,
        0,
        "invalid keys"
    );
    let old: (i32, i32) = sqlx::query_as("select enabled, hidden from Jobsets where name = 'old'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(old, (0, 1));
    let decl: (i32, i32, Option<i32>) = sqlx::query_as(
        "select enabled, hidden, lastCheckedTime from Jobsets where name = '.jobsets'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!((decl.0, decl.1), (1, 0), ".jobsets itself is kept");
    assert!(decl.2.is_some());
    assert_eq!(s.scalar_i64("select count(*) from JobsetEvals").await, 0);

    // The declared jobset evaluates.
    s.eval_ok("p", "main").await;
    assert_eq!(
        s.scalar_i64("select count(*) from Builds where job = 'a'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_invalid_key_is_reported_by_name() {
    let s = Setup::new().await;
    let spec = serde_json::json!({ "only": { "nixexprinput": "src", "nixexprpath": "x.nix", "colour": "red", "size": 3 } });
    let decl = source_dir(&[("spec.json", &spec.to_string())]);
    declarative_project(&s, decl.path(), "spec.json").await;
    let summary = s.eval("p", ".jobsets").await;
    assert_eq!(summary.outcome, Outcome::SpecApplied { jobsets: 0 });
    let spec: serde_json::Map<String, serde_json::Value> = serde_json::from_value(spec).unwrap();
    let applied = hydra_db::declarative::apply_spec(&s.db.pool, "p", &spec, false)
        .await
        .unwrap();
    assert_eq!(
        applied.errors,
        [(
            "only".to_string(),
            "invalid keys (colour, size) in declarative specification file".to_string()
        )]
    );
}

#[tokio::test]
async fn dynamic_run_command_needs_the_server_and_the_project() {
    let s = Setup::new().await;
    let spec = serde_json::json!({ "dyn": { "nixexprinput": "src", "nixexprpath": "x.nix", "enable_dynamic_run_command": true } });
    let spec: serde_json::Map<String, serde_json::Value> = serde_json::from_value(spec).unwrap();
    create_project(&s.db.pool, "p").await;
    for (server, project, ok) in [
        (false, false, false),
        (false, true, false),
        (true, false, false),
        (true, true, true),
    ] {
        sqlx::query("update Projects set enable_dynamic_run_command = $1")
            .bind(project)
            .execute(&s.db.pool)
            .await
            .unwrap();
        let applied = hydra_db::declarative::apply_spec(&s.db.pool, "p", &spec, server)
            .await
            .unwrap();
        assert_eq!(
            applied.errors.is_empty(),
            ok,
            "server {server}, project {project}: {:?}",
            applied.errors
        );
        if !ok {
            let expected = if server {
                "Dynamic RunCommand is not enabled by the project."
            } else {
                "Dynamic RunCommand is not enabled by the server."
            };
            assert_eq!(applied.errors[0].1, expected);
        }
    }
}

#[tokio::test]
async fn a_missing_specification_file_is_a_fetch_error() {
    let s = Setup::new().await;
    let decl = source_dir(&[]);
    let id = declarative_project(&s, decl.path(), "spec.json").await;
    let summary = s.eval("p", ".jobsets").await;
    assert!(
        matches!(summary.outcome, Outcome::FetchFailed(ref e) if e.contains("spec.json")),
        "{summary}"
    );
    let error: Option<String> =
        sqlx::query_scalar("select fetchErrorMsg from Jobsets where id = $1")
            .bind(id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert!(error.unwrap().contains("spec.json"));
}

const GENERATOR: &str = r#"
{ declInput, projectName, src }:
{
  jobsets = derivation {
    name = "spec.json";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo '{ \"generated\": { \"enabled\": 1, \"nixexprinput\": \"src\", \"nixexprpath\": \"release.nix\", \"description\": \"made for ${projectName}\", \"inputs\": { \"src\": { \"type\": \"path\", \"value\": \"${src.uri}\" } } } }' > $out" ];
  };
}
"#;

#[tokio::test]
async fn a_generated_specification_is_evaluated_into_a_jobsets_build() {
    let s = Setup::new().await;
    let gen_dir = source_dir(&[("generator.nix", GENERATOR), ("release.nix", RELEASE)]);
    let spec = serde_json::json!({
        "enabled": 1, "hidden": false, "description": "jobsets",
        "nixexprinput": "src", "nixexprpath": "generator.nix",
        "checkinterval": 300, "schedulingshares": 100, "enableemail": false,
        "emailoverride": "", "keepnr": 3,
        "inputs": { "src": { "type": "path", "value": gen_dir.path().to_str().unwrap() } }
    });
    let decl = source_dir(&[("spec.json", &spec.to_string())]);
    declarative_project(&s, decl.path(), "spec.json").await;
    let summary = s.eval("p", ".jobsets").await;
    assert!(
        matches!(
            summary.outcome,
            Outcome::Evaluated {
                new_builds: 1,
                job_errors: 0,
                ..
            }
        ),
        "{summary}"
    );

    // .jobsets took the specification, and the evaluation got the extra inputs.
    let expr: (Option<String>, Option<String>) =
        sqlx::query_as("select nixExprInput, nixExprPath from Jobsets where name = '.jobsets'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(expr, (Some("src".into()), Some("generator.nix".into())));
    let inputs = s
        .strings("select name || ':' || type from JobsetEvalInputs order by name")
        .await;
    assert_eq!(inputs, ["declInput:path", "projectName:string", "src:path"]);
    let (job, drv): (String, String) = sqlx::query_as("select job, drvPath from Builds")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(job, "jobsets");

    // What the build produces is the jobsets' specification; applying it
    // (the notify role does this when the build finishes) creates them.
    let mut realise = s.ctx.nix.command("nix-store");
    realise.args([
        "--realise",
        &drv,
        "--option",
        "sandbox",
        "false",
        "--option",
        "build-users-group",
        "",
    ]);
    let out = realise.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output = String::from_utf8(out.stdout).unwrap();
    let generated: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(output.trim()).unwrap()).unwrap();
    let applied = hydra_db::declarative::apply_spec(&s.db.pool, "p", &generated, false)
        .await
        .unwrap();
    assert_eq!(applied.jobsets, ["generated"]);
    let description: Option<String> =
        sqlx::query_scalar("select description from Jobsets where name = 'generated'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(description.as_deref(), Some("made for p"));
    s.eval_ok("p", "generated").await;
}

#[tokio::test]
async fn a_generated_specification_without_a_jobsets_job_fails() {
    let s = Setup::new().await;
    let gen_dir = source_dir(&[("generator.nix", "{ ... }: { other = null; }")]);
    let spec = serde_json::json!({
        "nixexprinput": "src", "nixexprpath": "generator.nix",
        "inputs": { "src": { "type": "path", "value": gen_dir.path().to_str().unwrap() } }
    });
    let decl = source_dir(&[("spec.json", &spec.to_string())]);
    declarative_project(&s, decl.path(), "spec.json").await;
    let summary = s.eval("p", ".jobsets").await;
    assert!(
        matches!(summary.outcome, Outcome::Failed(ref e) if e.contains("named `jobsets`")),
        "{summary}"
    );
}
