//! The `Cached*Inputs` tables: what the evaluator fetched before, so an
//! unchanged revision or path is not exported and added to the store
//! again.

use sqlx::PgPool;

/// A fetched revision, by version control system.
#[derive(Clone, Copy, Debug)]
pub enum Revision<'a> {
    Git {
        uri: &'a str,
        branch: &'a str,
        revision: &'a str,
        deep_clone: bool,
    },
    Hg {
        uri: &'a str,
        branch: &'a str,
        revision: &'a str,
    },
    /// `uri` is the cache key (a checkout is cached apart from an export).
    Svn {
        uri: &'a str,
        revision: i32,
    },
    Bzr {
        uri: &'a str,
        revision: i32,
    },
    Darcs {
        uri: &'a str,
        revision: &'a str,
        rev_count: i32,
    },
}

/// The store path and NAR hash a revision was added as.
pub async fn lookup(
    pool: &PgPool,
    rev: &Revision<'_>,
) -> Result<Option<(String, String)>, sqlx::Error> {
    match *rev {
        Revision::Git {
            uri,
            branch,
            revision,
            deep_clone,
        } => {
            sqlx::query_as(
                "select storePath, sha256hash from CachedGitInputs \
                 where uri = $1 and branch = $2 and revision = $3 and isDeepClone = $4",
            )
            .bind(uri)
            .bind(branch)
            .bind(revision)
            .bind(deep_clone)
            .fetch_optional(pool)
            .await
        }
        Revision::Hg { uri, branch, revision } => {
            sqlx::query_as(
                "select storePath, sha256hash from CachedHgInputs where uri = $1 and branch = $2 and revision = $3",
            )
            .bind(uri)
            .bind(branch)
            .bind(revision)
            .fetch_optional(pool)
            .await
        }
        Revision::Svn { uri, revision } => {
            sqlx::query_as("select storePath, sha256hash from CachedSubversionInputs where uri = $1 and revision = $2")
                .bind(uri)
                .bind(revision)
                .fetch_optional(pool)
                .await
        }
        Revision::Bzr { uri, revision } => {
            sqlx::query_as("select storePath, sha256hash from CachedBazaarInputs where uri = $1 and revision = $2")
                .bind(uri)
                .bind(revision)
                .fetch_optional(pool)
                .await
        }
        Revision::Darcs { uri, revision, .. } => {
            sqlx::query_as("select storePath, sha256hash from CachedDarcsInputs where uri = $1 and revision = $2")
                .bind(uri)
                .bind(revision)
                .fetch_optional(pool)
                .await
        }
    }
}

/// Remembers that a revision was added as `store_path` with NAR hash `sha`.
pub async fn remember(
    pool: &PgPool,
    rev: &Revision<'_>,
    sha: &str,
    store_path: &str,
) -> Result<(), sqlx::Error> {
    let query = match *rev {
        Revision::Git {
            uri,
            branch,
            revision,
            deep_clone,
        } => sqlx::query(
            "insert into CachedGitInputs (uri, branch, revision, isDeepClone, sha256hash, storePath) \
             values ($1, $2, $3, $4, $5, $6) on conflict (uri, branch, revision, isDeepClone) \
             do update set sha256hash = excluded.sha256hash, storePath = excluded.storePath",
        )
        .bind(uri)
        .bind(branch)
        .bind(revision)
        .bind(deep_clone)
        .bind(sha)
        .bind(store_path),
        Revision::Hg { uri, branch, revision } => sqlx::query(
            "insert into CachedHgInputs (uri, branch, revision, sha256hash, storePath) values ($1, $2, $3, $4, $5) \
             on conflict (uri, branch, revision) do update set sha256hash = excluded.sha256hash, storePath = excluded.storePath",
        )
        .bind(uri)
        .bind(branch)
        .bind(revision)
        .bind(sha)
        .bind(store_path),
        Revision::Svn { uri, revision } => sqlx::query(
            "insert into CachedSubversionInputs (uri, revision, sha256hash, storePath) values ($1, $2, $3, $4) \
             on conflict (uri, revision) do update set sha256hash = excluded.sha256hash, storePath = excluded.storePath",
        )
        .bind(uri)
        .bind(revision)
        .bind(sha)
        .bind(store_path),
        Revision::Bzr { uri, revision } => sqlx::query(
            "insert into CachedBazaarInputs (uri, revision, sha256hash, storePath) values ($1, $2, $3, $4) \
             on conflict (uri, revision) do update set sha256hash = excluded.sha256hash, storePath = excluded.storePath",
        )
        .bind(uri)
        .bind(revision)
        .bind(sha)
        .bind(store_path),
        Revision::Darcs {
            uri,
            revision,
            rev_count,
        } => sqlx::query(
            "insert into CachedDarcsInputs (uri, revision, sha256hash, storePath, revCount) values ($1, $2, $3, $4, $5) \
             on conflict (uri, revision) do update set sha256hash = excluded.sha256hash, storePath = excluded.storePath, \
             revCount = excluded.revCount",
        )
        .bind(uri)
        .bind(revision)
        .bind(sha)
        .bind(store_path)
        .bind(rev_count),
    };
    query.execute(pool).await?;
    Ok(())
}

/// A path input as last seen: first-seen time, last-seen time, NAR hash
/// and store path.
pub async fn latest_path(
    pool: &PgPool,
    src: &str,
) -> Result<Option<(i64, i64, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "select timestamp::bigint, lastSeen::bigint, sha256hash, storePath from CachedPathInputs \
         where srcPath = $1 order by lastSeen desc limit 1",
    )
    .bind(src)
    .fetch_optional(pool)
    .await
}

/// The store path a path input with NAR hash `sha` was added as.
pub async fn path_with_hash(
    pool: &PgPool,
    src: &str,
    sha: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select storePath from CachedPathInputs where srcPath = $1 and sha256hash = $2",
    )
    .bind(src)
    .bind(sha)
    .fetch_optional(pool)
    .await
}

/// Records that path input `src` has NAR hash `sha` at `now`; returns
/// when this content was first seen.
pub async fn remember_path(
    pool: &PgPool,
    src: &str,
    sha: &str,
    store_path: &str,
    now: i32,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "insert into CachedPathInputs (srcPath, timestamp, lastSeen, sha256hash, storePath) values ($1, $2, $2, $3, $4) \
         on conflict (srcPath, sha256hash) do update set lastSeen = excluded.lastSeen, storePath = excluded.storePath \
         returning timestamp",
    )
    .bind(src)
    .bind(now)
    .bind(sha)
    .bind(store_path)
    .fetch_one(pool)
    .await
}

/// Forgets every fetched input.
pub async fn clear(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for sql in [
        "delete from CachedPathInputs",
        "delete from CachedGitInputs",
        "delete from CachedHgInputs",
        "delete from CachedSubversionInputs",
        "delete from CachedBazaarInputs",
        "delete from CachedDarcsInputs",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    tx.commit().await
}
