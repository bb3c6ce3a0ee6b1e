//! The machine's Nix store, through `nix-store --serve --write`
//! connections kept in a small pool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hydra_nix::env::NixEnv;
use hydra_nix::nar::{Scan, ScanOptions};
use hydra_nix::serve::{PathInfo, ServeClient};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::StoreError;

/// Idle connections kept for reuse.
const POOL: usize = 4;

#[derive(Debug)]
pub struct LocalStore {
    nix: NixEnv,
    idle: Mutex<Vec<ServeClient>>,
    /// Where the store's files are read to name a path's system in the
    /// narinfos of copies (`/` for the real store); `None`: not read.
    derivations_at: Option<std::path::PathBuf>,
}

impl LocalStore {
    pub fn new(nix: NixEnv) -> LocalStore {
        LocalStore {
            nix,
            idle: Mutex::new(Vec::new()),
            derivations_at: None,
        }
    }

    /// This store, whose paths' derivers are read (under `root`, a chroot
    /// store's directory, else where they are) so that copies into binary
    /// caches say each path's `System`.
    pub fn reading_derivations(mut self, root: Option<std::path::PathBuf>) -> LocalStore {
        self.derivations_at = Some(root.unwrap_or_else(|| "/".into()));
        self
    }

    /// The system of `info`'s deriver, when derivations are read and it
    /// is there.
    pub(crate) async fn deriver_system(&self, info: &PathInfo) -> Option<String> {
        let root = self.derivations_at.as_ref()?;
        let file = root.join(info.deriver.as_deref()?.trim_start_matches('/'));
        let text = tokio::fs::read_to_string(file).await.ok()?;
        hydra_nix::derivation::Derivation::parse(&text)
            .ok()
            .map(|d| d.platform)
    }

    /// The settings Nix programs use for this store.
    pub fn nix(&self) -> &NixEnv {
        &self.nix
    }

    /// A connection: an idle one, or a new one.
    pub async fn connect(&self) -> Result<ServeClient, StoreError> {
        if let Some(client) = self.idle.lock().await.pop() {
            return Ok(client);
        }
        Ok(ServeClient::connect(&self.nix.serve_transport(), Duration::from_secs(60)).await?)
    }

    /// Gives a healthy connection back for reuse.
    pub async fn release(&self, client: ServeClient) {
        let mut idle = self.idle.lock().await;
        if idle.len() < POOL {
            idle.push(client);
        }
    }

    pub async fn query_valid(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut client = self.connect().await?;
        let valid = client.query_valid_paths(paths, false, false).await?;
        self.release(client).await;
        Ok(valid)
    }

    pub async fn path_infos(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, PathInfo>, StoreError> {
        let mut client = self.connect().await?;
        let infos = client.query_path_infos(paths).await?;
        self.release(client).await;
        Ok(infos.into_iter().map(|i| (i.path.clone(), i)).collect())
    }

    pub async fn add_nar(
        &self,
        info: &PathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        let mut client = self.connect().await?;
        let valid = client
            .query_valid_paths(&BTreeSet::from([info.path.clone()]), false, false)
            .await?;
        if valid.contains(&info.path) {
            // Drain what the caller sends; the path is there already.
            tokio::io::copy(nar, &mut tokio::io::sink())
                .await
                .map_err(StoreError::io(&info.path))?;
            self.release(client).await;
            return Ok(());
        }
        let sent = async {
            let w = client.add_to_store_nar_start(info).await?;
            let copied = tokio::io::copy(nar, w).await;
            let flushed = match copied {
                Ok(n) if n == info.nar_size => w.flush().await.map(|()| n),
                other => other,
            };
            Ok::<_, StoreError>(flushed)
        }
        .await?;
        match sent {
            Ok(n) if n == info.nar_size => {}
            Ok(n) => {
                return Err(StoreError::Mismatch {
                    path: info.path.clone(),
                    what: "size",
                    expected: info.nar_size.to_string(),
                    got: n.to_string(),
                });
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: info.path.clone().into(),
                    source: e,
                });
            }
        }
        client.add_to_store_nar_finish().await?;
        self.release(client).await;
        Ok(())
    }

    /// The path's metadata and its NAR, dumped by a connection of its own
    /// while the caller reads.
    pub(crate) async fn open_nar(
        &self,
        path: &str,
    ) -> Result<(PathInfo, Box<dyn AsyncRead + Unpin + Send>), StoreError> {
        let info = self
            .path_infos(&BTreeSet::from([path.to_string()]))
            .await?
            .remove(path)
            .ok_or_else(|| StoreError::Missing(path.into()))?;
        let mut client = self.connect().await?;
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let dumped = path.to_string();
        tokio::spawn(async move {
            let r = client
                .dump_store_path(&dumped, Some(&mut tx), &ScanOptions::default())
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, path = %dumped, "cannot dump a path for a reader");
            }
        });
        Ok((info, Box::new(rx)))
    }

    pub(crate) async fn scan(&self, path: &str, options: &ScanOptions) -> Result<Scan, StoreError> {
        let mut client = self.connect().await?;
        let scan = client.dump_store_path(path, None, options).await?;
        self.release(client).await;
        Ok(scan)
    }
}
