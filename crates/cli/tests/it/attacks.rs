//! The web server as an attacker meets it, through the real `hydra server`
//! binary: a crowd of sign-in attempts stays within the memory budget, and
//! idle connections are closed and capped instead of exhausting the
//! descriptors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Up, curl, eventually, hydra};
use hydra_test_support::{TestDb, shared_tempdir};
use nix::sys::signal::Signal;

/// `hydra server` on `db` with `config`; its address.
fn server(db: &TestDb, data: &std::path::Path, config: &str) -> (Up, String) {
    std::fs::write(
        data.join("hydra.conf"),
        format!("{}{config}", common::FREE_PORTS),
    )
    .unwrap();
    let mut cmd = hydra(data);
    cmd.env("HYDRA_DATABASE_URL", db.url()).arg("server");
    let mut up = Up::spawn(&mut cmd);
    let line = up
        .wait_for("web server listening", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no server:\n{}", up.seen.join("\n")));
    let address = line
        .split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    (up, format!("http://{address}"))
}

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    hydra_metrics::resident_memory(pid)
        .expect("the server runs")
        .1
}

#[tokio::test]
async fn a_crowd_of_sign_ins_stays_within_the_password_memory_budget() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    // Hydra's parameters: 256 MiB for each check.
    let hash = hydra_db::password::hash("correct horse").unwrap();
    sqlx::query("insert into Users (userName, emailAddress, password) values ('alice', '', $1)")
        .bind(&hash)
        .execute(&db.pool)
        .await
        .unwrap();
    let (up, base) = server(&db, data.path(), "");
    let pid = up.child.id();
    let before = peak_rss(pid);
    // 24 at once, as in the report that found the defect (6 GiB then).
    let attempts: Vec<_> = (0..24)
        .map(|_| {
            let base = base.clone();
            std::thread::spawn(move || {
                curl(&[
                    "-H",
                    &format!("Referer: {base}"),
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    r#"{"username": "alice", "password": "correct horse"}"#,
                    &format!("{base}/login"),
                ])
                .0
            })
        })
        .collect();
    let statuses: Vec<u16> = attempts.into_iter().map(|t| t.join().unwrap()).collect();
    // Signed in, or told to come back when the budget is spent for longer
    // than an attempt waits (503); never anything else.
    assert!(
        statuses.iter().all(|s| *s == 302 || *s == 503) && statuses.contains(&302),
        "{statuses:?}"
    );
    let peak = peak_rss(pid);
    assert!(
        peak < 900 << 20,
        "peak resident memory {} MiB (before: {} MiB)",
        peak >> 20,
        before >> 20
    );
    up.signal(Signal::SIGTERM);
}

#[tokio::test]
async fn idle_connections_are_closed_and_capped_and_the_file_limit_is_raised() {
    let db = TestDb::new().await;
    let data = shared_tempdir();
    let (mut up, base) = server(
        &db,
        data.path(),
        "max_connections = 20\nconnection_idle_timeout = 2\n",
    );
    let pid = up.child.id();
    // The soft open-file limit was raised to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "{files}");

    let address = base.trim_start_matches("http://").to_string();
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // Every slot is taken: a new client is turned away at once, and the log
    // says why.
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = curl(&["--max-time", "5", &format!("{base}/api/nrqueue")]);
    assert_eq!(
        status, 0,
        "refused while the idle connections hold every slot"
    );
    assert!(
        up.wait_for("too many open connections", Duration::from_secs(5))
            .is_some()
    );
    // The idle ones are closed after connection_idle_timeout; then clients
    // are served again.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed by the server");
    }
    assert!(eventually(Duration::from_secs(5), || {
        curl(&["--max-time", "5", &format!("{base}/api/nrqueue")]).0 == 200
    }));
    // A client that sends its headers too slowly is closed too.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /api/nrqueue HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "no answer to a request whose headers never ended"
    );
    up.signal(Signal::SIGTERM);
}
