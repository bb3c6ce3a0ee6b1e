//! Commit statuses (GithubStatus, GitlabStatus, GiteaStatus,
//! BitBucketStatus), through a durable outbox.
//!
//! A status plugin does not talk to its forge. On an event it reads the
//! build as it is now (under a share lock, so the build cannot finish in
//! between) and the evaluations it belongs to, and writes the state each
//! forge should show into `CommitStatuses` (`hydra_db::commit_statuses`):
//! the desired state per forge, repository, revision and context. The
//! `reporter` converges the forges on those rows. So a status is never
//! lost while notify is down (the rows wait, and the backlog of finished
//! builds writes their final states), a state overtaken before it was sent
//! (pending, when the build finished first) is never sent, and a state
//! sent is never sent again.

use std::collections::HashSet;
use std::sync::Arc;

use hydra_db::commit_statuses::{self, BuildFacts, Desire, Desired, Source};
use hydra_db::ids::{BuildId, EvalId};
use hydra_db::status::BuildStatus;
use tokio::sync::Notify;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};

pub mod app;
pub mod bitbucket;
pub mod checks;
pub mod credentials;
pub mod evaluation;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod reporter;

pub use credentials::Credentials;
pub use reporter::Reporter;

/// Where status plugins tell the reporter that something is due.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Tells the reporter to look for due states now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until `wake` was called (since the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// A status one forge should show.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Where it is POSTed.
    pub url: String,
    /// Its name there.
    pub context: String,
    /// Which configured credential signs it.
    pub credential: String,
    pub state: &'static str,
    pub body: serde_json::Value,
}

/// A forge's part: what statuses a build should have.
pub trait Forge: Send + Sync + std::fmt::Debug + 'static {
    /// The plugin's name (Hydra's: `Hydra::Plugin::GithubStatus`).
    const PLUGIN: &'static str;
    /// `github`, `gitlab`, `gitea` or `bitbucket`.
    const FORGE: &'static str;

    /// The statuses `build` should have now, on the revisions of
    /// `sources` (the evaluations of the event's head build), told by
    /// `event`.
    fn targets(
        &self,
        event: &Event,
        build: &BuildFacts,
        sources: &[Source],
        base: &str,
        logs: &hydra_config::DataDir,
    ) -> Vec<Target>;
}

/// A status plugin: a forge and the outbox it writes to.
#[derive(Debug)]
pub struct StatusPlugin<F> {
    forge: F,
    outbox: Outbox,
}

impl<F: Forge> StatusPlugin<F> {
    pub fn new(forge: F, outbox: Outbox) -> StatusPlugin<F> {
        StatusPlugin { forge, outbox }
    }
}

impl<F: Forge> Plugin for StatusPlugin<F> {
    fn name(&self) -> &'static str {
        F::PLUGIN
    }

    fn wants(&self, event: &Event) -> bool {
        matches!(
            event,
            Event::BuildQueued { .. }
                | Event::BuildStarted { .. }
                | Event::CachedBuildQueued { .. }
                | Event::CachedBuildFinished { .. }
                | Event::BuildFinished { .. }
        )
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let (head, only) = match event {
                Event::CachedBuildQueued { eval, build }
                | Event::CachedBuildFinished { eval, build } => (*build, Some(*eval)),
                Event::BuildQueued { build }
                | Event::BuildStarted { build }
                | Event::BuildFinished { build, .. } => (*build, None),
                _ => return Ok(()),
            };
            // The revisions are the head build's evaluations', for the
            // head and its dependents alike: read once.
            let sources = {
                let mut conn = cx.pool.acquire().await.map_err(|e| e.to_string())?;
                commit_statuses::sources(&mut conn, head, only)
                    .await
                    .map_err(|e| format!("reading the evaluations of build {head}: {e}"))?
            };
            let mut due = false;
            // The head build first, then its dependents, each in its own
            // transaction (one build locked at a time).
            for build in event.builds() {
                due |= self
                    .record(cx, event, build, &sources)
                    .await
                    .map_err(|e| format!("recording the statuses of build {build}: {e}"))?;
            }
            if due {
                self.outbox.wake();
            }
            Ok(())
        })
    }
}

impl<F: Forge> StatusPlugin<F> {
    /// Writes the states `build` should show on the revisions of
    /// `sources` (the head build's evaluations); whether any is due.
    async fn record(
        &self,
        cx: &Context,
        event: &Event,
        build: BuildId,
        sources: &[Source],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = cx.pool.begin().await?;
        let Some(facts) = commit_statuses::build_facts_locked(&mut tx, build).await? else {
            return Ok(false);
        };
        let base = cx.config.web.base_uri.trim_end_matches('/');
        let targets = self
            .forge
            .targets(event, &facts, sources, base, &cx.data_dir);
        let owner = Owner {
            forge: F::FORGE,
            job: &facts.full_name(),
            build: Some(build),
            eval: None,
        };
        let due = write_targets(&mut tx, &owner, targets).await?;
        tx.commit().await?;
        Ok(due)
    }
}

/// Whose statuses targets are: a forge's, for a build or an evaluation
/// of `job` (`project:jobset:job` or `project:jobset`).
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub forge: &'static str,
    pub job: &'a str,
    pub build: Option<BuildId>,
    pub eval: Option<EvalId>,
}

/// Writes `targets` (each URL and context once) as `owner`'s desired
/// states; whether any is due.
pub async fn write_targets(
    conn: &mut sqlx::PgConnection,
    owner: &Owner<'_>,
    targets: Vec<Target>,
) -> Result<bool, sqlx::Error> {
    let now = hydra_db::now();
    let mut seen = HashSet::new();
    let mut due = false;
    for target in targets {
        if !seen.insert((target.url.clone(), target.context.clone())) {
            continue;
        }
        let body = target.body.to_string();
        let desire = commit_statuses::desire(
            conn,
            &Desired {
                forge: owner.forge,
                url: &target.url,
                context: &target.context,
                credential: &target.credential,
                job: owner.job,
                build: owner.build,
                eval: owner.eval,
                state: target.state,
                body: &body,
            },
            now,
        )
        .await?;
        if desire != Desire::Unchanged {
            tracing::debug!(
                forge = owner.forge,
                url = %target.url,
                context = %target.context,
                state = target.state,
                "commit status due"
            );
            due = true;
        }
    }
    Ok(due)
}

/// The status plugins a configuration enables, and the GitHub App their
/// check runs are sent with (when `<github_app>` is set).
pub struct Enabled {
    pub plugins: Vec<Arc<dyn Plugin>>,
    pub app: Option<Arc<app::App>>,
}

impl std::fmt::Debug for Enabled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.name()).collect();
        f.debug_struct("Enabled")
            .field("plugins", &names)
            .field("app", &self.app.is_some())
            .finish()
    }
}

/// The status plugins `config` enables, writing to `outbox`.
pub fn plugins(config: &hydra_config::Config, outbox: &Outbox) -> Result<Enabled, String> {
    let mut plugins: Vec<Arc<dyn Plugin>> = Vec::new();
    if let Some(forge) = github::Github::from_config(config)? {
        plugins.push(Arc::new(StatusPlugin::new(forge, outbox.clone())));
    }
    if let Some(evaluations) = evaluation::EvaluationStatus::from_config(config, outbox)? {
        plugins.push(evaluations);
    }
    if let Some(forge) = gitlab::Gitlab::from_config(config) {
        plugins.push(Arc::new(StatusPlugin::new(forge, outbox.clone())));
    }
    if let Some(forge) = gitea::Gitea::from_config(config) {
        plugins.push(Arc::new(StatusPlugin::new(forge, outbox.clone())));
    }
    if let Some(forge) = bitbucket::Bitbucket::from_config(config) {
        plugins.push(Arc::new(StatusPlugin::new(forge, outbox.clone())));
    }
    let app = match checks::from_config(config)? {
        Some((app, forge)) => {
            plugins.push(Arc::new(StatusPlugin::new(forge, outbox.clone())));
            Some(app)
        }
        None => None,
    };
    Ok(Enabled { plugins, app })
}

/// How a finished build's status reads on forges that know success,
/// error and failure (GitHub, Gitea): aborted, cancelled and the limits
/// are errors of the system, the rest failures of the job.
pub fn final_state(status: Option<i32>) -> &'static str {
    match status.and_then(BuildStatus::from_code) {
        Some(BuildStatus::Succeeded) => "success",
        Some(
            BuildStatus::Aborted
            | BuildStatus::Cancelled
            | BuildStatus::LogLimitExceeded
            | BuildStatus::OutputLimitExceeded,
        ) => "error",
        _ => "failure",
    }
}

/// `<base>/build/<id>`.
pub fn build_url(base: &str, build: &BuildFacts) -> String {
    format!("{base}/build/{}", build.id)
}

/// `Hydra build #<id> of <project:jobset:job>`.
pub fn description(build: &BuildFacts) -> String {
    format!("Hydra build #{} of {}", build.id, build.full_name())
}

/// `scheme://host[:port]` of a repository's URL: its own for `http(s)`,
/// `https://host` for ssh and scp-style (`git@host:path`) ones; `None`
/// when there is no host.
pub fn web_root(uri: &str) -> Option<String> {
    let uri = uri.strip_prefix("git+").unwrap_or(uri);
    if let Some((scheme, rest)) = uri.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host_port.is_empty() {
            return None;
        }
        return Some(match scheme {
            "http" | "https" => format!("{scheme}://{host_port}"),
            // An ssh port is not the web's.
            _ => format!(
                "https://{}",
                host_port.split(':').next().unwrap_or_default()
            ),
        });
    }
    // scp-style: [user@]host:path
    let (before, _) = uri.split_once(':')?;
    let host = before.rsplit_once('@').map_or(before, |(_, h)| h);
    (!host.is_empty() && !host.contains('/')).then(|| format!("https://{host}"))
}

/// The last two path components of a repository's URL (after `/` or `:`),
/// `.git` removed: its owner and name.
pub fn owner_and_name(uri: &str) -> Option<(String, String)> {
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let mut parts = path.rsplit(['/', ':']);
    let name = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty())?;
    Some((owner.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_give_their_web_root_and_owner_and_name() {
        assert_eq!(
            web_root("https://gitlab.example.com/group/repo.git").as_deref(),
            Some("https://gitlab.example.com")
        );
        assert_eq!(
            web_root("http://127.0.0.1:8080/o/r").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            web_root("ssh://git@host.example:2222/o/r").as_deref(),
            Some("https://host.example")
        );
        assert_eq!(
            web_root("git@gitlab.com:o/r.git").as_deref(),
            Some("https://gitlab.com")
        );
        assert_eq!(web_root("/local/path"), None);
        assert_eq!(
            owner_and_name("git@github.com:NixOS/nixpkgs.git"),
            Some(("NixOS".into(), "nixpkgs".into()))
        );
        assert_eq!(
            owner_and_name("https://github.com/NixOS/hydra/"),
            Some(("NixOS".into(), "hydra".into()))
        );
        assert_eq!(owner_and_name("repo"), None);
    }

    #[test]
    fn final_states_follow_hydra() {
        assert_eq!(final_state(Some(0)), "success");
        for code in [3, 4, 10, 11] {
            assert_eq!(final_state(Some(code)), "error", "{code}");
        }
        for code in [1, 2, 5, 6, 7, 9, 12] {
            assert_eq!(final_state(Some(code)), "failure", "{code}");
        }
    }
}
