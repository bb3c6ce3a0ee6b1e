//! The database: Hydra's PostgreSQL schema and everything that talks to it.
//!
//! This crate owns the migrations (Hydra's schema version 87 as the baseline,
//! then additive migrations of ours), the row types and queries, the LISTEN
//! helper, the transaction helper with its retry and lock-ordering rules, user
//! accounts and password hashes, and the managed PostgreSQL cluster that runs
//! when no database is configured. It knows nothing about evaluating or
//! building; the roles put their own queries here as they need them.

pub mod build_reports;
pub mod builds;
pub mod commit_statuses;
pub mod declarative;
pub mod dsn;
pub mod etas;
pub mod evals;
pub mod evaluation_costs;
pub mod evaluation_journal;
pub mod failed_paths;
pub mod gc_roots;
pub mod ids;
pub mod input_cache;
pub mod jobsets;
pub mod keyset;
pub mod listen;
pub mod managed;
pub mod migrate;
pub mod names;
pub mod news;
pub mod notify;
pub mod password;
pub mod products;
pub mod projects;
pub mod pull_requests;
pub mod rows;
pub mod run_commands;
pub mod runner_status;
pub mod sessions;
pub mod status;
pub mod steps;
pub mod superseded;
pub mod task_retries;
pub mod tx;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

pub use listen::{Listener, Wakeup};
pub use tx::{Transient, Tx, lock_builds, transaction};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(
        "the database has Hydra's schema version {found}; this program works with version {supported}. \
         {advice}"
    )]
    UnsupportedHydraVersion {
        found: i32,
        supported: i32,
        advice: &'static str,
    },
    #[error(
        "the database is not empty but holds no Hydra schema (it has tables {tables}); refusing to touch it"
    )]
    ForeignDatabase { tables: String },
    #[error(
        "the database was migrated by a newer version of this program (unknown migration {version} `{name}`); \
         upgrade this program"
    )]
    UnknownMigration { version: i32, name: String },
    #[error("migration {version} `{name}` in the database differs from the one in this program")]
    ChangedMigration { version: i32, name: String },
    #[error("migration {version} `{name}` failed: {source}")]
    Migration {
        version: i32,
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database schema is not initialised; run `hydra init`")]
    NotInitialised,
    #[error("the database schema is out of date ({pending} migrations pending); run `hydra init`")]
    Outdated { pending: usize },
    #[error("invalid database setting {what}: {message}")]
    Setting { what: String, message: String },
    #[error("{0}")]
    Password(#[from] password::PasswordError),
    #[error("the connection pool was closed")]
    Closed,
}

/// Where the database comes from.
#[derive(Clone, Debug)]
pub enum DatabaseSource {
    /// A server given by the operator; `origin` says which setting named it.
    Configured {
        options: Box<PgConnectOptions>,
        origin: &'static str,
    },
    /// The private cluster in `$HYDRA_DATA/postgres`.
    Managed,
}

/// Chooses the database: `HYDRA_DATABASE_URL`, then `HYDRA_DBI`, then
/// `database_url` from `hydra.conf`, else the managed cluster. `env` looks up
/// environment variables (empty values count as unset).
pub fn resolve_source(
    config: &hydra_config::Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DatabaseSource, DbError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(url) = env("HYDRA_DATABASE_URL") {
        return Ok(DatabaseSource::Configured {
            options: Box::new(parse_url(&url, "HYDRA_DATABASE_URL")?),
            origin: "HYDRA_DATABASE_URL",
        });
    }
    if let Some(dbi) = env("HYDRA_DBI") {
        return Ok(DatabaseSource::Configured {
            options: Box::new(dsn::parse_dbi(&dbi)?),
            origin: "HYDRA_DBI",
        });
    }
    if let Some(url) = &config.database_url {
        return Ok(DatabaseSource::Configured {
            options: Box::new(parse_url(url.expose(), "database_url")?),
            origin: "database_url in hydra.conf",
        });
    }
    Ok(DatabaseSource::Managed)
}

/// Parses a `postgres://` URL the way libpq does: no host means the local
/// Unix socket.
pub fn parse_url(url: &str, what: &str) -> Result<PgConnectOptions, DbError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(DbError::Setting {
            what: what.to_string(),
            message: "expected a URL starting with postgres:// or postgresql://".into(),
        });
    }
    let normalised = move_userinfo_of_hostless_url(url);
    PgConnectOptions::from_str(&normalised).map_err(|e| DbError::Setting {
        what: what.to_string(),
        // sqlx's message may quote the URL, password included.
        message: format!(
            "not a valid PostgreSQL URL ({})",
            redact(&redact(&e.to_string(), url), &normalised)
        ),
    })
}

/// libpq accepts `postgres://user:pw@/db?host=/socket` (a user but no host);
/// URL parsers do not. Such a URL is rewritten to carry the user, password
/// and port as query parameters: `postgres:///db?host=/socket&user=user`.
fn move_userinfo_of_hostless_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let (host, port) = match hostport.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    };
    if !host.is_empty() {
        return url.to_string();
    }
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut params: Vec<String> = query
        .into_iter()
        .filter(|q| !q.is_empty())
        .map(String::from)
        .collect();
    if !user.is_empty() {
        params.push(format!("user={user}"));
    }
    if let Some(p) = password {
        params.push(format!("password={p}"));
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        params.push(format!("port={p}"));
    }
    let path = if path.is_empty() { "/" } else { path };
    if params.is_empty() {
        format!("{scheme}://{path}")
    } else {
        format!("{scheme}://{path}?{}", params.join("&"))
    }
}

fn redact(message: &str, url: &str) -> String {
    message.replace(url, "<url>")
}

/// Opens a connection pool. While the server cannot be reached at all (it
/// may still be starting), tries again for up to `patience`; any other
/// failure, such as a refused login, is returned at once with its cause.
pub async fn connect(
    options: PgConnectOptions,
    max_connections: u32,
    patience: Duration,
) -> Result<PgPool, DbError> {
    let deadline = std::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(100);
    loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => {
                let _ = conn.close().await;
                break;
            }
            Err(sqlx::Error::Io(e)) if std::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "the database cannot be reached yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Unix seconds `secs` as a UTC date and time: year, month, day, hour,
/// minute, second (Howard Hinnant's days-to-civil algorithm, proleptic
/// Gregorian, so before 1970 too).
pub fn utc(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The current time as Unix seconds, the way every timestamp column stores it.
pub fn now() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_are_utc_dates_across_leap_days_and_before_1970() {
        assert_eq!(utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc(1_369_353_600), (2013, 5, 24, 0, 0, 0));
        assert_eq!(utc(951_782_400 + 3661), (2000, 2, 29, 1, 1, 1));
        assert_eq!(utc(1_796_342_400), (2026, 12, 4, 0, 0, 0));
        assert_eq!(utc(-1), (1969, 12, 31, 23, 59, 59));
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_database_url_wins_over_dbi_and_config() {
        let (config, _) = hydra_config::Config::load_str(
            std::path::Path::new("/x/hydra.conf"),
            "database_url = postgres://c/c\n",
        )
        .unwrap();
        let source = resolve_source(
            &config,
            env_of(&[
                ("HYDRA_DATABASE_URL", "postgres://u@urlhost/urldb"),
                ("HYDRA_DBI", "dbi:Pg:dbname=dbi"),
            ]),
        )
        .unwrap();
        match source {
            DatabaseSource::Configured { options, origin } => {
                assert_eq!(origin, "HYDRA_DATABASE_URL");
                assert_eq!(options.get_host(), "urlhost");
                assert_eq!(options.get_database(), Some("urldb"));
            }
            DatabaseSource::Managed => panic!("expected a configured database"),
        }
        let source = resolve_source(
            &config,
            env_of(&[("HYDRA_DBI", "dbi:Pg:dbname=dbi;host=h")]),
        )
        .unwrap();
        assert!(matches!(
            source,
            DatabaseSource::Configured {
                origin: "HYDRA_DBI",
                ..
            }
        ));
        let source = resolve_source(&config, env_of(&[("HYDRA_DATABASE_URL", "  ")])).unwrap();
        assert!(matches!(
            source,
            DatabaseSource::Configured {
                origin: "database_url in hydra.conf",
                ..
            }
        ));
        let source = resolve_source(&hydra_config::Config::default(), env_of(&[])).unwrap();
        assert!(matches!(source, DatabaseSource::Managed));
    }

    #[test]
    fn libpq_urls_without_a_host_are_accepted() {
        let o = parse_url("postgres://hydra@/hydra?host=/run/pg%20x", "x").unwrap();
        assert_eq!(o.get_username(), "hydra");
        assert_eq!(o.get_database(), Some("hydra"));
        assert_eq!(
            o.get_socket().map(|p| p.to_string_lossy().into_owned()),
            Some("/run/pg x".into())
        );
        let o = parse_url("postgresql://u:p%40ss@:5433/db", "x").unwrap();
        assert_eq!((o.get_username(), o.get_port()), ("u", 5433));
        let o = parse_url("postgres:///hydra?host=/s&user=me", "x").unwrap();
        assert_eq!(o.get_username(), "me");
        let o = parse_url("postgres://u@db.example.org:6543/d", "x").unwrap();
        assert_eq!((o.get_host(), o.get_port()), ("db.example.org", 6543));
        assert_eq!(
            move_userinfo_of_hostless_url("postgres://u@/"),
            "postgres:///?user=u"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        let err = parse_url("mysql://u:secretpw@h/db", "HYDRA_DATABASE_URL")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HYDRA_DATABASE_URL"), "{err}");
        assert!(!err.contains("secretpw"), "{err}");
        let err = parse_url("postgres://u:secretpw@h:notaport/db", "x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secretpw"), "{err}");
    }
}
