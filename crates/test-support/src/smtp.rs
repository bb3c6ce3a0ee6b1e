//! A real SMTP server on 127.0.0.1 (Python's `aiosmtpd`, Debian's
//! `python3-aiosmtpd`) that keeps every message it receives in a Maildir,
//! with the envelope in `X-MailFrom` and `X-RcptTo` headers.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server; it stops when dropped.
#[derive(Debug)]
pub struct Smtpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtpd {
    pub fn start() -> Smtpd {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        // A free port: taken and let go (aiosmtpd cannot report its own).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3-aiosmtpd (the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtpd { child, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages received so far, as they arrived (oldest first).
    pub fn messages(&self) -> Vec<String> {
        let new = self.dir.path().join("mail").join("new");
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&new)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let modified = e.metadata().ok()?.modified().ok()?;
                        Some((modified, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits, up to `timeout`, until `n` messages arrived; the messages.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
