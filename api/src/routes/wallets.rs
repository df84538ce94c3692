//! Wallet sign-in (`/api/auth/wallet/*`) and an account's wallets (`/api/wallets/*`).

use aiforge_domain::admin::ADMIN_WHITELIST_ID;
use aiforge_projections::users::WalletRow;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{command_error, ApiError};
use crate::extract::{parse_wallet, CommandJson};
use crate::AppState;

pub fn wallet_json(row: &WalletRow) -> Value {
    json!({
        "network": row.network,
        "address": row.address,
        "verified": row.verified != 0,
        "connected_at": row.connected_at,
        "verified_at": row.verified_at,
        "payout": row.payout != 0,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthMessageQuery {
    /// The wallet's address; required (422 `invalid_field` without it).
    address: Option<String>,
    /// `ethereum` (the default) or `tron`.
    network: Option<String>,
}

/// `GET /api/auth/wallet/auth-message?address=…&network=ethereum|tron`
#[utoipa::path(
    get,
    path = "/api/auth/wallet/auth-message",
    tag = "wallets",
    operation_id = "wallet_auth_message",
    summary = "A sign-in message for a wallet to sign",
    params(
        AuthMessageQuery,
    ),
    responses(
        (status = 200, description = "A message to sign, valid for a few minutes", body = crate::openapi::schemas::AuthMessage),
        (status = 422, description = "A missing or malformed address, or an unknown network (`invalid_field`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn auth_message(
    State(state): State<AppState>,
    Query(query): Query<AuthMessageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let address = query
        .address
        .ok_or_else(|| ApiError::invalid_field("address", "address is required"))?;
    let wallet = parse_wallet(query.network.as_deref().unwrap_or("ethereum"), &address)?;
    let issued = state.wallets.issue(&wallet);
    Ok(Json(json!({
        "network": wallet.network,
        "address": wallet.address,
        "domain": state.wallets.messages().domain(),
        "message": issued.message,
        "nonce": issued.nonce,
        "issued_at": issued.issued_at,
        "expires_at": issued.expires_at,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WalletSignedRequest)]
pub struct SignedRequest {
    network: String,
    address: String,
    message: String,
    signature: String,
}

/// `POST /api/auth/wallet/login`: the same token as email login, plus the wallet it proves
/// (a cookie session for a browser, as email login).
#[utoipa::path(
    post,
    path = "/api/auth/wallet/login",
    tag = "wallets",
    operation_id = "wallet_login",
    summary = "Sign in with a wallet signature",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = SignedRequest,
    responses(
        (status = 200, description = "A session token for the wallet's account (created on first sign-in)", body = crate::openapi::schemas::WalletSession),
        (status = 401, description = "The signature or message is rejected (`signature_rejected`, `message_expired`, `nonce_used`, `message_rejected`, `wallet_not_verified`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    CommandJson { body, meta }: CommandJson<SignedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let browser = state.session.wants_cookie(&headers)?;
    let wallet = parse_wallet(&body.network, &body.address)?;
    let session = state
        .wallets
        .sign_in(wallet, &body.message, &body.signature, &meta)
        .await?;
    crate::routes::read_your_writes(&state, session.outcome.last).await;
    let now = state.clock.now().unix_timestamp();
    let token = state
        .jwt
        .issue(&session.user_id, Some(&session.wallet), now)?;
    let is_admin = state
        .admins
        .load(ADMIN_WHITELIST_ID)
        .await
        .map_err(command_error)?
        .is_admin(&session.wallet);
    let body = json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": state.jwt.ttl_secs(),
        "user_id": session.user_id,
        "wallet": {"network": session.wallet.network, "address": session.wallet.address},
        "account_created": session.created,
        "is_admin": is_admin,
    });
    Ok(state.session.signed_in(browser, &token, body))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WalletConnectRequest)]
pub struct ConnectRequest {
    network: String,
    address: String,
}

/// `POST /api/wallets/connect`: lists a wallet on the account, unverified.
#[utoipa::path(
    post,
    path = "/api/wallets/connect",
    tag = "wallets",
    operation_id = "wallet_connect",
    summary = "List a wallet on the account, unverified",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = ConnectRequest,
    responses(
        (status = 201, description = "The wallet, unverified", body = crate::openapi::schemas::WalletChanged),
        (status = 409, description = "The wallet is already linked (`wallet_already_linked`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn connect(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<ConnectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let wallet = parse_wallet(&body.network, &body.address)?;
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .wallets
        .connect(&user.user_id, wallet.clone(), &meta)
        .await?;
    crate::routes::read_your_writes(&state, outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"wallet": {"network": wallet.network, "address": wallet.address, "verified": false}}),
        ),
    ))
}

/// `POST /api/wallets/verify`: a signature over an issued message proves the wallet.
#[utoipa::path(
    post,
    path = "/api/wallets/verify",
    tag = "wallets",
    operation_id = "wallet_verify",
    summary = "Prove a wallet by signing an issued message",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = SignedRequest,
    responses(
        (status = 200, description = "The wallet, verified", body = crate::openapi::schemas::WalletChanged),
        (status = 401, description = "The signature or message is rejected", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "The wallet is not listed on this account (`wallet_not_linked`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The wallet is verified already or linked elsewhere (`wallet_already_linked`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn verify(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<SignedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let wallet = parse_wallet(&body.network, &body.address)?;
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .wallets
        .verify(
            &user.user_id,
            wallet.clone(),
            &body.message,
            &body.signature,
            &meta,
        )
        .await?;
    crate::routes::read_your_writes(&state, outcome.last).await;
    Ok(Json(
        json!({"wallet": {"network": wallet.network, "address": wallet.address, "verified": true}}),
    ))
}

/// `POST /api/wallets/payout`: the account's payouts on the wallet's network go to this
/// verified wallet of its own.
#[utoipa::path(
    post,
    path = "/api/wallets/payout",
    tag = "wallets",
    operation_id = "choose_payout_wallet",
    summary = "Choose the wallet payouts on its network go to",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = ConnectRequest,
    responses(
        (status = 200, description = "The payout wallet of that network", body = crate::openapi::schemas::PayoutWalletChosen),
        (status = 404, description = "The wallet is not listed on this account (`wallet_not_linked`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The wallet is not verified (`payout_wallet_unverified`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn choose_payout(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<ConnectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let wallet = parse_wallet(&body.network, &body.address)?;
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .wallets
        .choose_payout_wallet(&user.user_id, wallet.clone(), &meta)
        .await?;
    crate::routes::read_your_writes(&state, outcome.last).await;
    Ok(Json(
        json!({"payout_wallet": {"network": wallet.network, "address": wallet.address}}),
    ))
}

/// `GET /api/wallets/my-wallets`
#[utoipa::path(
    get,
    path = "/api/wallets/my-wallets",
    tag = "wallets",
    operation_id = "my_wallets",
    summary = "The account's wallets",
    responses(
        (status = 200, description = "The account's wallets", body = crate::openapi::schemas::AccountWallets),
    ),
    security(("session" = [])),
)]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let rows = aiforge_projections::users::wallets_of(&state.db, &user.user_id).await?;
    Ok(Json(
        json!({"wallets": rows.iter().map(wallet_json).collect::<Vec<_>>()}),
    ))
}
