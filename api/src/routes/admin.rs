//! `/api/admin/*`: the admin whitelist, the user list and platform counts. Every route needs an
//! `AdminUser` (a session signed in with a currently whitelisted wallet).

use aiforge_commands::CommandMeta;
use aiforge_domain::admin::{AdminCommand, ADMIN_WHITELIST_ID};
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::AdminUser;
use crate::error::{command_error, ApiError};
use crate::extract::{parse_wallet, CommandJson, PageQuery};
use crate::routes::read_your_writes;
use crate::AppState;

pub const USERS_PAGE_MAX: i64 = 200;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AdminWalletRequest)]
pub struct WalletRequest {
    network: String,
    address: String,
}

/// Adds or removes a whitelisted wallet; the aggregate checks the actor and the last-admin rule.
async fn change(
    state: &AppState,
    admin: AdminUser,
    body: &WalletRequest,
    mut meta: CommandMeta,
    add: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let wallet = parse_wallet(&body.network, &body.address)?;
    meta.actor = Some(admin.user_id.clone());
    let (actor, at) = (admin.wallet, state.clock.now());
    let (command, done) = if add {
        (
            AdminCommand::Add {
                actor,
                wallet: wallet.clone(),
                at,
            },
            "added",
        )
    } else {
        (
            AdminCommand::Remove {
                actor,
                wallet: wallet.clone(),
                at,
            },
            "removed",
        )
    };
    let outcome = state
        .admins
        .execute(ADMIN_WHITELIST_ID, command, &meta, &[])
        .await
        .map_err(command_error)?;
    read_your_writes(state, outcome.last).await;
    Ok(Json(
        json!({ done: {"network": wallet.network, "address": wallet.address} }),
    ))
}

#[utoipa::path(
    post,
    path = "/api/admin/wallets/add",
    tag = "admin",
    operation_id = "admin_add_wallet",
    summary = "Add a wallet to the admin whitelist",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = WalletRequest,
    responses(
        (status = 200, description = "The wallet added", body = crate::openapi::schemas::AdminWalletAdded),
        (status = 409, description = "Already an admin (`already_admin`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn add_wallet(
    State(state): State<AppState>,
    admin: AdminUser,
    CommandJson { body, meta }: CommandJson<WalletRequest>,
) -> Result<impl IntoResponse, ApiError> {
    change(&state, admin, &body, meta, true).await
}

#[utoipa::path(
    post,
    path = "/api/admin/wallets/remove",
    tag = "admin",
    operation_id = "admin_remove_wallet",
    summary = "Remove a wallet from the admin whitelist",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = WalletRequest,
    responses(
        (status = 200, description = "The wallet removed", body = crate::openapi::schemas::AdminWalletRemoved),
        (status = 404, description = "Not an admin", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The last admin cannot be removed (`last_admin`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn remove_wallet(
    State(state): State<AppState>,
    admin: AdminUser,
    CommandJson { body, meta }: CommandJson<WalletRequest>,
) -> Result<impl IntoResponse, ApiError> {
    change(&state, admin, &body, meta, false).await
}

#[utoipa::path(
    get,
    path = "/api/admin/wallets",
    tag = "admin",
    operation_id = "admin_wallets",
    summary = "The admin whitelist",
    responses(
        (status = 200, description = "The whitelist", body = crate::openapi::schemas::AdminWallets),
    ),
    security(("admin_session" = [])),
)]
pub async fn wallets(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<impl IntoResponse, ApiError> {
    let rows = aiforge_projections::admins::list(&state.db).await?;
    Ok(Json(json!({"wallets": rows})))
}

#[utoipa::path(
    get,
    path = "/api/admin/users",
    tag = "admin",
    operation_id = "admin_users",
    summary = "Every account, paged",
    params(
        crate::extract::PageQuery,
    ),
    responses(
        (status = 200, description = "A page of users", body = crate::openapi::schemas::UsersPage),
        (status = 422, description = "`page` or `per_page` out of range (per_page 1-200, default 50)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, per_page, offset) = query.resolve(50, USERS_PAGE_MAX)?;
    let (rows, total) = aiforge_projections::users::page(&state.db, offset, per_page).await?;
    Ok(Json(
        json!({"users": rows, "page": page, "per_page": per_page, "total": total}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/admin/stats",
    tag = "admin",
    operation_id = "admin_stats",
    summary = "Platform counts",
    responses(
        (status = 200, description = "Platform counts", body = crate::openapi::schemas::PlatformStats),
    ),
    security(("admin_session" = [])),
)]
pub async fn stats(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<impl IntoResponse, ApiError> {
    use aiforge_projections::count;
    let db = &state.db;
    Ok(Json(json!({
        "users": {
            "total": count(db, "SELECT COUNT(*) FROM users_view").await?,
            "with_email": count(db, "SELECT COUNT(*) FROM users_view WHERE email IS NOT NULL").await?,
            "created_by_wallet": count(db, "SELECT COUNT(*) FROM users_view WHERE wallet IS NOT NULL").await?,
        },
        "wallets": {
            "connected": count(db, "SELECT COUNT(*) FROM wallets_view").await?,
            "verified": count(db, "SELECT COUNT(*) FROM wallets_view WHERE verified = 1").await?,
        },
        "admin_wallets": count(db, "SELECT COUNT(*) FROM admin_wallets_view").await?,
        "groups": count(db, "SELECT COUNT(*) FROM groups_view").await?,
        "payments": {
            "total": count(db, "SELECT COUNT(*) FROM payments_view").await?,
            "confirmed": count(db, "SELECT COUNT(*) FROM payments_view WHERE status = 'confirmed'").await?,
            "platform_fees": aiforge_domain::Usdt::from_micros(
                count(db, "SELECT CAST(COALESCE(SUM(balance_micros), 0) AS BIGINT) FROM ledger_balances_view WHERE kind = 'platform_fees'").await?,
            )
            .map(|u| u.to_string())
            .map_err(ApiError::internal)?,
        },
        "compute": compute_stats(db).await?,
        "events": state.db.count_events().await.map_err(ApiError::internal)?,
    })))
}

/// Nodes by status (online is active), jobs by status, job revenue (settled jobs: paid, the
/// platform's fee, the nodes' share) and the job money in the ledger.
async fn compute_stats(db: &aiforge_commands::Database) -> Result<serde_json::Value, ApiError> {
    let stats = aiforge_projections::compute::stats(db).await?;
    let usdt = |micros| {
        aiforge_domain::Usdt::from_micros(micros)
            .map(|u| u.to_string())
            .map_err(ApiError::internal)
    };
    Ok(json!({
        "nodes": stats.nodes,
        "jobs": stats.jobs,
        "job_revenue": {
            "gross": usdt(stats.job_gross_micros)?,
            "platform_fee": usdt(stats.job_fee_micros)?,
            "to_nodes": usdt(stats.job_net_micros)?,
        },
        "job_money": {
            "in_escrow": usdt(stats.escrow_micros)?,
            "owed_to_nodes": usdt(stats.node_payable_micros)?,
        },
    }))
}
