//! HTML for browsers. Pages with a template (`templates/`, askama, escaped
//! by default) are rendered from their data; until every page has one, the
//! others show their data as indented, escaped text. Templates replace
//! pages here without touching any handler.

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
}

/// What the frame of every page shows.
#[derive(Debug)]
struct Frame<'a> {
    user: &'a PageUser,
    css: &'static str,
    js: &'static str,
    version: &'static str,
}

impl<'a> Frame<'a> {
    fn new(user: &'a PageUser) -> Frame<'a> {
        Frame {
            user,
            css: crate::assets::css(),
            js: crate::assets::js(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

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
#[derive(askama::Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    frame: Frame<'a>,
    projects: Vec<OverviewProject>,
}

/// A point in time as pages show it: `YYYY-MM-DD HH:MM:SS` (UTC), with
/// the ISO form for `<time datetime>`.
#[derive(Debug)]
struct Time {
    text: String,
    iso: String,
}

impl Time {
    fn of(unix: i64) -> Time {
        let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
        // Days to a civil date (proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        Time {
            text: format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}"),
            iso: format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        }
    }
}

impl Time {
    /// The time relative to `now`, as Hydra's lists show it.
    fn relative_to(unix: i64, now: i64) -> String {
        let ago = now - unix;
        match ago {
            0..60 => format!("{ago}s ago"),
            60..3600 => format!("{}m ago", ago / 60),
            3600..86_400 => format!("{}h ago", ago / 3600),
            86_400..604_800 => format!("{}d ago", ago / 86_400),
            _ => Time::of(unix).text[..10].to_string(),
        }
    }
}

/// A time with its relative form.
#[derive(Debug)]
struct When {
    text: String,
    iso: String,
    relative: String,
}

impl When {
    fn of(unix: i64, now: i64) -> When {
        let t = Time::of(unix);
        When {
            text: t.text,
            iso: t.iso,
            relative: Time::relative_to(unix, now),
        }
    }
}

/// How a build's status is shown: a symbol, a class for its colour, and
/// the title every reader gets (the symbol is never the only signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusView {
    class: &'static str,
    symbol: &'static str,
    title: &'static str,
}

impl StatusView {
    fn of(finished: bool, status: Option<i64>) -> StatusView {
        use hydra_db::status::BuildStatus as S;
        let view = |class, symbol, title| StatusView {
            class,
            symbol,
            title,
        };
        if !finished {
            return view("queued", "?", "Queued");
        }
        let status = status
            .and_then(|c| i32::try_from(c).ok())
            .and_then(S::from_code);
        match status {
            Some(S::Succeeded) => view("ok", "✔", "Succeeded"),
            Some(S::DependencyFailed) => view("dep", "✘", "Dependency failed"),
            Some(S::Aborted) => view("stop", "⊘", "Aborted"),
            Some(S::Cancelled) => view("stop", "⊘", "Cancelled"),
            Some(S::FailedWithOutput) => view("bad", "✘", "Failed with output"),
            Some(S::TimedOut) => view("stop", "⊘", "Timed out"),
            Some(S::Unsupported) => view("stop", "⊘", "Unsupported system type"),
            Some(S::LogLimitExceeded) => view("stop", "⊘", "Log limit exceeded"),
            Some(S::OutputLimitExceeded) => view("bad", "✘", "Output size limit exceeded"),
            Some(S::NotDeterministic) => view("bad", "✘", "Non-deterministic build"),
            _ => view("bad", "✘", "Failed"),
        }
    }
}

/// A row of a build list.
#[derive(Debug)]
struct BuildRowView {
    id: i64,
    project: String,
    jobset: String,
    job: String,
    system: String,
    /// The release name, else the Nix name.
    name: String,
    status: StatusView,
    /// Finished at (queued at, in scheduling views).
    when: Option<When>,
}

impl BuildRowView {
    fn of(b: &serde_json::Value, scheduling: bool, now: i64) -> BuildRowView {
        let text = |k: &str| {
            b.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let int = |k: &str| b.get(k).and_then(serde_json::Value::as_i64);
        let finished = int("finished") == Some(1);
        let when = if scheduling {
            int("timestamp")
        } else {
            int("stoptime")
        };
        let name = b
            .get("releasename")
            .and_then(|v| v.as_str())
            .filter(|n| !n.is_empty() && !scheduling)
            .map(String::from)
            .unwrap_or_else(|| text("nixname"));
        BuildRowView {
            id: int("id").unwrap_or(0),
            project: text("project"),
            jobset: text("jobset"),
            job: text("job"),
            system: text("system"),
            name,
            status: StatusView::of(finished, int("buildstatus")),
            when: when.map(|t| When::of(t, now)),
        }
    }
}

/// A page that is a list of builds (`/all`, `/queue`).
#[derive(askama::Template)]
#[template(path = "builds.html")]
struct BuildsPage<'a> {
    frame: Frame<'a>,
    title: &'static str,
    builds: Vec<BuildRowView>,
    scheduling: bool,
    total: Option<i64>,
    /// Links to other pages: label and address.
    pager: Vec<(&'static str, String)>,
}

/// A duration as `[Dd ][Hh ][Mm ]Ss`, from the largest unit down.
fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d\u{a0}{h}h\u{a0}{m}m\u{a0}{sec}s")
    } else if h > 0 {
        format!("{h}h\u{a0}{m}m\u{a0}{sec}s")
    } else if m > 0 {
        format!("{m}m\u{a0}{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// A step's name: its derivation without store directory, hash and `.drv`.
fn step_name(drv_path: &str) -> String {
    let base = hydra_nix::store_path::base_name(drv_path);
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    name.strip_suffix(".drv").unwrap_or(name).to_string()
}

/// A product of a build, as its page lists it.
#[derive(Debug)]
struct ProductView {
    nr: String,
    name: String,
    kind: String,
    subtype: String,
}

/// The build page's view of the Build object.
#[derive(Debug)]
struct BuildView {
    id: i64,
    project: String,
    jobset: String,
    job: String,
    system: String,
    nixname: String,
    name: String,
    drvpath: String,
    priority: i64,
    finished: bool,
    status: StatusView,
    status_text: &'static str,
    first_eval: Option<i64>,
    other_evals: usize,
    duration: Option<String>,
    queued: Option<Time>,
    started: Option<Time>,
    stopped: Option<Time>,
    outputs: Vec<(String, String)>,
    products: Vec<ProductView>,
}

impl BuildView {
    fn of(b: &serde_json::Value, any_step_busy: bool) -> BuildView {
        use hydra_db::status::BuildStatus as S;
        let text = |k: &str| {
            b.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let int = |k: &str| b.get(k).and_then(serde_json::Value::as_i64);
        let finished = int("finished") == Some(1);
        let code = int("buildstatus");
        let status_text = if !finished {
            if any_step_busy {
                "Build in progress"
            } else {
                "Scheduled to be built"
            }
        } else {
            match code
                .and_then(|c| i32::try_from(c).ok())
                .and_then(S::from_code)
            {
                Some(S::Succeeded) => "Success",
                Some(S::Failed) => "Build returned a non-zero exit code",
                Some(S::DependencyFailed) => "A dependency of the build failed",
                Some(S::Cancelled) => "Cancelled by user",
                Some(S::FailedWithOutput) => "Build failed with output",
                Some(S::TimedOut) => "Timed out",
                Some(S::Unsupported) => "Unsupported system type",
                Some(S::LogLimitExceeded) => "Log limit exceeded",
                Some(S::OutputLimitExceeded) => "Output limit exceeded",
                Some(S::NotDeterministic) => "Non-deterministic build",
                _ => "Aborted",
            }
        };
        let evals: Vec<i64> = b
            .get("jobsetevals")
            .and_then(|e| e.as_array())
            .map(|e| e.iter().filter_map(serde_json::Value::as_i64).collect())
            .unwrap_or_default();
        let outputs = b
            .get("buildoutputs")
            .and_then(|o| o.as_object())
            .map(|o| {
                o.iter()
                    .map(|(name, v)| {
                        let path = v.get("path").and_then(|p| p.as_str()).unwrap_or("n/a");
                        (name.clone(), path.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let products = b
            .get("buildproducts")
            .and_then(|p| p.as_object())
            .map(|p| {
                p.iter()
                    .map(|(nr, v)| {
                        let field = |k: &str| {
                            v.get(k)
                                .and_then(|x| x.as_str())
                                .unwrap_or_default()
                                .to_string()
                        };
                        ProductView {
                            nr: nr.clone(),
                            name: field("name"),
                            kind: field("type"),
                            subtype: field("subtype"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (start, stop) = (int("starttime"), int("stoptime"));
        let name = b
            .get("releasename")
            .and_then(|v| v.as_str())
            .filter(|n| !n.is_empty())
            .map(String::from)
            .unwrap_or_else(|| text("nixname"));
        BuildView {
            id: int("id").unwrap_or(0),
            project: text("project"),
            jobset: text("jobset"),
            job: text("job"),
            system: text("system"),
            nixname: text("nixname"),
            name,
            drvpath: text("drvpath"),
            priority: int("priority").unwrap_or(0),
            finished,
            status: StatusView::of(finished, code),
            status_text,
            first_eval: evals.first().copied(),
            other_evals: evals.len().saturating_sub(1),
            duration: match (finished, start, stop) {
                (true, Some(a), Some(z)) => Some(duration(z - a)),
                _ => None,
            },
            queued: int("timestamp").map(Time::of),
            started: start.filter(|_| finished).map(Time::of),
            stopped: stop.filter(|_| finished).map(Time::of),
            outputs,
            products,
        }
    }
}

/// A row of the build steps table.
#[derive(Debug)]
struct StepView {
    nr: i64,
    what: &'static str,
    name: String,
    duration: String,
    machine: String,
    status: String,
    class: &'static str,
    propagated_from: Option<i64>,
}

impl StepView {
    fn of(step: &serde_json::Value, now: i64) -> StepView {
        use hydra_db::status::{BuildStatus as S, Busy};
        let int = |k: &str| step.get(k).and_then(serde_json::Value::as_i64);
        let text = |k: &str| {
            step.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let busy = int("busy").unwrap_or(0);
        let busy_text = [
            (Busy::Preparing, "Preparing"),
            (Busy::Connecting, "Connecting"),
            (Busy::SendingInputs, "Sending inputs"),
            (Busy::Building, "Building"),
            (Busy::WaitingForLocalSlot, "Waiting to receive outputs"),
            (Busy::ReceivingOutputs, "Receiving outputs"),
            (Busy::PostProcessing, "Post-processing"),
        ]
        .into_iter()
        .find(|(b, _)| *b as i64 == busy)
        .map(|(_, t)| t);
        let (status, class) = if busy != 0 {
            (busy_text.unwrap_or("Unknown state").to_string(), "queued")
        } else {
            let code = int("status")
                .and_then(|c| i32::try_from(c).ok())
                .and_then(S::from_code);
            match code {
                Some(S::Succeeded) => ("Succeeded".to_string(), "ok"),
                Some(S::Aborted) => (
                    match step.get("error").and_then(|e| e.as_str()) {
                        Some(e) if !e.is_empty() => format!("Aborted: {e}"),
                        _ => "Aborted".to_string(),
                    },
                    "stop",
                ),
                Some(S::Cancelled) => ("Cancelled".to_string(), "stop"),
                Some(S::TimedOut) => ("Timed out".to_string(), "stop"),
                Some(S::CachedFailure) => ("Cached failure".to_string(), "bad"),
                Some(S::Unsupported) => ("Unsupported system type".to_string(), "stop"),
                Some(S::LogLimitExceeded) => ("Log limit exceeded".to_string(), "stop"),
                Some(S::OutputLimitExceeded) => ("Output limit exceeded".to_string(), "bad"),
                Some(S::NotDeterministic) => ("Non-determinism detected".to_string(), "bad"),
                Some(S::Resolved) => ("Resolved".to_string(), "dep"),
                _ => ("Failed".to_string(), "bad"),
            }
        };
        let duration = match (int("start"), int("stop")) {
            (Some(a), Some(z)) => duration(z - a),
            (Some(a), None) if busy != 0 => duration(now - a),
            _ => "n/a".to_string(),
        };
        let machine = text("machine");
        StepView {
            nr: int("stepnr").unwrap_or(0),
            what: if int("kind") == Some(1) {
                "Substitution of"
            } else {
                "Build of"
            },
            name: step_name(&text("drv_path")),
            duration,
            machine: if machine.is_empty() {
                "n/a".into()
            } else {
                machine
            },
            status,
            class,
            propagated_from: int("propagated_from"),
        }
    }
}

/// `/build/N`.
#[derive(askama::Template)]
#[template(path = "build.html")]
struct BuildPage<'a> {
    frame: Frame<'a>,
    b: BuildView,
    steps: Vec<StepView>,
}

/// A row of the evaluations table.
#[derive(Debug)]
struct EvalRowView {
    id: i64,
    when: When,
    took: Option<String>,
    has_errors: bool,
    succeeded: i64,
    failed: i64,
    queued: i64,
}

impl EvalRowView {
    fn of(e: &serde_json::Value, now: i64) -> EvalRowView {
        let int = |k: &str| e.get(k).and_then(serde_json::Value::as_i64);
        let took = match (int("checkout_time"), int("eval_time")) {
            (Some(c), Some(v)) => Some(duration(c + v)),
            _ => None,
        };
        EvalRowView {
            id: int("id").unwrap_or(0),
            when: When::of(int("timestamp").unwrap_or(0), now),
            took,
            has_errors: e
                .get("has_errors")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            succeeded: int("succeeded").unwrap_or(0),
            failed: int("failed").unwrap_or(0),
            queued: int("queued").unwrap_or(0),
        }
    }
}

/// The jobset page's view of the Jobset object.
#[derive(Debug)]
struct JobsetView {
    project: String,
    name: String,
    description: String,
    state: &'static str,
    flake: String,
    nixexprinput: String,
    nixexprpath: String,
    checkinterval: i64,
    schedulingshares: i64,
    keepnr: i64,
    last_checked: Option<Time>,
    error_time: Option<Time>,
    running_since: Option<When>,
    pending_since: Option<When>,
    fetch_error: String,
    eval_error: String,
    has_errors: bool,
    /// Name, type and value.
    inputs: Vec<(String, String, String)>,
}

impl JobsetView {
    fn of(j: &serde_json::Value, now: i64) -> JobsetView {
        use hydra_db::status::JobsetState;
        let text = |k: &str| {
            j.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let int = |k: &str| j.get(k).and_then(serde_json::Value::as_i64);
        let state = match int("enabled")
            .and_then(|c| i32::try_from(c).ok())
            .and_then(JobsetState::from_code)
        {
            Some(JobsetState::Disabled) => "Disabled",
            Some(JobsetState::OneShot) => "One-shot",
            Some(JobsetState::OneAtATime) => "One-at-a-time",
            _ => "Enabled",
        };
        let (fetch_error, eval_error) = (text("fetcherrormsg"), text("errormsg"));
        let inputs = j
            .get("inputs")
            .and_then(|i| i.as_object())
            .map(|i| {
                i.iter()
                    .map(|(name, v)| {
                        let field = |k: &str| {
                            v.get(k)
                                .and_then(|x| x.as_str())
                                .unwrap_or_default()
                                .to_string()
                        };
                        (name.clone(), field("type"), field("value"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        JobsetView {
            project: text("project"),
            name: text("name"),
            description: text("description"),
            state,
            flake: text("flake"),
            nixexprinput: text("nixexprinput"),
            nixexprpath: text("nixexprpath"),
            checkinterval: int("checkinterval").unwrap_or(0),
            schedulingshares: int("schedulingshares").unwrap_or(0),
            keepnr: int("keepnr").unwrap_or(0),
            last_checked: int("lastcheckedtime").map(Time::of),
            error_time: int("errortime").map(Time::of),
            running_since: int("starttime").map(|t| When::of(t, now)),
            pending_since: int("triggertime").map(|t| When::of(t, now)),
            has_errors: !fetch_error.is_empty() || !eval_error.is_empty(),
            fetch_error,
            eval_error,
            inputs,
        }
    }
}

/// `/jobset/P/J`.
#[derive(askama::Template)]
#[template(path = "jobset.html")]
struct JobsetPage<'a> {
    frame: Frame<'a>,
    j: JobsetView,
    evals: Vec<EvalRowView>,
}

/// The project page.
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
    fn of(j: &serde_json::Value) -> JobsetRowView {
        let int = |k: &str| j.get(k).and_then(serde_json::Value::as_i64).unwrap_or(0);
        let text = |k: &str| {
            j.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let flag = |k: &str| {
            j.get(k)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        let (succeeded, failed, queued, total) =
            (int("succeeded"), int("failed"), int("queued"), int("total"));
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
            name: text("name"),
            description: text("description"),
            enabled: flag("enabled"),
            hidden: flag("hidden"),
            last_checked: j
                .get("last_checked")
                .and_then(serde_json::Value::as_i64)
                .map(Time::of),
            has_error: flag("has_error"),
            succeeded,
            failed,
            queued,
            rate,
            rate_class,
        }
    }
}

/// `/project/P`.
#[derive(askama::Template)]
#[template(path = "project.html")]
struct ProjectPage<'a> {
    frame: Frame<'a>,
    project: ProjectView,
    jobsets: Vec<JobsetRowView>,
}

/// `url` if it is an `http` or `https` address.
fn web_link(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then(|| url.trim().to_string())
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The sign-in form (`GET /login`, and again after a failed attempt).
#[derive(askama::Template)]
#[template(path = "login.html")]
struct Login<'a> {
    frame: Frame<'a>,
    error: Option<&'a str>,
}

/// The first administrator's form (`/setup`, from the link `hydra up`
/// prints while there is no administrator).
#[derive(askama::Template)]
#[template(path = "setup.html")]
struct Setup<'a> {
    frame: Frame<'a>,
    error: Option<&'a str>,
    token: &'a str,
    username: &'a str,
    fullname: &'a str,
    emailaddress: &'a str,
    min_password: usize,
}

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
    use askama::Template;
    let value = page.value();
    let text = |key: &str| value.get(key).and_then(|v| v.as_str());
    let rendered = match page.template {
        "overview" => {
            let mut projects: Vec<OverviewProject> =
                serde_json::from_value(value.clone()).unwrap_or_default();
            for p in &mut projects {
                p.link = web_link(&p.homepage);
            }
            Overview {
                frame: Frame::new(user),
                projects,
            }
            .render()
        }
        "project" => match serde_json::from_value::<ProjectView>(value.clone()) {
            Ok(mut project) => {
                project.link = web_link(&project.homepage);
                let jobsets = page
                    .extra
                    .get("jobsets")
                    .and_then(|j| j.as_array())
                    .map(|rows| rows.iter().map(JobsetRowView::of).collect())
                    .unwrap_or_default();
                ProjectPage {
                    frame: Frame::new(user),
                    project,
                    jobsets,
                }
                .render()
            }
            Err(_) => return None,
        },
        "all" | "queue" => {
            let now = i64::from(hydra_db::now());
            let scheduling = page.template == "queue";
            let list = if scheduling {
                value.as_array().cloned().unwrap_or_default()
            } else {
                value
                    .get("builds")
                    .and_then(|b| b.as_array())
                    .cloned()
                    .unwrap_or_default()
            };
            let pager = [
                ("First", "first"),
                ("Previous", "previous"),
                ("Next", "next"),
                ("Last", "last"),
            ]
            .into_iter()
            .filter_map(|(label, key)| Some((label, value.get(key)?.as_str()?.to_string())))
            .collect();
            BuildsPage {
                frame: Frame::new(user),
                title: if scheduling { "Queue" } else { "Latest builds" },
                builds: list
                    .iter()
                    .map(|b| BuildRowView::of(b, scheduling, now))
                    .collect(),
                scheduling,
                total: value.get("total").and_then(serde_json::Value::as_i64),
                pager,
            }
            .render()
        }
        "jobset" => {
            let now = i64::from(hydra_db::now());
            let evals = page
                .extra
                .get("evals")
                .and_then(|e| e.as_array())
                .map(|rows| rows.iter().map(|e| EvalRowView::of(e, now)).collect())
                .unwrap_or_default();
            JobsetPage {
                frame: Frame::new(user),
                j: JobsetView::of(&value, now),
                evals,
            }
            .render()
        }
        "build" => {
            let now = i64::from(hydra_db::now());
            let steps: Vec<StepView> = page
                .extra
                .get("steps")
                .and_then(|s| s.as_array())
                .map(|rows| rows.iter().map(|s| StepView::of(s, now)).collect())
                .unwrap_or_default();
            let any_busy = page
                .extra
                .get("steps")
                .and_then(|s| s.as_array())
                .is_some_and(|rows| {
                    rows.iter().any(|s| {
                        s.get("busy")
                            .and_then(serde_json::Value::as_i64)
                            .unwrap_or(0)
                            != 0
                    })
                });
            BuildPage {
                frame: Frame::new(user),
                b: BuildView::of(&value, any_busy),
                steps,
            }
            .render()
        }
        "login" => Login {
            frame: Frame::new(user),
            error: text("error"),
        }
        .render(),
        "setup" => Setup {
            frame: Frame::new(user),
            error: text("error"),
            token: text("token").unwrap_or_default(),
            username: text("username").unwrap_or_default(),
            fullname: text("fullname").unwrap_or_default(),
            emailaddress: text("emailaddress").unwrap_or_default(),
            min_password: hydra_db::password::MIN_LENGTH,
        }
        .render(),
        _ => return None,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_civil_dates() {
        let t = Time::of(0);
        assert_eq!(
            (t.text.as_str(), t.iso.as_str()),
            ("1970-01-01 00:00:00", "1970-01-01T00:00:00Z")
        );
        assert_eq!(Time::of(1_700_000_000).text, "2023-11-14 22:13:20");
        assert_eq!(Time::of(951_782_400).text, "2000-02-29 00:00:00");
        assert_eq!(Time::of(-1).text, "1969-12-31 23:59:59");
    }

    #[test]
    fn relative_times_as_hydra_lists_show_them() {
        let now = 1_700_000_000;
        assert_eq!(Time::relative_to(now - 5, now), "5s ago");
        assert_eq!(Time::relative_to(now - 125, now), "2m ago");
        assert_eq!(Time::relative_to(now - 7200, now), "2h ago");
        assert_eq!(Time::relative_to(now - 3 * 86_400, now), "3d ago");
        assert_eq!(Time::relative_to(now - 30 * 86_400, now), "2023-10-15");
        assert_eq!(
            Time::relative_to(now + 60, now),
            "2023-11-14",
            "the future is a date"
        );
    }

    #[test]
    fn every_status_has_a_title_besides_its_symbol() {
        assert_eq!(StatusView::of(false, None).title, "Queued");
        assert_eq!(StatusView::of(true, Some(0)).title, "Succeeded");
        assert_eq!(StatusView::of(true, Some(2)).title, "Dependency failed");
        assert_eq!(
            StatusView::of(true, Some(9)).title,
            "Unsupported system type"
        );
        assert_eq!(StatusView::of(true, Some(99)).title, "Failed");
        assert_eq!(StatusView::of(true, Some(4)).class, "stop");
    }

    #[test]
    fn durations_and_step_names() {
        assert_eq!(duration(65), "1m\u{a0}5s");
        assert_eq!(duration(3600), "1h\u{a0}0m\u{a0}0s");
        assert_eq!(duration(90_061), "1d\u{a0}1h\u{a0}1m\u{a0}1s");
        assert_eq!(duration(0), "0s");
        assert_eq!(
            step_name("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-1.0.drv"),
            "hello-1.0"
        );
    }

    #[test]
    fn only_web_addresses_become_links() {
        assert_eq!(
            web_link(" https://example.org "),
            Some("https://example.org".into())
        );
        assert_eq!(web_link("HTTP://x"), Some("HTTP://x".into()));
        assert_eq!(web_link("javascript:alert(1)"), None);
        assert_eq!(web_link("data:text/html,x"), None);
    }
}
