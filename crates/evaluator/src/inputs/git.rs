//! `git` inputs: `URL [BRANCH [DEEPCLONE]] [KEY=VALUE …]`.
//!
//! The repository is fetched into a bare clone kept in
//! `$HYDRA_DATA/scm/git/<sha256 of the URL>` (locked while in use); the
//! branch defaults to the remote's `HEAD` (else `fallback_branch`, else
//! `master`); a 40-hex branch is a fixed revision (fetched with the ref
//! named by the option `ref=` when the branches do not hold it). The tree at the revision
//! is added to the store once per (URL, branch, revision, deep clone) and
//! remembered in `CachedGitInputs`. A deep clone keeps the `.git`
//! directory with the whole history.

use hydra_db::input_cache::{self, Revision};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{
    FetchContext, FetchError, Fetched, Input, cached_or_exported, db, lock_dir, run_tool,
    store_name,
};

/// A parsed `git` input value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GitSpec {
    pub url: String,
    pub branch: Option<String>,
    pub deep_clone: bool,
    pub options: BTreeMap<String, String>,
}

pub(crate) fn parse(input: &Input) -> Result<GitSpec, FetchError> {
    let mut positional = Vec::new();
    let mut options = BTreeMap::new();
    for word in input.value.split_whitespace() {
        match word.split_once('=') {
            // URLs may contain `=`; options come after the URL.
            Some((k, v)) if !positional.is_empty() && !k.contains('/') => {
                options.insert(k.to_string(), v.to_string());
            }
            _ => positional.push(word.to_string()),
        }
    }
    let mut words = positional.into_iter();
    let url = words
        .next()
        .ok_or_else(|| FetchError(format!("input `{}` (git) has no URL", input.name)))?;
    let branch = words.next();
    let deep_clone = match words.next().as_deref() {
        None | Some("0") | Some("false") | Some("") => false,
        Some(_) => true,
    };
    if let Some(extra) = words.next() {
        return Err(FetchError(format!(
            "input `{}` (git): unexpected `{extra}` after `URL BRANCH DEEPCLONE`",
            input.name
        )));
    }
    Ok(GitSpec {
        url,
        branch,
        deep_clone,
        options,
    })
}

fn is_revision(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) async fn fetch(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let spec = parse(input)?;
    let settings = &ctx.config.evaluator.git_input;
    let overrides = settings
        .overrides
        .get(&format!("{}:{}:{}", ctx.project, ctx.jobset, input.name));
    let option = |key: &str| {
        spec.options
            .get(key)
            .or_else(|| overrides.and_then(|o| o.get(key)))
            .cloned()
    };
    let timeout = match option("timeout") {
        Some(t) => t.parse::<u64>().map_err(|_| {
            FetchError(format!(
                "input `{}` (git): timeout `{t}` is not a number of seconds",
                input.name
            ))
        })?,
        None => settings.timeout,
    };
    let timeout = Duration::from_secs(timeout.max(1));
    let clone = ctx.data_dir.scm_clone("git", &spec.url);
    let _lock = lock_dir(&clone).await?;
    let clone_str = clone.to_string_lossy().into_owned();
    if !clone.join("HEAD").exists() {
        std::fs::create_dir_all(&clone)
            .map_err(|e| FetchError(format!("cannot create {clone_str}: {e}")))?;
        run_tool("git", &["init", "--bare", "-q", &clone_str], None, timeout).await?;
    }
    let git = |args: Vec<String>| {
        let clone = clone.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_tool("git", &args, Some(&clone), timeout).await
        }
    };
    // Fetches `refspecs` from the input's repository into the clone.
    let fetch = |refspecs: &[&str]| {
        let mut args: Vec<String> = ["fetch", "-fu", "--quiet", "--", spec.url.as_str()]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(refspecs.iter().map(|r| r.to_string()));
        git(args)
    };
    const EVERYTHING: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

    let branch = match &spec.branch {
        Some(b) => b.clone(),
        None => match default_branch(&spec.url, timeout).await {
            Some(b) => b,
            None => option("fallback_branch")
                .or_else(|| settings.fallback_branch.clone())
                .unwrap_or_else(|| "master".into()),
        },
    };

    let revision = if is_revision(&branch) {
        let rev = branch.to_lowercase();
        // A revision outside the branches (a pull request's head) is
        // fetched by the ref that holds it.
        let wanted_ref = match option("ref") {
            Some(r) if !has_commit(&clone, &rev, timeout).await => Some(r),
            _ => None,
        };
        if let Some(r) = wanted_ref {
            let fetched = fetch(&[&format!("+{r}:{r}")]).await;
            if let Err(e) = fetched {
                tracing::debug!(error = %e, "fetching the ref of a revision failed");
            }
        }
        if !has_commit(&clone, &rev, timeout).await {
            fetch(&EVERYTHING).await?;
            if !has_commit(&clone, &rev, timeout).await {
                return Err(FetchError(format!(
                    "input `{}`: revision {rev} is not in {}",
                    input.name, spec.url
                )));
            }
        }
        rev
    } else {
        let fetched = fetch(&[&format!("+{branch}:{branch}")]).await;
        if let Err(e) = fetched {
            // Whatever the branch is (a tag, a ref outside refs/heads), a
            // full fetch finds it.
            tracing::debug!(error = %e, "fetching the branch alone failed; fetching everything");
            fetch(&EVERYTHING).await.map_err(|full| {
                FetchError(format!(
                    "input `{}`: cannot fetch branch `{branch}` of {}: {e}; {full}",
                    input.name, spec.url
                ))
            })?;
        }
        git(vec![
            "rev-parse".into(),
            "--verify".into(),
            "--quiet".into(),
            format!("{branch}^{{commit}}"),
        ])
        .await
        .map_err(|_| {
            FetchError(format!(
                "input `{}`: {} has no branch `{branch}`",
                input.name, spec.url
            ))
        })?
        .trim()
        .to_string()
    };

    let key = Revision::Git {
        uri: &spec.url,
        branch: &branch,
        revision: &revision,
        deep_clone: spec.deep_clone,
    };
    let cached = input_cache::lookup(ctx.pool, &key).await.map_err(db)?;
    let (store_path, sha, added) =
        cached_or_exported(ctx.nix, cached, &store_name(&spec.url), |dest| {
            export(&clone, &spec, &revision, dest, timeout)
        })
        .await?;
    if added {
        input_cache::remember(ctx.pool, &key, &sha, &store_path)
            .await
            .map_err(db)?;
    }

    let rev_count: i64 = git(vec!["rev-list".into(), "--count".into(), revision.clone()])
        .await?
        .trim()
        .parse()
        .map_err(|_| FetchError("git rev-list --count gave no number".into()))?;
    let git_tag = git(vec!["describe".into(), "--always".into(), revision.clone()])
        .await?
        .trim()
        .to_string();
    let short_rev = git(vec!["rev-parse".into(), "--short".into(), revision.clone()])
        .await?
        .trim()
        .to_string();
    Ok(Fetched {
        uri: Some(spec.url.clone()),
        revision: Some(revision),
        store_path: Some(store_path),
        sha256: Some(sha),
        rev_count: Some(rev_count),
        git_tag: Some(git_tag),
        short_rev_length: Some(short_rev.len() as i16),
        short_rev: Some(short_rev),
        ..base
    })
}

/// The branch the remote's `HEAD` points to.
async fn default_branch(url: &str, timeout: Duration) -> Option<String> {
    let out = run_tool(
        "git",
        &["ls-remote", "--symref", "--", url, "HEAD"],
        None,
        timeout,
    )
    .await
    .ok()?;
    out.lines().find_map(|line| {
        line.strip_prefix("ref: refs/heads/")
            .and_then(|rest| rest.split_whitespace().next())
            .map(String::from)
    })
}

async fn has_commit(clone: &Path, rev: &str, timeout: Duration) -> bool {
    run_tool(
        "git",
        &["cat-file", "-e", &format!("{rev}^{{commit}}")],
        Some(clone),
        timeout,
    )
    .await
    .is_ok()
}

/// Writes the tree at `revision` to `dest` (with `.git` for a deep clone).
async fn export(
    clone: &Path,
    spec: &GitSpec,
    revision: &str,
    dest: std::path::PathBuf,
    timeout: Duration,
) -> Result<(), FetchError> {
    let dest_str = dest.to_string_lossy().into_owned();
    let clone_str = clone.to_string_lossy().into_owned();
    if spec.deep_clone {
        run_tool(
            "git",
            &["clone", "-q", "--no-checkout", "--", &clone_str, &dest_str],
            None,
            timeout,
        )
        .await?;
        run_tool("git", &["checkout", "-q", revision], Some(&dest), timeout).await?;
        run_tool(
            "git",
            &["remote", "set-url", "origin", &spec.url],
            Some(&dest),
            timeout,
        )
        .await?;
        // Per-clone noise that would make the store path differ for the
        // same history.
        for noise in ["hooks", "logs", "FETCH_HEAD", "ORIG_HEAD", "description"] {
            let p = dest.join(".git").join(noise);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    } else {
        std::fs::create_dir_all(&dest)
            .map_err(|e| FetchError(format!("cannot create {dest_str}: {e}")))?;
        // `git archive | tar -x`, without a shell.
        let mut archive = tokio::process::Command::new("git")
            .args(["archive", "--format=tar", revision])
            .current_dir(clone)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| FetchError(format!("cannot run git archive: {e}")))?;
        let tar_in: std::process::Stdio = archive
            .stdout
            .take()
            .ok_or_else(|| FetchError("git archive has no output".into()))?
            .try_into()
            .map_err(|e| FetchError(format!("cannot pipe git archive into tar: {e}")))?;
        let tar = tokio::process::Command::new("tar")
            .args(["-x", "-f", "-", "-C", &dest_str])
            .stdin(tar_in)
            .kill_on_drop(true)
            .output();
        let both = async { (tar.await, archive.wait_with_output().await) };
        let (tar, archive) = tokio::time::timeout(timeout, both).await.map_err(|_| {
            FetchError(format!(
                "exporting {revision} took longer than {} s",
                timeout.as_secs()
            ))
        })?;
        let archive = archive.map_err(|e| FetchError(format!("git archive: {e}")))?;
        if !archive.status.success() {
            return Err(FetchError(format!(
                "cannot export {revision}: {}",
                String::from_utf8_lossy(&archive.stderr).trim()
            )));
        }
        let tar = tar.map_err(|e| FetchError(format!("cannot run tar: {e}")))?;
        if !tar.status.success() {
            return Err(FetchError(format!(
                "cannot unpack {revision}: {}",
                String::from_utf8_lossy(&tar.stderr).trim()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(value: &str) -> Input {
        Input {
            name: "src".into(),
            kind: "git".into(),
            value: value.into(),
            email_responsible: false,
        }
    }

    #[test]
    fn values_have_url_branch_deep_clone_and_options() {
        let spec = parse(&input("https://example.org/r.git main 1 timeout=60"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.url, "https://example.org/r.git");
        assert_eq!(spec.branch.as_deref(), Some("main"));
        assert!(spec.deep_clone);
        assert_eq!(spec.options.get("timeout").map(String::as_str), Some("60"));
        let spec = parse(&input("https://example.org/r?x=1")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.url, "https://example.org/r?x=1");
        assert_eq!(spec.branch, None);
        assert!(!spec.deep_clone);
        assert!(parse(&input("")).is_err());
        assert!(parse(&input("u b 1 extra")).is_err());
        assert!(is_revision("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_revision("main"));
    }
}
