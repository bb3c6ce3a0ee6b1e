//! User accounts and their roles.

use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool};

use crate::DbError;
use crate::password;
use crate::rows::User;

/// The roles Hydra knows.
pub const ROLES: &[&str] = &[
    "admin",
    "bump-to-front",
    "cancel-build",
    "create-projects",
    "eval-jobset",
    "restart-jobs",
];

/// Account types.
pub const TYPES: &[&str] = &["hydra", "google", "github", "LDAP", "persona", "oidc"];

/// Binds the fields of `user` as $1 … $7 in column order.
fn bind_user<'q>(
    query: Query<'q, Postgres, PgArguments>,
    user: &'q User,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(&user.name)
        .bind(&user.full_name)
        .bind(&user.email_address)
        .bind(&user.password)
        .bind(user.email_on_error)
        .bind(&user.kind)
        .bind(user.public_dashboard)
}

pub async fn insert(conn: &mut PgConnection, user: &User) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "insert into Users (userName, fullName, emailAddress, password, emailOnError, type, publicDashboard) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    );
    bind_user(query, user).execute(conn).await?;
    Ok(())
}

/// Writes every field of `user` to the row named `user.name`.
pub async fn update(conn: &mut PgConnection, user: &User) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "update Users set fullName = $2, emailAddress = $3, password = $4, emailOnError = $5, type = $6, \
         publicDashboard = $7 where userName = $1",
    );
    bind_user(query, user).execute(conn).await?;
    Ok(())
}

/// Renames a user; roles, memberships and stars follow (`on update cascade`).
pub async fn rename(conn: &mut PgConnection, from: &str, to: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update Users set userName = $2 where userName = $1")
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn roles(conn: &mut PgConnection, name: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select role from UserRoles where userName = $1 order by role")
        .bind(name)
        .fetch_all(conn)
        .await
}

pub async fn wipe_roles(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from UserRoles where userName = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn add_role(conn: &mut PgConnection, name: &str, role: &str) -> Result<(), sqlx::Error> {
    sqlx::query("insert into UserRoles (userName, role) values ($1, $2) on conflict do nothing")
        .bind(name)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether some account has the `admin` role.
pub async fn has_admin(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from UserRoles where role = 'admin')")
        .fetch_one(conn)
        .await
}

/// Whether an account other than `name` has the `admin` role.
pub async fn has_other_admin(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from UserRoles where role = 'admin' and userName <> $1)",
    )
    .bind(name)
    .fetch_one(conn)
    .await
}

/// Creates `user` as an administrator if no account has the `admin` role
/// yet (first-run setup); `false` when one does. Concurrent calls are
/// serialised, so only one first administrator is ever made.
pub async fn create_first_admin(pool: &PgPool, user: &User) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("lock table UserRoles in share row exclusive mode")
        .execute(&mut *tx)
        .await?;
    if has_admin(&mut tx).await? {
        return Ok(false);
    }
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from Users where userName = $1)")
            .bind(&user.name)
            .fetch_one(&mut *tx)
            .await?;
    if exists {
        update(&mut tx, user).await?;
    } else {
        insert(&mut tx, user).await?;
    }
    add_role(&mut tx, &user.name, "admin").await?;
    tx.commit().await?;
    Ok(true)
}

/// Replaces legacy unsalted SHA-1 password hashes by Argon2 over the SHA-1
/// hex digest, which [`password::verify`] accepts and upgrades at the next
/// login (what Hydra's `hydra-init` does). Returns how many were upgraded.
pub async fn upgrade_legacy_password_hashes(pool: &PgPool) -> Result<usize, DbError> {
    let legacy: Vec<(String, String)> =
        sqlx::query_as("select userName, password from Users where password ~ '^[0-9a-f]{40}$'")
            .fetch_all(pool)
            .await?;
    let mut upgraded = 0;
    for (name, sha1) in legacy {
        let wrapped = tokio::task::spawn_blocking(move || password::from_supplied_hash(&sha1))
            .await
            .map_err(|e| password::PasswordError::Hashing(e.to_string()))??;
        // Only replace the hash we read, in case the user changed it meanwhile.
        let done = sqlx::query(
            "update Users set password = $2 where userName = $1 and password ~ '^[0-9a-f]{40}$'",
        )
        .bind(&name)
        .bind(&wrapped)
        .execute(pool)
        .await?;
        upgraded += done.rows_affected() as usize;
    }
    Ok(upgraded)
}

/// Stars job `project:jobset:job` for `user`, or takes the star away.
pub async fn set_starred(
    pool: &PgPool,
    user: &str,
    (project, jobset, job): (&str, &str, &str),
    starred: bool,
) -> Result<(), sqlx::Error> {
    let sql = if starred {
        "insert into StarredJobs (userName, project, jobset, job) values ($1, $2, $3, $4) on conflict do nothing"
    } else {
        "delete from StarredJobs where userName = $1 and project = $2 and jobset = $3 and job = $4"
    };
    sqlx::query(sql)
        .bind(user)
        .bind(project)
        .bind(jobset)
        .bind(job)
        .execute(pool)
        .await?;
    Ok(())
}

/// A user with their roles.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    #[sqlx(rename = "username")]
    pub name: String,
    #[sqlx(rename = "fullname")]
    pub full_name: Option<String>,
    #[sqlx(rename = "emailaddress")]
    pub email_address: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub roles: Vec<String>,
}

/// User `name` with their roles, sorted.
pub async fn account(pool: &PgPool, name: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "select u.userName, u.fullName, u.emailAddress, u.type, \
         coalesce(array(select r.role from UserRoles r where r.userName = u.userName order by r.role), '{}') as roles \
         from Users u where u.userName = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// User `name`'s stored password hash.
pub async fn password_hash(pool: &PgPool, name: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select password from Users where userName = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Replaces user `name`'s password hash.
pub async fn set_password_hash(pool: &PgPool, name: &str, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update Users set password = $2 where userName = $1")
        .bind(name)
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes user `name`; false if there was none.
pub async fn delete(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from Users where userName = $1")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Why an email sign-in (GitHub, Google) is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmailLoginRefused {
    #[error(
        "‘{0}’ is not an email address this server accepts (letters, digits, `.`, `_` and `-` only)"
    )]
    BadAddress(String),
    #[error("accounts of the domain ‘{0}’ cannot sign in here")]
    Domain(String),
    #[error("the account ‘{user}’ signs in as a {kind} account, not with {via}")]
    WrongType {
        user: String,
        kind: String,
        via: String,
    },
}

/// Hydra's email sign-in rule: `email` must be a plain address (no
/// plus-addresses) in one of `allowed_domains` (when any); an account
/// named by the address must be of type `kind` (a legacy `persona`
/// account becomes `google`); else one is made, without roles. Returns
/// the user name.
pub async fn email_login(
    pool: &PgPool,
    email: &str,
    full_name: &str,
    kind: &str,
    allowed_domains: &[String],
) -> Result<Result<String, EmailLoginRefused>, sqlx::Error> {
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let Some((local, domain)) = email.split_once('@').filter(|(l, d)| plain(l) && plain(d)) else {
        return Ok(Err(EmailLoginRefused::BadAddress(email.to_owned())));
    };
    let _ = local;
    if !allowed_domains.is_empty() && !allowed_domains.iter().any(|d| d == domain) {
        return Ok(Err(EmailLoginRefused::Domain(domain.to_owned())));
    }
    let existing: Option<String> = sqlx::query_scalar("select type from Users where userName = $1")
        .bind(email)
        .fetch_optional(pool)
        .await?;
    match existing.as_deref() {
        Some(t) if t == kind => {}
        Some("persona") if kind == "google" => {
            sqlx::query("update Users set type = 'google' where userName = $1")
                .bind(email)
                .execute(pool)
                .await?;
        }
        Some(other) => {
            return Ok(Err(EmailLoginRefused::WrongType {
                user: email.to_owned(),
                kind: other.to_owned(),
                via: kind.to_owned(),
            }));
        }
        None => {
            sqlx::query(
                "insert into Users (userName, fullName, emailAddress, password, type) \
                 values ($1, $2, $1, '!', $3) on conflict (userName) do nothing",
            )
            .bind(email)
            .bind(full_name)
            .bind(kind)
            .execute(pool)
            .await?;
        }
    }
    Ok(Ok(email.to_owned()))
}

/// A person another system vouched for (an LDAP directory, an OpenID
/// Connect provider).
#[derive(Clone, Copy, Debug)]
pub struct External<'a> {
    pub name: &'a str,
    pub full_name: &'a str,
    pub email: &'a str,
    /// The account type: `LDAP`, `oidc`.
    pub kind: &'a str,
    /// When the system says them, the roles that replace the account's.
    pub roles: Option<&'a [String]>,
}

/// Makes or updates `person`'s account: their type, no password of its
/// own, their name and address, and their roles when given. An account
/// of the same name of another type (a local one) is never taken over
/// (Hydra's LDAP sign-in would overwrite its password): the refusal says
/// so.
pub async fn external_login(
    pool: &PgPool,
    person: &External<'_>,
) -> Result<Result<(), String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let existing: Option<String> =
        sqlx::query_scalar("select type from Users where userName = $1 for update")
            .bind(person.name)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(kind) = existing.filter(|k| !k.eq_ignore_ascii_case(person.kind)) {
        return Ok(Err(format!(
            "the {kind} account ‘{}’ is not taken over by a {} sign-in",
            person.name, person.kind
        )));
    }
    sqlx::query(
        "insert into Users (userName, fullName, emailAddress, password, type) values ($1, $2, $3, '!', $4) \
         on conflict (userName) do update set fullName = excluded.fullName, \
           emailAddress = excluded.emailAddress, password = '!', type = excluded.type",
    )
    .bind(person.name)
    .bind(person.full_name)
    .bind(person.email)
    .bind(person.kind)
    .execute(&mut *tx)
    .await?;
    if let Some(roles) = person.roles {
        wipe_roles(&mut tx, person.name).await?;
        for role in roles {
            add_role(&mut tx, person.name, role).await?;
        }
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// An OpenID Connect sign-in under way.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OidcLogin {
    pub provider: String,
    pub nonce: String,
    pub verifier: String,
    pub after: String,
    pub expires: i32,
}

/// Remembers the sign-in whose state is `state` (expired ones go).
pub async fn start_oidc_login(
    pool: &PgPool,
    state: &str,
    login: &OidcLogin,
    now: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from OidcLogins where expires < $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query(
        "insert into OidcLogins (state, provider, nonce, verifier, after, expires) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(state)
    .bind(&login.provider)
    .bind(&login.nonce)
    .bind(&login.verifier)
    .bind(&login.after)
    .bind(login.expires)
    .execute(pool)
    .await?;
    Ok(())
}

/// Takes the sign-in of `state` (once: a second answer finds nothing).
pub async fn take_oidc_login(pool: &PgPool, state: &str) -> Result<Option<OidcLogin>, sqlx::Error> {
    sqlx::query_as(
        "delete from OidcLogins where state = $1 returning provider, nonce, verifier, after, expires",
    )
    .bind(state)
    .fetch_optional(pool)
    .await
}
