//! The web app at `/`, beside the API, and the security headers of every response.
//!
//! The app (`web/`, SvelteKit with the static adapter) is served from a directory
//! (`AIFORGE_WEB_DIR`, default `web/build` under the working directory when it exists) rather
//! than embedded in the binary: `cargo build` then needs no Node.js, and a rebuilt app is
//! served without rebuilding the server. A page path that is no file gets `index.html` (the
//! single-page app routes in the browser); a missing asset (a path with an extension, or under
//! `/_app/`) is a plain 404. `/api/...`, `/healthz`, `/readyz` and `/metrics` never reach the
//! app: an unknown API path keeps the API's JSON 404.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY};
use axum::http::header::{X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// Scripts, styles, images, fonts and connections from this origin only; no inline script, no
/// plugins, no framing, no `<base>` elsewhere. `style-src-attr 'unsafe-inline'` allows `style`
/// attributes (SvelteKit's screen-reader route announcer has one), never `<style>` elements.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; font-src 'self'; \
     connect-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'; \
     form-action 'self'";
/// Built assets have content hashes in their names, so they never change.
const IMMUTABLE_CACHE: &str = "public, max-age=31536000, immutable";
const DEFAULT_WEB_DIR: &str = "web/build";
const INDEX_HTML: &str = "index.html";

/// The built web app on disk.
#[derive(Clone)]
pub struct WebApp {
    dir: PathBuf,
}

impl WebApp {
    /// The configured directory, which must hold `index.html`; without a setting, `web/build`
    /// when it holds one, else no web app (the API still runs).
    pub fn locate(configured: Option<&Path>) -> Result<Option<Self>, String> {
        match configured {
            Some(dir) if dir.join(INDEX_HTML).is_file() => Ok(Some(Self { dir: dir.into() })),
            Some(dir) => Err(format!(
                "AIFORGE_WEB_DIR {} has no {INDEX_HTML} (build it: cd web && npm ci && npm run build)",
                dir.display()
            )),
            None => {
                let dir = Path::new(DEFAULT_WEB_DIR);
                Ok(dir
                    .join(INDEX_HTML)
                    .is_file()
                    .then(|| Self { dir: dir.into() }))
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path();
        let asset = path.starts_with("/_app/") || last_segment_has_extension(path);
        let immutable = path.starts_with("/_app/immutable/");
        let files = ServeDir::new(&self.dir);
        let mut response = if asset {
            files.oneshot(request).await.map(|r| r.map(Body::new))
        } else {
            files
                .fallback(ServeFile::new(self.dir.join(INDEX_HTML)))
                .oneshot(request)
                .await
                .map(|r| r.map(Body::new))
        }
        .unwrap_or_else(|never| match never {});
        let cache = if immutable && response.status().is_success() {
            IMMUTABLE_CACHE
        } else {
            // Pages and unhashed files (index.html, theme.js) are revalidated on every load, so
            // a new build is picked up at once.
            "no-cache"
        };
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        response
    }
}

fn last_segment_has_extension(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

/// Paths that belong to the server, never to the web app.
fn is_server_path(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Adds the web app (when there is one) and the security headers to the API router.
pub fn with_web_app(router: Router, web: Option<WebApp>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(web),
        pages_and_headers,
    ))
}

async fn pages_and_headers(
    State(web): State<Arc<Option<WebApp>>>,
    request: Request,
    next: Next,
) -> Response {
    let page = matches!(*request.method(), Method::GET | Method::HEAD)
        && !is_server_path(request.uri().path());
    let mut response = match web.as_ref() {
        Some(web) if page => web.serve(request).await,
        _ => next.run(request).await.into_response(),
    };
    security_headers(response.headers_mut());
    response
}

/// On every response, API answers included: a JSON body opened as a document gets the same
/// protection as a page.
fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_operations_paths_never_reach_the_web_app() {
        for path in [
            "/api",
            "/api/",
            "/api/nope",
            "/api/v1/models",
            "/healthz",
            "/metrics",
        ] {
            assert!(is_server_path(path), "{path}");
        }
        for path in ["/", "/account", "/apis", "/api-docs", "/plans/x"] {
            assert!(!is_server_path(path), "{path}");
        }
    }

    #[test]
    fn a_path_with_an_extension_is_an_asset() {
        assert!(last_segment_has_extension("/favicon.svg"));
        assert!(last_segment_has_extension(
            "/_app/immutable/entry/start.abc.js"
        ));
        assert!(!last_segment_has_extension("/account"));
        assert!(!last_segment_has_extension("/chat/0190a.b/"));
    }

    #[test]
    fn the_policy_allows_no_inline_script() {
        let script = CONTENT_SECURITY_POLICY_VALUE
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert_eq!(script.trim(), "script-src 'self'");
        assert!(CONTENT_SECURITY_POLICY_VALUE.contains("frame-ancestors 'none'"));
    }

    /// The chat shows model output: should its sanitiser ever let an image or a connection
    /// through, the browser still fetches nothing from another origin.
    #[test]
    fn the_policy_loads_images_and_connects_to_this_origin_only() {
        let directive = |name: &str| {
            CONTENT_SECURITY_POLICY_VALUE
                .split(';')
                .map(str::trim)
                .find(|d| d.split_whitespace().next() == Some(name))
                .unwrap()
                .to_string()
        };
        assert_eq!(directive("img-src"), "img-src 'self' data:");
        assert_eq!(directive("connect-src"), "connect-src 'self'");
        assert_eq!(directive("default-src"), "default-src 'self'");
        assert_eq!(directive("object-src"), "object-src 'none'");
    }
}
