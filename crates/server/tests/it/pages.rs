//! The pages' frame and the pages that have their own templates: what a
//! browser receives (HTML, escaped text, the security headers, the assets).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use crate::common::{self, App, As, HOST};

/// `uri` as a browser asks for it, as `who`.
async fn page(app: &App, who: &As, method: Method, uri: &str) -> common::Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "text/html,application/xhtml+xml")
        .header(header::REFERER, common::BASE);
    if let As::Session(s) = who {
        req = req.header(header::COOKIE, format!("hydra_session={s}"));
    }
    app.raw(req.body(Body::empty()).unwrap()).await
}

/// A browser's form submission: `body` URL-encoded, as `who`.
async fn submit(app: &App, who: &As, uri: &str, body: &str) -> common::Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "text/html")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::REFERER, common::BASE);
    if let As::Session(s) = who {
        req = req.header(header::COOKIE, format!("hydra_session={s}"));
    }
    app.raw(req.body(Body::from(body.to_string())).unwrap())
        .await
}

/// The `href` of the stylesheet or the script a page names.
fn asset(html: &str, ext: &str) -> String {
    let end = html.find(&format!(".{ext}\"")).expect("no asset link") + ext.len() + 1;
    let start = html[..end].rfind("/static/").unwrap();
    html[start..end].to_string()
}

#[tokio::test]
async fn every_page_has_the_frame_the_security_headers_and_no_inline_code() {
    let app = App::new().await;
    common::fixture(&app).await;
    for uri in ["/", "/login", "/queue", "/build/1", "/no-such-page"] {
        let r = page(&app, &As::Anonymous, Method::GET, uri).await;
        let html = r.text();
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/html; charset=utf-8"),
            "{uri}"
        );
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{uri}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{uri}: {csp}");
        assert!(html.contains("<title>Hydra - "), "{uri}");
        assert!(html.contains(r#"aria-label="Main""#), "{uri}");
        assert!(
            html.contains(r#"<a href="/status">Running builds</a>"#),
            "{uri}"
        );
        assert!(html.contains(r#"action="/search""#), "{uri}");
        assert!(html.contains(r#"<a href="/login">Sign in</a>"#), "{uri}");
        assert!(!html.contains("<script>"), "{uri}: inline script");
        assert!(!html.contains(" style=\""), "{uri}: inline style");
    }
}

#[tokio::test]
async fn an_evaluations_builds_are_read_on_its_page_in_a_browser() {
    let app = App::new().await;
    common::fixture(&app).await;
    let reply = page(&app, &As::Anonymous, Method::GET, "/eval/1/builds").await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location").as_deref(), Some("/eval/1?full=1"));
    // API clients still get the JSON.
    let list = app.get("/eval/1/builds").await.json();
    assert!(list.as_array().is_some_and(|l| !l.is_empty()));
}

#[tokio::test]
async fn assets_are_served_under_their_hash_and_kept_for_a_year() {
    let app = App::new().await;
    let html = page(&app, &As::Anonymous, Method::GET, "/").await.text();
    for (ext, kind) in [("css", "text/css"), ("js", "text/javascript")] {
        let url = asset(&html, ext);
        let r = page(&app, &As::Anonymous, Method::GET, &url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert!(r.header("content-type").unwrap().starts_with(kind), "{url}");
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("public, max-age=31536000, immutable")
        );
        assert!(!r.body.is_empty());
    }
    let stale = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/static/hydra-0000000000000000.css",
    )
    .await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
    // A first visit transfers less than 100 KB of CSS and JS.
    let total: usize = futures_total(&app, &html).await;
    assert!(total < 100 * 1024, "{total} bytes");
}

async fn futures_total(app: &App, html: &str) -> usize {
    let mut total = 0;
    for ext in ["css", "js"] {
        total += page(app, &As::Anonymous, Method::GET, &asset(html, ext))
            .await
            .body
            .len();
    }
    total
}

#[tokio::test]
async fn the_front_page_lists_projects_with_their_text_escaped() {
    let app = App::new().await;
    common::fixture(&app).await;
    app.exec(
        r#"insert into Projects (name, displayName, description, homepage, owner, enabled, hidden)
             values ('evil', '<script>alert("name")</script> “quoted” ünïcode', '<b>bold</b> & more',
                     'javascript:alert(1)', 'owner', 0, 1)"#,
    )
    .await;
    // Hidden projects are listed for administrators.
    let admin = app.session("admin").await;
    let html = page(&app, &admin, Method::GET, "/").await.text();
    assert!(html.contains(r#"<a class="row-link mono" href="/project/demo">demo</a>"#));
    assert!(
        html.contains(
            r#"<a href="https://example.org" rel="nofollow noopener">the demo project</a>"#
        )
    );
    assert!(
        html.contains("&#60;script&#62;alert(&#34;name&#34;)&#60;/script&#62; “quoted” ünïcode"),
        "{html}"
    );
    assert!(html.contains("&#60;b&#62;bold&#60;/b&#62; &#38; more"));
    assert!(!html.contains("<script>alert"));
    assert!(
        !html.contains("javascript:"),
        "a javascript: homepage is not a link"
    );
    assert!(html.contains(r#"class="clickable disabled-project hidden-project""#));
    // Enabled projects first.
    assert!(html.find("/project/demo").unwrap() < html.find("/project/evil").unwrap());
}

#[tokio::test]
async fn the_frame_follows_who_is_signed_in_and_a_browser_signs_out_to_the_front_page() {
    let app = App::new().await;
    common::fixture(&app).await;
    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/").await.text();
    assert!(html.contains(r#"<a href="/user/owner">Preferences</a>"#));
    assert!(html.contains(r#"<form method="post" action="/logout">"#));
    assert!(html.contains("You are signed in as owner"));
    assert!(
        !html.contains("Clear VCS caches"),
        "admin actions are for admins"
    );
    assert!(html.contains(r#"<li><a href="/dashboard/owner">Dashboard</a></li>"#));
    // What runs and waits (build 3 runs): counted on every page.
    assert!(
        html.contains(r#"<a href="/queue-summary">Queue (1/1)</a>"#),
        "{html}"
    );
    assert!(!html.contains("<summary>Admin</summary>"));
    let admin = app.session("admin").await;
    let html = page(&app, &admin, Method::GET, "/").await.text();
    assert!(html.contains(r#"action="/admin/clear-vcs-cache""#));
    // Those who may create projects have the Admin menu with only that.
    let creator = app.session("creator").await;
    let html = page(&app, &creator, Method::GET, "/").await.text();
    assert!(html.contains(r#"<li><a href="/create-project">Create project</a></li>"#));
    assert!(!html.contains("/admin/users"));
    // A page about a build has menus for its project, jobset and job.
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    for link in [
        r#"<li><a href="/project/demo/all">Latest builds</a></li>"#,
        r#"<li><a href="/jobset/demo/trunk/evals">Evaluations</a></li>"#,
        r#"<li><a href="/job/demo/trunk/hello/channel/latest">Channel</a></li>"#,
    ] {
        assert!(html.contains(link), "{link}");
    }
    let html = page(&app, &As::Anonymous, Method::GET, "/project/demo")
        .await
        .text();
    assert!(
        html.contains("<summary>Project</summary>") && !html.contains("<summary>Jobset</summary>")
    );
    // The JSON has none of it.
    assert!(app.get("/build/1").await.json().get("queue").is_none());

    let out = page(&app, &owner, Method::POST, "/logout").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.header("location").as_deref(), Some(common::BASE));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let html = page(&app, &owner, Method::GET, "/").await.text();
    assert!(
        html.contains(r#"<a href="/login">Sign in</a>"#),
        "the session ended"
    );
}

#[tokio::test]
async fn the_project_page_shows_its_jobsets_with_their_counts_and_its_configuration() {
    let app = App::new().await;
    common::fixture(&app).await;
    app.exec(
        "insert into Jobsets (project, name, description, nixExprInput, nixExprPath, emailOverride, hidden)
           values ('demo', 'secret', 'a hidden one', 'src', 'release.nix', '', 1)",
    )
    .await;
    let r = page(&app, &As::Anonymous, Method::GET, "/project/demo").await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    assert!(html.contains("<title>Hydra - Project demo</title>"));
    assert!(html.contains(r##"<a href="#tabs-jobsets">Jobsets</a>"##));
    assert!(html.contains(r#"<a class="row-link mono" href="/jobset/demo/trunk">trunk</a>"#));
    // The fixture's current builds: 1 succeeded, 2 failed (one a
    // dependency failure), 1 queued: scheduled, 25%.
    assert!(html.contains(r#"title="Scheduled""#), "{html}");
    assert!(
        html.contains(r#"<span class="badge muted-badge">25%</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"<span class="badge ok">1</span>"#));
    assert!(html.contains(r#"<span class="badge bad">2</span>"#));
    assert!(
        html.contains(
            r#"<time datetime="2023-11-14T22:15:00Z" title="UTC">2023-11-14 22:15:00</time>"#
        ),
        "{html}"
    );
    assert!(
        !html.contains("/jobset/demo/secret"),
        "hidden jobsets are for owners"
    );
    assert!(html.contains(
        r#"<a href="https://example.org" rel="nofollow noopener">https://example.org</a>"#
    ));
    assert!(html.contains(r#"<td class="mono">owner</td>"#));

    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/project/demo")
        .await
        .text();
    assert!(
        html.contains("/jobset/demo/secret"),
        "owners see hidden jobsets"
    );
    assert!(html.contains(r#"id="show-hidden""#), "and may hide them");
    assert!(html.contains(
        "<th scope=\"row\">Enable Dynamic RunCommand Hooks</th><td>No (not enabled by server)</td>"
    ));
    assert!(html.contains(r#"action="/project/demo/delete" data-confirm="#));
    // The JSON is unchanged by what the page shows.
    let json = app.get("/project/demo").await.json();
    assert!(json.get("jobsets").unwrap().is_array());
    assert!(json.get("extra").is_none());

    // Deleted from its page: to the front page, which says so.
    let nobody = app.session("nobody").await;
    let r = submit(&app, &nobody, "/project/demo/delete", "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "owners only");
    let r = submit(&app, &owner, "/project/demo/delete", "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location").unwrap(), common::BASE);
    assert!(r.header("set-cookie").unwrap().starts_with("hydra_flash="));
    assert_eq!(app.scalar("select count(*) from Projects").await, 0);
    assert_eq!(app.scalar("select count(*) from Builds").await, 0);
}

#[tokio::test]
async fn build_lists_show_status_job_time_and_name_and_page() {
    let app = App::new().await;
    common::fixture(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/all").await.text();
    assert!(html.contains("<title>Hydra - Latest builds</title>"));
    assert!(
        html.contains("Showing builds 1 - 3 out of 3, by descending finish time."),
        "{html}"
    );
    assert!(html.contains(r#"<a class="row-link" href="/build/1">1</a>"#));
    assert!(html.contains(r#"<a href="/build/1">demo:trunk:hello</a>"#));
    // Hydra's icons, with their titles, for the tools that read the pages.
    assert!(html.contains(r#"<img src="/static/images/emojione-check-2714.svg" height="16" width="16" title="Succeeded" alt="Succeeded" class="build-status">"#));
    assert!(html.contains(r#"<img src="/static/images/emojione-red-x-274c.svg" height="16" width="16" title="Failed" alt="Failed" class="build-status">"#));
    assert!(html.contains(r#"<img src="/static/images/emojione-gray-x-2716.svg" height="16" width="16" title="Dependency failed" alt="Dependency failed" class="build-status">"#));
    assert!(
        html.contains(
            r#"<table class="builds table table-striped table-condensed clickable-rows">"#
        )
    );
    assert!(
        html.contains("hello-1.0-release"),
        "the release name, when set"
    );
    assert!(html.contains(r#"<time datetime="2023-11-14T22:13:40Z""#));
    assert!(
        !html.contains("/build/3\""),
        "the queued build is not in the finished list"
    );
    assert!(html.contains(r#"<a href="?page=1">« First</a>"#));

    // Below a project, jobset or job, the implied parts are left out.
    let html = page(&app, &As::Anonymous, Method::GET, "/project/demo/all")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Latest builds for project demo</title>"));
    assert!(
        html.contains(r#"<a href="/build/1">trunk:hello</a>"#),
        "{html}"
    );
    let html = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk/all")
        .await
        .text();
    assert!(
        html.contains(r#"for jobset <a class="mono" href="/jobset/demo/trunk">demo:trunk</a>"#)
    );
    assert!(html.contains(r#"<a href="/build/1">hello</a>"#));
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/job/demo/trunk/hello/all",
    )
    .await
    .text();
    assert!(html.contains("Latest builds for job"));
    assert!(html.contains("out of 1,"), "{html}");

    let html = page(&app, &As::Anonymous, Method::GET, "/queue")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Queue</title>"));
    assert!(html.contains("<th scope=\"col\">Queued at</th>"));
    assert!(html.contains(r#"<a class="row-link" href="/build/3">3</a>"#));
    assert!(
        html.contains(r#"<td><span class="badge muted-badge">Queued</span></td>"#),
        "scheduling views show a badge"
    );
    assert!(html.contains("aarch64-linux"));
}

#[tokio::test]
async fn the_build_page_shows_status_times_outputs_products_and_steps() {
    let app = App::new().await;
    common::fixture(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Build 1 of job demo:trunk:hello</title>"));
    assert!(html.contains(r#"<a href="/job/demo/trunk/hello">hello</a>"#));
    assert!(html.contains("<strong>Success</strong>"));
    assert!(html.contains("hello-1.0-release"));
    assert!(html.contains(r#"<a href="/eval/1">evaluation 1</a>"#));
    assert!(html.contains("<td>10s</td>"), "duration: {html}");
    assert!(html.contains("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0"));
    // Products by type, with what to do with each.
    assert!(html.contains(r#"<td>Source distribution</td>"#), "{html}");
    assert!(html.contains(r#"<a href="/build/1/download/2/hello.tar.gz">hello.tar.gz</a>"#));
    assert!(html.contains("42 bytes (0.00 MiB)") && html.contains("abc123"));
    assert!(
        html.contains(
            r#"<a href="/job/demo/trunk/hello/latest/download-by-type/file/source-dist">"#
        )
    );
    assert!(html.contains(r#"<td>Nix package</td>"#));
    assert!(
        html.contains("nix-env -i /nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0</pre>")
    );
    assert!(html.contains(r#"<a href="/build/1/contents/2">Contents</a>"#));
    assert!(html.contains(r#"<a href="/build/1/step/1">1</a>"#));
    assert!(html.contains("Build of <span class=\"mono\">hello-1.0</span>"));
    assert!(html.contains("<td class=\"status ok\">Succeeded"));
    assert!(
        !html.contains(r#"action="/build/1/restart""#),
        "actions are for signed-in users"
    );

    let html = page(&app, &As::Anonymous, Method::GET, "/build/2")
        .await
        .text();
    assert!(html.contains("<strong>Build returned a non-zero exit code</strong>"));

    let html = page(&app, &As::Anonymous, Method::GET, "/build/1/step/1")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Step 1 of build 1</title>"));
    assert!(
        html.contains(r#"of job <span class="mono">demo:trunk:hello</span>"#),
        "{html}"
    );
    assert!(html.contains("<td>Build</td>") && html.contains("<td>10s</td>"));
    assert!(html.contains(r#"<td class="status ok">Succeeded"#));

    // A build that failed because of a dependency links the failing
    // step's log.
    app.exec(
        "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system, propagatedFrom)
           values (4, 1, 0, '/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-broken-1.0.drv', 0, 1, 1700000010, 1700000030, 'localhost', 'x86_64-linux', 2)",
    )
    .await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/4")
        .await
        .text();
    assert!(
        html.contains(r#"<a href="/build/4/step/1/log">Build of <span class="mono">broken-1.0</span></a>: Failed (in <a href="/build/2">build 2</a>)"#),
        "{html}"
    );

    let admin = app.session("admin").await;
    let html = page(&app, &admin, Method::GET, "/build/3").await.text();
    assert!(
        html.contains("<strong>Build in progress</strong>"),
        "a busy step"
    );
    assert!(html.contains("<td class=\"status queued\">Building"));
    assert!(html.contains("ssh://builder"));
    assert!(html.contains(r#"action="/build/3/cancel""#));
    assert!(html.contains(r#"action="/build/3/bump""#));
}

#[tokio::test]
async fn the_jobset_page_shows_its_evaluations_errors_and_configuration() {
    let app = App::new().await;
    common::fixture(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Jobset demo:trunk</title>"));
    assert!(
        html.contains("50 <span class=\"muted\">(100.00% out of 50 shares)</span>"),
        "the only jobset has all the shares"
    );
    assert!(html.contains(
        r#"<tr><th scope="row">Dynamic RunCommand</th><td>No (disabled on this server)</td></tr>"#
    ));
    assert!(
        !html.contains("Email override"),
        "the server sends no email"
    );
    for tab in ["evaluations", "configuration", "links"] {
        assert!(html.contains(&format!("href=\"#tabs-{tab}\"")), "{tab}");
        assert!(html.contains(&format!("id=\"tabs-{tab}\"")), "{tab}");
    }
    assert!(!html.contains("#tabs-errors"), "no errors, no tab");
    assert!(html.contains(r#"<a class="row-link" href="/eval/1">1</a>"#));
    // Evaluation 1: hello succeeded, broken and all failed, slow queued.
    assert!(
        html.contains(r#"<span class="badge ok">1</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="badge bad">2</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"<span class="badge muted-badge">1</span>"#));
    assert!(html.contains("(took 10s)"), "checkout and evaluation time");
    assert!(html.contains(r#"<td class="mono">src</td><td>git</td>"#));
    assert!(html.contains("https://example.org/demo.git main"));
    assert!(html.contains("<td>60</td>"), "check interval");

    app.exec(
        "update Jobsets set errorMsg = 'error: <undefined> variable', errorTime = 1700000200,
             fetchErrorMsg = 'fetch failed'",
    )
    .await;
    let html = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk")
        .await
        .text();
    assert!(html.contains(r##"<a href="#tabs-errors">"##));
    assert!(html.contains("error: &#60;undefined&#62; variable"));
    assert!(html.contains("fetch failed"));
    assert!(html.contains("with errors!"));

    let missing = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/none").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text().contains("<title>Hydra - "), "an error page");
}

/// Evaluation 2 of demo:trunk after the fixture's evaluation 1: hello
/// (build 1) again, slow (3) still queued, broken now succeeds (5), a new
/// job `fresh<job>` fails (6), `all` is gone; the source (on GitHub, in
/// both) has a new revision.
async fn second_eval(app: &App) {
    use hydra_db::status::BuildStatus;
    use hydra_test_support::builds::TestBuild;
    let pool = &app.db.pool;
    let jobset: i32 = sqlx::query_scalar("select id from Jobsets")
        .fetch_one(pool)
        .await
        .unwrap();
    TestBuild::new(jobset, "broken")
        .id(5)
        .timestamp(1700000500)
        .nix_name(Some("broken-1.1"))
        .drv("/nix/store/jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj-broken-1.1.drv")
        .finished(BuildStatus::Succeeded, 1700000510, 1700000520)
        .insert(pool)
        .await;
    TestBuild::new(jobset, "fresh<job>")
        .id(6)
        .timestamp(1700000500)
        .nix_name(Some("fresh-1.0"))
        .drv("/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-fresh-1.0.drv")
        .finished(BuildStatus::Failed, 1700000510, 1700000520)
        .insert(pool)
        .await;
    app.exec(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select 2, id, 1700000500, 1, 2, 1, 'hash2', 4 from Jobsets;
         insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision) values
           (2, 'src', 0, 'git', 'https://github.com/demo/demo.git', 'fedcba9876543210fedcba9876543210fedcba98');
         update JobsetEvalInputs set uri = 'https://github.com/demo/demo.git' where eval = 1;
         insert into JobsetEvalMembers (eval, build, isNew) values (2, 1, 0), (2, 3, 0), (2, 5, 1), (2, 6, 1);",
    )
    .await;
}

#[tokio::test]
async fn the_eval_page_sorts_builds_against_the_preceding_evaluation() {
    let app = App::new().await;
    common::fixture(&app).await;
    second_eval(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/eval/2")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Evaluation 2 of jobset demo:trunk</title>"));
    assert!(
        html.contains(r#"evaluation <a href="/eval/1">1</a>"#),
        "{html}"
    );
    for (anchor, label) in [
        ("now-succeed", "Newly Succeeding Jobs (1)"),
        ("new", "New Jobs (1)"),
        ("removed", "Removed Jobs (1)"),
        ("still-succeed", "Still Succeeding Jobs (1)"),
        ("unfinished", "Queued Jobs (1)"),
    ] {
        assert!(
            html.contains(&format!("href=\"#tabs-{anchor}\"")),
            "{anchor}"
        );
        assert!(html.contains(label), "{label}");
    }
    assert!(!html.contains("#tabs-now-fail"), "empty tabs are left out");
    assert!(
        !html.contains(r#"action="/eval/2/cancel""#),
        "actions are for signed-in users"
    );
    // Build rows name the job only, escaped.
    assert!(html.contains(r#"<a href="/build/6">fresh&#60;job&#62;</a>"#));
    assert!(
        html.contains(r#"<a href="/job/demo/trunk/all">all</a>"#),
        "the removed job"
    );
    assert!(html.contains(
        r#"<a href="https://github.com/demo/demo/compare/0123456789abcdef0123456789abcdef01234567...fedcba9876543210fedcba9876543210fedcba98" rel="nofollow noopener">0123456789ab to fedcba987654</a>"#
    ), "{html}");

    // The filter applies to both evaluations; compare names another one.
    let html = page(&app, &As::Anonymous, Method::GET, "/eval/2?filter=BROKEN")
        .await
        .text();
    assert!(html.contains("Newly Succeeding Jobs (1)"));
    assert!(!html.contains("#tabs-new\""), "{html}");
    assert!(!html.contains("#tabs-removed"));
    let html = page(&app, &As::Anonymous, Method::GET, "/eval/2?compare=2")
        .await
        .text();
    assert!(html.contains("Still Succeeding Jobs (2)"), "{html}");
    assert!(html.contains("Still Failing Jobs (1)"));

    let admin = app.session("admin").await;
    let html = page(&app, &admin, Method::GET, "/eval/2").await.text();
    assert!(html.contains(r#"action="/eval/2/cancel""#));
    assert!(html.contains(r#"action="/eval/2/restart-failed""#));
    assert!(!html.contains(r#"action="/eval/2/restart-aborted""#));
    // The JSON is Hydra's.
    let json = app.get("/eval/2").await.json();
    assert!(json.get("tabs").is_none() && json.get("builds").is_some());
}

#[tokio::test]
async fn evaluation_lists_show_counts_input_changes_and_the_change_in_successes() {
    let app = App::new().await;
    common::fixture(&app).await;
    second_eval(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/evals")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Latest evaluations</title>"));
    assert!(
        html.contains("Showing evaluations 1 - 2 out of 2."),
        "{html}"
    );
    // Newest first, with the jobset on the global list.
    assert!(
        html.find(r#"href="/eval/2">2</a>"#).unwrap()
            < html.find(r#"href="/eval/1">1</a>"#).unwrap()
    );
    assert!(html.contains(r#"<a href="/jobset/demo/trunk">demo:trunk</a>"#));
    assert!(
        html.contains(r#"<span class="mono">src</span> → <span class="mono copy" data-copy="fedcba9876543210fedcba9876543210fedcba98" title="fedcba9876543210fedcba9876543210fedcba98">fedcba987654</span>"#),
        "{html}"
    );
    // Evaluation 2: hello and broken succeeded (one more than before).
    assert!(
        html.contains(r#"<span class="delta ok">+1</span>"#),
        "{html}"
    );

    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/evals",
    )
    .await
    .text();
    assert!(html.contains("Evaluations of jobset"));
    assert!(html.contains(r#"<a href="/jobset/demo/trunk">trunk</a>"#));
    assert!(
        !html.contains(r#">demo:trunk</a></td>"#),
        "no jobset column"
    );

    let html = page(&app, &As::Anonymous, Method::GET, "/build/1/evals")
        .await
        .text();
    assert!(html.contains("Evaluations containing build 1"));
    assert!(html.contains(r#"href="/eval/2">2</a>"#) && html.contains(r#"href="/eval/1">1</a>"#));

    let html = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk")
        .await
        .text();
    assert!(html.contains(r#"<a href="/jobset/demo/trunk/evals">More...</a>"#));
    // The JSON lists are Hydra's.
    let json = app.get("/evals").await.json();
    assert!(json.get("summaries").is_none() && json["evals"].is_array());
}

#[tokio::test]
async fn the_job_page_shows_its_builds_charts_and_a_star_for_signed_in_users() {
    let app = App::new().await;
    common::fixture(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/job/demo/trunk/hello")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Job demo:trunk:hello</title>"));
    assert!(
        html.contains(r#"<a href="/build/1">hello</a>"#),
        "job only: {html}"
    );
    assert!(html.contains("This job has no queued builds."));
    assert!(!html.contains("tabs-constituents"), "not an aggregate");
    assert!(!html.contains("not a member of the"), "hello is current");
    assert!(!html.contains("/star\""), "no star for anonymous users");
    // Build 1 (queued at 22:13:20) took 10 s; its closure is 1234 bytes.
    assert!(html.contains(r#"aria-label="Build time (in seconds)""#));
    assert!(
        html.contains("<title>build 1, 2023-11-14 22:13:20: 10 s</title>"),
        "{html}"
    );
    assert!(html.contains(r#"<a href="/job/demo/trunk/hello/metric/runtime">Metric: runtime</a>"#));
    assert!(html.contains(": 0.00118 MiB</title>"), "closure size");
    assert!(html.contains(": 1.5 s</title>"), "the metric");

    let html = page(&app, &As::Anonymous, Method::GET, "/job/demo/trunk/gone")
        .await
        .text();
    assert!(html.contains("not a member of the"));
    assert!(!html.contains("#tabs-charts"), "no figures, no charts");

    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/job/demo/trunk/hello")
        .await
        .text();
    assert!(html.contains(r#"action="/job/demo/trunk/hello/star""#));
    assert!(html.contains("☆"));
    let r = submit(&app, &owner, "/job/demo/trunk/hello/star", "star=1").await;
    assert_eq!(r.status, StatusCode::FOUND, "back to the job");
    let html = page(&app, &owner, Method::GET, "/job/demo/trunk/hello")
        .await
        .text();
    assert!(html.contains("★"), "starred");
}

#[tokio::test]
async fn status_pages_show_running_builds_steps_the_runner_and_search_results() {
    let app = App::new().await;
    common::fixture(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/status")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Running builds</title>"));
    assert!(
        html.contains(r#"<a class="row-link" href="/build/3">3</a>"#),
        "{html}"
    );
    assert!(html.contains(r#"<span class="badge ok">Started</span>"#));
    assert!(html.contains("ssh://builder"));
    assert!(
        !html.contains("<em>(Build of"),
        "the step is the build's own"
    );

    let html = page(&app, &As::Anonymous, Method::GET, "/steps")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Latest steps</title>"));
    assert!(
        html.contains(r#"<td class="mono">demo:trunk:hello</td>"#),
        "{html}"
    );
    assert!(html.contains(r#"<a class="row-link" href="/build/1/step/1/log/tail">1</a>"#));
    assert!(html.contains(r#"title="Succeeded" alt="Succeeded""#));
    assert!(
        !html.contains("/build/3/step/1/log"),
        "a running step is not listed"
    );
    let json = app.get("/steps").await.json();
    assert!(
        json["steps"][0].get("job").is_none(),
        "the JSON is unchanged"
    );

    let html = page(&app, &As::Anonymous, Method::GET, "/queue-runner-status")
        .await
        .text();
    assert!(
        html.contains("&#34;status&#34;: &#34;unknown&#34;"),
        "{html}"
    );
    let html = page(&app, &As::Anonymous, Method::GET, "/machines")
        .await
        .text();
    assert!(
        html.contains("queue_runner_endpoint"),
        "says why nothing shows"
    );

    let html = page(&app, &As::Anonymous, Method::GET, "/search?query=hello")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Search results</title>"));
    assert!(html.contains("have an output path that matches"));
    // Jobs with a current build.
    assert!(html.contains("jobs match your query"));
    assert!(html.contains("have a derivation path that matches"));
    assert!(html.contains(r#"<a class="row-link" href="/build/1">1</a>"#));
    let html = page(&app, &As::Anonymous, Method::GET, "/search?query=demo")
        .await
        .text();
    assert!(html.contains(r#"<a class="row-link mono" href="/project/demo">demo</a>"#));
    let html = page(&app, &As::Anonymous, Method::GET, "/search?query=trunk")
        .await
        .text();
    assert!(html.contains(r#"<a class="row-link mono" href="/jobset/demo/trunk">demo:trunk</a>"#));
    app.exec("update Builds set isCurrent = 1").await;
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/search?query=hell&limit=1",
    )
    .await
    .text();
    assert!(
        html.contains(
            r#"<a class="row-link mono" href="/job/demo/trunk/hello">demo:trunk:hello</a>"#
        ),
        "{html}"
    );
    let html = page(&app, &As::Anonymous, Method::GET, "/search?query=zzzz")
        .await
        .text();
    assert!(html.contains("Nothing matches your search."));
}

#[tokio::test]
async fn the_sign_in_page_returns_to_where_the_reader_was() {
    let app = App::new().await;
    common::fixture(&app).await;
    app.set_legacy_password("owner", "correct horse").await;
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/login?next=/jobset/demo/trunk",
    )
    .await
    .text();
    assert!(
        html.contains(r#"<input type="hidden" name="next" value="/jobset/demo/trunk">"#),
        "{html}"
    );
    // A foreign `next` is not followed.
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/login?next=//evil.example/",
    )
    .await
    .text();
    assert!(html.contains(r#"name="next" value="/""#));

    let wrong = submit(
        &app,
        &As::Anonymous,
        "/login",
        "username=owner&password=nope&next=%2Fjobset%2Fdemo%2Ftrunk",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let html = wrong.text();
    assert!(html.contains("Bad username or password."));
    assert!(html.contains(r#"value="owner""#), "the name is kept");
    assert!(
        html.contains(r#"name="next" value="/jobset/demo/trunk""#),
        "so is next"
    );

    let right = submit(
        &app,
        &As::Anonymous,
        "/login",
        "username=owner&password=correct+horse&next=%2Fjobset%2Fdemo%2Ftrunk",
    )
    .await;
    assert_eq!(right.status, StatusCode::FOUND);
    assert_eq!(
        right.header("location").as_deref(),
        Some(format!("{}jobset/demo/trunk", common::BASE).as_str())
    );
    assert!(
        right
            .header("set-cookie")
            .unwrap()
            .contains("hydra_session=")
    );

    let html = page(&app, &As::Anonymous, Method::GET, "/build/999").await;
    assert_eq!(html.status, StatusCode::NOT_FOUND);
    let html = html.text();
    assert!(
        html.contains("<h1 class=\"page-header\">404 Not Found</h1>"),
        "{html}"
    );
    assert!(
        html.contains("Build with ID 999 doesn&#39;t exist."),
        "{html}"
    );
}

#[tokio::test]
async fn preferences_save_settings_and_manage_api_tokens() {
    let app = App::new().await;
    common::fixture(&app).await;
    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/user/owner").await.text();
    assert!(html.contains("<title>Hydra - Editing user owner</title>"));
    assert!(html.contains(r#"name="emailaddress" type="email""#));
    assert!(
        html.contains(" disabled "),
        "only admins change emails: {html}"
    );
    assert!(!html.contains("role-admin"), "roles are for admins");
    assert!(html.contains("There are no tokens."));

    // Unticked boxes turn settings off; a short password is refused
    // with the reason on the page.
    app.exec("update Users set emailOnError = 1 where userName = 'owner'")
        .await;
    let r = submit(&app, &owner, "/user/owner", "fullname=The+Owner").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        app.scalar("select emailOnError::bigint from Users where userName = 'owner'")
            .await,
        0
    );
    let r = submit(
        &app,
        &owner,
        "/user/owner",
        "fullname=x&password=abc&password2=abc",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("The password must be at least"),
        "{}",
        r.text()
    );
    let html = page(&app, &owner, Method::GET, "/user/owner").await.text();
    assert!(
        html.contains(r#"value="The Owner""#),
        "the earlier save stays"
    );

    // A token is shown once, listed by name, and revoked from the list.
    let r = submit(&app, &owner, "/user/owner/tokens", "name=release+script").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let html = r.text();
    assert!(html.contains("it is not shown again"));
    let start = html.find("data-copy=\"").unwrap() + 11;
    let token = &html[start..start + html[start..].find('"').unwrap()];
    let me = app
        .send(
            &As::Token(token.to_string()),
            Method::GET,
            "/current-user",
            None,
        )
        .await;
    assert_eq!(me.json()["username"], "owner");
    let html = page(&app, &owner, Method::GET, "/user/owner").await.text();
    assert!(html.contains("<td>release script</td>"));
    let id = app.scalar("select max(id)::bigint from ApiTokens").await;
    let r = submit(&app, &owner, &format!("/user/owner/tokens/{id}/delete"), "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(app.scalar("select count(*) from ApiTokens").await, 0);

    // The only administrator cannot stop being one.
    let admin = app.session("admin").await;
    let r = submit(&app, &admin, "/user/admin", "fullname=Admin").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("is the only administrator"),
        "{}",
        r.text()
    );
    // Nor delete their account.
    let r = app.send(&admin, Method::DELETE, "/user/admin", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("is the only administrator"));
    assert_eq!(
        app.scalar("select count(*) from Users where userName = 'admin'")
            .await,
        1
    );

    // Administrators set roles with one box each.
    let html = page(&app, &admin, Method::GET, "/user/owner").await.text();
    assert!(html.contains(r#"name="role-cancel-build""#));
    let r = submit(
        &app,
        &admin,
        "/user/owner",
        "fullname=The+Owner&role-cancel-build=1&emailaddress=o%40example.org",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let roles = app
        .send(&admin, Method::GET, "/user/owner", None)
        .await
        .json();
    assert_eq!(roles["userroles"], serde_json::json!(["cancel-build"]));
    assert_eq!(roles["emailaddress"], "o@example.org");
}

#[tokio::test]
async fn the_project_form_creates_and_edits_with_errors_by_their_fields() {
    let app = App::new().await;
    common::fixture(&app).await;
    let creator = app.session("creator").await;
    let html = page(&app, &creator, Method::GET, "/").await.text();
    assert!(html.contains(r#"<a class="button" href="/create-project">Create project</a>"#));
    let html = page(&app, &creator, Method::GET, "/create-project")
        .await
        .text();
    assert!(html.contains("<title>Hydra - New project</title>"));
    assert!(html.contains(r#"name="owner" value="creator""#));
    let nobody = app.session("nobody").await;
    let r = page(&app, &nobody, Method::GET, "/create-project").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // A missing display name is shown by its field, with what was typed.
    let r = submit(
        &app,
        &creator,
        "/create-project",
        "name=fresh&description=%3Cnew%3E&displayname=",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let html = r.text();
    assert!(html.contains(r#"<span class="field-error" id="displayname-error" role="alert">The display name is required.</span>"#), "{html}");
    assert!(html.contains(r#"aria-describedby="displayname-error""#));
    assert!(
        html.contains(r#"value="&#60;new&#62;""#),
        "what was typed stays"
    );
    let r = submit(&app, &creator, "/create-project", "name=demo&displayname=D").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains(r#"id="name-error""#));

    let r = submit(
        &app,
        &creator,
        "/create-project",
        "name=fresh&displayname=Fresh&enabled=1&visible=1",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{}project/fresh", common::BASE).as_str())
    );
    let json = app.get("/project/fresh").await.json();
    assert_eq!(
        (
            json["owner"].as_str(),
            json["enabled"].as_bool(),
            json["hidden"].as_bool()
        ),
        (Some("creator"), Some(true), Some(false))
    );

    // Editing: an unticked box turns the project off; renaming works.
    let html = page(&app, &creator, Method::GET, "/project/fresh")
        .await
        .text();
    assert!(html.contains(r#"href="/project/fresh/edit">Edit configuration</a>"#));
    let html = page(&app, &creator, Method::GET, "/project/fresh/edit")
        .await
        .text();
    assert!(html.contains(r#"action="/project/fresh/edit""#));
    assert!(html.contains(r#"name="displayname" value="Fresh""#));
    let r = submit(
        &app,
        &creator,
        "/project/fresh/edit",
        "name=fresher&displayname=Fresher&visible=1",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.header("location")
            .unwrap()
            .ends_with("project/fresher#tabs-configuration")
    );
    let json = app.get("/project/fresher").await.json();
    assert_eq!(json["enabled"], false);
    // Someone else's project cannot be edited.
    let r = page(&app, &creator, Method::GET, "/project/demo/edit").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_jobset_form_creates_edits_clones_and_starts_from_an_evaluation() {
    let app = App::new().await;
    common::fixture(&app).await;
    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/jobset/demo/trunk")
        .await
        .text();
    assert!(html.contains(r#"href="/jobset/demo/trunk/edit">Edit configuration</a>"#));
    // Evaluate now: the jobset is triggered, and the page comes back.
    let r = submit(&app, &owner, "/jobset/demo/trunk/evaluate", "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        app.scalar("select count(*) from Jobsets where triggerTime is not null")
            .await,
        1
    );
    let nobody = app.session("nobody").await;
    let r = submit(&app, &nobody, "/jobset/demo/trunk/evaluate", "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let html = page(&app, &owner, Method::GET, "/project/demo/create-jobset")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Creating jobset in project demo</title>"));
    assert!(html.contains(r#"action="/project/demo/create-jobset""#));
    // What the fields depend on: the other jobsets' shares, the server.
    assert!(html.contains("66.67% out of 150 shares"), "{html}");
    assert!(html.contains("Dynamic RunCommand is disabled on this server"));
    assert!(html.contains(r#"name="enable_dynamic_run_command" value="1" disabled"#));
    assert!(html.contains("This server sends no email"));

    // A bad expression path is refused by its field; the rows come back.
    let form = "name=staging&enabled=1&visible=1&type=0&nixexprinput=src&nixexprpath=%2Fabs.nix\
                &checkinterval=0&schedulingshares=10&keepnr=2\
                &input-0-name=src&input-0-type=git&input-0-value=https%3A%2F%2Fexample.org%2Fs.git&input-0-emailresponsible=1\
                &input-1-name=&input-1-type=git&input-1-value=";
    let r = submit(&app, &owner, "/project/demo/create-jobset", form).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let html = r.text();
    assert!(html.contains(r#"id="nixexprpath-error""#), "{html}");
    assert!(html.contains(r#"value="https://example.org/s.git""#));
    let r = submit(
        &app,
        &owner,
        "/project/demo/create-jobset",
        &form.replace("%2Fabs.nix", "release.nix"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let json = app.get("/jobset/demo/staging").await.json();
    assert_eq!(json["inputs"]["src"]["value"], "https://example.org/s.git");
    assert_eq!(json["inputs"]["src"]["emailresponsible"], true);
    assert_eq!(json["schedulingshares"], 10);
    assert_eq!(json["enableemail"], false, "an unticked box");

    // Editing removes an input and switches to one-shot.
    let html = page(&app, &owner, Method::GET, "/jobset/demo/staging/edit")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Editing jobset demo:staging</title>"));
    assert!(
        html.contains("16.67% out of 60 shares"),
        "its own shares once"
    );
    assert!(html.contains(r#"name="input-0-name" value="src""#));
    assert!(html.contains(r#"<input type="radio" name="enabled" value="1" checked>"#));
    let edit = "name=staging&enabled=2&visible=1&type=0&nixexprinput=src&nixexprpath=release.nix\
                &checkinterval=0&schedulingshares=10&keepnr=2\
                &input-0-name=src&input-0-type=git&input-0-value=x\
                &input-1-name=extra&input-1-type=string&input-1-value=hi\
                &input-2-name=old&input-2-type=string&input-2-value=y&input-2-remove=1";
    let r = submit(&app, &owner, "/jobset/demo/staging/edit", edit).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    assert!(
        r.header("location")
            .unwrap()
            .ends_with("/jobset/demo/staging#tabs-configuration")
    );
    let json = app.get("/jobset/demo/staging").await.json();
    assert_eq!(json["enabled"], 2);
    assert_eq!(json["inputs"]["extra"]["value"], "hi");
    assert!(json["inputs"].get("old").is_none());

    // A clone starts without a name; an evaluation fixes its inputs.
    let html = page(
        &app,
        &owner,
        Method::GET,
        "/jobset/demo/trunk/edit?cloneJobset=1",
    )
    .await
    .text();
    assert!(html.contains("Cloning jobset demo:trunk"));
    assert!(html.contains(r#"<input id="name" name="name" value="""#));
    let html = page(&app, &owner, Method::GET, "/eval/1/create-jobset")
        .await
        .text();
    assert!(html.contains("Creating jobset from evaluation 1 of demo:trunk"));
    assert!(
        html.contains(
            r#"value="https://example.org/demo.git 0123456789abcdef0123456789abcdef01234567""#
        ),
        "{html}"
    );

    let nobody = app.session("nobody").await;
    let r = page(&app, &nobody, Method::GET, "/jobset/demo/trunk/edit").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_dashboard_shows_starred_jobs_maintained_builds_and_owned_jobsets() {
    let app = App::new().await;
    common::fixture(&app).await;
    app.exec(
        "insert into StarredJobs (userName, project, jobset, job) values ('owner', 'demo', 'trunk', 'hello');
         update Users set emailAddress = 'owner@example.org' where userName = 'owner';
         update Builds set isCurrent = 1, maintainers = 'owner@example.org, x@example.org' where id = 2;",
    )
    .await;
    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/dashboard/owner")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Dashboard of owner</title>"));
    assert!(
        html.contains(r#"<a href="/job/demo/trunk/hello">demo:trunk:hello</a>"#),
        "{html}"
    );
    assert!(html.contains(r#"<a href="/build/1"><img src="/static/images/emojione-check-2714.svg" height="16" width="16" title="Build 1: Succeeded""#));
    assert!(html.contains("1 current build names"), "{html}");
    assert!(html.contains(r#"<a class="row-link" href="/build/2">2</a>"#));
    assert!(html.contains(r#"<a class="row-link mono" href="/jobset/demo/trunk">demo:trunk</a>"#));
    let json = app
        .send(&owner, Method::GET, "/dashboard/owner", None)
        .await
        .json();
    assert_eq!(json["starred"][0]["builds"][0]["id"], 1);

    // Private unless made public.
    let other = app.session("nobody").await;
    let r = page(&app, &other, Method::GET, "/dashboard/owner").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    app.exec("update Users set publicDashboard = true where userName = 'owner'")
        .await;
    let r = page(&app, &other, Method::GET, "/dashboard/owner").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = page(&app, &owner, Method::GET, "/user/owner/dashboard").await;
    assert_eq!(r.status, StatusCode::FOUND);
}

#[tokio::test]
async fn administrators_manage_users_news_and_see_the_machines() {
    let app = App::new().await;
    common::fixture(&app).await;
    let admin = app.session("admin").await;
    let html = page(&app, &admin, Method::GET, "/admin/users").await.text();
    assert!(html.contains("<title>Hydra - Users</title>"));
    assert!(html.contains(r#"<a class="row-link mono" href="/user/canceller">canceller</a>"#));
    assert!(html.contains("<em>cancel-build</em>"), "{html}");
    let owner = app.session("owner").await;
    assert_eq!(
        page(&app, &owner, Method::GET, "/admin/users").await.status,
        StatusCode::FORBIDDEN
    );

    // A new user: a short password is refused on the form, then created.
    let html = page(&app, &admin, Method::GET, "/register").await.text();
    assert!(html.contains(r#"name="role-eval-jobset""#));
    let r = submit(
        &app,
        &admin,
        "/register",
        "username=dora&fullname=Dora&password=abc&password2=abc&role-eval-jobset=1",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let html = r.text();
    assert!(html.contains("The password must be at least"));
    assert!(html.contains(r#"value="dora""#) && !html.contains(r#"value="abc""#));
    let r = submit(
        &app,
        &admin,
        "/register",
        "username=dora&fullname=Dora&password=long+enough&password2=long+enough&role-eval-jobset=1",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let html = page(&app, &admin, Method::GET, "/admin/users").await.text();
    assert!(html.contains("/user/dora") && html.contains("<em>eval-jobset</em>"));

    // News: posted on the admin page, shown on the front page.
    let r = submit(
        &app,
        &admin,
        "/admin/news/submit",
        "contents=%3Cb%3EMaintenance%3C%2Fb%3E+tonight%3A+https%3A%2F%2Fstatus.example.org%2F.",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    // News is text: markup is shown as typed, addresses are links.
    let shown = r#"&#60;b&#62;Maintenance&#60;/b&#62; tonight: <a href="https://status.example.org/" rel="nofollow noopener">https://status.example.org/</a>."#;
    let html = page(&app, &admin, Method::GET, "/admin/news").await.text();
    assert!(html.contains(shown), "{html}");
    let html = page(&app, &As::Anonymous, Method::GET, "/").await.text();
    assert!(html.contains(shown), "{html}");
    assert!(!html.contains("<b>Maintenance"));

    let html = page(&app, &admin, Method::GET, "/admin/machines")
        .await
        .text();
    assert!(
        html.contains("queue_runner_endpoint"),
        "no queue runner here"
    );

    // A clearing action returns to the page it was taken on.
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/admin/clear-failed-cache")
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "text/html")
        .header(header::REFERER, format!("{}queue-summary", common::BASE));
    if let As::Session(s) = &admin {
        req = req.header(header::COOKIE, format!("hydra_session={s}"));
    }
    let r = app.raw(req.body(Body::empty()).unwrap()).await;
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{}queue-summary", common::BASE).as_str())
    );
}

fn write_log(app: &App, drv: &str, text: &[u8]) {
    let path = hydra_config::DataDir::from(app.data.path()).build_log(drv);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn the_log_viewer_shows_numbered_coloured_lines_in_windows_and_searches() {
    let app = App::new().await;
    common::fixture(&app).await;
    let mut log = String::new();
    for i in 1..=3000 {
        log.push_str(&format!("line {i}\n"));
    }
    log.push_str("\u{1b}[31merror:\u{1b}[0m <builder> failed\n");
    write_log(
        &app,
        "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv",
        log.as_bytes(),
    );
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1/log")
        .await
        .text();
    assert!(html.contains("<title>Hydra - Log of build 1</title>"));
    // The end first: the last 1000 of 3001 lines.
    assert!(html.contains("Lines 2002–3001 of 3001."), "{html}");
    assert!(html.contains(r#"<li id="L3001"><a class="ln" href="?line=3001#L3001">3001</a><span class="lt"><span class="ansi-fg1">error:</span> &lt;builder&gt; failed</span></li>"#), "{html}");
    assert!(!html.contains(r#"id="L2001""#));
    assert!(html.contains(r#"<a href="?to=2001">Earlier lines</a>"#));
    assert!(!html.contains("data-live"), "the step is not running");

    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/build/1/log?from=1&to=10",
    )
    .await
    .text();
    assert!(html.contains("Lines 1–10 of 3001."));
    assert!(html.contains(r#"<a href="?from=11">Later lines</a>"#));
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1/log?line=1500")
        .await
        .text();
    assert!(html.contains(r#"id="L1500""#) && html.contains(r#"id="L1"#));

    // A search reads the whole log and lists the matching lines.
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/build/1/log?search=ERROR",
    )
    .await
    .text();
    assert!(html.contains("1 line of 3001 match “error”"), "{html}");
    assert!(html.contains(r#"id="L3001""#) && !html.contains(r#"id="L3000""#));
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1/step/1/log")
        .await
        .text();
    assert!(html.contains("Log of step 1 of"));

    // The live stream sends HTML lines after those the page has.
    let r = app.get("/build/1/log/live?html=1&after=3000").await;
    let text = r.text();
    assert!(
        text.contains(
            "id: 3001\ndata: <span class=\"ansi-fg1\">error:</span> &lt;builder&gt; failed"
        ),
        "{text}"
    );
    assert!(!text.contains("id: 3000\n"));

    // A running step's tail follows the live stream.
    write_log(
        &app,
        "/nix/store/cccccccccccccccccccccccccccccccc-slow-1.0.drv",
        b"compiling\n",
    );
    let html = page(&app, &As::Anonymous, Method::GET, "/build/3/step/1/log")
        .await
        .text();
    assert!(
        html.contains(r#"data-live="http://"#)
            && html.contains("/build/3/step/1/log/live?html=1&amp;after=1\""),
        "{html}"
    );
}

/// Opens `/events` (with `last` as `Last-Event-ID`).
async fn events_stream(app: &App, last: Option<&str>) -> axum::body::BodyDataStream {
    events_at(app, "/events", last).await
}

/// Opens the events stream at `uri` (with `last` as `Last-Event-ID`).
async fn events_at(app: &App, uri: &str, last: Option<&str>) -> axum::body::BodyDataStream {
    use tower::ServiceExt;
    let mut req = Request::get(uri).header(header::HOST, HOST);
    if let Some(last) = last {
        req = req.header("last-event-id", last);
    }
    let response = app
        .router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "a stream of events"
    );
    response.into_body().into_data_stream()
}

/// Reads `body` until it holds `needle` (or `wait` passes).
async fn read_until(
    body: &mut axum::body::BodyDataStream,
    seen: &mut String,
    needle: &str,
    wait: std::time::Duration,
) -> bool {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + wait;
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn pages_hear_of_changes_from_the_database_and_catch_up_after_reconnecting() {
    use std::time::Duration;
    let app = App::new().await;
    common::fixture(&app).await;
    let mut body = events_stream(&app, None).await;
    let mut seen = String::new();
    // The server starts listening with the first page: notify until heard.
    let wanted = r#"data: {"kind":"build_finished","builds":[2],"jobsets":["demo:trunk"],"projects":["demo"]}"#;
    let mut heard = false;
    for _ in 0..50 {
        app.exec("select pg_notify('build_finished', '2')").await;
        if read_until(&mut body, &mut seen, wanted, Duration::from_millis(200)).await {
            heard = true;
            break;
        }
    }
    assert!(heard, "{seen}");
    let id_line = seen
        .lines()
        .find(|l| l.starts_with("id: "))
        .unwrap()
        .to_string();
    let first_id = id_line.trim_start_matches("id: ").to_string();
    // An evaluation names its jobset.
    app.exec("select pg_notify('eval_added', '1.2\t' || (select id from Jobsets) || '\t1')")
        .await;
    assert!(
        read_until(
            &mut body,
            &mut seen,
            r#""kind":"eval_added","builds":[],"jobsets":["demo:trunk"]"#,
            Duration::from_secs(10)
        )
        .await,
        "{seen}"
    );
    drop(body);

    // A page that reconnects gets what came after its last event…
    let mut again = events_stream(&app, Some(&first_id)).await;
    let mut replay = String::new();
    assert!(
        read_until(
            &mut again,
            &mut replay,
            "eval_added",
            Duration::from_secs(5)
        )
        .await,
        "{replay}"
    );
    assert!(
        !replay.contains(&format!("id: {first_id}\n")),
        "not what it had"
    );
    // …and one that the server does not know (a restart) reads the page afresh.
    let mut stranger = events_stream(&app, Some("0000-7")).await;
    let mut fresh = String::new();
    assert!(
        read_until(
            &mut stranger,
            &mut fresh,
            "event: reset",
            Duration::from_secs(5)
        )
        .await,
        "{fresh}"
    );

    // Pages say what they are about, and the last change they knew of: a
    // change between the page and its stream is not lost.
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(html.contains(r#"<main id="content" data-live="build:1">"#));
    let since = html
        .split(r#"<body data-events-since=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let known: u64 = since.rsplit('-').next().unwrap().parse().unwrap();
    assert!(known >= 2, "the changes so far: {since}");
    // The change is sent (another page hears it) before the stream opens.
    let mut other = events_stream(&app, None).await;
    let mut heard_there = String::new();
    app.exec("select pg_notify('build_finished', '1')").await;
    assert!(
        read_until(
            &mut other,
            &mut heard_there,
            r#""builds":[1]"#,
            Duration::from_secs(5)
        )
        .await
    );
    let mut late = events_at(&app, &format!("/events?since={since}"), None).await;
    let mut caught = String::new();
    assert!(
        read_until(
            &mut late,
            &mut caught,
            r#""kind":"build_finished","builds":[1]"#,
            Duration::from_secs(5)
        )
        .await,
        "{caught}"
    );
    let html = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk")
        .await
        .text();
    assert!(html.contains(r#"data-live="jobset:demo:trunk""#));
    let html = page(&app, &As::Anonymous, Method::GET, "/login")
        .await
        .text();
    assert!(
        html.contains(r#"<main id="content">"#),
        "forms are left alone"
    );
}

#[tokio::test]
async fn status_icons_are_served_under_hydras_names() {
    let app = App::new().await;
    for icon in [
        "emojione-check-2714.svg",
        "emojione-red-x-274c.svg",
        "emojione-gray-x-2716.svg",
        "emojione-stopsign-1f6d1.svg",
        "emojione-question-2754.svg",
    ] {
        let r = page(
            &app,
            &As::Anonymous,
            Method::GET,
            &format!("/static/images/{icon}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{icon}");
        assert_eq!(r.header("content-type").as_deref(), Some("image/svg+xml"));
        assert!(r.text().starts_with("<svg"));
    }
    let r = page(&app, &As::Anonymous, Method::GET, "/static/images/nope.svg").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_jobs_matrix_shows_each_jobs_build_in_the_latest_evaluations() {
    let app = App::new().await;
    common::fixture(&app).await;
    second_eval(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk")
        .await
        .text();
    assert!(html.contains(r#"data-src="/jobset/demo/trunk/jobs-tab""#));
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/jobs-tab",
    )
    .await
    .text();
    assert!(html.contains("<title>Hydra - Jobs of jobset demo:trunk</title>"));
    // Columns: evaluation 2, then 1.
    assert!(html.find(r#"href="/eval/2""#).unwrap() < html.find(r#"href="/eval/1""#).unwrap());
    // broken: succeeded in 2 (build 5), failed in 1 (build 2).
    let row = &html[html.find(r#"<a href="/job/demo/trunk/broken">"#).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.find(r#"<a href="/build/5"><img src="/static/images/emojione-check-2714.svg""#)
            .unwrap()
            < row
                .find(r#"<a href="/build/2"><img src="/static/images/emojione-red-x-274c.svg""#)
                .unwrap(),
        "{row}"
    );
    // `all` is only in evaluation 1: an empty cell first.
    let row = &html[html.find(r#"<a href="/job/demo/trunk/all">"#).unwrap()..];
    assert!(
        row.starts_with(
            r#"<a href="/job/demo/trunk/all">all</a></th>
<td></td><td><a href="/build/4">"#
        ),
        "{row}"
    );
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/jobs-tab?filter=HEL",
    )
    .await
    .text();
    assert!(html.contains("/job/demo/trunk/hello") && !html.contains("/job/demo/trunk/broken"));
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/jobs-tab?filter=zzz",
    )
    .await
    .text();
    assert!(html.contains("No job matches"));

    // Filters in the address: the status of a job's newest build, a system.
    let tab = "/jobset/demo/trunk/jobs-tab";
    let rows = |html: &str| -> Vec<String> {
        html.split(r#"<tr><th scope="row" class="mono"><a href="/job/demo/trunk/"#)
            .skip(1)
            .map(|r| r.split('"').next().unwrap().to_string())
            .collect()
    };
    let get = |query: &'static str| {
        let app = &app;
        async move {
            page(app, &As::Anonymous, Method::GET, &format!("{tab}?{query}"))
                .await
                .text()
        }
    };
    assert_eq!(rows(&get("status=failed").await), ["all", "fresh%3Cjob%3E"]);
    assert_eq!(rows(&get("status=queued").await), ["slow"]);
    assert_eq!(rows(&get("status=succeeded").await), ["broken", "hello"]);
    let html = get("system=aarch64-linux").await;
    assert_eq!(rows(&html), ["slow"]);
    assert!(
        html.contains(r#"<option value="aarch64-linux" selected>"#),
        "{html}"
    );
    assert!(
        get("status=succeeded&system=aarch64-linux")
            .await
            .contains("No job matches these filters.")
    );
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("{tab}?status=bogus"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A job with a build in no evaluation shown is inactive: listed, muted,
    // when asked for.
    hydra_test_support::builds::TestBuild::new(
        app.scalar("select id::bigint from Jobsets").await as i32,
        "retired",
    )
    .id(50)
    .drv("/nix/store/rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr-retired.drv")
    .insert(&app.db.pool)
    .await;
    let html = page(&app, &As::Anonymous, Method::GET, tab).await.text();
    assert!(!html.contains("retired"), "not without asking");
    assert!(html.contains(r#"name="showInactive" value="1">"#));
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("{tab}?showInactive=1"),
    )
    .await
    .text();
    assert!(html.contains("Inactive jobs: 1 with builds"), "{html}");
    assert!(html.contains(r#"<tr class="inactive"><th scope="row" class="mono"><a href="/job/demo/trunk/retired">retired</a>"#));
    assert!(html.contains(r#"name="showInactive" value="1" checked>"#));
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("{tab}?showInactive=1&filter=hel"),
    )
    .await
    .text();
    assert!(!html.contains("retired") && html.contains("No inactive jobs match"));
    // A job the status filter leaves out is not inactive.
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("{tab}?showInactive=1&status=queued"),
    )
    .await
    .text();
    assert!(html.contains("Inactive jobs: 1 with builds"), "{html}");
    assert!(!html.contains(
        r#"<tr class="inactive"><th scope="row" class="mono"><a href="/job/demo/trunk/hello">"#
    ));

    // Without a filter, the first 250 jobs, with a way to all of them.
    app.exec(
        "insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, buildStatus,
                             startTime, stopTime)
           select 100 + i, 1, 1700000500, (select id from Jobsets), 'z' || lpad(i::text, 3, '0'), 'z',
                  '/nix/store/' || lpad(i::text, 32, '0') || '-z.drv', 'x86_64-linux', 0, 1700000501, 1700000502
           from generate_series(1, 260) i;
         insert into JobsetEvalMembers (eval, build, isNew) select 2, 100 + i, 1 from generate_series(1, 260) i;",
    )
    .await;
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/jobs-tab",
    )
    .await
    .text();
    assert!(
        html.contains("Showing the first 250 jobs of 265."),
        "{html}"
    );
    assert!(html.contains("/job/demo/trunk/z245\"") && !html.contains("/job/demo/trunk/z246\""));
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/jobs-tab?all=1",
    )
    .await
    .text();
    assert!(html.contains("/job/demo/trunk/z260\""));
    // The way to all of them keeps the filters.
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/jobs-tab?status=succeeded",
    )
    .await
    .text();
    assert!(
        html.contains(r#"<a href="?all=1&#38;status=succeeded">Show all 262 jobs</a>"#),
        "{html}"
    );
}

#[tokio::test]
async fn metric_errors_and_channel_pages() {
    let app = App::new().await;
    common::fixture(&app).await;
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/job/demo/trunk/hello/metric/runtime",
    )
    .await
    .text();
    assert!(
        html.contains("<title>Hydra - Job metric 'runtime'</title>"),
        "{html}"
    );
    assert!(html.contains(r#"<a class="mono" href="/job/demo/trunk/hello">demo:trunk:hello</a>"#));
    assert!(html.contains(": 1.5 s</title>"));

    app.exec(
        "update Jobsets set errorMsg = 'error: attribute <x> missing', errorTime = 1700000200",
    )
    .await;
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/errors",
    )
    .await
    .text();
    assert!(html.contains("Evaluation errors of jobset demo:trunk"));
    assert!(
        html.contains("error: attribute &#60;x&#62; missing"),
        "{html}"
    );
    assert!(html.contains("2023-11-14 22:16:40"));
    let html = page(&app, &As::Anonymous, Method::GET, "/eval/1/errors")
        .await
        .text();
    assert!(html.contains("Errors of evaluation 1") && html.contains("There are no errors."));

    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/channel/latest",
    )
    .await
    .text();
    assert!(
        html.contains("<title>Hydra - Channel demo-trunk</title>"),
        "{html}"
    );
    assert!(html.contains("nix-channel --add http://"), "{html}");
    assert!(html.contains("/jobset/demo/trunk/channel/latest\n"));
}

#[tokio::test]
async fn the_build_page_shows_constituents_inputs_metrics_and_the_last_success() {
    use hydra_db::status::BuildStatus;
    use hydra_test_support::builds::TestBuild;
    let app = App::new().await;
    common::fixture(&app).await;
    second_eval(&app).await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/4")
        .await
        .text();
    assert!(html.contains(r##"<a href="#tabs-constituents">Constituents</a>"##));
    assert!(
        html.contains(r#"data-src="/build/4/runtime-deps""#),
        "finished"
    );
    assert!(html.contains("its result comes from these 2 builds"));
    assert!(
        html.contains("(1 out of 2 constituent builds failed)"),
        "{html}"
    );
    assert!(html.contains(r#"<a class="row-link" href="/build/2">2</a>"#));
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(html.contains(r#"<a href="/job/demo/trunk/hello/metric/runtime">runtime</a></td><td class="number">1.5</td><td>s</td>"#), "{html}");
    assert!(
        html.contains(r#"<td class="mono">src</td><td>Git checkout</td>"#),
        "{html}"
    );
    assert!(!html.contains("Previous builds"), "a success needs none");

    // broken: succeeded in build 5, fails again in build 7.
    let jobset: i32 = sqlx::query_scalar("select id from Jobsets")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    TestBuild::new(jobset, "broken")
        .id(7)
        .timestamp(1700000600)
        .nix_name(Some("broken-1.2"))
        .drv("/nix/store/llllllllllllllllllllllllllllllll-broken-1.2.drv")
        .finished(BuildStatus::Failed, 1700000610, 1700000620)
        .insert(&app.db.pool)
        .await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/7")
        .await
        .text();
    assert!(html.contains("<h3>Previous builds</h3>"), "{html}");
    assert!(html.contains(r#"<a href="/build/5">build 5</a>"#));
    assert!(
        !html.contains("First broken build"),
        "this build is the first broken one"
    );
}

/// The pages of the inventory, on the fixture with its second evaluation.
const INVENTORY: &[&str] = &[
    "/",
    "/login",
    "/project/demo",
    "/project/demo/edit",
    "/create-project",
    "/jobset/demo/trunk",
    "/jobset/demo/trunk/edit",
    "/project/demo/create-jobset",
    "/jobset/demo/trunk/jobs-tab",
    "/jobset/demo/trunk/evals",
    "/evals",
    "/eval/2",
    "/build/1",
    "/build/4",
    "/build/1/step/1",
    "/build/1/runtime-deps",
    "/build/1/build-deps",
    "/build/1/graph",
    "/eval/2/blockers",
    "/eval/2/cost",
    "/build/1/log",
    "/job/demo/trunk/hello",
    "/all",
    "/queue",
    "/queue-summary",
    "/status",
    "/machines",
    "/steps",
    "/search?query=hello",
    "/user/admin",
    "/dashboard/admin",
    "/admin/users",
    "/register",
    "/admin/news",
    "/admin/machines",
    "/build/999",
];

/// What a reader with a screen reader or a keyboard trips over in `html`:
/// not one `<h1>`, an image without `alt`, a form field without a label,
/// a button without a name, a table without headers.
fn accessibility_problems(html: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if !html.contains(r#"<html lang="en">"#) {
        problems.push("no language".into());
    }
    let h1 = html.matches("<h1").count();
    if h1 != 1 {
        problems.push(format!("{h1} <h1>"));
    }
    let tags = |name: &str| -> Vec<(usize, String)> {
        let open = format!("<{name}");
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(i) = html[from..].find(&open) {
            let start = from + i;
            let end = start + html[start..].find('>').unwrap_or(0);
            let tag = &html[start..=end];
            if tag[open.len()..].starts_with([' ', '>', '\n']) {
                out.push((start, tag.to_string()));
            }
            from = end + 1;
        }
        out
    };
    for (_, img) in tags("img") {
        if !img.contains(" alt=\"") {
            problems.push(format!("image without alt: {img}"));
        }
    }
    for (at, input) in tags("input")
        .into_iter()
        .chain(tags("select"))
        .chain(tags("textarea"))
    {
        if input.contains("type=\"hidden\"") || input.contains(" aria-label=\"") {
            continue;
        }
        let labelled_by_id = input
            .split(" id=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .is_some_and(|id| html.contains(&format!("<label for=\"{id}\"")));
        let before = &html[..at];
        let inside_label = before
            .rfind("<label")
            .is_some_and(|l| before.rfind("</label>").is_none_or(|c| c < l));
        if !labelled_by_id && !inside_label {
            problems.push(format!("field without a label: {input}"));
        }
    }
    for (at, _) in tags("button") {
        let rest = &html[at..];
        let tag_end = rest.find('>').unwrap_or(0);
        let body = &rest[tag_end + 1..rest.find("</button>").unwrap_or(tag_end + 1)];
        if body.trim().is_empty() && !rest[..tag_end].contains("aria-label") {
            problems.push("button without a name".into());
        }
    }
    for (at, _) in tags("table") {
        let rest = &html[at..];
        let table = &rest[..rest.find("</table>").unwrap_or(rest.len())];
        if !table.contains("<th") {
            problems.push("table without headers".into());
        }
    }
    problems
}

#[tokio::test]
async fn every_page_has_one_heading_labelled_fields_and_described_images() {
    let app = App::new().await;
    common::fixture(&app).await;
    second_eval(&app).await;
    write_log(
        &app,
        "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv",
        b"\x1b[31mhello\x1b[0m\n",
    );
    let admin = app.session("admin").await;
    let pages = INVENTORY;
    let mut all = Vec::new();
    for uri in pages {
        let html = page(&app, &admin, Method::GET, uri).await.text();
        for p in accessibility_problems(&html) {
            all.push(format!("{uri}: {p}"));
        }
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
    // The checker finds what it looks for.
    assert_eq!(
        accessibility_problems(r#"<html lang="en"><h1>x</h1><img src="a"><input name="q"><table><tr><td>1</td></tr></table>"#).len(),
        3
    );
}

#[tokio::test]
async fn a_build_can_be_reproduced_from_its_evaluations_inputs() {
    let app = App::new().await;
    common::fixture(&app).await;
    app.exec("update JobsetEvals set nixExprInput = 'src', nixExprPath = 'release.nix'")
        .await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(html.contains("<summary>Reproduce locally</summary>"));
    assert!(
        html.contains("curl -sSf http://hydra.test/build/1/reproduce | bash"),
        "{html}"
    );
    let r = page(&app, &As::Anonymous, Method::GET, "/build/1/reproduce").await;
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/x-shellscript; charset=utf-8")
    );
    assert!(
        r.header("content-disposition")
            .unwrap()
            .contains("build-1-reproduce.sh")
    );
    let script = r.text();
    assert!(
        script.contains("git clone -q 'https://example.org/demo.git' 'src'"),
        "{script}"
    );
    assert!(script.contains("checkout -q '0123456789abcdef0123456789abcdef01234567'"));
    assert!(script.contains("exec nix-build './src/release.nix' -A 'hello'"));
    // The script is valid shell.
    let check = std::process::Command::new("bash")
        .args(["-n", "-c", &script])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A flake evaluation is one command.
    app.exec("update JobsetEvals set flake = 'github:demo/demo/0123', nixExprInput = null, nixExprPath = null").await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(
        html.contains("nix build &#39;github:demo/demo/0123#hydraJobs.hello&#39;"),
        "{html}"
    );
}

#[tokio::test]
async fn custom_channels_and_the_channels_tab() {
    let app = App::new().await;
    common::fixture(&app).await;
    app.exec(
        "insert into BuildProducts (build, productnr, type, subtype, path, name, defaultPath)
           values (1, 3, 'channel', 'nixexprs', '/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0/channel.tar.xz', 'nixexprs.tar.xz', '')",
    )
    .await;
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/jobset/demo/trunk/channels-tab",
    )
    .await
    .text();
    assert!(
        html.contains("<title>Hydra - Channels of jobset demo:trunk</title>"),
        "{html}"
    );
    assert!(
        html.contains(r#"<a href="/channel/custom/demo/trunk/hello">hello</a>"#),
        "{html}"
    );
    assert!(
        !html.contains("/channel/custom/demo/trunk/broken"),
        "no channel product"
    );

    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/channel/custom/demo/trunk/hello",
    )
    .await
    .text();
    assert!(html.contains("<title>Hydra - Channel hello</title>"));
    assert!(
        html.contains("nix-channel --add http://hydra.test/channel/custom/demo/trunk/hello"),
        "{html}"
    );
    assert!(html.contains(r#"<a href="/build/1/download/3">nixexprs.tar.xz</a>"#));
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/channel/custom/demo/trunk/hello/nixexprs.tar.xz",
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.header("location")
            .unwrap()
            .ends_with("/build/1/download/3/nixexprs.tar.xz")
    );
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/channel/custom/demo/trunk/broken",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no successful build");
}

/// What an attacker would type into a field: markup, quotes that close
/// an attribute, and text beyond ASCII.
const HOSTILE: &str = r#"<script>alert(1)</script>"'><img src=x>ü✓"#;

#[tokio::test]
async fn hostile_text_in_every_user_controlled_field_is_shown_escaped() {
    let app = App::new().await;
    common::fixture(&app).await;
    second_eval(&app).await;
    let h = HOSTILE.replace('\'', "''");
    app.exec(&format!(
        "update Users set fullName = '{h}', emailAddress = '{h}@example.org';
         update Projects set displayName = '{h}', description = '{h}', homepage = 'https://example.org/{h}';
         update Jobsets set description = '{h}', nixExprPath = '{h}', emailOverride = '{h}',
                            errorMsg = '{h}', errorTime = 1700000100, fetchErrorMsg = '{h}';
         update JobsetInputAlts set value = '{h}';
         update JobsetEvalInputs set uri = '{h}', revision = '{h}';
         update Builds set description = '{h}', license = '{h}', homepage = '{h}', maintainers = '{h}',
                           nixName = '{h}', releaseName = '{h}';
         update Builds set job = '{h}' where id = 2;
         update BuildSteps set errorMsg = '{h}', machine = '{h}';
         update BuildProducts set name = '{h}', subtype = '{h}';
         update BuildMetrics set unit = '{h}';
         insert into NewsItems (contents, createTime, author) values ('{h}', 1700000000, 'admin');
         insert into ApiTokens (userName, name, hash, created) values ('admin', '{h}', 'x', 1700000000);"
    ))
    .await;
    write_log(
        &app,
        "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv",
        format!("building\n{HOSTILE}\n").as_bytes(),
    );
    let escaped = "&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#62;&#60;img src=x&#62;ü✓";
    // Pages that show one of the fields above; every page is checked for
    // raw markup.
    let shows = [
        "/",
        "/project/demo",
        "/project/demo/edit",
        "/jobset/demo/trunk",
        "/jobset/demo/trunk/edit",
        "/jobset/demo/trunk/errors",
        "/eval/2",
        "/eval/1#tabs-inputs",
        "/build/1",
        "/build/2",
        "/build/1/step/1",
        "/build/1/log",
        "/job/demo/trunk/hello",
        "/user/admin",
        "/admin/users",
        "/admin/news",
        "/all",
        "/search?query=demo",
    ];
    let extra = [
        "/build/1/log?search=alert",
        "/build/1/evals",
        "/jobset/demo/trunk/channels-tab",
        "/job/demo/trunk/hello/metric/runtime",
        "/eval/2?compare=1",
        "/eval/2?full=1",
        "/eval/1/errors",
    ];
    let admin = app.session("admin").await;
    let mut problems = Vec::new();
    let mut uris: Vec<&str> = INVENTORY
        .iter()
        .chain(&shows)
        .chain(&extra)
        .copied()
        .collect();
    uris.sort_unstable();
    uris.dedup();
    for uri in uris {
        // The templates write `&#60;`, the log viewer `&lt;`: the same.
        let html = page(&app, &admin, Method::GET, uri)
            .await
            .text()
            .replace("&lt;", "&#60;")
            .replace("&gt;", "&#62;")
            .replace("&quot;", "&#34;");
        if html.contains("<script>alert") || html.contains("<img src=x") || html.contains("\"'><") {
            problems.push(format!("{uri}: raw markup"));
        }
        if shows.contains(&uri) && !html.contains(escaped) {
            problems.push(format!("{uri}: the text is not shown"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The job named by an attacker has an encoded link; the evaluator
    // never records such a name, so the page answers a clear 404.
    let html = page(&app, &admin, Method::GET, "/build/2").await.text();
    let href = html
        .split("href=\"/job/demo/trunk/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert!(!href.contains('<') && !href.contains('"'), "{href}");
    let r = page(
        &app,
        &admin,
        Method::GET,
        &format!("/job/demo/trunk/{href}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{href}");
    assert!(
        r.text()
            .contains(&format!("Job ‘demo:trunk:{escaped}’ doesn&#39;t exist.")),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn runcommand_runs_are_listed_on_the_build_page_and_their_output_is_viewed_and_served() {
    let app = App::new().await;
    common::fixture(&app).await;
    let ok = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let killed = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let pending = "16fd2706-8baf-433b-82eb-8c7fada847da";
    app.exec(&format!(
        "insert into RunCommandLogs (uuid, job_matcher, build_id, command, start_time, end_time, exit_code, signal, core_dumped)
           values ('{ok}', '*:*:*', 1, 'notify-deploy --fast', 1700000100, 1700000105, 0, null, null),
                  ('{killed}', 'demo:*:*', 1, './hook <x>', 1700000200, 1700000260, null, 9, true);
         insert into RunCommandLogs (uuid, job_matcher, build_id, command) values ('{pending}', '*:*:*', 1, 'later');"
    ))
    .await;
    let log = hydra_config::DataDir::from(app.data.path()).run_command_log(ok);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "deploying\n<b>done</b>\n").unwrap();

    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(html.contains(r##"<a href="#tabs-runcommandlogs">RunCommand logs</a>"##));
    assert!(html.contains("Exit signal 9 (Core Dumped)"), "{html}");
    assert!(html.contains("Exit code 0"));
    assert!(html.contains("./hook &#60;x&#62;"), "escaped");
    assert!(html.contains(&format!(
        r#"<a href="/build/1/runcommandlog/{ok}">pretty</a>"#
    )));
    assert!(html.contains("Pending"));
    // Newest first: the killed run, then the successful one.
    assert!(html.find(killed).unwrap() < html.find(ok).unwrap());

    // The text, whole and its tail.
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("/runcommandlog/{ok}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "deploying\n<b>done</b>\n");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("/runcommandlog/{ok}?tail=1"),
    )
    .await;
    assert_eq!(r.text(), "<b>done</b>\n");

    // The viewer, numbered and escaped; raw redirects to the text.
    let html = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("/build/1/runcommandlog/{ok}"),
    )
    .await
    .text();
    assert!(
        html.contains("RunCommand log of <a href=\"/build/1\">build 1</a>"),
        "{html}"
    );
    assert!(html.contains("notify-deploy --fast"));
    assert!(html.contains(r#"<li id="L2">"#) && html.contains("&lt;b&gt;done&lt;/b&gt;"));
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        &format!("/build/1/runcommandlog/{ok}/raw"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(
        r.header("location")
            .unwrap()
            .ends_with(&format!("/runcommandlog/{ok}")),
        "{:?}",
        r.header("location")
    );

    // What does not exist is a clear 404.
    for (uri, says) in [
        (format!("/build/2/runcommandlog/{ok}"), "for build 2"),
        (
            "/runcommandlog/..%2F..%2Fetc%2Fpasswd".to_string(),
            "No RunCommand run ‘../../etc/passwd’",
        ),
        (
            "/runcommandlog/not-a-uuid".to_string(),
            "No RunCommand run ‘not-a-uuid’",
        ),
        (
            "/runcommandlog/00000000-0000-0000-0000-000000000000".to_string(),
            "No RunCommand run",
        ),
        (format!("/runcommandlog/{killed}"), "is not available"),
    ] {
        let r = page(&app, &As::Anonymous, Method::GET, &uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(r.text().contains(says), "{uri}: {}", r.text());
    }
}

#[tokio::test]
async fn a_private_server_shows_strangers_only_the_way_to_sign_in() {
    let app = App::with_config("private = 1\n").await;
    common::fixture(&app).await;
    let r = page(&app, &As::Anonymous, Method::GET, "/project/demo").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let html = r.text();
    assert!(html.contains("403 Forbidden"), "{html}");
    assert!(html.contains("This server is private: please sign in."));
    assert!(html.contains(r#"<a href="/login">Sign in</a>"#), "{html}");
    for hidden in ["Status", "/search", "/queue", "Admin"] {
        assert!(!html.contains(hidden), "{hidden} shown to a stranger");
    }
    // The sign-in page and the stylesheet are open.
    let r = page(&app, &As::Anonymous, Method::GET, "/login").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(r#"id="password""#));
    let css = asset(&r.text(), "css");
    assert_eq!(
        page(&app, &As::Anonymous, Method::GET, &css).await.status,
        StatusCode::OK
    );
    // Signed in, the frame is whole.
    let owner = app.session("owner").await;
    let html = page(&app, &owner, Method::GET, "/project/demo")
        .await
        .text();
    assert!(html.contains("/queue") && html.contains(r#"action="/search""#));
}

#[tokio::test]
async fn a_build_lists_the_builds_that_took_it_as_an_input() {
    let app = App::new().await;
    common::fixture(&app).await;
    // Evaluation 2 had an input fixed to build 1; build 3 is in it. An
    // old database's BuildInputs says build 2 took it too.
    app.exec(
        "insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select 2, id, 1700000500, 1, 1, 1, 'hash2', 1 from Jobsets;
         insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision, dependency)
           values (2, 'hello', 0, 'build', null, null, 1);
         insert into JobsetEvalMembers (eval, build, isNew) values (2, 3, 0);
         insert into BuildInputs (build, name, type, dependency) values (2, 'legacy', 'build', 1);",
    )
    .await;
    let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
        .await
        .text();
    assert!(
        html.contains(r##"<a href="#tabs-usedby">Used by</a>"##),
        "{html}"
    );
    let section = &html[html.find(r#"id="tabs-usedby""#).unwrap()..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(
        section.contains(r#"<a href="/build/3">demo:trunk:slow build 3</a>"#),
        "{section}"
    );
    assert!(section.contains(r#"<td class="mono">hello</td><td class="mono">aarch64-linux</td>"#));
    assert!(section.contains(r#"<a href="/build/2">demo:trunk:broken build 2</a>"#));
    assert!(section.contains("legacy"));
    assert!(
        section.find("build 3").unwrap() < section.find("build 2").unwrap(),
        "newest first"
    );
    // A build nothing took has no such tab.
    let html = page(&app, &As::Anonymous, Method::GET, "/build/3")
        .await
        .text();
    assert!(!html.contains("tabs-usedby"));
}

#[tokio::test]
async fn a_jobset_says_who_turned_dynamic_runcommand_off() {
    let app = App::with_config("<dynamicruncommand>\nenable = 1\n</dynamicruncommand>\n").await;
    common::fixture(&app).await;
    let says = |html: &str| {
        let head = r#"<th scope="row">Dynamic RunCommand</th><td>"#;
        let rest = &html[html.find(head).unwrap() + head.len()..];
        rest[..rest.find("</td>").unwrap()].to_string()
    };
    let get = || async {
        page(&app, &As::Anonymous, Method::GET, "/jobset/demo/trunk")
            .await
            .text()
    };
    assert_eq!(says(&get().await), "No (disabled in project ‘demo’)");
    let owner = app.session("owner").await;
    let form = page(&app, &owner, Method::GET, "/jobset/demo/trunk/edit")
        .await
        .text();
    assert!(form.contains("Dynamic RunCommand is disabled in project ‘demo’."));
    app.exec("update Projects set enable_dynamic_run_command = true")
        .await;
    assert_eq!(says(&get().await), "No (disabled in this jobset)");
    let form = page(&app, &owner, Method::GET, "/jobset/demo/trunk/edit")
        .await
        .text();
    assert!(
        form.contains(r#"name="enable_dynamic_run_command" value="1">"#),
        "allowed now"
    );
    app.exec("update Jobsets set enable_dynamic_run_command = true")
        .await;
    assert_eq!(says(&get().await), "Yes");
}

#[tokio::test]
async fn administrators_reset_passwords_and_accounts_are_deleted_from_their_page() {
    let app = App::new().await;
    common::fixture(&app).await;
    let admin = app.session("admin").await;
    let owner = app.session("owner").await;
    let html = page(&app, &admin, Method::GET, "/user/owner").await.text();
    assert!(html.contains(r#"action="/user/owner/reset-password""#));
    assert!(html.contains(r#"action="/user/owner/delete" data-confirm="#));
    let html = page(&app, &owner, Method::GET, "/user/owner").await.text();
    assert!(!html.contains("reset-password"), "for administrators");

    // A reset: a new password shown once; the old sessions end; it works.
    let r = submit(&app, &owner, "/user/owner/reset-password", "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = submit(&app, &admin, "/user/owner/reset-password", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    let password = html
        .split(r#"<code class="token" data-copy=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 20, "{html}");
    let me = app.send(&owner, Method::GET, "/current-user", None).await;
    assert_eq!(me.status, StatusCode::FORBIDDEN, "the old session ended");
    let login = app
        .send(
            &As::Anonymous,
            Method::POST,
            "/login",
            Some(serde_json::json!({"username": "owner", "password": password})),
        )
        .await;
    assert_eq!(login.status, StatusCode::FOUND, "{}", login.text());

    // Deleting: not an account that owns projects; an administrator goes
    // back to the users; one's own account signs out.
    let r = submit(&app, &admin, "/user/owner/delete", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text().contains("owns 1 project"), "{}", r.text());
    let r = submit(&app, &admin, "/user/nobody/delete", "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert!(r.header("location").unwrap().ends_with("/admin/users"));
    assert_eq!(
        app.scalar("select count(*) from Users where userName = 'nobody'")
            .await,
        0
    );
    let member = app.session("member").await;
    let r = submit(&app, &member, "/user/member/delete", "").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        r.header("set-cookie").unwrap().contains("Max-Age=0"),
        "signed out"
    );
    assert_eq!(
        app.scalar("select count(*) from Users where userName = 'member'")
            .await,
        0
    );
    let r = submit(&app, &member, "/user/restarter/delete", "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn hydras_tab_pieces_lead_to_the_tabs_in_the_page() {
    let app = App::new().await;
    common::fixture(&app).await;
    for (uri, to) in [
        (
            "/job/demo/trunk/hello/metric-tab",
            "/job/demo/trunk/hello#tabs-charts",
        ),
        (
            "/dashboard/owner/my-jobs-tab",
            "/dashboard/owner#tabs-my-jobs",
        ),
        (
            "/dashboard/owner/my-jobsets-tab",
            "/dashboard/owner#tabs-my-jobsets",
        ),
    ] {
        let r = page(&app, &As::Anonymous, Method::GET, uri).await;
        assert_eq!(r.status, StatusCode::FOUND, "{uri}");
        assert!(r.header("location").unwrap().ends_with(to), "{uri}");
    }
    let r = page(&app, &As::Anonymous, Method::GET, "/dashboard/owner/other").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = page(
        &app,
        &As::Anonymous,
        Method::GET,
        "/job/demo/nope/hello/metric-tab",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_action_says_what_it_did_on_the_page_it_leads_to_once() {
    let app = App::new().await;
    common::fixture(&app).await;
    let admin = app.session("admin").await;
    let As::Session(session) = &admin else {
        unreachable!()
    };
    let r = submit(&app, &admin, "/build/2/restart", "").await;
    assert_eq!(r.status, StatusCode::FOUND);
    let set = r.header("set-cookie").unwrap();
    let flash = set
        .strip_prefix("hydra_flash=")
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_string();
    let with_flash = |accept: &str| {
        Request::get("/build/2")
            .header(header::HOST, HOST)
            .header(header::ACCEPT, accept.to_string())
            .header(
                header::COOKIE,
                format!("hydra_session={session}; hydra_flash={flash}"),
            )
            .body(Body::empty())
            .unwrap()
    };
    // An API client's answer neither shows nor spends it.
    let r = app.raw(with_flash("application/json")).await;
    assert!(r.header("set-cookie").is_none());
    let r = app.raw(with_flash("text/html")).await;
    let html = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        html.contains(
            r#"<div class="flash alert ok" role="status">1 build has been restarted.</div>"#
        ),
        "{html}"
    );
    assert!(
        r.header("set-cookie")
            .unwrap()
            .starts_with("hydra_flash=; Path=/; Max-Age=0"),
        "shown once"
    );
    // What the cookie says is text.
    let r = app
        .raw(
            Request::get("/")
                .header(header::HOST, HOST)
                .header(header::ACCEPT, "text/html")
                .header(header::COOKIE, "hydra_flash=%3Cscript%3Ex%3C%2Fscript%3E")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("&#60;script&#62;x&#60;/script&#62;") && !html.contains("<script>x"));
}

#[tokio::test]
async fn an_aggregate_jobs_page_shows_its_constituents_in_its_latest_builds() {
    let app = App::new().await;
    common::fixture(&app).await;
    // Build 4 (`all`) aggregates 1 (hello) and 2 (broken).
    let html = page(&app, &As::Anonymous, Method::GET, "/job/demo/trunk/all")
        .await
        .text();
    assert!(
        html.contains(r##"<a href="#tabs-constituents">Constituents</a>"##),
        "{html}"
    );
    let section = &html[html.find(r#"id="tabs-constituents""#).unwrap()..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(section.contains("the 1 latest builds of this job"));
    assert!(
        section.contains(r#"<a href="/build/4" title="Build 4: "#),
        "{section}"
    );
    let broken = &section[section
        .find(r#"<a href="/job/demo/trunk/broken">"#)
        .unwrap()..];
    assert!(
        broken.contains(r#"<a href="/build/2"><img src="/static/images/emojione-red-x-274c.svg""#),
        "{section}"
    );
    assert!(
        section.find("/job/demo/trunk/broken").unwrap()
            < section.find("/job/demo/trunk/hello").unwrap(),
        "by name"
    );
}

#[tokio::test]
async fn a_run_command_hook_build_says_whether_and_why_not_its_output_runs() {
    for (conf, project, jobset, expected) in [
        ("", true, true, "No (disabled on this server)"),
        (
            "<dynamicruncommand>\nenable = 1\n</dynamicruncommand>\n",
            false,
            true,
            "No (disabled in project ‘demo’)",
        ),
        (
            "<dynamicruncommand>\nenable = 1\n</dynamicruncommand>\n",
            true,
            false,
            "No (disabled in this jobset)",
        ),
        (
            "<dynamicruncommand>\nenable = 1\n</dynamicruncommand>\n",
            true,
            true,
            "Yes",
        ),
    ] {
        let app = App::with_config(conf).await;
        common::fixture(&app).await;
        app.exec(&format!(
            "update Builds set job = 'runCommandHook.deploy' where id = 1; \
             update Projects set enable_dynamic_run_command = {project}; \
             update Jobsets set enable_dynamic_run_command = {jobset}"
        ))
        .await;
        let html = page(&app, &As::Anonymous, Method::GET, "/build/1")
            .await
            .text();
        assert!(
            html.contains(&format!(
                "<tr><th scope=\"row\">Runs as a dynamic RunCommand</th><td>{expected}</td></tr>"
            )),
            "{expected}: {html}"
        );
        let other = page(&app, &As::Anonymous, Method::GET, "/build/2")
            .await
            .text();
        assert!(!other.contains("dynamic RunCommand"), "only for hook jobs");
    }
}
