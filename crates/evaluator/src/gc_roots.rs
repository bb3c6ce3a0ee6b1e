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
    use hydra_db::status::BuildStatus;
    // Statuses whose builds have outputs.
    let with_outputs: Vec<i32> = [BuildStatus::Succeeded, BuildStatus::FailedWithOutput]
        .iter()
        .map(|s| s.code())
        .collect();
    let mut wanted = BTreeSet::new();
    let unfinished: Vec<String> =
        sqlx::query_scalar("select drvPath from Builds where finished = 0")
            .fetch_all(pool)
            .await?;
    wanted.extend(unfinished);
    let kept: Vec<String> = sqlx::query_scalar(
        "select o.path from Builds b join BuildOutputs o on o.build = b.id where b.keep = 1 and o.path is not null",
    )
    .fetch_all(pool)
    .await?;
    wanted.extend(kept);

    let week_ago = hydra_db::now() - 7 * 24 * 3600;
    let jobsets: Vec<(i32, i32)> = sqlx::query_as(
        "select j.id, j.keepnr from Jobsets j join Projects p on p.name = j.project \
         where not (j.enabled = 0 and (j.hidden = 1 or p.hidden = 1) and coalesce(j.lastCheckedTime, 0) < $1)",
    )
    .bind(week_ago)
    .fetch_all(pool)
    .await?;
    for (jobset_id, keepnr) in jobsets {
        // Newest first: evaluations with unfinished builds, and the first
        // keepnr finished ones.
        let evals: Vec<(i32, bool)> = sqlx::query_as(
            "select e.id, exists (select 1 from JobsetEvalMembers m join Builds b on b.id = m.build \
                                  where m.eval = e.id and b.finished = 0) \
             from JobsetEvals e where e.jobset_id = $1 and e.hasNewBuilds = 1 order by e.id desc",
        )
        .bind(jobset_id)
        .fetch_all(pool)
        .await?;
        let mut finished_kept = 0;
        let mut keep_evals = Vec::new();
        for (id, unfinished) in evals {
            if unfinished {
                keep_evals.push(id);
            } else if finished_kept < keepnr.max(0) {
                finished_kept += 1;
                keep_evals.push(id);
            }
        }
        if keep_evals.is_empty() {
            continue;
        }
        let paths: Vec<String> = sqlx::query_scalar(
            "select case when b.buildStatus = any($2) then o.path else b.drvPath end \
             from JobsetEvalMembers m join Builds b on b.id = m.build \
             left join BuildOutputs o on o.build = b.id and b.buildStatus = any($2) \
             where m.eval = any($1) and (not b.buildStatus = any($2) or b.buildStatus is null or o.path is not null)",
        )
        .bind(&keep_evals)
        .bind(&with_outputs)
        .fetch_all(pool)
        .await?;
        wanted.extend(paths);
        // The latest successful build of every job in those evaluations.
        let latest: Vec<String> = sqlx::query_scalar(
            "select o.path from BuildOutputs o where o.path is not null and o.build in ( \
                 select max(b.id) from Builds b where b.jobset_id = $1 and b.finished = 1 \
                 and b.buildStatus = any($3) and b.job in ( \
                     select b2.job from JobsetEvalMembers m join Builds b2 on b2.id = m.build where m.eval = any($2)) \
                 group by b.job)",
        )
        .bind(jobset_id)
        .bind(&keep_evals)
        .bind(&with_outputs)
        .fetch_all(pool)
        .await?;
        wanted.extend(latest);
    }
    Ok(wanted)
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
        .filter_map(|p| p.rsplit('/').next().map(String::from))
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
