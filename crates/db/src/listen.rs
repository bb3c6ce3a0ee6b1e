//! Waiting for NOTIFY.
//!
//! Notifications are not durable: one sent while the listening connection is
//! down is lost. [`Listener`] therefore never hides a lost connection. It
//! reconnects (with back-off, for as long as it takes) and then reports
//! [`Wakeup::Rescan`], telling the caller to look at the database afresh
//! instead of relying on notifications it may have missed.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::DbError;

/// What woke the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// A notification on one of the channels.
    Notification { channel: String, payload: String },
    /// The connection was lost and is back: anything may have happened in
    /// between, so re-read the state from the database.
    Rescan,
}

/// LISTENs on a set of channels on a connection of its own.
#[derive(Debug)]
pub struct Listener {
    pool: PgPool,
    channels: Vec<String>,
    inner: Option<PgListener>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Listener {
    /// Connects and LISTENs on `channels`. Notifications sent after this
    /// returns are delivered.
    pub async fn connect(pool: &PgPool, channels: &[&str]) -> Result<Listener, DbError> {
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let inner = open(pool, &channels).await?;
        Ok(Listener {
            pool: pool.clone(),
            channels,
            inner: Some(inner),
        })
    }

    /// The next notification, or [`Wakeup::Rescan`] after a reconnection.
    /// Only fails when the pool has been closed (the process is shutting down).
    pub async fn recv(&mut self) -> Result<Wakeup, DbError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let Some(inner) = self.inner.as_mut() else {
                match open(&self.pool, &self.channels).await {
                    Ok(inner) => {
                        tracing::info!("listening for notifications again");
                        self.inner = Some(inner);
                        return Ok(Wakeup::Rescan);
                    }
                    Err(DbError::Sql(sqlx::Error::PoolClosed)) => return Err(DbError::Closed),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot listen for notifications");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            };
            match inner.try_recv().await {
                Ok(Some(n)) => {
                    return Ok(Wakeup::Notification {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                    });
                }
                Ok(None) => {
                    tracing::warn!("lost the notification connection");
                    self.inner = None;
                }
                Err(sqlx::Error::PoolClosed) => {
                    // Give the connection back so that closing the pool,
                    // which waits for every connection, can finish.
                    self.inner = None;
                    return Err(DbError::Closed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification connection failed");
                    self.inner = None;
                }
            }
        }
    }
}

async fn open(pool: &PgPool, channels: &[String]) -> Result<PgListener, DbError> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnection is ours to do, so that it is always reported.
    listener.eager_reconnect(false);
    listener
        .listen_all(channels.iter().map(String::as_str))
        .await?;
    Ok(listener)
}
