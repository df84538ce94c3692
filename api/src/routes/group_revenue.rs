//! Revenue splits of group models: `POST /api/group-revenue/model/{id}/split` (the group's
//! OWNER or an ADMIN; members only; percentages with up to 2 decimals summing to exactly 100;
//! applies from the next month) and `GET` of the same (any member): the split in force now and
//! one waiting for its month.

use aiforge_domain::model::{ModelOwner, RevenueSplit};
use aiforge_domain::revenue::Share;
use axum::extract::{Path, State};
use axum::Json;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use super::read_your_writes;
use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::CommandJson;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SplitShareRequest)]
pub struct ShareBody {
    user_id: String,
    /// A number or a decimal string: `50`, `33.33`, `"12.5"`.
    #[schema(value_type = String, example = "33.33")]
    percent: Value,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SplitRequest)]
pub struct SplitBody {
    shares: Vec<ShareBody>,
}

fn percent(value: &Value) -> Result<Decimal, ApiError> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => String::new(),
    };
    aiforge_domain::revenue::parse_percent(&text).ok_or_else(|| {
        ApiError::invalid_field(
            "shares",
            "percent must be a plain decimal number such as 33.33 (no exponent)",
        )
    })
}

fn split_json(split: Option<&RevenueSplit>) -> Value {
    match split {
        None => Value::Null,
        Some(split) => json!({
            "version": split.version,
            "effective_from": aiforge_commands::clock::rfc3339(split.effective_from),
            "set_by": split.set_by,
            "set_at": aiforge_commands::clock::rfc3339(split.set_at),
            "shares": split.shares.iter().map(|s| json!({
                "user_id": s.user_id,
                "percent": s.percent.normalize().to_string(),
            })).collect::<Vec<_>>(),
        }),
    }
}

async fn answer(state: &AppState, user: &AuthUser, model_id: &str) -> Result<Value, ApiError> {
    let model = state.marketplace.model(model_id).await?;
    let Some(ModelOwner::Group(group_id)) = &model.owner else {
        return Err(ApiError::from(
            aiforge_domain::model::ModelError::NotAGroupModel,
        ));
    };
    let group = state
        .groups
        .load(group_id)
        .await
        .map_err(crate::error::command_error)?;
    if group.role_of(&user.user_id).is_none() {
        return Err(ApiError::not_found("no such model"));
    }
    let now = state.clock.now();
    Ok(json!({
        "model_id": model_id,
        "group_id": group_id,
        "current": split_json(model.split_for(now)),
        "pending": split_json(model.pending_split(now)),
    }))
}

/// `POST /api/group-revenue/model/{id}/split`.
#[utoipa::path(
    post,
    path = "/api/group-revenue/model/{model_id}/split",
    tag = "group-revenue",
    operation_id = "set_revenue_split",
    summary = "Set a group model's revenue split",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = SplitBody,
    responses(
        (status = 200, description = "The split, in force from the next month", body = crate::openapi::schemas::GroupModelSplit),
        (status = 403, description = "Only the group's OWNER or an ADMIN (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not a group model (`not_a_group_model`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Shares that are not members or do not sum to exactly 100 (`invalid_field`: shares)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn set(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<SplitBody>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let shares = body
        .shares
        .iter()
        .map(|s| {
            Ok(Share {
                user_id: s.user_id.clone(),
                percent: percent(&s.percent)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let outcome = state
        .marketplace
        .set_revenue_split(&model_id, &user.user_id, shares, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(answer(&state, &user, &model_id).await?))
}

/// `GET /api/group-revenue/model/{id}/split`.
#[utoipa::path(
    get,
    path = "/api/group-revenue/model/{model_id}/split",
    tag = "group-revenue",
    operation_id = "get_revenue_split",
    summary = "A group model's revenue split (any member)",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The split in force and one waiting for its month", body = crate::openapi::schemas::GroupModelSplit),
        (status = 404, description = "No such model, or the caller is not in its group", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not a group model (`not_a_group_model`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(answer(&state, &user, &model_id).await?))
}
