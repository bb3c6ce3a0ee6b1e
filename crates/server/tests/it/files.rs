//! Logs and build products: plain and compressed logs, tails, `log_prefix`,
//! the live stream of a running step, product downloads with canonical
//! URLs, directory indexes, MIME types and sandboxing, and every way a
//! download path could try to leave its product.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::{App, As, HOST, fixture};
use futures_util::StreamExt;
use hydra_nix::env::NixEnv;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

const HELLO_DRV: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv";
const BROKEN_DRV: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-broken-1.0.drv";
const SLOW_DRV: &str = "cccccccccccccccccccccccccccccccc-slow-1.0.drv";
const HELLO_OUT: &str = "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hello-1.0";

/// An app over the fixture whose machine store is a directory we fill by
/// hand (`<root>/nix/store/...`).
async fn app(config: &str) -> (App, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let nix = NixEnv {
        args: vec!["--store".into(), root.path().display().to_string()],
        env: Vec::new(),
    };
    let app = App::with_nix(config, nix).await;
    fixture(&app).await;
    (app, root)
}

fn log_file(app: &App, drv_base: &str) -> PathBuf {
    hydra_config::DataDir::from(app.data.path()).build_log(&format!("/nix/store/{drv_base}"))
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

async fn compress(data: &[u8], kind: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match kind {
        "bz2" => {
            let mut e = async_compression::tokio::write::BzEncoder::new(&mut out);
            e.write_all(data).await.unwrap();
            e.shutdown().await.unwrap();
        }
        _ => {
            let mut e = async_compression::tokio::write::ZstdEncoder::new(&mut out);
            e.write_all(data).await.unwrap();
            e.shutdown().await.unwrap();
        }
    }
    out
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\n")).collect()
}

#[tokio::test]
async fn logs_are_served_plain_compressed_and_tailed_as_text() {
    let (app, _root) = app("").await;
    let hostile = "<script>alert('xss')</script>\n";
    let plain = format!("{}{hostile}", numbered(60));
    write(&log_file(&app, HELLO_DRV), plain.as_bytes());
    let broken = numbered(5);
    let mut bz2 = log_file(&app, BROKEN_DRV).into_os_string();
    bz2.push(".bz2");
    write(Path::new(&bz2), &compress(broken.as_bytes(), "bz2").await);
    let mut zst = log_file(&app, SLOW_DRV).into_os_string();
    zst.push(".zst");
    write(Path::new(&zst), &compress(b"zstd line\n", "zst").await);

    let r = app.get(&format!("/log/{HELLO_DRV}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), plain, "the log, byte for byte");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8"),
        "logs are never HTML, whatever they contain"
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );

    let r = app.get(&format!("/log/{HELLO_DRV}?tail=2")).await;
    assert_eq!(r.text(), format!("line 60\n{hostile}"));
    let r = app.get(&format!("/log/{HELLO_DRV}?tail=x")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = app.get(&format!("/log/{BROKEN_DRV}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), broken, "bzip2 logs are decompressed");
    let r = app.get(&format!("/log/{BROKEN_DRV}?tail=1")).await;
    assert_eq!(r.text(), "line 5\n");
    let r = app.get(&format!("/log/{SLOW_DRV}")).await;
    assert_eq!(r.text(), "zstd line\n", "zstd logs are decompressed");

    // Build and step routes.
    let r = app.get("/build/1/log/raw").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://hydra.test/log/{HELLO_DRV}")
    );
    let r = app.get("/build/1/log/tail").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text().lines().count(), 50, "tail mode shows 50 lines");
    assert!(r.text().ends_with(hostile));
    let r = app.get("/build/1/log/tail?tail=3").await;
    assert_eq!(r.text(), format!("line 59\nline 60\n{hostile}"));
    let r = app.get("/build/1/log").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["raw"],
        format!("http://hydra.test/log/{HELLO_DRV}")
    );
    assert_eq!(r.json()["available"], true);
    let r = app.get("/build/1/step/1/log/raw").await;
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://hydra.test/log/{HELLO_DRV}")
    );
    let r = app.get("/build/3/step/1/log/tail").await;
    assert_eq!(r.text(), "zstd line\n");
    let r = app.get("/build/1/nixlog/1/raw").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        r.header("location").unwrap(),
        "http://hydra.test/build/1/step/1/log/raw"
    );
    assert_eq!(
        app.get("/build/1/step/9/log").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/build/1/log/fancy").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/build/99/log").await.status, StatusCode::NOT_FOUND);

    // Not a derivation, or a path trick: refused.
    for bad in [
        "not-a-drv",
        "..%2F..%2Fetc%2Fpasswd",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
    ] {
        let r = app.get(&format!("/log/{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_missing_log_is_404_or_a_redirect_to_log_prefix() {
    let (app, _root) = app("").await;
    assert_eq!(
        app.get(&format!("/log/{HELLO_DRV}")).await.status,
        StatusCode::NOT_FOUND
    );
    let (app, _root) = app_with_prefix().await;
    let r = app.get(&format!("/log/{HELLO_DRV}")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").unwrap(),
        format!("https://cache.example.org/log/{HELLO_DRV}")
    );
}

async fn app_with_prefix() -> (App, tempfile::TempDir) {
    app("log_prefix = https://cache.example.org/\n").await
}

/// The events of an SSE body: (id, event, data) per event.
fn events(text: &str) -> Vec<(Option<String>, Option<String>, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut id = None;
            let mut event = None;
            let mut data: Option<String> = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data = Some(match data {
                        Some(d) => format!("{d}\n{v}"),
                        None => v.to_string(),
                    });
                }
            }
            data.map(|d| (id, event, d))
        })
        .collect()
}

#[tokio::test]
async fn the_live_log_of_a_finished_step_sends_everything_then_ends() {
    let (app, _root) = app("").await;
    write(&log_file(&app, HELLO_DRV), numbered(3).as_bytes());
    let r = app.get("/build/1/log/live").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let got = events(&r.text());
    assert_eq!(
        got,
        vec![
            (Some("1".into()), None, "line 1".into()),
            (Some("2".into()), None, "line 2".into()),
            (Some("3".into()), None, "line 3".into()),
            (None, Some("end".into()), "finished".into()),
        ]
    );
    // A client reconnecting after line 2 gets only what follows.
    let r = app
        .send_with(
            &As::Anonymous,
            Method::GET,
            "/build/1/step/1/log/live",
            None,
            &[("last-event-id", "2")],
        )
        .await;
    let got = events(&r.text());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (Some("3".into()), None, "line 3".into()));
}

#[tokio::test]
async fn the_live_log_of_a_running_step_follows_appends_until_the_step_finishes() {
    let (app, _root) = app("").await;
    let path = log_file(&app, SLOW_DRV);
    write(&path, b"first\n");
    let request = Request::get("/build/3/step/1/log/live")
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("the stream stalled")
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
    };
    while !seen.contains("data: first") {
        seen.push_str(&next().await.unwrap());
    }
    // The step writes more, part of a line first.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"second\nthi").unwrap();
    while !seen.contains("data: second") {
        seen.push_str(&next().await.unwrap());
    }
    assert!(!seen.contains("thi"), "half a line is not sent: {seen}");
    std::io::Write::write_all(&mut f, b"rd\nlast line without newline").unwrap();
    app.exec("update BuildSteps set busy = 0, status = 0, stopTime = 1700000100 where build = 3 and stepnr = 1")
        .await;
    while let Some(chunk) = next().await {
        seen.push_str(&chunk);
    }
    let data: Vec<String> = events(&seen).into_iter().map(|(_, _, d)| d).collect();
    assert_eq!(
        data,
        vec![
            "first",
            "second",
            "third",
            "last line without newline",
            "finished"
        ]
    );
}

/// Product 1 of build 1 is the directory `HELLO_OUT`; fills it.
fn fill_product(root: &Path) {
    let real = |p: &str| root.join(p.trim_start_matches('/'));
    let out = real(HELLO_OUT);
    write(&out.join("share/doc/readme.txt"), b"read me\n");
    write(
        &out.join("page.html"),
        b"<script>alert(document.cookie)</script>",
    );
    write(&out.join("hello.tar.gz"), b"\x1f\x8bnot really gzip");
    write(&out.join("site/index.html"), b"<h1>site</h1>");
    write(&out.join("docs/<img src=x onerror=alert(1)>.txt"), b"x");
    write(
        &real("/nix/store/ffffffffffffffffffffffffffffffff-hello-1.0-doc/secret"),
        b"other path",
    );
    write(&root.join("outside-secret"), b"not in the store");
    let link = |name: &str, target: &str| {
        std::os::unix::fs::symlink(target, out.join(name)).unwrap();
    };
    link("link-inside", "share/doc/readme.txt");
    link("link-abs-inside", &format!("{HELLO_OUT}/page.html"));
    link("link-dir", "share");
    link("escape-abs", "/etc/passwd");
    link("escape-rel", "../../../outside-secret");
    link(
        "escape-store",
        "/nix/store/ffffffffffffffffffffffffffffffff-hello-1.0-doc/secret",
    );
    link("escape-prefix", &format!("{HELLO_OUT}-doc/secret"));
    link("loop", "loop");
}

#[tokio::test]
async fn products_are_served_with_canonical_urls_indexes_and_sandboxing() {
    let (app, root) = app("").await;
    fill_product(root.path());

    let r = app.get("/build/1/download/1").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").unwrap(),
        "http://hydra.test/build/1/download/1/hello-1.0"
    );
    let r = app.get("/build/1/download/1/hello-1.0").await;
    assert_eq!(
        r.status,
        StatusCode::FOUND,
        "directories get a trailing slash"
    );
    assert_eq!(
        r.header("location").unwrap(),
        "/build/1/download/1/hello-1.0/"
    );
    let r = app.get("/build/1/download/1/hello-1.0/").await;
    assert_eq!(r.status, StatusCode::OK);
    let listing = r.text();
    assert!(listing.contains("href=\"page.html\""), "{listing}");
    assert!(listing.contains("href=\"share/\""), "{listing}");
    let r = app.get("/build/1/download/1/hello-1.0/docs/").await;
    assert!(
        r.text().contains("&lt;img src=x onerror=alert(1)&gt;.txt") && !r.text().contains("<img"),
        "names in an index are escaped: {}",
        r.text()
    );
    assert_eq!(
        r.header("content-security-policy").as_deref(),
        Some("sandbox allow-scripts")
    );
    let r = app.get("/build/1/download/1/hello-1.0/site/").await;
    assert_eq!(
        r.text(),
        "<h1>site</h1>",
        "index.html is served for a directory"
    );

    let r = app.get("/build/1/download/1/hello-1.0/page.html").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        r.header("content-security-policy").as_deref(),
        Some("sandbox allow-scripts"),
        "an HTML product cannot act as this site"
    );
    assert_eq!(
        r.header("last-modified").as_deref(),
        Some("Tue, 14 Nov 2023 22:13:40 GMT"),
        "the build's stop time"
    );
    let r = app
        .get("/build/1/download/1/hello-1.0/share/doc/readme.txt")
        .await;
    assert_eq!(r.text(), "read me\n");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(r.header("content-length").as_deref(), Some("8"));

    // Symlinks inside the product are followed.
    for (url, body) in [
        ("link-inside", "read me\n"),
        ("link-abs-inside", "<script>alert(document.cookie)</script>"),
        ("link-dir/doc/readme.txt", "read me\n"),
    ] {
        let r = app
            .get(&format!("/build/1/download/1/hello-1.0/{url}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.text(), body, "{url}");
    }

    // A file product: its name is the canonical URL.
    let r = app.get("/build/1/download/2").await;
    assert_eq!(
        r.header("location").unwrap(),
        "http://hydra.test/build/1/download/2/hello.tar.gz"
    );
    let r = app.get("/build/1/download/2/hello.tar.gz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/gzip")
    );
    assert_eq!(r.body, b"\x1f\x8bnot really gzip");
    // By name, and by type.
    let r = app.get("/build/1/download/hello.tar.gz").await;
    assert_eq!(
        r.header("location").unwrap(),
        "http://hydra.test/build/1/download/2/hello.tar.gz"
    );
    let r = app.get("/build/1/download-by-type/file/source-dist").await;
    assert_eq!(
        r.header("location").unwrap(),
        "http://hydra.test/build/1/download/2/hello.tar.gz"
    );
    let r = app
        .get("/job/demo/trunk/hello/latest/download-by-type/file/source-dist")
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").unwrap(),
        "http://hydra.test/build/1/download-by-type/file/source-dist"
    );
    assert_eq!(
        app.get("/build/1/download/7").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/build/1/download-by-type/file/binary-dist")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/build/1/download/1/hello-1.0/nothing-here")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn download_paths_never_leave_the_product() {
    let (app, root) = app("").await;
    fill_product(root.path());
    for url in [
        "escape-abs",
        "escape-rel",
        "escape-store",
        "escape-prefix",
        "share/../../ffffffffffffffffffffffffffffffff-hello-1.0-doc/secret",
        "share/%2e%2e/%2e%2e/ffffffffffffffffffffffffffffffff-hello-1.0-doc/secret",
        "..%2f..%2fffffffffffffffffffffffffffffffff-hello-1.0-doc%2fsecret",
        "share/..%5c..%5csecret",
    ] {
        let r = app
            .get(&format!("/build/1/download/1/hello-1.0/{url}"))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{url}: {}", r.text());
        assert!(!r.text().contains("other path") && !r.text().contains("root:"));
    }
    // An absolute path is taken inside the product.
    let r = app.get("/build/1/download/1/hello-1.0//etc/passwd").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/build/1/download/1/hello-1.0/loop").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "symlink loops end");
}

#[tokio::test]
async fn a_garbage_collected_product_is_gone() {
    let (app, _root) = app("").await;
    let r = app.get("/build/1/download/2/hello.tar.gz").await;
    assert_eq!(r.status, StatusCode::GONE, "{}", r.text());
}

#[tokio::test]
async fn a_products_contents_are_listed_with_links_and_escaped_names() {
    let (app, root) = app("").await;
    fill_product(root.path());
    let r = app.get("/build/1/contents/1").await;
    assert_eq!(r.status, StatusCode::OK);
    let json = r.json();
    assert_eq!(json["directory"], true);
    let files: Vec<String> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        files.contains(&"share/doc/readme.txt".to_string()),
        "{files:?}"
    );
    let link = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "escape-abs")
        .unwrap()
        .clone();
    assert_eq!(
        (link["kind"].as_str(), link["target"].as_str()),
        (Some("symlink"), Some("/etc/passwd"))
    );
    let request = Request::get("/build/1/contents/1")
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    let html = String::from_utf8(app.raw(request).await.body).unwrap();
    assert!(html.contains(r#"<a href="/build/1/download/1/hello-1.0/share/doc/readme.txt">share/doc/readme.txt</a>"#), "{html}");
    assert!(html.contains("docs/&#60;img src=x onerror=alert(1)&#62;.txt"));
    assert!(!html.contains("<img src=x"));
    assert_eq!(
        app.get("/build/1/contents/9").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_build_dependencies_are_a_tree_read_from_the_stores_derivations() {
    let (app, root) = app("").await;
    let real = |p: &str| root.path().join(p.trim_start_matches('/'));
    let lib = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-lib-2.drv";
    let hello = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv";
    write(
        &real(lib),
        br#"Derive([("out","/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-lib-2","","")],[],[],"x86_64-linux","/bin/sh",[],[("out","/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk-lib-2")])"#,
    );
    write(
        &real(hello),
        format!(
            r#"Derive([("out","{HELLO_OUT}","","")],[("{lib}",["out"])],[],"x86_64-linux","/bin/sh",[],[("out","{HELLO_OUT}")])"#
        )
        .as_bytes(),
    );
    app.exec(&format!(
        "insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system)
           values (2, 5, 0, '{lib}', 0, 0, 1700000010, 1700000020, 'localhost', 'x86_64-linux')"
    ))
    .await;
    let json = app.get("/build/1/build-deps").await.json();
    assert_eq!(json["available"], true);
    assert_eq!(json["tree"]["name"], "hello-1.0");
    assert_eq!(json["tree"]["children"][0]["name"], "lib-2");
    assert_eq!(
        json["tree"]["children"][0]["step"],
        serde_json::json!([2, 5])
    );
    let request = Request::get("/build/1/build-deps")
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    let html = String::from_utf8(app.raw(request).await.body).unwrap();
    assert!(
        html.contains(r#"<a href="/build/2/step/5">lib-2</a>"#),
        "{html}"
    );
    // A derivation the store does not have.
    let json = app.get("/build/2/build-deps").await.json();
    assert_eq!(json["available"], false);
}

#[tokio::test]
async fn a_builds_steps_are_a_graph_coloured_by_state_with_the_critical_path() {
    let (app, root) = app("").await;
    let real = |p: &str| root.path().join(p.trim_start_matches('/'));
    let drv = |c: char, name: &str| format!("/nix/store/{}-{name}.drv", c.to_string().repeat(32));
    let (cc, lib, tool) = (drv('c', "cc-1"), drv('b', "lib-2"), drv('d', "tool-3"));
    let hello = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv";
    let derive = |out: &str, inputs: &[&str]| {
        let inputs: Vec<String> = inputs
            .iter()
            .map(|i| format!(r#"("{i}",["out"])"#))
            .collect();
        format!(
            r#"Derive([("out","{out}","","")],[{}],[],"x86_64-linux","/bin/sh",[],[("out","{out}")])"#,
            inputs.join(",")
        )
    };
    write(
        &real(&cc),
        derive("/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk1-cc-1", &[]).as_bytes(),
    );
    write(
        &real(&lib),
        derive("/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk2-lib-2", &[&cc]).as_bytes(),
    );
    write(
        &real(&tool),
        derive("/nix/store/kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk3-tool-3", &[&cc]).as_bytes(),
    );
    write(&real(hello), derive(HELLO_OUT, &[&lib, &tool]).as_bytes());
    // cc built in 100 s and lib in 10 s (build 2); tool building for a
    // minute (build 1); hello not started.
    app.exec(&format!(
        "delete from BuildSteps where drvPath = '{hello}'; \
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system) values \
           (2, 5, 0, '{cc}', 0, 0, 1700000000, 1700000100, 'localhost', 'x86_64-linux'), \
           (2, 6, 0, '{lib}', 0, 0, 1700000100, 1700000110, 'localhost', 'x86_64-linux'), \
           (1, 9, 0, '{tool}', 1, null, extract(epoch from now())::integer - 60, null, 'localhost', 'x86_64-linux')"
    ))
    .await;
    let json = app.get("/build/1/graph").await.json();
    assert_eq!(json["available"], true, "{json}");
    let g = &json["graph"];
    let nodes: Vec<(String, String)> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        nodes,
        pairs(&[
            ("cc-1", "done"),
            ("lib-2", "done"),
            ("tool-3", "building"),
            ("hello-1.0", "queued")
        ])
    );
    let name = |i: &serde_json::Value| {
        g["nodes"][i.as_u64().unwrap() as usize]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut edges: Vec<(String, String)> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (name(&e[0]), name(&e[1])))
        .collect();
    edges.sort();
    assert_eq!(
        edges,
        pairs(&[
            ("cc-1", "lib-2"),
            ("cc-1", "tool-3"),
            ("lib-2", "hello-1.0"),
            ("tool-3", "hello-1.0")
        ])
    );
    assert_eq!(g["criticalPath"], serde_json::json!([cc, tool, hello]));
    let request = Request::get("/build/1/graph")
        .header(header::HOST, HOST)
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    let html = String::from_utf8(app.raw(request).await.body).unwrap();
    assert!(html.contains(r#"<svg class="dep-graph""#), "{html}");
    assert!(
        html.contains(r#"<a href="/build/1/nixlog/9"><g class="node state-building critical""#),
        "{html}"
    );
    assert!(
        html.contains(r#"<a href="/build/2/nixlog/6"><g class="node state-done""#),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"mono\">cc-1</span> <span class=\"muted\">(1m\u{a0}40s)</span> → <span class=\"mono\">tool-3</span>"),
        "{html}"
    );
    // A build whose derivation the store lacks says so.
    let json = app.get("/build/2/graph").await.json();
    assert_eq!(json["available"], false);
}
