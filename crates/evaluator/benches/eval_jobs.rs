//! Evaluation throughput: two generated jobsets, evaluated by the engine
//! with 1 and 2 workers next to the equal-work reference, one
//! `nix-instantiate` process on the same file, in the same run:
//!
//! - 20,000 trivial jobs (`BENCH_JOBS` to change): what the engine's own
//!   overhead per job costs;
//! - 1,500 jobs that each cost milliseconds of pure Nix computation
//!   (`BENCH_CPU_JOBS`): what parallel evaluation gains on real work.
//!
//! "Cold" runs see derivations that are not in the store yet, so every
//! `.drv` is written (what a new commit of a large jobset costs); "warm"
//! runs evaluate the same jobs again (what an unchanged or slightly changed
//! jobset costs). Prints jobs/s, peak resident memory of a worker against
//! `evaluator_max_memory_size`, and each ratio next to its budget.
//!
//! Uses the machine's Nix store: `cargo bench -p hydra-evaluator`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hydra_evaluator::engine::{self, Expression, NixEnv, Request};

/// A jobset of `n` jobs from `first`, each a derivation whose build
/// prints `value` (a Nix expression of `i`, the job's number).
fn release(value: &str) -> String {
    format!(
        r#"
{{ n, salt, first ? 0 }}:
builtins.listToAttrs (builtins.genList (j: let i = first + j; in {{
  name = "job${{toString i}}";
  value = derivation {{
    name = "bench-${{salt}}-${{toString i}}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${{toString ({value})}} > $out" ];
  }};
}}) n)
"#
    )
}

/// The memory limit of the engine's workers: the default of
/// `evaluator_max_memory_size`.
const MAX_MEMORY_MIB: u64 = 4096;

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
    if !what.is_empty() {
        settle();
    }
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
    file: &str,
    roots: &Path,
    n: usize,
    salt: &str,
    workers: usize,
) -> Figure {
    let request = Request {
        expression: Expression::Legacy {
            expr: format!("bench/{file}"),
        },
        search_path: vec![("bench".into(), dir.display().to_string())],
        args: vec![
            engine::Arg::Expr("n".into(), n.to_string()),
            engine::Arg::Str("salt".into(), salt.into()),
        ],
        workers,
        max_memory_mib: MAX_MEMORY_MIB,
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

/// One jobset: the reference and the engine, cold then warm; prints the
/// figures and the ratios next to their budgets.
async fn jobset(title: &str, dir: &Path, file: &str, n: usize, run: &str, budgets: &[(&str, f64)]) {
    let path = dir.join(file);
    let roots = tempfile::tempdir().unwrap();
    let salt = |s: &str| format!("{s}{run}");
    let reference = |salt: String| {
        let mut cmd = nix_cmd("nix-instantiate", n, &salt);
        cmd.arg(&path);
        cmd
    };
    let mut figures = Vec::new();
    figures.push(measure("nix-instantiate, cold", n, reference(salt("inst"))).await);
    for (what, workers, s) in [
        ("engine, 1 worker, cold", 1, "one"),
        ("engine, 2 workers, cold", 2, "two"),
        ("engine, 1 worker, warm", 1, "one"),
        ("engine, 2 workers, warm", 2, "two"),
    ] {
        figures.push(ours(what, dir, file, roots.path(), n, &salt(s), workers).await);
    }
    figures.push(measure("nix-instantiate, warm", n, reference(salt("inst"))).await);
    // The ceiling of two processes: two nix-instantiate on the two halves
    // at once (new derivations, so cold), with nothing of the engine.
    let half = |first: usize, count: usize| {
        let mut cmd = nix_cmd("nix-instantiate", count, &salt("halves"));
        cmd.arg("--arg")
            .arg("first")
            .arg(first.to_string())
            .arg(&path);
        cmd
    };
    settle();
    let start = Instant::now();
    let (a, b) = tokio::join!(
        measure("", n / 2, half(0, n / 2)),
        measure("", n - n / 2, half(n / 2, n - n / 2))
    );
    figures.push(Figure {
        what: "2 nix-instantiate on halves, cold".into(),
        jobs: n,
        elapsed: start.elapsed(),
        peak_rss: a.peak_rss.max(b.peak_rss),
    });

    println!("\n{title}: {n} jobs");
    println!(
        "{:<32} {:>10} {:>9} {:>13}",
        "", "jobs/s", "seconds", "peak RSS"
    );
    for f in &figures {
        println!(
            "{:<32} {:>10.0} {:>9.2} {:>9} MiB",
            f.what,
            f.rate(),
            f.elapsed.as_secs_f64(),
            f.peak_rss >> 20
        );
    }
    let rate = |what: &str| figures.iter().find(|f| f.what == what).unwrap().rate();
    for (what, reference) in [
        ("engine, 1 worker, cold", "nix-instantiate, cold"),
        ("engine, 2 workers, cold", "nix-instantiate, cold"),
        ("engine, 1 worker, warm", "nix-instantiate, warm"),
        ("engine, 2 workers, warm", "nix-instantiate, warm"),
        ("2 nix-instantiate on halves, cold", "nix-instantiate, cold"),
    ] {
        let ratio = rate(what) / rate(reference);
        match budgets.iter().find(|(w, _)| *w == what) {
            Some((_, budget)) => println!(
                "{what}: {ratio:.2}x {reference} (budget >= {budget:.1}x: {})",
                if ratio >= *budget { "met" } else { "NOT met" }
            ),
            None => println!("{what}: {ratio:.2}x {reference}"),
        }
    }
    let peak = figures[1..5].iter().map(|f| f.peak_rss).max().unwrap_or(0) >> 20;
    println!(
        "peak worker RSS: {peak} MiB (limit evaluator_max_memory_size = {MAX_MEMORY_MIB} MiB: {})",
        if peak <= MAX_MEMORY_MIB {
            "met"
        } else {
            "NOT met"
        }
    );
}

#[tokio::main]
async fn main() {
    let count = |var: &str, default: usize| -> usize {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("release.nix"), release("i")).unwrap();
    // Each job folds a list of 40,000 numbers of its own.
    std::fs::write(
        dir.path().join("cpu.nix"),
        release("builtins.foldl' (a: b: a + b) i (builtins.genList (x: x * i) 40000)"),
    )
    .unwrap();
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    jobset(
        "trivial jobs",
        dir.path(),
        "release.nix",
        count("BENCH_JOBS", 20_000),
        &run,
        &[
            ("engine, 2 workers, cold", 1.0),
            ("engine, 2 workers, warm", 1.2),
        ],
    )
    .await;
    jobset(
        "CPU-bound jobs",
        dir.path(),
        "cpu.nix",
        count("BENCH_CPU_JOBS", 1_500),
        &run,
        &[
            ("engine, 2 workers, cold", 1.8),
            ("engine, 2 workers, warm", 1.8),
        ],
    )
    .await;
}
