//! A stand-in OpenAI-compatible server for gateway benchmarks and for testing `UpstreamEngine`:
//! `POST /v1/chat/completions` (and `/chat/completions`) answers a fixed reply, streamed as
//! server-sent events when `stream: true`, with usage. Its "tokens" are the reply's words (each
//! with its leading space) and the prompt's whitespace-separated words: a deterministic count
//! for checking that usage passes through, not a real tokenizer. It generates nothing.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

pub const REPLY_DEFAULT: &str = "Hello! This is the mock upstream speaking. It streams a fixed \
reply, one word per chunk, so that gateways can be measured without a model.";

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub reply: String,
    pub model: String,
    /// Wait before answering (the headers).
    pub delay: Duration,
    /// Wait between streamed chunks.
    pub chunk_delay: Duration,
    /// Require `Authorization: Bearer {key}`.
    pub api_key: Option<String>,
    /// Answer every completion with this status and an OpenAI-shaped error.
    pub fail_status: Option<u16>,
    /// Leave out the usage chunk even when asked for it (an upstream without `include_usage`).
    pub omit_usage: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            reply: REPLY_DEFAULT.into(),
            model: "mock".into(),
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            api_key: None,
            fail_status: None,
            omit_usage: false,
        }
    }
}

struct MockState {
    config: MockConfig,
    next_id: AtomicU64,
}

pub fn router(config: MockConfig) -> Router {
    let state = Arc::new(MockState {
        config,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .with_state(state)
}

/// Serves until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, config: MockConfig) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Streamed chunks are small: without TCP_NODELAY, Nagle's algorithm holds each one back
    // until the previous is acknowledged (a delayed ACK: ~40 ms a stall).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(config)).await
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response()
}

async fn models(State(state): State<Arc<MockState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": state.config.model, "object": "model", "created": 0, "owned_by": "aiforge-mock"}
    ]}))
}

/// The reply cut into "tokens": each word with the whitespace before it.
fn reply_pieces(reply: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in reply.chars() {
        if c.is_whitespace() && in_word {
            pieces.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

fn prompt_words(messages: &[Message]) -> u32 {
    let words: usize = messages
        .iter()
        .map(|m| match &m.content {
            Value::String(s) => s.split_whitespace().count(),
            other => other.to_string().split_whitespace().count(),
        })
        .sum();
    u32::try_from(words).unwrap_or(u32::MAX)
}

async fn chat_completions(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = &state.config;
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    if let Some(key) = &config.api_key {
        let expected = format!("Bearer {key}");
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Incorrect API key provided.",
            );
        }
    }
    if let Some(status) = config.fail_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(
            status,
            "server_error",
            "The mock upstream was told to fail.",
        );
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("We could not parse the JSON body of your request: {e}"),
            )
        }
    };
    if request.messages.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "'messages' must contain at least one message.",
        );
    }
    let mut pieces = reply_pieces(&config.reply);
    let limit = request.max_completion_tokens.or(request.max_tokens);
    let finish_reason = match limit {
        Some(n) if (n as usize) < pieces.len() => {
            pieces.truncate(n as usize);
            "length"
        }
        _ => "stop",
    };
    let prompt_tokens = prompt_words(&request.messages);
    let completion_tokens = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens.saturating_add(completion_tokens),
    });
    let id = format!(
        "chatcmpl-mock-{}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = request.model.unwrap_or_else(|| config.model.clone());

    if !request.stream {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": pieces.concat()},
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        }))
        .into_response();
    }

    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    events.push(chunk(json!({}), json!(finish_reason)));
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    if include_usage && !config.omit_usage {
        events.push(
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage,
            })
            .to_string(),
        );
    }
    events.push("[DONE]".into());
    let chunk_delay = config.chunk_delay;
    let stream =
        futures::stream::iter(events.into_iter().enumerate()).then(move |(i, data)| async move {
            if i > 0 && !chunk_delay.is_zero() {
                tokio::time::sleep(chunk_delay).await;
            }
            Ok::<_, Infallible>(Event::default().data(data))
        });
    Sse::new(stream).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_pieces_keep_the_space_before_each_word() {
        assert_eq!(reply_pieces("Hi there  you"), vec!["Hi", " there", "  you"]);
        assert_eq!(reply_pieces("Hi there  you").concat(), "Hi there  you");
    }
}
