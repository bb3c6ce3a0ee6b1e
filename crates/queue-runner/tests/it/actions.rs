//! What users do to queued builds: cancel (the running step is killed),
//! bump (the queue reorders at once); and the status endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use hydra_db::ids::BuildId;

use std::time::{Duration, Instant};

use common::{Recorder, Running, Setup};

const JOBS: &str = r#"
with import ./config.nix;
let sleeper = name: seconds: mkDerivation {
  inherit name;
  builder = builtins.toFile "${name}.sh" "sleep ${seconds}; mkdir $out";
};
in {
  long = sleeper "long" "37.25";
  blocker = sleeper "blocker" "1.5";
  first = sleeper "first" "0.2";
  second = sleeper "second" "0.2";
  third = sleeper "third" "0.2";
}
"#;

fn processes_matching(pattern: &str) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

async fn wait_until(s: &Setup, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.scalar(sql).await == 0 {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cancelling_a_build_kills_its_running_step() {
    let s = Setup::new().await;
    let file = s.write("jobs.nix", JOBS);
    let long = s.queue(&file, "long").await;
    let running = Running::start(s.context(&s.localhost(1), ""));
    wait_until(
        &s,
        &format!("select count(*) from BuildSteps where build = {long} and busy = 30"),
        "the build to start",
    )
    .await;
    // `busy = 30` is recorded when the derivation is handed to the machine;
    // the builder process itself starts a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_matching("sleep 37.25") == 0 {
        assert!(Instant::now() < deadline, "the builder never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    hydra_db::builds::cancel_builds(&s.db.pool, &[BuildId(long)])
        .await
        .unwrap();
    wait_until(
        &s,
        &format!(
            "select count(*) from BuildSteps where build = {long} and busy = 0 and status = 4"
        ),
        "the step to be cancelled",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_matching("sleep 37.25") > 0 {
        assert!(Instant::now() < deadline, "the builder was not killed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = s.build(long).await;
    assert_eq!((row.finished, row.status), (1, Some(4)));
    running.stop().await;
}

#[tokio::test]
async fn a_bumped_build_is_the_next_to_start() {
    let s = Setup::new().await;
    let file = s.write("jobs.nix", JOBS);
    let blocker = s.queue(&file, "blocker").await;
    let running = Running::start(s.context(&s.localhost(1), ""));
    wait_until(
        &s,
        &format!("select count(*) from BuildSteps where build = {blocker} and busy = 30"),
        "the blocker to start",
    )
    .await;
    let first = s.queue(&file, "first").await;
    let second = s.queue(&file, "second").await;
    let third = s.queue(&file, "third").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rec = Recorder::new(&s.db, &["step_started"]).await;
    hydra_db::builds::bump_builds(&s.db.pool, &[BuildId(third)], 1000)
        .await
        .unwrap();
    s.wait(&[blocker, first, second, third], Duration::from_secs(60))
        .await;
    let started: Vec<i32> = rec
        .take()
        .await
        .into_iter()
        .map(|(_, p)| p.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(started, [third, first, second]);
    running.stop().await;
}

#[tokio::test]
async fn the_status_endpoint_reports_the_queue_and_machines() {
    let s = Setup::new().await;
    let file = s.write("jobs.nix", JOBS);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let first = s.queue(&file, "first").await;
    let running = Running::start(s.context(
        &s.localhost(1),
        &format!("queue_runner_metrics_address = 127.0.0.1:{port}"),
    ));
    s.wait(&[first], Duration::from_secs(60)).await;
    let body = get(port, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["status"], "up");
    assert_eq!(status["nrBuildsDone"], 1);
    assert_eq!(status["nrStepsDone"], 1);
    assert_eq!(status["machines"]["localhost"]["nrStepsDone"], 1);
    assert_eq!(status["machines"]["localhost"]["currentJobs"], 0);
    let metrics = get(port, "/metrics").await;
    assert!(
        metrics.contains("hydraqueuerunner_builds_finished 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hydraqueuerunner_machine_steps_done{machine=\"localhost\"} 1"),
        "{metrics}"
    );
    running.stop().await;
}

async fn get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}
