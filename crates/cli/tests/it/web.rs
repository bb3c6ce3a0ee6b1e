//! The web server next to a real queue runner: a build that writes a line
//! per second is followed live over Server-Sent Events, the queue runner's
//! status and machines are read through the web server, and so is why a
//! queued build waits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hydra_config::Config;
use hydra_nix::env::NixEnv;
use hydra_queue_runner::Context;
use hydra_test_support::jobsets::{create_jobset, create_project, queue_build};
use hydra_test_support::{NixStore, TestDb, fixtures_dir, shared_tempdir};
use tokio_util::sync::CancellationToken;

const JOBS: &str = r#"
with import ./config.nix;
{
  talker = mkDerivation {
    name = "talker";
    builder = builtins.toFile "t.sh" "for i in 1 2 3 4 5; do echo \"line $i\"; sleep 1; done; echo done > $out";
  };
}
"#;

struct World {
    db: TestDb,
    store: NixStore,
    data: tempfile::TempDir,
    exprs: tempfile::TempDir,
    jobset: i32,
    stop: CancellationToken,
    web: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl World {
    /// A queue runner (building on `localhost`, a chroot store) and the web
    /// server, in this process, sharing a database and `HYDRA_DATA`.
    async fn start() -> World {
        let db = TestDb::new().await;
        let store = NixStore::new();
        let data = shared_tempdir();
        let exprs = shared_tempdir();
        std::fs::copy(
            fixtures_dir().join("config.nix"),
            exprs.path().join("config.nix"),
        )
        .unwrap();
        create_project(&db.pool, "p").await;
        let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
        let machines = data.path().join("machines");
        std::fs::write(&machines, "localhost x86_64-linux,builtin - 1 1 - - -\n").unwrap();
        let status = format!("127.0.0.1:{}", free_port());
        let text = format!(
            "gc_roots_dir = {}\nmachines_file = {}\nqueue_runner_metrics_address = {status}\n\
             queue_runner_endpoint = http://{status}\n",
            data.path().join("gcroots").display(),
            machines.display(),
        );
        let (config, _) = Config::load_str(&data.path().join("hydra.conf"), &text).unwrap();
        let (_, args, env) = store.serve_command();
        let local = NixEnv { args, env };
        let dest = hydra_store::open(&config.queue_runner.store_uri, &local).unwrap();
        let ctx = Context {
            pool: db.pool.clone(),
            config: Arc::new(config.clone()),
            data_dir: data.path().into(),
            local_root: local.detect_root(),
            local: local.clone(),
            dest: Arc::new(dest),
        };
        let stop = CancellationToken::new();
        let runner = tokio::spawn({
            let stop = stop.clone();
            async move { hydra_queue_runner::run(ctx, stop).await.unwrap() }
        });
        let state = hydra_server::AppState::new(
            db.pool.clone(),
            Arc::new(config.clone()),
            data.path().to_path_buf(),
            local,
        )
        .unwrap();
        let listener = hydra_server::bind("127.0.0.1:0").await.unwrap();
        let web = listener.local_addr().unwrap();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move { hydra_server::run(state, listener, stop).await.unwrap() }
        });
        World {
            db,
            store,
            data,
            exprs,
            jobset,
            stop,
            web,
            tasks: vec![runner, server],
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
        drop(self.data);
    }

    /// Opens `path` and returns the streaming response.
    async fn open(&self, path: &str) -> hyper::Response<hyper::body::Incoming> {
        self.open_as(path, "application/json").await
    }

    /// Opens `path` asking for `accept`.
    async fn open_as(&self, path: &str, accept: &str) -> hyper::Response<hyper::body::Incoming> {
        let stream = tokio::net::TcpStream::connect(self.web).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", self.web.to_string())
            .header("accept", accept)
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap()
    }

    /// The page at `path`, as a browser asks for it.
    async fn html(&self, path: &str) -> String {
        let body = self.open_as(path, "text/html").await.into_body();
        String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned()
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let body = self.open(path).await.into_body().collect().await.unwrap();
        serde_json::from_slice(&body.to_bytes()).unwrap()
    }

    async fn finished(&self, id: i32) -> bool {
        sqlx::query_scalar::<_, i32>("select finished from Builds where id = $1")
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
            == 1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_build_is_followed_line_by_line_over_server_sent_events() {
    let world = World::start().await;
    let file = world.exprs.path().join("jobs.nix");
    std::fs::write(&file, JOBS).unwrap();
    let id = queue_build(
        &world.db.pool,
        &world.store,
        world.jobset,
        &file,
        "talker",
        Default::default(),
    )
    .await;

    let response = world.open(&format!("/build/{id}/log/live")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    // (line, whether the build had finished when it arrived)
    let mut arrivals: Vec<(String, bool)> = Vec::new();
    let mut ended = false;
    while !ended {
        assert!(Instant::now() < deadline, "the stream did not end: {text}");
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("the stream stalled");
        let Some(frame) = frame else { break };
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        text.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: end") {
                ended = true;
                continue;
            }
            if let Some(line) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                arrivals.push((line.to_string(), world.finished(id).await));
            }
        }
    }
    assert!(ended, "the stream ends with an end event");
    assert!(
        world.finished(id).await,
        "the stream ended when the build did"
    );
    let lines: Vec<&str> = arrivals
        .iter()
        .map(|(l, _)| l.as_str())
        .filter(|l| l.starts_with("line "))
        .collect();
    assert_eq!(
        lines,
        vec!["line 1", "line 2", "line 3", "line 4", "line 5"],
        "every line, in order: {arrivals:?}"
    );
    let live = arrivals
        .iter()
        .filter(|(l, finished)| l.starts_with("line ") && !finished)
        .count();
    assert!(
        live >= 3,
        "lines arrive while the build runs, not at its end: {arrivals:?}"
    );
    let status: i32 = sqlx::query_scalar("select buildStatus from Builds where id = $1")
        .bind(id)
        .fetch_one(&world.db.pool)
        .await
        .unwrap();
    assert_eq!(status, 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_runner_status_and_machines_are_read_through_the_web_server() {
    let world = World::start().await;
    // The status endpoint starts with the queue runner.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = world.json("/queue-runner-status").await;
        if status["status"] != "unreachable" || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["status"], "up", "{status}");
    assert!(status.get("nrQueuedBuilds").is_some(), "{status}");
    let machines = world.json("/machines").await;
    assert!(
        machines["machines"].to_string().contains("localhost"),
        "{machines}"
    );
    assert_eq!(machines["steps"], serde_json::json!([]));
    world.stop().await;
}

const WAITING_JOBS: &str = r#"
with import ./config.nix;
rec {
  slow = mkDerivation {
    name = "slow";
    builder = builtins.toFile "s.sh" "sleep 15; echo done > $out";
  };
  other = mkDerivation {
    name = "other";
    builder = builtins.toFile "o.sh" "echo other > $out";
  };
  user = mkDerivation {
    name = "user";
    dep = slow;
    builder = builtins.toFile "u.sh" "echo $dep > $out";
  };
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_a_queued_build_waits_is_asked_of_the_queue_runner_through_the_web_server() {
    let world = World::start().await;
    let file = world.exprs.path().join("waiting.nix");
    std::fs::write(&file, WAITING_JOBS).unwrap();
    let queue = |attr: &'static str| {
        let file = file.clone();
        let world = &world;
        async move {
            queue_build(
                &world.db.pool,
                &world.store,
                world.jobset,
                &file,
                attr,
                Default::default(),
            )
            .await
        }
    };
    // The one slot is taken by `slow`; `other` waits for a slot, `user`
    // for `slow`.
    let slow = queue("slow").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let why = world.json(&format!("/build/{slow}/waiting")).await;
        if why["reason"] == "building" {
            assert_eq!(why["sentence"], "It is being built on localhost.");
            break;
        }
        assert!(Instant::now() < deadline, "slow never started: {why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = queue("other").await;
    let user = queue("user").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (other_why, user_why) = loop {
        let other_why = world.json(&format!("/build/{other}/waiting")).await;
        let user_why = world.json(&format!("/build/{user}/waiting")).await;
        if other_why["reason"] != "not-loaded" && user_why["reason"] != "not-loaded" {
            break (other_why, user_why);
        }
        assert!(
            Instant::now() < deadline,
            "not loaded: {other_why} {user_why}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(other_why["reason"], "machines-busy", "{other_why}");
    assert_eq!(
        other_why["sentence"],
        "Every slot for x86_64-linux is taken (1 slot on 1 machine); 0 steps go first."
    );
    assert_eq!(user_why["reason"], "dependencies", "{user_why}");
    assert_eq!(
        user_why["sentence"],
        "It waits for 1 dependency to be built first: 1 building, 0 runnable."
    );
    assert_eq!(user_why["blocking"][0]["state"], "building");
    assert!(
        user_why["blocking"][0]["drvPath"]
            .as_str()
            .unwrap()
            .ends_with("-slow.drv"),
        "{user_why}"
    );
    // The build's page says it too.
    let page = world.html(&format!("/build/{user}")).await;
    assert!(
        page.contains("It waits for 1 dependency to be built first"),
        "{page}"
    );
    assert!(
        page.contains(r#"<span class="mono">slow</span> building on localhost"#),
        "{page}"
    );
    // The queue runner predicts when it finishes: after `slow`, which
    // is building, and records the prediction; the page shows it.
    let user_id = hydra_db::ids::BuildId(user);
    let deadline = Instant::now() + Duration::from_secs(30);
    let eta = loop {
        if let Some(eta) = hydra_db::etas::latest(&world.db.pool, user_id)
            .await
            .unwrap()
        {
            break eta;
        }
        assert!(Instant::now() < deadline, "no prediction recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        eta.low <= eta.finish_at && eta.finish_at <= eta.high,
        "{eta:?}"
    );
    assert!(eta.finish_at > eta.made_at, "{eta:?}");
    let why = world.json(&format!("/build/{user}/waiting")).await;
    let slow_done = why["blocking"][0]["eta"]["finishAt"].as_i64().unwrap_or(0);
    assert!(
        why["eta"]["finishAt"].as_i64().unwrap_or(0) > slow_done && slow_done > 0,
        "the build finishes after the step it waits for: {why}"
    );
    let page = world.html(&format!("/build/{user}")).await;
    assert!(page.contains(r#"<th scope="row">Expected</th>"#), "{page}");
    assert!(page.contains(", finishes ~"), "{page}");
    // Its graph: `slow` building, itself to build, each with the end the
    // queue runner expects; the critical path through both.
    let graph = world.json(&format!("/build/{user}/graph")).await;
    let nodes = graph["graph"]["nodes"].as_array().unwrap();
    let node = |suffix: &str| {
        nodes
            .iter()
            .find(|n| n["drvPath"].as_str().unwrap().ends_with(suffix))
            .unwrap()
            .clone()
    };
    assert_eq!(node("-slow.drv")["state"], "building", "{graph}");
    assert_eq!(node("-user.drv")["state"], "queued", "{graph}");
    assert!(
        node("-user.drv")["end"].as_i64().unwrap() > node("-slow.drv")["end"].as_i64().unwrap(),
        "{graph}"
    );
    assert_eq!(graph["graph"]["criticalPath"].as_array().unwrap().len(), 2);
    // In a browser: the page shows when it is expected, and follows the
    // build to its end without being reloaded.
    let url = format!("http://{}/build/{user}", world.web);
    tokio::task::block_in_place(|| {
        let browser = hydra_test_support::Browser::start();
        browser.goto(&url);
        let eta = browser.execute("return document.querySelector('td.eta').innerText");
        assert!(
            eta.as_str().unwrap_or_default().contains(", finishes ~"),
            "{eta}"
        );
        browser.execute("window.stayed = true");
        let deadline = Instant::now() + Duration::from_secs(120);
        while browser.execute("return document.querySelector('td.status').innerText")
            != serde_json::json!("Success")
        {
            assert!(Instant::now() < deadline, "{}", browser.text());
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(
            browser.execute("return window.stayed === true && !document.querySelector('td.eta')"),
            serde_json::json!(true),
            "updated in place, the prediction gone"
        );
    });
    // Once built, it is not queued any more.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !world.finished(user).await {
        assert!(Instant::now() < deadline, "user never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = world.open(&format!("/build/{user}/waiting")).await;
    assert_eq!(response.status(), 404);
    // The predictions stay beside the outcome, to measure their error.
    let outcomes = hydra_db::etas::outcomes(&world.db.pool, &[user_id])
        .await
        .unwrap();
    assert!(!outcomes.is_empty());
    assert!(
        outcomes.iter().all(|o| o.stop_time.is_some()),
        "{outcomes:?}"
    );
    world.stop().await;
}
