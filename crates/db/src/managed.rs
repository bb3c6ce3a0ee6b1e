//! The managed PostgreSQL cluster: what runs when no database is configured.
//!
//! It lives in `$HYDRA_DATA/postgres`: the cluster in `data/`, the server log
//! in `postgres.log`, and the Unix socket in the directory itself. The server
//! listens on nothing else. Running as root, the server runs as an
//! unprivileged account (the directory's owner if it has one, else `hydra`,
//! `postgres` or `nobody`).
//!
//! One process *owns* the cluster: it holds an exclusive lock on
//! `postgres/lock`, starts the server and stops it (fast shutdown) when it is
//! done. Other processes may *attach* to a running cluster to use it. A small
//! watchdog process stops the server if its owner dies without stopping it
//! (`kill -9`), so no server is left behind; the next owner finds the cluster
//! exactly as PostgreSQL's crash recovery leaves it, with every committed
//! transaction.
//!
//! This code is blocking (it waits for processes); async callers run it in
//! `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use sqlx::postgres::PgConnectOptions;

use crate::DbError;

/// The database role the cluster is created with, and the database the
/// system uses in it.
pub const ROLE: &str = "hydra";
pub const DATABASE: &str = "hydra";

const PORT: u16 = 5432;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(
        "the PostgreSQL server programs (initdb, postgres) were not found in PATH or /usr/lib/postgresql/*/bin; \
         install the Debian package `postgresql` (apt-get install postgresql), or configure a database \
         with HYDRA_DATABASE_URL"
    )]
    MissingBinaries,
    #[error(
        "the cluster in {dir} was created by PostgreSQL {cluster}, but only PostgreSQL {found} is installed; \
         install the Debian package `postgresql-{cluster}`"
    )]
    VersionMismatch {
        dir: PathBuf,
        cluster: u32,
        found: String,
    },
    #[error("another process (pid {pid}) already runs the PostgreSQL cluster in {dir}")]
    AlreadyRunning { pid: String, dir: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed for {}: {output}", dir.display())]
    Initdb { dir: PathBuf, output: String },
    #[error("PostgreSQL in {} did not start; the end of its log {} says:\n{log}", dir.display(), log_file.display())]
    StartFailed {
        dir: PathBuf,
        log_file: PathBuf,
        log: String,
    },
    #[error("PostgreSQL in {} did not become ready within {} s", dir.display(), timeout.as_secs())]
    Timeout { dir: PathBuf, timeout: Duration },
    #[error(
        "the PostgreSQL server runs as user `{user}`, which cannot enter {} (mode {mode:o}); \
         allow it (chmod o+x), or choose another HYDRA_DATA", path.display()
    )]
    NotTraversable {
        user: String,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "the socket path {} is longer than {MAX_SOCKET_PATH} bytes, the limit of Unix sockets; \
         choose a shorter HYDRA_DATA", path.display()
    )]
    SocketPathTooLong { path: PathBuf },
    #[error(
        "running as root, PostgreSQL needs an unprivileged user to run as; none of hydra, postgres, nobody exists"
    )]
    NoUser,
    #[error(transparent)]
    Db(#[from] DbError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ManagedError {
    let path = path.to_path_buf();
    move |source| ManagedError::Io {
        action,
        path,
        source,
    }
}

/// How to run a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The directory holding everything (`$HYDRA_DATA/postgres`).
    pub dir: PathBuf,
    /// Server settings, passed as `-c name=value`.
    pub settings: Vec<(String, String)>,
    /// Delete `dir` once the server has stopped after its owner died: for
    /// throwaway clusters that must not outlive the process using them.
    pub remove_when_orphaned: bool,
    /// Where to look for `initdb` and `postgres`; `None` means `PATH`, then
    /// `/usr/lib/postgresql/<version>/bin`, newest first.
    pub search_path: Option<Vec<PathBuf>>,
}

impl ClusterSpec {
    /// The system's cluster in `$HYDRA_DATA/postgres`.
    pub fn for_data_dir(data_dir: &Path) -> ClusterSpec {
        ClusterSpec {
            dir: hydra_config::DataDir::from(data_dir).postgres(),
            settings: vec![("max_connections".into(), "300".into())],
            remove_when_orphaned: false,
            search_path: None,
        }
    }
}

/// A running cluster, owned or attached to.
#[derive(Debug)]
pub struct ManagedCluster {
    dir: PathBuf,
    owned: Option<Owned>,
}

#[derive(Debug)]
struct Owned {
    server: Child,
    watchdog: Option<Child>,
    _lock: File,
}

/// The account the server runs as, when we are root.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

impl ManagedCluster {
    /// Starts the cluster and owns it. Refuses when another process owns it.
    pub fn start(spec: &ClusterSpec) -> Result<ManagedCluster, ManagedError> {
        Self::open(spec, false)
    }

    /// Owns the cluster if no other process does; otherwise uses the one
    /// that process runs.
    pub fn start_or_attach(spec: &ClusterSpec) -> Result<ManagedCluster, ManagedError> {
        Self::open(spec, true)
    }

    fn open(spec: &ClusterSpec, attach: bool) -> Result<ManagedCluster, ManagedError> {
        let dir = absolute(&spec.dir);
        let socket = dir.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ManagedError::SocketPathTooLong { path: socket });
        }
        let account = server_account(&dir)?;
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        if let Some(a) = &account {
            check_traversable(&dir, a)?;
            std::os::unix::fs::chown(&dir, Some(a.uid), Some(a.gid))
                .map_err(io("change the owner of", &dir))?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions of", &dir))?;

        let lock_path = dir.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim().to_string();
                if !attach {
                    return Err(ManagedError::AlreadyRunning { pid, dir });
                }
                wait_ready(&dir, None, START_TIMEOUT)?;
                tracing::debug!(dir = %dir.display(), owner = %pid, "using the PostgreSQL cluster of another process");
                return Ok(ManagedCluster { dir, owned: None });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        lock.set_len(0).map_err(io("write", &lock_path))?;
        lock.rewind().map_err(io("write", &lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io("write", &lock_path))?;

        let data = dir.join("data");
        let existing_version = std::fs::read_to_string(data.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok());
        let bin = find_binaries(existing_version, &dir, spec.search_path.as_deref())?;
        if existing_version.is_none() {
            initdb(&bin, &dir, &data, account.as_ref())?;
        }
        stop_orphan(&dir, &data)?;

        let log_path = dir.join("postgres.log");
        let mut attempt = 1;
        let (server, watchdog) = loop {
            let mut server = spawn_server(
                &bin,
                &dir,
                &data,
                &log_path,
                &spec.settings,
                account.as_ref(),
            )?;
            let watchdog = spawn_watchdog(
                server.id(),
                spec.remove_when_orphaned.then_some(dir.as_path()),
            );
            match wait_ready(&dir, Some(&mut server), START_TIMEOUT) {
                Ok(()) => break (server, watchdog),
                Err(e) => {
                    let _ = server.kill();
                    let _ = server.wait();
                    if let Some(mut w) = watchdog {
                        let _ = w.kill();
                        let _ = w.wait();
                    }
                    // Backends of a server that was killed keep its shared
                    // memory for a moment after it died; wait for them.
                    let residue = matches!(&e, ManagedError::StartFailed { log, .. } if log.contains("still in use"));
                    if residue && attempt < 5 {
                        tracing::warn!(
                            "processes of a killed PostgreSQL server are still exiting; retrying"
                        );
                        std::thread::sleep(Duration::from_millis(500 * attempt));
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
            }
        };
        tracing::info!(dir = %dir.display(), "PostgreSQL is running");
        Ok(ManagedCluster {
            dir,
            owned: Some(Owned {
                server,
                watchdog,
                _lock: lock,
            }),
        })
    }

    pub fn is_owner(&self) -> bool {
        self.owned.is_some()
    }

    /// The directory that holds the socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// How to connect to `database` in this cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.dir)
            .port(PORT)
            .username(ROLE)
            .database(database)
    }

    /// A URL for `database` in this cluster, for people (and `psql`).
    pub fn url(&self, database: &str) -> String {
        let mut host = String::new();
        for b in self.dir.as_os_str().as_encoded_bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.') {
                host.push(*b as char);
            } else {
                host.push_str(&format!("%{b:02X}"));
            }
        }
        // `user@` with an empty host is valid for libpq but not for URL
        // parsers; the user goes into the query instead.
        format!("postgres:///{database}?host={host}&user={ROLE}")
    }

    /// Creates `name` unless it exists.
    pub async fn ensure_database(&self, name: &str) -> Result<(), DbError> {
        let options = self.connect_options("postgres");
        let pool = crate::connect(options, 1, std::time::Duration::ZERO).await?;
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                .bind(name)
                .fetch_one(&pool)
                .await?;
        if !exists {
            // Identifiers cannot be bound; the name is quoted.
            let statement = format!("create database \"{}\"", name.replace('"', "\"\""));
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&pool)
                .await
            {
                // Another process may have created it meanwhile.
                let code = match &e {
                    sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
                    _ => None,
                };
                if code.as_deref() != Some("42P04") {
                    return Err(e.into());
                }
            }
        }
        pool.close().await;
        Ok(())
    }

    /// Stops the server (when owned) and waits for it.
    pub fn stop(mut self) -> Result<(), ManagedError> {
        match self.owned.take() {
            Some(owned) => stop_owned(owned, &self.dir),
            None => Ok(()),
        }
    }
}

impl Drop for ManagedCluster {
    fn drop(&mut self) {
        if let Some(owned) = self.owned.take()
            && let Err(e) = stop_owned(owned, &self.dir)
        {
            tracing::error!(error = %e, "stopping PostgreSQL failed");
        }
    }
}

fn spawn_server(
    bin: &Path,
    dir: &Path,
    data: &Path,
    log_path: &Path,
    settings: &[(String, String)],
    account: Option<&Account>,
) -> Result<Child, ManagedError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io("open", log_path))?;
    let log_err = log.try_clone().map_err(io("open", log_path))?;
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(data)
        .arg("-k")
        .arg(dir)
        .arg("-p")
        .arg(PORT.to_string())
        .args(["-c", "listen_addresses="])
        .args(["-c", "unix_socket_permissions=0700"])
        .args(["-c", "logging_collector=off"]);
    for (name, value) in settings {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .current_dir(dir)
        // Its own process group: a terminal's Ctrl-C reaches us, and we stop
        // the server in order.
        .process_group(0);
    if let Some(a) = account {
        cmd.uid(a.uid).gid(a.gid);
    }
    cmd.spawn().map_err(io("start", &bin.join("postgres")))
}

fn stop_owned(mut owned: Owned, dir: &Path) -> Result<(), ManagedError> {
    if let Some(mut w) = owned.watchdog.take() {
        let _ = w.kill();
        let _ = w.wait();
    }
    let pid = Pid::from_raw(owned.server.id() as i32);
    // SIGINT is PostgreSQL's fast shutdown: roll back open transactions,
    // write a checkpoint, exit.
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match owned.server.try_wait() {
            Ok(Some(_)) => {
                tracing::info!(dir = %dir.display(), "PostgreSQL stopped");
                return Ok(());
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                tracing::warn!("PostgreSQL did not stop in time; stopping it immediately");
                let _ = kill(pid, Signal::SIGQUIT);
                std::thread::sleep(Duration::from_secs(5));
                let _ = owned.server.kill();
                let _ = owned.server.wait();
                return Ok(());
            }
            Err(e) => return Err(io("wait for", dir)(e)),
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Who the server runs as: `None` when we are not root (then: ourselves).
fn server_account(dir: &Path) -> Result<Option<Account>, ManagedError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let by_name = |name: &str| -> Option<Account> {
        let user = User::from_name(name).ok().flatten()?;
        Some(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    };
    if let Ok(meta) = std::fs::metadata(dir)
        && meta.uid() != 0
    {
        let user = User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
            .ok()
            .flatten();
        return Ok(Some(Account {
            name: user
                .map(|u| u.name)
                .unwrap_or_else(|| meta.uid().to_string()),
            uid: meta.uid(),
            gid: meta.gid(),
        }));
    }
    ["hydra", "postgres", "nobody"]
        .iter()
        .find_map(|n| by_name(n))
        .map(Some)
        .ok_or(ManagedError::NoUser)
}

/// Every directory above `dir` must let the server's account through.
fn check_traversable(dir: &Path, account: &Account) -> Result<(), ManagedError> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let ok = if meta.uid() == account.uid {
            mode & 0o100 != 0
        } else if meta.gid() == account.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(ManagedError::NotTraversable {
                user: account.name.clone(),
                path: ancestor.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// The directory with `initdb` and `postgres` of the wanted major version
/// (any, preferring the newest, when there is no cluster yet).
fn find_binaries(
    wanted: Option<u32>,
    dir: &Path,
    search_path: Option<&[PathBuf]>,
) -> Result<PathBuf, ManagedError> {
    let candidates = match search_path {
        Some(dirs) => dirs.to_vec(),
        None => default_search_path(),
    };
    let mut found = Vec::new();
    for candidate in candidates {
        if !candidate.join("initdb").is_file() || !candidate.join("postgres").is_file() {
            continue;
        }
        let Some(major) = server_major_version(&candidate.join("postgres")) else {
            continue;
        };
        if wanted.is_none_or(|w| w == major) {
            return Ok(candidate);
        }
        found.push(major.to_string());
    }
    match wanted {
        Some(cluster) if !found.is_empty() => Err(ManagedError::VersionMismatch {
            dir: dir.to_path_buf(),
            cluster,
            found: found.join(", "),
        }),
        _ => Err(ManagedError::MissingBinaries),
    }
}

fn default_search_path() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates
}

/// `postgres (PostgreSQL) 15.18 (Debian …)` → 15.
fn server_major_version(postgres: &Path) -> Option<u32> {
    let out = Command::new(postgres).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    version.split('.').next()?.parse().ok()
}

fn initdb(
    bin: &Path,
    dir: &Path,
    data: &Path,
    account: Option<&Account>,
) -> Result<(), ManagedError> {
    // A directory without PG_VERSION is a cluster whose creation was cut short.
    if data.exists() {
        std::fs::remove_dir_all(data).map_err(io("remove the incomplete cluster", data))?;
    }
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(data)
        .args(["-E", "UTF8", "--locale=C", "-U", ROLE, "-A", "trust"])
        .current_dir(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(a) = account {
        cmd.uid(a.uid).gid(a.gid);
    }
    tracing::info!(dir = %data.display(), "creating the PostgreSQL cluster");
    let out = cmd.output().map_err(io("run", &bin.join("initdb")))?;
    if !out.status.success() {
        return Err(ManagedError::Initdb {
            dir: data.to_path_buf(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
        });
    }
    Ok(())
}

/// Whether `pid` is a live process (a zombie, which has exited but was not
/// reaped yet, is not).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Deals with a server left running by an owner that died: we hold the lock,
/// so no live process owns it. Stop it, then clear the lock files a dead
/// server left behind.
fn stop_orphan(dir: &Path, data: &Path) -> Result<(), ManagedError> {
    let pid_file = data.join("postmaster.pid");
    if let Some(pid) = lock_file_pid(&pid_file)
        && process_alive(pid)
        && is_postgres(pid)
    {
        tracing::warn!(
            pid,
            "stopping a PostgreSQL server left running by a process that died"
        );
        let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process_alive(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    // PostgreSQL recognises stale lock files itself, except when the dead
    // server is a zombie not yet reaped, which its check takes for a live
    // one; and a pid reused by an unrelated program.
    for lock in [pid_file, dir.join(format!(".s.PGSQL.{PORT}.lock"))] {
        if let Some(pid) = lock_file_pid(&lock)
            && !(process_alive(pid) && is_postgres(pid))
        {
            tracing::debug!(file = %lock.display(), pid, "removing a stale PostgreSQL lock file");
            std::fs::remove_file(&lock).map_err(io("remove", &lock))?;
        }
    }
    Ok(())
}

/// The pid on the first line of a PostgreSQL lock file.
fn lock_file_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn is_postgres(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline
        .split(|b| *b == 0)
        .next()
        .unwrap_or_default()
        .ends_with(b"postgres")
}

/// Starts a shell that waits for this process to end and then stops the
/// server (and removes `remove`, if given). It runs in its own process group
/// and survives `kill -9` of this process.
fn spawn_watchdog(server: u32, remove: Option<&Path>) -> Option<Child> {
    const SCRIPT: &str = r#"
alive() { s=$(cut -d' ' -f3 /proc/$1/stat 2>/dev/null) && [ "$s" != Z ]; }
while alive "$1"; do sleep 1; done
kill -INT "$2" 2>/dev/null
if [ -n "$3" ]; then
  while alive "$2"; do sleep 0.2; done
  rm -rf -- "$3"
fi
"#;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("hydra-postgres-watchdog")
        .arg(std::process::id().to_string())
        .arg(server.to_string())
        .arg(remove.map(|p| p.as_os_str().to_owned()).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the PostgreSQL watchdog; a crash may leave the server running");
            None
        }
    }
}

/// Waits until the server of the cluster in `dir` accepts connections, as
/// `pg_ctl -w` does: the status line of `postmaster.pid` says `ready`.
fn wait_ready(
    dir: &Path,
    mut server: Option<&mut Child>,
    timeout: Duration,
) -> Result<(), ManagedError> {
    let pid_file = dir.join("data/postmaster.pid");
    let log_file = dir.join("postgres.log");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(child) = server.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(ManagedError::StartFailed {
                dir: dir.to_path_buf(),
                log: format!("(exited with {status})\n{}", tail(&log_file, 20)),
                log_file,
            });
        }
        if let Ok(contents) = std::fs::read_to_string(&pid_file) {
            let lines: Vec<&str> = contents.lines().collect();
            let pid_ok = match server.as_deref() {
                Some(child) => {
                    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(child.id())
                }
                None => lines
                    .first()
                    .and_then(|l| l.trim().parse::<i32>().ok())
                    .is_some_and(process_alive),
            };
            if pid_ok && lines.get(7).is_some_and(|status| status.trim() == "ready") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(ManagedError::Timeout {
                dir: dir.to_path_buf(),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
