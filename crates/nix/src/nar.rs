//! NAR, the Nix archive format: writing it from a directory tree, and
//! reading it as a stream.
//!
//! The reader validates the grammar strictly (canonical order, sorted unique
//! entry names, no `.`, `..`, `/` or NUL in names), hashes and counts every
//! byte as it goes, can copy the stream to a sink, and hands out the entries
//! one by one, so that a NAR of any size passes through in constant memory.
//! It never reads past the end of the NAR, so it can parse a NAR embedded in
//! a longer stream (the serve protocol, the export format).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::hash::{HashAlgo, Hasher, NixHash};
use crate::wire;

pub const MAGIC: &str = "nix-archive-1";

/// Longest symlink target accepted.
const MAX_TARGET: u64 = 64 * 1024;
/// Longest entry name accepted.
const MAX_NAME: u64 = 4096;
/// Deepest directory nesting accepted.
const MAX_DEPTH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum NarError {
    #[error("invalid NAR at byte {offset}: {message}")]
    Invalid { offset: u64, message: String },
    #[error("I/O error reading a NAR at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

// --- writing ---------------------------------------------------------------

/// A file system object, for building NARs in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Regular { executable: bool, contents: Vec<u8> },
    Symlink { target: Vec<u8> },
    Directory(BTreeMap<Vec<u8>, Node>),
}

/// Writes a node as a NAR.
pub fn write_node(node: &Node, w: &mut impl Write) -> io::Result<()> {
    wire::write_bytes(w, MAGIC.as_bytes())?;
    write_node_inner(node, w)
}

fn write_node_inner(node: &Node, w: &mut impl Write) -> io::Result<()> {
    wire::write_bytes(w, b"(")?;
    wire::write_bytes(w, b"type")?;
    match node {
        Node::Regular {
            executable,
            contents,
        } => {
            wire::write_bytes(w, b"regular")?;
            if *executable {
                wire::write_bytes(w, b"executable")?;
                wire::write_bytes(w, b"")?;
            }
            wire::write_bytes(w, b"contents")?;
            wire::write_bytes(w, contents)?;
        }
        Node::Symlink { target } => {
            wire::write_bytes(w, b"symlink")?;
            wire::write_bytes(w, b"target")?;
            wire::write_bytes(w, target)?;
        }
        Node::Directory(entries) => {
            wire::write_bytes(w, b"directory")?;
            for (name, child) in entries {
                wire::write_bytes(w, b"entry")?;
                wire::write_bytes(w, b"(")?;
                wire::write_bytes(w, b"name")?;
                wire::write_bytes(w, name)?;
                wire::write_bytes(w, b"node")?;
                write_node_inner(child, w)?;
                wire::write_bytes(w, b")")?;
            }
        }
    }
    wire::write_bytes(w, b")")
}

/// Writes the file, symlink or directory tree at `path` as a NAR, like
/// `nix-store --dump`.
pub fn dump_path(path: &Path, w: &mut impl Write) -> io::Result<()> {
    wire::write_bytes(w, MAGIC.as_bytes())?;
    dump_inner(path, w)
}

fn dump_inner(path: &Path, w: &mut impl Write) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    wire::write_bytes(w, b"(")?;
    wire::write_bytes(w, b"type")?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        wire::write_bytes(w, b"symlink")?;
        wire::write_bytes(w, b"target")?;
        wire::write_bytes(w, std::fs::read_link(path)?.as_os_str().as_bytes())?;
    } else if ft.is_file() {
        wire::write_bytes(w, b"regular")?;
        if meta.permissions().mode() & 0o100 != 0 {
            wire::write_bytes(w, b"executable")?;
            wire::write_bytes(w, b"")?;
        }
        wire::write_bytes(w, b"contents")?;
        let len = meta.len();
        wire::write_u64(w, len)?;
        let mut file = std::fs::File::open(path)?;
        let copied = io::copy(&mut io::Read::take(&mut file, len), w)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} changed size while being archived", path.display()),
            ));
        }
        w.write_all(&[0u8; 8][..wire::padding(len)])?;
    } else if ft.is_dir() {
        wire::write_bytes(w, b"directory")?;
        let mut names: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            wire::write_bytes(w, b"entry")?;
            wire::write_bytes(w, b"(")?;
            wire::write_bytes(w, b"name")?;
            wire::write_bytes(w, name.as_bytes())?;
            wire::write_bytes(w, b"node")?;
            dump_inner(&path.join(&name), w)?;
            wire::write_bytes(w, b")")?;
        }
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file, symlink or directory",
                path.display()
            ),
        ));
    }
    wire::write_bytes(w, b")")
}

// --- reading ---------------------------------------------------------------

/// What an entry of a NAR is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Regular {
        executable: bool,
        size: u64,
        /// Offset of the contents in the NAR (for `.ls` listings).
        nar_offset: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// One entry; `path` is relative to the root (empty for the root itself),
/// components separated by `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
}

/// The hash and size of a whole NAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarSummary {
    pub nar_hash: NixHash,
    pub nar_size: u64,
}

enum State {
    Start,
    InDirectory,
    Done,
}

/// A streaming NAR parser; see the module documentation.
pub struct NarReader<'s, R> {
    input: R,
    hasher: Hasher,
    offset: u64,
    sink: Option<&'s mut (dyn AsyncWrite + Unpin + Send)>,
    state: State,
    /// Names of the directories we are in, and the last entry name seen in
    /// each (for the ordering check).
    path: Vec<Vec<u8>>,
    last_name: Vec<Option<Vec<u8>>>,
    /// Bytes of the current file's contents not yet consumed, and its size.
    pending: Option<(u64, u64)>,
}

impl<R> std::fmt::Debug for NarReader<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NarReader")
            .field("offset", &self.offset)
            .finish()
    }
}

impl<'s, R: AsyncRead + Unpin> NarReader<'s, R> {
    pub fn new(input: R) -> Self {
        NarReader {
            input,
            hasher: Hasher::new(HashAlgo::Sha256),
            offset: 0,
            sink: None,
            state: State::Start,
            path: Vec::new(),
            last_name: Vec::new(),
            pending: None,
        }
    }

    /// Copies every byte of the NAR to `sink` as it is read.
    pub fn with_sink(mut self, sink: &'s mut (dyn AsyncWrite + Unpin + Send)) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn invalid(&self, message: impl Into<String>) -> NarError {
        NarError::Invalid {
            offset: self.offset,
            message: message.into(),
        }
    }

    async fn read_raw(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        let offset = self.offset;
        self.input
            .read_exact(buf)
            .await
            .map_err(|source| NarError::Io { offset, source })?;
        self.consumed(buf).await
    }

    async fn consumed(&mut self, buf: &[u8]) -> Result<(), NarError> {
        self.hasher.update(buf);
        self.offset += buf.len() as u64;
        if let Some(sink) = self.sink.as_mut() {
            let offset = self.offset;
            sink.write_all(buf)
                .await
                .map_err(|source| NarError::Io { offset, source })?;
        }
        Ok(())
    }

    async fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut buf = [0u8; 8];
        self.read_raw(&mut buf).await?;
        Ok(u64::from_le_bytes(buf))
    }

    async fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let mut pad = [0u8; 8];
        let n = wire::padding(len);
        self.read_raw(&mut pad[..n]).await?;
        if pad[..n].iter().any(|b| *b != 0) {
            return Err(self.invalid("non-zero padding"));
        }
        Ok(())
    }

    async fn read_bytes(&mut self, max: u64) -> Result<Vec<u8>, NarError> {
        let len = self.read_u64().await?;
        if len > max {
            return Err(self.invalid(format!(
                "string of {len} bytes where at most {max} are allowed"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_raw(&mut buf).await?;
        self.read_padding(len).await?;
        Ok(buf)
    }

    async fn expect(&mut self, token: &str) -> Result<(), NarError> {
        let got = self.read_bytes(64).await?;
        if got != token.as_bytes() {
            return Err(self.invalid(format!(
                "expected `{token}`, found `{}`",
                String::from_utf8_lossy(&got)
            )));
        }
        Ok(())
    }

    /// The next entry, or `None` after the end of the NAR. Contents of the
    /// previous file that were not read are read and checked here.
    pub async fn next(&mut self) -> Result<Option<Entry>, NarError> {
        if let Some((remaining, size)) = self.pending.take() {
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = remaining;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                self.read_raw(&mut buf[..n]).await?;
                left -= n as u64;
            }
            self.read_padding(size).await?;
            self.expect(")").await?;
            self.node_done().await?;
        }
        loop {
            match self.state {
                State::Start => {
                    self.expect(MAGIC).await?;
                    return self.read_node().await.map(Some);
                }
                State::InDirectory => {
                    let token = self.read_bytes(64).await?;
                    match token.as_slice() {
                        b"entry" => {
                            self.expect("(").await?;
                            self.expect("name").await?;
                            let name = self.read_bytes(MAX_NAME).await?;
                            self.check_name(&name)?;
                            self.expect("node").await?;
                            if self.path.len() >= MAX_DEPTH {
                                return Err(self.invalid("directories nest too deeply"));
                            }
                            self.path.push(name);
                            return self.read_node().await.map(Some);
                        }
                        b")" => {
                            self.last_name.pop();
                            self.node_done().await?;
                        }
                        other => {
                            return Err(self.invalid(format!(
                                "expected `entry` or `)`, found `{}`",
                                String::from_utf8_lossy(other)
                            )));
                        }
                    }
                }
                State::Done => return Ok(None),
            }
        }
    }

    fn check_name(&mut self, name: &[u8]) -> Result<(), NarError> {
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(self.invalid(format!(
                "invalid entry name `{}`",
                String::from_utf8_lossy(name)
            )));
        }
        let last = self.last_name.last_mut().ok_or_else(|| NarError::Invalid {
            offset: self.offset,
            message: "entry outside a directory".into(),
        })?;
        if last.as_deref().is_some_and(|prev| prev >= name) {
            let message = format!(
                "entry `{}` is not after `{}` (entries must be sorted and unique)",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(last.as_deref().unwrap_or_default())
            );
            return Err(NarError::Invalid {
                offset: self.offset,
                message,
            });
        }
        *last = Some(name.to_vec());
        Ok(())
    }

    async fn read_node(&mut self) -> Result<Entry, NarError> {
        self.expect("(").await?;
        self.expect("type").await?;
        let kind = self.read_bytes(64).await?;
        let path = self.path.join(&b'/');
        match kind.as_slice() {
            b"regular" => {
                let mut token = self.read_bytes(64).await?;
                let executable = token == b"executable";
                if executable {
                    self.expect("").await?;
                    token = self.read_bytes(64).await?;
                }
                if token != b"contents" {
                    return Err(self.invalid(format!(
                        "expected `contents`, found `{}`",
                        String::from_utf8_lossy(&token)
                    )));
                }
                let size = self.read_u64().await?;
                self.pending = Some((size, size));
                Ok(Entry {
                    path,
                    kind: EntryKind::Regular {
                        executable,
                        size,
                        nar_offset: self.offset,
                    },
                })
            }
            b"symlink" => {
                self.expect("target").await?;
                let target = self.read_bytes(MAX_TARGET).await?;
                if target.is_empty() || target.contains(&0) {
                    return Err(self.invalid("invalid symlink target"));
                }
                self.expect(")").await?;
                self.node_done().await?;
                Ok(Entry {
                    path,
                    kind: EntryKind::Symlink { target },
                })
            }
            b"directory" => {
                self.last_name.push(None);
                self.state = State::InDirectory;
                Ok(Entry {
                    path,
                    kind: EntryKind::Directory,
                })
            }
            other => Err(self.invalid(format!(
                "unknown file type `{}`",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    /// A node is complete: close the entry it is in, or end the NAR.
    async fn node_done(&mut self) -> Result<(), NarError> {
        if self.path.pop().is_some() {
            self.expect(")").await?;
            self.state = State::InDirectory;
        } else {
            self.state = State::Done;
        }
        Ok(())
    }

    /// Reads the contents of the file just returned by [`NarReader::next`];
    /// 0 at the end of the file.
    pub async fn read_contents(&mut self, buf: &mut [u8]) -> Result<usize, NarError> {
        let Some((remaining, size)) = self.pending else {
            return Ok(0);
        };
        if remaining == 0 {
            return Ok(0);
        }
        let n = remaining.min(buf.len() as u64) as usize;
        let offset = self.offset;
        let read = self
            .input
            .read(&mut buf[..n])
            .await
            .map_err(|source| NarError::Io { offset, source })?;
        if read == 0 {
            return Err(NarError::Io {
                offset,
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "NAR ends inside a file"),
            });
        }
        self.consumed(&buf[..read]).await?;
        self.pending = Some((remaining - read as u64, size));
        Ok(read)
    }

    /// Reads to the end of the NAR and returns its hash and size.
    pub async fn finish(mut self) -> Result<NarSummary, NarError> {
        while self.next().await?.is_some() {}
        if let Some(sink) = self.sink.as_mut() {
            let offset = self.offset;
            sink.flush()
                .await
                .map_err(|source| NarError::Io { offset, source })?;
        }
        Ok(NarSummary {
            nar_hash: self.hasher.finish(),
            nar_size: self.offset,
        })
    }
}

// --- scanning --------------------------------------------------------------

/// What to collect while reading a NAR.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Files to extract (paths relative to the root), up to `max_extract`
    /// bytes each; larger ones are left out.
    pub extract: Vec<Vec<u8>>,
    pub max_extract: u64,
    /// Build the `.ls` listing.
    pub listing: bool,
    /// Record every entry, with the size and SHA-256 of regular files (for
    /// build products).
    pub members: bool,
}

/// An entry of a NAR as [`ScanOptions::members`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    Directory,
    Regular {
        executable: bool,
        size: u64,
        sha256: crate::hash::NixHash,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// What was collected.
#[derive(Clone, Debug)]
pub struct Scan {
    pub summary: NarSummary,
    pub extracted: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The `.ls` listing: `{"version":1,"root":…}`.
    pub listing: Option<serde_json::Value>,
    /// Every entry by path (empty for the root), if asked for.
    pub members: BTreeMap<Vec<u8>, Member>,
}

/// Reads a whole NAR, collecting what `options` ask for; every byte goes to
/// `sink` if one is given.
pub async fn scan<R: AsyncRead + Unpin>(
    input: R,
    sink: Option<&mut (dyn AsyncWrite + Unpin + Send)>,
    options: &ScanOptions,
) -> Result<Scan, NarError> {
    let mut reader = NarReader::new(input);
    if let Some(sink) = sink {
        reader = reader.with_sink(sink);
    }
    let mut extracted = BTreeMap::new();
    let mut members = BTreeMap::new();
    let mut listing = options.listing.then(ListingBuilder::default);
    while let Some(entry) = reader.next().await? {
        if let Some(l) = listing.as_mut() {
            l.add(&entry);
        }
        match entry.kind {
            EntryKind::Regular {
                size, executable, ..
            } => {
                let extract = size <= options.max_extract && options.extract.contains(&entry.path);
                if !extract && !options.members {
                    continue;
                }
                let mut hasher = crate::hash::Hasher::new(crate::hash::HashAlgo::Sha256);
                let mut contents = Vec::new();
                let mut buf = vec![0u8; (size as usize).clamp(1, 64 * 1024)];
                let mut left = size;
                while left > 0 {
                    let n = reader.read_contents(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    if extract {
                        contents.extend_from_slice(&buf[..n]);
                    }
                    left -= n as u64;
                }
                if options.members {
                    members.insert(
                        entry.path.clone(),
                        Member::Regular {
                            executable,
                            size,
                            sha256: hasher.finish(),
                        },
                    );
                }
                if extract {
                    extracted.insert(entry.path, contents);
                }
            }
            EntryKind::Directory if options.members => {
                members.insert(entry.path, Member::Directory);
            }
            EntryKind::Symlink { target } if options.members => {
                members.insert(entry.path, Member::Symlink { target });
            }
            _ => {}
        }
    }
    let summary = reader.finish().await?;
    Ok(Scan {
        summary,
        extracted,
        listing: listing.map(ListingBuilder::finish),
        members,
    })
}

#[derive(Default)]
struct ListingBuilder {
    root: Option<serde_json::Value>,
}

impl ListingBuilder {
    fn add(&mut self, entry: &Entry) {
        let node = match &entry.kind {
            EntryKind::Directory => serde_json::json!({"type": "directory", "entries": {}}),
            EntryKind::Regular {
                executable,
                size,
                nar_offset,
            } => {
                let mut v =
                    serde_json::json!({"type": "regular", "size": size, "narOffset": nar_offset});
                if *executable {
                    v["executable"] = serde_json::Value::Bool(true);
                }
                v
            }
            EntryKind::Symlink { target } => {
                serde_json::json!({"type": "symlink", "target": String::from_utf8_lossy(target)})
            }
        };
        if entry.path.is_empty() {
            self.root = Some(node);
            return;
        }
        let Some(mut dir) = self.root.as_mut() else {
            return;
        };
        let components: Vec<&[u8]> = entry.path.split(|b| *b == b'/').collect();
        for component in &components[..components.len() - 1] {
            let Some(next) = dir
                .get_mut("entries")
                .and_then(|e| e.get_mut(&*String::from_utf8_lossy(component)))
            else {
                return;
            };
            dir = next;
        }
        if let Some(entries) = dir.get_mut("entries").and_then(|e| e.as_object_mut()) {
            let name = String::from_utf8_lossy(components[components.len() - 1]).into_owned();
            entries.insert(name, node);
        }
    }

    fn finish(self) -> serde_json::Value {
        serde_json::json!({"version": 1, "root": self.root.unwrap_or(serde_json::Value::Null)})
    }
}

// --- unpacking -------------------------------------------------------------

/// Unpacks a NAR into `dest`, which must not exist, like `nix-store
/// --restore`. Entry names are validated by the reader, so nothing is
/// written outside `dest`, and nothing is written through a symlink.
pub async fn unpack<R: AsyncRead + Unpin>(input: R, dest: &Path) -> Result<NarSummary, NarError> {
    let mut reader = NarReader::new(input);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NarError::Write { path, source }
    };
    while let Some(entry) = reader.next().await? {
        let target = if entry.path.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(std::ffi::OsStr::from_bytes(&entry.path))
        };
        match entry.kind {
            EntryKind::Directory => tokio::fs::create_dir(&target)
                .await
                .map_err(write_err(&target))?,
            EntryKind::Symlink { target: link } => {
                tokio::fs::symlink(std::ffi::OsStr::from_bytes(&link), &target)
                    .await
                    .map_err(write_err(&target))?;
            }
            EntryKind::Regular { executable, .. } => {
                let mut file = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if executable { 0o777 } else { 0o666 })
                    .open(&target)
                    .await
                    .map_err(write_err(&target))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = reader.read_contents(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])
                        .await
                        .map_err(write_err(&target))?;
                }
                file.flush().await.map_err(write_err(&target))?;
            }
        }
    }
    reader.finish().await
}
