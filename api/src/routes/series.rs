//! Time series for the dashboards' charts (`GET /api/series`): requests, tokens, revenue,
//! platform fees and earnings by day or month, for the platform, a model, a service, a creator,
//! a node or a consumer, read from the `series` projection's daily rollups
//! (`aiforge_projections::series`). This module decides who may see which scope and shapes the
//! answer (every bucket present, values as strings); what counts lives in the projection.

use std::collections::BTreeMap;

use aiforge_domain::admin::ADMIN_WHITELIST_ID;
use aiforge_domain::fees::PaymentType;
use aiforge_projections::revenue::usdt_text;
use aiforge_projections::series::{self, Bucket, Rows, PLAN_KEY};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Date, Duration, Month};

use crate::auth::AuthUser;
use crate::error::{command_error, ApiError};
use crate::AppState;

/// The longest day series: a year, a leap day included.
pub const SERIES_DAYS_MAX: i64 = 366;
/// The longest month series: ten years.
pub const SERIES_MONTHS_MAX: i64 = 120;
/// Default spans on the app clock when `from` is not given.
const DEFAULT_DAYS: i64 = 30;
const DEFAULT_MONTHS: i64 = 12;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// requests | tokens (counts) | revenue | fees | earnings (USDT).
    metric: Option<String>,
    /// day (default) | month.
    bucket: Option<String>,
    /// platform | model | service | creator | node | consumer.
    scope: Option<String>,
    /// The scope's id; `me` (the default) for creator and consumer; none for platform.
    id: Option<String>,
    /// First day, YYYY-MM-DD (its month for month buckets). Default: 30 days or 12 months
    /// before `to`.
    from: Option<String>,
    /// Last day, included, YYYY-MM-DD. Default: today on the app clock.
    to: Option<String>,
    /// A breakdown: type (revenue, fees), kind (earnings), model, service, subscription
    /// (consumer usage; the plan's calls under the key `plan`).
    group_by: Option<String>,
}

fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        field: Some(field),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
    }
}

fn one_of<'a>(
    field: &'static str,
    value: Option<&str>,
    allowed: &[&'a str],
) -> Result<Option<&'a str>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => allowed
            .iter()
            .find(|a| **a == v)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                bad(
                    field,
                    format!("{field} is one of: {} (got '{v}')", allowed.join(", ")),
                )
            }),
    }
}

fn day(field: &'static str, text: Option<&str>) -> Result<Option<Date>, ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, format).map(Some).map_err(|_| {
        bad(
            field,
            format!("{field} is a day, YYYY-MM-DD (got '{text}')"),
        )
    })
}

fn first_of_month(d: Date) -> Date {
    d.replace_day(1).unwrap_or(d)
}

fn months_between(from: Date, to: Date) -> i64 {
    (i64::from(to.year()) * 12 + i64::from(u8::from(to.month())))
        - (i64::from(from.year()) * 12 + i64::from(u8::from(from.month())))
}

fn add_months(d: Date, months: i64) -> Date {
    let index = i64::from(d.year()) * 12 + i64::from(u8::from(d.month())) - 1 + months;
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(d.year());
    let month = u8::try_from(index.rem_euclid(12) + 1)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .unwrap_or(d.month());
    Date::from_calendar_date(year, month, 1).unwrap_or(d)
}

fn ymd(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Every bucket of the range, as `(label in the answer, key in the rollup)`.
fn buckets(bucket: Bucket, from: Date, to: Date) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match bucket {
        Bucket::Day => {
            let mut d = from;
            while d <= to {
                out.push((ymd(d), ymd(d)));
                d = d.saturating_add(Duration::days(1));
            }
        }
        Bucket::Month => {
            for i in 0..=months_between(from, to) {
                let m = add_months(from, i);
                out.push((ymd(m), ymd(m)[..7].to_string()));
            }
        }
    }
    out
}

/// Whether the caller's wallet is on the admin whitelist (a session without one: no).
pub(crate) async fn is_admin(state: &AppState, user: &AuthUser) -> Result<bool, ApiError> {
    let Some(wallet) = &user.wallet else {
        return Ok(false);
    };
    let whitelist = state
        .admins
        .load(ADMIN_WHITELIST_ID)
        .await
        .map_err(command_error)?;
    Ok(whitelist.is_admin(wallet))
}

/// Whether the caller owns the model or belongs to its group.
async fn manages_model(
    state: &AppState,
    user: &AuthUser,
    model_id: &str,
) -> Result<bool, ApiError> {
    let Some(row) = aiforge_projections::marketplace::find_model(&state.db, model_id).await? else {
        return Ok(false);
    };
    if row.owner_kind == "user" {
        return Ok(row.owner_id == user.user_id);
    }
    let group = state
        .groups
        .load(&row.owner_id)
        .await
        .map_err(command_error)?;
    Ok(group.role_of(&user.user_id).is_some())
}

fn hidden() -> ApiError {
    ApiError::not_found("no such series for the caller")
}

const COUNT_METRICS: &[&str] = &["requests", "tokens"];

/// The breakdowns each metric allows in each scope ('' = the total only).
fn allowed_groups(metric: &str, scope: &str) -> Option<&'static [&'static str]> {
    Some(match (COUNT_METRICS.contains(&metric), metric, scope) {
        (true, _, "platform") => &["model", "service"],
        (true, _, "model") => &["service"],
        (true, _, "service") => &[],
        (true, _, "creator" | "node") => &["model"],
        (true, _, "consumer") => &["subscription", "model"],
        (false, "revenue" | "fees", "platform") => &["type"],
        (false, "earnings", "creator" | "node") => &["kind"],
        _ => return None,
    })
}

fn type_label(key: &str) -> String {
    match key {
        "platform_subscription" => "Platform subscriptions",
        "api_subscription" => "API subscriptions",
        "job" => "Compute jobs",
        "model_sale" => "Model sales",
        "publishing_fee" => "Publishing fees",
        "listing_fee" => "Listing fees",
        "pool_share" => "Subscription pool shares",
        "group_split" => "Group splits",
        other => other,
    }
    .to_string()
}

/// Human names of a breakdown's keys (a model's or service's name, a subscription's service).
async fn label(state: &AppState, group: &str, key: &str) -> Result<String, ApiError> {
    Ok(match group {
        "type" | "kind" => type_label(key),
        "model" => aiforge_projections::marketplace::find_model(&state.db, key)
            .await?
            .map_or_else(|| key.to_string(), |m| m.name),
        "service" => aiforge_projections::marketplace::find_service(&state.db, key)
            .await?
            .map_or_else(|| key.to_string(), |s| s.name),
        "subscription" if key == PLAN_KEY => "Platform plan".to_string(),
        "subscription" => {
            match aiforge_projections::marketplace::find_subscription(&state.db, key).await? {
                Some(sub) => {
                    match aiforge_projections::marketplace::find_service(&state.db, &sub.service_id)
                        .await?
                    {
                        Some(service) => format!("{} ({})", service.name, short(key)),
                        None => format!("Subscription {}", short(key)),
                    }
                }
                None => format!("Subscription {}", short(key)),
            }
        }
        _ => key.to_string(),
    })
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `GET /api/series`: a time series for a chart.
#[utoipa::path(
    get,
    path = "/api/series",
    tag = "series",
    operation_id = "series",
    summary = "A time series for a chart: requests, tokens, revenue, fees or earnings by day or month",
    params(SeriesQuery),
    responses(
        (status = 200, description = "The series: every bucket of the range, zero-filled, values as strings (counts as integers, USDT as the platform writes it)", body = crate::openapi::schemas::Series),
        (status = 400, description = "A parameter out of its values (`invalid_query`, with `field`), or a range over 366 days or 120 months (`range_too_large`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such scope for the caller (the platform: admins only; a model or service: its owner, its group's members; a node: its owner; a creator or consumer: themselves)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn series(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let metric = one_of(
        "metric",
        query.metric.as_deref(),
        &["requests", "tokens", "revenue", "fees", "earnings"],
    )?
    .ok_or_else(|| {
        bad(
            "metric",
            "metric is required: requests, tokens, revenue, fees or earnings",
        )
    })?;
    let bucket = match one_of("bucket", query.bucket.as_deref(), &["day", "month"])? {
        Some("month") => Bucket::Month,
        _ => Bucket::Day,
    };
    let scope = one_of(
        "scope",
        query.scope.as_deref(),
        &[
            "platform", "model", "service", "creator", "node", "consumer",
        ],
    )?
    .ok_or_else(|| {
        bad(
            "scope",
            "scope is required: platform, model, service, creator, node or consumer",
        )
    })?;
    let groups = allowed_groups(metric, scope).ok_or_else(|| {
        bad(
            "scope",
            format!("{metric} has no {scope} series (revenue and fees are platform-wide; earnings are a creator's or a node's)"),
        )
    })?;
    let group_by = match query
        .group_by
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        None => None,
        Some(g) => Some(groups.iter().find(|a| **a == g).copied().ok_or_else(|| {
            bad(
                "group_by",
                if groups.is_empty() {
                    format!("a {scope} series of {metric} has no breakdown")
                } else {
                    format!(
                        "a {scope} series of {metric} is grouped by: {}",
                        groups.join(", ")
                    )
                },
            )
        })?),
    };

    // The range, on the app clock by default.
    let today = state.clock.now().to_offset(time::UtcOffset::UTC).date();
    let to = day("to", query.to.as_deref())?.unwrap_or(today);
    let from = day("from", query.from.as_deref())?;
    let (from, to) = match bucket {
        Bucket::Day => (
            from.unwrap_or_else(|| to.saturating_sub(Duration::days(DEFAULT_DAYS - 1))),
            to,
        ),
        Bucket::Month => {
            let to = first_of_month(to);
            (
                from.map_or_else(|| add_months(to, 1 - DEFAULT_MONTHS), first_of_month),
                to,
            )
        }
    };
    if from > to {
        return Err(bad(
            "from",
            format!("from ({}) is after to ({})", ymd(from), ymd(to)),
        ));
    }
    let too_large = match bucket {
        Bucket::Day => (to - from).whole_days() + 1 > SERIES_DAYS_MAX,
        Bucket::Month => months_between(from, to) + 1 > SERIES_MONTHS_MAX,
    };
    if too_large {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "range_too_large",
            format!(
                "a series holds at most {SERIES_DAYS_MAX} days or {SERIES_MONTHS_MAX} months; \
                 ask for a shorter range or month buckets"
            ),
        ));
    }

    // Who may see it: the platform, admins; anything else, those it belongs to (or an admin).
    // Anyone else gets the answer an unknown id gets.
    let raw_id = query.id.as_deref().map(str::trim).filter(|i| !i.is_empty());
    let id = match scope {
        "platform" => {
            if raw_id.is_some_and(|i| i != "platform") {
                return Err(bad("id", "the platform scope takes no id"));
            }
            if !is_admin(&state, &user).await? {
                return Err(hidden());
            }
            series::PLATFORM.to_string()
        }
        "creator" | "consumer" => {
            let id = match raw_id {
                None | Some("me") => user.user_id.clone(),
                Some(other) => other.to_string(),
            };
            if id != user.user_id && !is_admin(&state, &user).await? {
                return Err(hidden());
            }
            id
        }
        _ => {
            let id = raw_id
                .filter(|i| *i != "me")
                .ok_or_else(|| bad("id", format!("a {scope} series needs the {scope}'s id")))?
                .to_string();
            let mine = match scope {
                "model" => manages_model(&state, &user, &id).await?,
                "service" => {
                    match aiforge_projections::marketplace::find_service(&state.db, &id).await? {
                        Some(service) => {
                            service.owner == user.user_id
                                || manages_model(&state, &user, &service.model_id).await?
                        }
                        None => false,
                    }
                }
                _ => aiforge_projections::compute::find_node(&state.db, &id)
                    .await?
                    .is_some_and(|n| n.owner == user.user_id),
            };
            if !mine && !is_admin(&state, &user).await? {
                return Err(hidden());
            }
            id
        }
    };

    let rows = if scope == "creator" && COUNT_METRICS.contains(&metric) {
        Rows::ModelsOf {
            owner: id.clone(),
            by_model: group_by == Some("model"),
        }
    } else {
        Rows::Scope {
            scope: match scope {
                "platform" => "platform",
                "model" => "model",
                "service" => "service",
                "creator" => "creator",
                "node" => "node",
                _ => "consumer",
            },
            scope_id: id.clone(),
            dim: group_by.unwrap_or(""),
        }
    };
    // The last day read: `to` itself, or (month buckets, whose `to` is the month's first day)
    // the month's end; day texts compare in date order, and no day is after the 31st.
    let last = match bucket {
        Bucket::Day => ymd(to),
        Bucket::Month => format!("{}-31", &ymd(to)[..7]),
    };
    let points = series::points(&state.db, metric, &rows, bucket, &ymd(from), &last).await?;

    let mut by_key: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (key, slot, value) in points {
        by_key.entry(key).or_default().insert(slot, value);
    }
    // Fixed breakdowns show every key, zeros included, in the platform's order.
    let fixed: Vec<&str> = match (group_by, scope) {
        (Some("type"), _) => PaymentType::ALL.iter().map(|t| t.as_str()).collect(),
        (Some("kind"), "creator") => vec![
            "api_subscription",
            "model_sale",
            "pool_share",
            "group_split",
        ],
        (Some("kind"), _) => vec![PaymentType::Job.as_str()],
        (None, _) => vec![""],
        _ => Vec::new(),
    };
    let mut keys: Vec<String> = fixed.iter().map(|k| k.to_string()).collect();
    keys.extend(
        by_key
            .keys()
            .filter(|k| !fixed.contains(&k.as_str()))
            .cloned(),
    );

    let usdt = !COUNT_METRICS.contains(&metric);
    let slots = buckets(bucket, from, to);
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let values = by_key.get(&key);
        let points: Vec<Value> = slots
            .iter()
            .map(|(t, slot)| {
                let v = values.and_then(|m| m.get(slot)).copied().unwrap_or(0);
                json!({"t": t, "value": if usdt { usdt_text(v) } else { v.to_string() }})
            })
            .collect();
        let (key, label) = match group_by {
            None => ("total".to_string(), "Total".to_string()),
            Some(group) => {
                let label = label(&state, group, &key).await?;
                (key, label)
            }
        };
        out.push(json!({"key": key, "label": label, "points": points}));
    }
    Ok(Json(json!({
        "metric": metric,
        "bucket": match bucket { Bucket::Day => "day", Bucket::Month => "month" },
        "scope": scope,
        "id": if scope == "platform" { None } else { Some(id) },
        "from": ymd(from),
        "to": ymd(to),
        "group_by": group_by,
        "unit": if usdt { "usdt" } else { "count" },
        "series": out,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_buckets_cross_years_and_stay_on_the_first() {
        let from = Date::from_calendar_date(2025, Month::November, 1).unwrap();
        let to = Date::from_calendar_date(2026, Month::February, 1).unwrap();
        let b: Vec<String> = buckets(Bucket::Month, from, to)
            .into_iter()
            .map(|(t, k)| format!("{t}/{k}"))
            .collect();
        assert_eq!(
            b,
            [
                "2025-11-01/2025-11",
                "2025-12-01/2025-12",
                "2026-01-01/2026-01",
                "2026-02-01/2026-02"
            ]
        );
        assert_eq!(
            add_months(to, -12),
            Date::from_calendar_date(2025, Month::February, 1).unwrap()
        );
    }

    #[test]
    fn day_buckets_include_both_ends() {
        let from = Date::from_calendar_date(2024, Month::February, 27).unwrap();
        let to = Date::from_calendar_date(2024, Month::March, 1).unwrap();
        let days: Vec<String> = buckets(Bucket::Day, from, to)
            .into_iter()
            .map(|b| b.0)
            .collect();
        assert_eq!(
            days,
            ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]
        );
    }
}
