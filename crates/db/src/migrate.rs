//! Schema migrations.
//!
//! Migration 1 is Hydra's schema at version 87. Later migrations are ours and
//! only add (tables, columns, indexes), so Hydra's own tools keep working on
//! the same database. Applied migrations are recorded in `SchemaMigrations`
//! with a checksum; a database that already has Hydra's schema at version 87
//! (made by Hydra's `hydra-init`) adopts migration 1 without running it.
//!
//! Everything happens in one transaction under an advisory lock, so two
//! processes starting at once cannot both migrate, and a failed migration
//! leaves the database as it was.

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::DbError;

/// Hydra's schema version this system is compatible with.
pub const HYDRA_SCHEMA_VERSION: i32 = 87;

/// Serialises concurrent migrators (an arbitrary constant).
const ADVISORY_LOCK: i64 = 0x4879_6472_614d_6967;

/// One migration: SQL run once, in order.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// The migrations of this program, in order. The first is the Hydra baseline.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "hydra_schema_v87",
        sql: include_str!("../migrations/0001_hydra_schema_v87.sql"),
    },
    Migration {
        version: 2,
        name: "web_sessions_and_api_tokens",
        sql: include_str!("../migrations/0002_web_sessions_and_api_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "index_eval_inputs_on_dependency",
        sql: include_str!("../migrations/0003_index_eval_inputs_on_dependency.sql"),
    },
    Migration {
        version: 4,
        name: "commit_status_outbox",
        sql: include_str!("../migrations/0004_commit_status_outbox.sql"),
    },
    Migration {
        version: 5,
        name: "jobset_error_mails",
        sql: include_str!("../migrations/0005_jobset_error_mails.sql"),
    },
    Migration {
        version: 6,
        name: "jobset_checkouts",
        sql: include_str!("../migrations/0006_jobset_checkouts.sql"),
    },
    Migration {
        version: 7,
        name: "pull_requests",
        sql: include_str!("../migrations/0007_pull_requests.sql"),
    },
    Migration {
        version: 8,
        name: "check_runs",
        sql: include_str!("../migrations/0008_check_runs.sql"),
    },
    Migration {
        version: 9,
        name: "oidc_logins",
        sql: include_str!("../migrations/0009_oidc_logins.sql"),
    },
    Migration {
        version: 10,
        name: "evaluation_journal",
        sql: include_str!("../migrations/0010_evaluation_journal.sql"),
    },
    Migration {
        version: 11,
        name: "list_indexes",
        sql: include_str!("../migrations/0011_list_indexes.sql"),
    },
    Migration {
        version: 12,
        name: "evaluation_costs",
        sql: include_str!("../migrations/0012_evaluation_costs.sql"),
    },
    Migration {
        version: 13,
        name: "build_etas",
        sql: include_str!("../migrations/0013_build_etas.sql"),
    },
];

/// What `migrate` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The database had Hydra's schema (made by Hydra) and was adopted.
    pub adopted_hydra_database: bool,
    /// Migrations run now, as (version, name).
    pub applied: Vec<(i32, &'static str)>,
}

/// Brings the schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<Report, DbError> {
    migrate_with(pool, MIGRATIONS).await
}

/// Brings the schema up to date with the given migrations (the first must be
/// the Hydra baseline). Separate from [`migrate`] so tests can add some.
pub async fn migrate_with(pool: &PgPool, migrations: &[Migration]) -> Result<Report, DbError> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(ADVISORY_LOCK)
        .execute(&mut *tx)
        .await?;
    let mut report = Report::default();
    let applied = match state(&mut tx).await? {
        State::Managed(applied) => applied,
        State::HydraOnly(version) if version == HYDRA_SCHEMA_VERSION => {
            create_bookkeeping(&mut tx).await?;
            let baseline = &migrations[0];
            record(&mut tx, baseline, true).await?;
            report.adopted_hydra_database = true;
            vec![(baseline.version, baseline.checksum())]
        }
        State::HydraOnly(found) => {
            return Err(DbError::UnsupportedHydraVersion {
                found,
                supported: HYDRA_SCHEMA_VERSION,
                advice: if found < HYDRA_SCHEMA_VERSION {
                    "Upgrade it with Hydra's `hydra-init` first."
                } else {
                    "It was upgraded by a newer Hydra; this program cannot use it."
                },
            });
        }
        State::Empty => {
            create_bookkeeping(&mut tx).await?;
            Vec::new()
        }
        State::Foreign(tables) => return Err(DbError::ForeignDatabase { tables }),
    };

    for (version, checksum) in &applied {
        match migrations.iter().find(|m| m.version == *version) {
            None => return Err(unknown_migration(&mut tx, *version).await),
            Some(m) if m.checksum() != *checksum => {
                return Err(DbError::ChangedMigration {
                    version: m.version,
                    name: m.name.to_string(),
                });
            }
            Some(_) => {}
        }
    }

    for migration in migrations {
        if applied.iter().any(|(v, _)| *v == migration.version) {
            continue;
        }
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| DbError::Migration {
                version: migration.version,
                name: migration.name.to_string(),
                source,
            })?;
        record(&mut tx, migration, false).await?;
        report.applied.push((migration.version, migration.name));
    }
    tx.commit().await?;
    Ok(report)
}

/// Checks that the schema is initialised and current, without changing it.
pub async fn check(pool: &PgPool) -> Result<(), DbError> {
    let mut conn = pool.acquire().await?;
    let applied = match state(&mut conn).await? {
        State::Managed(applied) => applied,
        State::Empty | State::HydraOnly(_) | State::Foreign(_) => {
            return Err(DbError::NotInitialised);
        }
    };
    for (version, _) in &applied {
        if !MIGRATIONS.iter().any(|m| m.version == *version) {
            return Err(unknown_migration(&mut conn, *version).await);
        }
    }
    let pending = MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .count();
    if pending > 0 {
        return Err(DbError::Outdated { pending });
    }
    Ok(())
}

/// The error for a migration the database has and this program does not.
async fn unknown_migration(conn: &mut PgConnection, version: i32) -> DbError {
    match sqlx::query_scalar("select name from SchemaMigrations where version = $1")
        .bind(version)
        .fetch_one(conn)
        .await
    {
        Ok(name) => DbError::UnknownMigration { version, name },
        Err(e) => e.into(),
    }
}

enum State {
    /// Our bookkeeping exists: applied (version, checksum).
    Managed(Vec<(i32, String)>),
    /// Hydra's schema without our bookkeeping, at this version.
    HydraOnly(i32),
    /// No tables at all.
    Empty,
    /// Tables, but neither Hydra's nor ours (a few of their names).
    Foreign(String),
}

async fn state(conn: &mut PgConnection) -> Result<State, DbError> {
    let has = |name: &'static str| {
        sqlx::query_scalar::<_, bool>("select to_regclass($1) is not null").bind(name)
    };
    if has("schemamigrations").fetch_one(&mut *conn).await? {
        let applied: Vec<(i32, String)> =
            sqlx::query_as("select version, checksum from SchemaMigrations order by version")
                .fetch_all(&mut *conn)
                .await?;
        return Ok(State::Managed(applied));
    }
    if has("schemaversion").fetch_one(&mut *conn).await? {
        let version: Option<i32> = sqlx::query_scalar("select max(version) from SchemaVersion")
            .fetch_one(&mut *conn)
            .await?;
        return Ok(State::HydraOnly(version.unwrap_or(0)));
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables \
         where table_schema = current_schema() order by table_name limit 6",
    )
    .fetch_all(&mut *conn)
    .await?;
    if tables.is_empty() {
        Ok(State::Empty)
    } else {
        Ok(State::Foreign(tables.join(", ")))
    }
}

async fn create_bookkeeping(conn: &mut PgConnection) -> Result<(), DbError> {
    sqlx::raw_sql(
        "create table SchemaMigrations (
            version   integer primary key not null,
            name      text not null,
            checksum  text not null,
            appliedAt integer not null,
            adopted   boolean not null default false
        )",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn record(
    conn: &mut PgConnection,
    migration: &Migration,
    adopted: bool,
) -> Result<(), DbError> {
    sqlx::query(
        "insert into SchemaMigrations (version, name, checksum, appliedAt, adopted) values ($1, $2, $3, $4, $5)",
    )
    .bind(migration.version)
    .bind(migration.name)
    .bind(migration.checksum())
    .bind(crate::now())
    .bind(adopted)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
