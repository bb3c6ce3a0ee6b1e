//! Destination stores: where the queue runner puts build outputs
//! (`store_uri`) and where the web server reads them.
//!
//! Two kinds: the machine's Nix store (`auto`, the default), reached through
//! a local `nix-store --serve --write`, and a binary cache in a directory
//! (`file://DIR`) or an S3 bucket (`s3://BUCKET`) written directly
//! (compressed NARs, signed narinfos, optional `.ls` listings, logs under
//! `log/`). Paths arrive as NAR streams (from a build
//! machine) and are verified against the NAR hash they were announced with.
//! This crate does not decide what to store; callers do.

mod binary_cache;
mod local;
mod s3;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use binary_cache::{BinaryCache, Compression};
use hydra_nix::env::NixEnv;
use hydra_nix::nar::Scan;
use hydra_nix::serve::{PathInfo, ServeError};
pub use local::LocalStore;
use tokio::io::AsyncRead;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URI `{uri}`: {message}")]
    Uri { uri: String, message: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: the NAR does not match its announced {what} (expected {expected}, got {got})")]
    Mismatch {
        path: String,
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("{0} is not in the store")]
    Missing(String),
    #[error("{place}: {message}")]
    Object { place: String, message: String },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

/// A NAR reader that fails when its source ends before `remaining` bytes
/// (or sends more).
struct ExactSize {
    inner: Box<dyn AsyncRead + Unpin + Send>,
    remaining: u64,
    path: String,
}

impl AsyncRead for ExactSize {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let got = (buf.filled().len() - before) as u64;
        if got == 0 && this.remaining > 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the NAR of {} ended {} bytes early",
                    this.path, this.remaining
                ),
            )));
        }
        if got > this.remaining {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the NAR of {} is longer than announced", this.path),
            )));
        }
        this.remaining -= got;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A destination store.
#[derive(Debug)]
pub enum DestStore {
    Local(LocalStore),
    Cache(BinaryCache),
}

/// Opens the store `uri` names: `auto`, `local` or empty for the machine's
/// store (with `nix`'s settings), `file://DIR?…` or `s3://BUCKET?…` for a
/// binary cache. An S3 client reads the environment as Nix programs see
/// it: the process's, with `nix`'s variables over it.
pub fn open(uri: &str, nix: &NixEnv) -> Result<DestStore, StoreError> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    vars.extend(nix.env.iter().cloned());
    let uri = uri.trim();
    match uri {
        "" | "auto" | "local" | "daemon" => Ok(DestStore::Local(LocalStore::new(nix.clone()))),
        _ if uri.starts_with("file://") || uri.starts_with("s3://") => {
            Ok(DestStore::Cache(BinaryCache::open(uri, &vars)?))
        }
        _ => Err(StoreError::Uri {
            uri: uri.into(),
            message: "only the machine's store (`auto`), `file://` and `s3://` binary caches are supported"
                .into(),
        }),
    }
}

impl DestStore {
    /// The URI, for people.
    pub fn describe(&self) -> String {
        match self {
            DestStore::Local(_) => "the machine's Nix store".into(),
            DestStore::Cache(c) => c.describe(),
        }
    }

    /// Whether this is the machine's own store (the one `.drv` files are
    /// in).
    pub fn is_machine_store(&self) -> bool {
        matches!(self, DestStore::Local(_))
    }

    /// Which of `paths` the store has.
    pub async fn query_valid(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, StoreError> {
        if paths.is_empty() {
            return Ok(BTreeSet::new());
        }
        match self {
            DestStore::Local(s) => s.query_valid(paths).await,
            DestStore::Cache(c) => c.query_valid(paths).await,
        }
    }

    /// What the store knows of `paths` (the valid ones).
    pub async fn path_infos(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, PathInfo>, StoreError> {
        if paths.is_empty() {
            return Ok(BTreeMap::new());
        }
        match self {
            DestStore::Local(s) => s.path_infos(paths).await,
            DestStore::Cache(c) => c.path_infos(paths).await,
        }
    }

    /// The sum of the NAR sizes of the closure of `paths`.
    pub async fn closure_size(&self, paths: &BTreeSet<String>) -> Result<u64, StoreError> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut todo: BTreeSet<String> = paths.clone();
        let mut total = 0;
        while !todo.is_empty() {
            let infos = self.path_infos(&todo).await?;
            let mut next = BTreeSet::new();
            for path in &todo {
                seen.insert(path.clone());
                let info = infos
                    .get(path)
                    .ok_or_else(|| StoreError::Missing(path.clone()))?;
                total += info.nar_size;
                for r in &info.references {
                    if !seen.contains(r) && !todo.contains(r) {
                        next.insert(r.clone());
                    }
                }
            }
            todo = next;
        }
        Ok(total)
    }

    /// Adds a path whose NAR is read from `nar`; `info` says what it must
    /// be (NAR hash and size, references, deriver, content address).
    pub async fn add_nar(
        &self,
        info: &PathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        match self {
            DestStore::Local(s) => s.add_nar(info, nar).await,
            DestStore::Cache(c) => c.add_nar(info, nar, None).await,
        }
    }

    /// Copies `paths` (dependencies first, each in the local store) from the
    /// local store into this one; a no-op for the local store itself.
    pub async fn copy_from_local(
        &self,
        local: &LocalStore,
        paths: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let DestStore::Cache(cache) = self else {
            return Ok(());
        };
        if paths.is_empty() {
            return Ok(());
        }
        let infos = local.path_infos(paths).await?;
        let order = hydra_nix::copy::topological_order(&infos);
        let present = self.query_valid(paths).await?;
        for path in order {
            if present.contains(&path) {
                continue;
            }
            let Some(info) = infos.get(&path) else {
                return Err(StoreError::Missing(path));
            };
            let system = local.deriver_system(info).await;
            let mut client = local.connect().await?;
            let (mut tx, mut rx) = tokio::io::duplex(1 << 20);
            let (sent, added) = tokio::join!(
                async {
                    let r = client
                        .dump_store_path(&info.path, Some(&mut tx), &Default::default())
                        .await;
                    drop(tx);
                    r
                },
                cache.add_nar(info, &mut rx, system)
            );
            sent?;
            added?;
            local.release(client).await;
        }
        Ok(())
    }

    /// Makes `paths` (and their closure) valid in the local store, copying
    /// what it lacks from this store; a no-op for the local store itself.
    pub async fn copy_to_local(
        &self,
        local: &LocalStore,
        paths: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let DestStore::Cache(cache) = self else {
            return Ok(());
        };
        let mut closure: BTreeMap<String, PathInfo> = BTreeMap::new();
        let mut todo: BTreeSet<String> = paths.clone();
        while !todo.is_empty() {
            let have = local.query_valid(&todo).await?;
            let lacking: BTreeSet<String> = todo.difference(&have).cloned().collect();
            let infos = cache.path_infos(&lacking).await?;
            let mut next = BTreeSet::new();
            for path in &lacking {
                let info = infos
                    .get(path)
                    .ok_or_else(|| StoreError::Missing(path.clone()))?;
                for r in &info.references {
                    if !closure.contains_key(r) && !lacking.contains(r) {
                        next.insert(r.clone());
                    }
                }
                closure.insert(path.clone(), info.clone());
            }
            todo = next;
        }
        for path in hydra_nix::copy::topological_order(&closure) {
            let (info, mut nar, _) = cache.open_nar(&path).await?;
            local.add_nar(&info, &mut nar).await?;
        }
        Ok(())
    }

    /// The path's metadata and its NAR (uncompressed), streamed: readers
    /// see an error, never a silently short NAR, if the store fails midway.
    pub async fn open_nar(
        &self,
        path: &str,
    ) -> Result<(PathInfo, Box<dyn AsyncRead + Unpin + Send>), StoreError> {
        let (info, nar) = match self {
            DestStore::Local(s) => s.open_nar(path).await?,
            DestStore::Cache(c) => {
                let (info, nar, _) = c.open_nar(path).await?;
                (info, nar)
            }
        };
        let exact = ExactSize {
            inner: nar,
            remaining: info.nar_size,
            path: info.path.clone(),
        };
        Ok((info, Box::new(exact)))
    }

    /// Reads the NAR of `path`, extracting the files `options` ask for.
    pub async fn scan(
        &self,
        path: &str,
        options: &hydra_nix::nar::ScanOptions,
    ) -> Result<Scan, StoreError> {
        match self {
            DestStore::Local(s) => s.scan(path, options).await,
            DestStore::Cache(c) => c.scan(path, options).await,
        }
    }

    /// Stores a step's log next to the outputs (`log/<drv base name>`), for
    /// binary caches; the machine's store keeps no logs of ours.
    pub async fn upload_log(&self, drv_path: &str, log: &Path) -> Result<bool, StoreError> {
        match self {
            DestStore::Local(_) => Ok(false),
            DestStore::Cache(c) => c.upload_log(drv_path, log).await.map(|()| true),
        }
    }
}
