//! The serve client against real `nix-store --serve --write`: the machine's
//! own store, a separate chroot store playing a remote builder, and the same
//! through a real sshd on a loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use hydra_nix::copy::copy_closure;
use hydra_nix::derivation::{BasicDerivation, Derivation, DerivationError};
use hydra_nix::machines::{self, Dialect, ParseOptions};
use hydra_nix::nar::ScanOptions;
use hydra_nix::serve::{BuildOptions, BuildStatus, ServeClient, ServeError, Transport};
use hydra_test_support::{NixStore, Sshd};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

const EXPR: &str = r#"
{ salt }:
let
  mk = a: derivation ({ system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; inherit salt; } // a);
  dep0 = mk { name = "serve-dep0"; args = [ "-c" "echo zero > $out" ]; };
  dep1 = mk { name = "serve-dep1"; args = [ "-c" "mkdir $out; echo ${dep0} > $out/ref; cp ${dep0} $out/copy" ]; };
  dep2 = mk { name = "serve-dep2"; args = [ "-c" "mkdir $out; echo ${dep1} > $out/ref; ln -s ${dep1}/copy $out/link" ]; };
in {
  inherit dep0 dep1 dep2;
  top = mk { name = "serve-top"; args = [ "-c" "echo building top; mkdir $out; echo ${dep2} > $out/ref; cat ${dep2}/link > $out/content" ]; };
  fail = mk { name = "serve-fail"; args = [ "-c" "echo this build fails on purpose; exit 3" ]; };
  silent = mk { name = "serve-silent"; args = [ "-c" "echo before the silence; sleep 60" ]; };
  chatty = mk { name = "serve-chatty"; args = [ "-c" "i=0; while [ $i -lt 100 ]; do echo tick $i; sleep 0.2; i=$((i+1)); done" ]; };
  flood = mk { name = "serve-flood"; args = [ "-c" "yes 0123456789012345678901234567890123456789 | head -n 100000; mkdir $out" ]; };
  huge = mk { name = "serve-huge-log"; args = [ "-c" "yes $(printf '%0099d' 7) | head -n 1000000; echo the-last-line; mkdir $out" ]; };
  long = mk { name = "serve-long"; args = [ "-c" "echo started; exec sleep ${salt}" ]; };
  nondet = mk { name = "serve-nondet"; args = [ "-c" "date +%s%N > $out" ]; };
  det = mk { name = "serve-det"; args = [ "-c" "echo same > $out" ]; };
}
"#;

struct Fixture {
    dir: tempfile::TempDir,
    salt: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.nix"), EXPR).unwrap();
        // Unique per test, so paths are new to every store, and usable as a
        // sleep duration that identifies the builder's process.
        let mut random = [0u8; 4];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut random,
        )
        .unwrap();
        let salt = (1_000_000 + u32::from_le_bytes(random) % 8_000_000).to_string();
        Fixture { dir, salt }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("serve.nix")
    }

    /// Instantiates `attr` in the machine's store.
    fn instantiate(&self, attr: &str) -> String {
        machine_nix(
            "nix-instantiate",
            &[
                self.file().to_str().unwrap(),
                "-A",
                attr,
                "--argstr",
                "salt",
                &self.salt,
            ],
        )
    }

    /// Builds `attr` in the machine's store.
    fn build(&self, attr: &str) -> String {
        machine_nix(
            "nix-build",
            &[
                self.file().to_str().unwrap(),
                "-A",
                attr,
                "--argstr",
                "salt",
                &self.salt,
                "--no-out-link",
            ],
        )
    }
}

fn machine_nix(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .args(["--option", "substituters", ""])
        .env_remove("NIX_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn chroot(store: &NixStore) -> Transport {
    let (program, args, env) = store.serve_command();
    Transport::Local {
        program: program.into(),
        args,
        env,
    }
}

async fn connect(t: &Transport) -> ServeClient {
    ServeClient::connect(t, Duration::from_secs(60))
        .await
        .unwrap()
}

/// The basic derivation of a `.drv` in the machine's store.
fn basic(drv_path: &str) -> BasicDerivation {
    let load = |p: &str| Derivation::parse(&std::fs::read_to_string(p).unwrap()).unwrap();
    load(drv_path)
        .to_basic(
            &mut |input: &str| -> Result<BTreeMap<String, String>, DerivationError> {
                Ok(load(input)
                    .outputs
                    .into_iter()
                    .map(|(k, v)| (k, v.path))
                    .collect())
            },
        )
        .unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A log sink that counts what it is given and keeps the text, up to a
/// limit.
#[derive(Clone, Default)]
struct Collector {
    bytes: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
    text: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }
}

impl AsyncWrite for Collector {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.lines.fetch_add(
            buf.iter().filter(|b| **b == b'\n').count() as u64,
            Ordering::SeqCst,
        );
        let mut text = self.text.lock().unwrap();
        if text.len() < 1 << 20 {
            text.extend_from_slice(buf);
        } else {
            // Keep the end: the last lines matter.
            let keep = text.len() - 4096;
            text.drain(..keep);
            text.extend_from_slice(buf);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn nix_store_query(args: &[&str]) -> String {
    machine_nix("nix-store", args)
}

#[tokio::test]
async fn queries_dumps_and_exports_against_the_machine_store() {
    let f = Fixture::new();
    let dep2 = f.build("dep2");
    let dep1 = nix_store_query(&["--query", "--references", &dep2]);
    let mut local = connect(&Transport::local()).await;
    assert_eq!(local.server_version() & 0xff00, 0x200);

    let absent = "/nix/store/00000000000000000000000000000000-absent".to_string();
    let valid = local
        .query_valid_paths(&set(&[&dep2, &absent]), false, false)
        .await
        .unwrap();
    assert_eq!(valid, set(&[&dep2]));

    let infos = local
        .query_path_infos(&set(&[&dep2, &absent]))
        .await
        .unwrap();
    assert_eq!(infos.len(), 1, "invalid paths are skipped");
    let info = &infos[0];
    assert_eq!(info.references, set(&[&dep1]));
    assert_eq!(
        info.nar_hash.as_ref().unwrap().to_typed_base32(),
        nix_store_query(&["--query", "--hash", &dep2])
    );
    assert!(info.deriver.as_ref().unwrap().ends_with("-serve-dep2.drv"));

    let closure = local.query_closure(&set(&[&dep2]), false).await.unwrap();
    assert_eq!(closure.len(), 3);

    let mut nar = Vec::new();
    let scan = local
        .dump_store_path(&dep2, Some(&mut nar), &ScanOptions::default())
        .await
        .unwrap();
    assert_eq!(Some(&scan.summary.nar_hash), info.nar_hash.as_ref());
    assert_eq!(scan.summary.nar_size, info.nar_size);
    let dumped = Command::new("nix-store")
        .args(["--dump", &dep2])
        .output()
        .unwrap()
        .stdout;
    assert!(nar == dumped);

    let mut exported = Vec::new();
    let items = local.export_paths(&closure, &mut exported).await.unwrap();
    assert_eq!(items.len(), 3);
    let mut args = vec!["--export"];
    args.extend(closure.iter().map(String::as_str));
    let nix_export = Command::new("nix-store")
        .args(&args)
        .output()
        .unwrap()
        .stdout;
    assert!(
        exported == nix_export,
        "the export stream passed through equals nix-store --export"
    );
    local.close().await.unwrap();
}

#[tokio::test]
async fn a_closure_is_copied_to_a_remote_built_there_and_fetched_back() {
    let f = Fixture::new();
    let remote_store = NixStore::new();
    let top_drv = f.instantiate("top");
    let drv = basic(&top_drv);
    // The inputs exist locally: a three-level closure dep2 → dep1 → dep0.
    let dep2 = f.build("dep2");
    assert!(drv.input_srcs.contains(&dep2));

    let mut local = connect(&Transport::local()).await;
    let mut remote = connect(&chroot(&remote_store)).await;
    let report = copy_closure(&mut local, &mut remote, &drv.input_srcs, true)
        .await
        .unwrap();
    assert_eq!(report.copied.len(), 3, "dep0, dep1 and dep2 were missing");
    assert!(report.copied[0].ends_with("-serve-dep0") && report.copied[2].ends_with("-serve-dep2"));
    // Copying again sends nothing.
    assert!(
        copy_closure(&mut local, &mut remote, &drv.input_srcs, true)
            .await
            .unwrap()
            .copied
            .is_empty()
    );

    let log = Collector::default();
    remote.set_log_sink(Some(Box::new(log.clone()))).await;
    let result = remote
        .build_derivation(
            &top_drv,
            &drv,
            &BuildOptions::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    remote.sync_log(Duration::from_secs(5)).await;
    assert_eq!(result.status, BuildStatus::Built, "{}", result.error_text());
    assert_eq!(result.times_built, 1);
    assert!(result.start_time > 0 && result.stop_time >= result.start_time);
    assert!(log.text().contains("building top"), "{}", log.text());

    let out = drv.outputs["out"].path.clone();
    assert!(
        remote_store.real_path(&out).join("content").is_file(),
        "built in the chroot store"
    );
    assert!(!Path::new(&out).exists(), "not in the machine's store yet");
    let remote_info = remote
        .query_path_infos(&set(&[&out]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(remote_info.references, set(&[&dep2]));

    // Fetch the output back into the machine's store.
    let back = copy_closure(&mut remote, &mut local, &set(&[&out]), false)
        .await
        .unwrap();
    assert_eq!(back.copied, vec![out.clone()]);
    assert_eq!(
        nix_store_query(&["--query", "--hash", &out]),
        remote_info.nar_hash.unwrap().to_typed_base32()
    );
    assert_eq!(
        std::fs::read_to_string(Path::new(&out).join("content")).unwrap(),
        "zero\n"
    );
    // A second build is nothing to do.
    let again = remote
        .build_derivation(
            &top_drv,
            &drv,
            &BuildOptions::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(again.status, BuildStatus::AlreadyValid);
    remote.close().await.unwrap();
    local.close().await.unwrap();
}

#[tokio::test]
async fn the_import_path_works_when_add_to_store_nar_is_not_used() {
    let f = Fixture::new();
    let dep2 = f.build("dep2");
    let remote_store = NixStore::new();
    let mut local = connect(&Transport::local()).await;
    let mut remote = connect(&chroot(&remote_store)).await;
    let closure = local.query_closure(&set(&[&dep2]), false).await.unwrap();
    let infos: BTreeMap<_, _> = local
        .query_path_infos(&closure)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
    // Command 4 directly: an export stream of the closure, dependencies first.
    let sink = remote.import_paths_start().await.unwrap();
    local
        .export_paths_in_order_for_test(&hydra_nix::copy::topological_order(&infos), sink)
        .await;
    remote.import_paths_finish().await.unwrap();
    assert_eq!(
        remote
            .query_valid_paths(&closure, false, false)
            .await
            .unwrap(),
        closure
    );
}

/// Writes an export stream of `paths`, in this order, from `self`.
trait ExportInOrder {
    async fn export_paths_in_order_for_test(
        &mut self,
        paths: &[String],
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    );
}

impl ExportInOrder for ServeClient {
    async fn export_paths_in_order_for_test(
        &mut self,
        paths: &[String],
        sink: &mut (dyn AsyncWrite + Unpin + Send),
    ) {
        use tokio::io::AsyncWriteExt;
        let mut buf = Vec::new();
        for path in paths {
            let mut one = Vec::new();
            self.export_paths(&set(&[path]), &mut one).await.unwrap();
            // Drop the end marker of each single-path stream.
            buf.extend_from_slice(&one[..one.len() - 8]);
        }
        buf.extend_from_slice(&0u64.to_le_bytes());
        sink.write_all(&buf).await.unwrap();
    }
}

async fn remote_build(
    f: &Fixture,
    attr: &str,
    options: BuildOptions,
) -> (hydra_nix::serve::BuildResult, Collector) {
    let store = NixStore::new();
    build_on(&chroot(&store), f, attr, options).await
}

/// Builds on the machine's own store. Repeated builds need it: Nix 2.8
/// renames the first round's output by its logical path, which fails in a
/// chroot store ("renaming '/nix/store/…' to '/nix/store/….check'").
async fn local_build(
    f: &Fixture,
    attr: &str,
    options: BuildOptions,
) -> (hydra_nix::serve::BuildResult, Collector) {
    build_on(&Transport::local(), f, attr, options).await
}

async fn build_on(
    transport: &Transport,
    f: &Fixture,
    attr: &str,
    options: BuildOptions,
) -> (hydra_nix::serve::BuildResult, Collector) {
    let drv_path = f.instantiate(attr);
    let drv = basic(&drv_path);
    let mut remote = connect(transport).await;
    let log = Collector::default();
    remote.set_log_sink(Some(Box::new(log.clone()))).await;
    let result = remote
        .build_derivation(&drv_path, &drv, &options, &CancellationToken::new())
        .await
        .unwrap();
    remote.sync_log(Duration::from_secs(5)).await;
    remote.close().await.unwrap();
    (result, log)
}

#[tokio::test]
async fn a_failing_build_returns_its_status_and_error_text() {
    let f = Fixture::new();
    let (result, log) = remote_build(&f, "fail", BuildOptions::default()).await;
    assert_eq!(result.status, BuildStatus::PermanentFailure);
    assert!(
        result.error_text().contains("failed with exit code 3"),
        "{}",
        result.error_text()
    );
    assert!(log.text().contains("this build fails on purpose"));
}

#[tokio::test]
async fn silence_and_timeouts_end_builds_as_timed_out() {
    let f = Fixture::new();
    let (result, log) = remote_build(
        &f,
        "silent",
        BuildOptions {
            max_silent_time: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.status, BuildStatus::TimedOut);
    assert!(
        result
            .error_text()
            .contains("timed out after 1 seconds of silence"),
        "{}",
        result.error_text()
    );
    assert!(log.text().contains("before the silence"));

    let (result, _) = remote_build(
        &f,
        "chatty",
        BuildOptions {
            build_timeout: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.status, BuildStatus::TimedOut);
    assert!(
        result.error_text().contains("timed out after 2 seconds"),
        "{}",
        result.error_text()
    );
}

#[tokio::test]
async fn too_much_log_ends_the_build_with_log_limit_exceeded() {
    let f = Fixture::new();
    let (result, log) = remote_build(
        &f,
        "flood",
        BuildOptions {
            max_log_size: 10_000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.status, BuildStatus::LogLimitExceeded);
    assert!(log.bytes.load(Ordering::SeqCst) < 100_000);
}

#[tokio::test]
async fn a_hundred_megabytes_of_log_arrive_in_full_without_blocking() {
    let f = Fixture::new();
    let (result, log) = remote_build(&f, "huge", BuildOptions::default()).await;
    assert_eq!(result.status, BuildStatus::Built, "{}", result.error_text());
    // 1,000,000 lines of 99 digits and a newline, then the last line.
    assert_eq!(log.lines.load(Ordering::SeqCst), 1_000_001);
    assert_eq!(
        log.bytes.load(Ordering::SeqCst),
        100_000_000 + "the-last-line\n".len() as u64
    );
    assert!(log.text().ends_with("the-last-line\n"));
}

#[tokio::test]
async fn repeated_builds_check_determinism() {
    let f = Fixture::new();
    let repeat = |enforce: bool| BuildOptions {
        repeats: 1,
        enforce_determinism: enforce,
        ..Default::default()
    };
    let (result, _) = local_build(&f, "nondet", repeat(true)).await;
    assert_eq!(
        (
            result.status,
            result.times_built,
            result.is_non_deterministic
        ),
        (BuildStatus::NotDeterministic, 2, true)
    );
    let (result, _) = local_build(&f, "nondet", repeat(false)).await;
    assert_eq!(
        (
            result.status,
            result.times_built,
            result.is_non_deterministic
        ),
        (BuildStatus::Built, 2, true)
    );
    let (result, _) = local_build(
        &f,
        "det",
        BuildOptions {
            repeats: 2,
            enforce_determinism: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (
            result.status,
            result.times_built,
            result.is_non_deterministic
        ),
        (BuildStatus::Built, 3, false)
    );
}

#[tokio::test]
async fn keep_failed_keeps_the_build_directory() {
    let f = Fixture::new();
    let (result, log) = remote_build(
        &f,
        "fail",
        BuildOptions {
            keep_failed: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.status, BuildStatus::PermanentFailure);
    assert!(
        log.text().contains("keeping build directory"),
        "{}",
        log.text()
    );
}

#[tokio::test]
async fn build_paths_builds_derivation_outputs() {
    let f = Fixture::new();
    let store = NixStore::new();
    let mut remote = connect(&chroot(&store)).await;
    // Command 6 needs the derivations on the server: copy them over.
    let mut local = connect(&Transport::local()).await;
    let dep0 = f.instantiate("dep0");
    let fail = f.instantiate("fail");
    copy_closure(&mut local, &mut remote, &set(&[&dep0, &fail]), false)
        .await
        .unwrap();
    let none = CancellationToken::new();
    let (status, message) = remote
        .build_paths(&[format!("{dep0}!out")], &BuildOptions::default(), &none)
        .await
        .unwrap();
    assert_eq!((status, message.as_str()), (0, ""));
    let out = basic(&dep0).outputs["out"].path.clone();
    assert_eq!(
        remote
            .query_valid_paths(&set(&[&out]), false, false)
            .await
            .unwrap(),
        set(&[&out])
    );
    let (status, message) = remote
        .build_paths(std::slice::from_ref(&fail), &BuildOptions::default(), &none)
        .await
        .unwrap();
    assert_eq!(status, 100, "0x60 with the build-failure bit");
    assert!(
        hydra_nix::serve::strip_ansi(&message).contains("failed with exit code 3"),
        "{message}"
    );
    remote.close().await.unwrap();
}

#[tokio::test]
async fn a_killed_transport_gives_a_clear_error() {
    let store = NixStore::new();
    let mut remote = connect(&chroot(&store)).await;
    let pid = remote.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let err = remote
        .query_valid_paths(
            &set(&["/nix/store/00000000000000000000000000000000-x"]),
            false,
            false,
        )
        .await;
    match err {
        Err(ServeError::Remote { message, .. }) => assert!(
            message.contains("signal: 9") || message.contains("connection"),
            "{message}"
        ),
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(matches!(
        remote.query_closure(&BTreeSet::new(), false).await,
        Err(ServeError::Poisoned { .. })
    ));
}

#[tokio::test]
async fn errors_carry_the_servers_error_text() {
    let mut local = connect(&Transport::local()).await;
    let err = local
        .query_closure(
            &set(&["/nix/store/00000000000000000000000000000000-absent"]),
            false,
        )
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("error:") && text.contains("is not valid"),
        "{text}"
    );
}

fn processes_matching(pattern: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

/// Starts the `long` build and waits until it is running.
async fn start_long_build(
    f: &Fixture,
    transport: &Transport,
) -> (
    tokio::task::JoinHandle<(
        ServeClient,
        Result<hydra_nix::serve::BuildResult, ServeError>,
    )>,
    u32,
    CancellationToken,
) {
    let drv_path = f.instantiate("long");
    let drv = basic(&drv_path);
    let mut remote = connect(transport).await;
    let pid = remote.pid().unwrap();
    let log = Collector::default();
    remote.set_log_sink(Some(Box::new(log.clone()))).await;
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        let r = remote
            .build_derivation(&drv_path, &drv, &BuildOptions::default(), &token)
            .await;
        (remote, r)
    });
    let sleeping = format!("sleep {}", f.salt);
    assert!(
        eventually(|| processes_matching(&sleeping) == 1).await,
        "the build did not start; log: {}",
        log.text()
    );
    (task, pid, cancel)
}

#[tokio::test]
async fn dropping_the_client_ends_its_build() {
    let f = Fixture::new();
    let store = NixStore::new();
    let (task, pid, _cancel) = start_long_build(&f, &chroot(&store)).await;
    // The task owns the client; aborting it drops the client mid-build, as
    // when whatever was waiting for the build goes away.
    task.abort();
    let _ = task.await;
    let sleeping = format!("sleep {}", f.salt);
    assert!(
        eventually(|| processes_matching(&sleeping) == 0).await,
        "the builder survived its client"
    );
    assert!(
        eventually(|| !Path::new(&format!("/proc/{pid}")).exists()).await,
        "nix-store --serve exited"
    );
}

#[tokio::test]
async fn cancelling_a_build_ends_it() {
    let f = Fixture::new();
    let store = NixStore::new();
    let (task, _pid, cancel) = start_long_build(&f, &chroot(&store)).await;
    cancel.cancel();
    let (client, result) = task.await.unwrap();
    assert!(
        matches!(result, Err(ServeError::Cancelled { .. })),
        "{result:?}"
    );
    assert!(matches!(
        {
            let mut c = client;
            c.query_closure(&BTreeSet::new(), false).await
        },
        Err(ServeError::Poisoned { .. })
    ));
    let sleeping = format!("sleep {}", f.salt);
    assert!(
        eventually(|| processes_matching(&sleeping) == 0).await,
        "the builder survived cancellation"
    );
}

/// A machines-file entry for the sshd, with the given host key.
fn machine_line(sshd: &Sshd, host_key: &str, store: &NixStore) -> String {
    format!(
        "ssh://{}@127.0.0.1:{}?remote-store={} x86_64-linux {} 1 1 - - {}",
        sshd.user,
        sshd.port,
        store.root().display(),
        sshd.client_key().display(),
        base64::engine::general_purpose::STANDARD.encode(host_key)
    )
}

fn ssh_transport(line: &str) -> Transport {
    let parsed = machines::parse(
        line,
        "machines",
        &ParseOptions {
            dialect: Dialect::Hydra,
            local_system: "x86_64-linux".into(),
        },
    )
    .unwrap();
    Transport::for_machine(&parsed.machines[0]).unwrap()
}

#[tokio::test]
async fn over_ssh_with_the_host_key_from_the_machines_file() {
    let f = Fixture::new();
    let remote_store = NixStore::new();
    let sshd = Sshd::start(&remote_store.serve_command().2);
    let transport = ssh_transport(&machine_line(&sshd, &sshd.host_key(), &remote_store));

    // Copy inputs over ssh, build there, fetch the output back.
    let top_drv = f.instantiate("top");
    let drv = basic(&top_drv);
    f.build("dep2");
    let mut local = connect(&Transport::local()).await;
    let mut remote = connect(&transport).await;
    copy_closure(&mut local, &mut remote, &drv.input_srcs, true)
        .await
        .unwrap();
    let result = remote
        .build_derivation(
            &top_drv,
            &drv,
            &BuildOptions::default(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(result.status, BuildStatus::Built, "{}", result.error_text());
    let out = drv.outputs["out"].path.clone();
    let scan = remote
        .dump_store_path(&out, None, &ScanOptions::default())
        .await
        .unwrap();
    let info = remote
        .query_path_infos(&set(&[&out]))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(Some(scan.summary.nar_hash), info.nar_hash);
    copy_closure(&mut remote, &mut local, &set(&[&out]), false)
        .await
        .unwrap();
    assert!(Path::new(&out).join("content").exists());
    remote.close().await.unwrap();
}

#[tokio::test]
async fn over_ssh_a_wrong_host_key_is_refused() {
    let remote_store = NixStore::new();
    let sshd = Sshd::start(&remote_store.serve_command().2);
    let transport = ssh_transport(&machine_line(&sshd, &sshd.other_host_key(), &remote_store));
    let err = ServeClient::connect(&transport, Duration::from_secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Host key verification failed"), "{err}");
}

#[tokio::test]
async fn over_ssh_losing_the_connection_mid_build_stops_the_remote_build() {
    let f = Fixture::new();
    let remote_store = NixStore::new();
    let sshd = Sshd::start(&remote_store.serve_command().2);
    let transport = ssh_transport(&machine_line(&sshd, &sshd.host_key(), &remote_store));
    let (task, ssh_pid, _cancel) = start_long_build(&f, &transport).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ssh_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (_, result) = task.await.unwrap();
    assert!(result.is_err());
    let sleeping = format!("sleep {}", f.salt);
    assert!(
        eventually(|| processes_matching(&sleeping) == 0).await,
        "the remote builder survived its ssh connection"
    );
}

#[tokio::test]
async fn an_unreachable_ssh_machine_is_a_clear_error() {
    let line = "ssh://nobody@127.0.0.1:1 x86_64-linux - 1 1";
    let mut transport = ssh_transport(line);
    if let Transport::Ssh {
        connect_timeout, ..
    } = &mut transport
    {
        *connect_timeout = Duration::from_secs(5);
    }
    let err = ServeClient::connect(&transport, Duration::from_secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Connection refused") || err.contains("connect to host"),
        "{err}"
    );
}
