//! `/api/groups/*`: create a group, read it, list mine, and change membership. Who may do what
//! is the `Group` aggregate's permission matrix (`aiforge_domain::group::can`), answered 403.

use aiforge_commands::groups::GroupsError;
use aiforge_domain::group::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{CommandJson, Empty};
use crate::routes::accounts::read_your_writes;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    #[serde(default)]
    description: String,
}

async fn group_json(state: &AppState, group_id: &str) -> Result<serde_json::Value, ApiError> {
    let (group, members) = aiforge_projections::groups::find(&state.db, group_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such group"))?;
    Ok(json!({"group": group, "members": members}))
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .groups
        .create(&user.user_id, &body.name, &body.description, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(group_json(&state, &outcome.aggregate_id).await?),
    ))
}

/// Members and non-members alike may read a group only if they belong to it.
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let group = state
        .groups
        .load(&group_id)
        .await
        .map_err(crate::error::command_error)?;
    if !group.is_created() || group.role_of(&user.user_id).is_none() {
        return Err(ApiError::not_found("no such group"));
    }
    Ok(Json(group_json(&state, &group_id).await?))
}

pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let rows = aiforge_projections::groups::of_user(&state.db, &user.user_id).await?;
    let groups: Vec<_> = rows
        .into_iter()
        .map(|(group, role)| json!({"group": group, "role": role}))
        .collect();
    Ok(Json(json!({"groups": groups})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    user_id: String,
    role: Role,
}

pub async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<AddMemberRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .groups
        .add_member(&group_id, &user.user_id, &body.user_id, body.role, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(group_json(&state, &group_id).await?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    role: Role,
}

pub async fn change_role(
    State(state): State<AppState>,
    user: AuthUser,
    Path((group_id, member_id)): Path<(String, String)>,
    CommandJson { body, mut meta }: CommandJson<ChangeRoleRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .groups
        .change_role(&group_id, &user.user_id, &member_id, body.role, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(group_json(&state, &group_id).await?))
}

pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path((group_id, member_id)): Path<(String, String)>,
    CommandJson { mut meta, .. }: CommandJson<Option<Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .groups
        .remove_member(&group_id, &user.user_id, &member_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(group_json(&state, &group_id).await?))
}

pub async fn leave(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group_id): Path<String>,
    CommandJson { mut meta, .. }: CommandJson<Option<Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state.groups.leave(&group_id, &user.user_id, &meta).await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(json!({"left": group_id})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    new_owner_id: String,
}

pub async fn transfer(
    State(state): State<AppState>,
    user: AuthUser,
    Path(group_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<TransferRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .groups
        .transfer_ownership(&group_id, &user.user_id, &body.new_owner_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(group_json(&state, &group_id).await?))
}

impl From<GroupsError> for ApiError {
    fn from(err: GroupsError) -> Self {
        match err {
            GroupsError::Command(e) => crate::error::command_error(e),
            GroupsError::UnknownUser(_) => ApiError::invalid_field("user_id", err.to_string()),
        }
    }
}
