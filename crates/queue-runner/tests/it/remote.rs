//! Remote build machines: two chroot stores reached through real sshd
//! servers on loopback. Features decide where a step goes, unknown systems
//! fail with 9, an unreachable machine is backed off and its work done by
//! another, and inputs and outputs travel (NAR hashes checked by Nix).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::{Running, Setup};
use hydra_test_support::{NixStore, Sshd};

struct Builder {
    store: NixStore,
    sshd: Sshd,
}

impl Builder {
    fn new() -> Builder {
        Builder::with_features("")
    }

    /// A builder whose Nix has these system features.
    fn with_features(features: &str) -> Builder {
        let store = NixStore::new();
        if !features.is_empty() {
            let conf = store.conf_dir().join("nix.conf");
            let mut text = std::fs::read_to_string(&conf).unwrap();
            text.push_str(&format!("system-features = {features}\n"));
            std::fs::write(conf, text).unwrap();
        }
        let sshd = Sshd::start(&store.serve_command().2);
        Builder { store, sshd }
    }

    fn uri(&self) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}?remote-store={}",
            self.sshd.user,
            self.sshd.port,
            self.store.root().display()
        )
    }

    /// A machines-file line: systems, speed, supported features.
    fn line(&self, speed: u32, features: &str) -> String {
        format!(
            "{} x86_64-linux {} 1 {speed} {features} - {}\n",
            self.uri(),
            self.sshd.client_key().display(),
            base64::engine::general_purpose::STANDARD.encode(self.sshd.host_key())
        )
    }
}

const JOBS: &str = r#"
with import ./config.nix;
rec {
  dep = mkDerivation { name = "dep"; builder = builtins.toFile "d.sh" "echo dependency > $out"; };
  gpu = mkDerivation {
    name = "gpu"; builder = builtins.toFile "g.sh" "cat $dep > $out; echo on-gpu >> $out"; inherit dep;
    requiredSystemFeatures = [ "gpu" ];
  };
  plain = mkDerivation { name = "plain"; builder = builtins.toFile "p.sh" "echo plain > $out"; };
  alien = derivation { name = "alien"; system = "aarch64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };
}
"#;

async fn machine_of(s: &Setup, build: i32) -> Vec<String> {
    s.strings(&format!(
        "select machine from BuildSteps where build = {build} and status = 0 order by stepnr"
    ))
    .await
}

#[tokio::test]
async fn features_pick_the_machine_and_inputs_and_outputs_travel_over_ssh() {
    let s = Setup::new().await;
    let b = Builder::new();
    let c = Builder::with_features("gpu");
    let file = s.write("jobs.nix", JOBS);
    let gpu = s.queue(&file, "gpu").await;
    let alien = s.queue(&file, "alien").await;
    let machines = format!("{}{}", b.line(1, "-"), c.line(1, "gpu"));
    let running = Running::start(s.context(&machines, ""));
    s.wait(&[gpu, alien], Duration::from_secs(120)).await;

    assert_eq!(s.build(gpu).await.status, Some(0));
    let machines_used = machine_of(&s, gpu).await;
    assert_eq!(machines_used.len(), 2, "dep and gpu");
    assert_eq!(
        machines_used[1],
        c.uri(),
        "the gpu step runs where the feature is"
    );
    // The output is in the local store, checked by Nix against its hash,
    // and it saw its input.
    let out: String = sqlx::query_scalar("select path from BuildOutputs where build = $1")
        .bind(gpu)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let verify = s.store.try_run("nix-store", &["--verify-path", &out]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(s.store.real_path(&out)).unwrap(),
        "dependency\non-gpu\n"
    );
    assert!(c.store.real_path(&out).exists(), "built on c");

    // No machine builds aarch64-linux: status 9 with a message.
    assert_eq!(s.build(alien).await.status, Some(9));
    let message: Option<String> =
        sqlx::query_scalar("select errorMsg from BuildSteps where build = $1")
            .bind(alien)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert!(
        message
            .unwrap()
            .contains("unsupported system type 'aarch64-linux'")
    );
    running.stop().await;
}

#[tokio::test]
async fn an_unreachable_machine_is_backed_off_and_another_does_the_work() {
    let s = Setup::new().await;
    let b = Builder::new();
    let file = s.write("jobs.nix", JOBS);
    let plain = s.queue(&file, "plain").await;
    // The dead machine is faster, so it is tried first.
    let dead = format!(
        "ssh://{}@127.0.0.1:1 x86_64-linux {} 1 10 - - -\n",
        b.sshd.user,
        b.sshd.client_key().display()
    );
    let machines = format!("{dead}{}", b.line(1, "-"));
    let running = Running::start(s.context(&machines, "retry_interval = 1"));
    s.wait(&[plain], Duration::from_secs(120)).await;
    assert_eq!(s.build(plain).await.status, Some(0));
    let rows: Vec<(String, Option<i32>)> =
        sqlx::query_as("select machine, status from BuildSteps where build = $1 order by stepnr")
            .bind(plain)
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].0.contains("127.0.0.1:1") && rows[0].1 == Some(3),
        "{rows:?}"
    );
    assert_eq!((rows[1].0.clone(), rows[1].1), (b.uri(), Some(0)));
    running.stop().await;
}
