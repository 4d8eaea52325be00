//! The viewer page for people: `/`, with its script and style, embedded in the binary.
//!
//! The page calls the same API as scripts do, with the same bearer token. Everything it
//! shows is attacker-controlled text, so besides rendering through `textContent` it is
//! served under a Content-Security-Policy that allows only its own script and style: no
//! inline script, no other origin, no framing.

use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use crate::http::{self, Body};

const PAGE: &str = include_str!("viewer/index.html");
const SCRIPT: &str = include_str!("viewer/viewer.js");
const STYLE: &str = include_str!("viewer/viewer.css");

/// The policy every viewer response carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The viewer's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// The HTML page, at `/`.
    Page,
    /// The script, at `/viewer.js`.
    Script,
    /// The stylesheet, at `/viewer.css`.
    Style,
}

/// A viewer file, with its Content-Security-Policy and headers against framing and sniffing.
pub fn serve(asset: Asset) -> Response<Body> {
    let (content_type, text) = match asset {
        Asset::Page => ("text/html; charset=utf-8", PAGE),
        Asset::Script => ("text/javascript; charset=utf-8", SCRIPT),
        Asset::Style => ("text/css; charset=utf-8", STYLE),
    };
    // Revalidated on every load, so a new auditd's page is never mixed with an old script.
    let mut response = http::cached_response(StatusCode::OK, content_type, "no-cache", text);
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}
