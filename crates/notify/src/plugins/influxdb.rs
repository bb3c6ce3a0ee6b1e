//! InfluxDBNotification: `<influxdb> url db </influxdb>`. When a build
//! finishes, one point per build of the event (the head and its
//! dependents) in InfluxDB 1.x's line protocol, `hydra_build_status`, with
//! Hydra's tags and fields, POSTed to `<url>/write?db=<db>&precision=s`.
//! Unlike Hydra, tag values and strings are escaped as the protocol wants.

use std::sync::Arc;

use hydra_db::build_reports::{self, BuildReport};
use hydra_db::ids::BuildId;
use hydra_db::status::BuildStatus;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{config_blocks, text};

/// The plugin.
#[derive(Debug)]
pub struct InfluxDb {
    url: String,
    db: String,
    host: Option<String>,
    client: reqwest::Client,
}

impl InfluxDb {
    /// The plugin `<influxdb>` makes, when it has both `url` and `db`.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<InfluxDb>>, String> {
        let Some(tree) = config_blocks(config, "influxdb").into_iter().next_back() else {
            return Ok(None);
        };
        let (Some(url), Some(db)) = (text(tree, "url"), text(tree, "db")) else {
            tracing::warn!("<influxdb> needs both url and db; InfluxDB notifications are off");
            return Ok(None);
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        Ok(Some(Arc::new(InfluxDb {
            url: url.trim_end_matches('/').to_string(),
            db,
            host,
            client: crate::http::client()?,
        })))
    }
}

/// A tag key or value, escaped (commas, spaces and equals signs).
fn tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | ' ' | '=' | '\\') {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
            continue;
        }
        out.push(c);
    }
    out
}

/// A string field, quoted and escaped.
fn string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `result` tag: what happened, in words.
fn result(status: Option<i32>) -> &'static str {
    match status.and_then(BuildStatus::from_code) {
        Some(BuildStatus::Succeeded) => "success",
        Some(BuildStatus::Failed) => "failure",
        Some(BuildStatus::DependencyFailed) => "dependency-failed",
        Some(BuildStatus::Cancelled) => "cancelled",
        Some(BuildStatus::FailedWithOutput) => "failed-with-output",
        Some(BuildStatus::TimedOut) => "timed-out",
        Some(BuildStatus::Unsupported) => "unsupported-system",
        Some(BuildStatus::LogLimitExceeded) => "log-limit-exceeded",
        Some(BuildStatus::OutputLimitExceeded) => "output-limit-exceeded",
        Some(BuildStatus::NotDeterministic) => "non-deterministic-build",
        _ => "aborted",
    }
}

/// The point for `build` (of the event about `head`).
pub fn point(build: &BuildReport, head: BuildId, host: Option<&str>) -> String {
    let repo = match build.jobset.find(".pr-") {
        Some(at) => &build.jobset[..at],
        None => build.jobset.as_str(),
    };
    let status = match crate::status::final_state(build.status) {
        "success" => "success",
        "error" => "canceled",
        _ => "failed",
    };
    let mut tags = vec![
        (
            "cached",
            if build.cached { "true" } else { "false" }.to_string(),
        ),
        ("job", build.job.clone()),
        ("jobset", build.jobset.clone()),
        ("project", build.project.clone()),
        ("repo", repo.to_string()),
        ("result", result(build.status).to_string()),
        ("status", status.to_string()),
        ("system", build.system.clone()),
    ];
    if let Some(host) = host {
        tags.push(("host", host.to_string()));
    }
    let tags: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{k}={}", tag(v)))
        .collect();
    let queued = match build.start_time {
        Some(start) => (i64::from(start) - i64::from(build.timestamp)).max(0),
        None => 0,
    };
    let fields = [
        format!("build_id={}", string(&build.id.to_string())),
        format!("build_status={}i", build.status.unwrap_or(0)),
        format!("closure_size={}i", build.closure_size.unwrap_or(0)),
        format!("duration={}i", build.duration()),
        format!("main_build_id={}", string(&head.to_string())),
        format!("queued={queued}i"),
        format!("size={}i", build.size.unwrap_or(0)),
    ];
    format!(
        "hydra_build_status,{} {} {}",
        tags.join(","),
        fields.join(","),
        build.stop_time.unwrap_or(0)
    )
}

impl Plugin for InfluxDb {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::InfluxDBNotification"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let Event::BuildFinished { build: head, .. } = event else {
                return Ok(());
            };
            let builds = build_reports::reports(&cx.pool, &event.builds())
                .await
                .map_err(|e| format!("reading the builds: {e}"))?;
            let lines: Vec<String> = builds
                .iter()
                .filter(|b| b.finished)
                .map(|b| point(b, *head, self.host.as_deref()))
                .collect();
            if lines.is_empty() {
                return Ok(());
            }
            let request = self
                .client
                .post(format!("{}/write", self.url))
                .query(&[("db", self.db.as_str()), ("precision", "s")])
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(lines.join("\n"));
            crate::http::send_logged(self.name(), request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{string, tag};

    #[test]
    fn tags_and_strings_are_escaped_as_the_line_protocol_wants() {
        assert_eq!(tag("a b,c=d"), "a\\ b\\,c\\=d");
        assert_eq!(string("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
