//! Serve-protocol copy throughput for a 200 MB closure between two stores,
//! next to `nix-store --export | nix-store --import` of the same closure.
//! `cargo bench -p hydra-nix --bench copy_closure`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hydra_nix::copy::copy_closure;
use hydra_nix::serve::{ServeClient, Transport};
use hydra_test_support::NixStore;

const EXPR: &str = r#"
let mk = name: deps: derivation {
  inherit name; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir $out; head -c 52428800 /dev/urandom > $out/data; echo ${toString deps} > $out/deps" ];
};
  a = mk "bench-a" [ ];
  b = mk "bench-b" [ a ];
  c = mk "bench-c" [ b ];
in mk "bench-d" [ c ]
"#;

fn transport(store: &NixStore) -> Transport {
    let (program, args, env) = store.serve_command();
    Transport::Local {
        program: program.into(),
        args,
        env,
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let source = NixStore::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bench.nix"), EXPR).unwrap();
    let top = source.build(&dir.path().join("bench.nix"), "")[0].clone();
    let closure: Vec<String> = source
        .run("nix-store", &["--query", "--requisites", &top])
        .lines()
        .map(String::from)
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut ours = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let target = NixStore::new();
        let (elapsed, report) = runtime.block_on(async {
            let mut from = ServeClient::connect(&transport(&source), Duration::from_secs(30))
                .await
                .unwrap();
            let mut to = ServeClient::connect(&transport(&target), Duration::from_secs(30))
                .await
                .unwrap();
            let start = Instant::now();
            let report = copy_closure(&mut from, &mut to, &BTreeSet::from([top.clone()]), false)
                .await
                .unwrap();
            let elapsed = start.elapsed();
            to.close().await.unwrap();
            from.close().await.unwrap();
            (elapsed, report)
        });
        assert_eq!(report.copied.len(), closure.len());
        bytes = report.bytes;
        ours.push(elapsed);
    }

    let mut reference = Vec::new();
    for _ in 0..3 {
        let target = NixStore::new();
        let start = Instant::now();
        let mut export = source
            .command("nix-store")
            .arg("--export")
            .args(&closure)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = target
            .command("nix-store")
            .arg("--import")
            .stdin(export.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(export.wait().unwrap().success() && import.success());
        reference.push(start.elapsed());
        drop(target);
    }
    let best = |v: &[Duration]| *v.iter().min().unwrap();
    let _ = Command::new("true").status();
    println!(
        "closure of {} paths, {} MiB of NAR:",
        closure.len(),
        bytes >> 20
    );
    println!(
        "  copy_closure over serve (AddToStoreNar): {:7.1} MB/s ({:?})",
        mb_per_s(bytes, best(&ours)),
        best(&ours)
    );
    println!(
        "  nix-store --export | nix-store --import:  {:7.1} MB/s ({:?})",
        mb_per_s(bytes, best(&reference)),
        best(&reference)
    );
    println!(
        "  ratio: {:.2}x the export/import pipe",
        best(&reference).as_secs_f64() / best(&ours).as_secs_f64()
    );
}
