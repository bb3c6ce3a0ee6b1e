//! Reading: every object's JSON shape (snapshots with Hydra's field names
//! and types), errors, pagination, redirects, negotiation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{App, As, BASE, fixture};
use serde_json::Value;

#[tokio::test]
async fn objects_have_hydras_json_shapes() {
    let app = App::new().await;
    fixture(&app).await;
    for (uri, name) in [
        ("/", "projects"),
        ("/project/demo", "project"),
        ("/jobset/demo/trunk", "jobset"),
        ("/jobset/demo/trunk/evals", "jobset_evals"),
        ("/eval/1", "eval"),
        ("/build/1", "build"),
        ("/build/4/constituents", "constituents"),
        ("/build/1/api/get-info", "get_info"),
        ("/build/1/step/1", "step"),
        ("/queue", "queue"),
        ("/status", "status"),
        ("/api/latestbuilds?nr=2", "latestbuilds"),
        ("/api/queue?nr=5", "api_queue"),
        ("/api/jobsets?project=demo", "api_jobsets"),
        ("/eval/1/store-paths", "store_paths"),
    ] {
        let reply = app.get(uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        assert_eq!(reply.header("vary").as_deref(), Some("Accept"), "{uri}");
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("application/json"),
            "{uri}"
        );
        insta::assert_json_snapshot!(name, reply.json());
    }
}

#[tokio::test]
async fn build_json_types_match_hydra() {
    let app = App::new().await;
    fixture(&app).await;
    let b = app.get("/build/1").await.json();
    assert!(b["id"].is_i64() && b["finished"].is_i64() && b["buildstatus"].is_i64());
    assert_eq!(b["jobsetevals"], serde_json::json!([1]));
    assert_eq!(
        b["buildoutputs"]["out"]["path"],
        "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0"
    );
    assert_eq!(b["buildproducts"]["2"]["subtype"], "source-dist");
    assert_eq!(
        b["buildmetrics"]["runtime"],
        serde_json::json!({"unit": "s", "value": 1.5}),
        "Hydra's keys only"
    );
    let queued = app.get("/build/3").await.json();
    assert!(queued["buildstatus"].is_null() && queued["finished"] == 0);
    let p = app.get("/project/demo").await.json();
    assert!(p["enabled"].is_boolean() && p["hidden"].is_boolean());
    let j = app.get("/jobset/demo/trunk").await.json();
    assert!(j["type"].is_i64() && j["enabled"].is_i64() && j["visible"].is_boolean());
    assert_eq!(
        j["inputs"]["src"]["value"],
        "https://example.org/demo.git main"
    );
    assert_eq!(j["inputs"]["src"]["emailresponsible"], true);
}

#[tokio::test]
async fn missing_things_are_404_with_an_error_object() {
    let app = App::new().await;
    fixture(&app).await;
    for (uri, text) in [
        ("/project/nope", "Project ‘nope’ doesn't exist."),
        ("/jobset/demo/nope", "Jobset ‘demo:nope’ doesn't exist."),
        ("/eval/99", "Evaluation 99 doesn't exist."),
        ("/build/99", "Build with ID 99 doesn't exist."),
        ("/build/1/step/9", "Build 1 has no step 9."),
        ("/no/such/page", "Page not found."),
    ] {
        let reply = app.get(uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.error(), text, "{uri}");
    }
    let reply = app.get("/build/abc").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("Invalid build ID"));
}

#[tokio::test]
async fn evals_are_paginated_twenty_per_page() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec(
        "insert into JobsetEvals (jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash) \
         select 1, 1700000000 + n, 0, 0, 1, 'h' || n from generate_series(1, 24) n; \
         insert into JobsetEvals (jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash) \
         values (1, 1, 0, 0, 0, 'no new builds')",
    )
    .await;
    let first = app.get("/jobset/demo/trunk/evals").await.json();
    assert_eq!(first["evals"].as_array().unwrap().len(), 20);
    assert_eq!(first["first"], "?page=1");
    assert_eq!(first["last"], "?last=1");
    assert_eq!(
        first["next"], "?after=6",
        "the next page starts after the last one shown"
    );
    assert!(first.get("previous").is_none());
    assert_eq!(first["evals"][0]["id"], 25, "newest first");
    let second = app.get("/jobset/demo/trunk/evals?after=6").await.json();
    let ids: Vec<&Value> = second["evals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [5, 4, 3, 2, 1]);
    assert_eq!(second["previous"], "?before=5");
    assert!(second.get("next").is_none());
    let back = app.get("/jobset/demo/trunk/evals?before=5").await.json();
    assert_eq!(back["evals"][0]["id"], 25);
    assert_eq!(back["evals"][19]["id"], 6);
    assert!(back.get("previous").is_none(), "back at the newest");
    // Hydra's page numbers still work.
    let numbered = app.get("/jobset/demo/trunk/evals?page=2").await.json();
    assert_eq!(numbered["evals"], second["evals"]);
    let last = app.get("/evals?last=1").await.json();
    assert_eq!(last["evals"].as_array().unwrap().len(), 20);
    assert_eq!(
        last["evals"][19]["id"], 1,
        "the oldest page ends with the oldest"
    );
    assert!(last.get("next").is_none());
}

#[tokio::test]
async fn build_and_step_lists_page_by_cursor_through_every_row_once() {
    let app = App::new().await;
    fixture(&app).await;
    // A second jobset; 45 more finished builds over both, several
    // finishing in the same second (the id breaks the tie), each with a
    // step.
    app.exec(
        "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval) \
         values ('demo', 'other', 'src', 'release.nix', '', 60); \
         insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime, buildStatus) \
         select 100 + i, 1, 1700001000, (select id from Jobsets where name = case when i % 3 = 0 then 'other' else 'trunk' end), \
                'job' || (i % 2), '/nix/store/x-' || i || '.drv', 'x86_64-linux', 1700001000, 1700001000 + i / 4, 0 \
         from generate_series(1, 45) i; \
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, system) \
         select 100 + i, 1, 0, '/nix/store/x-' || i || '.drv', 0, 0, 1700001000, 1700001000 + i / 4, 'x86_64-linux' \
         from generate_series(1, 45) i",
    )
    .await;
    let ids = |page: &Value, list: &str, key: &str| -> Vec<i64> {
        page[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[key].as_i64().unwrap())
            .collect()
    };
    for (list, rows, key, scope) in [
        ("/all", "builds", "id", "true"),
        ("/project/demo/all", "builds", "id", "true"),
        ("/jobset/demo/trunk/all", "builds", "id", "j.name = 'trunk'"),
        (
            "/job/demo/trunk/job1/all",
            "builds",
            "id",
            "j.name = 'trunk' and b.job = 'job1'",
        ),
        ("/steps", "steps", "build", "true"),
    ] {
        let table = if list == "/steps" {
            "BuildSteps b join Builds x on x.id = b.build join Jobsets j on j.id = x.jobset_id"
        } else {
            "Builds b join Jobsets j on j.id = b.jobset_id"
        };
        let order = if list == "/steps" {
            "b.stopTime desc, b.build desc, b.stepnr desc"
        } else {
            "b.stopTime desc, b.id desc"
        };
        let finished = if list == "/steps" {
            "b.stopTime is not null and b.busy = 0"
        } else {
            "b.finished = 1"
        };
        let expected: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select {}::bigint from {table} where {finished} and {scope} order by {order}",
            if list == "/steps" { "b.build" } else { "b.id" }
        )))
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        assert!(expected.len() > 20 || list.starts_with("/job/"), "{list}");
        // Forwards by `next`, then back by `previous`.
        let mut seen = Vec::new();
        let mut pages = Vec::new();
        let mut uri = list.to_string();
        loop {
            let page = app.get(&uri).await.json();
            assert!(ids(&page, rows, key).len() <= 20, "{uri}");
            seen.extend(ids(&page, rows, key));
            pages.push(ids(&page, rows, key));
            match page["next"].as_str() {
                Some(next) => uri = format!("{list}{next}"),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{list}: every row once, in order");
        let mut back = Vec::new();
        loop {
            let page = app.get(&uri).await.json();
            back.push(ids(&page, rows, key));
            match page["previous"].as_str() {
                Some(previous) => uri = format!("{list}{previous}"),
                None => break,
            }
        }
        back.reverse();
        assert_eq!(back.concat(), expected, "{list}: back to the first page");
        // Hydra's page numbers still work.
        if pages.len() > 1 {
            let second = app.get(&format!("{list}?page=2")).await.json();
            assert_eq!(ids(&second, rows, key), pages[1], "{list}?page=2");
        }
    }
    let finished: i64 = sqlx::query_scalar("select count(*) from Builds where finished = 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(finished > 45);
    let all = app.get("/all").await.json();
    assert_eq!(all["total"], finished, "the finished builds, counted");
    let project = app.get("/project/demo/all").await.json();
    assert_eq!(project["total"], finished);
    // Past 1,000 builds a scope's total is the database's estimate, and
    // the page says so.
    app.exec(
        "insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime, buildStatus) \
         select 1000 + i, 1, 1700002000, (select id from Jobsets where name = 'other'), 'many', \
                '/nix/store/y-' || i || '.drv', 'x86_64-linux', 1700002000, 1700002000 + i, 0 \
         from generate_series(1, 1100) i; \
         analyze Builds",
    )
    .await;
    let other = app.get("/jobset/demo/other/all").await.json();
    let total = other["total"].as_i64().unwrap();
    assert!(
        (1000..1300).contains(&total),
        "about the 1,115 builds: {total}"
    );
    let html = app.html("/jobset/demo/other/all").await;
    assert!(
        html.contains("Showing builds 1 - 20 out of about 1,"),
        "{html}"
    );
}

#[tokio::test]
async fn latest_redirects_follow_hydras_rules() {
    let app = App::new().await;
    fixture(&app).await;
    let cases = [
        ("/job/demo/trunk/hello/latest", "build/1"),
        ("/jobset/demo/trunk/latest", "build/1"),
        ("/project/demo/latest-for/x86_64-linux", "build/1"),
        ("/latest/download/1", "build/1/download/1"),
        ("/eval/1/job/broken", "build/2"),
    ];
    for (uri, target) in cases {
        let reply = app.get(uri).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{uri}: {}", reply.text());
        assert_eq!(
            reply.header("location").unwrap(),
            format!("{BASE}{target}"),
            "{uri}"
        );
    }
    // Build 3 of evaluation 1 is unfinished: no finished evaluation has a
    // successful build yet.
    assert_eq!(
        app.get("/job/demo/trunk/hello/latest-finished")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    app.exec(
        "update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 2 where id = 3",
    )
    .await;
    let reply = app.get("/job/demo/trunk/hello/latest-finished").await;
    assert_eq!(reply.header("location").unwrap(), format!("{BASE}build/1"));
    let reply = app.get("/jobset/demo/trunk/latest-eval/builds").await;
    assert_eq!(
        reply.header("location").unwrap(),
        format!("{BASE}eval/1/builds")
    );
    assert_eq!(
        app.get("/job/demo/trunk/nothing/latest").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn browsers_get_escaped_html_and_api_clients_json() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec("update Projects set description = '<script>alert(1)</script>' where name = 'demo'")
        .await;
    let reply = app
        .send_with(
            &As::Anonymous,
            Method::GET,
            "/project/demo",
            None,
            &[("accept", "text/html")],
        )
        .await;
    let reply_html = {
        let req = axum::http::Request::builder()
            .uri("/project/demo")
            .header("host", common::HOST)
            .header("accept", "text/html")
            .body(axum::body::Body::empty())
            .unwrap();
        app.raw(req).await
    };
    let r = &reply_html;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(r.header("vary").as_deref(), Some("Accept"));
    let body = r.text();
    assert!(!body.contains("<script>"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert(1)") || body.contains("&#60;script&#62;alert(1)"),
        "the text is there, escaped: {body}"
    );
    // A client asking for JSON (the helper adds Accept: application/json
    // after the extra header) gets JSON with the text as is.
    assert!(reply.header("content-type").unwrap().contains("json"));
    assert_eq!(reply.json()["description"], "<script>alert(1)</script>");
}

#[tokio::test]
async fn search_refuses_metacharacters_and_finds_by_name_and_path() {
    let app = App::new().await;
    fixture(&app).await;
    for bad in ["'%20or%201=1--", "a%25", "x;drop"] {
        let reply = app.get(&format!("/search?query={bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.error(), "Invalid character in query.");
    }
    for empty in ["/search", "/search?query="] {
        let reply = app.get(empty).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{empty}");
        assert_eq!(reply.error(), "Query is empty.", "{empty}");
    }
    let found = app.get("/search?query=demo").await.json();
    assert_eq!(found["projects"][0]["name"], "demo");
    let found = app.get("/search?query=trunk").await.json();
    assert_eq!(found["jobsets"][0]["name"], "trunk");
    assert_eq!(found["jobsets"][0]["type"], 0, "an integer, as in Hydra");
    let found = app.get("/search?query=eeeeeeee").await.json();
    assert_eq!(found["builds"][0]["id"], 1);
    let found = app.get("/search?query=bbbbbbbb").await.json();
    assert_eq!(found["buildsdrv"][0]["id"], 2);
    app.exec("update Projects set hidden = 1").await;
    let hidden = app.get("/search?query=demo").await.json();
    assert_eq!(hidden["projects"], serde_json::json!([]));
}

#[tokio::test]
async fn api_counts() {
    let app = App::new().await;
    fixture(&app).await;
    assert_eq!(app.get("/api/nrqueue").await.json(), 1);
    app.exec("update Builds set timestamp = extract(epoch from now())::integer where id in (1, 2)")
        .await;
    let series = app.get("/api/nrbuilds?nr=3&period=day").await.json();
    assert_eq!(series, serde_json::json!([0, 0, 2]));
    let filtered = app
        .get("/api/nrbuilds?nr=1&period=hour&job=hello")
        .await
        .json();
    assert_eq!(filtered, serde_json::json!([1]));
    assert_eq!(
        app.get("/api/nrbuilds?nr=1&period=week").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/latestbuilds").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn build_lists_hold_the_same_objects_as_the_build_route() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec(
        "insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp) values
            (1, 'count', null, 3, 'demo', 'trunk', 'hello', 1700000000);
         insert into BuildProducts (build, productnr, type, subtype, path, name) values
            (1, 10, 'doc', 'manual', '/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0/doc', 'manual');",
    )
    .await;
    let list = app.get("/eval/1/builds").await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for build in list {
        let id = build["id"].as_i64().unwrap();
        let one = app.get(&format!("/build/{id}")).await;
        assert_eq!(
            serde_json::to_string(build).unwrap(),
            serde_json::to_string(&one.json()).unwrap(),
            "build {id}: same fields and values"
        );
    }
    let constituents = app.get("/build/4/constituents").await.json();
    assert_eq!(constituents[0], list[0]);
}

#[tokio::test]
async fn every_route_answers_the_same_with_a_trailing_slash() {
    let app = App::new().await;
    fixture(&app).await;
    for uri in [
        "/project/demo",
        "/jobset/demo/trunk",
        "/jobset/demo/trunk/evals",
        "/eval/1",
        "/build/2",
        "/build/1/step/1",
        "/job/demo/trunk/hello",
        "/search?query=demo",
        "/api/jobsets?project=demo",
        "/queue",
    ] {
        let plain = app.get(uri).await;
        assert_eq!(plain.status, StatusCode::OK, "{uri}");
        let slashed = match uri.split_once('?') {
            Some((path, query)) => format!("{path}/?{query}"),
            None => format!("{uri}/"),
        };
        let reply = app.get(&slashed).await;
        assert_eq!(reply.status, StatusCode::OK, "{slashed}: {}", reply.text());
        assert_eq!(reply.body, plain.body, "{slashed}");
    }
    // Writes too.
    let admin = app.session("admin").await;
    let reply = app
        .send(
            &admin,
            Method::PUT,
            "/project/slashed/",
            Some(serde_json::json!({ "displayname": "Slashed" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    // What does not exist is still a 404.
    assert_eq!(
        app.get("/project/nope/").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/no/such/page/").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_evaluations_builds_are_streamed_whole_and_in_order() {
    let app = App::new().await;
    fixture(&app).await;
    // Past three chunks of the stream (250, 500, 1000 builds), with outputs.
    app.exec(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select 99, jobset_id, 1700000000, 1, 2, 1, 'big', 1234 from Builds where id = 1;
         insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, buildStatus, isCurrent,
                             startTime, stopTime)
           select 1000 + i, 1, 1700000000 + i, (select jobset_id from Builds where id = 1), 'many' || i, 'pkg-' || i,
                  '/nix/store/' || lpad(i::text, 32, '0') || '-pkg-' || i || '.drv', 'x86_64-linux', 0, 1,
                  1700000000 + i, 1700000001 + i
           from generate_series(1, 1234) i;
         insert into BuildOutputs (build, name, path)
           select 1000 + i, 'out', '/nix/store/' || lpad(i::text, 32, '1') || '-pkg-' || i from generate_series(1, 1234) i;
         insert into JobsetEvalMembers (eval, build, isNew) select 99, 1000 + i, 1 from generate_series(1, 1234) i;",
    )
    .await;
    let reply = app.get("/eval/99/builds").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(
        reply.headers.get("content-length").is_none(),
        "streamed, not sent at once: {:?}",
        reply.headers
    );
    let list = reply.json();
    let list = list.as_array().unwrap();
    let ids: Vec<i64> = list.iter().map(|b| b["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1001..=2234).collect::<Vec<_>>());
    assert_eq!(
        list[700]["buildoutputs"]["out"]["path"],
        format!("/nix/store/{}701-pkg-701", "1".repeat(29))
    );
    assert_eq!(list[700]["job"], "many701");
    // An evaluation without builds is the empty list.
    app.exec(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select 98, jobset_id, 1700000000, 1, 2, 0, 'none', 0 from Builds where id = 1;",
    )
    .await;
    assert_eq!(
        app.get("/eval/98/builds").await.json(),
        serde_json::json!([])
    );
}
