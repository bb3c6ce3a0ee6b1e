//! The export format of `nix-store --export` and `--import` (also serve
//! commands 4 and 5): for each path, a `1`, its NAR, then its metadata; a
//! final `0`.

use std::io::{self, Write};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::nar::{NarError, NarReader, NarSummary};
use crate::wire;

/// `NIXE`.
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// The metadata that follows a path's NAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedPath {
    /// Full store path.
    pub path: String,
    /// Full store paths, sorted.
    pub references: Vec<String>,
    /// Full store path of the deriver, if any.
    pub deriver: Option<String>,
}

/// Writes one path: the marker, the NAR written by `write_nar`, the metadata.
pub fn write_item(
    w: &mut impl Write,
    info: &ExportedPath,
    write_nar: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    wire::write_u64(w, 1)?;
    write_nar(w)?;
    wire::write_u64(w, EXPORT_MAGIC)?;
    wire::write_bytes(w, info.path.as_bytes())?;
    let mut refs: Vec<&str> = info.references.iter().map(String::as_str).collect();
    refs.sort_unstable();
    wire::write_strings(w, refs.into_iter())?;
    wire::write_bytes(w, info.deriver.as_deref().unwrap_or("").as_bytes())?;
    wire::write_u64(w, 0)
}

/// Ends an export stream.
pub fn write_end(w: &mut impl Write) -> io::Result<()> {
    wire::write_u64(w, 0)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Nar(#[from] NarError),
    #[error("invalid export stream: {0}")]
    Invalid(String),
    #[error("I/O error reading an export stream: {0}")]
    Io(#[from] io::Error),
}

/// Reads the next path of an export stream, passing its NAR to `sink`;
/// `None` at the end of the stream.
pub async fn read_item<R: AsyncRead + Unpin>(
    r: &mut R,
    sink: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
) -> Result<Option<(ExportedPath, NarSummary)>, ExportError> {
    match wire::read_u64_async(r).await? {
        0 => return Ok(None),
        1 => {}
        other => {
            return Err(ExportError::Invalid(format!(
                "expected 0 or 1 before a path, found {other} (this is not `nix-store --export` output)"
            )));
        }
    }
    let mut reader = NarReader::new(&mut *r);
    if let Some(sink) = sink {
        reader = reader.with_sink(sink);
    }
    let summary = reader.finish().await?;
    let magic = wire::read_u64_async(r).await?;
    if magic != EXPORT_MAGIC {
        return Err(ExportError::Invalid(format!(
            "wrong magic {magic:#x} after a NAR"
        )));
    }
    let path = wire::read_string_async(r, 4096).await?;
    let references = wire::read_strings_async(r).await?;
    let deriver = wire::read_string_async(r, 4096).await?;
    if wire::read_u64_async(r).await? != 0 {
        // A legacy signature, read and ignored as Nix does.
        wire::read_bytes_async(r, wire::MAX_TOKEN).await?;
    }
    Ok(Some((
        ExportedPath {
            path,
            references,
            deriver: (!deriver.is_empty()).then_some(deriver),
        },
        summary,
    )))
}
