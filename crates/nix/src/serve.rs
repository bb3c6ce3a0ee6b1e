//! A client of the serve protocol (`nix-store --serve --write`), run locally
//! or over `ssh`.
//!
//! The server's stdout carries the protocol; its stderr carries build logs
//! and error messages. A task of its own drains stderr all the time, so a
//! build printing any amount of log never blocks; complete lines go to the
//! caller's log sink and the last ones are kept for error messages. When the
//! server fails it prints `error: …` and exits; every error of this client
//! carries that text.
//!
//! A command that fails or is cancelled half-way leaves the connection in an
//! unknown state, so the client refuses further commands; make a new one.
//! Dropping the client ends the child process, and with it any build.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::derivation::BasicDerivation;
use crate::export::{self, EXPORT_MAGIC, ExportedPath};
use crate::hash::NixHash;
use crate::machines::Machine;
use crate::nar::{self, NarError, NarSummary, Scan, ScanOptions};
use crate::wire;

pub const SERVE_MAGIC_1: u64 = 0x390c_9deb;
pub const SERVE_MAGIC_2: u64 = 0x5452_eecb;
/// The version we speak: 2.7.
pub const CLIENT_VERSION: u64 = 0x207;

const TAIL_LINES: usize = 40;
const MAX_LINE: usize = 1 << 20;

/// How to reach a store's serve protocol.
#[derive(Clone, Debug)]
pub enum Transport {
    /// `nix-store <args> --serve --write` on this machine.
    Local {
        program: PathBuf,
        /// Arguments before `--serve` (`--store DIR`, `--option k v`, …).
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// `ssh … host -- nix-store --serve --write [--store X]`.
    Ssh {
        /// `[user@]host`.
        host: String,
        port: Option<u16>,
        identity_file: Option<PathBuf>,
        /// The host's public key line (`ssh-ed25519 AAAA…`); checked strictly.
        host_key: Option<String>,
        remote_store: Option<String>,
        connect_timeout: Duration,
        /// The `ssh` program.
        program: PathBuf,
    },
}

impl Transport {
    /// `nix-store --builders '' --serve --write` for this machine's store.
    pub fn local() -> Transport {
        Transport::Local {
            program: PathBuf::from("nix-store"),
            args: vec!["--builders".into(), String::new()],
            env: Vec::new(),
        }
    }

    /// The transport for a machines-file entry: `localhost` is local, an
    /// `ssh://[user@]host[:port]` URI goes over ssh.
    pub fn for_machine(machine: &Machine) -> Result<Transport, ServeError> {
        if machine.store_uri == "localhost" || machine.store_uri == "ssh://localhost" {
            return Ok(Transport::local());
        }
        let host = machine.ssh_host().ok_or_else(|| ServeError::Unsupported {
            machine: machine.store_uri.clone(),
            message: "only ssh:// machines and localhost are supported".into(),
        })?;
        let (host, port) = split_port(host).map_err(|message| ServeError::Unsupported {
            machine: machine.store_uri.clone(),
            message,
        })?;
        Ok(Transport::Ssh {
            host,
            port,
            identity_file: machine.ssh_key.as_ref().map(PathBuf::from),
            host_key: machine.host_key.clone(),
            remote_store: machine.remote_store(),
            connect_timeout: Duration::from_secs(60),
            program: PathBuf::from("ssh"),
        })
    }

    fn describe(&self) -> String {
        match self {
            Transport::Local { args, .. } => {
                match args
                    .iter()
                    .position(|a| a == "--store")
                    .and_then(|i| args.get(i + 1))
                {
                    Some(store) => format!("local store {store}"),
                    None => "localhost".into(),
                }
            }
            Transport::Ssh { host, port, .. } => match port {
                Some(p) => format!("ssh://{host}:{p}"),
                None => format!("ssh://{host}"),
            },
        }
    }
}

/// `user@host:port` → (`user@host`, port).
fn split_port(host: &str) -> Result<(String, Option<u16>), String> {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => Ok((
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                Some(port),
            )),
            Err(_) => Err(format!("`{p}` is not a port number")),
        },
        _ => Ok((host.to_string(), None)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{machine}: cannot start `{program}`: {source}")]
    Spawn {
        machine: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{machine}: {message}")]
    Remote { machine: String, message: String },
    #[error("{machine}: protocol error: {message}")]
    Protocol { machine: String, message: String },
    #[error("{machine}: {message}")]
    Unsupported { machine: String, message: String },
    #[error("{machine}: no answer within {} s", timeout.as_secs())]
    Timeout { machine: String, timeout: Duration },
    #[error("{machine}: cancelled")]
    Cancelled { machine: String },
    #[error("{machine}: the connection failed earlier and cannot be used again")]
    Poisoned { machine: String },
    #[error("{machine}: {source}")]
    Nar {
        machine: String,
        #[source]
        source: NarError,
    },
    #[error("{machine}: {message}")]
    Local { machine: String, message: String },
}

/// Options of a build (serve commands 6 and 8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Seconds without output before the build is killed; 0: no limit.
    pub max_silent_time: u64,
    /// Seconds in all; 0: no limit.
    pub build_timeout: u64,
    /// Bytes of log; 0: no limit.
    pub max_log_size: u64,
    /// Extra rounds, to check determinism.
    pub repeats: u64,
    pub enforce_determinism: bool,
    pub keep_failed: bool,
}

/// Nix's `BuildResult::Status` (stable wire values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildStatus {
    Built,
    Substituted,
    AlreadyValid,
    PermanentFailure,
    InputRejected,
    OutputRejected,
    TransientFailure,
    CachedFailure,
    TimedOut,
    MiscFailure,
    DependencyFailed,
    LogLimitExceeded,
    NotDeterministic,
    ResolvesToAlreadyValid,
    NoSubstituters,
    Unknown(u64),
}

impl BuildStatus {
    pub fn from_wire(v: u64) -> BuildStatus {
        use BuildStatus::*;
        match v {
            0 => Built,
            1 => Substituted,
            2 => AlreadyValid,
            3 => PermanentFailure,
            4 => InputRejected,
            5 => OutputRejected,
            6 => TransientFailure,
            7 => CachedFailure,
            8 => TimedOut,
            9 => MiscFailure,
            10 => DependencyFailed,
            11 => LogLimitExceeded,
            12 => NotDeterministic,
            13 => ResolvesToAlreadyValid,
            14 => NoSubstituters,
            other => Unknown(other),
        }
    }

    pub fn is_success(self) -> bool {
        matches!(
            self,
            BuildStatus::Built
                | BuildStatus::Substituted
                | BuildStatus::AlreadyValid
                | BuildStatus::ResolvesToAlreadyValid
        )
    }
}

/// The reply to serve command 8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildResult {
    pub status: BuildStatus,
    /// As sent, with ANSI escapes.
    pub error_msg: String,
    pub times_built: u64,
    pub is_non_deterministic: bool,
    /// Unix seconds; 0 means unknown.
    pub start_time: u64,
    pub stop_time: u64,
    /// DrvOutput id → Realisation JSON (computed by the server from the
    /// basic derivation; use the known output paths instead).
    pub built_outputs: BTreeMap<String, String>,
}

impl BuildResult {
    /// `error_msg` without terminal escapes.
    pub fn error_text(&self) -> String {
        strip_ansi(&self.error_msg)
    }
}

/// What the server knows of a valid path (serve command 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub deriver: Option<String>,
    pub references: BTreeSet<String>,
    pub download_size: u64,
    pub nar_size: u64,
    /// Sent by servers of protocol 2.4 and later.
    pub nar_hash: Option<NixHash>,
    pub ca: Option<String>,
    pub sigs: Vec<String>,
}

/// Where log lines go: complete lines, each ending in `\n`.
pub type LogSink = Box<dyn AsyncWrite + Send + Unpin>;

struct StderrShared {
    sink: Mutex<Option<LogSink>>,
    tail: std::sync::Mutex<VecDeque<Vec<u8>>>,
}

/// A connection to a serve-protocol server.
pub struct ServeClient {
    machine: String,
    /// Always present but during drop.
    child: Option<Child>,
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    shared: Arc<StderrShared>,
    sync: mpsc::Sender<(oneshot::Sender<()>, Duration)>,
    /// How long stderr must stay silent before earlier output is taken to
    /// have arrived: the server writes its log before its reply, so locally
    /// it is in the pipe already; ssh carries the two streams separately.
    quiet: Duration,
    stderr_done: Option<tokio::task::JoinHandle<()>>,
    server_version: u64,
    healthy: bool,
    _known_hosts: Option<tempfile_dir::TempDir>,
}

impl std::fmt::Debug for ServeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeClient")
            .field("machine", &self.machine)
            .field(
                "server_version",
                &format_args!("{:#x}", self.server_version),
            )
            .finish()
    }
}

/// A private temporary directory for the known-hosts file, without a
/// dependency: removed when dropped.
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<TempDir> {
            use std::os::unix::fs::DirBuilderExt;
            let mut random = [0u8; 8];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
            let name = format!("hydra-ssh-{}", crate::hash::hex(&random));
            let path = std::env::temp_dir().join(name);
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
            Ok(TempDir(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Removes terminal escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl ServeClient {
    /// Starts the server and does the handshake, within `timeout`.
    pub async fn connect(
        transport: &Transport,
        timeout: Duration,
    ) -> Result<ServeClient, ServeError> {
        let machine = transport.describe();
        let mut known_hosts = None;
        let mut cmd = match transport {
            Transport::Local { program, args, env } => {
                let mut cmd = Command::new(program);
                cmd.args(args).args(["--serve", "--write"]);
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd
            }
            Transport::Ssh {
                host,
                port,
                identity_file,
                host_key,
                remote_store,
                connect_timeout,
                program,
            } => {
                let mut cmd = Command::new(program);
                cmd.args([
                    "-x",
                    "-a",
                    "-oBatchMode=yes",
                    "-oTCPKeepAlive=yes",
                    "-oServerAliveInterval=30",
                ])
                .arg(format!(
                    "-oConnectTimeout={}",
                    connect_timeout.as_secs().max(1)
                ));
                if let Some(p) = port {
                    cmd.arg("-p").arg(p.to_string());
                }
                if let Some(key) = identity_file {
                    cmd.arg("-i").arg(key).arg("-oIdentitiesOnly=yes");
                }
                if let Some(key) = host_key {
                    let dir = tempfile_dir::TempDir::new().map_err(|e| ServeError::Local {
                        machine: machine.clone(),
                        message: format!("cannot create a known-hosts file: {e}"),
                    })?;
                    let host_name = host.rsplit_once('@').map_or(host.as_str(), |(_, h)| h);
                    let entry = match port {
                        Some(p) => format!("[{host_name}]:{p} {key}\n"),
                        None => format!("{host_name} {key}\n"),
                    };
                    let file = dir.path().join("known_hosts");
                    std::fs::write(&file, entry).map_err(|e| ServeError::Local {
                        machine: machine.clone(),
                        message: format!("cannot write a known-hosts file: {e}"),
                    })?;
                    cmd.arg(format!("-oUserKnownHostsFile={}", file.display()))
                        .arg("-oStrictHostKeyChecking=yes")
                        .arg("-oGlobalKnownHostsFile=/dev/null");
                    known_hosts = Some(dir);
                }
                cmd.arg(host)
                    .args(["--", "nix-store", "--serve", "--write"]);
                if let Some(store) = remote_store {
                    cmd.arg("--store").arg(shell_quote(store));
                }
                cmd
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let program = format!("{:?}", cmd.as_std().get_program());
        let mut child = cmd.spawn().map_err(|source| ServeError::Spawn {
            machine: machine.clone(),
            program,
            source,
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ServeError::Local {
                machine,
                message: "the child process has no pipes".into(),
            });
        };
        let shared = Arc::new(StderrShared {
            sink: Mutex::new(None),
            tail: std::sync::Mutex::new(VecDeque::new()),
        });
        let (sync_tx, sync_rx) = mpsc::channel(1);
        let stderr_done = tokio::spawn(drain_stderr(stderr, shared.clone(), sync_rx));
        let mut client = ServeClient {
            machine,
            child: Some(child),
            stdin: Some(BufWriter::new(stdin)),
            stdout: BufReader::with_capacity(256 * 1024, stdout),
            shared,
            sync: sync_tx,
            quiet: match transport {
                Transport::Local { .. } => Duration::from_millis(2),
                Transport::Ssh { .. } => Duration::from_millis(50),
            },
            stderr_done: Some(stderr_done),
            server_version: 0,
            healthy: true,
            _known_hosts: known_hosts,
        };
        let handshake = async {
            let stdin = client.stdin()?;
            wire::write_u64_async(stdin, SERVE_MAGIC_1).await?;
            wire::write_u64_async(stdin, CLIENT_VERSION).await?;
            stdin.flush().await?;
            let magic = wire::read_u64_async(&mut client.stdout).await?;
            if magic != SERVE_MAGIC_2 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("wrong magic {magic:#x} from the server"),
                ));
            }
            wire::read_u64_async(&mut client.stdout).await
        };
        let version = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(client.failure(e).await),
            Err(_) => {
                return Err(ServeError::Timeout {
                    machine: client.machine.clone(),
                    timeout,
                });
            }
        };
        if version & 0xff00 != 0x200 {
            return Err(ServeError::Unsupported {
                machine: client.machine.clone(),
                message: format!("the server speaks serve protocol {version:#x}, not 2.x"),
            });
        }
        client.server_version = version;
        tracing::debug!(machine = %client.machine, version = format_args!("{version:#x}"), "connected");
        Ok(client)
    }

    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The server's protocol version.
    pub fn server_version(&self) -> u64 {
        self.server_version
    }

    /// The minor version both sides understand.
    fn minor(&self) -> u64 {
        (self.server_version & 0xff).min(CLIENT_VERSION & 0xff)
    }

    /// The child's process id (the local `nix-store` or `ssh`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits for the child to exit, up to `timeout`; kills it after that.
    async fn wait_child(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    fn stdin(&mut self) -> std::io::Result<&mut BufWriter<ChildStdin>> {
        self.stdin.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the connection was closed")
        })
    }

    /// Sets where build log lines go; returns the previous sink. Call
    /// [`ServeClient::sync_log`] first to make sure earlier lines reached it.
    pub async fn set_log_sink(&self, sink: Option<LogSink>) -> Option<LogSink> {
        let mut guard = self.shared.sink.lock().await;
        std::mem::replace(&mut *guard, sink)
    }

    /// Waits until the log lines the server wrote so far have been handed to
    /// the sink: until stderr has been quiet for a moment (at most `max`).
    pub async fn sync_log(&self, max: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.sync.send((tx, self.quiet)).await.is_ok() {
            let _ = tokio::time::timeout(max, rx).await;
        }
    }

    /// The last lines of stderr, escapes removed.
    pub fn stderr_tail(&self) -> Vec<String> {
        let tail = self
            .shared
            .tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default();
        tail.iter()
            .map(|l| strip_ansi(&String::from_utf8_lossy(l)))
            .collect()
    }

    /// The error for an I/O failure on the connection: it usually means the
    /// server printed an error and exited, so wait briefly for that and
    /// report what it said.
    async fn failure(&mut self, e: std::io::Error) -> ServeError {
        self.healthy = false;
        self.stdin = None;
        let status = self.wait_child(Duration::from_secs(5)).await;
        if let Some(task) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let tail = self.stderr_tail();
        let errors: Vec<&String> = tail.iter().filter(|l| l.contains("error:")).collect();
        let said = if !errors.is_empty() {
            errors
                .iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            let lines: Vec<&str> = tail
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            lines[lines.len().saturating_sub(3)..].join("\n")
        };
        let status = match status {
            Some(s) => format!(" ({s})"),
            None => String::new(),
        };
        let message = if said.is_empty() {
            format!("the connection failed: {e}{status}")
        } else {
            format!("{said}{status}")
        };
        if e.kind() == std::io::ErrorKind::InvalidData {
            return ServeError::Protocol {
                machine: self.machine.clone(),
                message: format!("{e}; the server said: {message}"),
            };
        }
        ServeError::Remote {
            machine: self.machine.clone(),
            message,
        }
    }

    fn check_healthy(&self) -> Result<(), ServeError> {
        if self.healthy {
            Ok(())
        } else {
            Err(ServeError::Poisoned {
                machine: self.machine.clone(),
            })
        }
    }

    /// Marks the start of a command; a command cut short (error,
    /// cancellation) leaves the client unusable.
    fn begin(&mut self) -> Result<(), ServeError> {
        self.check_healthy()?;
        self.healthy = false;
        Ok(())
    }

    /// Marks the end of a command: an I/O failure becomes the server's error.
    async fn end<T>(&mut self, result: std::io::Result<T>) -> Result<T, ServeError> {
        match result {
            Ok(v) => {
                self.healthy = true;
                Ok(v)
            }
            Err(e) => Err(self.failure(e).await),
        }
    }

    /// Command 1: which of `paths` are valid. `lock` keeps them from being
    /// garbage collected while this connection lasts; `substitute` tries to
    /// substitute missing ones first.
    pub async fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<String>,
        lock: bool,
        substitute: bool,
    ) -> Result<BTreeSet<String>, ServeError> {
        self.begin()?;
        let result = self.path_set_command(1, &[lock, substitute], paths).await;
        self.end(result).await
    }

    /// Commands taking flags and a path set and answering with a path set.
    async fn path_set_command(
        &mut self,
        command: u64,
        flags: &[bool],
        paths: &BTreeSet<String>,
    ) -> std::io::Result<BTreeSet<String>> {
        let paths: Vec<&String> = paths.iter().collect();
        let w = self.stdin()?;
        wire::write_u64_async(w, command).await?;
        for flag in flags {
            wire::write_u64_async(w, u64::from(*flag)).await?;
        }
        wire::write_strings_async(w, &paths).await?;
        w.flush().await?;
        Ok(wire::read_strings_async(&mut self.stdout)
            .await?
            .into_iter()
            .collect())
    }

    /// Command 2: information on the valid ones of `paths`.
    pub async fn query_path_infos(
        &mut self,
        paths: &BTreeSet<String>,
    ) -> Result<Vec<PathInfo>, ServeError> {
        self.begin()?;
        let result = self.query_path_infos_io(paths).await;
        self.end(result).await
    }

    async fn query_path_infos_io(
        &mut self,
        paths: &BTreeSet<String>,
    ) -> std::io::Result<Vec<PathInfo>> {
        let minor = self.minor();
        let paths: Vec<&String> = paths.iter().collect();
        let w = self.stdin()?;
        wire::write_u64_async(w, 2).await?;
        wire::write_strings_async(w, &paths).await?;
        w.flush().await?;
        let r = &mut self.stdout;
        let mut infos = Vec::new();
        loop {
            let path = wire::read_string_async(r, 4096).await?;
            if path.is_empty() {
                return Ok(infos);
            }
            let deriver = wire::read_string_async(r, 4096).await?;
            let references = wire::read_strings_async(r).await?.into_iter().collect();
            let download_size = wire::read_u64_async(r).await?;
            let nar_size = wire::read_u64_async(r).await?;
            let (mut nar_hash, mut ca, mut sigs) = (None, None, Vec::new());
            if minor >= 4 {
                let h = wire::read_string_async(r, 1024).await?;
                if !h.is_empty() {
                    nar_hash = Some(NixHash::parse(&h).map_err(|e| wire::invalid(e.to_string()))?);
                }
                let c = wire::read_string_async(r, 4096).await?;
                ca = (!c.is_empty()).then_some(c);
                sigs = wire::read_strings_async(r).await?;
            }
            infos.push(PathInfo {
                path,
                deriver: (!deriver.is_empty()).then_some(deriver),
                references,
                download_size,
                nar_size,
                nar_hash,
                ca,
                sigs,
            });
        }
    }

    /// Command 7: the closure of `paths` (with the outputs of derivations in
    /// it, if asked).
    pub async fn query_closure(
        &mut self,
        paths: &BTreeSet<String>,
        include_outputs: bool,
    ) -> Result<BTreeSet<String>, ServeError> {
        self.begin()?;
        let result = self.path_set_command(7, &[include_outputs], paths).await;
        self.end(result).await
    }

    /// Command 3: the NAR of `path`, passed to `sink` while being read, with
    /// what `options` ask to collect.
    pub async fn dump_store_path(
        &mut self,
        path: &str,
        sink: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
        options: &ScanOptions,
    ) -> Result<Scan, ServeError> {
        self.begin()?;
        let sent = async {
            let w = self.stdin()?;
            wire::write_u64_async(w, 3).await?;
            wire::write_bytes_async(w, path.as_bytes()).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = sent {
            return Err(self.failure(e).await);
        }
        match nar::scan(&mut self.stdout, sink, options).await {
            Ok(scan) => {
                self.healthy = true;
                Ok(scan)
            }
            Err(NarError::Io { source, .. }) => Err(self.failure(source).await),
            Err(e) => {
                let machine = self.machine.clone();
                let _ = self.failure(std::io::Error::other("invalid NAR")).await;
                Err(ServeError::Nar { machine, source: e })
            }
        }
    }

    /// Command 5: exports `paths` (not their closure), writing the export
    /// stream to `sink`; returns what was exported.
    pub async fn export_paths(
        &mut self,
        paths: &BTreeSet<String>,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<Vec<(ExportedPath, NarSummary)>, ServeError> {
        self.begin()?;
        let result = self.export_paths_io(paths, sink).await;
        self.end(result).await
    }

    async fn export_paths_io(
        &mut self,
        paths: &BTreeSet<String>,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> std::io::Result<Vec<(ExportedPath, NarSummary)>> {
        let paths: Vec<&String> = paths.iter().collect();
        let w = self.stdin()?;
        wire::write_u64_async(w, 5).await?;
        wire::write_u64_async(w, 0).await?;
        wire::write_strings_async(w, &paths).await?;
        w.flush().await?;
        let mut items = Vec::new();
        loop {
            // The stream is re-serialised item by item into the sink, each
            // NAR passing through as it is read.
            let mut pending_marker = Some(1u64.to_le_bytes().to_vec());
            let mut gated = MarkerFirst {
                marker: &mut pending_marker,
                sink: &mut *sink,
            };
            let item = export::read_item(&mut self.stdout, Some(&mut gated))
                .await
                .map_err(|e| match e {
                    export::ExportError::Io(io) => io,
                    export::ExportError::Nar(NarError::Io { source, .. }) => source,
                    other => wire::invalid(other.to_string()),
                })?;
            let Some((info, summary)) = item else {
                sink.write_all(&0u64.to_le_bytes()).await?;
                sink.flush().await?;
                return Ok(items);
            };
            let mut tail = Vec::new();
            wire::write_u64(&mut tail, EXPORT_MAGIC)?;
            wire::write_bytes(&mut tail, info.path.as_bytes())?;
            wire::write_strings(&mut tail, info.references.iter().map(String::as_str))?;
            wire::write_bytes(&mut tail, info.deriver.as_deref().unwrap_or("").as_bytes())?;
            wire::write_u64(&mut tail, 0)?;
            sink.write_all(&tail).await?;
            items.push((info, summary));
        }
    }

    /// Command 4, first half: returns the writer that the export stream
    /// must be written to (every path's references must be valid on the
    /// server or come earlier in the stream); then call
    /// [`ServeClient::import_paths_finish`].
    pub async fn import_paths_start(
        &mut self,
    ) -> Result<&mut (dyn AsyncWrite + Unpin + Send), ServeError> {
        self.begin()?;
        let sent = async { wire::write_u64_async(self.stdin()?, 4).await }.await;
        if let Err(e) = sent {
            return Err(self.failure(e).await);
        }
        match self.stdin.as_mut() {
            Some(w) => Ok(w),
            None => Err(ServeError::Poisoned {
                machine: self.machine.clone(),
            }),
        }
    }

    /// Command 4, second half: waits for the server to confirm the import.
    pub async fn import_paths_finish(&mut self) -> Result<(), ServeError> {
        let result = self.read_one("import").await;
        self.end(result).await
    }

    async fn read_one(&mut self, what: &str) -> std::io::Result<()> {
        self.stdin()?.flush().await?;
        match wire::read_u64_async(&mut self.stdout).await? {
            1 => Ok(()),
            other => Err(wire::invalid(format!(
                "{what} answered {other} instead of 1"
            ))),
        }
    }

    /// Whether the server has command 9 (AddToStoreNar).
    pub fn can_add_to_store_nar(&self) -> bool {
        self.server_version & 0xff >= 5
    }

    /// Command 9, first half: sends the path's metadata and returns the
    /// writer its NAR (exactly `info.nar_size` bytes) must be written to;
    /// then call [`ServeClient::add_to_store_nar_finish`]. The server checks
    /// the NAR against `info.nar_hash` and keeps the content address and
    /// signatures.
    pub async fn add_to_store_nar_start(
        &mut self,
        info: &PathInfo,
    ) -> Result<&mut (dyn AsyncWrite + Unpin + Send), ServeError> {
        if !self.can_add_to_store_nar() {
            return Err(ServeError::Unsupported {
                machine: self.machine.clone(),
                message: "the server is too old for AddToStoreNar (protocol 2.5)".into(),
            });
        }
        let Some(hash) = info.nar_hash.clone() else {
            return Err(ServeError::Local {
                machine: self.machine.clone(),
                message: format!("no NAR hash known for {}", info.path),
            });
        };
        self.begin()?;
        let sent = async {
            let w = self.stdin()?;
            wire::write_u64_async(w, 9).await?;
            wire::write_bytes_async(w, info.path.as_bytes()).await?;
            wire::write_bytes_async(w, info.deriver.as_deref().unwrap_or("").as_bytes()).await?;
            wire::write_bytes_async(w, hash.to_base16().as_bytes()).await?;
            wire::write_strings_async(w, &info.references.iter().collect::<Vec<_>>()).await?;
            wire::write_u64_async(w, 0).await?;
            wire::write_u64_async(w, info.nar_size).await?;
            wire::write_u64_async(w, 0).await?;
            wire::write_strings_async(w, &info.sigs).await?;
            wire::write_bytes_async(w, info.ca.as_deref().unwrap_or("").as_bytes()).await
        }
        .await;
        if let Err(e) = sent {
            return Err(self.failure(e).await);
        }
        match self.stdin.as_mut() {
            Some(w) => Ok(w),
            None => Err(ServeError::Poisoned {
                machine: self.machine.clone(),
            }),
        }
    }

    /// Command 9, second half.
    pub async fn add_to_store_nar_finish(&mut self) -> Result<(), ServeError> {
        let result = self.read_one("AddToStoreNar").await;
        self.end(result).await
    }

    /// Command 8: builds a derivation given in its basic form. Log lines go
    /// to the log sink; cancelling `cancel` ends the connection and the
    /// build with it.
    pub async fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &BasicDerivation,
        options: &BuildOptions,
        cancel: &CancellationToken,
    ) -> Result<BuildResult, ServeError> {
        self.begin()?;
        let result = tokio::select! {
            result = self.build_derivation_io(drv_path, drv, options) => result,
            _ = cancel.cancelled() => return Err(self.cancelled().await),
        };
        self.end(result).await
    }

    async fn build_derivation_io(
        &mut self,
        drv_path: &str,
        drv: &BasicDerivation,
        options: &BuildOptions,
    ) -> std::io::Result<BuildResult> {
        let minor = self.minor();
        let w = self.stdin()?;
        wire::write_u64_async(w, 8).await?;
        wire::write_bytes_async(w, drv_path.as_bytes()).await?;
        write_basic_derivation(w, drv).await?;
        write_build_options(w, options, minor).await?;
        w.flush().await?;
        let r = &mut self.stdout;
        let status = BuildStatus::from_wire(wire::read_u64_async(r).await?);
        let error_msg = String::from_utf8_lossy(&wire::read_bytes_async(r, wire::MAX_TOKEN).await?)
            .into_owned();
        let (mut times_built, mut nondet, mut start, mut stop) = (0, false, 0, 0);
        if minor >= 3 {
            times_built = wire::read_u64_async(r).await?;
            nondet = wire::read_u64_async(r).await? != 0;
            start = wire::read_u64_async(r).await?;
            stop = wire::read_u64_async(r).await?;
        }
        let mut built_outputs = BTreeMap::new();
        if minor >= 6 {
            let n = wire::read_u64_async(r).await?;
            if n > wire::MAX_LIST {
                return Err(wire::invalid(format!("{n} built outputs")));
            }
            for _ in 0..n {
                let id = wire::read_string_async(r, 4096).await?;
                let json = wire::read_string_async(r, wire::MAX_TOKEN).await?;
                built_outputs.insert(id, json);
            }
        }
        Ok(BuildResult {
            status,
            error_msg,
            times_built,
            is_non_deterministic: nondet,
            start_time: start,
            stop_time: stop,
            built_outputs,
        })
    }

    /// Command 6: builds or substitutes `paths` (`drv!out,dev` for outputs
    /// of a derivation); returns Nix's exit status (0 for success) and
    /// message.
    pub async fn build_paths(
        &mut self,
        paths: &[String],
        options: &BuildOptions,
        cancel: &CancellationToken,
    ) -> Result<(u64, String), ServeError> {
        self.begin()?;
        let result = tokio::select! {
            result = self.build_paths_io(paths, options) => result,
            _ = cancel.cancelled() => return Err(self.cancelled().await),
        };
        self.end(result).await
    }

    async fn build_paths_io(
        &mut self,
        paths: &[String],
        options: &BuildOptions,
    ) -> std::io::Result<(u64, String)> {
        let minor = self.minor();
        let w = self.stdin()?;
        wire::write_u64_async(w, 6).await?;
        wire::write_strings_async(w, paths).await?;
        write_build_options(w, options, minor).await?;
        w.flush().await?;
        let status = wire::read_u64_async(&mut self.stdout).await?;
        let message = if status != 0 {
            String::from_utf8_lossy(
                &wire::read_bytes_async(&mut self.stdout, wire::MAX_TOKEN).await?,
            )
            .into_owned()
        } else {
            String::new()
        };
        Ok((status, message))
    }

    /// Ends the connection the polite way, then the hard way: closing stdin
    /// makes the server interrupt any build and exit.
    async fn cancelled(&mut self) -> ServeError {
        self.healthy = false;
        self.stdin = None;
        self.wait_child(Duration::from_secs(10)).await;
        ServeError::Cancelled {
            machine: self.machine.clone(),
        }
    }

    /// Closes the connection and waits for the server to exit.
    pub async fn close(mut self) -> Result<(), ServeError> {
        self.stdin = None;
        let status = self.wait_child(Duration::from_secs(30)).await;
        if let Some(task) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(ServeError::Remote {
                machine: self.machine.clone(),
                message: format!(
                    "the server exited with {s}: {}",
                    self.stderr_tail().join("\n")
                ),
            }),
            None => Err(ServeError::Timeout {
                machine: self.machine.clone(),
                timeout: Duration::from_secs(30),
            }),
        }
    }
}

/// Hangs up first: the server then interrupts any build and exits by
/// itself. Killing it outright would leave its builder running (Nix does
/// not stop a sandboxed builder whose `nix-store` was killed), so the kill
/// only follows if it has not exited after a grace period.
impl Drop for ServeClient {
    fn drop(&mut self) {
        self.stdin = None;
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            });
        }
        // Without a runtime the child is dropped here and killed.
    }
}

/// Writes the `1` marker before the first byte of a NAR passes through.
struct MarkerFirst<'a> {
    marker: &'a mut Option<Vec<u8>>,
    sink: &'a mut (dyn AsyncWrite + Unpin + Send),
}

impl AsyncWrite for MarkerFirst<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        while let Some(marker) = this.marker.as_mut() {
            match std::pin::Pin::new(&mut *this.sink).poll_write(cx, marker) {
                std::task::Poll::Ready(Ok(n)) => {
                    marker.drain(..n);
                    if marker.is_empty() {
                        *this.marker = None;
                    }
                }
                other => return other,
            }
        }
        std::pin::Pin::new(&mut *this.sink).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.sink).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.sink).poll_shutdown(cx)
    }
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

async fn write_basic_derivation(
    w: &mut (impl AsyncWrite + Unpin),
    drv: &BasicDerivation,
) -> std::io::Result<()> {
    wire::write_u64_async(w, drv.outputs.len() as u64).await?;
    for (name, o) in &drv.outputs {
        wire::write_bytes_async(w, name.as_bytes()).await?;
        wire::write_bytes_async(w, o.path.as_bytes()).await?;
        wire::write_bytes_async(w, o.hash_algo.as_bytes()).await?;
        wire::write_bytes_async(w, o.hash.as_bytes()).await?;
    }
    wire::write_strings_async(w, &drv.input_srcs.iter().collect::<Vec<_>>()).await?;
    wire::write_bytes_async(w, drv.platform.as_bytes()).await?;
    wire::write_bytes_async(w, drv.builder.as_bytes()).await?;
    wire::write_strings_async(w, &drv.args).await?;
    wire::write_u64_async(w, drv.env.len() as u64).await?;
    for (k, v) in &drv.env {
        wire::write_bytes_async(w, k.as_bytes()).await?;
        wire::write_bytes_async(w, v.as_bytes()).await?;
    }
    Ok(())
}

/// The build options a server of `minor` reads (it reads by our version,
/// but only the fields it knows).
async fn write_build_options(
    w: &mut (impl AsyncWrite + Unpin),
    o: &BuildOptions,
    minor: u64,
) -> std::io::Result<()> {
    wire::write_u64_async(w, o.max_silent_time).await?;
    wire::write_u64_async(w, o.build_timeout).await?;
    if minor >= 2 {
        wire::write_u64_async(w, o.max_log_size).await?;
    }
    if minor >= 3 {
        wire::write_u64_async(w, o.repeats).await?;
        wire::write_u64_async(w, u64::from(o.enforce_determinism)).await?;
    }
    if minor >= 7 {
        wire::write_u64_async(w, u64::from(o.keep_failed)).await?;
    }
    Ok(())
}

/// Reads stderr until it closes: complete lines go to the sink and to the
/// tail; a sync request is answered once stderr has been quiet briefly.
async fn drain_stderr(
    mut stderr: ChildStderr,
    shared: Arc<StderrShared>,
    mut sync: mpsc::Receiver<(oneshot::Sender<()>, Duration)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            read = stderr.read(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => deliver(&shared, &mut partial, &buf[..n]).await,
                }
            }
            Some((ack, quiet)) = sync.recv() => {
                loop {
                    match tokio::time::timeout(quiet, stderr.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => deliver(&shared, &mut partial, &buf[..n]).await,
                        Ok(_) => break,
                        Err(_) => break,
                    }
                }
                flush_sink(&shared).await;
                let _ = ack.send(());
            }
        }
    }
    if !partial.is_empty() {
        partial.push(b'\n');
        let last = std::mem::take(&mut partial);
        deliver(&shared, &mut partial, &last).await;
    }
    flush_sink(&shared).await;
    // Answer late sync requests so nobody waits for a closed stderr.
    sync.close();
    while let Some((ack, _)) = sync.recv().await {
        let _ = ack.send(());
    }
}

async fn flush_sink(shared: &StderrShared) {
    if let Some(sink) = shared.sink.lock().await.as_mut()
        && let Err(e) = sink.flush().await
    {
        tracing::warn!(error = %e, "cannot flush the build log");
    }
}

/// Hands the complete lines in `partial` + `data` to the sink in one write,
/// and remembers the last lines.
async fn deliver(shared: &StderrShared, partial: &mut Vec<u8>, data: &[u8]) {
    let complete = match data.iter().rposition(|b| *b == b'\n') {
        Some(last) => {
            let mut lines = std::mem::take(partial);
            lines.extend_from_slice(&data[..=last]);
            partial.extend_from_slice(&data[last + 1..]);
            lines
        }
        None => {
            partial.extend_from_slice(data);
            if partial.len() < MAX_LINE {
                return;
            }
            // A line without end: pass it on in pieces rather than grow.
            let mut line = std::mem::take(partial);
            line.push(b'\n');
            line
        }
    };
    if let Ok(mut tail) = shared.tail.lock() {
        let lines: Vec<&[u8]> = complete[..complete.len() - 1]
            .split(|b| *b == b'\n')
            .collect();
        for line in lines.iter().skip(lines.len().saturating_sub(TAIL_LINES)) {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line[..line.len().min(4096)].to_vec());
        }
    }
    if let Some(sink) = shared.sink.lock().await.as_mut()
        && let Err(e) = sink.write_all(&complete).await
    {
        tracing::warn!(error = %e, "cannot write the build log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escapes_are_removed() {
        assert_eq!(
            strip_ansi(
                "\u{1b}[31;1merror:\u{1b}[0m builder for '\u{1b}[35;1m/nix/store/x.drv\u{1b}[0m' failed"
            ),
            "error: builder for '/nix/store/x.drv' failed"
        );
    }

    #[test]
    fn ports_and_quotes() {
        assert_eq!(split_port("u@h:2222").unwrap(), ("u@h".into(), Some(2222)));
        assert_eq!(split_port("u@h").unwrap(), ("u@h".into(), None));
        assert!(split_port("u@h:x").is_err());
        assert_eq!(shell_quote("/tmp/x y"), "'/tmp/x y'");
        assert_eq!(shell_quote("local?root=/x"), "'local?root=/x'");
        assert_eq!(shell_quote("/plain/path"), "/plain/path");
    }
}
