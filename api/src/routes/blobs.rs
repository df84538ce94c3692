//! Job files in the blob store. A creator uploads a job's inputs (`POST /api/blobs`) and names
//! them by CID in the job; the node holding the job downloads them (`GET
//! /api/nodes/{id}/blobs/{cid}`, node token) and uploads what the job wrote (`PUT
//! /api/nodes/{id}/jobs/{job_id}/outputs/{name}?attempt=N`); the creator downloads the results
//! (`GET /api/jobs/{job_id}/outputs/{name}`). Every stored file is a `BlobStored` event, and
//! every download is verified against its SHA-256 as it streams.
//!
//! Who may read what: a blob's uploader reads it by CID; a node reads the inputs of the jobs it
//! holds (assigned or running), nothing else; a job's creator reads its outputs.

use aiforge_commands::blob::StoredBlob;
use aiforge_domain::blob::BlobPurpose;
use aiforge_projections::compute::BlobRow;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::io::StreamReader;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::command_meta;
use crate::routes::compute::{authenticated_node, creators_job, held_job};
use crate::routes::read_your_writes;
use crate::AppState;

fn blob_json(row: &BlobRow) -> Value {
    json!({
        "cid": row.cid,
        "sha256": row.sha256,
        "size_bytes": row.size_bytes,
        "storage": row.backend,
        "purpose": row.purpose,
        "job_id": row.job_id,
        "stored_at": row.stored_at,
    })
}

/// The bytes of a stored blob, verified against its SHA-256 as they stream (a corrupt file
/// ends in an error, never in a complete wrong body).
pub(crate) async fn blob_response(
    state: &AppState,
    blob: StoredBlob,
) -> Result<Response, ApiError> {
    let size = blob.size_bytes;
    let etag = format!("\"sha256:{}\"", blob.sha256);
    let stream = state.blobs.get(&blob).await?.map_err(|e| {
        tracing::error!(error = %e, "blob download failed verification or reading");
        std::io::Error::other(e.to_string())
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    if let Ok(etag) = header::HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    Ok((headers, Body::from_stream(stream)).into_response())
}

fn stored(row: &BlobRow) -> StoredBlob {
    StoredBlob {
        sha256: row.sha256.clone(),
        cid: row.cid.clone(),
        size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
    }
}

async fn blob_row(state: &AppState, cid: &str) -> Result<Option<BlobRow>, ApiError> {
    Ok(aiforge_projections::compute::find_blob(&state.db, cid).await?)
}

/// Streams a request body into the blob store (at most `AIFORGE_JOB_BLOB_BYTES_MAX`: 413
/// beyond, nothing kept), then records it as `by`'s blob for `purpose`; the command is keyed
/// by the request's Idempotency-Key and the stored content.
async fn store_and_record(
    state: &AppState,
    request: Request,
    by: &str,
    purpose: BlobPurpose,
) -> Result<StoredBlob, ApiError> {
    let headers = request.headers().clone();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e.to_string()));
    let mut reader = StreamReader::new(stream);
    let blob = state
        .blobs
        .put(&mut reader, state.job_blob_bytes_max)
        .await?;
    let outcome = aiforge_commands::blob::recorded_or_discarded(
        &state.db,
        state.blobs.as_ref(),
        &blob,
        async {
            let mut meta = command_meta(state, &headers, &method, &path, blob.sha256.as_bytes())?;
            meta.actor = Some(by.to_string());
            Ok::<_, ApiError>(
                state
                    .compute
                    .commands
                    .record_blob(&blob, state.blobs.backend(), by, purpose, &meta)
                    .await?,
            )
        },
    )
    .await?;
    read_your_writes(state, outcome.last).await;
    Ok(blob)
}

/// `POST /api/blobs`: a job input, the raw body; 201 with its CID (what a job's `inputs` name),
/// SHA-256 and size. Uploading the same content again answers the same blob.
#[utoipa::path(
    post,
    path = "/api/blobs",
    tag = "jobs",
    operation_id = "upload_blob",
    summary = "Upload a job input",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::openapi::schemas::Binary, content_type = "application/octet-stream", description = "The file, the raw body (at most AIFORGE_JOB_BLOB_BYTES_MAX)"),
    responses(
        (status = 201, description = "The stored blob: its CID is what a job's inputs name", body = crate::openapi::schemas::BlobAnswer),
        (status = 400, description = "The upload was cut off (`upload_interrupted`); nothing is kept", body = crate::openapi::schemas::ApiErrorBody),
        (status = 413, description = "Over the size limit (`too_large`); nothing is kept", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let blob = store_and_record(&state, request, &user.user_id, BlobPurpose::JobInput).await?;
    let row = blob_row(&state, &blob.cid)
        .await?
        .ok_or_else(|| ApiError::internal("a stored blob is missing from its view"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "blob": blob_json(&row) })),
    ))
}

/// `GET /api/blobs/{cid}`: a blob its caller uploaded, or an output of the caller's job.
#[utoipa::path(
    get,
    path = "/api/blobs/{cid}",
    tag = "jobs",
    operation_id = "download_blob",
    summary = "Download a blob the caller uploaded, or an output of the caller's job",
    params(
        ("cid" = String, Path, description = "The blob's CID (CIDv0)"),
    ),
    responses(
        (status = 200, description = "The blob, verified against its SHA-256 as it streams", body = crate::openapi::schemas::Binary, content_type = "application/octet-stream", headers(("ETag" = String, description = "`\"sha256:<hex>\"` of the content"))),
        (status = 404, description = "No such blob of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let blob = state
        .compute
        .commands
        .usable_blob(&user.user_id, &cid)
        .await?
        .ok_or_else(|| ApiError::not_found("no such blob of yours"))?;
    blob_response(
        &state,
        StoredBlob {
            sha256: blob.sha256,
            cid: blob.cid,
            size_bytes: blob.size_bytes,
        },
    )
    .await
}

/// `GET /api/nodes/{id}/blobs/{cid}` (node token): an input of a job the node holds now.
#[utoipa::path(
    get,
    path = "/api/nodes/{node_id}/blobs/{cid}",
    tag = "nodes",
    operation_id = "node_job_input",
    summary = "An input of a job the node holds (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("cid" = String, Path, description = "The blob's CID (CIDv0)"),
    ),
    responses(
        (status = 200, description = "The input, verified as it streams", body = crate::openapi::schemas::Binary, content_type = "application/octet-stream", headers(("ETag" = String, description = "`\"sha256:<hex>\"` of the content"))),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No input with this CID in this node's jobs", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn node_input(
    State(state): State<AppState>,
    Path((node_id, cid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticated_node(&state, &node_id, &headers).await?;
    let held = aiforge_projections::compute::held_by(&state.db, &node_id).await?;
    let wanted = held.iter().any(|job| {
        serde_json::from_str::<aiforge_domain::job::JobSpec>(&job.spec)
            .is_ok_and(|spec| spec.inputs.contains(&cid))
    });
    let row = match wanted {
        true => blob_row(&state, &cid).await?,
        false => None,
    };
    let row =
        row.ok_or_else(|| ApiError::not_found("no input with this CID in this node's jobs"))?;
    blob_response(&state, stored(&row)).await
}

/// `GET /api/nodes/{id}/models/{cid}` (node token): the file of a model that must be served
/// (`node-agent serve --auto` downloads what is placed on it). A registered, active node may
/// read the file of any model sold as a service, since placement may give it any of them;
/// other model files (sold only as downloads, or without a service) are 404.
#[utoipa::path(
    get,
    path = "/api/nodes/{node_id}/models/{cid}",
    tag = "nodes",
    operation_id = "node_model_file",
    summary = "The file of a model to serve (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("cid" = String, Path, description = "The model file's CID (CIDv0)"),
    ),
    responses(
        (status = 200, description = "The model file, verified as it streams", body = crate::openapi::schemas::Binary, content_type = "application/octet-stream", headers(("ETag" = String, description = "`\"sha256:<hex>\"` of the content"))),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No model to serve has this CID", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn node_model(
    State(state): State<AppState>,
    Path((node_id, cid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authenticated_node(&state, &node_id, &headers).await?;
    let model = crate::gateway::placement::to_serve(&state.db)
        .await?
        .into_values()
        .find(|m| m.cid == cid)
        .ok_or_else(|| ApiError::not_found("no model to serve has this CID"))?;
    blob_response(
        &state,
        StoredBlob {
            sha256: model.sha256,
            cid: model.cid,
            size_bytes: model.size_bytes,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// The attempt the node runs (a file of an earlier attempt is 409 `stale_report`).
    attempt: u32,
}

/// Whether `name` is a plain output file name, as `aiforge_domain::job::Output` requires.
fn plain_name(name: &str) -> bool {
    (1..=aiforge_domain::job::OUTPUT_NAME_BYTES_MAX).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `PUT /api/nodes/{id}/jobs/{job_id}/outputs/{name}?attempt=N` (node token): one file the job
/// wrote, the raw body, while the node runs that attempt; 201 with its SHA-256 and CID, which
/// the node's `finished` report then lists (the report is checked against the store).
#[utoipa::path(
    put,
    path = "/api/nodes/{node_id}/jobs/{job_id}/outputs/{name}",
    tag = "nodes",
    operation_id = "node_job_output",
    summary = "Upload one output of a running job (node token)",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("job_id" = String, Path, description = "The job's id"),
        ("name" = String, Path, description = "The output file's name (letters, digits, `.`, `_`, `-`; not starting with `.`)"),
        OutputQuery,
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::openapi::schemas::Binary, content_type = "application/octet-stream", description = "The file, the raw body (at most AIFORGE_JOB_BLOB_BYTES_MAX)"),
    responses(
        (status = 201, description = "The stored output, to list in the `finished` report", body = crate::openapi::schemas::OutputAnswer),
        (status = 400, description = "The upload was cut off (`upload_interrupted`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 403, description = "Not this node's token, or the node is deactivated (`forbidden`, `node_deactivated`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such job", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "The node does not hold this attempt, or the job moved on (`stale_report`, `invalid_job_state`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 413, description = "Over the size limit (`too_large`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Not a plain file name (`invalid_field`: name)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("node_token" = [])),
)]
pub async fn node_output(
    State(state): State<AppState>,
    Path((node_id, job_id, name)): Path<(String, String, String)>,
    Query(query): Query<OutputQuery>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    authenticated_node(&state, &node_id, request.headers()).await?;
    if !plain_name(&name) {
        return Err(ApiError::invalid_field(
            "name",
            "an output name is a plain file name: letters, digits, '.', '_', '-', not starting with '.'",
        ));
    }
    held_job(&state, &node_id, &job_id, query.attempt, &["running"]).await?;
    let purpose = BlobPurpose::JobOutput {
        job_id: job_id.clone(),
        attempt: query.attempt,
    };
    let blob = store_and_record(&state, request, &format!("node:{node_id}"), purpose).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "output": {
            "name": name,
            "sha256": blob.sha256,
            "cid": blob.cid,
            "size_bytes": blob.size_bytes,
        }})),
    ))
}

/// `GET /api/jobs/{job_id}/outputs/{name}`: a completed job's output, for its creator.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}/outputs/{name}",
    tag = "jobs",
    operation_id = "download_job_output",
    summary = "Download an output of the caller's job",
    params(
        ("job_id" = String, Path, description = "The job's id"),
        ("name" = String, Path, description = "The output file's name (letters, digits, `.`, `_`, `-`; not starting with `.`)"),
    ),
    responses(
        (status = 200, description = "The output, verified as it streams", body = crate::openapi::schemas::Binary, content_type = "application/octet-stream", headers(("ETag" = String, description = "`\"sha256:<hex>\"` of the content"))),
        (status = 404, description = "No such job of the caller's, or no output of this name", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn job_output(
    State(state): State<AppState>,
    user: AuthUser,
    Path((job_id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = creators_job(&state, &user, &job_id).await?;
    let outputs: Vec<aiforge_domain::job::Output> =
        serde_json::from_str(&job.outputs).map_err(ApiError::internal)?;
    let output = outputs
        .into_iter()
        .find(|o| o.name == name)
        .ok_or_else(|| ApiError::not_found("the job has no output of this name"))?;
    blob_response(
        &state,
        StoredBlob {
            sha256: output.sha256,
            cid: output.cid,
            size_bytes: output.size_bytes,
        },
    )
    .await
}
