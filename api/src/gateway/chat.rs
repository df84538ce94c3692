//! `POST /api/v1/chat/completions` (and the same under `/api/v1/services/{service_id}/`):
//! OpenAI's request and response shapes, non-streaming and server-sent events.
//!
//! Order of a call: key -> subscription (401/403) -> request validity (400) -> model (404/403)
//! -> rate limits, quota and credit (429, before anything reaches a node) -> node (503 when none)
//! -> generation -> metering -> the end of the response. The generation and its metering run in
//! their own task, so a client that goes away cannot stop a call from being metered: it is
//! billed for what was delivered up to then.
//!
//! One pipeline for every caller, parameterised by the caller's [`Entitlement`] (an API
//! subscription's key, a platform key or a browser session under the user's plan, or a session
//! naming one of the user's subscriptions): [`handle`] for OpenAI's shapes, [`start`] for a
//! caller that shapes the answer itself (the web chat, `routes/conversations.rs`).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use aiforge_domain::usage::{call_cost, ApiCallMetered, CallOutcome};
use aiforge_inference::{
    ChatMessage, ChatRequest, Completion, EngineError, FinishReason, Role, Usage,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::Stream;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use aiforge_commands::gateway::index::{lock, ModelEntry};
use aiforge_commands::gateway::{AdmissionError, Admitted, CallTerms};
use aiforge_commands::stages;
use aiforge_domain::admission::{prompt_tokens_bound, CallEstimate, Refusal};
use aiforge_domain::usage::CallEntitlement;

use super::nodes::{ModelTarget, NodeError};
use super::Entitlement;
use crate::routes::openai::{ApiKeyAuth, OpenAiError};
use crate::AppState;

/// Deltas buffered between the node and the client (small: a client that stops reading soon
/// stops the generation).
const DELTA_BUFFER: usize = 16;

/// Fields of OpenAI's chat request that are accepted and have no effect here (some are checked
/// first: `n` must be 1, `tools` empty, `response_format` text, `modalities` text only). The
/// list follows OpenAI's API reference for `POST /v1/chat/completions` (checked December 2025:
/// `prompt_cache_key`, `prompt_cache_retention`, `safety_identifier`, `verbosity`, `audio`,
/// `web_search_options` are the newest); a field it documents belongs here or among the
/// understood ones, and a field it does not know stays a 400.
pub(crate) const IGNORED_FIELDS: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "metadata",
    "store",
    "parallel_tool_calls",
    "service_tier",
    "user",
    "n",
    "response_format",
    "stream_options",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "verbosity",
    "web_search_options",
];

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> OpenAiError {
    OpenAiError {
        param,
        ..OpenAiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// A request after validation.
pub(crate) struct Parsed {
    model: String,
    request: ChatRequest,
    stream: bool,
    include_usage: bool,
}

fn message_text(content: &Value) -> Result<String, OpenAiError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some(kind), _) => {
                        return Err(invalid(
                            format!("content parts of type '{kind}' are not supported by this model; only 'text'"),
                            Some("messages"),
                        ))
                    }
                    _ => return Err(invalid("every content part needs a type", Some("messages"))),
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(
            "message content must be a string or an array of content parts",
            Some("messages"),
        )),
    }
}

pub(crate) fn parse(body: &[u8]) -> Result<Parsed, OpenAiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(invalid("the request body must be a JSON object", None));
    };
    for name in fields.keys() {
        let known = [
            "model",
            "messages",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "stop",
            "seed",
            "stream",
        ];
        if !known.contains(&name.as_str()) && !IGNORED_FIELDS.contains(&name.as_str()) {
            return Err(invalid(
                format!(
                    "Unrecognized request argument supplied: {}",
                    crate::error::excerpt(name)
                ),
                None,
            ));
        }
    }
    let get = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let model = get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("you must provide a model parameter", Some("model")))?
        .to_string();
    if let Some(n) = get("n") {
        if n.as_u64() != Some(1) {
            return Err(invalid("only n=1 is supported", Some("n")));
        }
    }
    for name in ["tools", "functions"] {
        if get(name)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err(invalid(
                format!("'{name}' is not supported by this model"),
                Some("tools"),
            ));
        }
    }
    if let Some(format) = get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(kind @ ("json_object" | "json_schema")) => {
                return Err(invalid(
                    format!("response_format {{\"type\": \"{kind}\"}} is not supported by this model; only {{\"type\": \"text\"}}"),
                    Some("response_format"),
                ))
            }
            _ => {
                return Err(invalid(
                    "response_format must be {\"type\": \"text\"} (the only format this model supports)",
                    Some("response_format"),
                ))
            }
        }
    }
    if let Some(modalities) = get("modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m.as_str() == Some("text")));
        if !text_only {
            return Err(invalid(
                "this model answers in text only: modalities must be [\"text\"]",
                Some("modalities"),
            ));
        }
    }
    let raw_messages = get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages must be an array", Some("messages")))?;
    if raw_messages.is_empty() {
        return Err(invalid("messages must not be empty", Some("messages")));
    }
    let mut messages = Vec::with_capacity(raw_messages.len());
    for message in raw_messages {
        let role = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(invalid(
                    format!("messages with role '{other}' are not supported by this model"),
                    Some("messages"),
                ))
            }
            None => return Err(invalid("every message needs a role", Some("messages"))),
        };
        let content = message_text(message.get("content").unwrap_or(&Value::Null))?;
        messages.push(ChatMessage::new(role, content));
    }
    let uint = |name: &'static str| -> Result<Option<u32>, OpenAiError> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} must be a positive integer"), Some(name))),
        }
    };
    let max_tokens = uint("max_completion_tokens")?.or(uint("max_tokens")?);
    let float = |name: &'static str| -> Result<Option<f64>, OpenAiError> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{name} must be a number"), Some(name))),
        }
    };
    let temperature = float("temperature")?;
    if temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(invalid(
            "temperature must be between 0 and 2",
            Some("temperature"),
        ));
    }
    let top_p = float("top_p")?;
    if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
        return Err(invalid(
            "top_p must be greater than 0 and at most 1",
            Some("top_p"),
        ));
    }
    let stop = match get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop must be a string or an array of strings", Some("stop")))?,
        Some(_) => {
            return Err(invalid(
                "stop must be a string or an array of strings",
                Some("stop"),
            ))
        }
    };
    if stop.len() > aiforge_inference::engine::STOP_SEQUENCES_MAX
        || stop
            .iter()
            .any(|s| s.is_empty() || s.len() > aiforge_inference::engine::STOP_SEQUENCE_BYTES_MAX)
    {
        return Err(invalid(
            format!(
                "stop takes at most {} non-empty strings of at most {} bytes each",
                aiforge_inference::engine::STOP_SEQUENCES_MAX,
                aiforge_inference::engine::STOP_SEQUENCE_BYTES_MAX
            ),
            Some("stop"),
        ));
    }
    let seed = match get("seed") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .map(|s| s as u64)
                .ok_or_else(|| invalid("seed must be an integer", Some("seed")))?,
        ),
    };
    let stream = match get("stream") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid("stream must be a boolean", Some("stream")))?,
    };
    let include_usage = match get("stream_options") {
        None => false,
        Some(options) => {
            if !stream {
                return Err(invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                ));
            }
            serde_json::from_value::<StreamOptions>(options.clone())
                .map_err(|e| invalid(format!("stream_options: {e}"), Some("stream_options")))?
                .include_usage
        }
    };
    let request = ChatRequest {
        messages,
        max_tokens,
        temperature,
        top_p,
        seed,
        stop,
        // A non-streamed caller reads the answer only whole: an upstream is asked for it so.
        whole: !stream,
    };
    Ok(Parsed {
        model,
        request,
        stream,
        include_usage,
    })
}

fn rate_limited(message: String, code: &'static str, retry_after: Option<Duration>) -> Response {
    let mut response = OpenAiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        if code == "insufficient_quota" {
            "insufficient_quota"
        } else {
            "requests"
        },
        code,
        message,
    )
    .into_response();
    if let Some(wait) = retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

/// Admission's answer in OpenAI's shape: 429 with `Retry-After` for a rate window,
/// `insufficient_quota` for a quota or the credit, a generic 503 when the counters are out of
/// reach (the cause is logged).
pub fn refused(err: AdmissionError, entitlement: &CallEntitlement) -> Response {
    let whose = match entitlement {
        CallEntitlement::Subscription => "this subscription's".to_string(),
        CallEntitlement::Plan { plan, .. } => format!("your {} plan's", plan.plan().name),
    };
    match err {
        AdmissionError::Refused(Refusal::RequestQuota { max }) => rate_limited(
            format!("You exceeded {whose} monthly quota of {max} requests."),
            "insufficient_quota",
            None,
        ),
        AdmissionError::Refused(Refusal::TokenQuota { max }) => rate_limited(
            format!("You exceeded {whose} monthly quota of {max} tokens (or this call's prompt needs more than is left)."),
            "insufficient_quota",
            None,
        ),
        AdmissionError::Refused(Refusal::NoCredit) => rate_limited(
            "This key has no prepaid credit left for this call. Add credit to keep using it.".into(),
            "insufficient_quota",
            None,
        ),
        AdmissionError::Refused(Refusal::RateLimited {
            window,
            retry_after_micros,
        }) => {
            let wait = Duration::from_micros(u64::try_from(retry_after_micros).unwrap_or(0));
            rate_limited(
                format!(
                    "Rate limit reached: this subscriber's requests per {window} are used up. Try again in {:.1}s.",
                    wait.as_secs_f64()
                ),
                "rate_limit_exceeded",
                Some(wait),
            )
        }
        AdmissionError::Store(e) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "admission could not read its counters");
            OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "admission_unavailable",
                "The gateway cannot check this key's limits right now. Please retry.",
            )
            .into_response()
        }
    }
}

/// What the call task sends to the response.
pub enum Piece {
    Text(String),
    /// Generation ended and its usage is recorded.
    End {
        finish_reason: FinishReason,
        usage: Usage,
    },
    /// Generation or metering failed; the response ends with this error.
    Failed(OpenAiError),
}

fn engine_error(err: NodeError) -> OpenAiError {
    match err {
        NodeError::NoNode => OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no_node_available",
            "No compute node serves this model right now. Please retry later.",
        ),
        NodeError::Engine {
            source: EngineError::InvalidRequest(message),
            ..
        } => invalid(message, None),
        NodeError::Engine {
            source: err @ EngineError::ContextLengthExceeded { .. },
            ..
        } => OpenAiError {
            param: Some("messages"),
            ..OpenAiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
                err.to_string(),
            )
        },
        NodeError::Engine { node_id, source } => {
            tracing::warn!(node = %node_id, error = %source, "generation failed");
            OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "node_error",
                "The compute node failed to generate an answer.",
            )
        }
        NodeError::Lost { node_id, reason } => {
            tracing::warn!(node = %node_id, %reason, "node lost mid-generation");
            OpenAiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "node_lost",
                "The compute node stopped answering mid-generation.",
            )
        }
    }
}

/// How a call ended, told to a caller that must know even when its client went away (the
/// web chat saves what was delivered).
#[derive(Debug, Clone)]
pub enum Finished {
    /// Metered: the usage event is durable.
    Metered {
        finish_reason: FinishReason,
        usage: Usage,
        /// The call's reader went away before the end.
        client_gone: bool,
        /// A failure mid-answer (what was delivered is billed).
        failure: Option<OpenAiError>,
    },
    /// Nothing was metered: the call failed before anything was delivered, or its metering
    /// could not be recorded.
    NotMetered(OpenAiError),
}

/// One admitted call, for its task.
struct Call {
    state: AppState,
    admitted: Admitted,
    target: ModelTarget,
    request_id: String,
    request: ChatRequest,
    streamed: bool,
    started: Instant,
    finished: Option<tokio::sync::oneshot::Sender<Finished>>,
}

/// Runs one call: generation on a node, then metering; sends what happens to `out` (and how it
/// ended to `finished`, when asked).
async fn run_call(call: Call, out: mpsc::Sender<Piece>) {
    let Call {
        state,
        admitted,
        target,
        request_id,
        request,
        streamed,
        started,
        finished,
    } = call;
    let tell = |report: Finished| {
        if let Some(finished) = finished {
            let _ = finished.send(report);
        }
    };
    let (deltas, mut received) = mpsc::channel(DELTA_BUFFER);
    let generating = Instant::now();
    let nodes = state.gateway.nodes.clone();
    let generation = tokio::spawn({
        let target = target.clone();
        async move { nodes.generate(&target, request, deltas).await }
    });
    let mut delivered_pieces = 0u32;
    let mut client_gone = false;
    while let Some(delta) = received.recv().await {
        if out.send(Piece::Text(delta.text)).await.is_err() {
            client_gone = true;
            break;
        }
        delivered_pieces += 1;
    }
    // Dropping the receiver cancels a generation the client no longer reads.
    drop(received);
    let result = match generation.await {
        Ok(result) => result,
        Err(join) => Err(NodeError::Lost {
            node_id: "local".into(),
            reason: join.to_string(),
        }),
    };
    stages::GENERATE.since(generating);
    let (node_id, completion, failure) = match result {
        Ok(done) => (done.node_id, done.completion, None),
        Err(err) => {
            let node_id = match &err {
                NodeError::Engine { node_id, .. } | NodeError::Lost { node_id, .. } => {
                    node_id.clone()
                }
                NodeError::NoNode => String::new(),
            };
            if delivered_pieces == 0 {
                // Nothing reached the client: nothing to bill, the call is not counted.
                state
                    .gateway
                    .admission
                    .release(&admitted, &request_id)
                    .await;
                let error = engine_error(err);
                tell(Finished::NotMetered(error.clone()));
                let _ = out.send(Piece::Failed(error)).await;
                return;
            }
            // Failed mid-answer: bill what was delivered, one token per delta (the node's own
            // count died with it), and say the count is not exact.
            let completion = Completion {
                finish_reason: FinishReason::Cancelled,
                usage: Usage {
                    prompt_tokens: 0,
                    completion_tokens: delivered_pieces,
                },
                usage_exact: false,
            };
            (node_id, completion, Some(engine_error(err)))
        }
    };
    let outcome = if failure.is_some() {
        CallOutcome::NodeFailed
    } else if client_gone || completion.finish_reason == FinishReason::Cancelled {
        CallOutcome::ClientDisconnected
    } else if completion.finish_reason == FinishReason::Length {
        CallOutcome::Length
    } else {
        CallOutcome::Completed
    };
    // Priced against the usage admission assumed (settled plus what other calls held), so two
    // calls in flight never spend the same hybrid allowance.
    let before = admitted.hold.before;
    let usage = completion.usage;
    let cost = match call_cost(
        &admitted.pricing,
        before,
        usage.prompt_tokens,
        usage.completion_tokens,
    ) {
        Ok(cost) => cost,
        Err(err) => {
            let error = OpenAiError::internal(err);
            tell(Finished::NotMetered(error.clone()));
            let _ = out.send(Piece::Failed(error)).await;
            return;
        }
    };
    let call = ApiCallMetered {
        request_id,
        subscription_id: admitted.subscription.subscription_id.clone(),
        consumer: admitted.consumer.clone(),
        service_id: admitted.service_id.clone(),
        model_id: admitted.model_id.clone(),
        node_id,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        usage_exact: completion.usage_exact,
        cost,
        pricing_version: admitted.pricing_version,
        streamed,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        outcome,
        at: state.clock.now(),
        entitlement: admitted.entitlement.clone(),
    };
    let gateway = &state.gateway;
    let settlement = gateway
        .admission
        .is_shared()
        .then(|| admitted.settlement(&call));
    let metering = Instant::now();
    let recorded = gateway
        .recorder
        .record_settling(call.clone(), settlement)
        .await;
    stages::METER.since(metering);
    match &recorded {
        Ok(()) => gateway.admission.settled(&admitted, &call),
        // Not metered: the call is not billed, so its hold goes and it counts toward no limit
        // here. Should the commit have landed after all (an ambiguous error), the key index
        // counts it when it reads the event, as it does for another instance's calls.
        Err(_) => gateway.admission.release(&admitted, &call.request_id).await,
    }
    let piece = match (recorded, failure) {
        (Err(err), _) => {
            let error = OpenAiError::internal(err);
            tell(Finished::NotMetered(error.clone()));
            Piece::Failed(error)
        }
        (Ok(()), failure) => {
            tell(Finished::Metered {
                finish_reason: completion.finish_reason,
                usage,
                client_gone,
                failure: failure.clone(),
            });
            match failure {
                Some(failure) => Piece::Failed(failure),
                None => Piece::End {
                    finish_reason: completion.finish_reason,
                    usage,
                },
            }
        }
    };
    let _ = out.send(piece).await;
}

pub fn finish_reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens(),
    })
}

/// `POST /api/v1/chat/completions`.
#[utoipa::path(
    post,
    path = "/api/v1/chat/completions",
    tag = "openai",
    operation_id = "create_chat_completion",
    summary = "OpenAI: create a chat completion",
    request_body = crate::openapi::schemas::ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent events of `chat.completion.chunk` objects ending with `data: [DONE]` (a failure mid-stream is sent as an error event)", content((crate::openapi::schemas::ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "An invalid request (`invalid_request`, `context_length_exceeded`), JSON parse errors included", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 403, description = "The key is not for this model or service, or not active", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 429, description = "A rate limit, the quota or the credit is spent (`rate_limit_exceeded`, `insufficient_quota`); Retry-After when waiting helps", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 502, description = "The node failed mid-generation (`node_error`, `node_lost`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 503, description = "No node serves the model now (`no_node_available`), this instance is at `CALLS_IN_FLIGHT_MAX` (`server_overloaded`), or the limits store is out of reach (`admission_unavailable`)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn completions(State(state): State<AppState>, auth: ApiKeyAuth, body: Bytes) -> Response {
    handle(state, auth.entitlement, None, body).await
}

/// `POST /api/v1/services/{service_id}/chat/completions`.
#[utoipa::path(
    post,
    path = "/api/v1/services/{service_id}/chat/completions",
    tag = "openai",
    operation_id = "create_service_chat_completion",
    summary = "OpenAI (service base URL): create a chat completion",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
    ),
    request_body = crate::openapi::schemas::ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent events of `chat.completion.chunk` objects ending with `data: [DONE]` (a failure mid-stream is sent as an error event)", content((crate::openapi::schemas::ChatCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "An invalid request (`invalid_request`, `context_length_exceeded`), JSON parse errors included", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 403, description = "The key is not for this model or service, or not active", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 429, description = "A rate limit, the quota or the credit is spent (`rate_limit_exceeded`, `insufficient_quota`); Retry-After when waiting helps", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 502, description = "The node failed mid-generation (`node_error`, `node_lost`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 503, description = "No node serves the model now (`no_node_available`), this instance is at `CALLS_IN_FLIGHT_MAX` (`server_overloaded`), or the limits store is out of reach (`admission_unavailable`)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn service_completions(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    Path(service_id): Path<String>,
    body: Bytes,
) -> Response {
    handle(state, auth.entitlement, Some(service_id), body).await
}

/// The terms `entitlement` gives for `model_id` (under the service-scoped base URL, only that
/// service's): 404 for a model that does not exist, 403 for one the entitlement does not cover.
pub fn resolve(
    state: &AppState,
    entitlement: &Entitlement,
    model_id: &str,
    service_scope: Option<&str>,
) -> Result<(CallTerms, ModelEntry), OpenAiError> {
    let index = &state.gateway.index;
    if let Entitlement::Subscription(subscription) = entitlement {
        let key_service = lock(subscription).service_id.clone();
        if service_scope.is_some_and(|scope| scope != key_service) {
            return Err(crate::routes::openai::service_not_permitted());
        }
    }
    let model = index
        .model(model_id)
        .ok_or_else(|| crate::routes::openai::model_not_found(model_id))?;
    let terms = match entitlement {
        Entitlement::Subscription(subscription) => {
            crate::routes::openai::check_access(subscription, state.clock.now())?;
            let key_model = lock(subscription).model_id.clone();
            if model_id != key_model {
                return Err(crate::routes::openai::model_not_permitted(model_id));
            }
            CallTerms::subscription(index, subscription)
        }
        Entitlement::Plan { user_id } => {
            let grant = index
                .plan_of(user_id, state.clock.now())
                .ok_or_else(crate::routes::openai::no_active_plan)?;
            let included = index
                .plan_model(model_id)
                .filter(|m| service_scope.is_none_or(|scope| scope == m.service_id))
                .ok_or_else(|| crate::routes::openai::model_not_in_plan(model_id))?;
            CallTerms::plan(index, &grant, &included)
        }
    };
    Ok((terms, model))
}

/// A call under way: its id, when it was made, and its pieces as they come.
pub struct Started {
    pub request_id: String,
    pub created: i64,
    pub entitlement: CallEntitlement,
    pub pieces: mpsc::Receiver<Piece>,
}

/// Admits a call under `terms` and starts it (the pipeline after parsing and resolution):
/// the error answer when it cannot start (503 overloaded, 429 limits).
pub async fn start(
    state: &AppState,
    terms: CallTerms,
    model: &ModelEntry,
    mut request: ChatRequest,
    streamed: bool,
    started: Instant,
    finished: Option<tokio::sync::oneshot::Sender<Finished>>,
) -> Result<Started, Response> {
    let Ok(permit) = state.gateway.calls.clone().try_acquire_owned() else {
        return Err(OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "server_overloaded",
            format!(
                "This gateway is generating {} answers already. Please retry shortly.",
                super::CALLS_IN_FLIGHT_MAX
            ),
        )
        .into_response());
    };
    let request_id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let estimate = CallEstimate {
        prompt_tokens_max: prompt_tokens_bound(
            request
                .messages
                .iter()
                .map(|m| m.content.len() + m.role.as_str().len()),
        ),
        completion_tokens: request.max_tokens,
    };
    let entitlement = terms.entitlement.clone();
    let model_id = terms.model_id.clone();
    let admitting = Instant::now();
    let admitted = state
        .gateway
        .admission
        .admit_under(terms, &request_id, estimate)
        .await;
    stages::ADMIT.since(admitting);
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(err) => return Err(refused(err, &entitlement)),
    };
    if let Some(cap) = admitted.hold.completion_tokens_max {
        request.max_tokens = Some(cap);
    }
    let created = state.clock.now().unix_timestamp();
    let target = ModelTarget {
        model_id,
        sha256: model.sha256.clone(),
    };
    let (out, pieces) = mpsc::channel(DELTA_BUFFER);
    let call = Call {
        state: state.clone(),
        admitted,
        target,
        request_id: request_id.clone(),
        request,
        streamed,
        started,
        finished,
    };
    tokio::spawn(async move {
        run_call(call, out).await;
        drop(permit);
    });
    Ok(Started {
        request_id,
        created,
        entitlement,
        pieces,
    })
}

/// The OpenAI-compatible pipeline for a caller with `entitlement` (under a service's base URL
/// when `service_scope` names one): parse, resolve the model, admit, generate, answer in
/// OpenAI's shapes.
pub async fn handle(
    state: AppState,
    entitlement: Entitlement,
    service_scope: Option<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let parsed = parse(&body);
    stages::PARSE.since(started);
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(err) => return err.into_response(),
    };
    let resolving = Instant::now();
    let resolved = resolve(
        &state,
        &entitlement,
        &parsed.model,
        service_scope.as_deref(),
    );
    stages::RESOLVE.since(resolving);
    let (terms, model) = match resolved {
        Ok(resolved) => resolved,
        Err(err) => return err.into_response(),
    };
    let Started {
        request_id,
        created,
        mut pieces,
        ..
    } = match start(
        &state,
        terms,
        &model,
        parsed.request,
        parsed.stream,
        started,
        None,
    )
    .await
    {
        Ok(started) => started,
        Err(response) => return response,
    };
    if !parsed.stream {
        let mut text = String::new();
        while let Some(piece) = pieces.recv().await {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::Failed(err) => return err.into_response(),
                Piece::End {
                    finish_reason,
                    usage,
                } => {
                    let response = Json(json!({
                        "id": request_id,
                        "object": "chat.completion",
                        "created": created,
                        "model": parsed.model,
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": null},
                            "logprobs": null,
                            "finish_reason": finish_reason_name(finish_reason),
                        }],
                        "usage": usage_json(usage),
                        "system_fingerprint": null,
                    }))
                    .into_response();
                    stages::CALL.since(started);
                    return response;
                }
            }
        }
        return OpenAiError::internal("the call ended without an answer").into_response();
    }
    // Streaming: the first piece decides between an error status and a 200 event stream, so a
    // request refused by the node (400, 503) is an HTTP error as OpenAI's are.
    let first = pieces.recv().await;
    let first = match first {
        Some(Piece::Failed(err)) => return err.into_response(),
        None => return OpenAiError::internal("the call ended without an answer").into_response(),
        Some(piece) => piece,
    };
    let stream = sse_stream(
        request_id,
        created,
        parsed.model,
        parsed.include_usage,
        first,
        pieces,
    );
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    (headers, Sse::new(stream)).into_response()
}

/// One `chat.completion.chunk` object (the web chat streams the same).
pub fn chunk(
    id: &str,
    created: i64,
    model: &str,
    delta: Value,
    finish_reason: Option<&str>,
    include_usage: bool,
) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(id));
    object.insert("object".into(), json!("chat.completion.chunk"));
    object.insert("created".into(), json!(created));
    object.insert("model".into(), json!(model));
    object.insert("system_fingerprint".into(), Value::Null);
    object.insert(
        "choices".into(),
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]),
    );
    if include_usage {
        object.insert("usage".into(), Value::Null);
    }
    Value::Object(object)
}

struct SseState {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    first: Option<Piece>,
    pieces: mpsc::Receiver<Piece>,
    pending: std::collections::VecDeque<Event>,
    done: bool,
}

impl SseState {
    fn data(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        Event::default().data(
            chunk(
                &self.id,
                self.created,
                &self.model,
                delta,
                finish_reason,
                self.include_usage,
            )
            .to_string(),
        )
    }

    fn push(&mut self, piece: Piece) {
        match piece {
            Piece::Text(text) => {
                let event = self.data(json!({"content": text}), None);
                self.pending.push_back(event);
            }
            Piece::Failed(err) => {
                self.pending
                    .push_back(Event::default().data(err.body().to_string()));
                self.done = true;
            }
            Piece::End {
                finish_reason,
                usage,
            } => {
                let event = self.data(json!({}), Some(finish_reason_name(finish_reason)));
                self.pending.push_back(event);
                if self.include_usage {
                    let usage = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "system_fingerprint": null,
                        "choices": [],
                        "usage": usage_json(usage),
                    });
                    self.pending
                        .push_back(Event::default().data(usage.to_string()));
                }
                self.pending.push_back(Event::default().data("[DONE]"));
                self.done = true;
            }
        }
    }
}

/// The event stream of one call. Dropping it (the client went away) drops the receiver of the
/// call's pieces, which is how the call task learns to stop generating.
fn sse_stream(
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    first: Piece,
    pieces: mpsc::Receiver<Piece>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut state = SseState {
        id,
        created,
        model,
        include_usage,
        first: Some(first),
        pieces,
        pending: std::collections::VecDeque::new(),
        done: false,
    };
    let opening = state.data(json!({"role": "assistant", "content": ""}), None);
    state.pending.push_back(opening);
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.done {
                return None;
            }
            let piece = match state.first.take() {
                Some(piece) => Some(piece),
                None => state.pieces.recv().await,
            };
            match piece {
                Some(piece) => state.push(piece),
                None => return None,
            }
        }
    })
}
