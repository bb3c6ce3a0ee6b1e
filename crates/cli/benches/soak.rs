//! Soak: `hydra up` under a steady mix of work for a fixed time
//! (`SOAK_SECONDS`, default 60): a jobset whose source changes every few
//! seconds (evaluations and builds in the machine's Nix store), page and
//! API requests from two clients, and failed sign-in attempts. Prints the
//! throughput, latencies (p50, p99), error counts, and the peak resident
//! memory of `hydra up` (every role is a task of that one process), of
//! PostgreSQL and of the evaluation workers.
//!
//! Run with `cargo bench -p hydra-cli --bench soak`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RELEASE: &str = r#"
{ ... }:
let salt = builtins.readFile ./salt; in
builtins.listToAttrs (builtins.genList (i: {
  name = "job${toString i}";
  value = derivation {
    name = "soak-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${salt} > $out" ];
  };
}) 5)
"#;

/// One blocking HTTP/1.1 request; the status (0 when it failed).
fn get(address: &str, path: &str, extra: &str, body: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let method = if body.is_empty() { "GET" } else { "POST" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kib(pid: u32) -> u64 {
    hydra_metrics::resident_memory(pid).map_or(0, |(_, peak)| peak / 1024)
}

/// Pids of processes whose command line starts with `program`.
fn processes(program: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let first = cmdline.split(|b| *b == 0).next()?;
            String::from_utf8_lossy(first)
                .ends_with(program)
                .then_some(pid)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::Builder::new()
        .prefix("hydra-soak-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(data.join("nix")).unwrap();
    std::fs::write(src.join("release.nix"), RELEASE).unwrap();
    std::fs::write(src.join("salt"), "0").unwrap();
    std::fs::write(
        data.join("nix/nix.conf"),
        "substituters =\nsandbox = false\nbuild-users-group =\n",
    )
    .unwrap();
    std::fs::write(
        data.join("hydra.conf"),
        "queue_runner_metrics_address = 127.0.0.1:0\nevaluator_metrics_address = 127.0.0.1:0\n",
    )
    .unwrap();

    let mut up = Command::new(env!("CARGO_BIN_EXE_hydra"))
        .arg("up")
        .env("HYDRA_DATA", &data)
        .env("HYDRA_LISTEN", "127.0.0.1:0")
        .env("NIX_CONF_DIR", data.join("nix"))
        .env_remove("HYDRA_DATABASE_URL")
        .env_remove("HYDRA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = up.stderr.take().unwrap();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let find = |text: &str| -> Option<String> {
        log.lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(text))
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while find("Stop with Ctrl-C").is_none() {
        assert!(Instant::now() < deadline, "hydra up did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let open = find("Open ").unwrap();
    let base = open
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let address = base.trim_start_matches("http://").to_string();
    let setup = find("/setup?token=").unwrap().trim().to_string();
    let token = setup.split("token=").nth(1).unwrap().to_string();

    // The administrator, the project and the jobset.
    let origin = format!("Origin: {base}\r\nContent-Type: application/x-www-form-urlencoded\r\n");
    let status = get(
        &address,
        "/setup",
        &origin,
        &format!("token={token}&username=admin&password=soak-secret&password2=soak-secret"),
    );
    assert_eq!(status, 302, "setup");
    let database = find("Database").unwrap();
    let url = database.split('\'').nth(1).unwrap().to_string();
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .arg(&url)
            .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!(
        "insert into Projects (name, displayName, owner) values ('soak', 'Soak', 'admin');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval, triggerTime)
           values ('soak', 'main', 'src', 'release.nix', '', 5, 1);
         insert into JobsetInputs (project, jobset, name, type) values ('soak', 'main', 'src', 'path');
         insert into JobsetInputAlts (project, jobset, input, altnr, value) values ('soak', 'main', 'src', 0, '{} 0');",
        src.display()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);

    // The source changes every 5 s: a new evaluation and five builds.
    let changer = {
        let src = src.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                std::fs::write(src.join("salt"), format!("{n}-{}", std::process::id())).unwrap();
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };

    // Two clients reading pages and the API.
    let paths = [
        ("front page", "/"),
        ("project", "/project/soak"),
        ("jobset", "/jobset/soak/main"),
        ("evaluations", "/jobset/soak/main/evals"),
        ("queue", "/api/queue?nr=50"),
        ("latest builds", "/api/latestbuilds?nr=50"),
        ("build", "/build/1"),
        ("search", "/search?query=soak"),
    ];
    type Samples = Arc<Mutex<BTreeMap<&'static str, (Vec<Duration>, u64)>>>;
    let samples: Samples = Arc::new(Mutex::new(BTreeMap::new()));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (samples, address) = (samples.clone(), address.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while Instant::now() < end {
                    let (name, path) = paths[i % paths.len()];
                    i += 1;
                    let t = Instant::now();
                    let status = get(&address, path, "", "");
                    let elapsed = t.elapsed();
                    let mut s = samples.lock().unwrap();
                    let entry = s.entry(name).or_default();
                    entry.0.push(elapsed);
                    if status == 0 || status >= 500 {
                        entry.1 += 1;
                    }
                }
            })
        })
        .collect();

    // Failed sign-ins, two a second.
    let logins: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let login_thread = {
        let (logins, address, base) = (logins.clone(), address.clone(), base.clone());
        std::thread::spawn(move || {
            while Instant::now() < end {
                let status = get(
                    &address,
                    "/login",
                    &format!("Referer: {base}\r\nContent-Type: application/json\r\n"),
                    r#"{"username": "admin", "password": "wrong"}"#,
                );
                *logins.lock().unwrap().entry(status).or_default() += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // Memory of the evaluation workers, sampled.
    let worker_peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (worker_peak, stop) = (worker_peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for pid in processes("nix-instantiate") {
                    worker_peak.fetch_max(peak_rss_kib(pid), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    for r in readers {
        r.join().unwrap();
    }
    login_thread.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    changer.join().unwrap();
    sampler.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();

    let count = |sql: &str| -> String {
        let out = Command::new("psql")
            .arg(&url)
            .args(["-tAc", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let evals = count("select count(*) from JobsetEvals");
    let builds = count("select count(*) from Builds where finished = 1 and buildStatus = 0");
    let failed = count("select count(*) from Builds where finished = 1 and buildStatus <> 0");
    let queued = count("select count(*) from Builds where finished = 0");
    let hydra_peak = peak_rss_kib(up.id());
    let postgres_peak = processes("postgres")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains(&data.display().to_string()))
        })
        .map(peak_rss_kib)
        .max()
        .unwrap_or(0);

    println!("soak: {elapsed:.0} s of hydra up under load");
    println!("  evaluations recorded   {evals}");
    println!("  builds succeeded       {builds} ({failed} failed, {queued} still queued)");
    println!("  requests               count   req/s    p50 ms    p99 ms  errors");
    let mut total_errors = 0;
    for (name, (mut latencies, errors)) in std::mem::take(&mut *samples.lock().unwrap()) {
        latencies.sort();
        total_errors += errors;
        println!(
            "  {name:<20} {:>7} {:>7.1} {:>9.2} {:>9.2} {:>7}",
            latencies.len(),
            latencies.len() as f64 / elapsed,
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            errors
        );
    }
    println!(
        "  sign-in attempts       {:?} (status: count)",
        logins.lock().unwrap()
    );
    println!("  server errors (5xx or failed connections): {total_errors}");
    println!(
        "  peak RSS: hydra up {} MiB, PostgreSQL (largest process) {} MiB, evaluation worker {} MiB",
        hydra_peak / 1024,
        postgres_peak / 1024,
        worker_peak.load(Ordering::Relaxed) / 1024
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = up.wait();
}
