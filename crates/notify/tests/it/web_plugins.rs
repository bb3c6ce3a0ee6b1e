//! Slack, InfluxDB and CircleCI against a recording HTTP server, and
//! CompressLog on real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hydra_db::status::BuildStatus;
use hydra_test_support::http::{Recorder, Request};
use tokio::io::AsyncReadExt;

use crate::common::{BASE, context, finish, finished, notify, queued, requests, setup, start};

/// The request whose path starts with `prefix`.
fn at<'a>(got: &'a [Request], prefix: &str) -> Vec<&'a Request> {
    got.iter().filter(|r| r.path.starts_with(prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_influxdb_and_circleci_hear_of_finished_builds_and_their_dependents() {
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://example.org/repo.git", &[]).await;
    // app succeeded before; now app fails and lib, which needs it, too.
    finished(&db, jobset, 1, "app", BuildStatus::Succeeded).await;
    db.exec("update Builds set notificationPendingSince = null")
        .await;
    queued(&db, jobset, 2, "app").await;
    queued(&db, jobset, 3, "lib").await;
    let url = recorder.url();
    let conf = format!(
        "<slack>\njobs = p:j:.*\nurl = {url}/slack/a\n</slack>\n\
         <slack>\njobs = p:j:app\nurl = {url}/slack/a\n</slack>\n\
         <slack>\njobs = p:j:lib\nurl = {url}/slack/b\nforce = 1\n</slack>\n\
         <slack>\njobs = other:.*\nurl = {url}/slack/never\n</slack>\n\
         <influxdb>\nurl = {url}/influx\ndb = hydra\n</influxdb>\n\
         circleci_api_url = {url}/circle\n\
         <circleci>\njobs = p:j:app\nvcstype = github\nusername = me\nproject = app\nbranch = main\ntoken = t1\n</circleci>\n\
         <circleci>\njobs = p:j:lib\nvcstype = github\nusername = me\nproject = lib\nbranch = main\ntoken = t2\nforce = 1\n</circleci>\n"
    );
    let (stop, running) = start(&db, context(&db, &conf)).await;
    finish(&db, 2, BuildStatus::Failed).await;
    finish(&db, 3, BuildStatus::DependencyFailed).await;
    db.exec("update Builds set timestamp = 5, startTime = 10, stopTime = 3735 where id in (2, 3)")
        .await;
    notify(&db, "build_finished", "2\\t3").await;
    let got = requests(&recorder, 4).await;
    assert_eq!(got.len(), 4, "{got:#?}");

    // Slack: one message per webhook, about its first build.
    let a = at(&got, "/slack/a");
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].header("content-type"), Some("application/json"));
    assert_eq!(
        a[0].json(),
        serde_json::json!({"attachments": [{
            "fallback": "Job p:j:app build number 2: Failed",
            "title": "Job p:j:app build number 2",
            "title_link": format!("{BASE}/build/2"),
            "color": "danger",
            "thumb_url": format!("{BASE}/static/images/error_256.png"),
            "text": format!("Job <{BASE}/job/p/j/app|p:j:app> (and 1 others): <{BASE}/build/2|Failed> in 1h2m5s"),
        }]})
    );
    let b = at(&got, "/slack/b");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].json()["attachments"][0]["color"], "danger");
    assert_eq!(
        b[0].json()["attachments"][0]["thumb_url"],
        format!("{BASE}/static/images/dependency_256.png")
    );

    // InfluxDB: a point per build, in the line protocol.
    let influx = at(&got, "/influx/write");
    assert_eq!(influx.len(), 1);
    assert_eq!(influx[0].path, "/influx/write?db=hydra&precision=s");
    assert_eq!(
        influx[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let lines: Vec<&str> = influx[0].body.split('\n').collect();
    assert_eq!(lines.len(), 2, "{}", influx[0].body);
    let tags_and_fields = |line: &str| {
        let host = line.find(",host=").map_or(line.len(), |at| at);
        let rest = &line[line.find(' ').unwrap()..];
        format!("{}{rest}", &line[..host])
    };
    assert_eq!(
        tags_and_fields(lines[0]),
        "hydra_build_status,cached=false,job=app,jobset=j,project=p,repo=j,result=failure,status=failed,system=x86_64-linux \
         build_id=\"2\",build_status=1i,closure_size=0i,duration=3725i,main_build_id=\"2\",queued=5i,size=0i 3735"
    );
    assert!(
        lines[1].contains("job=lib") && lines[1].contains("result=dependency-failed"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("main_build_id=\"2\""));

    // CircleCI: only the forced block's project (app did not succeed).
    let circle = at(&got, "/circle/");
    assert_eq!(circle.len(), 1);
    assert_eq!(
        circle[0].path,
        "/circle/api/v1.1/project/github/me/lib/tree/main?circle-token=t2"
    );
    assert_eq!(circle[0].method, "POST");

    // app fails again: no news for Slack, a point for InfluxDB.
    queued(&db, jobset, 4, "app").await;
    finish(&db, 4, BuildStatus::Failed).await;
    notify(&db, "build_finished", "4").await;
    let got = requests(&recorder, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = recorder.requests();
    assert_eq!(got_after.len(), 5, "{got_after:#?}");
    assert_eq!(got[4].path, "/influx/write?db=hydra&precision=s");
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn finished_steps_logs_are_compressed_in_place() {
    use hydra_notify::Context;

    let db = hydra_test_support::TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = hydra_config::DataDir::from(data.path());
    let log = data_dir.build_log(&format!("/nix/store/{}-hello.drv", "a".repeat(32)));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let text = "building\n".repeat(1000);
    std::fs::write(&log, &text).unwrap();
    let outside = data.path().join("elsewhere.log");
    std::fs::write(&outside, "keep me").unwrap();

    for (conf, extension) in [
        ("", "bz2"),
        ("compress_build_logs_compression = zstd\n", "zst"),
    ] {
        std::fs::write(&log, &text).unwrap();
        let (config, _) =
            hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), conf).unwrap();
        let cx = Context {
            pool: db.pool.clone(),
            config: Arc::new(config),
            data_dir: data_dir.clone(),
            local_root: None,
        };
        // Listening before the notifications are sent (the previous
        // round's listener may not have left the server's view yet).
        let (stop, running) = start(&db, cx).await;
        notify(&db, "step_finished", &format!("1\\t1\\t{}", log.display())).await;
        notify(
            &db,
            "step_finished",
            &format!("1\\t2\\t{}", outside.display()),
        )
        .await;
        let compressed = std::path::PathBuf::from(format!("{}.{extension}", log.display()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.exists() {
            assert!(std::time::Instant::now() < deadline, "not compressed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let file = tokio::fs::File::open(&compressed).await.unwrap();
        let reader = tokio::io::BufReader::new(file);
        let mut back = String::new();
        match extension {
            "bz2" => {
                async_compression::tokio::bufread::BzDecoder::new(reader)
                    .read_to_string(&mut back)
                    .await
                    .unwrap();
            }
            _ => {
                async_compression::tokio::bufread::ZstdDecoder::new(reader)
                    .read_to_string(&mut back)
                    .await
                    .unwrap();
            }
        }
        assert_eq!(back, text);
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            "keep me",
            "only logs"
        );
        stop.cancel();
        running.await.unwrap();
        std::fs::remove_file(&compressed).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverity_scan_uploads_the_tarball_and_sotest_creates_a_run() {
    use hydra_notify::{Context, Options};
    use hydra_test_support::http::Reply;

    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://example.org/repo.git", &[]).await;
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = format!("/nix/store/{}-hello-1.0", "c".repeat(32));
    let real = root.path().join(out.trim_start_matches('/'));
    std::fs::create_dir_all(real.join("tarballs")).unwrap();
    std::fs::write(real.join("tarballs/hello-1.0-coverity-int.tgz"), "TARBALL").unwrap();
    std::fs::write(real.join("sotest.yaml"), "boot: now").unwrap();
    finished(&db, jobset, 1, "hello", BuildStatus::Succeeded).await;
    db.exec(&format!(
        "insert into BuildOutputs (build, name, path) values (1, 'out', '{out}'); \
         insert into BuildProducts (build, productnr, type, subtype, path, name, defaultPath) values \
           (1, 1, 'file', 'sotest-binaries', '{out}/bin', 'binaries.tar', ''), \
           (1, 2, 'file', 'sotest-config', '{out}/sotest.yaml', 'sotest.yaml', '')"
    ))
    .await;
    let authfile = data.path().join("sotest-auth");
    std::fs::write(&authfile, "old:x\nbot:secret\n").unwrap();
    let url = recorder.url();
    let conf = format!(
        "base_uri = {BASE}\n\
         <coverityscan>\njobs = p:j:hello\nproject = hello\nemail = me@example.org\ntoken = ctok\nscanurl = {url}/upload\n</coverityscan>\n\
         <sotest>\nuri = {url}/sotest\nauthfile = {}\npriority = 3\n</sotest>\n",
        authfile.display()
    );
    let (config, warnings) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), &conf).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let cx = Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir: hydra_config::DataDir::from(data.path()),
        local_root: Some(root.path().to_path_buf()),
    };
    // SoTest refuses first: the task is kept to be tried again.
    recorder.reply_next(Reply::new(503).body("busy"));
    recorder.reply_next(Reply::new(503).body("busy"));
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    hydra_notify::run(
        cx.clone(),
        plugins,
        Options { queued_only: true },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let got = requests(&recorder, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let retries: Vec<String> = sqlx::query_scalar("select pluginname from TaskRetries")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        retries.iter().any(|p| p == "Hydra::Plugin::SoTest"),
        "{retries:?}"
    );

    let upload = at(&got, "/upload");
    assert_eq!(upload.len(), 1, "{got:#?}");
    let upload = upload[0];
    assert!(
        upload
            .header("content-type")
            .unwrap()
            .starts_with("multipart/form-data; boundary="),
        "{upload:?}"
    );
    for (field, value) in [
        ("project", "hello"),
        ("email", "me@example.org"),
        ("token", "ctok"),
        ("version", "1.0"),
        ("description", "Hydra Coverity Build (p:j:hello) - 1:1.0"),
    ] {
        assert!(
            upload
                .body
                .contains(&format!("name=\"{field}\"\r\n\r\n{value}\r\n")),
            "{field}: {}",
            upload.body
        );
    }
    assert!(
        upload
            .body
            .contains("filename=\"hello-1.0-coverity-int.tgz\"")
    );
    assert!(
        upload
            .body
            .contains("Content-Type: application/x-gzip\r\n\r\nTARBALL")
    );

    let sotest = at(&got, "/sotest/api/create");
    assert_eq!(sotest.len(), 1);
    let sotest = sotest[0];
    assert_eq!(
        sotest.header("authorization"),
        Some("Basic Ym90OnNlY3JldA==")
    );
    for (field, value) in [
        (
            "boot_files_url",
            format!("{BASE}/build/1/download/1/binaries.tar"),
        ),
        ("name", "p:j:hello".to_string()),
        ("url", format!("{BASE}/build/1")),
        ("priority", "3".to_string()),
    ] {
        assert!(
            sotest
                .body
                .contains(&format!("name=\"{field}\"\r\n\r\n{value}\r\n")),
            "{field}: {}",
            sotest.body
        );
    }
    assert!(sotest.body.contains("filename=\"sotest.yaml\""));
    assert!(sotest.body.contains("boot: now"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_names_the_authors_of_the_commits_since_the_previous_build() {
    use hydra_notify::{Context, Options};
    use hydra_test_support::jobsets::{EvalInput, add_to_eval, create_eval};

    let recorder = Arc::new(Recorder::start());
    let db = hydra_test_support::TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let repo = hydra_test_support::GitRepo::new();
    let before = repo.commit(&[("a", "1")], "first");
    let commit_as = |name: &str, email: &str, message: &str| {
        repo.git(&[
            "-c",
            &format!("user.name={name}"),
            "-c",
            &format!("user.email={email}"),
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            message,
        ]);
        repo.git(&["rev-parse", "HEAD"])
    };
    commit_as("Bob", "bob@example.org", "second");
    let after = commit_as("Ann", "ann@example.org", "third");
    // The evaluator's clone of the repository.
    let data_dir = hydra_config::DataDir::from(data.path());
    let clone = data_dir.scm_clone("git", &repo.url());
    std::fs::create_dir_all(clone.parent().unwrap()).unwrap();
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--bare", &repo.url()])
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success());

    hydra_test_support::jobsets::create_project(&db.pool, "p").await;
    let jobset = hydra_test_support::jobsets::create_jobset(
        &db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "git", &repo.url())],
    )
    .await;
    let url = repo.url();
    create_eval(
        &db.pool,
        jobset,
        1,
        &[EvalInput::Revision("src", "git", &url, &before)],
    )
    .await;
    create_eval(
        &db.pool,
        jobset,
        2,
        &[EvalInput::Revision("src", "git", &url, &after)],
    )
    .await;
    hydra_test_support::builds::TestBuild::new(jobset, "app")
        .id(1)
        .finished(BuildStatus::Succeeded, 1, 2)
        .insert(&db.pool)
        .await;
    hydra_test_support::builds::TestBuild::new(jobset, "app")
        .id(2)
        .finished(BuildStatus::Failed, 3, 4)
        .insert(&db.pool)
        .await;
    add_to_eval(&db.pool, 1, 1).await;
    add_to_eval(&db.pool, 2, 2).await;
    db.exec("update Builds set notificationPendingSince = 4 where id = 2")
        .await;
    let conf = format!(
        "base_uri = {BASE}\n<slack>\njobs = p:j:.*\nurl = {}/slack\n</slack>\n",
        recorder.url()
    );
    let (config, _) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), &conf).unwrap();
    let cx = Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir,
        local_root: None,
    };
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    hydra_notify::run(
        cx,
        plugins,
        Options { queued_only: true },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let got = requests(&recorder, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let text = got[0].json()["attachments"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.ends_with(
            ", likely due to 2 commits by <mailto:ann@example.org|Ann> or <mailto:bob@example.org|Bob>"
        ),
        "{text}"
    );
}
