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
/// "Active" users made a metered call (API or chat) within this many days.
pub const ACTIVE_DAYS: i64 = 30;

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

/// `?q=&page=&per_page=` of the admin's user list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Text an account's email, username or a wallet address contains (case-insensitive, at
    /// most 200 characters); absent or blank: every account.
    q: Option<String>,
    /// From 1 (the default).
    page: Option<i64>,
    /// Items per page, 1-200 (default 50).
    per_page: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/admin/users",
    tag = "admin",
    operation_id = "admin_users",
    summary = "Every account, or those a search matches, paged",
    params(
        UsersQuery,
    ),
    responses(
        (status = 200, description = "A page of users (`total`: how many match)", body = crate::openapi::schemas::UsersPage),
        (status = 422, description = "`page` or `per_page` out of range (per_page 1-200, default 50), or `q` over 200 characters", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn users(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<UsersQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, per_page, offset) =
        PageQuery::new(query.page, query.per_page).resolve(50, USERS_PAGE_MAX)?;
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let (rows, total) = match q {
        Some(q) => {
            let max = aiforge_projections::users::USER_SEARCH_CHARS_MAX;
            if q.chars().count() > max {
                return Err(ApiError::invalid_field(
                    "q",
                    format!("a search is at most {max} characters"),
                ));
            }
            aiforge_projections::users::search(&state.db, q, offset, per_page).await?
        }
        None => aiforge_projections::users::page(&state.db, offset, per_page).await?,
    };
    Ok(Json(
        json!({"users": rows, "q": q, "page": page, "per_page": per_page, "total": total}),
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
    let now = state.clock.now();
    // Generated here, never user text: safe to put in the statement.
    let cutoff = aiforge_commands::clock::rfc3339(now - time::Duration::days(ACTIVE_DAYS));
    let month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    let models: std::collections::BTreeMap<String, i64> =
        aiforge_projections::marketplace::models_by_state(db)
            .await?
            .into_iter()
            .collect();
    let revenue: Vec<serde_json::Value> = aiforge_projections::revenue::by_type(db, Some(&month))
        .await?
        .into_iter()
        .map(|line| {
            json!({
                "type": line.revenue_type,
                "count": line.count,
                "gross": aiforge_projections::revenue::usdt_text(line.gross_micros),
                "platform_fee": aiforge_projections::revenue::usdt_text(line.fee_micros),
                "net": aiforge_projections::revenue::usdt_text(line.net_micros),
            })
        })
        .collect();
    Ok(Json(json!({
        "users": {
            "total": count(db, "SELECT COUNT(*) FROM users_view").await?,
            "with_email": count(db, "SELECT COUNT(*) FROM users_view WHERE email IS NOT NULL").await?,
            "created_by_wallet": count(db, "SELECT COUNT(*) FROM users_view WHERE wallet IS NOT NULL").await?,
            "active_30d": count(db, &format!("SELECT COUNT(DISTINCT consumer) FROM api_calls_view WHERE at >= '{cutoff}'")).await?,
            "deactivated": count(db, "SELECT COUNT(*) FROM users_view WHERE deactivated_at IS NOT NULL").await?,
        },
        "plans_active": state.gateway.index.plans_in_force(now),
        "api_subscriptions_active": count(db, "SELECT COUNT(*) FROM api_subscriptions_view WHERE status = 'active'").await?,
        "models": models,
        "revenue_this_month": {"month": month, "by_type": revenue},
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

pub const PAYMENTS_PAGE_MAX: i64 = 200;

/// `GET /api/admin/payments` filters; every field is optional.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentsQuery {
    /// A payment type (`subscription`, `api_subscription`, `job`, `publish_fee`, `listing_fee`, …).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    payment_type: Option<String>,
    /// `pending` | `confirmed`
    state: Option<String>,
    /// `ethereum` | `tron`
    network: Option<String>,
    /// The payer's user id.
    user_id: Option<String>,
    /// Created at or after (RFC 3339).
    from: Option<String>,
    /// Created before (RFC 3339).
    to: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

/// An RFC 3339 bound, re-written as the views write times, so text comparison is time order.
fn time_bound(field: &'static str, text: Option<&str>) -> Result<String, ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(String::new());
    };
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(aiforge_commands::clock::rfc3339)
        .map_err(|_| ApiError::invalid_field(field, "an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"))
}

fn one_of(field: &'static str, text: Option<&str>, allowed: &[&str]) -> Result<String, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(String::new()),
        Some(value) if allowed.contains(&value) => Ok(value.to_string()),
        Some(_) => Err(ApiError::invalid_field(
            field,
            format!("{field} is one of: {}", allowed.join(", ")),
        )),
    }
}

#[utoipa::path(
    get,
    path = "/api/admin/payments",
    tag = "admin",
    operation_id = "admin_payments",
    summary = "Every payment, filtered and paged, with its chain details",
    params(PaymentsQuery),
    responses(
        (status = 200, description = "A page of payments, newest first", body = crate::openapi::schemas::AdminPaymentsPage),
        (status = 422, description = "A filter or the page out of range (per_page 1-200, default 50)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn payments(
    State(state): State<AppState>,
    _admin: AdminUser,
    Query(query): Query<PaymentsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, per_page, offset) =
        PageQuery::new(query.page, query.per_page).resolve(50, PAYMENTS_PAGE_MAX)?;
    let types: Vec<&str> = aiforge_domain::fees::PaymentType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    let filter = aiforge_projections::payments::PaymentFilter {
        payment_type: one_of("type", query.payment_type.as_deref(), &types)?,
        status: one_of("state", query.state.as_deref(), &["pending", "confirmed"])?,
        network: one_of("network", query.network.as_deref(), &["ethereum", "tron"])?,
        payer: query.user_id.unwrap_or_default().trim().to_string(),
        from: time_bound("from", query.from.as_deref())?,
        to: time_bound("to", query.to.as_deref())?,
    };
    let (rows, total) =
        aiforge_projections::payments::search(&state.db, &filter, offset, per_page).await?;
    Ok(Json(json!({
        "payments": rows,
        "page": page,
        "per_page": per_page,
        "total": total,
    })))
}

#[utoipa::path(
    get,
    path = "/api/admin/users/{user_id}",
    tag = "admin",
    operation_id = "admin_user",
    summary = "One user in full: wallets, plan, API subscriptions, models, groups, nodes, payments",
    params(("user_id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = crate::openapi::schemas::AdminUserDetails),
        (status = 404, description = "No such user", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn user(
    State(state): State<AppState>,
    _admin: AdminUser,
    axum::extract::Path(user_id): axum::extract::Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let db = &state.db;
    let row = aiforge_projections::users::find(db, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let wallets: Vec<serde_json::Value> = aiforge_projections::users::wallets_of(db, &user_id)
        .await?
        .iter()
        .map(crate::routes::wallets::wallet_json)
        .collect();
    let plan = state
        .gateway
        .index
        .plan_of(&user_id, state.clock.now())
        .map(|grant| {
            json!({
                "plan": grant.plan.as_str(),
                "starts_at": aiforge_commands::clock::rfc3339(grant.period.starts_at),
                "ends_at": grant.period.ends_at.map(aiforge_commands::clock::rfc3339),
            })
        });
    let now = state.clock.now();
    let subscriptions: Vec<serde_json::Value> =
        aiforge_projections::marketplace::subscriptions_of(db, &user_id)
            .await?
            .iter()
            .map(|row| crate::routes::marketplace::subscription_json(row, now))
            .collect();
    let models: Vec<serde_json::Value> = aiforge_projections::marketplace::models_of(db, &user_id)
        .await?
        .iter()
        .map(crate::routes::models::model_json)
        .collect();
    let groups: Vec<serde_json::Value> = aiforge_projections::groups::of_user(db, &user_id)
        .await?
        .into_iter()
        .map(|(group, role)| json!({"group": group, "role": role}))
        .collect();
    let nodes: Vec<serde_json::Value> = aiforge_projections::compute::nodes(db, Some(&user_id))
        .await?
        .into_iter()
        .map(|node| {
            json!({
                "id": node.node_id,
                "name": node.name,
                "status": node.status,
                "registered_at": node.registered_at,
            })
        })
        .collect();
    let (payments, payments_total) =
        aiforge_projections::payments::history(db, &user_id, 0, USER_PAYMENTS_SHOWN).await?;
    Ok(Json(json!({
        "user": row,
        "wallets": wallets,
        "plan": plan,
        "api_subscriptions": subscriptions,
        "models": models,
        "groups": groups,
        "nodes": nodes,
        "payments": payments,
        "payments_total": payments_total,
    })))
}

/// The newest payments shown with a user; the rest are a filtered `GET /api/admin/payments`.
pub const USER_PAYMENTS_SHOWN: i64 = 50;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeactivateRequest {
    /// Why, for the record (1-500 characters).
    reason: String,
}

#[utoipa::path(
    post,
    path = "/api/admin/users/{user_id}/deactivate",
    tag = "admin",
    operation_id = "admin_deactivate_user",
    summary = "Deactivate a user: sessions, API keys and node tokens refused at once; data kept",
    params(
        ("user_id" = String, Path, description = "The user's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = DeactivateRequest,
    responses(
        (status = 200, description = "The user, deactivated", body = crate::openapi::schemas::AdminUserAnswer),
        (status = 404, description = "No such user", body = crate::openapi::schemas::ApiErrorBody),
        (status = 403, description = "An admin deactivating their own account (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Already deactivated (`already_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "No reason, or one over 500 characters", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn deactivate_user(
    State(state): State<AppState>,
    admin: AdminUser,
    axum::extract::Path(user_id): axum::extract::Path<String>,
    CommandJson { body, mut meta }: CommandJson<DeactivateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    // An admin who deactivated themselves could no longer undo it.
    if user_id == admin.user_id {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "an admin cannot deactivate their own account",
        ));
    }
    meta.actor = Some(admin.user_id.clone());
    let outcome = state
        .accounts
        .deactivate(&user_id, &admin.wallet.key(), &body.reason, &meta)
        .await
        .map_err(command_error)?;
    read_your_writes(&state, outcome.last).await;
    user_answer(&state, &user_id).await
}

#[utoipa::path(
    post,
    path = "/api/admin/users/{user_id}/reactivate",
    tag = "admin",
    operation_id = "admin_reactivate_user",
    summary = "Reactivate a deactivated user",
    params(
        ("user_id" = String, Path, description = "The user's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "The user, active again", body = crate::openapi::schemas::AdminUserAnswer),
        (status = 404, description = "No such user", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not deactivated (`not_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn reactivate_user(
    State(state): State<AppState>,
    admin: AdminUser,
    axum::extract::Path(user_id): axum::extract::Path<String>,
    CommandJson { mut meta, .. }: CommandJson<Option<crate::extract::Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(admin.user_id.clone());
    let outcome = state
        .accounts
        .reactivate(&user_id, &admin.wallet.key(), &meta)
        .await
        .map_err(command_error)?;
    read_your_writes(&state, outcome.last).await;
    user_answer(&state, &user_id).await
}

async fn user_answer(state: &AppState, user_id: &str) -> Result<Json<serde_json::Value>, ApiError> {
    let row = aiforge_projections::users::find(&state.db, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(json!({ "user": row })))
}
