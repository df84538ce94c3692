//! `GET /api/admin/inference-nodes`: the inference nodes this instance routes calls to over
//! NATS, as their announcements describe them (what each serves, its load, when it was last
//! heard), so an operator sees which node serves which model. Each instance keeps its own
//! directory from the same announcements; the answer is this instance's.
//!
//! `GET /api/admin/placements`: which node serves or loads which model, what each node was
//! given within its room, and why a model waits (`crate::gateway::placement`).

use std::time::Instant;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::gateway::nats::NodeSeen;
use crate::AppState;

/// The inference nodes of this instance's NATS directory.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InferenceNodes {
    /// Whether this instance reaches nodes over NATS at all (`AIFORGE_NATS_URL`).
    pub nats: bool,
    /// Nodes heard from within the expiry, by id.
    pub nodes: Vec<NodeSeen>,
}

#[utoipa::path(
    get,
    path = "/api/admin/inference-nodes",
    tag = "admin",
    operation_id = "admin_inference_nodes",
    summary = "The inference nodes this instance routes to",
    responses(
        (status = 200, description = "Each node's targets and load, as its announcements say", body = InferenceNodes),
    ),
    security(("admin_session" = [])),
)]
pub async fn inference_nodes(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<impl IntoResponse, ApiError> {
    let answer = match &state.gateway.nats_directory {
        Some(directory) => InferenceNodes {
            nats: true,
            nodes: directory.snapshot(Instant::now()),
        },
        None => InferenceNodes {
            nats: false,
            nodes: Vec::new(),
        },
    };
    Ok(Json(answer))
}

#[utoipa::path(
    get,
    path = "/api/admin/placements",
    tag = "admin",
    operation_id = "admin_placements",
    summary = "Which inference node serves which model, and why a model waits",
    responses(
        (status = 200, description = "Every model to serve with its nodes or its reason to wait, and every node that takes placements with what it was given", body = crate::gateway::placement::Placements),
    ),
    security(("admin_session" = [])),
)]
pub async fn placements(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<impl IntoResponse, ApiError> {
    let view = crate::gateway::placement::view_of(&state).await?;
    Ok(Json(view))
}
