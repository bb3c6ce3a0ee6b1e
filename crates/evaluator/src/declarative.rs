//! The `.jobsets` jobset of a declarative project (Hydra's `declfile`,
//! `decltype`, `declvalue`): its input holds a JSON file that is either the
//! specification of all jobsets (static: applied at once) or the
//! specification of `.jobsets` itself, whose evaluation builds the jobsets'
//! specification (generated: applied when that build finishes).

use hydra_db::declarative;
use hydra_db::rows;
use serde_json::Value;

use crate::context::{Context, RunError};
use crate::inputs::{self, Fetched, Input};
use crate::outcome::Outcome;

/// What to do with the `.jobsets` jobset.
#[derive(Debug)]
pub(crate) enum Decl {
    /// The static specification was applied; the evaluation is done.
    Applied(Outcome),
    /// The declarative input could not be fetched or read.
    FetchFailed(String),
    /// Evaluate `.jobsets` normally, with these inputs added.
    Generated(Vec<Fetched>),
}

/// Handles the `.jobsets` jobset `row` of a declarative project.
pub(crate) async fn evaluate_spec(ctx: &Context, row: &rows::Jobset) -> Result<Decl, RunError> {
    let mut conn = ctx.pool.acquire().await.map_err(hydra_db::DbError::from)?;
    let project = rows::project(&mut conn, &row.project)
        .await?
        .ok_or_else(|| RunError::Message(format!("project {} does not exist", row.project)))?;
    drop(conn);
    let (Some(file), Some(kind)) = (
        project.declfile.as_deref().filter(|s| !s.is_empty()),
        project.decltype.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err(RunError::Message(format!(
            "project {} is not declarative (declfile and decltype are not set)",
            project.name
        )));
    };
    if file.starts_with('/') || file.split('/').any(|c| c == "..") {
        return Err(RunError::Message(format!(
            "the declarative specification file `{file}` must be a relative path inside the input"
        )));
    }
    let fetch_ctx = ctx.fetch_context(&row.project, &row.name);
    let input = Input {
        name: "declInput".into(),
        kind: kind.into(),
        value: project.declvalue.clone().unwrap_or_default(),
        email_responsible: false,
    };
    let decl_input = match inputs::fetch(&fetch_ctx, &input).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return Ok(Decl::FetchFailed(format!(
                "the declarative input (type {kind}) `{}` has no successful build yet",
                input.value
            )));
        }
        Err(e) => return Ok(Decl::FetchFailed(e.to_string())),
    };
    let Some(store_path) = &decl_input.store_path else {
        return Ok(Decl::FetchFailed(format!(
            "the declarative input (type {kind}) is not a path in the store"
        )));
    };
    let full = format!("{store_path}/{file}");
    let text = match inputs::run_nix(
        &ctx.nix,
        "nix",
        &[
            "--experimental-features",
            "nix-command",
            "store",
            "cat",
            &full,
        ],
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            return Ok(Decl::FetchFailed(format!(
                "cannot read the declarative specification file `{file}`: {e}"
            )));
        }
    };
    let spec: Value = serde_json::from_str(&text).map_err(|e| {
        RunError::Message(format!(
            "the declarative specification file `{file}` is not valid JSON: {e}"
        ))
    })?;
    let Value::Object(spec) = spec else {
        return Err(RunError::Message(format!(
            "the declarative specification file `{file}` is not a dictionary"
        )));
    };
    let allow_dynamic = ctx.config.web.dynamic_run_command;
    if !spec.is_empty() && spec.values().all(Value::is_object) {
        let applied =
            declarative::apply_spec(&ctx.pool, &project.name, &spec, allow_dynamic).await?;
        hydra_db::jobsets::record_unchanged(&ctx.pool, row.id, hydra_db::now()).await?;
        return Ok(Decl::Applied(Outcome::SpecApplied {
            jobsets: applied.jobsets.len(),
        }));
    }
    declarative::update_jobset(
        &ctx.pool,
        &project.name,
        ".jobsets",
        &Value::Object(spec),
        allow_dynamic,
    )
    .await
    .map_err(|e| RunError::Message(format!("the specification of .jobsets: {e}")))?;
    let project_name = Fetched {
        name: "projectName".into(),
        kind: "string".into(),
        value: Some(project.name.clone()),
        ..Default::default()
    };
    Ok(Decl::Generated(vec![decl_input, project_name]))
}
