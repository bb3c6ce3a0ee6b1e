//! `hydra update-gc-roots` (Hydra's `hydra-update-gc-roots`): keeps the
//! garbage collector roots in `gc_roots_dir` in line with what must
//! survive a collection, and removes the rest.
//!
//! Kept: the derivations of unfinished builds; the outputs of builds marked
//! `keep`; for each jobset, the builds of its evaluations that still have
//! unfinished builds and of its `keepnr` latest finished evaluations (the
//! outputs of successful ones, the derivations of the others, so they can
//! be restarted), and the latest successful build of every job in those
//! evaluations. Jobsets that are disabled, hidden (or in a hidden project)
//! and not checked for a week are skipped. Roots are empty files named
//! after the store path, which Nix's collector honours; only valid paths
//! get one. A root that is not kept is deleted once it is a day old, so the
//! roots an evaluation is creating right now survive.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hydra_nix::serve::ServeClient;
use sqlx::PgPool;

use crate::engine::NixEnv;

/// What an update did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Paths that must be kept (and are valid).
    pub kept: usize,
    /// Roots created.
    pub added: usize,
    /// Roots deleted.
    pub removed: usize,
    /// Roots not kept but too young to delete.
    pub spared: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot query the store: {0}")]
    Store(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How old an unwanted root must be before it is deleted.
pub const MIN_AGE: Duration = Duration::from_secs(24 * 3600);

/// The store paths that must be kept.
pub async fn wanted_paths(pool: &PgPool) -> Result<BTreeSet<String>, sqlx::Error> {
    hydra_db::gc_roots::wanted_paths(pool, hydra_db::now()).await
}

/// Brings `dir` in line with the database; roots not wanted are deleted
/// when older than `min_age`.
pub async fn update(
    pool: &PgPool,
    nix: &NixEnv,
    dir: &Path,
    min_age: Duration,
) -> Result<GcReport, GcError> {
    let wanted = wanted_paths(pool).await?;
    let transport = nix.serve_transport();
    let mut store = ServeClient::connect(&transport, Duration::from_secs(60))
        .await
        .map_err(|e| GcError::Store(e.to_string()))?;
    let valid = store
        .query_valid_paths(&wanted, false, false)
        .await
        .map_err(|e| GcError::Store(e.to_string()))?;
    let _ = store.close().await;

    std::fs::create_dir_all(dir).map_err(|source| GcError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut report = GcReport {
        kept: valid.len(),
        ..Default::default()
    };
    let keep: BTreeSet<String> = valid
        .iter()
        .map(|p| hydra_nix::store_path::base_name(p).to_string())
        .collect();
    for base in &keep {
        let root = dir.join(base);
        if root.symlink_metadata().is_err() {
            std::fs::File::create(&root).map_err(|source| GcError::Io {
                path: root.display().to_string(),
                source,
            })?;
            report.added += 1;
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|source| GcError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let changed = {
            use std::os::unix::fs::MetadataExt;
            SystemTime::UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64)
        };
        if now.duration_since(changed).unwrap_or_default() < min_age {
            report.spared += 1;
            continue;
        }
        std::fs::remove_file(entry.path()).map_err(|source| GcError::Io {
            path: entry.path().display().to_string(),
            source,
        })?;
        report.removed += 1;
    }
    Ok(report)
}
