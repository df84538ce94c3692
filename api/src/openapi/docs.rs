//! `GET /api/docs`: a browsable page of the OpenAPI document, built in the browser from
//! `/api/openapi.json` by a small script of our own (`docs.js`). Everything is served from the
//! binary (the network may be closed: no CDN), and the script and the style are separate
//! routes, never inline, so the page runs under a Content-Security-Policy that allows only
//! this origin's scripts; the page sends that policy itself.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE_HTML: &str = include_str!("docs.html");
const SCRIPT_JS: &str = include_str!("docs.js");
const STYLE_CSS: &str = include_str!("docs.css");

/// Only this origin's script, style and data; no inline script or style, no frames.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /api/docs`
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "docs",
    operation_id = "docs_page",
    responses((status = 200, description = "The browsable page of this document", content_type = "text/html", body = String)),
)]
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE_HTML,
    )
}

/// `GET /api/docs/app.js`
#[utoipa::path(
    get,
    path = "/api/docs/app.js",
    tag = "docs",
    operation_id = "docs_script",
    responses((status = 200, description = "The page's script", content_type = "text/javascript", body = String)),
)]
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT_JS,
    )
}

/// `GET /api/docs/app.css`
#[utoipa::path(
    get,
    path = "/api/docs/app.css",
    tag = "docs",
    operation_id = "docs_style",
    responses((status = 200, description = "The page's style sheet", content_type = "text/css", body = String)),
)]
pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE_CSS,
    )
}
