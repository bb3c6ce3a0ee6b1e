//! SlackNotification: `<slack>` blocks with `jobs` (a pattern), `url` (an
//! incoming webhook) and `force`. When a build finishes, each build of the
//! event (the head and its dependents) matching a block goes to that
//! block's webhook, unless (without `force`) it was aborted or cancelled
//! or ended as the build before it did. One message per webhook, about
//! its first build, with Hydra's attachment.

use std::sync::Arc;

use hydra_db::build_reports::{self, BuildReport};
use hydra_db::status::BuildStatus;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::authors::{self, Blame};
use crate::plugins::{JobsPattern, config_blocks, show_status, text, truthy};

/// A `<slack>` block.
#[derive(Clone, Debug)]
struct Block {
    jobs: JobsPattern,
    url: String,
    force: bool,
}

/// The plugin.
#[derive(Debug)]
pub struct Slack {
    blocks: Vec<Block>,
    client: reqwest::Client,
}

impl Slack {
    /// The plugin `config`'s `<slack>` blocks make (`None`: there are none).
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<Slack>>, String> {
        let mut blocks = Vec::new();
        for tree in config_blocks(config, "slack") {
            let Some(jobs) = JobsPattern::of_block("slack", tree)? else {
                tracing::warn!("a <slack> block has no jobs: it matches nothing");
                continue;
            };
            let Some(url) = text(tree, "url").filter(|u| !u.is_empty()) else {
                return Err("a <slack> block has no url".into());
            };
            blocks.push(Block {
                jobs,
                url,
                force: truthy(tree, "force"),
            });
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Slack {
            blocks,
            client: crate::http::client()?,
        })))
    }
}

/// `1d2h3m4s`: days, hours and minutes when there are any, seconds always.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let mut text = String::new();
    if s >= 86_400 {
        text.push_str(&format!("{}d", s / 86_400));
    }
    if s >= 3600 {
        text.push_str(&format!("{}h", s / 3600 % 24));
    }
    if s >= 60 {
        text.push_str(&format!("{}m", s / 60 % 60));
    }
    text.push_str(&format!("{}s", s % 60));
    text
}

/// The message about `build` (and `others` more builds) for Slack.
pub fn message(base: &str, build: &BuildReport, others: usize, blame: &Blame) -> serde_json::Value {
    let full = build.full_name();
    let status = show_status(build.status);
    let build_url = format!("{base}/build/{}", build.id);
    let job_url = format!(
        "{base}/job/{}/{}/{}",
        build.project, build.jobset, build.job
    );
    let code = build.status.and_then(BuildStatus::from_code);
    let color = match code {
        Some(BuildStatus::Succeeded) => "good",
        Some(BuildStatus::Cancelled) => "warning",
        _ => "danger",
    };
    let image = match code {
        Some(BuildStatus::Succeeded) => "checkmark_256.png",
        Some(BuildStatus::DependencyFailed) => "dependency_256.png",
        Some(BuildStatus::Cancelled) => "cancelled_256.png",
        _ => "error_256.png",
    };
    let and_others = if others > 0 {
        format!(" (and {others} others)")
    } else {
        String::new()
    };
    let mut text = format!(
        "Job <{job_url}|{full}>{and_others}: <{build_url}|{status}> in {}",
        duration(build.duration())
    );
    if !blame.authors.is_empty() {
        text.push_str(", likely due to ");
        if blame.commits > 1 {
            text.push_str(&format!("{} commits by ", blame.commits));
        }
        text.push_str(&blame.slack_links());
    }
    serde_json::json!({
        "attachments": [{
            "fallback": format!("Job {full} build number {}: {status}", build.id),
            "title": format!("Job {full} build number {}", build.id),
            "title_link": build_url,
            "color": color,
            "thumb_url": format!("{base}/static/images/{image}"),
            "text": text,
        }]
    })
}

impl Plugin for Slack {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::SlackNotification"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let builds = build_reports::reports(&cx.pool, &event.builds())
                .await
                .map_err(|e| format!("reading the builds: {e}"))?;
            // Webhook → the builds for it, in the event's order.
            let mut channels: Vec<(&str, Vec<&BuildReport>)> = Vec::new();
            for build in builds.iter().filter(|b| b.finished) {
                let full = build.full_name();
                for block in self.blocks.iter().filter(|b| b.jobs.matches(&full)) {
                    if !block.force && (build.aborted_or_cancelled() || build.status_unchanged()) {
                        continue;
                    }
                    match channels.iter_mut().find(|(url, _)| *url == block.url) {
                        Some((_, list)) => {
                            if !list.iter().any(|b| b.id == build.id) {
                                list.push(build);
                            }
                        }
                        None => channels.push((&block.url, vec![build])),
                    }
                }
            }
            let base = cx.config.web.base_uri.trim_end_matches('/');
            // Who committed since the head build's previous one, when its
            // status changed.
            let head = builds.first();
            let blame = match head {
                Some(h)
                    if h.has_previous && h.previous_status != h.status && !channels.is_empty() =>
                {
                    authors::blame(cx, h).await
                }
                _ => Blame::default(),
            };
            let mut failures = Vec::new();
            for (url, list) in channels {
                let about_head = head.is_some_and(|h| h.id == list[0].id);
                let none = Blame::default();
                let body = message(
                    base,
                    list[0],
                    list.len() - 1,
                    if about_head { &blame } else { &none },
                );
                let request = self.client.post(url).json(&body);
                if let Err(e) = crate::http::send_logged(self.name(), request).await {
                    failures.push(e);
                }
            }
            crate::plugins::all_done(failures)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_as_hydra_writes_them_with_whole_days() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(60), "1m0s");
        assert_eq!(duration(3725), "1h2m5s");
        assert_eq!(duration(90_000), "1d1h0m0s");
    }
}
