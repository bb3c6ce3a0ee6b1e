//! Mercurial (`hg`), Subversion (`svn`, `svn-checkout`), Bazaar/Breezy
//! (`bzr`, `bzr-checkout`) and darcs inputs. Each finds the revision to
//! use, exports that revision's tree once (remembered in the type's
//! `Cached*Inputs` table) and adds it to the store. The `-checkout`
//! variants keep the version-control metadata (`.svn`, `.bzr`).

use hydra_db::input_cache::{self, Revision};
use std::path::Path;
use std::time::Duration;

use super::{
    FetchContext, FetchError, Fetched, Input, cached_or_exported, db, lock_dir, run_tool,
    store_name,
};

/// How long one version-control command may take.
const TIMEOUT: Duration = Duration::from_secs(1200);

fn words(input: &Input, kind: &str, max: usize) -> Result<Vec<String>, FetchError> {
    let words: Vec<String> = input.value.split_whitespace().map(String::from).collect();
    if words.is_empty() {
        return Err(FetchError(format!(
            "input `{}` ({kind}) has no URL",
            input.name
        )));
    }
    if words.len() > max {
        return Err(FetchError(format!(
            "input `{}` ({kind}): unexpected `{}`",
            input.name, words[max]
        )));
    }
    Ok(words)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `hg`: `URL [BRANCH-OR-REVISION]` (default `default`).
pub(crate) async fn fetch_hg(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let w = words(input, "hg", 2)?;
    let url = &w[0];
    let branch = w.get(1).cloned().unwrap_or_else(|| "default".into());
    let clone = ctx.data_dir.scm_clone("hg", url);
    let _lock = lock_dir(&clone).await?;
    if clone.join(".hg").exists() {
        run_tool(
            "hg",
            &["pull", "-q", "-R", &s(&clone), "--", url],
            None,
            TIMEOUT,
        )
        .await?;
    } else {
        let _ = std::fs::remove_dir_all(&clone);
        if let Some(parent) = clone.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| FetchError(format!("cannot create {}: {e}", parent.display())))?;
        }
        run_tool(
            "hg",
            &["clone", "-U", "-q", "--", url, &s(&clone)],
            None,
            TIMEOUT,
        )
        .await?;
    }
    let line = run_tool(
        "hg",
        &[
            "log",
            "-R",
            &s(&clone),
            "-r",
            &branch,
            "--template",
            "{node} {rev} {branch}",
        ],
        None,
        TIMEOUT,
    )
    .await
    .map_err(|e| {
        FetchError(format!(
            "input `{}`: no revision `{branch}` in {url}: {e}",
            input.name
        ))
    })?;
    let node = line
        .split_whitespace()
        .next()
        .ok_or_else(|| {
            FetchError(format!(
                "input `{}`: hg log gave nothing for `{branch}`",
                input.name
            ))
        })?
        .to_string();
    let rev_count = run_tool(
        "hg",
        &[
            "log",
            "-R",
            &s(&clone),
            "-r",
            &format!("ancestors({node})"),
            "--template",
            "x",
        ],
        None,
        TIMEOUT,
    )
    .await?
    .len() as i64;

    let key = Revision::Hg {
        uri: url,
        branch: &branch,
        revision: &node,
    };
    let cached = input_cache::lookup(ctx.pool, &key).await.map_err(db)?;
    let clone_str = s(&clone);
    let node_ref = &node;
    let (store_path, sha, added) =
        cached_or_exported(ctx.nix, cached, &store_name(url), |dest| async move {
            let dest = s(&dest);
            let args = [
                "--config",
                "ui.archivemeta=false",
                "archive",
                "-R",
                &clone_str,
                "-r",
                node_ref,
                "-t",
                "files",
                &dest,
            ];
            run_tool("hg", &args, None, TIMEOUT).await.map(drop)
        })
        .await?;
    if added {
        input_cache::remember(ctx.pool, &key, &sha, &store_path)
            .await
            .map_err(db)?;
    }
    Ok(Fetched {
        uri: Some(url.clone()),
        revision: Some(node.clone()),
        store_path: Some(store_path),
        sha256: Some(sha),
        rev_count: Some(rev_count),
        short_rev: Some(node.chars().take(12).collect()),
        short_rev_length: Some(12),
        ..base
    })
}

/// `svn`/`svn-checkout`: `URL [REVISION]` (default: the last revision that
/// changed the URL's path).
pub(crate) async fn fetch_svn(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let w = words(input, &input.kind, 2)?;
    let url = &w[0];
    let revision: i32 = match w.get(1) {
        Some(r) => r.parse().map_err(|_| {
            FetchError(format!(
                "input `{}`: `{r}` is not a Subversion revision",
                input.name
            ))
        })?,
        None => {
            let args = [
                "ls",
                "-v",
                "--depth",
                "empty",
                "--non-interactive",
                "--",
                url,
            ];
            let out = run_tool("svn", &args, None, TIMEOUT).await?;
            out.split_whitespace()
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| {
                    FetchError(format!(
                        "input `{}`: svn ls gave no revision for {url}",
                        input.name
                    ))
                })?
        }
    };
    let checkout = input.kind == "svn-checkout";
    fetch_numbered(ctx, base, Numbered::Svn, url, revision, checkout).await
}

/// `bzr`/`bzr-checkout`: `URL` at its latest revision.
pub(crate) async fn fetch_bzr(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let w = words(input, &input.kind, 1)?;
    let url = &w[0];
    let revision: i32 = run_tool("brz", &["revno", "--", url], None, TIMEOUT)
        .await?
        .trim()
        .parse()
        .map_err(|_| {
            FetchError(format!(
                "input `{}`: brz revno gave no number for {url}",
                input.name
            ))
        })?;
    let checkout = input.kind == "bzr-checkout";
    fetch_numbered(ctx, base, Numbered::Bzr, url, revision, checkout).await
}

/// Version control with numbered revisions and no local clone.
#[derive(Clone, Copy)]
enum Numbered {
    Svn,
    Bzr,
}

/// The tree of `url` at `revision`, exported (or checked out, keeping the
/// metadata), cached in the type's table.
async fn fetch_numbered(
    ctx: &FetchContext<'_>,
    base: Fetched,
    vcs: Numbered,
    url: &str,
    revision: i32,
    checkout: bool,
) -> Result<Fetched, FetchError> {
    // Exports and checkouts of the same revision differ; they are cached
    // under different keys.
    let key = if checkout {
        format!("{url} (checkout)")
    } else {
        url.to_string()
    };
    let rev_key = match vcs {
        Numbered::Svn => Revision::Svn {
            uri: &key,
            revision,
        },
        Numbered::Bzr => Revision::Bzr {
            uri: &key,
            revision,
        },
    };
    let cached = input_cache::lookup(ctx.pool, &rev_key).await.map_err(db)?;
    let (store_path, sha, added) =
        cached_or_exported(ctx.nix, cached, &store_name(url), |dest| async move {
            let rev = revision.to_string();
            let dest = s(&dest);
            match vcs {
                Numbered::Svn => {
                    let peg = format!("{url}@{rev}");
                    let command = if checkout { "checkout" } else { "export" };
                    let args = [
                        command,
                        "-q",
                        "--non-interactive",
                        "--ignore-externals",
                        "-r",
                        &rev,
                        "--",
                        &peg,
                        &dest,
                    ];
                    run_tool("svn", &args, None, TIMEOUT).await.map(drop)
                }
                Numbered::Bzr => {
                    let args: [&str; 7] = if checkout {
                        ["checkout", "-q", "-r", &rev, "--", url, &dest]
                    } else {
                        ["export", "-q", "-r", &rev, "--", &dest, url]
                    };
                    run_tool("brz", &args, None, TIMEOUT).await.map(drop)
                }
            }
        })
        .await?;
    if added {
        input_cache::remember(ctx.pool, &rev_key, &sha, &store_path)
            .await
            .map_err(db)?;
    }
    Ok(Fetched {
        uri: Some(url.to_string()),
        revision: Some(revision.to_string()),
        store_path: Some(store_path),
        sha256: Some(sha),
        ..base
    })
}

/// `darcs`: `URL` at its latest patch.
pub(crate) async fn fetch_darcs(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let w = words(input, "darcs", 1)?;
    let clone = ctx.data_dir.scm_clone("darcs", &w[0]);
    // darcs wants a path, not a file:// URL.
    let url = w[0].strip_prefix("file://").unwrap_or(&w[0]);
    let _lock = lock_dir(&clone).await?;
    if clone.join("_darcs").exists() {
        run_tool(
            "darcs",
            &["pull", "-q", "-a", "--repodir", &s(&clone), url],
            None,
            TIMEOUT,
        )
        .await?;
    } else {
        let _ = std::fs::remove_dir_all(&clone);
        if let Some(parent) = clone.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| FetchError(format!("cannot create {}: {e}", parent.display())))?;
        }
        run_tool(
            "darcs",
            &["clone", "-q", "--lazy", url, &s(&clone)],
            None,
            TIMEOUT,
        )
        .await?;
    }
    let xml = run_tool(
        "darcs",
        &[
            "log",
            "--last",
            "1",
            "--xml-output",
            "--repodir",
            &s(&clone),
        ],
        None,
        TIMEOUT,
    )
    .await?;
    let revision = xml
        .split("hash='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| FetchError(format!("input `{}`: {url} has no patches", input.name)))?
        .to_string();
    let rev_count: i32 = run_tool(
        "darcs",
        &["log", "--count", "--repodir", &s(&clone)],
        None,
        TIMEOUT,
    )
    .await?
    .trim()
    .parse()
    .map_err(|_| FetchError("darcs log --count gave no number".into()))?;
    let key = Revision::Darcs {
        uri: url,
        revision: &revision,
        rev_count,
    };
    let cached = input_cache::lookup(ctx.pool, &key).await.map_err(db)?;
    let clone_str = s(&clone);
    let (store_path, sha, added) = cached_or_exported(ctx.nix, cached, &store_name(url), |dest| {
        let revision = revision.clone();
        async move {
            let dest_str = s(&dest);
            let args = [
                "clone",
                "-q",
                "--lazy",
                "--to-hash",
                &revision,
                &clone_str,
                &dest_str,
            ];
            run_tool("darcs", &args, None, TIMEOUT).await?;
            std::fs::remove_dir_all(dest.join("_darcs"))
                .map_err(|e| FetchError(format!("cannot remove _darcs from the export: {e}")))
        }
    })
    .await?;
    if added {
        input_cache::remember(ctx.pool, &key, &sha, &store_path)
            .await
            .map_err(db)?;
    }
    Ok(Fetched {
        uri: Some(url.to_string()),
        revision: Some(revision),
        store_path: Some(store_path),
        sha256: Some(sha),
        rev_count: Some(i64::from(rev_count)),
        ..base
    })
}
