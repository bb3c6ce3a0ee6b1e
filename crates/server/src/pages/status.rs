//! What is happening now: running builds, machines, the queue runner's
//! status, the latest steps; and search.

use askama::Template;

use super::build::BuildRowView;
use super::common::{Fields, StatusView, When, duration, step_name};
use super::{Ctx, Frame, Html};

/// A row of the running builds: the build and its busy step.
#[derive(Debug)]
struct RunningView {
    build: BuildRowView,
    /// The step's name, when it differs from the build's.
    step: Option<(&'static str, String)>,
    machine: String,
    since: Option<When>,
}

/// `/status`.
#[derive(Template)]
#[template(path = "running.html")]
struct RunningPage<'a> {
    frame: Frame<'a>,
    rows: Vec<RunningView>,
}

pub(super) fn running(cx: &Ctx) -> Html {
    let rows = cx
        .data
        .0
        .as_array()?
        .iter()
        .map(Fields)
        .map(|s| {
            let name = step_name(s.str("drvpath"));
            let what = if s.int("type") == Some(1) {
                "Substitution of"
            } else {
                "Build of"
            };
            RunningView {
                build: BuildRowView::of(s, true, cx.now),
                step: (name != s.str("nixname")).then_some((what, name)),
                machine: s.text("machine"),
                since: s.int("starttime").map(|t| When::of(t, cx.now)),
            }
        })
        .collect();
    Some(
        RunningPage {
            frame: cx.frame(),
            rows,
        }
        .render(),
    )
}

/// `/queue-summary`.
#[derive(Template)]
#[template(path = "queue-summary.html")]
struct QueueSummaryPage<'a> {
    frame: Frame<'a>,
    /// Project, jobset, count, oldest and newest.
    jobsets: Vec<(String, String, i64, When, When)>,
    /// System and count.
    systems: Vec<(String, i64)>,
}

pub(super) fn queue_summary(cx: &Ctx) -> Html {
    let d = cx.data;
    let when = |f: Fields, k: &str| When::of(f.int(k).unwrap_or(0), cx.now);
    Some(
        QueueSummaryPage {
            frame: cx.frame(),
            jobsets: d
                .list("jobsets")
                .iter()
                .map(Fields)
                .map(|j| {
                    (
                        j.text("project"),
                        j.text("jobset"),
                        j.int("queued").unwrap_or(0),
                        when(j, "oldest"),
                        when(j, "newest"),
                    )
                })
                .collect(),
            systems: d
                .list("systems")
                .iter()
                .map(Fields)
                .map(|s| (s.text("system"), s.int("queued").unwrap_or(0)))
                .collect(),
        }
        .render(),
    )
}

/// A busy step on a machine.
#[derive(Debug)]
struct MachineStepView {
    job: String,
    build: i64,
    stepnr: i64,
    name: String,
    elapsed: String,
}

/// A machine with its steps.
#[derive(Debug)]
struct MachineView {
    name: String,
    short: String,
    enabled: bool,
    systems: String,
    features: String,
    mandatory: String,
    max_jobs: i64,
    speed_factor: String,
    steps_done: i64,
    avg_step: String,
    consecutive_failures: i64,
    disabled_until: Option<When>,
    steps: Vec<MachineStepView>,
}

/// A machine's name without its scheme and user: `ssh://u@host` → `host`.
fn short_machine(name: &str) -> &str {
    let rest = name.split_once("://").map_or(name, |(_, r)| r);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// `/machines`.
#[derive(Template)]
#[template(path = "machines.html")]
struct MachinesPage<'a> {
    frame: Frame<'a>,
    known: bool,
    machines: Vec<MachineView>,
}

pub(super) fn machines(cx: &Ctx) -> Html {
    use hydra_db::runner_status::MachineStatus;
    let d = cx.data;
    let steps = d.list("steps");
    let reported: Option<std::collections::BTreeMap<String, MachineStatus>> =
        d.0.get("machines")
            .and_then(|m| serde_json::from_value(m.clone()).ok());
    let known = reported.is_some();
    let machines = reported
        .unwrap_or_default()
        .into_iter()
        .map(|(name, m)| MachineView {
            short: short_machine(&name).to_string(),
            enabled: m.enabled,
            systems: m.system_types.join(", "),
            features: m.supported_features.join(", "),
            mandatory: m.mandatory_features.join(", "),
            max_jobs: i64::from(m.max_jobs),
            speed_factor: format!("{}", m.speed_factor),
            steps_done: i64::try_from(m.nr_steps_done).unwrap_or(i64::MAX),
            avg_step: format!("{:.1}", m.avg_step_time),
            consecutive_failures: i64::from(m.consecutive_failures),
            disabled_until: m
                .disabled_until
                .filter(|t| *t > cx.now)
                .map(|t| When::of(t, cx.now)),
            steps: steps
                .iter()
                .map(Fields)
                .filter(|s| s.str("machine") == name)
                .map(|s| MachineStepView {
                    job: format!("{}:{}:{}", s.str("project"), s.str("jobset"), s.str("job")),
                    build: s.int("build").unwrap_or(0),
                    stepnr: s.int("stepnr").unwrap_or(0),
                    name: step_name(s.str("drvpath")),
                    elapsed: s
                        .int("starttime")
                        .map_or_else(String::new, |t| duration(cx.now - t)),
                })
                .collect(),
            name,
        })
        .collect();
    Some(
        MachinesPage {
            frame: cx.frame(),
            known,
            machines,
        }
        .render(),
    )
}

/// `/queue-runner-status`.
#[derive(Template)]
#[template(path = "runner-status.html")]
struct RunnerStatusPage<'a> {
    frame: Frame<'a>,
    text: String,
}

/// `value` with every object's keys sorted.
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

pub(super) fn runner_status(cx: &Ctx) -> Html {
    Some(
        RunnerStatusPage {
            frame: cx.frame(),
            text: serde_json::to_string_pretty(&sorted(cx.data.0)).ok()?,
        }
        .render(),
    )
}

/// A finished step.
#[derive(Debug)]
struct StepRowView {
    build: i64,
    stepnr: i64,
    name: String,
    job: String,
    status: StatusView,
    when: Option<When>,
    duration: String,
    machine: String,
}

/// `/steps`.
#[derive(Template)]
#[template(path = "steps.html")]
struct StepsPage<'a> {
    frame: Frame<'a>,
    steps: Vec<StepRowView>,
    pager: Vec<(&'static str, String)>,
}

pub(super) fn steps(cx: &Ctx) -> Html {
    let d = cx.data;
    let jobs = cx.extra_value("jobs");
    let full = d.list("steps").len() >= 20;
    let steps = d
        .list("steps")
        .iter()
        .map(Fields)
        .map(|s| {
            let build = s.int("build").unwrap_or(0);
            let job = jobs
                .and_then(|j| j.get(build.to_string()))
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            StepRowView {
                build,
                stepnr: s.int("stepnr").unwrap_or(0),
                name: step_name(s.str("drvpath")),
                job,
                status: StatusView::of(true, s.int("status")),
                when: s.int("stoptime").map(|t| When::of(t, cx.now)),
                duration: match (s.int("starttime"), s.int("stoptime")) {
                    (Some(a), Some(z)) => duration(z - a),
                    _ => String::new(),
                },
                machine: s.text("machine"),
            }
        })
        .collect();
    Some(
        StepsPage {
            frame: cx.frame(),
            steps,
            // Hydra always offers a next page; there is none after a
            // short one.
            pager: super::common::pager(d)
                .into_iter()
                .filter(|(label, _)| full || !label.starts_with("Next"))
                .collect(),
        }
        .render(),
    )
}

/// `/search?query=Q`.
#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    frame: Frame<'a>,
    /// Name, description and whether it is enabled.
    projects: Vec<(String, String, bool)>,
    /// Project, jobset and description.
    jobsets: Vec<(String, String, String)>,
    builds: Vec<BuildRowView>,
    builds_drv: Vec<BuildRowView>,
    /// Project, jobset and job.
    jobs: Vec<(String, String, String)>,
    more_jobs: bool,
}

pub(super) fn search(cx: &Ctx) -> Html {
    let d = cx.data;
    let builds = |k: &str| {
        d.list(k)
            .iter()
            .map(|b| BuildRowView::of(Fields(b), false, cx.now))
            .collect()
    };
    Some(
        SearchPage {
            frame: cx.frame(),
            projects: d
                .list("projects")
                .iter()
                .map(Fields)
                .map(|p| (p.text("name"), p.text("description"), p.flag("enabled")))
                .collect(),
            jobsets: d
                .list("jobsets")
                .iter()
                .map(Fields)
                .map(|j| (j.text("project"), j.text("name"), j.text("description")))
                .collect(),
            builds: builds("builds"),
            builds_drv: builds("buildsdrv"),
            jobs: cx
                .extra("jobs")
                .iter()
                .filter_map(|j| {
                    let j = j.as_array()?;
                    let text = |i: usize| j.get(i)?.as_str().map(String::from);
                    Some((text(0)?, text(1)?, text(2)?))
                })
                .collect(),
            more_jobs: cx.extra_flag("more_jobs"),
        }
        .render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_are_shown_by_host() {
        assert_eq!(
            short_machine("ssh://builder@arm.example.org"),
            "arm.example.org"
        );
        assert_eq!(short_machine("ssh-ng://arm"), "arm");
        assert_eq!(short_machine("localhost"), "localhost");
    }

    #[test]
    fn machines_show_their_busy_steps_or_idle() {
        let data = serde_json::json!({
            "machines": {
                "ssh://u@arm": {"enabled": true, "systemTypes": ["aarch64-linux"],
                    "supportedFeatures": ["big-parallel"], "mandatoryFeatures": [],
                    "maxJobs": 4, "speedFactor": 2.0, "nrStepsDone": 12,
                    "avgStepTime": 3.5, "consecutiveFailures": 0},
                "ssh://x86": {"enabled": false, "systemTypes": ["x86_64-linux"],
                    "supportedFeatures": [], "mandatoryFeatures": [], "maxJobs": 1,
                    "nrStepsDone": 0, "disabledUntil": 2_000_000_000}
            },
            "steps": [{"build": 3, "stepnr": 1, "machine": "ssh://u@arm", "project": "p",
                "jobset": "j", "job": "slow", "starttime": 1_699_999_940,
                "drvpath": "/nix/store/cccccccccccccccccccccccccccccccc-slow-1.0.drv"}]
        });
        let extra = serde_json::Map::new();
        let user = super::super::PageUser::default();
        let cx = Ctx {
            data: Fields(&data),
            extra: &extra,
            user: &user,
            now: 1_700_000_000,
        };
        let html = machines(&cx).unwrap().unwrap();
        assert!(
            html.contains(r#"<span class="mono" title="ssh://u@arm">arm</span>"#),
            "{html}"
        );
        assert!(html.contains("(12 steps done, 3.5 s/step)"));
        assert!(html.contains(r#"<a href="/build/3/step/1/log/tail">slow-1.0</a>"#));
        assert!(html.contains("<td>1m\u{a0}0s</td>"), "running for a minute");
        assert!(html.contains("disabled-machine"), "x86 is disabled");
        assert!(html.contains("backed off until"));
        assert!(html.contains("<em>Idle</em>"), "x86 runs nothing");
    }

    #[test]
    fn the_runner_status_is_shown_with_sorted_keys() {
        let v = serde_json::json!({"b": 1, "a": {"d": 2, "c": [ {"f": 1, "e": 2} ]}});
        assert_eq!(
            serde_json::to_string(&sorted(&v)).unwrap(),
            r#"{"a":{"c":[{"e":2,"f":1}],"d":2},"b":1}"#
        );
    }
}

/// `/jobset/P/J/errors`, `/eval/N/errors`: when the errors happened and
/// what they say.
#[derive(Template)]
#[template(path = "errors.html")]
struct ErrorsPage<'a> {
    frame: Frame<'a>,
    title: String,
    back: String,
    when: Option<super::common::Time>,
    text: String,
}

pub(super) fn errors(cx: &Ctx, of_eval: bool) -> Html {
    let d = cx.data;
    let (title, back) = if of_eval {
        let id = d.int("id").unwrap_or(0);
        (format!("Errors of evaluation {id}"), format!("/eval/{id}"))
    } else {
        let (p, j) = (d.str("project"), d.str("name"));
        (
            format!("Evaluation errors of jobset {p}:{j}"),
            format!("/jobset/{p}/{j}"),
        )
    };
    let mut text = d.text("fetcherrormsg");
    let eval = d.text("errormsg");
    if !eval.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&eval);
    }
    Some(
        ErrorsPage {
            frame: cx.frame(),
            title,
            back,
            when: d
                .int(if of_eval { "timestamp" } else { "errortime" })
                .map(super::common::Time::of),
            text,
        }
        .render(),
    )
}

/// A channel (`/channel/latest`, `/eval/N/channel`, …): how to subscribe
/// and its packages.
#[derive(Template)]
#[template(path = "channel.html")]
struct ChannelPage<'a> {
    frame: Frame<'a>,
    name: String,
    /// Build, name, system and job.
    packages: Vec<(i64, String, String, String)>,
    url: String,
}

pub(super) fn channel(cx: &Ctx) -> Html {
    let d = cx.data;
    Some(
        ChannelPage {
            frame: cx.frame(),
            name: d.text("name"),
            packages: d
                .list("packages")
                .iter()
                .map(Fields)
                .map(|p| {
                    (
                        p.int("id").unwrap_or(0),
                        p.text("nixname"),
                        p.text("system"),
                        format!("{}:{}:{}", p.str("project"), p.str("jobset"), p.str("job")),
                    )
                })
                .collect(),
            url: cx.extra_text("url"),
        }
        .render(),
    )
}

/// `/channel/custom/P/J/CHAN`.
#[derive(Template)]
#[template(path = "custom-channel.html")]
struct CustomChannelPage<'a> {
    frame: Frame<'a>,
    name: String,
    project: String,
    jobset: String,
    url: String,
    build: i64,
    /// Number, name, type and subtype.
    products: Vec<(String, String, String, String)>,
    constituents: Vec<BuildRowView>,
}

pub(super) fn custom_channel(cx: &Ctx) -> Html {
    let d = cx.data;
    let build = Fields(d.0.get("build").unwrap_or(&serde_json::Value::Null));
    Some(
        CustomChannelPage {
            frame: cx.frame(),
            name: d.text("name"),
            project: d.text("project"),
            jobset: d.text("jobset"),
            url: cx.extra_text("url"),
            build: build.int("id").unwrap_or(0),
            products: build
                .members("buildproducts")
                .map(|(nr, p)| {
                    (
                        nr.clone(),
                        p.text("name"),
                        p.text("type"),
                        p.text("subtype"),
                    )
                })
                .collect(),
            constituents: d
                .list("constituents")
                .iter()
                .map(|b| BuildRowView::of(Fields(b), false, cx.now))
                .collect(),
        }
        .render(),
    )
}

/// A row of the blockers' table.
#[derive(Debug)]
struct BlockerView {
    jobs: i64,
    drvpath: String,
    name: String,
    outcome: String,
    class: &'static str,
    /// Where it failed itself: build and step.
    log: Option<(i64, i64)>,
    first: Option<i64>,
    /// Input name, new value, and the link to the commits between the
    /// two revisions (empty when the input has none).
    changes: Vec<(String, String, String)>,
    builds: Vec<i64>,
    /// More builds fail than are named.
    more: bool,
}

/// `/blockers`, `/jobset/P/J/blockers`, `/eval/N/blockers`.
#[derive(Template)]
#[template(path = "blockers.html")]
struct BlockersPage<'a> {
    frame: Frame<'a>,
    scope: Option<(String, String, String)>,
    rows: Vec<BlockerView>,
}

pub(super) fn blockers(cx: &Ctx) -> Html {
    let scope = cx
        .extra_value("scope")
        .and_then(|s| s.as_str())
        .map(|kind| {
            (
                kind.to_string(),
                cx.extra_text("name"),
                cx.extra_text("href"),
            )
        });
    let rows = cx
        .data
        .0
        .as_array()
        .into_iter()
        .flatten()
        .map(Fields)
        .map(|b| {
            let (outcome, class) = super::build::step_status(b.int("status"), "");
            let builds: Vec<i64> = b
                .list("builds")
                .iter()
                .filter_map(serde_json::Value::as_i64)
                .collect();
            let jobs = b.int("jobs").unwrap_or(0);
            BlockerView {
                jobs,
                name: step_name(b.str("drvpath")),
                drvpath: b.text("drvpath"),
                outcome,
                class,
                log: b.int("build").zip(b.int("stepnr")),
                first: b.int("firstfailedeval"),
                changes: b
                    .list("changes")
                    .iter()
                    .map(Fields)
                    .map(|c| (c.text("name"), c.text("value"), c.text("diff")))
                    .collect(),
                more: jobs > builds.len() as i64,
                builds,
            }
        })
        .collect();
    Some(
        BlockersPage {
            frame: cx.frame(),
            scope,
            rows,
        }
        .render(),
    )
}
