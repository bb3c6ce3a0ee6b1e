//! Store paths: `/nix/store/<32-character hash>-<name>`, their validation,
//! and how Nix computes them.

use std::cmp::Ordering;
use std::fmt;

use crate::base32;
use crate::hash::{HashAlgo, NixHash, sha256};

/// The default store directory.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Length of the hash part in characters.
pub const HASH_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("`{0}` is not in the store directory {1}")]
    NotInStore(String, String),
    #[error("store path `{0}` has no hash part")]
    NoHash(String),
    #[error("store path `{path}` has an invalid hash part: {reason}")]
    BadHash { path: String, reason: String },
    #[error("store path `{path}` has an invalid name: {reason}")]
    BadName { path: String, reason: String },
}

/// A store path, without the store directory: hash part and name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorePath {
    hash: [u8; HASH_LEN],
    name: String,
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl fmt::Display for StorePath {
    /// The base name, `<hash>-<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash_part(), self.name)
    }
}

/// Nix orders store paths by their base names, bytewise.
impl Ord for StorePath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.hash
            .cmp(&other.hash)
            .then_with(|| self.name.as_bytes().cmp(other.name.as_bytes()))
    }
}

impl PartialOrd for StorePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether `s` is a store path's hash part: 32 base32 digits.
pub fn is_hash_part(s: &str) -> bool {
    s.len() == HASH_LEN && s.bytes().all(|b| base32::ALPHABET.contains(&b))
}

/// The last component of a path (a store path's base name, `<hash>-<name>`);
/// the whole text when it has no `/`.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Checks a store path name: 1–211 characters of `[A-Za-z0-9+-._?=]`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 211 {
        return Err("the name is longer than 211 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')))
    {
        return Err(format!(
            "the character `{}` is not allowed",
            c.escape_default()
        ));
    }
    Ok(())
}

impl StorePath {
    /// Parses a base name `<hash>-<name>`.
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        let (hash, name) = match (base.get(..HASH_LEN), base.get(HASH_LEN..)) {
            (Some(h), Some(rest)) if rest.starts_with('-') => (h, &rest[1..]),
            _ => return Err(StorePathError::NoHash(base.to_string())),
        };
        if let Some(c) = hash
            .chars()
            .find(|c| !base32::ALPHABET.contains(&(*c as u8)) || !c.is_ascii())
        {
            return Err(StorePathError::BadHash {
                path: base.to_string(),
                reason: format!("`{}` is not a base32 digit", c.escape_default()),
            });
        }
        validate_name(name).map_err(|reason| StorePathError::BadName {
            path: base.to_string(),
            reason,
        })?;
        let mut bytes = [0u8; HASH_LEN];
        bytes.copy_from_slice(hash.as_bytes());
        Ok(StorePath {
            hash: bytes,
            name: name.to_string(),
        })
    }

    /// Builds a store path from a 20-byte digest and a name.
    pub fn from_digest(digest: &[u8; 20], name: &str) -> Result<StorePath, StorePathError> {
        let base = format!("{}-{}", base32::encode(digest), name);
        StorePath::from_base_name(&base)
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        // Only base32 digits are ever stored.
        std::str::from_utf8(&self.hash).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_derivation(&self) -> bool {
        self.name.ends_with(".drv")
    }
}

/// A store directory, `/nix/store` unless configured otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir(DEFAULT_STORE_DIR.to_string())
    }
}

impl StoreDir {
    pub fn new(dir: impl Into<String>) -> StoreDir {
        let dir: String = dir.into();
        StoreDir(dir.trim_end_matches('/').to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a full path `<store dir>/<hash>-<name>` (nothing below it).
    pub fn parse(&self, path: &str) -> Result<StorePath, StorePathError> {
        let base = path
            .strip_prefix(&self.0)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_string(), self.0.clone()))?;
        if base.contains('/') {
            return Err(StorePathError::BadName {
                path: path.to_string(),
                reason: "a store path has no components below the base name".into(),
            });
        }
        StorePath::from_base_name(base)
    }

    /// Splits a path inside the store (`/nix/store/<base>/sub/dir`) into its
    /// store path and the rest (without leading slash).
    pub fn parse_inside<'a>(&self, path: &'a str) -> Result<(StorePath, &'a str), StorePathError> {
        let rest = path
            .strip_prefix(&self.0)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(path.to_string(), self.0.clone()))?;
        let (base, sub) = rest.split_once('/').unwrap_or((rest, ""));
        Ok((StorePath::from_base_name(base)?, sub))
    }

    /// The full path of a store path.
    pub fn display(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path)
    }

    /// `makeStorePath`: SHA-256 of `type:sha256:<inner base16>:<store dir>:<name>`,
    /// XOR-folded to 20 bytes.
    pub fn make_store_path(
        &self,
        kind: &str,
        inner: &NixHash,
        name: &str,
    ) -> Result<StorePath, StorePathError> {
        let fingerprint = format!("{kind}:{}:{}:{}", inner.to_typed_base16(), self.0, name);
        StorePath::from_digest(
            &compress_hash(sha256(fingerprint.as_bytes()).as_bytes()),
            name,
        )
    }

    /// A path for literal text (`.drv` files, `builtins.toFile`), with its
    /// references.
    pub fn make_text_path<'a>(
        &self,
        name: &str,
        contents: &[u8],
        references: impl IntoIterator<Item = &'a StorePath>,
    ) -> Result<StorePath, StorePathError> {
        let kind = self.type_with_references("text", references, false);
        self.make_store_path(&kind, &sha256(contents), name)
    }

    /// A path added recursively (`nix-store --add`, `fixed:r:sha256`), from
    /// the SHA-256 of its NAR.
    pub fn make_source_path<'a>(
        &self,
        name: &str,
        nar_hash: &NixHash,
        references: impl IntoIterator<Item = &'a StorePath>,
        self_reference: bool,
    ) -> Result<StorePath, StorePathError> {
        let kind = self.type_with_references("source", references, self_reference);
        self.make_store_path(&kind, nar_hash, name)
    }

    /// The output path of a fixed-output derivation.
    pub fn make_fixed_output_path(
        &self,
        name: &str,
        recursive: bool,
        hash: &NixHash,
    ) -> Result<StorePath, StorePathError> {
        if recursive && hash.algo() == HashAlgo::Sha256 {
            return self.make_source_path(name, hash, [], false);
        }
        let inner = sha256(
            format!(
                "fixed:out:{}{}:{}:",
                if recursive { "r:" } else { "" },
                hash.algo(),
                hash.to_base16()
            )
            .as_bytes(),
        );
        self.make_store_path("output:out", &inner, name)
    }

    /// The path of output `output` of an input-addressed derivation named
    /// `drv_name`, from its hash modulo.
    pub fn make_output_path(
        &self,
        output: &str,
        hash_modulo: &NixHash,
        drv_name: &str,
    ) -> Result<StorePath, StorePathError> {
        let name = output_path_name(drv_name, output);
        self.make_store_path(&format!("output:{output}"), hash_modulo, &name)
    }

    fn type_with_references<'a>(
        &self,
        kind: &str,
        references: impl IntoIterator<Item = &'a StorePath>,
        self_reference: bool,
    ) -> String {
        let mut refs: Vec<String> = references.into_iter().map(|r| self.display(r)).collect();
        refs.sort();
        let mut out = kind.to_string();
        for r in refs {
            out.push(':');
            out.push_str(&r);
        }
        if self_reference {
            out.push_str(":self");
        }
        out
    }
}

/// `drvName` for `out`, `drvName-output` otherwise.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_string()
    } else {
        format!("{drv_name}-{output}")
    }
}

/// Folds a digest to 20 bytes by XOR (Nix's `compressHash`).
pub fn compress_hash(digest: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, b) in digest.iter().enumerate() {
        out[i % 20] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_ordering() {
        let dir = StoreDir::default();
        let p = dir
            .parse("/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-serveprobe-ok")
            .unwrap();
        assert_eq!(p.hash_part(), "ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8");
        assert_eq!(p.name(), "serveprobe-ok");
        assert_eq!(
            dir.display(&p),
            "/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-serveprobe-ok"
        );
        let (q, sub) = dir
            .parse_inside("/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-serveprobe-ok/bin/x")
            .unwrap();
        assert_eq!((q, sub), (p.clone(), "bin/x"));
        assert!(
            dir.parse("/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-serveprobe-ok/bin")
                .is_err()
        );
        assert!(matches!(
            dir.parse("/tmp/x"),
            Err(StorePathError::NotInStore(..))
        ));
        assert!(matches!(
            dir.parse("/nix/store/short-x"),
            Err(StorePathError::NoHash(_))
        ));
        assert!(matches!(
            dir.parse("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"),
            Err(StorePathError::BadHash { .. })
        ));
        assert!(matches!(
            dir.parse("/nix/store/ykqlvwqvm0hq9aa5bhg9ggj7hh9fr5p8-a b"),
            Err(StorePathError::BadName { .. })
        ));
        assert!(validate_name(&"x".repeat(212)).is_err());
        assert!(validate_name(".dotted").is_ok());
    }

    #[test]
    fn compress_hash_folds_by_xor() {
        let digest: Vec<u8> = (0..32).collect();
        let folded = compress_hash(&digest);
        assert_eq!(folded[0], 20);
        assert_eq!(folded[11], 11 ^ 31);
        assert_eq!(folded[12], 12);
    }
}
