//! `/api/payments/*` and `/api/subscriptions/*`: USDT payments verified on chain, and platform
//! subscriptions paid by them.

use aiforge_commands::payments::{PaymentsError, Verification};
use aiforge_domain::fees::PaymentType;
use aiforge_domain::subscription::{PlanId, PLANS};
use aiforge_domain::Usdt;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{parse_network, CommandJson, Empty, PageQuery};
use crate::routes::accounts::read_your_writes;
use crate::AppState;

pub const HISTORY_PAGE_MAX: i64 = 100;

/// Amounts arrive as JSON strings ("10.5") or numbers; either way they are parsed as exact
/// decimal text, never through a float.
fn parse_amount(value: &Value) -> Result<Usdt, ApiError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::invalid_field(
                "amount",
                "amount must be a decimal string like \"10.50\"",
            ))
        }
    };
    Usdt::parse_positive(&text).map_err(|e| ApiError::invalid_field("amount", e.to_string()))
}

async fn payment_json(state: &AppState, payment_id: &str) -> Result<Value, ApiError> {
    let row = aiforge_projections::payments::find(&state.db, payment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such payment"))?;
    Ok(json!({ "payment": row }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    #[serde(rename = "type")]
    payment_type: String,
    network: String,
    amount: Value,
    reference: String,
}

/// `POST /api/payments/create`: the platform wallet to pay and the exact amount.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let payment_type: PaymentType = body
        .payment_type
        .parse()
        .map_err(|e: String| ApiError::invalid_field("type", e))?;
    let network = parse_network(&body.network)?;
    let amount = parse_amount(&body.amount)?;
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .payments
        .create(
            &user.user_id,
            payment_type,
            network,
            amount,
            &body.reference,
            &meta,
        )
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(payment_json(&state, &outcome.aggregate_id).await?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    payment_id: String,
    tx_hash: String,
}

/// `POST /api/payments/verify`: 200 when confirmed; 202 while the transaction is not yet
/// final (poll again); 409 when the transaction already paid for something else.
pub async fn verify(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<VerifyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    match state
        .payments
        .verify(&user.user_id, &body.payment_id, &body.tx_hash, &meta)
        .await?
    {
        Verification::Confirmed { outcome } => {
            read_your_writes(&state, outcome.last).await;
            Ok((
                StatusCode::OK,
                Json(payment_json(&state, &body.payment_id).await?),
            ))
        }
        Verification::Pending {
            confirmations,
            required,
        } => {
            let mut body = payment_json(&state, &body.payment_id).await?;
            body["verification"] = json!({
                "status": "pending",
                "confirmations": confirmations,
                "required_confirmations": required,
            });
            Ok((StatusCode::ACCEPTED, Json(body)))
        }
    }
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(payment_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let row = aiforge_projections::payments::find(&state.db, &payment_id)
        .await?
        .filter(|row| row.payer == user.user_id)
        .ok_or_else(|| ApiError::not_found("no such payment"))?;
    Ok(Json(json!({ "payment": row })))
}

pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, per_page, offset) = query.resolve(20, HISTORY_PAGE_MAX)?;
    let (rows, total) =
        aiforge_projections::payments::history(&state.db, &user.user_id, offset, per_page).await?;
    Ok(Json(
        json!({"payments": rows, "page": page, "per_page": per_page, "total": total}),
    ))
}

/// `GET /api/subscriptions/plans`
pub async fn plans() -> impl IntoResponse {
    let plans: Vec<Value> = PLANS
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.name,
                "price_per_month": p.id.price(),
                "requests_per_month": p.requests_per_month,
                "tokens_per_month": p.tokens_per_month,
            })
        })
        .collect();
    Json(json!({ "plans": plans }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    plan: PlanId,
    #[serde(default)]
    network: Option<String>,
}

/// `POST /api/subscriptions/create`: Free activates at once; a paid plan answers with the
/// payment to make, and activates for 30 days when that payment confirms.
pub async fn subscribe(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<SubscribeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let network = parse_network(body.network.as_deref().unwrap_or("ethereum"))?;
    meta.actor = Some(user.user_id.clone());
    let (outcome, payment_id) = state
        .payments
        .subscribe(&user.user_id, body.plan, network, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    let mut response = subscription_json(&state, &user.user_id).await?;
    if let Some(payment_id) = payment_id {
        response["payment"] = payment_json(&state, &payment_id).await?["payment"].clone();
    }
    Ok((StatusCode::CREATED, Json(response)))
}

async fn subscription_json(state: &AppState, user_id: &str) -> Result<Value, ApiError> {
    let subscription = state.payments.subscription(user_id).await?;
    let now = state.clock.now();
    let time = aiforge_commands::clock::rfc3339;
    let active = subscription.active_at(now).map(|p| {
        json!({
            "plan": p.plan,
            "starts_at": time(p.starts_at),
            "ends_at": p.ends_at.map(time),
        })
    });
    let upcoming: Vec<Value> = subscription
        .periods
        .iter()
        .filter(|p| p.starts_at > now)
        .map(|p| json!({"plan": p.plan, "starts_at": time(p.starts_at), "ends_at": p.ends_at.map(time)}))
        .collect();
    Ok(json!({
        "subscription": {
            "active": active,
            "upcoming": upcoming,
            "awaiting_payment": subscription.awaiting.map(|(plan, payment_id)| json!({"plan": plan, "payment_id": payment_id})),
            "cancelled": subscription.cancelled,
        }
    }))
}

pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(subscription_json(&state, &user.user_id).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { mut meta, .. }: CommandJson<Option<Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .payments
        .cancel_subscription(&user.user_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(subscription_json(&state, &user.user_id).await?))
}

/// `GET /api/admin/ledger`: every account's balance; the balances sum to zero.
pub async fn ledger(
    State(state): State<AppState>,
    _admin: crate::auth::AdminUser,
) -> Result<impl IntoResponse, ApiError> {
    let balances = aiforge_projections::payments::balances(&state.db).await?;
    let total: i128 = balances.iter().map(|b| i128::from(b.balance_micros)).sum();
    let accounts: Vec<Value> = balances
        .iter()
        .map(|b| {
            json!({
                "account": b.account,
                "kind": b.kind,
                "balance": Usdt::from_micros(b.balance_micros).map(|u| u.to_string()).unwrap_or_default(),
                "postings": b.postings,
            })
        })
        .collect();
    Ok(Json(
        json!({"accounts": accounts, "sum_micros": total.to_string()}),
    ))
}

/// `GET /api/admin/ledger/{account}`: one account's postings in log order.
pub async fn ledger_account(
    State(state): State<AppState>,
    _admin: crate::auth::AdminUser,
    Path(account): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let postings = aiforge_projections::payments::postings_of(&state.db, &account).await?;
    Ok(Json(json!({"account": account, "postings": postings})))
}

impl From<PaymentsError> for ApiError {
    fn from(err: PaymentsError) -> Self {
        let message = err.to_string();
        match err {
            PaymentsError::Payment(e) => crate::error::command_error(e),
            PaymentsError::Subscription(e) => crate::error::command_error(e),
            PaymentsError::NetworkNotConfigured(_) => ApiError {
                field: Some("network"),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "network_not_configured",
                    message,
                )
            },
            PaymentsError::TypeNotDirect(_) => ApiError::invalid_field("type", message),
            PaymentsError::MalformedTxHash => ApiError::invalid_field("tx_hash", message),
            PaymentsError::TxAlreadyUsed => ApiError {
                field: Some("tx_hash"),
                ..ApiError::new(StatusCode::CONFLICT, "tx_already_used", message)
            },
            PaymentsError::NotFound => ApiError::not_found(message),
            PaymentsError::Chain(aiforge_commands::chain::ChainError::MalformedTxHash(_)) => {
                ApiError::invalid_field("tx_hash", message)
            }
            PaymentsError::Chain(e) => ApiError::unavailable(e),
        }
    }
}
