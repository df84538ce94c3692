//! `/healthz` (the process answers), `/readyz` (the database answers), `/metrics` (Prometheus
//! text exposition format).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use aiforge_commands::store::repository::EVENTS_APPENDED_TOTAL;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::error::ApiError;
use crate::metrics::HTTP_RESPONSES;
use crate::AppState;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    operation_id = "healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process answers", body = crate::openapi::schemas::Health),
    ),
)]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    operation_id = "readyz",
    summary = "Readiness",
    responses(
        (status = 200, description = "The database answers", body = crate::openapi::schemas::Ready),
        (status = 503, description = "The database does not answer (`unavailable`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.db.ping().await.map_err(ApiError::unavailable)?;
    Ok(Json(
        serde_json::json!({ "status": "ready", "engine": state.db.engine_name() }),
    ))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4"),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP aiforge_http_responses_total HTTP responses by status class."
    );
    let _ = writeln!(out, "# TYPE aiforge_http_responses_total counter");
    for (class, counter) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .zip(HTTP_RESPONSES.iter())
    {
        let _ = writeln!(
            out,
            "aiforge_http_responses_total{{class=\"{class}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP aiforge_events_appended_total Events appended by this process."
    );
    let _ = writeln!(out, "# TYPE aiforge_events_appended_total counter");
    let _ = writeln!(
        out,
        "aiforge_events_appended_total {}",
        EVENTS_APPENDED_TOTAL.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP aiforge_scheduler_lease_held 1 on the instance that runs the cluster's periodic tasks."
    );
    let _ = writeln!(out, "# TYPE aiforge_scheduler_lease_held gauge");
    let _ = writeln!(
        out,
        "aiforge_scheduler_lease_held {}",
        u8::from(state.scheduler_lease.is_held())
    );
    {
        use crate::gateway::pool::{
            MODELS_LOADED, MODEL_LOADS_TOTAL, MODEL_MEMORY_BYTES, MODEL_UNLOADS_TOTAL,
        };
        for (name, kind, help, value) in [
            ("aiforge_local_model_loads_total", "counter", "Models the in-process node's pool loaded.", &MODEL_LOADS_TOTAL),
            ("aiforge_local_model_unloads_total", "counter", "Models the in-process node's pool unloaded (least recently used, to stay within AIFORGE_SERVING_MEMORY_BYTES).", &MODEL_UNLOADS_TOTAL),
            ("aiforge_local_models_loaded", "gauge", "Models the in-process node's pool holds now.", &MODELS_LOADED),
            ("aiforge_local_model_memory_bytes", "gauge", "Memory the pool's models need, as judged at upload.", &MODEL_MEMORY_BYTES),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
    }
    let _ = writeln!(
        out,
        "# HELP aiforge_node_retries_total Calls sent to a second node after the first refused, failed, was gone or went silent before the first token."
    );
    let _ = writeln!(out, "# TYPE aiforge_node_retries_total counter");
    let _ = writeln!(
        out,
        "aiforge_node_retries_total {}",
        crate::gateway::nats::NODE_RETRIES_TOTAL.load(Ordering::Relaxed)
    );
    let stages = aiforge_commands::stages::ALL;
    let _ = writeln!(
        out,
        "# HELP aiforge_stage_runs_total Runs of each stage of a gateway call, and of what its event costs after it (README, \"Gateway overhead\")."
    );
    let _ = writeln!(out, "# TYPE aiforge_stage_runs_total counter");
    for stage in stages {
        let _ = writeln!(
            out,
            "aiforge_stage_runs_total{{stage=\"{}\"}} {}",
            stage.name,
            stage.runs()
        );
    }
    let _ = writeln!(
        out,
        "# HELP aiforge_stage_seconds_total Time spent in each stage, in all."
    );
    let _ = writeln!(out, "# TYPE aiforge_stage_seconds_total counter");
    for stage in stages {
        let _ = writeln!(
            out,
            "aiforge_stage_seconds_total{{stage=\"{}\"}} {:.9}",
            stage.name,
            stage.seconds()
        );
    }
    let status = state.projector.status().await.map_err(ApiError::internal)?;
    let _ = writeln!(
        out,
        "# HELP aiforge_log_head_position Global position of the newest readable event."
    );
    let _ = writeln!(out, "# TYPE aiforge_log_head_position gauge");
    let head = status.first().map_or(0, |s| s.head.position);
    let _ = writeln!(out, "aiforge_log_head_position {head}");
    let _ = writeln!(
        out,
        "# HELP aiforge_projection_lag_events Events a projection has yet to apply."
    );
    let _ = writeln!(out, "# TYPE aiforge_projection_lag_events gauge");
    for s in &status {
        let _ = writeln!(
            out,
            "aiforge_projection_lag_events{{projection=\"{}\"}} {}",
            s.name, s.behind
        );
    }
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ClockAdvanceRequest)]
pub struct AdvanceRequest {
    seconds: i64,
}

/// `POST /api/ops/clock/advance {"seconds": N}`: moves the manual clock forward and runs the
/// scheduled monthly close, the listing scheduler and the compute pass (heartbeat timeouts, requeues, assignments). Exists only when the server was started on a manual clock
/// (`AIFORGE_MANUAL_CLOCK_START`, for end-to-end tests); 404 otherwise.
#[utoipa::path(
    post,
    path = "/api/ops/clock/advance",
    tag = "ops",
    operation_id = "advance_clock",
    summary = "Advance the manual test clock",
    request_body = AdvanceRequest,
    responses(
        (status = 200, description = "The new time and what the scheduler and the compute pass did", body = crate::openapi::schemas::ClockAdvanced),
        (status = 404, description = "The server does not run on a manual clock (the route exists only with AIFORGE_MANUAL_CLOCK_START, for tests)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "The clock only moves forward (`invalid_field`: seconds)", body = crate::openapi::schemas::ApiErrorBody),
    ),
)]
pub async fn advance_clock(
    State(state): State<AppState>,
    crate::extract::CommandJson { body, .. }: crate::extract::CommandJson<AdvanceRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(clock) = &state.manual_clock else {
        return Err(ApiError::not_found("no such route"));
    };
    if body.seconds <= 0 {
        return Err(ApiError::invalid_field(
            "seconds",
            "the clock only moves forward",
        ));
    }
    clock.advance(time::Duration::seconds(body.seconds));
    let now = aiforge_commands::Clock::now(clock.as_ref());
    // The cluster's periodic tasks see the new time at once, on the instance that runs them
    // (another instance's clock moves; its lease holder's next pass acts).
    let (months_closed, payouts, done, compute) = if state.scheduler_lease.is_held() {
        let months_closed = match state.close_settle {
            Some(settle) => {
                aiforge_projections::distribution::close_due(
                    &state.revenue_book,
                    &state.clock,
                    settle,
                )
                .await?
            }
            None => Vec::new(),
        };
        let payouts = state.payouts.run_once().await.map_err(ApiError::internal)?;
        let done = aiforge_commands::passes::listings::run_once(
            state.views.as_ref(),
            &state.marketplace,
            now,
        )
        .await
        .map_err(ApiError::internal)?;
        let compute = state.compute.run_once().await.map_err(ApiError::internal)?;
        (months_closed, payouts, done, compute)
    } else {
        (
            Vec::new(),
            aiforge_commands::payouts::PayoutPassReport::default(),
            0,
            aiforge_commands::passes::compute::PassReport::default(),
        )
    };
    Ok(Json(serde_json::json!({
        "now": aiforge_commands::clock::rfc3339(now),
        "listing_changes": done,
        "compute": compute,
        "months_closed": months_closed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "payouts": payouts,
    })))
}
