//! SoTest: a `<sotest>` block with `uri` (default
//! `https://opensource.sotest.io`), `authfile` (`user:password` lines; the
//! last one is used, split at its last colon) and `priority` (default 0).
//! When a head build finishes with products of subtypes
//! `sotest-binaries` and `sotest-config`, a test run is created: a
//! multipart POST to `<uri>/api/create` with HTTP Basic auth. A refusal
//! fails the task, which is retried.

use std::sync::Arc;

use crate::Event;
use crate::plugin::{Context, Plugin, Work};
use crate::plugins::{config_blocks, text};

/// The plugin.
pub struct SoTest {
    uri: String,
    user: String,
    password: hydra_config::Secret,
    priority: i64,
    client: reqwest::Client,
}

impl std::fmt::Debug for SoTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoTest")
            .field("uri", &self.uri)
            .field("user", &self.user)
            .field("priority", &self.priority)
            .finish()
    }
}

/// The credentials in an authfile's text: its last `user:password` line,
/// split at the last colon.
pub fn credentials(text: &str) -> Option<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.rsplit_once(':'))
        .next_back()
        .map(|(user, password)| (user.to_string(), password.to_string()))
}

impl SoTest {
    /// The plugin `<sotest>` makes; an authfile that cannot be read, or
    /// holds no credentials, or a priority that is not a number, is an
    /// error naming it.
    pub fn from_config(config: &hydra_config::Config) -> Result<Option<Arc<SoTest>>, String> {
        let Some(tree) = config_blocks(config, "sotest").into_iter().next_back() else {
            return Ok(None);
        };
        let authfile = text(tree, "authfile")
            .filter(|f| !f.is_empty())
            .ok_or("<sotest> needs an authfile")?;
        let auth = std::fs::read_to_string(&authfile)
            .map_err(|e| format!("<sotest> authfile {authfile}: {e}"))?;
        let (user, password) = credentials(&auth)
            .ok_or_else(|| format!("<sotest> authfile {authfile} has no user:password line"))?;
        let priority = match text(tree, "priority").filter(|p| !p.is_empty()) {
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| format!("<sotest> priority ‘{p}’ is not a number"))?,
            None => 0,
        };
        Ok(Some(Arc::new(SoTest {
            uri: text(tree, "uri")
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "https://opensource.sotest.io".into())
                .trim_end_matches('/')
                .to_string(),
            user,
            password: hydra_config::Secret::new(password),
            priority,
            client: crate::http::client()?,
        })))
    }
}

impl Plugin for SoTest {
    fn name(&self) -> &'static str {
        "Hydra::Plugin::SoTest"
    }

    fn run<'a>(&'a self, cx: &'a Context, event: &'a Event) -> Work<'a> {
        Box::pin(async move {
            let Some(build) = event.finished_build() else {
                return Ok(());
            };
            let products = hydra_db::products::of_build(&cx.pool, build)
                .await
                .map_err(|e| format!("reading build {build}'s products: {e}"))?;
            let binaries = products.iter().find(|p| p.subtype == "sotest-binaries");
            let config = products.iter().find(|p| p.subtype == "sotest-config");
            let (Some(binaries), Some(config)) = (binaries, config) else {
                return Ok(());
            };
            let reports = hydra_db::build_reports::reports(&cx.pool, &[build])
                .await
                .map_err(|e| format!("reading build {build}: {e}"))?;
            let Some(report) = reports.first() else {
                return Ok(());
            };
            let Some(config_path) = &config.path else {
                return Err(format!("build {build}'s sotest-config product has no path"));
            };
            let real = cx.real_path(config_path);
            let bytes = tokio::fs::read(&real)
                .await
                .map_err(|e| format!("{}: {e}", real.display()))?;
            let base = cx.config.web.base_uri.trim_end_matches('/');
            let form = reqwest::multipart::Form::new()
                .text(
                    "boot_files_url",
                    format!(
                        "{base}/build/{build}/download/{}/{}",
                        binaries.nr, binaries.name
                    ),
                )
                .text("name", report.full_name())
                .text("url", format!("{base}/build/{build}"))
                .part(
                    "config",
                    reqwest::multipart::Part::bytes(bytes).file_name(config.name.clone()),
                )
                .text("priority", self.priority.to_string());
            let response = self
                .client
                .post(format!("{}/api/create", self.uri))
                .basic_auth(&self.user, Some(self.password.expose()))
                .multipart(form)
                .send()
                .await
                .map_err(|e| format!("SoTest: {e}"))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(format!("SoTest answered {status}: {}", body.trim()));
            }
            tracing::info!(%build, "a SoTest run was created");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::credentials;

    #[test]
    fn the_last_line_is_split_at_its_last_colon() {
        assert_eq!(
            credentials("old:one\nuser:pa:ss\n\n"),
            Some(("user:pa".into(), "ss".into()))
        );
        assert_eq!(credentials("nothing here"), None);
    }
}
