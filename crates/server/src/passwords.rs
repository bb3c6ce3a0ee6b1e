//! Passwords under attack. Argon2id is slow and large on purpose (Hydra's
//! parameters: 256 MiB a check), so an unbounded stream of sign-in
//! attempts would exhaust the machine's memory. Here:
//!
//! - every check and every new hash takes its memory from one budget
//!   (`password_check_memory`, MiB) before it runs; attempts beyond it
//!   wait, and after 10 s are answered 503;
//! - an attempt for an account that does not exist, or has no Argon2
//!   hash, runs the same Argon2 work against a hash made with the current
//!   parameters, so timing does not tell which accounts exist;
//! - failed attempts per account and per client address are counted:
//!   past `login_max_failures` (per address `…_per_address`) each further
//!   attempt must wait 1 s, doubling up to 15 min, or is answered 429
//!   without any hashing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hydra_config::WebConfig;
use hydra_db::password::{Cost, Verified};
use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use crate::ServerError;
use crate::error::{ApiError, ApiResult};

/// How long an attempt waits for memory before it is refused.
const MEMORY_WAIT: Duration = Duration::from_secs(10);
/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest wait imposed after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Entries kept at most; beyond, the oldest quiet ones are dropped.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct Passwords {
    cost: Cost,
    budget_mib: u32,
    memory: Arc<Semaphore>,
    /// A hash with `cost`, checked when there is no real one.
    dummy: OnceCell<String>,
    accounts: Throttle,
    addresses: Throttle,
    /// Argon2 checks run (a metric, and what tests observe).
    pub argon2_checks: Arc<hydra_metrics::Counter>,
}

impl Passwords {
    pub fn new(config: &WebConfig) -> Result<Passwords, ServerError> {
        let cost = Cost::from(config);
        cost.check()
            .map_err(|e| ServerError::Config(format!("password_hash_*: {e}")))?;
        let budget_mib = config.password_check_memory_mib.max(1);
        Ok(Passwords {
            cost,
            budget_mib,
            memory: Arc::new(Semaphore::new(budget_mib as usize)),
            dummy: OnceCell::new(),
            accounts: Throttle::new(config.login_max_failures),
            addresses: Throttle::new(config.login_max_failures_per_address),
            argon2_checks: Default::default(),
        })
    }

    /// Runs `work` (needing `kib` of memory) on the blocking pool once the
    /// budget allows.
    async fn with_memory<T: Send + 'static>(
        &self,
        kib: u32,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let mib = kib.div_ceil(1024).clamp(1, self.budget_mib);
        let permit = tokio::time::timeout(MEMORY_WAIT, self.memory.clone().acquire_many_owned(mib))
            .await
            .map_err(|_| {
                ApiError::Unavailable(
                    "The server is busy checking passwords; try again in a moment.".into(),
                )
            })?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(result)
    }

    /// A hash of `password` for storage, with the configured cost.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        let cost = self.cost;
        self.with_memory(cost.memory_kib, move || {
            hydra_db::password::hash_with(&password, &cost)
        })
        .await?
        .map_err(|e| ApiError::Internal(e.to_string()))
    }

    async fn dummy(&self) -> ApiResult<&str> {
        self.dummy
            .get_or_try_init(|| self.hash(new_secret()))
            .await
            .map(String::as_str)
    }

    /// Checks `password` against `stored` (`None`: no such account) with
    /// the same Argon2 work whatever `stored` is.
    pub async fn check(&self, password: &str, stored: Option<&str>) -> ApiResult<Verified> {
        let cost = self.cost;
        let argon = stored.filter(|s| hydra_db::password::memory_kib_of(s) > 0);
        let target = match argon {
            Some(hash) => hash.to_string(),
            None => self.dummy().await?.to_string(),
        };
        let kib = hydra_db::password::memory_kib_of(&target);
        let attempt = password.to_string();
        let verified = self
            .with_memory(kib, move || {
                hydra_db::password::verify_with(&attempt, &target, &cost)
            })
            .await?;
        self.argon2_checks.inc();
        Ok(match (argon, stored) {
            (Some(_), _) => verified,
            // Hydra's legacy SHA-1 form (fast) or no password at all.
            (None, Some(stored)) => hydra_db::password::verify_with(password, stored, &cost),
            (None, None) => Verified::No,
        })
    }

    /// `Err` with the seconds to wait when `account` or `address` must wait
    /// before another attempt.
    pub fn may_try(&self, account: &str, address: &str) -> ApiResult<()> {
        let wait = self
            .accounts
            .wait(account)
            .max(self.addresses.wait(address));
        if wait.is_zero() {
            return Ok(());
        }
        let seconds = wait.as_secs().max(1);
        Err(ApiError::TooManyRequests {
            message: format!("Too many failed sign-in attempts; try again in {seconds} s."),
            retry_after: seconds,
        })
    }

    pub fn failed(&self, account: &str, address: &str) {
        self.accounts.fail(account);
        self.addresses.fail(address);
    }

    pub fn succeeded(&self, account: &str, address: &str) {
        self.accounts.clear(account);
        self.addresses.clear(address);
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Failed attempts by key, with back-off past `allowed` failures.
#[derive(Debug)]
struct Throttle {
    allowed: u32,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    fn new(allowed: u32) -> Throttle {
        Throttle {
            allowed: allowed.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `key` must still wait.
    fn wait(&self, key: &str) -> Duration {
        let now = Instant::now();
        self.lock()
            .get(key)
            .and_then(|e| e.until)
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    fn fail(&self, key: &str) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| {
                e.until.is_some_and(|u| u > now) || now.duration_since(e.last) < FAILURE_WINDOW
            });
            if entries.len() >= MAX_ENTRIES {
                // Under a flood of distinct keys, keep the blocked ones.
                entries.retain(|_, e| e.until.is_some_and(|u| u > now));
            }
        }
        let entry = entries.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            last: now,
            until: None,
        });
        if now.duration_since(entry.last) > FAILURE_WINDOW && entry.until.is_none_or(|u| u <= now) {
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last = now;
        if entry.failures >= self.allowed {
            let doublings = (entry.failures - self.allowed).min(20);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF);
            entry.until = Some(now + wait);
        }
    }

    fn clear(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// Hex SHA-256 of a secret: what the tables store.
pub(crate) fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ (their digests are compared byte by byte, every byte).
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A fresh random secret (256 bits, hex).
pub(crate) fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub(crate) use hydra_db::password::MIN_LENGTH as MIN_PASSWORD_LENGTH;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_allowance_back_off_doubling() {
        let t = Throttle::new(3);
        for _ in 0..2 {
            t.fail("a");
        }
        assert_eq!(t.wait("a"), Duration::ZERO);
        t.fail("a");
        let first = t.wait("a");
        assert!(first > Duration::ZERO && first <= Duration::from_secs(1));
        t.fail("a");
        assert!(t.wait("a") > Duration::from_secs(1));
        for _ in 0..40 {
            t.fail("a");
        }
        assert!(t.wait("a") <= MAX_BACKOFF);
        assert_eq!(t.wait("b"), Duration::ZERO, "per key");
        t.clear("a");
        assert_eq!(t.wait("a"), Duration::ZERO);
    }
}
