//! HTML for browsers. Pages with a template (`templates/`, askama, escaped
//! by default) are rendered from their data, one module per subject; until
//! every page has one, the others show their data as indented, escaped
//! text. Templates replace pages here without touching any handler.

mod account;
mod admin;
mod build;
mod chart;
mod common;
mod eval;
mod job;
mod jobset;
mod log;
mod project;
mod status;

pub(crate) use common::{duration, encode_segment, escape, step_name};

/// The data of a page: a value, or JSON text already rendered (by the
/// database, for large lists), parsed only if a page is wanted.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    Value(serde_json::Value),
    Text(std::sync::Arc<str>),
}

/// What a handler produced, kept on the response for the negotiation layer.
#[derive(Clone, Debug)]
pub(crate) struct Rendered {
    pub template: &'static str,
    pub data: Data,
    /// What only the HTML page shows.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Rendered {
    pub(crate) fn new(template: &'static str, data: serde_json::Value) -> Rendered {
        Rendered {
            template,
            data: Data::Value(data),
            extra: serde_json::Map::new(),
        }
    }

    /// The data as a value.
    pub(crate) fn value(&self) -> serde_json::Value {
        match &self.data {
            Data::Value(v) => v.clone(),
            Data::Text(t) => serde_json::from_str(t).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Who a page is for, as its frame shows it (the auth layer puts it on
/// every response).
#[derive(Clone, Debug, Default)]
pub(crate) struct PageUser {
    pub(crate) name: Option<String>,
    pub(crate) admin: bool,
    /// May create projects (`create-projects`, or an administrator).
    pub(crate) creates_projects: bool,
    /// A stranger on a private server: the frame offers only signing in.
    pub(crate) shut_out: bool,
    /// The last live change when the page was asked for (see
    /// `live::Live::last_id`).
    pub(crate) events_since: String,
    /// Builds running and queued, for the Status menu ("Queue (R/Q)");
    /// `None` for requests that are not pages.
    pub(crate) queue: Option<(i64, i64)>,
    /// What the action that led here did ("The build has been restarted."),
    /// shown once above the page.
    pub(crate) flash: Option<String>,
}

/// What the frame of every page shows.
#[derive(Debug)]
struct Frame<'a> {
    user: &'a PageUser,
    css: &'static str,
    js: &'static str,
    version: &'static str,
    /// The project, jobset and job the page is about, for their menus.
    place: Place,
}

/// Where a page is: the project, jobset and job it is about.
#[derive(Debug, Default)]
struct Place {
    project: Option<String>,
    jobset: Option<String>,
    job: Option<String>,
}

impl Place {
    /// The job's name as a path segment.
    fn job_segment(&self) -> String {
        self.job
            .as_deref()
            .map(common::encode_segment)
            .unwrap_or_default()
    }
}

impl<'a> Frame<'a> {
    fn new(user: &'a PageUser) -> Frame<'a> {
        Frame {
            user,
            css: crate::assets::css(),
            js: crate::assets::js(),
            version: env!("CARGO_PKG_VERSION"),
            place: Place::default(),
        }
    }

    /// The frame of a page about project `project` (jobset, job).
    fn at(mut self, project: &str, jobset: Option<&str>, job: Option<&str>) -> Frame<'a> {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.place = Place {
            project: some(project),
            jobset: jobset.and_then(some),
            job: job.and_then(some),
        };
        self
    }
}

/// What a page's template is rendered from.
struct Ctx<'a> {
    data: common::Fields<'a>,
    extra: &'a serde_json::Map<String, serde_json::Value>,
    user: &'a PageUser,
    /// The time relative dates count from.
    now: i64,
}

impl<'a> Ctx<'a> {
    fn frame(&self) -> Frame<'a> {
        Frame::new(self.user)
    }

    /// A list only the page shows (`Page::with_extra`).
    fn extra(&self, key: &str) -> &'a [serde_json::Value] {
        self.extra
            .get(key)
            .and_then(serde_json::Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// A value only the page shows.
    fn extra_value(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.extra.get(key)
    }

    /// A text only the page shows (empty when absent).
    fn extra_text(&self, key: &str) -> String {
        self.extra_value(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// A flag only the page shows (false when absent).
    fn extra_flag(&self, key: &str) -> bool {
        self.extra_value(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }

    /// A list of texts only the page shows.
    fn extra_texts(&self, key: &str) -> Vec<String> {
        self.extra(key)
            .iter()
            .filter_map(serde_json::Value::as_str)
            .map(String::from)
            .collect()
    }
}

/// A rendered page; `None` when the data is not what its template reads.
type Html = Option<askama::Result<String>>;

/// A page without its own template yet: its data, escaped.
#[derive(askama::Template)]
#[template(path = "data.html")]
struct DataPage<'a> {
    frame: Frame<'a>,
    title: &'a str,
    data: &'a str,
}

/// The pages that have templates; `None` for the others.
fn templated(page: &Rendered, user: &PageUser) -> Option<String> {
    let value = page.value();
    let cx = Ctx {
        data: common::Fields(&value),
        extra: &page.extra,
        user,
        now: i64::from(hydra_db::now()),
    };
    let rendered = match page.template {
        "overview" => project::overview(&cx),
        "project" => project::project(&cx),
        "project-form" => project::project_form(&cx),
        "all" => build::list(&cx, false),
        "queue" => build::list(&cx, true),
        "jobset" => jobset::jobset(&cx),
        "jobset-form" => jobset::jobset_form(&cx),
        "jobset-jobs" => jobset::jobs_matrix(&cx),
        "build" => build::build(&cx),
        "build-step" => build::step(&cx),
        "build-contents" => build::contents(&cx),
        "build-deps" => build::deps(&cx, false),
        "runtime-deps" => build::deps(&cx, true),
        "build-graph" => build::graph(&cx),
        "eval" => eval::eval(&cx),
        "eval-cost" => eval::cost(&cx),
        "job" => job::job(&cx),
        "job-metric" => job::metric(&cx),
        "jobset-errors" => status::errors(&cx, false),
        "eval-errors" => status::errors(&cx, true),
        "channel" => status::channel(&cx),
        "custom-channel" => status::custom_channel(&cx),
        "log" => log::log(&cx),
        "status" => status::running(&cx),
        "queue-summary" => status::queue_summary(&cx),
        "blockers" => status::blockers(&cx),
        "machines" => status::machines(&cx),
        "queue-runner-status" => status::runner_status(&cx),
        "steps" => status::steps(&cx),
        "search" => status::search(&cx),
        "evals" => eval::list(&cx, eval::EvalList::All),
        "jobset-evals" => eval::list(&cx, eval::EvalList::OfJobset),
        "build-evals" => eval::list(&cx, eval::EvalList::OfBuild),
        "login" => account::login(&cx),
        "error" => account::error(&cx),
        "user" => account::user(&cx),
        "admin-users" => admin::users(&cx),
        "admin-machines" => admin::machines(&cx),
        "news" => admin::news(&cx),
        "register" => admin::register(&cx),
        "dashboard" => account::dashboard(&cx),
        "user-token" => account::new_token(&cx),
        "user-password" => account::new_password(&cx),
        "setup" => account::setup(&cx),
        _ => None,
    }?;
    match rendered {
        Ok(html) => Some(html),
        Err(e) => {
            tracing::error!(page = page.template, error = %e, "cannot render a page");
            None
        }
    }
}

pub(crate) fn render(page: &Rendered, user: &PageUser) -> String {
    use askama::Template;
    if let Some(html) = templated(page, user) {
        return html;
    }
    let text = serde_json::to_string_pretty(&page.value()).unwrap_or_default();
    // `current-user` → `Current user`: the page's name, for people.
    let mut title = page.template.replace('-', " ");
    if let Some(first) = title.get(..1) {
        title = format!("{}{}", first.to_ascii_uppercase(), &title[1..]);
    }
    DataPage {
        frame: Frame::new(user),
        title: &title,
        data: &text,
    }
    .render()
    .unwrap_or_else(|e| {
        tracing::error!(page = page.template, error = %e, "cannot render a page");
        format!("<!DOCTYPE html>\n<pre>{}</pre>\n", escape(&text))
    })
}
