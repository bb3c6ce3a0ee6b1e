//! Web server benchmarks (figures, not tests), over a database holding one
//! jobset with 10,000 jobs (`BENCH_BUILDS`), each a finished build with two
//! outputs, a product and a metric, all in one evaluation:
//!
//! (a) `/build/<id>` JSON under `wrk` on loopback: requests/s and latency
//!     percentiles (`wrk` is the Debian package of that name);
//! (b) `/jobset/<p>/<j>`, `/eval/<id>` and `/eval/<id>/builds` JSON, one
//!     request at a time: p50 and max of 20 requests each;
//! (c) the pages (HTML) people open most: the front page (1,000 projects,
//!     each with a jobset), the jobset, an
//!     evaluation compared with the preceding one (every build matched,
//!     250 rows per tab, and `full=1` with all of them), a build, a job and
//!     a 100,000-line log and a 100 MB one (and a search in each), one
//!     request at a time: p50 and max of 20 each;
//! (d) the paged lists over a database of its own with 1,000,000 finished
//!     builds (`BENCH_LIST_BUILDS`) in 10 jobsets of one project, a step
//!     each and 10,000 evaluations, and a project of 100 builds beside it: the first page, a page half way
//!     through (by the `next` links' cursor, and by Hydra's `?page=N` for
//!     comparison) and the last page of every list, JSON, p50 and max of
//!     20 each.
//!
//! `cargo bench -p hydra-server`; `BENCH_ONLY=a|b|c|d` runs one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hydra_nix::env::NixEnv;
use hydra_test_support::TestDb;
use tokio_util::sync::CancellationToken;

async fn fill(db: &TestDb, builds: i32) {
    db.exec(&format!(
        "insert into Users (userName, emailAddress, password) values ('owner', '', '!');
         insert into Projects (name, displayName, owner) values ('bench', 'Bench', 'owner');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval)
           values ('bench', 'main', 'src', 'release.nix', '', 60);
         insert into Projects (name, displayName, description, owner)
           select 'p' || i, 'Project ' || i, 'The project number ' || i, 'owner' from generate_series(2, 1000) i;
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval)
           select 'p' || i, 'main', 'src', 'release.nix', '', 60 from generate_series(2, 1000) i;
         insert into JobsetInputs (project, jobset, name, type) values ('bench', 'main', 'src', 'git');
         insert into JobsetInputAlts (project, jobset, input, altnr, value) values ('bench', 'main', 'src', 0, 'https://example.org/r.git');
         insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, startTime, stopTime,
                             buildStatus, isCurrent, size, closureSize)
           select i, 1, 1700000000 + i, (select id from Jobsets where project = 'bench'), 'job' || i, 'pkg-' || i,
                  '/nix/store/' || lpad(i::text, 32, '0') || '-pkg-' || i || '.drv', 'x86_64-linux',
                  1700000000 + i, 1700000010 + i, case when i % 10 = 0 then 1 else 0 end, 1, 1000 + i, 5000 + i
           from generate_series(1, {builds}) i;
         select setval('builds_id_seq', {builds});
         insert into BuildOutputs (build, name, path)
           select i, o, '/nix/store/' || lpad(i::text, 32, '1') || '-pkg-' || i || '-' || o
           from generate_series(1, {builds}) i, unnest(array['out', 'doc']) o;
         insert into BuildProducts (build, productnr, type, subtype, path, name, defaultPath)
           select i, 1, 'nix-build', '', '/nix/store/' || lpad(i::text, 32, '1') || '-pkg-' || i || '-out', 'pkg-' || i, ''
           from generate_series(1, {builds}) i;
         insert into BuildMetrics (build, name, unit, value, project, jobset, job, timestamp)
           select i, 'runtime', 's', i * 0.5, 'bench', 'main', 'job' || i, 1700000000 + i
           from generate_series(1, {builds}) i;
         insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select 1, id, 1700000000, 1, 2, 1, 'h', {builds} from Jobsets where project = 'bench';
         insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision)
           values (1, 'src', 0, 'git', 'https://example.org/r.git', 'abc');
         insert into JobsetEvalMembers (eval, build, isNew) select 1, i, 1 from generate_series(1, {builds}) i;
         insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select 2, id, 1700000100, 1, 2, 1, 'h2', {builds} from Jobsets where project = 'bench';
         insert into JobsetEvalInputs (eval, name, altNr, type, uri, revision)
           values (2, 'src', 0, 'git', 'https://example.org/r.git', 'def');
         insert into JobsetEvalMembers (eval, build, isNew) select 2, i, 0 from generate_series(1, {builds}) i;
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system)
           values (1, 1, 0, '/nix/store/' || lpad('1', 32, '0') || '-pkg-1.drv', 0, 0, 1700000001, 1700000011, 'localhost', 'x86_64-linux');
         analyze;"
    ))
    .await;
}

async fn get(address: SocketAddr, path: &str) -> (u16, usize) {
    let (status, size, _) = get_as(address, path, "application/json").await;
    (status, size)
}

/// Status, body size, and when the first byte of the body arrived.
async fn get_as(address: SocketAddr, path: &str, accept: &str) -> (u16, usize, Duration) {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get(path)
        .header("host", address.to_string())
        .header("accept", accept)
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut size = 0;
    let mut first = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first.get_or_insert_with(|| started.elapsed());
            size += data.len();
        }
    }
    (status, size, first.unwrap_or_else(|| started.elapsed()))
}

fn wrk(address: SocketAddr, path: &str) {
    let url = format!("http://{address}{path}");
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c32", "-d10s", "--latency"])
        .args(["-H", "Accept: application/json", &url])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            println!("wrk failed: {}", String::from_utf8_lossy(&o.stderr));
            return;
        }
        Err(e) => {
            println!("wrk is not available ({e}); install the Debian package `wrk`");
            return;
        }
    };
    let find = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "(a) GET {path} JSON under wrk (2 threads, 32 connections, 10 s): {} req/s; latency p50 {} p90 {} p99 {}; non-2xx: {}",
        find("Requests/sec:"),
        find("50%"),
        find("90%"),
        find("99%"),
        find("Non-2xx or 3xx responses:").replace('?', "0")
    );
}

async fn timed(address: SocketAddr, path: &str) {
    timed_as(address, path, "application/json", "(b)", "JSON").await;
}

async fn timed_as(address: SocketAddr, path: &str, accept: &str, part: &str, what: &str) {
    let mut times = Vec::new();
    let mut firsts = Vec::new();
    let mut size = 0;
    // One request to warm caches, then 20 measured.
    get_as(address, path, accept).await;
    for _ in 0..20 {
        let started = Instant::now();
        let (status, len, first) = get_as(address, path, accept).await;
        times.push(started.elapsed());
        firsts.push(first);
        assert_eq!(status, 200, "{path}");
        size = len;
    }
    times.sort();
    firsts.sort();
    println!(
        "{part} GET {path} {what} ({size} bytes): p50 {:.1} ms, max {:.1} ms, first byte p50 {:.1} ms{}",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0,
        firsts[firsts.len() / 2].as_secs_f64() * 1000.0,
        budget(path)
    );
}

/// The budget for a page, where it sets one: the jobset and the
/// evaluation under 100 ms, the front page and a build under 20 ms.
fn budget(path: &str) -> &'static str {
    match path {
        "/" | "/build/1" => " (budget < 20 ms)",
        "/jobset/bench/main" | "/eval/2" | "/eval/1/builds" => " (budget < 100 ms)",
        _ => "",
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let builds: i32 = std::env::var("BENCH_BUILDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        if only == "d" {
            lists().await;
            return;
        }
        let db = TestDb::new().await;
        let started = Instant::now();
        fill(&db, builds).await;
        println!(
            "{builds} builds (2 outputs, 1 product, 1 metric each) in one evaluation, inserted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let data = tempfile::tempdir().unwrap();
        // A 100,000-line log (about 6 MB) for the log viewer.
        let log = hydra_config::DataDir::from(data.path())
            .build_log(&format!("/nix/store/{}-pkg-1.drv", "0".repeat(31) + "1"));
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let text: String = (1..=100_000)
            .map(|i| format!("\u{1b}[32mbuilding\u{1b}[0m object {i}: cc -O2 -c src/file{i}.c\n"))
            .collect();
        std::fs::write(&log, &text).unwrap();
        // And a 100 MB one (1.6 million lines) for build 2.
        let big = hydra_config::DataDir::from(data.path())
            .build_log(&format!("/nix/store/{}-pkg-2.drv", "0".repeat(31) + "2"));
        std::fs::create_dir_all(big.parent().unwrap()).unwrap();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for _ in 0..16 {
            std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        }
        drop(file);
        let (address, stop, server) = serve(&db, data.path()).await;
        let probe = format!("/build/{}", builds / 2);
        assert_eq!(get(address, &probe).await.0, 200);
        if only.is_empty() || only == "a" {
            let path = probe.clone();
            tokio::task::spawn_blocking(move || wrk(address, &path))
                .await
                .unwrap();
        }
        if only.is_empty() || only == "b" {
            timed(address, "/jobset/bench/main").await;
            timed(address, "/eval/1").await;
            timed(address, "/eval/1/builds").await;
        }
        if only.is_empty() || only == "c" {
            let html = |path: &'static str| timed_as(address, path, "text/html", "(c)", "page");
            html("/").await;
            html("/jobset/bench/main").await;
            html("/eval/2").await;
            html("/eval/2?full=1").await;
            html("/build/1").await;
            html("/job/bench/main/job1").await;
            html("/build/1/log").await;
            html("/build/1/log?search=object%2099999").await;
            html("/build/2/log").await;
            html("/build/2/log?search=object%2099999").await;
        }
        stop.cancel();
        server.await.unwrap();
        if only.is_empty() {
            lists().await;
        }
    });
}

/// A server over `db`, with `data` as its data directory.
async fn serve(
    db: &TestDb,
    data: &std::path::Path,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let pool = hydra_db::connect(db.connect_options(), 16, Duration::ZERO)
        .await
        .unwrap();
    let (config, _) =
        hydra_config::Config::load_str(std::path::Path::new("hydra.conf"), "").unwrap();
    let state = hydra_server::AppState::new(
        pool,
        Arc::new(config),
        data.to_path_buf(),
        NixEnv::default(),
    )
    .unwrap();
    let listener = hydra_server::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { hydra_server::run(state, listener, stop).await.unwrap() }
    });
    (address, stop, server)
}

/// (d): the paged lists at 1,000,000 builds.
async fn lists() {
    let builds: i64 = std::env::var("BENCH_LIST_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let db = TestDb::new().await;
    let started = Instant::now();
    db.exec(&format!(
        "insert into Users (userName, emailAddress, password) values ('owner', '', '!');
         insert into Projects (name, displayName, owner) values ('bench', 'Bench', 'owner');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval)
           select 'bench', 'j' || k, 'src', 'release.nix', '', 60 from generate_series(0, 9) k;
         -- Counting each finished build in NrBuilds row by row would
         -- update one row a million times in one transaction.
         alter table Builds disable trigger NrBuildsFinished;
         insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, startTime, stopTime,
                             buildStatus, isCurrent)
           select i, 1, 1600000000 + i, (select id from Jobsets where name = 'j' || (i % 10)), 'job' || (i % 1000),
                  'pkg-' || i, '/nix/store/' || lpad(i::text, 32, '0') || '-pkg-' || i || '.drv', 'x86_64-linux',
                  1600000000 + i, 1600000000 + i + (i % 7) * 60, case when i % 10 = 0 then 1 else 0 end, 0
           from generate_series(1, {builds}) i;
         -- A small project beside the large one.
         insert into Projects (name, displayName, owner) values ('small', 'Small', 'owner');
         insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, checkInterval)
           values ('small', 's', 'src', 'release.nix', '', 60);
         insert into Builds (id, finished, timestamp, jobset_id, job, nixName, drvPath, system, startTime, stopTime,
                             buildStatus, isCurrent)
           select {builds} + i, 1, 1600000000 + i, (select id from Jobsets where name = 's'), 'job' || (i % 10),
                  'small-' || i, '/nix/store/' || lpad(i::text, 32, '1') || '-small-' || i || '.drv', 'x86_64-linux',
                  1600000000 + i * 5000, 1600000000 + i * 5000 + 60, 0, 0
           from generate_series(1, 100) i;
         select setval('builds_id_seq', {builds} + 100);
         alter table Builds enable trigger NrBuildsFinished;
         update NrBuilds set count = {builds} + 100 where what = 'finished';
         insert into BuildSteps (build, stepnr, type, drvPath, busy, status, startTime, stopTime, machine, system)
           select i, 1, 0, '/nix/store/' || lpad(i::text, 32, '0') || '-pkg-' || i || '.drv', 0, 0,
                  1600000000 + i, 1600000000 + i + (i % 7) * 60, 'localhost', 'x86_64-linux'
           from generate_series(1, {builds}) i;
         insert into JobsetEvals (id, jobset_id, timestamp, checkoutTime, evalTime, hasNewBuilds, hash, nrBuilds)
           select e, (select id from Jobsets where name = 'j' || (e % 10)), 1600000000 + e, 1, 2, 1, 'h' || e, 100
           from generate_series(1, {builds} / 100) e;"
    ))
    .await;
    // As autovacuum leaves a database that has settled: statistics, and
    // the visibility map that lets counts read only indexes.
    db.exec("vacuum analyze").await;
    println!(
        "(d) {builds} finished builds in 10 jobsets, a step each, {} evaluations: inserted in {:.1} s",
        builds / 100,
        started.elapsed().as_secs_f64()
    );
    let data = tempfile::tempdir().unwrap();
    let (address, stop, server) = serve(&db, data.path()).await;
    let lists = [
        "/all",
        "/project/bench/all",
        "/jobset/bench/j3/all",
        "/job/bench/j3/job3/all",
        "/project/small/all",
        "/jobset/small/s/all",
        "/steps",
        "/evals",
        "/jobset/bench/j3/evals",
    ];
    for list in lists {
        // Half way by following `next` links would take too long: the
        // cursor of the middle row, read the way the links are written.
        let middle = middle_cursor(&db, list, builds).await;
        timed_as(address, list, "application/json", "(d)", "first page").await;
        let deep = format!("{list}?after={middle}");
        timed_as(
            address,
            &deep,
            "application/json",
            "(d)",
            "half way, by cursor",
        )
        .await;
        let (pages, _) = half_way_page(list, builds);
        let numbered = format!("{list}?page={pages}");
        timed_as(
            address,
            &numbered,
            "application/json",
            "(d)",
            "half way, by page number",
        )
        .await;
        let last = format!("{list}?last=1");
        timed_as(address, &last, "application/json", "(d)", "last page").await;
    }
    stop.cancel();
    server.await.unwrap();
}

/// How many rows `list` has, and the page number half way through it.
fn half_way_page(list: &str, builds: i64) -> (i64, i64) {
    let rows = if list.contains("small") {
        100
    } else if list.contains("/evals") {
        builds / 100 / if list.starts_with("/jobset") { 10 } else { 1 }
    } else if list.starts_with("/job/") {
        builds / 1000
    } else if list.starts_with("/jobset") {
        builds / 10
    } else {
        builds
    };
    (rows / 2 / 20, rows)
}

/// The cursor a `next` link would carry half way through `list`.
async fn middle_cursor(db: &TestDb, list: &str, builds: i64) -> String {
    let (_, rows) = half_way_page(list, builds);
    let offset = rows / 2;
    let sql = if list == "/steps" {
        format!(
            "select stopTime || '_' || build || '_' || stepnr from BuildSteps \
             order by stopTime desc, build desc, stepnr desc offset {offset} limit 1"
        )
    } else if list == "/evals" {
        format!("select id::text from JobsetEvals order by id desc offset {offset} limit 1")
    } else if list.ends_with("/evals") {
        format!(
            "select e.id::text from JobsetEvals e join Jobsets j on j.id = e.jobset_id \
             where j.name = 'j3' order by e.id desc offset {offset} limit 1"
        )
    } else {
        let scope = if list.contains("small") {
            "j.name = 's'"
        } else if list.starts_with("/job/") {
            "j.name = 'j3' and b.job = 'job3'"
        } else if list.starts_with("/jobset") {
            "j.name = 'j3'"
        } else {
            "true"
        };
        format!(
            "select b.stopTime || '_' || b.id from Builds b join Jobsets j on j.id = b.jobset_id \
             where {scope} order by b.stopTime desc, b.id desc offset {offset} limit 1"
        )
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
