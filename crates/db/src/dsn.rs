//! Hydra's legacy `HYDRA_DBI` setting: a Perl DBI data source such as
//! `dbi:Pg:dbname=hydra;host=db.example.org;user=hydra;`. The part after
//! `dbi:Pg:` is a `;`-separated list of libpq keywords.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use crate::DbError;

fn err(message: impl Into<String>) -> DbError {
    DbError::Setting {
        what: "HYDRA_DBI".into(),
        message: message.into(),
    }
}

/// The libpq keywords a data source may use (and sqlx's URL parser accepts
/// as query parameters).
const KEYWORDS: &[&str] = &[
    "dbname",
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
];

/// Parses a DBI data source into connection options. Unset fields keep
/// libpq's defaults (local socket, current user, `~/.pgpass`).
pub fn parse_dbi(dsn: &str) -> Result<PgConnectOptions, DbError> {
    let rest = dsn
        .strip_prefix("dbi:")
        .or_else(|| dsn.strip_prefix("DBI:"))
        .ok_or_else(|| err("expected a DBI data source starting with `dbi:Pg:`"))?;
    let (driver, params) = rest
        .split_once(':')
        .ok_or_else(|| err("expected a DBI data source starting with `dbi:Pg:`"))?;
    if !driver.eq_ignore_ascii_case("pg") {
        return Err(err(format!(
            "driver `{driver}` is not supported; only `dbi:Pg:` is"
        )));
    }
    let mut url = String::from("postgres://");
    let mut first = true;
    for (key, value) in split_params(params)? {
        let key = match key.as_str() {
            "database" | "db" => "dbname",
            "username" => "user",
            k if KEYWORDS.contains(&k) => k,
            other => return Err(err(format!("unknown parameter `{other}`"))),
        };
        if key == "port" && value.parse::<u16>().is_err() {
            return Err(err(format!("port `{value}` is not a number")));
        }
        url.push(if first { '?' } else { '&' });
        first = false;
        url.push_str(key);
        url.push('=');
        url.push_str(&percent_encode(&value));
    }
    PgConnectOptions::from_str(&url).map_err(|e| {
        let message = e.to_string();
        // Never repeat a password back.
        let message = if message.contains(&url) {
            "invalid value".to_string()
        } else {
            message
        };
        err(message)
    })
}

/// What stays as it is in a URL component: letters, digits and `-_.~/`.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn percent_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, URL_COMPONENT).to_string()
}

/// `key=value` pairs separated by `;`; values may be single-quoted with `\'`
/// and `\\` escapes, as libpq allows.
fn split_params(params: &str) -> Result<Vec<(String, String)>, DbError> {
    let mut out = Vec::new();
    let mut chars = params.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ';' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim().to_ascii_lowercase();
        if chars.next() != Some('=') || key.is_empty() {
            return Err(err(format!("expected `key=value`, found `{key}`")));
        }
        while chars.peek().is_some_and(|c| *c == ' ') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(err(format!("unterminated quoted value of `{key}`"))),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(err(format!("unterminated quoted value of `{key}`"))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ';' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hydra_style_data_sources() {
        let o = parse_dbi("dbi:Pg:dbname=hydra;host=db.example.org;user=hydra;").unwrap();
        assert_eq!(o.get_database(), Some("hydra"));
        assert_eq!(o.get_host(), "db.example.org");
        assert_eq!(o.get_username(), "hydra");
        let o = parse_dbi("dbi:Pg:dbname=h;host=/run/postgresql;port=5433").unwrap();
        assert_eq!(
            o.get_socket().map(|p| p.to_string_lossy().into_owned()),
            Some("/run/postgresql".into())
        );
        assert_eq!(o.get_port(), 5433);
        let o =
            parse_dbi("dbi:Pg:dbname='my db&x';password='it\\'s';options=-c statement_timeout=5")
                .unwrap();
        assert_eq!(o.get_database(), Some("my db&x"));
        assert_eq!(o.get_options(), Some("-c statement_timeout=5"));
    }

    #[test]
    fn bad_data_sources_say_what_is_wrong() {
        let e = |s: &str| parse_dbi(s).unwrap_err().to_string();
        assert!(e("postgres://x").contains("dbi:Pg:"));
        assert!(e("dbi:mysql:dbname=x").contains("driver `mysql`"));
        assert!(e("dbi:Pg:dbname=x;frobnicate=1").contains("unknown parameter `frobnicate`"));
        assert!(e("dbi:Pg:port=abc").contains("port `abc`"));
        assert!(e("dbi:Pg:dbname").contains("expected `key=value`"));
        assert!(e("dbi:Pg:dbname='x").contains("unterminated"));
        assert!(
            e("dbi:Pg:sslmode=sometimes").contains("sometimes")
                || e("dbi:Pg:sslmode=sometimes").contains("ssl")
        );
        let secret = e("dbi:Pg:password=hunter2;sslmode=sometimes");
        assert!(!secret.contains("hunter2"), "{secret}");
    }
}
