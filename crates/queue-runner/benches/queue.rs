//! Queue runner benchmarks (figures, not tests), each against a fresh
//! chroot store and database:
//!
//! (a) a DAG of 300 trivial derivations, queued as 300 builds, from
//!     `builds_added` to all finished, next to `nix-build` of the same
//!     attribute set with the same `--max-jobs`;
//! (b) idle dispatch latency: a build is queued while nothing runs; time
//!     until its step starts (`step_started`), p50 and p99 of 200;
//! (c) 500,000 queued builds (`BENCH_BUILDS`) sharing dependencies as a
//!     package set does (each build needs two of 1,000 shared libraries,
//!     which need one of 10 toolchains): time from start to the first
//!     dispatch and until every build is loaded, with the process's
//!     resident memory at each (the queue runner runs inside it).
//!
//! (d) how well finish times are predicted: a generated package set (50
//!     derivations in 5 layers, each sleeping a known 4–16 s, ±15 % from
//!     run to run) is built twice by the real queue runner on a local
//!     machine with 5 slots; the first run is the history, the second is
//!     measured. Every 2 s each queued build's prediction is read from the
//!     queue runner; once 20 % of the run has passed, the median absolute
//!     error of the builds' and of the whole set's predicted finish is
//!     printed as a share of the time that was actually left (budget
//!     < 25 %), and the same for the predictions recorded in `BuildEtas`.
//!
//! `cargo bench -p hydra-queue-runner`; `BENCH_ONLY=a|b|c|d` runs one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hydra_config::Config;
use hydra_db::{Listener, Wakeup};
use hydra_metrics::resident_memory;
use hydra_nix::env::NixEnv;
use hydra_queue_runner::Context;
use hydra_test_support::jobsets::{create_jobset, create_project};
use hydra_test_support::{NixStore, TestDb};
use tokio_util::sync::CancellationToken;

const JOBS: u32 = 2;

fn context(db: &TestDb, store: &NixStore, data: &Path) -> Context {
    context_with(db, store, data, JOBS)
}

fn context_with(db: &TestDb, store: &NixStore, data: &Path, jobs: u32) -> Context {
    std::fs::write(
        data.join("machines"),
        format!("localhost x86_64-linux - {jobs} 1 - - -\n"),
    )
    .unwrap();
    let text = format!(
        "gc_roots_dir = {}\nmachines_file = {}\nqueue_runner_metrics_address = 127.0.0.1:0\n",
        data.join("roots").display(),
        data.join("machines").display()
    );
    let (config, _) = Config::load_str(&data.join("hydra.conf"), &text).unwrap();
    let (_, args, env) = store.serve_command();
    let local = NixEnv { args, env };
    let dest = hydra_store::open("auto", &local).unwrap();
    Context {
        pool: db.pool.clone(),
        config: Arc::new(config),
        data_dir: data.into(),
        local_root: local.detect_root(),
        local,
        dest: Arc::new(dest),
    }
}

fn salt() -> String {
    format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// 300 derivations in 30 layers of 10, each needing two of the layer
/// before.
fn dag(salt: &str) -> String {
    format!(
        r#"
let
  mk = name: deps: derivation {{
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${{name}} {salt} $deps > $out" ];
    deps = deps;
  }};
  prev = l: i: builtins.elemAt (builtins.elemAt layers (l - 1)) i;
  layer = l: builtins.genList (i: mk "n-${{toString l}}-${{toString i}}"
    (if l == 0 then [ ] else [ (prev l i) (prev l (if i == 9 then 0 else i + 1)) ])) 10;
  layers = builtins.genList layer 30;
  all = builtins.concatLists layers;
in builtins.listToAttrs (map (d: {{ name = d.name; value = d; }}) all)
"#
    )
}

/// Instantiates every attribute of `file` and queues each as a build.
async fn queue_all(db: &TestDb, store: &NixStore, jobset: i32, file: &Path) -> Vec<i32> {
    let out = store.run("nix-instantiate", &[file.to_str().unwrap()]);
    let drvs: Vec<String> = out.lines().map(String::from).collect();
    let mut systems = Vec::new();
    let mut outs = Vec::new();
    for drv in &drvs {
        let text = std::fs::read_to_string(store.real_path(drv)).unwrap();
        let d = hydra_nix::derivation::Derivation::parse(&text).unwrap();
        systems.push(d.platform.clone());
        outs.push(d.outputs["out"].path.clone());
    }
    let jobs: Vec<String> = (0..drvs.len()).map(|i| format!("job{i}")).collect();
    let outputs: Vec<std::collections::BTreeMap<String, Option<String>>> = outs
        .iter()
        .map(|o| [("out".to_string(), Some(o.clone()))].into())
        .collect();
    let builds: Vec<hydra_db::builds::NewBuild<'_>> = (0..drvs.len())
        .map(|i| hydra_db::builds::NewBuild {
            job: &jobs[i],
            nix_name: &jobs[i],
            description: None,
            drv_path: &drvs[i],
            system: &systems[i],
            license: None,
            homepage: None,
            maintainers: None,
            max_silent: None,
            timeout: None,
            is_channel: false,
            priority: 100,
            outputs: &outputs[i],
        })
        .collect();
    let mut conn = db.pool.acquire().await.unwrap();
    let ids = hydra_db::builds::reserve_ids(&mut conn, builds.len())
        .await
        .unwrap();
    hydra_db::builds::insert_queued(&mut conn, hydra_db::ids::JobsetId(jobset), 1, &builds, &ids)
        .await
        .unwrap();
    ids.into_iter().map(|id| id.0).collect()
}

/// Every build succeeded (a benchmark of failures would measure nothing).
async fn assert_all_succeeded(db: &TestDb) {
    let failed: i64 = sqlx::query_scalar("select count(*) from Builds where buildStatus <> 0")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(failed, 0);
}

async fn wait_all(db: &TestDb) {
    loop {
        let left: i64 = sqlx::query_scalar("select count(*) from Builds where finished = 0")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench_dag() {
    let db = TestDb::new().await;
    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    let data = hydra_test_support::temp_data_dir();
    let store = NixStore::new();
    let s = salt();
    let file = data.path().join("dag.nix");
    std::fs::write(&file, dag(&s)).unwrap();

    // nix-build of the same set in its own store.
    let reference = NixStore::new();
    let start = Instant::now();
    let out = reference
        .command("nix-build")
        .arg(&file)
        .args(["--no-out-link", "--max-jobs", &JOBS.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nix_build = start.elapsed();

    let ids = queue_all(&db, &store, jobset, &file).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hydra_queue_runner::run(
        context(&db, &store, data.path()),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    sqlx::query("notify builds_added")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_all(&db).await;
    let ours = start.elapsed();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_all_succeeded(&db).await;
    println!(
        "(a) DAG of {} derivations, max-jobs {JOBS}: queue runner {:.2} s, nix-build {:.2} s, ratio {:.2} (budget <= 1.2)",
        ids.len(),
        ours.as_secs_f64(),
        nix_build.as_secs_f64(),
        ours.as_secs_f64() / nix_build.as_secs_f64()
    );
}

async fn bench_latency() {
    let db = TestDb::new().await;
    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    let data = hydra_test_support::temp_data_dir();
    let store = NixStore::new();
    let s = salt();
    let n = 200;
    let file = data.path().join("single.nix");
    std::fs::write(
        &file,
        format!(
            r#"builtins.listToAttrs (builtins.genList (i: {{ name = "j${{toString i}}"; value = derivation {{
                 name = "single-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh";
                 args = [ "-c" "echo {s} ${{toString i}} > $out" ]; }}; }}) {n})"#
        ),
    )
    .unwrap();
    // Instantiate all, queue one at a time.
    let out = store.run("nix-instantiate", &[file.to_str().unwrap()]);
    let drvs: Vec<String> = out.lines().map(String::from).collect();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hydra_queue_runner::run(
        context(&db, &store, data.path()),
        shutdown.clone(),
    ));
    let mut listener = Listener::connect(&db.pool, &["step_started", "build_finished"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::new();
    for drv in &drvs {
        let d = hydra_nix::derivation::Derivation::parse(
            &std::fs::read_to_string(store.real_path(drv)).unwrap(),
        )
        .unwrap();
        let id = hydra_test_support::builds::TestBuild::new(jobset, "j")
            .nix_name(None)
            .drv(drv)
            .system(&d.platform)
            .priority(100)
            .output("out", &d.outputs["out"].path)
            .insert(&db.pool)
            .await;
        let start = Instant::now();
        sqlx::query("notify builds_added")
            .execute(&db.pool)
            .await
            .unwrap();
        let mut started = None;
        loop {
            match listener.recv().await.unwrap() {
                Wakeup::Notification { channel, payload }
                    if channel == "step_started" && payload.starts_with(&format!("{id}\t")) =>
                {
                    started = Some(start.elapsed());
                }
                Wakeup::Notification { channel, payload }
                    if channel == "build_finished" && payload == id.to_string() =>
                {
                    break;
                }
                _ => {}
            }
        }
        samples.push(started.unwrap());
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "(b) idle dispatch latency (queued -> step started), {} builds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (budget p99 < 50 ms)",
        samples.len(),
        p(0.5).as_secs_f64() * 1000.0,
        p(0.99).as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0
    );
}

async fn bench_many() {
    let n: usize = std::env::var("BENCH_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let db = TestDb::new().await;
    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    let data = hydra_test_support::temp_data_dir();
    let store = NixStore::new();
    let s = salt();
    let file = data.path().join("many.nix");
    std::fs::write(
        &file,
        format!(
            r#"
let
  mk = name: deps: derivation {{
    inherit name deps; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo {s} ${{name}} > $out" ];
  }};
  toolchains = builtins.genList (t: mk "toolchain-${{toString t}}" [ ]) 10;
  libs = builtins.genList (l: mk "lib-${{toString l}}" [ (builtins.elemAt toolchains (l - l / 10 * 10)) ]) 1000;
  lib = k: builtins.elemAt libs (k - k / 1000 * 1000);
in builtins.listToAttrs (builtins.genList (i: {{ name = "j${{toString i}}";
  value = mk "many-${{toString i}}" [ (lib i) (lib (i * 7 + 3)) ]; }}) {n})"#
        ),
    )
    .unwrap();
    let setup = Instant::now();
    let ids = queue_all(&db, &store, jobset, &file).await;
    println!(
        "(c) set-up: {} builds queued in {:.1} s",
        ids.len(),
        setup.elapsed().as_secs_f64()
    );
    let mut listener = Listener::connect(&db.pool, &["step_started"])
        .await
        .unwrap();
    let me = std::process::id();
    let memory = |pid| resident_memory(pid).unwrap_or_default();
    let before = memory(me);
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = status.local_addr().unwrap();
    let start = Instant::now();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hydra_queue_runner::run_with(
        context(&db, &store, data.path()),
        Some(status),
        shutdown.clone(),
    ));
    loop {
        if let Wakeup::Notification { .. } = listener.recv().await.unwrap() {
            break;
        }
    }
    let first = start.elapsed();
    let at_first = memory(me);
    let mib = |b: u64| b >> 20;
    println!(
        "(c) {} queued builds until the first dispatch: {:.2} s (budget < 5 s: {}); resident memory {} MiB before the queue runner started, {} MiB then",
        ids.len(),
        first.as_secs_f64(),
        if first.as_secs_f64() < 5.0 {
            "met"
        } else {
            "NOT met"
        },
        mib(before.0),
        mib(at_first.0),
    );
    // Until every build was read into the queue (the status says how
    // many), for at most 10 minutes; steps run meanwhile.
    let mut status = serde_json::Value::Null;
    let read = |s: &serde_json::Value| s["nrBuildsRead"].as_u64().unwrap_or(0);
    while read(&status) < ids.len() as u64 && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        status = runner_status(address).await;
    }
    let loaded = start.elapsed();
    let at_loaded = memory(me);
    // One prediction of the whole queue, once it is all read.
    let made = status["nrPredictions"].as_u64().unwrap_or(0);
    let mut after = status.clone();
    let waited = Instant::now();
    while after["nrPredictions"].as_u64().unwrap_or(0) <= made
        && waited.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = runner_status(address).await;
    }
    println!(
        "(c) a prediction of the whole queue ({} steps): {:.0} ms, {:.0} ms of it with the queue locked",
        after["nrUnfinishedSteps"],
        after["predictionTimeLastMs"].as_f64().unwrap_or(0.0),
        after["predictionLockTimeLastMs"].as_f64().unwrap_or(0.0),
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let grown = at_loaded.1.saturating_sub(before.0);
    println!(
        "(c) {} of {} builds read after {:.1} s ({} in the queue, {} steps, {} runnable, {} builds done; {} dispatcher passes, {:.2} ms each on average; {} predictions of the queue, {:.0} ms each on average, {:.0} ms of it with the queue locked); resident memory then {} MiB, peak {} MiB; the queue runner's share {} MiB (budget < 2048 MiB: {})",
        read(&status),
        ids.len(),
        loaded.as_secs_f64(),
        status["nrQueuedBuilds"],
        status["nrUnfinishedSteps"],
        status["nrRunnableSteps"],
        status["nrBuildsDone"],
        status["nrDispatcherWakeups"],
        status["dispatchTimeAvgMs"].as_f64().unwrap_or(0.0),
        status["nrPredictions"],
        status["predictionTimeAvgMs"].as_f64().unwrap_or(0.0),
        status["predictionLockTimeAvgMs"].as_f64().unwrap_or(0.0),
        mib(at_loaded.0),
        mib(at_loaded.1),
        mib(grown),
        if grown < 2 << 30 { "met" } else { "NOT met" }
    );
}

/// The queue runner's status.
async fn runner_status(address: std::net::SocketAddr) -> serde_json::Value {
    status_json(address, "/status").await
}

/// A JSON answer of the queue runner's status endpoint.
async fn status_json(address: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "a" {
        bench_dag().await;
    }
    if only.is_empty() || only == "b" {
        bench_latency().await;
    }
    if only.is_empty() || only == "c" {
        bench_many().await;
    }
    if only.is_empty() || only == "d" {
        bench_eta().await;
    }
}

/// Slots of the local machine in (d).
const ETA_SLOTS: u32 = 5;

/// (d)'s package set for run `round`: 50 derivations in 5 layers of 10,
/// each needing two of the layer before; `pkg-L-I` sleeps its own
/// 4–16 s, changed by up to ±15 % in each run.
fn timed_set(salt: &str, round: u32) -> String {
    let mut lines = String::new();
    for l in 0..5u32 {
        for i in 0..10u32 {
            let n = l * 10 + i;
            let base = 4.0 + f64::from((n * 37 + 11) % 13);
            let jitter = f64::from((n * 7 + round * 13) % 31) / 100.0 - 0.15;
            lines.push_str(&format!(
                "    \"{l}-{i}\" = {:.2};\n",
                base * (1.0 + jitter)
            ));
        }
    }
    format!(
        r#"
let
  seconds = {{
{lines}  }};
  mk = l: i: deps: derivation {{
    name = "pkg-${{toString l}}-${{toString i}}-1.{round}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/sleep ${{toString seconds."${{toString l}}-${{toString i}}"}}; echo {salt} > $out" ];
    inherit deps;
  }};
  prev = l: i: builtins.elemAt (builtins.elemAt layers (l - 1)) i;
  layer = l: builtins.genList (i: mk l i
    (if l == 0 then [ ] else [ (prev l i) (prev l (if i == 9 then 0 else i + 1)) ])) 10;
  layers = builtins.genList layer 5;
in builtins.listToAttrs (map (d: {{ name = builtins.replaceStrings [ "." ] [ "_" ] d.name; value = d; }})
  (builtins.concatLists layers))
"#
    )
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn bench_eta() {
    let db = TestDb::new().await;
    create_project(&db.pool, "p").await;
    let jobset = create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    let data = hydra_test_support::temp_data_dir();
    let store = NixStore::new();
    let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = status.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hydra_queue_runner::run_with(
        context_with(&db, &store, data.path(), ETA_SLOTS),
        Some(status),
        shutdown.clone(),
    ));
    let s = salt();
    let mut measured = None;
    for round in 0..2 {
        let file = data.path().join(format!("timed-{round}.nix"));
        std::fs::write(&file, timed_set(&s, round)).unwrap();
        let ids = queue_all(&db, &store, jobset, &file).await;
        assert_eq!(ids.len(), 50, "the set has 50 derivations");
        let start = Instant::now();
        let start_unix = f64::from(hydra_db::now());
        sqlx::query("notify builds_added")
            .execute(&db.pool)
            .await
            .unwrap();
        // (seconds since start, build, predicted finish as Unix time)
        let mut samples: Vec<(f64, i32, f64)> = Vec::new();
        loop {
            let left: Vec<i32> =
                sqlx::query_scalar("select id from Builds where finished = 0 and id = any($1)")
                    .bind(&ids)
                    .fetch_all(&db.pool)
                    .await
                    .unwrap();
            if left.is_empty() {
                break;
            }
            if round == 1 {
                let at = start.elapsed().as_secs_f64();
                for id in left {
                    let why = status_json(address, &format!("/status/build/{id}")).await;
                    if let Some(finish) = why["eta"]["finishAt"].as_f64() {
                        samples.push((at, id, finish));
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let took = start.elapsed().as_secs_f64();
        println!(
            "(d) run {}: {} builds of 4–16 s on {ETA_SLOTS} slots done in {took:.1} s",
            round + 1,
            ids.len()
        );
        if round == 1 {
            measured = Some((ids, start_unix, took, samples));
        }
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_all_succeeded(&db).await;
    let Some((ids, start_unix, took, samples)) = measured else {
        return;
    };
    let stops: std::collections::HashMap<i32, f64> =
        sqlx::query_as::<_, (i32, i32)>("select id, stopTime from Builds where id = any($1)")
            .bind(&ids)
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, t)| (id, f64::from(t)))
            .collect();
    let end = stops.values().copied().fold(f64::MIN, f64::max);
    // Errors as a share of the time actually left, for predictions made
    // once a fifth of the run had passed.
    let share = |made: f64, predicted: f64, actual: f64| {
        (predicted - actual).abs() / (actual - made).max(1.0)
    };
    let from = start_unix + 0.2 * took;
    let mut builds = Vec::new();
    let mut by_time: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    for &(at, id, finish) in &samples {
        let made = start_unix + at;
        if made < from {
            continue;
        }
        builds.push(share(made, finish, stops[&id]));
        let e = by_time.entry((at * 1000.0) as u64).or_insert((made, 0.0));
        e.1 = e.1.max(finish);
    }
    let set: Vec<f64> = by_time
        .values()
        .map(|&(made, finish)| share(made, finish, end))
        .collect();
    let verdict = |e: f64| if e < 0.25 { "met" } else { "NOT met" };
    let (b, e) = (median(builds.clone()), median(set.clone()));
    println!(
        "(d) predictions after 20 % of the run: builds' finish median absolute error {:.1} % of the time left ({} predictions; budget < 25 %: {}), the whole set's {:.1} % ({} predictions: {})",
        b * 100.0,
        builds.len(),
        verdict(b),
        e * 100.0,
        set.len(),
        verdict(e)
    );
    let recorded = hydra_db::etas::outcomes(
        &db.pool,
        &ids.iter()
            .map(|&i| hydra_db::ids::BuildId(i))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // (made at, error) of each recorded prediction whose build finished.
    let errors: Vec<(f64, f64)> = recorded
        .iter()
        .filter_map(|o| {
            let made = f64::from(o.eta.made_at);
            Some((
                made,
                share(made, f64::from(o.eta.finish_at), f64::from(o.stop_time?)),
            ))
        })
        .collect();
    let all: Vec<f64> = errors.iter().map(|e| e.1).collect();
    let kept: Vec<f64> = errors.iter().filter(|e| e.0 >= from).map(|e| e.1).collect();
    let within = recorded
        .iter()
        .filter(|o| {
            o.stop_time
                .is_some_and(|t| o.eta.low <= t && t <= o.eta.high)
        })
        .count();
    println!(
        "(d) recorded in BuildEtas (a row when new or moved by 30 s and a tenth of the time left): {} predictions, median error {:.1} %; {} made after 20 % of the run, median error {:.1} %; the outcome fell within the predicted range for {} of {}",
        recorded.len(),
        median(all) * 100.0,
        kept.len(),
        median(kept) * 100.0,
        within,
        recorded.len()
    );
}
