//! What every answer of the API gets, whoever wrote it (one layer over the router, `answers`):
//! - `Idempotent-Replayed: true` when any command of the request answered from its first
//!   outcome (a retry with the same `Idempotency-Key`), whichever route ran it;
//! - one error shape: an error the handlers did not write themselves (axum's rejection of a bad
//!   path or query value, a 405 with no body, the body-size limit's 413, the timeout's 408) is
//!   answered in the platform's shape, `{"error":{"code","message"}}`, or under `/api/v1` in
//!   OpenAI's, `{"error":{"message","type","param","code"}}`; its message names the part of the
//!   request at fault, never a Rust type nor the value sent;
//! - `Cache-Control: no-store` on every `/api/` answer that does not set its own: answers carry
//!   session tokens, API keys, node tokens and private data, which no cache may keep;
//! - CORS, on purpose (README, "Browser clients"): `/api/v1/*` (API keys, no cookies) answers
//!   any origin, so browser-based OpenAI clients work; the rest of `/api/` is for the platform's
//!   own pages (same origin, session cookie) and a cross-origin preflight is refused with a 403
//!   that says so.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;

/// How long a browser may keep a `/api/v1` preflight's answer.
pub const CORS_MAX_AGE_SECS: u32 = 600;
/// The longest `Access-Control-Request-Headers` reflected.
const CORS_REQUEST_HEADERS_CHARS_MAX: usize = 1024;
/// Methods of the OpenAI-compatible routes.
const CORS_METHODS: &str = "GET, POST, OPTIONS";
/// Headers a browser client may read from a `/api/v1` answer.
const CORS_EXPOSED: &str = "retry-after, x-request-id, content-type";

fn is_openai(path: &str) -> bool {
    path.starts_with("/api/v1/")
}

pub async fn answers(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let origin = request.headers().get(header::ORIGIN).cloned();
    if request.method() == Method::OPTIONS
        && origin.is_some()
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&path, request.headers());
    }
    let (mut response, replayed) =
        aiforge_commands::framework::observe_replays(next.run(request)).await;
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        response = uniform(&path, response).await;
    }
    let headers = response.headers_mut();
    if path.starts_with("/api/") && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if is_openai(&path) && origin.is_some() {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSED),
        );
    }
    response
}

fn preflight(path: &str, request: &HeaderMap) -> Response {
    if !is_openai(path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cors_refused",
            "the platform API answers its own pages only (same origin); from another origin, \
             use the OpenAI-compatible /api/v1 routes with an API key",
        )
        .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_METHODS),
    );
    // No credentials are sent cross-origin (the key is a header), so the headers asked for may
    // be allowed as asked: `*` would not cover Authorization.
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| v.len() <= CORS_REQUEST_HEADERS_CHARS_MAX)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(CORS_MAX_AGE_SECS),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error answer the handlers did not write, in the one shape.
async fn uniform(path: &str, response: Response) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    // axum's rejections are short text; read a little of it to tell a path from a query.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let (code, message, param): (&'static str, String, Option<String>) = match status {
        StatusCode::BAD_REQUEST if text.starts_with("Failed to deserialize query string") => {
            let field = query_field(&text);
            (
                "invalid_query",
                match &field {
                    Some(field) => format!("query parameter '{field}' has an invalid value"),
                    None => "the query string has an invalid or unknown parameter".to_string(),
                },
                field,
            )
        }
        StatusCode::BAD_REQUEST if text.starts_with("Invalid URL") || text.contains("path") => (
            "invalid_path",
            "a value in the path is not valid for this route".to_string(),
            None,
        ),
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "the request could not be read".to_string(),
            None,
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_string(), None),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "method not allowed on this route".to_string(),
            None,
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request took too long and was dropped".to_string(),
            None,
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            "request body is too large".to_string(),
            None,
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "unsupported Content-Type for this route".to_string(),
            None,
        ),
        status if status.is_server_error() => {
            tracing::error!(%status, body = %crate::error::excerpt(&text), "an error answer without a body shape");
            ("internal", "internal server error".to_string(), None)
        }
        _ => (
            "bad_request",
            status
                .canonical_reason()
                .unwrap_or("the request was refused")
                .to_string(),
            None,
        ),
    };
    let body = if is_openai(path) {
        let kind = match status {
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
    } else {
        let mut error = json!({"code": code, "message": message});
        if let Some(field) = param {
            error["field"] = json!(field);
        }
        json!({ "error": error })
    };
    let mut response = Response::from_parts(parts, Body::from(body.to_string()));
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The parameter a query rejection names (`Failed to deserialize query string: page: invalid
/// digit…`), when it is a plain name.
fn query_field(text: &str) -> Option<String> {
    let rest = text.strip_prefix("Failed to deserialize query string: ")?;
    let (field, _) = rest.split_once(": ")?;
    (!field.is_empty()
        && field.len() <= 64
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then(|| field.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_rejection_names_its_parameter_only_when_plain() {
        assert_eq!(
            query_field("Failed to deserialize query string: page: invalid digit found in string")
                .as_deref(),
            Some("page")
        );
        assert_eq!(
            query_field("Failed to deserialize query string: unknown field `x`, expected `a`"),
            None
        );
    }
}
