//! Running the real `hydra` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// `hydra` with a clean environment: no database or configuration settings
/// leak in from the test runner's environment.
pub fn hydra(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hydra"));
    for var in [
        "HYDRA_DATABASE_URL",
        "HYDRA_DBI",
        "HYDRA_CONFIG",
        "HYDRA_POSTGRESQL_BIN",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HYDRA_DATA", data);
    // Tests run side by side: each web server, queue runner status and
    // evaluator metrics endpoint gets a free port (`hydra up` refuses to
    // start on a taken one). A test that writes its own hydra.conf first
    // keeps it.
    cmd.env("HYDRA_LISTEN", "127.0.0.1:0");
    let conf = data.join("hydra.conf");
    if data.is_dir() && !conf.exists() {
        std::fs::write(&conf, FREE_PORTS).unwrap();
    }
    cmd
}

/// hydra.conf lines that put the roles' endpoints on free ports.
pub const FREE_PORTS: &str =
    "queue_runner_metrics_address = 127.0.0.1:0\nevaluator_metrics_address = 127.0.0.1:0\n";

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `hydra up`.
pub struct Up {
    pub child: Child,
    pub log: Receiver<String>,
    pub seen: Vec<String>,
}

impl Up {
    /// Starts `hydra up` (the command given, plus `up`) and waits until it
    /// has said that it is up and what to do next.
    pub fn start(mut cmd: Command) -> Up {
        let mut up = Up::spawn(cmd.arg("up"));
        up.wait_for("Stop with Ctrl-C", Duration::from_secs(120))
            .unwrap_or_else(|| panic!("hydra up did not come up:\n{}", up.seen.join("\n")));
        up
    }

    pub fn spawn(cmd: &mut Command) -> Up {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            log: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `text`; `None` if the process ended
    /// or the time ran out first.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    /// Whether a log line seen so far, or one arriving within `timeout`,
    /// contains `text`.
    pub fn saw(&mut self, text: &str, timeout: Duration) -> bool {
        self.seen.iter().any(|l| l.contains(text)) || self.wait_for(text, timeout).is_some()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> Vec<String> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        assert!(
            status.success(),
            "hydra up exited with {status}:\n{}",
            self.seen.join("\n")
        );
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The pid of the PostgreSQL server of a managed cluster.
pub fn postgres_pid(data: &Path) -> Option<i32> {
    std::fs::read_to_string(data.join("postgres/data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until `condition` holds, up to `timeout`.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

/// The URL of the managed database in `data`.
/// Waits (asynchronously) until `check` answers true or `timeout` passes;
/// tells which.
pub async fn until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

pub fn managed_url(data: &Path) -> String {
    format!(
        "postgres:///hydra?host={}&user=hydra",
        data.join("postgres").display()
    )
}

/// What `hydra up` printed for its user.
#[derive(Debug)]
pub struct Banner {
    /// The web server's address, ending in `/`.
    pub open: String,
    /// The first-run setup link, while there is no administrator.
    pub setup: Option<String>,
    /// The binary cache's public key.
    pub public_key: Option<String>,
    /// Whether it says where to sign in instead.
    pub sign_in: bool,
}

impl Banner {
    pub fn of(up: &Up) -> Banner {
        let after = |label: &str| {
            up.seen.iter().find_map(|l| {
                l.trim_start()
                    .strip_prefix(label)
                    .map(|rest| rest.trim().to_string())
            })
        };
        Banner {
            open: after("Open ").expect("an Open line"),
            setup: up
                .seen
                .iter()
                .find(|l| l.contains("/setup?token="))
                .map(|l| l.trim().to_string()),
            public_key: after("Binary cache ").and_then(|l| {
                l.split_once("signed by ")
                    .map(|(_, k)| k.trim().to_string())
            }),
            sign_in: up.seen.iter().any(|l| l.contains("Sign in at")),
        }
    }
}

/// `curl` (a real HTTP client): the status and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The checkout this test runs in.
pub fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The shell commands of a document's section (its ```sh blocks, from the
/// `heading` line to the next heading of the same level), as one script,
/// without the lines that set `HYDRA`, `HYDRA_USER` and `HYDRA_PASSWORD`:
/// the test gives those itself.
pub fn doc_commands(file: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let level = heading.split(' ').next().unwrap_or("##");
    let mut inside = false;
    let mut in_block = false;
    let mut script = String::from("set -euo pipefail\n");
    for line in text.lines() {
        if line.starts_with('#') && !in_block {
            let this_level = line.split(' ').next().unwrap_or("");
            if line == heading {
                inside = true;
                continue;
            }
            if inside && this_level.len() <= level.len() {
                break;
            }
        }
        if !inside {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_block = !in_block && trimmed == "```sh";
            continue;
        }
        if in_block
            && ![
                "export HYDRA=",
                "export HYDRA_USER=",
                "export HYDRA_PASSWORD=",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p))
        {
            script.push_str(trimmed);
            script.push('\n');
        }
    }
    assert!(
        script.lines().count() > 3,
        "no commands under {heading} in {file}"
    );
    script
}

/// Runs a documented script in `cwd` (which holds a copy of `examples/`)
/// with the given variables; stdout and stderr.
pub fn run_script(script: &str, cwd: &Path, vars: &[(&str, &str)]) -> (bool, String, String) {
    let examples = cwd.join("examples/hello");
    std::fs::create_dir_all(&examples).unwrap();
    std::fs::copy(
        repo_root().join("examples/hello/release.nix"),
        examples.join("release.nix"),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["300", "bash", "-c", script])
        .current_dir(cwd)
        .envs(vars.iter().copied())
        .env_remove("NIX_PATH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
