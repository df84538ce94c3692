//! The OpenAI-compatible API (`/api/v1/*`), authenticated by API keys (`Authorization: Bearer
//! aiforge_…`). Every failure is answered in OpenAI's error shape,
//! `{"error":{"message","type","param","code"}}`, so the official SDKs raise their usual
//! exceptions. A key is looked up by its SHA-256 and the digests compared in constant time; the
//! plaintext is never stored, logged or echoed.
//!
//! Two kinds of key: an API subscription's (its service's model) and a user's platform key
//! (`/api/account/api-key`: every model included in plans, under the user's plan).

use aiforge_commands::marketplace::{key_sha256, API_KEY_PREFIX};

use aiforge_commands::gateway::index::lock;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::gateway::Entitlement;
use crate::AppState;

/// An error in OpenAI's shape.
#[derive(Debug, Clone)]
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

    /// Its whole `source()` chain goes to the log; the client gets a generic message.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let cause = cause.into();
        tracing::error!(error = %aiforge_commands::error_chain(&*cause), "OpenAI-compatible request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "The server had an error while processing your request.",
        )
    }
}

impl OpenAiError {
    /// The `{"error": {...}}` body (also sent as a server-sent event when a stream fails).
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": crate::error::bounded(&self.message),
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<sqlx::Error> for OpenAiError {
    fn from(err: sqlx::Error) -> Self {
        OpenAiError::internal(err)
    }
}

pub fn model_not_found(model_id: &str) -> OpenAiError {
    OpenAiError {
        param: Some("model"),
        ..OpenAiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("The model '{model_id}' does not exist or you do not have access to it."),
        )
    }
}

pub fn model_not_permitted(model_id: &str) -> OpenAiError {
    OpenAiError {
        param: Some("model"),
        ..OpenAiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "model_not_permitted",
            format!("This key is not for the model '{model_id}'."),
        )
    }
}

pub fn service_not_permitted() -> OpenAiError {
    OpenAiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "service_not_permitted",
        "This key is not for this service.",
    )
}

pub fn subscription_inactive() -> OpenAiError {
    OpenAiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "subscription_inactive",
        "This key's subscription is not active: its payment has not confirmed, or it was cancelled.",
    )
}

/// The key's account was deactivated by an admin.
pub fn account_deactivated() -> OpenAiError {
    OpenAiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "account_deactivated",
        "This account is deactivated; contact the platform's administrators.",
    )
}

pub fn subscription_expired() -> OpenAiError {
    OpenAiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "subscription_expired",
        "This key's subscription period and its grace have ended; renew the subscription to use this key again.",
    )
}

/// Refuses a subscription's key unless its subscription admits calls at `now` (active, or past
/// its period within the grace): the gateway checks the date itself, so expiry is exact to the
/// second on the app clock and needs no event.
pub fn check_access(
    subscription: &aiforge_commands::gateway::index::Subscription,
    now: time::OffsetDateTime,
) -> Result<(), OpenAiError> {
    use aiforge_domain::api_subscription::Access;
    match lock(subscription).access_at(now) {
        Access::Active | Access::Grace => Ok(()),
        Access::Expired => Err(subscription_expired()),
        Access::PendingPayment | Access::Cancelled => Err(subscription_inactive()),
    }
}

pub fn no_active_plan() -> OpenAiError {
    OpenAiError::new(
        StatusCode::FORBIDDEN,
        "invalid_request_error",
        "plan_inactive",
        "You have no active platform plan. Choose one (Free included) on the plans page.",
    )
}

pub fn model_not_in_plan(model_id: &str) -> OpenAiError {
    OpenAiError {
        param: Some("model"),
        ..OpenAiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "model_not_in_plan",
            format!("The model '{model_id}' is not included in platform plans; subscribe to one of its services for access."),
        )
    }
}

/// Compares two equal-length byte strings without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request authenticated by a live key: an API subscription's (active) or a user's platform
/// key. The key is looked up by its SHA-256 in the gateway's in-memory index (kept current from
/// the event log, so a replaced or revoked key is refused on every instance).
pub struct ApiKeyAuth {
    pub entitlement: Entitlement,
}

impl FromRequestParts<AppState> for ApiKeyAuth {
    type Rejection = OpenAiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let began = std::time::Instant::now();
        let auth = authenticate(parts, state);
        aiforge_commands::stages::AUTH.since(began);
        auth
    }
}

/// The caller of an OpenAI-compatible route, by its key's digest in the key index.
fn authenticate(parts: &Parts, state: &AppState) -> Result<ApiKeyAuth, OpenAiError> {
    let presented = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| k.starts_with(API_KEY_PREFIX))
        .ok_or_else(OpenAiError::invalid_key)?;
    let digest = key_sha256(presented);
    let index = &state.gateway.index;
    if let Some(user_id) = index.platform_key_user(&digest) {
        if index.is_deactivated(&user_id) {
            return Err(account_deactivated());
        }
        return Ok(ApiKeyAuth {
            entitlement: Entitlement::Plan { user_id },
        });
    }
    let subscription = index.by_key(&digest).ok_or_else(OpenAiError::invalid_key)?;
    let consumer = lock(&subscription).consumer.clone();
    if index.is_deactivated(&consumer) {
        return Err(account_deactivated());
    }
    check_access(&subscription, state.clock.now())?;
    Ok(ApiKeyAuth {
        entitlement: Entitlement::Subscription(subscription),
    })
}

fn model_object(state: &AppState, model_id: &str) -> Option<Value> {
    let model = state.gateway.index.model(model_id)?;
    Some(json!({
        "id": model_id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "name": model.name,
    }))
}

/// The models a key may use (under a service's base URL, only that service's): an API
/// subscription's model, or every model included in plans (none without an active plan).
fn key_models(state: &AppState, auth: &ApiKeyAuth, service_scope: Option<&str>) -> Vec<String> {
    match &auth.entitlement {
        Entitlement::Subscription(subscription) => vec![lock(subscription).model_id.clone()],
        Entitlement::Plan { user_id } => {
            let index = &state.gateway.index;
            if index.plan_of(user_id, state.clock.now()).is_none() {
                return Vec::new();
            }
            index
                .plan_models()
                .into_iter()
                .filter(|m| service_scope.is_none_or(|scope| scope == m.service_id))
                .map(|m| m.model_id)
                .collect()
        }
    }
}

/// `GET /api/v1/models`: the models this key may use (an API subscription's key: its service's
/// model; the platform key: every model included in plans).
#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "openai",
    operation_id = "list_models",
    summary = "OpenAI: list models",
    responses(
        (status = 200, description = "The models this key may use", body = crate::openapi::schemas::ModelList),
        (status = 403, description = "The key's subscription is not active (`subscription_inactive`) or expired (`subscription_expired`)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn list_models(State(state): State<AppState>, auth: ApiKeyAuth) -> Json<Value> {
    models_json(&state, &auth, None)
}

fn models_json(state: &AppState, auth: &ApiKeyAuth, service_scope: Option<&str>) -> Json<Value> {
    let data: Vec<Value> = key_models(state, auth, service_scope)
        .iter()
        .filter_map(|id| model_object(state, id))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /api/v1/models/{id}`: 404 for a model that does not exist, 403 for one this key is not
/// for.
#[utoipa::path(
    get,
    path = "/api/v1/models/{model_id}",
    tag = "openai",
    operation_id = "retrieve_model",
    summary = "OpenAI: retrieve a model",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The model", body = crate::openapi::schemas::ModelObject),
        (status = 403, description = "The key is not for this model (`model_not_permitted`) or not active", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn get_model(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    model_for(&state, &auth, &model_id, None)
}

fn model_for(
    state: &AppState,
    auth: &ApiKeyAuth,
    model_id: &str,
    service_scope: Option<&str>,
) -> Result<Json<Value>, OpenAiError> {
    let object = model_object(state, model_id).ok_or_else(|| model_not_found(model_id))?;
    if !key_models(state, auth, service_scope)
        .iter()
        .any(|m| m == model_id)
    {
        return Err(match auth.entitlement {
            Entitlement::Subscription(_) => model_not_permitted(model_id),
            Entitlement::Plan { .. } => model_not_in_plan(model_id),
        });
    }
    Ok(Json(object))
}

/// `GET /api/v1/services/{service_id}/models`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service_id}/models",
    tag = "openai",
    operation_id = "list_service_models",
    summary = "OpenAI (service base URL): list models",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
    ),
    responses(
        (status = 200, description = "The models this key may use", body = crate::openapi::schemas::ModelList),
        (status = 403, description = "The key is not for this service (`service_not_permitted`) or not active", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn service_models(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    Path(service_id): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    check_service(&auth, &service_id)?;
    Ok(models_json(&state, &auth, Some(&service_id)))
}

/// `GET /api/v1/services/{service_id}/models/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/services/{service_id}/models/{model_id}",
    tag = "openai",
    operation_id = "retrieve_service_model",
    summary = "OpenAI (service base URL): retrieve a model",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The model", body = crate::openapi::schemas::ModelObject),
        (status = 403, description = "The key is not for this service or model", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn service_model(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    Path((service_id, model_id)): Path<(String, String)>,
) -> Result<Json<Value>, OpenAiError> {
    check_service(&auth, &service_id)?;
    model_for(&state, &auth, &model_id, Some(&service_id))
}

/// 403 unless an API subscription's key is for `service_id` (the service-scoped base URL); a
/// platform key may use any service's base URL (its models are then that service's).
pub fn check_service(auth: &ApiKeyAuth, service_id: &str) -> Result<(), OpenAiError> {
    match &auth.entitlement {
        Entitlement::Subscription(subscription) if lock(subscription).service_id != service_id => {
            Err(service_not_permitted())
        }
        _ => Ok(()),
    }
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
