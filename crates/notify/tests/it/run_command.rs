//! RunCommand: the commands of matching `<runcommand>` blocks run when a
//! build finishes, with the build's JSON document, each recorded in
//! `RunCommandLogs` with its output in a file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use hydra_db::status::BuildStatus;
use hydra_notify::{Context, Options};
use hydra_test_support::TestDb;
use hydra_test_support::builds::TestBuild;
use tokio_util::sync::CancellationToken;

/// A `RunCommandLogs` row, as the test reads it.
#[derive(Debug, sqlx::FromRow)]
struct Run {
    uuid: String,
    job_matcher: String,
    exit_code: Option<i32>,
    error_number: Option<i32>,
    ended: bool,
}

#[tokio::test]
async fn matching_commands_run_with_the_builds_document_and_are_recorded() {
    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let copy = data.path().join("copy.json");
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "j", "src", "release.nix", &[])
            .await;
    TestBuild::new(jobset, "hello")
        .id(1)
        .drv(&format!("/nix/store/{}-hello.drv", "a".repeat(32)))
        .finished(BuildStatus::Succeeded, 10, 20)
        .output("out", &format!("/nix/store/{}-hello", "b".repeat(32)))
        .output("bin", &format!("/nix/store/{}-hello-bin", "c".repeat(32)))
        .insert(&db.pool)
        .await;
    db.exec(
        "insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp)
           values (1, 'lineCoverage', '%', 18, 'p', 'j', 'hello', 1), (1, 'maxResident', 'KiB', 27, 'p', 'j', 'hello', 1);
         insert into BuildProducts (build, productnr, type, subtype, path, name, defaultPath)
           values (1, 1, 'nix-build', '', '/nix/store/x', 'hello', '');
         update Builds set notificationPendingSince = 5",
    )
    .await;
    let conf = format!(
        "<runcommand>\njob = p:j:*\ncommand = cat \"$HYDRA_JSON\" > {copy}; echo ran\n</runcommand>\n\
         <runcommand>\ncommand = /nonexistent/program --flag\n</runcommand>\n\
         <runcommand>\njob = other:*:*\ncommand = echo never\n</runcommand>\n",
        copy = copy.display()
    );
    let (config, warnings) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), &conf).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let cx = Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir: hydra_config::DataDir::from(data.path()),
        local_root: None,
    };
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    hydra_notify::run(
        cx,
        plugins,
        Options { queued_only: true },
        CancellationToken::new(),
    )
    .await
    .unwrap();

    // The document has Hydra's keys.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    for key in [
        "event",
        "build",
        "finished",
        "timestamp",
        "project",
        "jobset",
        "job",
        "drvPath",
        "startTime",
        "stopTime",
        "buildStatus",
        "nixName",
        "system",
        "homepage",
        "description",
        "license",
        "outputs",
        "products",
        "metrics",
    ] {
        assert!(doc.get(key).is_some(), "{key} missing: {doc}");
    }
    assert_eq!(doc["event"], "buildFinished");
    assert_eq!(doc["finished"], true);
    assert_eq!(
        (doc["project"].as_str(), doc["job"].as_str()),
        (Some("p"), Some("hello"))
    );
    let outputs: Vec<&str> = doc["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["bin", "out"]);
    assert_eq!(doc["metrics"][0]["name"], "lineCoverage");
    assert_eq!(doc["metrics"][1]["value"].as_f64(), Some(27.0));
    assert_eq!(doc["products"][0]["fileSize"], serde_json::Value::Null);

    // Each run is recorded; the missing program is an exec error.
    let runs: Vec<Run> = sqlx::query_as(
        "select uuid::text as uuid, job_matcher, exit_code, error_number, end_time is not null as ended \
         from RunCommandLogs where build_id = 1 order by id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].job_matcher, "p:j:*");
    assert_eq!(
        (runs[0].exit_code, runs[0].error_number, runs[0].ended),
        (Some(0), None, true)
    );
    assert_eq!(runs[1].job_matcher, "*:*:*");
    assert_eq!(
        (runs[1].exit_code, runs[1].error_number),
        (None, Some(2)),
        "errno 2, not exit 127"
    );
    let log = hydra_config::DataDir::from(data.path()).run_command_log(&runs[0].uuid);
    assert_eq!(std::fs::read_to_string(log).unwrap(), "ran\n");
}

#[tokio::test]
async fn run_command_hook_jobs_run_their_own_output_when_everything_allows_it() {
    use std::os::unix::fs::PermissionsExt;

    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("nix/store");
    std::fs::create_dir_all(&store).unwrap();
    let ran = data.path().join("ran");
    let path = |name: &str| format!("/nix/store/{}-{name}", "h".repeat(32));
    let real = |name: &str| store.join(format!("{}-{name}", "h".repeat(32)));
    std::fs::write(
        real("hook"),
        format!("#!/bin/sh\necho \"$HYDRA_JSON\" >> {}\n", ran.display()),
    )
    .unwrap();
    std::fs::set_permissions(real("hook"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(path("hook"), real("link")).unwrap();
    std::fs::write(real("plain"), "not a program").unwrap();
    std::fs::create_dir(real("dir")).unwrap();

    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let on =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "on", "src", "r.nix", &[]).await;
    let off =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "off", "src", "r.nix", &[]).await;
    db.exec(
        "update Projects set enable_dynamic_run_command = true; \
         update Jobsets set enable_dynamic_run_command = (name = 'on')",
    )
    .await;
    // id, jobset, job, status, out
    let cases = [
        (
            1,
            on,
            "runCommandHook.deploy",
            BuildStatus::Succeeded,
            "hook",
        ),
        (
            2,
            off,
            "runCommandHook.deploy",
            BuildStatus::Succeeded,
            "hook",
        ),
        (
            3,
            on,
            "runCommandHook.viaLink",
            BuildStatus::Succeeded,
            "link",
        ),
        (
            4,
            on,
            "runCommandHook.plain",
            BuildStatus::Succeeded,
            "plain",
        ),
        (5, on, "runCommandHook.dir", BuildStatus::Succeeded, "dir"),
        (6, on, "runCommandHook.broken", BuildStatus::Failed, "hook"),
        (7, on, "runCommandHook.", BuildStatus::Succeeded, "hook"),
        (8, on, "deploy", BuildStatus::Succeeded, "hook"),
    ];
    for (id, jobset, job, status, out) in cases {
        TestBuild::new(jobset, job)
            .id(id)
            .drv(&format!("/nix/store/{}-{id}.drv", "d".repeat(32)))
            .finished(status, 10, 20)
            .output("out", &path(out))
            .insert(&db.pool)
            .await;
    }
    db.exec("update Builds set notificationPendingSince = 5")
        .await;
    let conf = "<dynamicruncommand>\nenable = 1\n</dynamicruncommand>\n\
                <runcommand>\njob = p:on:runCommandHook.deploy\ncommand = true\n</runcommand>\n";
    let (config, warnings) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), conf).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let cx = Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir: hydra_config::DataDir::from(data.path()),
        local_root: Some(root.path().to_path_buf()),
    };
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    hydra_notify::run(
        cx,
        plugins,
        Options { queued_only: true },
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let runs: Vec<(i32, String, Option<i32>)> = sqlx::query_as(
        "select build_id, job_matcher, exit_code from RunCommandLogs order by build_id, id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        runs,
        [
            (1, "p:on:runCommandHook.deploy".to_string(), Some(0)),
            (
                1,
                "DynamicRunCommand(runCommandHook.deploy)".to_string(),
                Some(0)
            ),
            (
                3,
                "DynamicRunCommand(runCommandHook.viaLink)".to_string(),
                Some(0)
            ),
        ],
        "static first; not for a jobset without the flag, a plain file, a directory, \
         a failed build, a bare prefix or another job"
    );
    let documents = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(documents.lines().count(), 2, "{documents}");
}
