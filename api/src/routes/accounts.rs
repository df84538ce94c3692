//! `/api/auth/register`, `/api/auth/login`, `/api/auth/logout`, `/api/auth/me`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::CommandJson;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    email: String,
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
pub struct UserBody {
    id: String,
    email: Option<String>,
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wallet: Option<String>,
    registered_at: String,
}

#[utoipa::path(
    post,
    path = "/api/auth/register",
    tag = "accounts",
    operation_id = "register",
    summary = "Create an account with email and password",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new account", body = crate::openapi::schemas::Registered, headers(("idempotent-replayed" = String, description = "`true` when this answers a retried request"))),
        (status = 409, description = "The email or username is taken (`already_taken`, naming `field`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    CommandJson { body, meta }: CommandJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let outcome = state
        .accounts
        .register(&body.email, &body.username, &body.password, &meta)
        .await?;
    super::read_your_writes(&state, outcome.last).await;
    // The answer comes from the aggregate itself, so a replayed request gets exactly the
    // account the first one created.
    let account = state
        .accounts
        .executor()
        .load(&outcome.aggregate_id)
        .await?;
    let user = UserBody {
        id: outcome.aggregate_id,
        email: Some(account.email),
        username: Some(account.username),
        wallet: None,
        registered_at: account
            .registered_at
            .map(aiforge_commands::clock::rfc3339)
            .unwrap_or_default(),
    };
    // `Idempotent-Replayed` is the answers layer's (`crate::answers`), for every command.
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "user": user })),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// A browser (`X-AIForge-CSRF`) gets the session as a cookie, an API client in the body.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "accounts",
    operation_id = "login",
    summary = "Sign in with email and password",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A session token", body = crate::openapi::schemas::SessionToken),
        (status = 401, description = "Wrong email or password (`invalid_credentials`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 429, description = "Too many attempts for this email or from this address (`too_many_attempts`); Retry-After says when to try again", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    CommandJson { body, .. }: CommandJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let browser = state.session.wants_cookie(&headers)?;
    // The TCP peer (README, "Sign-in throttling": behind a proxy, the proxy's address).
    let address = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|peer| peer.0.ip().to_string());
    let user_id = state
        .accounts
        .authenticate(&body.email, &body.password, address.as_deref())
        .await?;
    let now = state.clock.now().unix_timestamp();
    let token = state.jwt.issue(&user_id, None, now)?;
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": state.jwt.ttl_secs(),
        "user_id": user_id,
    });
    Ok(state.session.signed_in(browser, &token, body))
}

/// `POST /api/auth/logout`: clears the browser's session cookie.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    operation_id = "logout",
    summary = "Sign the browser out (clears the session cookie)",
    responses(
        (status = 200, description = "The cookie is cleared (`{\"signed_out\": true}`)", body = crate::openapi::schemas::SignedOut),
        (status = 403, description = "A cookie-authenticated request from another origin, or without `X-AIForge-CSRF` (`csrf_refused`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    state.session.signed_out(&headers)
}

#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "accounts",
    operation_id = "me",
    summary = "The signed-in account and its wallets",
    responses(
        (status = 200, description = "The signed-in account", body = crate::openapi::schemas::Me),
        (status = 404, description = "The account is not in the read model yet", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let row = aiforge_projections::users::find(&state.db, &user.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account not found"))?;
    let wallets = aiforge_projections::users::wallets_of(&state.db, &user.user_id).await?;
    let is_admin = match &user.wallet {
        Some(wallet) => state
            .admins
            .load(aiforge_domain::admin::ADMIN_WHITELIST_ID)
            .await
            .map_err(crate::error::command_error)?
            .is_admin(wallet),
        None => false,
    };
    Ok(Json(serde_json::json!({
        "id": row.user_id,
        "email": row.email,
        "username": row.username,
        "wallet": row.wallet,
        "registered_at": row.registered_at,
        "wallets": wallets.iter().map(crate::routes::wallets::wallet_json).collect::<Vec<_>>(),
        "signed_in_with": user.wallet.as_ref().map(|w| w.key()),
        "is_admin": is_admin,
    })))
}
