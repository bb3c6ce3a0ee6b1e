//! Inputs that are outputs of other builds: `build` (the latest successful
//! build of a job), `sysbuild` (the same, refused when the job builds for
//! several systems: one input cannot have several alternatives any more)
//! and `eval` (every successful build of an evaluation).

use hydra_db::builds::{InputBuild, JobQuery};
use hydra_db::ids::{BuildId, EvalId};

use super::{FetchContext, FetchError, Fetched, Input, db, is_valid, run_nix};
use crate::engine::nix_string;

/// `[project:][jobset:]job [name="value" …]`.
#[derive(Debug, PartialEq, Eq)]
struct JobRef {
    project: String,
    jobset: String,
    job: String,
    attrs: Vec<(String, String)>,
}

fn parse_job_ref(ctx: &FetchContext<'_>, input: &Input) -> Result<JobRef, FetchError> {
    let mut words = split_words(&input.value).into_iter();
    let spec = words.next().ok_or_else(|| {
        FetchError(format!(
            "input `{}` ({}) has no value",
            input.name, input.kind
        ))
    })?;
    let parts: Vec<&str> = spec.split(':').collect();
    let (project, jobset, job) = match parts.as_slice() {
        [job] => (ctx.project, ctx.jobset, *job),
        [jobset, job] => (ctx.project, *jobset, *job),
        [project, jobset, job] => (*project, *jobset, *job),
        _ => {
            return Err(FetchError(format!(
                "input `{}`: `{spec}` is not [project:][jobset:]job",
                input.name
            )));
        }
    };
    let mut attrs = Vec::new();
    for word in words {
        let (k, v) = word.split_once('=').ok_or_else(|| {
            FetchError(format!(
                "input `{}`: `{word}` is not name=\"value\"",
                input.name
            ))
        })?;
        attrs.push((k.to_string(), v.trim_matches('"').to_string()));
    }
    Ok(JobRef {
        project: project.into(),
        jobset: jobset.into(),
        job: job.into(),
        attrs,
    })
}

/// Words separated by spaces, where `"…"` may contain spaces.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The version in a release name: what follows the first `-` that is
/// followed by a digit (`hello-2.10` → `2.10`).
pub(crate) fn version_of(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'-' && bytes[i + 1].is_ascii_digit())
        .map(|i| name[i + 1..].to_string())
}

/// `None` when no successful build of the job is usable (see
/// [`super::fetch`]).
pub(crate) async fn fetch(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Option<Fetched>, FetchError> {
    if input.kind == "eval" {
        return fetch_eval(ctx, input, base).await.map(Some);
    }
    let value = input.value.trim();
    let build: Option<InputBuild> = if let Ok(id) = value.parse::<i32>() {
        hydra_db::builds::succeeded(ctx.pool, BuildId(id))
            .await
            .map_err(db)?
    } else {
        let r = parse_job_ref(ctx, input)?;
        let query = JobQuery {
            project: &r.project,
            jobset: &r.jobset,
            job: &r.job,
            inputs: &r.attrs,
        };
        let candidates = hydra_db::builds::latest_succeeded(ctx.pool, &query)
            .await
            .map_err(db)?;
        if input.kind == "sysbuild" {
            let mut systems: Vec<&str> = candidates.iter().map(|b| b.system.as_str()).collect();
            systems.sort_unstable();
            systems.dedup();
            if systems.len() > 1 {
                return Err(FetchError(format!(
                    "input `{}` (sysbuild) has one alternative per system ({}); multiple alternatives per input are no longer supported",
                    input.name,
                    systems.join(", ")
                )));
            }
        }
        candidates.into_iter().next()
    };
    let Some(build) = build else {
        tracing::info!(input = %input.name, value, "no successful build for the input yet; leaving it out");
        return Ok(None);
    };
    let outputs = hydra_db::builds::outputs(ctx.pool, build.id)
        .await
        .map_err(db)?;
    let (output_name, out_path) = outputs
        .iter()
        .find(|(n, _)| n == "out")
        .or_else(|| outputs.first())
        .and_then(|(n, p)| p.clone().map(|p| (n.clone(), p)))
        .ok_or_else(|| {
            FetchError(format!(
                "input `{}`: build {} has no output path",
                input.name, build.id
            ))
        })?;
    if !ensure_valid(ctx, input, &out_path).await? {
        tracing::warn!(input = %input.name, path = %out_path, "the input's build output is not in the store; leaving it out");
        return Ok(None);
    }
    let release = build.release_name.or(build.nix_name);
    let drv_path = is_valid(ctx.nix, &build.drv_path)
        .await
        .then_some(build.drv_path);
    Ok(Some(Fetched {
        store_path: Some(out_path),
        output_name: Some(output_name),
        version: release.as_deref().and_then(version_of),
        drv_path,
        dependency: Some(build.id),
        value: Some(value.to_string()),
        ..base
    }))
}

/// Whether an output is in the evaluator's store, after asking
/// `eval_substituter` for it when it is not.
async fn ensure_valid(
    ctx: &FetchContext<'_>,
    input: &Input,
    path: &str,
) -> Result<bool, FetchError> {
    if is_valid(ctx.nix, path).await {
        return Ok(true);
    }
    if let Some(from) = &ctx.config.evaluator.eval_substituter {
        run_nix(
            ctx.nix,
            "nix",
            &[
                "--experimental-features",
                "nix-command",
                "copy",
                "--from",
                from,
                path,
            ],
        )
        .await
        .map_err(|e| {
            FetchError(format!(
                "input `{}`: cannot copy {path} from {from}: {e}",
                input.name
            ))
        })?;
        return Ok(true);
    }
    Ok(false)
}

/// `eval`: an evaluation id, `project:jobset` (its latest finished
/// evaluation) or `project:jobset:job` (the latest finished one in which
/// that job succeeded); passed as `{ job = <out path>; … }`.
async fn fetch_eval(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let value = input.value.trim();
    let eval_id: Option<EvalId> = if let Ok(id) = value.parse::<i32>() {
        Some(EvalId(id))
    } else {
        let parts: Vec<&str> = value.split(':').collect();
        let (project, jobset, job) = match parts.as_slice() {
            [p, j] => (*p, *j, None),
            [p, j, job] => (*p, *j, Some(*job)),
            _ => {
                return Err(FetchError(format!(
                    "input `{}` (eval): `{value}` is not an evaluation id, project:jobset or project:jobset:job",
                    input.name
                )));
            }
        };
        hydra_db::evals::latest_finished(ctx.pool, project, jobset, job)
            .await
            .map_err(db)?
    };
    let Some(eval_id) = eval_id else {
        return Err(FetchError(format!(
            "input `{}`: no finished evaluation matches `{value}`",
            input.name
        )));
    };
    let outputs = hydra_db::evals::succeeded_outputs(ctx.pool, eval_id)
        .await
        .map_err(db)?;
    let mut attrs = String::from("{");
    for (job, path) in &outputs {
        if !ensure_valid(ctx, input, path).await? {
            return Err(FetchError(format!(
                "input `{}`: {path} is not in the store (set eval_substituter to copy it from a binary cache)",
                input.name
            )));
        }
        attrs.push_str(&format!(
            " {} = builtins.storePath {};",
            nix_string(job),
            nix_string(path)
        ));
    }
    attrs.push_str(" }");
    Ok(Fetched {
        value: Some(eval_id.to_string()),
        expression: Some(attrs),
        extra_paths: outputs,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_first_dash_before_a_digit() {
        assert_eq!(version_of("hello-2.10").as_deref(), Some("2.10"));
        assert_eq!(version_of("foo-bar-1.0-rc1").as_deref(), Some("1.0-rc1"));
        assert_eq!(version_of("no-version"), None);
        assert_eq!(version_of("x-"), None);
    }

    #[test]
    fn words_keep_quoted_spaces() {
        assert_eq!(
            split_words(r#"p:j:job system="x86 64"  a=b"#),
            ["p:j:job", "system=\"x86 64\"", "a=b"]
        );
    }
}
