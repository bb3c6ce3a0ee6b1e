//! S3Backup (legacy; `store_uri` supersedes it): `<s3backup>` blocks with
//! `jobs`, `name` (the bucket), `prefix` (default empty) and
//! `compression_type` (`bzip2`, the default, `xz` or `none`). When a head
//! build matching a block succeeds (status 0 or 6), the closure of its
//! outputs is copied to the bucket as a Nix binary cache: each path's
//! compressed NAR first, then its `.narinfo` (so a narinfo never points
//! at a missing NAR), skipping paths whose narinfo is there already.
//! Credentials and endpoint: `crate::s3`. Each NAR is compressed into a
//! scratch file and streamed from there, so memory stays small.
//!
//! Unlike Hydra's, the bucket is a binary cache Nix can use: NARs are
//! `nar/<file hash>.nar.<ext>`, `FileHash` is Nix's base-32, a
//! `nix-cache-info` is written, and narinfos are signed with
//! `binary_cache_secret_key_file` when there is one. Uploads hold a shared
//! lock on `$HYDRA_DATA/.hydra-s3backup.lock` (a garbage collector of the
//! bucket takes it exclusively).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use async_compression::tokio::write::{BzEncoder, XzEncoder};
use hydra_nix::hash::{HashAlgo, Hasher};
use hydra_nix::narinfo::{NarInfo, SecretKey};
use hydra_nix::serve::PathInfo;
use hydra_nix::store_path::StoreDir;
use hydra_store::DestStore;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{JobsPattern, config_blocks, text};
use crate::s3::S3;

/// How NARs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Bzip2,
    Xz,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Bzip2 => ".bz2",
            Compression::Xz => ".xz",
        }
    }
}

#[derive(Clone, Debug)]
struct Block {
    jobs: JobsPattern,
    bucket: String,
    prefix: String,
    compression: Compression,
}

/// The plugin.
pub struct S3Backup {
    blocks: Vec<Block>,
    s3: S3,
    store: DestStore,
    keys: Vec<SecretKey>,
}

impl std::fmt::Debug for S3Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backup")
            .field("blocks", &self.blocks)
            .field("s3", &self.s3)
            .finish()
    }
}

impl S3Backup {
    /// The plugin `config`'s `<s3backup>` blocks make (`None`: there are
    /// none); a block without `name` or with an unknown compression, or
    /// missing AWS credentials, is an error naming it.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<S3Backup>>, String> {
        let mut blocks = Vec::new();
        for tree in config_blocks(config, "s3backup") {
            let Some(jobs) = JobsPattern::of_block("s3backup", tree)? else {
                tracing::warn!("an <s3backup> block has no jobs: it matches nothing");
                continue;
            };
            let bucket = text(tree, "name")
                .filter(|b| !b.is_empty())
                .ok_or("an <s3backup> block has no name (the bucket)")?;
            let compression = match text(tree, "compression_type").as_deref() {
                None | Some("") | Some("bzip2") => Compression::Bzip2,
                Some("xz") => Compression::Xz,
                Some("none") => Compression::None,
                Some(other) => {
                    return Err(format!(
                        "<s3backup> compression_type ‘{other}’: use bzip2, xz or none"
                    ));
                }
            };
            blocks.push(Block {
                jobs,
                bucket,
                prefix: text(tree, "prefix").unwrap_or_default(),
                compression,
            });
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        let keys = match &config.web.binary_cache_secret_key_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("binary_cache_secret_key_file {}: {e}", file.display()))?;
                vec![
                    SecretKey::parse(text.trim()).map_err(|e| {
                        format!("binary_cache_secret_key_file {}: {e}", file.display())
                    })?,
                ]
            }
            None => Vec::new(),
        };
        Ok(Some(Arc::new(S3Backup {
            blocks,
            s3: S3::from_vars(&std::env::vars().collect())?,
            store: DestStore::Local(hydra_store::LocalStore::new(
                hydra_nix::env::NixEnv::default(),
            )),
            keys,
        })))
    }

    /// The closure of `paths`, breadth first, with what the store knows
    /// of each.
    async fn closure(&self, paths: BTreeSet<String>) -> Result<Vec<PathInfo>, String> {
        let mut seen: BTreeSet<String> = paths.clone();
        let mut queue: VecDeque<String> = paths.into_iter().collect();
        let mut out = Vec::new();
        while !queue.is_empty() {
            let batch: BTreeSet<String> = queue.drain(..).collect();
            let mut infos: BTreeMap<String, PathInfo> = self
                .store
                .path_infos(&batch)
                .await
                .map_err(|e| format!("reading the store: {e}"))?;
            for path in batch {
                let info = infos
                    .remove(&path)
                    .ok_or_else(|| format!("{path} is not in the store"))?;
                for r in &info.references {
                    if seen.insert(r.clone()) {
                        queue.push_back(r.clone());
                    }
                }
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Uploads `info`'s NAR for `block`; its narinfo.
    async fn upload_nar(
        &self,
        cx: &Context,
        block: &Block,
        info: &PathInfo,
        scratch: &std::path::Path,
    ) -> Result<NarInfo, String> {
        let (_, mut nar) = self
            .store
            .open_nar(&info.path)
            .await
            .map_err(|e| format!("reading {}: {e}", info.path))?;
        let file = scratch.join("nar");
        let out = tokio::fs::File::create(&file)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let mut writer: Box<dyn AsyncWrite + Unpin + Send> = match block.compression {
            Compression::None => Box::new(out),
            Compression::Bzip2 => Box::new(BzEncoder::new(out)),
            Compression::Xz => Box::new(XzEncoder::new(out)),
        };
        let mut nar_hash = Hasher::new(HashAlgo::Sha256);
        let mut nar_size = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = nar
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading {}: {e}", info.path))?;
            if n == 0 {
                break;
            }
            nar_hash.update(&buf[..n]);
            nar_size += n as u64;
            writer
                .write_all(&buf[..n])
                .await
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        writer
            .shutdown()
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
        drop(writer);
        // The compressed file's hash and size, read back in pieces.
        let (file_hash, file_size) = {
            let mut reader = tokio::fs::File::open(&file)
                .await
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let mut hasher = Hasher::new(HashAlgo::Sha256);
            let mut size = 0u64;
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            (hasher.finish(), size)
        };
        let url = format!(
            "nar/{}.nar{}",
            file_hash.to_base32(),
            block.compression.extension()
        );
        self.s3
            .put_file(
                &block.bucket,
                &format!("{}{url}", block.prefix),
                "application/x-nix-archive",
                &file,
                &file_hash.to_base16(),
                file_size,
            )
            .await?;
        let base = |p: &str| hydra_nix::store_path::base_name(p).to_string();
        let system = info.deriver.as_deref().and_then(|drv| {
            let text = std::fs::read_to_string(cx.real_path(drv)).ok()?;
            hydra_nix::derivation::Derivation::parse(&text)
                .ok()
                .map(|d| d.platform)
        });
        let mut narinfo = NarInfo {
            store_path: info.path.clone(),
            url,
            compression: block.compression.name().into(),
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            nar_hash: nar_hash.finish(),
            nar_size,
            references: info.references.iter().map(|r| base(r)).collect(),
            deriver: info.deriver.as_deref().map(base),
            system,
            sigs: Vec::new(),
            ca: info.ca.clone(),
        };
        for key in &self.keys {
            narinfo
                .sign(&StoreDir::default(), key)
                .map_err(|e| format!("signing {}: {e}", info.path))?;
        }
        Ok(narinfo)
    }

    /// Copies `closure` into `block`'s bucket.
    async fn backup(
        &self,
        cx: &Context,
        block: &Block,
        closure: &[PathInfo],
    ) -> Result<(), String> {
        let cache_info = format!("{}nix-cache-info", block.prefix);
        if !self.s3.exists(&block.bucket, &cache_info).await? {
            self.s3
                .put(
                    &block.bucket,
                    &cache_info,
                    "text/x-nix-cache-info",
                    b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\n".to_vec(),
                )
                .await?;
        }
        let scratch = tempfile::tempdir().map_err(|e| format!("a scratch directory: {e}"))?;
        let mut narinfos = Vec::new();
        for info in closure {
            let base = hydra_nix::store_path::base_name(&info.path);
            let hash_part = base.split('-').next().unwrap_or(base);
            let key = format!("{}{hash_part}.narinfo", block.prefix);
            if self.s3.exists(&block.bucket, &key).await? {
                continue;
            }
            let narinfo = self.upload_nar(cx, block, info, scratch.path()).await?;
            narinfos.push((key, narinfo));
        }
        // The narinfos last: one never points at a NAR not yet there.
        for (key, narinfo) in &narinfos {
            self.s3
                .put(
                    &block.bucket,
                    key,
                    "text/x-nix-narinfo",
                    narinfo.to_text().into_bytes(),
                )
                .await?;
        }
        tracing::info!(bucket = %block.bucket, uploaded = narinfos.len(), closure = closure.len(), "S3 backup done");
        Ok(())
    }
}

impl Plugin for S3Backup {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::S3Backup"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            use hydra_db::status::BuildStatus;
            let Some(build) = event.finished_build() else {
                return Ok(());
            };
            let reports = hydra_db::build_reports::reports(&cx.pool, &[build])
                .await
                .map_err(|e| format!("reading build {build}: {e}"))?;
            let Some(report) = reports.first() else {
                return Ok(());
            };
            if !matches!(
                report.status.and_then(BuildStatus::from_code),
                Some(BuildStatus::Succeeded | BuildStatus::FailedWithOutput)
            ) {
                return Ok(());
            }
            let full = report.full_name();
            let chosen: Vec<&Block> = self
                .blocks
                .iter()
                .filter(|b| b.jobs.matches(&full))
                .collect();
            if chosen.is_empty() {
                return Ok(());
            }
            let outputs: BTreeSet<String> = hydra_db::builds::outputs(&cx.pool, build)
                .await
                .map_err(|e| format!("reading build {build}'s outputs: {e}"))?
                .into_iter()
                .filter_map(|(_, path)| path)
                .collect();
            let closure = self.closure(outputs).await?;
            let lock_path = cx.data_dir.path().join(".hydra-s3backup.lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| format!("{}: {e}", lock_path.display()))?;
            let lock = tokio::task::spawn_blocking(move || lock.lock_shared().map(|()| lock))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
            let mut result = Ok(());
            for block in chosen {
                if let Err(e) = self.backup(cx, block, &closure).await {
                    result = Err(e);
                    break;
                }
            }
            drop(lock);
            result
        })
    }
}
