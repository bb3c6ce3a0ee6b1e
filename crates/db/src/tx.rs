//! Transactions that survive contention.
//!
//! The evaluator, the queue runner and the web server update the same
//! `Builds` rows concurrently. Two rules keep that safe: every transaction
//! that locks several builds locks them in id order ([`lock_builds`]), and
//! every transaction is retried when PostgreSQL aborts it for a deadlock or a
//! serialization failure ([`transaction`]).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use crate::DbError;

/// How often a transaction is attempted before the error is returned.
pub const MAX_ATTEMPTS: u32 = 10;

/// Errors that mean "try the whole transaction again".
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for sqlx::Error {
    fn is_transient(&self) -> bool {
        match self {
            // serialization_failure, deadlock_detected
            sqlx::Error::Database(e) => {
                matches!(e.code().as_deref(), Some("40001") | Some("40P01"))
            }
            _ => false,
        }
    }
}

impl Transient for DbError {
    fn is_transient(&self) -> bool {
        match self {
            DbError::Sql(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// The connection a transaction body works with. Its second lifetime ties
/// it to the caller's borrows, so the body may use references to the caller's
/// data (a plain higher-ranked closure could only capture `'static` data).
pub struct Tx<'c, 'a> {
    conn: &'c mut PgConnection,
    _caller: PhantomData<&'c &'a ()>,
}

impl std::fmt::Debug for Tx<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tx")
    }
}

impl Deref for Tx<'_, '_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
    }
}

impl DerefMut for Tx<'_, '_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
    }
}

/// Runs `body` in a transaction and commits it; when PostgreSQL aborts the
/// transaction for a deadlock or serialization failure, rolls back and runs
/// `body` again (up to [`MAX_ATTEMPTS`] times, with a short random back-off).
/// `body` must therefore not have effects outside the database.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool, ids: Vec<hydra_db::ids::BuildId>) -> Result<(), hydra_db::DbError> {
/// use hydra_db::{DbError, Tx, lock_builds, transaction};
/// transaction(&pool, |mut tx: Tx| {
///     let ids = &ids;
///     Box::pin(async move {
///         lock_builds(&mut tx, ids).await?;
///         sqlx::query("update Builds set keep = 1 where id = any($1)")
///             .bind(ids)
///             .execute(&mut *tx)
///             .await?;
///         Ok::<_, DbError>(())
///     })
/// })
/// .await
/// # }
/// ```
pub async fn transaction<'a, T, E, F>(pool: &PgPool, mut body: F) -> Result<T, E>
where
    F: for<'c> FnMut(Tx<'c, 'a>) -> BoxFuture<'c, Result<T, E>>,
    E: From<sqlx::Error> + Transient,
{
    let mut attempt = 1;
    loop {
        let mut tx = pool.begin().await?;
        let outcome = body(Tx {
            conn: &mut tx,
            _caller: PhantomData,
        })
        .await;
        let result = match outcome {
            Ok(value) => match tx.commit().await {
                Ok(()) => return Ok(value),
                Err(e) => Err(E::from(e)),
            },
            Err(e) => {
                // Roll back now so the connection goes back to the pool clean.
                let _ = tx.rollback().await;
                Err(e)
            }
        };
        match result {
            Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, "transaction aborted by a conflict; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(7);
    let jitter = rand::random::<u64>() % base;
    Duration::from_millis((base + jitter).min(1000))
}

/// Locks the given builds for the rest of the transaction, in id order, and
/// returns the ids that exist (sorted). Taking the locks in one statement
/// ordered by id means two transactions can never wait for each other's
/// builds in opposite orders.
pub async fn lock_builds(
    conn: &mut PgConnection,
    ids: &[crate::ids::BuildId],
) -> Result<Vec<crate::ids::BuildId>, sqlx::Error> {
    sqlx::query_scalar("select id from Builds where id = any($1) order by id for update")
        .bind(ids)
        .fetch_all(conn)
        .await
}

/// Takes the session-level advisory lock `key` if no other session holds
/// it; held until the connection closes.
pub async fn try_advisory_lock<'c, E: sqlx::PgExecutor<'c>>(
    conn: E,
    key: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}
