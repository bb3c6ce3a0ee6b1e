//! The evaluator's commands through the real `hydra` binary:
//! `eval-jobset`, `evaluator --unlock`, `update-gc-roots`, and `hydra up`
//! evaluating a triggered jobset and serving the evaluator's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Up, eventually, hydra, run, stderr};
use hydra_test_support::jobsets::{create_jobset, create_project};
use hydra_test_support::{TestDb, fixtures_dir, shared_tempdir};
use nix::sys::signal::Signal;

/// `hydra` using `db`, a configuration with its GC roots in `data`, and Nix
/// settings that download nothing.
fn hydra_with(db: &TestDb, data: &Path, extra_config: &str) -> Command {
    let conf = data.join("nix");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "substituters =\nexperimental-features = nix-command flakes\n",
    )
    .unwrap();
    std::fs::write(
        data.join("hydra.conf"),
        format!(
            "gc_roots_dir = {}\nqueue_runner_metrics_address = 127.0.0.1:0\n{}{extra_config}\n",
            data.join("roots").display(),
            if extra_config.contains("evaluator_metrics_address") {
                ""
            } else {
                "evaluator_metrics_address = 127.0.0.1:0\n"
            }
        ),
    )
    .unwrap();
    let mut cmd = hydra(data);
    cmd.env("HYDRA_DATABASE_URL", db.url())
        .env("NIX_CONF_DIR", &conf)
        .env("XDG_CACHE_HOME", data.join("cache"));
    cmd
}

fn source(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures_dir().join("config.nix"),
        dir.path().join("config.nix"),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const RELEASE: &str = r#"
with import ./config.nix;
{
  a = mkDerivation { name = "a"; builder = builtins.toFile "b.sh" "echo a > $out"; };
  b = mkDerivation { name = "b"; builder = builtins.toFile "b.sh" "echo b > $out"; };
  broken = throw "no";
}
"#;

#[tokio::test]
async fn eval_jobset_prints_a_summary_and_fails_when_the_evaluation_does() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let src = source(&[("release.nix", RELEASE)]);
    create_project(&db.pool, "p").await;
    // Re-read the directory every time (else the hash is trusted for 30 s).
    let value = format!("{} 0", src.path().display());
    create_jobset(
        &db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", &value)],
    )
    .await;

    let out = run(hydra_with(&db, data.path(), "").args(["eval-jobset", "p", "j"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("p:j: evaluation 1: 2 new builds, 0 reused, 1 job errors ("),
        "{stdout}"
    );
    assert!(stdout.contains("total"), "{stdout}");

    let out = run(hydra_with(&db, data.path(), "").args(["eval-jobset", "p", "j"]));
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("inputs unchanged since evaluation 1")
    );

    drop(src);
    let out = run(hydra_with(&db, data.path(), "").args(["eval-jobset", "p", "j"]));
    assert!(!out.status.success(), "a failed fetch fails the command");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("fetching the inputs failed"), "{stdout}");

    let out = run(hydra_with(&db, data.path(), "").args(["eval-jobset", "p", "nope"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("jobset p:nope does not exist"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn evaluator_unlock_clears_start_times() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    create_project(&db.pool, "p").await;
    create_jobset(&db.pool, "p", "j", "src", "release.nix", &[]).await;
    db.exec("update Jobsets set startTime = 5").await;
    let out = run(hydra_with(&db, data.path(), "").args(["evaluator", "--unlock"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let left: i64 = sqlx::query_scalar("select count(*) from Jobsets where startTime is not null")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn update_gc_roots_reports_what_it_did() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let out = run(hydra_with(&db, data.path(), "").arg("update-gc-roots"));
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("0 paths kept, 0 roots added, 0 removed"),
        "{stdout}"
    );
    assert!(data.path().join("roots").is_dir());
}

#[tokio::test]
async fn hydra_up_evaluates_triggered_jobsets_and_serves_metrics() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let src = source(&[("release.nix", RELEASE)]);
    create_project(&db.pool, "p").await;
    create_jobset(
        &db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut up = Up::start(hydra_with(
        &db,
        data.path(),
        &format!("evaluator_metrics_address = 127.0.0.1:{port}"),
    ));
    db.exec("update Jobsets set triggerTime = 1").await;
    let pool = db.pool.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        eventually(Duration::from_secs(60), || {
            rt.block_on(async {
                sqlx::query_scalar::<_, i64>("select count(*) from JobsetEvals")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    == 1
            })
        })
    })
    .await
    .unwrap();
    assert!(evaluated, "{}", up.seen.join("\n"));
    // The summary line is logged once the evaluation's metrics are counted
    // ("starting an evaluation" is logged before: not that one).
    assert!(
        up.wait_for("p:j: evaluation 1:", Duration::from_secs(10))
            .is_some(),
        "{}",
        up.seen.join("\n")
    );

    let body = http_get(port, "/metrics").await;
    assert!(
        body.contains("hydra_evaluator_evaluations_started_total 1"),
        "{body}"
    );
    assert!(
        body.contains("hydra_evaluator_evaluations_total{outcome=\"evaluated\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("hydra_evaluator_jobs_evaluated_total 2"),
        "{body}"
    );
    assert!(
        body.contains("hydra_evaluator_job_errors_total 1"),
        "{body}"
    );
    assert!(
        body.contains("hydra_evaluator_builds_queued_total 2"),
        "{body}"
    );
    assert!(
        body.contains("hydra_evaluator_evaluation_duration_seconds_count 1"),
        "{body}"
    );
    up.stop();
}

/// A plain HTTP/1.0 GET on 127.0.0.1.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// Processes whose command line contains `text`.
fn processes_with(text: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(text) && common::alive(pid) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn workers_die_with_a_killed_evaluator_and_their_directories_are_removed_at_the_next_start() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    // An evaluation that takes minutes of pure computation.
    let src = source(&[(
        "release.nix",
        "with import ./config.nix;\n{ slow = mkDerivation { name = \"slow\"; builder = builtins.toFile \"b.sh\" \"echo > $out\"; \
         n = builtins.foldl' (a: i: a + builtins.foldl' (x: y: x + y) 0 (builtins.genList (y: y) 1000)) 0 (builtins.genList (i: i) 10000000); }; }\n",
    )]);
    create_project(&db.pool, "p").await;
    create_jobset(
        &db.pool,
        "p",
        "j",
        "src",
        "release.nix",
        &[("src", "path", src.path().to_str().unwrap())],
    )
    .await;
    db.exec("update Jobsets set triggerTime = 1").await;
    let mut evaluator = Up::spawn(hydra_with(&db, data.path(), "").arg("evaluator"));
    let pid = evaluator.child.id();
    let marker = format!("hydra-eval-{pid}-");
    assert!(
        eventually(Duration::from_secs(60), || !processes_with(&marker)
            .is_empty()),
        "no worker started:\n{}",
        {
            evaluator.wait_for("never", Duration::from_millis(100));
            evaluator.seen.join("\n")
        }
    );
    // The worker on the slow job (the first ones explore the attribute
    // set and are done quickly).
    std::thread::sleep(Duration::from_secs(3));
    let workers = processes_with(&marker);
    assert!(!workers.is_empty(), "the slow job is being evaluated");
    evaluator.signal(Signal::SIGKILL);
    let _ = evaluator.child.wait();
    assert!(
        eventually(Duration::from_secs(10), || workers
            .iter()
            .all(|w| !common::alive(*w))),
        "workers {workers:?} outlived the evaluator"
    );
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&marker))
        .map(|e| e.path())
        .collect();
    assert!(!left.is_empty(), "the killed evaluator left its directory");

    let mut next = Up::spawn(hydra_with(&db, data.path(), "").arg("evaluator"));
    assert!(
        next.wait_for("evaluator started", Duration::from_secs(30))
            .is_some()
    );
    assert!(
        next.seen
            .iter()
            .any(|l| l.contains("removed the working directories of evaluators that were killed")),
        "{:#?}",
        next.seen
    );
    assert!(left.iter().all(|d| !d.exists()), "{left:?}");
    next.signal(Signal::SIGKILL);
}
