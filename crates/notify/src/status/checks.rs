//! GitHub check runs from a GitHub App (`<github_app>`), beside
//! GithubStatus: one check run per revision and job, created once and
//! updated in place (queued → in progress → completed), with a link to
//! the build, the end of the failing step's log in its summary, and a
//! "Re-run" button that restarts the build (GitHub sends a `check_run`
//! webhook to `/api/push-github`).
//!
//! ```text
//! <github_app>
//!   app_id = 12345
//!   private_key_file = /run/secrets/hydra-app.pem
//!   jobs = myproject:.*:.*
//!   inputs = src
//! </github_app>
//! ```
//!
//! Like the statuses, check runs go through the outbox: the desired state
//! per (repository, revision, check name); the reporter creates the check
//! run (or finds the one a crashed attempt made, by its `external_id`) and
//! updates it, so a job has one check run whatever happens to notify.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use hydra_db::commit_statuses::{BuildFacts, Source};
use hydra_db::status::BuildStatus;

use super::app::{App, AppKey};
use super::github::{Block, Github, short_name};
use super::{Forge, Target, build_url};
use crate::Event;
use crate::plugins::{JobsPattern, config_blocks, text, texts};

/// The outbox's name for check runs.
pub const FORGE: &str = "github-checks";
/// Lines of the failing log shown in a failed check run.
const TAIL_LINES: usize = 60;
/// Bytes read from the end of the log for them.
const TAIL_BYTES: u64 = 32 * 1024;

/// The plugin.
#[derive(Debug)]
pub struct Checks {
    github: Github,
    block: Block,
}

/// The `<github_app>` block: the app (for the reporter) and the plugin.
pub fn from_config(config: &hydra_config::Config) -> Result<Option<(Arc<App>, Checks)>, String> {
    let blocks = config_blocks(config, "github_app");
    let Some(tree) = blocks.first() else {
        return Ok(None);
    };
    if blocks.len() > 1 {
        return Err("<github_app>: only one block is allowed (one app per server)".into());
    }
    let app_id = text(tree, "app_id")
        .filter(|a| !a.trim().is_empty())
        .ok_or("<github_app>: app_id is missing")?;
    let file = text(tree, "private_key_file")
        .filter(|f| !f.trim().is_empty())
        .ok_or("<github_app>: private_key_file is missing")?;
    let pem = std::fs::read_to_string(&file)
        .map_err(|e| format!("<github_app>: cannot read private_key_file {file}: {e}"))?;
    let key = AppKey::from_pem(&pem)
        .map_err(|e| format!("<github_app>: private_key_file {file}: {e}"))?;
    let api = config.evaluator.github_api_url.clone();
    let app = Arc::new(App::new(app_id.trim().to_owned(), key, api));
    let block = block_of(tree)?;
    Ok(Some((
        app,
        Checks {
            github: Github::bare(config),
            block,
        },
    )))
}

/// What a `<github_app>` block reports on: `jobs`, `jobsets`, `inputs`.
fn block_of(tree: &hydra_config::general::Tree) -> Result<Block, String> {
    let jobsets = text(tree, "jobsets")
        .map(|p| JobsPattern::new("github_app", &p))
        .transpose()?;
    Ok(Block::for_checks(
        JobsPattern::of_block("github_app", tree)?,
        jobsets,
        texts(tree, "inputs"),
    ))
}

/// The `<github_app>` block as the evaluation checks read it, when there
/// is one.
pub fn eval_block(config: &hydra_config::Config) -> Result<Option<Block>, String> {
    config_blocks(config, "github_app")
        .first()
        .map(|tree| block_of(tree))
        .transpose()
}

/// The check run's name for `build`: `project:jobset:job`, a `-pr-N`
/// dropped, so it is the same on every pull request.
pub fn check_name(build: &BuildFacts) -> String {
    short_name(&build.full_name())
}

/// Where a revision's check runs are listed (and the outbox's URL).
pub fn list_url(api: &str, owner: &str, repo: &str, rev: &str) -> String {
    format!("{api}/repos/{owner}/{repo}/commits/{rev}/check-runs")
}

/// The end of `drv`'s log: up to `TAIL_LINES` lines (`None`: no plain
/// log).
fn log_tail(logs: &hydra_config::DataDir, drv: &str) -> Option<String> {
    let mut file = std::fs::File::open(logs.build_log(drv)).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    // The tail sits in a fenced block: a fence inside must not end it.
    Some(tail.replace("```", "'''"))
}

/// The check run body and its state for `build`.
fn check_body(
    build: &BuildFacts,
    base: &str,
    logs: &hydra_config::DataDir,
) -> (&'static str, serde_json::Value) {
    let name = check_name(build);
    let details = build_url(base, build);
    if !build.finished {
        let (status, title) = if build.started {
            (
                "in_progress",
                format!("Hydra build {} is running", build.id),
            )
        } else {
            ("queued", format!("Hydra build {} is queued", build.id))
        };
        return (
            status,
            serde_json::json!({
                "name": name,
                "status": status,
                "details_url": details,
                "output": {"title": title, "summary": format!("[Build {}]({details}) of `{}`.", build.id, build.full_name())},
            }),
        );
    }
    let status = build.status.and_then(BuildStatus::from_code);
    let conclusion = match status {
        Some(BuildStatus::Succeeded) => "success",
        Some(BuildStatus::Cancelled) => "cancelled",
        _ => "failure",
    };
    let what = status.map_or("finished", BuildStatus::describe);
    let mut summary = format!(
        "[Build {}]({details}) of `{}`: {what}.",
        build.id,
        build.full_name()
    );
    if conclusion == "failure"
        && let Some(drv) = &build.failed_drv
    {
        match log_tail(logs, drv) {
            Some(tail) => summary.push_str(&format!(
                "\n\nThe end of the log of `{drv}`:\n\n```\n{tail}\n```\n"
            )),
            None => summary.push_str(&format!("\n\nThe log of `{drv}` is on the build's page.")),
        }
    }
    let mut body = serde_json::json!({
        "name": name,
        "status": "completed",
        "conclusion": conclusion,
        "details_url": details,
        "output": {"title": format!("Hydra build {}: {what}", build.id), "summary": summary},
    });
    if conclusion != "success" {
        body["actions"] = serde_json::json!([{
            "label": "Re-run",
            "description": "Build it again on Hydra",
            "identifier": "rerun",
        }]);
    }
    (conclusion, body)
}

impl Forge for Checks {
    const PLUGIN: &'static str = "GithubChecks";
    const FORGE: &'static str = FORGE;

    fn targets(
        &self,
        _event: &Event,
        build: &BuildFacts,
        sources: &[Source],
        base: &str,
        logs: &hydra_config::DataDir,
    ) -> Vec<Target> {
        if !self.block.covers_job(&build.full_name()) {
            return Vec::new();
        }
        let (state, body) = check_body(build, base, logs);
        let mut targets = Vec::new();
        for source in sources {
            for (owner, repo, rev) in
                self.github
                    .revisions(&self.block, source.flake.as_deref(), &source.inputs)
            {
                let mut body = body.clone();
                body["head_sha"] = serde_json::json!(rev);
                targets.push(Target {
                    url: list_url(self.github.api(), &owner, &repo, &rev),
                    context: check_name(build),
                    credential: format!("{owner}/{repo}"),
                    state,
                    body,
                });
            }
        }
        targets
    }
}
