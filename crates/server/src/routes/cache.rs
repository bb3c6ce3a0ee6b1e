//! The binary cache: `/nix-cache-info`, `/<hash>.narinfo`, `/nar/<file>`,
//! and a build output as a NAR (`/build/<id>/output/<name>`).
//!
//! Served from the destination store the server reads (`server_store_uri`,
//! else `store_uri`): from the machine's Nix store, NARs are dumped and
//! xz-compressed while they are sent; from a `file://` cache, its files are
//! sent as they are. Nothing is held whole in memory. With
//! `binary_cache_secret_key_file`, every narinfo carries our signature.

use axum::Router;
use axum::routing::get;
use std::collections::BTreeSet;

use async_compression::tokio::bufread::XzEncoder;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hydra_nix::narinfo::NarInfo;
use hydra_nix::store_path::StoreDir;
use hydra_store::{DestStore, StoreError};
use tokio::io::BufReader;
use tokio_util::io::ReaderStream;

use super::parse_id;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Missing(p) => ApiError::not_found(format!("{p} is not in the store.")),
        other => ApiError::Internal(other.to_string()),
    }
}

fn text(content_type: &'static str, body: impl Into<Body>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body.into(),
    )
        .into_response()
}

/// `/nix-cache-info`.
pub(crate) async fn cache_info() -> Response {
    text(
        "text/x-nix-cache-info",
        format!(
            "StoreDir: {}\nWantMassQuery: 0\nPriority: 100\n",
            StoreDir::default().as_str()
        ),
    )
}

/// `/nix-cache-public-key`: the public key of the key that signs what this
/// server serves (`binary_cache_secret_key_file`, or the key `hydra up`
/// generated), as `trusted-public-keys` takes it; 404 when nothing is
/// signed.
pub(crate) async fn public_key(State(state): State<AppState>) -> ApiResult<Response> {
    let key = state.signing_key.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "This server does not sign its binary cache (binary_cache_secret_key_file is not set).",
        )
    })?;
    Ok(text(
        "text/plain; charset=utf-8",
        format!("{}\n", key.public_key().to_text()),
    ))
}

/// The store path of the machine's store whose hash part is `hash`, if it
/// is valid there. Paths the database knows are looked up first; others
/// (dependencies) by listing the store directory.
async fn local_path_by_hash(state: &AppState, hash: &str) -> ApiResult<Option<String>> {
    let store_dir = StoreDir::default();
    let prefix = format!("{}/{hash}-", store_dir.as_str());
    let known = hydra_db::builds::known_path_with_prefix(&state.pool, &prefix).await?;
    let candidate = match known {
        Some(p) => Some(p),
        None => {
            let dir = state.real_path(store_dir.as_str());
            let wanted = format!("{hash}-");
            tokio::task::spawn_blocking(move || {
                std::fs::read_dir(&dir).ok()?.find_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    (name.starts_with(&wanted) && !name.ends_with(".lock"))
                        .then(|| format!("{}/{name}", store_dir.as_str()))
                })
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
        }
    };
    let Some(path) = candidate else {
        return Ok(None);
    };
    let valid = state
        .store
        .query_valid(&BTreeSet::from([path.clone()]))
        .await
        .map_err(store_error)?;
    Ok(valid.contains(&path).then_some(path))
}

/// `/<hash>.narinfo` (the route takes any root-level name; others are 404).
pub(crate) async fn narinfo(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let hash = file
        .strip_suffix(".narinfo")
        .filter(|h| hydra_nix::store_path::is_hash_part(h))
        .ok_or_else(|| ApiError::not_found("Page not found."))?;
    let missing = || ApiError::not_found(format!("No store path with hash ‘{hash}’."));
    let store_dir = StoreDir::default();
    let mut info = match &state.store {
        DestStore::Cache(cache) => cache
            .narinfo_by_hash(hash)
            .await
            .map_err(store_error)?
            .ok_or_else(missing)?,
        DestStore::Local(_) => {
            let path = local_path_by_hash(&state, hash)
                .await?
                .ok_or_else(missing)?;
            let infos = state
                .store
                .path_infos(&BTreeSet::from([path.clone()]))
                .await
                .map_err(store_error)?;
            let pi = infos.get(&path).ok_or_else(missing)?;
            let nar_hash = pi.nar_hash.clone().ok_or_else(|| {
                ApiError::Internal(format!("the store did not say the NAR hash of {path}"))
            })?;
            let base = |p: &str| hydra_nix::store_path::base_name(p).to_string();
            NarInfo {
                store_path: path.clone(),
                url: format!("nar/{hash}.nar.xz"),
                compression: "xz".into(),
                file_hash: None,
                file_size: None,
                nar_hash,
                nar_size: pi.nar_size,
                references: pi.references.iter().map(|r| base(r)).collect(),
                deriver: pi.deriver.as_deref().map(base),
                system: None,
                sigs: pi.sigs.clone(),
                ca: pi.ca.clone(),
            }
        }
    };
    if let Some(key) = &state.signing_key {
        let ours = format!(
            "{}:",
            key.public_key().to_text().split(':').next().unwrap_or("")
        );
        if !info.sigs.iter().any(|s| s.starts_with(&ours)) {
            info.sign(&store_dir, key)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
    }
    Ok(text("text/x-nix-narinfo", info.to_text()))
}

/// A NAR, xz-compressed as it streams.
fn xz_body(nar: Box<dyn tokio::io::AsyncRead + Unpin + Send>) -> Body {
    Body::from_stream(ReaderStream::new(XzEncoder::new(BufReader::new(nar))))
}

/// `/nar/<file>`.
pub(crate) async fn nar(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found(format!("No NAR ‘{file}’."));
    match &state.store {
        DestStore::Cache(cache) => {
            let safe = !file.is_empty()
                && !file.starts_with('.')
                && file
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
            if !safe {
                return Err(not_found());
            }
            let (nar, _) = cache
                .stream(&format!("nar/{file}"))
                .await
                .map_err(store_error)?
                .ok_or_else(not_found)?;
            let mut response = Body::from_stream(ReaderStream::new(nar)).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-nix-nar"),
            );
            Ok(response)
        }
        DestStore::Local(_) => {
            let hash = file
                .strip_suffix(".nar.xz")
                .filter(|h| hydra_nix::store_path::is_hash_part(h))
                .ok_or_else(not_found)?;
            let path = local_path_by_hash(&state, hash)
                .await?
                .ok_or_else(not_found)?;
            let (_, nar) = state.store.open_nar(&path).await.map_err(store_error)?;
            let mut response = xz_body(nar).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-nix-nar"),
            );
            Ok(response)
        }
    }
}

/// `/build/<id>/output/<name>`: the output as an xz-compressed NAR; 410 if
/// the store no longer has it.
pub(crate) async fn output(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let id = parse_id(&id, "build")?;
    let path =
        hydra_db::builds::output_path(&state.pool, hydra_db::ids::BuildId(id), &name).await?;
    let path = path
        .flatten()
        .ok_or_else(|| ApiError::not_found(format!("Build {id} has no output ‘{name}’.")))?;
    let gone = || ApiError::Gone(format!("Output {path} is no longer available."));
    let (_, nar) = match state.store.open_nar(&path).await {
        Ok(x) => x,
        Err(StoreError::Missing(_)) => return Err(gone()),
        Err(e) => return Err(store_error(e)),
    };
    let base = hydra_nix::store_path::base_name(&path);
    let mut response = xz_body(nar).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-nix-archive"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{base}.nar.xz\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/nix-cache-info", get(cache_info))
        .route("/nix-cache-public-key", get(public_key))
        .route("/{file}", get(narinfo))
        .route("/nar/{file}", get(nar))
        .route("/build/{id}/output/{name}", get(output))
}
