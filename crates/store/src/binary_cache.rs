//! A binary cache in Nix's layout, in a directory (`file://DIR`) or an S3
//! bucket (`s3://BUCKET`): `nix-cache-info`, `<hash>.narinfo` (signed with
//! every `secret-key`), `nar/<file hash>.nar[.xz|.bz2|.zst|.br]`,
//! `<hash>.ls` with `write-nar-listing=1`, and `log/<drv>`.
//!
//! A NAR is compressed into a local temporary file while it is hashed and
//! checked; only then is it uploaded, then its listing, and the narinfo
//! that points to them last: a reader never finds a narinfo whose NAR is
//! missing, whenever an upload stops. Directories are written through
//! files renamed into place, buckets through single or multipart PUTs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{BrotliDecoder, BzDecoder, XzDecoder, ZstdDecoder};
use async_compression::tokio::write::{BrotliEncoder, BzEncoder, XzEncoder, ZstdEncoder};
use futures_util::{StreamExt, TryStreamExt};
use hydra_nix::hash::{HashAlgo, Hasher};
use hydra_nix::nar::{self, Scan, ScanOptions};
use hydra_nix::narinfo::{NarInfo, SecretKey};
use hydra_nix::serve::PathInfo;
use hydra_nix::store_path::StoreDir;
use object_store::path::Path as Key;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::StoreError;
use crate::s3;

/// How NARs, and in buckets listings, logs and narinfos, are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Bzip2,
    Zstd,
    Brotli,
}

impl Compression {
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "none" | "" => Some(Compression::None),
            "xz" => Some(Compression::Xz),
            "bzip2" => Some(Compression::Bzip2),
            "zstd" => Some(Compression::Zstd),
            "br" => Some(Compression::Brotli),
            _ => None,
        }
    }

    /// The narinfo's `Compression:` value (and an object's
    /// `Content-Encoding`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
            Compression::Brotli => "br",
        }
    }

    /// The NAR file's extension (Nix's map).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".nar",
            Compression::Xz => ".nar.xz",
            Compression::Bzip2 => ".nar.bz2",
            Compression::Zstd => ".nar.zst",
            Compression::Brotli => ".nar.br",
        }
    }

    /// `reader`'s bytes, decompressed.
    fn decoder(
        self,
        reader: impl tokio::io::AsyncBufRead + Unpin + Send + 'static,
    ) -> Box<dyn AsyncRead + Unpin + Send> {
        match self {
            Compression::None => Box::new(reader),
            Compression::Xz => Box::new(XzDecoder::new(reader)),
            Compression::Bzip2 => Box::new(BzDecoder::new(reader)),
            Compression::Zstd => Box::new(ZstdDecoder::new(reader)),
            Compression::Brotli => Box::new(BrotliDecoder::new(reader)),
        }
    }

    /// A writer compressing into `inner`.
    fn encoder<W: AsyncWrite + Unpin + Send + 'static>(
        self,
        inner: W,
    ) -> Box<dyn AsyncWrite + Unpin + Send> {
        match self {
            Compression::None => Box::new(inner),
            Compression::Xz => Box::new(XzEncoder::new(inner)),
            Compression::Bzip2 => Box::new(BzEncoder::new(inner)),
            Compression::Zstd => Box::new(ZstdEncoder::new(inner)),
            Compression::Brotli => Box::new(BrotliEncoder::new(inner)),
        }
    }

    /// `bytes`, compressed.
    async fn encode(self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        async fn through<W: AsyncWrite + Unpin>(mut w: W, bytes: &[u8]) -> std::io::Result<W> {
            w.write_all(bytes).await?;
            w.shutdown().await?;
            Ok(w)
        }
        Ok(match self {
            Compression::None => bytes.to_vec(),
            Compression::Xz => through(XzEncoder::new(Vec::new()), bytes)
                .await?
                .into_inner(),
            Compression::Bzip2 => through(BzEncoder::new(Vec::new()), bytes)
                .await?
                .into_inner(),
            Compression::Zstd => through(ZstdEncoder::new(Vec::new()), bytes)
                .await?
                .into_inner(),
            Compression::Brotli => through(BrotliEncoder::new(Vec::new()), bytes)
                .await?
                .into_inner(),
        })
    }
}

/// Where the objects are.
#[derive(Debug)]
enum Place {
    Dir(PathBuf),
    /// A bucket, and the prefix of every key.
    Bucket(String, String),
}

#[derive(Debug)]
pub struct BinaryCache {
    place: Place,
    objects: Arc<dyn ObjectStore>,
    compression: Compression,
    keys: Vec<SecretKey>,
    listing: bool,
    /// `ls-compression`, `log-compression`, `narinfo-compression` (buckets
    /// only: sent as the objects' `Content-Encoding`).
    ls_encoding: Compression,
    log_encoding: Compression,
    narinfo_encoding: Compression,
    /// `multipart-upload` and its part size (`buffer-size`).
    multipart: bool,
    part_size: usize,
    store_dir: StoreDir,
    /// What `nix-cache-info` says.
    cache_info: String,
    /// Set once `nix-cache-info` is known to be there.
    has_cache_info: tokio::sync::OnceCell<()>,
}

pub(crate) fn uri_error(uri: &str, message: impl Into<String>) -> StoreError {
    StoreError::Uri {
        uri: uri.into(),
        message: message.into(),
    }
}

/// How many narinfos are looked up at once (a bucket answers each
/// request after a round trip).
const REQUESTS_AT_ONCE: usize = 16;

/// S3's smallest part but the last.
const MIN_PART_SIZE: usize = 5 << 20;

/// Refuses a bucket's setting on a directory; warns of unknown settings.
fn check_params(
    uri: &str,
    params: &BTreeMap<String, String>,
    is_bucket: bool,
) -> Result<(), StoreError> {
    const BUCKET_ONLY: [&str; 9] = [
        "region",
        "endpoint",
        "scheme",
        "profile",
        "ls-compression",
        "log-compression",
        "narinfo-compression",
        "multipart-upload",
        "buffer-size",
    ];
    const ANY: [&str; 6] = [
        "compression",
        "secret-key",
        "secret-keys",
        "write-nar-listing",
        "want-mass-query",
        "priority",
    ];
    for key in params.keys().map(String::as_str) {
        if BUCKET_ONLY.contains(&key) && !is_bucket {
            return Err(uri_error(
                uri,
                format!("`{key}` is a setting of s3:// caches"),
            ));
        }
        if !ANY.contains(&key) && !BUCKET_ONLY.contains(&key) {
            tracing::warn!(
                uri,
                setting = key,
                "ignoring an unknown binary cache setting"
            );
        }
    }
    Ok(())
}

impl BinaryCache {
    /// Opens the cache `file://DIR?…` (creating the directory) or
    /// `s3://BUCKET?…`, with Nix's parameters: `compression` (`xz`
    /// default, `bzip2`, `zstd`, `br`, `none`), `secret-key` (a key file;
    /// `secret-keys` takes several, comma-separated), `write-nar-listing`,
    /// `want-mass-query` and `priority` (for `nix-cache-info`); for buckets
    /// also `region`, `endpoint`, `scheme`, `profile`, `ls-compression`,
    /// `log-compression`, `narinfo-compression`, `multipart-upload` and
    /// `buffer-size`. `vars` are the environment (credentials, region).
    pub fn open(uri: &str, vars: &HashMap<String, String>) -> Result<BinaryCache, StoreError> {
        BinaryCache::open_under(uri, "", vars)
    }

    /// `open`, with every key under `prefix` (`hydra/`): a cache that
    /// shares its bucket.
    pub fn open_under(
        uri: &str,
        prefix: &str,
        vars: &HashMap<String, String>,
    ) -> Result<BinaryCache, StoreError> {
        let (place, query) = if let Some(rest) = uri.strip_prefix("file://") {
            let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
            if !dir.starts_with('/') {
                return Err(uri_error(uri, "the directory must be an absolute path"));
            }
            (Place::Dir(PathBuf::from(dir).join(prefix)), query)
        } else if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
            if bucket.is_empty() || bucket.contains('/') {
                return Err(uri_error(uri, "name a bucket: s3://BUCKET?region=…"));
            }
            (Place::Bucket(bucket.to_string(), prefix.to_string()), query)
        } else {
            return Err(uri_error(uri, "not a file:// or s3:// URI"));
        };
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            params.insert(key.to_string(), value);
        }
        check_params(uri, &params, matches!(place, Place::Bucket(..)))?;
        let compression_of = |key: &str, default: Compression| match params.get(key) {
            None => Ok(default),
            Some(value) => Compression::parse(value).ok_or_else(|| {
                uri_error(
                    uri,
                    format!("{key} `{value}` is not one of xz, bzip2, zstd, br, none"),
                )
            }),
        };
        let flag = |key: &str| {
            params
                .get(key)
                .is_some_and(|v| matches!(v.as_str(), "1" | "true"))
        };
        let mut keys = Vec::new();
        for file in ["secret-key", "secret-keys"]
            .iter()
            .filter_map(|k| params.get(*k))
            .flat_map(|v| v.split(','))
            .filter(|f| !f.is_empty())
        {
            let text = std::fs::read_to_string(file)
                .map_err(|e| uri_error(uri, format!("cannot read the secret key {file}: {e}")))?;
            keys.push(
                SecretKey::parse(&text)
                    .map_err(|e| uri_error(uri, format!("the secret key {file}: {e}")))?,
            );
        }
        let mut cache_info = "StoreDir: /nix/store\n".to_string();
        if flag("want-mass-query") {
            cache_info.push_str("WantMassQuery: 1\n");
        }
        if let Some(priority) = params.get("priority") {
            let priority: u32 = priority
                .parse()
                .map_err(|_| uri_error(uri, format!("priority `{priority}` is not a number")))?;
            cache_info.push_str(&format!("Priority: {priority}\n"));
        }
        let part_size = match params.get("buffer-size") {
            None => MIN_PART_SIZE,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= MIN_PART_SIZE)
                .ok_or_else(|| {
                    uri_error(
                        uri,
                        format!(
                            "buffer-size `{v}` is not a number of bytes of at least {MIN_PART_SIZE}"
                        ),
                    )
                })?,
        };
        let objects: Arc<dyn ObjectStore> = match &place {
            Place::Dir(dir) => {
                for sub in ["", "nar", "log"] {
                    let d = dir.join(sub);
                    std::fs::create_dir_all(&d).map_err(StoreError::io(&d))?;
                }
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(dir)
                        .map_err(|e| uri_error(uri, e.to_string()))?,
                )
            }
            Place::Bucket(bucket, prefix) => {
                let client = s3::bucket(uri, bucket, &params, vars)?;
                if prefix.is_empty() {
                    Arc::new(client)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(
                        client,
                        prefix.trim_end_matches('/'),
                    ))
                }
            }
        };
        Ok(BinaryCache {
            compression: compression_of("compression", Compression::Xz)?,
            ls_encoding: compression_of("ls-compression", Compression::None)?,
            log_encoding: compression_of("log-compression", Compression::None)?,
            narinfo_encoding: compression_of("narinfo-compression", Compression::None)?,
            keys,
            listing: flag("write-nar-listing"),
            multipart: flag("multipart-upload"),
            part_size,
            cache_info,
            store_dir: StoreDir::new("/nix/store"),
            has_cache_info: tokio::sync::OnceCell::new(),
            objects,
            place,
        })
    }

    /// The cache's URI without its parameters, for people.
    pub fn describe(&self) -> String {
        match &self.place {
            Place::Dir(dir) => format!("file://{}", dir.display()),
            Place::Bucket(bucket, prefix) if prefix.is_empty() => format!("s3://{bucket}"),
            Place::Bucket(bucket, prefix) => {
                format!("s3://{bucket}/{}", prefix.trim_end_matches('/'))
            }
        }
    }

    /// Writes `nix-cache-info` if the cache has none (looked at before the
    /// first upload only).
    async fn ensure_cache_info(&self) -> Result<(), StoreError> {
        self.has_cache_info
            .get_or_try_init(|| async {
                if !self.exists("nix-cache-info").await? {
                    self.put(
                        "nix-cache-info",
                        self.cache_info.clone().into_bytes(),
                        "text/x-nix-cache-info",
                        Compression::None,
                    )
                    .await?;
                }
                Ok::<(), StoreError>(())
            })
            .await?;
        Ok(())
    }

    fn object_error(&self, key: &str, e: object_store::Error) -> StoreError {
        StoreError::Object {
            place: format!("{}/{key}", self.describe()),
            message: e.to_string(),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.objects.head(&Key::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.object_error(key, e)),
        }
    }

    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
        encoding: Compression,
    ) -> Result<(), StoreError> {
        let bytes = encoding.encode(&bytes).await.map_err(StoreError::io(key))?;
        let options = PutOptions {
            attributes: self.attributes(content_type, encoding),
            ..Default::default()
        };
        self.objects
            .put_opts(&Key::from(key), PutPayload::from(bytes), options)
            .await
            .map_err(|e| self.object_error(key, e))?;
        Ok(())
    }

    /// The attributes of an object (a directory keeps none).
    fn attributes(&self, content_type: &'static str, encoding: Compression) -> Attributes {
        let mut attributes = Attributes::new();
        if matches!(self.place, Place::Bucket(..)) {
            attributes.insert(Attribute::ContentType, content_type.into());
            if encoding != Compression::None {
                attributes.insert(Attribute::ContentEncoding, encoding.name().into());
            }
        }
        attributes
    }

    /// The object `key` as a stream of bytes and its `Content-Encoding`,
    /// or `None` if there is no such object.
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<Option<(Box<dyn AsyncRead + Unpin + Send>, Option<String>)>, StoreError> {
        let got = match self.objects.get(&Key::from(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.object_error(key, e)),
        };
        let encoding = got
            .attributes
            .get(&Attribute::ContentEncoding)
            .map(|v| v.to_string());
        let place = format!("{}/{key}", self.describe());
        let stream = got
            .into_stream()
            .map_err(move |e| std::io::Error::other(format!("{place}: {e}")));
        Ok(Some((
            Box::new(tokio_util::io::StreamReader::new(stream)),
            encoding,
        )))
    }

    /// The object `key`, decoded from its `Content-Encoding`.
    pub async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((reader, encoding)) = self.stream(key).await? else {
            return Ok(None);
        };
        let encoding = match encoding.as_deref() {
            None | Some("identity") => Compression::None,
            Some(name) => Compression::parse(name).ok_or_else(|| StoreError::Corrupt {
                path: key.into(),
                message: format!("unsupported Content-Encoding `{name}`"),
            })?,
        };
        let mut out = Vec::new();
        encoding
            .decoder(BufReader::new(reader))
            .read_to_end(&mut out)
            .await
            .map_err(StoreError::io(key))?;
        Ok(Some(out))
    }

    fn hash_part(&self, store_path: &str) -> Result<String, StoreError> {
        let parsed = self
            .store_dir
            .parse(store_path)
            .map_err(|e| StoreError::Corrupt {
                path: store_path.into(),
                message: e.to_string(),
            })?;
        Ok(parsed.hash_part().to_string())
    }

    pub(crate) async fn query_valid(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, StoreError> {
        let lookups: Vec<_> = paths.iter().map(|p| self.has_narinfo(p)).collect();
        let found: Vec<(String, bool)> = futures_util::stream::iter(lookups)
            .buffer_unordered(REQUESTS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(path, valid)| valid.then_some(path))
            .collect())
    }

    /// The narinfo of the store path with hash part `hash`, if the cache
    /// has it.
    pub async fn narinfo_by_hash(&self, hash: &str) -> Result<Option<NarInfo>, StoreError> {
        let key = format!("{hash}.narinfo");
        let Some(bytes) = self.read(&key).await? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|e| StoreError::Corrupt {
            path: key.clone().into(),
            message: e.to_string(),
        })?;
        NarInfo::parse(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: key.into(),
                message: e.to_string(),
            })
    }

    /// `path`, and whether the cache has it.
    async fn has_narinfo(&self, path: &str) -> Result<(String, bool), StoreError> {
        let key = format!("{}.narinfo", self.hash_part(path)?);
        Ok((path.to_string(), self.exists(&key).await?))
    }

    /// `path`, and its narinfo if the cache has it.
    async fn narinfo_of(&self, path: &str) -> Result<(String, Option<NarInfo>), StoreError> {
        Ok((path.to_string(), self.narinfo(path).await?))
    }

    async fn narinfo(&self, path: &str) -> Result<Option<NarInfo>, StoreError> {
        self.narinfo_by_hash(&self.hash_part(path)?).await
    }

    /// What a narinfo says of its path.
    fn path_info(&self, n: &NarInfo) -> PathInfo {
        let full = |base: &str| format!("{}/{base}", self.store_dir.as_str());
        PathInfo {
            path: n.store_path.clone(),
            deriver: n.deriver.as_deref().map(full),
            references: n.references.iter().map(|r| full(r)).collect(),
            download_size: n.file_size.unwrap_or(0),
            nar_size: n.nar_size,
            nar_hash: Some(n.nar_hash.clone()),
            ca: n.ca.clone(),
            sigs: n.sigs.clone(),
        }
    }

    pub(crate) async fn path_infos(
        &self,
        paths: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, PathInfo>, StoreError> {
        let lookups: Vec<_> = paths.iter().map(|p| self.narinfo_of(p)).collect();
        let found: Vec<(String, Option<NarInfo>)> = futures_util::stream::iter(lookups)
            .buffer_unordered(REQUESTS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(path, n)| Some((path, self.path_info(&n?))))
            .collect())
    }

    /// Where NARs are compressed before they are uploaded: beside the
    /// cache for a directory (so the rename stays on one file system).
    fn spool_dir(&self) -> PathBuf {
        match &self.place {
            Place::Dir(dir) => dir.join("nar"),
            Place::Bucket(..) => std::env::temp_dir(),
        }
    }

    /// Adds a path whose NAR is read from `nar`; `system` (the deriver's,
    /// when known) goes into the narinfo.
    pub(crate) async fn add_nar(
        &self,
        info: &PathInfo,
        nar: &mut (dyn AsyncRead + Unpin + Send),
        system: Option<String>,
    ) -> Result<(), StoreError> {
        let hash_part = self.hash_part(&info.path)?;
        let narinfo_key = format!("{hash_part}.narinfo");
        if self.exists(&narinfo_key).await? {
            tokio::io::copy(nar, &mut tokio::io::sink())
                .await
                .map_err(StoreError::io(&info.path))?;
            return Ok(());
        }
        let spool_dir = self.spool_dir();
        let temp = tempfile::Builder::new()
            .prefix(".nar-")
            .tempfile_in(&spool_dir)
            .map_err(StoreError::io(&spool_dir))?;
        let file = tokio::fs::File::create(temp.path())
            .await
            .map_err(StoreError::io(temp.path()))?;
        let counted = Arc::new(Mutex::new((Hasher::new(HashAlgo::Sha256), 0u64)));
        let hashing = HashingWriter {
            inner: file,
            state: counted.clone(),
        };
        let mut encoder = self.compression.encoder(hashing);
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
        self.ensure_cache_info().await?;
        let url = format!(
            "nar/{}{}",
            file_hash.to_base32(),
            self.compression.extension()
        );
        self.upload_nar(&url, temp).await?;
        if let Some(listing) = &scan.listing {
            self.put(
                &format!("{hash_part}.ls"),
                listing.to_string().into_bytes(),
                "application/json",
                self.ls_encoding,
            )
            .await?;
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
            system,
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
        self.put(
            &narinfo_key,
            narinfo.to_text().into_bytes(),
            "text/x-nix-narinfo",
            self.narinfo_encoding,
        )
        .await
    }

    /// Puts the compressed NAR in `temp` at `key`: renamed into place in a
    /// directory; in a bucket in parts of `buffer-size` with
    /// `multipart-upload`, else in one request.
    async fn upload_nar(&self, key: &str, temp: tempfile::NamedTempFile) -> Result<(), StoreError> {
        if let Place::Dir(dir) = &self.place {
            let target = dir.join(key);
            temp.persist(&target).map_err(|e| StoreError::Io {
                path: target,
                source: e.error,
            })?;
            return Ok(());
        }
        let mut file = tokio::fs::File::open(temp.path())
            .await
            .map_err(StoreError::io(temp.path()))?;
        let size = file
            .metadata()
            .await
            .map_err(StoreError::io(temp.path()))?
            .len();
        let attributes = self.attributes("application/x-nix-nar", Compression::None);
        if !self.multipart || size <= self.part_size as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(StoreError::io(temp.path()))?;
            let options = PutOptions {
                attributes,
                ..Default::default()
            };
            self.objects
                .put_opts(&Key::from(key), PutPayload::from(bytes), options)
                .await
                .map_err(|e| self.object_error(key, e))?;
            return Ok(());
        }
        let options = object_store::PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let upload = self
            .objects
            .put_multipart_opts(&Key::from(key), options)
            .await
            .map_err(|e| self.object_error(key, e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buffer).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StoreError::Io {
                        path: temp.path().into(),
                        source: e,
                    });
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                return Err(self.object_error(key, e));
            }
            writer.write(&buffer[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.object_error(key, e))?;
        Ok(())
    }

    /// The path's metadata and its NAR, decompressed.
    pub(crate) async fn open_nar(
        &self,
        path: &str,
    ) -> Result<(PathInfo, Box<dyn AsyncRead + Unpin + Send>, NarInfo), StoreError> {
        let narinfo = self
            .narinfo(path)
            .await?
            .ok_or_else(|| StoreError::Missing(path.into()))?;
        let info = self.path_info(&narinfo);
        let compression =
            Compression::parse(&narinfo.compression).ok_or_else(|| StoreError::Corrupt {
                path: narinfo.url.clone().into(),
                message: format!("unsupported compression `{}`", narinfo.compression),
            })?;
        let (reader, _) = self
            .stream(&narinfo.url)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                path: path.into(),
                message: format!("its narinfo names {}, which is missing", narinfo.url),
            })?;
        Ok((info, compression.decoder(BufReader::new(reader)), narinfo))
    }

    pub(crate) async fn scan(&self, path: &str, options: &ScanOptions) -> Result<Scan, StoreError> {
        let (_, mut decoded, narinfo) = self.open_nar(path).await?;
        let scan =
            nar::scan(&mut decoded, None, options)
                .await
                .map_err(|e| StoreError::Corrupt {
                    path: narinfo.url.clone().into(),
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
        self.ensure_cache_info().await?;
        let base = hydra_nix::store_path::base_name(drv_path);
        let text = tokio::fs::read(log).await.map_err(StoreError::io(log))?;
        self.put(
            &format!("log/{base}"),
            text,
            "text/plain; charset=utf-8",
            self.log_encoding,
        )
        .await
    }
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
