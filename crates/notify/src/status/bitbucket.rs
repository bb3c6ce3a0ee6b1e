//! BitBucketStatus: on with `enable_bitbucket_status = 1`, signed with
//! the `<bitbucket> username password </bitbucket>` account (HTTP Basic).
//! Every input of the build's evaluations whose jobset input has
//! `emailresponsible` set and whose URL is on Bitbucket gets a build
//! status keyed by the build id: INPROGRESS, then SUCCESSFUL or FAILED.
//! Statuses go to `bitbucket_api_url` (default `https://api.bitbucket.org`).

use hydra_db::commit_statuses::{BuildFacts, Source};
use hydra_db::status::BuildStatus;

use super::{Forge, Target, build_url, description, owner_and_name};
use crate::Event;
use crate::plugins::{config_blocks, text};

/// The plugin, with Bitbucket's API.
#[derive(Clone, Debug)]
pub struct Bitbucket {
    api: String,
}

/// `<bitbucket>`'s account, when it has both keys.
pub fn account(config: &hydra_config::Config) -> Option<(String, String)> {
    let tree = config_blocks(config, "bitbucket").into_iter().next_back()?;
    Some((text(tree, "username")?, text(tree, "password")?))
}

impl Bitbucket {
    /// On with `enable_bitbucket_status = 1`.
    pub fn from_config(config: &hydra_config::Config) -> Option<Bitbucket> {
        (text(&config.raw, "enable_bitbucket_status").as_deref() == Some("1")).then(|| Bitbucket {
            api: config.evaluator.bitbucket_api_url.clone(),
        })
    }
}

impl Forge for Bitbucket {
    const PLUGIN: &'static str = "Hydra::Plugin::BitBucketStatus";
    const FORGE: &'static str = "bitbucket";

    fn targets(
        &self,
        _event: &Event,
        build: &BuildFacts,
        sources: &[Source],
        base: &str,
        _logs: &hydra_config::DataDir,
    ) -> Vec<Target> {
        let state = match (
            build.finished,
            build.status.and_then(BuildStatus::from_code),
        ) {
            (false, _) => "INPROGRESS",
            (true, Some(BuildStatus::Succeeded)) => "SUCCESSFUL",
            (true, _) => "FAILED",
        };
        let key = build.id.to_string();
        let mut targets = Vec::new();
        for source in sources {
            for input in &source.inputs {
                if input.responsible.is_none() {
                    tracing::debug!(eval = %source.eval, input = %input.name, "the jobset has no such input any more");
                }
                let (Some(true), Some(uri), Some(rev)) =
                    (input.responsible, &input.uri, &input.revision)
                else {
                    continue;
                };
                if !uri.contains("bitbucket") {
                    continue;
                }
                let Some((owner, repo)) = owner_and_name(uri) else {
                    continue;
                };
                targets.push(Target {
                    url: format!(
                        "{}/2.0/repositories/{owner}/{repo}/commit/{rev}/statuses/build",
                        self.api
                    ),
                    context: key.clone(),
                    credential: String::new(),
                    state,
                    body: serde_json::json!({
                        "state": state,
                        "url": build_url(base, build),
                        "name": build.full_name(),
                        "key": key,
                        "description": description(build),
                    }),
                });
            }
        }
        targets
    }
}
