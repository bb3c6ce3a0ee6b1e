//! Build products: `/build/<id>/download/<nr>[/<name>[/path]]` and
//! `/build/<id>/download-by-type/<type>/<subtype>[/…]`.
//!
//! Files are read from the machine's store (the queue runner keeps every
//! output there). A request never leaves the product's path: `..` is
//! refused, and symlinks are followed by hand, only while they stay inside
//! it. Products are sent with `Content-Security-Policy: sandbox` so an
//! HTML product cannot act as this site.

use axum::Router;
use axum::routing::get;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hydra_nix::store_path::StoreDir;
use tokio_util::io::ReaderStream;

use super::{parse_id, redirect};
use crate::auth::base_url;
use crate::error::{ApiError, ApiResult};
use crate::pages::{encode_segment, escape};
use crate::state::AppState;
use crate::views::{self, downloads::Product};

/// Symlinks followed in one request, at most.
const MAX_SYMLINKS: usize = 40;

async fn by_number_or_name(state: &AppState, build: i32, nr: &str) -> ApiResult<Product> {
    views::downloads::by_number_or_name(&state.pool, build, nr)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Build {build} has no product ‘{nr}’.")))
}

/// `/build/<id>/download/<nr>` and `/build/<id>/download/<nr>/<rest>`.
pub(crate) async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(params): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let get = |k: &str| super::path_param(&params, k);
    let id = parse_id(&get("id").unwrap_or_default(), "build")?;
    let product = by_number_or_name(&state, id, &get("nr").unwrap_or_default()).await?;
    serve(&state, &headers, uri.path(), id, product, get("rest")).await
}

/// `/build/<id>/download-by-type/<type>/<subtype>[/<rest>]`: the first
/// product of that type.
pub(crate) async fn download_by_type(
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(params): Path<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let get = |k: &str| super::path_param(&params, k);
    let id = parse_id(&get("id").unwrap_or_default(), "build")?;
    let (kind, subtype) = (
        get("type").unwrap_or_default(),
        get("subtype").unwrap_or_default(),
    );
    let product = views::downloads::by_type(&state.pool, id, &kind, &subtype)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Build {id} has no product of type ‘{kind}/{subtype}’."
            ))
        })?;
    match get("rest") {
        // The canonical URL names the product by number.
        None => serve(&state, &headers, uri.path(), id, product, None).await,
        Some(rest) => {
            let location = format!(
                "{}build/{id}/download/{}/{}",
                base_url(&state, &headers),
                product.productnr,
                encode_path(&rest)
            );
            Ok(redirect(&location))
        }
    }
}

async fn serve(
    state: &AppState,
    headers: &HeaderMap,
    url_path: &str,
    id: i32,
    product: Product,
    rest: Option<String>,
) -> ApiResult<Response> {
    let root = product
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::not_found("This product has no file."))?;
    let name = product.name.clone().unwrap_or_default();
    let default_path = product.defaultpath.clone().unwrap_or_default();
    let Some(rest) = rest else {
        if !name.is_empty() || !default_path.is_empty() {
            let mut location = format!(
                "{}build/{id}/download/{}/{}",
                base_url(state, headers),
                product.productnr,
                encode_segment(if name.is_empty() { "-" } else { &name })
            );
            if !default_path.is_empty() {
                location.push('/');
                location.push_str(&encode_path(default_path.trim_start_matches('/')));
            }
            return Ok(redirect(&location));
        }
        return send(state, url_path, &root, "", product.stoptime).await;
    };
    // The first element names the product and is not part of the path.
    let sub = rest.split_once('/').map_or("", |(_, s)| s);
    send(state, url_path, &root, sub, product.stoptime).await
}

/// Entries a contents listing shows at most.
const MAX_LISTED: usize = 10_000;

/// A file of a product, as its contents list it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Listed {
    /// The path below the product, `/`-separated.
    pub path: String,
    /// `directory`, `file`, `executable` or `symlink`.
    pub kind: &'static str,
    pub size: u64,
    /// A symlink's target.
    pub target: Option<String>,
}

/// The files below `root`: a directory's entries by name, then each of
/// its subdirectories in turn; symlinks not followed; at most `limit` (and
/// whether there were more).
fn list_tree(root: &std::path::Path, limit: usize) -> (Vec<Listed>, bool) {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            if out.len() >= limit {
                return (out, true);
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let kind = if meta.file_type().is_symlink() {
                "symlink"
            } else if meta.is_dir() {
                subdirs.push((e.path(), path.clone()));
                "directory"
            } else if meta.permissions().mode() & 0o111 != 0 {
                "executable"
            } else {
                "file"
            };
            let target = meta
                .file_type()
                .is_symlink()
                .then(|| std::fs::read_link(e.path()).ok())
                .flatten()
                .map(|t| t.to_string_lossy().into_owned());
            out.push(Listed {
                path,
                kind,
                size: if meta.is_file() { meta.len() } else { 0 },
                target,
            });
        }
        // The subdirectories next, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    (out, false)
}

/// `/build/<id>/contents/<nr>`: the files of a product.
pub(crate) async fn contents(
    State(state): State<AppState>,
    Path((id, nr)): Path<(String, String)>,
) -> ApiResult<crate::negotiate::Page> {
    let id = parse_id(&id, "build")?;
    let product = by_number_or_name(&state, id, &nr).await?;
    let root = product
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::not_found("This product has no file."))?;
    let real = state.real_path(&root);
    let meta = std::fs::symlink_metadata(&real)
        .map_err(|_| ApiError::not_found(format!("{root} is not available.")))?;
    let (files, more) = if meta.is_dir() {
        tokio::task::spawn_blocking(move || list_tree(&real, MAX_LISTED))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
    } else {
        (Vec::new(), false)
    };
    Ok(crate::negotiate::Page::new(
        "build-contents",
        serde_json::json!({
            "build": id,
            "productnr": product.productnr,
            "name": product.name,
            "path": root,
            "directory": meta.is_dir(),
            "size": if meta.is_file() { meta.len() } else { 0 },
            "files": files,
            "more": more,
        }),
    ))
}

/// Why a path inside a product cannot be served.
fn outside() -> ApiError {
    ApiError::forbidden("The path leads outside the build product.")
}

/// Resolves `sub` inside the product at `root` (a path in the store),
/// following symlinks only while they stay inside it. Returns the file's
/// place on disk.
fn resolve(state: &AppState, root: &str, sub: &str) -> ApiResult<PathBuf> {
    let mut todo: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for part in sub.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(outside()),
            p if p.contains('\0') || p.contains('\\') => return Err(outside()),
            p => todo.push_back(p.to_string()),
        }
    }
    let root = root.trim_end_matches('/');
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    let logical = |at: &[String]| {
        if at.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{}", at.join("/"))
        }
    };
    let not_found = || ApiError::not_found(format!("File ‘{sub}’ does not exist in this product."));
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            // Only symlink targets get here.
            at.pop().ok_or_else(outside)?;
            continue;
        }
        if part.is_empty() || part == "." {
            continue;
        }
        at.push(part);
        let real = state.real_path(&logical(&at));
        let meta = std::fs::symlink_metadata(&real).map_err(|_| not_found())?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINKS {
            return Err(ApiError::bad_request("Too many symlinks."));
        }
        let target = std::fs::read_link(&real).map_err(|_| not_found())?;
        let target = target.to_str().ok_or_else(not_found)?.to_string();
        at.pop();
        let relative = if let Some(abs) = target.strip_prefix('/') {
            let within = format!("/{abs}")
                .strip_prefix(root)
                .filter(|r| r.is_empty() || r.starts_with('/'))
                .map(str::to_string)
                .ok_or_else(outside)?;
            at.clear();
            within
        } else {
            target
        };
        for (i, p) in relative.split('/').filter(|p| !p.is_empty()).enumerate() {
            todo.insert(i, p.to_string());
        }
    }
    let real = state.real_path(&logical(&at));
    if std::fs::symlink_metadata(&real)
        .map_err(|_| not_found())?
        .file_type()
        .is_symlink()
    {
        // The product itself is a symlink: not followed.
        return Err(outside());
    }
    Ok(real)
}

async fn send(
    state: &AppState,
    url_path: &str,
    root: &str,
    sub: &str,
    stoptime: Option<i32>,
) -> ApiResult<Response> {
    let store_dir = StoreDir::default();
    let top = root
        .strip_prefix(store_dir.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split('/').next())
        .filter(|base| !base.is_empty() && !base.starts_with('.'))
        .ok_or_else(|| ApiError::not_found("This product is not in the store."))?;
    if !state
        .real_path(&format!("{}/{top}", store_dir.as_str()))
        .exists()
    {
        return Err(ApiError::Gone(format!(
            "Build product {root} is no longer available."
        )));
    }
    let real = resolve(state, root, sub)?;
    let meta = std::fs::metadata(&real).map_err(|e| ApiError::Internal(e.to_string()))?;
    if meta.is_dir() {
        if !url_path.ends_with('/') {
            return Ok(redirect(&format!("{url_path}/")));
        }
        let index = if sub.is_empty() {
            "index.html".to_string()
        } else {
            format!("{}/index.html", sub.trim_end_matches('/'))
        };
        return match resolve(state, root, &index) {
            Ok(file) if file.is_file() => send_file(file, stoptime).await,
            _ => listing(&real, sub),
        };
    }
    send_file(real, stoptime).await
}

async fn send_file(path: PathBuf, stoptime: Option<i32>) -> ApiResult<Response> {
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime_type(&path))
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    product_headers(headers, stoptime);
    Ok(response)
}

fn product_headers(headers: &mut HeaderMap, stoptime: Option<i32>) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox allow-scripts"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(t) = stoptime.and_then(|t| u64::try_from(t).ok()) {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(when)) {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
}

/// A directory without `index.html`: its entries, names escaped.
fn listing(dir: &std::path::Path, sub: &str) -> ApiResult<Response> {
    let mut entries: Vec<(String, bool)> = std::fs::read_dir(dir)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?
        .filter_map(|e| {
            let e = e.ok()?;
            let is_dir = e.file_type().ok()?.is_dir();
            Some((e.file_name().to_string_lossy().into_owned(), is_dir))
        })
        .collect();
    entries.sort();
    let title = escape(&format!("/{}", sub.trim_matches('/')));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\
         <body><h1>Index of {title}</h1><ul>\n"
    );
    if !sub.trim_matches('/').is_empty() {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (name, is_dir) in entries {
        let slash = if is_dir { "/" } else { "" };
        html.push_str(&format!(
            "<li><a href=\"{}{slash}\">{}{slash}</a></li>\n",
            escape(&encode_segment(&name)),
            escape(&name)
        ));
    }
    html.push_str("</ul></body></html>\n");
    let mut response = html.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    product_headers(response.headers_mut(), None);
    Ok(response)
}

fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// The MIME type by file name extension (text with its character set);
/// Nix's own kinds of file first, which the MIME tables do not know.
fn mime_type(path: &std::path::Path) -> String {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "nix" | "log" => return "text/plain; charset=utf-8".into(),
        "nar" => return "application/x-nix-archive".into(),
        "zst" => return "application/zstd".into(),
        _ => {}
    }
    let mime = mime_guess::from_ext(&ext).first_or_octet_stream();
    if mime.type_() == mime_guess::mime::TEXT {
        format!("{}/{}; charset=utf-8", mime.type_(), mime.subtype())
    } else {
        mime.essence_str().to_string()
    }
}

/// The routes this module serves.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/build/{id}/download/{nr}", get(download))
        .route("/build/{id}/contents/{nr}", get(contents))
        .route("/build/{id}/download/{nr}/{*rest}", get(download))
        .route(
            "/build/{id}/download-by-type/{type}/{subtype}",
            get(download_by_type),
        )
        .route(
            "/build/{id}/download-by-type/{type}/{subtype}/{*rest}",
            get(download_by_type),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_list_each_directory_then_its_subdirectories_without_following_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("share/doc")).unwrap();
        std::fs::write(root.join("share/doc/readme"), b"hi").unwrap();
        std::fs::create_dir(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/hello"), b"#!").unwrap();
        std::fs::set_permissions(
            root.join("bin/hello"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        let (files, more) = list_tree(root, 100);
        let shown: Vec<(&str, &str)> = files.iter().map(|f| (f.path.as_str(), f.kind)).collect();
        assert_eq!(
            shown,
            [
                ("bin", "directory"),
                ("escape", "symlink"),
                ("share", "directory"),
                ("bin/hello", "executable"),
                ("share/doc", "directory"),
                ("share/doc/readme", "file"),
            ]
        );
        assert!(!more);
        assert_eq!(files[1].target.as_deref(), Some("/etc"));
        assert_eq!(files[5].size, 2);
        let (files, more) = list_tree(root, 2);
        assert_eq!((files.len(), more), (2, true));
    }
}
