//! `/api/models/*` and `/api/publishing/*`: model upload (streamed into the blob store while it
//! is hashed), metadata, download (verified against the hash), delete, and publishing with its
//! fees.

use aiforge_commands::blob::import::HfSource;
use aiforge_commands::blob::StoredBlob;
use aiforge_domain::model::{BlobRef, ModelMetadata, ModelSource};
use aiforge_domain::serving::Servability;
use aiforge_projections::marketplace::ModelRow;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::io::StreamReader;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{command_meta, CommandJson};
use crate::routes::read_your_writes;
use crate::AppState;

/// Metadata of an upload: in the query string, or as multipart text fields.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    name: Option<String>,
    description: Option<String>,
    /// Comma-separated.
    tags: Option<String>,
    group_id: Option<String>,
    filename: Option<String>,
}

fn split_tags(tags: Option<&str>) -> Vec<String> {
    tags.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// A failure to read the request body: the client went away or sent less than it promised.
fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e.to_string())
}

pub fn model_json(row: &ModelRow) -> Value {
    let serving = row
        .servability
        .as_deref()
        .and_then(|s| serde_json::from_str::<Servability>(s).ok());
    json!({
        "id": row.model_id,
        "owner": { "kind": row.owner_kind, "id": row.owner_id },
        "uploaded_by": row.uploaded_by,
        "name": row.name,
        "description": row.description,
        "tags": serde_json::from_str::<Value>(&row.tags).unwrap_or(Value::Null),
        "sha256": row.sha256,
        "cid": row.cid,
        "size_bytes": row.size_bytes,
        "storage": row.backend,
        "source": serde_json::from_str::<Value>(&row.source).unwrap_or(Value::Null),
        "state": row.state,
        "published_at": row.published_at,
        "listed_until": row.listed_until,
        "grace_until": row.grace_until,
        "uploaded_at": row.uploaded_at,
        "updated_at": row.updated_at,
        "sale_price": row.sale_price,
        "servable": serving.as_ref().map(Servability::is_servable),
        "serving": serving.as_ref().map(serving_json),
    })
}

/// The recorded judgement, with the reason in words beside its code.
fn serving_json(servability: &Servability) -> Value {
    let mut value = serde_json::to_value(servability).unwrap_or(Value::Null);
    if let (Some(reason), Some(json)) = (servability.reason(), value.get_mut("reason")) {
        json["message"] = Value::String(reason.to_string());
    }
    value
}

async fn model_response(state: &AppState, model_id: &str) -> Result<Value, ApiError> {
    let row = aiforge_projections::marketplace::find_model(&state.db, model_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such model"))?;
    Ok(json!({ "model": model_json(&row) }))
}

async fn store_stream<S, E>(
    state: &AppState,
    stream: S,
) -> Result<StoredBlob, aiforge_commands::blob::BlobError>
where
    S: futures::Stream<Item = Result<axum::body::Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let mut reader = StreamReader::new(stream.map_err(io_error));
    state.blobs.put(&mut reader, state.model_bytes_max).await
}

/// `POST /api/models`: the file as the raw body (metadata in the query string) or as the
/// `file` part of a multipart form (metadata as text parts, or in the query string). The bytes
/// stream to the blob store; nothing is held whole in memory, and an upload that is cut off or
/// over the size limit leaves no model and no blob.
#[utoipa::path(
    post,
    path = "/api/models",
    tag = "models",
    operation_id = "upload_model",
    summary = "Upload a model file (streamed)",
    params(
        UploadQuery,
        crate::openapi::IdempotencyKey,
    ),
    request_body(description = "The file: the raw body (metadata in the query string), or a multipart form with a `file` part (metadata as text parts or in the query string). Streamed; at most AIFORGE_MODEL_BYTES_MAX.", content((crate::openapi::schemas::Binary = "application/octet-stream"), (crate::openapi::schemas::ModelUploadForm = "multipart/form-data"))),
    responses(
        (status = 201, description = "The model, uploaded (not yet published)", body = crate::openapi::schemas::ModelAnswer),
        (status = 400, description = "A broken multipart form or an upload cut off (`invalid_multipart`, `upload_interrupted`); nothing is kept", body = crate::openapi::schemas::ApiErrorBody),
        (status = 413, description = "Over the size limit (`too_large`); nothing is kept", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Invalid metadata or form field (`invalid_field`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let headers = request.headers().clone();
    let path = request.uri().path().to_string();
    let mut fields = query;
    let mut stored = None;
    let received = receive(&state, request, &mut fields, &mut stored).await;
    let result = async {
        received?;
        let blob = stored
            .as_ref()
            .ok_or_else(|| ApiError::invalid_field("file", "the form has no 'file' part"))?;
        let filename = fields
            .filename
            .clone()
            .unwrap_or_else(|| "model.bin".into());
        let metadata = ModelMetadata {
            name: fields.name.clone().unwrap_or_else(|| filename.clone()),
            description: fields.description.clone().unwrap_or_default(),
            tags: split_tags(fields.tags.as_deref()),
        };
        let digest = serde_json::to_vec(&json!([
            blob.sha256,
            metadata.name,
            metadata.description,
            metadata.tags,
            fields.group_id,
            filename
        ]))
        .map_err(ApiError::internal)?;
        let mut meta = command_meta(&state, &headers, "POST", &path, &digest)?;
        meta.actor = Some(user.user_id.clone());
        let servability = servability(&state, blob).await?;
        let outcome = state
            .marketplace
            .upload(
                &user.user_id,
                fields.group_id.as_deref(),
                metadata,
                blob_ref(&state, blob),
                ModelSource::Upload { filename },
                servability,
                &meta,
            )
            .await?;
        read_your_writes(&state, outcome.last).await;
        Ok::<_, ApiError>(outcome.aggregate_id)
    }
    .await;
    let model_id = match (result, &stored) {
        (Ok(model_id), _) => model_id,
        (Err(e), Some(blob)) => {
            aiforge_commands::blob::discard_refused(&state.db, state.blobs.as_ref(), blob).await;
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    Ok((
        StatusCode::CREATED,
        Json(model_response(&state, &model_id).await?),
    ))
}

/// Reads an upload's body: the file streams into the blob store (`stored` is set as soon as it
/// is there, so a later refusal can discard it) and the metadata fields into `fields`.
async fn receive(
    state: &AppState,
    request: Request,
    fields: &mut UploadQuery,
    stored: &mut Option<StoredBlob>,
) -> Result<(), ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        *stored = Some(store_stream(state, request.into_body().into_data_stream()).await?);
        return Ok(());
    }
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_multipart", e.body_text())
    };
    let mut multipart = axum::extract::Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_multipart", e.body_text()))?;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            if stored.is_some() {
                return Err(ApiError::invalid_field(
                    "file",
                    "send exactly one file part",
                ));
            }
            if fields.filename.is_none() {
                fields.filename = field.file_name().map(str::to_string);
            }
            *stored = Some(store_stream(state, field).await?);
            continue;
        }
        let text = field.text().await.map_err(multipart_error)?;
        match name.as_str() {
            "name" => fields.name = Some(text),
            "description" => fields.description = Some(text),
            "tags" => fields.tags = Some(text),
            "group_id" => fields.group_id = Some(text),
            "filename" => fields.filename = Some(text),
            _ => {
                return Err(ApiError::invalid_field(
                    "body",
                    "unknown form field: the fields are file, name, description, tags, group_id, filename",
                ))
            }
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ModelImportRequest)]
pub struct ImportRequest {
    repo: String,
    filename: String,
    revision: Option<String>,
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    group_id: Option<String>,
}

/// `POST /api/models/import` `{repo, filename, revision?, name?, description?, tags?,
/// group_id?}`: fetches the file from the Hugging Face hub (its resolve URL), streamed into the
/// blob store with the same limit and hashing as an upload.
#[utoipa::path(
    post,
    path = "/api/models/import",
    tag = "models",
    operation_id = "import_model",
    summary = "Import a model file from the Hugging Face hub",
    params(
        crate::openapi::IdempotencyKey,
    ),
    request_body = ImportRequest,
    responses(
        (status = 201, description = "The model, imported (not yet published)", body = crate::openapi::schemas::ModelAnswer),
        (status = 413, description = "Over the size limit (`too_large`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "Bad repo, filename or revision, or the hub refused (`not_on_hub`, `hub_denied`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 502, description = "The hub failed (`hub_failed`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn import(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, mut meta }: CommandJson<ImportRequest>,
) -> Result<impl IntoResponse, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let mut source = HfSource::new(body.repo.trim(), body.filename.trim());
    source.revision = body.revision.clone();
    let blob = state
        .hf
        .import(state.blobs.as_ref(), &source, state.model_bytes_max)
        .await?;
    let metadata = ModelMetadata {
        name: body.name.unwrap_or_else(|| source.filename.clone()),
        description: body.description,
        tags: body.tags,
    };
    let servability = match servability(&state, &blob).await {
        Ok(servability) => servability,
        Err(e) => {
            aiforge_commands::blob::discard_refused(&state.db, state.blobs.as_ref(), &blob).await;
            return Err(e);
        }
    };
    let outcome = aiforge_commands::blob::recorded_or_discarded(
        &state.db,
        state.blobs.as_ref(),
        &blob,
        state.marketplace.upload(
            &user.user_id,
            body.group_id.as_deref(),
            metadata,
            blob_ref(&state, &blob),
            ModelSource::HuggingFace {
                repo: source.repo.clone(),
                filename: source.filename.clone(),
                revision: source.revision.clone().unwrap_or_else(|| "main".into()),
            },
            servability,
            &meta,
        ),
    )
    .await?;
    read_your_writes(&state, outcome.last).await;
    Ok((
        StatusCode::CREATED,
        Json(model_response(&state, &outcome.aggregate_id).await?),
    ))
}

/// Whether an engine here can serve a stored file, judged from its header (read back from the
/// store; the weights are never read) and the memory a node here may give it.
pub async fn servability(state: &AppState, blob: &StoredBlob) -> Result<Servability, ApiError> {
    let bytes = state.blobs.get(blob).await?;
    let judged = aiforge_inference::servable::judge_stream(bytes, blob.size_bytes).await?;
    Ok(judged.within_budget(state.serving_memory_bytes))
}

fn blob_ref(state: &AppState, blob: &StoredBlob) -> BlobRef {
    BlobRef {
        sha256: blob.sha256.clone(),
        cid: blob.cid.clone(),
        size_bytes: blob.size_bytes,
        backend: state.blobs.backend().to_string(),
    }
}

/// `GET /api/models/my-models`: the user's models and their groups' models.
#[utoipa::path(
    get,
    path = "/api/models/my-models",
    tag = "models",
    operation_id = "my_models",
    summary = "The caller's models",
    responses(
        (status = 200, description = "The caller's models and their groups' models", body = crate::openapi::schemas::Models),
    ),
    security(("session" = [])),
)]
pub async fn mine(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let rows = aiforge_projections::marketplace::models_of(&state.db, &user.user_id).await?;
    Ok(Json(json!({
        "models": rows.iter().map(model_json).collect::<Vec<_>>()
    })))
}

/// Who may see a model's details and download it: its owner, members of its group, and anyone
/// once it is on the marketplace (details only; the file stays with owners).
async fn member_of_owner(
    state: &AppState,
    row: &ModelRow,
    user_id: &str,
) -> Result<bool, ApiError> {
    Ok(match row.owner_kind.as_str() {
        "user" => row.owner_id == user_id,
        _ => aiforge_projections::groups::find(&state.db, &row.owner_id)
            .await?
            .is_some_and(|(_, members)| members.iter().any(|m| m.user_id == user_id)),
    })
}

async fn live_model(state: &AppState, model_id: &str) -> Result<ModelRow, ApiError> {
    aiforge_projections::marketplace::find_model(&state.db, model_id)
        .await?
        .filter(|row| row.state != "deleted")
        .ok_or_else(|| ApiError::not_found("no such model"))
}

fn is_public(row: &ModelRow) -> bool {
    matches!(row.state.as_str(), "listed" | "grace")
}

async fn visible_model(
    state: &AppState,
    model_id: &str,
    user_id: &str,
) -> Result<ModelRow, ApiError> {
    let row = live_model(state, model_id).await?;
    if is_public(&row) || member_of_owner(state, &row, user_id).await? {
        Ok(row)
    } else {
        Err(ApiError::not_found("no such model"))
    }
}

/// `GET /api/models/{id}`.
#[utoipa::path(
    get,
    path = "/api/models/{model_id}",
    tag = "models",
    operation_id = "get_model",
    summary = "A model (owners, group members, or anyone once listed)",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The model", body = crate::openapi::schemas::ModelAnswer),
        (status = 404, description = "No such model visible to the caller", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = visible_model(&state, &model_id, &user.user_id).await?;
    let mut model = model_json(&row);
    model["purchased"] =
        aiforge_projections::marketplace::purchased(&state.db, &model_id, &user.user_id)
            .await?
            .into();
    Ok(Json(json!({ "model": model })))
}

/// A model's placement, as its owner sees it (`GET /api/models/{id}/placement`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModelPlacementAnswer {
    pub model_id: String,
    /// Whether the in-process node of the instance also serves it on a first call.
    pub in_process: bool,
    /// Its nodes, or why it waits; `null` when it is not placed on nodes at all (no active
    /// service, not a servable GGUF file, or an upstream model card).
    pub placement: Option<crate::gateway::placement::ModelPlacement>,
}

/// `GET /api/models/{id}/placement`: which inference nodes serve the model now, or why it waits.
#[utoipa::path(
    get,
    path = "/api/models/{model_id}/placement",
    tag = "models",
    operation_id = "model_placement",
    summary = "Which inference nodes serve a model, or why it waits (owners, group members)",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The model's placement", body = ModelPlacementAnswer),
        (status = 404, description = "No such model of the caller's", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn placement(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
) -> Result<Json<ModelPlacementAnswer>, ApiError> {
    let row = live_model(&state, &model_id).await?;
    if !member_of_owner(&state, &row, &user.user_id).await? {
        return Err(ApiError::not_found("no such model"));
    }
    let view = crate::gateway::placement::view_of(&state).await?;
    let placement = view
        .models
        .into_iter()
        .find(|m| m.model_ids.contains(&model_id));
    Ok(Json(ModelPlacementAnswer {
        model_id,
        in_process: view.in_process,
        placement,
    }))
}

/// `GET /api/models/{id}/download`: the file, streamed from the blob store and verified as it
/// goes; a blob that no longer matches its SHA-256 ends the transfer with an error instead of
/// completing it.
#[utoipa::path(
    get,
    path = "/api/models/{model_id}/download",
    tag = "models",
    operation_id = "download_model",
    summary = "Download a model file (owners, group members and buyers)",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "The file, verified against its SHA-256 as it streams", body = crate::openapi::schemas::Binary, content_type = "application/octet-stream", headers(("ETag" = String, description = "`\"sha256:<hex>\"` of the content"))),
        (status = 403, description = "A listed model's file is for its owners and buyers only (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
) -> Result<Response, ApiError> {
    // One membership check decides both: a stranger learns nothing of an unpublished model
    // (404) and may not download a public one (403).
    let row = live_model(&state, &model_id).await?;
    // A buyer keeps the file for good, listed or not; the store's aggregate decides (a view
    // that lags would refuse a purchase just confirmed).
    if !member_of_owner(&state, &row, &user.user_id).await?
        && !state.marketplace.bought(&model_id, &user.user_id).await?
    {
        return Err(if is_public(&row) {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the model's owners (or its group's members) and its buyers may download the file",
            )
        } else {
            ApiError::not_found("no such model")
        });
    }
    let blob = StoredBlob {
        sha256: row.sha256.clone(),
        cid: row.cid.clone(),
        size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
    };
    crate::routes::blobs::blob_response(&state, blob).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ModelEditRequest)]
pub struct EditRequest {
    name: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
}

/// `PUT /api/models/{id}`: name, description, tags (missing ones keep their value).
#[utoipa::path(
    put,
    path = "/api/models/{model_id}",
    tag = "models",
    operation_id = "edit_model",
    summary = "Edit a model's name, description, tags",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = EditRequest,
    responses(
        (status = 200, description = "The model", body = crate::openapi::schemas::ModelAnswer),
        (status = 403, description = "Not the model's manager (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn edit(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<EditRequest>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let current = state.marketplace.model(&model_id).await?;
    let current = current
        .metadata
        .ok_or_else(|| ApiError::not_found("no such model"))?;
    let metadata = ModelMetadata {
        name: body.name.unwrap_or(current.name),
        description: body.description.unwrap_or(current.description),
        tags: body.tags.unwrap_or(current.tags),
    };
    let outcome = state
        .marketplace
        .edit_model(&model_id, &user.user_id, metadata, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(model_response(&state, &model_id).await?))
}

/// `DELETE /api/models/{id}`: the model leaves every list; its file is kept while any
/// subscription still references it.
#[utoipa::path(
    delete,
    path = "/api/models/{model_id}",
    tag = "models",
    operation_id = "delete_model",
    summary = "Delete a model",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body(content = crate::extract::Empty, description = "No fields: `{}`"),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not the model's manager (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body: _, mut meta }: CommandJson<crate::extract::Empty>,
) -> Result<StatusCode, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .marketplace
        .delete_model(&model_id, &user.user_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/publishing/model/{id}/publishing`: where the model stands and what the next step
/// costs.
#[utoipa::path(
    get,
    path = "/api/publishing/model/{model_id}/publishing",
    tag = "publishing",
    operation_id = "model_publishing",
    summary = "A model's publishing state and fees",
    params(
        ("model_id" = String, Path, description = "The model's id"),
    ),
    responses(
        (status = 200, description = "Where the model stands and what the next step costs", body = crate::openapi::schemas::Publishing),
        (status = 404, description = "No such model", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn publishing(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = visible_model(&state, &model_id, &user.user_id).await?;
    let schedule = state
        .fees
        .book()
        .await
        .map_err(crate::error::command_error)?
        .table()
        .at(state.clock.now())
        .clone();
    let free = state
        .marketplace
        .has_free_publication(&user.user_id)
        .await?;
    Ok(Json(json!({
        "model_id": row.model_id,
        "state": row.state,
        "published_at": row.published_at,
        "listed_until": row.listed_until,
        "grace_until": row.grace_until,
        "publishing_fee": if free { "0.000000".to_string() } else { schedule.publishing_fee().to_string() },
        "first_publication_free_available": free,
        "listing_fee": schedule.listing_fee().to_string(),
        "listing_period_days": aiforge_domain::model::LISTING_PERIOD_DAYS,
        "grace_days": aiforge_domain::model::GRACE_DAYS,
        "fee_schedule_version": schedule.version,
    })))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PublishingFeeRequest)]
pub struct FeeRequest {
    payment_id: Option<String>,
}

/// `POST /api/publishing/model/{id}/publish`: free for the publisher's first model, otherwise
/// with `payment_id` of a confirmed publishing_fee payment (402 asks for it).
#[utoipa::path(
    post,
    path = "/api/publishing/model/{model_id}/publish",
    tag = "publishing",
    operation_id = "publish_model",
    summary = "Publish a model on the marketplace",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = FeeRequest,
    responses(
        (status = 200, description = "The model, listed", body = crate::openapi::schemas::ModelAnswer),
        (status = 402, description = "A confirmed publishing_fee payment is needed (`publishing_fee_required`, `payment_not_confirmed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 403, description = "Not the model's manager (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model or payment", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Published already, or the payment is used (`already_published`, `payment_already_used`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn publish(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<FeeRequest>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let outcome = state
        .marketplace
        .publish(&model_id, &user.user_id, body.payment_id.as_deref(), &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(model_response(&state, &model_id).await?))
}

/// `POST /api/publishing/model/{id}/listing-fee`: a confirmed listing_fee payment extends the
/// listing by 30 days (or relists a delisted model).
#[utoipa::path(
    post,
    path = "/api/publishing/model/{model_id}/listing-fee",
    tag = "publishing",
    operation_id = "pay_listing_fee",
    summary = "Extend a listing with a listing_fee payment",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = FeeRequest,
    responses(
        (status = 200, description = "The model, its listing extended by 30 days", body = crate::openapi::schemas::ModelAnswer),
        (status = 402, description = "The payment is not confirmed (`payment_not_confirmed`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 403, description = "Not the model's manager (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model or payment", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not published, or the payment is used (`not_published`, `payment_already_used`)", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn listing_fee(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<FeeRequest>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let payment_id = body
        .payment_id
        .ok_or_else(|| ApiError::invalid_field("payment_id", "payment_id is required"))?;
    let outcome = state
        .marketplace
        .pay_listing_fee(&model_id, &user.user_id, &payment_id, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    Ok(Json(model_response(&state, &model_id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// The sale price in USDT (a plain decimal string); null takes the model off sale.
    #[schema(value_type = Option<aiforge_domain::Usdt>)]
    price: Option<String>,
}

/// `PUT /api/models/{id}/sale`: puts the model on sale at `price` (a change applies to later
/// purchases only) or takes it off sale (`null`). The owner, or the group's OWNER or ADMIN.
#[utoipa::path(
    put,
    path = "/api/models/{model_id}/sale",
    tag = "models",
    operation_id = "set_model_sale_price",
    summary = "Put a model on sale, change its price, or take it off sale",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = SaleRequest,
    responses(
        (status = 200, description = "The sale price now (null: not for sale)", body = crate::openapi::schemas::SalePrice),
        (status = 403, description = "Not the owner or the group's OWNER or ADMIN (`forbidden`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 404, description = "No such model (or deleted)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "The price is not positive or malformed", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn set_sale(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<SaleRequest>,
) -> Result<Json<Value>, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let price = body
        .price
        .as_deref()
        .map(aiforge_domain::Usdt::parse)
        .transpose()
        .map_err(|e| ApiError::invalid_field("price", e.to_string()))?;
    state
        .marketplace
        .set_sale_price(&model_id, &user.user_id, price, &meta)
        .await?;
    let model = state.marketplace.model(&model_id).await?;
    Ok(Json(json!({
        "model_id": model_id,
        "sale_price": model.sale_price.map(|p| p.to_string()),
    })))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest {
    /// ethereum (default) or tron.
    network: Option<String>,
}

/// `POST /api/models/{id}/buy`: the `model_sale` payment of the model's price now; when it
/// confirms the caller may download the model for good. Asked again while that payment waits,
/// the same payment is the answer (200).
#[utoipa::path(
    post,
    path = "/api/models/{model_id}/buy",
    tag = "models",
    operation_id = "buy_model",
    summary = "Buy a model: the payment to make",
    params(
        ("model_id" = String, Path, description = "The model's id"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = BuyRequest,
    responses(
        (status = 201, description = "The model_sale payment to make", body = crate::openapi::schemas::Purchase),
        (status = 200, description = "The purchase payment already waiting for this model", body = crate::openapi::schemas::Purchase),
        (status = 404, description = "No such model visible to the caller", body = crate::openapi::schemas::ApiErrorBody),
        (status = 409, description = "Not for sale, bought already, or the caller's own (`not_for_sale`, `already_purchased`, `own_model`)", body = crate::openapi::schemas::ApiErrorBody),
        (status = 422, description = "An unknown network", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn buy(
    State(state): State<AppState>,
    user: AuthUser,
    Path(model_id): Path<String>,
    CommandJson { body, mut meta }: CommandJson<BuyRequest>,
) -> Result<Response, ApiError> {
    meta.actor = Some(user.user_id.clone());
    let network = body
        .network
        .as_deref()
        .map(crate::extract::parse_network)
        .transpose()?;
    let price = state
        .marketplace
        .sale_price_for(&model_id, &user.user_id)
        .await?;
    let reference = format!(
        "{}{model_id}",
        aiforge_commands::marketplace::MODEL_SALE_REFERENCE_PREFIX
    );
    if let Some(waiting) = aiforge_projections::payments::pending_for(
        &state.db,
        &user.user_id,
        "model_sale",
        &reference,
    )
    .await?
    .filter(|p| aiforge_domain::Usdt::parse(&p.amount).ok() == Some(price))
    {
        return Ok(Json(json!({
            "model_id": model_id,
            "price": price.to_string(),
            "payment": waiting,
        }))
        .into_response());
    }
    let (outcome, price) = state
        .marketplace
        .buy(&model_id, &user.user_id, network, &meta)
        .await?;
    read_your_writes(&state, outcome.last).await;
    let payment = aiforge_projections::payments::find(&state.db, &outcome.aggregate_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "model_id": model_id,
            "price": price.to_string(),
            "payment": payment,
        })),
    )
        .into_response())
}
