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
use crate::routes::read_your_writes;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GroupCreateRequest)]
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

#[utoipa::path(
    post,
    path = "/api/groups",
    tag = "groups",
    operation_id = "create_group",
    summary = "Create a group",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The group, the caller its OWNER", body = crate::openapi::schemas::GroupWithMembers),
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
#[utoipa::path(
    get,
    path = "/api/groups/{group_id}",
    tag = "groups",
    operation_id = "get_group",
    summary = "A group (members only)",
    params(
        ("group_id" = String, Path, description = "The group's id"),
    ),
    responses(
        (status = 200, description = "The group and its members", body = crate::openapi::schemas::GroupWithMembers),
        (status = 404, description = "No such group, or the caller is not a member", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[utoipa::path(
    get,
    path = "/api/groups/my-groups",
    tag = "groups",
    operation_id = "my_groups",
    summary = "The caller's groups",
    responses(
        (status = 200, description = "The caller's groups and role in each", body = crate::openapi::schemas::MyGroups),
    ),
    security(("session" = [])),
)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GroupAddMemberRequest)]
pub struct AddMemberRequest {
    user_id: String,
    role: Role,
}

#[utoipa::path(
    post,
    path = "/api/groups/{group_id}/members",
    tag = "groups",
    operation_id = "add_group_member",
    summary = "Add a member",
    params(
        ("group_id" = String, Path, description = "The group's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = AddMemberRequest,
    responses(
        (status = 201, description = "The group with its new member", body = crate::openapi::schemas::GroupWithMembers),
        (status = 403, description = "The caller's role may not add this role (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such group", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Already a member, or the group is full (`already_a_member`, `group_full`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GroupChangeRoleRequest)]
pub struct ChangeRoleRequest {
    role: Role,
}

#[utoipa::path(
    put,
    path = "/api/groups/{group_id}/members/{user_id}",
    tag = "groups",
    operation_id = "change_group_member_role",
    summary = "Change a member's role",
    params(
        ("group_id" = String, Path, description = "The group's id"),
        ("user_id" = String, Path, description = "The member's user id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = ChangeRoleRequest,
    responses(
        (status = 200, description = "The group", body = crate::openapi::schemas::GroupWithMembers),
        (status = 403, description = "The caller's role may not do this (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such group or member (`not_a_member`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The member has this role already (`role_unchanged`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[utoipa::path(
    delete,
    path = "/api/groups/{group_id}/members/{user_id}",
    tag = "groups",
    operation_id = "remove_group_member",
    summary = "Remove a member",
    params(
        ("group_id" = String, Path, description = "The group's id"),
        ("user_id" = String, Path, description = "The member's user id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "The group", body = crate::openapi::schemas::GroupWithMembers),
        (status = 403, description = "The caller's role may not do this (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such group or member (`not_a_member`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[utoipa::path(
    post,
    path = "/api/groups/{group_id}/leave",
    tag = "groups",
    operation_id = "leave_group",
    summary = "Leave a group",
    params(
        ("group_id" = String, Path, description = "The group's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "Left", body = crate::openapi::schemas::GroupLeft),
        (status = 404, description = "No such group", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The owner cannot leave (`owner_cannot_leave`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GroupTransferRequest)]
pub struct TransferRequest {
    new_owner_id: String,
}

#[utoipa::path(
    post,
    path = "/api/groups/{group_id}/transfer-ownership",
    tag = "groups",
    operation_id = "transfer_group_ownership",
    summary = "Transfer ownership to a member",
    params(
        ("group_id" = String, Path, description = "The group's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = TransferRequest,
    responses(
        (status = 200, description = "The group under its new owner", body = crate::openapi::schemas::GroupWithMembers),
        (status = 403, description = "Only the owner may transfer (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such group or member", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Already the owner (`already_a_member`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
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
