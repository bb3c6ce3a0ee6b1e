//! GitHub check runs from a GitHub App, through `hydra notify` processes
//! and a fake GitHub on 127.0.0.1: the app's JWT is a valid RS256 token
//! of the app, an installation token signs the check runs, a check run is
//! created once and then updated in place, and a notify killed with
//! SIGKILL while creating it leaves, after a restart, still one check run
//! per job, completed with the failing log's end and a Re-run action.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hydra_db::status::BuildStatus;
use hydra_test_support::builds::TestBuild;
use hydra_test_support::http::{Recorder, Reply};
use hydra_test_support::jobsets::{
    EvalInput, add_to_eval, create_eval, create_jobset, create_project,
};
use hydra_test_support::{TestDb, shared_tempdir};
use serde_json::{Value, json};

use crate::common::{Up, eventually, hydra};

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
const DRV: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a.drv";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks `jwt` with the public key `public` (openssl, not our code):
/// its claims.
fn verified_claims(dir: &Path, jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], json!("RS256"));
    std::fs::write(dir.join("signed"), format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(
        dir.join("signature"),
        URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "public.pem",
            "-signature",
            "signature",
            "signed",
        ],
    );
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

fn notify_process(data: &Path, db: &TestDb) -> Up {
    let mut up = Up::spawn(
        hydra(data)
            .arg("notify")
            .env("HYDRA_DATABASE_URL", db.url())
            .env("RUST_LOG", "info"),
    );
    assert!(
        up.saw("notify started", Duration::from_secs(30)),
        "{}",
        up.seen.join("\n")
    );
    up
}

async fn wake(db: &TestDb, channel: &str, payload: &str) {
    db.exec(&format!("select pg_notify('{channel}', '{payload}')"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_runs_are_created_once_and_updated_in_place_even_across_a_kill() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let keys = shared_tempdir();
    openssl(
        keys.path(),
        &["genrsa", "-traditional", "-out", "app.pem", "2048"],
    );
    openssl(
        keys.path(),
        &["rsa", "-in", "app.pem", "-pubout", "-out", "public.pem"],
    );

    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "main-pr-3", "src", "release.nix", &[]).await;
    create_eval(
        &db.pool,
        jobset,
        1,
        &[EvalInput::Revision(
            "src",
            "git",
            "https://github.com/o/r.git",
            REV,
        )],
    )
    .await;
    TestBuild::new(jobset, "a")
        .id(1)
        .drv(DRV)
        .insert(&db.pool)
        .await;
    add_to_eval(&db.pool, 1, 1).await;

    let github = Recorder::start();
    github.reply_at(
        "/api/repos/o/r/installation",
        Reply::new(200).body(r#"{"id": 42}"#),
    );
    github.reply_at(
        "/api/app/installations/42/access_tokens",
        Reply::new(201)
            .body(r#"{"token": "ghs_installation", "expires_at": "2099-01-01T00:00:00Z"}"#),
    );
    let list = format!("/api/repos/o/r/commits/{REV}/check-runs");
    github.reply_at(
        &list,
        Reply::new(200).body(r#"{"total_count": 0, "check_runs": []}"#),
    );
    github.reply_at(
        "/api/repos/o/r/check-runs",
        Reply::new(201).body(r#"{"id": 777}"#),
    );
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "{}github_api_url = {}/api\nbase_uri = https://hydra.example.org\n\
             <github_app>\napp_id = 4242\nprivate_key_file = {}\njobs = p:.*\ninputs = src\n</github_app>\n",
            crate::common::FREE_PORTS,
            github.url(),
            keys.path().join("app.pem").display()
        ),
    )
    .unwrap();

    // The creation takes long; notify is killed while it waits.
    github.delay(Duration::from_millis(1500));
    let notify = notify_process(data.path(), &db);
    wake(&db, "build_queued", "1").await;
    let create = |r: &hydra_test_support::http::Request| {
        r.method == "POST" && r.path == "/api/repos/o/r/check-runs"
    };
    assert!(
        eventually(Duration::from_secs(30), || github
            .requests()
            .iter()
            .any(create)),
        "{:#?}",
        github.requests()
    );
    notify.signal(nix::sys::signal::Signal::SIGKILL);
    drop(notify);
    // GitHub did create it: the list now has it, with our external id.
    let posted = github.requests().into_iter().find(|r| create(r)).unwrap();
    let body = posted.json();
    let external = body["external_id"].as_str().unwrap().to_string();
    assert_eq!(body["name"], json!("p:main:a"), "the -pr-N is dropped");
    assert_eq!(body["head_sha"], json!(REV));
    assert_eq!(body["status"], json!("queued"));
    assert_eq!(
        body["details_url"],
        json!("https://hydra.example.org/build/1")
    );
    assert_eq!(
        posted.header("authorization"),
        Some("token ghs_installation")
    );
    github.reply_at(
        &list,
        Reply::new(200).body(
            &json!({"total_count": 1, "check_runs": [{"id": 777, "name": "p:main:a", "external_id": external}]})
                .to_string(),
        ),
    );

    // The app's JWT: RS256 by the app's key, issued by the app, short.
    let installation = github
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/repos/o/r/installation")
        .unwrap();
    let jwt = installation
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let claims = verified_claims(keys.path(), &jwt);
    assert_eq!(claims["iss"], json!("4242"));
    let life = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(life > 0 && life <= 600, "{claims}");

    // The lease of the killed attempt runs out; a new notify carries on.
    github.delay(Duration::ZERO);
    db.exec("update CommitStatuses set nextAttempt = 0").await;
    db.exec(&format!(
        "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, system) \
         values (1, 1, 0, '{DRV}', 0, 1, 10, 20, 'x86_64-linux')"
    ))
    .await;
    let log = hydra_config::DataDir::new(data.path()).build_log(DRV);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(
        &log,
        "configuring\nbuilding\nerror: the widget is broken ```\n",
    )
    .unwrap();
    db.exec(&format!(
        "update Builds set finished = 1, buildStatus = {}, startTime = 10, stopTime = 20 where id = 1",
        BuildStatus::Failed.code()
    ))
    .await;
    let notify = notify_process(data.path(), &db);
    wake(&db, "build_finished", "1").await;
    let completed = |r: &hydra_test_support::http::Request| {
        r.method == "PATCH" && r.json()["status"] == json!("completed")
    };
    assert!(
        eventually(Duration::from_secs(30), || github
            .requests()
            .iter()
            .any(completed)),
        "{:#?}\n{}",
        github.requests(),
        notify.seen.join("\n")
    );
    notify.stop();

    let requests = github.requests();
    let posts = requests.iter().filter(|r| create(r)).count();
    assert_eq!(posts, 1, "one check run for the job: {requests:#?}");
    let patches: Vec<_> = requests.iter().filter(|r| r.method == "PATCH").collect();
    assert!(
        patches
            .iter()
            .all(|r| r.path == "/api/repos/o/r/check-runs/777"),
        "{patches:#?}"
    );
    let last = patches.last().unwrap().json();
    assert_eq!(last["conclusion"], json!("failure"));
    assert_eq!(last["external_id"], json!(external));
    assert_eq!(last["actions"][0]["identifier"], json!("rerun"));
    let summary = last["output"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("error: the widget is broken '''"),
        "{summary}"
    );
    assert!(summary.contains(DRV), "{summary}");
    let (remote, sent): (Option<i64>, bool) = sqlx::query_as(
        "select remoteId, sentVersion = version from CommitStatuses where build = 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((remote, sent), (Some(777), true));
}
