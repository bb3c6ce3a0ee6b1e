//! The managed cluster: created on first start, reused with its data,
//! recovered after the server is killed, owned by one process at a time,
//! and clear about what is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hydra_db::managed::{ClusterSpec, DATABASE, ManagedCluster, ManagedError};

fn spec(dir: &Path) -> ClusterSpec {
    ClusterSpec {
        dir: dir.to_path_buf(),
        settings: vec![("shared_buffers".into(), "16MB".into())],
        remove_when_orphaned: false,
        search_path: None,
    }
}

fn start(dir: &Path) -> ManagedCluster {
    let spec = spec(dir);
    std::thread::spawn(move || ManagedCluster::start(&spec))
        .join()
        .unwrap()
        .unwrap()
}

/// Runs SQL in the cluster's database on a connection of its own.
async fn run_sql(cluster: &ManagedCluster, sql: &'static str) {
    let pool = hydra_db::connect(cluster.connect_options(DATABASE), 1, Duration::ZERO)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// The single value a query returns, as text.
async fn value(cluster: &ManagedCluster, sql: &'static str) -> String {
    let pool = hydra_db::connect(cluster.connect_options(DATABASE), 1, Duration::ZERO)
        .await
        .unwrap();
    let v: String = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    v
}

async fn stop(cluster: ManagedCluster) {
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_cluster_keeps_its_data_across_restarts_and_server_crashes() {
    let base = hydra_test_support::shared_tempdir();
    let dir = base.path().join("postgres");

    let cluster = start(&dir);
    assert!(cluster.is_owner());
    assert!(dir.join("data/PG_VERSION").is_file());
    assert!(
        dir.join(".s.PGSQL.5432").exists(),
        "socket inside the directory"
    );
    cluster.ensure_database(DATABASE).await.unwrap();
    cluster.ensure_database(DATABASE).await.unwrap();
    run_sql(
        &cluster,
        "create table kept (x int); insert into kept values (1)",
    )
    .await;
    // Only the Unix socket: nothing listens on TCP.
    assert_eq!(value(&cluster, "show listen_addresses").await, "");
    stop(cluster).await;
    assert!(!dir.join(".s.PGSQL.5432").exists(), "stopped cleanly");

    // Second start: same data, no initdb.
    let cluster = start(&dir);
    assert_eq!(
        value(&cluster, "select count(*)::text from kept").await,
        "1"
    );
    run_sql(&cluster, "insert into kept values (2)").await;

    // Kill the server without warning; the committed row survives recovery.
    let pid: i32 = std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    let cluster = start(&dir);
    assert_eq!(
        value(&cluster, "select count(*)::text from kept").await,
        "2"
    );
    stop(cluster).await;
}

#[tokio::test]
async fn one_owner_at_a_time_and_others_attach() {
    let base = hydra_test_support::shared_tempdir();
    let dir = base.path().join("postgres");
    let owner = start(&dir);
    owner.ensure_database(DATABASE).await.unwrap();

    let s = spec(&dir);
    let second = std::thread::spawn(move || ManagedCluster::start(&s))
        .join()
        .unwrap();
    match second {
        Err(ManagedError::AlreadyRunning { pid, .. }) => {
            assert_eq!(pid, std::process::id().to_string())
        }
        other => panic!("a second owner must be refused: {other:?}"),
    }
    let message = ManagedError::AlreadyRunning {
        pid: "123".into(),
        dir: dir.clone(),
    }
    .to_string();
    assert!(
        message.contains("123") && message.contains(dir.to_str().unwrap()),
        "{message}"
    );

    let s = spec(&dir);
    let attached = std::thread::spawn(move || ManagedCluster::start_or_attach(&s))
        .join()
        .unwrap()
        .unwrap();
    assert!(!attached.is_owner());
    assert_eq!(
        value(&attached, "select 'through the attached handle'").await,
        "through the attached handle"
    );
    // Dropping an attached handle leaves the server running.
    drop(attached);
    assert_eq!(value(&owner, "select 'still up'").await, "still up");
    stop(owner).await;
}

#[test]
fn missing_binaries_name_the_debian_package() {
    let base = hydra_test_support::shared_tempdir();
    let empty = tempfile::tempdir().unwrap();
    let mut s = spec(&base.path().join("postgres"));
    s.search_path = Some(vec![empty.path().to_path_buf()]);
    let err = ManagedCluster::start(&s).unwrap_err();
    assert!(matches!(err, ManagedError::MissingBinaries), "{err}");
    assert!(
        err.to_string().contains("apt-get install postgresql"),
        "{err}"
    );
}

#[test]
fn a_cluster_of_another_postgresql_version_names_the_package_to_install() {
    let base = hydra_test_support::shared_tempdir();
    let dir = base.path().join("postgres");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/PG_VERSION"), "9\n").unwrap();
    let err = ManagedCluster::start(&spec(&dir)).unwrap_err();
    assert!(
        matches!(err, ManagedError::VersionMismatch { cluster: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("postgresql-9"), "{err}");
}

#[test]
fn an_overlong_socket_path_is_refused_up_front() {
    let long: PathBuf = std::env::temp_dir().join("x".repeat(120));
    let err = ManagedCluster::start(&spec(&long)).unwrap_err();
    assert!(
        matches!(err, ManagedError::SocketPathTooLong { .. }),
        "{err}"
    );
    assert!(!long.exists(), "nothing is created when refusing");
}

#[test]
fn a_directory_the_server_account_cannot_enter_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap(); // mode 0700, owned by us
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let result = ManagedCluster::start(&spec(&base.path().join("postgres")));
    if nix::unistd::geteuid().is_root() {
        // The server runs as an unprivileged user that cannot get in.
        match result {
            Err(ManagedError::NotTraversable { path, mode, .. }) => {
                assert_eq!(path, base.path());
                assert_eq!(mode, 0o700);
            }
            other => panic!("expected NotTraversable, got {other:?}"),
        }
    } else {
        // Not root: the server runs as ourselves, who can.
        result.unwrap().stop().unwrap();
    }
}

#[tokio::test]
async fn connecting_waits_for_a_server_that_is_still_starting() {
    let base = hydra_test_support::shared_tempdir();
    let dir = base.path().join("postgres");
    let options = spec(&dir);
    let connect_options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .socket(&dir)
        .username(hydra_db::managed::ROLE)
        .database("postgres");
    // Without patience, an absent server is an immediate error.
    let err = hydra_db::connect(connect_options.clone(), 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("No such file") || err.to_string().contains("refused"),
        "{err}"
    );

    let waiting = tokio::spawn(hydra_db::connect(
        connect_options,
        1,
        Duration::from_secs(60),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cluster = std::thread::spawn(move || ManagedCluster::start(&options))
        .join()
        .unwrap()
        .unwrap();
    let pool = waiting.await.unwrap().unwrap();
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    pool.close().await;
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .unwrap()
        .unwrap();
}
