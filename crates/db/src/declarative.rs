//! Declarative projects: applying a specification (`{jobset: spec}`) to a
//! project's jobsets. Used by the evaluator for static specifications and
//! for the `.jobsets` jobset's own spec, and by the notify role when a
//! generated specification has been built.

use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

use crate::DbError;
use crate::jobsets::InputRow;
use crate::tx::{Tx, transaction};

/// The keys a jobset specification may have besides `inputs`.
pub const ALLOWED_KEYS: &[&str] = &[
    "enabled",
    "hidden",
    "type",
    "flake",
    "description",
    "nixexprinput",
    "nixexprpath",
    "checkinterval",
    "schedulingshares",
    "enableemail",
    "enable_dynamic_run_command",
    "emailoverride",
    "keepnr",
];

/// Why one jobset's specification was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid keys ({0}) in declarative specification file")]
    InvalidKeys(String),
    #[error("`{key}` {problem}")]
    BadValue { key: String, problem: String },
    #[error("input `{input}`: {problem}")]
    BadInput { input: String, problem: String },
    #[error("Dynamic RunCommand is not enabled by the server.")]
    DynamicRunCommandServer,
    #[error("Dynamic RunCommand is not enabled by the project.")]
    DynamicRunCommandProject,
    #[error("the specification of a jobset must be an object")]
    NotAnObject,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SpecError {
    fn from(e: sqlx::Error) -> Self {
        SpecError::Db(DbError::from(e))
    }
}

impl crate::tx::Transient for SpecError {
    fn is_transient(&self) -> bool {
        matches!(self, SpecError::Db(e) if e.is_transient())
    }
}

/// What applying a specification did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Jobsets created or updated.
    pub jobsets: Vec<String>,
    /// Jobsets whose specification was refused, with why.
    pub errors: Vec<(String, String)>,
}

fn integer(key: &str, value: &Value) -> Result<i32, SpecError> {
    let bad = |problem: &str| SpecError::BadValue {
        key: key.into(),
        problem: problem.into(),
    };
    match value {
        Value::Bool(b) => Ok(i32::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| bad("must be a whole number")),
        Value::String(s) => s.trim().parse().map_err(|_| bad("must be a number")),
        _ => Err(bad("must be a number")),
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool, SpecError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Null => Ok(false),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" || s.is_empty() => Ok(false),
        other => Ok(integer(key, other)? != 0),
    }
}

fn text(key: &str, value: &Value) -> Result<Option<String>, SpecError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(if *b { "1" } else { "0" }.into())),
        _ => Err(SpecError::BadValue {
            key: key.into(),
            problem: "must be a string".into(),
        }),
    }
}

/// Applies `{jobset: spec}` to `project`: the listed jobsets are created or
/// updated; the others (except `.jobsets`) are disabled and hidden. A
/// jobset whose spec is refused is reported, not fatal.
pub async fn apply_spec(
    pool: &PgPool,
    project: &str,
    spec: &Map<String, Value>,
    server_allows_dynamic_run_command: bool,
) -> Result<Applied, DbError> {
    let mut kept: Vec<&str> = spec.keys().map(String::as_str).collect();
    kept.push(".jobsets");
    sqlx::query(
        "update Jobsets set enabled = 0, hidden = 1 where project = $1 and not (name = any($2)) \
         and (enabled <> 0 or hidden <> 1)",
    )
    .bind(project)
    .bind(&kept)
    .execute(pool)
    .await?;
    let mut applied = Applied::default();
    for (name, jobset_spec) in spec {
        match update_jobset(
            pool,
            project,
            name,
            jobset_spec,
            server_allows_dynamic_run_command,
        )
        .await
        {
            Ok(()) => applied.jobsets.push(name.clone()),
            Err(e) => {
                tracing::error!(project, jobset = %name, error = %e, "cannot apply a declarative jobset specification");
                applied.errors.push((name.clone(), e.to_string()));
            }
        }
    }
    Ok(applied)
}

/// The columns a spec sets, in the order of [`ALLOWED_KEYS`].
#[derive(Debug, Default)]
struct Columns {
    enabled: Option<i32>,
    hidden: Option<i32>,
    kind: i32,
    flake: Option<String>,
    description: Option<Option<String>>,
    nix_expr_input: Option<String>,
    nix_expr_path: Option<String>,
    check_interval: Option<i32>,
    scheduling_shares: Option<i32>,
    enable_email: Option<i32>,
    dynamic: Option<bool>,
    email_override: Option<String>,
    keepnr: Option<i32>,
}

fn parse(spec: &Value) -> Result<(Columns, Vec<InputRow>), SpecError> {
    let Value::Object(spec) = spec else {
        return Err(SpecError::NotAnObject);
    };
    let unknown: Vec<&str> = spec
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "inputs" && !ALLOWED_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(SpecError::InvalidKeys(unknown.join(", ")));
    }
    let int = |key: &str| spec.get(key).map(|v| integer(key, v)).transpose();
    let string = |key: &str| -> Result<Option<String>, SpecError> {
        Ok(spec.get(key).map(|v| text(key, v)).transpose()?.flatten())
    };
    let mut c = Columns {
        enabled: int("enabled")?,
        hidden: spec
            .get("hidden")
            .map(|v| boolean("hidden", v).map(i32::from))
            .transpose()?,
        kind: int("type")?.unwrap_or(0),
        flake: string("flake")?,
        description: spec
            .get("description")
            .map(|v| text("description", v))
            .transpose()?,
        nix_expr_input: string("nixexprinput")?,
        nix_expr_path: string("nixexprpath")?,
        check_interval: int("checkinterval")?,
        scheduling_shares: int("schedulingshares")?,
        enable_email: spec
            .get("enableemail")
            .map(|v| boolean("enableemail", v).map(i32::from))
            .transpose()?,
        dynamic: spec
            .get("enable_dynamic_run_command")
            .map(|v| boolean("enable_dynamic_run_command", v))
            .transpose()?,
        email_override: string("emailoverride")?,
        keepnr: int("keepnr")?,
    };
    match c.kind {
        0 => c.flake = None,
        1 => {
            c.nix_expr_input = None;
            c.nix_expr_path = None;
        }
        other => {
            return Err(SpecError::BadValue {
                key: "type".into(),
                problem: format!("must be 0 (legacy) or 1 (flake), not {other}"),
            });
        }
    }
    if let Some(shares) = c.scheduling_shares
        && shares <= 0
    {
        return Err(SpecError::BadValue {
            key: "schedulingshares".into(),
            problem: "must be greater than 0".into(),
        });
    }
    let mut inputs = Vec::new();
    match spec.get("inputs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, data) in map {
                let bad = |problem: &str| SpecError::BadInput {
                    input: name.clone(),
                    problem: problem.into(),
                };
                let Value::Object(data) = data else {
                    return Err(bad("must be an object with `type` and `value`"));
                };
                let kind = match data.get("type") {
                    Some(Value::String(t)) if !t.is_empty() => t.clone(),
                    _ => return Err(bad("missing input type")),
                };
                let value = data
                    .get("value")
                    .map(|v| text("value", v))
                    .transpose()
                    .map_err(|_| bad("`value` must be a string"))?
                    .flatten();
                let email_responsible = match data.get("emailresponsible") {
                    None => false,
                    Some(v) => boolean("emailresponsible", v)
                        .map_err(|_| bad("`emailresponsible` must be a boolean"))?,
                };
                inputs.push(InputRow {
                    name: name.clone(),
                    kind,
                    value,
                    email_responsible,
                });
            }
        }
        Some(_) => {
            return Err(SpecError::BadValue {
                key: "inputs".into(),
                problem: "must be an object".into(),
            });
        }
    }
    Ok((c, inputs))
}

/// Creates or updates one jobset from its specification and replaces its
/// inputs; keys the spec leaves out keep their value (or the column
/// default for a new jobset).
pub async fn update_jobset(
    pool: &PgPool,
    project: &str,
    name: &str,
    spec: &Value,
    server_allows_dynamic_run_command: bool,
) -> Result<(), SpecError> {
    let (c, inputs) = parse(spec)?;
    if c.dynamic == Some(true) {
        if !server_allows_dynamic_run_command {
            return Err(SpecError::DynamicRunCommandServer);
        }
        let project_allows: Option<bool> =
            sqlx::query_scalar("select enable_dynamic_run_command from Projects where name = $1")
                .bind(project)
                .fetch_optional(pool)
                .await?;
        if project_allows != Some(true) {
            return Err(SpecError::DynamicRunCommandProject);
        }
    }
    let c = &c;
    let inputs = &inputs;
    transaction(pool, |mut tx: Tx| {
        Box::pin(async move { write_jobset(&mut tx, project, name, c, inputs).await })
    })
    .await
}

async fn write_jobset(
    conn: &mut PgConnection,
    project: &str,
    name: &str,
    c: &Columns,
    inputs: &[InputRow],
) -> Result<(), SpecError> {
    let exists: Option<i32> =
        sqlx::query_scalar("select id from Jobsets where project = $1 and name = $2 for update")
            .bind(project)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        sqlx::query(
            "insert into Jobsets (project, name, type, flake, nixExprInput, nixExprPath, emailOverride) \
             values ($1, $2, $3, $4, $5, $6, '')",
        )
        .bind(project)
        .bind(name)
        .bind(c.kind)
        .bind(&c.flake)
        .bind(&c.nix_expr_input)
        .bind(&c.nix_expr_path)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "update Jobsets set type = $3, flake = $4, nixExprInput = $5, nixExprPath = $6, \
         enabled = coalesce($7, enabled), hidden = coalesce($8, hidden), \
         description = case when $9 then $10 else description end, \
         checkInterval = coalesce($11, checkInterval), schedulingShares = coalesce($12, schedulingShares), \
         enableEmail = coalesce($13, enableEmail), \
         enable_dynamic_run_command = coalesce($14, enable_dynamic_run_command), \
         emailOverride = coalesce($15, emailOverride), keepnr = coalesce($16, keepnr) \
         where project = $1 and name = $2",
    )
    .bind(project)
    .bind(name)
    .bind(c.kind)
    .bind(&c.flake)
    .bind(&c.nix_expr_input)
    .bind(&c.nix_expr_path)
    .bind(c.enabled)
    .bind(c.hidden)
    .bind(c.description.is_some())
    .bind(c.description.clone().flatten())
    .bind(c.check_interval)
    .bind(c.scheduling_shares)
    .bind(c.enable_email)
    .bind(c.dynamic)
    .bind(&c.email_override)
    .bind(c.keepnr)
    .execute(&mut *conn)
    .await?;
    crate::jobsets::replace_inputs(conn, project, name, inputs).await?;
    Ok(())
}

/// Removes the `.jobsets` jobset of a project that is no longer
/// declarative.
pub async fn remove_jobsets_jobset(
    conn: &mut PgConnection,
    project: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from Jobsets where project = $1 and name = '.jobsets'")
        .bind(project)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates or refreshes the `.jobsets` jobset of a declarative project, as
/// saving the project in the web interface does: an empty expression (the
/// evaluator reads the project's `declfile`, `decltype` and `declvalue`),
/// triggered now.
pub async fn ensure_jobsets_jobset(
    conn: &mut PgConnection,
    project: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into Jobsets (project, name, nixExprInput, nixExprPath, emailOverride, triggerTime, enabled, hidden) \
         values ($1, '.jobsets', '', '', '', $2, 1, 0) \
         on conflict (project, name) do update set type = 0, flake = null, \
         nixExprInput = '', nixExprPath = '', triggerTime = $2, enabled = 1",
    )
    .bind(project)
    .bind(crate::now())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let spec = serde_json::json!({"enabled": 1, "colour": "red", "nixexprinput": "src"});
        let Err(e) = parse(&spec) else {
            panic!("accepted an unknown key")
        };
        assert_eq!(
            e.to_string(),
            "invalid keys (colour) in declarative specification file"
        );
    }

    #[test]
    fn type_decides_which_expression_fields_are_kept() {
        let spec = serde_json::json!({"type": 1, "flake": "github:a/b", "nixexprinput": "src", "nixexprpath": "x.nix"});
        let (c, _) = parse(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.flake.as_deref(), Some("github:a/b"));
        assert_eq!(c.nix_expr_input, None);
        let spec = serde_json::json!({"flake": "github:a/b", "nixexprinput": "src", "nixexprpath": "x.nix", "enabled": true, "hidden": false});
        let (c, _) = parse(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.flake, None);
        assert_eq!(c.nix_expr_input.as_deref(), Some("src"));
        assert_eq!(c.enabled, Some(1));
        assert_eq!(c.hidden, Some(0));
    }
}

/// A finished build of a declarative project's `.jobsets` jobset: what the
/// notify role needs to apply the specification it generated.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct GeneratedSpec {
    pub project: String,
    /// The `.jobsets` jobset.
    pub jobset: crate::ids::JobsetId,
    pub current: bool,
    pub status: Option<i32>,
    /// Its `out` output (else its first), when known.
    pub output: Option<String>,
}

/// `build`, when it is a finished build of the `.jobsets` jobset of a
/// declarative project (one with a `declfile`).
pub async fn generated_spec(
    pool: &PgPool,
    build: crate::ids::BuildId,
) -> Result<Option<GeneratedSpec>, sqlx::Error> {
    sqlx::query_as(
        "select j.project, j.id as jobset, b.isCurrent = 1 as current, b.buildStatus as status, \
                (select o.path from BuildOutputs o where o.build = b.id \
                 order by o.name <> 'out', o.name limit 1) as output \
         from Builds b join Jobsets j on j.id = b.jobset_id join Projects p on p.name = j.project \
         where b.id = $1 and b.finished = 1 and j.name = '.jobsets' \
         and coalesce(p.declfile, '') <> ''",
    )
    .bind(build)
    .fetch_optional(pool)
    .await
}
