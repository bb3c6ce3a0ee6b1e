//! Notify benchmarks (figures, not tests), against a fresh database and a
//! recording HTTP server on 127.0.0.1 standing in for GitHub, Gitea,
//! Slack, InfluxDB and CircleCI (five plugins, plus the two always on):
//!
//! (a) throughput: `BENCH_EVENTS` (2000) builds finish at once; events
//!     per second from the first `build_finished` until every plugin's
//!     request arrived;
//! (b) latency at 100 builds/s for 10 s: from a build's `build_finished`
//!     (the commit that finishes it) to its GitHub commit status arriving,
//!     p50 / p99 / max.
//!
//! `cargo bench -p hydra-notify`; `BENCH_ONLY=a|b` runs one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hydra_notify::{Context, Options};
use hydra_test_support::TestDb;
use hydra_test_support::http::Recorder;
use hydra_test_support::jobsets::{EvalInput, create_eval, create_jobset, create_project};
use tokio_util::sync::CancellationToken;

const REV: &str = "0123456789abcdef0123456789abcdef01234567";
/// Requests each finished build causes: GitHub, Gitea, Slack, InfluxDB,
/// CircleCI.
const PER_BUILD: usize = 5;

/// A jobset whose evaluation 1 has `n` queued builds (ids 1..=n).
async fn fixture(db: &TestDb, n: i32, recorder: &Recorder) {
    let gitea = format!("{}/gitea", recorder.url());
    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    create_eval(
        &db.pool,
        jobset,
        1,
        &[
            EvalInput::Revision("src", "git", "https://github.com/owner/repo.git", REV),
            EvalInput::Text("gitea_status_repo", "src"),
            EvalInput::Text("gitea_repo_owner", "owner"),
            EvalInput::Text("gitea_repo_name", "repo"),
            EvalInput::Text("gitea_http_url", &gitea),
        ],
    )
    .await;
    sqlx::query(
        "insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, isCurrent) \
         select i, 0, 1, $1, 'job' || i, 'job' || i, '/nix/store/' || lpad(i::text, 32, 'a') || '-job.drv', \
           'x86_64-linux', 1 from generate_series(1, $2) i",
    )
    .bind(jobset)
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into JobsetEvalMembers (eval, build, isNew) select 1, i, 1 from generate_series(1, $1) i",
    )
    .bind(n)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Database connections notify gets (as `hydra notify` opens).
fn connections() -> u32 {
    std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

async fn context(db: &TestDb, recorder: &Recorder, data: &std::path::Path) -> Context {
    let url = recorder.url();
    let text = format!(
        "base_uri = https://hydra.example.org\n\
         github_api_url = {url}/github\n\
         <github_authorization>\nowner = token t\n</github_authorization>\n\
         <githubstatus>\njobs = .*\ninputs = src\n</githubstatus>\n\
         <gitea_authorization>\nowner = t\n</gitea_authorization>\n\
         <slack>\njobs = .*\nurl = {url}/slack\n</slack>\n\
         <influxdb>\nurl = {url}/influx\ndb = hydra\n</influxdb>\n\
         circleci_api_url = {url}/circle\n\
         <circleci>\njobs = .*\nvcstype = github\nusername = u\nproject = p\nbranch = main\ntoken = t\n</circleci>\n"
    );
    let (config, _) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), &text).unwrap();
    let pool = hydra_db::connect(db.connect_options(), connections(), Duration::ZERO)
        .await
        .unwrap();
    Context {
        pool,
        config: Arc::new(config),
        data_dir: hydra_config::DataDir::from(data),
        local_root: None,
    }
}

async fn start(db: &TestDb, cx: Context) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let plugins = hydra_notify::plugins::enabled(&cx.config, &cx.pool).unwrap();
    let names: Vec<&str> = plugins.list.iter().map(|p| p.name()).collect();
    println!("  plugins: {}", names.join(", "));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move {
            hydra_notify::run(cx, plugins, Options::default(), stop)
                .await
                .unwrap()
        }
    });
    db.wait_for_listener().await;
    (stop, running)
}

/// Waits (polling) until `n` requests arrived, up to `timeout`.
async fn arrived(recorder: &Recorder, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while recorder.requests().len() < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

async fn throughput() {
    let n: i32 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    println!(
        "(a) {n} builds finish at once, 5 plugins, {} connections",
        connections()
    );
    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let recorder = Recorder::start();
    fixture(&db, n, &recorder).await;
    let (stop, running) = start(&db, context(&db, &recorder, data.path()).await).await;
    sqlx::query(
        "update Builds set finished = 1, buildStatus = 0, startTime = 1, stopTime = 2, \
         notificationPendingSince = 2",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let started = Instant::now();
    sqlx::query("select pg_notify('build_finished', i::text) from generate_series(1, $1) i")
        .bind(n)
        .execute(&db.pool)
        .await
        .unwrap();
    let want = n as usize * PER_BUILD;
    let done = arrived(&recorder, want, Duration::from_secs(600)).await;
    let took = recorder
        .requests()
        .iter()
        .map(|r| r.at.saturating_duration_since(started))
        .max()
        .unwrap_or_default();
    println!(
        "  {} of {want} requests in {:.2} s: {:.0} events/s ({:.0} plugin requests/s)",
        recorder.requests().len(),
        took.as_secs_f64(),
        f64::from(n) / took.as_secs_f64(),
        recorder.requests().len() as f64 / took.as_secs_f64(),
    );
    assert!(done, "not every request arrived");
    stop.cancel();
    running.await.unwrap();
}

async fn latency() {
    const RATE: u32 = 100;
    const SECONDS: u32 = 10;
    let n = (RATE * SECONDS) as i32;
    println!("(b) {RATE} builds/s for {SECONDS} s: build_finished to GitHub status");
    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let recorder = Recorder::start();
    fixture(&db, n, &recorder).await;
    let (stop, running) = start(&db, context(&db, &recorder, data.path()).await).await;
    let mut sent = Vec::with_capacity(n as usize);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
    for id in 1..=n {
        tick.tick().await;
        sqlx::query(
            "with done as (update Builds set finished = 1, buildStatus = 0, startTime = 1, \
               stopTime = 2, notificationPendingSince = 2 where id = $1 returning id) \
             select pg_notify('build_finished', id::text) from done",
        )
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
        sent.push(Instant::now());
    }
    let done = arrived(&recorder, n as usize * PER_BUILD, Duration::from_secs(120)).await;
    let mut latencies: Vec<Duration> = recorder
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/github/"))
        .filter_map(|r| {
            let body = r.json();
            let context = body["context"].as_str()?;
            let id: usize = context.rsplit(':').next()?.parse().ok()?;
            Some(r.at.saturating_duration_since(sent[id - 1]))
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "  {} statuses: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pick(0.50).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );
    assert!(done, "not every request arrived");
    stop.cancel();
    running.await.unwrap();
}

fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if only.is_empty() || only == "a" {
            throughput().await;
        }
        if only.is_empty() || only == "b" {
            latency().await;
        }
    });
}
