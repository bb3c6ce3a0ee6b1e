//! Aggregate jobs (`_hydraAggregate = true`) whose constituents are named
//! by job name or glob: resolved after all jobs are evaluated. Each named
//! job's derivation becomes an input of the aggregate's derivation, which
//! is rewritten (new `.drv`, new output path) and written to the store.
//! Aggregates that name other aggregates are rewritten after them. An
//! aggregate naming a job that does not exist or failed, a glob without
//! matches, or an aggregate in a cycle becomes a job error (and so does an
//! aggregate naming such an aggregate); recording then fails the whole
//! evaluation when it would add builds, as Hydra does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use hydra_nix::derivation::{Derivation, DerivationError, HashModuloCache};
use hydra_nix::hash::{HashAlgo, Hasher};
use hydra_nix::nar::{Node, ScanOptions, write_node};
use hydra_nix::serve::{PathInfo, ServeClient};
use hydra_nix::store_path::StoreDir;
use tokio::io::AsyncWriteExt;

use crate::engine::{NixEnv, Outcome};

/// Nix's `fnmatch(pattern, name, 0)`: `*` and `?` match any character
/// (including `.` and `/`), `[…]` classes with `!` or `^` negation and
/// ranges, `\` escapes, an unclosed `[` is itself. Braces are literal
/// (fnmatch has no alternatives), so they are escaped for the matcher,
/// which compiles the pattern to an automaton (linear in the name).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let mut escaped = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                escaped.push(c);
                if let Some(next) = chars.next() {
                    escaped.push(next);
                }
            }
            '{' | '}' | ',' => {
                escaped.push('\\');
                escaped.push(c);
            }
            c => escaped.push(c),
        }
    }
    globset::GlobBuilder::new(&escaped)
        .literal_separator(false)
        .backslash_escape(true)
        .allow_unclosed_class(true)
        .build()
        .map(|glob| glob.compile_matcher().is_match(name))
        // A pattern the matcher cannot read matches only itself.
        .unwrap_or_else(|_| pattern == name)
}

struct Aggregate {
    name: String,
    /// The jobs it names (resolved).
    members: BTreeSet<String>,
    /// Named constituents that cannot be used, with why.
    broken: BTreeMap<String, String>,
}

fn collect(outcome: &Outcome) -> Vec<Aggregate> {
    let mut aggregates = Vec::new();
    for job in outcome.jobs.values() {
        if !job.aggregate || job.named_constituents.is_empty() {
            continue;
        }
        let mut members = BTreeSet::new();
        let mut broken = BTreeMap::new();
        for wanted in &job.named_constituents {
            if outcome.jobs.contains_key(wanted) {
                members.insert(wanted.clone());
            } else if let Some(error) = outcome.errors.get(wanted) {
                broken.insert(wanted.clone(), error.clone());
            } else if !job.glob_constituents {
                broken.insert(wanted.clone(), "does not exist".into());
            } else {
                let mut found = false;
                for name in outcome.jobs.keys().chain(outcome.errors.keys()) {
                    // Never the aggregate itself.
                    if *name == job.name || !glob_match(wanted, name) {
                        continue;
                    }
                    found = true;
                    match outcome.errors.get(name) {
                        Some(error) => {
                            broken.insert(name.clone(), error.clone());
                        }
                        None => {
                            members.insert(name.clone());
                        }
                    }
                }
                if !found {
                    broken.insert(
                        wanted.clone(),
                        "constituent glob pattern had no matches".into(),
                    );
                }
            }
        }
        aggregates.push(Aggregate {
            name: job.name.clone(),
            members,
            broken,
        });
    }
    aggregates
}

/// Aggregates in an order where an aggregate comes after the aggregates it
/// names; a cycle is `Err((a, b))`, where `a` is the aggregate whose
/// resolution met itself again through `b` (Nix's order: aggregates and
/// their members by name).
fn order(aggregates: &[Aggregate]) -> Result<Vec<usize>, (String, String)> {
    let index: HashMap<&str, usize> = aggregates
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; aggregates.len()];
    let mut sorted = Vec::with_capacity(aggregates.len());
    fn visit(
        i: usize,
        aggregates: &[Aggregate],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        sorted: &mut Vec<usize>,
    ) -> Result<(), (String, String)> {
        marks[i] = Mark::Active;
        for member in &aggregates[i].members {
            let Some(&j) = index.get(member.as_str()) else {
                continue;
            };
            if j == i {
                continue;
            }
            match marks[j] {
                Mark::Active => return Err((member.clone(), aggregates[i].name.clone())),
                Mark::New => visit(j, aggregates, index, marks, sorted)?,
                Mark::Done => {}
            }
        }
        marks[i] = Mark::Done;
        sorted.push(i);
        Ok(())
    }
    for i in 0..aggregates.len() {
        if marks[i] == Mark::New {
            visit(i, aggregates, &index, &mut marks, &mut sorted)?;
        }
    }
    Ok(sorted)
}

/// The aggregates that cannot be resolved, with their error texts, moved
/// from the jobs to the job errors of `outcome`, and the order in which
/// the others are rewritten. An aggregate naming a broken one is broken
/// too, so this repeats until nothing changes.
fn split_broken(outcome: &mut Outcome) -> (Vec<Aggregate>, Vec<usize>, BTreeMap<String, String>) {
    let mut broken = BTreeMap::new();
    loop {
        let aggregates = collect(outcome);
        let mut newly: Vec<(String, String)> = aggregates
            .iter()
            .filter(|a| !a.broken.is_empty())
            .map(|a| {
                let text: String = a
                    .broken
                    .iter()
                    .map(|(name, error)| format!("{name}: {error}\n"))
                    .collect();
                (a.name.clone(), text)
            })
            .collect();
        if newly.is_empty() {
            match order(&aggregates) {
                Ok(sorted) => return (aggregates, sorted, broken),
                Err((a, b)) => newly.push((a.clone(), format!("Dependency cycle: {a} <-> {b}"))),
            }
        }
        for (name, text) in newly {
            outcome.jobs.remove(&name);
            outcome.errors.insert(name.clone(), text.clone());
            broken.insert(name, text);
        }
    }
}

/// Resolves the named constituents of every aggregate in `outcome` and
/// returns the aggregates that could not be resolved (now job errors of
/// `outcome`) with their errors. An `Err` is a failure to read or write
/// the store.
pub(crate) async fn resolve(
    nix: &NixEnv,
    outcome: &mut Outcome,
    gc_roots_dir: Option<&Path>,
) -> Result<BTreeMap<String, String>, String> {
    let (aggregates, sorted, broken) = split_broken(outcome);
    if aggregates.is_empty() {
        return Ok(broken);
    }
    let mut store = DrvStore::connect(nix).await?;
    for i in sorted {
        let aggregate = &aggregates[i];
        let Some(job) = outcome.jobs.get(&aggregate.name) else {
            continue;
        };
        let mut drv = store.read(&job.drv_path).await?;
        let mut added = Vec::new();
        for member in &aggregate.members {
            let Some(child) = outcome.jobs.get(member) else {
                continue;
            };
            let child_drv = store.read(&child.drv_path).await?;
            let Some(first_output) = child_drv.outputs.keys().next().cloned() else {
                return Err(format!("derivation {} has no outputs", child.drv_path));
            };
            drv.input_drvs
                .insert(child.drv_path.clone(), BTreeSet::from([first_output]));
            added.push(child.drv_path.clone());
        }
        let (new_drv_path, out_path) = store.rewrite(&job.drv_path, drv).await?;
        if let Some(dir) = gc_roots_dir {
            crate::engine::register_gc_root(dir, &new_drv_path);
        }
        tracing::debug!(aggregate = %aggregate.name, from = %job.drv_path, to = %new_drv_path, "rewrote an aggregate's derivation");
        if let Some(job) = outcome.jobs.get_mut(&aggregate.name) {
            job.drv_path = new_drv_path;
            if let Some(out) = out_path {
                job.outputs.insert("out".into(), Some(out));
            }
            job.constituents.extend(added);
        }
    }
    store.close().await;
    Ok(broken)
}

/// Reads and writes derivations through a local `nix-store --serve`.
struct DrvStore {
    client: ServeClient,
    store_dir: StoreDir,
    cache: HashMap<String, Derivation>,
    hashes: HashModuloCache<'static>,
}

static STORE_DIR: std::sync::LazyLock<StoreDir> =
    std::sync::LazyLock::new(|| StoreDir::new("/nix/store"));

impl DrvStore {
    async fn connect(nix: &NixEnv) -> Result<DrvStore, String> {
        let transport = nix.serve_transport();
        let client = ServeClient::connect(&transport, Duration::from_secs(60))
            .await
            .map_err(|e| format!("cannot open the store to rewrite aggregates: {e}"))?;
        Ok(DrvStore {
            client,
            store_dir: STORE_DIR.clone(),
            cache: HashMap::new(),
            hashes: HashModuloCache::new(&STORE_DIR),
        })
    }

    async fn read(&mut self, path: &str) -> Result<Derivation, String> {
        if let Some(drv) = self.cache.get(path) {
            return Ok(drv.clone());
        }
        let options = ScanOptions {
            extract: vec![Vec::new()],
            max_extract: 64 << 20,
            ..Default::default()
        };
        let scan = self
            .client
            .dump_store_path(path, None, &options)
            .await
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        let text = scan
            .extracted
            .get(&Vec::new())
            .ok_or_else(|| format!("{path} is not a regular file"))?;
        let text = std::str::from_utf8(text).map_err(|_| format!("{path} is not UTF-8"))?;
        let drv = Derivation::parse(text).map_err(|e| format!("{path}: {e}"))?;
        self.cache.insert(path.to_string(), drv.clone());
        Ok(drv)
    }

    /// Loads every derivation in the closure of `drv`'s inputs.
    async fn load_inputs(&mut self, drv: &Derivation) -> Result<(), String> {
        let mut todo: Vec<String> = drv.input_drvs.keys().cloned().collect();
        while let Some(path) = todo.pop() {
            if self.cache.contains_key(&path) {
                continue;
            }
            let d = self.read(&path).await?;
            todo.extend(
                d.input_drvs
                    .keys()
                    .filter(|p| !self.cache.contains_key(*p))
                    .cloned(),
            );
        }
        Ok(())
    }

    /// Gives `drv` (a changed version of the derivation at `old_path`) its
    /// new output path, writes it, and returns its path and `out` path.
    async fn rewrite(
        &mut self,
        old_path: &str,
        mut drv: Derivation,
    ) -> Result<(String, Option<String>), String> {
        let base = hydra_nix::store_path::base_name(old_path);
        let name = base
            .get(33..)
            .and_then(|n| n.strip_suffix(".drv"))
            .ok_or_else(|| format!("{old_path} is not a derivation path"))?
            .to_string();
        self.load_inputs(&drv).await?;
        let cache = &self.cache;
        let mut load = |p: &str| -> Result<Derivation, DerivationError> {
            cache
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::Invalid(format!("{p} was not loaded")))
        };
        let hashes = &mut self.hashes;
        let mut out_path = None;
        if drv.kind() == hydra_nix::derivation::DerivationKind::InputAddressed
            && drv.outputs.contains_key("out")
        {
            let paths = drv
                .compute_output_paths(&self.store_dir, &name, &mut |p: &str| {
                    hashes.get(p, &mut load)
                })
                .map_err(|e| format!("cannot compute the output of aggregate {name}: {e}"))?;
            if let Some(out) = paths.get("out") {
                let out = self.store_dir.display(out);
                drv.env.insert("out".into(), out.clone());
                if let Some(o) = drv.outputs.get_mut("out") {
                    o.path = out.clone();
                }
                out_path = Some(out);
            }
        }
        let text = drv.to_aterm();
        let references: BTreeSet<String> = drv
            .input_drvs
            .keys()
            .chain(drv.input_srcs.iter())
            .cloned()
            .collect();
        let parsed_refs = references
            .iter()
            .map(|r| self.store_dir.parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("aggregate {name}: {e}"))?;
        let path = self
            .store_dir
            .make_text_path(&format!("{name}.drv"), text.as_bytes(), parsed_refs.iter())
            .map_err(|e| format!("aggregate {name}: {e}"))?;
        let path = self.store_dir.display(&path);
        let valid = self
            .client
            .query_valid_paths(&BTreeSet::from([path.clone()]), false, false)
            .await
            .map_err(|e| format!("cannot query {path}: {e}"))?;
        if !valid.contains(&path) {
            self.add_text(&path, &text, references).await?;
        }
        self.cache.insert(path.clone(), drv);
        Ok((path, out_path))
    }

    async fn add_text(
        &mut self,
        path: &str,
        text: &str,
        references: BTreeSet<String>,
    ) -> Result<(), String> {
        let mut nar = Vec::new();
        write_node(
            &Node::Regular {
                executable: false,
                contents: text.as_bytes().to_vec(),
            },
            &mut nar,
        )
        .map_err(|e| format!("cannot serialise {path}: {e}"))?;
        let mut hasher = Hasher::new(HashAlgo::Sha256);
        hasher.update(&nar);
        let mut text_hash = Hasher::new(HashAlgo::Sha256);
        text_hash.update(text.as_bytes());
        let info = PathInfo {
            path: path.to_string(),
            deriver: None,
            references,
            download_size: 0,
            nar_size: nar.len() as u64,
            nar_hash: Some(hasher.finish()),
            ca: Some(format!("text:sha256:{}", text_hash.finish().to_base32())),
            sigs: Vec::new(),
        };
        let result = async {
            let w = self.client.add_to_store_nar_start(&info).await?;
            w.write_all(&nar)
                .await
                .map_err(|e| hydra_nix::serve::ServeError::Local {
                    machine: "local store".into(),
                    message: e.to_string(),
                })?;
            w.flush()
                .await
                .map_err(|e| hydra_nix::serve::ServeError::Local {
                    machine: "local store".into(),
                    message: e.to_string(),
                })?;
            self.client.add_to_store_nar_finish().await
        }
        .await;
        result.map_err(|e| format!("cannot write {path}: {e}"))
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob_match("packages.*", "packages.hello"));
        assert!(glob_match("packages.*", "packages.a.b"));
        assert!(!glob_match("packages.*", "tests.hello"));
        assert!(glob_match("*", ""));
        assert!(glob_match("t?st", "test"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("[!a-c]x", "dx"));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("a\\*", "ab"));
        assert!(glob_match("[]]", "]"));
        assert!(glob_match("[", "["));
        assert!(glob_match("*.x86_64-linux", "tests.foo.x86_64-linux"));
        assert!(glob_match("a{b,c}", "a{b,c}"), "braces are literal");
        assert!(!glob_match("a{b,c}", "ab"));
        assert!(glob_match("a**b", "a/x/b"));
        assert!(glob_match("x/*", "x/y/z"));
        // Linear: this took exponential time with a backtracking matcher.
        let name = "a".repeat(60);
        assert!(!glob_match(&format!("{}b", "*a".repeat(30)), &name));
    }

    fn agg(name: &str, members: &[&str]) -> Aggregate {
        Aggregate {
            name: name.into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            broken: BTreeMap::new(),
        }
    }

    #[test]
    fn aggregates_come_after_the_aggregates_they_name() {
        let aggs = vec![agg("a", &["b", "x"]), agg("b", &["c"]), agg("c", &["y"])];
        let sorted = order(&aggs).unwrap_or_default();
        let names: Vec<&str> = sorted.iter().map(|&i| aggs[i].name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        let cyclic = vec![agg("a", &["b"]), agg("b", &["a"])];
        assert_eq!(order(&cyclic), Err(("a".into(), "b".into())));
    }
}
