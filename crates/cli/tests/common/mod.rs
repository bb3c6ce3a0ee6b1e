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
    // Tests run side by side: each web server gets a free port.
    cmd.env("HYDRA_LISTEN", "127.0.0.1:0");
    cmd
}

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
    /// says it is up.
    pub fn start(mut cmd: Command) -> Up {
        let mut up = Up::spawn(cmd.arg("up"));
        up.wait_for("hydra is up", Duration::from_secs(120))
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
pub fn managed_url(data: &Path) -> String {
    format!(
        "postgres:///hydra?host={}&user=hydra",
        data.join("postgres").display()
    )
}
