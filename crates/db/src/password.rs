//! Password hashes, compatible with Hydra's.
//!
//! New hashes are Argon2id PHC strings with Hydra's parameters (t=3,
//! m=256 MiB, p=1, 16-byte output and salt). Hydra's older forms still
//! verify: a plain unsalted SHA-1 hex digest, and Argon2 over that SHA-1 hex
//! digest (what Hydra's `hydra-init` turned legacy hashes into). A password
//! that verifies against an older form or weaker parameters is reported as
//! needing a rehash. `!` means "no password": nothing verifies against it.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Hydra's shortest password, in characters.
pub const MIN_LENGTH: usize = 6;

/// Hydra's Argon2 parameters.
pub const T_COST: u32 = 3;
pub const M_COST_KIB: u32 = 262_144;
pub const P_COST: u32 = 1;
pub const OUTPUT_LEN: usize = 16;

/// The stored password of accounts that cannot log in with a password.
pub const NO_PASSWORD: &str = "!";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error(
        "`{0}` is not a password hash: expected an Argon2 PHC string ($argon2id$…) or a 40-digit SHA-1 hex digest"
    )]
    NotAHash(String),
    #[error("the password is empty")]
    Empty,
}

/// The Argon2id cost of new hashes (`password_hash_*` in hydra.conf);
/// the default is Hydra's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            memory_kib: M_COST_KIB,
            iterations: T_COST,
            parallelism: P_COST,
        }
    }
}

impl From<&hydra_config::WebConfig> for Cost {
    /// `password_hash_memory`, `…_iterations` and `…_parallelism`.
    fn from(web: &hydra_config::WebConfig) -> Cost {
        Cost {
            memory_kib: web.password_hash_memory_kib,
            iterations: web.password_hash_iterations,
            parallelism: web.password_hash_parallelism,
        }
    }
}

impl Cost {
    fn params(&self) -> Result<Params, PasswordError> {
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(|e| PasswordError::Hashing(format!("invalid Argon2 parameters: {e}")))
    }

    /// Whether Argon2 accepts these parameters.
    pub fn check(&self) -> Result<(), PasswordError> {
        self.params().map(|_| ())
    }
}

fn hasher(cost: &Cost) -> Result<Argon2<'static>, PasswordError> {
    Ok(Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        cost.params()?,
    ))
}

/// Hashes a password for storage with Hydra's parameters. Slow on purpose
/// (about a quarter of a second and 256 MiB); call it from blocking code.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    hash_with(password, &Cost::default())
}

/// Hashes a password for storage with `cost`.
pub fn hash_with(password: &str, cost: &Cost) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    hash_bytes(password.as_bytes(), cost)
}

fn hash_bytes(bytes: &[u8], cost: &Cost) -> Result<String, PasswordError> {
    hasher(cost)?
        .hash_password(bytes)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// The memory checking a password against `stored` takes, in KiB (0 for
/// forms that are not Argon2).
pub fn memory_kib_of(stored: &str) -> u32 {
    PasswordHash::new(stored)
        .ok()
        .and_then(|parsed| Params::try_from(&parsed).ok())
        .map_or(0, |p| p.m_cost())
}

/// The unsalted SHA-1 hex digest Hydra once stored.
pub fn sha1_hex(password: &str) -> String {
    hex::encode(Sha1::digest(password.as_bytes()))
}

/// Whether `stored` is a legacy unsalted SHA-1 hex digest.
pub fn is_sha1_hex(stored: &str) -> bool {
    stored.len() == 40
        && stored
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What an operator may pass as `--password-hash`: an Argon2 PHC string is
/// stored as it is; a SHA-1 hex digest is wrapped in Argon2, as Hydra does.
pub fn from_supplied_hash(supplied: &str) -> Result<String, PasswordError> {
    if is_sha1_hex(supplied) {
        return hash_bytes(supplied.as_bytes(), &Cost::default());
    }
    match PasswordHash::new(supplied) {
        Ok(parsed) if parsed.algorithm.as_str().starts_with("argon2") => Ok(supplied.to_string()),
        _ => Err(PasswordError::NotAHash(supplied.to_string())),
    }
}

/// The outcome of checking a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password, or an account without one.
    No,
    /// Right password; when `rehash` is set the stored form is outdated and
    /// should be replaced by [`hash`] of the password.
    Yes { rehash: bool },
}

/// Checks `password` against a stored hash in any of Hydra's forms; a hash
/// weaker than Hydra's parameters asks for a rehash.
pub fn verify(password: &str, stored: &str) -> Verified {
    verify_with(password, stored, &Cost::default())
}

/// Checks `password` against a stored hash; a hash weaker than `cost`
/// asks for a rehash.
pub fn verify_with(password: &str, stored: &str, cost: &Cost) -> Verified {
    if stored == NO_PASSWORD || password.is_empty() {
        return Verified::No;
    }
    if is_sha1_hex(stored) {
        let ok: bool = sha1_hex(password)
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into();
        return if ok {
            Verified::Yes { rehash: true }
        } else {
            Verified::No
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified::No;
    };
    let argon = Argon2::default();
    if argon.verify_password(password.as_bytes(), &parsed).is_ok() {
        return Verified::Yes {
            rehash: weaker_than(&parsed, cost),
        };
    }
    if argon
        .verify_password(sha1_hex(password).as_bytes(), &parsed)
        .is_ok()
    {
        return Verified::Yes { rehash: true };
    }
    Verified::No
}

fn weaker_than(parsed: &PasswordHash, cost: &Cost) -> bool {
    if parsed.algorithm.as_str() != "argon2id" {
        return true;
    }
    match Params::try_from(parsed) {
        Ok(p) => {
            p.m_cost() < cost.memory_kib
                || p.t_cost() < cost.iterations
                || p.p_cost() < cost.parallelism
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_hashes_use_hydras_parameters() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=262144,t=3,p=1$"), "{h}");
        assert_eq!(verify("correct horse", &h), Verified::Yes { rehash: false });
        assert_eq!(verify("wrong", &h), Verified::No);
    }

    #[test]
    fn legacy_forms_verify_and_ask_for_a_rehash() {
        let sha1 = sha1_hex("foobar");
        assert_eq!(sha1, "8843d7f92416211de9ebb963ff4ce28125932878");
        assert_eq!(verify("foobar", &sha1), Verified::Yes { rehash: true });
        assert_eq!(verify("foobaz", &sha1), Verified::No);
        let wrapped = from_supplied_hash(&sha1).unwrap();
        assert!(wrapped.starts_with("$argon2id$"));
        assert_eq!(verify("foobar", &wrapped), Verified::Yes { rehash: true });
        assert_eq!(verify("foobaz", &wrapped), Verified::No);
    }

    #[test]
    fn weaker_argon2_parameters_ask_for_a_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert_eq!(verify("pw", &weak), Verified::Yes { rehash: true });
    }

    #[test]
    fn accounts_without_password_never_verify() {
        assert_eq!(verify("", NO_PASSWORD), Verified::No);
        assert_eq!(verify("!", NO_PASSWORD), Verified::No);
        assert_eq!(verify("x", "garbage"), Verified::No);
        assert!(matches!(hash(""), Err(PasswordError::Empty)));
    }

    #[test]
    fn supplied_hashes_must_be_hashes() {
        assert!(matches!(
            from_supplied_hash("hunter2"),
            Err(PasswordError::NotAHash(_))
        ));
        assert!(matches!(
            from_supplied_hash("$pbkdf2$x"),
            Err(PasswordError::NotAHash(_))
        ));
        let h = hash("pw").unwrap();
        assert_eq!(from_supplied_hash(&h).unwrap(), h);
    }
}
