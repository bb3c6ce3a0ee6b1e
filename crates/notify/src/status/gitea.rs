//! GiteaStatus: on when `<gitea_authorization>` has a token. An
//! evaluation with string inputs `gitea_status_repo` (naming its
//! repository input), `gitea_repo_owner`, `gitea_repo_name` and optionally
//! `gitea_http_url` (the Gitea's base URL; else the repository's host)
//! gets, for every build, a status with context `Hydra <job>` on that
//! repository's revision: pending, then success, error or failure. Signed
//! with `Authorization: token <gitea_authorization.<owner>>`.
//!
//! Unlike Hydra, builds an evaluation took over from an earlier one
//! (cached) get their status too.

use hydra_db::commit_statuses::{BuildFacts, Source};

use super::{Forge, Target, build_url, description, final_state, web_root};
use crate::Event;

/// The plugin.
#[derive(Clone, Debug)]
pub struct Gitea;

impl Gitea {
    /// On when `config` has Gitea tokens.
    pub fn from_config(config: &hydra_config::Config) -> Option<Gitea> {
        (!config.evaluator.gitea_authorization.is_empty()).then_some(Gitea)
    }
}

/// Where an evaluation's Gitea status goes: the base URL, owner, name and
/// revision; `None` (with a log line when half configured) otherwise.
fn location(source: &Source) -> Option<(String, String, String, String)> {
    let repo_input = source.value("gitea_status_repo")?;
    let (Some(owner), Some(name)) = (
        source.value("gitea_repo_owner"),
        source.value("gitea_repo_name"),
    ) else {
        tracing::warn!(eval = %source.eval, "gitea_status_repo without gitea_repo_owner and gitea_repo_name: no Gitea status");
        return None;
    };
    let Some(input) = source.input(repo_input).filter(|i| i.revision.is_some()) else {
        tracing::warn!(eval = %source.eval, input = %repo_input, "gitea_status_repo names no input with a revision");
        return None;
    };
    let root = match source.value("gitea_http_url").filter(|u| !u.is_empty()) {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => match input.uri.as_deref().and_then(web_root) {
            Some(root) => root,
            None => {
                tracing::warn!(eval = %source.eval, "cannot tell the Gitea host of a repository; set gitea_http_url");
                return None;
            }
        },
    };
    Some((root, owner.into(), name.into(), input.revision.clone()?))
}

impl Forge for Gitea {
    const PLUGIN: &'static str = "Hydra::Plugin::GiteaStatus";
    const FORGE: &'static str = "gitea";

    fn targets(
        &self,
        _event: &Event,
        build: &BuildFacts,
        sources: &[Source],
        base: &str,
        _logs: &hydra_config::DataDir,
    ) -> Vec<Target> {
        let state = if build.finished {
            final_state(build.status)
        } else {
            "pending"
        };
        let context = format!("Hydra {}", build.job);
        sources
            .iter()
            .filter_map(location)
            .map(|(root, owner, name, rev)| Target {
                url: format!("{root}/api/v1/repos/{owner}/{name}/statuses/{rev}"),
                context: context.clone(),
                credential: owner,
                state,
                body: serde_json::json!({
                    "state": state,
                    "target_url": build_url(base, build),
                    "description": description(build),
                    "context": context,
                }),
            })
            .collect()
    }
}
