//! The evaluation page: its builds sorted against another evaluation's,
//! its inputs and what changed in them, its errors.

use askama::Template;

use super::build::BuildRowView;
use super::common::{Fields, When, pager};
use super::jobset::EvalRowView;
use super::{Ctx, Frame, Html};

/// A tab of builds (or, for removed jobs, of jobs and systems).
#[derive(Debug)]
struct TabView {
    anchor: &'static str,
    label: &'static str,
    /// The label's colour: `warn`, `ok` or none.
    class: &'static str,
    count: usize,
    builds: Vec<BuildRowView>,
    /// Job and system, for the removed jobs.
    jobs: Vec<(String, String)>,
}

impl TabView {
    fn omitted(&self) -> usize {
        self.count - self.builds.len().max(self.jobs.len())
    }
}

/// The tabs of builds, in Hydra's order.
const TABS: [(&str, &str, &str, &str); 8] = [
    ("aborted", "aborted", "Aborted / Timed out Jobs", "warn"),
    ("now_fail", "now-fail", "Newly Failing Jobs", "warn"),
    ("now_succeed", "now-succeed", "Newly Succeeding Jobs", "ok"),
    ("new", "new", "New Jobs", ""),
    ("removed", "removed", "Removed Jobs", ""),
    ("still_fail", "still-fail", "Still Failing Jobs", ""),
    (
        "still_succeed",
        "still-succeed",
        "Still Succeeding Jobs",
        "",
    ),
    ("unfinished", "unfinished", "Queued Jobs", ""),
];

/// A row of the inputs table.
#[derive(Debug)]
pub(super) struct InputView {
    pub(super) name: String,
    pub(super) kind: &'static str,
    pub(super) value: String,
    /// The build a build input points at.
    pub(super) dependency: Option<i64>,
    pub(super) revision: String,
}

/// What an input type is called.
fn input_type_label(kind: &str) -> &'static str {
    match kind {
        "string" => "String value",
        "boolean" => "Boolean",
        "nix" => "Nix expression",
        "build" => "Previous Hydra build",
        "sysbuild" => "Previous Hydra build (same system)",
        "eval" => "Previous Hydra evaluation",
        "git" => "Git checkout",
        "hg" => "Mercurial checkout",
        "svn" => "Subversion checkout",
        "svn-checkout" => "Subversion export",
        "bzr" => "Bazaar export",
        "bzr-checkout" => "Bazaar checkout",
        "darcs" => "Darcs checkout",
        "path" => "Local path or URL",
        "githubpulls" => "Open GitHub pull requests",
        "github_refs" => "GitHub refs",
        "gitlabpulls" => "Open GitLab merge requests",
        "giteapulls" => "Open Gitea pull requests",
        "bitbucketpulls" => "Open BitBucket pull requests",
        _ => "Other",
    }
}

impl InputView {
    pub(super) fn of(name: &str, i: Fields) -> InputView {
        let kind = i.str("type");
        let value = match kind {
            "string" => format!("\"{}\"", i.str("value")),
            "nix" | "boolean" => i.text("value"),
            _ if !i.str("uri").is_empty() => i.text("uri"),
            _ => i.text("value"),
        };
        InputView {
            name: name.to_string(),
            kind: input_type_label(kind),
            value,
            dependency: i.int("dependency"),
            revision: i.text("revision"),
        }
    }
}

/// A revision as lists show it: git hashes cut to 12 characters.
fn short_revision(kind: &str, revision: &str) -> String {
    match kind {
        "git" => revision.chars().take(12).collect(),
        "svn" | "bzr" | "bzr-checkout" | "svn-checkout" => format!("r{revision}"),
        _ => revision.to_string(),
    }
}

/// How an input changed between the compared evaluation and this one.
#[derive(Debug, PartialEq, Eq)]
struct ChangeView {
    name: String,
    text: String,
    /// Where the difference can be seen.
    link: Option<String>,
}

/// The changes from the `old` evaluation's inputs to the `new` one's, one
/// per input of the old evaluation that changed.
fn input_changes<'a>(
    old: impl Iterator<Item = (&'a String, Fields<'a>)>,
    new: Fields<'a>,
) -> Vec<ChangeView> {
    let mut changes = Vec::new();
    for (name, o) in old {
        let change = |text: String, link: Option<String>| ChangeView {
            name: name.clone(),
            text,
            link,
        };
        let Some(n) = new.0.get(name.as_str()).map(Fields) else {
            changes.push(change("Not present in this evaluation.".into(), None));
            continue;
        };
        let kind = o.str("type");
        if kind != n.str("type") {
            changes.push(change(
                format!(
                    "Changed type from {} to {}.",
                    input_type_label(kind),
                    input_type_label(n.str("type"))
                ),
                None,
            ));
        } else if o.str("uri") != n.str("uri") || o.str("value") != n.str("value") {
            let shown = |f: Fields| {
                let uri = f.str("uri");
                if uri.is_empty() {
                    f.text("value")
                } else {
                    uri.to_string()
                }
            };
            changes.push(change(format!("{} to {}", shown(o), shown(n)), None));
        } else if o.int("dependency") != n.int("dependency") {
            let build = |f: Fields| f.int("dependency").map_or("-".into(), |b| b.to_string());
            changes.push(change(
                format!("build {} to build {}", build(o), build(n)),
                None,
            ));
        } else if o.str("revision") != n.str("revision") {
            let (a, b) = (o.str("revision"), n.str("revision"));
            let uri = n.str("uri");
            let github = uri
                .trim_end_matches(".git")
                .strip_prefix("https://github.com/")
                .map(|repo| format!("https://github.com/{repo}/compare/{a}...{b}"));
            // Elsewhere, the log and diff from the server's own clone.
            let link = github.or_else(|| {
                matches!(kind, "git" | "hg").then(|| {
                    let q = |v: &str| {
                        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                            .to_string()
                    };
                    format!(
                        "/api/scmdiff?uri={}&rev1={}&rev2={}&type={kind}",
                        q(uri),
                        q(a),
                        q(b)
                    )
                })
            });
            changes.push(change(
                format!("{} to {}", short_revision(kind, a), short_revision(kind, b)),
                link,
            ));
        }
    }
    changes
}

/// The action buttons the evaluation's builds allow.
#[derive(Debug, Default)]
struct Allowed {
    cancel: bool,
    restart_failed: bool,
    restart_aborted: bool,
}

/// `/eval/N`.
#[derive(Template)]
#[template(path = "eval.html")]
struct EvalPage<'a> {
    frame: Frame<'a>,
    id: i64,
    project: String,
    jobset: String,
    ran: When,
    flake: String,
    checkout_time: Option<i64>,
    eval_time: Option<i64>,
    /// The compared evaluation: id, project and jobset.
    other: Option<(i64, String, String)>,
    other_jobsets: Vec<String>,
    compare: String,
    filter: String,
    full: bool,
    tabs: Vec<TabView>,
    inputs: Vec<InputView>,
    changes: Vec<ChangeView>,
    errors: String,
    allowed: Allowed,
    /// When its unfinished builds are expected to be done, and how many
    /// of them have no prediction.
    eta: Option<(Option<super::common::EtaView>, i64)>,
}

impl EvalPage<'_> {
    /// The address of this page with `full=1`, keeping the other
    /// parameters.
    fn full_link(&self, anchor: &str) -> String {
        let encode = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut query = String::from("?");
        for (key, value) in [("compare", &self.compare), ("filter", &self.filter)] {
            if !value.is_empty() {
                query.push_str(&format!("{key}={}&", encode(value)));
            }
        }
        format!("{query}full=1#tabs-{anchor}")
    }
}

pub(super) fn eval(cx: &Ctx) -> Html {
    let d = cx.data;
    let extra = |k: &str| Fields(cx.extra_value(k).unwrap_or(&serde_json::Value::Null));
    let tabs_json = extra("tabs");
    let tabs = TABS
        .iter()
        .map(|&(key, anchor, label, class)| {
            let t = Fields(tabs_json.0.get(key).unwrap_or(&serde_json::Value::Null));
            let rows = t.list("builds");
            let (mut builds, mut jobs) = (Vec::new(), Vec::new());
            for row in rows.iter().map(Fields) {
                if key == "removed" {
                    jobs.push((row.text("job"), row.text("system")));
                    continue;
                }
                builds.push(BuildRowView::of(row, false, cx.now).job_only());
            }
            TabView {
                anchor,
                label,
                class,
                count: usize::try_from(t.int("count").unwrap_or(0)).unwrap_or(0),
                builds,
                jobs,
            }
        })
        .filter(|t| t.count > 0)
        .collect::<Vec<_>>();
    let counts = extra("counts");
    let any = |k: &str| counts.int(k).unwrap_or(0) > 0;
    let allowed = Allowed {
        cancel: any("queued"),
        restart_failed: any("failed"),
        restart_aborted: any("aborted"),
    };
    let other = extra("other");
    let inputs = d
        .members("jobsetevalinputs")
        .map(|(name, i)| InputView::of(name, i))
        .collect();
    let changes = match other.0 {
        serde_json::Value::Null => Vec::new(),
        _ => input_changes(
            other.members("jobsetevalinputs"),
            Fields(
                d.0.get("jobsetevalinputs")
                    .unwrap_or(&serde_json::Value::Null),
            ),
        ),
    };
    let text = |k: &str| extra(k).0.as_str().unwrap_or_default().to_string();
    Some(
        EvalPage {
            frame: cx.frame().at(&text("project"), Some(&text("jobset")), None),
            id: d.int("id")?,
            other: other
                .int("id")
                .map(|id| (id, text("other_project"), text("other_jobset"))),
            project: text("project"),
            jobset: text("jobset"),
            ran: When::of(d.int("timestamp").unwrap_or(0), cx.now),
            flake: d.text("flake"),
            checkout_time: d.int("checkouttime"),
            eval_time: d.int("evaltime"),
            other_jobsets: cx
                .extra("other_jobsets")
                .iter()
                .filter_map(|j| j.as_str().map(String::from))
                .collect(),
            compare: text("compare"),
            filter: text("filter"),
            full: extra("full").0.as_bool().unwrap_or(false),
            tabs,
            inputs,
            changes,
            errors: text("errors"),
            allowed,
            eta: cx.extra_value("eta").filter(|e| !e.is_null()).map(|e| {
                let f = Fields(e);
                (
                    e.get("eta")
                        .and_then(|e| super::common::EtaView::of(e, cx.now)),
                    f.int("unfinished").unwrap_or(0) - f.int("predicted").unwrap_or(0),
                )
            }),
        }
        .render(),
    )
}

/// Which evaluations a list shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum EvalList {
    All,
    OfJobset,
    OfBuild,
}

/// `/evals`, `/jobset/P/J/evals`, `/build/N/evals`.
#[derive(Template)]
#[template(path = "evals.html")]
struct EvalsPage<'a> {
    frame: Frame<'a>,
    title: String,
    /// Where the title links to, for a jobset.
    jobset: Option<(String, String)>,
    evals: Vec<EvalRowView>,
    show_jobset: bool,
    /// "evaluations 1 - 20 out of 345".
    shown: String,
    pager: Vec<(&'static str, String)>,
}

pub(super) fn list(cx: &Ctx, which: EvalList) -> Html {
    let int = |k: &str| cx.extra_value(k).and_then(serde_json::Value::as_i64);
    let (title, jobset) = match which {
        EvalList::All => ("Latest evaluations".to_string(), None),
        EvalList::OfJobset => (
            "Evaluations of jobset".to_string(),
            Some((cx.extra_text("project"), cx.extra_text("jobset"))),
        ),
        EvalList::OfBuild => (
            format!("Evaluations containing build {}", int("build").unwrap_or(0)),
            None,
        ),
    };
    let evals: Vec<EvalRowView> = cx
        .extra("summaries")
        .iter()
        .map(|e| EvalRowView::of(Fields(e), cx.now))
        .collect();
    Some(
        EvalsPage {
            frame: cx.frame(),
            title,
            jobset,
            shown: super::common::shown(
                "evaluations",
                int("first"),
                evals.len(),
                int("total").unwrap_or(0),
                false,
            ),
            evals,
            show_jobset: matches!(which, EvalList::All | EvalList::OfBuild),
            pager: pager(cx.data),
        }
        .render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(old: serde_json::Value, new: serde_json::Value) -> Vec<(String, String)> {
        let old = json!({ "i": old });
        input_changes(Fields(&old).members("i"), Fields(&new))
            .into_iter()
            .map(|c| (c.name, c.text))
            .collect()
    }

    #[test]
    fn input_changes_say_what_changed() {
        let git = |uri: &str, rev: &str| json!({"type": "git", "uri": uri, "revision": rev});
        let a = "0123456789abcdef0123456789abcdef01234567";
        let b = "fedcba9876543210fedcba9876543210fedcba98";
        assert_eq!(
            changes(json!({"src": git("u", a)}), json!({"src": git("u", b)})),
            [("src".into(), "0123456789ab to fedcba987654".into())]
        );
        assert_eq!(
            changes(json!({"src": git("u", a)}), json!({"src": git("u", a)})),
            []
        );
        assert_eq!(
            changes(json!({"src": git("u", a)}), json!({"src": git("v", a)})),
            [("src".into(), "u to v".into())]
        );
        assert_eq!(
            changes(
                json!({"src": git("u", a)}),
                json!({"src": {"type": "string", "value": "x"}})
            ),
            [(
                "src".into(),
                "Changed type from Git checkout to String value.".into()
            )]
        );
        assert_eq!(
            changes(json!({"src": git("u", a)}), json!({})),
            [("src".into(), "Not present in this evaluation.".into())]
        );
    }

    #[test]
    fn other_git_and_hg_revisions_link_to_the_servers_diff() {
        let old = json!({"i": {"src": {"type": "git", "uri": "https://example.org/r.git", "revision": "a1"}}});
        let new =
            json!({"src": {"type": "git", "uri": "https://example.org/r.git", "revision": "b2"}});
        let changes = input_changes(Fields(&old).members("i"), Fields(&new));
        assert_eq!(
            changes[0].link.as_deref(),
            Some("/api/scmdiff?uri=https%3A%2F%2Fexample%2Eorg%2Fr%2Egit&rev1=a1&rev2=b2&type=git")
        );
        let old = json!({"i": {"src": {"type": "svn", "uri": "svn://e/r", "revision": "7"}}});
        let new = json!({"src": {"type": "svn", "uri": "svn://e/r", "revision": "8"}});
        let changes = input_changes(Fields(&old).members("i"), Fields(&new));
        assert_eq!(changes[0].link, None, "no diff for svn");
    }

    #[test]
    fn github_revisions_link_to_their_comparison() {
        let old = json!({"i": {"src": {"type": "git", "uri": "https://github.com/o/r.git", "revision": "a1"}}});
        let new =
            json!({"src": {"type": "git", "uri": "https://github.com/o/r.git", "revision": "b2"}});
        let c = input_changes(Fields(&old).members("i"), Fields(&new));
        assert_eq!(
            c[0].link.as_deref(),
            Some("https://github.com/o/r/compare/a1...b2")
        );
    }
}

/// A row of the evaluation cost page.
#[derive(Debug)]
struct CostView {
    name: String,
    jobs: i64,
    time: String,
    percent: String,
    memory: i64,
}

/// An evaluation in the trend of a jobset's evaluation costs.
#[derive(Debug)]
struct TrendView {
    eval: i64,
    jobs: i64,
    time: String,
    wall: String,
    memory: i64,
}

/// `/eval/N/cost`.
#[derive(Template)]
#[template(path = "eval-cost.html")]
struct EvalCostPage<'a> {
    frame: Frame<'a>,
    id: i64,
    total: String,
    peak: i64,
    attrsets: Vec<CostView>,
    slowest: Vec<CostView>,
    trend: Vec<TrendView>,
}

/// Milliseconds as people read them.
fn millis(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

pub(super) fn cost(cx: &Ctx) -> Html {
    let d = cx.data;
    let mib = |bytes: i64| bytes >> 20;
    let attrsets = d.list("attrsets");
    let total: i64 = attrsets
        .iter()
        .map(|a| Fields(a).int("milliseconds").unwrap_or(0))
        .sum();
    let peak = attrsets
        .iter()
        .map(|a| Fields(a).int("peakMemory").unwrap_or(0))
        .max()
        .unwrap_or(0);
    let view = |c: &serde_json::Value| {
        let c = Fields(c);
        let ms = c.int("milliseconds").unwrap_or(0);
        CostView {
            name: c.text("name"),
            jobs: c.int("jobs").unwrap_or(0),
            time: millis(ms),
            percent: format!("{:.1}", 100.0 * ms as f64 / total.max(1) as f64),
            memory: mib(c.int("peakMemory").unwrap_or(0)),
        }
    };
    Some(
        EvalCostPage {
            frame: cx.frame(),
            id: d.int("id").unwrap_or(0),
            total: millis(total),
            peak: mib(peak),
            attrsets: attrsets.iter().map(view).collect(),
            slowest: d.list("slowest").iter().map(view).collect(),
            trend: d
                .list("trend")
                .iter()
                .map(Fields)
                .map(|t| TrendView {
                    eval: t.int("eval").unwrap_or(0),
                    jobs: t.int("jobs").unwrap_or(0),
                    time: millis(t.int("milliseconds").unwrap_or(0)),
                    wall: t
                        .int("evalTime")
                        .map_or_else(|| "-".into(), |s| format!("{s} s")),
                    memory: mib(t.int("peakMemory").unwrap_or(0)),
                })
                .collect(),
        }
        .render(),
    )
}
