//! NAR reading and hashing throughput, next to `sha256sum` on the same bytes
//! (target: at least 80 % of it). `cargo bench -p hydra-nix --bench nar_hash`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hydra_nix::nar::{self, NarReader, Node};

const FILES: usize = 64;
const FILE_SIZE: usize = 4 << 20; // 256 MiB of NAR

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best: Option<(Duration, T)> = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = f();
        let elapsed = start.elapsed();
        if best.as_ref().is_none_or(|(b, _)| elapsed < *b) {
            best = Some((elapsed, value));
        }
    }
    best.unwrap()
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    // Incompressible-looking contents; the hash cost does not depend on them.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut entries = BTreeMap::new();
    for i in 0..FILES {
        let contents: Vec<u8> = (0..FILE_SIZE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        entries.insert(
            format!("file-{i:03}").into_bytes(),
            Node::Regular {
                executable: i % 7 == 0,
                contents,
            },
        );
    }
    let mut bytes = Vec::new();
    nar::write_node(&Node::Directory(entries), &mut bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.nar");
    std::fs::write(&file, &bytes).unwrap();
    let size = bytes.len() as u64;

    let (sha, out) = best_of(5, || {
        std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap()
    });
    let reference = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (from_file, summary) = best_of(5, || {
        runtime.block_on(async {
            let f = tokio::io::BufReader::with_capacity(
                1 << 20,
                tokio::fs::File::open(&file).await.unwrap(),
            );
            NarReader::new(f).finish().await.unwrap()
        })
    });
    assert_eq!(
        summary.nar_hash.to_base16(),
        reference,
        "same bytes, same hash"
    );
    let (from_memory, _) = best_of(5, || {
        runtime
            .block_on(NarReader::new(&bytes[..]).finish())
            .unwrap()
    });

    println!("NAR of {} MiB ({FILES} files):", size >> 20);
    println!(
        "  sha256sum on the file:          {:8.1} MB/s",
        mb_per_s(size, sha)
    );
    println!(
        "  NarReader + SHA-256, from file: {:8.1} MB/s  ({:.0} % of sha256sum)",
        mb_per_s(size, from_file),
        100.0 * sha.as_secs_f64() / from_file.as_secs_f64()
    );
    println!(
        "  NarReader + SHA-256, in memory: {:8.1} MB/s  ({:.0} % of sha256sum)",
        mb_per_s(size, from_memory),
        100.0 * sha.as_secs_f64() / from_memory.as_secs_f64()
    );
}
