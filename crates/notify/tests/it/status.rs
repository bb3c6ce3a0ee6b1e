//! Commit statuses, against a recording HTTP server: each forge's exact
//! request (method, path, auth header, JSON body), the state sequence,
//! dependents, collapse of overtaken states, rate limits, retries and
//! refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use hydra_db::status::BuildStatus;
use hydra_test_support::http::{Recorder, Reply};

use crate::common::{
    BASE, REV, context, finish, finished, notify, queued, queued_only, requests, setup, start,
};

fn github_conf(recorder: &Recorder, block: &str) -> String {
    format!(
        "github_api_url = {}/api/v3/\n\
         <github_authorization>\nowner = token owner-secret\n</github_authorization>\n\
         <githubstatus>\n{block}\n</githubstatus>\n",
        recorder.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_gets_pending_then_the_final_state_and_dependents_their_own() {
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://github.com/owner/repo.git", &[]).await;
    queued(&db, jobset, 1, "lib").await;
    queued(&db, jobset, 2, "app").await;
    let cx = context(&db, &github_conf(&recorder, "jobs = p:j:.*\ninputs = src"));
    let (stop, running) = start(&db, cx).await;

    notify(&db, "build_queued", "1").await;
    let got = requests(&recorder, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let pending = &got[0];
    assert_eq!(pending.method, "POST");
    assert_eq!(
        pending.path,
        format!("/api/v3/repos/owner/repo/statuses/{REV}")
    );
    assert_eq!(pending.header("authorization"), Some("token owner-secret"));
    assert_eq!(
        pending.header("accept"),
        Some("application/vnd.github.v3+json")
    );
    assert_eq!(pending.header("content-type"), Some("application/json"));
    assert_eq!(
        pending.json(),
        serde_json::json!({
            "state": "pending",
            "target_url": format!("{BASE}/build/1"),
            "description": "Hydra build #1 of p:j:lib",
            "context": "continuous-integration/hydra:p:j:lib:1",
        })
    );

    // Build 1 fails; build 2 fails because of it (a dependent).
    finish(&db, 1, BuildStatus::Failed).await;
    finish(&db, 2, BuildStatus::DependencyFailed).await;
    notify(&db, "build_finished", "1\\t2").await;
    let got = requests(&recorder, 3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let mut finals: Vec<(String, String)> = got[1..]
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["context"].as_str().unwrap().to_string(),
                body["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    finals.sort();
    assert_eq!(
        finals,
        [
            (
                "continuous-integration/hydra:p:j:app:2".to_string(),
                "failure".to_string()
            ),
            (
                "continuous-integration/hydra:p:j:lib:1".to_string(),
                "failure".to_string()
            ),
        ]
    );
    // Nothing more: a state sent is not sent again, even when the event
    // comes again (a restart's backlog).
    notify(&db, "build_finished", "1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorder.requests().len(), 3);
    stop.cancel();
    running.await.unwrap();

    let sent: Vec<(String, bool)> =
        sqlx::query_as("select state, sentVersion = version from CommitStatuses order by id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        sent,
        [("failure".to_string(), true), ("failure".to_string(), true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_build_gets_only_its_final_state_under_every_matching_block() {
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("git@github.com:owner/repo", &[]).await;
    finished(&db, jobset, 1, "docs-pr-12", BuildStatus::Succeeded).await;
    let conf = format!(
        "{}<githubstatus>\njobs = p:j:docs.*\ninputs = src\nuseShortContext = 1\nexcludeBuildFromContext = 1\n\
         description = Docs\nauthorization = Bearer block-secret\n</githubstatus>\n\
         <githubstatus>\njobs = other:.*\ninputs = src\n</githubstatus>\n",
        github_conf(
            &recorder,
            "jobs = p:j:docs-pr-.*\ninputs = src\ncontext = custom/ctx"
        )
    );
    queued_only(context(&db, &conf)).await;
    let got = recorder.requests();
    let mut seen: Vec<(String, String, String, Option<String>)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["context"].as_str().unwrap().to_string(),
                body["state"].as_str().unwrap().to_string(),
                body["description"].as_str().unwrap().to_string(),
                r.header("authorization").map(String::from),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "ci/hydra:p:j:docs".to_string(),
                "success".to_string(),
                "Docs".to_string(),
                Some("token owner-secret".to_string()),
            ),
            (
                "custom/ctx".to_string(),
                "success".to_string(),
                "Hydra build #1 of p:j:docs-pr-12".to_string(),
                Some("token owner-secret".to_string()),
            ),
        ],
        "both matching blocks, no pending for a finished build: {got:#?}"
    );
    let pending: Option<i32> =
        sqlx::query_scalar("select notificationPendingSince from Builds where id = 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(pending, None, "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_the_credential_and_only_the_newest_state_is_sent_after_it() {
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://github.com/owner/repo", &[]).await;
    db.exec(&format!(
        "insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision) \
         values (1, 'other', 0, 'git', 'https://github.com/second/repo', '{REV}')"
    ))
    .await;
    queued(&db, jobset, 1, "a").await;
    queued(&db, jobset, 2, "b").await;
    // Job a reports to owner's repository, job b to second's (signed by
    // its block's token).
    let conf = format!(
        "{}<githubstatus>\njobs = p:j:b\ninputs = other\nauthorization = token second-secret\n</githubstatus>\n",
        github_conf(&recorder, "jobs = p:j:a\ninputs = src")
    );
    let (stop, running) = start(&db, context(&db, &conf)).await;

    // The first answer: secondary rate limit, come back in 2 seconds.
    recorder.reply_next(
        Reply::new(403)
            .header("Retry-After", "2")
            .body(r#"{"message":"You have exceeded a secondary rate limit"}"#),
    );
    notify(&db, "build_queued", "1").await;
    let got = requests(&recorder, 1).await;
    assert_eq!(got[0].json()["state"], "pending");
    // Another credential is not held back.
    notify(&db, "build_queued", "2").await;
    let got = requests(&recorder, 2).await;
    assert_eq!(
        got[1].path,
        format!("/api/v3/repos/second/repo/statuses/{REV}")
    );
    assert_eq!(got[1].header("authorization"), Some("token second-secret"));
    assert!(
        got[1].at - got[0].at < Duration::from_millis(1500),
        "not held: {:?}",
        got[1].at - got[0].at
    );
    // Meanwhile build 1 finishes: its pending state is overtaken.
    finish(&db, 1, BuildStatus::Succeeded).await;
    notify(&db, "build_finished", "1").await;
    let got = requests(&recorder, 3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let waited = got[2].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1500),
        "Retry-After honoured: {waited:?}"
    );
    assert_eq!(
        got[2].path,
        format!("/api/v3/repos/owner/repo/statuses/{REV}")
    );
    assert_eq!(got[2].json()["state"], "success", "pending never resent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.requests().len(), 3);
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_refusals_given_up_until_the_admin_retries() {
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://github.com/owner/repo", &[]).await;
    finished(&db, jobset, 1, "a", BuildStatus::Succeeded).await;
    let conf = github_conf(&recorder, "jobs = .*\ninputs = src");
    recorder.reply_next(Reply::new(502).body("bad gateway"));
    let (stop, running) = start(&db, context(&db, &conf)).await;
    // 502, then (after the first back-off, 2 s) accepted.
    let got = requests(&recorder, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[1].at - got[0].at >= Duration::from_millis(1500));
    assert_eq!(got[1].json(), got[0].json());

    // A refusal: given up at once, with the answer kept.
    queued(&db, jobset, 2, "b").await;
    recorder.reply_next(Reply::new(404).body(r#"{"message":"Not Found"}"#));
    notify(&db, "build_queued", "2").await;
    requests(&recorder, 3).await;
    let row = || async {
        sqlx::query_as::<_, (i32, bool, Option<String>)>(
            "select id, dropped, lastError from CommitStatuses where build = 2",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !row().await.1 {
        assert!(std::time::Instant::now() < deadline, "not given up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (id, _, error) = row().await;
    assert!(
        error.as_deref().unwrap().contains("404")
            && error.as_deref().unwrap().contains("Not Found"),
        "{error:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.requests().len(), 3, "not retried by itself");
    let retried = hydra_db::commit_statuses::retry_dropped(
        &db.pool,
        id,
        hydra_db::ids::BuildId(2),
        hydra_db::now(),
    )
    .await
    .unwrap();
    assert!(retried);
    // The admin's retry reaches the running reporter at once.
    let got = requests(&recorder, 4).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(
        got[3].json()["context"],
        "continuous-integration/hydra:p:j:b:2"
    );
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitea_gitlab_and_bitbucket_get_their_own_requests() {
    let recorder = Arc::new(Recorder::start());
    let gitea_url = format!("{}/gitea", recorder.url());
    let (db, jobset) = setup(
        &format!("{}/root/foo.git", recorder.url()),
        &[
            ("gitea_status_repo", "src"),
            ("gitea_repo_owner", "root"),
            ("gitea_repo_name", "foo"),
            ("gitea_http_url", &gitea_url),
            ("gitlab_status_repo", "src"),
            ("gitlab_project_id", "42"),
        ],
    )
    .await;
    finished(&db, jobset, 1, "hello", BuildStatus::Failed).await;
    let conf = format!(
        "<gitea_authorization>\nroot = gitea-secret\n</gitea_authorization>\n\
         <gitlab_authorization>\n42 = gitlab-secret\n</gitlab_authorization>\n\
         enable_bitbucket_status = 1\nbitbucket_api_url = {url}/bitbucket\n\
         <bitbucket>\nusername = bob\npassword = pw\n</bitbucket>\n",
        url = recorder.url()
    );
    // Bitbucket takes inputs whose URL is on Bitbucket.
    db.exec(&format!(
        "insert into JobsetInputs (project, jobset, name, type, emailResponsible) values ('p', 'j', 'bb', 'git', 1); \
         insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision) \
           values (1, 'bb', 0, 'git', 'https://bitbucket.org/team/app.git', '{REV}')"
    ))
    .await;
    queued_only(context(&db, &conf)).await;
    let mut got = recorder.requests();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("/api/v4/projects/42/statuses/{REV}"),
            format!("/bitbucket/2.0/repositories/team/app/commit/{REV}/statuses/build"),
            format!("/gitea/api/v1/repos/root/foo/statuses/{REV}"),
        ]
    );
    let (gitlab, bitbucket, gitea) = (&got[0], &got[1], &got[2]);
    assert_eq!(gitlab.header("private-token"), Some("gitlab-secret"));
    assert_eq!(
        gitlab.json(),
        serde_json::json!({
            "state": "failed",
            "target_url": format!("{BASE}/build/1"),
            "description": "Hydra build #1 of p:j:hello",
            "name": "Hydra hello",
        })
    );
    assert_eq!(bitbucket.header("authorization"), Some("Basic Ym9iOnB3"));
    assert_eq!(
        bitbucket.json(),
        serde_json::json!({
            "state": "FAILED",
            "url": format!("{BASE}/build/1"),
            "name": "p:j:hello",
            "key": "1",
            "description": "Hydra build #1 of p:j:hello",
        })
    );
    assert_eq!(gitea.header("authorization"), Some("token gitea-secret"));
    assert_eq!(
        gitea.json(),
        serde_json::json!({
            "state": "failure",
            "target_url": format!("{BASE}/build/1"),
            "description": "Hydra build #1 of p:j:hello",
            "context": "Hydra hello",
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_status_goes_pending_then_error_or_follows_its_builds() {
    use hydra_db::evals::EvalInput;

    const REV2: &str = "fedcba9876543210fedcba9876543210fedcba98";
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://github.com/owner/repo.git", &[]).await;
    queued(&db, jobset, 1, "a").await;
    queued(&db, jobset, 2, "b").await;
    let conf = github_conf(&recorder, "jobsets = p:j\ninputs = src");
    let (stop, running) = start(&db, context(&db, &conf)).await;
    let state_of = |r: &hydra_test_support::http::Request| {
        let body = r.json();
        (
            r.path.clone(),
            body["context"].as_str().unwrap().to_string(),
            body["state"].as_str().unwrap().to_string(),
            body["description"].as_str().unwrap().to_string(),
        )
    };

    // An evaluation of another revision fetches its inputs, then fails.
    let uri = "https://github.com/owner/repo.git";
    let input = EvalInput {
        name: "src",
        kind: "git",
        uri: Some(uri),
        revision: Some(REV2),
        short_rev_length: None,
        value: None,
        dependency: None,
        store_path: None,
        sha256: None,
    };
    hydra_db::evals::record_checkout(
        &db.pool,
        hydra_db::ids::JobsetId(jobset),
        "trace-2",
        None,
        &[input],
        hydra_db::now(),
    )
    .await
    .unwrap();
    let got = requests(&recorder, 1).await;
    let at_rev2 = format!("/api/v3/repos/owner/repo/statuses/{REV2}");
    assert_eq!(
        state_of(&got[0]),
        (
            at_rev2.clone(),
            "ci/hydra:p:j".to_string(),
            "pending".to_string(),
            "Hydra is evaluating p:j".to_string()
        )
    );
    notify(&db, "eval_failed", &format!("trace-2\\t{jobset}")).await;
    let got = requests(&recorder, 2).await;
    assert_eq!(state_of(&got[1]).2, "error");
    assert_eq!(state_of(&got[1]).0, at_rev2);

    // Evaluation 1 (REV) is recorded: pending until its builds finish.
    let at_rev = format!("/api/v3/repos/owner/repo/statuses/{REV}");
    notify(&db, "eval_added", &format!("trace-1\\t{jobset}\\t1")).await;
    let got = requests(&recorder, 3).await;
    assert_eq!(
        state_of(&got[2]),
        (
            at_rev.clone(),
            "ci/hydra:p:j".to_string(),
            "pending".to_string(),
            "Hydra evaluation #1 of p:j: 0 of 2 builds finished".to_string()
        )
    );
    finish(&db, 1, BuildStatus::Succeeded).await;
    notify(&db, "build_finished", "1").await;
    let got = requests(&recorder, 4).await;
    assert_eq!(
        state_of(&got[3]).3,
        "Hydra evaluation #1 of p:j: 1 of 2 builds finished"
    );
    finish(&db, 2, BuildStatus::Failed).await;
    notify(&db, "build_finished", "2").await;
    let got = requests(&recorder, 5).await;
    assert_eq!(
        state_of(&got[4]),
        (
            at_rev,
            "ci/hydra:p:j".to_string(),
            "failure".to_string(),
            "Hydra evaluation #1 of p:j: 1 of 2 builds failed".to_string()
        )
    );
    assert_eq!(got[4].json()["target_url"], format!("{BASE}/eval/1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        recorder.requests().len(),
        5,
        "no build statuses: no jobs pattern"
    );
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_connection_loses_no_notification() {
    let recorder = Arc::new(Recorder::start());
    let (db, jobset) = setup("https://github.com/owner/repo.git", &[]).await;
    queued(&db, jobset, 1, "a").await;
    let conf = github_conf(&recorder, "jobs = .*\ninputs = src");
    let (stop, running) = start(&db, context(&db, &conf)).await;
    // The role's LISTEN connection drops; the build finishes meanwhile,
    // its NOTIFY heard by nobody.
    let killed: i64 = sqlx::query_scalar(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity \
         where datname = current_database() and query ilike 'listen%' and pid <> pg_backend_pid()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, 1);
    finish(&db, 1, BuildStatus::Succeeded).await;
    notify(&db, "build_finished", "1").await;
    // Back, it reads the backlog: the status still arrives, once.
    let got = requests(&recorder, 1).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].json()["state"], "success");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending: i64 = sqlx::query_scalar(
            "select count(*) from Builds where notificationPendingSince is not null",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if pending == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recorder.requests().len(), 1);
    stop.cancel();
    running.await.unwrap();
}

/// A fake GitHub for a GitHub App: installation, token, no check runs yet,
/// and each created check run gets an id.
fn fake_app_github(recorder: &Recorder) {
    recorder.reply_at(
        "/api/repos/owner/repo/installation",
        Reply::new(200).body(r#"{"id": 7}"#),
    );
    recorder.reply_at(
        "/api/app/installations/7/access_tokens",
        Reply::new(201).body(r#"{"token": "ghs_t", "expires_at": "2099-01-01T00:00:00Z"}"#),
    );
    recorder.reply_at(
        &format!("/api/repos/owner/repo/commits/{REV}/check-runs"),
        Reply::new(200).body(r#"{"total_count": 0, "check_runs": []}"#),
    );
    recorder.reply_at(
        "/api/repos/owner/repo/check-runs",
        Reply::new(201).body(r#"{"id": 900}"#),
    );
}

fn app_key() -> tempfile::TempDir {
    let dir = hydra_test_support::shared_tempdir();
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out", "app.pem", "2048"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluation_gets_an_evaluation_check_and_an_aggregate_check_with_stable_names() {
    let recorder = Arc::new(Recorder::start());
    fake_app_github(&recorder);
    let key = app_key();
    let (db, jobset) = setup("https://github.com/owner/repo.git", &[]).await;
    db.exec("update Jobsets set name = 'j-pr-7' where id = 1")
        .await;
    queued(&db, jobset, 1, "a").await;
    let conf = format!(
        "github_api_url = {}/api\n<github_app>\napp_id = 1\nprivate_key_file = {}\njobsets = p:.*\ninputs = src\n</github_app>\n",
        recorder.url(),
        key.path().join("app.pem").display()
    );
    let (stop, running) = start(&db, context(&db, &conf)).await;
    // (name, status, conclusion) of each check-run write, in order.
    let writes = |recorder: &Recorder| -> Vec<(String, String, String)> {
        recorder
            .requests()
            .iter()
            .filter(|r| r.method == "POST" || r.method == "PATCH")
            .filter(|r| r.path.contains("/check-runs"))
            .map(|r| {
                let b = r.json();
                (
                    b["name"].as_str().unwrap_or_default().to_string(),
                    b["status"].as_str().unwrap_or_default().to_string(),
                    b["conclusion"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let wait = |n: usize| {
        let recorder = recorder.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let got = writes(&recorder);
                if got.len() >= n || std::time::Instant::now() > deadline {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    notify(&db, "eval_added", &format!("trace-1\t{jobset}\t1")).await;
    let got = wait(2).await;
    let mut first = got.clone();
    first.sort();
    assert_eq!(
        first,
        vec![
            ("hydra/p:j".into(), "in_progress".into(), String::new()),
            (
                "hydra/p:j evaluation".into(),
                "completed".into(),
                "success".into()
            ),
        ],
        "the names drop -pr-7"
    );
    finish(&db, 1, BuildStatus::Succeeded).await;
    notify(&db, "build_finished", "1").await;
    let got = wait(3).await;
    assert_eq!(
        got[2],
        ("hydra/p:j".into(), "completed".into(), "success".into()),
        "{got:#?}"
    );
    // Updated in place: the aggregate was created once, then patched.
    let requests = recorder.requests();
    let posts = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/check-runs"))
        .count();
    assert_eq!(posts, 2, "one per check: {requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.method == "PATCH" && r.path == "/api/repos/owner/repo/check-runs/900")
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.path.contains("/check-runs"))
            .all(|r| r.header("authorization") == Some("token ghs_t")),
        "installation token on every check-run request"
    );
    stop.cancel();
    running.await.unwrap();
}
