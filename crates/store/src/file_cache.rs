//! A `file://DIR` binary cache, in Nix's layout: `nix-cache-info`,
//! `<hash>.narinfo` (signed with every `secret-key`), `nar/<file hash>.nar
//! [.xz|.bz2|.zst]`, `<hash>.ls` with `write-nar-listing=1`, and
//! `log/<drv>`. A NAR and its listing are written before the narinfo that
//! points to them, each to a temporary file renamed into place, so readers
//! never see a half-written path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{BzDecoder, XzDecoder, ZstdDecoder};
use async_compression::tokio::write::{BzEncoder, XzEncoder, ZstdEncoder};
use hydra_nix::hash::{HashAlgo, Hasher};
use hydra_nix::nar::{self, Scan, ScanOptions};
use hydra_nix::narinfo::{NarInfo, SecretKey};
use hydra_nix::serve::PathInfo;
use hydra_nix::store_path::StoreDir;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::StoreError;

/// How NARs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Bzip2,
    Zstd,
}

impl Compression {
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "none" | "" => Some(Compression::None),
            "xz" => Some(Compression::Xz),
            "bzip2" => Some(Compression::Bzip2),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The narinfo's `Compression:` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// The NAR file's extension (Nix's map).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".nar",
            Compression::Xz => ".nar.xz",
            Compression::Bzip2 => ".nar.bz2",
            Compression::Zstd => ".nar.zst",
        }
    }
}

#[derive(Debug)]
pub struct FileCache {
    dir: PathBuf,
    compression: Compression,
    keys: Vec<SecretKey>,
    listing: bool,
    store_dir: StoreDir,
}

fn uri_error(uri: &str, message: impl Into<String>) -> StoreError {
    StoreError::Uri {
        uri: uri.into(),
        message: message.into(),
    }
}

impl FileCache {
    /// Opens (creating if needed) the cache `file://DIR?param=value&…`:
    /// `compression` (`xz` default, `bzip2`, `zstd`, `none`), `secret-key`
    /// (a key file; `secret-keys` takes several, comma-separated),
    /// `write-nar-listing` (`1` for `.ls` files).
    pub fn open(uri: &str) -> Result<FileCache, StoreError> {
        let rest = uri
            .strip_prefix("file://")
            .ok_or_else(|| uri_error(uri, "not a file:// URI"))?;
        let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !dir.starts_with('/') {
            return Err(uri_error(uri, "the directory must be an absolute path"));
        }
        let mut cache = FileCache {
            dir: PathBuf::from(dir),
            compression: Compression::Xz,
            keys: Vec::new(),
            listing: false,
            store_dir: StoreDir::new("/nix/store"),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "compression" => {
                    cache.compression = Compression::parse(value).ok_or_else(|| {
                        uri_error(
                            uri,
                            format!("compression `{value}` is not one of xz, bzip2, zstd, none"),
                        )
                    })?;
                }
                "secret-key" | "secret-keys" => {
                    for file in value.split(',').filter(|f| !f.is_empty()) {
                        let text = std::fs::read_to_string(file).map_err(|e| {
                            uri_error(uri, format!("cannot read the secret key {file}: {e}"))
                        })?;
                        let key = SecretKey::parse(&text)
                            .map_err(|e| uri_error(uri, format!("the secret key {file}: {e}")))?;
                        cache.keys.push(key);
                    }
                }
                "write-nar-listing" => cache.listing = matches!(value, "1" | "true"),
                other => {
                    tracing::warn!(
                        uri,
                        setting = other,
                        "ignoring an unknown binary cache setting"
                    );
                }
            }
        }
        for sub in ["", "nar", "log", "realisations"] {
            let d = cache.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(StoreError::io(&d))?;
        }
        let info = cache.dir.join("nix-cache-info");
        if !info.exists() {
            write_atomically(&cache.dir, &info, b"StoreDir: /nix/store\n")?;
        }
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn narinfo_path(&self, store_path: &str) -> Result<PathBuf, StoreError> {
        let parsed = self
            .store_dir
            .parse(store_path)
            .map_err(|e| StoreError::Corrupt {
                path: store_path.into(),
                message: e.to_string(),
            })?;
        Ok(self.dir.join(format!("{}.narinfo", parsed.hash_part())))
    }

    pub(crate) async fn query_valid(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut valid = BTreeSet::new();
        for path in paths {
            if tokio::fs::try_exists(self.narinfo_path(path)?)
                .await
                .unwrap_or(false)
            {
                valid.insert(path.clone());
            }
        }
        Ok(valid)
    }

    async fn narinfo(&self, path: &str) -> Result<Option<NarInfo>, StoreError> {
        let file = self.narinfo_path(path)?;
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Io {
                    path: file,
                    source: e,
                });
            }
        };
        NarInfo::parse(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: file,
                message: e.to_string(),
            })
    }

    pub(crate) async fn path_infos(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, PathInfo>, StoreError> {
        let mut infos = BTreeMap::new();
        let prefix = format!("{}/", self.store_dir.as_str());
        for path in paths {
            if let Some(n) = self.narinfo(path).await? {
                infos.insert(
                    path.clone(),
                    PathInfo {
                        path: n.store_path.clone(),
                        deriver: n.deriver.map(|d| format!("{prefix}{d}")),
                        references: n
                            .references
                            .iter()
                            .map(|r| format!("{prefix}{r}"))
                            .collect(),
                        download_size: n.file_size.unwrap_or(0),
                        nar_size: n.nar_size,
                        nar_hash: Some(n.nar_hash),
                        ca: n.ca,
                        sigs: n.sigs,
                    },
                );
            }
        }
        Ok(infos)
    }

    pub(crate) async fn add_nar(
        &self,
        info: &PathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), StoreError> {
        let narinfo_path = self.narinfo_path(&info.path)?;
        if tokio::fs::try_exists(&narinfo_path).await.unwrap_or(false) {
            tokio::io::copy(nar, &mut tokio::io::sink())
                .await
                .map_err(StoreError::io(&info.path))?;
            return Ok(());
        }
        let temp = tempfile::Builder::new()
            .prefix(".nar-")
            .tempfile_in(self.dir.join("nar"))
            .map_err(StoreError::io(self.dir.join("nar")))?;
        let file = tokio::fs::File::create(temp.path())
            .await
            .map_err(StoreError::io(temp.path()))?;
        let counted = Arc::new(Mutex::new((Hasher::new(HashAlgo::Sha256), 0u64)));
        let hashing = HashingWriter {
            inner: file,
            state: counted.clone(),
        };
        let mut encoder: Box<dyn AsyncWrite + Unpin + Send> = match self.compression {
            Compression::None => Box::new(hashing),
            Compression::Xz => Box::new(XzEncoder::new(hashing)),
            Compression::Bzip2 => Box::new(BzEncoder::new(hashing)),
            Compression::Zstd => Box::new(ZstdEncoder::new(hashing)),
        };
        let options = ScanOptions {
            listing: self.listing,
            ..Default::default()
        };
        let scan = nar::scan(nar, Some(&mut *encoder), &options)
            .await
            .map_err(|e| StoreError::Corrupt {
                path: info.path.clone().into(),
                message: e.to_string(),
            })?;
        encoder
            .shutdown()
            .await
            .map_err(StoreError::io(temp.path()))?;
        drop(encoder);
        if let Some(expected) = &info.nar_hash
            && *expected != scan.summary.nar_hash
        {
            return Err(StoreError::Mismatch {
                path: info.path.clone(),
                what: "NAR hash",
                expected: expected.to_typed_base32(),
                got: scan.summary.nar_hash.to_typed_base32(),
            });
        }
        if info.nar_size != 0 && info.nar_size != scan.summary.nar_size {
            return Err(StoreError::Mismatch {
                path: info.path.clone(),
                what: "NAR size",
                expected: info.nar_size.to_string(),
                got: scan.summary.nar_size.to_string(),
            });
        }
        let (file_hash, file_size) = {
            let mut state = counted.lock().map_err(|_| StoreError::Corrupt {
                path: info.path.clone().into(),
                message: "hashing state poisoned".into(),
            })?;
            let (hasher, size) = std::mem::replace(&mut *state, (Hasher::new(HashAlgo::Sha256), 0));
            (hasher.finish(), size)
        };
        let url = format!(
            "nar/{}{}",
            file_hash.to_base32(),
            self.compression.extension()
        );
        let nar_file = self.dir.join(&url);
        temp.persist(&nar_file).map_err(|e| StoreError::Io {
            path: nar_file.clone(),
            source: e.error,
        })?;
        let hash_part = narinfo_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(listing) = &scan.listing {
            let ls = self.dir.join(format!("{hash_part}.ls"));
            write_atomically(&self.dir, &ls, listing.to_string().as_bytes())?;
        }
        let base = |p: &str| hydra_nix::store_path::base_name(p).to_string();
        let mut references: Vec<String> = info.references.iter().map(|r| base(r)).collect();
        references.sort();
        let mut narinfo = NarInfo {
            store_path: info.path.clone(),
            url,
            compression: self.compression.name().into(),
            file_hash: Some(file_hash),
            file_size: Some(file_size),
            nar_hash: scan.summary.nar_hash.clone(),
            nar_size: scan.summary.nar_size,
            references,
            deriver: info.deriver.as_deref().map(base),
            system: None,
            sigs: info.sigs.clone(),
            ca: info.ca.clone(),
        };
        for key in &self.keys {
            narinfo
                .sign(&self.store_dir, key)
                .map_err(|e| StoreError::Corrupt {
                    path: info.path.clone().into(),
                    message: e.to_string(),
                })?;
        }
        write_atomically(&self.dir, &narinfo_path, narinfo.to_text().as_bytes())
    }

    /// The path's metadata and its NAR, decompressed.
    pub(crate) async fn open_nar(
        &self,
        path: &str,
    ) -> Result<(PathInfo, Box<dyn AsyncRead + Unpin + Send>), StoreError> {
        let info = self
            .path_infos(&BTreeSet::from([path.to_string()]))
            .await?
            .remove(path)
            .ok_or_else(|| StoreError::Missing(path.into()))?;
        let narinfo = self
            .narinfo(path)
            .await?
            .ok_or_else(|| StoreError::Missing(path.into()))?;
        let file = self.dir.join(&narinfo.url);
        let reader = BufReader::new(
            tokio::fs::File::open(&file)
                .await
                .map_err(StoreError::io(&file))?,
        );
        let decoded: Box<dyn AsyncRead + Unpin + Send> = match narinfo.compression.as_str() {
            "none" | "" => Box::new(reader),
            "xz" => Box::new(XzDecoder::new(reader)),
            "bzip2" => Box::new(BzDecoder::new(reader)),
            "zstd" => Box::new(ZstdDecoder::new(reader)),
            other => {
                return Err(StoreError::Corrupt {
                    path: file,
                    message: format!("unsupported compression `{other}`"),
                });
            }
        };
        Ok((info, decoded))
    }

    pub(crate) async fn scan(&self, path: &str, options: &ScanOptions) -> Result<Scan, StoreError> {
        let narinfo = self
            .narinfo(path)
            .await?
            .ok_or_else(|| StoreError::Missing(path.into()))?;
        let file = self.dir.join(&narinfo.url);
        let reader = BufReader::new(
            tokio::fs::File::open(&file)
                .await
                .map_err(StoreError::io(&file))?,
        );
        let mut decoded: Box<dyn AsyncRead + Unpin + Send> = match narinfo.compression.as_str() {
            "none" | "" => Box::new(reader),
            "xz" => Box::new(XzDecoder::new(reader)),
            "bzip2" => Box::new(BzDecoder::new(reader)),
            "zstd" => Box::new(ZstdDecoder::new(reader)),
            other => {
                return Err(StoreError::Corrupt {
                    path: file,
                    message: format!("unsupported compression `{other}`"),
                });
            }
        };
        let scan =
            nar::scan(&mut decoded, None, options)
                .await
                .map_err(|e| StoreError::Corrupt {
                    path: file.clone(),
                    message: e.to_string(),
                })?;
        if scan.summary.nar_hash != narinfo.nar_hash {
            return Err(StoreError::Mismatch {
                path: path.into(),
                what: "NAR hash",
                expected: narinfo.nar_hash.to_typed_base32(),
                got: scan.summary.nar_hash.to_typed_base32(),
            });
        }
        Ok(scan)
    }

    pub(crate) async fn upload_log(&self, drv_path: &str, log: &Path) -> Result<(), StoreError> {
        let base = hydra_nix::store_path::base_name(drv_path);
        let text = tokio::fs::read(log).await.map_err(StoreError::io(log))?;
        write_atomically(&self.dir, &self.dir.join("log").join(base), &text)
    }
}

/// Writes `path` through a temporary file in `dir` renamed into place.
fn write_atomically(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(StoreError::io(dir))?;
    temp.write_all(contents).map_err(StoreError::io(path))?;
    temp.persist(path).map_err(|e| StoreError::Io {
        path: path.into(),
        source: e.error,
    })?;
    Ok(())
}

/// Passes bytes to a file, hashing and counting them.
struct HashingWriter {
    inner: tokio::fs::File,
    state: Arc<Mutex<(Hasher, u64)>>,
}

impl AsyncWrite for HashingWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && let Ok(mut state) = self.state.lock()
        {
            state.0.update(&buf[..*n]);
            state.1 += *n as u64;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
