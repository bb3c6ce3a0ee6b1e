//! GitlabStatus: on when `<gitlab_authorization>` has a token. An
//! evaluation with a `gitlab_status_repo` input (naming its repository
//! input) and a `gitlab_project_id` input gets, for every build, a status
//! named `Hydra <job>` on that repository's revision: pending, running
//! once the build started, then success, canceled or failed. Statuses go
//! to the repository's own host (`/api/v4/projects/<id>/statuses/<rev>`),
//! signed with `Private-Token: <gitlab_authorization.<id>>`.

use hydra_db::commit_statuses::{BuildFacts, Source};

use super::{Forge, Target, build_url, description, web_root};
use crate::Event;

/// The plugin.
#[derive(Clone, Debug)]
pub struct Gitlab;

impl Gitlab {
    /// On when `config` has GitLab tokens.
    pub fn from_config(config: &hydra_config::Config) -> Option<Gitlab> {
        (!config.evaluator.gitlab_authorization.is_empty()).then_some(Gitlab)
    }
}

/// GitLab's word for a finished build's status.
fn final_state(status: Option<i32>) -> &'static str {
    match super::final_state(status) {
        "success" => "success",
        "error" => "canceled",
        _ => "failed",
    }
}

/// Where an evaluation's GitLab status goes: the API root, the project id
/// and the revision; `None` (with a log line) when it names none.
fn location(source: &Source) -> Option<(String, String, String)> {
    let repo_input = source.value("gitlab_status_repo")?;
    let Some(project_id) = source.value("gitlab_project_id") else {
        tracing::warn!(eval = %source.eval, "gitlab_status_repo without gitlab_project_id: no GitLab status");
        return None;
    };
    let input = source.input(repo_input).filter(|i| i.revision.is_some());
    let Some(input) = input else {
        tracing::warn!(eval = %source.eval, input = %repo_input, "gitlab_status_repo names no input with a revision");
        return None;
    };
    let uri = input.uri.as_deref().unwrap_or_default();
    let Some(root) = web_root(uri) else {
        tracing::warn!(eval = %source.eval, %uri, "cannot tell the GitLab host of a repository");
        return None;
    };
    Some((root, project_id.to_string(), input.revision.clone()?))
}

impl Forge for Gitlab {
    const PLUGIN: &'static str = "Hydra::Plugin::GitlabStatus";
    const FORGE: &'static str = "gitlab";

    fn targets(
        &self,
        event: &Event,
        build: &BuildFacts,
        sources: &[Source],
        base: &str,
        _logs: &hydra_config::DataDir,
    ) -> Vec<Target> {
        let state = match (build.finished, event) {
            (true, _) => final_state(build.status),
            (false, Event::BuildStarted { .. }) => "running",
            (false, _) => "pending",
        };
        let name = format!("Hydra {}", build.job);
        sources
            .iter()
            .filter_map(location)
            .map(|(root, project_id, rev)| Target {
                url: format!("{root}/api/v4/projects/{project_id}/statuses/{rev}"),
                context: name.clone(),
                credential: project_id,
                state,
                body: serde_json::json!({
                    "state": state,
                    "target_url": build_url(base, build),
                    "description": description(build),
                    "name": name,
                }),
            })
            .collect()
    }
}
