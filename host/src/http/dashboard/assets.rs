//! The dashboard's page, script and style sheet, compiled into the binary (no files to deploy,
//! nothing fetched from elsewhere) and served with their content types, validators and cache
//! lifetimes. The page names the script and style sheet with a digest of their contents
//! (`app.js?v=…`), so a browser may keep them for a year: a new build names new ones. The
//! page itself is revalidated on every load (`no-cache` with an `ETag`).

use std::sync::LazyLock;

use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

/// The page: no script or style from anywhere but this host, no framing (the page has buttons
/// that purge queues), no referrer.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
pub(super) struct Asset {
    body: Bytes,
    content_type: &'static str,
    /// The first 16 hex digits of the SHA-256 of `body`.
    version: String,
}

impl Asset {
    fn new(body: Bytes, content_type: &'static str) -> Self {
        let mut version = crate::runtime::digest(&body);
        version.truncate(16);
        Self {
            body,
            content_type,
            version,
        }
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// The file, or `304 Not Modified` when the request already has this version; with
    /// `immutable`, cacheable for a year.
    fn respond(&self, request: &HeaderMap, immutable: bool) -> Response {
        let etag = self.etag();
        let cache = if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        headers.insert(
            header::ETAG,
            HeaderValue::from_str(&etag).expect("a hex etag is a header value"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        let matches = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',')
                    .any(|tag| tag.trim() == etag || tag.trim() == "*")
            });
        if matches {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (headers, self.body.clone()).into_response()
    }
}

static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        Bytes::from_static(include_bytes!("static/app.js")),
        "text/javascript; charset=utf-8",
    )
});

static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        Bytes::from_static(include_bytes!("static/app.css")),
        "text/css; charset=utf-8",
    )
});

/// The page, naming the current script and style sheet.
static PAGE: LazyLock<Asset> = LazyLock::new(|| {
    let page = include_str!("static/index.html")
        .replace(
            "{{style}}",
            &format!("/dashboard/app.css?v={}", STYLE.version),
        )
        .replace(
            "{{script}}",
            &format!("/dashboard/app.js?v={}", SCRIPT.version),
        );
    Asset::new(Bytes::from(page), "text/html; charset=utf-8")
});

/// `?v=` of an asset URL.
#[derive(Deserialize)]
pub(super) struct Version {
    v: Option<String>,
}

/// `GET /`: the page.
pub(super) async fn page(request: Request) -> Response {
    let mut response = PAGE.respond(request.headers(), false);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /dashboard/app.js`.
pub(super) async fn script(Query(version): Query<Version>, headers: HeaderMap) -> Response {
    let immutable = version.v.as_deref() == Some(SCRIPT.version.as_str());
    SCRIPT.respond(&headers, immutable)
}

/// `GET /dashboard/app.css`.
pub(super) async fn style(Query(version): Query<Version>, headers: HeaderMap) -> Response {
    let immutable = version.v.as_deref() == Some(STYLE.version.as_str());
    STYLE.respond(&headers, immutable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_the_current_script_and_style_sheet() {
        let page = std::str::from_utf8(&PAGE.body).unwrap();
        assert!(page.contains(&format!("/dashboard/app.js?v={}", SCRIPT.version)));
        assert!(page.contains(&format!("/dashboard/app.css?v={}", STYLE.version)));
        assert!(!page.contains("{{"), "a placeholder is left: {page}");
        assert_eq!(SCRIPT.version.len(), 16);
    }

    #[test]
    fn a_known_version_is_not_modified() {
        let mut request = HeaderMap::new();
        let fresh = STYLE.respond(&request, true);
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(
            fresh.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            fresh.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&STYLE.etag()).unwrap(),
        );
        assert_eq!(
            STYLE.respond(&request, false).status(),
            StatusCode::NOT_MODIFIED
        );
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(STYLE.respond(&request, false).status(), StatusCode::OK);
    }
}
