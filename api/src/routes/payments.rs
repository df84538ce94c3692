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
use crate::routes::read_your_writes;
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PaymentCreateRequest)]
pub struct CreateRequest {
    /// `job`, `publishing_fee` or `listing_fee` (the other types are created by their own
    /// flows: subscriptions, sales).
    #[serde(rename = "type")]
    payment_type: String,
    /// `ethereum` or `tron`.
    network: String,
    /// A decimal string like "10.50" (a JSON number is read as exact decimal text too).
    #[schema(value_type = aiforge_domain::Usdt)]
    amount: Value,
    /// What the payment is for: for a `job`, the job's id to be (a UUID).
    reference: String,
}

/// `POST /api/payments/create`: the platform wallet to pay and the exact amount.
#[utoipa::path(
    post,
    path = "/api/payments/create",
    tag = "payments",
    operation_id = "create_payment",
    summary = "Start a USDT payment",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The payment to make: its amount and the platform wallet to pay", body = crate::openapi::schemas::PaymentBody),
        (status = 409, description = "A payment with this reference exists (`already_exists`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Invalid type, network, amount or reference; or the network is not configured (`network_not_configured`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PaymentVerifyRequest)]
pub struct VerifyRequest {
    payment_id: String,
    tx_hash: String,
}

/// `POST /api/payments/verify`: 200 when confirmed; 202 while the transaction is not yet
/// final (poll again); 409 when the transaction already paid for something else.
#[utoipa::path(
    post,
    path = "/api/payments/verify",
    tag = "payments",
    operation_id = "verify_payment",
    summary = "Verify a payment by its transaction hash",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "Confirmed", body = crate::openapi::schemas::PaymentBody),
        (status = 202, description = "The transaction is not final yet: poll again", body = crate::openapi::schemas::PaymentPending),
        (status = 404, description = "No such payment", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The transaction paid for something else, or the payment is confirmed already (`tx_already_used`, `already_confirmed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "The transaction does not pay this payment (`tx_failed`, `underpaid`, `no_transfer_to_platform`, `sender_not_payer_wallet`, `wrong_network`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 503, description = "The chain could not be read (`unavailable`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[utoipa::path(
    get,
    path = "/api/payments/{payment_id}",
    tag = "payments",
    operation_id = "get_payment",
    summary = "One of the caller's payments",
    params(
        ("payment_id" = String, Path, description = "The payment's id"),
    ),
    responses(
        (status = 200, description = "The payment", body = crate::openapi::schemas::PaymentBody),
        (status = 404, description = "No such payment of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[utoipa::path(
    get,
    path = "/api/payments/history/all",
    tag = "payments",
    operation_id = "payment_history",
    summary = "The caller's payments",
    params(
        crate::extract::PageQuery,
    ),
    responses(
        (status = 200, description = "A page of the caller's payments, newest first", body = crate::openapi::schemas::PaymentsPage),
        (status = 422, description = "`page` or `per_page` out of range (per_page 1-100, default 20)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

/// How the page pays on one network: what a browser wallet needs to build the USDT transfer
/// itself (the chain to switch to, the token contract, the platform wallet). Public settings,
/// never a secret: the RPC URL and API keys stay on the server.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentChain {
    /// `ethereum` or `tron`.
    #[schema(example = "ethereum")]
    pub network: &'static str,
    /// The EIP-155 chain id a wallet must be on (Ethereum only; null on Tron).
    #[schema(example = 1)]
    pub chain_id: Option<u64>,
    /// The USDT token contract payments must use.
    #[schema(example = "0xdAC17F958D2ee523a2206206994597C13D831ec7")]
    pub usdt_contract: String,
    /// USDT's decimals (6 on both networks): base units = amount × 10^decimals.
    #[schema(example = 6)]
    pub decimals: u32,
    /// The wallet every payment is sent to (as `pay_to` of a payment).
    pub platform_wallet: String,
    /// Blocks a transfer needs before the payment is confirmed.
    #[schema(example = 3)]
    pub confirmations: u64,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PaymentChains {
    /// The networks this platform accepts payments on (empty: none configured).
    pub networks: Vec<PaymentChain>,
}

/// `GET /api/payments/networks` (public): where and how to pay on each configured network.
#[utoipa::path(
    get,
    path = "/api/payments/networks",
    tag = "payments",
    operation_id = "payment_networks",
    summary = "The networks payments are accepted on",
    responses(
        (status = 200, description = "Each configured network: chain id, USDT contract, platform wallet, confirmations", body = PaymentChains),
    ),
)]
pub async fn networks(State(state): State<AppState>) -> Json<PaymentChains> {
    Json(PaymentChains {
        networks: state.payment_chains.to_vec(),
    })
}

/// `GET /api/subscriptions/plans`
#[utoipa::path(
    get,
    path = "/api/subscriptions/plans",
    tag = "subscriptions",
    operation_id = "subscription_plans",
    summary = "Platform subscription plans",
    responses(
        (status = 200, description = "The plans", body = crate::openapi::schemas::Plans),
    ),
)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PlanSubscribeRequest)]
pub struct SubscribeRequest {
    plan: PlanId,
    #[serde(default)]
    network: Option<String>,
}

/// `POST /api/subscriptions/create`: Free activates at once; a paid plan answers with the
/// payment to make, and activates for 30 days when that payment confirms.
#[utoipa::path(
    post,
    path = "/api/subscriptions/create",
    tag = "subscriptions",
    operation_id = "subscribe_to_plan",
    summary = "Subscribe to a plan",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = SubscribeRequest,
    responses(
        (status = 201, description = "The subscription; for a paid plan, the payment to make", body = crate::openapi::schemas::PlatformSubscriptionBody),
        (status = 409, description = "A payment for a plan is awaited already (`payment_already_awaited`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Unknown plan or network (`invalid_field`, `network_not_configured`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[utoipa::path(
    get,
    path = "/api/subscriptions/my-subscription",
    tag = "subscriptions",
    operation_id = "my_subscription",
    summary = "The caller's platform subscription",
    responses(
        (status = 200, description = "The caller's subscription", body = crate::openapi::schemas::PlatformSubscriptionBody),
    ),
    security(("session" = [])),
)]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(subscription_json(&state, &user.user_id).await?))
}

#[utoipa::path(
    post,
    path = "/api/subscriptions/cancel",
    tag = "subscriptions",
    operation_id = "cancel_subscription",
    summary = "Cancel the platform subscription",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "The subscription, cancelled at the end of its period", body = crate::openapi::schemas::PlatformSubscriptionBody),
        (status = 409, description = "Nothing to cancel, or cancelled already (`nothing_to_cancel`, `already_cancelled`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/api/admin/ledger",
    tag = "admin",
    operation_id = "admin_ledger",
    summary = "The ledger's balances",
    responses(
        (status = 200, description = "Every account's balance; they sum to zero", body = crate::openapi::schemas::Ledger),
    ),
    security(("admin_session" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/api/admin/ledger/{account}",
    tag = "admin",
    operation_id = "admin_ledger_account",
    summary = "One ledger account's postings",
    params(
        ("account" = String, Path, description = "A ledger account, `kind:owner` (e.g. `platform_fees:platform`)"),
    ),
    responses(
        (status = 200, description = "The account's postings in log order", body = crate::openapi::schemas::LedgerAccount),
    ),
    security(("admin_session" = [])),
)]
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
