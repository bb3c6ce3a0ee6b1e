//! CoverityScan: `<coverityscan>` blocks with `jobs`, `project`, `email`,
//! `token` and `scanurl` (default Coverity's upload address). When a head
//! build finishes (not aborted or cancelled), the first block matching it
//! uploads the Coverity intermediate tarball the build left in
//! `<first output>/tarballs/*-coverity-int.{tgz,lzma,xz,bz2,zip}`, with
//! the version taken from its name. The service's answer is only logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hydra_db::build_reports;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{JobsPattern, config_blocks, text};

#[derive(Clone, Debug)]
struct Block {
    jobs: JobsPattern,
    project: String,
    email: String,
    token: String,
    url: String,
}

/// The plugin.
#[derive(Debug)]
pub struct CoverityScan {
    blocks: Vec<Block>,
    client: reqwest::Client,
}

impl CoverityScan {
    /// The plugin `config`'s `<coverityscan>` blocks make (`None`: there
    /// are none); a block missing `project`, `email` or `token` is an
    /// error naming it.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<CoverityScan>>, String> {
        let mut blocks = Vec::new();
        for tree in config_blocks(config, "coverityscan") {
            let Some(jobs) = JobsPattern::of_block("coverityscan", tree)? else {
                tracing::warn!("a <coverityscan> block has no jobs: it matches nothing");
                continue;
            };
            let key = |k: &str| {
                text(tree, k)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("a <coverityscan> block has no {k}"))
            };
            blocks.push(Block {
                jobs,
                project: key("project")?,
                email: key("email")?,
                token: key("token")?,
                url: text(tree, "scanurl")
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "http://scan5.coverity.com/cgi-bin/upload.py".into()),
            });
        }
        if blocks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(CoverityScan {
            blocks,
            client: crate::http::client()?,
        })))
    }
}

/// The tarball's MIME type by its extension.
fn mime(name: &str) -> Option<&'static str> {
    let ext = name.rsplit('.').next()?;
    Some(match ext {
        "xz" | "lzma" => "application/x-xz",
        "zip" => "application/zip",
        "bz2" => "application/x-bzip2",
        "tgz" => "application/x-gzip",
        _ => return None,
    })
}

/// The version in `<name>-<version>-coverity-int.<ext>`: what follows the
/// first `-` that a digit follows.
pub fn version(file: &str) -> Option<String> {
    let stem = file.split("-coverity-int.").next()?;
    let at = stem
        .char_indices()
        .find(|(i, c)| *c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))?
        .0;
    Some(stem[at + 1..].to_string())
}

/// The Coverity tarball in `dir`, if there is one.
fn tarball(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("-coverity-int.") && mime(n).is_some())
        })
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

impl Plugin for CoverityScan {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::CoverityScan"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let Some(build) = event.finished_build() else {
                return Ok(());
            };
            let reports = build_reports::reports(&cx.pool, &[build])
                .await
                .map_err(|e| format!("reading build {build}: {e}"))?;
            let Some(report) = reports.first().filter(|r| r.finished) else {
                return Ok(());
            };
            if report.aborted_or_cancelled() {
                return Ok(());
            }
            let full = report.full_name();
            let Some(block) = self.blocks.iter().find(|b| b.jobs.matches(&full)) else {
                return Ok(());
            };
            let outputs = hydra_db::builds::outputs(&cx.pool, build)
                .await
                .map_err(|e| format!("reading build {build}'s outputs: {e}"))?;
            let Some(out) = outputs.into_iter().find_map(|(_, path)| path) else {
                return Ok(());
            };
            let dir = cx.real_path(&out).join("tarballs");
            // A missing directory fails the task (the output may not be
            // here yet); a missing tarball is only logged.
            let Some(file) = tarball(&dir).map_err(|e| format!("{}: {e}", dir.display()))? else {
                tracing::info!(%build, dir = %dir.display(), "no Coverity tarball");
                return Ok(());
            };
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let Some(version) = version(&name) else {
                tracing::error!(%build, file = %name, "cannot tell the version of a Coverity tarball");
                return Ok(());
            };
            let bytes = tokio::fs::read(&file)
                .await
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let part = reqwest::multipart::Part::bytes(bytes)
                .file_name(name.clone())
                .mime_str(mime(&name).unwrap_or("application/octet-stream"))
                .map_err(|e| e.to_string())?;
            let form = reqwest::multipart::Form::new()
                .text("project", block.project.clone())
                .text("email", block.email.clone())
                .text("token", block.token.clone())
                .text("version", version.clone())
                .text(
                    "description",
                    format!("Hydra Coverity Build ({full}) - {build}:{version}"),
                )
                .part("file", part);
            let response = self.client.post(&block.url).multipart(form).send().await;
            match response {
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    if body.contains("ERROR!") || !status.is_success() {
                        tracing::error!(%build, %status, %body, "Coverity refused the upload");
                    } else if !body.contains("submitted") {
                        tracing::warn!(%build, %body, "Coverity did not say the build was submitted");
                    } else {
                        tracing::info!(%build, "uploaded to Coverity Scan");
                    }
                }
                Err(e) => tracing::error!(%build, error = %e, "cannot upload to Coverity Scan"),
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{mime, version};

    #[test]
    fn tarball_names_give_the_version_and_type() {
        assert_eq!(
            version("hello-1.0-coverity-int.tgz").as_deref(),
            Some("1.0")
        );
        assert_eq!(
            version("my-tool-2.3pre-coverity-int.xz").as_deref(),
            Some("2.3pre")
        );
        assert_eq!(version("hello-coverity-int.tgz"), None);
        assert_eq!(mime("a-1-coverity-int.lzma"), Some("application/x-xz"));
        assert_eq!(mime("a-1-coverity-int.zip"), Some("application/zip"));
        assert_eq!(mime("a-1-coverity-int.tar"), None);
    }
}
