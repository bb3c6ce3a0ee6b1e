//! `hydra up` with the managed database: first start, restart, recovery
//! after `kill -9`, one instance per HYDRA_DATA, and clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{Up, alive, eventually, hydra, managed_url, postgres_pid, run, stderr};
use hydra_test_support::{TestDb, shared_tempdir};
use nix::sys::signal::Signal;

async fn query_i64(url: &str, sql: &'static str) -> i64 {
    let options = hydra_db::parse_url(url, "test").unwrap();
    let pool = hydra_db::connect(options, 1, std::time::Duration::ZERO)
        .await
        .unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

async fn exec(url: &str, sql: &'static str) {
    let options = hydra_db::parse_url(url, "test").unwrap();
    let pool = hydra_db::connect(options, 1, std::time::Duration::ZERO)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn first_start_creates_and_migrates_the_database_and_a_restart_keeps_it() {
    let data = shared_tempdir();
    let up = Up::start(hydra(data.path()));
    assert!(data.path().join("postgres/data/PG_VERSION").is_file());
    let url = managed_url(data.path());
    assert!(
        up.seen.iter().any(|l| l.contains(&url)),
        "the log says where the database is"
    );
    assert_eq!(
        query_i64(&url, "select version::bigint from SchemaVersion").await,
        87
    );
    exec(
        &url,
        "insert into Users (userName, emailAddress, password) values ('kept', '', '!')",
    )
    .await;
    let log = up.stop();
    assert!(
        log.iter().any(|l| l.contains("PostgreSQL stopped")),
        "{log:#?}"
    );
    assert!(
        !data.path().join("postgres/.s.PGSQL.5432").exists(),
        "the server stopped with hydra"
    );

    let up = Up::start(hydra(data.path()));
    assert!(
        up.seen.iter().any(|l| l.contains("up to date")),
        "{:#?}",
        up.seen
    );
    assert!(
        !up.seen
            .iter()
            .any(|l| l.contains("creating the PostgreSQL cluster"))
    );
    assert_eq!(
        query_i64(&url, "select count(*) from Users where userName = 'kept'").await,
        1
    );
    up.stop();
}

#[tokio::test]
async fn after_kill_9_of_everything_the_next_start_recovers_committed_data() {
    let data = shared_tempdir();
    let mut up = Up::start(hydra(data.path()));
    let url = managed_url(data.path());
    exec(
        &url,
        "insert into Users (userName, emailAddress, password) values ('committed', '', '!')",
    )
    .await;
    let server = postgres_pid(data.path()).unwrap();
    up.signal(Signal::SIGKILL);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server), Signal::SIGKILL).unwrap();
    up.child.wait().unwrap();
    assert!(eventually(Duration::from_secs(10), || !alive(server)));

    let up = Up::start(hydra(data.path()));
    assert_eq!(
        query_i64(
            &url,
            "select count(*) from Users where userName = 'committed'"
        )
        .await,
        1
    );
    up.stop();
}

#[tokio::test]
async fn when_hydra_is_killed_its_database_server_stops_too() {
    let data = shared_tempdir();
    let mut up = Up::start(hydra(data.path()));
    let server = postgres_pid(data.path()).unwrap();
    up.signal(Signal::SIGKILL);
    up.child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || !alive(server)),
        "the watchdog should stop PostgreSQL when hydra dies"
    );
    let up = Up::start(hydra(data.path()));
    up.stop();
}

#[tokio::test]
async fn a_second_hydra_up_on_the_same_data_refuses() {
    let data = shared_tempdir();
    let first = Up::start(hydra(data.path()));
    let out = run(hydra(data.path()).arg("up"));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!("another hydra process (pid {})", first.child.id()))
            && message.contains("only one `hydra up`"),
        "{message}"
    );
    // The first one is unharmed.
    assert_eq!(
        query_i64(&managed_url(data.path()), "select 1::bigint").await,
        1
    );
    first.stop();
}

#[tokio::test]
async fn administration_commands_use_the_database_of_a_running_hydra_up() {
    let data = shared_tempdir();
    let up = Up::start(hydra(data.path()));
    let out = run(hydra(data.path()).args(["create-user", "while-up", "--role", "admin"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(hydra(data.path()).arg("init"));
    assert!(out.status.success(), "{}", stderr(&out));
    let url = managed_url(data.path());
    assert_eq!(
        query_i64(
            &url,
            "select count(*) from UserRoles where userName = 'while-up'"
        )
        .await,
        1
    );
    up.stop();
}

#[tokio::test]
async fn with_a_configured_database_no_cluster_is_run() {
    let data = shared_tempdir();
    let db = TestDb::empty().await;
    let mut cmd = hydra(data.path());
    cmd.env("HYDRA_DATABASE_URL", db.url());
    let up = Up::start(cmd);
    assert!(!data.path().join("postgres").exists());
    let version: i32 = sqlx::query_scalar("select version from SchemaVersion")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(version, 87);
    up.stop();
}

#[test]
fn missing_postgresql_programs_name_the_package_to_install() {
    let data = shared_tempdir();
    let empty = tempfile::tempdir().unwrap();
    let out = run(hydra(data.path())
        .env("HYDRA_POSTGRESQL_BIN", empty.path())
        .arg("up"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("apt-get install postgresql"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_broken_configuration_file_is_reported_with_file_and_line() {
    let data = shared_tempdir();
    std::fs::write(data.path().join("hydra.conf"), "base_uri = x\n<webhooks>\n").unwrap();
    let out = run(hydra(data.path()).arg("up"));
    assert!(!out.status.success());
    let message = stderr(&out);
    let expected = format!(
        "{}:2: block `<webhooks>` is not closed",
        data.path().join("hydra.conf").display()
    );
    assert!(message.contains(&expected), "{message}");
    assert!(!data.path().join("postgres").exists(), "nothing started");
}

#[test]
fn an_unwritable_data_directory_is_reported() {
    let out = run(hydra(std::path::Path::new("/proc/hydra-cannot-be-here")).arg("init"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot create HYDRA_DATA /proc/hydra-cannot-be-here"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_lists_every_command_with_its_purpose() {
    let out = run(hydra(std::path::Path::new("/nonexistent")).arg("--help"));
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (command, purpose) in [
        ("up", "Run the system in one process"),
        ("init", "Create the database schema"),
        ("create-user", "Create a user account"),
        ("server", "Serve the web interface"),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{command} ")))
            .unwrap_or_else(|| panic!("{command} missing from:\n{help}"));
        assert!(line.contains(purpose), "{line}");
    }
    let out = run(hydra(std::path::Path::new("/nonexistent")).arg("--version"));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("hydra {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_taken_address_stops_hydra_up_naming_the_option_to_change() {
    // Another program on the queue runner's status address: hydra up must
    // not start (and never show that program's answers as its status).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let data = shared_tempdir();
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "queue_runner_metrics_address = {address}\nevaluator_metrics_address = 127.0.0.1:0\n"
        ),
    )
    .unwrap();
    let out = run(hydra(data.path()).arg("up"));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains(&format!("cannot listen on {address}"))
            && message.contains("queue_runner_metrics_address in hydra.conf"),
        "{message}"
    );
    assert!(!message.contains("hydra is up"), "{message}");
    assert!(!message.contains("web server listening"), "{message}");

    // The web server's address: the option is --listen.
    let data = shared_tempdir();
    let out = run(hydra(data.path())
        .env("HYDRA_LISTEN", address.to_string())
        .arg("up"));
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("--listen (or HYDRA_LISTEN)"), "{message}");

    // The evaluator's metrics.
    let data = shared_tempdir();
    std::fs::write(
        data.path().join("hydra.conf"),
        format!(
            "queue_runner_metrics_address = 127.0.0.1:0\nevaluator_metrics_address = {address}\n"
        ),
    )
    .unwrap();
    let out = run(hydra(data.path()).arg("up"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("evaluator_metrics_address in hydra.conf"),
        "{}",
        stderr(&out)
    );
    drop(taken);
}
