//! Build lists (`/all`, `/queue`) and the build page.

use askama::Template;

use super::common::{Fields, StatusView, Time, When, duration, pager, step_name};
use super::{Ctx, Frame, Html};

/// A row of a build list.
#[derive(Debug)]
pub(super) struct BuildRowView {
    pub(super) id: i64,
    pub(super) job: String,
    /// What the Job column shows: `P:J:JOB`, less what the page implies.
    pub(super) label: String,
    pub(super) system: String,
    /// The release name, else the Nix name.
    pub(super) name: String,
    pub(super) status: StatusView,
    /// Finished at (queued at, in scheduling views).
    pub(super) when: Option<When>,
    /// When a queued build is expected to finish (scheduling views).
    pub(super) expected: Option<When>,
}

impl BuildRowView {
    pub(super) fn of(b: Fields, scheduling: bool, now: i64) -> BuildRowView {
        let finished = b.int("finished") == Some(1);
        let when = if scheduling {
            b.int("timestamp")
        } else {
            b.int("stoptime")
        };
        let release = b.str("releasename");
        let name = if release.is_empty() || scheduling {
            b.text("nixname")
        } else {
            release.to_string()
        };
        let job = b.text("job");
        BuildRowView {
            id: b.int("id").unwrap_or(0),
            label: format!("{}:{}:{job}", b.str("project"), b.str("jobset")),
            job,
            system: b.text("system"),
            name,
            status: StatusView::of(finished, b.int("buildstatus")),
            when: when.map(|t| When::of(t, now)),
            expected: None,
        }
    }
}

impl BuildRowView {
    /// With when it is expected to finish, from a page's `etas` (build id
    /// → finish time).
    pub(super) fn expected_by(
        mut self,
        etas: Option<&serde_json::Value>,
        now: i64,
    ) -> BuildRowView {
        self.expected = etas
            .and_then(|e| e.get(self.id.to_string()))
            .and_then(serde_json::Value::as_i64)
            .map(|t| When::of(t, now));
        self
    }

    /// The row on a page of one jobset: the Job column shows the job only.
    pub(super) fn job_only(mut self) -> BuildRowView {
        self.label = self.job.clone();
        self
    }
}

/// A page that is a list of builds (`/all` and the `all` of a project,
/// jobset or job; `/queue`).
#[derive(Template)]
#[template(path = "builds.html")]
struct BuildsPage<'a> {
    frame: Frame<'a>,
    title: &'static str,
    /// What the list is of: "project", "jobset" or "job", its name and
    /// its page.
    scope: Option<(&'static str, String, String)>,
    builds: Vec<BuildRowView>,
    scheduling: bool,
    /// "Showing builds 1 - 20 out of 345": which builds these are.
    shown: Option<String>,
    /// Links to other pages: label and address.
    pager: Vec<(&'static str, String)>,
}

/// `/all` and below (a page of finished builds), or `/queue`
/// (`scheduling`).
pub(super) fn list(cx: &Ctx, scheduling: bool) -> Html {
    let d = cx.data;
    let list = if scheduling {
        d.0.as_array().map_or(&[][..], Vec::as_slice)
    } else {
        d.list("builds")
    };
    let extra = |k: &str| {
        cx.extra_value(k)
            .and_then(serde_json::Value::as_str)
            .map(String::from)
    };
    let scope = match (extra("project"), extra("jobset"), extra("job")) {
        (Some(p), Some(j), Some(job)) => Some((
            "job",
            format!("{p}:{j}:{job}"),
            format!("/job/{p}/{j}/{job}"),
        )),
        (Some(p), Some(j), None) => {
            Some(("jobset", format!("{p}:{j}"), format!("/jobset/{p}/{j}")))
        }
        (Some(p), None, _) => Some(("project", p.clone(), format!("/project/{p}"))),
        _ => None,
    };
    let builds = list
        .iter()
        .map(|b| {
            let row = BuildRowView::of(Fields(b), scheduling, cx.now)
                .expected_by(cx.extra_value("etas"), cx.now);
            match scope {
                // Drop what the scope implies.
                Some(("job" | "jobset", ..)) => row.job_only(),
                Some(("project", ..)) => {
                    let label = format!("{}:{}", Fields(b).str("jobset"), row.job);
                    BuildRowView { label, ..row }
                }
                _ => row,
            }
        })
        .collect();
    Some(
        BuildsPage {
            frame: cx.frame(),
            title: if scheduling { "Queue" } else { "Latest builds" },
            scope,
            builds,
            scheduling,
            shown: d.int("total").map(|total| {
                let first = cx.extra_value("first").and_then(serde_json::Value::as_i64);
                let estimated = cx
                    .extra_value("estimated")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                super::common::shown("builds", first, list.len(), total, estimated)
            }),
            pager: pager(d),
        }
        .render(),
    )
}

/// A product of a build, as its page lists it.
#[derive(Debug)]
struct ProductView {
    nr: String,
    kind: String,
    /// What it is, as Hydra's product list says it ("Source
    /// distribution", "Nix package", …).
    label: String,
    /// Where its link goes, and the link's text.
    href: String,
    text: String,
    /// A failed build's output (status 6): shown as an error.
    error: bool,
    path: String,
    /// Bytes, and the same in MiB.
    size: Option<(i64, String)>,
    sha256: String,
    /// The same product of the job's latest successful build: by type,
    /// and by number.
    latest: Option<(String, String)>,
}

impl ProductView {
    /// Product `nr` of build `id` of job `job` (`P:J:JOB` parts);
    /// `failed_output` for a build with status 6.
    fn of(
        id: i64,
        job: (&str, &str, &str),
        nr: &str,
        p: Fields,
        failed_output: bool,
    ) -> ProductView {
        let (kind, subtype, name) = (p.text("type"), p.text("subtype"), p.text("name"));
        let seg = super::common::encode_segment;
        let mut href = format!("/build/{id}/download/{nr}");
        if !name.is_empty() {
            href.push('/');
            href.push_str(&seg(&name));
        }
        let default_path = p.text("defaultpath");
        for part in default_path.split('/').filter(|s| !s.is_empty()) {
            href.push('/');
            href.push_str(&seg(part));
        }
        let subtype_word = |known: &[(&str, &str)], other: &str| -> String {
            known
                .iter()
                .find(|(k, _)| *k == subtype)
                .map_or_else(|| other.to_string(), |(_, label)| label.to_string())
        };
        let (label, text) = match kind.as_str() {
            "nix-build" if failed_output => ("Error".to_string(), name.clone()),
            "nix-build" => ("Nix package".to_string(), name.clone()),
            "file" => (
                subtype_word(
                    &[
                        ("source-dist", "Source distribution"),
                        ("rpm", "RPM package"),
                        ("srpm", "Source RPM package"),
                        ("deb", "Debian package"),
                        ("iso", "ISO-9660 CD/DVD image"),
                        ("binary-dist", "Binary distribution"),
                    ],
                    &if subtype.is_empty() {
                        "File".to_string()
                    } else {
                        format!("File ({subtype})")
                    },
                ),
                name.clone(),
            ),
            "channel" => (
                format!("Channel expression tarball for {subtype}"),
                name.clone(),
            ),
            "report" if subtype == "coverage" => {
                ("Code coverage".to_string(), "Analysis report".to_string())
            }
            "report" => ("Report".to_string(), subtype.clone()),
            "doc" | "doc-pdf" => (
                "Documentation".to_string(),
                subtype_word(
                    &[
                        ("readme", "Read Me!"),
                        ("manual", "Manual"),
                        ("release-notes", "Release notes"),
                    ],
                    &subtype,
                ),
            ),
            _ => (kind.clone(), name.clone()),
        };
        let (project, jobset, job) = job;
        let latest = (!job.is_empty()).then(|| {
            let base = format!("/job/{project}/{jobset}/{}/latest", seg(job));
            (
                format!(
                    "{base}/download-by-type/{}/{}",
                    seg(&kind),
                    seg(if subtype.is_empty() { "-" } else { &subtype })
                ),
                format!("{base}/download/{nr}"),
            )
        });
        ProductView {
            nr: nr.to_string(),
            text: if text.is_empty() {
                nr.to_string()
            } else {
                text
            },
            label,
            href,
            error: kind == "nix-build" && failed_output,
            path: p.text("path"),
            size: p
                .int("filesize")
                .map(|b| (b, format!("{:.2}", b as f64 / 1_048_576.0))),
            sha256: p.text("sha256hash"),
            latest,
            kind,
        }
    }

    /// A Nix package: installed with `nix-env`, not downloaded.
    fn is_package(&self) -> bool {
        self.kind == "nix-build" && !self.error
    }
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

/// What the build page says about a build's status.
fn status_text(finished: bool, code: Option<i64>, any_step_busy: bool) -> &'static str {
    use hydra_db::status::BuildStatus as S;
    if !finished {
        return if any_step_busy {
            "Build in progress"
        } else {
            "Scheduled to be built"
        };
    }
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
}

impl BuildView {
    fn of(b: Fields, any_step_busy: bool) -> BuildView {
        let finished = b.int("finished") == Some(1);
        let code = b.int("buildstatus");
        let evals: Vec<i64> = b
            .list("jobsetevals")
            .iter()
            .filter_map(serde_json::Value::as_i64)
            .collect();
        let outputs = b
            .members("buildoutputs")
            .map(|(name, v)| {
                let path = Some(v.str("path")).filter(|p| !p.is_empty());
                (name.clone(), path.unwrap_or("n/a").to_string())
            })
            .collect();
        let failed_output = finished
            && code
                == Some(i64::from(
                    hydra_db::status::BuildStatus::FailedWithOutput.code(),
                ));
        let (id, project, jobset, job) = (
            b.int("id").unwrap_or(0),
            b.text("project"),
            b.text("jobset"),
            b.text("job"),
        );
        let products = b
            .members("buildproducts")
            .map(|(nr, v)| ProductView::of(id, (&project, &jobset, &job), nr, v, failed_output))
            .collect();
        let (start, stop) = (b.int("starttime"), b.int("stoptime"));
        let release = b.str("releasename");
        BuildView {
            id: b.int("id").unwrap_or(0),
            project: b.text("project"),
            jobset: b.text("jobset"),
            job: b.text("job"),
            system: b.text("system"),
            nixname: b.text("nixname"),
            name: if release.is_empty() {
                b.text("nixname")
            } else {
                release.to_string()
            },
            drvpath: b.text("drvpath"),
            priority: b.int("priority").unwrap_or(0),
            finished,
            status: StatusView::of(finished, code),
            status_text: status_text(finished, code, any_step_busy),
            first_eval: evals.first().copied(),
            other_evals: evals.len().saturating_sub(1),
            duration: match (finished, start, stop) {
                (true, Some(a), Some(z)) => Some(duration(z - a)),
                _ => None,
            },
            queued: b.int("timestamp").map(Time::of),
            started: start.filter(|_| finished).map(Time::of),
            stopped: stop.filter(|_| finished).map(Time::of),
            outputs,
            products,
        }
    }
}

/// A row of the build steps table.
#[derive(Debug)]
pub(super) struct StepView {
    pub(super) nr: i64,
    pub(super) what: &'static str,
    pub(super) name: String,
    pub(super) duration: String,
    pub(super) machine: String,
    pub(super) status: String,
    pub(super) class: &'static str,
    pub(super) propagated_from: Option<i64>,
}

/// A busy step's state, as the steps table says it.
fn busy_text(busy: i64) -> &'static str {
    use hydra_db::status::Busy;
    [
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
    .map_or("Unknown state", |(_, t)| t)
}

/// A finished step's status text and its colour class.
pub(super) fn step_status(code: Option<i64>, error: &str) -> (String, &'static str) {
    use hydra_db::status::StepStatus as S;
    let code = code
        .and_then(|c| i32::try_from(c).ok())
        .and_then(S::from_code);
    let (text, class) = match code {
        Some(S::Succeeded) => ("Succeeded", "ok"),
        Some(S::Aborted) if !error.is_empty() => return (format!("Aborted: {error}"), "stop"),
        Some(S::Aborted) => ("Aborted", "stop"),
        Some(S::Cancelled) => ("Cancelled", "stop"),
        Some(S::TimedOut) => ("Timed out", "stop"),
        Some(S::CachedFailure) => ("Cached failure", "bad"),
        Some(S::Unsupported) => ("Unsupported system type", "stop"),
        Some(S::LogLimitExceeded) => ("Log limit exceeded", "stop"),
        Some(S::OutputLimitExceeded) => ("Output limit exceeded", "bad"),
        Some(S::NotDeterministic) => ("Non-determinism detected", "bad"),
        Some(S::Resolved) => ("Resolved", "dep"),
        _ => ("Failed", "bad"),
    };
    (text.to_string(), class)
}

impl StepView {
    pub(super) fn of(step: Fields, now: i64) -> StepView {
        let busy = step.int("busy").unwrap_or(0);
        let (status, class) = if busy != 0 {
            (busy_text(busy).to_string(), "queued")
        } else {
            step_status(step.int("status"), step.str("error"))
        };
        let duration = match (step.int("start"), step.int("stop")) {
            (Some(a), Some(z)) => duration(z - a),
            (Some(a), None) if busy != 0 => duration(now - a),
            _ => "n/a".to_string(),
        };
        let machine = step.str("machine");
        StepView {
            nr: step.int("stepnr").unwrap_or(0),
            what: if step.int("kind") == Some(1) {
                "Substitution of"
            } else {
                "Build of"
            },
            name: step_name(step.str("drv_path")),
            duration,
            machine: if machine.is_empty() { "n/a" } else { machine }.to_string(),
            status,
            class,
            propagated_from: step.int("propagated_from"),
        }
    }
}

/// `/build/N`.
#[derive(Template)]
#[template(path = "build.html")]
struct BuildPage<'a> {
    frame: Frame<'a>,
    b: BuildView,
    steps: Vec<StepView>,
    /// The last success of the job before this build, and the first
    /// finished build after it: id, finish time and status.
    last_success: Option<(i64, Option<Time>, StatusView)>,
    first_broken: Option<(i64, Option<Time>, StatusView)>,
    constituents: Vec<BuildRowView>,
    inputs: Vec<super::eval::InputView>,
    /// Name, value and unit.
    metrics: Vec<(String, String, String)>,
    /// The command that reproduces the build here.
    reproduce: Option<String>,
    keep: bool,
    cached_from: Option<i64>,
    /// Closure and output size, in MiB.
    sizes: Option<(String, String)>,
    /// RunCommand runs, newest first.
    runs: Vec<RunView>,
    /// Commit statuses, then notification tasks retried or given up.
    notifications: Vec<NotificationView>,
    /// For a `runCommandHook.*` job: whether its output runs ("Yes", or
    /// "No" with who turned it off).
    dynamic_runcommand: Option<String>,
    /// The binary cache address users substitute from
    /// (`binary_cache_public_uri`).
    cache_uri: Option<String>,
    /// Builds that took this one as an input: id, `P:J:JOB`, input name,
    /// system and when.
    used_by: Vec<(i64, String, String, String, super::common::When)>,
    /// Why the system cancelled the build, when it did.
    cancelled_because: Option<String>,
    /// The evaluation that superseded it.
    cancelled_eval: Option<i64>,
    /// Why a queued build waits.
    waiting: Option<WaitingView>,
    /// When a queued build is expected to finish.
    eta: Option<super::common::EtaView>,
}

/// Why a queued build waits: the queue runner's sentence, the steps that
/// can move among those it waits for (name, state and machine) and how
/// many more there are.
#[derive(Debug)]
struct WaitingView {
    sentence: String,
    /// Name, state, machine and when it is expected to be built.
    steps: Vec<(String, String, String, String)>,
    more: i64,
}

/// Why the system cancelled a build, for its page.
fn cancellation_text(c: &serde_json::Value) -> Option<String> {
    let eval = c.get("eval").and_then(serde_json::Value::as_i64);
    match (c.get("reason")?.as_str()?, eval) {
        ("superseded", Some(_)) => {
            Some("Superseded: a newer head's evaluation no longer wants it.".to_owned())
        }
        ("superseded", None) => {
            Some("Superseded: the newer head of its pull request waits for an approval.".to_owned())
        }
        ("closed", _) => Some("Its pull request was closed.".to_owned()),
        (other, _) => Some(other.to_owned()),
    }
}

/// A notification about the build on its page.
struct NotificationView {
    /// `status` or `task` (the retry route's word).
    kind: &'static str,
    id: i64,
    /// "GitHub · continuous-integration/hydra:p:j:job:1", "Slack on build_finished".
    what: String,
    /// Where a status goes.
    url: String,
    /// The state sent (`success`), for a status.
    state: String,
    /// `sent`, `due`, `retrying` or `dropped`.
    delivery: String,
    /// When it was sent, or is tried next, or why it was given up.
    detail: String,
    when: Option<super::common::When>,
}

impl NotificationView {
    fn status(n: Fields<'_>, now: i64) -> NotificationView {
        let delivery = n.text("delivery");
        let forge = match n.str("forge") {
            "github" => "GitHub",
            "gitlab" => "GitLab",
            "gitea" => "Gitea",
            "bitbucket" => "Bitbucket",
            other => other,
        };
        let (detail, when) = match delivery.as_str() {
            "sent" => (String::new(), n.int("sentAt")),
            "dropped" => (n.text("lastError"), None),
            "retrying" => (
                format!(
                    "attempt {} failed ({}); next",
                    n.int("attempts").unwrap_or(0),
                    n.text("lastError")
                ),
                n.int("nextAttempt"),
            ),
            _ => (String::new(), None),
        };
        NotificationView {
            kind: "status",
            id: n.int("id").unwrap_or(0),
            what: format!("{forge} · {}", n.text("context")),
            url: n.text("url"),
            state: n.text("state"),
            delivery,
            detail,
            when: when.map(|t| super::common::When::of(t, now)),
        }
    }

    fn task(n: Fields<'_>, now: i64) -> NotificationView {
        let delivery = n.text("delivery");
        let (detail, when) = if delivery == "dropped" {
            (
                format!(
                    "after {} attempts: {}",
                    n.int("attempts").unwrap_or(0),
                    n.text("lastError")
                ),
                n.int("droppedAt"),
            )
        } else {
            (
                format!("attempt {} failed; next", n.int("attempts").unwrap_or(0)),
                n.int("nextAttempt"),
            )
        };
        NotificationView {
            kind: "task",
            id: n.int("id").unwrap_or(0),
            what: format!("{} on {}", n.text("plugin"), n.text("channel")),
            url: String::new(),
            state: String::new(),
            delivery,
            detail,
            when: when.map(|t| super::common::When::of(t, now)),
        }
    }
}

/// A RunCommand run on the build page.
struct RunView {
    uuid: String,
    command: String,
    started: Option<super::common::When>,
    /// How long it ran, or has been running.
    ran_for: Option<String>,
    running: bool,
    /// `Some(true)` exited 0, `Some(false)` failed, `None` running.
    succeeded: Option<bool>,
    /// "Exit code 1", "Exit signal 9 (Core Dumped)", "Exec error 2".
    outcome: String,
}

impl BuildPage<'_> {
    /// What an aggregate's constituents came to.
    fn aggregate_summary(&self) -> Option<String> {
        let k = self.constituents.len();
        if k == 0 {
            return None;
        }
        let pending = self
            .constituents
            .iter()
            .filter(|c| c.status.class == "queued")
            .count();
        let failed = self
            .constituents
            .iter()
            .filter(|c| !matches!(c.status.class, "ok" | "queued"))
            .count();
        Some(match (failed, pending) {
            (0, 0) => format!("all {k} constituent builds succeeded"),
            (0, p) => format!("{p} of {k} constituent builds still pending"),
            (f, 0) => format!("{f} out of {k} constituent builds failed"),
            (f, p) => format!("{f} out of {k} constituent builds failed ({p} still pending)"),
        })
    }

    /// The step that made a failed build fail: its number and name.
    fn failed_step(&self) -> Option<&StepView> {
        if !self.b.finished || self.b.status.class == "ok" {
            return None;
        }
        self.steps.iter().find(|s| s.class == "bad")
    }
}

pub(super) fn build(cx: &Ctx) -> Html {
    let steps = cx.extra("steps");
    let any_busy = steps
        .iter()
        .any(|s| Fields(s).int("busy").unwrap_or(0) != 0);
    let neighbour = |k: &str| {
        let n = Fields(cx.extra_value(k)?);
        let status = StatusView::of(n.int("finished") == Some(1), n.int("buildstatus"));
        Some((n.int("id")?, n.int("stoptime").map(Time::of), status))
    };
    let d = cx.data;
    let details = Fields(
        cx.extra_value("details")
            .unwrap_or(&serde_json::Value::Null),
    );
    let b = BuildView::of(d, any_busy);
    Some(
        BuildPage {
            frame: cx.frame().at(&b.project, Some(&b.jobset), Some(&b.job)),
            b,
            steps: steps
                .iter()
                .map(|s| StepView::of(Fields(s), cx.now))
                .collect(),
            keep: details.flag("keep"),
            cached_from: details
                .int("cached_from")
                .filter(|_| details.flag("cached")),
            sizes: match (details.int("closure_size"), details.int("size")) {
                (Some(c), Some(o)) => {
                    let mib = |b: i64| format!("{:.1}", b as f64 / 1_048_576.0);
                    Some((mib(c), mib(o)))
                }
                _ => None,
            },
            reproduce: cx
                .extra_value("reproduce")
                .and_then(serde_json::Value::as_str)
                .map(String::from),
            last_success: neighbour("last_success"),
            first_broken: neighbour("first_broken"),
            constituents: cx
                .extra("constituents")
                .iter()
                .map(|b| BuildRowView::of(Fields(b), false, cx.now))
                .collect(),
            inputs: cx
                .extra_value("inputs")
                .and_then(serde_json::Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(name, i)| super::eval::InputView::of(name, Fields(i)))
                        .collect()
                })
                .unwrap_or_default(),
            cache_uri: cx
                .extra_value("cache_uri")
                .and_then(serde_json::Value::as_str)
                .filter(|u| !u.is_empty())
                .map(String::from),
            used_by: cx
                .extra("used_by")
                .iter()
                .map(|u| {
                    let u = Fields(u);
                    (
                        u.int("id").unwrap_or(0),
                        format!(
                            "{}:{}:{}",
                            u.text("project"),
                            u.text("jobset"),
                            u.text("job")
                        ),
                        u.text("input"),
                        u.text("system"),
                        super::common::When::of(u.int("timestamp").unwrap_or(0), cx.now),
                    )
                })
                .collect(),
            runs: cx
                .extra("runcommands")
                .iter()
                .map(|r| {
                    let r = Fields(r);
                    RunView {
                        uuid: r.text("uuid"),
                        command: r.text("command"),
                        started: r
                            .int("start_time")
                            .map(|t| super::common::When::of(t, cx.now)),
                        ran_for: r.int("running_for").map(super::common::duration),
                        running: r.int("start_time").is_some() && r.int("end_time").is_none(),
                        succeeded: r.0.get("succeeded").and_then(serde_json::Value::as_bool),
                        outcome: r.text("outcome"),
                    }
                })
                .collect(),
            cancelled_because: cx.extra_value("cancellation").and_then(cancellation_text),
            eta: cx
                .extra_value("eta")
                .and_then(|e| super::common::EtaView::of(e, cx.now)),
            waiting: cx.extra_value("waiting").map(|w| {
                let w = Fields(w);
                let steps: Vec<(String, String, String, String)> = w
                    .list("blocking")
                    .iter()
                    .map(Fields)
                    .map(|s| {
                        (
                            super::common::step_name(s.str("drvPath")),
                            s.text("state"),
                            s.text("machine"),
                            s.0.get("eta")
                                .and_then(|e| super::common::EtaView::of(e, cx.now))
                                .map(|e| e.text)
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                WaitingView {
                    sentence: w.text("sentence"),
                    more: w.int("blockingCount").unwrap_or(0) - steps.len() as i64,
                    steps,
                }
            }),
            cancelled_eval: cx
                .extra_value("cancellation")
                .and_then(|c| c.get("eval"))
                .and_then(serde_json::Value::as_i64),
            dynamic_runcommand: cx
                .extra_value("dynamic_runcommand")
                .and_then(serde_json::Value::as_str)
                .map(String::from),
            notifications: {
                let n = cx.extra_value("notifications");
                let list = |key: &str| {
                    n.and_then(|n| n.get(key))
                        .and_then(serde_json::Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                };
                list("commitStatuses")
                    .iter()
                    .map(|s| NotificationView::status(Fields(s), cx.now))
                    .chain(
                        list("tasks")
                            .iter()
                            .map(|t| NotificationView::task(Fields(t), cx.now)),
                    )
                    .collect()
            },
            metrics: d
                .members("buildmetrics")
                .map(|(name, m)| {
                    let value = m.0.get("value").map(|v| v.to_string()).unwrap_or_default();
                    (name.clone(), value, m.text("unit"))
                })
                .collect(),
        }
        .render(),
    )
}

/// `/build/N/step/M`.
#[derive(Template)]
#[template(path = "step.html")]
struct StepPage<'a> {
    frame: Frame<'a>,
    build: i64,
    job: String,
    step: StepView,
    kind: &'static str,
    drvpath: String,
    system: String,
    outputs: Vec<(String, String)>,
}

pub(super) fn step(cx: &Ctx) -> Html {
    let d = cx.data;
    let build = Fields(d.0.get("build").unwrap_or(&serde_json::Value::Null));
    // The step JSON names its times and number as Hydra does.
    let as_row = serde_json::json!({
        "stepnr": d.int("stepnr"), "busy": d.int("busy"), "status": d.int("status"),
        "start": d.int("starttime"), "stop": d.int("stoptime"), "machine": d.str("machine"),
        "drv_path": d.str("drvpath"), "error": d.str("errormsg"), "kind": d.int("type"),
        "propagated_from": d.int("propagatedfrom"),
    });
    let resolved = d.int("status") == Some(13) && !d.str("resolveddrvpath").is_empty();
    Some(
        StepPage {
            frame: cx.frame(),
            build: build.int("id").unwrap_or(0),
            job: cx.extra_text("job"),
            step: StepView::of(Fields(&as_row), cx.now),
            kind: if resolved {
                "Resolution"
            } else if d.int("type") == Some(1) {
                "Substitution"
            } else {
                "Build"
            },
            drvpath: d.text("drvpath"),
            system: d.text("system"),
            outputs: cx
                .extra("outputs")
                .iter()
                .filter_map(|o| {
                    let o = o.as_array()?;
                    Some((
                        o.first()?.as_str()?.to_string(),
                        o.get(1)
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or("n/a")
                            .to_string(),
                    ))
                })
                .collect(),
        }
        .render(),
    )
}

/// `/build/N/contents/NR`: the files of a product.
#[derive(Template)]
#[template(path = "contents.html")]
struct ContentsPage<'a> {
    frame: Frame<'a>,
    build: i64,
    nr: i64,
    name: String,
    path: String,
    directory: bool,
    size: i64,
    /// Path, kind, size and symlink target.
    files: Vec<(String, String, i64, String)>,
    more: bool,
}

pub(super) fn contents(cx: &Ctx) -> Html {
    let d = cx.data;
    Some(
        ContentsPage {
            frame: cx.frame(),
            build: d.int("build").unwrap_or(0),
            nr: d.int("productnr").unwrap_or(0),
            name: Some(d.text("name"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "-".into()),
            path: d.text("path"),
            directory: d.flag("directory"),
            size: d.int("size").unwrap_or(0),
            files: d
                .list("files")
                .iter()
                .map(Fields)
                .map(|f| {
                    (
                        f.text("path"),
                        f.text("kind"),
                        f.int("size").unwrap_or(0),
                        f.text("target"),
                    )
                })
                .collect(),
            more: d.flag("more"),
        }
        .render(),
    )
}

/// `/build/N/build-deps` and `/build/N/runtime-deps`.
#[derive(Template)]
#[template(path = "build-deps.html")]
struct DepsPage<'a> {
    frame: Frame<'a>,
    build: i64,
    /// The outputs' references rather than the derivation's inputs.
    runtime: bool,
    available: bool,
    /// The tree, rendered (and escaped) by `deps::html`.
    tree: String,
}

pub(super) fn deps(cx: &Ctx, runtime: bool) -> Html {
    Some(
        DepsPage {
            frame: cx.frame(),
            build: cx.data.int("build").unwrap_or(0),
            runtime,
            available: cx.data.flag("available"),
            tree: cx.extra_text("html"),
        }
        .render(),
    )
}

/// `/build/N/graph`.
#[derive(Template)]
#[template(path = "build-graph.html")]
struct GraphPage<'a> {
    frame: Frame<'a>,
    build: i64,
    available: bool,
    scope: String,
    total: i64,
    shown: i64,
    hidden: i64,
    /// The steps along the critical path: name, and how long it took or
    /// when it is expected to end.
    critical: Vec<(String, String)>,
    /// The graph, drawn (and escaped) by `graph::svg`.
    svg: String,
}

pub(super) fn graph(cx: &Ctx) -> Html {
    let g = Fields(cx.data.0.get("graph").unwrap_or(&serde_json::Value::Null));
    let nodes = g.list("nodes");
    let by_drv: std::collections::HashMap<&str, Fields> = nodes
        .iter()
        .map(Fields)
        .map(|n| (n.str("drvPath"), n))
        .collect();
    let critical: Vec<(String, String)> = g
        .list("criticalPath")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .map(|d| {
            let node = by_drv.get(d);
            let state = node.map(|n| n.text("state")).unwrap_or_default();
            let detail = match (state.as_str(), node.and_then(|n| n.int("end"))) {
                ("queued" | "building", Some(end)) => {
                    format!("expected {}", super::common::Time::relative_to(end, cx.now))
                }
                ("queued", None) => "to build".into(),
                _ => node
                    .and_then(|n| n.int("seconds"))
                    .map(super::common::duration)
                    .unwrap_or_default(),
            };
            (super::common::step_name(d), detail)
        })
        .collect();
    Some(
        GraphPage {
            frame: cx.frame(),
            build: cx.data.int("build").unwrap_or(0),
            available: cx.data.flag("available"),
            scope: cx.extra_text("scope"),
            total: g.int("total").unwrap_or(0),
            shown: nodes.len() as i64,
            hidden: g.int("hidden").unwrap_or(0),
            critical,
            svg: cx.extra_text("svg"),
        }
        .render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(kind: &str, subtype: &str, name: &str, failed: bool) -> ProductView {
        let p = serde_json::json!({
            "type": kind, "subtype": subtype, "name": name, "path": "/nix/store/x-y",
            "defaultpath": "share/doc/index.html", "filesize": 2_097_152,
        });
        ProductView::of(7, ("p", "j", "a.b"), "3", Fields(&p), failed)
    }

    #[test]
    fn products_are_named_by_type_and_linked_by_name_and_default_path() {
        let p = product("file", "iso", "my disk.iso", false);
        assert_eq!(p.label, "ISO-9660 CD/DVD image");
        assert_eq!(
            p.href,
            "/build/7/download/3/my%20disk.iso/share/doc/index.html"
        );
        assert_eq!(p.size, Some((2_097_152, "2.00".to_string())));
        assert_eq!(
            p.latest,
            Some((
                "/job/p/j/a.b/latest/download-by-type/file/iso".to_string(),
                "/job/p/j/a.b/latest/download/3".to_string()
            ))
        );
        assert_eq!(product("file", "", "f", false).label, "File");
        assert_eq!(product("file", "log", "f", false).label, "File (log)");
        assert_eq!(
            product("channel", "nixpkgs", "c", false).label,
            "Channel expression tarball for nixpkgs"
        );
        let r = product("report", "coverage", "r", false);
        assert_eq!(
            (r.label.as_str(), r.text.as_str()),
            ("Code coverage", "Analysis report")
        );
        let d = product("doc", "release-notes", "d", false);
        assert_eq!(
            (d.label.as_str(), d.text.as_str()),
            ("Documentation", "Release notes")
        );
        assert_eq!(product("doc-pdf", "manual", "d", false).text, "Manual");
        assert!(product("nix-build", "", "n", false).is_package());
        let e = product("nix-build", "", "n", true);
        assert!(e.error && !e.is_package());
        assert_eq!(e.label, "Error");
        assert_eq!(product("weird", "", "w", false).label, "weird");
    }
}
