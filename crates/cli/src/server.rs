//! `hydra server`: the web role alone, until stopped.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use hydra_config::{Config, Paths};
use hydra_nix::env::NixEnv;
use hydra_nix::narinfo::SecretKey;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::database::{self, Ownership};

/// Where the web server listens.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address of the web server
    #[arg(
        long,
        env = "HYDRA_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub listen: String,
}

pub fn state(
    paths: &Paths,
    config: &Config,
    pool: PgPool,
) -> Result<hydra_server::AppState, hydra_server::ServerError> {
    hydra_server::AppState::new(
        pool,
        Arc::new(config.clone()),
        paths.data_dir.clone(),
        NixEnv::default(),
    )
}

/// Where the key generated for an unconfigured binary cache lives.
pub fn generated_key_file(paths: &Paths) -> PathBuf {
    paths.data_dir.binary_cache_key()
}

/// The binary cache is signed out of the box: without
/// `binary_cache_secret_key_file`, a key pair is made once under
/// `$HYDRA_DATA/keys` (`binary-cache.secret`, readable by its owner only,
/// and `binary-cache.public`) and used. A configured key always wins.
pub fn with_signing_key(paths: &Paths, config: &Config) -> anyhow::Result<Config> {
    if config.web.binary_cache_secret_key_file.is_some() {
        return Ok(config.clone());
    }
    let secret = generated_key_file(paths);
    if !secret.exists() {
        let dir = secret.parent().unwrap_or(&paths.data_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key = SecretKey::generate(&format!("{}-1", host_name()))
            .context("cannot generate a signing key")?;
        write_private(&secret, &key.to_text())?;
        let public = secret.with_extension("public");
        std::fs::write(&public, format!("{}\n", key.public_key().to_text()))
            .with_context(|| format!("cannot write {}", public.display()))?;
        tracing::info!(key = %secret.display(), public_key = %key.public_key().to_text(),
            "generated a key to sign the binary cache (set binary_cache_secret_key_file to use another)");
    }
    let mut config = config.clone();
    config.web.binary_cache_secret_key_file = Some(secret);
    Ok(config)
}

/// Writes `text` to `path` readable by its owner only, all or nothing.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The machine's name, for key names (`<host>-1`, as Nix's documentation
/// suggests).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        })
        .unwrap_or_else(|| "hydra".into())
}

/// Offers the first-run setup link when no account is an administrator:
/// returns the URL to print.
pub async fn setup_link(
    state: &hydra_server::AppState,
    pool: &PgPool,
    base: &str,
) -> anyhow::Result<Option<String>> {
    let mut conn = pool.acquire().await?;
    if hydra_db::users::has_admin(&mut conn).await? {
        return Ok(None);
    }
    Ok(state
        .offer_setup()
        .map(|token| format!("{base}setup?token={token}")))
}

/// The URL a browser on this machine uses for a listening address
/// (`0.0.0.0` and `::` mean every address: the loopback one is shown).
pub fn url_of(address: std::net::SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{ip}:{}/", address.port())
}

/// Binds `address` for the listener configured by `option`, or an error
/// that says which option to change.
pub async fn bind(address: &str, option: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        let advice = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("another program is listening there; choose a free address with {option}")
        } else {
            format!("check {option}")
        };
        anyhow::anyhow!("cannot listen on {address}: {e}; {advice}")
    })
}

/// Connections the web server needs.
pub fn connections() -> u32 {
    16
}

/// The option that sets the web server's address.
pub const LISTEN_OPTION: &str = "--listen (or HYDRA_LISTEN)";

pub async fn run(paths: &Paths, config: &Config, args: ListenArgs) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, connections()).await?;
    let prepared = async {
        let config = with_signing_key(paths, config)?;
        let state = state(paths, &config, db.pool.clone())?;
        let listener = bind(&args.listen, LISTEN_OPTION).await?;
        if let Some(link) =
            setup_link(&state, &db.pool, &url_of(listener.local_addr()?)).await?
        {
            tracing::warn!(
                "no administrator yet: open {link} to create one (or run `hydra create-user NAME --role admin --password-prompt`)"
            );
        }
        anyhow::Ok((state, listener))
    }
    .await;
    let (state, listener) = match prepared {
        Ok(x) => x,
        Err(e) => {
            db.close().await?;
            return Err(e);
        }
    };
    let shutdown = crate::stop_on_signals("the web server")?;
    let result = hydra_server::run(state, listener, shutdown).await;
    db.close().await?;
    Ok(result?)
}
