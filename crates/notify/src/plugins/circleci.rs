//! CircleCINotification: `<circleci>` blocks with `jobs`, `vcstype`,
//! `username`, `project`, `branch`, `token` and `force`. When a build of
//! the event (the head or a dependent) that matches a block succeeded (or
//! always, with `force`), the block's CircleCI project is triggered: a
//! POST to `<circleci_api_url>/api/v1.1/project/<vcstype>/<username>/
//! <project>/tree/<branch>?circle-token=<token>`, once per URL.

use std::sync::Arc;

use hydra_db::build_reports;
use hydra_db::status::BuildStatus;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{JobsPattern, config_blocks, text, truthy};

#[derive(Clone, Debug)]
struct Block {
    jobs: JobsPattern,
    /// The trigger's URL without the token.
    url: String,
    token: String,
    force: bool,
}

/// The plugin.
#[derive(Debug)]
pub struct CircleCi {
    blocks: Vec<Block>,
    client: reqwest::Client,
}

impl CircleCi {
    /// The plugin `config`'s `<circleci>` blocks make (`None`: there are
    /// none); a block missing a key is an error naming it.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<CircleCi>>, String> {
        let api = text(&config.raw, "circleci_api_url")
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "https://circleci.com".into());
        let api = api.trim_end_matches('/');
        let mut blocks = Vec::new();
        for tree in config_blocks(config, "circleci") {
            let Some(jobs) = JobsPattern::of_block("circleci", tree)? else {
                tracing::warn!("a <circleci> block has no jobs: it matches nothing");
                continue;
            };
            let key = |k: &str| {
                text(tree, k)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("a <circleci> block has no {k}"))
            };
            let path = |v: String| {
                percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            blocks.push(Block {
                jobs,
                url: format!(
                    "{api}/api/v1.1/project/{}/{}/{}/tree/{}",
                    path(key("vcstype")?),
                    path(key("username")?),
                    path(key("project")?),
                    path(key("branch")?),
                ),
                token: key("token")?,
                force: truthy(tree, "force"),
            });
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(CircleCi {
            blocks,
            client: crate::http::client()?,
        })))
    }
}

impl Plugin for CircleCi {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::CircleCINotification"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let builds = build_reports::reports(&cx.pool, &event.builds())
                .await
                .map_err(|e| format!("reading the builds: {e}"))?;
            let mut triggers: Vec<&Block> = Vec::new();
            for build in builds.iter().filter(|b| b.finished) {
                let succeeded =
                    build.status.and_then(BuildStatus::from_code) == Some(BuildStatus::Succeeded);
                let full = build.full_name();
                for block in &self.blocks {
                    if block.jobs.matches(&full)
                        && (succeeded || block.force)
                        && !triggers
                            .iter()
                            .any(|t| t.url == block.url && t.token == block.token)
                    {
                        triggers.push(block);
                    }
                }
            }
            let mut failures = Vec::new();
            for block in triggers {
                let request = self
                    .client
                    .post(&block.url)
                    .query(&[("circle-token", block.token.as_str())])
                    .header(reqwest::header::CONTENT_TYPE, "application/json");
                if let Err(e) = crate::http::send_logged(self.name(), request).await {
                    failures.push(e);
                }
            }
            crate::plugins::all_done(failures)
        })
    }
}
