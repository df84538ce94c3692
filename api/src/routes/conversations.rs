//! The web chat's conversations (contract: `/work/contract-chat.md`): list and search, create,
//! read, change, delete (the rows really go), export, and `POST …/messages`, which streams an
//! answer through the same gateway pipeline as `/api/v1` (`gateway::chat::start`) under the
//! entitlement the conversation names (the user's plan, or one of their API subscriptions).
//!
//! Chat text lives only in `aiforge_commands::conversations`' tables, never in the event log.
//! Another user's conversation answers 404. When the client goes away mid-answer, the call is
//! still metered for what was delivered, and what was delivered is saved with
//! `finish_reason: "cancelled"`.

use std::convert::Infallible;
use std::time::Instant;

use aiforge_commands::conversations::{
    new_message_id, path_to, ChatEntitlement, Conversation, Message, MessageError, NewConversation,
    NewMessage, Patch,
};
use aiforge_inference::{ChatMessage, ChatRequest, FinishReason, Role};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::CommandJson;
use crate::gateway::chat::{Finished, Piece, Started};
use crate::routes::chat::{chat_models, receipt, session_entitlement};
use crate::routes::openai::OpenAiError;
use crate::AppState;

/// Events buffered between the answer's task and the client.
const EVENTS_BUFFER: usize = 32;

fn invalid(err: aiforge_commands::conversations::Invalid) -> ApiError {
    ApiError::invalid_field(err.field, err.message)
}

fn not_found() -> ApiError {
    ApiError::not_found("no such conversation")
}

/// The entitlement a conversation may name for `model`: one of the user's chat models (a plan
/// is named by kind: the plan in force when a call is made pays for it).
fn available(
    state: &AppState,
    user_id: &str,
    model: &str,
    entitlement: &ChatEntitlement,
) -> Result<ChatEntitlement, ApiError> {
    chat_models(state, user_id)
        .into_iter()
        .find(|m| {
            m.id == model
                && match (&m.entitlement, entitlement) {
                    (ChatEntitlement::Plan { .. }, ChatEntitlement::Plan { .. }) => true,
                    (a, b) => a == b,
                }
        })
        .map(|m| m.entitlement)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "model",
                "this model is not available to you under that entitlement (GET /api/chat/models)",
            )
        })
}

/// A conversation as the contract shows it: each assistant message with its receipt.
async fn conversation_json(
    state: &AppState,
    user_id: &str,
    conversation: &Conversation,
) -> Result<Value, ApiError> {
    let mut value = serde_json::to_value(conversation).map_err(ApiError::internal)?;
    if let Some(messages) = value.get_mut("messages").and_then(Value::as_array_mut) {
        for (json, message) in messages.iter_mut().zip(&conversation.messages) {
            if let Some(request_id) = &message.request_id {
                if let Some(receipt) = receipt(state, user_id, request_id).await? {
                    json["receipt"] = serde_json::to_value(receipt).map_err(ApiError::internal)?;
                }
            }
        }
    }
    Ok(value)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Text to find in a title or in any message (case-insensitive).
    q: Option<String>,
}

/// `GET /api/conversations`.
#[utoipa::path(
    get,
    path = "/api/conversations",
    tag = "chat",
    operation_id = "list_conversations",
    summary = "Your conversations, newest first (q: search titles and text)",
    params(ListQuery),
    responses(
        (status = 200, description = "`{conversations: [{id, title, model, updated_at}]}`", body = Value),
    ),
    security(("session" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > aiforge_commands::conversations::SEARCH_CHARS_MAX) {
        return Err(ApiError::invalid_field(
            "q",
            "a search is at most 200 characters",
        ));
    }
    let conversations = state.conversations.list(&user.user_id, q).await?;
    Ok(Json(json!({ "conversations": conversations })))
}

/// Absent stays absent; `null` is `Some(None)`.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    title: Option<String>,
    model: String,
    entitlement: ChatEntitlement,
    system_prompt: Option<String>,
    /// 0 to 2.
    temperature: Option<f64>,
    max_tokens: Option<u32>,
}

/// `POST /api/conversations`.
#[utoipa::path(
    post,
    path = "/api/conversations",
    tag = "chat",
    operation_id = "create_conversation",
    summary = "Start a conversation with a model under one of your entitlements",
    request_body = CreateConversation,
    responses(
        (status = 201, description = "The conversation (no messages yet)", body = Value),
    ),
    security(("session" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    CommandJson { body, .. }: CommandJson<CreateConversation>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewConversation {
        title: body.title,
        model: body.model,
        entitlement: body.entitlement,
        system_prompt: body.system_prompt,
        temperature: body.temperature,
        max_tokens: body.max_tokens,
    }
    .validated()
    .map_err(invalid)?;
    let entitlement = available(&state, &user.user_id, &new.model, &new.entitlement)?;
    let conversation = state
        .conversations
        .create(
            &user.user_id,
            NewConversation { entitlement, ..new },
            state.clock.now(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(conversation_json(&state, &user.user_id, &conversation).await?),
    ))
}

/// `GET /api/conversations/{id}`.
#[utoipa::path(
    get,
    path = "/api/conversations/{conversation_id}",
    tag = "chat",
    operation_id = "get_conversation",
    summary = "A conversation of yours with all its messages (a tree by parent_id) and receipts",
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation", body = Value),
        (status = 404, description = "No such conversation of yours", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conversation = state
        .conversations
        .get(&user.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(
        conversation_json(&state, &user.user_id, &conversation).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchConversation {
    title: Option<String>,
    model: Option<String>,
    entitlement: Option<ChatEntitlement>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    system_prompt: Option<Option<String>>,
    /// 0 to 2, or null for the model's default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<f64>)]
    temperature: Option<Option<f64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    max_tokens: Option<Option<u32>>,
}

/// `PATCH /api/conversations/{id}`.
#[utoipa::path(
    patch,
    path = "/api/conversations/{conversation_id}",
    tag = "chat",
    operation_id = "update_conversation",
    summary = "Rename a conversation or change its model, entitlement, system prompt, temperature or max tokens",
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    request_body = PatchConversation,
    responses(
        (status = 200, description = "The conversation", body = Value),
        (status = 404, description = "No such conversation of yours", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn patch(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    CommandJson { body, .. }: CommandJson<PatchConversation>,
) -> Result<Json<Value>, ApiError> {
    let mut patch = Patch {
        title: body.title,
        model: body.model,
        entitlement: body.entitlement,
        system_prompt: body.system_prompt,
        temperature: body.temperature,
        max_tokens: body.max_tokens,
    }
    .validated()
    .map_err(invalid)?;
    if patch.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing_to_change",
            "name at least one of title, model, entitlement, system_prompt, temperature, max_tokens",
        ));
    }
    let current = state
        .conversations
        .get(&user.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    if patch.model.is_some() || patch.entitlement.is_some() {
        let model = patch.model.clone().unwrap_or(current.model.clone());
        let entitlement = patch
            .entitlement
            .clone()
            .unwrap_or(current.entitlement.clone());
        patch.entitlement = Some(available(&state, &user.user_id, &model, &entitlement)?);
    }
    if !state
        .conversations
        .patch(&user.user_id, &id, patch, state.clock.now())
        .await?
    {
        return Err(not_found());
    }
    get(State(state), user, Path(id)).await
}

/// `DELETE /api/conversations/{id}`.
#[utoipa::path(
    delete,
    path = "/api/conversations/{conversation_id}",
    tag = "chat",
    operation_id = "delete_conversation",
    summary = "Delete a conversation: its rows are really deleted",
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such conversation of yours", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.conversations.delete(&user.user_id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `markdown` (default) or `json`.
    format: Option<String>,
}

/// The branch shown last: from the root to the most recent message, by parents.
fn latest_branch(conversation: &Conversation) -> Vec<&Message> {
    match conversation.messages.last() {
        Some(last) => path_to(&conversation.messages, &last.id),
        None => Vec::new(),
    }
}

fn markdown(conversation: &Conversation) -> String {
    let mut text = format!("# {}\n\n", conversation.title);
    text.push_str(&format!(
        "Model: {}  \nCreated: {}\n\n",
        conversation.model, conversation.created_at
    ));
    if let Some(prompt) = &conversation.system_prompt {
        text.push_str(&format!("## System\n\n{prompt}\n\n"));
    }
    for message in latest_branch(conversation) {
        let who = if message.role == "user" {
            "User"
        } else {
            "Assistant"
        };
        text.push_str(&format!("## {who}\n\n{}\n\n", message.content));
        if message.finish_reason.as_deref() == Some("cancelled") {
            text.push_str("*(stopped)*\n\n");
        }
    }
    text
}

/// `GET /api/conversations/{id}/export`.
#[utoipa::path(
    get,
    path = "/api/conversations/{conversation_id}/export",
    tag = "chat",
    operation_id = "export_conversation",
    summary = "Download a conversation as Markdown (its latest branch) or JSON (everything)",
    params(("conversation_id" = String, Path, description = "The conversation's id"), ExportQuery),
    responses(
        (status = 200, description = "An attachment", content((String = "text/markdown"), (Value = "application/json"))),
        (status = 404, description = "No such conversation of yours", body = crate::openapi::schemas::ApiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let json_format = match query.format.as_deref() {
        None | Some("markdown") => false,
        Some("json") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "format",
                "format is markdown or json",
            ))
        }
    };
    let conversation = state
        .conversations
        .get(&user.user_id, &id)
        .await?
        .ok_or_else(not_found)?;
    let (body, content_type, extension) = if json_format {
        let value = conversation_json(&state, &user.user_id, &conversation).await?;
        (
            serde_json::to_string_pretty(&value).map_err(ApiError::internal)?,
            "application/json",
            "json",
        )
    } else {
        (
            markdown(&conversation),
            "text/markdown; charset=utf-8",
            "md",
        )
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let disposition = format!("attachment; filename=\"conversation-{id}.{extension}\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    Ok((headers, body).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The message this one answers (null: a new root, i.e. the first message edited).
    #[serde(default)]
    parent_id: Option<String>,
    /// The user's text; absent to regenerate the answer to `parent_id` (a user message).
    content: Option<String>,
}

fn chat_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    OpenAiError::new(status, "invalid_request_error", code, message).into_response()
}

/// The prompt of an answer under `user_message` (the conversation's system prompt, then the
/// path from the root; failed answers skipped).
fn prompt(conversation: &Conversation, path: &[&Message]) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(path.len() + 1);
    if let Some(system) = conversation
        .system_prompt
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        messages.push(ChatMessage::new(Role::System, system.to_string()));
    }
    for message in path {
        if message.role == "assistant" && message.finish_reason.as_deref() == Some("error") {
            continue;
        }
        let role = if message.role == "user" {
            Role::User
        } else {
            Role::Assistant
        };
        messages.push(ChatMessage::new(role, message.content.clone()));
    }
    messages
}

/// `POST /api/conversations/{id}/messages`.
#[utoipa::path(
    post,
    path = "/api/conversations/{conversation_id}/messages",
    tag = "chat",
    operation_id = "post_message",
    summary = "Send a message (or regenerate an answer) and stream the answer",
    description = "Server-sent events: `event: start` {user_message, assistant_message_id}, then OpenAI `chat.completion.chunk` objects, `event: receipt` (the receipt), `event: error` on a failure mid-answer, and `data: [DONE]`. Aborting the request stops the answer: what was delivered is billed and saved with finish_reason `cancelled`.",
    params(("conversation_id" = String, Path, description = "The conversation's id")),
    request_body = PostMessage,
    responses(
        (status = 200, description = "The answer as server-sent events", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad body or parent (`invalid_request`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 403, description = "The entitlement does not cover the model (`model_not_in_plan`, `plan_inactive`, `model_not_permitted`, `subscription_inactive`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such conversation of yours, or the model is gone (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 429, description = "The plan's or subscription's quota, or a rate limit (`insufficient_quota`, `rate_limit_exceeded` with Retry-After)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 503, description = "No node serves the model (`no_node_available`), or the gateway is busy (`server_overloaded`)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("session" = [])),
)]
pub async fn post_message(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let body: PostMessage = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return chat_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body must be {{\"parent_id\", \"content\"?}}: {e}"),
            )
        }
    };
    let conversation = match state.conversations.get(&user.user_id, &id).await {
        Ok(Some(conversation)) => conversation,
        Ok(None) => return chat_error(StatusCode::NOT_FOUND, "not_found", "no such conversation"),
        Err(e) => return OpenAiError::internal(e).into_response(),
    };
    let parent = match &body.parent_id {
        Some(parent_id) => match conversation.messages.iter().find(|m| &m.id == parent_id) {
            Some(parent) => Some(parent),
            None => {
                return chat_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "parent_id is not a message of this conversation",
                )
            }
        },
        None => None,
    };
    // The user message the answer goes under: new (content), or the parent (regenerate).
    let (user_message, is_new, path) = match &body.content {
        Some(content) => {
            if let Err(e) = aiforge_commands::conversations::check_message(content) {
                return chat_error(StatusCode::BAD_REQUEST, "invalid_request", e.message);
            }
            let message = Message {
                id: new_message_id(),
                parent_id: body.parent_id.clone(),
                role: "user".into(),
                content: content.clone(),
                created_at: String::new(),
                model: None,
                finish_reason: None,
                error: None,
                request_id: None,
            };
            let path: Vec<&Message> = match parent {
                Some(parent) => path_to(&conversation.messages, &parent.id),
                None => Vec::new(),
            };
            (message, true, prompt(&conversation, &path))
        }
        None => match parent {
            Some(parent) if parent.role == "user" => {
                let path = path_to(&conversation.messages, &parent.id);
                (parent.clone(), false, prompt(&conversation, &path))
            }
            _ => {
                return chat_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "to regenerate an answer, parent_id must name a user message",
                )
            }
        },
    };
    let mut messages = path;
    if is_new {
        messages.push(ChatMessage::new(Role::User, user_message.content.clone()));
    }
    let Some(entitlement) = session_entitlement(&state, &user.user_id, &conversation.entitlement)
    else {
        return chat_error(
            StatusCode::FORBIDDEN,
            "subscription_not_yours",
            "this conversation's API subscription is not one of yours",
        );
    };
    let (terms, model) =
        match crate::gateway::chat::resolve(&state, &entitlement, &conversation.model, None) {
            Ok(resolved) => resolved,
            Err(err) => return err.into_response(),
        };
    let request = ChatRequest {
        messages,
        max_tokens: conversation.max_tokens,
        temperature: conversation.temperature,
        top_p: None,
        seed: None,
        stop: Vec::new(),
        // The chat page shows the answer as it is written.
        whole: false,
    };
    let (finished_tx, finished_rx) = oneshot::channel();
    let Started {
        request_id,
        created,
        mut pieces,
        ..
    } = match crate::gateway::chat::start(
        &state,
        terms,
        &model,
        request,
        true,
        started,
        Some(finished_tx),
    )
    .await
    {
        Ok(started) => started,
        Err(response) => return response,
    };
    // A call refused by its node (no node, a bad request) is an error answer, and nothing is
    // saved: the first piece decides.
    let first = match pieces.recv().await {
        Some(Piece::Failed(err)) => return err.into_response(),
        None => return OpenAiError::internal("the call ended without an answer").into_response(),
        Some(piece) => piece,
    };
    let user_message = if is_new {
        match state
            .conversations
            .add_message(
                &user.user_id,
                &id,
                NewMessage {
                    id: user_message.id.clone(),
                    parent_id: user_message.parent_id.clone(),
                    role: "user",
                    content: user_message.content.clone(),
                    model: None,
                    finish_reason: None,
                    error: None,
                    request_id: None,
                },
                state.clock.now(),
            )
            .await
        {
            Ok(Some(message)) => message,
            Ok(None) => {
                return chat_error(StatusCode::NOT_FOUND, "not_found", "no such conversation")
            }
            Err(e) => return OpenAiError::internal(e).into_response(),
        }
    } else {
        user_message
    };
    let (events, receiver) = mpsc::channel(EVENTS_BUFFER);
    let answer = Answer {
        state: state.clone(),
        user_id: user.user_id.clone(),
        conversation_id: id,
        model: conversation.model.clone(),
        request_id,
        created,
        user_message,
        assistant_id: new_message_id(),
    };
    tokio::spawn(answer.run(first, pieces, finished_rx, events));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(event), receiver))
    });
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    (headers, Sse::new(stream)).into_response()
}

/// One answer being streamed and saved.
struct Answer {
    state: AppState,
    user_id: String,
    conversation_id: String,
    model: String,
    request_id: String,
    created: i64,
    user_message: Message,
    assistant_id: String,
}

impl Answer {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        Event::default().data(
            crate::gateway::chat::chunk(
                &self.request_id,
                self.created,
                &self.model,
                delta,
                finish_reason,
                false,
            )
            .to_string(),
        )
    }

    /// Forwards the call's pieces to the client while it listens; then saves the answer (what
    /// was delivered, however the call ended) and, to a client still there, sends its receipt.
    async fn run(
        self,
        first: Piece,
        mut pieces: mpsc::Receiver<Piece>,
        finished: oneshot::Receiver<Finished>,
        events: mpsc::Sender<Event>,
    ) {
        let start = json!({
            "user_message": self.user_message,
            "assistant_message_id": self.assistant_id,
        });
        let mut listening = events
            .send(Event::default().event("start").data(start.to_string()))
            .await
            .is_ok()
            && events
                .send(self.chunk(json!({"role": "assistant", "content": ""}), None))
                .await
                .is_ok();
        let mut content = String::new();
        let mut next = Some(first);
        while listening {
            let piece = match next.take() {
                Some(piece) => piece,
                None => match pieces.recv().await {
                    Some(piece) => piece,
                    None => break,
                },
            };
            match piece {
                Piece::Text(text) => {
                    content.push_str(&text);
                    listening = events
                        .send(self.chunk(json!({"content": text}), None))
                        .await
                        .is_ok();
                }
                Piece::End { finish_reason, .. } => {
                    let name = crate::gateway::chat::finish_reason_name(finish_reason);
                    listening = events.send(self.chunk(json!({}), Some(name))).await.is_ok();
                    break;
                }
                Piece::Failed(_) => break,
            }
        }
        if !listening {
            // The client went away: the call stops at its next piece and meters what it
            // delivered (text received here but not yet sent is billed, so it is saved too).
            while let Ok(Piece::Text(text)) = pieces.try_recv() {
                content.push_str(&text);
            }
            drop(pieces);
        }
        let ended = finished.await.unwrap_or_else(|_| {
            Finished::NotMetered(OpenAiError::internal("the call ended without a report"))
        });
        let (finish_reason, error, metered, failure) = match &ended {
            Finished::Metered {
                finish_reason,
                client_gone,
                failure,
                ..
            } => {
                let reason = if failure.is_some() {
                    "error"
                } else if *client_gone || !listening || *finish_reason == FinishReason::Cancelled {
                    "cancelled"
                } else if *finish_reason == FinishReason::Length {
                    "length"
                } else {
                    "stop"
                };
                (reason, failure.clone(), true, failure.clone())
            }
            Finished::NotMetered(err) => ("error", Some(err.clone()), false, Some(err.clone())),
        };
        let saved = self
            .state
            .conversations
            .add_message(
                &self.user_id,
                &self.conversation_id,
                NewMessage {
                    id: self.assistant_id.clone(),
                    parent_id: Some(self.user_message.id.clone()),
                    role: "assistant",
                    content,
                    model: Some(self.model.clone()),
                    finish_reason: Some(finish_reason.to_string()),
                    error: error.map(|e| MessageError {
                        code: e.code.to_string(),
                        message: e.message,
                    }),
                    request_id: metered.then(|| self.request_id.clone()),
                },
                self.state.clock.now(),
            )
            .await;
        if let Err(e) = &saved {
            tracing::error!(error = %e, request_id = %self.request_id, "an answer could not be saved");
        }
        if !listening {
            return;
        }
        if let Some(failure) = failure {
            let _ = events
                .send(
                    Event::default()
                        .event("error")
                        .data(failure.body().to_string()),
                )
                .await;
        }
        if metered {
            match receipt(&self.state, &self.user_id, &self.request_id).await {
                Ok(Some(receipt)) => {
                    if let Ok(data) = serde_json::to_string(&receipt) {
                        let _ = events
                            .send(Event::default().event("receipt").data(data))
                            .await;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = ?e.message, "a receipt could not be read"),
            }
        }
        let _ = events.send(Event::default().data("[DONE]")).await;
    }
}
