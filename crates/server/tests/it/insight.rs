//! What the system tells beyond Hydra: the blockers ranked under an
//! evaluation, a jobset and the whole instance, and what evaluations cost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use crate::common::{App, fixture};

/// Jobset `demo:lib` with evaluation 101 (input `src` at `aaa`, all
/// green) and 102 (`src` at `bbb`): there `openssl` (build 500) fails
/// and 50 jobs that need it fail with it; `zlib` (600) fails and 2 jobs
/// with it; a cancelled build and a succeeded one blame nobody.
async fn failures(app: &App) {
    app.exec(
        "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval) \
         values ('demo', 'lib', 'src', 'release.nix', '', 60); \
         insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash) \
         select e, (select id from Jobsets where name = 'lib'), 1700000000 + e, 0, 0, 1, 'h' || e \
         from generate_series(101, 102) e; \
         insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision) values \
         (101, 'src', 0, 'git', 'https://example.org/lib.git', 'aaa'), \
         (102, 'src', 0, 'git', 'https://example.org/lib.git', 'bbb'); \
         insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system, startTime, stopTime, \
                             buildStatus, isCurrent) \
         select i, 1, 1700000000, (select id from Jobsets where name = 'lib'), 'job' || i, \
                '/nix/store/' || lpad(i::text, 32, 'x') || '-job' || i || '.drv', 'x86_64-linux', \
                1700000000, 1700000100, \
                case when i in (500, 600) then 1 when i = 700 then 4 when i = 701 then 0 \
                     when i between 90 and 99 then 0 else 2 end, \
                case when i between 90 and 99 then 0 else 1 end \
         from (select generate_series(501, 550) union all select generate_series(601, 602) \
               union all select unnest(array[500, 600, 700, 701]) union all select generate_series(90, 99)) g(i); \
         insert into JobsetEvalMembers (eval, build, isNew) select 101, i, 1 from generate_series(90, 99) i; \
         insert into JobsetEvalMembers (eval, build, isNew) select 102, id, 1 from Builds where id >= 500; \
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, system, propagatedFrom) \
         select i, 1, 0, '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-openssl-3.0.drv', 0, 1, 1700000000, 1700000100, \
                'x86_64-linux', case when i = 500 then null else 500 end \
         from (select 500 union all select generate_series(501, 550)) g(i); \
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, system, propagatedFrom) \
         select i, 1, 0, '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-zlib-1.3.drv', 0, 1, 1700000000, 1700000100, \
                'x86_64-linux', case when i = 600 then null else 600 end \
         from (select 600 union all select generate_series(601, 602)) g(i); \
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, system) \
         values (700, 1, 0, '/nix/store/cccccccccccccccccccccccccccccccc-gone.drv', 0, 4, 1700000000, 1700000100, 'x86_64-linux')",
    )
    .await;
}

fn names(ranked: &Value) -> Vec<(String, i64)> {
    ranked
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["drvpath"].as_str().unwrap().to_string(),
                b["jobs"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_failure_shared_by_more_jobs_ranks_first_with_its_log_and_first_bad_evaluation() {
    let app = App::new().await;
    fixture(&app).await;
    failures(&app).await;
    let openssl = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-openssl-3.0.drv";
    let zlib = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-zlib-1.3.drv";
    let expected = [(openssl.to_string(), 51), (zlib.to_string(), 3)];
    let eval = app.get("/eval/102/blockers").await.json();
    assert_eq!(names(&eval), expected, "the cancelled build blames nobody");
    let top = &eval[0];
    assert_eq!(
        (top["build"].clone(), top["stepnr"].clone()),
        (Value::from(500), Value::from(1)),
        "where it failed itself"
    );
    assert_eq!(top["status"], 1);
    assert_eq!(
        top["builds"].as_array().unwrap().len(),
        10,
        "ten of the 51 named"
    );
    assert_eq!(top["builds"][0], 500);
    assert_eq!(top["firstfailedeval"], 102);
    assert_eq!(top["changes"][0]["name"], "src");
    assert_eq!(
        top["changes"][0]["value"], "bbb",
        "the input change that came with it"
    );
    assert_eq!(
        top["changes"][0]["diff"],
        "/api/scmdiff?uri=https%3A%2F%2Fexample%2Eorg%2Flib%2Egit&type=git&rev1=aaa&rev2=bbb",
        "the commits between the last good and the first bad evaluation"
    );
    let jobset = app.get("/jobset/demo/lib/blockers").await.json();
    assert_eq!(names(&jobset), expected);
    // The whole instance: also the fixture's failed build, which blocks one.
    let all = names(&app.get("/blockers").await.json());
    assert_eq!(all[..2], expected);
    assert!(all[2..].iter().all(|(_, jobs)| *jobs == 1), "{all:?}");
    // An evaluation without failures has no blockers.
    assert_eq!(
        app.get("/eval/101/blockers").await.json(),
        Value::Array(Vec::new())
    );
    // The page lists them in that order, with the log and the evaluation.
    let html = app.html("/eval/102/blockers").await;
    assert!(
        html.contains("What blocks the most in evaluation"),
        "{html}"
    );
    let first = html.find("openssl-3.0").unwrap();
    let second = html.find("zlib-1.3").unwrap();
    assert!(first < second, "the larger blocker first");
    assert!(html.contains(r#"<a href="/build/500/nixlog/1">log</a>"#));
    assert!(
        html.contains(r#"<a href="/eval/102">evaluation 102</a>: <span class="mono">src</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"(<a href="/api/scmdiff?uri=https%3A%2F%2Fexample%2Eorg%2Flib%2Egit&#38;type=git&#38;rev1=aaa&#38;rev2=bbb">commits</a>)"#),
        "{html}"
    );
}

#[tokio::test]
async fn an_evaluations_cost_is_shown_by_attribute_with_its_slowest_jobs_and_the_trend() {
    let app = App::new().await;
    fixture(&app).await;
    app.exec(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash) \
         values (2, 1, 1700000100, 0, 7, 1, 'h2'); \
         insert into EvaluationCosts (eval, kind, name, milliseconds, jobs, peakMemory) values \
         (1, 'attrset', 'hello', 1000, 3, 104857600), \
         (2, 'attrset', 'hello', 1500, 3, 209715200), \
         (2, 'attrset', 'tests', 4500, 12, 524288000), \
         (2, 'job', 'tests.vm', 4000, 1, 524288000), \
         (2, 'job', 'hello.x', 900, 1, 209715200)",
    )
    .await;
    let cost = app.get("/eval/2/cost").await.json();
    let names = |key: &str| -> Vec<String> {
        cost[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("attrsets"), ["tests", "hello"], "the costliest first");
    assert_eq!(names("slowest"), ["tests.vm", "hello.x"]);
    assert_eq!(cost["attrsets"][0]["peakMemory"], 524288000);
    let trend = cost["trend"].as_array().unwrap();
    assert_eq!(trend.len(), 2, "{cost}");
    assert_eq!(trend[0]["eval"], 2);
    assert_eq!(trend[0]["milliseconds"], 6000);
    assert_eq!(trend[0]["evalTime"], 7);
    assert_eq!(trend[1]["milliseconds"], 1000);
    let html = app.html("/eval/2/cost").await;
    assert!(
        html.contains(
            "The evaluation workers spent 6.0 s on it and used at most 500 MiB of memory."
        ),
        "{html}"
    );
    assert!(
        html.contains("<td>75.0%</td>"),
        "tests took three quarters: {html}"
    );
    assert!(html.contains(r#"<a href="/eval/1/cost">1</a>"#), "{html}");
}

#[tokio::test]
async fn an_unfinished_evaluation_is_expected_when_its_last_queued_build_is() {
    let app = App::new().await;
    fixture(&app).await;
    failures(&app).await;
    // Evaluation 103: builds 800–802 queued, 803 done. 800 was predicted
    // twice (the later prediction counts), 801 once, 802 not yet.
    app.exec(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash) \
         values (103, (select id from Jobsets where name = 'lib'), 1700000200, 0, 0, 1, 'h103'); \
         insert into Builds (id, finished, timestamp, jobset_id, job, drvPath, system, buildStatus, isCurrent, \
                             startTime, stopTime) \
         select i, case when i = 803 then 1 else 0 end, 1700000000, (select id from Jobsets where name = 'lib'), \
                'job' || i, '/nix/store/' || lpad(i::text, 32, 'x') || '-job' || i || '.drv', 'x86_64-linux', \
                case when i = 803 then 0 end, 1, case when i = 803 then 1700000000 end, \
                case when i = 803 then 1700000100 end \
         from generate_series(800, 803) i; \
         insert into JobsetEvalMembers (eval, build, isNew) select 103, i, 1 from generate_series(800, 803) i; \
         insert into BuildEtas (build, madeAt, finishAt, low, high) \
         select b, n - m, n + f, n + l, n + h from (select extract(epoch from now())::integer as n) now, \
         (values (800, 600, 9000, 8000, 9900), (800, 60, 2400, 1500, 3900), (801, 30, 600, 500, 700)) \
           as p(b, m, f, l, h)",
    )
    .await;
    let eta = app.get("/eval/103/eta").await.json();
    assert_eq!(eta["unfinished"], 3, "{eta}");
    assert_eq!(eta["predicted"], 2, "{eta}");
    let now = eta["eta"]["madeAt"].as_i64().unwrap() + 60;
    assert_eq!(
        eta["eta"]["finishAt"].as_i64().unwrap() - now,
        2400,
        "{eta}"
    );
    assert_eq!(eta["eta"]["high"].as_i64().unwrap() - now, 3900, "{eta}");
    let html = app.html("/eval/103").await;
    assert!(
        html.contains("Expected to be done: <time") && html.contains(">about 40 min, finishes ~"),
        "{html}"
    );
    assert!(
        html.contains("; 1 queued build has no prediction yet."),
        "{html}"
    );
    // The queue lists when each queued build is expected, where known;
    // so does a job's page.
    let html = app.html("/queue").await;
    assert!(html.contains(r#"<th scope="col">Expected</th>"#), "{html}");
    assert_eq!(
        html.matches(r#"<td class="eta"><time"#).count(),
        2,
        "{html}"
    );
    assert!(
        html.contains(r#"<td class="eta">-</td>"#),
        "802 has none: {html}"
    );
    let html = app.html("/job/demo/lib/job800").await;
    assert_eq!(
        html.matches(r#"<td class="eta"><time"#).count(),
        1,
        "{html}"
    );
    // A finished evaluation says nothing of it.
    let html = app.html("/eval/101").await;
    assert!(!html.contains("Expected to be done"), "{html}");
}
