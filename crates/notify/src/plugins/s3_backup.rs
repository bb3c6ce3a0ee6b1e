//! S3Backup (legacy; `store_uri` supersedes it): `<s3backup>` blocks with
//! `jobs`, `name` (the bucket), `prefix` (default empty) and
//! `compression_type` (`bzip2`, the default, `xz` or `none`). When a head
//! build matching a block succeeds (status 0 or 6), the closure of its
//! outputs is copied to the bucket as a Nix binary cache, through the same
//! `s3://` binary cache the queue runner writes to (`hydra_store`):
//! dependencies first, each path's compressed NAR before its `.narinfo`
//! (so a narinfo never points at a missing NAR), skipping paths whose
//! narinfo is there already. Credentials and endpoint come from the
//! environment as for `store_uri = s3://…` (`AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL` for an S3-compatible server).
//!
//! Unlike Hydra's, the bucket is a binary cache Nix can use: NARs are
//! `nar/<file hash>.nar.<ext>`, `FileHash` is Nix's base-32, a
//! `nix-cache-info` is written, and narinfos are signed with
//! `binary_cache_secret_key_file` when there is one. Uploads hold a shared
//! lock on `$HYDRA_DATA/.hydra-s3backup.lock` (a garbage collector of the
//! bucket takes it exclusively).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use hydra_nix::env::NixEnv;
use hydra_store::{BinaryCache, DestStore, LocalStore};

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{JobsPattern, config_blocks, text};

#[derive(Debug)]
struct Block {
    jobs: JobsPattern,
    /// The bucket (under the block's prefix), as a binary cache.
    cache: DestStore,
}

/// The plugin.
#[derive(Debug)]
pub struct S3Backup {
    blocks: Vec<Block>,
}

impl S3Backup {
    /// The plugin `config`'s `<s3backup>` blocks make (`None`: there are
    /// none); a block without `name` or with an unknown compression, or
    /// an unreadable signing key, is an error naming it.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<S3Backup>>, String> {
        let vars = std::env::vars().collect();
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
                None | Some("") | Some("bzip2") => "bzip2",
                Some("xz") => "xz",
                Some("none") => "none",
                Some(other) => {
                    return Err(format!(
                        "<s3backup> compression_type ‘{other}’: use bzip2, xz or none"
                    ));
                }
            };
            let mut uri =
                format!("s3://{bucket}?compression={compression}&want-mass-query=1&priority=50");
            if let Some(file) = &config.web.binary_cache_secret_key_file {
                let file = file.to_string_lossy();
                uri.push_str("&secret-key=");
                uri.extend(percent_encoding::utf8_percent_encode(
                    &file,
                    percent_encoding::NON_ALPHANUMERIC,
                ));
            }
            let prefix = text(tree, "prefix").unwrap_or_default();
            let cache = BinaryCache::open_under(&uri, &prefix, &vars)
                .map_err(|e| format!("<s3backup> {bucket}: {e}"))?;
            blocks.push(Block {
                jobs,
                cache: DestStore::Cache(cache),
            });
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(S3Backup { blocks })))
    }
}

/// The closure of `paths` in `store`, breadth first.
async fn closure(store: &LocalStore, paths: BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let mut seen: BTreeSet<String> = paths.clone();
    let mut queue: VecDeque<String> = paths.into_iter().collect();
    while !queue.is_empty() {
        let batch: BTreeSet<String> = queue.drain(..).collect();
        let infos = store
            .path_infos(&batch)
            .await
            .map_err(|e| format!("reading the store: {e}"))?;
        for path in batch {
            let info = infos
                .get(&path)
                .ok_or_else(|| format!("{path} is not in the store"))?;
            for r in &info.references {
                if seen.insert(r.clone()) {
                    queue.push_back(r.clone());
                }
            }
        }
    }
    Ok(seen)
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
            // Derivers are read for each narinfo's `System`, as Hydra's.
            let local =
                LocalStore::new(NixEnv::default()).reading_derivations(cx.local_root.clone());
            let closure = closure(&local, outputs).await?;
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
                if let Err(e) = block.cache.copy_from_local(&local, &closure).await {
                    result = Err(format!("S3 backup to {}: {e}", block.cache.describe()));
                    break;
                }
                tracing::info!(cache = %block.cache.describe(), closure = closure.len(), "S3 backup done");
            }
            drop(lock);
            result
        })
    }
}
