//! The page itself: HTML, CSS, script and icon compiled into the binary, served with a
//! Content-Security-Policy that lets the page load nothing but these files and talk to
//! nothing but this origin. No CDN, no font, no build step: it works offline.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// Scripts, styles and images only from this origin (no inline script or style),
/// requests only to this origin, no forms, no framing (clickjacking), no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The paths the page is made of, after `/dashboard`.
pub const ASSETS: [&str; 4] = ["", "/app.js", "/app.css", "/icon.svg"];

/// The file at `/dashboard{suffix}`, with its security headers; `None` if there is none.
pub fn asset(suffix: &str) -> Option<Response> {
    let (body, content_type) = match suffix {
        "" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "/icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return None,
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure(h);
    Some(resp)
}

/// Headers for every dashboard response (the page, its files, the summary JSON).
pub fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The page changes with the binary and the data every few seconds: never cached
    // by the browser or a proxy in between.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
