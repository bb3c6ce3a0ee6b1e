//! The log viewer: numbered lines with permalinks, colours, the tail
//! first, earlier and later pieces, search, and the live end of a running
//! step.

use askama::Template;

use super::common::{Fields, step_name};
use super::{Ctx, Frame, Html};

/// `/build/N/log`, `/build/N/step/M/log`, `/build/N/runcommandlog/U`.
#[derive(Template)]
#[template(path = "log.html")]
struct LogPage<'a> {
    frame: Frame<'a>,
    build: i64,
    step: Option<i64>,
    /// The command, for a RunCommand run's output.
    command: Option<String>,
    name: String,
    available: bool,
    raw: String,
    live: String,
    /// Line number and the line as HTML.
    lines: Vec<(u64, String)>,
    total: u64,
    search: String,
    more_matches: bool,
    /// The lines are the end of the log.
    tail: bool,
    running: bool,
}

impl LogPage<'_> {
    fn first(&self) -> u64 {
        self.lines.first().map_or(0, |l| l.0)
    }

    fn last(&self) -> u64 {
        self.lines.last().map_or(0, |l| l.0)
    }

    /// The window before this one, if there are lines before it.
    fn earlier(&self) -> Option<String> {
        let first = self.first();
        (self.search.is_empty() && first > 1).then(|| format!("?to={}", first - 1))
    }

    /// The window after this one, if there are lines after it.
    fn later(&self) -> Option<String> {
        let last = self.last();
        (self.search.is_empty() && last < self.total && last > 0)
            .then(|| format!("?from={}", last + 1))
    }
}

pub(super) fn log(cx: &Ctx) -> Html {
    let d = cx.data;
    Some(
        LogPage {
            frame: cx.frame(),
            build: d.int("build").unwrap_or(0),
            step: d.int("step"),
            command: d
                .0
                .get("command")
                .and_then(|c| c.as_str())
                .map(String::from),
            name: match d.0.get("uuid").and_then(|u| u.as_str()) {
                Some(uuid) => format!("runcommand-{uuid}"),
                None => step_name(d.str("drvpath")),
            },
            available: d.flag("available"),
            raw: d.text("raw"),
            live: d.text("live"),
            lines: cx
                .extra("lines")
                .iter()
                .filter_map(|l| {
                    let l = l.as_array()?;
                    Some((l.first()?.as_u64()?, l.get(1)?.as_str()?.to_string()))
                })
                .collect(),
            total: cx
                .extra_value("total")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            search: Fields(cx.extra_value("search").unwrap_or(&serde_json::Value::Null))
                .0
                .as_str()
                .unwrap_or_default()
                .to_string(),
            more_matches: cx.extra_flag("more_matches"),
            tail: cx.extra_flag("tail"),
            running: cx.extra_flag("running"),
        }
        .render(),
    )
}
