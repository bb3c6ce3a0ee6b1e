//! The job page: its latest and queued builds, charts of its figures and
//! metrics, links.

use askama::Template;

use super::build::BuildRowView;
use super::chart::{Point, svg};
use super::common::Fields;
use super::{Ctx, Frame, Html};

/// A chart of the job page.
#[derive(Debug)]
struct ChartView {
    title: String,
    /// The metric's name, for a link to its page.
    metric: String,
    svg: String,
}

/// `/job/P/J/JOB`.
#[derive(Template)]
#[template(path = "job.html")]
struct JobPage<'a> {
    frame: Frame<'a>,
    project: String,
    jobset: String,
    job: String,
    starred: bool,
    current: bool,
    latest: Vec<BuildRowView>,
    queued: Vec<BuildRowView>,
    charts: Vec<ChartView>,
    /// An aggregate job's latest builds (id and status), newest first.
    aggregates: Vec<(i64, super::common::StatusView)>,
    /// Its constituents: a job, and its build in each aggregate build.
    constituents: Vec<super::jobset::MatrixRow>,
}

/// A chart's points from `[build, time, value]` triples, values divided
/// by `scale`.
fn points(rows: &[serde_json::Value], scale: f64) -> Vec<Point> {
    rows.iter()
        .filter_map(|r| {
            let r = r.as_array()?;
            Some(Point {
                build: r.first()?.as_i64()?,
                time: r.get(1)?.as_i64()?,
                value: r.get(2)?.as_f64()? / scale,
            })
        })
        .collect()
}

pub(super) fn job(cx: &Ctx) -> Html {
    let d = cx.data;
    let rows = |key: &str, scheduling: bool| {
        d.list(key)
            .iter()
            .map(|b| {
                BuildRowView::of(Fields(b), scheduling, cx.now)
                    .expected_by(cx.extra_value("etas"), cx.now)
                    .job_only()
            })
            .collect()
    };
    let charts = cx
        .extra("charts")
        .iter()
        .map(Fields)
        .filter_map(|c| {
            let scale = c.0.get("scale").and_then(serde_json::Value::as_f64);
            let title = c.text("title");
            let svg = svg(
                &title,
                c.str("unit"),
                &points(c.list("points"), scale.unwrap_or(1.0)),
            )?;
            Some(ChartView {
                title,
                metric: c.text("metric"),
                svg,
            })
        })
        .collect();
    let status = |f: Fields| {
        super::common::StatusView::of(f.int("finished") == Some(1), f.int("buildstatus"))
    };
    let aggregates: Vec<(i64, super::common::StatusView)> = cx
        .extra("aggregates")
        .iter()
        .map(|a| (Fields(a).int("id").unwrap_or(0), status(Fields(a))))
        .collect();
    let mut constituents: Vec<super::jobset::MatrixRow> = Vec::new();
    for c in cx.extra("constituents").iter().map(Fields) {
        let job = c.text("job");
        if constituents.last().is_none_or(|r| r.job != job) {
            constituents.push(super::jobset::MatrixRow {
                job,
                cells: vec![None; aggregates.len()],
            });
        }
        let column = aggregates
            .iter()
            .position(|(id, _)| Some(*id) == c.int("aggregate"));
        if let (Some(row), Some(i)) = (constituents.last_mut(), column) {
            row.cells[i] = Some((c.int("build").unwrap_or(0), status(c)));
        }
    }
    Some(
        JobPage {
            frame: cx
                .frame()
                .at(d.str("project"), Some(d.str("jobset")), Some(d.str("job"))),
            project: d.text("project"),
            jobset: d.text("jobset"),
            job: d.text("job"),
            starred: d.flag("starred"),
            current: cx
                .extra_value("current")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(true),
            latest: rows("latestbuilds", false),
            queued: rows("queuedbuilds", true),
            charts,
            aggregates,
            constituents,
        }
        .render(),
    )
}

/// `/job/P/J/JOB/metric/NAME`: one metric's chart.
#[derive(Template)]
#[template(path = "job-metric.html")]
struct MetricPage<'a> {
    frame: Frame<'a>,
    job: String,
    /// `P/J/JOB`, for the job's address.
    job_path: String,
    metric: String,
    svg: Option<String>,
}

pub(super) fn metric(cx: &Ctx) -> Html {
    let rows = cx.data.0.as_array()?;
    let unit = rows
        .last()
        .map(|r| Fields(r).text("unit"))
        .unwrap_or_default();
    let points: Vec<Point> = rows
        .iter()
        .map(Fields)
        .filter_map(|r| {
            Some(Point {
                build: r.int("id")?,
                time: r.int("timestamp")?,
                value: r.0.get("value")?.as_f64()?,
            })
        })
        .collect();
    let metric = cx.extra_text("metric");
    Some(
        MetricPage {
            frame: cx.frame(),
            job_path: {
                // `P:J:JOB`: project and jobset names have no colon; the
                // job's name may have anything, so it is encoded.
                let full = cx.extra_text("job");
                let mut parts = full.splitn(3, ':');
                let (p, j, job) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                format!("{p}/{j}/{}", super::common::encode_segment(job))
            },
            job: cx.extra_text("job"),
            svg: svg(&format!("Metric {metric}"), &unit, &points),
            metric,
        }
        .render(),
    )
}
