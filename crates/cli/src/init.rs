//! `hydra init`: create or upgrade the schema.

use hydra_config::{Config, Paths};
use hydra_db::migrate::{self, HYDRA_SCHEMA_VERSION, Report};
use sqlx::PgPool;

use crate::database::{self, Ownership};

/// What initialising did.
#[derive(Debug)]
pub struct Initialised {
    pub report: Report,
    pub upgraded_passwords: usize,
}

/// Migrates the schema and upgrades legacy password hashes, as Hydra's
/// `hydra-init` does.
pub async fn initialise(pool: &PgPool) -> anyhow::Result<Initialised> {
    let report = migrate::migrate(pool).await?;
    let upgraded_passwords = hydra_db::users::upgrade_legacy_password_hashes(pool).await?;
    Ok(Initialised {
        report,
        upgraded_passwords,
    })
}

/// One line per thing that happened.
pub fn describe(done: &Initialised) -> Vec<String> {
    let mut lines = Vec::new();
    if done.report.adopted_hydra_database {
        lines.push(format!(
            "adopted the existing Hydra database (schema version {HYDRA_SCHEMA_VERSION})"
        ));
    }
    for (version, name) in &done.report.applied {
        lines.push(format!("applied migration {version} ({name})"));
    }
    if done.upgraded_passwords > 0 {
        lines.push(format!(
            "rehashed {} legacy SHA-1 password hash(es) with Argon2",
            done.upgraded_passwords
        ));
    }
    if lines.is_empty() {
        lines.push("the database schema is up to date".into());
    }
    lines
}

pub async fn run(paths: &Paths, config: &Config) -> anyhow::Result<()> {
    let db = database::open(paths, config, Ownership::OwnOrAttach, 2).await?;
    let result = initialise(&db.pool).await;
    let location = db.location.clone();
    db.close().await?;
    let done = result?;
    for line in describe(&done) {
        tracing::info!(database = %location, "{line}");
    }
    Ok(())
}
