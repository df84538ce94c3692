//! `/api/nodes/*` and `/api/jobs/*`: compute nodes (registration by their owner, heartbeats,
//! polling for work and job reports by the node itself, with its node token as
//! `Authorization: Bearer`), admin node management, and jobs (submission against a confirmed
//! job payment, the creator's views, cancel).

use std::collections::BTreeMap;

use aiforge_commands::compute::{NodeMetrics, Report};
use aiforge_domain::job::{JobNeeds, JobSpec, JobType, ReportedFailure};
use aiforge_domain::node::{OfflineReason, Resources};
use aiforge_domain::node_protocol::{
    AssignedJob, FailedReason, HeartbeatReply, HeldJob, JobFailed, JobFinished, JobLogLines,
    JobStarted, NatsHeartbeat, NextJob,
};
use aiforge_domain::Usdt;
use aiforge_projections::compute::{JobRow, NodeRow};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AdminUser, AuthUser};
use crate::error::ApiError;
use crate::extract::{CommandJson, Empty, PageQuery};
use crate::routes::read_your_writes;
use crate::AppState;

pub const JOBS_PAGE_MAX: i64 = 100;

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// The node token of a node's own request.
fn node_token(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| token.trim().to_string())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <node token>"))
}

/// Authenticates a node's own request: its token, and that it is this node's (403 otherwise).
pub(crate) async fn authenticated_node(
    state: &AppState,
    node_id: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let token = node_token(headers)?;
    state.compute.commands.authenticate(node_id, &token).await?;
    Ok(())
}

/// The job, when `node_id` holds it on `attempt` in one of `statuses`; 409 `stale_report`
/// otherwise (another node, an earlier attempt, or the job moved on).
pub(crate) async fn held_job(
    state: &AppState,
    node_id: &str,
    job_id: &str,
    attempt: u32,
    statuses: &[&str],
) -> Result<JobRow, ApiError> {
    let job = job_row(state, job_id).await?;
    if job.node_id.as_deref() != Some(node_id)
        || job.attempt != i64::from(attempt)
        || !statuses.contains(&job.status.as_str())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_report",
            format!(
                "node {node_id} attempt {attempt} does not hold job {job_id} (it is {} on attempt {})",
                job.status, job.attempt
            ),
        ));
    }
    Ok(job)
}

/// The job, when `user` created it (404 otherwise: a stranger learns nothing of it).
pub(crate) async fn creators_job(
    state: &AppState,
    user: &AuthUser,
    job_id: &str,
) -> Result<JobRow, ApiError> {
    let row = job_row(state, job_id).await?;
    if row.creator != user.user_id {
        return Err(ApiError::not_found("no such job"));
    }
    Ok(row)
}

async fn node_json(state: &AppState, row: &NodeRow) -> Result<Value, ApiError> {
    let live = state
        .compute
        .commands
        .last_heartbeat(&row.node_id)
        .await?
        .map(|beat| {
            json!({
                "at": aiforge_commands::clock::rfc3339(beat.at),
                "metrics": beat.metrics,
            })
        });
    Ok(json!({
        "id": row.node_id,
        "owner": row.owner,
        "name": row.name,
        "owner_wallet": row.owner_wallet,
        "resources": parsed(&row.resources),
        "status": row.status,
        "offline_reason": row.offline_reason,
        "last_heartbeat": live,
        "registered_at": row.registered_at,
        "updated_at": row.updated_at,
    }))
}

async fn nodes_json(state: &AppState, rows: &[NodeRow]) -> Result<Vec<Value>, ApiError> {
    let mut nodes = Vec::with_capacity(rows.len());
    for row in rows {
        nodes.push(node_json(state, row).await?);
    }
    Ok(nodes)
}

fn job_json(row: &JobRow) -> Value {
    let spec = parsed(&row.spec);
    json!({
        "id": row.job_id,
        "creator": row.creator,
        "payment_id": row.payment_id,
        "type": row.job_type,
        "spec": spec,
        "price": row.price,
        "status": row.status,
        "node_id": row.node_id,
        "attempt": row.attempt,
        "exit_code": row.exit_code,
        "failure_reason": row.failure_reason,
        "message": row.message,
        "outputs": parsed(&row.outputs),
        "settlement": row.node_net.as_ref().map(|node_net| json!({
            "node_net": node_net,
            "platform_fee": row.platform_fee,
            "refund": row.refund,
        })),
        "submitted_at": row.submitted_at,
        "assigned_at": row.assigned_at,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "updated_at": row.updated_at,
    })
}

async fn node_row(state: &AppState, node_id: &str) -> Result<NodeRow, ApiError> {
    aiforge_projections::compute::find_node(&state.db, node_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such node"))
}

pub(crate) async fn job_row(state: &AppState, job_id: &str) -> Result<JobRow, ApiError> {
    aiforge_projections::compute::find_job(&state.db, job_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such job"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NodeRegisterRequest)]
pub struct RegisterRequest {
    name: String,
    owner_wallet: String,
    resources: Resources,
}

/// `POST /api/nodes/register`: the node id and its token, shown this once.
#[utoipa::path(
    post,
    path = "/api/nodes/register",
    tag = "nodes",
    operation_id = "register_node",
    summary = "Register a compute node",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The node and its token, shown this once", body = crate::openapi::schemas::NodeRegistered),
        (status = 409, description = "Registered already (`already_exists`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn register(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let registered = state
        .compute
        .commands
        .register(
            &user.user_id,
            &body.name,
            &body.owner_wallet,
            body.resources,
            &meta,
        )
        .await?;
    // The token exists from here on: the answer is built from the store (the node's own
    // events), so a lagging projection delays it (bounded) and never loses the token.
    read_your_writes(&state, registered.outcome.last).await;
    let node = state.compute.commands.node(&registered.node_id).await?;
    let mut response = json!({ "node": {
        "id": registered.node_id,
        "owner": node.owner,
        "name": node.name,
        "owner_wallet": node.owner_wallet,
        "resources": node.resources,
        "status": node.status.map(|s| s.as_str()),
        "offline_reason": null,
        "last_heartbeat": null,
        "registered_at": node.registered_at.map(aiforge_commands::clock::rfc3339),
        "updated_at": node.registered_at.map(aiforge_commands::clock::rfc3339),
    }});
    match registered.token {
        Some(token) => response["node_token"] = json!(token),
        None => {
            response["node_token"] = Value::Null;
            response["note"] =
                json!("a replayed request: the node token was shown with the first answer only");
        }
    }
    Ok((StatusCode::CREATED, Json(response)))
}

/// One heartbeat, by HTTP or NATS: records the use, brings the node online, and answers its
/// state with the jobs the platform says it holds (a node stops any other it still runs:
/// cancelled, or handed to another node while this one was silent).
async fn heartbeat_answer(
    state: &AppState,
    node_id: &str,
    token: &str,
    metrics: NodeMetrics,
) -> Result<HeartbeatReply, ApiError> {
    let (status, outcome) = state
        .compute
        .commands
        .heartbeat(node_id, token, metrics)
        .await?;
    if let Some(outcome) = outcome {
        read_your_writes(state, outcome.last).await;
    }
    let jobs = aiforge_projections::compute::held_by(&state.db, node_id)
        .await?
        .iter()
        .map(|job| HeldJob {
            job_id: job.job_id.clone(),
            attempt: u32::try_from(job.attempt).unwrap_or(u32::MAX),
            status: job.status.clone(),
        })
        .collect();
    Ok(HeartbeatReply {
        node_id: node_id.to_string(),
        status: status.as_str().to_string(),
        heartbeat_timeout_secs: state.compute.commands.heartbeat_timeout_secs(),
        jobs,
    })
}

/// `POST /api/nodes/{id}/heartbeat` (node token): current use; brings the node online.
#[utoipa::path(
    post,
    path = "/api/nodes/{node_id}/heartbeat",
    tag = "nodes",
    operation_id = "node_heartbeat",
    summary = "A node's heartbeat (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
    ),
    request_body(content = aiforge_commands::compute::NodeMetrics, description = "The node's current use; every field may be left out (`{}` or `null`: nothing to report)"),
    responses(
        (status = 200, description = "The node's state and the jobs the platform says it holds", body = crate::openapi::schemas::HeartbeatAnswer),
        (status = 401, description = "A wrong or missing node token (`bad_node_token`, `unauthorized`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such node", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
    CommandJson { body, .. }: CommandJson<Option<NodeMetrics>>,
) -> Result<impl IntoResponse, ApiError> {
    let token = node_token(&headers)?;
    let answer = heartbeat_answer(&state, &node_id, &token, body.unwrap_or_default()).await?;
    Ok(Json(answer))
}

/// Heartbeats over NATS: requests on `aiforge.nodes.heartbeat.<node id>` (queue group
/// `coordinators`, so one coordinator answers each), answered as the HTTP heartbeat, or
/// `{"error": {"code", "message"}}`. Runs until `stopped`.
/// Heartbeats over NATS answered at once; beyond it a heartbeat is answered `overloaded` (the
/// node retries at its next beat) instead of queueing unbounded tasks.
pub const NATS_HEARTBEATS_IN_FLIGHT_MAX: usize = 256;

pub async fn serve_nats_heartbeats(
    client: async_nats::Client,
    state: AppState,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt;
    let subject = format!("{}.*", aiforge_domain::node::HEARTBEAT_SUBJECT_PREFIX);
    let mut requests = match client
        .queue_subscribe(subject.clone(), "coordinators".to_string())
        .await
    {
        Ok(requests) => requests,
        Err(e) => {
            tracing::error!(error = %e, %subject, "cannot take heartbeats over NATS");
            return;
        }
    };
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(NATS_HEARTBEATS_IN_FLIGHT_MAX));
    loop {
        let message = tokio::select! {
            message = requests.next() => message,
            _ = stopped.changed() => return,
        };
        let Some(message) = message else { return };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let state = state.clone();
        let client = client.clone();
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let body = json!({ "error": { "code": "overloaded", "message": format!("more than {NATS_HEARTBEATS_IN_FLIGHT_MAX} heartbeats in flight; send the next one later"), "status": 503 } });
            if let Err(e) = client.publish(reply, body.to_string().into()).await {
                tracing::warn!(error = %e, "heartbeat answer over NATS not sent");
            }
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let answer = match serde_json::from_slice::<NatsHeartbeat>(&message.payload) {
                Ok(beat)
                    if aiforge_domain::node::heartbeat_subject(&beat.node_id)
                        == message.subject.as_str() =>
                {
                    heartbeat_answer(&state, &beat.node_id, &beat.token, beat.metrics).await
                }
                Ok(_) => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "wrong_subject",
                    "a node heartbeats on the subject of its own id",
                )),
                Err(e) => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_heartbeat",
                    format!("a heartbeat is {{\"node_id\", \"token\", \"metrics\"}}: {e}"),
                )),
            };
            let body = match answer {
                Ok(reply) => json!(reply),
                Err(e) => {
                    json!({ "error": { "code": e.code, "message": e.message, "status": e.status.as_u16() } })
                }
            };
            if let Err(e) = client.publish(reply, body.to_string().into()).await {
                tracing::warn!(error = %e, "heartbeat answer over NATS not sent");
            }
        });
    }
}

/// `POST /api/nodes/{id}/offline` (node token): the node is shutting down. It goes offline
/// now (not after the heartbeat timeout) and its assigned and running jobs go back to the queue.
#[utoipa::path(
    post,
    path = "/api/nodes/{node_id}/offline",
    tag = "nodes",
    operation_id = "node_offline",
    summary = "A node going offline (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
    ),
    responses(
        (status = 200, description = "The node, offline; its jobs back in the queue", body = crate::openapi::schemas::NodeOffline),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such node", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn offline(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authenticated_node(&state, &node_id, &headers).await?;
    let outcome = state
        .compute
        .commands
        .mark_offline(&node_id, OfflineReason::Shutdown)
        .await?;
    read_your_writes(&state, outcome.last).await;
    let report = state.compute.run_once().await.map_err(ApiError::internal)?;
    let row = node_row(&state, &node_id).await?;
    Ok(Json(json!({
        "node_id": node_id,
        "status": row.status,
        "jobs_requeued": report.jobs_requeued,
    })))
}

/// `GET /api/nodes/{id}`: the owner's node, with its state history and earnings.
#[utoipa::path(
    get,
    path = "/api/nodes/{node_id}",
    tag = "nodes",
    operation_id = "get_node",
    summary = "One of the caller's nodes",
    params(
        ("node_id" = String, Path, description = "The node's id"),
    ),
    responses(
        (status = 200, description = "The node with its state history and earnings", body = crate::openapi::schemas::NodeDetailAnswer),
        (status = 404, description = "No such node of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn get_node(
    State(state): State<AppState>,
    user: AuthUser,
    Path(node_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let row = node_row(&state, &node_id).await?;
    if row.owner != user.user_id {
        return Err(ApiError::not_found("no such node"));
    }
    let history = aiforge_projections::compute::node_history_of(&state.db, &node_id).await?;
    let history: Vec<Value> = history
        .iter()
        .map(|h| json!({"event": h.event_type, "status": h.status, "detail": parsed(&h.detail), "at": h.at}))
        .collect();
    let earned = aiforge_projections::compute::node_earnings(&state.db, &node_id).await?;
    let mut node = node_json(&state, &row).await?;
    node["history"] = json!(history);
    let usdt = |micros: i64| {
        aiforge_domain::Usdt::from_micros(micros)
            .map(|u| u.to_string())
            .map_err(ApiError::internal)
    };
    // The node's share of every job it ran and what monthly closes paid it for the tokens it
    // served, as the ledger holds them for the node's owner.
    node["earnings"] = json!({
        "payable": usdt(earned.payable_micros)?,
        "jobs_paid": earned.jobs_paid,
        "jobs": usdt(earned.jobs_micros)?,
        "inference": usdt(earned.inference_micros)?,
    });
    Ok(Json(json!({ "node": node })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HeartbeatRange {
    /// RFC 3339; default: 24 hours before `to`.
    from: Option<String>,
    /// RFC 3339; default: now.
    to: Option<String>,
}

/// The longest range one request may ask for: everything that is kept.
const HEARTBEAT_RANGE_SECS_MAX: i64 = aiforge_commands::liveness::HEARTBEAT_SAMPLES_KEEP_SECS;
/// The range when none is asked for.
const HEARTBEAT_RANGE_SECS_DEFAULT: i64 = 24 * 3600;

fn instant(field: &'static str, text: &str) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::invalid_field(field, format!("an RFC 3339 time is wanted: {e}")))
}

/// `GET /api/nodes/{id}/heartbeats`: the node's heartbeat metrics over time, for its owner and
/// the admins (anyone else: 404).
#[utoipa::path(
    get,
    path = "/api/nodes/{node_id}/heartbeats",
    tag = "nodes",
    operation_id = "node_heartbeats",
    summary = "A node's heartbeat metrics over time (its owner, admins)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        HeartbeatRange,
    ),
    responses(
        (status = 200, description = "One sample per minute at most, oldest first", body = crate::openapi::schemas::HeartbeatHistory),
        (status = 422, description = "A time that is not RFC 3339, `from` after `to`, or a range over 30 days (`invalid_field`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such node of the caller's (an admin sees every node)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn node_heartbeats(
    State(state): State<AppState>,
    user: AuthUser,
    Path(node_id): Path<String>,
    Query(range): Query<HeartbeatRange>,
) -> Result<impl IntoResponse, ApiError> {
    let to = match &range.to {
        Some(text) => instant("to", text)?,
        None => state.clock.now(),
    };
    let from = match &range.from {
        Some(text) => instant("from", text)?,
        None => to - time::Duration::seconds(HEARTBEAT_RANGE_SECS_DEFAULT),
    };
    if from > to {
        return Err(ApiError::invalid_field("from", "`from` is after `to`"));
    }
    if (to - from).whole_seconds() > HEARTBEAT_RANGE_SECS_MAX {
        return Err(ApiError::invalid_field(
            "from",
            format!("a range is at most {HEARTBEAT_RANGE_SECS_MAX} seconds (what is kept)"),
        ));
    }
    let row = node_row(&state, &node_id).await?;
    if row.owner != user.user_id && !crate::routes::series::is_admin(&state, &user).await? {
        return Err(ApiError::not_found("no such node"));
    }
    let samples: Vec<Value> = state
        .compute
        .commands
        .heartbeat_samples(&node_id, from, to)
        .await?
        .into_iter()
        .map(|beat| {
            json!({
                "at": aiforge_commands::clock::rfc3339(beat.at),
                "metrics": beat.metrics,
            })
        })
        .collect();
    Ok(Json(json!({
        "node_id": node_id,
        "from": aiforge_commands::clock::rfc3339(from),
        "to": aiforge_commands::clock::rfc3339(to),
        "sample_secs": aiforge_commands::liveness::HEARTBEAT_SAMPLE_SECS,
        "keep_secs": aiforge_commands::liveness::HEARTBEAT_SAMPLES_KEEP_SECS,
        "samples": samples,
    })))
}

/// `GET /api/nodes/my-nodes`
#[utoipa::path(
    get,
    path = "/api/nodes/my-nodes",
    tag = "nodes",
    operation_id = "my_nodes",
    summary = "The caller's nodes",
    responses(
        (status = 200, description = "The caller's nodes", body = crate::openapi::schemas::Nodes),
    ),
    security(("session" = [])),
)]
pub async fn my_nodes(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let rows = aiforge_projections::compute::nodes(&state.db, Some(&user.user_id)).await?;
    let nodes = nodes_json(&state, &rows).await?;
    Ok(Json(json!({ "nodes": nodes })))
}

/// `GET /api/admin/nodes`: every node, and how many are in each state.
#[utoipa::path(
    get,
    path = "/api/admin/nodes",
    tag = "admin",
    operation_id = "admin_nodes",
    summary = "Every node",
    responses(
        (status = 200, description = "Every node, and how many are in each state", body = crate::openapi::schemas::AdminNodes),
    ),
    security(("admin_session" = [])),
)]
pub async fn admin_nodes(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<impl IntoResponse, ApiError> {
    let rows = aiforge_projections::compute::nodes(&state.db, None).await?;
    let mut counts = BTreeMap::<String, usize>::new();
    for row in &rows {
        *counts.entry(row.status.clone()).or_default() += 1;
    }
    let nodes = nodes_json(&state, &rows).await?;
    Ok(Json(json!({ "nodes": nodes, "by_status": counts })))
}

pub const NODE_JOBS_PAGE_MAX: i64 = 200;

/// `GET /api/admin/nodes/{id}/jobs`: the node's job history (any creator's), newest first.
#[utoipa::path(
    get,
    path = "/api/admin/nodes/{node_id}/jobs",
    tag = "admin",
    operation_id = "admin_node_jobs",
    summary = "A node's job history",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        crate::extract::PageQuery,
    ),
    responses(
        (status = 200, description = "The node and a page of the jobs it ran or holds", body = crate::openapi::schemas::AdminNodeJobs),
        (status = 404, description = "No such node", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn admin_node_jobs(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(node_id): Path<String>,
    Query(query): Query<crate::extract::PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, per_page, offset) = query.resolve(50, NODE_JOBS_PAGE_MAX)?;
    let row = node_row(&state, &node_id).await?;
    let (jobs, total) =
        aiforge_projections::compute::jobs_on_node(&state.db, &node_id, offset, per_page).await?;
    Ok(Json(json!({
        "node": node_json(&state, &row).await?,
        "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
        "page": page,
        "per_page": per_page,
        "total": total,
    })))
}

async fn set_active(
    state: AppState,
    admin: AdminUser,
    node_id: String,
    mut meta: aiforge_commands::CommandMeta,
    active: bool,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(admin.user_id.clone());
    let outcome = state
        .compute
        .commands
        .set_active(&node_id, &admin.user_id, active, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    if !active {
        // Its jobs go back to the queue now, not at the next pass.
        state.compute.run_once().await.map_err(ApiError::internal)?;
    }
    let row = node_row(&state, &node_id).await?;
    Ok(Json(json!({ "node": node_json(&state, &row).await? })))
}

/// `POST /api/admin/nodes/{id}/activate`
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{node_id}/activate",
    tag = "admin",
    operation_id = "admin_activate_node",
    summary = "Activate a node",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "The node", body = crate::openapi::schemas::NodeAnswer),
        (status = 404, description = "No such node", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn activate(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(node_id): Path<String>,
    CommandJson { meta, .. }: CommandJson<Option<Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    set_active(state, admin, node_id, meta, true).await
}

/// `POST /api/admin/nodes/{id}/deactivate`: also hands its jobs back to the queue.
#[utoipa::path(
    post,
    path = "/api/admin/nodes/{node_id}/deactivate",
    tag = "admin",
    operation_id = "admin_deactivate_node",
    summary = "Deactivate a node",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "The node, deactivated; its jobs back in the queue", body = crate::openapi::schemas::NodeAnswer),
        (status = 404, description = "No such node", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn deactivate(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(node_id): Path<String>,
    CommandJson { meta, .. }: CommandJson<Option<Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    set_active(state, admin, node_id, meta, false).await
}

/// What a node is given to run: the spec and the attempt its reports must name.
fn assigned_job(row: &JobRow) -> Result<AssignedJob, ApiError> {
    Ok(AssignedJob {
        job_id: row.job_id.clone(),
        attempt: u32::try_from(row.attempt).map_err(ApiError::internal)?,
        spec: serde_json::from_str(&row.spec).map_err(ApiError::internal)?,
        assigned_at: row.assigned_at.clone(),
    })
}

/// `GET /api/nodes/{id}/jobs/next` (node token): runs a scheduling pass, then answers the
/// oldest job assigned to this node that it has not started (204 when there is none). The job
/// stays assigned until the node reports it started, so a poll that got lost is repeated.
#[utoipa::path(
    get,
    path = "/api/nodes/{node_id}/jobs/next",
    tag = "nodes",
    operation_id = "node_next_job",
    summary = "A node's next job (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
    ),
    responses(
        (status = 200, description = "The oldest job assigned to this node that it has not started", body = crate::openapi::schemas::AssignmentAnswer),
        (status = 204, description = "No job for this node now"),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn next_job(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    authenticated_node(&state, &node_id, &headers).await?;
    state.compute.run_once().await.map_err(ApiError::internal)?;
    let held = aiforge_projections::compute::held_by(&state.db, &node_id).await?;
    Ok(match held.iter().find(|job| job.status == "assigned") {
        Some(row) => Json(NextJob {
            job: assigned_job(row)?,
        })
        .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn report(
    state: &AppState,
    node_id: &str,
    job_id: &str,
    headers: &HeaderMap,
    attempt: u32,
    report: Report,
    mut meta: aiforge_commands::CommandMeta,
) -> Result<Json<Value>, ApiError> {
    authenticated_node(state, node_id, headers).await?;
    meta.actor = Some(format!("node:{node_id}"));
    let outcome = state
        .compute
        .commands
        .report(node_id, job_id, attempt, report, &meta)
        .await?;
    read_your_writes(state, outcome.last).await;
    let row = job_row(state, job_id).await?;
    Ok(Json(json!({ "job": job_json(&row) })))
}

/// `POST /api/nodes/{id}/jobs/{job_id}/started`
#[utoipa::path(
    post,
    path = "/api/nodes/{node_id}/jobs/{job_id}/started",
    tag = "nodes",
    operation_id = "node_job_started",
    summary = "A node started a job (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("job_id" = String, Path, description = "The job's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = JobStarted,
    responses(
        (status = 200, description = "The job, running", body = crate::openapi::schemas::JobAnswer),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such job", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The node does not hold this attempt, or the job moved on (`stale_report`, `invalid_job_state`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn started(
    State(state): State<AppState>,
    Path((node_id, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    CommandJson { body, meta }: CommandJson<JobStarted>,
) -> Result<impl IntoResponse, ApiError> {
    report(
        &state,
        &node_id,
        &job_id,
        &headers,
        body.attempt,
        Report::Started,
        meta,
    )
    .await
}

/// `POST /api/nodes/{id}/jobs/{job_id}/finished`: the container exited (0 completes the job
/// with its outputs; anything else fails it as the job's own outcome).
#[utoipa::path(
    post,
    path = "/api/nodes/{node_id}/jobs/{job_id}/finished",
    tag = "nodes",
    operation_id = "node_job_finished",
    summary = "A node's job exited (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("job_id" = String, Path, description = "The job's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = JobFinished,
    responses(
        (status = 200, description = "The job: completed (exit 0) or failed", body = crate::openapi::schemas::JobAnswer),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such job", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The node does not hold this attempt, or the job moved on (`stale_report`, `invalid_job_state`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "An output is not in the blob store as reported (`invalid_field`: outputs)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn finished(
    State(state): State<AppState>,
    Path((node_id, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    CommandJson { body, meta }: CommandJson<JobFinished>,
) -> Result<impl IntoResponse, ApiError> {
    let exited = Report::Exited {
        exit_code: body.exit_code,
        outputs: body.outputs,
    };
    report(
        &state,
        &node_id,
        &job_id,
        &headers,
        body.attempt,
        exited,
        meta,
    )
    .await
}

/// `POST /api/nodes/{id}/jobs/{job_id}/failed`
#[utoipa::path(
    post,
    path = "/api/nodes/{node_id}/jobs/{job_id}/failed",
    tag = "nodes",
    operation_id = "node_job_failed",
    summary = "A node gives up a job attempt (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("job_id" = String, Path, description = "The job's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = JobFailed,
    responses(
        (status = 200, description = "The job, failed or requeued", body = crate::openapi::schemas::JobAnswer),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such job", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The node does not hold this attempt, or the job moved on (`stale_report`, `invalid_job_state`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn failed(
    State(state): State<AppState>,
    Path((node_id, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    CommandJson { body, meta }: CommandJson<JobFailed>,
) -> Result<impl IntoResponse, ApiError> {
    let failure = |failure| Report::Failed {
        failure,
        message: body.message.clone(),
    };
    let what = match body.reason {
        FailedReason::TimedOut => Report::TimedOut,
        FailedReason::ImagePullFailed => failure(ReportedFailure::ImagePullFailed),
        FailedReason::InputsUnavailable => failure(ReportedFailure::InputsUnavailable),
        FailedReason::NodeError => failure(ReportedFailure::NodeError),
        FailedReason::OutputTooLarge => failure(ReportedFailure::OutputTooLarge),
    };
    report(
        &state,
        &node_id,
        &job_id,
        &headers,
        body.attempt,
        what,
        meta,
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobSubmitRequest)]
pub struct SubmitRequest {
    /// The creator's confirmed job payment; its reference is the job's id.
    payment_id: String,
    #[serde(rename = "type")]
    job_type: JobType,
    image: String,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inputs: Vec<String>,
    needs: JobNeeds,
    max_runtime_secs: u64,
    #[serde(default)]
    network: bool,
    price: Usdt,
}

/// `POST /api/jobs`: submits a job paid by a confirmed job payment (see
/// `aiforge_commands::compute` for the rule); 201 with the job, pending until a node takes it.
#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "jobs",
    operation_id = "submit_job",
    summary = "Submit a compute job",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = SubmitRequest,
    responses(
        (status = 201, description = "The job, pending until a node takes it", body = crate::openapi::schemas::JobAnswer),
        (status = 402, description = "The job payment is not confirmed (`payment_not_confirmed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such payment (`field`: payment_id)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "A job exists for this payment (`already_exists`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "An invalid spec, a price that is not the payment (`escrow_mismatch`), or an input that is not a stored blob", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn submit(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<SubmitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let spec = JobSpec {
        job_type: body.job_type,
        image: body.image,
        command: body.command,
        env: body.env,
        inputs: body.inputs,
        needs: body.needs,
        max_runtime_secs: body.max_runtime_secs,
        network: body.network,
        price: body.price,
    };
    let outcome = state
        .compute
        .commands
        .submit(&user.user_id, &body.payment_id, spec, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    // Offer it to the nodes now rather than at the next pass; the answer does not wait.
    // At most one pass waits behind the running one (`SUBMISSION_PASSES_MAX`): a burst
    // of submissions is one pass, not one task each.
    let pass_state = state.clone();
    if let Ok(queued) = state.compute.queued.clone().try_acquire_owned() {
        tokio::spawn(async move {
            let _queued = queued;
            if let Err(e) = pass_state.compute.run_once().await {
                tracing::error!(error = %e, "compute pass after a submission failed");
            }
        });
    }
    let row = job_row(&state, &outcome.aggregate_id).await?;
    Ok((StatusCode::CREATED, Json(json!({ "job": job_json(&row) }))))
}

/// `GET /api/jobs/{id}`: the creator's job with its history.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}",
    tag = "jobs",
    operation_id = "get_job",
    summary = "One of the caller's jobs",
    params(
        ("job_id" = String, Path, description = "The job's id"),
    ),
    responses(
        (status = 200, description = "The job with its history", body = crate::openapi::schemas::JobDetailAnswer),
        (status = 404, description = "No such job of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn get_job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let row = creators_job(&state, &user, &job_id).await?;
    let history = aiforge_projections::compute::job_history_of(&state.db, &job_id).await?;
    let history: Vec<Value> = history
        .iter()
        .map(|h| json!({"event": h.event_type, "status": h.status, "node_id": h.node_id, "attempt": h.attempt, "at": h.at}))
        .collect();
    let mut job = job_json(&row);
    job["history"] = json!(history);
    Ok(Json(json!({ "job": job })))
}

/// `POST /api/nodes/{id}/jobs/{job_id}/logs` (node token): lines the job printed, while the node
/// holds that attempt; kept in the database for the creator, readable from any instance (`aiforge_commands::job_logs`).
#[utoipa::path(
    post,
    path = "/api/nodes/{node_id}/jobs/{job_id}/logs",
    tag = "nodes",
    operation_id = "node_job_logs",
    summary = "Lines a job printed (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("job_id" = String, Path, description = "The job's id"),
    ),
    request_body = JobLogLines,
    responses(
        (status = 204, description = "Kept (in the database) for the job's creator"),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such job", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The node does not hold this attempt, or the job moved on (`stale_report`, `invalid_job_state`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Too many lines (`invalid_field`: lines)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn node_logs(
    State(state): State<AppState>,
    Path((node_id, job_id)): Path<(String, String)>,
    headers: HeaderMap,
    CommandJson { body, .. }: CommandJson<JobLogLines>,
) -> Result<impl IntoResponse, ApiError> {
    authenticated_node(&state, &node_id, &headers).await?;
    if body.lines.len() > aiforge_commands::job_logs::LINES_PER_REQUEST_MAX {
        return Err(ApiError::invalid_field(
            "lines",
            format!(
                "at most {} lines per request",
                aiforge_commands::job_logs::LINES_PER_REQUEST_MAX
            ),
        ));
    }
    held_job(
        &state,
        &node_id,
        &job_id,
        body.attempt,
        &["assigned", "running"],
    )
    .await?;
    let attempt = body.attempt;
    let lines = body
        .lines
        .into_iter()
        .map(|line| aiforge_commands::job_logs::Line { attempt, ..line })
        .collect::<Vec<_>>();
    state
        .compute
        .logs
        .append(&job_id, &lines, state.clock.now().unix_timestamp())
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/jobs/{id}/logs`: the job's live logs, for its creator.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}/logs",
    tag = "jobs",
    operation_id = "job_logs",
    summary = "A job's live logs",
    params(
        ("job_id" = String, Path, description = "The job's id"),
    ),
    responses(
        (status = 200, description = "The job's live logs", body = crate::openapi::schemas::JobLogs),
        (status = 404, description = "No such job of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn job_logs(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    creators_job(&state, &user, &job_id).await?;
    let (lines, dropped) = state
        .compute
        .logs
        .read(&job_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        json!({ "job_id": job_id, "lines": lines, "dropped": dropped }),
    ))
}

/// `GET /api/jobs/my-jobs?page=&per_page=`: newest first.
#[utoipa::path(
    get,
    path = "/api/jobs/my-jobs",
    tag = "jobs",
    operation_id = "my_jobs",
    summary = "The caller's jobs",
    params(
        crate::extract::PageQuery,
    ),
    responses(
        (status = 200, description = "A page of the caller's jobs, newest first", body = crate::openapi::schemas::JobsPage),
        (status = 422, description = "`page` or `per_page` out of range (per_page 1-100, default 20)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn my_jobs(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<PageQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (page, per_page, offset) = query.resolve(20, JOBS_PAGE_MAX)?;
    let (rows, total) =
        aiforge_projections::compute::jobs_of(&state.db, &user.user_id, offset, per_page).await?;
    let jobs: Vec<Value> = rows.iter().map(job_json).collect();
    Ok(Json(
        json!({"jobs": jobs, "page": page, "per_page": per_page, "total": total}),
    ))
}

/// `POST /api/jobs/{id}/cancel`: the creator cancels (refund by the job's payment rule).
#[utoipa::path(
    post,
    path = "/api/jobs/{job_id}/cancel",
    tag = "jobs",
    operation_id = "cancel_job",
    summary = "Cancel a job",
    params(
        ("job_id" = String, Path, description = "The job's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}` (`null` is accepted too)"),
    responses(
        (status = 200, description = "The job, cancelled (refund by the job's payment rule)", body = crate::openapi::schemas::JobAnswer),
        (status = 404, description = "No such job of the caller's", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The job has ended (`already_ended`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
    CommandJson { mut meta, .. }: CommandJson<Option<Empty>>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .compute
        .commands
        .cancel(&job_id, &user.user_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    let row = job_row(&state, &job_id).await?;
    Ok(Json(json!({ "job": job_json(&row) })))
}
