//! What every handler shares.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hydra_config::Config;
use hydra_nix::env::NixEnv;
use hydra_nix::narinfo::SecretKey;
use hydra_store::DestStore;
use sqlx::PgPool;

use crate::ServerError;
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub struct Inner {
    pub pool: PgPool,
    pub config: Arc<Config>,
    /// `HYDRA_DATA`: build logs live under it.
    pub data_dir: hydra_config::DataDir,
    /// The store outputs are served from (`server_store_uri`, else
    /// `store_uri`): the binary cache routes and output NARs read it.
    pub store: DestStore,
    /// The machine's store: build products are read from its files (the
    /// queue runner always keeps outputs there too).
    pub local: NixEnv,
    /// Where the machine's store keeps its files, when it is a chroot store.
    pub local_root: Option<PathBuf>,
    /// Signs the narinfos served (`binary_cache_secret_key_file`).
    pub signing_key: Option<SecretKey>,
    pub metrics: Metrics,
    /// The digest of the one-time setup token, while it is offered (see
    /// [`AppState::offer_setup`]).
    pub setup_token: std::sync::OnceLock<String>,
    /// Checking and hashing passwords within a memory budget, with back-off
    /// after failures.
    pub passwords: crate::passwords::Passwords,
    /// A pooled HTTP client (the queue runner's status endpoint).
    pub http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<axum::body::Bytes>,
    >,
    /// What happens, for the open pages (`/events`).
    pub live: crate::live::Live,
}

impl AppState {
    /// The state for `config`, reading Nix programs' settings from `nix`.
    pub fn new(
        pool: PgPool,
        config: Arc<Config>,
        data_dir: impl Into<hydra_config::DataDir>,
        nix: NixEnv,
    ) -> Result<AppState, ServerError> {
        let uri = config
            .web
            .server_store_uri
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| config.queue_runner.store_uri.clone());
        let store = hydra_store::open(&uri, &nix).map_err(ServerError::Store)?;
        let passwords = crate::passwords::Passwords::new(&config.web)?;
        let signing_key = match &config.web.binary_cache_secret_key_file {
            Some(path) => Some(read_key(path)?),
            None => None,
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                pool,
                config,
                data_dir: data_dir.into(),
                store,
                local_root: nix.detect_root(),
                local: nix,
                signing_key,
                metrics: Metrics::with_password_checks(passwords.argon2_checks.clone()),
                setup_token: std::sync::OnceLock::new(),
                passwords,
                http: hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http(),
                live: crate::live::Live::default(),
            }),
        })
    }
}

impl AppState {
    /// A one-time token for `/setup?token=…`, where a browser creates the
    /// first administrator; only its digest is kept, and it is refused once
    /// an administrator exists. `None` if a token was already offered.
    pub fn offer_setup(&self) -> Option<String> {
        let token = crate::passwords::new_secret();
        self.setup_token
            .set(crate::passwords::digest(&token))
            .ok()
            .map(|()| token)
    }
}

fn read_key(path: &Path) -> Result<SecretKey, ServerError> {
    let failed = |message: String| ServerError::Key {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    SecretKey::parse(text.trim()).map_err(|e| failed(e.to_string()))
}

impl Inner {
    /// Where a path of the machine's store physically is.
    pub fn real_path(&self, store_path: &str) -> PathBuf {
        match &self.local_root {
            Some(root) => root.join(store_path.trim_start_matches('/')),
            None => PathBuf::from(store_path),
        }
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}
