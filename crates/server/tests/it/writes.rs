//! Writes and their database effects: projects and jobsets with Hydra's
//! validations, renames, declarative projects, build and evaluation
//! actions (with the NOTIFYs the other roles wait for), pushes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{App, As, BASE, fixture};
use serde_json::json;

#[tokio::test]
async fn projects_are_created_updated_and_validated() {
    let app = App::new().await;
    fixture(&app).await;
    let creator = app.session("creator").await;
    let reply = app
        .send(
            &creator,
            Method::PUT,
            "/project/tools",
            Some(json!({ "displayname": "Tools", "description": "d", "enabled": "1", "visible": "1" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{BASE}project/tools")
    );
    assert_eq!(
        reply.json(),
        json!({ "name": "tools", "uri": format!("{BASE}project/tools"), "redirect": format!("{BASE}project/tools"), "type": "project" })
    );
    let p = app.get("/project/tools").await.json();
    assert_eq!(
        (p["owner"].as_str(), p["enabled"].as_bool()),
        (Some("creator"), Some(true))
    );

    for (uri, body, status, text) in [
        (
            "/project/9bad",
            json!({ "displayname": "x" }),
            StatusCode::BAD_REQUEST,
            "Invalid project identifier",
        ),
        (
            "/project/ok",
            json!({ "displayname": " " }),
            StatusCode::BAD_REQUEST,
            "display name",
        ),
        (
            "/project/tools",
            json!({ "displayname": "T", "owner": "admin" }),
            StatusCode::FORBIDDEN,
            "owner",
        ),
        (
            "/project/tools",
            json!({ "displayname": "T", "name": "demo" }),
            StatusCode::CONFLICT,
            "already exists",
        ),
    ] {
        let reply = app.send(&creator, Method::PUT, uri, Some(body)).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text());
        assert!(reply.error().contains(text), "{}", reply.error());
    }
    // Renaming keeps the jobsets (on update cascade).
    let owner = app.session("owner").await;
    let reply = app
        .send(
            &owner,
            Method::PUT,
            "/project/demo",
            Some(json!({ "displayname": "Demo", "name": "demo2", "enabled": true })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        app.get("/project/demo2").await.json()["jobsets"],
        json!(["trunk"])
    );
}

#[tokio::test]
async fn jobsets_are_validated_saved_with_inputs_and_renamed() {
    let app = App::new().await;
    fixture(&app).await;
    let owner = app.session("owner").await;
    let good = json!({
        "description": "release branch", "type": 0, "nixexprinput": "src", "nixexprpath": "ci/release.nix",
        "enabled": 1, "visible": true, "checkinterval": 300, "schedulingshares": 10, "keepnr": 2,
        "inputs": {
            "src": { "type": "git", "value": "https://example.org/demo.git release", "emailresponsible": true },
            "doCheck": { "type": "boolean", "value": "true" },
            "upstream": { "type": "eval", "value": "demo:trunk" }
        }
    });
    let reply = app
        .send(
            &owner,
            Method::PUT,
            "/jobset/demo/release",
            Some(good.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    let j = app.get("/jobset/demo/release").await.json();
    assert_eq!(j["inputs"]["doCheck"]["value"], "true");
    assert_eq!(j["schedulingshares"], 10);
    assert!(
        j["triggertime"].is_i64(),
        "enabled with a check interval: triggered now"
    );

    let bad = |patch: serde_json::Value| {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (body, text) in [
        (
            bad(json!({ "schedulingshares": 0 })),
            "scheduling shares must be positive",
        ),
        (
            bad(json!({ "nixexprpath": "../etc/passwd" })),
            "must be relative",
        ),
        (
            bad(json!({ "nixexprpath": "/abs.nix" })),
            "must be relative",
        ),
        (
            bad(json!({ "inputs": { "x": { "type": "cvs", "value": "" } } })),
            "Invalid input type",
        ),
        (
            bad(json!({ "inputs": { "x": { "type": "boolean", "value": "yes" } } })),
            "not a Boolean",
        ),
        (
            bad(json!({ "inputs": { "x": { "type": "eval", "value": "demo" } } })),
            "not an evaluation ID",
        ),
        (
            bad(json!({ "inputs": { "1x": { "type": "string", "value": "" } } })),
            "Invalid input name",
        ),
        (bad(json!({ "type": 1, "flake": "" })), "needs a flake"),
        (bad(json!({ "enabled": 7 })), "enabled"),
    ] {
        let reply = app
            .send(&owner, Method::PUT, "/jobset/demo/release", Some(body))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{text}: {}",
            reply.text()
        );
        assert!(reply.error().contains(text), "{text}: {}", reply.error());
    }
    // A flake jobset clears the legacy fields (the table's checks hold).
    let reply = app
        .send(
            &owner,
            Method::PUT,
            "/jobset/demo/release",
            Some(json!({ "type": 1, "flake": "git+file:///src" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let j = app.get("/jobset/demo/release").await.json();
    assert_eq!(
        (j["type"].as_i64(), j["nixexprinput"].as_str()),
        (Some(1), Some(""))
    );

    // Renames: the old URL answers 301 to the new one.
    let reply = app
        .send(
            &owner,
            Method::PUT,
            "/jobset/demo/release",
            Some(json!({ "name": "stable", "type": 1, "flake": "git+file:///src" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let old = app.get("/jobset/demo/release").await;
    assert_eq!(old.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        old.header("location").unwrap(),
        format!("{BASE}jobset/demo/stable")
    );
}

#[tokio::test]
async fn declarative_projects_get_a_jobsets_jobset_and_refuse_jobset_edits() {
    let app = App::new().await;
    fixture(&app).await;
    let owner = app.session("owner").await;
    let reply = app
        .send(
            &owner,
            Method::PUT,
            "/project/demo",
            Some(json!({ "displayname": "Demo", "enabled": 1, "visible": 1,
                         "declarative": { "file": "spec.json", "type": "git", "value": "https://example.org/spec.git" } })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let p = app.get("/project/demo").await.json();
    assert_eq!(p["declarative"]["file"], "spec.json");
    assert_eq!(
        app.scalar("select count(*) from Jobsets where project = 'demo' and name = '.jobsets' and triggerTime is not null").await,
        1
    );
    let reply = app
        .send(
            &owner,
            Method::PUT,
            "/jobset/demo/trunk",
            Some(json!({ "nixexprinput": "src", "nixexprpath": "x.nix" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Clearing the file removes `.jobsets`.
    app.send(
        &owner,
        Method::PUT,
        "/project/demo",
        Some(json!({ "displayname": "Demo", "declarative": { "file": "" } })),
    )
    .await;
    assert_eq!(
        app.scalar("select count(*) from Jobsets where name = '.jobsets'")
            .await,
        0
    );
}

async fn listen(app: &App, channels: &[&str]) -> sqlx::postgres::PgListener {
    let mut l = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .unwrap();
    l.listen_all(channels.iter().copied()).await.unwrap();
    l
}

async fn next_channel(l: &mut sqlx::postgres::PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(10), l.recv())
        .await
        .expect("a notification")
        .unwrap()
        .channel()
        .to_string()
}

#[tokio::test]
async fn build_actions_change_the_database_and_notify_the_queue_runner() {
    let app = App::new().await;
    fixture(&app).await;
    let owner = app.session("owner").await;
    let mut l = listen(
        &app,
        &["builds_cancelled", "builds_restarted", "builds_bumped"],
    )
    .await;

    let r = app.send(&owner, Method::GET, "/build/3/bump", None).await;
    assert_eq!(r.header("location").unwrap(), format!("{BASE}build/3"));
    assert_eq!(next_channel(&mut l).await, "builds_bumped");
    assert!(
        app.scalar("select globalPriority::bigint from Builds where id = 3")
            .await
            > 1_700_000_000
    );

    app.send(&owner, Method::GET, "/build/3/cancel", None).await;
    assert_eq!(next_channel(&mut l).await, "builds_cancelled");
    assert_eq!(
        app.scalar("select buildStatus::bigint from Builds where id = 3")
            .await,
        4
    );
    let again = app.send(&owner, Method::GET, "/build/3/cancel", None).await;
    assert_eq!(
        again.status,
        StatusCode::BAD_REQUEST,
        "a finished build cannot be cancelled"
    );

    app.exec("insert into FailedPaths (path) values ('/nix/store/gggggggggggggggggggggggggggggggg-broken-1.0')")
        .await;
    app.send(&owner, Method::GET, "/build/2/restart", None)
        .await;
    assert_eq!(next_channel(&mut l).await, "builds_restarted");
    assert_eq!(
        app.scalar("select finished::bigint from Builds where id = 2")
            .await,
        0
    );
    assert_eq!(app.scalar("select count(*) from FailedPaths").await, 0);
    let unfinished = app
        .send(&owner, Method::GET, "/build/2/restart", None)
        .await;
    assert_eq!(unfinished.status, StatusCode::BAD_REQUEST);

    app.send(&owner, Method::POST, "/build/1/keep/1", None)
        .await;
    assert_eq!(
        app.scalar("select keep::bigint from Builds where id = 1")
            .await,
        1
    );

    // Evaluation actions: restart the aborted/cancelled ones only.
    app.send(&owner, Method::GET, "/eval/1/restart-aborted", None)
        .await;
    assert_eq!(
        app.scalar("select count(*) from Builds where finished = 0")
            .await,
        2,
        "build 3 (cancelled) restarted; 1 and 4 untouched"
    );
    app.send(&owner, Method::GET, "/eval/1/cancel", None).await;
    assert_eq!(
        app.scalar("select count(*) from Builds where finished = 0")
            .await,
        0
    );
    app.send(&owner, Method::GET, "/eval/1/restart-failed", None)
        .await;
    assert_eq!(
        app.scalar("select count(*) from Builds where finished = 0")
            .await,
        3,
        "all but the successful build 1"
    );
}

#[tokio::test]
async fn push_triggers_named_jobsets_and_those_on_a_repository() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec(
        "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, enabled) \
         values ('demo', 'off', 'src', 'release.nix', '', 0)",
    )
    .await;
    let evaluator = app.session("evaluator").await;
    let r = app
        .send(
            &evaluator,
            Method::POST,
            "/api/push?jobsets=demo:trunk,demo:off",
            None,
        )
        .await;
    assert_eq!(r.json(), json!({ "jobsetsTriggered": ["demo:trunk"] }));
    let r = app
        .send(
            &evaluator,
            Method::POST,
            "/api/push?jobsets=demo:off&force=1",
            None,
        )
        .await;
    assert_eq!(r.json(), json!({ "jobsetsTriggered": ["demo:off"] }));
    assert_eq!(
        app.scalar("select count(*) from Jobsets where forceEval and name = 'off'")
            .await,
        1
    );
    app.exec("update Jobsets set triggerTime = null").await;
    let r = app
        .send(
            &evaluator,
            Method::POST,
            "/api/push?repos=https://example.org/demo.git%20main",
            None,
        )
        .await;
    assert_eq!(r.json(), json!({ "jobsetsTriggered": ["demo:trunk"] }));
    assert_eq!(
        app.scalar("select count(*) from Jobsets where triggerTime is not null")
            .await,
        1
    );
}

#[tokio::test]
async fn a_builds_notifications_are_listed_and_the_admin_retries_a_given_up_one() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec(
        "insert into CommitStatuses (forge, url, context, credential, job, build, state, body, \
           version, sentVersion, sentAt, nextAttempt, createdAt, updatedAt) values \
           ('github', 'https://api.github.com/repos/o/r/statuses/abc', 'ci/hydra:demo:trunk:hello', 'o', \
            'demo:trunk:hello', 1, 'success', '{}', 2, 2, 1700000100, 0, 1, 1); \
         insert into CommitStatuses (forge, url, context, credential, job, build, state, body, \
           attempts, nextAttempt, lastError, dropped, createdAt, updatedAt) values \
           ('gitea', 'https://git.example/api/v1/repos/o/r/statuses/abc', 'Hydra hello', 'o', \
            'demo:trunk:hello', 1, 'success', '{}', 1, 0, 'HTTP 401 Unauthorized: bad token', true, 1, 1); \
         insert into TaskRetries (channel, pluginname, payload, attempts, retry_at) values \
           ('build_finished', 'Hydra::Plugin::SlackNotification', E'1\\t2', 3, 1700000500); \
         insert into DroppedTasks (channel, pluginname, payload, attempts, droppedAt, lastError, build) values \
           ('build_finished', 'Hydra::Plugin::EmailNotification', '1', 101, 1700000600, 'no SMTP server', 1);",
    )
    .await;

    // The JSON: statuses with where their delivery stands, then tasks.
    let listed = app.get("/build/1/notifications").await.json();
    let statuses = listed["commitStatuses"].as_array().unwrap();
    let deliveries: Vec<(&str, &str)> = statuses
        .iter()
        .map(|s| {
            (
                s["forge"].as_str().unwrap(),
                s["delivery"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(deliveries, [("github", "sent"), ("gitea", "dropped")]);
    assert_eq!(statuses[0]["sentAt"], 1700000100);
    assert_eq!(statuses[1]["lastError"], "HTTP 401 Unauthorized: bad token");
    let tasks = listed["tasks"].as_array().unwrap();
    let tasks: Vec<(&str, &str, Option<i64>)> = tasks
        .iter()
        .map(|t| {
            (
                t["plugin"].as_str().unwrap(),
                t["delivery"].as_str().unwrap(),
                t["nextAttempt"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            ("SlackNotification", "retrying", Some(1700000500)),
            ("EmailNotification", "dropped", None)
        ]
    );
    assert!(
        app.get("/build/2/notifications").await.json()["tasks"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a dependent's task is its head build's"
    );

    // The page: a tab, and Retry buttons for the admin only.
    let admin = app.session("admin").await;
    let owner = app.session("owner").await;
    let page_for = |who: As| {
        let app = &app;
        async move {
            let req = axum::http::Request::builder()
                .uri("/build/1")
                .header(axum::http::header::HOST, common::HOST)
                .header(axum::http::header::ACCEPT, "text/html");
            let req = match &who {
                As::Session(s) => {
                    req.header(axum::http::header::COOKIE, format!("hydra_session={s}"))
                }
                _ => req,
            };
            app.raw(req.body(axum::body::Body::empty()).unwrap())
                .await
                .text()
        }
    };
    let html = page_for(admin.clone()).await;
    assert!(
        html.contains(r##"<a href="#tabs-notifications">Notifications</a>"##),
        "{html}"
    );
    assert!(html.contains("HTTP 401 Unauthorized: bad token"));
    assert_eq!(
        html.matches("/retry\"").count(),
        2,
        "a Retry form for each given-up notification"
    );
    let seen_by_owner = page_for(owner.clone()).await;
    assert!(seen_by_owner.contains("no SMTP server"));
    assert!(!seen_by_owner.contains("/retry\""), "no Retry for others");

    // Only the admin retries, and only given-up notifications of this build.
    let status_id = app
        .scalar("select id::bigint from CommitStatuses where forge = 'gitea'")
        .await;
    let refused = app
        .send(
            &owner,
            Method::POST,
            &format!("/build/1/notifications/status/{status_id}/retry"),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let other = app
        .send(
            &admin,
            Method::POST,
            &format!("/build/2/notifications/status/{status_id}/retry"),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text());
    let mut l = listen(&app, &["notifications_due"]).await;
    let retried = app
        .send(
            &admin,
            Method::POST,
            &format!("/build/1/notifications/status/{status_id}/retry"),
            None,
        )
        .await;
    assert!(retried.status.is_redirection(), "{}", retried.text());
    assert_eq!(next_channel(&mut l).await, "notifications_due");
    assert_eq!(
        app.scalar("select count(*) from CommitStatuses where dropped")
            .await,
        0
    );
    let task_id = app.scalar("select id::bigint from DroppedTasks").await;
    app.send(
        &admin,
        Method::POST,
        &format!("/build/1/notifications/task/{task_id}/retry"),
        None,
    )
    .await;
    assert_eq!(next_channel(&mut l).await, "notifications_due");
    assert_eq!(
        app.scalar("select count(*) from TaskRetries where pluginname = 'Hydra::Plugin::EmailNotification' and attempts = 1")
            .await,
        1
    );
    assert_eq!(app.scalar("select count(*) from DroppedTasks").await, 0);
}
