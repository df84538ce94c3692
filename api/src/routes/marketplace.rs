//! `/api/marketplace/*`: API services (create, browse, update) and API subscriptions with
//! their keys (subscribe, list, cancel, regenerate the key).

use aiforge_domain::service::{Pricing, RateLimits, ServiceDetails};
use aiforge_domain::Usdt;
use aiforge_projections::marketplace::{
    MarketplaceQuery, MarketplaceSort, ServiceRow, SubscriptionRow,
};
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

pub const MARKETPLACE_PAGE_MAX: i64 = 100;
pub const MARKETPLACE_PAGE_DEFAULT: i64 = 20;

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub fn service_json(row: &ServiceRow) -> Value {
    json!({
        "id": row.service_id,
        "owner": row.owner,
        "model": { "id": row.model_id, "name": row.model_name, "state": row.model_state },
        "name": row.name,
        "description": row.description,
        "pricing": parsed(&row.pricing),
        "pricing_version": row.pricing_version,
        "rate_limits": parsed(&row.rate_limits),
        "active": row.active == 1,
        "included_in_plans": row.included_in_plans == 1,
        "subscribers": row.subscribers,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

pub fn subscription_json(row: &SubscriptionRow) -> Value {
    json!({
        "id": row.subscription_id,
        "service_id": row.service_id,
        "model_id": row.model_id,
        "status": row.status,
        "pricing": parsed(&row.pricing),
        "pricing_version": row.pricing_version,
        "amount_due": row.amount_due,
        "credit": Usdt::from_micros(row.credit_micros).map(|c| c.to_string()).unwrap_or_default(),
        "payment_id": row.payment_id,
        "api_key_hint": format!("aiforge_…{}", row.key_hint),
        "period_end": row.period_end,
        "requested_at": row.requested_at,
        "activated_at": row.activated_at,
        "cancelled_at": row.cancelled_at,
    })
}

/// The same shape as [`subscription_json`], from the subscription's own events: the answer of
/// a command that shows a secret is built from the store, never from a view that may lag (the
/// secret would be made and lost).
pub fn subscription_json_from_store(
    subscription: &aiforge_domain::api_subscription::ApiSubscription,
) -> Value {
    use aiforge_commands::clock::rfc3339;
    use aiforge_domain::api_subscription::ApiSubscriptionEvent;
    let Some(ApiSubscriptionEvent::ApiSubscriptionRequested {
        subscription_id,
        service_id,
        model_id,
        pricing,
        pricing_version,
        amount_due,
        payment_id,
        requested_at,
        ..
    }) = &subscription.requested
    else {
        return Value::Null;
    };
    json!({
        "id": subscription_id,
        "service_id": service_id,
        "model_id": model_id,
        "status": subscription.status.map(|s| s.as_str()),
        "pricing": pricing,
        "pricing_version": pricing_version,
        "amount_due": amount_due.to_string(),
        "credit": subscription.credit_added.to_string(),
        "payment_id": payment_id,
        "api_key_hint": subscription.key.as_ref().map(|k| format!("aiforge_…{}", k.hint)),
        "period_end": subscription.period_end.map(rfc3339),
        "requested_at": rfc3339(*requested_at),
        "activated_at": subscription.activated_at.map(rfc3339),
        "cancelled_at": subscription.cancelled_at.map(rfc3339),
    })
}

async fn service_response(state: &AppState, service_id: &str) -> Result<Value, ApiError> {
    let row = aiforge_projections::marketplace::find_service(&state.db, service_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such service"))?;
    Ok(json!({ "service": service_json(&row) }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServiceCreateRequest)]
pub struct CreateRequest {
    model_id: String,
    name: String,
    #[serde(default)]
    description: String,
    pricing: Pricing,
    #[serde(default)]
    rate_limits: RateLimits,
    /// Whether platform-plan holders may call the model under their plan (paid from the plans'
    /// pool by tokens) besides subscribers. Default false: a creator opts in.
    #[serde(default)]
    included_in_plans: bool,
}

/// `POST /api/marketplace/create`.
#[utoipa::path(
    post,
    path = "/api/marketplace/create",
    tag = "marketplace",
    operation_id = "create_service",
    summary = "Offer a listed model as an API service",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The service", body = crate::openapi::schemas::ServiceAnswer),
        (status = 403, description = "Not the model's manager (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The model is not on the marketplace (`model_not_on_marketplace`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .marketplace
        .create_service(
            &user.user_id,
            &body.model_id,
            ServiceDetails {
                name: body.name,
                description: body.description,
            },
            body.pricing,
            body.rate_limits,
            body.included_in_plans,
            &meta,
        )
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(service_response(&state, &outcome.aggregate_id).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BrowseQuery {
    /// Text to find in a service's name or description or its model's name (case-insensitive).
    search: Option<String>,
    /// `monthly`, `pay_per_request` or `hybrid`.
    pricing: Option<String>,
    /// `newest` (the default), `popular` (most subscribers) or `price` (lowest first).
    sort: Option<String>,
    /// From 1 (the default).
    page: Option<i64>,
    /// 1-100, default 20.
    per_page: Option<i64>,
}

/// `GET /api/marketplace/marketplace` (public): active services of listed models;
/// `?search=&pricing=monthly|pay_per_request|hybrid&sort=newest|popular|price&page=&per_page=`.
#[utoipa::path(
    get,
    path = "/api/marketplace/marketplace",
    tag = "marketplace",
    operation_id = "browse_marketplace",
    summary = "Browse the marketplace",
    params(
        BrowseQuery,
    ),
    responses(
        (status = 200, description = "A page of active services of listed models", body = crate::openapi::schemas::ServicesPage),
        (status = 422, description = "Unknown sort or pricing, or paging out of range", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn browse(
    State(state): State<AppState>,
    Query(query): Query<BrowseQuery>,
) -> Result<Json<Value>, ApiError> {
    let (page, per_page, offset) = PageQuery::new(query.page, query.per_page)
        .resolve(MARKETPLACE_PAGE_DEFAULT, MARKETPLACE_PAGE_MAX)?;
    let sort = match query.sort.as_deref() {
        None | Some("newest") => MarketplaceSort::Newest,
        Some("popular") => MarketplaceSort::Popular,
        Some("price") => MarketplaceSort::Price,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "sort",
                format!("'{other}': sort is newest, popular or price"),
            ))
        }
    };
    if let Some(pricing) = query.pricing.as_deref() {
        if !matches!(pricing, "monthly" | "pay_per_request" | "hybrid") {
            return Err(ApiError::invalid_field(
                "pricing",
                format!("'{pricing}': pricing is monthly, pay_per_request or hybrid"),
            ));
        }
    }
    let (rows, total) = aiforge_projections::marketplace::marketplace(
        &state.db,
        &MarketplaceQuery {
            search: query.search,
            pricing: query.pricing,
            sort: Some(sort),
            limit: per_page,
            offset,
        },
    )
    .await?;
    Ok(Json(json!({
        "services": rows.iter().map(service_json).collect::<Vec<_>>(),
        "page": page,
        "per_page": per_page,
        "total": total,
    })))
}

/// `GET /api/marketplace/my-services`.
#[utoipa::path(
    get,
    path = "/api/marketplace/my-services",
    tag = "marketplace",
    operation_id = "my_services",
    summary = "The caller's services",
    responses(
        (status = 200, description = "The caller's services", body = crate::openapi::schemas::Services),
    ),
    security(("session" = [])),
)]
pub async fn mine(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = aiforge_projections::marketplace::services_of(&state.db, &user.user_id).await?;
    Ok(Json(json!({
        "services": rows.iter().map(service_json).collect::<Vec<_>>()
    })))
}

/// `GET /api/marketplace/{service_id}` (public for services on the marketplace; the owner sees
/// theirs in any state).
#[utoipa::path(
    get,
    path = "/api/marketplace/{service_id}",
    tag = "marketplace",
    operation_id = "get_service",
    summary = "A service (public when on the marketplace)",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
    ),
    responses(
        (status = 200, description = "The service", body = crate::openapi::schemas::ServiceAnswer),
        (status = 404, description = "No such service on the marketplace (the owner sees theirs in any state)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security((), ("session" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    Path(service_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = aiforge_projections::marketplace::find_service(&state.db, &service_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such service"))?;
    let public = row.active == 1 && matches!(row.model_state.as_str(), "listed" | "grace");
    let owner = user.is_some_and(|u| u.user_id == row.owner);
    if !public && !owner {
        return Err(ApiError::not_found("no such service"));
    }
    Ok(Json(json!({ "service": service_json(&row) })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServiceUpdateRequest)]
pub struct UpdateRequest {
    name: Option<String>,
    description: Option<String>,
    pricing: Option<Pricing>,
    rate_limits: Option<RateLimits>,
    active: Option<bool>,
    included_in_plans: Option<bool>,
}

/// `PUT /api/marketplace/{service_id}` (owner only): details, pricing (for new subscriptions
/// only), limits, active.
#[utoipa::path(
    put,
    path = "/api/marketplace/{service_id}",
    tag = "marketplace",
    operation_id = "update_service",
    summary = "Update a service (owner only)",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = UpdateRequest,
    responses(
        (status = 200, description = "The service", body = crate::openapi::schemas::ServiceAnswer),
        (status = 403, description = "Not the owner (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such service", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(service_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<UpdateRequest>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let details = if body.name.is_some() || body.description.is_some() {
        let current = state.marketplace.service(&service_id).await?;
        let current = current
            .details
            .ok_or_else(|| ApiError::not_found("no such service"))?;
        Some(ServiceDetails {
            name: body.name.unwrap_or(current.name),
            description: body.description.unwrap_or(current.description),
        })
    } else {
        None
    };
    let outcome = state
        .marketplace
        .update_service(
            &service_id,
            &user.user_id,
            details,
            body.pricing,
            body.rate_limits,
            body.active,
            body.included_in_plans,
            &meta,
        )
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(service_response(&state, &service_id).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ServiceSubscribeRequest)]
pub struct SubscribeRequest {
    /// Where to pay, when anything is due: "ethereum" (default) or "tron".
    network: Option<String>,
    /// Prepaid credit (pay-per-request, optionally hybrid), as a decimal string.
    #[schema(value_type = Option<aiforge_domain::Usdt>)]
    credit: Option<String>,
}

/// `POST /api/marketplace/{service_id}/subscribe`: the API key, shown this once, and the
/// payment to make when anything is due (the subscription activates when it confirms).
#[utoipa::path(
    post,
    path = "/api/marketplace/{service_id}/subscribe",
    tag = "marketplace",
    operation_id = "subscribe_to_service",
    summary = "Subscribe to a service: an API key",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = SubscribeRequest,
    responses(
        (status = 201, description = "The subscription and its API key, shown this once; the payment to make when anything is due", body = crate::openapi::schemas::Subscribed),
        (status = 404, description = "No such service", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The service takes no subscriptions, or this request already subscribed (`service_not_accepting`, `already_subscribed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Credit missing, not accepted or malformed; or an unknown network", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn subscribe(
    State(state): State<AppState>,
    user: AuthUser,
    Path(service_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<SubscribeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let network = body.network.as_deref().map(parse_network).transpose()?;
    let credit = match body.credit.as_deref() {
        None => Usdt::ZERO,
        Some(text) => {
            Usdt::parse(text).map_err(|e| ApiError::invalid_field("credit", e.to_string()))?
        }
    };
    let subscribed = state
        .marketplace
        .subscribe(&user.user_id, &service_id, network, credit, &meta)
        .await?;
    if subscribed.outcome.replayed {
        // The key was shown when the subscription was made, and is not kept: a retried request
        // cannot show it again.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_subscribed",
            "this request already created a subscription; its key was shown then (regenerate it if it was lost)",
        ));
    }
    // The key exists from here on: whatever happens next, the answer carries it. The wait
    // lets the key work at once and the next read see the subscription; a lagging projection
    // only delays the answer (bounded), it never turns it into an error.
    read_your_writes(&state, subscribed.outcome.last).await;
    let subscription = state
        .marketplace
        .api_subscription(&subscribed.subscription_id)
        .await
        .map(|s| subscription_json_from_store(&s))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a new subscription could not be read back from the store");
            json!({ "id": subscribed.subscription_id })
        });
    let payment = match &subscribed.payment_id {
        Some(payment_id) => aiforge_projections::payments::find(&state.db, payment_id)
            .await
            .ok()
            .flatten()
            .map(|p| json!(p)),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "subscription": subscription,
            "api_key": subscribed.api_key,
            "api_key_notice": "this key is shown only once; store it now",
            "amount_due": subscribed.amount_due.to_string(),
            "payment": payment,
        })),
    ))
}

/// `GET /api/marketplace/my-subscriptions`.
#[utoipa::path(
    get,
    path = "/api/marketplace/my-subscriptions",
    tag = "marketplace",
    operation_id = "my_api_subscriptions",
    summary = "The caller's API subscriptions",
    responses(
        (status = 200, description = "The caller's API subscriptions (key hints only)", body = crate::openapi::schemas::ApiSubscriptions),
    ),
    security(("session" = [])),
)]
pub async fn my_subscriptions(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let rows = aiforge_projections::marketplace::subscriptions_of(&state.db, &user.user_id).await?;
    Ok(Json(json!({
        "subscriptions": rows.iter().map(subscription_json).collect::<Vec<_>>()
    })))
}

/// `POST /api/marketplace/subscriptions/{id}/regenerate-key`: a new key, shown this once; the
/// old key stops working at once.
#[utoipa::path(
    post,
    path = "/api/marketplace/subscriptions/{subscription_id}/regenerate-key",
    tag = "marketplace",
    operation_id = "regenerate_api_key",
    summary = "Regenerate a subscription's API key",
    params(
        ("subscription_id" = String, Path, description = "The API subscription's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The new key, shown this once; the old key stops working at once", body = crate::openapi::schemas::KeyRegenerated),
        (status = 403, description = "Not the subscriber (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such subscription", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Cancelled, or this request already regenerated the key (`cancelled`, `already_regenerated`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn regenerate_key(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subscription_id): Path<String>,
    CommandJson { body: _, mut meta }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let (outcome, api_key) = state
        .marketplace
        .regenerate_key(&subscription_id, &user.user_id, &meta)
        .await?;
    if outcome.replayed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_regenerated",
            "this request already regenerated the key; it was shown then",
        ));
    }
    read_your_writes(&state, outcome.last).await;
    Ok(Json(json!({
        "subscription_id": subscription_id,
        "api_key": api_key,
        "api_key_notice": "this key is shown only once; the previous key no longer works",
    })))
}

/// `POST /api/marketplace/subscriptions/{id}/cancel`: the key stops working at once.
#[utoipa::path(
    post,
    path = "/api/marketplace/subscriptions/{subscription_id}/cancel",
    tag = "marketplace",
    operation_id = "cancel_api_subscription",
    summary = "Cancel an API subscription",
    params(
        ("subscription_id" = String, Path, description = "The API subscription's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The subscription, cancelled; its key stops working at once", body = crate::openapi::schemas::ApiSubscriptionAnswer),
        (status = 403, description = "Not the subscriber (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such subscription", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Cancelled already (`cancelled`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subscription_id): Path<String>,
    CommandJson { body: _, mut meta }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .marketplace
        .cancel_subscription(&subscription_id, &user.user_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    let row = aiforge_projections::marketplace::find_subscription(&state.db, &subscription_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such subscription"))?;
    Ok(Json(json!({ "subscription": subscription_json(&row) })))
}

/// `GET /api/marketplace/subscriptions/{id}/usage`: the subscription's metered calls in total
/// (requests, tokens, cost) and its remaining prepaid credit; the consumer's own only.
#[utoipa::path(
    get,
    path = "/api/marketplace/subscriptions/{subscription_id}/usage",
    tag = "marketplace",
    operation_id = "api_subscription_usage",
    summary = "A subscription's usage",
    params(
        ("subscription_id" = String, Path, description = "The API subscription's id"),
    ),
    responses(
        (status = 200, description = "Metered calls in total and the remaining credit", body = crate::openapi::schemas::SubscriptionUsage),
        (status = 404, description = "No such subscription of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn usage(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subscription_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = aiforge_projections::marketplace::find_subscription(&state.db, &subscription_id)
        .await?
        .filter(|row| row.consumer == user.user_id)
        .ok_or_else(|| ApiError::not_found("no such subscription"))?;
    let totals =
        aiforge_projections::usage::subscription_usage(&state.db, &subscription_id).await?;
    let usdt = |micros: i64| {
        aiforge_domain::Usdt::from_micros(micros)
            .map(|u| u.to_string())
            .unwrap_or_default()
    };
    Ok(Json(json!({
        "subscription_id": subscription_id,
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "total_tokens": totals.prompt_tokens + totals.completion_tokens,
        "cost": usdt(totals.cost_micros),
        "credit": usdt(row.credit_micros),
        "credit_remaining": usdt(row.credit_micros - totals.cost_micros),
    })))
}
