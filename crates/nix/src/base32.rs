//! Nix's base32: its own alphabet (no `e o u t`), and the hash read as a
//! little-endian number printed most significant digit first.

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The length of the encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 { 0 } else { (n * 8 - 1) / 5 + 1 }
}

/// Encodes bytes.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = u16::from(bytes[i]) >> j;
        let high = if i + 1 < bytes.len() {
            u16::from(bytes[i + 1]) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[usize::from((low | high) & 0x1f)] as char);
    }
    out
}

/// Why a string is not Nix base32.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Base32Error {
    #[error("invalid character `{0}` in a base32 string")]
    InvalidCharacter(char),
    #[error("base32 string `{0}` has bits beyond the decoded length")]
    Overflow(String),
}

/// Decodes a string of [`encoded_len`]`(n)` characters into `n` bytes, where
/// `n` is the largest byte count with that encoded length.
pub fn decode(s: &str) -> Result<Vec<u8>, Base32Error> {
    let n = decoded_len(s.len());
    let mut out = vec![0u8; n];
    for (pos, c) in s.chars().rev().enumerate() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a as char == c)
            .ok_or(Base32Error::InvalidCharacter(c))? as u16;
        let b = pos * 5;
        let i = b / 8;
        let j = b % 8;
        if i >= n {
            if digit != 0 {
                return Err(Base32Error::Overflow(s.to_string()));
            }
            continue;
        }
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        if i + 1 < n {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Base32Error::Overflow(s.to_string()));
        }
    }
    Ok(out)
}

/// The number of bytes a base32 string of `len` characters decodes to.
pub const fn decoded_len(len: usize) -> usize {
    len * 5 / 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // sha256("abc"), as `nix-hash --type sha256 --to-base32` prints it.
        let digest = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(
            encode(&digest),
            "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
        );
        assert_eq!(
            decode("1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s").unwrap(),
            digest
        );
        assert_eq!(encode(&[]), "");
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
    }

    #[test]
    fn bad_input_is_rejected() {
        assert_eq!(decode("e0"), Err(Base32Error::InvalidCharacter('e')));
        // 52 characters decode to 32 bytes; a top digit above 1 overflows.
        let too_big = format!("z{}", "0".repeat(51));
        assert!(matches!(decode(&too_big), Err(Base32Error::Overflow(_))));
    }
}
