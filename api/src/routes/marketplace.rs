//! `/api/marketplace/*`: API services (create, browse, update) and API subscriptions with
//! their keys (subscribe, list, cancel, regenerate the key).

use aiforge_domain::api_subscription::{access_at, grace_until, ApiSubscriptionStatus};
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
use time::OffsetDateTime;

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

/// The lifecycle fields of a subscription at `now` (see `domain/src/api_subscription.rs`):
/// `state` (pending_payment, active, grace, expired, cancelled), `grace_until`, the price a
/// renewal costs (null: pay-per-request, nothing to renew) and whether it takes top-ups.
fn lifecycle_json(
    status: Option<ApiSubscriptionStatus>,
    period_end: Option<OffsetDateTime>,
    pricing: Option<&Pricing>,
    now: OffsetDateTime,
) -> Value {
    use aiforge_commands::clock::rfc3339;
    let state = status.map(|status| access_at(status, period_end, now).as_str());
    let renewal_price = match pricing {
        Some(Pricing::PayPerRequest { .. }) | None => None,
        Some(pricing) => Some(pricing.monthly_fee().to_string()),
    };
    json!({
        "state": state,
        "grace_until": period_end.map(|end| rfc3339(grace_until(end))),
        "renewal_price": renewal_price,
        "accepts_top_up": matches!(pricing, Some(Pricing::PayPerRequest { .. } | Pricing::Hybrid { .. })),
    })
}

fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

fn stored_status(text: &str) -> Option<ApiSubscriptionStatus> {
    match text {
        "pending_payment" => Some(ApiSubscriptionStatus::PendingPayment),
        "active" => Some(ApiSubscriptionStatus::Active),
        "cancelled" => Some(ApiSubscriptionStatus::Cancelled),
        _ => None,
    }
}

pub fn subscription_json(row: &SubscriptionRow, now: OffsetDateTime) -> Value {
    let pricing: Option<Pricing> = serde_json::from_str(&row.pricing).ok();
    let period_end = row.period_end.as_deref().and_then(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    merged(
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
        }),
        lifecycle_json(
            stored_status(&row.status),
            period_end,
            pricing.as_ref(),
            now,
        ),
    )
}

/// The same shape as [`subscription_json`], from the subscription's own events: the answer of
/// a command that shows a secret is built from the store, never from a view that may lag (the
/// secret would be made and lost).
pub fn subscription_json_from_store(
    subscription: &aiforge_domain::api_subscription::ApiSubscription,
    now: OffsetDateTime,
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
    merged(
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
        }),
        lifecycle_json(
            subscription.status,
            subscription.period_end,
            Some(pricing),
            now,
        ),
    )
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Text to find in a name or description (an item's or its model's), case-insensitive.
    q: Option<String>,
    /// `model` or `service` (default: both).
    kind: Option<String>,
    /// `monthly`, `pay_per_request` or `hybrid` (service items only).
    pricing: Option<String>,
    /// Lowest price in USDT: a service's monthly fee (per-request price for pay-per-request), a
    /// model's sale price.
    min_price: Option<String>,
    /// Highest price in USDT.
    max_price: Option<String>,
    /// Comma-separated tags, all required (at most 5).
    tags: Option<String>,
    /// `newest` (default), `popular` (requests in the last 30 days), `price_asc`, `price_desc`.
    sort: Option<String>,
    /// From 1 (the default).
    page: Option<i64>,
    /// 1-100, default 20.
    per_page: Option<i64>,
}

/// The day (`YYYY-MM-DD`, UTC) after which "the last 30 days" start, on the app clock.
fn last_30_days_after(now: OffsetDateTime) -> String {
    aiforge_commands::clock::rfc3339(now - time::Duration::days(30))
        .chars()
        .take(10)
        .collect()
}

fn price_micros(field: &'static str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        Usdt::parse(t)
            .map_err(|e| ApiError::invalid_field(field, e.to_string()))
            .and_then(|p| {
                if p.is_negative() {
                    return Err(ApiError::invalid_field(field, "a price is not negative"));
                }
                i64::try_from(p.to_micros())
                    .map_err(|_| ApiError::invalid_field(field, "too large"))
            })
    })
    .transpose()
}

fn owner_json(kind: &str, id: &str) -> Value {
    json!({ "kind": kind, "id": id })
}

/// `GET /api/marketplace/search` (public): public services and published models (listed or in
/// grace, with or without a service) as one list, filtered and sorted.
#[utoipa::path(
    get,
    path = "/api/marketplace/search",
    tag = "marketplace",
    operation_id = "search_marketplace",
    summary = "Search the marketplace: services and published models",
    params(
        SearchQuery,
    ),
    responses(
        (status = 200, description = "A page of services and models", body = crate::openapi::schemas::MarketItemsPage),
        (status = 422, description = "Unknown kind, pricing or sort; a malformed price; too many tags; paging out of range", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn search(
    State(state): State<AppState>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    use aiforge_projections::marketplace::{SearchSort, SEARCH_TAGS_MAX};
    let (page, per_page, offset) = PageQuery::new(query.page, query.per_page)
        .resolve(MARKETPLACE_PAGE_DEFAULT, MARKETPLACE_PAGE_MAX)?;
    let sort = match query.sort.as_deref() {
        None | Some("newest") => SearchSort::Newest,
        Some("popular") => SearchSort::Popular,
        Some("price_asc") => SearchSort::PriceAsc,
        Some("price_desc") => SearchSort::PriceDesc,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "sort",
                format!("'{other}': sort is newest, popular, price_asc or price_desc"),
            ))
        }
    };
    if let Some(kind) = query.kind.as_deref() {
        if !matches!(kind, "model" | "service") {
            return Err(ApiError::invalid_field(
                "kind",
                format!("'{kind}': kind is model or service"),
            ));
        }
    }
    if let Some(pricing) = query.pricing.as_deref() {
        if !matches!(pricing, "monthly" | "pay_per_request" | "hybrid") {
            return Err(ApiError::invalid_field(
                "pricing",
                format!("'{pricing}': pricing is monthly, pay_per_request or hybrid"),
            ));
        }
    }
    let mut tags: Vec<String> = query
        .tags
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    if tags.len() > SEARCH_TAGS_MAX {
        return Err(ApiError::invalid_field(
            "tags",
            format!("at most {SEARCH_TAGS_MAX} tags"),
        ));
    }
    let (rows, total) = aiforge_projections::marketplace::search(
        &state.db,
        &aiforge_projections::marketplace::SearchQuery {
            text: query.q,
            kind: query.kind,
            pricing: query.pricing,
            min_price_micros: price_micros("min_price", query.min_price.as_deref())?,
            max_price_micros: price_micros("max_price", query.max_price.as_deref())?,
            tags,
            sort,
            since_day: last_30_days_after(state.clock.now()),
            limit: per_page,
            offset,
        },
    )
    .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "kind": row.kind,
                "id": row.id,
                "model_id": row.model_id,
                "name": row.name,
                "description": row.description,
                "tags": parsed(&row.tags),
                "owner": owner_json(&row.owner_kind, &row.owner_id),
                "price": row.price_micros.and_then(|m| Usdt::from_micros(m).ok()).map(|p| p.to_string()),
                "pricing_kind": row.pricing_kind,
                "requests_30d": row.requests_30d,
                "created_at": row.created_at,
            })
        })
        .collect();
    Ok(Json(json!({
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": total,
    })))
}

/// `GET /api/marketplace/models/{model_id}` (public): a model on the marketplace (listed or in
/// grace) with its public services and its last 30 days of calls.
#[utoipa::path(
    get,
    path = "/api/marketplace/models/{model_id}",
    tag = "marketplace",
    operation_id = "marketplace_model",
    summary = "A model on the marketplace: details, services, recent usage, sale price",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The model, its services and its last 30 days", body = crate::openapi::schemas::MarketModel),
        (status = 404, description = "No such model on the marketplace", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn model_detail(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = aiforge_projections::marketplace::find_model(&state.db, &model_id)
        .await?
        .filter(|row| matches!(row.state.as_str(), "listed" | "grace"))
        .ok_or_else(|| ApiError::not_found("no such model on the marketplace"))?;
    let services =
        aiforge_projections::marketplace::public_services_of_model(&state.db, &model_id).await?;
    let (requests, tokens) = aiforge_projections::marketplace::model_usage_since(
        &state.db,
        &model_id,
        &last_30_days_after(state.clock.now()),
    )
    .await?;
    // The upload's judgement, worded as `GET /api/models/{id}` words it.
    let judged = crate::routes::models::model_json(&row);
    Ok(Json(json!({
        "model": {
            "id": row.model_id,
            "name": row.name,
            "description": row.description,
            "tags": parsed(&row.tags),
            "size_bytes": row.size_bytes,
            "sha256": row.sha256,
            "cid": row.cid,
            "owner": owner_json(&row.owner_kind, &row.owner_id),
            "state": row.state,
            "published_at": row.published_at,
            "sale_price": row.sale_price,
            "servable": judged["servable"],
            "serving": judged["serving"],
        },
        "services": services.iter().map(service_json).collect::<Vec<_>>(),
        "usage_30d": { "requests": requests, "tokens": tokens },
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
        .map(|s| subscription_json_from_store(&s, state.clock.now()))
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
        "subscriptions": rows
            .iter()
            .map(|row| subscription_json(row, state.clock.now()))
            .collect::<Vec<_>>()
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
    Ok(Json(
        json!({ "subscription": subscription_json(&row, state.clock.now()) }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// ethereum (default) or tron: where the renewal is paid.
    network: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    /// The credit to add, in USDT (a plain decimal string).
    #[schema(value_type = aiforge_domain::Usdt)]
    amount: String,
    /// ethereum (default) or tron.
    network: Option<String>,
}

/// The answer to a renewal or a top-up: the subscription as the store holds it and the payment
/// to make (null: a free service's renewal, done at once).
async fn payment_asked(
    state: &AppState,
    subscription_id: &str,
    asked: aiforge_commands::marketplace::PaymentAsked,
) -> Result<impl IntoResponse, ApiError> {
    read_your_writes(state, asked.outcome.last).await;
    let subscription = state.marketplace.api_subscription(subscription_id).await?;
    let payment = match &asked.payment_id {
        Some(payment_id) => aiforge_projections::payments::find(&state.db, payment_id)
            .await?
            .map(|p| json!(p)),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "subscription": subscription_json_from_store(&subscription, state.clock.now()),
            "amount_due": asked.amount_due.to_string(),
            "payment": payment,
        })),
    ))
}

/// `POST /api/marketplace/subscriptions/{id}/renew`: the payment of one more period (the
/// monthly fee subscribed at). Confirmed before the grace ends, it extends the period 30 days
/// from its end; later, 30 days from the confirmation. The key stays the same.
#[utoipa::path(
    post,
    path = "/api/marketplace/subscriptions/{subscription_id}/renew",
    tag = "marketplace",
    operation_id = "renew_api_subscription",
    summary = "Renew a monthly or hybrid API subscription",
    params(
        ("subscription_id" = String, Path, description = "The API subscription's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = RenewRequest,
    responses(
        (status = 201, description = "The subscription and the renewal payment to make (null for a free service: renewed at once)", body = crate::openapi::schemas::PaymentOnSubscription),
        (status = 404, description = "No such subscription of the caller's", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Cancelled, not active yet, or pay-per-request (`cancelled`, `not_active`, `nothing_to_renew`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "An unknown network", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn renew(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subscription_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<RenewRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let network = body.network.as_deref().map(parse_network).transpose()?;
    let asked = state
        .marketplace
        .renew(&user.user_id, &subscription_id, network, &meta)
        .await?;
    payment_asked(&state, &subscription_id, asked).await
}

/// `POST /api/marketplace/subscriptions/{id}/top-up`: the payment that adds `amount` to a
/// pay-per-request or hybrid subscription's prepaid credit when it confirms (same key).
#[utoipa::path(
    post,
    path = "/api/marketplace/subscriptions/{subscription_id}/top-up",
    tag = "marketplace",
    operation_id = "top_up_api_subscription",
    summary = "Top up an API subscription's prepaid credit",
    params(
        ("subscription_id" = String, Path, description = "The API subscription's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = TopUpRequest,
    responses(
        (status = 201, description = "The subscription and the top-up payment to make", body = crate::openapi::schemas::PaymentOnSubscription),
        (status = 404, description = "No such subscription of the caller's", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Cancelled or not active yet (`cancelled`, `not_active`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "The amount is not positive or malformed; a monthly subscription takes no credit (`credit`); an unknown network", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn top_up(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subscription_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<TopUpRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let network = body.network.as_deref().map(parse_network).transpose()?;
    let amount =
        Usdt::parse(&body.amount).map_err(|e| ApiError::invalid_field("amount", e.to_string()))?;
    let asked = state
        .marketplace
        .top_up(&user.user_id, &subscription_id, amount, network, &meta)
        .await?;
    payment_asked(&state, &subscription_id, asked).await
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
    // This period's counters and the quota, from the gateway's index (what admission decides
    // on; it follows the log).
    let (period, quota) = match state.gateway.index.subscription(&subscription_id) {
        Some(subscription) => {
            let now = state.clock.now();
            let mut sub = aiforge_commands::gateway::index::lock(&subscription);
            sub.roll_to(now);
            let limits = state
                .gateway
                .index
                .service_limits(&sub.service_id)
                .map(|s| s.limits)
                .unwrap_or_default();
            let used = sub.period_usage;
            let period = sub.activated_at.map(|start| {
                let days = aiforge_commands::gateway::index::QUOTA_PERIOD_DAYS;
                let from = start + time::Duration::days(days * sub.period_of(now));
                json!({
                    "start": aiforge_commands::clock::rfc3339(from),
                    "end": aiforge_commands::clock::rfc3339(from + time::Duration::days(days)),
                    "requests": used.requests,
                    "tokens": used.tokens,
                })
            });
            let quota = json!({
                "requests_per_month": limits.requests_per_month,
                "tokens_per_month": limits.tokens_per_month,
                "requests_remaining": limits.requests_per_month.map(|m| m.saturating_sub(used.requests)),
                "tokens_remaining": limits.tokens_per_month.map(|m| m.saturating_sub(used.tokens)),
            });
            (period, quota)
        }
        None => (None, Value::Null),
    };
    Ok(Json(json!({
        "subscription_id": subscription_id,
        "period": period,
        "quota": quota,
        "requests": totals.requests,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "total_tokens": totals.prompt_tokens + totals.completion_tokens,
        "cost": usdt(totals.cost_micros),
        "credit": usdt(row.credit_micros),
        "credit_remaining": usdt(row.credit_micros - totals.cost_micros),
    })))
}
