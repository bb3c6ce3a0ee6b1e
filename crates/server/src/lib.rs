//! The web role: Hydra's URLs and JSON API over the database the other
//! roles write, accounts and permissions, and the actions users take on
//! projects, jobsets, evaluations and builds. It talks to the evaluator and
//! the queue runner only through the database (rows and the triggers'
//! NOTIFYs); it never builds or evaluates anything itself.

#![warn(unreachable_pub)]

mod assets;
mod auth;
mod deps;
mod error;
mod extract;
mod graph;
mod ldap;
mod live;
mod logview;
mod metrics;
mod negotiate;
mod pages;
mod params;
mod passwords;
mod reproduce;
mod routes;
mod state;
mod views;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::start_session;
pub use routes::router;
pub use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot open the store the web server serves from: {0}")]
    Store(hydra_store::StoreError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("binary_cache_secret_key_file {path}: {message}")]
    Key {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Binds `address` (e.g. `127.0.0.1:3000`).
pub async fn bind(address: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Listen {
            address: address.to_string(),
            source,
        })
}

/// How long requests in flight may take to finish once stopping.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The connection cap: `max_connections`, else three quarters of the soft
/// open-file limit (at least 64).
pub fn connection_limit(configured: u32) -> usize {
    if configured > 0 {
        return configured as usize;
    }
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 4 * 3)
        .unwrap_or(usize::MAX)
        .clamp(64, 1 << 20)
}

/// Serves until `shutdown`; requests in flight are given
/// [`SHUTDOWN_GRACE`] to finish. Each connection has
/// `connection_idle_timeout` to send each request's headers (so neither a
/// slow client nor an idle kept-alive connection holds a descriptor for
/// ever), and at most `max_connections` are open at once.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let limit = connection_limit(state.config.web.max_connections);
    let idle = std::time::Duration::from_secs(state.config.web.connection_idle_timeout);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, max_connections = limit, "web server listening");
    }
    if std::env::var_os("HYDRA_LDAP_CONFIG").is_some_and(|v| !v.is_empty()) {
        tracing::warn!(
            "HYDRA_LDAP_CONFIG (Hydra's legacy YAML file) is not read: move its `credential` and \
             `store` into an <ldap><config> block of hydra.conf, with a <role_mapping> block \
             (hydra_admin = admin, …); LDAP sign-in is off until then"
        );
    }
    let app = router(state);
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(limit));
    let mut connections = tokio::task::JoinSet::new();
    let mut last_refusal: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::error!(error = %e, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if last_refusal.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = limit,
                    "too many open connections: closing new ones until some end (max_connections)"
                );
                last_refusal = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        // Reap the tasks of closed connections.
        while connections.try_join_next().is_some() {}
        let app = app.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(idle);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.shutdown().await;
    Ok(())
}
