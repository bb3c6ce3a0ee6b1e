//! Opening the database a command works on: the configured server, or the
//! managed cluster in `$HYDRA_DATA/postgres`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hydra_config::{Config, Paths};
use hydra_db::DatabaseSource;
use hydra_db::managed::{ClusterSpec, ManagedCluster, ManagedError};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

/// Whether a command must run the managed cluster itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// `hydra up`: owns the cluster and refuses if another process does.
    Own,
    /// Administration commands: use the running cluster, or run it for as
    /// long as the command takes.
    OwnOrAttach,
}

#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    /// Where the database is, for people (no password).
    pub location: String,
    cluster: Option<ManagedCluster>,
}

pub async fn open(
    paths: &Paths,
    config: &Config,
    ownership: Ownership,
    connections: u32,
) -> anyhow::Result<Database> {
    let env = |name: &str| std::env::var(name).ok();
    match hydra_db::resolve_source(config, env)? {
        DatabaseSource::Configured { options, origin } => {
            let location = describe(&options);
            tracing::debug!(%location, %origin, "using the configured database");
            // `hydra up` may start before the database server does; an
            // administration command reports an unreachable server at once.
            let patience = match ownership {
                Ownership::Own => Duration::from_secs(60),
                Ownership::OwnOrAttach => Duration::ZERO,
            };
            let pool = hydra_db::connect(*options, connections, patience)
                .await
                .with_context(|| {
                    format!("cannot connect to the database {location} (from {origin})")
                })?;
            Ok(Database {
                pool,
                location,
                cluster: None,
            })
        }
        DatabaseSource::Managed => {
            ensure_data_dir(paths)?;
            let mut spec = ClusterSpec::for_data_dir(&paths.data_dir);
            if let Some(bin) = std::env::var_os("HYDRA_POSTGRESQL_BIN").filter(|v| !v.is_empty()) {
                spec.search_path = Some(vec![PathBuf::from(bin)]);
            }
            let cluster = tokio::task::spawn_blocking(move || match ownership {
                Ownership::Own => ManagedCluster::start(&spec),
                Ownership::OwnOrAttach => ManagedCluster::start_or_attach(&spec),
            })
            .await?
            .map_err(|e| match e {
                ManagedError::AlreadyRunning { pid, dir } => anyhow::anyhow!(
                    "another hydra process (pid {pid}) is running the database in {}; \
                     only one `hydra up` may run for HYDRA_DATA={}",
                    dir.display(),
                    paths.data_dir.display()
                ),
                other => other.into(),
            })?;
            cluster.ensure_database(hydra_db::managed::DATABASE).await?;
            let options = cluster.connect_options(hydra_db::managed::DATABASE);
            let pool = hydra_db::connect(options, connections, Duration::ZERO).await?;
            Ok(Database {
                pool,
                location: cluster.url(hydra_db::managed::DATABASE),
                cluster: Some(cluster),
            })
        }
    }
}

impl Database {
    /// Whether this process runs the managed cluster.
    pub fn owns_cluster(&self) -> bool {
        self.cluster.as_ref().is_some_and(ManagedCluster::is_owner)
    }

    /// Closes the connections and stops the managed cluster if we run it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(cluster) = self.cluster {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
        }
        Ok(())
    }
}

fn ensure_data_dir(paths: &Paths) -> anyhow::Result<()> {
    let dir = &paths.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create HYDRA_DATA {} (set HYDRA_DATA to a writable directory)",
                dir.display()
            )
        })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set the permissions of {}", dir.display()))?;
    }
    Ok(())
}

/// `user@host:port/database` or `user@/socket/dir/database`, never the password.
fn describe(options: &PgConnectOptions) -> String {
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    format!(
        "{}@{}/{}",
        options.get_username(),
        host,
        options.get_database().unwrap_or(options.get_username())
    )
}
