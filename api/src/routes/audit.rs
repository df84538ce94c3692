//! `/api/admin/audit/*`: the auditor's two checks from the admin's page, the same code as the
//! `aiforge audit verify|replay` CLI (`cli.rs`): the event log against its seals, and a month's
//! distribution recomputed from the raw events against its recorded close. A finding is an
//! answer (200 with `intact: false` / `matches: false`), not an error: the page shows it.

use aiforge_projections::distribution;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::AdminUser;
use crate::error::ApiError;
use crate::extract::{CommandJson, Empty};
use crate::AppState;

#[utoipa::path(
    post,
    path = "/api/admin/audit/verify",
    tag = "admin",
    operation_id = "admin_audit_verify",
    summary = "Check the whole event log against its hash-chain seals (`aiforge audit verify`)",
    params(crate::openapi::IdempotencyKey),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "Intact (how many events were checked), or the first altered position", body = crate::openapi::schemas::AuditVerdict),
    ),
    security(("admin_session" = [])),
)]
pub async fn verify(
    State(state): State<AppState>,
    _admin: AdminUser,
    CommandJson { body: _, meta: _ }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    // Seal what the live projector has not sealed yet, as the CLI does, then check everything.
    state
        .projector
        .catch_up(&aiforge_projections::seals::SealsProjection)
        .await
        .map_err(ApiError::internal)?;
    let verdict = aiforge_projections::seals::verify(&state.db)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(match verdict {
        aiforge_projections::seals::Verdict::Intact { sealed } => json!({
            "intact": true,
            "sealed": sealed,
            "message": format!("event log intact: {sealed} events match their seals"),
        }),
        aiforge_projections::seals::Verdict::Broken { seq, position } => json!({
            "intact": false,
            "position": position,
            "seq": seq,
            "message": format!("event log ALTERED: the event at global position {position} (#{seq} in log order) does not match its seal"),
        }),
    }))
}

#[utoipa::path(
    post,
    path = "/api/admin/audit/replay/{year}/{month}",
    tag = "admin",
    operation_id = "admin_audit_replay",
    summary = "Recompute a month's distribution from the raw events and compare it with its recorded close (`aiforge audit replay`)",
    params(
        ("year" = i32, Path, description = "The year, e.g. 2026"),
        ("month" = u8, Path, description = "The month, 1-12"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 200, description = "The recomputed distribution, the recorded one's digest, whether they match and the fields that differ", body = crate::openapi::schemas::AuditReplay),
        (status = 422, description = "Not a month", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("admin_session" = [])),
)]
pub async fn replay(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path((year, month)): Path<(i32, u8)>,
    CommandJson { body: _, meta: _ }: CommandJson<Empty>,
) -> Result<Json<Value>, ApiError> {
    let month = aiforge_domain::revenue_book::Month::new(year, month).ok_or_else(|| {
        ApiError::invalid_field("month", format!("{year}/{month} is not a month (1-12)"))
    })?;
    let replay = distribution::replay_live(&state.db, month).await?;
    let differences = match &replay.recorded {
        Some(recorded) => crate::cli::differences(recorded, &replay.computed),
        None => Vec::new(),
    };
    let message = match &replay.recorded {
        None => format!("{month} has no recorded close: nothing to compare (this is what a close now would record)"),
        Some(recorded) if replay.matches() => {
            format!("MATCHES the recorded close of {month} (digest {})", recorded.digest)
        }
        Some(recorded) => format!(
            "DIFFERS from the recorded close of {month}: recorded digest {}, replayed {}",
            recorded.digest, replay.computed.digest
        ),
    };
    Ok(Json(json!({
        "month": month.to_string(),
        "closed": replay.recorded.is_some(),
        "matches": replay.matches(),
        "recorded_digest": replay.recorded.as_ref().map(|r| r.digest.clone()),
        "computed": serde_json::to_value(&replay.computed).unwrap_or(Value::Null),
        "differences": differences,
        "message": message,
    })))
}
