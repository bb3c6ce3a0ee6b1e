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

/// `hydra notify` killed (-9) while the build's pending status is on its
/// way, the build finishing while it is down: once it is back, the forge
/// has exactly one final status for the context, after the pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_notify_mid_build_still_ends_with_one_final_status_per_context() {
    use hydra_test_support::http::Recorder;
    use hydra_test_support::jobsets::{EvalInput, add_to_eval, create_eval};
    use std::sync::Arc;
    use std::time::Duration;

    const REV: &str = "89abcdef0123456789abcdef0123456789abcdef";
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let recorder = Arc::new(Recorder::start());
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "j", "src", "release.nix", &[])
            .await;
    let src = "https://github.com/owner/repo.git";
    create_eval(
        &db.pool,
        jobset,
        1,
        &[EvalInput::Revision("src", "git", src, REV)],
    )
    .await;
    TestBuild::new(jobset, "app").id(1).insert(&db.pool).await;
    add_to_eval(&db.pool, 1, 1).await;
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}github_api_url = {}\n\
             <github_authorization>\nowner = token secret\n</github_authorization>\n\
             <githubstatus>\njobs = p:j:.*\ninputs = src\n</githubstatus>\n",
            crate::common::FREE_PORTS,
            recorder.url()
        ),
    )
    .unwrap();
    let start = || {
        let mut notify = crate::common::Up::spawn(
            hydra(data.path())
                .arg("notify")
                .env("HYDRA_DATABASE_URL", db.url())
                .env("RUST_LOG", "info"),
        );
        assert!(
            notify.saw("notify started", Duration::from_secs(30)),
            "{}",
            notify.seen.join("\n")
        );
        notify
    };
    let wait_for = |n: usize| {
        let recorder = recorder.clone();
        tokio::task::spawn_blocking(move || recorder.wait_for(n, Duration::from_secs(30)))
    };

    // The pending status is received, but notify dies before it hears
    // the answer (the forge answers slowly).
    recorder.delay(Duration::from_secs(2));
    let notify = start();
    db.exec("select pg_notify('build_started', '1')").await;
    assert_eq!(wait_for(1).await.unwrap().len(), 1);
    notify.signal(nix::sys::signal::Signal::SIGKILL);
    drop(notify);
    recorder.delay(Duration::ZERO);

    // The build finishes while nobody listens.
    db.exec(
        "update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 2, \
         notificationPendingSince = 2 where id = 1; \
         select pg_notify('build_finished', '1')",
    )
    .await;

    let notify = start();
    let got = wait_for(2).await.unwrap();
    // The forge has what the outbox wants: the reporter records that only
    // after the forge answered, so a duplicate would have been sent by now.
    let converged = crate::common::until(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, bool>(
            "select count(*) > 0 and bool_and(sentVersion = version) from CommitStatuses",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert!(converged, "the outbox did not converge");
    let got_after = recorder.requests();
    assert_eq!(got_after.len(), got.len(), "nothing more: {got_after:#?}");
    let states: Vec<(String, String)> = got_after
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["context"].as_str().unwrap().to_string(),
                body["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let context = "continuous-integration/hydra:p:j:app:1".to_string();
    assert_eq!(
        states,
        [
            (context.clone(), "pending".to_string()),
            (context, "success".to_string())
        ]
    );
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from Builds where notificationPendingSince is not null",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending, 0, "delivered");
    notify.stop();
}

/// Project `p` (owned by root, who wants evaluation-error mail), jobset
/// `j`; app succeeded (build 1), then failed (build 2, maintained by alice
/// and bob); lib failed because of it (build 3, alice). Builds 2 and 3
/// have notifications pending. The jobset's id.
async fn mail_fixture(db: &TestDb, data: &std::path::Path) -> i32 {
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "j", "src", "release.nix", &[])
            .await;
    db.exec("update Users set emailOnError = 1 where userName = 'root'")
        .await;
    TestBuild::new(jobset, "app")
        .id(1)
        .finished(BuildStatus::Succeeded, 1, 2)
        .insert(&db.pool)
        .await;
    TestBuild::new(jobset, "app")
        .id(2)
        .finished(BuildStatus::Failed, 3, 4)
        .insert(&db.pool)
        .await;
    TestBuild::new(jobset, "lib")
        .id(3)
        .finished(BuildStatus::DependencyFailed, 3, 4)
        .insert(&db.pool)
        .await;
    db.exec(
        "update Builds set maintainers = 'alice@example.org, bob@example.org,' where id = 2; \
         update Builds set maintainers = 'alice@example.org' where id = 3; \
         update Builds set notificationPendingSince = 4 where id in (2, 3)",
    )
    .await;
    std::fs::write(
        data.join("hydra.conf"),
        format!(
            "{}email_notification = 1\nnotification_sender = hydra@example.org\nbase_uri = https://hydra.example.org\n",
            crate::common::FREE_PORTS
        ),
    )
    .unwrap();
    jobset
}

/// A header's value in a raw message.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test]
async fn finished_builds_are_mailed_over_smtp_with_hydras_subject_and_headers() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    mail_fixture(&db, data.path()).await;
    let smtpd = hydra_test_support::smtp::Smtpd::start();

    let result = run(hydra(data.path())
        .args(["notify", "--queued-only"])
        .env("HYDRA_DATABASE_URL", db.url())
        .env("EMAIL_SENDER_TRANSPORT", "SMTP")
        .env("EMAIL_SENDER_TRANSPORT_host", "127.0.0.1")
        .env("EMAIL_SENDER_TRANSPORT_port", smtpd.port().to_string()));
    assert!(result.status.success(), "{}", stderr(&result));
    let mut mails = smtpd.wait_for(3, std::time::Duration::from_secs(10));
    assert_eq!(mails.len(), 3, "{mails:#?}");
    mails.sort_by_key(|m| {
        (
            header(m, "Subject").map(String::from),
            header(m, "X-RcptTo").map(String::from),
        )
    });
    let seen: Vec<(Option<&str>, Option<&str>)> = mails
        .iter()
        .map(|m| (header(m, "Subject"), header(m, "X-RcptTo")))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Some("Dependency failed: Hydra job p:j:lib on x86_64-linux"),
                Some("alice@example.org")
            ),
            (
                Some("Failed: Hydra job p:j:app on x86_64-linux"),
                Some("alice@example.org")
            ),
            (
                Some("Failed: Hydra job p:j:app on x86_64-linux"),
                Some("bob@example.org")
            ),
        ],
        "the empty address after the last comma is dropped"
    );
    let app = &mails[1];
    // The display name quoted, as RFC 5322 allows.
    assert_eq!(
        header(app, "From"),
        Some("\"Hydra Build Daemon\" <hydra@example.org>")
    );
    assert_eq!(header(app, "X-MailFrom"), Some("hydra@example.org"));
    assert_eq!(header(app, "To"), Some("alice@example.org"));
    assert_eq!(
        header(app, "X-Hydra-Instance"),
        Some("https://hydra.example.org")
    );
    assert_eq!(header(app, "X-Hydra-Project"), Some("p"));
    assert_eq!(header(app, "X-Hydra-Jobset"), Some("j"));
    assert_eq!(header(app, "X-Hydra-Job"), Some("app"));
    assert_eq!(header(app, "X-Hydra-System"), Some("x86_64-linux"));
    assert_eq!(
        header(app, "Content-Transfer-Encoding"),
        Some("quoted-printable")
    );
    // Quoted-printable: soft line breaks joined again.
    let text = app.replace("=\r\n", "").replace("=\n", "");
    assert!(
        text.contains("from \"Success\" to \"Failed\"")
            && text.contains("https://hydra.example.org/build/2"),
        "{app}"
    );
    let pending: i64 = sqlx::query_scalar(
        "select count(*) from Builds where notificationPendingSince is not null",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(pending, 0, "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_sink_gets_build_mails_and_changed_evaluation_errors() {
    use std::time::Duration;

    let db = TestDb::new().await;
    let data = shared_tempdir();
    let jobset = mail_fixture(&db, data.path()).await;
    let sink = data.path().join("mails");
    let mut notify = crate::common::Up::spawn(
        hydra(data.path())
            .arg("notify")
            .env("HYDRA_DATABASE_URL", db.url())
            .env("HYDRA_MAIL_SINK", &sink)
            .env("RUST_LOG", "info"),
    );
    assert!(
        notify.saw("notify started", Duration::from_secs(30)),
        "{}",
        notify.seen.join("\n")
    );
    let read = || std::fs::read_to_string(&sink).unwrap_or_default();
    let count = |text: &str, needle: &str| text.matches(needle).count();
    assert!(
        crate::common::eventually(Duration::from_secs(10), || count(&read(), "Subject: ") == 3),
        "{}",
        read()
    );

    // An evaluation error: mailed once, and again when it changes.
    let fail = |message: &str| {
        format!(
            "update Jobsets set errorMsg = '{message}', errorTime = 5 where id = {jobset}; \
             select pg_notify('eval_failed', E'trace\\t{jobset}')"
        )
    };
    db.exec(&fail("cannot fetch src")).await;
    let subject = "Subject: Hydra p:j evaluation error";
    assert!(
        crate::common::eventually(Duration::from_secs(10), || count(&read(), subject) == 1),
        "{}",
        read()
    );
    db.exec(&fail("cannot fetch src")).await;
    db.exec(&fail("syntax error in release.nix")).await;
    assert!(
        crate::common::eventually(Duration::from_secs(10), || count(&read(), subject) == 2),
        "{}",
        read()
    );
    let text = read();
    assert!(text.contains("syntax error in release.nix"), "{text}");
    assert_eq!(
        count(&text, "cannot fetch src"),
        1,
        "an unchanged error is not mailed again: {text}"
    );
    assert!(text.contains("To: root@example.org"), "{text}");
    notify.stop();
}

/// `<hydra_notify><prometheus>` serves Hydra's notify metrics, which
/// count events, parse errors and plugin runs; a NOTIFY of
/// `hydra_notify_dump_metrics` prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_metrics_are_served_and_dumped() {
    use std::time::Duration;

    let db = TestDb::new().await;
    let data = shared_tempdir();
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}<hydra_notify>\n<prometheus>\nlisten_address = 127.0.0.1\nport = 0\n</prometheus>\n</hydra_notify>\n",
            crate::common::FREE_PORTS
        ),
    )
    .unwrap();
    let mut notify = crate::common::Up::spawn(
        hydra(data.path())
            .arg("notify")
            .env("HYDRA_DATABASE_URL", db.url())
            .env("RUST_LOG", "info"),
    );
    let line = notify
        .wait_for("notify metrics at /metrics", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{}", notify.seen.join("\n")));
    let address = line
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(notify.saw("notify started", Duration::from_secs(30)));
    db.exec(
        "select pg_notify('build_queued', 'x'); \
         select pg_notify('build_finished', '99'); \
         select pg_notify('step_finished', E'99\\t1\\t/nonexistent/log')",
    )
    .await;
    let url = format!("http://{address}/metrics");
    let value = |samples: &[hydra_metrics::Sample], name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    };
    let mut samples = Vec::new();
    let counted = crate::common::eventually(Duration::from_secs(10), || {
        let (code, body) = crate::common::curl(&[&url]);
        samples = hydra_metrics::parse(&body).unwrap_or_default();
        code == 200
            && value(
                &samples,
                "notify_plugin_success",
                &[
                    ("channel", "step_finished"),
                    ("plugin", "Hydra::Plugin::CompressLog"),
                ],
            ) == Some(1.0)
    });
    assert!(counted, "{samples:#?}");
    assert_eq!(
        value(
            &samples,
            "notify_event_error",
            &[("channel", "build_queued")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "notify_event", &[("channel", "build_finished")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "notify_plugin_executions",
            &[
                ("channel", "build_finished"),
                ("plugin", "Hydra::Plugin::DeclarativeJobsets")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "notify_plugin_not_interested",
            &[
                ("channel", "build_finished"),
                ("plugin", "Hydra::Plugin::CompressLog")
            ]
        ),
        Some(1.0)
    );
    assert!(value(&samples, "event_loop_iterations", &[]).unwrap() >= 1.0);

    db.exec("select pg_notify('hydra_notify_dump_metrics', '')")
        .await;
    assert!(
        notify.saw("# TYPE notify_event counter", Duration::from_secs(10)),
        "{}",
        notify.seen.join("\n")
    );
    notify.stop();
}

/// S3Backup copies a build's closure into an S3-compatible bucket as a
/// binary cache Nix can read, NARs before narinfos, once.
#[tokio::test]
async fn s3_backup_copies_a_builds_closure_into_a_bucket_as_a_binary_cache() {
    use hydra_test_support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

    let db = TestDb::new().await;
    let data = shared_tempdir();
    let store = hydra_test_support::NixStore::new();
    let outs = store.build(
        &hydra_test_support::fixtures_dir().join("basic.nix"),
        "empty_dir",
    );
    let out = outs[0].clone();
    let s3 = S3Server::start();
    s3.create_bucket("cache");
    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset =
        hydra_test_support::jobsets::create_jobset(&db.pool, "p", "j", "src", "release.nix", &[])
            .await;
    TestBuild::new(jobset, "empty_dir")
        .id(1)
        .finished(BuildStatus::Succeeded, 1, 2)
        .output("out", &out)
        .insert(&db.pool)
        .await;
    db.exec("update Builds set notificationPendingSince = 2")
        .await;
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}<s3backup>\njobs = p:j:.*\nname = cache\nprefix = hydra/\ncompression_type = xz\n</s3backup>\n",
            crate::common::FREE_PORTS
        ),
    )
    .unwrap();
    let backup = || {
        let mut cmd = hydra(data.path());
        cmd.args(["notify", "--queued-only"])
            .env("HYDRA_DATABASE_URL", db.url())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", s3.url());
        for (k, v) in store.env() {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    let result = backup();
    assert!(result.status.success(), "{}", stderr(&result));

    let hash_part = out
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap()
        .to_string();
    let mut keys = s3.keys("cache");
    keys.sort();
    assert!(
        keys.contains(&"hydra/nix-cache-info".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("hydra/{hash_part}.narinfo")),
        "{keys:?}"
    );
    let text = String::from_utf8(
        s3.get("cache", &format!("hydra/{hash_part}.narinfo"))
            .unwrap(),
    )
    .unwrap();
    let narinfo = hydra_nix::narinfo::NarInfo::parse(&text).unwrap();
    assert_eq!(narinfo.store_path, out);
    assert_eq!(narinfo.compression, "xz");
    assert_eq!(
        narinfo.system.as_deref(),
        Some("x86_64-linux"),
        "the deriver's"
    );
    let info = String::from_utf8(s3.get("cache", "hydra/nix-cache-info").unwrap()).unwrap();
    assert!(info.contains("WantMassQuery: 1\nPriority: 50\n"), "{info}");
    assert!(
        narinfo.url.starts_with("nar/") && narinfo.url.ends_with(".nar.xz"),
        "{text}"
    );
    let nar = s3
        .get("cache", &format!("hydra/{}", narinfo.url))
        .unwrap_or_else(|| panic!("{} not in {keys:?}", narinfo.url));
    let file_hash = hydra_nix::hash::NixHash::digest(hydra_nix::hash::HashAlgo::Sha256, &nar);
    assert_eq!(
        narinfo.file_hash.as_ref(),
        Some(&file_hash),
        "base-32 FileHash"
    );
    assert_eq!(narinfo.file_size, Some(nar.len() as u64));
    let nar_hash = store.run("nix-store", &["--query", "--hash", &out]);
    assert_eq!(narinfo.nar_hash.to_typed_base32(), nar_hash.trim());

    // Again: nothing new is uploaded.
    db.exec("update Builds set notificationPendingSince = 3")
        .await;
    let result = backup();
    assert!(result.status.success(), "{}", stderr(&result));
    let mut again = s3.keys("cache");
    again.sort();
    assert_eq!(again, keys);
}

/// The generator of a declarative project's jobsets: `.jobsets` builds
/// `{ NAME: { description: DESCRIPTION, … } }`.
fn generator(name: &str, description: &str) -> String {
    format!(
        r#"{{ declInput, projectName, src }}:
{{
  jobsets = derivation {{
    name = "spec.json";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo '{{ \"{name}\": {{ \"enabled\": 1, \"nixexprinput\": \"src\", \"nixexprpath\": \"release.nix\", \"description\": \"{description}\", \"checkinterval\": 0, \"inputs\": {{ \"src\": {{ \"type\": \"string\", \"value\": \"x\" }} }} }} }}' > $out" ];
  }};
}}
"#
    )
}

/// A declarative project `p` under `hydra up` whose `.jobsets` is
/// evaluated every second from `generator.nix` in a path input `src`
/// (plus `inputs`), with `conf` in hydra.conf.
struct Generated {
    db: TestDb,
    src: tempfile::TempDir,
    _decl: tempfile::TempDir,
    _data: tempfile::TempDir,
    up: crate::common::Up,
}

impl Generated {
    async fn start(generator: &str, inputs: serde_json::Value, conf: &str) -> Generated {
        let db = TestDb::new().await;
        let data = shared_tempdir();
        let src = shared_tempdir();
        std::fs::write(src.path().join("generator.nix"), generator).unwrap();
        let mut all = serde_json::json!({
            "src": { "type": "path", "value": src.path().to_str().unwrap() }
        });
        if let (Some(all), Some(more)) = (all.as_object_mut(), inputs.as_object()) {
            all.extend(more.clone());
        }
        let spec = serde_json::json!({
            "enabled": 1, "hidden": false, "description": "jobsets",
            "nixexprinput": "src", "nixexprpath": "generator.nix",
            "checkinterval": 1, "schedulingshares": 100, "enableemail": false,
            "emailoverride": "", "keepnr": 3, "inputs": all
        });
        let decl = shared_tempdir();
        std::fs::write(decl.path().join("spec.json"), spec.to_string()).unwrap();
        hydra_test_support::jobsets::create_project(&db.pool, "p").await;
        sqlx::query(
            "update Projects set declfile = 'spec.json', decltype = 'path', declvalue = $1",
        )
        .bind(decl.path().to_str().unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
        hydra_test_support::jobsets::create_jobset(
            &db.pool,
            "p",
            ".jobsets",
            "src",
            "generator.nix",
            &[],
        )
        .await;
        db.exec("update Jobsets set checkInterval = 1 where name = '.jobsets'")
            .await;
        std::fs::write(
            data.path().join("hydra.conf"),
            format!(
                "{}path_input_cache_validity_seconds = 0\n{conf}",
                crate::common::FREE_PORTS
            ),
        )
        .unwrap();
        let up = crate::common::Up::start({
            let mut cmd = hydra(data.path());
            cmd.env("HYDRA_DATABASE_URL", db.url());
            cmd
        });
        Generated {
            db,
            src,
            _decl: decl,
            _data: data,
            up,
        }
    }

    fn set_generator(&self, text: &str) {
        std::fs::write(self.src.path().join("generator.nix"), text).unwrap();
    }

    /// Jobset `name`'s description, `enabled` and `hidden`.
    async fn jobset(&self, name: &str) -> Option<(Option<String>, i32, i32)> {
        sqlx::query_as(
            "select description, enabled, hidden from Jobsets where project = 'p' and name = $1",
        )
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await
        .unwrap()
    }

    /// Waits, up to 3 minutes, until jobset `name` has `description`.
    async fn wait_for(&self, name: &str, description: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while self.jobset(name).await.map(|j| j.0) != Some(Some(description.into())) {
            assert!(
                std::time::Instant::now() < deadline,
                "jobset {name} never got the description `{description}`"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// `hydra up` evaluates a generated declarative project's `.jobsets`,
/// builds its specification, and applies it when the build finishes:
/// jobsets appear, change, and are disabled when the generator drops
/// them.
#[tokio::test]
async fn hydra_up_applies_a_generated_declarative_specification_when_its_build_finishes() {
    let project =
        Generated::start(&generator("generated", "first"), serde_json::json!({}), "").await;
    project.wait_for("generated", "first").await;

    // The generator changes: a new jobset, and the old one is retired.
    project.set_generator(&generator("renamed", "second"));
    project.wait_for("renamed", "second").await;
    let retired = project.jobset("generated").await.unwrap();
    assert_eq!((retired.1, retired.2), (0, 1), "disabled and hidden");
    project.up.stop();
}

/// A generator of one jobset per open pull request, `pr-N`, described by
/// its title and building its head.
const PR_GENERATOR: &str = r#"{ declInput, projectName, src, pulls }:
let
  prs = builtins.fromJSON (builtins.readFile pulls);
  spec = builtins.listToAttrs (map (n: {
    name = "pr-${n}";
    value = {
      enabled = 1; hidden = false; description = prs.${n}.title;
      nixexprinput = "src"; nixexprpath = "release.nix"; checkinterval = 0;
      schedulingshares = 100; enableemail = false; emailoverride = ""; keepnr = 1;
      inputs = { src = { type = "string"; value = prs.${n}.head.sha; emailresponsible = false; }; };
    };
  }) (builtins.attrNames prs));
in
{
  jobsets = derivation {
    name = "spec.json";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo '${builtins.toJSON spec}' > $out" ];
  };
}
"#;

/// `hydra up` with a declarative project generating one jobset per pull
/// request from a `githubpulls` input: the pull requests' jobsets appear,
/// follow a new push, and are retired when their pull request closes.
#[tokio::test]
async fn one_jobset_per_pull_request_appears_follows_pushes_and_retires() {
    use hydra_test_support::http::{Recorder, Reply};

    let recorder = Recorder::start();
    let pulls = |list: &[(u32, &str, &str)]| {
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|(n, title, sha)| serde_json::json!({"number": n, "title": title, "head": {"sha": sha}}))
            .collect();
        Reply::new(200).body(&serde_json::Value::Array(items).to_string())
    };
    recorder.reply_always(pulls(&[(1, "Fix the build", "a1"), (2, "Add docs", "b1")]));
    let project = Generated::start(
        PR_GENERATOR,
        serde_json::json!({ "pulls": { "type": "githubpulls", "value": "owner repo" } }),
        &format!("github_api_url = {}\n", recorder.url()),
    )
    .await;
    project.wait_for("pr-1", "Fix the build").await;
    project.wait_for("pr-2", "Add docs").await;

    // A push to #1 (new title and head) and #2 closed.
    recorder.reply_always(pulls(&[(1, "Fix the build, take two", "a2")]));
    project.wait_for("pr-1", "Fix the build, take two").await;
    let input: String = sqlx::query_scalar(
        "select value from JobsetInputAlts where project = 'p' and jobset = 'pr-1' and input = 'src'",
    )
    .fetch_one(&project.db.pool)
    .await
    .unwrap();
    assert_eq!(input, "a2", "the jobset follows the new head");
    let closed = project.jobset("pr-2").await.unwrap();
    assert_eq!(
        (closed.1, closed.2),
        (0, 1),
        "disabled and hidden, not deleted"
    );
    assert!(
        recorder
            .requests()
            .iter()
            .all(|r| r.path == "/repos/owner/repo/pulls?per_page=100")
    );
    project.up.stop();
}
