//! How long a test waits for its own migrated database (budget: < 100 ms).
//! Run with `cargo bench -p hydra-test-support`.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use hydra_test_support::TestDb;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        TestDb::new().await;
        println!(
            "cluster start + template migration + first database: {:?}",
            started.elapsed()
        );

        let mut samples: Vec<Duration> = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let db = TestDb::new().await;
            samples.push(t.elapsed());
            db.pool.close().await;
        }
        samples.sort();
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "fresh migrated database (n={}): p50 {:?}, p90 {:?}, max {:?} (budget 100 ms)",
            samples.len(),
            p(0.5),
            p(0.9),
            samples[samples.len() - 1]
        );
    });
}
