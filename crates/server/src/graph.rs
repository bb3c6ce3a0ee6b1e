//! A build's steps as a graph (`/build/N/graph`): the derivations it
//! needs, read from the store's `.drv` files, each in the state its latest
//! step left it (or present in the store, or still to build), drawn as
//! SVG on the server: dependencies on the left, the build on the right,
//! layered by the longest chain below each node and ordered within a
//! layer to keep edges short. The critical path is the chain that decides
//! when the build is done: the heaviest chain of step durations (the
//! time taken for finished steps, the time so far for running ones, the
//! average of the known ones for steps still to build).
//!
//! A large closure is collapsed to the part that matters: the build, its
//! unfinished and failed steps, and edges through what is hidden; each
//! node tells how many finished dependencies it hides.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

/// Nodes drawn before the graph is collapsed.
pub(crate) const LIMIT: usize = 150;

const NODE_W: i64 = 190;
const NODE_H: i64 = 28;
const COL_W: i64 = NODE_W + 50;
const ROW_H: i64 = NODE_H + 14;
const MARGIN: i64 = 16;

/// Where a derivation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum State {
    /// Built here.
    Done,
    /// Its outputs were there already.
    Present,
    Building,
    /// Not built yet.
    Queued,
    Failed,
    /// A dependency of it failed.
    DepFailed,
    /// Cancelled, aborted or timed out.
    Aborted,
}

impl State {
    fn finished(self) -> bool {
        matches!(self, State::Done | State::Present)
    }

    fn label(self) -> &'static str {
        match self {
            State::Done => "built",
            State::Present => "already present",
            State::Building => "building",
            State::Queued => "to build",
            State::Failed => "failed",
            State::DepFailed => "dependency failed",
            State::Aborted => "aborted",
        }
    }
}

/// What is known of a derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fact {
    pub(crate) state: State,
    /// The build and step of its latest step.
    pub(crate) step: Option<(i32, i32)>,
    /// How long its step took (or has run so far).
    pub(crate) seconds: Option<i64>,
    /// When its step ended, or is expected to (Unix time).
    pub(crate) end: Option<i64>,
}

/// A node as drawn.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Node {
    pub(crate) drv_path: String,
    pub(crate) name: String,
    pub(crate) state: State,
    pub(crate) build: Option<i32>,
    pub(crate) stepnr: Option<i32>,
    pub(crate) seconds: Option<i64>,
    /// When its step ended, or is expected to.
    pub(crate) end: Option<i64>,
    pub(crate) critical: bool,
    /// Finished dependencies hidden behind it (collapsed graphs).
    pub(crate) hidden_deps: usize,
    pub(crate) x: i64,
    pub(crate) y: i64,
}

/// The graph as drawn.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<Node>,
    /// (dependency, dependent) by index.
    pub(crate) edges: Vec<(usize, usize)>,
    /// The critical path, from the first step to the build.
    pub(crate) critical_path: Vec<String>,
    /// Derivations in the closure (read).
    pub(crate) total: usize,
    /// Those not drawn.
    pub(crate) hidden: usize,
    pub(crate) width: i64,
    pub(crate) height: i64,
}

/// Lays out `dag` (each derivation's inputs, from `root` down) with what
/// is known of each derivation (`facts`; a derivation without is to be
/// built).
pub(crate) fn layout(
    root: &str,
    dag: &BTreeMap<String, Vec<String>>,
    facts: &HashMap<String, Fact>,
    limit: usize,
) -> Graph {
    let fact = |d: &str| {
        facts.get(d).copied().unwrap_or(Fact {
            state: State::Queued,
            step: None,
            seconds: None,
            end: None,
        })
    };
    let inputs = |d: &str| -> &[String] { dag.get(d).map_or(&[], Vec::as_slice) };
    let critical_path = critical(root, dag, &fact);
    // What is drawn.
    let mut shown: Vec<&str> = if dag.len() <= limit {
        dag.keys().map(String::as_str).collect()
    } else {
        // The build and what is not finished, nearest the build first.
        let mut kept = Vec::new();
        let mut seen = HashSet::new();
        let mut level = vec![root];
        while !level.is_empty() && kept.len() < limit {
            let mut next = Vec::new();
            for d in level {
                if !seen.insert(d) {
                    continue;
                }
                if (d == root || !fact(d).state.finished()) && kept.len() < limit {
                    kept.push(d);
                }
                next.extend(inputs(d).iter().map(String::as_str));
            }
            level = next;
        }
        kept
    };
    shown.sort_unstable();
    let index: HashMap<&str, usize> = shown.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    // Edges between drawn nodes, through hidden ones; hidden finished
    // dependencies counted once per node.
    let mut edges = Vec::new();
    let mut hidden_deps = vec![0; shown.len()];
    for (i, d) in shown.iter().enumerate() {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo: Vec<&str> = inputs(d).iter().map(String::as_str).collect();
        let mut targets = Vec::new();
        while let Some(x) = todo.pop() {
            if !seen.insert(x) {
                continue;
            }
            match index.get(x) {
                Some(&j) => targets.push(j),
                None => {
                    hidden_deps[i] += 1;
                    todo.extend(inputs(x).iter().map(String::as_str));
                }
            }
        }
        targets.sort_unstable();
        targets.dedup();
        edges.extend(targets.into_iter().map(|j| (j, i)));
    }
    // Columns: the longest chain of drawn dependencies below each node.
    let mut deps_of: Vec<Vec<usize>> = vec![Vec::new(); shown.len()];
    let mut users_of: Vec<Vec<usize>> = vec![Vec::new(); shown.len()];
    for &(from, to) in &edges {
        deps_of[to].push(from);
        users_of[from].push(to);
    }
    let mut column = vec![usize::MAX; shown.len()];
    fn col(n: usize, deps: &[Vec<usize>], column: &mut [usize], depth: usize) -> usize {
        if column[n] != usize::MAX {
            return column[n];
        }
        // A cycle cannot be in a derivation graph; a broken store's is cut.
        column[n] = 0;
        if depth > 10_000 {
            return 0;
        }
        let c = deps[n]
            .iter()
            .map(|&d| col(d, deps, column, depth + 1) + 1)
            .max()
            .unwrap_or(0);
        column[n] = c;
        c
    }
    for n in 0..shown.len() {
        col(n, &deps_of, &mut column, 0);
    }
    let columns = column.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (n, &c) in column.iter().enumerate() {
        by_column[c].push(n);
    }
    // Order within columns: by name, then by the mean row of neighbours,
    // sweeping right and left.
    let mut row = vec![0.0f64; shown.len()];
    let place = |list: &[usize], row: &mut [f64]| {
        for (r, &n) in list.iter().enumerate() {
            row[n] = r as f64;
        }
    };
    for list in &by_column {
        place(list, &mut row);
    }
    for sweep in 0..4 {
        let (order, neighbours): (Vec<usize>, &Vec<Vec<usize>>) = if sweep % 2 == 0 {
            ((1..columns).collect(), &deps_of)
        } else {
            ((0..columns.saturating_sub(1)).rev().collect(), &users_of)
        };
        for c in order {
            let mean = |n: usize| {
                let ns = &neighbours[n];
                if ns.is_empty() {
                    row[n]
                } else {
                    ns.iter().map(|&m| row[m]).sum::<f64>() / ns.len() as f64
                }
            };
            let mut keyed: Vec<(f64, usize)> = by_column[c].iter().map(|&n| (mean(n), n)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            by_column[c] = keyed.into_iter().map(|(_, n)| n).collect();
            place(&by_column[c], &mut row);
        }
    }
    let rows = by_column.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let on_path: HashSet<&str> = critical_path.iter().map(String::as_str).collect();
    let mut nodes: Vec<Node> = shown
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let f = fact(d);
            let c = &by_column[column[n]];
            let offset = (rows - c.len() as i64) * ROW_H / 2;
            Node {
                drv_path: (*d).to_string(),
                name: crate::pages::step_name(d),
                state: f.state,
                build: f.step.map(|s| s.0),
                stepnr: f.step.map(|s| s.1),
                seconds: f.seconds,
                end: f.end,
                critical: on_path.contains(d),
                hidden_deps: hidden_deps[n],
                x: MARGIN + column[n] as i64 * COL_W,
                y: MARGIN + offset + row[n] as i64 * ROW_H,
            }
        })
        .collect();
    // Drawn in reading order: by column, then row.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&n| (nodes[n].x, nodes[n].y));
    let mut new_index = vec![0; nodes.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut sorted: Vec<Option<Node>> = nodes.drain(..).map(Some).collect();
    let nodes: Vec<Node> = order.iter().filter_map(|&old| sorted[old].take()).collect();
    let mut edges: Vec<(usize, usize)> = edges
        .into_iter()
        .map(|(a, b)| (new_index[a], new_index[b]))
        .collect();
    edges.sort_unstable();
    Graph {
        hidden: dag.len() - nodes.len(),
        total: dag.len(),
        width: 2 * MARGIN + columns as i64 * COL_W - (COL_W - NODE_W),
        height: 2 * MARGIN + rows * ROW_H - (ROW_H - NODE_H),
        nodes,
        edges,
        critical_path,
    }
}

/// The chain that decides when `root` is done, first step first: when
/// every unfinished step has an expected end, the inputs that end last,
/// from the build down (what each step waited for longest); otherwise
/// the heaviest chain of step durations (see the module's comment).
fn critical(
    root: &str,
    dag: &BTreeMap<String, Vec<String>>,
    fact: &impl Fn(&str) -> Fact,
) -> Vec<String> {
    let pending = |f: Fact| matches!(f.state, State::Queued | State::Building);
    let all_ends = dag.keys().all(|d| {
        let f = fact(d);
        !pending(f) || f.end.is_some()
    });
    if all_ends && fact(root).end.is_some() {
        let mut path = vec![root.to_string()];
        let mut seen: HashSet<&str> = HashSet::from([root]);
        let mut at = root;
        while let Some(last) = dag
            .get(at)
            .into_iter()
            .flatten()
            .filter_map(|i| Some((fact(i).end?, i.as_str())))
            .filter(|(_, i)| !seen.contains(i))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
            .map(|(_, i)| i)
        {
            seen.insert(last);
            path.push(last.to_string());
            at = last;
        }
        path.reverse();
        return path;
    }
    heaviest(root, dag, fact)
}

/// The heaviest chain of step durations from a leaf to `root`.
fn heaviest(
    root: &str,
    dag: &BTreeMap<String, Vec<String>>,
    fact: &impl Fn(&str) -> Fact,
) -> Vec<String> {
    let known: Vec<i64> = dag.keys().filter_map(|d| fact(d).seconds).collect();
    let usual = if known.is_empty() {
        1
    } else {
        (known.iter().sum::<i64>() / known.len() as i64).max(1)
    };
    let weight = |d: &str| {
        let f = fact(d);
        match f.state {
            State::Present => 0,
            State::Queued => usual,
            _ => f.seconds.unwrap_or(usual).max(0),
        }
    };
    // The heaviest chain below each node, in an order where inputs come
    // first (iteratively: closures can be deep).
    let mut best: HashMap<&str, (i64, Option<&str>)> = HashMap::new();
    let mut stack: Vec<(&str, bool)> = vec![(root, false)];
    while let Some((d, expanded)) = stack.pop() {
        if best.contains_key(d) {
            continue;
        }
        let inputs = dag.get(d).map_or(&[][..], Vec::as_slice);
        if !expanded {
            stack.push((d, true));
            for i in inputs {
                if !best.contains_key(i.as_str()) {
                    stack.push((i, false));
                }
            }
            continue;
        }
        let heaviest = inputs
            .iter()
            .filter_map(|i| best.get(i.as_str()).map(|(w, _)| (*w, i.as_str())))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
        let (w, next) = heaviest.map_or((0, None), |(w, i)| (w, Some(i)));
        best.insert(d, (w + weight(d), next));
    }
    let mut path = Vec::new();
    let mut at = Some(root);
    while let Some(d) = at {
        path.push(d.to_string());
        at = best.get(d).and_then(|(_, next)| *next);
    }
    path.reverse();
    path
}

/// `text` cut to `max` characters, with an ellipsis.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// The graph as an SVG element (ids, classes and links for the page's
/// script and style).
pub(crate) fn svg(g: &Graph) -> String {
    use crate::pages::escape;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="dep-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="The steps of this build as a graph: {n} shown of {t}">"#,
        w = g.width,
        h = g.height,
        n = g.nodes.len(),
        t = g.total
    );
    out.push_str(r#"<g class="viewport">"#);
    for &(from, to) in &g.edges {
        let (a, b) = (&g.nodes[from], &g.nodes[to]);
        let (x1, y1) = (a.x + NODE_W, a.y + NODE_H / 2);
        let (x2, y2) = (b.x, b.y + NODE_H / 2);
        let mid = (x1 + x2) / 2;
        let class = if a.critical && b.critical {
            "edge critical"
        } else {
            "edge"
        };
        let _ = write!(
            out,
            r#"<path class="{class}" d="M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}"/>"#
        );
    }
    for n in &g.nodes {
        let state = serde_json::to_value(n.state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let class = format!(
            "node state-{state}{}",
            if n.critical { " critical" } else { "" }
        );
        let link = match (n.build, n.stepnr) {
            (Some(b), Some(s)) => Some(format!("/build/{b}/nixlog/{s}")),
            _ => None,
        };
        let took = n
            .seconds
            .map(|s| format!(", {}", crate::pages::duration(s)))
            .unwrap_or_default();
        let hidden = if n.hidden_deps > 0 {
            format!(
                ", {} finished {} hidden",
                n.hidden_deps,
                if n.hidden_deps == 1 {
                    "dependency"
                } else {
                    "dependencies"
                }
            )
        } else {
            String::new()
        };
        if let Some(href) = &link {
            let _ = write!(out, r#"<a href="{}">"#, escape(href));
        }
        let _ = write!(
            out,
            r#"<g class="{class}" transform="translate({x} {y})" data-drv="{drv}"><title>{path} — {label}{took}{hidden}</title><rect width="{NODE_W}" height="{NODE_H}" rx="5"/><text x="9" y="18">{name}</text>"#,
            x = n.x,
            y = n.y,
            drv = escape(&n.drv_path),
            path = escape(&n.drv_path),
            label = n.state.label(),
            name = escape(&cut(&n.name, if n.hidden_deps > 0 { 20 } else { 26 })),
        );
        if n.hidden_deps > 0 {
            let _ = write!(
                out,
                r#"<text class="hidden-count" x="{}" y="18" text-anchor="end">+{}</text>"#,
                NODE_W - 8,
                n.hidden_deps
            );
        }
        out.push_str("</g>");
        if link.is_some() {
            out.push_str("</a>");
        }
    }
    out.push_str("</g></svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drv(name: &str) -> String {
        format!("/nix/store/{}-{name}.drv", "a".repeat(32))
    }

    /// app needs lib and tool; lib needs cc; tool needs cc and gen.
    fn dag() -> BTreeMap<String, Vec<String>> {
        [
            ("app", vec!["lib", "tool"]),
            ("lib", vec!["cc"]),
            ("tool", vec!["cc", "gen"]),
            ("cc", vec![]),
            ("gen", vec![]),
        ]
        .into_iter()
        .map(|(d, i)| (drv(d), i.into_iter().map(drv).collect()))
        .collect()
    }

    fn fact(state: State, seconds: Option<i64>, step: i32) -> Fact {
        Fact {
            state,
            step: Some((1, step)),
            seconds,
            end: None,
        }
    }

    fn names(g: &Graph) -> Vec<String> {
        g.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn edges(g: &Graph) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = g
            .edges
            .iter()
            .map(|&(a, b)| (g.nodes[a].name.clone(), g.nodes[b].name.clone()))
            .collect();
        e.sort();
        e
    }

    #[test]
    fn a_known_dag_has_its_nodes_edges_columns_and_critical_path() {
        let facts: HashMap<String, Fact> = [
            (drv("cc"), fact(State::Done, Some(100), 1)),
            (drv("gen"), fact(State::Done, Some(5), 2)),
            (drv("lib"), fact(State::Done, Some(10), 3)),
            (drv("tool"), fact(State::Building, Some(60), 4)),
        ]
        .into_iter()
        .collect();
        let g = layout(&drv("app"), &dag(), &facts, LIMIT);
        assert_eq!(g.nodes.len(), 5);
        assert_eq!((g.total, g.hidden), (5, 0));
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            edges(&g),
            pairs(&[
                ("cc", "lib"),
                ("cc", "tool"),
                ("gen", "tool"),
                ("lib", "app"),
                ("tool", "app")
            ])
        );
        // Columns by the longest chain below: cc and gen, then lib and
        // tool, then app.
        let x = |name: &str| g.nodes.iter().find(|n| n.name == name).map(|n| n.x);
        assert_eq!(x("cc"), x("gen"));
        assert_eq!(x("lib"), x("tool"));
        assert!(x("cc") < x("lib") && x("lib") < x("app"));
        // The heaviest chain: cc (100) → tool (60 so far) → app.
        assert_eq!(
            g.critical_path,
            [drv("cc"), drv("tool"), drv("app")].to_vec()
        );
        let critical: Vec<String> = g
            .nodes
            .iter()
            .filter(|n| n.critical)
            .map(|n| n.name.clone())
            .collect();
        assert_eq!(critical, ["cc", "tool", "app"]);
        assert_eq!(
            g.nodes.iter().find(|n| n.name == "app").map(|n| n.state),
            Some(State::Queued)
        );
        // Drawn: a node per derivation, linked to its step's log; the
        // critical edges marked.
        let svg = svg(&g);
        assert_eq!(svg.matches("<rect ").count(), 5);
        assert_eq!(svg.matches("<path ").count(), 5);
        assert_eq!(svg.matches(r#"class="edge critical""#).count(), 2);
        assert!(
            svg.contains(r#"<a href="/build/1/nixlog/4"><g class="node state-building critical""#),
            "{svg}"
        );
        assert!(!svg.contains("nixlog/0"));
    }

    #[test]
    fn with_expected_ends_the_critical_path_follows_what_ends_last() {
        // cc ended at 100, gen at 300; lib is expected at 150 and tool,
        // which waits for gen, at 400; app at 450.
        let at = |state, end| Fact {
            state,
            step: None,
            seconds: None,
            end: Some(end),
        };
        let facts: HashMap<String, Fact> = [
            (drv("cc"), at(State::Done, 100)),
            (drv("gen"), at(State::Done, 300)),
            (drv("lib"), at(State::Building, 150)),
            (drv("tool"), at(State::Queued, 400)),
            (drv("app"), at(State::Queued, 450)),
        ]
        .into_iter()
        .collect();
        let g = layout(&drv("app"), &dag(), &facts, LIMIT);
        assert_eq!(
            g.critical_path,
            [drv("gen"), drv("tool"), drv("app")].to_vec()
        );
        // One unfinished step without an expected end: durations decide.
        let mut partial = facts.clone();
        partial.insert(drv("tool"), fact(State::Queued, None, 9));
        let g = layout(&drv("app"), &dag(), &partial, LIMIT);
        assert_eq!(g.critical_path.last(), Some(&drv("app")));
        assert_eq!(g.critical_path.len(), 3);
    }

    #[test]
    fn a_large_closure_collapses_to_what_is_unfinished_or_failed() {
        // app needs 300 finished libraries, a failed one and a queued
        // one that needs one more finished library.
        let mut dag = BTreeMap::new();
        let mut facts = HashMap::new();
        let mut inputs = Vec::new();
        for i in 0..300 {
            let d = drv(&format!("lib{i}"));
            dag.insert(d.clone(), vec![]);
            facts.insert(d.clone(), fact(State::Done, Some(1), i));
            inputs.push(d);
        }
        dag.insert(drv("broken"), vec![]);
        facts.insert(drv("broken"), fact(State::Failed, Some(3), 900));
        dag.insert(drv("waits"), vec![drv("lib0")]);
        inputs.push(drv("broken"));
        inputs.push(drv("waits"));
        dag.insert(drv("app"), inputs);
        let g = layout(&drv("app"), &dag, &facts, LIMIT);
        assert_eq!(names(&g), ["broken", "waits", "app"]);
        assert_eq!((g.total, g.hidden), (303, 300));
        assert_eq!(
            edges(&g),
            [
                ("broken".to_string(), "app".to_string()),
                ("waits".to_string(), "app".to_string())
            ]
        );
        let hidden = |name: &str| {
            g.nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.hidden_deps)
        };
        assert_eq!(hidden("app"), Some(300), "every library once");
        assert_eq!(hidden("waits"), Some(1));
        assert!(svg(&g).contains(">+300</text>"));
        // Small graphs are drawn whole.
        assert_eq!(layout(&drv("app"), &dag, &facts, 1000).nodes.len(), 303);
    }
}
