//! Evaluation statuses on GitHub: a `<githubstatus>` block with
//! `jobsets = PATTERN` (matched against `project:jobset`) gives each
//! evaluation of those jobsets one status on the revisions it evaluated,
//! under a context that stays the same from one evaluation (and one
//! `-pr-N` jobset) to the next, so it can be made a required check:
//! `evalContext`, else `ci/hydra:<project>:<jobset>` with a `-pr-N`
//! removed.
//!
//! - pending once the evaluation fetched its inputs (`eval_checked_out`),
//!   and while its builds run;
//! - error when the evaluation fails after fetching (`eval_failed`);
//! - success when all its builds succeeded, failure when any did not.
//!
//! With a `<github_app>` whose `jobsets` matches, each evaluation also
//! gets two check runs with names that never change: `hydra/<project>:
//! <jobset>` (the aggregate: in progress until every build is done, then
//! success or failure) and `hydra/<project>:<jobset> evaluation` (the
//! evaluation alone), a `-pr-N` dropped from the jobset.
//!
//! Written to the same outbox as build statuses, so the same rules hold:
//! never lost, never sent twice, overtaken states never sent.

use std::sync::Arc;

use hydra_db::commit_statuses::{self, SourceInput};
use hydra_db::ids::{BuildId, EvalId};

use super::github::{Block, Github};
use super::{Outbox, Owner, Target, write_targets};
use crate::Event;
use crate::plugin::{Context, Plugin, Work};

/// The plugin.
#[derive(Debug)]
pub struct EvaluationStatus {
    /// The `<githubstatus>` blocks (possibly none).
    github: Github,
    /// GitHub, and the `<github_app>` block with `jobsets`.
    checks: Option<(Github, Block)>,
    outbox: Outbox,
}

impl EvaluationStatus {
    /// On when a `<githubstatus>` block has `jobsets`, or the
    /// `<github_app>` block does.
    pub fn from_config(
        config: &hydra_config::Config,
        outbox: &Outbox,
    ) -> Result<Option<Arc<EvaluationStatus>>, String> {
        let github = Github::from_config(config)?.unwrap_or_else(|| Github::bare(config));
        let checks = super::checks::eval_block(config)?
            .filter(|b| b.jobsets.is_some())
            .map(|b| (Github::bare(config), b));
        if !github.blocks().iter().any(|b| b.jobsets.is_some()) && checks.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(EvaluationStatus {
            github,
            checks,
            outbox: outbox.clone(),
        })))
    }
}

/// Which part of an evaluation's life a state is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Fetched, being evaluated.
    Evaluating,
    /// The evaluation failed.
    Failed,
    /// Evaluated; its builds are in `state`.
    Building,
}

/// What an evaluation fetched: the jobset, and its locked flake or its
/// inputs (from its checkout while it runs, from the evaluation after).
#[derive(Clone, Copy)]
struct Fetched<'a> {
    project: &'a str,
    jobset: &'a str,
    flake: Option<&'a str>,
    inputs: &'a [SourceInput],
}

impl<'a> Fetched<'a> {
    fn of_checkout(c: &'a commit_statuses::Checkout) -> Fetched<'a> {
        Fetched {
            project: &c.project,
            jobset: &c.jobset,
            flake: c.flake.as_deref(),
            inputs: &c.inputs,
        }
    }

    fn of_source(s: &'a commit_statuses::Source) -> Fetched<'a> {
        Fetched {
            project: &s.project,
            jobset: &s.jobset,
            flake: s.flake.as_deref(),
            inputs: &s.inputs,
        }
    }
}

/// What an evaluation status says.
struct State {
    state: &'static str,
    description: String,
    target_url: String,
}

impl EvaluationStatus {
    /// The statuses for an evaluation that `fetched`, saying `state`.
    fn targets(&self, fetched: Fetched<'_>, state: &State, phase: Phase) -> Vec<Target> {
        let (project, jobset) = (fetched.project, fetched.jobset);
        let name = format!("{project}:{jobset}");
        let mut targets = self.check_targets(fetched, state, phase);
        for block in self
            .github
            .blocks()
            .iter()
            .filter(|b| b.covers_jobset(&name))
        {
            let context = block.eval_context(project, jobset);
            for (owner, repo, rev) in self.github.revisions(block, fetched.flake, fetched.inputs) {
                targets.push(Target {
                    url: self.github.url(&owner, &repo, &rev),
                    context: context.clone(),
                    credential: owner,
                    state: state.state,
                    body: serde_json::json!({
                        "state": state.state,
                        "target_url": state.target_url,
                        "description": state.description,
                        "context": context,
                    }),
                });
            }
        }
        targets
    }

    /// The evaluation's and the aggregate check runs.
    fn check_targets(&self, fetched: Fetched<'_>, state: &State, phase: Phase) -> Vec<Target> {
        let Some((github, block)) = &self.checks else {
            return Vec::new();
        };
        let name = format!("{}:{}", fetched.project, fetched.jobset);
        if !block.covers_jobset(&name) {
            return Vec::new();
        }
        let short = super::github::short_name(&name);
        let completed = |conclusion: &str| ("completed", Some(conclusion.to_owned()));
        let evaluation = match phase {
            Phase::Evaluating => ("in_progress", None),
            Phase::Failed => completed("failure"),
            Phase::Building => completed("success"),
        };
        let aggregate = match (phase, state.state) {
            (Phase::Failed, _) => completed("failure"),
            (_, "success") => completed("success"),
            (_, "failure") => completed("failure"),
            _ => ("in_progress", None),
        };
        let mut targets = Vec::new();
        for (owner, repo, rev) in github.revisions(block, fetched.flake, fetched.inputs) {
            // The evaluation's check says only how the evaluation went, so
            // it is not sent again as builds finish.
            let evaluated = match phase {
                Phase::Building => format!("Hydra evaluated {name}"),
                _ => state.description.clone(),
            };
            for (check, (status, conclusion), text) in [
                (
                    format!("hydra/{short}"),
                    aggregate.clone(),
                    &state.description,
                ),
                (
                    format!("hydra/{short} evaluation"),
                    evaluation.clone(),
                    &evaluated,
                ),
            ] {
                let mut body = serde_json::json!({
                    "name": check,
                    "head_sha": rev,
                    "status": status,
                    "details_url": state.target_url,
                    "output": {"title": text, "summary": text},
                });
                if let Some(conclusion) = &conclusion {
                    body["conclusion"] = serde_json::json!(conclusion);
                }
                let state_word: &'static str = match conclusion.as_deref() {
                    Some("success") => "success",
                    Some(_) => "failure",
                    None => "in_progress",
                };
                targets.push(Target {
                    url: super::checks::list_url(github.api(), &owner, &repo, &rev),
                    context: check,
                    credential: format!("{owner}/{repo}"),
                    state: state_word,
                    body,
                });
            }
        }
        targets
    }

    /// Writes `targets` for `name` (`project:jobset`) and evaluation
    /// `eval` to the outbox.
    async fn desire(
        &self,
        cx: &Context,
        name: &str,
        eval: Option<EvalId>,
        targets: Vec<Target>,
    ) -> Result<(), String> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut tx = cx.pool.begin().await.map_err(|e| e.to_string())?;
        let (checks, statuses): (Vec<Target>, Vec<Target>) = targets
            .into_iter()
            .partition(|t| t.url.ends_with("/check-runs"));
        let mut due = false;
        for (forge, targets) in [("github", statuses), (super::checks::FORGE, checks)] {
            let owner = Owner {
                forge,
                job: name,
                build: None,
                eval,
            };
            due |= write_targets(&mut tx, &owner, targets)
                .await
                .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        if due {
            self.outbox.wake();
        }
        Ok(())
    }

    /// Pending or error for the evaluation `trace`, from what it fetched.
    async fn checkout(&self, cx: &Context, trace: &str, failed: bool) -> Result<(), String> {
        let Some(checkout) = commit_statuses::checkout(&cx.pool, trace)
            .await
            .map_err(|e| e.to_string())?
        else {
            // It failed before fetching: there is no revision to report on.
            return Ok(());
        };
        let base = cx.config.web.base_uri.trim_end_matches('/');
        let name = format!("{}:{}", checkout.project, checkout.jobset);
        let state = if failed {
            State {
                state: "error",
                description: format!("Hydra could not evaluate {name}"),
                target_url: format!(
                    "{base}/jobset/{}/{}#tabs-errors",
                    checkout.project, checkout.jobset
                ),
            }
        } else {
            State {
                state: "pending",
                description: format!("Hydra is evaluating {name}"),
                target_url: format!("{base}/jobset/{}/{}", checkout.project, checkout.jobset),
            }
        };
        let targets = self.targets(
            Fetched::of_checkout(&checkout),
            &state,
            if failed {
                Phase::Failed
            } else {
                Phase::Evaluating
            },
        );
        self.desire(cx, &name, None, targets).await
    }

    /// The state of evaluations `evals` (all of `build`'s, when given) from
    /// their builds.
    async fn progress(
        &self,
        cx: &Context,
        eval: Option<EvalId>,
        build: Option<BuildId>,
    ) -> Result<(), String> {
        let mut conn = cx.pool.acquire().await.map_err(|e| e.to_string())?;
        let sources = match (eval, build) {
            (Some(eval), _) => commit_statuses::source_of_eval(&mut conn, eval)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect(),
            (None, Some(build)) => commit_statuses::sources(&mut conn, build, None)
                .await
                .map_err(|e| e.to_string())?,
            (None, None) => Vec::new(),
        };
        drop(conn);
        let base = cx.config.web.base_uri.trim_end_matches('/');
        for source in sources {
            let name = format!("{}:{}", source.project, source.jobset);
            let by_checks = self
                .checks
                .as_ref()
                .is_some_and(|(_, b)| b.covers_jobset(&name));
            if !by_checks && !self.github.blocks().iter().any(|b| b.covers_jobset(&name)) {
                continue;
            }
            let progress = commit_statuses::eval_progress(&cx.pool, source.eval)
                .await
                .map_err(|e| e.to_string())?;
            let prefix = format!("Hydra evaluation #{} of {name}", source.eval);
            let (state, description) = if progress.unfinished > 0 {
                (
                    "pending",
                    format!(
                        "{prefix}: {} of {} builds finished",
                        progress.total - progress.unfinished,
                        progress.total
                    ),
                )
            } else if progress.failed > 0 {
                (
                    "failure",
                    format!(
                        "{prefix}: {} of {} builds failed",
                        progress.failed, progress.total
                    ),
                )
            } else {
                (
                    "success",
                    format!("{prefix}: all {} builds succeeded", progress.total),
                )
            };
            let state = State {
                state,
                description,
                target_url: format!("{base}/eval/{}", source.eval),
            };
            let targets = self.targets(Fetched::of_source(&source), &state, Phase::Building);
            self.desire(cx, &name, Some(source.eval), targets).await?;
        }
        Ok(())
    }
}

impl Plugin for EvaluationStatus {
    fn name(&self) -> &'static str {
        "GithubEvaluationStatus"
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::EvalCheckedOut { .. }
                | Event::EvalFailed { .. }
                | Event::EvalAdded { .. }
                | Event::EvalCached { .. }
                | Event::BuildFinished { .. }
        )
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            match event {
                Event::EvalCheckedOut { trace_id, .. } => self.checkout(cx, trace_id, false).await,
                Event::EvalFailed { trace_id, .. } => self.checkout(cx, trace_id, true).await,
                Event::EvalAdded { eval, .. } | Event::EvalCached { eval, .. } => {
                    self.progress(cx, Some(*eval), None).await
                }
                Event::BuildFinished { build, .. } => self.progress(cx, None, Some(*build)).await,
                _ => Ok(()),
            }
        })
    }
}
