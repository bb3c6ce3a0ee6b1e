//! The jobset page.

use askama::Template;

use super::common::{Fields, Time, When, duration};
use super::{Ctx, Frame, Html};

/// A changed input in the evaluations table.
#[derive(Debug)]
pub(super) struct InputChangeView {
    pub(super) name: String,
    pub(super) value: String,
    /// The full revision behind a short one.
    pub(super) revision: String,
    pub(super) build: Option<i64>,
}

/// A row of the evaluations table.
#[derive(Debug)]
pub(super) struct EvalRowView {
    pub(super) id: i64,
    pub(super) project: String,
    pub(super) jobset: String,
    pub(super) when: When,
    pub(super) took: Option<String>,
    pub(super) has_errors: bool,
    pub(super) succeeded: i64,
    pub(super) failed: i64,
    pub(super) queued: i64,
    pub(super) changes: Vec<InputChangeView>,
    /// The change in succeeded builds, when shown: text and colour.
    pub(super) delta: Option<(String, &'static str)>,
}

impl EvalRowView {
    pub(super) fn of(e: Fields, now: i64) -> EvalRowView {
        let took = match (e.int("checkout_time"), e.int("eval_time")) {
            (Some(c), Some(v)) => Some(duration(c + v)),
            _ => None,
        };
        let queued = e.int("queued").unwrap_or(0);
        let delta = match e.int("delta") {
            Some(d) if d > 0 => Some((format!("+{d}"), "ok")),
            Some(d) if d < 0 && queued == 0 => Some((format!("\u{2212}{}", -d), "bad")),
            _ => None,
        };
        EvalRowView {
            id: e.int("id").unwrap_or(0),
            project: e.text("project"),
            jobset: e.text("jobset"),
            when: When::of(e.int("timestamp").unwrap_or(0), now),
            took,
            has_errors: e.flag("has_errors"),
            succeeded: e.int("succeeded").unwrap_or(0),
            failed: e.int("failed").unwrap_or(0),
            queued,
            changes: e
                .list("changes")
                .iter()
                .map(|c| {
                    let c = Fields(c);
                    InputChangeView {
                        name: c.text("name"),
                        value: c.text("value"),
                        revision: c.text("revision"),
                        build: c.int("build"),
                    }
                })
                .collect(),
            delta,
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
    enable_email: bool,
    email_override: String,
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
    fn of(j: Fields, now: i64) -> JobsetView {
        use hydra_db::status::JobsetState;
        let state = match j
            .int("enabled")
            .and_then(|c| i32::try_from(c).ok())
            .and_then(JobsetState::from_code)
        {
            Some(JobsetState::Disabled) => "Disabled",
            Some(JobsetState::OneShot) => "One-shot",
            Some(JobsetState::OneAtATime) => "One-at-a-time",
            _ => "Enabled",
        };
        let (fetch_error, eval_error) = (j.text("fetcherrormsg"), j.text("errormsg"));
        let inputs = j
            .members("inputs")
            .map(|(name, v)| (name.clone(), v.text("type"), v.text("value")))
            .collect();
        JobsetView {
            project: j.text("project"),
            name: j.text("name"),
            description: j.text("description"),
            state,
            flake: j.text("flake"),
            nixexprinput: j.text("nixexprinput"),
            nixexprpath: j.text("nixexprpath"),
            checkinterval: j.int("checkinterval").unwrap_or(0),
            schedulingshares: j.int("schedulingshares").unwrap_or(0),
            keepnr: j.int("keepnr").unwrap_or(0),
            enable_email: j.flag("enableemail"),
            email_override: j.text("emailoverride"),
            last_checked: j.int("lastcheckedtime").map(Time::of),
            error_time: j.int("errortime").map(Time::of),
            running_since: j.int("starttime").map(|t| When::of(t, now)),
            pending_since: j.int("triggertime").map(|t| When::of(t, now)),
            has_errors: !fetch_error.is_empty() || !eval_error.is_empty(),
            fetch_error,
            eval_error,
            inputs,
        }
    }
}

/// `/jobset/P/J`.
#[derive(Template)]
#[template(path = "jobset.html")]
struct JobsetPage<'a> {
    frame: Frame<'a>,
    /// The viewer may change the jobset (not in a declarative project).
    editable: bool,
    j: JobsetView,
    evals: Vec<EvalRowView>,
    more_evals: String,
    /// Its part of all the scheduling shares.
    share: String,
    /// "Yes", or "No" with who turned dynamic RunCommand off.
    dynamic_run_command: String,
    /// The server sends email (the email settings are shown).
    email_notification: bool,
    /// The pull request this jobset builds, if any.
    pull_request: Option<PullRequestView>,
}

/// The pull request a jobset builds.
#[derive(Debug)]
struct PullRequestView {
    number: i64,
    title: String,
    author: String,
    fork: bool,
    open: bool,
    head: String,
    short_head: String,
    /// Who approved the current head, and when.
    approved: Option<(String, Time)>,
    /// Built without an approval (the author is trusted).
    trusted: bool,
    /// The viewer may approve (a project member).
    can_approve: bool,
}

impl PullRequestView {
    fn of(pr: Fields, can_approve: bool) -> PullRequestView {
        let head = pr.text("head_sha");
        let approved = match (pr.str("approved_sha") == head, pr.int("approved_at")) {
            (true, Some(at)) => Some((pr.text("approved_by"), Time::of(at))),
            _ => None,
        };
        PullRequestView {
            number: pr.int("number").unwrap_or(0),
            title: pr.text("title"),
            author: pr.text("author"),
            fork: pr.flag("fork"),
            open: pr.str("state") == "open",
            short_head: head.chars().take(12).collect(),
            head,
            approved,
            trusted: pr.flag("trusted"),
            can_approve,
        }
    }
}

/// A jobset's part of all the scheduling shares, `shares` its own and
/// `others` those of the other jobsets that are not disabled (Hydra's
/// "X% out of T shares").
fn share_text(shares: i64, others: i64) -> String {
    if shares <= 0 {
        return format!("the other jobsets have {others} shares");
    }
    let total = others + shares;
    format!(
        "{:.2}% out of {total} shares",
        shares as f64 / total as f64 * 100.0
    )
}

pub(super) fn jobset(cx: &Ctx) -> Html {
    let j = JobsetView::of(cx.data, cx.now);
    Some(
        JobsetPage {
            frame: cx.frame().at(&j.project, Some(&j.name), None),
            editable: cx.extra_flag("owner") && !cx.extra_flag("declarative"),
            more_evals: format!("/jobset/{}/{}/evals", j.project, j.name),
            dynamic_run_command: cx.extra_text("dynamic_run_command"),
            email_notification: cx.extra_flag("email_notification"),
            pull_request: cx
                .extra_value("pull_request")
                .filter(|v| !v.is_null())
                .map(|pr| PullRequestView::of(Fields(pr), cx.extra_flag("owner"))),
            share: share_text(
                j.schedulingshares,
                cx.extra_value("other_shares")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0),
            ),
            j,
            evals: cx
                .extra("evals")
                .iter()
                .map(|e| EvalRowView::of(Fields(e), cx.now))
                .collect(),
        }
        .render(),
    )
}

/// An input row of the jobset form.
#[derive(Debug)]
struct InputRowView {
    name: String,
    kind: String,
    value: String,
    email_responsible: bool,
}

/// The jobset form (create, edit, clone, from an evaluation), with a
/// refusal next to its field.
#[derive(Template)]
#[template(path = "jobset-form.html")]
struct JobsetFormPage<'a> {
    frame: Frame<'a>,
    title: String,
    action: String,
    project: String,
    name: String,
    /// 0 disabled, 1 enabled, 2 one-shot, 3 one-at-a-time.
    state: String,
    visible: bool,
    flake_type: bool,
    description: String,
    flake: String,
    nixexprinput: String,
    nixexprpath: String,
    checkinterval: String,
    schedulingshares: String,
    keepnr: String,
    dynamic_run_command: bool,
    /// Why dynamic RunCommand cannot be turned on (the server or the
    /// project has it off).
    dynamic_blocker: Option<String>,
    enable_email: bool,
    /// The server sends email.
    email_notification: bool,
    email_override: String,
    /// The scheduling shares of the other jobsets that are not disabled.
    other_shares: i64,
    /// The inputs, then an empty row for a new one.
    inputs: Vec<InputRowView>,
    input_types: Vec<String>,
    field: String,
    error: String,
}

impl JobsetFormPage<'_> {
    /// This jobset's part of all the shares.
    fn share_hint(&self) -> String {
        share_text(
            self.schedulingshares.trim().parse().unwrap_or(0),
            self.other_shares,
        )
    }

    /// The refusal of `field`, if it is the one refused.
    fn error_of(&self, field: &str) -> Option<&str> {
        (self.field == field && !self.error.is_empty()).then_some(self.error.as_str())
    }
}

pub(super) fn jobset_form(cx: &Ctx) -> Html {
    let d = cx.data;
    let mut inputs: Vec<InputRowView> = d
        .members("inputs")
        .map(|(name, i)| InputRowView {
            name: name.clone(),
            kind: i.text("type"),
            value: i.text("value"),
            email_responsible: i.flag("emailresponsible"),
        })
        .collect();
    inputs.push(InputRowView {
        name: String::new(),
        kind: "git".into(),
        value: String::new(),
        email_responsible: false,
    });
    Some(
        JobsetFormPage {
            frame: cx.frame(),
            title: cx.extra_text("title"),
            action: cx.extra_text("action"),
            project: cx.extra_text("project"),
            name: d.text("name"),
            state: Some(d.shown("enabled"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "1".into()),
            visible: d.flag("visible"),
            flake_type: d.shown("type") == "1",
            description: d.text("description"),
            flake: d.text("flake"),
            nixexprinput: d.text("nixexprinput"),
            nixexprpath: d.text("nixexprpath"),
            checkinterval: d.shown("checkinterval"),
            schedulingshares: d.shown("schedulingshares"),
            keepnr: d.shown("keepnr"),
            dynamic_run_command: d.flag("enable_dynamic_run_command"),
            dynamic_blocker: Some(cx.extra_text("dynamic_blocker")).filter(|b| !b.is_empty()),
            enable_email: d.flag("enableemail"),
            email_notification: cx.extra_flag("email_notification"),
            email_override: d.text("emailoverride"),
            other_shares: cx
                .extra_value("other_shares")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0),
            inputs,
            input_types: cx.extra_texts("input_types"),
            field: cx.extra_text("field"),
            error: cx.extra_text("error"),
        }
        .render(),
    )
}

/// A row of a matrix of builds: a job and its build in each column (an
/// evaluation on the jobset's page, an aggregate build on a job's).
#[derive(Debug)]
pub(super) struct MatrixRow {
    pub(super) job: String,
    pub(super) cells: Vec<Option<(i64, super::common::StatusView)>>,
}

/// `/jobset/P/J/jobs-tab`.
#[derive(Template)]
#[template(path = "jobs-matrix.html")]
struct MatrixPage<'a> {
    frame: Frame<'a>,
    /// Of the jobs that make channels (rows lead to the channels).
    channels: bool,
    project: String,
    jobset: String,
    evals: Vec<(i64, When)>,
    rows: Vec<MatrixRow>,
    jobs: i64,
    limited: bool,
    filter: String,
    /// `succeeded`, `failed`, `queued` or empty.
    status: String,
    /// One system, or empty for all; and the systems there are.
    system: String,
    systems: Vec<String>,
    /// Inactive jobs were asked for (`showInactive=1`).
    show_inactive: bool,
    /// Jobs with builds, but none in these evaluations; how many there
    /// are in all.
    inactive: Vec<String>,
    inactive_total: i64,
}

impl MatrixPage<'_> {
    /// This matrix with every job (`all=1`), keeping its filters.
    fn all_link(&self) -> String {
        let q = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut link = String::from("?all=1");
        for (key, value) in [("status", &self.status), ("system", &self.system)] {
            if !value.is_empty() {
                link.push_str(&format!("&{key}={}", q(value)));
            }
        }
        if self.show_inactive {
            link.push_str("&showInactive=1");
        }
        link
    }
}

pub(super) fn jobs_matrix(cx: &Ctx) -> Html {
    use super::common::StatusView;
    let d = cx.data;
    let evals: Vec<(i64, When)> = d
        .list("evals")
        .iter()
        .map(Fields)
        .map(|e| {
            (
                e.int("id").unwrap_or(0),
                When::of(e.int("timestamp").unwrap_or(0), cx.now),
            )
        })
        .collect();
    let mut rows: Vec<MatrixRow> = Vec::new();
    for c in d.list("cells").iter().map(Fields) {
        let job = c.text("job");
        if rows.last().is_none_or(|r| r.job != job) {
            rows.push(MatrixRow {
                job,
                cells: vec![None; evals.len()],
            });
        }
        let (Some(row), Some(eval)) = (rows.last_mut(), c.int("eval")) else {
            continue;
        };
        if let Some(i) = evals.iter().position(|(id, _)| *id == eval)
            && row.cells[i].is_none()
        {
            let status = StatusView::of(c.int("finished") == Some(1), c.int("buildstatus"));
            row.cells[i] = Some((c.int("build").unwrap_or(0), status));
        }
    }
    Some(
        MatrixPage {
            frame: cx.frame(),
            channels: cx.extra_flag("channels"),
            project: d.text("project"),
            jobset: d.text("jobset"),
            evals,
            rows,
            jobs: d.int("jobs").unwrap_or(0),
            limited: d.flag("limited"),
            filter: d.text("filter"),
            status: cx.extra_text("status"),
            system: cx.extra_text("system"),
            systems: cx.extra_texts("systems"),
            show_inactive: cx.extra_value("inactive").is_some(),
            inactive: cx.extra_texts("inactive"),
            inactive_total: cx
                .extra_value("inactive_total")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0),
        }
        .render(),
    )
}

#[cfg(test)]
mod tests {
    use super::share_text;

    #[test]
    fn a_jobsets_share_counts_its_own_shares_once() {
        assert_eq!(share_text(50, 0), "100.00% out of 50 shares");
        assert_eq!(share_text(100, 50), "66.67% out of 150 shares");
        assert_eq!(share_text(1, 2), "33.33% out of 3 shares");
        assert_eq!(share_text(0, 40), "the other jobsets have 40 shares");
    }
}
