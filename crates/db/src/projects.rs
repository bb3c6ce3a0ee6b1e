//! `Projects`: creating, changing and deleting projects, and who owns them.

use sqlx::{PgConnection, PgPool};

/// A project's settable fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRow {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub homepage: String,
    pub owner: String,
    pub enabled: bool,
    pub hidden: bool,
    pub dynamic_run_command: bool,
    /// File, type and value of the declarative input, when declarative.
    pub declarative: Option<(String, String, String)>,
}

/// Whether project `name` exists.
pub async fn exists(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from Projects where name = $1)")
        .bind(name)
        .fetch_one(pool)
        .await
}

/// Project `name`'s declarative spec file (`None` when there is no such
/// project; `Some("")` or `Some(None)` when it is not declarative).
pub async fn decl_file(pool: &PgPool, name: &str) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("select declfile from Projects where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Adds project `p`.
pub async fn insert(conn: &mut PgConnection, p: &ProjectRow) -> Result<(), sqlx::Error> {
    write(conn, None, p).await
}

/// Changes project `old_name` to `p` (possibly renaming it).
pub async fn update(
    conn: &mut PgConnection,
    old_name: &str,
    p: &ProjectRow,
) -> Result<(), sqlx::Error> {
    write(conn, Some(old_name), p).await
}

async fn write(
    conn: &mut PgConnection,
    old_name: Option<&str>,
    p: &ProjectRow,
) -> Result<(), sqlx::Error> {
    let sql = if old_name.is_none() {
        "insert into Projects (name, displayName, description, homepage, owner, enabled, hidden, \
         enable_dynamic_run_command, declfile, decltype, declvalue) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    } else {
        "update Projects set name = $1, displayName = $2, description = $3, homepage = $4, owner = $5, \
         enabled = $6, hidden = $7, enable_dynamic_run_command = $8, declfile = $9, decltype = $10, \
         declvalue = $11 where name = $12"
    };
    let decl = p.declarative.as_ref();
    sqlx::query(sql)
        .bind(&p.name)
        .bind(&p.display_name)
        .bind(&p.description)
        .bind(&p.homepage)
        .bind(&p.owner)
        .bind(i32::from(p.enabled))
        .bind(i32::from(p.hidden))
        .bind(p.dynamic_run_command)
        .bind(decl.map(|d| &d.0))
        .bind(decl.map(|d| &d.1))
        .bind(decl.map(|d| &d.2))
        .bind(old_name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes project `name` (its jobsets go with it).
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("delete from Projects where name = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// The ids of project `name`'s jobsets.
pub async fn jobset_ids(
    pool: &PgPool,
    name: &str,
) -> Result<Vec<crate::ids::JobsetId>, sqlx::Error> {
    sqlx::query_scalar("select id from Jobsets where project = $1")
        .bind(name)
        .fetch_all(pool)
        .await
}

/// Whether `user` owns project `name` or is one of its members (`None`
/// when there is no such project).
pub async fn is_owner_or_member(
    pool: &PgPool,
    name: &str,
    user: &str,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(
        "select p.owner = $2 or exists (select 1 from ProjectMembers m where m.project = p.name and m.userName = $2) \
         from Projects p where p.name = $1",
    )
    .bind(name)
    .bind(user)
    .fetch_optional(pool)
    .await
}

/// How many projects `user` owns.
pub async fn owned_by(pool: &PgPool, user: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from Projects where owner = $1")
        .bind(user)
        .fetch_one(pool)
        .await
}
