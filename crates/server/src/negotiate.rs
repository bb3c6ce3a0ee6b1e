//! Content negotiation, in one place. Handlers return [`Page`]s (data plus
//! the name of the page that shows it) and never look at the request's
//! format: the [`negotiate`] layer turns a page into JSON when the client
//! asks for it (`Accept: application/json`, or a JSON request body, as
//! Hydra's Catalyst REST does) and into HTML otherwise. Every such response
//! says `Vary: Accept`.

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::pages::{Data, Rendered};

/// A response whose JSON is `text` as it is (no parsing, no
/// re-serialising): API clients get the bytes, browsers the page.
pub(crate) fn json_text(template: &'static str, text: String) -> Response {
    json_text_with(template, text, serde_json::Map::new())
}

/// [`json_text`] with what only the page shows.
pub(crate) fn json_text_with(
    template: &'static str,
    text: String,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let text: std::sync::Arc<str> = text.into();
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        Body::from(text.as_bytes().to_vec()),
    )
        .into_response();
    response.extensions_mut().insert(Rendered {
        template,
        data: Data::Text(text),
        extra,
    });
    response
}

/// A JSON response whose body is written as `chunks` come; a chunk that
/// fails ends the body early (the client sees JSON cut short, never a
/// wrong document).
pub(crate) fn json_stream(
    chunks: impl futures_util::Stream<Item = crate::error::ApiResult<String>> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let body = chunks.map(|chunk| {
        chunk.map_err(|e| {
            tracing::warn!(error = %e, "a streamed response stopped");
            std::io::Error::other(e.to_string())
        })
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// A response that is JSON for API clients and a page for browsers.
#[derive(Debug)]
pub(crate) struct Page {
    pub status: StatusCode,
    pub template: &'static str,
    pub data: serde_json::Value,
    pub headers: HeaderMap,
    /// What only the HTML page shows (never part of the JSON).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Page {
    /// `data` shown by page `template`, status 200.
    pub(crate) fn new(template: &'static str, data: impl Serialize) -> Page {
        Page {
            status: StatusCode::OK,
            template,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
            headers: HeaderMap::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// A JSON value that is already built.
    pub(crate) fn value(template: &'static str, data: serde_json::Value) -> Page {
        Page {
            status: StatusCode::OK,
            template,
            data,
            headers: HeaderMap::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// With `value` under `key` for the HTML page only.
    pub(crate) fn with_extra(mut self, key: &str, value: serde_json::Value) -> Page {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    pub(crate) fn with_header(mut self, name: header::HeaderName, value: &str) -> Page {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self.data)).into_response();
        response.headers_mut().extend(self.headers);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        let mut rendered = Rendered::new(self.template, self.data);
        rendered.extra = self.extra;
        response.extensions_mut().insert(rendered);
        response
    }
}

/// Whether the request is for a page (HTML) rather than JSON: handlers
/// read what only a page shows only then.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WantsPage(pub(crate) bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WantsPage {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(WantsPage(
            !wants_json(&parts.headers) && !parts.uri.path().starts_with("/api/"),
        ))
    }
}

/// Whether the request wants JSON rather than a page.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    let has_json = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/json"))
    };
    has_json(header::ACCEPT) || has_json(header::CONTENT_TYPE)
}

/// The policy of every page.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The sign-in page's policy when Google's sign-in button is on it: our
/// own files, and Google Identity Services' script, styles and frame.
pub(crate) const GOOGLE_SIGN_IN_POLICY: &str = "default-src 'none'; \
     script-src 'self' https://accounts.google.com/gsi/client; \
     style-src 'self' https://accounts.google.com/gsi/style; img-src 'self' data:; \
     connect-src 'self' https://accounts.google.com/gsi/; frame-src https://accounts.google.com/gsi/; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The layer: JSON stays JSON for API clients; browsers get the page.
pub(crate) async fn negotiate(request: Request, next: Next) -> Response {
    let json = wants_json(request.headers()) || request.uri().path().starts_with("/api/");
    let flash = crate::routes::actions::flash_of(request.headers());
    let response = next.run(request).await;
    if json {
        return response;
    }
    let Some(rendered) = response.extensions().get::<Rendered>().cloned() else {
        return response;
    };
    let mut user = response
        .extensions()
        .get::<crate::pages::PageUser>()
        .cloned()
        .unwrap_or_default();
    let (mut parts, _) = response.into_parts();
    // An action's message is shown on the page it led to, once.
    if flash.is_some() && parts.status.is_success() {
        user.flash = flash;
        crate::auth::set_cookie(
            &mut parts.headers,
            crate::routes::actions::FLASH_COOKIE,
            "",
            0,
            false,
        );
    }
    let html = crate::pages::render(&rendered, &user);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No page of ours is meant to be shown inside another site's frame
    // (clickjacking of the action buttons).
    parts
        .headers
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Scripts and styles only from our own files: no inline code runs,
    // whatever text a page shows.
    let google = rendered.template == "login"
        && rendered
            .extra
            .get("google_client_id")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|id| !id.is_empty());
    parts.headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if google {
            GOOGLE_SIGN_IN_POLICY
        } else {
            CONTENT_SECURITY_POLICY
        }),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(html))
}
