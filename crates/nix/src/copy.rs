//! Copying store paths and their closures between two stores reached by
//! serve clients: the machine's store and a build machine, either way.

use std::collections::{BTreeMap, BTreeSet};

use tokio::io::AsyncWriteExt;

use crate::export::EXPORT_MAGIC;
use crate::nar::ScanOptions;
use crate::serve::{PathInfo, ServeClient, ServeError};
use crate::wire;

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Paths sent, in the order they were sent.
    pub copied: Vec<String>,
    /// NAR bytes sent.
    pub bytes: u64,
}

/// Copies `paths` and everything they refer to from `from` to `to`, skipping
/// what `to` has. With `lock`, the paths `to` has are protected from its
/// garbage collector for as long as the connection lasts.
pub async fn copy_closure(
    from: &mut ServeClient,
    to: &mut ServeClient,
    paths: &BTreeSet<String>,
    lock: bool,
) -> Result<CopyReport, ServeError> {
    if paths.is_empty() {
        return Ok(CopyReport::default());
    }
    let closure = from.query_closure(paths, false).await?;
    copy_paths(from, to, &closure, lock).await
}

/// Copies exactly `paths` (a closed set, or one whose other references `to`
/// already has), skipping what `to` has.
pub async fn copy_paths(
    from: &mut ServeClient,
    to: &mut ServeClient,
    paths: &BTreeSet<String>,
    lock: bool,
) -> Result<CopyReport, ServeError> {
    let present = to.query_valid_paths(paths, lock, false).await?;
    let missing: BTreeSet<String> = paths.difference(&present).cloned().collect();
    if missing.is_empty() {
        return Ok(CopyReport::default());
    }
    let infos: BTreeMap<String, PathInfo> = from
        .query_path_infos(&missing)
        .await?
        .into_iter()
        .map(|i| (i.path.clone(), i))
        .collect();
    if let Some(absent) = missing.iter().find(|p| !infos.contains_key(*p)) {
        return Err(ServeError::Remote {
            machine: from.machine().to_string(),
            message: format!("path '{absent}' is not valid"),
        });
    }
    let order = topological_order(&infos);
    let mut report = CopyReport::default();
    if to.can_add_to_store_nar() && infos.values().all(|i| i.nar_hash.is_some()) {
        for path in &order {
            let info = &infos[path];
            let sink = to.add_to_store_nar_start(info).await?;
            let scan = from
                .dump_store_path(path, Some(sink), &ScanOptions::default())
                .await?;
            check(from, info, scan.summary.nar_size, &scan.summary.nar_hash)?;
            to.add_to_store_nar_finish().await?;
            report.bytes += scan.summary.nar_size;
            report.copied.push(path.clone());
        }
    } else {
        let sink = to.import_paths_start().await?;
        for path in &order {
            let info = &infos[path];
            sink.write_all(&1u64.to_le_bytes())
                .await
                .map_err(|e| local(to_name(from), e))?;
            let scan = from
                .dump_store_path(path, Some(&mut *sink), &ScanOptions::default())
                .await?;
            check(from, info, scan.summary.nar_size, &scan.summary.nar_hash)?;
            let mut tail = Vec::new();
            wire::write_u64(&mut tail, EXPORT_MAGIC).map_err(|e| local(to_name(from), e))?;
            wire::write_bytes(&mut tail, path.as_bytes()).map_err(|e| local(to_name(from), e))?;
            wire::write_strings(&mut tail, info.references.iter().map(String::as_str))
                .map_err(|e| local(to_name(from), e))?;
            wire::write_bytes(&mut tail, info.deriver.as_deref().unwrap_or("").as_bytes())
                .map_err(|e| local(to_name(from), e))?;
            wire::write_u64(&mut tail, 0).map_err(|e| local(to_name(from), e))?;
            sink.write_all(&tail)
                .await
                .map_err(|e| local(to_name(from), e))?;
            report.bytes += scan.summary.nar_size;
            report.copied.push(path.clone());
        }
        sink.write_all(&0u64.to_le_bytes())
            .await
            .map_err(|e| local(to_name(from), e))?;
        to.import_paths_finish().await?;
    }
    Ok(report)
}

fn to_name(from: &ServeClient) -> String {
    from.machine().to_string()
}

fn local(machine: String, e: std::io::Error) -> ServeError {
    ServeError::Local {
        machine,
        message: format!("copying failed: {e}"),
    }
}

/// The NAR that passed through must be the one the source registered.
fn check(
    from: &ServeClient,
    info: &PathInfo,
    size: u64,
    hash: &crate::hash::NixHash,
) -> Result<(), ServeError> {
    let size_ok = size == info.nar_size;
    let hash_ok = info.nar_hash.as_ref().is_none_or(|h| h == hash);
    if size_ok && hash_ok {
        Ok(())
    } else {
        Err(ServeError::Remote {
            machine: from.machine().to_string(),
            message: format!(
                "the NAR of {} does not match its registration ({} bytes, {}; expected {} bytes, {})",
                info.path,
                size,
                hash,
                info.nar_size,
                info.nar_hash
                    .as_ref()
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            ),
        })
    }
}

/// Orders paths so that each comes after the paths it refers to (within the
/// set); ties broken by path name, so the order is stable.
pub fn topological_order(infos: &BTreeMap<String, PathInfo>) -> Vec<String> {
    let mut remaining: BTreeMap<&String, BTreeSet<&String>> = infos
        .iter()
        .map(|(p, i)| {
            let deps = i
                .references
                .iter()
                .filter(|r| *r != p && infos.contains_key(*r))
                .collect();
            (p, deps)
        })
        .collect();
    let mut order = Vec::with_capacity(infos.len());
    while !remaining.is_empty() {
        let ready: Vec<&String> = remaining
            .iter()
            .filter(|(_, deps)| deps.is_empty())
            .map(|(p, _)| *p)
            .collect();
        if ready.is_empty() {
            // A reference cycle cannot happen in a store; send the rest in
            // name order rather than loop.
            order.extend(remaining.keys().map(|p| (*p).clone()));
            break;
        }
        for p in ready {
            remaining.remove(p);
            for deps in remaining.values_mut() {
                deps.remove(p);
            }
            order.push(p.clone());
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, refs: &[&str]) -> (String, PathInfo) {
        (
            path.to_string(),
            PathInfo {
                path: path.to_string(),
                deriver: None,
                references: refs.iter().map(|r| r.to_string()).collect(),
                download_size: 1,
                nar_size: 1,
                nar_hash: None,
                ca: None,
                sigs: Vec::new(),
            },
        )
    }

    #[test]
    fn dependencies_come_first() {
        let infos: BTreeMap<_, _> = [
            info("a", &["b", "a"]),
            info("b", &["c", "outside"]),
            info("c", &[]),
            info("d", &["b"]),
        ]
        .into();
        assert_eq!(topological_order(&infos), vec!["c", "b", "a", "d"]);
    }
}
