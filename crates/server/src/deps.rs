//! A build's dependency trees: its derivation's input derivations, read
//! from the store's `.drv` files (`/build/N/build-deps`), and what its
//! outputs refer to, read from the store's path information
//! (`/build/N/runtime-deps`); each node linked to the step that built it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

/// Derivations a tree reads at most.
pub(crate) const MAX_NODES: usize = 2000;

/// A node of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Node {
    /// The store path.
    pub path: String,
    /// The name without hash and `.drv`.
    pub name: String,
    /// The build and step that built it, when one did here.
    pub step: Option<(i32, i32)>,
    /// Shown before: its children are there.
    pub repeated: bool,
    pub children: Vec<Node>,
}

/// The input derivations of each derivation read, from `root` down,
/// at most `MAX_NODES` (`read` gives a `.drv`'s inputs, `None` when the
/// store does not have it).
pub(crate) fn graph(
    root: &str,
    read: impl Fn(&str) -> Option<Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    let mut todo = vec![root.to_string()];
    while let Some(drv) = todo.pop() {
        if graph.contains_key(&drv) || graph.len() >= MAX_NODES {
            continue;
        }
        let inputs = read(&drv).unwrap_or_default();
        todo.extend(inputs.iter().rev().cloned());
        graph.insert(drv, inputs);
    }
    graph
}

/// The references of `roots` and of what they refer to, read from
/// `store` a level at a time, at most `MAX_NODES` paths; a path the store
/// does not have is left out.
pub(crate) async fn references(
    store: &hydra_store::DestStore,
    roots: &[String],
) -> Result<BTreeMap<String, Vec<String>>, hydra_store::StoreError> {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: BTreeSet<String> = roots.iter().cloned().collect();
    while !todo.is_empty() && graph.len() < MAX_NODES {
        let infos = store.path_infos(&todo).await?;
        let mut next = BTreeSet::new();
        for path in &todo {
            let Some(info) = infos.get(path) else {
                continue;
            };
            if graph.len() >= MAX_NODES {
                break;
            }
            let refs: Vec<String> = info
                .references
                .iter()
                .filter(|r| *r != path)
                .cloned()
                .collect();
            next.extend(
                refs.iter()
                    .filter(|r| !graph.contains_key(*r) && !todo.contains(*r))
                    .cloned(),
            );
            graph.insert(path.clone(), refs);
        }
        todo = next;
    }
    Ok(graph)
}

/// The trees of `graph` from each of `roots`; a node met again, in any of
/// them, is a leaf marked `repeated`.
pub(crate) fn forest(
    roots: &[String],
    graph: &BTreeMap<String, Vec<String>>,
    steps: &BTreeMap<String, (i32, i32)>,
) -> Vec<Node> {
    let mut seen = HashSet::new();
    roots
        .iter()
        .map(|root| walk(root, graph, steps, &mut seen))
        .collect()
}

/// The tree of `graph` from `root`; a derivation met again is a leaf
/// marked `repeated`.
pub(crate) fn tree(
    root: &str,
    graph: &BTreeMap<String, Vec<String>>,
    steps: &BTreeMap<String, (i32, i32)>,
) -> Node {
    walk(root, graph, steps, &mut HashSet::new())
}

fn walk(
    drv: &str,
    graph: &BTreeMap<String, Vec<String>>,
    steps: &BTreeMap<String, (i32, i32)>,
    seen: &mut HashSet<String>,
) -> Node {
    let mut node = Node {
        path: drv.to_string(),
        name: crate::pages::step_name(drv),
        step: steps.get(drv).copied(),
        ..Node::default()
    };
    if !seen.insert(drv.to_string()) {
        node.repeated = true;
        return node;
    }
    for input in graph.get(drv).into_iter().flatten() {
        node.children.push(walk(input, graph, steps, seen));
    }
    node
}

/// The trees as nested lists: each node with children is a `<details
/// open>` (collapsible without script), linked to its step's log, and a
/// repeated node links to its first appearance.
pub(crate) fn html(nodes: &[Node]) -> String {
    fn anchor(path: &str) -> String {
        format!(
            "d-{}",
            crate::pages::escape(hydra_nix::store_path::base_name(path))
        )
    }
    fn item(node: &Node, out: &mut String, first: bool) {
        let name = crate::pages::escape(&node.name);
        let label = match node.step {
            Some((b, s)) => format!(
                r#"<a href="/build/{b}/step/{s}">{name}</a> <span class="muted">(<a href="/build/{b}/step/{s}/log">log</a>)</span>"#
            ),
            None => format!(r#"{name} <span class="muted">(no info)</span>"#),
        };
        let id = if first {
            String::new()
        } else {
            format!(r#" id="{}""#, anchor(&node.path))
        };
        if node.repeated {
            out.push_str(&format!(
                r##"<li>{label} <a class="repeated" href="#{}">(repeated)</a></li>"##,
                anchor(&node.path)
            ));
        } else if node.children.is_empty() {
            out.push_str(&format!("<li{id}>{label}</li>"));
        } else {
            out.push_str(&format!(
                "<li{id}><details open><summary>{label}</summary><ul>"
            ));
            for c in &node.children {
                item(c, out, false);
            }
            out.push_str("</ul></details></li>");
        }
    }
    let mut out = String::from(r#"<ul class="deps">"#);
    for node in nodes {
        item(node, &mut out, false);
    }
    out.push_str("</ul>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-app-1.0.drv";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-lib-2.drv";
    const C: &str = "/nix/store/cccccccccccccccccccccccccccccccc-gcc-13.drv";

    fn inputs(drv: &str) -> Option<Vec<String>> {
        match drv {
            A => Some(vec![B.into(), C.into()]),
            B => Some(vec![C.into()]),
            C => Some(Vec::new()),
            _ => None,
        }
    }

    #[test]
    fn a_shared_input_appears_once_then_as_repeated() {
        let g = graph(A, inputs);
        assert_eq!(g.len(), 3);
        let steps = BTreeMap::from([(C.to_string(), (7, 2))]);
        let t = tree(A, &g, &steps);
        assert_eq!(t.name, "app-1.0");
        assert_eq!(t.children[0].children[0].name, "gcc-13");
        assert!(!t.children[0].children[0].repeated);
        assert!(t.children[1].repeated, "gcc again, under app");
        let h = html(std::slice::from_ref(&t));
        assert!(h.contains(r#"<a href="/build/7/step/2">gcc-13</a>"#), "{h}");
        assert!(h.contains(r##"<a class="repeated" href="#d-cccccccccccccccccccccccccccccccc-gcc-13.drv">(repeated)</a>"##));
        assert!(h.contains(r#"id="d-cccccccccccccccccccccccccccccccc-gcc-13.drv""#));
        assert!(h.contains("lib-2 <span class=\"muted\">(no info)</span>"));
    }

    #[test]
    fn trees_of_several_roots_share_what_they_have_seen() {
        let g = graph(A, inputs);
        let trees = forest(&[B.to_string(), A.to_string()], &g, &BTreeMap::new());
        assert_eq!(trees.len(), 2);
        assert_eq!(trees[0].name, "lib-2");
        assert!(!trees[0].children[0].repeated, "gcc, first seen under lib");
        assert!(trees[1].children[0].repeated, "lib again, under app");
        assert!(trees[1].children[1].repeated, "gcc again, under app");
        let h = html(&trees);
        assert_eq!(h.matches("(repeated)").count(), 2, "{h}");
    }

    #[test]
    fn a_missing_drv_is_a_leaf_and_huge_graphs_stop() {
        let g = graph(
            "/nix/store/dddddddddddddddddddddddddddddddd-gone.drv",
            inputs,
        );
        assert_eq!(g.len(), 1);
        let wide = graph("root", |d: &str| {
            (d == "root").then(|| (0..5000).map(|i| format!("n{i}")).collect())
        });
        assert_eq!(wide.len(), MAX_NODES);
    }
}
