//! The HTTP client of the plugins that talk to web services, and how they
//! post: a refusal (4xx) is logged and not retried (asking again would
//! not change the answer); a network error or a server error (5xx) fails
//! the task, which is then retried with the plugin's other work on that
//! event.

use std::time::Duration;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client with this program's user agent and a timeout, over rustls
/// with the ring provider.
pub fn client() -> Result<reqwest::Client, String> {
    // One process-wide TLS provider; installing it twice is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("hydra-notify/", env!("CARGO_PKG_VERSION")))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))
}

/// Sends `request` for `plugin`; see the module's rule.
pub async fn send_logged(plugin: &str, request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(|e| format!("{plugin}: {e}"))?;
    let status = response.status();
    let url = response.url().clone();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    if status.is_server_error() {
        return Err(format!("{plugin}: {url} answered {status}: {body}"));
    }
    tracing::warn!(plugin, %url, %status, %body, "a notification was refused");
    Ok(())
}
