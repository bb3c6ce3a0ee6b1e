//! `hydra create-user`: Hydra's `hydra-create-user` with the same flags and
//! rules. A missing user is created (type `hydra`, no email, no password);
//! an existing one is updated with what the flags say.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use hydra_config::{Config, Paths};
use hydra_db::password;
use hydra_db::rows::{self, User};
use hydra_db::users::{self, ROLES};
use hydra_db::{DbError, Transient, Tx, transaction};

use crate::database::{self, Ownership};

#[derive(Debug, clap::Args)]
pub struct CreateUser {
    /// Name of the user to create or update
    name: String,
    /// Rename this existing user to NAME (then apply the other options)
    #[arg(long, value_name = "OLD")]
    rename_from: Option<String>,
    /// Account type: hydra, google or github
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Full name (an empty string clears it)
    #[arg(long, value_name = "NAME")]
    full_name: Option<String>,
    /// Email address
    #[arg(long, value_name = "ADDRESS")]
    email_address: Option<String>,
    /// Read the password from standard input, twice
    #[arg(long)]
    password_prompt: bool,
    /// Store this hash: an Argon2 PHC string, or a SHA-1 hex digest (wrapped in Argon2)
    #[arg(long, value_name = "HASH")]
    password_hash: Option<String>,
    /// Set this password (deprecated: it is visible to other users of the machine; use --password-prompt)
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// Remove all roles before adding those given with --role
    #[arg(long)]
    wipe_roles: bool,
    /// Add a role (admin, bump-to-front, cancel-build, create-projects, eval-jobset, restart-jobs); repeatable
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
}

#[derive(Debug)]
enum Outcome {
    Created,
    Updated,
    Renamed(String),
}

pub async fn run(paths: &Paths, config: &Config, args: CreateUser) -> anyhow::Result<()> {
    validate(&args)?;
    let new_password = password_to_store(&args, config).await?;

    let db = database::open(paths, config, Ownership::OwnOrAttach, 2).await?;
    let result = match hydra_db::migrate::check(&db.pool).await {
        Ok(()) => apply(&db.pool, &args, new_password.as_deref()).await,
        Err(e) => Err(e.into()),
    };
    db.close().await?;
    match result? {
        Outcome::Created => tracing::info!("created user `{}`", args.name),
        Outcome::Updated => tracing::info!("updated user `{}`", args.name),
        Outcome::Renamed(from) => tracing::info!("renamed user `{from}` to `{}`", args.name),
    }
    Ok(())
}

fn validate(args: &CreateUser) -> anyhow::Result<()> {
    if args.name.trim().is_empty() {
        bail!("the user name is empty");
    }
    let password_options = usize::from(args.password_prompt)
        + usize::from(args.password_hash.is_some())
        + usize::from(args.password.is_some());
    if password_options > 1 {
        bail!("only one of --password, --password-hash and --password-prompt may be given");
    }
    if let Some(kind) = &args.kind
        && !["hydra", "google", "github"].contains(&kind.as_str())
    {
        bail!("--type must be `hydra`, `google` or `github`, not `{kind}`");
    }
    for role in &args.roles {
        if !ROLES.contains(&role.as_str()) {
            bail!("unknown role `{role}`; the roles are {}", ROLES.join(", "));
        }
    }
    Ok(())
}

/// The stored form of the password the options give, if any. Hashing is
/// slow, so it happens before the transaction.
async fn password_to_store(args: &CreateUser, config: &Config) -> anyhow::Result<Option<String>> {
    let plain = if args.password_prompt {
        Some(prompt_twice()?)
    } else if let Some(p) = &args.password {
        tracing::warn!(
            "passing a password on the command line is deprecated: other users of this machine can see it; \
             use --password-prompt"
        );
        Some(p.clone())
    } else {
        None
    };
    if let Some(plain) = plain {
        let cost = password::Cost::from(&config.web);
        let hash =
            tokio::task::spawn_blocking(move || password::hash_with(&plain, &cost)).await??;
        return Ok(Some(hash));
    }
    if let Some(supplied) = args.password_hash.clone() {
        let hash =
            tokio::task::spawn_blocking(move || password::from_supplied_hash(&supplied)).await??;
        return Ok(Some(hash));
    }
    Ok(None)
}

fn prompt_twice() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let _echo = EchoOff::new(&stdin);
    let mut lines = stdin.lock();
    let mut read = |prompt: &str| -> anyhow::Result<String> {
        // The prompt goes to the terminal, not the log.
        let mut err = std::io::stderr();
        let _ = err.write_all(prompt.as_bytes());
        let _ = err.flush();
        let mut line = String::new();
        let n = lines
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        if n == 0 {
            bail!("standard input ended before the password was given twice");
        }
        if std::io::stdin().is_terminal() {
            let _ = std::io::stderr().write_all(b"\n");
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let first = read("Password: ")?;
    let second = read("Password Confirmation: ")?;
    if first != second {
        bail!("the passwords don't match");
    }
    if first.is_empty() {
        bail!("the password is empty");
    }
    Ok(first)
}

/// Turns terminal echo off while it lives (when standard input is a terminal).
struct EchoOff {
    saved: Option<nix::sys::termios::Termios>,
}

impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> EchoOff {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        if !stdin.is_terminal() {
            return EchoOff { saved: None };
        }
        let Ok(saved) = tcgetattr(stdin) else {
            return EchoOff { saved: None };
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(stdin, SetArg::TCSANOW, &quiet);
        EchoOff { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Why applying the options failed. A refusal rolls the transaction back
/// like any error, but is not retried.
#[derive(Debug)]
enum Failure {
    Refused(String),
    Db(DbError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Db(e.into())
    }
}

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        matches!(self, Failure::Db(e) if e.is_transient())
    }
}

fn refuse<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Refused(message.into()))
}

async fn apply(
    pool: &sqlx::PgPool,
    args: &CreateUser,
    new_password: Option<&str>,
) -> anyhow::Result<Outcome> {
    let outcome = transaction(pool, |mut tx: Tx| {
        Box::pin(async move {
            let lookup = args.rename_from.as_deref().unwrap_or(&args.name);
            let existing = rows::user(&mut tx, lookup).await?;
            let (mut user, outcome) = match (&args.rename_from, existing) {
                (Some(from), None) => return refuse(format!("user `{from}` does not exist")),
                (Some(from), Some(_)) if from != &args.name => {
                    if rows::user(&mut tx, &args.name).await?.is_some() {
                        return refuse(format!(
                            "cannot rename `{from}`: user `{}` already exists",
                            args.name
                        ));
                    }
                    users::rename(&mut tx, from, &args.name).await?;
                    let Some(user) = rows::user(&mut tx, &args.name).await? else {
                        return refuse(format!("user `{from}` disappeared while renaming"));
                    };
                    (user, Outcome::Renamed(from.clone()))
                }
                (_, Some(user)) => (user, Outcome::Updated),
                (None, None) => {
                    let user = User {
                        name: args.name.clone(),
                        full_name: None,
                        email_address: String::new(),
                        password: password::NO_PASSWORD.into(),
                        email_on_error: 0,
                        kind: "hydra".into(),
                        public_dashboard: false,
                    };
                    users::insert(&mut tx, &user).await?;
                    (user, Outcome::Created)
                }
            };

            if let Some(kind) = &args.kind {
                user.kind = kind.clone();
            }
            if let Some(full_name) = &args.full_name {
                user.full_name = (!full_name.is_empty()).then(|| full_name.clone());
            }
            if user.kind == "google" || user.kind == "github" {
                if !user.name.contains('@') {
                    return refuse("Google and GitHub user names must be email addresses");
                }
                if args.email_address.is_some() {
                    return refuse(
                        "Google and GitHub accounts do not have an explicitly set email address",
                    );
                }
                if new_password.is_some() {
                    return refuse("Google and GitHub accounts do not have a password");
                }
                user.email_address = user.name.clone();
                user.password = password::NO_PASSWORD.into();
            } else {
                if let Some(email) = &args.email_address {
                    user.email_address = email.clone();
                }
                if let Some(hash) = new_password {
                    user.password = hash.to_string();
                }
            }
            users::update(&mut tx, &user).await?;

            if args.wipe_roles {
                users::wipe_roles(&mut tx, &user.name).await?;
            }
            for role in &args.roles {
                users::add_role(&mut tx, &user.name, role).await?;
            }
            Ok(outcome)
        })
    })
    .await;
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Refused(message)) => bail!(message),
        Err(Failure::Db(e)) => Err(e.into()),
    }
}
