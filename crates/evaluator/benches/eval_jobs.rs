//! Evaluation throughput: a generated jobset of 20,000 trivial jobs
//! (`BENCH_JOBS` to change), evaluated by the engine with 1 and 2 workers,
//! next to `nix-env -qaP --json --drv-path` and `nix-instantiate` on the
//! same file in the same run. Prints jobs/s and peak resident memory.
//!
//! "Cold" runs see derivations that are not in the store yet, so every
//! `.drv` is written (what a new commit of a large jobset costs); "warm"
//! runs evaluate the same jobs again (what an unchanged or slightly changed
//! jobset costs). `nix-env` never writes `.drv` files and, with `--json`,
//! does not even compute derivation paths in Nix 2.8.
//!
//! Uses the machine's Nix store: `cargo bench -p hydra-evaluator`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hydra_evaluator::engine::{self, Expression, NixEnv, Request};

const RELEASE: &str = r#"
{ n, salt }:
builtins.listToAttrs (builtins.genList (i: {
  name = "job${toString i}";
  value = derivation {
    name = "bench-${salt}-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${toString i} > $out" ];
  };
}) n)
"#;

struct Figure {
    what: String,
    jobs: usize,
    elapsed: Duration,
    peak_rss: u64,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Flushes what earlier runs wrote, so that no run pays for another's
/// writeback.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// Runs a command to completion, polling its peak resident memory.
async fn measure(what: &str, jobs: usize, mut cmd: tokio::process::Command) -> Figure {
    settle();
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0;
    let status = loop {
        if let Some((_, hwm)) = engine::resident_memory(pid) {
            peak = peak.max(hwm);
        }
        tokio::select! {
            status = child.wait() => break status.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    };
    let elapsed = start.elapsed();
    assert!(status.success(), "{what} failed");
    Figure {
        what: what.into(),
        jobs,
        elapsed,
        peak_rss: peak,
    }
}

fn nix_cmd(program: &str, n: usize, salt: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_remove("NIX_PATH")
        .args(["--option", "substituters", ""])
        .arg("--arg")
        .arg("n")
        .arg(n.to_string())
        .args(["--argstr", "salt", salt]);
    cmd
}

async fn ours(
    what: &str,
    dir: &Path,
    roots: &Path,
    n: usize,
    salt: &str,
    workers: usize,
) -> Figure {
    let request = Request {
        expression: Expression::Legacy {
            expr: "bench/release.nix".into(),
        },
        search_path: vec![("bench".into(), dir.display().to_string())],
        args: vec![
            engine::Arg::Expr("n".into(), n.to_string()),
            engine::Arg::Str("salt".into(), salt.into()),
        ],
        workers,
        max_memory_mib: 4096,
        allow_import_from_derivation: false,
        nix: NixEnv::default(),
        gc_roots_dir: Some(roots.to_path_buf()),
        timeout: Duration::from_secs(3600),
    };
    settle();
    let start = Instant::now();
    let outcome = engine::evaluate(&request).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(outcome.jobs.len(), n, "{:?}", outcome.errors.iter().next());
    Figure {
        what: what.into(),
        jobs: n,
        elapsed,
        peak_rss: outcome.stats.peak_rss,
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("release.nix"), RELEASE).unwrap();
    let file = dir.path().join("release.nix");
    let roots = tempfile::tempdir().unwrap();
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let salt = |s: &str| format!("{s}{run}");
    let mut figures = Vec::new();

    let mut cmd = nix_cmd("nix-env", n, &salt("env"));
    cmd.args(["-qaP", "--json", "--drv-path", "-f"]).arg(&file);
    figures.push(measure("nix-env -qaP --json --drv-path (reference)", n, cmd).await);
    let mut cmd = nix_cmd("nix-env", n, &salt("env"));
    cmd.args(["-qaP", "--drv-path", "-f"]).arg(&file);
    figures.push(measure("nix-env -qaP --drv-path (computes drv paths)", n, cmd).await);
    let mut cmd = nix_cmd("nix-instantiate", n, &salt("inst"));
    cmd.arg(&file);
    figures.push(measure("nix-instantiate (writes .drv), cold", n, cmd).await);

    figures.push(
        ours(
            "engine, 1 worker, cold",
            dir.path(),
            roots.path(),
            n,
            &salt("one"),
            1,
        )
        .await,
    );
    figures.push(
        ours(
            "engine, 2 workers, cold",
            dir.path(),
            roots.path(),
            n,
            &salt("two"),
            2,
        )
        .await,
    );
    figures.push(
        ours(
            "engine, 1 worker, warm",
            dir.path(),
            roots.path(),
            n,
            &salt("one"),
            1,
        )
        .await,
    );
    figures.push(
        ours(
            "engine, 2 workers, warm",
            dir.path(),
            roots.path(),
            n,
            &salt("two"),
            2,
        )
        .await,
    );
    let mut cmd = nix_cmd("nix-instantiate", n, &salt("inst"));
    cmd.arg(&file);
    figures.push(measure("nix-instantiate, warm", n, cmd).await);

    println!("evaluation of {n} trivial jobs");
    println!(
        "{:<48} {:>10} {:>9} {:>10}",
        "", "jobs/s", "seconds", "peak RSS"
    );
    for f in &figures {
        println!(
            "{:<48} {:>10.0} {:>9.2} {:>7} MiB",
            f.what,
            f.rate(),
            f.elapsed.as_secs_f64(),
            f.peak_rss >> 20
        );
    }
    let reference = figures[0].rate();
    for f in &figures[3..7] {
        println!(
            "{}: {:.2}x nix-env --json (budget for 2 workers: 1.6x)",
            f.what,
            f.rate() / reference
        );
    }
}
