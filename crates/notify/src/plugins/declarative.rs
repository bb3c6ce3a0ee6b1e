//! DeclarativeJobsets (always enabled): when the `.jobsets` build of a
//! declarative project finishes, the specification it generated (a JSON
//! file `{jobset: spec}`, its output) is applied to the project's jobsets.
//! What goes wrong is written to the `.jobsets` jobset as its evaluation
//! error; only a database failure makes the task fail (to be retried).

use hydra_db::declarative;
use hydra_db::status::BuildStatus;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};

/// The plugin.
#[derive(Debug)]
pub struct DeclarativeJobsets;

impl Plugin for DeclarativeJobsets {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::DeclarativeJobsets"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let Some(build) = event.finished_build() else {
                return Ok(());
            };
            let Some(spec) = declarative::generated_spec(&cx.pool, build)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(());
            };
            if !spec.current {
                return Ok(());
            }
            let problem = match apply(cx, build, &spec).await {
                Ok(Some(problem)) => problem,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            };
            tracing::warn!(project = %spec.project, build = %build, %problem, "a generated declarative specification was not applied");
            hydra_db::jobsets::record_eval_error(&cx.pool, spec.jobset, &problem, hydra_db::now())
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Applies what `build` generated: `Ok(Some(problem))` when it cannot be
/// (the build failed, the file is missing or not a specification), `Err`
/// when the database fails.
async fn apply(
    cx: &Context,
    build: hydra_db::ids::BuildId,
    spec: &declarative::GeneratedSpec,
) -> Result<Option<String>, String> {
    if spec.status != Some(BuildStatus::Succeeded.code()) {
        return Ok(Some(format!(
            "The build of the declarative specification (build {build}) failed."
        )));
    }
    let Some(output) = &spec.output else {
        return Ok(Some(format!(
            "Build {build} has no output to read the specification from."
        )));
    };
    let path = cx.real_path(output);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) => {
            return Ok(Some(format!(
                "Cannot read the declarative specification {output}: {e}"
            )));
        }
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return Ok(Some(format!(
                "The declarative specification {output} is not JSON: {e}"
            )));
        }
    };
    let Some(jobsets) = value.as_object() else {
        return Ok(Some(format!(
            "The declarative specification {output} must be an object of jobsets."
        )));
    };
    let applied = declarative::apply_spec(
        &cx.pool,
        &spec.project,
        jobsets,
        cx.config.web.dynamic_run_command,
    )
    .await
    .map_err(|e| e.to_string())?;
    for (jobset, error) in &applied.errors {
        tracing::warn!(project = %spec.project, %jobset, %error, "a generated jobset specification was refused");
    }
    tracing::info!(project = %spec.project, jobsets = applied.jobsets.len(), "applied a generated declarative specification");
    if applied.errors.is_empty() {
        Ok(None)
    } else {
        Ok(Some(
            applied
                .errors
                .iter()
                .map(|(jobset, error)| format!("{jobset}: {error}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }
}
