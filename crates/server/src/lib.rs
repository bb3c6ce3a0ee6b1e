//! The web role: Hydra's URLs and JSON API over the database the other
//! roles write, accounts and permissions, and the actions users take on
//! projects, jobsets, evaluations and builds. It talks to the evaluator and
//! the queue runner only through the database (rows and the triggers'
//! NOTIFYs); it never builds or evaluates anything itself.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod negotiate;
pub mod pages;
pub mod params;
pub mod routes;
pub mod state;
pub mod views;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use routes::router;
pub use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("the web server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot open the store the web server serves from: {0}")]
    Store(hydra_store::StoreError),
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

/// Serves until `shutdown`; requests in flight are finished first.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "web server listening");
    }
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(ServerError::Serve)
}
