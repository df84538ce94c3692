//! Money out: a payee's payouts and withdraw (`/api/payouts/*`), the admin's approvals, list,
//! hot wallet balances and a pass on demand (`/api/admin/payouts/*`). Reads from `payouts_view`;
//! the commands are `aiforge_commands::payouts`.

use aiforge_commands::payouts::ExplorerTxUrls;
use aiforge_projections::payouts::{self as views, PayoutFilter, PayoutRow};
use aiforge_projections::revenue::usdt_text;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AdminUser, AuthUser};
use crate::error::{command_error, ApiError};
use crate::extract::{CommandJson, Empty};
use crate::routes::read_your_writes;
use crate::AppState;

/// Payouts one answer lists at most.
pub const PAYOUTS_LIST_MAX: i64 = 500;

/// A payout as answered, its transaction linked to the explorer of its network (settings
/// `AIFORGE_ETH_EXPLORER_TX_URL`, `AIFORGE_TRON_EXPLORER_TX_URL`).
pub fn payout_json(p: &PayoutRow, explorers: &ExplorerTxUrls) -> Value {
    json!({
        "payout_id": p.payout_id,
        "payable": p.payable,
        "user_id": p.user_id,
        "network": p.network,
        "address": p.address,
        "amount": usdt_text(p.amount_micros),
        "month": p.month,
        "state": p.state,
        "tx_hash": p.tx_hash,
        "explorer_url": p.tx_hash.as_deref().and_then(|h| explorers.url(&p.network, h)),
        "reason": p.reason,
        "requested_at": p.requested_at,
        "updated_at": p.updated_at,
    })
}

/// `GET /api/payouts/mine`: the caller's payouts, oldest first.
#[utoipa::path(
    get,
    path = "/api/payouts/mine",
    tag = "payouts",
    operation_id = "my_payouts",
    summary = "My payouts",
    responses(
        (status = 200, description = "The caller's payouts: state, transaction and its explorer link, amount, month; and the platform's minimum and approval threshold", body = crate::openapi::schemas::MyPayouts),
    ),
    security(("session" = [])),
)]
pub async fn mine(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = views::list(
        &state.db,
        PayoutFilter::User(&user.user_id),
        PAYOUTS_LIST_MAX,
    )
    .await?;
    // The page states the rules the withdraw applies (the server still enforces them).
    let settings = state.payouts.settings();
    Ok(Json(json!({
        "payouts": rows
            .iter()
            .map(|p| payout_json(p, &settings.explorer_tx_urls))
            .collect::<Vec<_>>(),
        "minimum": settings.minimum.to_string(),
        "approval_threshold": settings.approval_threshold.to_string(),
    })))
}

/// `POST /api/payouts/withdraw`: the caller's payables at or above the minimum become payouts now.
#[utoipa::path(
    post,
    path = "/api/payouts/withdraw",
    tag = "payouts",
    operation_id = "withdraw",
    summary = "Withdraw my payables",
    params(crate::openapi::IdempotencyKey),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 201, description = "The payouts made", body = crate::openapi::schemas::PayoutList),
        (status = 409, description = "Nothing at or above the minimum, or no payout wallet (`below_payout_minimum`, `no_payout_wallet`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 503, description = "No hot wallet is configured (`payouts_not_configured`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body: _, meta: _ }: CommandJson<Empty>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let made = state.payouts.withdraw(&user.user_id).await?;
    if state.scheduler_lease.is_held() {
        state.payouts.run_once().await.map_err(ApiError::internal)?;
    }
    let head = state.db.log_head().await?;
    read_your_writes(&state, Some(head)).await;
    let rows = views::list(
        &state.db,
        PayoutFilter::User(&user.user_id),
        PAYOUTS_LIST_MAX,
    )
    .await?;
    let made: Vec<Value> = rows
        .iter()
        .filter(|r| made.contains(&r.payout_id))
        .map(|p| payout_json(p, &state.payouts.settings().explorer_tx_urls))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "payouts": made }))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PayoutsQuery {
    /// `awaiting_approval`, `awaiting_payment`, `in_progress`, `completed`, `cancelled`, `failed`.
    state: Option<String>,
    /// `YYYY-MM`: the payouts of that month's close.
    month: Option<String>,
}

/// `GET /api/admin/payouts?state=…&month=…` (admin): all payouts, or those in one state.
#[utoipa::path(
    get,
    path = "/api/admin/payouts",
    tag = "payouts",
    operation_id = "all_payouts",
    summary = "All payouts (pending approvals with state=awaiting_approval)",
    params(PayoutsQuery),
    responses(
        (status = 200, description = "Payouts, oldest first", body = crate::openapi::schemas::PayoutList),
        (status = 422, description = "An unknown state (`invalid_field`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn all(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<PayoutsQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = match (&query.state, &query.month) {
        (Some(s), _) => {
            const STATES: [&str; 6] = [
                "awaiting_approval",
                "awaiting_payment",
                "in_progress",
                "completed",
                "cancelled",
                "failed",
            ];
            if !STATES.contains(&s.as_str()) {
                return Err(ApiError::invalid_field(
                    "state",
                    format!("'{s}' is not a payout state"),
                ));
            }
            PayoutFilter::State(s)
        }
        (None, Some(m)) => PayoutFilter::Month(m),
        (None, None) => PayoutFilter::All,
    };
    let rows = views::list(&state.db, filter, PAYOUTS_LIST_MAX).await?;
    Ok(Json(
        json!({ "payouts": rows.iter().map(|p| payout_json(p, &state.payouts.settings().explorer_tx_urls)).collect::<Vec<_>>() }),
    ))
}

/// `POST /api/admin/payouts/{payout_id}/approve` (admin).
#[utoipa::path(
    post,
    path = "/api/admin/payouts/{payout_id}/approve",
    tag = "payouts",
    operation_id = "approve_payout",
    summary = "Approve a payout over the threshold",
    params(("payout_id" = String, Path, description = "The payout"), crate::openapi::IdempotencyKey),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The payout, awaiting payment (or paid at once)", body = crate::openapi::schemas::PayoutOne),
        (status = 404, description = "No such payout", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The payout is not awaiting approval (`payout_state`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn approve(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(payout_id): Path<String>,
    CommandJson { body: _, mut meta }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(admin.user_id.clone());
    state
        .payouts
        .approve(&payout_id, &admin.user_id, &meta)
        .await
        .map_err(command_error)?;
    if state.scheduler_lease.is_held() {
        state.payouts.run_once().await.map_err(ApiError::internal)?;
    }
    one(&state, &payout_id).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (kept with the payout, shown to the payee).
    reason: String,
}

/// `POST /api/admin/payouts/{payout_id}/cancel` (admin): a payout not yet signed; its amount
/// stays in the payable.
#[utoipa::path(
    post,
    path = "/api/admin/payouts/{payout_id}/cancel",
    tag = "payouts",
    operation_id = "cancel_payout",
    summary = "Cancel a payout not yet signed",
    params(("payout_id" = String, Path, description = "The payout"), crate::openapi::IdempotencyKey),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The payout, cancelled", body = crate::openapi::schemas::PayoutOne),
        (status = 404, description = "No such payout", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The payout is signed or ended (`payout_state`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(payout_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<CancelRequest>,
) -> Result<Json<Value>, ApiError> {
    let reason =
        aiforge_domain::trimmed_within(&body.reason, 1..=aiforge_domain::payout::REASON_CHARS_MAX)
            .ok_or_else(|| {
                ApiError::invalid_field("reason", "a reason of 1-500 plain characters")
            })?;
    meta.actor = Some(admin.user_id.clone());
    let outcome = state
        .payouts
        .cancel(&payout_id, &admin.user_id, &reason, &meta)
        .await
        .map_err(command_error)?;
    read_your_writes(&state, outcome.last).await;
    one(&state, &payout_id).await
}

async fn one(state: &AppState, payout_id: &str) -> Result<Json<Value>, ApiError> {
    let head = state.db.log_head().await?;
    read_your_writes(state, Some(head)).await;
    let row = views::find(&state.db, payout_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such payout"))?;
    Ok(Json(
        json!({ "payout": payout_json(&row, &state.payouts.settings().explorer_tx_urls) }),
    ))
}

/// `GET /api/admin/payouts/hot-wallet` (admin): each hot wallet's address and balances.
#[utoipa::path(
    get,
    path = "/api/admin/payouts/hot-wallet",
    tag = "payouts",
    operation_id = "hot_wallet_balances",
    summary = "The hot wallets' balances",
    responses(
        (status = 200, description = "Per network: address, USDT, gas, or why they cannot be read", body = crate::openapi::schemas::HotWallets),
    ),
    security(("admin_session" = [])),
)]
pub async fn hot_wallet(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Value>, ApiError> {
    let mut wallets = Vec::new();
    for wallet in state.payouts.hot_wallets() {
        let balances = wallet.balances().await;
        wallets.push(match balances {
            Ok(b) => json!({
                "network": wallet.network(),
                "address": wallet.address(),
                "usdt": usdt_text(i64::try_from(b.usdt_micros).unwrap_or(i64::MAX)),
                "gas": b.gas,
                "transfers_gas_pays": b.transfers_gas_pays,
            }),
            Err(e) => json!({
                "network": wallet.network(),
                "address": wallet.address(),
                "error": e.to_string(),
            }),
        });
    }
    Ok(Json(json!({ "hot_wallets": wallets })))
}

/// `POST /api/admin/payouts/run` (admin): one payout pass now, on this instance.
#[utoipa::path(
    post,
    path = "/api/admin/payouts/run",
    tag = "payouts",
    operation_id = "run_payouts",
    summary = "Run the payout pass now",
    params(crate::openapi::IdempotencyKey),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "What the pass did", body = aiforge_commands::payouts::PayoutPassReport),
    ),
    security(("admin_session" = [])),
)]
pub async fn run(
    State(state): State<AppState>,
    _admin: AdminUser,
    CommandJson { body: _, meta: _ }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    let report = state.payouts.run_once().await.map_err(ApiError::internal)?;
    let head = state.db.log_head().await?;
    read_your_writes(&state, Some(head)).await;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

/// `GET /api/payouts/receipts/{year}/{month}`: the Merkle root of a close's payouts (public).
#[utoipa::path(
    get,
    path = "/api/payouts/receipts/{year}/{month}",
    tag = "payouts",
    operation_id = "payout_receipt",
    summary = "The Merkle root of a close's payouts",
    params(
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
    ),
    responses(
        (status = 200, description = "The published root (hex SHA-256) over the close's completed payouts (payee, wallet, amount, month)", body = crate::openapi::schemas::PayoutReceipt),
        (status = 404, description = "Not published yet: the close's payouts have not all ended (`receipt_not_published`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Not a month", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn receipt(
    State(state): State<AppState>,
    Path((year, month)): Path<(i32, u8)>,
) -> Result<Json<Value>, ApiError> {
    let month = aiforge_domain::revenue_book::Month::new(year, month)
        .ok_or_else(|| {
            ApiError::invalid_field("month", format!("{year}/{month} is not a month (1-12)"))
        })?
        .to_string();
    let published = published(&state, &month).await?;
    Ok(Json(json!({
        "month": month,
        "root": published.root,
        "payouts": published.leaves.len(),
        "published_at": published.published_at,
    })))
}

/// `GET /api/payouts/{payout_id}/proof` (the payee or an admin): the payout's inclusion proof
/// in its close's receipt.
#[utoipa::path(
    get,
    path = "/api/payouts/{payout_id}/proof",
    tag = "payouts",
    operation_id = "payout_proof",
    summary = "A payout's inclusion proof",
    params(("payout_id" = String, Path, description = "The payout")),
    responses(
        (status = 200, description = "The leaf, its proof and the root", body = crate::openapi::schemas::PayoutProof),
        (status = 404, description = "No such payout of the caller's, one made by a withdraw (no close), one not completed, or its close's receipt not yet published", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn proof(
    State(state): State<AppState>,
    user: AuthUser,
    Path(payout_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = views::find(&state.db, &payout_id)
        .await?
        .filter(|r| r.user_id == user.user_id)
        .ok_or_else(|| ApiError::not_found("no such payout"))?;
    let month = row
        .month
        .ok_or_else(|| ApiError::not_found("a withdraw's payout is in no close's receipt"))?;
    let published = published(&state, &month).await?;
    let leaves: Vec<_> = published.leaves.iter().map(|e| e.leaf.clone()).collect();
    let index = published
        .leaves
        .iter()
        .position(|e| e.payout_id == payout_id)
        .ok_or_else(|| {
            ApiError::not_found("this payout is not in its close's receipt (it did not complete)")
        })?;
    let (root, proof) = aiforge_domain::merkle::root_and_proof(&leaves, Some(index));
    // Built from the published leaves: the same root, or the log was tampered with.
    debug_assert_eq!(root, published.root);
    Ok(Json(json!({
        "leaf": leaves[index],
        "leaf_text": leaves[index].text(),
        "proof": proof,
        "root": published.root,
    })))
}

/// The published receipt of `month`'s close, or 404 `receipt_not_published`.
async fn published(state: &AppState, month: &str) -> Result<views::PublishedReceipt, ApiError> {
    views::receipt(&state.db, month).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "receipt_not_published",
            format!(
                "the receipt of {month} is not published: its close's payouts have not all ended"
            ),
        )
    })
}
