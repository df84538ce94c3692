//! The OpenAI-compatible API (`/api/v1/*`), authenticated by API keys (`Authorization: Bearer
//! aiforge_…`). Every failure is answered in OpenAI's error shape,
//! `{"error":{"message","type","param","code"}}`, so the official SDKs raise their usual
//! exceptions. A key is looked up by its SHA-256 and the digests compared in constant time; the
//! plaintext is never stored, logged or echoed.

use aiforge_commands::marketplace::{key_sha256, API_KEY_PREFIX};
use aiforge_projections::marketplace::KeyRow;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl OpenAiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. Subscribe to a service on the marketplace to get one.",
        )
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "OpenAI-compatible request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "The server had an error while processing your request.",
        )
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for OpenAiError {
    fn from(err: sqlx::Error) -> Self {
        OpenAiError::internal(err)
    }
}

/// Compares two equal-length byte strings without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request authenticated by a live API key whose subscription is active.
pub struct ApiKeyAuth {
    pub key: KeyRow,
}

impl FromRequestParts<AppState> for ApiKeyAuth {
    type Rejection = OpenAiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| k.starts_with(API_KEY_PREFIX))
            .ok_or_else(OpenAiError::invalid_key)?;
        let digest = key_sha256(presented);
        let key = aiforge_projections::marketplace::find_key(&state.db, &digest)
            .await?
            .filter(|row| constant_time_eq(row.key_sha256.as_bytes(), digest.as_bytes()))
            .ok_or_else(OpenAiError::invalid_key)?;
        if key.status != "active" {
            return Err(OpenAiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "subscription_inactive",
                "This key's subscription is not active yet: its payment has not confirmed.",
            ));
        }
        Ok(ApiKeyAuth { key })
    }
}

async fn model_object(state: &AppState, model_id: &str) -> Result<Option<Value>, OpenAiError> {
    let Some(row) = aiforge_projections::marketplace::find_model(&state.db, model_id).await? else {
        return Ok(None);
    };
    let created = time::OffsetDateTime::parse(
        &row.uploaded_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t.unix_timestamp())
    .unwrap_or(0);
    Ok(Some(json!({
        "id": row.model_id,
        "object": "model",
        "created": created,
        "owned_by": format!("{}:{}", row.owner_kind, row.owner_id),
        "name": row.name,
    })))
}

/// `GET /api/v1/models`: the models this key may use (its service's model).
pub async fn list_models(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
) -> Result<Json<Value>, OpenAiError> {
    let data: Vec<Value> = model_object(&state, &auth.key.model_id)
        .await?
        .into_iter()
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /api/v1/models/{id}`: 404 for a model that does not exist, 403 for one this key is not
/// for.
pub async fn get_model(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let object = model_object(&state, &model_id).await?;
    let Some(object) = object else {
        return Err(OpenAiError {
            param: Some("model"),
            ..OpenAiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("The model '{model_id}' does not exist."),
            )
        });
    };
    if model_id != auth.key.model_id {
        return Err(OpenAiError {
            param: Some("model"),
            ..OpenAiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "model_not_permitted",
                format!("This key is not for the model '{model_id}'."),
            )
        });
    }
    Ok(Json(object))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
