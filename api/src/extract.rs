//! Request extractors that answer failures in the platform's error shape.
//! `CommandJson<T>` reads a bounded JSON body and the command's idempotency metadata: the
//! `Idempotency-Key` header (or a fresh UUIDv7) and a keyed hash of method, path and body, so
//! the same key with a different request is told apart.

use aiforge_commands::CommandMeta;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

pub struct CommandJson<T> {
    pub body: T,
    pub meta: CommandMeta,
}

impl<T: DeserializeOwned> FromRequest<AppState> for CommandJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body is too large",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    rejection.body_text(),
                )
            }
        })?;
        let meta = command_meta(state, &headers, method.as_str(), &path, &bytes)?;
        let body = parse_json(&bytes)?;
        Ok(CommandJson { body, meta })
    }
}

/// A command's idempotency metadata from its request: the `Idempotency-Key` header (or a fresh
/// UUIDv7) and, for a keyed request, a keyed hash of method, path and `content` (the body, or
/// for a streamed upload the digest of what was stored), so the same key with a different
/// request is told apart.
pub fn command_meta(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    method: &str,
    path: &str,
    content: &[u8],
) -> Result<CommandMeta, ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_CHARS_MAX)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_idempotency_key",
                        format!("Idempotency-Key must be 1-{IDEMPOTENCY_KEY_CHARS_MAX} visible ASCII characters"),
                    )
                })?;
            Some(key.to_string())
        }
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Client keys are scoped to the caller's credentials (Stripe scopes them per account),
    // so two clients choosing the same key do not collide; the prefix keeps them apart from
    // generated ids.
    let (command_id, request_hash) = match key {
        Some(key) => {
            let caller = headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .or_else(|| state.session.token(headers).map(str::as_bytes))
                .map(|v| hex::encode(Sha256::digest(v))[..16].to_string())
                .unwrap_or_else(|| "anonymous".to_string());
            // Only a keyed request can be retried, so only it needs the request's hash.
            let mut hasher = Sha256::new();
            hasher.update(state.jwt.request_hash_key());
            for part in [method.as_bytes(), path.as_bytes(), content] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part);
            }
            (
                format!("client:{caller}:{key}"),
                hex::encode(hasher.finalize()),
            )
        }
        // No key: a fresh id that no retry can name (CommandMeta::generated's convention).
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            (id.clone(), id)
        }
    };
    Ok(CommandMeta {
        command_id,
        request_hash,
        actor: None,
        request_id,
    })
}

/// Parses a JSON body: malformed JSON is a 400, a well-formed body of the wrong shape a 422
/// naming the field where serde can tell.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let refuse = |err: serde_json::Error| json_error(bytes, err);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde::Deserialize::deserialize(&mut deserializer).map_err(refuse)?;
    deserializer.end().map_err(refuse)?;
    Ok(value)
}

/// 400 `malformed_json` whenever the bytes are not JSON at all (whatever part of the body's
/// type was reading when it noticed), else 422 `invalid_body`; the message in words a client
/// reads (`crate::error::public_message`).
fn json_error(bytes: &[u8], err: serde_json::Error) -> ApiError {
    let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
    let message = crate::error::public_message(&err.to_string());
    if well_formed && err.classify() == serde_json::error::Category::Data {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("request body does not match the expected shape: {message}"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {message}"),
        )
    }
}

/// `network` of a request body or query: "ethereum" or "tron" (422 naming the field otherwise).
pub fn parse_network(value: &str) -> Result<aiforge_domain::wallet::Network, ApiError> {
    value
        .parse()
        .map_err(|e: aiforge_domain::wallet::UnknownNetwork| {
            ApiError::invalid_field("network", e.to_string())
        })
}

/// A wallet named by a request: network plus address, the address made canonical (422 naming
/// the field at fault otherwise).
pub fn parse_wallet(
    network: &str,
    address: &str,
) -> Result<aiforge_domain::wallet::Wallet, ApiError> {
    Ok(aiforge_commands::wallet_auth::parse_wallet(
        parse_network(network)?,
        address,
    )?)
}

/// The last page a list may be asked for: far beyond any list's length, and small enough that
/// `(page - 1) * per_page` stays exact.
pub const PAGE_MAX: i64 = 1_000_000;

/// `?page=&per_page=` of a paged list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From 1 (the default).
    page: Option<i64>,
    /// Items per page, from 1 to the route's maximum.
    per_page: Option<i64>,
}

impl PageQuery {
    pub fn new(page: Option<i64>, per_page: Option<i64>) -> Self {
        Self { page, per_page }
    }

    /// (page, per_page, offset), with `per_page` defaulting to `default` and bounded by `max`,
    /// and `page` by `PAGE_MAX` (so the offset can neither overflow nor wrap).
    pub fn resolve(&self, default: i64, max: i64) -> Result<(i64, i64, i64), ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(default);
        if !(1..=PAGE_MAX).contains(&page) {
            return Err(ApiError::invalid_field(
                "page",
                format!("page is 1-{PAGE_MAX}"),
            ));
        }
        if !(1..=max).contains(&per_page) {
            return Err(ApiError::invalid_field(
                "per_page",
                format!("per_page is 1-{max}"),
            ));
        }
        let offset = (page - 1)
            .checked_mul(per_page)
            .ok_or_else(|| ApiError::invalid_field("page", format!("page is 1-{PAGE_MAX}")))?;
        Ok((page, per_page, offset))
    }
}

/// The body of a command that takes no fields: `{}`, or `null` where it is an `Option<Empty>`
/// (an empty body is not JSON: 400 `malformed_json`).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmptyBody)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_is_bounded_and_never_wraps() {
        assert_eq!(
            PageQuery::new(None, None).resolve(20, 100).unwrap(),
            (1, 20, 0)
        );
        assert_eq!(
            PageQuery::new(Some(3), Some(4)).resolve(20, 100).unwrap(),
            (3, 4, 8)
        );
        for (page, per_page, field) in [
            (Some(4_611_686_018_427_387_906), Some(4), "page"),
            (Some(0), None, "page"),
            (Some(-1), None, "page"),
            (Some(PAGE_MAX + 1), Some(1), "page"),
            (Some(1), Some(0), "per_page"),
            (Some(1), Some(101), "per_page"),
        ] {
            let err = PageQuery::new(page, per_page).resolve(20, 100).unwrap_err();
            assert_eq!((err.status.as_u16(), err.field), (422, Some(field)));
        }
    }
}
