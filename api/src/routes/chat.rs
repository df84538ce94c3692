//! The web chat's account routes (contract: `/work/contract-chat.md`, issue 15): the models a
//! user may chat with and which entitlement pays for each (`/api/chat/models`), the plan's usage
//! this period (`/api/plan/usage`), the platform API key (`/api/account/api-key`: shown once,
//! regenerable, SHA-256 at rest) and the receipt of a metered call (`/api/receipts/{id}`).
//! Another user's receipt is not found (404), never forbidden.

use aiforge_commands::conversations::ChatEntitlement;
use aiforge_commands::gateway::index::lock;
use aiforge_domain::fees::PaymentType;
use aiforge_domain::ledger::LedgerAccount;
use aiforge_domain::model::ModelOwner;
use aiforge_domain::revenue_book::Month;
use aiforge_domain::usage::{ApiCallEvent, CallEntitlement, API_CALL_AGGREGATE};
use aiforge_domain::Usdt;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::gateway::Entitlement;
use crate::routes::read_your_writes;
use crate::AppState;

/// A model the user may chat with, and what pays for it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChatModel {
    /// The model id as `/api/v1` uses it.
    pub id: String,
    pub name: String,
    pub service_id: String,
    pub entitlement: ChatEntitlement,
    /// "Free plan", or "API subscription: <service name>".
    pub label: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatModels {
    pub models: Vec<ChatModel>,
}

/// What `user_id` may chat with now: every model included in plans under their active plan,
/// then each active API subscription's model. A model may appear twice (the pair
/// (id, entitlement) is what a conversation names).
pub fn chat_models(state: &AppState, user_id: &str) -> Vec<ChatModel> {
    let index = &state.gateway.index;
    let mut models = Vec::new();
    if let Some(grant) = index.plan_of(user_id, state.clock.now()) {
        for model in index.plan_models() {
            models.push(ChatModel {
                id: model.model_id,
                name: model.name,
                service_id: model.service_id,
                entitlement: ChatEntitlement::Plan { plan: grant.plan },
                label: format!("{} plan", grant.plan.plan().name),
            });
        }
    }
    for subscription in index.subscriptions_of(user_id) {
        let (active, model_id, service_id) = {
            let s = lock(&subscription);
            (s.active, s.model_id.clone(), s.service_id.clone())
        };
        let Some(model) = index.model(&model_id).filter(|_| active) else {
            continue;
        };
        let service_name = index
            .service(&service_id)
            .map(|s| s.name)
            .unwrap_or_else(|| service_id.clone());
        models.push(ChatModel {
            id: model_id,
            name: model.name,
            service_id,
            entitlement: ChatEntitlement::Subscription {
                subscription_id: subscription.subscription_id.clone(),
            },
            label: format!("API subscription: {service_name}"),
        });
    }
    models
}

/// The pipeline's entitlement for a session naming `entitlement`: the user's plan, or one of
/// their own API subscriptions (another user's subscription is not theirs to name: None).
pub fn session_entitlement(
    state: &AppState,
    user_id: &str,
    entitlement: &ChatEntitlement,
) -> Option<Entitlement> {
    match entitlement {
        ChatEntitlement::Plan { .. } => Some(Entitlement::Plan {
            user_id: user_id.to_string(),
        }),
        ChatEntitlement::Subscription { subscription_id } => {
            let subscription = state
                .gateway
                .index
                .subscription(subscription_id)
                .filter(|s| !s.subscription_id.starts_with("plan:"))?;
            let mine = lock(&subscription).consumer == user_id;
            mine.then_some(Entitlement::Subscription(subscription))
        }
    }
}

/// `GET /api/chat/models`.
#[utoipa::path(
    get,
    path = "/api/chat/models",
    tag = "chat",
    operation_id = "chat_models",
    summary = "The models you may chat with, and which entitlement pays for each",
    responses(
        (status = 200, description = "Plan models (under your active plan), then your API subscriptions' models", body = ChatModels),
    ),
    security(("session" = [])),
)]
pub async fn models(State(state): State<AppState>, user: AuthUser) -> Json<ChatModels> {
    Json(ChatModels {
        models: chat_models(&state, &user.user_id),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanUsage {
    pub plan: aiforge_domain::subscription::PlanId,
    pub period_start: String,
    pub period_end: String,
    pub requests_used: u64,
    pub requests_limit: u64,
    pub tokens_used: u64,
    pub tokens_limit: u64,
}

/// `GET /api/plan/usage`.
#[utoipa::path(
    get,
    path = "/api/plan/usage",
    tag = "chat",
    operation_id = "plan_usage",
    summary = "Your plan's requests and tokens used this usage period",
    responses(
        (status = 200, description = "The plan's usage this period (30 days from the plan period's start)", body = PlanUsage),
        (status = 404, description = "You have no active plan (`no_active_plan`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn plan_usage(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<PlanUsage>, ApiError> {
    let index = &state.gateway.index;
    let now = state.clock.now();
    let grant = index.plan_of(&user.user_id, now).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_active_plan",
            "you have no active plan; choose one on the plans page (Free included)",
        )
    })?;
    let (number, start, end) = grant.period.usage_period(now);
    let used = {
        let mut counter = lock(&grant.counter);
        counter.roll_to(now);
        if counter.period == number {
            counter.period_usage
        } else {
            aiforge_domain::usage::PeriodUsage::default()
        }
    };
    let limits = index.plan_limits(grant.plan);
    Ok(Json(PlanUsage {
        plan: grant.plan,
        period_start: aiforge_commands::clock::rfc3339(start),
        period_end: aiforge_commands::clock::rfc3339(end),
        requests_used: used.requests,
        requests_limit: limits.requests_per_month,
        tokens_used: used.tokens,
        tokens_limit: limits.tokens_per_month,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyStatus {
    pub exists: bool,
    /// `aiforge_…` and the key's last 4 characters.
    pub prefix: Option<String>,
    pub created_at: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyIssued {
    /// The key, shown this once (only its SHA-256 is kept).
    pub key: String,
    pub prefix: String,
    pub created_at: String,
}

fn prefix(hint: &str) -> String {
    format!("aiforge_…{hint}")
}

/// A key of one's own, new: its domain errors cannot reach a client (a bug if they do).
impl From<aiforge_domain::platform_key::PlatformKeyError> for ApiError {
    fn from(err: aiforge_domain::platform_key::PlatformKeyError) -> Self {
        ApiError::internal(err)
    }
}

fn platform_key_error(
    err: aiforge_commands::CommandError<aiforge_domain::platform_key::PlatformKeyError>,
) -> ApiError {
    crate::error::command_error(err)
}

/// `GET /api/account/api-key`.
#[utoipa::path(
    get,
    path = "/api/account/api-key",
    tag = "chat",
    operation_id = "platform_api_key",
    summary = "Whether you have a platform API key (never the key itself)",
    responses(
        (status = 200, description = "The key's prefix and when it was made, if any", body = ApiKeyStatus),
    ),
    security(("session" = [])),
)]
pub async fn api_key(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<ApiKeyStatus>, ApiError> {
    let key = state
        .platform_keys
        .current(&user.user_id)
        .await
        .map_err(platform_key_error)?;
    Ok(Json(ApiKeyStatus {
        exists: key.key.is_some(),
        prefix: key.key.map(|k| prefix(&k.hint)),
        created_at: key.issued_at.map(aiforge_commands::clock::rfc3339),
    }))
}

/// `POST /api/account/api-key`.
#[utoipa::path(
    post,
    path = "/api/account/api-key",
    tag = "chat",
    operation_id = "issue_platform_api_key",
    summary = "Make your platform API key (again: the old one is refused at once)",
    description = "The key works on `/api/v1` for every model included in plans, under your plan's limits. It is shown in this answer only.",
    params(crate::openapi::IdempotencyKey),
    responses(
        (status = 201, description = "The new key, shown once", body = ApiKeyIssued),
    ),
    security(("session" = [])),
)]
pub async fn issue_api_key(
    State(state): State<AppState>,
    user: AuthUser,
    crate::extract::CommandJson { meta, .. }: crate::extract::CommandJson<crate::extract::Empty>,
) -> Result<impl IntoResponse, ApiError> {
    let mut meta = meta;
    meta.actor = Some(user.user_id.clone());
    let issued = state
        .platform_keys
        .issue(&user.user_id, &meta)
        .await
        .map_err(platform_key_error)?;
    // The key works (and the old one is refused) on this instance before the answer.
    read_your_writes(&state, issued.outcome.last).await;
    let key = issued
        .key
        .key
        .ok_or_else(|| ApiError::internal("an issued key is not in the store"))?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyIssued {
            key: issued.plaintext,
            prefix: prefix(&key.hint),
            created_at: issued
                .key
                .issued_at
                .map(aiforge_commands::clock::rfc3339)
                .unwrap_or_default(),
        }),
    ))
}

/// A party's share of a call's cost.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Share {
    /// creator | group_member | platform | plan_pool
    pub party: String,
    pub name: String,
    pub amount: Usdt,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReceiptEvent {
    pub global_position: i64,
    /// `{"seq", "seal"}` once the seals projection has sealed it, else null.
    pub seal: Option<Value>,
}

/// What one answer cost and where the money goes, linked to its metering event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    pub request_id: String,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u64,
    /// An API subscription's call: its price. A plan call: the tokens' worth under the plan
    /// (price × tokens / the plan's monthly tokens); nothing is charged per call.
    pub cost: Usdt,
    pub entitlement: ChatEntitlement,
    pub shares: Vec<Share>,
    /// Plan calls: the model's share of this month's pool so far (by plan tokens).
    pub pool_share_this_month: Option<Usdt>,
    pub event: ReceiptEvent,
    pub verify: String,
}

async fn display_name(state: &AppState, user_id: &str) -> String {
    match aiforge_projections::users::find(&state.db, user_id).await {
        Ok(Some(row)) => row.username.unwrap_or_else(|| user_id.to_string()),
        _ => user_id.to_string(),
    }
}

/// The receipt of `request_id` if it is a call of `user_id`'s (None otherwise, or not yet
/// metered).
pub async fn receipt(
    state: &AppState,
    user_id: &str,
    request_id: &str,
) -> Result<Option<Receipt>, ApiError> {
    let events = state
        .db
        .aggregate_events(API_CALL_AGGREGATE, request_id)
        .await?;
    let Some(event) = events.first() else {
        return Ok(None);
    };
    let ApiCallEvent::ApiCallMetered(call) =
        serde_json::from_str::<ApiCallEvent>(&event.payload).map_err(ApiError::internal)?;
    if call.consumer != user_id {
        return Ok(None);
    }
    let (prompt_tokens, completion_tokens) = (call.prompt_tokens, call.completion_tokens);
    let tokens = call.total_tokens();
    let schedule = state
        .fees
        .book()
        .await
        .map_err(crate::error::command_error)?
        .table()
        .at(call.at)
        .clone();
    let mut shares = Vec::new();
    let (cost, entitlement, pool_share) = match &call.entitlement {
        CallEntitlement::Plan { plan, .. } => {
            let worth = plan.plan().worth_of(tokens);
            let (fee, pool) = schedule
                .split(PaymentType::PlatformSubscription, worth)
                .map_err(ApiError::internal)?;
            let month = Month::of(call.at);
            shares.push(Share {
                party: "platform".into(),
                name: "AIForge".into(),
                amount: fee,
            });
            shares.push(Share {
                party: "plan_pool".into(),
                name: format!("subscription pool {month}"),
                amount: pool,
            });
            let posted = aiforge_projections::payments::posted_into(
                &state.db,
                &LedgerAccount::subscription_pool(&month.to_string()).name(),
            )
            .await?;
            let tokens_by_model = aiforge_projections::usage::plan_tokens_by_model(
                &state.db,
                &aiforge_commands::clock::rfc3339(month.start()),
                &aiforge_commands::clock::rfc3339(month.end()),
            )
            .await?;
            let pool_total = Usdt::from_micros(posted).map_err(ApiError::internal)?;
            let pool_share = aiforge_domain::revenue::distribute_pool(pool_total, &tokens_by_model)
                .map_err(ApiError::internal)?
                .into_iter()
                .find(|s| s.model_id == call.model_id)
                .map_or(Usdt::ZERO, |s| s.amount);
            (
                worth,
                ChatEntitlement::Plan { plan: *plan },
                Some(pool_share),
            )
        }
        CallEntitlement::Subscription => {
            let (fee, net) = schedule
                .split(PaymentType::ApiSubscription, call.cost)
                .map_err(ApiError::internal)?;
            shares.push(Share {
                party: "platform".into(),
                name: "AIForge".into(),
                amount: fee,
            });
            let model = state.marketplace.model(&call.model_id).await.ok();
            match model.as_ref().and_then(|m| m.owner.clone()) {
                Some(ModelOwner::Group(group)) => {
                    let split = model
                        .as_ref()
                        .and_then(|m| m.split_for(Month::of(call.at).start()).cloned());
                    match split {
                        Some(split) => {
                            let parts =
                                aiforge_domain::revenue::split_among_members(net, &split.shares)
                                    .map_err(ApiError::internal)?;
                            for part in parts {
                                shares.push(Share {
                                    party: "group_member".into(),
                                    name: display_name(state, &part.user_id).await,
                                    amount: part.amount,
                                });
                            }
                        }
                        None => shares.push(Share {
                            party: "group_member".into(),
                            name: format!("the owner of group {group}"),
                            amount: net,
                        }),
                    }
                }
                Some(ModelOwner::User(owner)) => shares.push(Share {
                    party: "creator".into(),
                    name: display_name(state, &owner).await,
                    amount: net,
                }),
                None => shares.push(Share {
                    party: "creator".into(),
                    name: call.model_id.clone(),
                    amount: net,
                }),
            }
            (
                call.cost,
                ChatEntitlement::Subscription {
                    subscription_id: call.subscription_id.clone(),
                },
                None,
            )
        }
    };
    let seal = aiforge_projections::seals::seal_at(&state.db, event.position)
        .await?
        .map(|(seq, seal)| json!({"seq": seq, "seal": seal}));
    Ok(Some(Receipt {
        request_id: call.request_id.clone(),
        model: call.model_id.clone(),
        prompt_tokens,
        completion_tokens,
        total_tokens: tokens,
        cost,
        entitlement,
        shares,
        pool_share_this_month: pool_share,
        event: ReceiptEvent {
            global_position: event.position,
            seal,
        },
        verify: "aiforge audit verify".into(),
    }))
}

/// `GET /api/receipts/{request_id}`.
#[utoipa::path(
    get,
    path = "/api/receipts/{request_id}",
    tag = "chat",
    operation_id = "receipt",
    summary = "The receipt of one of your calls",
    params(("request_id" = String, Path, description = "The call's id (`chatcmpl-…`)")),
    responses(
        (status = 200, description = "Tokens as metered, the cost under the entitlement, where the money goes, and the metering event's position and seal", body = Receipt),
        (status = 404, description = "No such call of yours", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn get_receipt(
    State(state): State<AppState>,
    user: AuthUser,
    Path(request_id): Path<String>,
) -> Result<Json<Receipt>, ApiError> {
    receipt(&state, &user.user_id, &request_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such call of yours"))
}
