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
    news: Vec<super::admin::NewsView>,
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
            news: cx
                .extra("news")
                .iter()
                .map(|n| super::admin::NewsView::of(Fields(n)))
                .collect(),
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
    #[serde(default)]
    enable_dynamic_run_command: bool,
    #[serde(skip)]
    link: Option<String>,
}

/// A row of the jobset overview table.
#[derive(Debug)]
pub(super) struct JobsetRowView {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) enabled: bool,
    pub(super) hidden: bool,
    pub(super) last_checked: Option<Time>,
    pub(super) has_error: bool,
    pub(super) succeeded: i64,
    pub(super) failed: i64,
    pub(super) queued: i64,
    /// Success rate of the current builds, in percent.
    pub(super) rate: i64,
    pub(super) rate_class: &'static str,
}

impl JobsetRowView {
    pub(super) fn of(j: Fields) -> JobsetRowView {
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
    /// The viewer may change the project.
    owner: bool,
    project: ProjectView,
    jobsets: Vec<JobsetRowView>,
    /// The server allows dynamic RunCommand hooks.
    server_dynamic: bool,
    /// The "build pull requests" settings and the pull requests.
    pulls: PullsView,
}

/// The project's pull-request settings (the form's values) and its pull
/// requests.
#[derive(Debug, Default)]
struct PullsView {
    enabled: bool,
    forge: String,
    repository: String,
    api_url: String,
    template: String,
    input: String,
    trusted_authors: String,
    trusted_associations: String,
    superseded: String,
    /// Number, title, author, fork, state, short head, jobset name, and
    /// "trusted" / "approved by X" / "waits for approval".
    list: Vec<PullRowView>,
}

#[derive(Debug)]
struct PullRowView {
    number: i64,
    title: String,
    author: String,
    fork: bool,
    open: bool,
    head: String,
    jobset: String,
    trust: String,
}

impl PullsView {
    fn of(v: Fields) -> PullsView {
        let template = v.text("template");
        PullsView {
            enabled: v.flag("enabled"),
            forge: v.text("forge"),
            repository: v.text("repository"),
            api_url: v.text("apiUrl"),
            input: v.text("input"),
            trusted_authors: v.text("trustedAuthors"),
            trusted_associations: if v.flag("enabled") {
                v.text("trustedAssociations")
            } else {
                "OWNER MEMBER COLLABORATOR".to_owned()
            },
            superseded: v.text("superseded"),
            list: v
                .list("pullRequests")
                .iter()
                .map(|p| {
                    let p = Fields(p);
                    let number = p.int("number").unwrap_or(0);
                    let head = p.text("head_sha");
                    let trust = if p.flag("trusted") {
                        "trusted".to_owned()
                    } else if p.str("approved_sha") == head {
                        format!("approved by {}", p.text("approved_by"))
                    } else {
                        "waits for an approval".to_owned()
                    };
                    PullRowView {
                        number,
                        title: p.text("title"),
                        author: p.text("author"),
                        fork: p.flag("fork"),
                        open: p.str("state") == "open",
                        head: head.chars().take(12).collect(),
                        jobset: format!("{template}-pr-{number}"),
                        trust,
                    }
                })
                .collect(),
            template,
        }
    }
}

impl ProjectPage<'_> {
    /// Whether the project's jobsets may run dynamic RunCommand hooks, and
    /// if not, who said no.
    fn dynamic_run_command(&self) -> &'static str {
        match (self.server_dynamic, self.project.enable_dynamic_run_command) {
            (false, _) => "No (not enabled by server)",
            (true, false) => "No (not enabled by project)",
            (true, true) => "Yes",
        }
    }

    /// Some of the jobsets are hidden (only owners receive them).
    fn any_hidden(&self) -> bool {
        self.jobsets.iter().any(|j| j.hidden)
    }
}

pub(super) fn project(cx: &Ctx) -> Html {
    let mut project: ProjectView = serde_json::from_value(cx.data.0.clone()).ok()?;
    project.link = web_link(&project.homepage);
    Some(
        ProjectPage {
            frame: cx.frame().at(&project.name, None, None),
            owner: cx.extra_flag("owner"),
            project,
            jobsets: cx
                .extra("jobsets")
                .iter()
                .map(|j| JobsetRowView::of(Fields(j)))
                .collect(),
            server_dynamic: cx.extra_flag("server_dynamic"),
            pulls: cx
                .extra_value("pull_requests")
                .map(|v| PullsView::of(Fields(v)))
                .unwrap_or_default(),
        }
        .render(),
    )
}

/// `/create-project`, `/project/P/edit`: the project form, with a refusal
/// next to its field.
#[derive(Template)]
#[template(path = "project-form.html")]
struct ProjectFormPage<'a> {
    frame: Frame<'a>,
    /// The project's name in its URLs; `None` while creating it.
    path: Option<String>,
    name: String,
    displayname: String,
    description: String,
    homepage: String,
    owner: String,
    enabled: bool,
    visible: bool,
    dynamic_run_command: bool,
    /// The server allows dynamic RunCommand.
    dynamic_allowed: bool,
    decl_file: String,
    decl_type: String,
    decl_value: String,
    /// The field refused, and why.
    field: String,
    error: String,
}

impl ProjectFormPage<'_> {
    /// The refusal of `field`, if it is the one refused.
    fn error_of(&self, field: &str) -> Option<&str> {
        (self.field == field && !self.error.is_empty()).then_some(self.error.as_str())
    }
}

pub(super) fn project_form(cx: &Ctx) -> Html {
    let d = cx.data;
    let decl = Fields(d.0.get("declarative").unwrap_or(&serde_json::Value::Null));
    let extra = |k: &str| {
        cx.extra_value(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(
        ProjectFormPage {
            frame: cx.frame(),
            path: cx
                .extra_value("path")
                .and_then(serde_json::Value::as_str)
                .map(String::from),
            name: d.text("name"),
            displayname: d.text("displayname"),
            description: d.text("description"),
            homepage: d.text("homepage"),
            owner: d.text("owner"),
            enabled: d.flag("enabled"),
            visible: !d.flag("hidden"),
            dynamic_run_command: d.flag("enable_dynamic_run_command"),
            dynamic_allowed: cx.extra_flag("dynamic_allowed"),
            decl_file: decl.text("file"),
            decl_type: decl.text("type"),
            decl_value: decl.text("value"),
            field: extra("field"),
            error: extra("error"),
        }
        .render(),
    )
}
