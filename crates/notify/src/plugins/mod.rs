//! The notification plugins, and what they share: reading their
//! configuration blocks and matching jobs.

use std::sync::Arc;

use hydra_config::general::{Tree, Value};

use crate::plugin::Plugin;
use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::status::{Outbox, Reporter};

pub mod authors;
pub mod circleci;
pub mod compress_log;
pub mod coverity;
pub mod declarative;
pub mod email;
pub mod influxdb;
pub mod run_command;
pub mod s3_backup;
pub mod slack;
pub mod sotest;

/// What a configuration enables: the plugins, and the reporter of the
/// commit statuses they write (when a status plugin is on).
pub struct Plugins {
    pub list: Vec<Arc<dyn Plugin>>,
    pub reporter: Option<Arc<Reporter>>,
    /// The role's metrics, which the plugins' runs and the reporter count.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.list.iter().map(|p| p.name()).collect();
        f.debug_struct("Plugins")
            .field("list", &names)
            .field("reporter", &self.reporter.is_some())
            .finish()
    }
}

/// The plugins `config` enables (DeclarativeJobsets always), or what is
/// wrong with a plugin's configuration.
pub fn enabled(config: &hydra_config::Config, pool: &PgPool) -> Result<Plugins, String> {
    let mut list: Vec<Arc<dyn Plugin>> = vec![Arc::new(declarative::DeclarativeJobsets)];
    if let Some(run_command) = run_command::RunCommand::from_config(config)? {
        list.push(Arc::new(run_command));
    }
    if let Some(compress) = compress_log::CompressLog::from_config(config) {
        list.push(Arc::new(compress));
    }
    if let Some(email) = email::Email::from_config(config)? {
        list.push(email);
    }
    if let Some(slack) = slack::Slack::from_config(config)? {
        list.push(slack);
    }
    if let Some(influxdb) = influxdb::InfluxDb::from_config(config)? {
        list.push(influxdb);
    }
    if let Some(circleci) = circleci::CircleCi::from_config(config)? {
        list.push(circleci);
    }
    if let Some(coverity) = coverity::CoverityScan::from_config(config)? {
        list.push(coverity);
    }
    if let Some(sotest) = sotest::SoTest::from_config(config)? {
        list.push(sotest);
    }
    if let Some(backup) = s3_backup::S3Backup::from_config(config)? {
        list.push(backup);
    }
    let metrics = Arc::new(Metrics::default());
    let outbox = Outbox::default();
    let crate::status::Enabled {
        plugins: statuses,
        app,
    } = crate::status::plugins(config, &outbox)?;
    let reporter = if statuses.is_empty() {
        None
    } else {
        Some(Arc::new(Reporter::new(
            pool.clone(),
            config,
            outbox,
            metrics.clone(),
            app,
        )?))
    };
    list.extend(statuses);
    Ok(Plugins {
        list,
        reporter,
        metrics,
    })
}

/// The `<name>` blocks of `config`, in order (a plugin may have several).
pub(crate) fn config_blocks<'a>(config: &'a hydra_config::Config, name: &str) -> Vec<&'a Tree> {
    config
        .raw
        .get(name)
        .map(|value| {
            value
                .occurrences()
                .into_iter()
                .filter_map(|v| match v {
                    Value::Block { tree, .. } => Some(tree),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A scalar's text (the last, when the key is repeated).
pub(crate) fn text(tree: &Tree, key: &str) -> Option<String> {
    match tree.get(key)? {
        Value::Scalar { value, .. } => value.clone(),
        Value::List(items) => match items.last()? {
            Value::Scalar { value, .. } => value.clone(),
            _ => None,
        },
        Value::Block { .. } => None,
    }
}

/// Every text given for `key` (a repeated key, or several names on one
/// line).
pub(crate) fn texts(tree: &Tree, key: &str) -> Vec<String> {
    let Some(value) = tree.get(key) else {
        return Vec::new();
    };
    value
        .occurrences()
        .into_iter()
        .filter_map(|v| match v {
            Value::Scalar { value, .. } => value.clone(),
            _ => None,
        })
        .flat_map(|v| {
            v.split_whitespace()
                .map(String::from)
                .collect::<Vec<String>>()
        })
        .collect()
}

/// Perl's truth of a key: set, and neither empty nor `0`.
pub(crate) fn truthy(tree: &Tree, key: &str) -> bool {
    text(tree, key).is_some_and(|v| !v.is_empty() && v != "0")
}

/// `Ok` when none of a plugin's messages failed, else the failures
/// together (the task is then retried).
pub(crate) fn all_done(failures: Vec<String>) -> Result<(), String> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// A status as reports name it (Hydra's `showStatus`): aborted, timed
/// out and the limits read "Failed".
pub fn show_status(status: Option<i32>) -> &'static str {
    use hydra_db::status::BuildStatus;
    match status.and_then(BuildStatus::from_code) {
        Some(BuildStatus::Succeeded) => "Success",
        Some(BuildStatus::DependencyFailed) => "Dependency failed",
        Some(BuildStatus::Cancelled) => "Cancelled",
        Some(BuildStatus::FailedWithOutput) => "Failed with output",
        _ => "Failed",
    }
}

/// A `jobs` pattern: a regular expression that must match the whole of
/// `project:jobset:job` (Hydra anchors it without grouping, so `a|b`
/// meant `^a` or `b$`; here it means `a` or `b`).
#[derive(Clone, Debug)]
pub struct JobsPattern(regex::Regex);

impl JobsPattern {
    /// `pattern`, or an error naming the block it is in.
    pub fn new(block: &str, pattern: &str) -> Result<JobsPattern, String> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(JobsPattern)
            .map_err(|e| format!("<{block}> jobs ‘{pattern}’ is not a regular expression: {e}"))
    }

    /// The block's `jobs`: `None` when the block has none (then it
    /// matches nothing).
    pub fn of_block(block: &str, tree: &Tree) -> Result<Option<JobsPattern>, String> {
        text(tree, "jobs")
            .map(|pattern| JobsPattern::new(block, &pattern))
            .transpose()
    }

    pub fn matches(&self, full_name: &str) -> bool {
        self.0.is_match(full_name)
    }
}

#[cfg(test)]
mod tests {
    use super::JobsPattern;

    #[test]
    fn jobs_patterns_match_the_whole_name_alternatives_included() {
        let p = JobsPattern::new("githubstatus", "nixpkgs:trunk:.*|other:.*").unwrap();
        assert!(p.matches("nixpkgs:trunk:hello"));
        assert!(p.matches("other:x:y"));
        assert!(!p.matches("nixpkgs:trunk2:hello"));
        assert!(!p.matches("xnixpkgs:trunk:hello"), "anchored as a whole");
        let exact = JobsPattern::new("slack", "p:j:job").unwrap();
        assert!(!exact.matches("p:j:jobs"));
        let err = JobsPattern::new("slack", "p:(").unwrap_err();
        assert!(err.contains("<slack> jobs ‘p:(’"), "{err}");
    }
}
