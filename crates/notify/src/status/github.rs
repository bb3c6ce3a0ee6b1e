//! GithubStatus: `<githubstatus>` blocks. Every block whose `jobs` matches
//! the build's `project:jobset:job` gives a status on each revision the
//! build was evaluated from: a flake evaluation's locked GitHub flake, or
//! a legacy evaluation's `inputs`. Pending until the build finishes, then
//! success, error or failure (`final_state`).
//!
//! Statuses go to `github_api_url` (default `https://api.github.com`; a
//! GitHub Enterprise's `https://HOST/api/v3` works the same), signed with
//! `github_authorization.<owner>` or else the block's `authorization`.

use std::sync::LazyLock;

use hydra_db::commit_statuses::{BuildFacts, Source, SourceInput};

use super::{Forge, Target, build_url, description, final_state, owner_and_name};
use crate::Event;
use crate::plugins::{JobsPattern, config_blocks, text, texts, truthy};

/// A `<githubstatus>` block.
#[derive(Clone, Debug)]
pub struct Block {
    /// Builds of these jobs get statuses.
    pub jobs: Option<JobsPattern>,
    /// Evaluations of these jobsets (`project:jobset`) get a status.
    pub jobsets: Option<JobsPattern>,
    /// The evaluation status's context (default
    /// `ci/hydra:<project>:<jobset>`, a `-pr-N` removed).
    pub eval_context: Option<String>,
    inputs: Vec<String>,
    context: Option<String>,
    use_short_context: bool,
    exclude_build_from_context: bool,
    description: Option<String>,
    /// The whole `Authorization` header (`token …`, `Bearer …`).
    pub authorization: Option<String>,
}

/// The plugin: its blocks, and GitHub's API and web host.
#[derive(Clone, Debug)]
pub struct Github {
    blocks: Vec<Block>,
    api: String,
    /// The host of GitHub's web (and git) URLs: `github.com`, or the
    /// Enterprise host of `api`.
    host: String,
}

impl Github {
    /// The plugin the `<githubstatus>` blocks of `config` make (`None`:
    /// there are none).
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Github>, String> {
        let blocks = blocks(config)?;
        if blocks.is_empty() {
            return Ok(None);
        }
        let api = config.evaluator.github_api_url.clone();
        Ok(Some(Github {
            blocks,
            host: web_host(&api),
            api,
        }))
    }
}

impl Github {
    /// GitHub's API and web host, without blocks (for check runs).
    pub fn bare(config: &hydra_config::Config) -> Github {
        let api = config.evaluator.github_api_url.clone();
        Github {
            blocks: Vec::new(),
            host: web_host(&api),
            api,
        }
    }

    /// GitHub's API.
    pub fn api(&self) -> &str {
        &self.api
    }
}

/// `project:jobset:job` (or `project:jobset`) with a `-pr-N` dropped.
pub fn short_name(full: &str) -> String {
    SHORT_PR.replacen(full, 1, "").into_owned()
}

/// The `<githubstatus>` blocks of `config` (one without `jobs` matches
/// nothing, as in Hydra).
pub fn blocks(config: &hydra_config::Config) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    for tree in config_blocks(config, "githubstatus") {
        let jobs = JobsPattern::of_block("githubstatus", tree)?;
        let jobsets = text(tree, "jobsets")
            .map(|p| JobsPattern::new("githubstatus", &p))
            .transpose()?;
        if jobs.is_none() && jobsets.is_none() {
            tracing::warn!(
                "a <githubstatus> block has neither jobs nor jobsets: it matches nothing"
            );
            continue;
        }
        blocks.push(Block {
            jobs,
            jobsets,
            eval_context: text(tree, "evalContext").filter(|c| !c.is_empty()),
            inputs: texts(tree, "inputs"),
            context: text(tree, "context").filter(|c| !c.is_empty()),
            use_short_context: truthy(tree, "useShortContext"),
            exclude_build_from_context: truthy(tree, "excludeBuildFromContext"),
            description: text(tree, "description").filter(|d| !d.is_empty()),
            authorization: text(tree, "authorization").filter(|a| !a.is_empty()),
        });
    }
    Ok(blocks)
}

/// The web host of a GitHub API URL: `github.com` for the public API,
/// the Enterprise host otherwise.
fn web_host(api: &str) -> String {
    let host = api
        .split_once("://")
        .map_or(api, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    match host {
        "api.github.com" | "" => "github.com".into(),
        other => other.into(),
    }
}

static SHORT_PR: LazyLock<regex::Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    regex::Regex::new(r"-pr-\d+").expect("a valid pattern")
});

impl Block {
    /// A block of `jobs` and `jobsets` reporting on `inputs` (a
    /// `<github_app>`'s).
    pub fn for_checks(
        jobs: Option<JobsPattern>,
        jobsets: Option<JobsPattern>,
        inputs: Vec<String>,
    ) -> Block {
        Block {
            jobs,
            jobsets,
            eval_context: None,
            inputs,
            context: None,
            use_short_context: false,
            exclude_build_from_context: false,
            description: None,
            authorization: None,
        }
    }

    /// Whether builds of `full_name` get statuses from this block.
    pub fn covers_job(&self, full_name: &str) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.matches(full_name))
    }

    /// Whether evaluations of `project:jobset` get a status from it.
    pub fn covers_jobset(&self, name: &str) -> bool {
        self.jobsets.as_ref().is_some_and(|j| j.matches(name))
    }

    /// The evaluation status's context for `project`'s `jobset`.
    pub fn eval_context(&self, project: &str, jobset: &str) -> String {
        self.eval_context
            .clone()
            .unwrap_or_else(|| format!("ci/hydra:{project}:{}", SHORT_PR.replacen(jobset, 1, "")))
    }

    /// The status's context for `build`.
    fn context(&self, build: &BuildFacts) -> String {
        if let Some(context) = &self.context {
            return context.clone();
        }
        let full = build.full_name();
        let name = if self.use_short_context {
            format!("ci/hydra:{}", SHORT_PR.replacen(&full, 1, ""))
        } else {
            format!("continuous-integration/hydra:{full}")
        };
        if self.exclude_build_from_context {
            name
        } else {
            format!("{name}:{}", build.id)
        }
    }
}

/// Owner, repository and revision of a locked flake on GitHub:
/// `github:OWNER/REPO/REV[?…]`, or `git+ssh://git@HOST/OWNER/REPO?…rev=REV`
/// (also `git+https://HOST/…`), `HOST` being GitHub's.
pub fn flake_revision(flake: &str, host: &str) -> Option<(String, String, String)> {
    if let Some(rest) = flake.strip_prefix("github:") {
        let path = rest.split('?').next().unwrap_or_default();
        let mut parts = path.split('/');
        let (owner, repo, rev) = (parts.next()?, parts.next()?, parts.next()?);
        return (parts.next().is_none()
            && is_revision(rev)
            && !owner.is_empty()
            && !repo.is_empty())
        .then(|| (owner.into(), repo.into(), rev.into()));
    }
    let rest = flake
        .strip_prefix("git+ssh://")
        .or_else(|| flake.strip_prefix("git+https://"))?;
    let (location, query) = rest.split_once('?')?;
    let location = location.rsplit_once('@').map_or(location, |(_, l)| l);
    let (flake_host, path) = location.split_once('/')?;
    if flake_host.split(':').next() != Some(host) {
        return None;
    }
    let (owner, repo) = owner_and_name(path)?;
    let rev = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("rev="))
        .filter(|r| is_revision(r))?;
    Some((owner, repo, rev.into()))
}

fn is_revision(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Github {
    /// The revisions a block reports on: `flake`'s, or the block's
    /// `inputs`' among `inputs`.
    pub fn revisions(
        &self,
        block: &Block,
        flake: Option<&str>,
        inputs: &[SourceInput],
    ) -> Vec<(String, String, String)> {
        if let Some(flake) = flake {
            return match flake_revision(flake, &self.host) {
                Some(found) => vec![found],
                None => {
                    tracing::debug!(%flake, "not a GitHub flake: no status");
                    Vec::new()
                }
            };
        }
        let mut found = Vec::new();
        for name in &block.inputs {
            let Some(input) = inputs.iter().find(|i| i.name == *name) else {
                tracing::debug!(input = %name, "the evaluation has no such input");
                continue;
            };
            let (Some(uri), Some(rev)) = (&input.uri, &input.revision) else {
                continue;
            };
            match owner_and_name(uri) {
                Some((owner, repo)) => found.push((owner, repo, rev.clone())),
                None => {
                    tracing::warn!(input = %name, %uri, "cannot tell the GitHub repository of an input")
                }
            }
        }
        found
    }

    /// Where statuses for `owner/repo` at `rev` go.
    pub fn url(&self, owner: &str, repo: &str, rev: &str) -> String {
        format!("{}/repos/{owner}/{repo}/statuses/{rev}", self.api)
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }
}

impl Forge for Github {
    const PLUGIN: &'static str = "Hydra::Plugin::GithubStatus";
    const FORGE: &'static str = "github";

    fn targets(
        &self,
        _event: &Event,
        build: &BuildFacts,
        sources: &[Source],
        base: &str,
        _logs: &hydra_config::DataDir,
    ) -> Vec<Target> {
        let full = build.full_name();
        let state = if build.finished {
            final_state(build.status)
        } else {
            "pending"
        };
        let mut targets = Vec::new();
        // Every matching block (Hydra's first one used the evaluations up).
        for block in self.blocks.iter().filter(|b| b.covers_job(&full)) {
            let context = block.context(build);
            let description = block
                .description
                .clone()
                .unwrap_or_else(|| description(build));
            for source in sources {
                for (owner, repo, rev) in
                    self.revisions(block, source.flake.as_deref(), &source.inputs)
                {
                    targets.push(Target {
                        url: self.url(&owner, &repo, &rev),
                        context: context.clone(),
                        credential: owner,
                        state,
                        body: serde_json::json!({
                            "state": state,
                            "target_url": build_url(base, build),
                            "description": description,
                            "context": context,
                        }),
                    });
                }
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn locked_github_flakes_give_owner_repository_and_revision() {
        let want = Some(("NixOS".into(), "hydra".into(), REV.into()));
        assert_eq!(
            flake_revision(&format!("github:NixOS/hydra/{REV}"), "github.com"),
            want
        );
        assert_eq!(
            flake_revision(
                &format!("github:NixOS/hydra/{REV}?narHash=sha256-x"),
                "github.com"
            ),
            want
        );
        assert_eq!(
            flake_revision(
                &format!("git+ssh://git@github.com/NixOS/hydra?ref=main&rev={REV}"),
                "github.com"
            ),
            want
        );
        assert_eq!(
            flake_revision(
                &format!("git+https://github.com/NixOS/hydra.git?rev={REV}"),
                "github.com"
            ),
            want
        );
        assert_eq!(
            flake_revision(
                &format!("git+https://gitlab.com/NixOS/hydra?rev={REV}"),
                "github.com"
            ),
            None
        );
        assert_eq!(
            flake_revision("github:NixOS/hydra/main", "github.com"),
            None
        );
        assert_eq!(flake_revision("path:/x", "github.com"), None);
    }

    #[test]
    fn enterprise_apis_have_their_own_web_host() {
        assert_eq!(web_host("https://api.github.com"), "github.com");
        assert_eq!(
            web_host("https://ghe.example.com/api/v3"),
            "ghe.example.com"
        );
        assert_eq!(web_host("http://127.0.0.1:9000/api"), "127.0.0.1");
    }
}
