//! The browser session and its CSRF rule, in one place.
//!
//! A browser signs in by sending `X-AIForge-CSRF` with its sign-in request: the answer then sets
//! the session token as a cookie (`HttpOnly`, so page script never sees it; `SameSite=Strict`;
//! `Path=/`; `Secure` and the `__Host-` prefix when the public URL is https) instead of putting
//! it in the body. API clients send no such header and keep getting the token in the body, to
//! send as `Authorization: Bearer`.
//!
//! CSRF: a cookie rides along with requests that another page makes, so a cookie-authenticated
//! unsafe request (anything but GET, HEAD, OPTIONS) must prove it comes from this app: it carries
//! `X-AIForge-CSRF` (a custom header, which a cross-origin page can send only after a CORS
//! preflight this server never grants) AND the browser says it is same-origin
//! (`Sec-Fetch-Site: same-origin`, or, where the browser sends no fetch metadata, an `Origin`
//! equal to the public URL's origin). Otherwise 403 `csrf_refused`. `AuthUser` (auth.rs) applies
//! this to every cookie-authenticated request; Bearer requests are not subject to it (a page
//! cannot make a browser attach a Bearer token). The same proof guards the sign-in that sets the
//! cookie (login CSRF) and sign-out.
//!
//! Why `SameSite=Strict` and not Lax: the app is a single-page app whose HTML and scripts need no
//! session; only its own same-origin `fetch` calls do, and those carry a Strict cookie. A link
//! from another site therefore loses nothing, and no cross-site request of any kind carries the
//! cookie. (Another port of the same host is the same *site*, so SameSite alone is not enough:
//! that is what the origin check is for.)

use axum::http::header::{COOKIE, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::error::ApiError;

/// The header the web app sends on every request; see the module docs.
pub const CSRF_HEADER: &str = "x-aiforge-csrf";
const COOKIE_NAME: &str = "aiforge_session";
/// With `Secure`, the browser refuses this name unless it is also `Path=/` without a `Domain`:
/// a sibling subdomain cannot plant or overwrite it.
const SECURE_COOKIE_NAME: &str = "__Host-aiforge_session";
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// How this server names, sets and checks its session cookie.
#[derive(Debug, Clone)]
pub struct SessionCookies {
    name: &'static str,
    secure: bool,
    /// `scheme://host[:port]` of `AIFORGE_PUBLIC_URL`, as a browser writes `Origin`.
    public_origin: String,
    max_age_secs: i64,
}

impl SessionCookies {
    pub fn new(public_url: &str, max_age_secs: i64) -> Self {
        let public_origin = origin_of(public_url);
        let secure = public_origin.starts_with("https://");
        Self {
            name: if secure {
                SECURE_COOKIE_NAME
            } else {
                COOKIE_NAME
            },
            secure,
            public_origin,
            max_age_secs,
        }
    }

    pub fn public_origin(&self) -> &str {
        &self.public_origin
    }

    /// The session token in the request's cookies, if any.
    pub fn token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, value)| *name == self.name && !value.is_empty())
            .map(|(_, value)| value)
    }

    /// The CSRF proof (module docs): the custom header, and a same-origin browser request.
    pub fn check_same_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if headers.get(CSRF_HEADER).is_none() {
            return Err(refused("this request needs the X-AIForge-CSRF header"));
        }
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        match (header(SEC_FETCH_SITE), header(ORIGIN.as_str())) {
            (Some("same-origin"), _) => Ok(()),
            (Some(_), _) => Err(refused("a cross-origin request cannot use the session")),
            (None, Some(origin)) if origin.eq_ignore_ascii_case(&self.public_origin) => Ok(()),
            (None, Some(_)) => Err(refused("this origin cannot use the session")),
            (None, None) => Err(refused(
                "a cookie-authenticated write needs an Origin or Sec-Fetch-Site header",
            )),
        }
    }

    /// Whether a sign-in request asks for a cookie session: it sends `X-AIForge-CSRF`, and then
    /// it must pass the same-origin check (so a foreign page cannot sign a browser in, the
    /// "login CSRF"). Without the header: an API client, answered with the token in the body.
    pub fn wants_cookie(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        if headers.get(CSRF_HEADER).is_none() {
            return Ok(false);
        }
        self.check_same_origin(headers)?;
        Ok(true)
    }

    fn cookie(&self, value: &str, max_age_secs: i64) -> Result<HeaderValue, ApiError> {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}",
            self.name
        ))
        .map_err(ApiError::internal)
    }

    /// The answer to a successful sign-in: for a browser (`wants_cookie`), the token goes into
    /// the cookie and is withheld from the body (`"session": "cookie"`); for an API client the
    /// body is unchanged.
    pub fn signed_in(&self, browser: bool, token: &str, mut body: Value) -> Response {
        if !browser {
            return Json(body).into_response();
        }
        let cookie = match self.cookie(token, self.max_age_secs) {
            Ok(cookie) => cookie,
            Err(e) => return e.into_response(),
        };
        if let Some(fields) = body.as_object_mut() {
            fields.remove("access_token");
            fields.remove("token_type");
            fields.insert("session".into(), Value::from("cookie"));
        }
        ([(SET_COOKIE, cookie)], Json(body)).into_response()
    }

    /// `POST /api/auth/logout`: clears the cookie. Session tokens are not revoked on the
    /// server (they expire after `jwt_ttl_secs`); the browser forgets its own.
    pub fn signed_out(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        if self.token(headers).is_some() {
            self.check_same_origin(headers)?;
        }
        let cookie = self.cookie("", 0)?;
        Ok((
            [(SET_COOKIE, cookie)],
            Json(serde_json::json!({"signed_out": true})),
        )
            .into_response())
    }
}

/// Whether a method can change state, and so needs the CSRF proof under a cookie.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "csrf_refused", message)
}

/// `scheme://host[:port]` of a URL, lower-cased, without a default port or a path: how
/// browsers serialise `Origin`.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_ascii_lowercase();
    let host = match (scheme.as_str(), host.rsplit_once(':')) {
        ("http", Some((name, "80"))) | ("https", Some((name, "443"))) => name.to_string(),
        _ => host,
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_public_origin_is_written_as_browsers_write_origin() {
        assert_eq!(origin_of("http://localhost:8080"), "http://localhost:8080");
        assert_eq!(
            origin_of("HTTPS://AIForge.example:443/app/"),
            "https://aiforge.example"
        );
        assert_eq!(origin_of("http://127.0.0.1:80/x?y#z"), "http://127.0.0.1");
    }

    #[test]
    fn an_https_public_url_makes_a_secure_host_only_cookie() {
        let cookies = SessionCookies::new("https://aiforge.example", 60);
        let set = cookies.cookie("t", 60).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("__Host-aiforge_session=t; Path=/; HttpOnly; SameSite=Strict"));
        assert!(set.ends_with("; Secure"));
        let plain = SessionCookies::new("http://localhost:8080", 60)
            .cookie("t", 60)
            .unwrap();
        assert!(!plain.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn the_token_is_found_among_other_cookies_and_cookie_headers() {
        let cookies = SessionCookies::new("http://localhost:8080", 60);
        let map = headers(&[
            ("cookie", "theme=dark; other=1"),
            ("cookie", "aiforge_session_x=no; aiforge_session=abc.def"),
        ]);
        assert_eq!(cookies.token(&map), Some("abc.def"));
        assert_eq!(
            cookies.token(&headers(&[("cookie", "aiforge_session=")])),
            None
        );
    }

    #[test]
    fn a_write_needs_the_custom_header_and_a_same_origin_browser() {
        let cookies = SessionCookies::new("http://localhost:8080", 60);
        let ok = |pairs| cookies.check_same_origin(&headers(pairs)).is_ok();
        assert!(ok(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "same-origin")]));
        assert!(ok(&[
            (CSRF_HEADER, "1"),
            ("origin", "http://localhost:8080")
        ]));
        assert!(!ok(&[("sec-fetch-site", "same-origin")]));
        assert!(!ok(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "same-site")]));
        assert!(!ok(&[
            (CSRF_HEADER, "1"),
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://localhost:8080")
        ]));
        assert!(!ok(&[
            (CSRF_HEADER, "1"),
            ("origin", "http://localhost:8081")
        ]));
        assert!(!ok(&[(CSRF_HEADER, "1"), ("origin", "null")]));
        assert!(!ok(&[(CSRF_HEADER, "1")]));
    }

    #[test]
    fn only_state_changing_methods_need_the_proof() {
        assert!(!is_unsafe(&Method::GET));
        assert!(!is_unsafe(&Method::HEAD));
        assert!(is_unsafe(&Method::POST));
        assert!(is_unsafe(&Method::PUT));
        assert!(is_unsafe(&Method::PATCH));
        assert!(is_unsafe(&Method::DELETE));
    }
}
