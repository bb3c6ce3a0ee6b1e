//! The front page and the project page.

use askama::Template;

use super::common::{Fields, Time, web_link};
use super::{Ctx, Frame, Html};

/// A project row of the front page.
#[derive(Debug, serde::Deserialize)]
struct OverviewProject {
    name: String,
    displayname: String,
    description: String,
    homepage: String,
    enabled: bool,
    hidden: bool,
    /// The homepage when it is a web address (never `javascript:`).
    #[serde(skip)]
    link: Option<String>,
}

/// `/`: the projects.
#[derive(Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    frame: Frame<'a>,
    projects: Vec<OverviewProject>,
}

pub(super) fn overview(cx: &Ctx) -> Html {
    let mut projects: Vec<OverviewProject> = serde_json::from_value(cx.data.0.clone()).ok()?;
    for p in &mut projects {
        p.link = web_link(&p.homepage);
    }
    Some(
        Overview {
            frame: cx.frame(),
            projects,
        }
        .render(),
    )
}

/// The project page's view of the Project object.
#[derive(Debug, serde::Deserialize)]
struct ProjectView {
    name: String,
    displayname: String,
    description: String,
    homepage: String,
    owner: String,
    enabled: bool,
    #[serde(skip)]
    link: Option<String>,
}

/// A row of the jobset overview table.
#[derive(Debug)]
struct JobsetRowView {
    name: String,
    description: String,
    enabled: bool,
    hidden: bool,
    last_checked: Option<Time>,
    has_error: bool,
    succeeded: i64,
    failed: i64,
    queued: i64,
    /// Success rate of the current builds, in percent.
    rate: i64,
    rate_class: &'static str,
}

impl JobsetRowView {
    fn of(j: Fields) -> JobsetRowView {
        let count = |k: &str| j.int(k).unwrap_or(0);
        let (succeeded, failed, queued, total) = (
            count("succeeded"),
            count("failed"),
            count("queued"),
            count("total"),
        );
        let rate = if total > 0 {
            succeeded * 100 / total
        } else {
            0
        };
        let rate_class = match rate {
            _ if queued > 0 || total == 0 => "muted-badge",
            r if r < 25 => "bad",
            r if r < 75 => "warn",
            _ => "ok",
        };
        JobsetRowView {
            name: j.text("name"),
            description: j.text("description"),
            enabled: j.flag("enabled"),
            hidden: j.flag("hidden"),
            last_checked: j.int("last_checked").map(Time::of),
            has_error: j.flag("has_error"),
            succeeded,
            failed,
            queued,
            rate,
            rate_class,
        }
    }
}

/// `/project/P`.
#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage<'a> {
    frame: Frame<'a>,
    project: ProjectView,
    jobsets: Vec<JobsetRowView>,
}

pub(super) fn project(cx: &Ctx) -> Html {
    let mut project: ProjectView = serde_json::from_value(cx.data.0.clone()).ok()?;
    project.link = web_link(&project.homepage);
    Some(
        ProjectPage {
            frame: cx.frame(),
            project,
            jobsets: cx
                .extra("jobsets")
                .iter()
                .map(|j| JobsetRowView::of(Fields(j)))
                .collect(),
        }
        .render(),
    )
}
