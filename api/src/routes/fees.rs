//! `/api/admin/fees*` and `/api/fees/current`: the fee schedule as data. An admin proposes a
//! version (rates, fixed fees, a future effective date), looks at what it would have done to a
//! closed month (the what-if: the close's own fold with the proposal as its fee basis), then
//! adopts or withdraws it. The schedule every instance splits money by is read from the store
//! (`aiforge_commands::fees`), so these routes change what every instance does from the
//! effective date on, and nothing before it.

use std::collections::BTreeMap;

use aiforge_domain::fee_book::{FeeBook, FeeBookError, Proposal, ProposalState};
use aiforge_domain::fees::{FeeRates, FeeSchedule, PaymentType};
use aiforge_domain::revenue_book::{Month, MonthDistribution, PayoutSource};
use aiforge_domain::Usdt;
use aiforge_projections::distribution::{self, MonthFees, WhatIfError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::auth::AdminUser;
use crate::error::{command_error, ApiError};
use crate::extract::CommandJson;
use crate::routes::read_your_writes;
use crate::AppState;

impl From<FeeBookError> for ApiError {
    fn from(err: FeeBookError) -> Self {
        let message = err.to_string();
        match err {
            FeeBookError::NotInTheFuture { .. } => ApiError {
                field: Some("effective_from"),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "effective_date_not_in_future",
                    message,
                )
            },
            FeeBookError::Rates(rates) => ApiError::invalid_field(rates.field(), message),
            FeeBookError::UnknownProposal => ApiError::not_found(message),
            FeeBookError::AlreadyProposed => {
                ApiError::new(StatusCode::CONFLICT, "already_proposed", message)
            }
            FeeBookError::NotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, "proposal_not_pending", message)
            }
            FeeBookError::NotAfterLatest { .. } => ApiError {
                field: Some("effective_from"),
                ..ApiError::new(StatusCode::CONFLICT, "not_after_latest_version", message)
            },
        }
    }
}

impl From<WhatIfError> for ApiError {
    fn from(err: WhatIfError) -> Self {
        let message = err.to_string();
        match err {
            WhatIfError::NothingClosed | WhatIfError::NotClosed(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "month_not_closed", message)
            }
            WhatIfError::Distribution(e) => e.into(),
        }
    }
}

/// Rates as a request names them: every field optional, taken from the latest adopted version
/// when absent (a proposal usually changes one rate).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatesRequest {
    /// The platform's share by payment type (`platform_subscription`, `api_subscription`,
    /// `job`, `model_sale`, `publishing_fee`, `listing_fee`), in whole percent 0-100.
    #[serde(default)]
    platform_percent: Option<BTreeMap<String, u32>>,
    #[schema(value_type = Option<String>, example = "5")]
    #[serde(default)]
    publishing_fee: Option<String>,
    #[schema(value_type = Option<String>, example = "2")]
    #[serde(default)]
    listing_fee: Option<String>,
    /// What a node earns per 1,000 tokens served; null until inference nodes earn.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    compute_per_1k_tokens: Option<String>,
}

impl RatesRequest {
    /// The full rates: these fields over `base`'s.
    fn over(&self, base: &FeeRates) -> Result<FeeRates, ApiError> {
        let mut rates = base.clone();
        if let Some(percents) = &self.platform_percent {
            for (name, percent) in percents {
                let payment_type = name
                    .parse::<PaymentType>()
                    .map_err(|e| ApiError::invalid_field("platform_percent", e))?;
                rates.platform_percent.insert(payment_type, *percent);
            }
        }
        let money = |field: &'static str, text: &str| {
            Usdt::parse(text).map_err(|e| ApiError::invalid_field(field, format!("{field}: {e}")))
        };
        if let Some(text) = &self.publishing_fee {
            rates.publishing_fee = money("publishing_fee", text)?;
        }
        if let Some(text) = &self.listing_fee {
            rates.listing_fee = money("listing_fee", text)?;
        }
        if let Some(text) = &self.compute_per_1k_tokens {
            rates.compute_per_1k_tokens = Some(money("compute_per_1k_tokens", text)?);
        }
        rates
            .validate()
            .map_err(|e| ApiError::invalid_field(e.field(), e.to_string()))?;
        Ok(rates)
    }
}

/// A proposal: the rates (as `RatesRequest`, its fields at the top level) and the date. Not a
/// `#[serde(flatten)]` of `RatesRequest`: serde refuses unknown fields only without flatten,
/// and a misspelt rate must be refused, not ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeRequest {
    /// When the version starts (RFC 3339); must lie in the future on the platform's clock.
    #[schema(example = "2026-12-01T00:00:00Z")]
    effective_from: String,
    /// As in `RatesRequest`: whole percent 0-100 by payment type.
    #[serde(default)]
    platform_percent: Option<BTreeMap<String, u32>>,
    #[schema(value_type = Option<String>, example = "5")]
    #[serde(default)]
    publishing_fee: Option<String>,
    #[schema(value_type = Option<String>, example = "2")]
    #[serde(default)]
    listing_fee: Option<String>,
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    compute_per_1k_tokens: Option<String>,
}

impl ProposeRequest {
    fn rates(&self) -> RatesRequest {
        RatesRequest {
            platform_percent: self.platform_percent.clone(),
            publishing_fee: self.publishing_fee.clone(),
            listing_fee: self.listing_fee.clone(),
            compute_per_1k_tokens: self.compute_per_1k_tokens.clone(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIfRequest {
    /// A recorded proposal to replay; or give `rates` instead (nothing is recorded either way).
    #[serde(default)]
    proposal_id: Option<String>,
    #[serde(default)]
    rates: Option<RatesRequest>,
    /// The closed month to replay (`YYYY-MM`); the last closed month when absent.
    #[schema(example = "2026-11")]
    #[serde(default)]
    month: Option<String>,
}

fn parse_instant(field: &'static str, text: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::invalid_field(
            field,
            format!("{field} must be an RFC 3339 instant, e.g. 2026-12-01T00:00:00Z"),
        )
    })
}

fn instant(at: OffsetDateTime) -> String {
    aiforge_commands::clock::rfc3339(at)
}

fn schedule_json(schedule: &FeeSchedule) -> Value {
    let mut value = serde_json::to_value(schedule).unwrap_or(Value::Null);
    value["effective_from"] = json!(instant(schedule.effective_from));
    value
}

fn proposal_json(proposal: &Proposal) -> Value {
    let (state, version) = match proposal.state {
        ProposalState::Adopted { version } => ("adopted", Some(version)),
        other => (other.name(), None),
    };
    json!({
        "proposal_id": proposal.proposal_id,
        "state": state,
        "version": version,
        "effective_from": instant(proposal.effective_from),
        "rates": proposal.rates,
        "proposed_by": proposal.proposed_by,
        "proposed_at": instant(proposal.proposed_at),
    })
}

fn book_json(book: &FeeBook, now: OffsetDateTime) -> Value {
    let table = book.table();
    let in_force = table.at(now).version;
    let versions: Vec<Value> = table
        .versions()
        .iter()
        .map(|s| {
            let mut v = schedule_json(s);
            v["state"] = json!(if s.version == in_force {
                "in_force"
            } else if s.effective_from > now {
                "adopted"
            } else {
                "superseded"
            });
            v
        })
        .collect();
    let mut proposals: Vec<&Proposal> = book.proposals.values().collect();
    proposals.sort_by_key(|p| (p.proposed_at, p.proposal_id.clone()));
    json!({
        "now": instant(now),
        "in_force": in_force,
        "versions": versions,
        "proposals": proposals.into_iter().map(proposal_json).collect::<Vec<_>>(),
    })
}

async fn load_book(state: &AppState) -> Result<FeeBook, ApiError> {
    state.fees.book().await.map_err(command_error)
}

/// `GET /api/admin/fees` (admin): every version and proposal.
#[utoipa::path(
    get,
    path = "/api/admin/fees",
    tag = "fees",
    operation_id = "admin_fees",
    summary = "The fee schedule's versions (adopted, in force, superseded) and the proposals",
    responses(
        (status = 200, description = "`versions` (genesis first; `state` in_force, adopted (future) or superseded), `proposals` (proposed, adopted with their version, withdrawn), `in_force` and `now` on the platform's clock", body = crate::openapi::schemas::FeeBookAnswer),
    ),
    security(("admin_session" = [])),
)]
pub async fn book(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Value>, ApiError> {
    let book = load_book(&state).await?;
    Ok(Json(book_json(&book, state.clock.now())))
}

/// `GET /api/fees/current` (public): the version in force and the next adopted one.
#[utoipa::path(
    get,
    path = "/api/fees/current",
    tag = "fees",
    operation_id = "current_fees",
    summary = "The fee schedule in force now, and the next adopted version if one is coming",
    responses(
        (status = 200, description = "`current` (a version) and `next` (a version or null)", body = crate::openapi::schemas::CurrentFees),
    ),
)]
pub async fn current(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let book = load_book(&state).await?;
    let now = state.clock.now();
    let table = book.table();
    let next = table
        .versions()
        .iter()
        .find(|s| s.effective_from > now)
        .map(schedule_json);
    Ok(Json(json!({
        "current": schedule_json(table.at(now)),
        "next": next,
    })))
}

/// `POST /api/admin/fees/proposals` (admin).
#[utoipa::path(
    post,
    path = "/api/admin/fees/proposals",
    tag = "fees",
    operation_id = "propose_fees",
    summary = "Propose a fee schedule version with a future effective date",
    params(crate::openapi::IdempotencyKey),
    request_body = ProposeRequest,
    responses(
        (status = 201, description = "The proposal, recorded as `FeeScheduleProposed`", body = crate::openapi::schemas::FeeProposalAnswer),
        (status = 400, description = "`effective_from` is not in the future (`effective_date_not_in_future`); nothing recorded", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn propose(
    State(state): State<AppState>,
    admin: AdminUser,
    CommandJson { body, mut meta }: CommandJson<ProposeRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let effective_from = parse_instant("effective_from", &body.effective_from)?;
    let book = load_book(&state).await?;
    let rates = body.rates().over(&book.table().latest().rates)?;
    meta.actor = Some(admin.user_id.clone());
    let (proposal_id, outcome) = state
        .fees
        .propose(rates, effective_from, &admin.user_id, &meta)
        .await
        .map_err(command_error)?;
    read_your_writes(&state, outcome.last).await;
    let book = load_book(&state).await?;
    // A replayed request answers the proposal its first execution recorded.
    let proposal = book
        .proposals
        .get(&proposal_id)
        .or_else(|| book.proposals.values().max_by_key(|p| p.proposed_at))
        .ok_or_else(|| ApiError::internal("a recorded proposal is missing from the book"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "proposal": proposal_json(proposal) })),
    ))
}

async fn decide(
    state: &AppState,
    admin: AdminUser,
    proposal_id: &str,
    mut meta: aiforge_commands::CommandMeta,
    adopt: bool,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(admin.user_id.clone());
    let outcome = if adopt {
        state.fees.adopt(proposal_id, &admin.user_id, &meta).await
    } else {
        state
            .fees
            .withdraw(proposal_id, &admin.user_id, &meta)
            .await
    }
    .map_err(command_error)?;
    read_your_writes(state, outcome.last).await;
    let book = load_book(state).await?;
    let proposal = book
        .proposals
        .get(proposal_id)
        .ok_or_else(|| ApiError::not_found("no such fee proposal"))?;
    Ok(Json(json!({ "proposal": proposal_json(proposal) })))
}

/// `POST /api/admin/fees/proposals/{id}/adopt` (admin).
#[utoipa::path(
    post,
    path = "/api/admin/fees/proposals/{id}/adopt",
    tag = "fees",
    operation_id = "adopt_fees",
    summary = "Adopt a proposal: the next version, in force from its effective date",
    params(
        ("id" = String, Path, description = "The proposal's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The proposal, now adopted with its version number (`FeeScheduleAdopted`)", body = crate::openapi::schemas::FeeProposalAnswer),
        (status = 400, description = "Its effective date has come (`effective_date_not_in_future`): it can no longer be adopted", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such proposal", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not pending (`proposal_not_pending`) or not after the latest version (`not_after_latest_version`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn adopt(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
    CommandJson { body: _, meta }: CommandJson<crate::extract::Empty>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, admin, &id, meta, true).await
}

/// `POST /api/admin/fees/proposals/{id}/withdraw` (admin).
#[utoipa::path(
    post,
    path = "/api/admin/fees/proposals/{id}/withdraw",
    tag = "fees",
    operation_id = "withdraw_fees",
    summary = "Withdraw a proposal",
    params(
        ("id" = String, Path, description = "The proposal's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The proposal, now withdrawn (`FeeProposalWithdrawn`)", body = crate::openapi::schemas::FeeProposalAnswer),
        (status = 404, description = "No such proposal", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not pending (`proposal_not_pending`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn withdraw(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
    CommandJson { body: _, meta }: CommandJson<crate::extract::Empty>,
) -> Result<Json<Value>, ApiError> {
    decide(&state, admin, &id, meta, false).await
}

fn total(amounts: impl IntoIterator<Item = Usdt>) -> Result<Usdt, ApiError> {
    amounts
        .into_iter()
        .try_fold(Usdt::ZERO, |sum, a| sum.checked_add(a))
        .map_err(ApiError::internal)
}

/// One side of the what-if: the month's distribution and what its payments paid beside it.
fn side_json(distribution: &MonthDistribution, fees: &MonthFees) -> Result<Value, ApiError> {
    Ok(json!({
        "fee_schedule_versions": distribution.fee_schedule_versions,
        "pool_total": distribution.pool_total,
        "group_api_total": distribution.group_api_total,
        "platform_fee": total(fees.platform_fees.values().copied())?,
        "platform_fees": fees.platform_fees.iter().map(|(t, a)| (t.as_str().to_string(), json!(a))).collect::<serde_json::Map<_, _>>(),
        "distribution": distribution,
    }))
}

/// What each user receives from the month under one side: the close's payouts (pool shares and
/// group revenue) and their direct revenue (API subscriptions and sales of their own models).
fn per_creator(
    distribution: &MonthDistribution,
    fees: &MonthFees,
) -> Result<BTreeMap<String, (Usdt, Usdt, Usdt)>, ApiError> {
    let mut out: BTreeMap<String, (Usdt, Usdt, Usdt)> = BTreeMap::new();
    let bump = |slot: &mut Usdt, amount: Usdt| -> Result<(), ApiError> {
        *slot = slot.checked_add(amount).map_err(ApiError::internal)?;
        Ok(())
    };
    for payout in &distribution.payouts {
        let entry =
            out.entry(payout.user_id.clone())
                .or_insert((Usdt::ZERO, Usdt::ZERO, Usdt::ZERO));
        match payout.source {
            PayoutSource::Pool => bump(&mut entry.0, payout.amount)?,
            PayoutSource::GroupApi => bump(&mut entry.1, payout.amount)?,
        }
    }
    for (user, amount) in &fees.creators {
        let entry = out
            .entry(user.clone())
            .or_insert((Usdt::ZERO, Usdt::ZERO, Usdt::ZERO));
        bump(&mut entry.2, *amount)?;
    }
    Ok(out)
}

/// `POST /api/admin/fees/what-if` (admin): a closed month replayed under a proposal.
#[utoipa::path(
    post,
    path = "/api/admin/fees/what-if",
    tag = "fees",
    operation_id = "fees_what_if",
    summary = "Replay a closed month under a proposed schedule, beside what was paid",
    request_body = WhatIfRequest,
    responses(
        (status = 200, description = "`actual` and `proposed` (each: pool, platform fee by type, the whole distribution), then `models`, `nodes` (job settlements) and `creators` side by side; money as strings. Nothing is recorded.", body = crate::openapi::schemas::FeesWhatIf),
        (status = 404, description = "No such proposal, or the month is not closed (`month_not_closed`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn what_if(
    State(state): State<AppState>,
    _admin: AdminUser,
    CommandJson { body, meta: _ }: CommandJson<WhatIfRequest>,
) -> Result<Json<Value>, ApiError> {
    let month = body
        .month
        .as_deref()
        .map(|m| {
            m.parse::<Month>()
                .map_err(|e| ApiError::invalid_field("month", e))
        })
        .transpose()?;
    let book = load_book(&state).await?;
    let version = book.next_version();
    let (proposal_id, schedule) = match (&body.proposal_id, &body.rates) {
        (Some(id), None) => {
            let proposal = book.proposals.get(id).ok_or_else(|| ApiError {
                field: Some("proposal_id"),
                ..ApiError::not_found("no such fee proposal")
            })?;
            let version = match proposal.state {
                ProposalState::Adopted { version } => version,
                _ => version,
            };
            (Some(id.clone()), proposal.as_version(version))
        }
        (None, Some(rates)) => {
            let latest = book.table().latest().clone();
            let schedule = FeeSchedule {
                version,
                effective_from: state.clock.now(),
                rates: rates.over(&latest.rates)?,
            };
            (None, schedule)
        }
        _ => {
            return Err(ApiError::invalid_field(
                "proposal_id",
                "name a proposal_id or give rates (one of the two)",
            ))
        }
    };
    let found = distribution::what_if(&state.db, month, schedule.clone()).await?;
    let (actual, actual_fees) = &found.actual;
    let (proposed, proposed_fees) = &found.proposed;
    let mut models: BTreeMap<&str, Value> = BTreeMap::new();
    for (side, d) in [("actual", actual), ("proposed", proposed)] {
        for line in &d.models {
            let row = models.entry(line.model_id.as_str()).or_insert_with(|| {
                json!({
                    "model_id": line.model_id,
                    "tokens": line.tokens,
                    "usage_percent": line.usage_percent,
                })
            });
            row[format!("{side}_pool_amount")] = json!(line.pool_amount);
            row[format!("{side}_group_api_amount")] = json!(line.group_api_amount);
        }
    }
    let actual_creators = per_creator(actual, actual_fees)?;
    let proposed_creators = per_creator(proposed, proposed_fees)?;
    let zero = (Usdt::ZERO, Usdt::ZERO, Usdt::ZERO);
    let mut creators = Vec::new();
    for user in actual_creators.keys().chain(proposed_creators.keys()) {
        if creators.iter().any(|c: &Value| c["user_id"] == *user) {
            continue;
        }
        let a = actual_creators.get(user).unwrap_or(&zero);
        let p = proposed_creators.get(user).unwrap_or(&zero);
        creators.push(json!({
            "user_id": user,
            "actual_pool": a.0, "proposed_pool": p.0,
            "actual_group_api": a.1, "proposed_group_api": p.1,
            "actual_direct": a.2, "proposed_direct": p.2,
            "actual_total": total([a.0, a.1, a.2])?,
            "proposed_total": total([p.0, p.1, p.2])?,
        }));
    }
    let mut nodes = Vec::new();
    for node in actual_fees.nodes.keys().chain(proposed_fees.nodes.keys()) {
        if nodes.iter().any(|n: &Value| n["node_id"] == *node) {
            continue;
        }
        nodes.push(json!({
            "node_id": node,
            "actual_net": actual_fees.nodes.get(node).copied().unwrap_or(Usdt::ZERO),
            "proposed_net": proposed_fees.nodes.get(node).copied().unwrap_or(Usdt::ZERO),
        }));
    }
    Ok(Json(json!({
        "month": found.month,
        "proposal_id": proposal_id,
        "schedule": schedule_json(&schedule),
        "actual_matches_recorded_close": found.recorded == *actual,
        "actual": side_json(actual, actual_fees)?,
        "proposed": side_json(proposed, proposed_fees)?,
        "models": models.into_values().collect::<Vec<_>>(),
        "nodes": nodes,
        "creators": creators,
    })))
}
