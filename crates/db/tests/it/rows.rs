//! Row types read back exactly what the tables hold, with every column
//! mapped to the right Rust type; user queries and password upgrades work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hydra_db::password::{self, Verified};
use hydra_db::rows::{self, Build, BuildMetric, BuildProduct, BuildStep, User};
use hydra_db::users;
use hydra_test_support::TestDb;

async fn fill(db: &TestDb) {
    db.exec(r#"
        insert into Users values ('alice', 'Alice A.', 'alice@example.org', '!', 1, 'hydra', true);
        insert into Projects values ('p', 'P', 'desc', 1, 0, 'alice', 'https://p.org', 'spec.json', 'git', 'https://git/x', true);
        insert into Jobsets (name, id, project, description, nixExprInput, nixExprPath, errorMsg, errorTime, lastCheckedTime,
                             triggerTime, enabled, enableEmail, hidden, emailOverride, keepnr, checkInterval, schedulingShares,
                             fetchErrorMsg, forceEval, startTime, type, flake, enable_dynamic_run_command)
            values ('j', 7, 'p', 'd', 'src', 'release.nix', 'boom', 10, 11, 12, 3, 0, 1, 'x@y', 5, 60, 250, 'fetch failed', true, 13, 0, null, false);
        insert into JobsetInputs values ('p', 'j', 'src', 'git', 1);
        insert into JobsetInputAlts values ('p', 'j', 'src', 0, 'https://git/x main', 'abc');
        insert into Builds (id, finished, timestamp, jobset_id, job, nixName, description, drvPath, system, license, homepage,
                            maintainers, maxsilent, timeout, isChannel, isCurrent, priority, globalPriority, startTime, stopTime,
                            isCachedBuild, buildStatus, size, closureSize, releaseName, keep, notificationPendingSince)
            values (42, 1, 100, 7, 'hello.x86_64-linux', 'hello-2.12', 'A program', '/nix/store/aaa-hello-2.12.drv',
                    'x86_64-linux', 'GPL-3.0', 'https://gnu.org', 'alice@example.org', null, 7200, 1, 1, 100, 1700000000,
                    101, 102, 0, 0, 5000000000, 9000000000, 'hello-2.12', 1, 103);
        insert into BuildOutputs values (42, 'out', '/nix/store/bbb-hello-2.12'), (42, 'doc', null);
        insert into BuildSteps values (42, 1, 0, '/nix/store/aaa-hello-2.12.drv', 0, 13, 'oops', 101, 102, 'ssh://b1',
                                       'x86_64-linux', 42, 150, 2, false, 'ccc-hello-2.12.drv');
        insert into BuildStepOutputs values (42, 1, 'out', '/nix/store/bbb-hello-2.12');
        insert into BuildProducts values (42, 1, 'file', 'source-dist', 6000000000, 'ab12', '/nix/store/bbb-hello-2.12/x.tar', 'x.tar', null);
        insert into BuildMetrics values (42, 'size', 'bytes', 12.5, 'p', 'j', 'hello.x86_64-linux', 100);
        insert into EvaluationErrors values (3, 'attribute missing', 104);
        insert into JobsetEvals values (9, 7, 3, 105, 1, 2, 1, 'hashhash', 1, null, null, 'src', 'release.nix');
        insert into JobsetEvalInputs values (9, 'src', 0, 'git', 'https://git/x', 'abc', 7, null, null, '/nix/store/ddd-src', 'deadbeef');
        insert into JobsetEvalMembers values (9, 42, 1);
        "#,
    )
    .await;
}

#[tokio::test]
async fn every_row_type_reads_what_the_table_holds() {
    let db = TestDb::new().await;
    fill(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let c = &mut *conn;

    assert_eq!(
        rows::user(c, "alice").await.unwrap().unwrap(),
        User {
            name: "alice".into(),
            full_name: Some("Alice A.".into()),
            email_address: "alice@example.org".into(),
            password: "!".into(),
            email_on_error: 1,
            kind: "hydra".into(),
            public_dashboard: true,
        }
    );
    assert!(rows::user(c, "nobody").await.unwrap().is_none());

    let project = rows::project(c, "p").await.unwrap().unwrap();
    assert_eq!(project.declvalue.as_deref(), Some("https://git/x"));
    assert!(project.enable_dynamic_run_command);

    let jobset = rows::jobset(c, "p", "j").await.unwrap().unwrap();
    assert_eq!(
        rows::jobset_by_id(c, hydra_db::ids::JobsetId(7))
            .await
            .unwrap()
            .unwrap(),
        jobset
    );
    assert_eq!(
        (
            jobset.enabled,
            jobset.scheduling_shares,
            jobset.trigger_time,
            jobset.force_eval
        ),
        (3, 250, Some(12), Some(true))
    );
    assert_eq!(jobset.fetch_error_msg.as_deref(), Some("fetch failed"));

    let inputs = rows::jobset_inputs(c, "p", "j").await.unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].0.kind, "git");
    assert_eq!(inputs[0].1[0].value.as_deref(), Some("https://git/x main"));

    let build = rows::build(c, 42).await.unwrap().unwrap();
    assert_eq!(
        build,
        Build {
            id: 42,
            finished: 1,
            timestamp: 100,
            jobset_id: 7,
            job: "hello.x86_64-linux".into(),
            nix_name: Some("hello-2.12".into()),
            description: Some("A program".into()),
            drv_path: "/nix/store/aaa-hello-2.12.drv".into(),
            system: "x86_64-linux".into(),
            license: Some("GPL-3.0".into()),
            homepage: Some("https://gnu.org".into()),
            maintainers: Some("alice@example.org".into()),
            max_silent: None,
            timeout: Some(7200),
            is_channel: 1,
            is_current: Some(1),
            priority: 100,
            global_priority: 1700000000,
            start_time: Some(101),
            stop_time: Some(102),
            is_cached_build: Some(0),
            build_status: Some(0),
            size: Some(5_000_000_000),
            closure_size: Some(9_000_000_000),
            release_name: Some("hello-2.12".into()),
            keep: 1,
            notification_pending_since: Some(103),
        }
    );

    let outputs = rows::build_outputs(c, 42).await.unwrap();
    assert_eq!(
        outputs
            .iter()
            .map(|o| (o.name.as_str(), o.path.is_some()))
            .collect::<Vec<_>>(),
        vec![("doc", false), ("out", true)]
    );

    assert_eq!(
        rows::build_steps(c, 42).await.unwrap(),
        vec![BuildStep {
            build: 42,
            stepnr: 1,
            kind: 0,
            drv_path: "/nix/store/aaa-hello-2.12.drv".into(),
            busy: 0,
            status: Some(13),
            error_msg: Some("oops".into()),
            start_time: Some(101),
            stop_time: Some(102),
            machine: "ssh://b1".into(),
            system: Some("x86_64-linux".into()),
            propagated_from: Some(42),
            overhead: Some(150),
            times_built: Some(2),
            is_non_deterministic: Some(false),
            resolved_drv_path: Some("ccc-hello-2.12.drv".into()),
        }]
    );
    assert_eq!(
        rows::build_step_outputs(c, 42, 1).await.unwrap()[0]
            .path
            .as_deref(),
        Some("/nix/store/bbb-hello-2.12")
    );
    assert_eq!(
        rows::build_products(c, 42).await.unwrap(),
        vec![BuildProduct {
            build: 42,
            productnr: 1,
            kind: "file".into(),
            subtype: "source-dist".into(),
            file_size: Some(6_000_000_000),
            sha256hash: Some("ab12".into()),
            path: Some("/nix/store/bbb-hello-2.12/x.tar".into()),
            name: "x.tar".into(),
            default_path: None,
        }]
    );
    assert_eq!(
        rows::build_metrics(c, 42).await.unwrap(),
        vec![BuildMetric {
            build: 42,
            name: "size".into(),
            unit: Some("bytes".into()),
            value: 12.5,
            project: "p".into(),
            jobset: "j".into(),
            job: "hello.x86_64-linux".into(),
            timestamp: 100,
        }]
    );

    let eval = rows::jobset_eval(c, 9).await.unwrap().unwrap();
    assert_eq!(
        (
            eval.jobset_id,
            eval.evaluationerror_id,
            eval.has_new_builds,
            eval.nr_builds
        ),
        (7, Some(3), 1, Some(1))
    );
    assert_eq!(
        rows::evaluation_error(c, 3)
            .await
            .unwrap()
            .unwrap()
            .error_msg
            .as_deref(),
        Some("attribute missing")
    );
    let inputs = rows::jobset_eval_inputs(c, 9).await.unwrap();
    assert_eq!(
        (inputs[0].short_rev_length, inputs[0].path.as_deref()),
        (Some(7), Some("/nix/store/ddd-src"))
    );
    assert_eq!(rows::jobset_eval_members(c, 9).await.unwrap()[0].build, 42);
}

#[tokio::test]
async fn users_and_roles() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let c = &mut *conn;
    let mut user = User {
        name: "bob".into(),
        full_name: None,
        email_address: String::new(),
        password: "!".into(),
        email_on_error: 0,
        kind: "hydra".into(),
        public_dashboard: false,
    };
    users::insert(c, &user).await.unwrap();
    user.full_name = Some("Bob".into());
    user.email_address = "bob@example.org".into();
    users::update(c, &user).await.unwrap();
    assert_eq!(rows::user(c, "bob").await.unwrap().unwrap(), user);

    users::add_role(c, "bob", "admin").await.unwrap();
    users::add_role(c, "bob", "admin").await.unwrap();
    users::add_role(c, "bob", "cancel-build").await.unwrap();
    assert_eq!(
        users::roles(c, "bob").await.unwrap(),
        vec!["admin", "cancel-build"]
    );

    assert!(users::rename(c, "bob", "robert").await.unwrap());
    assert!(!users::rename(c, "bob", "x").await.unwrap());
    assert!(rows::user(c, "bob").await.unwrap().is_none());
    assert_eq!(
        users::roles(c, "robert").await.unwrap(),
        vec!["admin", "cancel-build"]
    );
    users::wipe_roles(c, "robert").await.unwrap();
    assert!(users::roles(c, "robert").await.unwrap().is_empty());
}

#[tokio::test]
async fn legacy_sha1_hashes_are_wrapped_in_argon2_and_still_verify() {
    let db = TestDb::new().await;
    let sha1 = password::sha1_hex("foobar");
    let argon = password::hash("kept as it is").unwrap();
    db.exec(&format!(
            "insert into Users (userName, emailAddress, password) values ('legacy', '', '{sha1}'), ('modern', '', '{argon}'), ('oauth', '', '!')"
        ),
    )
    .await;
    assert_eq!(
        users::upgrade_legacy_password_hashes(&db.pool)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        users::upgrade_legacy_password_hashes(&db.pool)
            .await
            .unwrap(),
        0
    );
    let mut conn = db.pool.acquire().await.unwrap();
    let legacy = rows::user(&mut conn, "legacy").await.unwrap().unwrap();
    assert!(
        legacy.password.starts_with("$argon2id$"),
        "{}",
        legacy.password
    );
    assert_eq!(
        password::verify("foobar", &legacy.password),
        Verified::Yes { rehash: true }
    );
    assert_eq!(password::verify("foobaz", &legacy.password), Verified::No);
    assert_eq!(
        rows::user(&mut conn, "modern")
            .await
            .unwrap()
            .unwrap()
            .password,
        argon
    );
    assert_eq!(
        rows::user(&mut conn, "oauth")
            .await
            .unwrap()
            .unwrap()
            .password,
        "!"
    );
}
