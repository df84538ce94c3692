//! Revenue: the admin's views (`/api/revenue/summary`, `monthly`, `distribution`, `model`; the
//! platform's fees, what closes paid inference nodes out of them, and the platform's net), the
//! monthly close (`POST /api/revenue/close/{year}/{month}`), a creator's earnings
//! (`/api/revenue/my-earnings`) and a group model's distribution (`/api/group-revenue/...`).
//! Everything is read from projections; the close is the one command here
//! (`aiforge_projections::distribution::close`).

use std::collections::BTreeMap;

use aiforge_commands::clock::rfc3339;
use aiforge_domain::fees::PaymentType;
use aiforge_domain::group::{can, GroupAction, Role};
use aiforge_domain::model::ModelOwner;
use aiforge_domain::revenue_book::{Month, MonthDistribution};
use aiforge_projections::distribution::{self, DistributionError};
use aiforge_projections::revenue::{self as views, usdt_text, PayoutRow};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::read_your_writes;
use crate::auth::{AdminUser, AuthUser};
use crate::error::{command_error, ApiError};
use crate::extract::{CommandJson, Empty};
use crate::AppState;

fn month_of(year: i32, month: u8) -> Result<Month, ApiError> {
    Month::new(year, month).ok_or_else(|| {
        ApiError::invalid_field("month", format!("{year}/{month} is not a month (1-12)"))
    })
}

fn not_closed(month: Month) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "month_not_closed",
        format!("{month} is not closed yet; revenue is distributed by the monthly close"),
    )
}

impl From<DistributionError> for ApiError {
    fn from(err: DistributionError) -> Self {
        match err {
            DistributionError::Rejected(rejected) => rejected.into(),
            DistributionError::Store(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

fn payout_json(p: &PayoutRow) -> Value {
    json!({
        "month": p.month,
        "user_id": p.user_id,
        "model_id": p.model_id,
        "source": p.source,
        "amount": usdt_text(p.amount_micros),
        "split_version": p.split_version,
    })
}

fn distribution_json(d: &MonthDistribution) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

/// `POST /api/revenue/close/{year}/{month}` (admin): closes a month that has ended.
#[utoipa::path(
    post,
    path = "/api/revenue/close/{year}/{month}",
    tag = "revenue",
    operation_id = "close_month",
    summary = "Close a month: distribute its revenue",
    params(
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 201, description = "The month's distribution, recorded as one event", body = crate::openapi::schemas::MonthClosed),
        (status = 409, description = "The month has not ended, is closed already, or an earlier month is open (`month_not_over`, `already_closed`, `out_of_order`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Not a month", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn close(
    State(state): State<AppState>,
    admin: AdminUser,
    Path((year, month)): Path<(i32, u8)>,
    CommandJson { body: _, mut meta }: CommandJson<Empty>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let month = month_of(year, month)?;
    meta.actor = Some(admin.user_id.clone());
    let closed = distribution::close(
        &state.revenue_book,
        &state.clock,
        month,
        &admin.user_id,
        &meta,
    )
    .await?;
    read_your_writes(&state, closed.outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "closed": distribution_json(&closed.distribution) })),
    ))
}

/// `GET /api/revenue/summary` (admin).
#[utoipa::path(
    get,
    path = "/api/revenue/summary",
    tag = "revenue",
    operation_id = "revenue_summary",
    summary = "Revenue summary",
    responses(
        (status = 200, description = "Revenue by type, distributions and balances", body = crate::openapi::schemas::RevenueSummary),
    ),
    security(("admin_session" = [])),
)]
pub async fn summary(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Value>, ApiError> {
    let by_type = views::by_type(&state.db, None).await?;
    let closes = views::closes_summary(&state.db).await?;
    let compute = views::compute_paid(&state.db, None).await?;
    let (gross, fees, net) = by_type.iter().fold((0i64, 0i64, 0i64), |acc, t| {
        (
            acc.0 + t.gross_micros,
            acc.1 + t.fee_micros,
            acc.2 + t.net_micros,
        )
    });
    Ok(Json(json!({
        "total_revenue": usdt_text(gross),
        "platform_fees": usdt_text(fees),
        "compute_paid": usdt_text(compute),
        "platform_net": usdt_text(fees - compute),
        "net_to_others": usdt_text(net),
        "by_type": type_lines(&by_type),
        "distribution": {
            "months_closed": closes.months_closed,
            "last_closed": closes.last_closed,
            "pool_distributed": usdt_text(closes.pool_distributed_micros),
            "group_api_distributed": usdt_text(closes.group_api_micros),
        },
        "balances": {
            "platform_fees": usdt_text(views::balance(&state.db, "platform_fees:platform").await?),
            "subscription_pools_undistributed": usdt_text(views::kind_balance(&state.db, "subscription_pool").await?),
            "group_revenue_undistributed": usdt_text(views::kind_balance(&state.db, "group_revenue").await?),
            "creator_payables": usdt_text(views::kind_balance(&state.db, "creator_payable").await?),
        },
    })))
}

/// Every revenue type, zero when none.
fn type_lines(by_type: &[views::TypeTotals]) -> Vec<Value> {
    PaymentType::ALL
        .iter()
        .map(|t| {
            let line = by_type.iter().find(|l| l.revenue_type == t.as_str());
            json!({
                "type": t.as_str(),
                "count": line.map_or(0, |l| l.count),
                "gross": usdt_text(line.map_or(0, |l| l.gross_micros)),
                "platform_fee": usdt_text(line.map_or(0, |l| l.fee_micros)),
                "net": usdt_text(line.map_or(0, |l| l.net_micros)),
            })
        })
        .collect()
}

/// `GET /api/revenue/monthly/{year}/{month}` (admin): revenue by type.
#[utoipa::path(
    get,
    path = "/api/revenue/monthly/{year}/{month}",
    tag = "revenue",
    operation_id = "monthly_revenue",
    summary = "A month's revenue",
    params(
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
    ),
    responses(
        (status = 200, description = "The month's revenue by type", body = crate::openapi::schemas::MonthlyRevenue),
        (status = 422, description = "Not a month (`invalid_field`: month)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn monthly(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((year, month)): Path<(i32, u8)>,
) -> Result<Json<Value>, ApiError> {
    let month = month_of(year, month)?;
    let key = month.to_string();
    let by_type = views::by_type(&state.db, Some(&key)).await?;
    let close = views::close_of(&state.db, &key).await?;
    let compute = views::compute_paid(&state.db, Some(&key)).await?;
    let (gross, fees) = by_type.iter().fold((0i64, 0i64), |acc, t| {
        (acc.0 + t.gross_micros, acc.1 + t.fee_micros)
    });
    Ok(Json(json!({
        "month": key,
        "total_revenue": usdt_text(gross),
        "platform_fees": usdt_text(fees),
        "compute_paid": usdt_text(compute),
        "platform_net": usdt_text(fees - compute),
        "by_type": type_lines(&by_type),
        "closed": close.is_some(),
        "digest": close.map(|c| c.digest),
    })))
}

fn recorded(row: &views::CloseRow) -> Result<MonthDistribution, ApiError> {
    serde_json::from_str(&row.record).map_err(ApiError::internal)
}

/// `GET /api/revenue/distribution/{year}/{month}` (admin): the month's close as recorded.
#[utoipa::path(
    get,
    path = "/api/revenue/distribution/{year}/{month}",
    tag = "revenue",
    operation_id = "month_distribution",
    summary = "A month's recorded distribution",
    params(
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
    ),
    responses(
        (status = 200, description = "The month's close as recorded", body = crate::openapi::schemas::RecordedDistribution),
        (status = 404, description = "The month is not closed (`month_not_closed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Not a month", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn distribution(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((year, month)): Path<(i32, u8)>,
) -> Result<Json<Value>, ApiError> {
    let month = month_of(year, month)?;
    let row = views::close_of(&state.db, &month.to_string())
        .await?
        .ok_or_else(|| not_closed(month))?;
    Ok(Json(json!({
        "month": row.month,
        "closed_by": row.closed_by,
        "closed_at": row.closed_at,
        "distribution": distribution_json(&recorded(&row)?),
    })))
}

/// `GET /api/revenue/model/{model_id}/{year}/{month}` (admin): a model's usage (live) and, once
/// the month is closed, its share and who received it.
#[utoipa::path(
    get,
    path = "/api/revenue/model/{model_id}/{year}/{month}",
    tag = "revenue",
    operation_id = "model_month_revenue",
    summary = "A model's revenue for a month",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
    ),
    responses(
        (status = 200, description = "The model's usage and, once closed, its share and payouts", body = crate::openapi::schemas::ModelMonthRevenue),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Not a month", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn model(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((model_id, year, month)): Path<(String, i32, u8)>,
) -> Result<Json<Value>, ApiError> {
    let month = month_of(year, month)?;
    let key = month.to_string();
    state.marketplace.model(&model_id).await?;
    let usage = views::model_usage(
        &state.db,
        &model_id,
        &rfc3339(month.start()),
        &rfc3339(month.end()),
    )
    .await?;
    let line = views::model_line(&state.db, &model_id, &key).await?;
    let payouts = views::payouts(&state.db, None, Some(&model_id), Some(&key)).await?;
    Ok(Json(json!({
        "model_id": model_id,
        "month": key,
        "usage": {
            "requests": usage.requests,
            "tokens": usage.tokens,
            "pay_per_use_charged": usdt_text(usage.cost_micros),
        },
        "closed": line.is_some() || views::close_of(&state.db, &key).await?.is_some(),
        "distribution": line.map(|l| json!({
            "tokens": l.tokens,
            "requests": l.requests,
            "usage_percent": l.usage_percent,
            "pool_share": usdt_text(l.pool_micros),
            "group_api_revenue": usdt_text(l.group_api_micros),
        })),
        "payouts": payouts.iter().map(payout_json).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    /// With `month`: one month only (both or neither).
    year: Option<i32>,
    /// 1-12, with `year`.
    month: Option<u8>,
}

impl MonthQuery {
    fn month(&self) -> Result<Option<Month>, ApiError> {
        match (self.year, self.month) {
            (None, None) => Ok(None),
            (Some(year), Some(month)) => month_of(year, month).map(Some),
            _ => Err(ApiError::invalid_field(
                "month",
                "give both year and month, or neither",
            )),
        }
    }
}

/// `GET /api/revenue/my-earnings[?year=&month=]`: what the caller earned as a creator: direct
/// API-subscription and model-sale net (as payments confirm) and distributions (pool shares and
/// group splits, at each month's close), by month, with the payable balance.
#[utoipa::path(
    get,
    path = "/api/revenue/my-earnings",
    tag = "revenue",
    operation_id = "my_earnings",
    summary = "The caller's creator earnings",
    params(
        MonthQuery,
    ),
    responses(
        (status = 200, description = "The caller's creator earnings by month, with the payable balance", body = crate::openapi::schemas::MyEarnings),
        (status = 422, description = "Only one of year and month, or not a month", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn my_earnings(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<MonthQuery>,
) -> Result<Json<Value>, ApiError> {
    let month = query.month()?.map(|m| m.to_string());
    let direct = views::direct_earnings(&state.db, &user.user_id, month.as_deref()).await?;
    let payouts = views::payouts(&state.db, Some(&user.user_id), None, month.as_deref()).await?;
    let mut by_month: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    for (m, micros) in &direct {
        by_month.entry(m.clone()).or_default()[0] += micros;
    }
    for p in &payouts {
        let slot = if p.source == "pool" { 1 } else { 2 };
        by_month.entry(p.month.clone()).or_default()[slot] += p.amount_micros;
    }
    let total: i64 = by_month.values().flatten().sum();
    let balance = views::balance(&state.db, &format!("creator_payable:{}", user.user_id)).await?;
    Ok(Json(json!({
        "user_id": user.user_id,
        "month": month,
        "total": usdt_text(total),
        "payable_balance": usdt_text(balance),
        "by_month": by_month.iter().map(|(m, [direct, pool, group])| json!({
            "month": m,
            "api_and_sales": usdt_text(*direct),
            "subscription_pool": usdt_text(*pool),
            "group_api": usdt_text(*group),
            "total": usdt_text(direct + pool + group),
        })).collect::<Vec<_>>(),
        "payouts": payouts.iter().map(payout_json).collect::<Vec<_>>(),
    })))
}

/// The group of a group model and the caller's role in it (non-members: 404).
async fn group_role(
    state: &AppState,
    user: &AuthUser,
    model_id: &str,
) -> Result<(String, Role), ApiError> {
    let model = state.marketplace.model(model_id).await?;
    let Some(ModelOwner::Group(group_id)) = &model.owner else {
        return Err(ApiError::from(
            aiforge_domain::model::ModelError::NotAGroupModel,
        ));
    };
    let group = state.groups.load(group_id).await.map_err(command_error)?;
    let role = group
        .role_of(&user.user_id)
        .ok_or_else(|| ApiError::not_found("no such model"))?;
    Ok((group_id.clone(), role))
}

async fn group_distribution(
    state: &AppState,
    model_id: &str,
    group_id: &str,
    month: Month,
) -> Result<Value, ApiError> {
    let key = month.to_string();
    let row = views::close_of(&state.db, &key)
        .await?
        .ok_or_else(|| not_closed(month))?;
    let line = views::model_line(&state.db, model_id, &key).await?;
    let payouts = views::payouts(&state.db, None, Some(model_id), Some(&key)).await?;
    let total: i64 = payouts.iter().map(|p| p.amount_micros).sum();
    Ok(json!({
        "model_id": model_id,
        "group_id": group_id,
        "month": key,
        "distributed": true,
        "closed_at": row.closed_at,
        "digest": row.digest,
        "pool_share": usdt_text(line.as_ref().map_or(0, |l| l.pool_micros)),
        "group_api_revenue": usdt_text(line.as_ref().map_or(0, |l| l.group_api_micros)),
        "total": usdt_text(total),
        "members": payouts.iter().map(payout_json).collect::<Vec<_>>(),
    }))
}

/// `GET /api/group-revenue/model/{id}/distribution/{year}/{month}` (any member of the group).
#[utoipa::path(
    get,
    path = "/api/group-revenue/model/{model_id}/distribution/{year}/{month}",
    tag = "group-revenue",
    operation_id = "group_model_distribution",
    summary = "A group model's distribution for a month (any member)",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
    ),
    responses(
        (status = 200, description = "The month's distribution of the model's revenue to the group's members", body = crate::openapi::schemas::GroupModelDistribution),
        (status = 404, description = "No such model for the caller, or the month is not closed (`month_not_closed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not a group model (`not_a_group_model`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Not a month (`invalid_field`: month)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn group_model_distribution(
    State(state): State<AppState>,
    user: AuthUser,
    Path((model_id, year, month)): Path<(String, i32, u8)>,
) -> Result<Json<Value>, ApiError> {
    let month = month_of(year, month)?;
    let (group_id, _) = group_role(&state, &user, &model_id).await?;
    Ok(Json(
        group_distribution(&state, &model_id, &group_id, month).await?,
    ))
}

/// `POST /api/group-revenue/model/{id}/distribute/{year}/{month}` (the group's OWNER or an
/// ADMIN). A group model's revenue is distributed by the platform's monthly close, in the same
/// record as every other model's (so the pool is split once, by one rule); this answers with
/// that distribution once the month is closed, and 409 `month_not_closed` before.
#[utoipa::path(
    post,
    path = "/api/group-revenue/model/{model_id}/distribute/{year}/{month}",
    tag = "group-revenue",
    operation_id = "group_model_distribute",
    summary = "A group model's distribution, once the month is closed (OWNER or ADMIN)",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The distribution (made by the platform's monthly close)", body = crate::openapi::schemas::GroupModelDistribution),
        (status = 403, description = "Only the group's OWNER or an ADMIN (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model for the caller", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The month is not closed yet (`month_not_closed`), or not a group model", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn group_model_distribute(
    State(state): State<AppState>,
    user: AuthUser,
    Path((model_id, year, month)): Path<(String, i32, u8)>,
    CommandJson { body: _, meta: _ }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    let month = month_of(year, month)?;
    let (group_id, role) = group_role(&state, &user, &model_id).await?;
    let action = GroupAction::DistributeRevenue;
    if !can(role, action) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a {role} may not {action}: only the group's OWNER or an ADMIN may"),
        ));
    }
    match group_distribution(&state, &model_id, &group_id, month).await {
        Err(e) if e.code == "month_not_closed" => Err(ApiError::new(
            StatusCode::CONFLICT,
            "month_not_closed",
            format!(
                "{month} is not closed yet: group revenue is distributed by the monthly close, \
                 which the platform runs once the month has ended"
            ),
        )),
        other => other.map(Json),
    }
}

/// `GET /api/group-revenue/my-group-earnings`: what the caller received from group models, by
/// model and month.
#[utoipa::path(
    get,
    path = "/api/group-revenue/my-group-earnings",
    tag = "group-revenue",
    operation_id = "my_group_earnings",
    summary = "The caller's earnings from group models",
    responses(
        (status = 200, description = "What the caller received from group models, by model and month", body = crate::openapi::schemas::MyGroupEarnings),
    ),
    security(("session" = [])),
)]
pub async fn my_group_earnings(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let payouts = views::group_payouts_of(&state.db, &user.user_id).await?;
    let total: i64 = payouts.iter().map(|p| p.amount_micros).sum();
    Ok(Json(json!({
        "user_id": user.user_id,
        "total": usdt_text(total),
        "earnings": payouts.iter().map(payout_json).collect::<Vec<_>>(),
    })))
}
