//! The primitive encoding shared by the serve protocol, NAR and the export
//! format: 64-bit little-endian integers, and byte strings as a length, the
//! bytes and zero padding to a multiple of 8.
//!
//! Readers take a limit for strings so that hostile input cannot make us
//! allocate without bound, and reject non-zero padding as Nix does.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest string read as a token (names, paths, messages, JSON).
pub const MAX_TOKEN: u64 = 64 * 1024 * 1024;

/// Longest list read.
pub const MAX_LIST: u64 = 16 * 1024 * 1024;

pub(crate) fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

pub fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

// --- synchronous ---------------------------------------------------------

pub fn write_u64(w: &mut impl Write, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

pub fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    write_u64(w, bytes.len() as u64)?;
    w.write_all(bytes)?;
    w.write_all(&[0u8; 8][..padding(bytes.len() as u64)])
}

pub fn write_strings<'a>(
    w: &mut impl Write,
    items: impl ExactSizeIterator<Item = &'a str>,
) -> io::Result<()> {
    write_u64(w, items.len() as u64)?;
    for item in items {
        write_bytes(w, item.as_bytes())?;
    }
    Ok(())
}

pub fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

pub fn read_padding(r: &mut impl Read, len: u64) -> io::Result<()> {
    let mut pad = [0u8; 8];
    let n = padding(len);
    r.read_exact(&mut pad[..n])?;
    if pad[..n].iter().any(|b| *b != 0) {
        return Err(invalid("non-zero padding"));
    }
    Ok(())
}

pub fn read_bytes(r: &mut impl Read, max: u64) -> io::Result<Vec<u8>> {
    let len = read_u64(r)?;
    if len > max {
        return Err(invalid(format!(
            "string of {len} bytes is longer than the limit of {max}"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    read_padding(r, len)?;
    Ok(buf)
}

pub fn read_string(r: &mut impl Read, max: u64) -> io::Result<String> {
    String::from_utf8(read_bytes(r, max)?).map_err(|_| invalid("string is not valid UTF-8"))
}

pub fn read_strings(r: &mut impl Read) -> io::Result<Vec<String>> {
    let n = read_u64(r)?;
    if n > MAX_LIST {
        return Err(invalid(format!(
            "list of {n} items is longer than the limit"
        )));
    }
    (0..n).map(|_| read_string(r, MAX_TOKEN)).collect()
}

// --- asynchronous --------------------------------------------------------

pub async fn write_u64_async(w: &mut (impl AsyncWrite + Unpin), v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes()).await
}

pub async fn write_bytes_async(w: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    write_u64_async(w, bytes.len() as u64).await?;
    w.write_all(bytes).await?;
    w.write_all(&[0u8; 8][..padding(bytes.len() as u64)]).await
}

pub async fn write_strings_async<S: AsRef<str>>(
    w: &mut (impl AsyncWrite + Unpin),
    items: &[S],
) -> io::Result<()> {
    write_u64_async(w, items.len() as u64).await?;
    for item in items {
        write_bytes_async(w, item.as_ref().as_bytes()).await?;
    }
    Ok(())
}

pub async fn read_u64_async(r: &mut (impl AsyncRead + Unpin)) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf).await?;
    Ok(u64::from_le_bytes(buf))
}

pub async fn read_padding_async(r: &mut (impl AsyncRead + Unpin), len: u64) -> io::Result<()> {
    let mut pad = [0u8; 8];
    let n = padding(len);
    r.read_exact(&mut pad[..n]).await?;
    if pad[..n].iter().any(|b| *b != 0) {
        return Err(invalid("non-zero padding"));
    }
    Ok(())
}

pub async fn read_bytes_async(r: &mut (impl AsyncRead + Unpin), max: u64) -> io::Result<Vec<u8>> {
    let len = read_u64_async(r).await?;
    if len > max {
        return Err(invalid(format!(
            "string of {len} bytes is longer than the limit of {max}"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    read_padding_async(r, len).await?;
    Ok(buf)
}

pub async fn read_string_async(r: &mut (impl AsyncRead + Unpin), max: u64) -> io::Result<String> {
    String::from_utf8(read_bytes_async(r, max).await?)
        .map_err(|_| invalid("string is not valid UTF-8"))
}

pub async fn read_strings_async(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<String>> {
    let n = read_u64_async(r).await?;
    if n > MAX_LIST {
        return Err(invalid(format!(
            "list of {n} items is longer than the limit"
        )));
    }
    let mut out = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        out.push(read_string_async(r, MAX_TOKEN).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_padded_to_eight_bytes() {
        let mut buf = Vec::new();
        write_bytes(&mut buf, b"out").unwrap();
        assert_eq!(
            buf,
            [3, 0, 0, 0, 0, 0, 0, 0, b'o', b'u', b't', 0, 0, 0, 0, 0]
        );
        assert_eq!(read_bytes(&mut &buf[..], 100).unwrap(), b"out");
        let mut empty = Vec::new();
        write_bytes(&mut empty, b"").unwrap();
        assert_eq!(empty, [0; 8]);
    }

    #[test]
    fn bad_strings_are_rejected() {
        let mut bad = vec![3, 0, 0, 0, 0, 0, 0, 0, b'o', b'u', b't', 0, 0, 1, 0, 0];
        assert!(
            read_bytes(&mut &bad[..], 100)
                .unwrap_err()
                .to_string()
                .contains("padding")
        );
        bad[13] = 0;
        assert!(
            read_bytes(&mut &bad[..], 2)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert_eq!(
            read_bytes(&mut &bad[..10], 100).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
