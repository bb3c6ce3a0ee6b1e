//! The stylesheet and the script, embedded in the binary and served under
//! names that carry a hash of their content (`/static/hydra-<hash>.css`),
//! so a browser keeps them for a year and a new release is fetched at
//! once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// An embedded file.
#[derive(Debug)]
struct Asset {
    /// `/static/<name>`.
    name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

fn asset(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let hash = hex::encode(Sha256::digest(bytes));
    Asset {
        name: format!("{stem}-{}.{ext}", &hash[..16]),
        content_type,
        bytes,
    }
}

fn assets() -> &'static [Asset; 2] {
    static ASSETS: OnceLock<[Asset; 2]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            asset(
                "hydra",
                "css",
                "text/css; charset=utf-8",
                include_bytes!("../static/hydra.css"),
            ),
            asset(
                "hydra",
                "js",
                "text/javascript; charset=utf-8",
                include_bytes!("../static/hydra.js"),
            ),
        ]
    })
}

/// The stylesheet's URL path.
pub(crate) fn css() -> &'static str {
    &assets()[0].name
}

/// The script's URL path.
pub(crate) fn js() -> &'static str {
    &assets()[1].name
}

/// `/static/<name>`: an asset by its hashed name, cached for a year.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    match assets().iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(a.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            a.bytes,
        )
            .into_response(),
        None => ApiError::not_found(format!("No static file ‘{file}’.")).into_response(),
    }
}

/// The status icons, under Hydra's names (`/static/images/<name>`), which
/// pages and the tools that read them use.
const IMAGES: &[(&str, &[u8])] = &[
    (
        "emojione-check-2714.svg",
        include_bytes!("../static/images/emojione-check-2714.svg"),
    ),
    (
        "emojione-red-x-274c.svg",
        include_bytes!("../static/images/emojione-red-x-274c.svg"),
    ),
    (
        "emojione-gray-x-2716.svg",
        include_bytes!("../static/images/emojione-gray-x-2716.svg"),
    ),
    (
        "emojione-stopsign-1f6d1.svg",
        include_bytes!("../static/images/emojione-stopsign-1f6d1.svg"),
    ),
    (
        "emojione-question-2754.svg",
        include_bytes!("../static/images/emojione-question-2754.svg"),
    ),
];

/// `/static/images/<name>`: a status icon, cached for a day (its name is
/// Hydra's, not a hash).
pub(crate) async fn image(Path(file): Path<String>) -> Response {
    match IMAGES.iter().find(|(name, _)| *name == file) {
        Some((_, bytes)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("image/svg+xml"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => ApiError::not_found(format!("No image ‘{file}’.")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_a_hash_of_the_content() {
        let css = css();
        assert!(css.starts_with("hydra-") && css.ends_with(".css"), "{css}");
        assert_eq!(css.len(), "hydra-".len() + 16 + ".css".len());
        assert_ne!(css.trim_end_matches(".css"), js().trim_end_matches(".js"));
    }
}
