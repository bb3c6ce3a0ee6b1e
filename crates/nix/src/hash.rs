//! Hashes and their textual forms: base16, Nix base32, base64, SRI, with or
//! without an `algo:` prefix.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::base32;

/// The hash algorithms Nix uses for store paths and outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn size(self) -> usize {
        match self {
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    pub fn parse(name: &str) -> Result<HashAlgo, HashError> {
        match name {
            "sha1" => Ok(HashAlgo::Sha1),
            "sha256" => Ok(HashAlgo::Sha256),
            "sha512" => Ok(HashAlgo::Sha512),
            other => Err(HashError::UnknownAlgo(other.to_string())),
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("unknown hash algorithm `{0}`")]
    UnknownAlgo(String),
    #[error("hash `{0}` has no algorithm (expected `algo:hash` or `algo-base64`)")]
    MissingAlgo(String),
    #[error("hash `{hash}` has the wrong length for {algo}")]
    WrongLength { hash: String, algo: HashAlgo },
    #[error("hash `{0}` is not valid base16, base32 or base64")]
    BadEncoding(String),
}

/// A digest with its algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NixHash {
    algo: HashAlgo,
    bytes: Vec<u8>,
}

impl fmt::Debug for NixHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_typed_base32())
    }
}

impl fmt::Display for NixHash {
    /// `algo:base32`, how Nix prints NAR hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_typed_base32())
    }
}

impl NixHash {
    pub fn from_bytes(algo: HashAlgo, bytes: &[u8]) -> Result<NixHash, HashError> {
        if bytes.len() != algo.size() {
            return Err(HashError::WrongLength {
                hash: hex(bytes),
                algo,
            });
        }
        Ok(NixHash {
            algo,
            bytes: bytes.to_vec(),
        })
    }

    /// Hashes `data`.
    pub fn digest(algo: HashAlgo, data: &[u8]) -> NixHash {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn to_base16(&self) -> String {
        hex(&self.bytes)
    }

    pub fn to_base32(&self) -> String {
        base32::encode(&self.bytes)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.bytes)
    }

    /// `algo:base16`.
    pub fn to_typed_base16(&self) -> String {
        format!("{}:{}", self.algo, self.to_base16())
    }

    /// `algo:base32`.
    pub fn to_typed_base32(&self) -> String {
        format!("{}:{}", self.algo, self.to_base32())
    }

    /// `algo-base64` (Subresource Integrity).
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, self.to_base64())
    }

    /// Parses `algo:hash` (base16, base32 or base64, told apart by length)
    /// or SRI `algo-base64`.
    pub fn parse(s: &str) -> Result<NixHash, HashError> {
        Self::parse_with(s, None)
    }

    /// Parses like [`NixHash::parse`], and also a bare hash when the
    /// algorithm is known from context.
    pub fn parse_with(s: &str, default: Option<HashAlgo>) -> Result<NixHash, HashError> {
        if let Some((algo, rest)) = s.split_once(':') {
            let algo = HashAlgo::parse(algo)?;
            if let Some(d) = default
                && d != algo
            {
                return Err(HashError::UnknownAlgo(format!("{algo} (expected {d})")));
            }
            return Self::parse_bare(rest, algo);
        }
        if let Some((algo, rest)) = s.split_once('-')
            && let Ok(algo) = HashAlgo::parse(algo)
        {
            let bytes = BASE64
                .decode(rest)
                .map_err(|_| HashError::BadEncoding(s.to_string()))?;
            return NixHash::from_bytes(algo, &bytes).map_err(|_| HashError::WrongLength {
                hash: s.to_string(),
                algo,
            });
        }
        match default {
            Some(algo) => Self::parse_bare(s, algo),
            None => Err(HashError::MissingAlgo(s.to_string())),
        }
    }

    /// A hash of a known algorithm in base16, base32 or base64.
    pub fn parse_bare(s: &str, algo: HashAlgo) -> Result<NixHash, HashError> {
        let n = algo.size();
        let bytes = if s.len() == 2 * n {
            unhex(s).ok_or_else(|| HashError::BadEncoding(s.to_string()))?
        } else if s.len() == base32::encoded_len(n) {
            base32::decode(s).map_err(|_| HashError::BadEncoding(s.to_string()))?
        } else if s.len() == n.div_ceil(3) * 4 {
            BASE64
                .decode(s)
                .map_err(|_| HashError::BadEncoding(s.to_string()))?
        } else {
            return Err(HashError::WrongLength {
                hash: s.to_string(),
                algo,
            });
        };
        NixHash::from_bytes(algo, &bytes)
    }
}

/// Incremental hashing.
#[derive(Clone, Debug)]
pub enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algo: HashAlgo) -> Hasher {
        match algo {
            HashAlgo::Sha1 => Hasher::Sha1(Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> NixHash {
        let (algo, bytes) = match self {
            Hasher::Sha1(h) => (HashAlgo::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (HashAlgo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashAlgo::Sha512, h.finalize().to_vec()),
        };
        NixHash { algo, bytes }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> NixHash {
    NixHash::digest(HashAlgo::Sha256, data)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_same_hash_parses_alike() {
        let h = sha256(b"abc");
        assert_eq!(
            h.to_base16(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            h.to_typed_base32(),
            "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        assert_eq!(
            h.to_sri(),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        for form in [
            h.to_typed_base16(),
            h.to_typed_base32(),
            format!("sha256:{}", h.to_base64()),
            h.to_sri(),
        ] {
            assert_eq!(NixHash::parse(&form).unwrap(), h, "{form}");
        }
        for bare in [h.to_base16(), h.to_base32(), h.to_base64()] {
            assert_eq!(
                NixHash::parse_with(&bare, Some(HashAlgo::Sha256)).unwrap(),
                h
            );
        }
    }

    #[test]
    fn bad_hashes_say_why() {
        assert!(matches!(
            NixHash::parse("md4:00"),
            Err(HashError::UnknownAlgo(_))
        ));
        assert!(matches!(
            NixHash::parse("abcd"),
            Err(HashError::MissingAlgo(_))
        ));
        assert!(matches!(
            NixHash::parse("sha256:abcd"),
            Err(HashError::WrongLength { .. })
        ));
        assert!(matches!(
            NixHash::parse(&format!("sha256:{}", "g".repeat(64))),
            Err(HashError::BadEncoding(_))
        ));
    }
}
