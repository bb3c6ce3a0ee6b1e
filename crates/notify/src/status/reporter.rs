//! The reporter: converges the forges on the desired states of
//! `CommitStatuses`. It takes what is due (leased, so a crash leaves it
//! due again), sends each state, and records the answer:
//!
//! - 2xx: delivered (a newer state written meanwhile is due next);
//! - 429, or 403 with `X-RateLimit-Remaining: 0` or `Retry-After`: that
//!   credential is held back until `Retry-After` (seconds or a date) or
//!   `X-RateLimit-Reset`, and only its states wait; a success that leaves
//!   no requests (`X-RateLimit-Remaining: 0`) holds it the same way;
//! - 5xx, 408 and network errors: tried again after `backoff(attempts)`
//!   (or `Retry-After`, when longer), given up after `MAX_ATTEMPTS`;
//! - any other refusal (401, 404, 422…): given up at once with the
//!   answer, until the admin tries again.
//!
//! At most `IN_FLIGHT` requests are out at once, and never two for one
//! status, so a forge gets a context's states in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hydra_db::commit_statuses::{self, Delivery, Failure, Lease};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Outbox;
use super::app::{App, TokenError};
use super::credentials::{Auth, Credentials};
use crate::metrics::Metrics;

/// Requests out at once.
pub const IN_FLIGHT: usize = 32;
/// Failed deliveries of one state before it is given up.
pub const MAX_ATTEMPTS: i32 = 30;
/// Seconds a taken state stays taken (more than a request may last).
const LEASE: i32 = 60;
/// Wait when a credential is rate-limited without saying until when.
const DEFAULT_HOLD: i32 = 60;

/// The reporter.
#[derive(Debug)]
pub struct Reporter {
    pool: PgPool,
    credentials: Credentials,
    outbox: Outbox,
    client: reqwest::Client,
    /// `forge credential` → held back until (epoch seconds).
    holds: Mutex<HashMap<String, i32>>,
    /// The GitHub App that check runs are sent as.
    app: Option<Arc<App>>,
    /// Statuses in flight.
    busy: Mutex<HashSet<i32>>,
    metrics: Arc<Metrics>,
}

/// What became of one request.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered {
        hold_until: Option<i32>,
    },
    RateLimited {
        until: i32,
        error: String,
    },
    Transient {
        not_before: Option<i32>,
        error: String,
    },
    Refused {
        error: String,
    },
}

impl Reporter {
    /// A reporter for `config`'s credentials, woken through `outbox`.
    pub fn new(
        pool: PgPool,
        config: &hydra_config::Config,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        app: Option<Arc<App>>,
    ) -> Result<Reporter, String> {
        let client = crate::http::client()?;
        Ok(Reporter {
            pool,
            credentials: Credentials::from_config(config)?,
            outbox,
            client,
            holds: Mutex::new(HashMap::new()),
            app,
            busy: Mutex::new(HashSet::new()),
            metrics,
        })
    }

    /// Tells the reporter to look for due states now.
    pub fn wake(&self) {
        self.outbox.wake();
    }

    /// Delivers states as they fall due, until `shutdown`; then waits for
    /// the requests out.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut in_flight = JoinSet::new();
        loop {
            let wait = match self.fill(&mut in_flight).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the commit statuses due; trying again");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.outbox.woken() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Delivers every state due now, once each (for `--queued-only`):
    /// failures are recorded with their next attempt, not waited for.
    pub async fn deliver_due(self: Arc<Self>) -> Result<(), sqlx::Error> {
        let mut in_flight = JoinSet::new();
        loop {
            self.fill(&mut in_flight).await?;
            if in_flight.join_next().await.is_none() {
                return Ok(());
            }
        }
    }

    /// Starts requests for due states while there is room; how long until
    /// the next is due.
    async fn fill(self: &Arc<Self>, in_flight: &mut JoinSet<()>) -> Result<Duration, sqlx::Error> {
        let now = hydra_db::now();
        let held = self.held(now);
        let room = IN_FLIGHT.saturating_sub(in_flight.len());
        if room > 0 {
            let busy = self.busy_ids();
            let due = commit_statuses::lease_due(
                &self.pool,
                Lease {
                    now,
                    until: now + LEASE,
                    limit: room as i64,
                    held: &held,
                    busy: &busy,
                },
            )
            .await?;
            for delivery in due {
                self.lock_busy().insert(delivery.id);
                let this = self.clone();
                in_flight.spawn(async move {
                    let id = delivery.id;
                    this.deliver(delivery).await;
                    this.lock_busy().remove(&id);
                });
            }
        }
        let busy = self.busy_ids();
        let next = commit_statuses::seconds_to_next(&self.pool, now, &held, &busy).await?;
        let hold_ends = self
            .lock_holds()
            .values()
            .map(|until| i64::from(until.saturating_sub(now)).max(0))
            .min();
        let seconds = [next, hold_ends, Some(3600)].into_iter().flatten().min();
        Ok(Duration::from_secs(seconds.unwrap_or(3600).unsigned_abs()))
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, i32>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn busy_ids(&self) -> Vec<i32> {
        self.lock_busy().iter().copied().collect()
    }

    /// The credentials held back at `now` (expired holds forgotten).
    fn held(&self, now: i32) -> Vec<String> {
        let mut holds = self.lock_holds();
        holds.retain(|_, until| *until > now);
        holds.keys().cloned().collect()
    }

    fn hold(&self, delivery: &Delivery, until: i32) {
        // Times are whole seconds and `now` is rounded down: the hold lasts
        // to the end of `until`'s second, so it never ends early.
        let until = until.saturating_add(1);
        let key = format!("{} {}", delivery.forge, delivery.credential);
        tracing::warn!(forge = %delivery.forge, credential = %delivery.credential, until, "rate-limited: holding this credential's statuses back");
        let mut holds = self.lock_holds();
        let entry = holds.entry(key).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn count_failure(&self, delivery: &Delivery, outcome: &str) {
        self.metrics
            .statuses_failed
            .get(&[("forge", &delivery.forge), ("outcome", outcome)])
            .inc();
    }

    /// Sends one state and records how it went.
    async fn deliver(&self, delivery: Delivery) {
        let outcome = if delivery.forge == super::checks::FORGE {
            self.send_check(&delivery).await
        } else {
            match self.credentials.auth(&delivery) {
                Ok(auth) => self.send(&delivery, &auth).await,
                Err(error) => Outcome::Refused { error },
            }
        };
        let now = hydra_db::now();
        let recorded = match outcome {
            Outcome::Delivered { hold_until } => {
                self.metrics
                    .statuses_sent
                    .get(&[("forge", &delivery.forge)])
                    .inc();
                let written = f64::from(delivery.updated_at);
                let now_precise = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(written, |d| d.as_secs_f64());
                self.metrics
                    .status_latency
                    .observe((now_precise - written).max(0.0));
                tracing::info!(forge = %delivery.forge, url = %delivery.url, context = %delivery.context, state = %delivery.state, "commit status sent");
                if let Some(until) = hold_until {
                    self.hold(&delivery, until);
                }
                commit_statuses::delivered(&self.pool, delivery.id, delivery.version, now).await
            }
            Outcome::RateLimited { until, error } => {
                self.count_failure(&delivery, "rate_limited");
                self.hold(&delivery, until);
                commit_statuses::failed(
                    &self.pool,
                    delivery.id,
                    delivery.version,
                    &error,
                    Failure::RetryAt(until),
                    now,
                )
                .await
            }
            Outcome::Transient { not_before, error } => {
                let attempts = delivery.attempts + 1;
                let failure = if attempts >= MAX_ATTEMPTS {
                    self.count_failure(&delivery, "dropped");
                    tracing::error!(url = %delivery.url, context = %delivery.context, %error, attempts, "a commit status failed too many times; given up");
                    Failure::Dropped
                } else {
                    let backoff =
                        now.saturating_add(crate::backoff(attempts.unsigned_abs()) as i32);
                    tracing::warn!(url = %delivery.url, context = %delivery.context, %error, attempts, "a commit status was not delivered; it will be tried again");
                    Failure::RetryAt(not_before.map_or(backoff, |at| at.max(backoff)))
                };
                commit_statuses::failed(
                    &self.pool,
                    delivery.id,
                    delivery.version,
                    &error,
                    failure,
                    now,
                )
                .await
            }
            Outcome::Refused { error } => {
                self.count_failure(&delivery, "dropped");
                tracing::error!(url = %delivery.url, context = %delivery.context, %error, "a commit status was refused; given up (the admin can try it again)");
                commit_statuses::failed(
                    &self.pool,
                    delivery.id,
                    delivery.version,
                    &error,
                    Failure::Dropped,
                    now,
                )
                .await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the state is sent again then.
            tracing::error!(error = %e, id = delivery.id, "cannot record a commit status's delivery");
        }
    }

    /// Creates or updates a check run: the row's check run, else the one
    /// an earlier attempt made (found by its `external_id`, the row's id),
    /// else a new one, whose id is kept.
    async fn send_check(&self, delivery: &Delivery) -> Outcome {
        let Some(app) = &self.app else {
            return Outcome::Refused {
                error: "no <github_app> is configured".into(),
            };
        };
        let repo = &delivery.credential;
        let token = match app.token(&self.client, repo).await {
            Ok(token) => token,
            Err(TokenError::Transient(error)) => {
                return Outcome::Transient {
                    not_before: None,
                    error,
                };
            }
            Err(TokenError::Refused(error)) => return Outcome::Refused { error },
        };
        let Ok(mut body) = serde_json::from_str::<serde_json::Value>(&delivery.body) else {
            return Outcome::Refused {
                error: "the check run's body is not JSON".into(),
            };
        };
        let external = delivery.id.to_string();
        body["external_id"] = serde_json::json!(external);
        // `…/repos/O/R/commits/SHA/check-runs` → `…/repos/O/R`.
        let Some(base) = delivery
            .url
            .rsplit_once("/commits/")
            .map(|(base, _)| base.to_owned())
        else {
            return Outcome::Refused {
                error: format!("not a check-run URL: {}", delivery.url),
            };
        };
        let remote = match delivery.remote_id {
            Some(id) => Some(id),
            None => match self.find_check(delivery, &token, &external).await {
                Ok(found) => {
                    if let Some(id) = found {
                        self.keep_remote_id(delivery.id, id).await;
                    }
                    found
                }
                Err(outcome) => return outcome,
            },
        };
        let request = match remote {
            Some(id) => self.client.patch(format!("{base}/check-runs/{id}")),
            None => self.client.post(format!("{base}/check-runs")),
        };
        let response = match request
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header(reqwest::header::AUTHORIZATION, token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return Outcome::Transient {
                    not_before: None,
                    error: format!("{base}/check-runs: {e}"),
                };
            }
        };
        let now = hydra_db::now();
        let status = response.status();
        let limits = RateLimit::of(response.headers(), now);
        let text = response.text().await.unwrap_or_default();
        if status.as_u16() == 401 {
            app.forget(repo);
        }
        if status.is_success() && remote.is_none() {
            let made = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["id"].as_i64());
            if let Some(id) = made {
                self.keep_remote_id(delivery.id, id).await;
            }
        }
        classify(
            status.as_u16(),
            &limits,
            now,
            format!("HTTP {status}: {}", excerpt(&text)),
        )
    }

    /// Records that row `id`'s check run is `remote` (when it cannot, the
    /// next attempt finds it again by its external id).
    async fn keep_remote_id(&self, id: i32, remote: i64) {
        if let Err(e) = commit_statuses::set_remote_id(&self.pool, id, remote).await {
            tracing::warn!(error = %e, "cannot record a check run's id");
        }
    }

    /// The check run an earlier attempt made for `delivery`, by its
    /// external id (or the failure to ask).
    async fn find_check(
        &self,
        delivery: &Delivery,
        token: &hydra_config::Secret,
        external: &str,
    ) -> Result<Option<i64>, Outcome> {
        let url = format!(
            "{}?check_name={}&filter=all&per_page=100",
            delivery.url,
            percent_encoding::utf8_percent_encode(
                &delivery.context,
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let response = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header(reqwest::header::AUTHORIZATION, token.expose())
            .send()
            .await
            .map_err(|e| Outcome::Transient {
                not_before: None,
                error: format!("{url}: {e}"),
            })?;
        let now = hydra_db::now();
        let status = response.status();
        let limits = RateLimit::of(response.headers(), now);
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(classify(
                status.as_u16(),
                &limits,
                now,
                format!("HTTP {status}: {}", excerpt(&text)),
            ));
        }
        let listed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok(listed["check_runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|run| run["external_id"].as_str() == Some(external))
            .and_then(|run| run["id"].as_i64()))
    }

    async fn send(&self, delivery: &Delivery, auth: &Auth) -> Outcome {
        let mut request = self
            .client
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(delivery.body.clone());
        if delivery.forge == "github" {
            request = request.header(reqwest::header::ACCEPT, "application/vnd.github.v3+json");
        }
        request = match auth {
            Auth::Header(name, value) => request.header(*name, value.expose()),
            Auth::Basic(user, password) => request.basic_auth(user, Some(password.expose())),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Outcome::Transient {
                    not_before: None,
                    error: format!("{}: {e}", delivery.url),
                };
            }
        };
        let now = hydra_db::now();
        let status = response.status();
        let limits = RateLimit::of(response.headers(), now);
        let body = response.text().await.unwrap_or_default();
        let error = format!("HTTP {status}: {}", excerpt(&body));
        classify(status.as_u16(), &limits, now, error)
    }
}

/// What an answer says of rate limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RateLimit {
    /// `X-RateLimit-Remaining`.
    remaining: Option<u64>,
    /// `X-RateLimit-Reset`, epoch seconds.
    reset: Option<i32>,
    /// `Retry-After`, as epoch seconds.
    retry_after: Option<i32>,
}

impl RateLimit {
    fn of(headers: &reqwest::header::HeaderMap, now: i32) -> RateLimit {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        RateLimit {
            remaining: text("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset: text("x-ratelimit-reset").and_then(|v| v.parse().ok()),
            retry_after: text("retry-after").and_then(|v| retry_after(v, now)),
        }
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str, now: i32) -> Option<i32> {
    if let Ok(seconds) = value.parse::<i32>() {
        return Some(now.saturating_add(seconds.max(0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i32::try_from(secs).ok()
}

/// How an answer with `status` and `limits` at `now` is taken.
fn classify(status: u16, limits: &RateLimit, now: i32, error: String) -> Outcome {
    let exhausted = limits.remaining == Some(0);
    let until = limits
        .retry_after
        .or(limits.reset)
        .filter(|at| *at > now)
        .unwrap_or(now + DEFAULT_HOLD);
    match status {
        200..=299 => Outcome::Delivered {
            hold_until: exhausted.then_some(until),
        },
        429 => Outcome::RateLimited { until, error },
        403 if exhausted || limits.retry_after.is_some() => Outcome::RateLimited { until, error },
        408 | 500..=599 => Outcome::Transient {
            not_before: limits.retry_after,
            error,
        },
        _ => Outcome::Refused { error },
    }
}

/// The start of an answer's body, on one line.
fn excerpt(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_retried_held_or_refused() {
        let none = RateLimit::default();
        let now = 1000;
        assert_eq!(
            classify(201, &none, now, String::new()),
            Outcome::Delivered { hold_until: None }
        );
        let exhausted = RateLimit {
            remaining: Some(0),
            reset: Some(1500),
            retry_after: None,
        };
        assert_eq!(
            classify(201, &exhausted, now, String::new()),
            Outcome::Delivered {
                hold_until: Some(1500)
            }
        );
        assert_eq!(
            classify(403, &exhausted, now, "e".into()),
            Outcome::RateLimited {
                until: 1500,
                error: "e".into()
            }
        );
        let after = RateLimit {
            retry_after: Some(1030),
            ..RateLimit::default()
        };
        assert_eq!(
            classify(429, &after, now, "e".into()),
            Outcome::RateLimited {
                until: 1030,
                error: "e".into()
            }
        );
        assert_eq!(
            classify(429, &none, now, "e".into()),
            Outcome::RateLimited {
                until: 1060,
                error: "e".into()
            }
        );
        assert_eq!(
            classify(403, &none, now, "e".into()),
            Outcome::Refused { error: "e".into() },
            "a plain 403 is a refusal"
        );
        assert_eq!(
            classify(503, &after, now, "e".into()),
            Outcome::Transient {
                not_before: Some(1030),
                error: "e".into()
            }
        );
        assert_eq!(
            classify(422, &none, now, "e".into()),
            Outcome::Refused { error: "e".into() }
        );
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(retry_after("30", 100), Some(130));
        assert_eq!(retry_after("Thu, 01 Jan 1970 00:10:00 GMT", 100), Some(600));
        assert_eq!(retry_after("soon", 100), None);
    }
}
