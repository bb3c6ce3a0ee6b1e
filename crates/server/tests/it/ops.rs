//! Webhooks (signatures, rotation, matching), job routes, starring, admin
//! actions, news, the queue-runner proxy without a queue runner, request
//! metrics, and reverse-proxy headers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{App, As, fixture};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const HOOKS: &str = "<webhooks>\n<github>\nsecret = old-secret\nsecret = new-secret\n</github>\n<gitea>\nsecret = gitea-secret\n</gitea>\n<gitlab>\nsecret = gitlab-token\n</gitlab>\n</webhooks>\n";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn hook_jobsets(app: &App) {
    app.exec(
        "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, enabled) values
            ('demo', 'gh', 'src', 'release.nix', '', 1),
            ('demo', 'gh_off', 'src', 'release.nix', '', 0),
            ('demo', 'elsewhere', 'src', 'release.nix', '', 1),
            ('demo', 'tea', 'src', 'release.nix', '', 1);
         insert into Jobsets (project, name, type, flake, emailOverride, enabled) values
            ('demo', 'flake', 1, 'github:Owner/repo/main', '', 1);
         insert into JobsetInputs (project, jobset, name, type) values
            ('demo', 'gh', 'src', 'git'), ('demo', 'gh_off', 'src', 'git'),
            ('demo', 'elsewhere', 'src', 'git'), ('demo', 'tea', 'src', 'git');
         insert into JobsetInputAlts (project, jobset, input, altnr, value) values
            ('demo', 'gh', 'src', 0, 'https://github.com/Owner/repo.git main'),
            ('demo', 'gh_off', 'src', 0, 'https://github.com/Owner/repo.git'),
            ('demo', 'elsewhere', 'src', 0, 'https://github.com/Owner/other'),
            ('demo', 'tea', 'src', 0, 'https://gitea.example.org/team/proj');",
    )
    .await;
}

async fn post_hook(app: &App, path: &str, body: &[u8], headers: &[(&str, &str)]) -> common::Reply {
    let mut req = axum::http::Request::post(path)
        .header("host", common::HOST)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    app.raw(req.body(axum::body::Body::from(body.to_vec())).unwrap())
        .await
}

async fn triggered(app: &App) -> Vec<String> {
    let names: Vec<String> =
        sqlx::query_scalar("select name from Jobsets where triggerTime is not null order by name")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    names
}

#[tokio::test]
async fn github_pushes_need_a_valid_signature_by_one_of_the_secrets() {
    let app = App::with_config(HOOKS).await;
    fixture(&app).await;
    hook_jobsets(&app).await;
    let body = json!({"repository": {"name": "repo", "owner": {"name": "Owner"}}}).to_string();
    let body = body.as_bytes();

    let r = post_hook(&app, "/api/push-github", body, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "Missing webhook signature");
    let forged = format!("sha256={}", sign("guessed", body));
    let r = post_hook(
        &app,
        "/api/push-github",
        body,
        &[("x-hub-signature-256", &forged)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "Invalid webhook signature");
    let garbage = "sha256=zz";
    let r = post_hook(
        &app,
        "/api/push-github",
        body,
        &[("x-hub-signature-256", garbage)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Signed over another body.
    let other = format!("sha256={}", sign("new-secret", b"{}"));
    let r = post_hook(
        &app,
        "/api/push-github",
        body,
        &[("x-hub-signature-256", &other)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(triggered(&app).await.is_empty(), "nothing triggered yet");

    // The old secret still works during a rotation, and so does the new.
    for secret in ["old-secret", "new-secret"] {
        app.exec("update Jobsets set triggerTime = null").await;
        let sig = format!("sha256={}", sign(secret, body));
        let r = post_hook(
            &app,
            "/api/push-github",
            body,
            &[("x-hub-signature-256", &sig)],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{secret}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"jobsetsTriggered": ["demo:flake", "demo:gh"]}),
            "inputs and flakes on the repository, enabled ones only"
        );
        assert_eq!(triggered(&app).await, vec!["flake", "gh"]);
    }

    // `login` names the owner too (organisation pushes).
    app.exec("update Jobsets set triggerTime = null").await;
    let body = json!({"repository": {"name": "repo", "owner": {"login": "Owner"}}}).to_string();
    let sig = format!("sha256={}", sign("new-secret", body.as_bytes()));
    let r = post_hook(
        &app,
        "/api/push-github",
        body.as_bytes(),
        &[("x-hub-signature-256", &sig)],
    )
    .await;
    assert_eq!(
        r.json()["jobsetsTriggered"],
        json!(["demo:flake", "demo:gh"])
    );

    // LIKE wildcards in names match literally.
    app.exec("update Jobsets set triggerTime = null").await;
    let body = json!({"repository": {"name": "%", "owner": {"name": "%"}}}).to_string();
    let sig = format!("sha256={}", sign("new-secret", body.as_bytes()));
    let r = post_hook(
        &app,
        "/api/push-github",
        body.as_bytes(),
        &[("x-hub-signature-256", &sig)],
    )
    .await;
    assert_eq!(r.json()["jobsetsTriggered"], json!([]));

    let empty_sig = format!("sha256={}", sign("new-secret", b""));
    let r = post_hook(
        &app,
        "/api/push-github",
        b"",
        &[("x-hub-signature-256", &empty_sig)],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let sig = format!("sha256={}", sign("new-secret", b"not json"));
    let r = post_hook(
        &app,
        "/api/push-github",
        b"not json",
        &[("x-hub-signature-256", &sig)],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn webhooks_without_configured_secrets_are_refused() {
    let app = App::new().await;
    fixture(&app).await;
    let body = br#"{"repository":{"name":"repo","owner":{"name":"Owner"}}}"#;
    let sig = format!("sha256={}", sign("", body));
    let r = post_hook(
        &app,
        "/api/push-github",
        body,
        &[("x-hub-signature-256", &sig)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post_hook(
        &app,
        "/api/push-gitea",
        body,
        &[("x-gitea-signature", &sign("", body))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn gitea_pushes_match_the_clone_url() {
    let app = App::with_config(HOOKS).await;
    fixture(&app).await;
    hook_jobsets(&app).await;
    let body =
        json!({"repository": {"clone_url": "https://gitea.example.org/team/proj.git"}}).to_string();
    let r = post_hook(&app, "/api/push-gitea", body.as_bytes(), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "Missing webhook signature");
    let bad = sign("new-secret", body.as_bytes());
    let r = post_hook(
        &app,
        "/api/push-gitea",
        body.as_bytes(),
        &[("x-gitea-signature", &bad)],
    )
    .await;
    assert_eq!(r.error(), "Invalid webhook signature");
    let good = sign("gitea-secret", body.as_bytes());
    let r = post_hook(
        &app,
        "/api/push-gitea",
        body.as_bytes(),
        &[("x-gitea-signature", &good)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"jobsetsTriggered": ["demo:tea"]}));
}

/// The pull request rows the webhooks left: (project, number, head,
/// state, fork, updated at).
async fn pull_rows(app: &App) -> Vec<(String, i32, String, String, bool, i32)> {
    sqlx::query_as(
        "select project, number, headSha, state, fork, updatedAt from PullRequests order by project, number",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn pull_request_deliveries_from_gitea_and_gitlab_are_recorded_in_order() {
    let app = App::with_config(HOOKS).await;
    fixture(&app).await;
    hook_jobsets(&app).await;
    app.exec(
        "insert into ProjectPullRequests (project, forge, repository, apiUrl, template, input) values
            ('demo', 'gitea', 'Team/Proj', 'https://gitea.example.org', 'tea', 'src')",
    )
    .await;
    let pr = |sha: &str, at: &str, state: &str| {
        json!({
            "action": "synchronized", "number": 5,
            "repository": {"full_name": "team/proj", "clone_url": "https://gitea.example.org/team/proj.git"},
            "pull_request": {
                "number": 5, "title": "T", "state": state, "user": {"login": "u"},
                "updated_at": at,
                "head": {"sha": sha, "repo": {"full_name": "u/proj"}},
                "base": {"repo": {"full_name": "team/proj", "clone_url": "https://gitea.example.org/team/proj.git", "default_branch": "main"}}
            }
        })
        .to_string()
    };
    let send = |body: String| {
        let app = &app;
        async move {
            let signature = sign("gitea-secret", body.as_bytes());
            post_hook(
                app,
                "/api/push-gitea",
                body.as_bytes(),
                &[
                    ("x-gitea-signature", &signature),
                    ("x-gitea-event", "pull_request"),
                ],
            )
            .await
        }
    };
    let r = send(pr("bbb", "2026-12-04T10:05:00+00:00", "open")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["pullRequests"],
        json!([{"project": "demo", "number": 5, "result": "recorded"}])
    );
    // An older delivery arriving late changes nothing.
    let r = send(pr("aaa", "2026-12-04T10:00:00+00:00", "open")).await;
    assert_eq!(
        r.json()["pullRequests"][0]["result"],
        json!("ignored: older than what is known")
    );
    let rows = pull_rows(&app).await;
    assert_eq!(
        rows,
        vec![(
            "demo".into(),
            5,
            "bbb".into(),
            "open".into(),
            true,
            1_796_378_700
        )]
    );
    // A malformed pull request is refused with what is missing.
    let body = json!({"repository": {"full_name": "team/proj", "clone_url": "x"}, "pull_request": {"number": 5}}).to_string();
    let r = send(body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("pull request 5 has no"), "{}", r.error());

    // GitLab: the secret token itself, and merge request hooks.
    app.exec(
        "insert into Projects (name, displayName, owner) select 'lab', 'lab', owner from Projects where name = 'demo';
         insert into ProjectPullRequests (project, forge, repository, apiUrl, template) values
            ('lab', 'gitlab', 'group/app', 'https://gitlab.example.org', 'main')",
    )
    .await;
    let body = json!({
        "object_kind": "merge_request",
        "user": {"username": "alice"},
        "project": {"path_with_namespace": "group/app", "git_http_url": "https://gitlab.example.org/group/app.git", "default_branch": "main"},
        "object_attributes": {"iid": 9, "title": "MR", "state": "opened", "last_commit": {"id": "ccc"},
            "source_project_id": 1, "target_project_id": 1, "updated_at": "2026-12-04 10:00:00 UTC"}
    })
    .to_string();
    let hook = |token: &'static str| {
        let (app, body) = (&app, body.clone());
        async move {
            post_hook(
                app,
                "/api/push-gitlab",
                body.as_bytes(),
                &[
                    ("x-gitlab-token", token),
                    ("x-gitlab-event", "Merge Request Hook"),
                ],
            )
            .await
        }
    };
    let r = hook("wrong").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "Invalid webhook token");
    let r = post_hook(&app, "/api/push-gitlab", body.as_bytes(), &[]).await;
    assert_eq!(r.error(), "Missing webhook token");
    let r = hook("gitlab-token").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["pullRequests"][0]["result"], json!("recorded"));
    let rows = pull_rows(&app).await;
    assert_eq!(
        rows[1],
        (
            "lab".into(),
            9,
            "ccc".into(),
            "open".into(),
            false,
            1_796_378_400
        )
    );
}

#[tokio::test]
async fn a_check_runs_rerun_restarts_its_build() {
    let app = App::with_config(HOOKS).await;
    fixture(&app).await;
    let build = app
        .scalar("select min(id)::bigint from Builds where finished = 1")
        .await;
    app.exec(&format!(
        "insert into CommitStatuses (forge, url, context, credential, job, build, state, body, \
           nextAttempt, createdAt, updatedAt, remoteId) \
         values ('github-checks', 'u', 'c', 'o/r', 'demo:trunk:hello', {build}, 'failure', '{{}}', 0, 0, 0, 777)"
    ))
    .await;
    let row = app
        .scalar("select max(id)::bigint from CommitStatuses")
        .await;
    let hook = |payload: serde_json::Value| {
        let app = &app;
        async move {
            let body = payload.to_string();
            let sig = format!("sha256={}", sign("new-secret", body.as_bytes()));
            post_hook(
                app,
                "/api/push-github",
                body.as_bytes(),
                &[
                    ("x-hub-signature-256", &sig),
                    ("x-github-event", "check_run"),
                ],
            )
            .await
        }
    };
    let repo = json!({"name": "r", "owner": {"login": "o"}});
    // Another requested action, or an unknown check run: nothing.
    let r = hook(
        json!({"action": "requested_action", "requested_action": {"identifier": "other"},
        "check_run": {"id": 777, "external_id": row.to_string()}, "repository": repo}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json().get("rebuilt").is_none(), "{}", r.text());
    let r = hook(
        json!({"action": "rerequested", "check_run": {"id": 5, "external_id": "999999"},
        "repository": repo}),
    )
    .await;
    assert!(r.json().get("rebuilt").is_none(), "{}", r.text());
    assert_eq!(
        app.scalar(&format!(
            "select finished::bigint from Builds where id = {build}"
        ))
        .await,
        1
    );
    // The Re-run button: the build is queued again.
    let r = hook(
        json!({"action": "requested_action", "requested_action": {"identifier": "rerun"},
        "check_run": {"id": 777, "external_id": row.to_string()}, "repository": repo}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["rebuilt"], json!(build));
    assert_eq!(
        app.scalar(&format!(
            "select finished::bigint from Builds where id = {build}"
        ))
        .await,
        0
    );
}

#[tokio::test]
async fn job_routes_give_badges_series_and_prometheus_figures() {
    let app = App::new().await;
    fixture(&app).await;
    let r = app.get("/job/demo/trunk/hello").await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<i64> = r.json()["latestbuilds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1]);
    assert_eq!(r.json()["starred"], false);
    // A job without builds yet (or with a name no build has) has a page, as
    // in Hydra; an unknown jobset has none.
    let r = app.get("/job/demo/trunk/nope").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["latestbuilds"], json!([]));
    assert_eq!(r.json()["queuedbuilds"], json!([]));
    assert_eq!(
        app.get("/job/demo/nope/hello").await.status,
        StatusCode::NOT_FOUND
    );

    let r = app.get("/job/demo/trunk/hello/shield").await;
    assert_eq!(
        r.json(),
        json!({"schemaVersion": 1, "label": "hydra build", "color": "green", "message": "passing"})
    );
    let r = app.get("/job/demo/trunk/broken/shield").await;
    assert_eq!(r.json()["color"], "red");
    assert_eq!(r.json()["message"], "failing");
    let r = app.get("/job/demo/trunk/slow/shield").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no finished build: no badge"
    );

    app.exec("update Builds set buildStatus = 4 where job = 'broken'")
        .await;
    let r = app.get("/job/demo/trunk/broken/shield").await;
    assert_eq!(
        (r.json()["color"].clone(), r.json()["message"].clone()),
        (json!("yellow"), json!("cancelled"))
    );
    app.exec("update Builds set buildStatus = 1 where job = 'broken'")
        .await;

    let r = app.get("/job/demo/trunk/hello/prometheus").await;
    let text = r.text();
    let labels = "{project=\"demo\",jobset=\"trunk\",job=\"hello\"}";
    for line in [
        format!("hydra_job_completion_time{labels} 1700000020"),
        format!("hydra_job_failed{labels} 0"),
        format!("hydra_build_closure_size{labels} 5678"),
        format!("hydra_build_output_size{labels} 1234"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    let r = app.get("/job/demo/trunk/broken/prometheus").await;
    assert!(
        r.text()
            .contains("hydra_job_failed{project=\"demo\",jobset=\"trunk\",job=\"broken\"} 1")
    );

    let series = |path: &'static str| {
        let app = &app;
        async move { app.get(path).await.json() }
    };
    assert_eq!(
        series("/job/demo/trunk/hello/build-times").await,
        json!([{"id": 1, "timestamp": 1700000000, "value": 10}])
    );
    assert_eq!(
        series("/job/demo/trunk/hello/closure-sizes").await,
        json!([{"id": 1, "timestamp": 1700000000, "value": 5678}])
    );
    assert_eq!(
        series("/job/demo/trunk/hello/output-sizes").await,
        json!([{"id": 1, "timestamp": 1700000000, "value": 1234}])
    );
    assert_eq!(
        series("/job/demo/trunk/hello/metric/runtime").await,
        json!([{"id": 1, "timestamp": 1700000000, "value": 1.5, "unit": "s"}])
    );
    assert_eq!(
        series("/job/demo/trunk/broken/build-times").await,
        json!([])
    );
}

#[tokio::test]
async fn starring_a_job_needs_a_login() {
    let app = App::new().await;
    fixture(&app).await;
    let r = app
        .send(
            &As::Anonymous,
            Method::POST,
            "/job/demo/trunk/hello/star",
            Some(json!({"star": "1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let nobody = app.session("nobody").await;
    let r = app
        .send(
            &nobody,
            Method::POST,
            "/job/demo/trunk/hello/star",
            Some(json!({"star": "1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = app
        .send(&nobody, Method::GET, "/job/demo/trunk/hello", None)
        .await;
    assert_eq!(r.json()["starred"], true);
    assert_eq!(
        app.scalar("select count(*) from StarredJobs where userName = 'nobody'")
            .await,
        1
    );
    // Cross-site star requests are refused like every write.
    let r = app
        .send_with(
            &nobody,
            Method::POST,
            "/job/demo/trunk/hello/star",
            Some(json!({"star": "0"})),
            &[("referer", "https://evil.example/")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .send(
            &nobody,
            Method::POST,
            "/job/demo/trunk/hello/star",
            Some(json!({"star": "0"})),
        )
        .await;
    assert_eq!(r.json()["starred"], false);
    assert_eq!(app.scalar("select count(*) from StarredJobs").await, 0);
}

#[tokio::test]
async fn admin_actions_are_for_admins_and_do_what_they_say() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec(
        "insert into FailedPaths (path) values ('/nix/store/x');
         insert into CachedGitInputs (uri, branch, revision, isDeepClone, sha256hash, storePath)
            values ('https://example.org/r', 'main', 'abc', false, 'h', '/nix/store/y');",
    )
    .await;
    let jobset: i32 = sqlx::query_scalar("select id from Jobsets")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    hydra_test_support::builds::TestBuild::new(jobset, "old")
        .id(5)
        .timestamp(1700000000)
        .drv("/nix/store/jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj-old.drv")
        .current(false)
        .insert(&app.db.pool)
        .await;
    let admin = app.session("admin").await;
    let owner = app.session("owner").await;
    for path in [
        "/admin/clear-failed-cache",
        "/admin/clear-vcs-cache",
        "/admin/clear-queue-non-current",
    ] {
        for who in [&As::Anonymous, &owner] {
            let r = app.send(who, Method::POST, path, None).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        }
    }
    assert_eq!(app.scalar("select count(*) from FailedPaths").await, 1);

    let r = app
        .send(&admin, Method::POST, "/admin/clear-failed-cache", None)
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(app.scalar("select count(*) from FailedPaths").await, 0);
    app.send(&admin, Method::POST, "/admin/clear-vcs-cache", None)
        .await;
    assert_eq!(app.scalar("select count(*) from CachedGitInputs").await, 0);
    let r = app
        .send(&admin, Method::POST, "/admin/clear-queue-non-current", None)
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        app.scalar("select finished::bigint * 10 + buildStatus from Builds where id = 5")
            .await,
        14,
        "the build outside the latest evaluation is cancelled"
    );
    assert_eq!(
        app.scalar("select finished::bigint from Builds where id = 3")
            .await,
        0,
        "the build of the latest evaluation stays queued"
    );
}

#[tokio::test]
async fn news_items_are_written_listed_and_deleted_by_admins() {
    let app = App::new().await;
    fixture(&app).await;
    let admin = app.session("admin").await;
    let r = app
        .send(
            &app.session("owner").await,
            Method::POST,
            "/admin/news/submit",
            Some(json!({"contents": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .send(
            &admin,
            Method::POST,
            "/admin/news/submit",
            Some(json!({"contents": "<b>Maintenance</b> tonight"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let r = app
        .send(
            &admin,
            Method::POST,
            "/admin/news/submit",
            Some(json!({"contents": "  "})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let list = app
        .send(&admin, Method::GET, "/admin/news", None)
        .await
        .json();
    assert_eq!(list[0]["contents"], "<b>Maintenance</b> tonight");
    assert_eq!(list[0]["author"], "admin");
    let id = list[0]["id"].as_i64().unwrap();
    let r = app
        .send(
            &admin,
            Method::POST,
            &format!("/admin/news/delete/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(app.scalar("select count(*) from NewsItems").await, 0);
    let r = app
        .send(
            &admin,
            Method::POST,
            &format!("/admin/news/delete/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_queue_runner_status_is_unknown_or_unreachable_without_a_queue_runner() {
    let app = App::new().await;
    let r = app.get("/queue-runner-status").await;
    assert_eq!(r.json(), json!({"status": "unknown"}));
    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = App::with_config(&format!(
        "queue_runner_endpoint = http://127.0.0.1:{port}\n"
    ))
    .await;
    fixture(&app).await;
    let r = app.get("/queue-runner-status").await;
    assert_eq!(r.json(), json!({"status": "unreachable"}));
    let r = app.get("/machines").await;
    assert_eq!(r.json()["machines"], Value::Null);
    let steps = r.json()["steps"].clone();
    assert_eq!(steps[0]["build"], 3);
    assert_eq!(steps[0]["machine"], "ssh://builder");
    let r = app.get("/prometheus").await;
    assert!(
        r.text()
            .contains("hydra_machine_build_duration_count{machine=\"ssh://builder\"} 1"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let app = App::new().await;
    fixture(&app).await;
    app.get("/build/1").await;
    app.get("/build/2").await;
    app.get("/build/999").await;
    app.get("/no/such/page").await;
    let text = app.get("/metrics").await.text();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has("hydra_http_requests_total{method=\"GET\",route=\"/build/{id}\",code=\"200\"} 2"),
        "{text}"
    );
    assert!(has(
        "hydra_http_requests_total{method=\"GET\",route=\"/build/{id}\",code=\"404\"} 1"
    ));
    assert!(has(
        "hydra_http_requests_total{method=\"GET\",route=\"unmatched\",code=\"404\"} 1"
    ));
    assert!(has(
        "hydra_http_request_duration_seconds_count{method=\"GET\",route=\"/build/{id}\"} 3"
    ));
    assert!(
        !text.contains("/build/999"),
        "concrete paths are not labels"
    );
}

#[tokio::test]
async fn proxy_headers_are_honoured_only_behind_a_frontend_proxy() {
    let direct = App::new().await;
    fixture(&direct).await;
    let base = [("x-request-base", "https://ci.example.org/hydra")];
    let r = direct
        .send_with(&As::Anonymous, Method::GET, "/build/1/log/raw", None, &base)
        .await;
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("http://hydra.test/log/"),
        "ignored without using_frontend_proxy"
    );
    let proxied = App::with_config("using_frontend_proxy = 1\nbase_uri =\n").await;
    fixture(&proxied).await;
    let r = proxied
        .send_with(&As::Anonymous, Method::GET, "/build/1/log/raw", None, &base)
        .await;
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://ci.example.org/hydra/log/"),
        "{:?}",
        r.header("location")
    );
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "ci.example.net, inner"),
    ];
    let r = proxied
        .send_with(
            &As::Anonymous,
            Method::GET,
            "/build/1/log/raw",
            None,
            &forwarded,
        )
        .await;
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://ci.example.net/log/"),
        "{:?}",
        r.header("location")
    );
    // The CSRF rule follows the same base.
    let owner = proxied.session("owner").await;
    let r = proxied
        .send_with(
            &owner,
            Method::POST,
            "/build/1/keep/1",
            None,
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "ci.example.net"),
                ("referer", "https://ci.example.net/build/1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let r = proxied
        .send_with(
            &owner,
            Method::POST,
            "/build/1/keep/0",
            None,
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "ci.example.net"),
                ("referer", "http://hydra.test/build/1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn scmdiff_shows_the_log_and_diff_between_two_revisions_of_a_cached_clone() {
    let app = App::new().await;
    let repo = hydra_test_support::GitRepo::new();
    let first = repo.commit(&[("file.txt", "one\n")], "first commit");
    let second = repo.commit(&[("file.txt", "two\n")], "second: say two");
    let url = repo.url();
    let clone = hydra_config::DataDir::from(app.data.path()).scm_clone("git", &url);
    std::fs::create_dir_all(clone.parent().unwrap()).unwrap();
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--bare", &url])
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success());
    let q = |rev1: &str, rev2: &str| {
        format!(
            "/api/scmdiff?type=git&uri={}&rev1={rev1}&rev2={rev2}",
            url.replace('/', "%2F").replace(':', "%3A")
        )
    };
    let r = app.get(&q(&first, &second)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let text = r.text();
    assert!(text.contains("second: say two"), "{text}");
    assert!(!text.contains("first commit"), "{text}");
    assert!(text.contains("-one") && text.contains("+two"), "{text}");

    for bad in ["HEAD;id", "a%20b", "--output=x", ""] {
        let r = app.get(&q(bad, &second)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = app
        .get("/api/scmdiff?type=git&uri=https%3A%2F%2Fnowhere.example%2Fr&rev1=a&rev2=b")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .get(&q(&first, &second).replace("type=git", "type=svn"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
