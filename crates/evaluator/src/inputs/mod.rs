//! Jobset inputs: fetching each input of a jobset, and how it reaches Nix.
//!
//! `string`, `boolean` and `nix` inputs are values; the others end up in the
//! store and are passed as an attribute set (`outPath`, `rev`, …) and on the
//! search path, so `<name/file.nix>` works.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hydra_config::Config;
use hydra_nix::hash::{HashAlgo, Hasher};
use sqlx::PgPool;

use crate::engine::{Arg, NixEnv, nix_string};

mod build;
mod git;
pub(crate) mod pulls;
mod scm;

/// One input of a jobset as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Input {
    pub name: String,
    pub kind: String,
    pub value: String,
    pub email_responsible: bool,
}

/// What fetching an input produced (Hydra's "input info").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub name: String,
    pub kind: String,
    pub uri: Option<String>,
    pub revision: Option<String>,
    pub value: Option<String>,
    pub store_path: Option<String>,
    /// NAR hash of `store_path`, base32.
    pub sha256: Option<String>,
    pub rev_count: Option<i64>,
    pub git_tag: Option<String>,
    pub short_rev: Option<String>,
    pub short_rev_length: Option<i16>,
    pub version: Option<String>,
    pub output_name: Option<String>,
    pub drv_path: Option<String>,
    /// The build this input is the output of (`build` inputs).
    pub dependency: Option<hydra_db::ids::BuildId>,
    pub email_responsible: bool,
    /// An argument given as an expression (`eval` inputs).
    pub expression: Option<String>,
    /// More store paths the expression may read: job → output (`eval`
    /// inputs).
    pub extra_paths: Vec<(String, String)>,
}

impl Fetched {
    /// How the input reaches the jobset's function.
    pub(crate) fn to_arg(&self) -> Arg {
        match self.kind.as_str() {
            "string" => Arg::Str(self.name.clone(), self.value.clone().unwrap_or_default()),
            "boolean" | "nix" => {
                Arg::Expr(self.name.clone(), self.value.clone().unwrap_or_default())
            }
            _ if self.expression.is_some() => Arg::Expr(
                self.name.clone(),
                self.expression.clone().unwrap_or_default(),
            ),
            _ => {
                let mut attrs = Vec::new();
                if let Some(p) = &self.store_path {
                    attrs.push(format!("outPath = builtins.storePath {};", nix_string(p)));
                }
                attrs.push(format!("inputType = {};", nix_string(&self.kind)));
                for (key, value) in [
                    ("uri", &self.uri),
                    ("gitTag", &self.git_tag),
                    ("shortRev", &self.short_rev),
                    ("version", &self.version),
                    ("outputName", &self.output_name),
                    ("drvPath", &self.drv_path),
                ] {
                    if let Some(v) = value {
                        attrs.push(format!("{key} = {};", nix_string(v)));
                    }
                }
                if let Some(rev) = &self.revision {
                    // Subversion and Bazaar revisions are numbers.
                    if matches!(
                        self.kind.as_str(),
                        "svn" | "svn-checkout" | "bzr" | "bzr-checkout"
                    ) && rev.parse::<i64>().is_ok()
                    {
                        attrs.push(format!("rev = {rev};"));
                    } else {
                        attrs.push(format!("rev = {};", nix_string(rev)));
                    }
                }
                if let Some(n) = self.rev_count {
                    attrs.push(format!("revCount = {n};"));
                }
                Arg::Expr(self.name.clone(), format!("{{ {} }}", attrs.join(" ")))
            }
        }
    }

    /// The search path entries (`-I name=path`): the input's store path,
    /// and each output of an `eval` input as `name/job`. Restricted
    /// evaluation only lets the expression read what is on the search path.
    pub(crate) fn search_path(&self) -> Vec<(String, String)> {
        let mut entries: Vec<(String, String)> = self
            .store_path
            .iter()
            .map(|p| (self.name.clone(), p.clone()))
            .collect();
        entries.extend(
            self.extra_paths
                .iter()
                .map(|(job, p)| (format!("{}/{job}", self.name), p.clone())),
        );
        entries
    }

    /// What identifies this input's content, for the "unchanged" check.
    pub(crate) fn identity(&self) -> String {
        match self.to_arg() {
            Arg::Str(n, v) => format!("--argstr {n} {v}"),
            Arg::Expr(n, v) => format!("--arg {n} {v}"),
        }
    }
}

/// Why an input could not be fetched; becomes `Jobsets.fetchErrorMsg`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FetchError(pub String);

/// What fetching needs.
#[derive(Debug)]
pub(crate) struct FetchContext<'a> {
    pub pool: &'a PgPool,
    pub config: &'a Config,
    pub data_dir: &'a hydra_config::DataDir,
    pub nix: &'a NixEnv,
    pub project: &'a str,
    pub jobset: &'a str,
}

/// Fetches one input.
/// Fetches `input`. `None` is an input left out of the evaluation: a
/// `build` or `sysbuild` input whose job has no usable successful build
/// yet, as in Hydra, so that jobsets depending on each other can start
/// (an expression that needs the input fails where it uses it).
pub(crate) async fn fetch(
    ctx: &FetchContext<'_>,
    input: &Input,
) -> Result<Option<Fetched>, FetchError> {
    let base = Fetched {
        name: input.name.clone(),
        kind: input.kind.clone(),
        email_responsible: input.email_responsible,
        ..Default::default()
    };
    let fetched = match input.kind.as_str() {
        "string" | "nix" => Ok(Fetched {
            value: Some(input.value.clone()),
            ..base
        }),
        "boolean" => match input.value.trim() {
            v @ ("true" | "false") => Ok(Fetched {
                value: Some(v.to_string()),
                ..base
            }),
            other => Err(FetchError(format!(
                "input `{}` is a boolean, so its value must be `true` or `false`, not `{other}`",
                input.name
            ))),
        },
        "path" => fetch_path(ctx, input, base).await,
        "git" => git::fetch(ctx, input, base).await,
        "hg" => scm::fetch_hg(ctx, input, base).await,
        "svn" | "svn-checkout" => scm::fetch_svn(ctx, input, base).await,
        "bzr" | "bzr-checkout" => scm::fetch_bzr(ctx, input, base).await,
        "darcs" => scm::fetch_darcs(ctx, input, base).await,
        "build" | "sysbuild" | "eval" => return build::fetch(ctx, input, base).await,
        "githubpulls" | "github_refs" | "gitlabpulls" | "giteapulls" | "bitbucketpulls" => {
            pulls::fetch(ctx, input, base).await
        }
        other => Err(FetchError(format!(
            "input `{}` has the unsupported type `{other}`",
            input.name
        ))),
    };
    fetched.map(Some)
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYYmmddHHMMSS` in UTC.
pub(crate) fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The NAR hash of a file system path, base32.
pub(crate) async fn nar_hash(path: &Path) -> Result<String, FetchError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        struct HashWriter(Hasher);
        impl std::io::Write for HashWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = HashWriter(Hasher::new(HashAlgo::Sha256));
        hydra_nix::nar::dump_path(
            &path,
            &mut std::io::BufWriter::with_capacity(1 << 20, &mut w),
        )
        .map_err(|e| FetchError(format!("cannot read {}: {e}", path.display())))?;
        Ok(w.0.finish().to_base32())
    })
    .await
    .map_err(|e| FetchError(e.to_string()))?
}

/// Runs a Nix program and returns its output, or its error text.
pub(crate) async fn run_nix(
    nix: &NixEnv,
    program: &str,
    args: &[&str],
) -> Result<String, FetchError> {
    let out = nix
        .command(program)
        .args(args)
        .output()
        .await
        .map_err(|e| FetchError(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(FetchError(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether a store path is valid in the evaluator's store.
pub(crate) async fn is_valid(nix: &NixEnv, path: &str) -> bool {
    nix.command("nix-store")
        .args(["--check-validity", path])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// `path [seconds]`: a local path added to the store, or a URL downloaded
/// with `nix-prefetch-url`, looked at again at most once per `seconds`
/// (else `path_input_cache_validity_seconds`). The revision is the time the
/// content was first seen and its hash (`CachedPathInputs`).
async fn fetch_path(
    ctx: &FetchContext<'_>,
    input: &Input,
    base: Fetched,
) -> Result<Fetched, FetchError> {
    let mut words = input.value.split_whitespace();
    let src = words
        .next()
        .ok_or_else(|| FetchError(format!("input `{}` (a path) has no value", input.name)))?;
    let validity: i64 = match words.next() {
        Some(n) => n.parse().map_err(|_| {
            FetchError(format!(
                "input `{}`: `{n}` is not a number of seconds",
                input.name
            ))
        })?,
        None => ctx.config.evaluator.path_input_cache_validity_seconds as i64,
    };
    let now = now();
    let latest = hydra_db::input_cache::latest_path(ctx.pool, src)
        .await
        .map_err(db)?;
    if let Some((timestamp, last_seen, sha, store_path)) = &latest
        && now - last_seen < validity
        && is_valid(ctx.nix, store_path).await
    {
        return Ok(path_result(base, src, *timestamp, sha, store_path));
    }
    let (sha, store_path) = if src.starts_with('/') {
        if !Path::new(src).exists() {
            return Err(FetchError(format!(
                "input `{}`: {src} does not exist",
                input.name
            )));
        }
        let sha = nar_hash(Path::new(src)).await?;
        let known = hydra_db::input_cache::path_with_hash(ctx.pool, src, &sha)
            .await
            .map_err(db)?;
        match known {
            Some(store_path) if is_valid(ctx.nix, &store_path).await => (sha, store_path),
            _ => (sha, run_nix(ctx.nix, "nix-store", &["--add", src]).await?),
        }
    } else {
        download(ctx, input, src).await?
    };
    // The first time this content was seen stays its timestamp.
    let timestamp =
        hydra_db::input_cache::remember_path(ctx.pool, src, &sha, &store_path, now as i32)
            .await
            .map_err(db)?;
    Ok(path_result(
        base,
        src,
        i64::from(timestamp),
        &sha,
        &store_path,
    ))
}

fn path_result(base: Fetched, src: &str, timestamp: i64, sha: &str, store_path: &str) -> Fetched {
    Fetched {
        uri: Some(src.to_string()),
        revision: Some(format!("{}:{sha}", utc_stamp(timestamp))),
        store_path: Some(store_path.to_string()),
        sha256: Some(sha.to_string()),
        ..base
    }
}

/// A `path` input that is a URL, downloaded with `nix-prefetch-url`:
/// its hash (base32) and store path.
async fn download(
    ctx: &FetchContext<'_>,
    input: &Input,
    url: &str,
) -> Result<(String, String), FetchError> {
    let out = ctx
        .nix
        .command("nix-prefetch-url")
        .arg(url)
        .env("PRINT_PATH", "1")
        .output()
        .await
        .map_err(|e| FetchError(format!("cannot run nix-prefetch-url: {e}")))?;
    if !out.status.success() {
        return Err(FetchError(format!(
            "input `{}`: cannot download {url}: {}",
            input.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let (Some(sha), Some(store_path)) = (lines.next(), lines.next()) else {
        return Err(FetchError(format!(
            "input `{}`: unexpected output of nix-prefetch-url",
            input.name
        )));
    };
    Ok((sha.to_string(), store_path.to_string()))
}

pub(crate) fn db(e: sqlx::Error) -> FetchError {
    tracing::error!(error = %e, "database error while fetching an input");
    FetchError(format!("database error while fetching: {e}"))
}

/// Holds an exclusive lock on `<dir>.lock` (several evaluations may fetch
/// the same repository at once) until dropped.
pub(crate) struct DirLock {
    _file: std::fs::File,
}

pub(crate) async fn lock_dir(dir: &Path) -> Result<DirLock, FetchError> {
    let path = dir.with_extension("lock");
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| FetchError(format!("cannot create {}: {e}", parent.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| FetchError(format!("cannot open {}: {e}", path.display())))?;
        file.lock()
            .map_err(|e| FetchError(format!("cannot lock {}: {e}", path.display())))?;
        Ok(DirLock { _file: file })
    })
    .await
    .map_err(|e| FetchError(e.to_string()))?
}

/// Runs a version-control command (in `dir` if given) and returns its
/// standard output; a failure or passing `timeout` is an error naming the
/// command and quoting its stderr.
pub(crate) async fn run_tool(
    program: &str,
    args: &[&str],
    dir: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<String, FetchError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HGPLAIN", "1")
        .env("LC_ALL", "C")
        .kill_on_drop(true);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let line = format!("{program} {}", args.join(" "));
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(FetchError(format!("cannot run `{program}`: {e}"))),
        Err(_) => {
            return Err(FetchError(format!(
                "`{line}` took longer than {} s",
                timeout.as_secs()
            )));
        }
    };
    if !out.status.success() {
        return Err(FetchError(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A store path name from a URL: its last component without `.git`, made
/// of the characters Nix allows, else `source`.
pub(crate) fn store_name(url: &str) -> String {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("")
        .trim_end_matches(".git");
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-._?=".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches('.').to_string();
    if name.is_empty() {
        "source".into()
    } else {
        name
    }
}

/// The store path and NAR hash of an input's tree: the cached ones while
/// that path is valid, else what `export` writes into a fresh directory,
/// added to the store. The flag says the latter: the caller then records
/// the new path in its cache table.
pub(crate) async fn cached_or_exported<F, Fut>(
    nix: &NixEnv,
    cached: Option<(String, String)>,
    name: &str,
    export: F,
) -> Result<(String, String, bool), FetchError>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), FetchError>>,
{
    if let Some((path, sha)) = cached
        && is_valid(nix, &path).await
    {
        return Ok((path, sha, false));
    }
    let tmp = tempfile::Builder::new()
        .prefix("hydra-export-")
        .tempdir()
        .map_err(|e| FetchError(format!("cannot create a temporary directory: {e}")))?;
    let dest = tmp.path().join("export");
    export(dest.clone()).await?;
    let (path, sha) = add_to_store(nix, &dest, name).await?;
    Ok((path, sha, true))
}

/// Adds `dir` (recursively) to the store as `name`; returns the store path
/// and its NAR hash (base32).
pub(crate) async fn add_to_store(
    nix: &NixEnv,
    dir: &Path,
    name: &str,
) -> Result<(String, String), FetchError> {
    let parent = tempfile::Builder::new()
        .prefix("hydra-add-")
        .tempdir()
        .map_err(|e| FetchError(format!("cannot create a temporary directory: {e}")))?;
    // `nix-store --add` names the path after the file name.
    let named = parent.path().join(name);
    std::fs::rename(dir, &named)
        .map_err(|e| FetchError(format!("cannot move {}: {e}", dir.display())))?;
    let sha = nar_hash(&named).await?;
    let named_str = named.to_string_lossy().into_owned();
    let store_path = run_nix(nix, "nix-store", &["--add", &named_str]).await?;
    Ok((store_path, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_come_from_urls() {
        assert_eq!(store_name("https://github.com/NixOS/hydra.git"), "hydra");
        assert_eq!(store_name("file:///tmp/x/repo/"), "repo");
        assert_eq!(store_name("git@host:team/my repo.git"), "my-repo");
        assert_eq!(store_name("/"), "source");
        assert_eq!(store_name("svn://h/.hidden"), "hidden");
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(1_700_000_000), "20231114221320");
        assert_eq!(utc_stamp(951_782_400), "20000229000000");
    }

    #[test]
    fn inputs_as_arguments() {
        let f = |kind: &str, value: &str| Fetched {
            name: "x".into(),
            kind: kind.into(),
            value: Some(value.into()),
            ..Default::default()
        };
        assert_eq!(
            f("string", "a\"b").to_arg(),
            Arg::Str("x".into(), "a\"b".into())
        );
        assert_eq!(
            f("boolean", "true").to_arg(),
            Arg::Expr("x".into(), "true".into())
        );
        let git = Fetched {
            name: "src".into(),
            kind: "git".into(),
            store_path: Some("/nix/store/abc-src".into()),
            revision: Some("deadbeef".into()),
            rev_count: Some(7),
            ..Default::default()
        };
        assert_eq!(
            git.to_arg(),
            Arg::Expr(
                "src".into(),
                "{ outPath = builtins.storePath \"/nix/store/abc-src\"; inputType = \"git\"; rev = \"deadbeef\"; revCount = 7; }"
                    .into()
            )
        );
        assert_eq!(
            git.search_path(),
            [("src".to_string(), "/nix/store/abc-src".to_string())]
        );
    }
}
