//! Which credential signs a status, looked up when it is sent (so a
//! rotated token applies to states already waiting): never stored in the
//! database, never logged.

use std::collections::BTreeMap;

use hydra_config::Secret;
use hydra_db::commit_statuses::Delivery;

use super::github;

/// How a request is signed.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A header and its whole value.
    Header(&'static str, Secret),
    /// HTTP Basic.
    Basic(String, Secret),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Header(name, _) => write!(f, "Header({name}, …)"),
            Auth::Basic(user, _) => write!(f, "Basic({user}, …)"),
        }
    }
}

/// The configured credentials of every forge.
#[derive(Clone, Default)]
pub struct Credentials {
    github: BTreeMap<String, Secret>,
    github_blocks: Vec<github::Block>,
    gitlab: BTreeMap<String, Secret>,
    gitea: BTreeMap<String, Secret>,
    bitbucket: Option<(String, Secret)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("github_owners", &self.github.keys().collect::<Vec<_>>())
            .field("gitlab_projects", &self.gitlab.keys().collect::<Vec<_>>())
            .field("gitea_owners", &self.gitea.keys().collect::<Vec<_>>())
            .field("bitbucket", &self.bitbucket.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Credentials {
    pub fn from_config(config: &hydra_config::Config) -> Result<Credentials, String> {
        Ok(Credentials {
            github: config.evaluator.github_authorization.clone(),
            github_blocks: github::blocks(config)?,
            gitlab: config.evaluator.gitlab_authorization.clone(),
            gitea: config.evaluator.gitea_authorization.clone(),
            bitbucket: super::bitbucket::account(config).map(|(u, p)| (u, Secret::new(p))),
        })
    }

    /// How `delivery` is signed, or why it cannot be.
    pub fn auth(&self, delivery: &Delivery) -> Result<Auth, String> {
        let owner = &delivery.credential;
        match delivery.forge.as_str() {
            "github" => self
                .github
                .get(owner)
                .cloned()
                .or_else(|| {
                    self.github_blocks
                        .iter()
                        .filter(|b| b.covers_job(&delivery.job) || b.covers_jobset(&delivery.job))
                        .find_map(|b| b.authorization.clone().map(Secret::new))
                })
                .map(|token| Auth::Header("Authorization", token))
                .ok_or_else(|| {
                    format!(
                        "no GitHub credential for ‘{owner}’: set github_authorization.{owner} \
                         or the <githubstatus> block's authorization"
                    )
                }),
            "gitlab" => self
                .gitlab
                .get(owner)
                .map(|token| Auth::Header("Private-Token", token.clone()))
                .ok_or_else(|| format!("no GitLab token: set gitlab_authorization.{owner}")),
            "gitea" => self
                .gitea
                .get(owner)
                .map(|token| {
                    Auth::Header(
                        "Authorization",
                        Secret::new(format!("token {}", token.expose())),
                    )
                })
                .ok_or_else(|| format!("no Gitea token: set gitea_authorization.{owner}")),
            "bitbucket" => self
                .bitbucket
                .as_ref()
                .map(|(user, password)| Auth::Basic(user.clone(), password.clone()))
                .ok_or_else(|| {
                    "no Bitbucket account: set <bitbucket> username and password".into()
                }),
            other => Err(format!("unknown forge ‘{other}’")),
        }
    }
}
