//! Binary cache records: `nix-cache-info`, `.narinfo` files, the signature
//! fingerprint, and Ed25519 keys in the format of
//! `nix-store --generate-binary-cache-key` (`name:base64`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::hash::NixHash;
use crate::store_path::StoreDir;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    #[error("line {line} of the narinfo: {message}")]
    Line { line: usize, message: String },
    #[error("the narinfo has no `{0}` field")]
    Missing(&'static str),
    #[error("the narinfo is invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a key must look like `name:base64`")]
    Format,
    #[error("key `{name}`: {message}")]
    Invalid { name: String, message: String },
}

/// `nix-cache-info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    pub store_dir: String,
    pub want_mass_query: bool,
    pub priority: Option<u64>,
}

impl CacheInfo {
    pub fn parse(text: &str) -> Result<CacheInfo, NarInfoError> {
        let mut store_dir = None;
        let mut want_mass_query = false;
        let mut priority = None;
        for (i, line) in text.lines().enumerate() {
            let Some((key, value)) = line.split_once(':') else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(NarInfoError::Line {
                    line: i + 1,
                    message: format!("expected `Key: value`, found `{line}`"),
                });
            };
            let value = value.trim();
            match key {
                "StoreDir" => store_dir = Some(value.to_string()),
                "WantMassQuery" => want_mass_query = value == "1",
                "Priority" => {
                    priority = Some(value.parse().map_err(|_| NarInfoError::Line {
                        line: i + 1,
                        message: format!("Priority `{value}` is not a number"),
                    })?)
                }
                _ => {}
            }
        }
        Ok(CacheInfo {
            store_dir: store_dir.ok_or(NarInfoError::Missing("StoreDir"))?,
            want_mass_query,
            priority,
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("StoreDir: {}\n", self.store_dir);
        let _ = writeln!(s, "WantMassQuery: {}", u8::from(self.want_mass_query));
        if let Some(p) = self.priority {
            let _ = writeln!(s, "Priority: {p}");
        }
        s
    }
}

/// A `.narinfo` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// Full store path.
    pub store_path: String,
    pub url: String,
    pub compression: String,
    pub file_hash: Option<NixHash>,
    pub file_size: Option<u64>,
    pub nar_hash: NixHash,
    pub nar_size: u64,
    /// Base names.
    pub references: Vec<String>,
    /// Base name.
    pub deriver: Option<String>,
    pub system: Option<String>,
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}

impl NarInfo {
    /// Parses a narinfo as Nix does: every line must end with a newline,
    /// unknown keys are ignored, `Compression` defaults to `bzip2`.
    pub fn parse(text: &str) -> Result<NarInfo, NarInfoError> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = Vec::new();
        let mut deriver = None;
        let mut system = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(NarInfoError::Invalid(
                "the last line does not end with a newline".into(),
            ));
        }
        for (i, line) in text.lines().enumerate() {
            let err = |message: String| NarInfoError::Line {
                line: i + 1,
                message,
            };
            let (key, value) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
                .ok_or_else(|| err(format!("expected `Key: value`, found `{line}`")))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| err(format!("`{key}` is not a number: `{v}`")))
            };
            let hash = |v: &str| NixHash::parse(v).map_err(|e| err(format!("`{key}`: {e}")));
            match key {
                "StorePath" => store_path = Some(value.to_string()),
                "URL" => url = Some(value.to_string()),
                "Compression" => compression = Some(value.to_string()),
                "FileHash" => file_hash = Some(hash(value)?),
                "FileSize" => file_size = Some(number(value)?),
                "NarHash" => nar_hash = Some(hash(value)?),
                "NarSize" => nar_size = Some(number(value)?),
                "References" => references = value.split_whitespace().map(String::from).collect(),
                "Deriver" => {
                    deriver =
                        (value != "unknown-deriver" && !value.is_empty()).then(|| value.to_string())
                }
                "System" => system = Some(value.to_string()),
                "Sig" => sigs.push(value.to_string()),
                "CA" => ca = Some(value.to_string()),
                _ => {}
            }
        }
        let nar_size = nar_size.ok_or(NarInfoError::Missing("NarSize"))?;
        if nar_size == 0 {
            return Err(NarInfoError::Invalid("NarSize is 0".into()));
        }
        Ok(NarInfo {
            store_path: store_path.ok_or(NarInfoError::Missing("StorePath"))?,
            url: url.ok_or(NarInfoError::Missing("URL"))?,
            compression: compression.unwrap_or_else(|| "bzip2".into()),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(NarInfoError::Missing("NarHash"))?,
            nar_size,
            references,
            deriver,
            system,
            sigs,
            ca,
        })
    }

    /// The text, fields in Nix's order.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "StorePath: {}", self.store_path);
        let _ = writeln!(s, "URL: {}", self.url);
        let _ = writeln!(s, "Compression: {}", self.compression);
        if let Some(h) = &self.file_hash {
            let _ = writeln!(s, "FileHash: {}", h.to_typed_base32());
        }
        if let Some(n) = self.file_size {
            let _ = writeln!(s, "FileSize: {n}");
        }
        let _ = writeln!(s, "NarHash: {}", self.nar_hash.to_typed_base32());
        let _ = writeln!(s, "NarSize: {}", self.nar_size);
        let _ = writeln!(s, "References: {}", self.references.join(" "));
        if let Some(d) = &self.deriver {
            let _ = writeln!(s, "Deriver: {d}");
        }
        if let Some(sys) = &self.system {
            let _ = writeln!(s, "System: {sys}");
        }
        for sig in &self.sigs {
            let _ = writeln!(s, "Sig: {sig}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(s, "CA: {ca}");
        }
        s
    }

    /// What signatures sign.
    pub fn fingerprint(&self, store_dir: &StoreDir) -> Result<String, NarInfoError> {
        let refs: Vec<String> = self
            .references
            .iter()
            .map(|r| format!("{}/{r}", store_dir.as_str()))
            .collect();
        fingerprint(&self.store_path, &self.nar_hash, self.nar_size, &refs)
    }

    /// Adds a signature by `key`.
    pub fn sign(&mut self, store_dir: &StoreDir, key: &SecretKey) -> Result<(), NarInfoError> {
        let sig = key.sign(&self.fingerprint(store_dir)?);
        self.sigs.push(sig);
        Ok(())
    }

    /// Whether one of the signatures is valid for one of `keys`.
    pub fn verify(&self, store_dir: &StoreDir, keys: &[PublicKey]) -> bool {
        match self.fingerprint(store_dir) {
            Ok(fp) => self
                .sigs
                .iter()
                .any(|s| keys.iter().any(|k| k.verify(&fp, s))),
            Err(_) => false,
        }
    }
}

/// `1;<path>;<narHash>;<narSize>;<refs, comma-separated, full, sorted>`.
pub fn fingerprint(
    path: &str,
    nar_hash: &NixHash,
    nar_size: u64,
    references: &[String],
) -> Result<String, NarInfoError> {
    if nar_size == 0 {
        return Err(NarInfoError::Invalid(
            "cannot sign a path with NarSize 0".into(),
        ));
    }
    let refs: BTreeSet<&str> = references.iter().map(String::as_str).collect();
    Ok(format!(
        "1;{path};{};{nar_size};{}",
        nar_hash.to_typed_base32(),
        refs.into_iter().collect::<Vec<_>>().join(",")
    ))
}

fn split_key(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let (name, data) = text.trim().split_once(':').ok_or(KeyError::Format)?;
    if name.is_empty() {
        return Err(KeyError::Format);
    }
    let bytes = BASE64.decode(data).map_err(|e| KeyError::Invalid {
        name: name.to_string(),
        message: format!("not base64: {e}"),
    })?;
    Ok((name.to_string(), bytes))
}

/// A secret signing key: `name:base64(seed ‖ public key)`.
#[derive(Clone)]
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}:***)", self.name)
    }
}

impl SecretKey {
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let (name, bytes) = split_key(text)?;
        let invalid = |message: &str| KeyError::Invalid {
            name: name.clone(),
            message: message.into(),
        };
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| invalid("a secret key has 64 bytes"))?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| invalid("the public half does not match"))?;
        Ok(SecretKey { name, key })
    }

    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> std::io::Result<SecretKey> {
        let mut seed = [0u8; 32];
        getrandom_fill(&mut seed)?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The text of the secret key file.
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `name:base64(signature)` over `message`.
    pub fn sign(&self, message: &str) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.sign(message.as_bytes()).to_bytes())
        )
    }
}

fn getrandom_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A public key: `name:base64(32 bytes)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let (name, bytes) = split_key(text)?;
        let invalid = |message: &str| KeyError::Invalid {
            name: name.clone(),
            message: message.into(),
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid("a public key has 32 bytes"))?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| invalid("not a valid Ed25519 point"))?;
        Ok(PublicKey { name, key })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, BASE64.encode(self.key.to_bytes()))
    }

    /// Whether `signature` (`name:base64`) is by this key over `message`;
    /// a signature by another key name is not.
    pub fn verify(&self, message: &str, signature: &str) -> bool {
        let Some((name, sig)) = signature.split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = BASE64.decode(sig) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.key.verify_strict(message.as_bytes(), &sig).is_ok()
    }
}
