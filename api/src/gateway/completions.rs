//! `POST /api/v1/completions` (and the same under `/api/v1/services/{service_id}/`): OpenAI's
//! legacy text completions, as code assistants' autocomplete calls them (Continue's OpenAI
//! provider sends `model`, `prompt`, `max_tokens`, `stop`, `stream`, sampling and penalties).
//!
//! A completion is a chat call: the request is translated into a chat request with the prompt as
//! the one user message and sent down the chat pipeline itself (`chat::completions`), so keys,
//! admission (limits, quota, credit), the node, metering and every error are exactly the chat
//! route's. Only the shapes differ: the answer is re-shaped into `text_completion` objects, the
//! stream event by event.

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::chat;
use crate::routes::openai::{ApiKeyAuth, OpenAiError};
use crate::AppState;

/// OpenAI's default `max_tokens` for a legacy completion.
pub const COMPLETION_TOKENS_DEFAULT: u64 = 16;
/// The largest non-streamed chat answer re-shaped here (the chat route's body is bounded by its
/// `max_tokens`; this bounds the copy).
const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Fields of the chat request a completion passes on as they are.
const PASSED_ON: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "user",
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

/// The chat request a completion request stands for, or why there is none.
pub(crate) fn chat_request(body: &[u8]) -> Result<Value, OpenAiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        invalid(
            format!(
                "We could not parse the JSON body of your request: {}",
                crate::error::excerpt(&e.to_string())
            ),
            None,
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(invalid("the request body must be a JSON object", None));
    };
    let mut chat = Map::new();
    for (name, value) in &fields {
        match name.as_str() {
            "prompt" => {}
            // Accepted when they ask for nothing this route does not do.
            "echo" if value.is_null() || *value == json!(false) => {}
            "best_of" if value.is_null() || *value == json!(1) => {}
            "logprobs" if value.is_null() => {}
            "suffix" if value.is_null() || *value == json!("") => {}
            "echo" | "best_of" | "logprobs" | "suffix" => {
                return Err(invalid(
                    format!("'{name}' is not supported by this model"),
                    Some(match name.as_str() {
                        "echo" => "echo",
                        "best_of" => "best_of",
                        "logprobs" => "logprobs",
                        _ => "suffix",
                    }),
                ))
            }
            known if PASSED_ON.contains(&known) => {
                chat.insert(name.clone(), value.clone());
            }
            other => {
                return Err(invalid(
                    format!(
                        "Unrecognized request argument supplied: {}",
                        crate::error::excerpt(other)
                    ),
                    None,
                ))
            }
        }
    }
    let prompt = match fields.get("prompt") {
        Some(Value::String(prompt)) => prompt.clone(),
        Some(Value::Array(prompts)) => match prompts.as_slice() {
            [Value::String(prompt)] => prompt.clone(),
            _ => {
                return Err(invalid(
                    "prompt must be a string (one prompt; token arrays are not supported)",
                    Some("prompt"),
                ))
            }
        },
        None | Some(Value::Null) => {
            return Err(invalid(
                "you must provide a prompt parameter",
                Some("prompt"),
            ))
        }
        Some(_) => return Err(invalid("prompt must be a string", Some("prompt"))),
    };
    if fields.get("max_tokens").is_none_or(Value::is_null) {
        chat.insert("max_tokens".into(), json!(COMPLETION_TOKENS_DEFAULT));
    }
    chat.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    Ok(Value::Object(chat))
}

/// `POST /api/v1/completions`.
#[utoipa::path(
    post,
    path = "/api/v1/completions",
    tag = "openai",
    operation_id = "create_completion",
    summary = "OpenAI (legacy): create a text completion",
    request_body = crate::openapi::schemas::CompletionRequest,
    responses(
        (status = 200, description = "The completion (`text_completion`); with `stream: true`, server-sent events of `text_completion` objects ending with `data: [DONE]`", content((crate::openapi::schemas::TextCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "An invalid request (`invalid_request`, `context_length_exceeded`), JSON parse errors included", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 403, description = "The key is not for this model or service, or not active", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 429, description = "A rate limit, the quota or the credit is spent (as the chat route)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 502, description = "The node failed mid-generation (`node_error`, `node_lost`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 503, description = "No node, too many calls, or the limits store out of reach (as the chat route)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn completions(State(state): State<AppState>, auth: ApiKeyAuth, body: Bytes) -> Response {
    let chat_body = match chat_request(&body) {
        Ok(chat) => chat,
        Err(err) => return err.into_response(),
    };
    let answer = chat::completions(State(state), auth, Bytes::from(chat_body.to_string())).await;
    reshape(answer).await
}

/// `POST /api/v1/services/{service_id}/completions`.
#[utoipa::path(
    post,
    path = "/api/v1/services/{service_id}/completions",
    tag = "openai",
    operation_id = "create_service_completion",
    summary = "OpenAI (legacy, service base URL): create a text completion",
    params(
        ("service_id" = String, Path, description = "The API service's id"),
    ),
    request_body = crate::openapi::schemas::CompletionRequest,
    responses(
        (status = 200, description = "The completion (`text_completion`); with `stream: true`, server-sent events of `text_completion` objects ending with `data: [DONE]`", content((crate::openapi::schemas::TextCompletion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "An invalid request (`invalid_request`, `context_length_exceeded`), JSON parse errors included", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 403, description = "The key is not for this model or service, or not active", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 429, description = "A rate limit, the quota or the credit is spent (as the chat route)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 502, description = "The node failed mid-generation (`node_error`, `node_lost`)", body = crate::openapi::schemas::OpenAiErrorBody),
        (status = 503, description = "No node, too many calls, or the limits store out of reach (as the chat route)", body = crate::openapi::schemas::OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn service_completions(
    State(state): State<AppState>,
    auth: ApiKeyAuth,
    Path(service_id): Path<String>,
    body: Bytes,
) -> Response {
    let chat_body = match chat_request(&body) {
        Ok(chat) => chat,
        Err(err) => return err.into_response(),
    };
    let answer = chat::service_completions(
        State(state),
        auth,
        Path(service_id),
        Bytes::from(chat_body.to_string()),
    )
    .await;
    reshape(answer).await
}

/// The completion id of a chat call's id (`chatcmpl-…` → `cmpl-…`; the metered request id
/// stays the chat one).
fn completion_id(chat_id: &Value) -> Value {
    match chat_id.as_str() {
        Some(id) => json!(id.strip_prefix("chat").unwrap_or(id)),
        None => chat_id.clone(),
    }
}

/// A `chat.completion` as a `text_completion`.
fn text_completion(chat: &Value) -> Value {
    let choice = &chat["choices"][0];
    json!({
        "id": completion_id(&chat["id"]),
        "object": "text_completion",
        "created": chat["created"],
        "model": chat["model"],
        "choices": [{
            "text": choice["message"]["content"].as_str().unwrap_or_default(),
            "index": 0,
            "logprobs": null,
            "finish_reason": choice["finish_reason"],
        }],
        "usage": chat["usage"],
        "system_fingerprint": null,
    })
}

/// A `chat.completion.chunk` as a streamed `text_completion`; None for the chunk that opens a
/// chat stream (a role and no text: a completion stream has no such event).
fn text_chunk(chunk: &Value) -> Option<Value> {
    let mut out = json!({
        "id": completion_id(&chunk["id"]),
        "object": "text_completion",
        "created": chunk["created"],
        "model": chunk["model"],
        "system_fingerprint": null,
    });
    match chunk["choices"].as_array().and_then(|c| c.first()) {
        Some(choice) => {
            let finish_reason = &choice["finish_reason"];
            let text = choice["delta"]["content"].as_str().unwrap_or_default();
            if choice["delta"].get("role").is_some() && text.is_empty() && finish_reason.is_null() {
                return None;
            }
            out["choices"] = json!([{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason,
            }]);
        }
        // The usage chunk (`stream_options.include_usage`) has no choices.
        None => out["choices"] = json!([]),
    }
    if let Some(usage) = chunk.get("usage") {
        out["usage"] = usage.clone();
    }
    Some(out)
}

/// One server-sent event's data, re-shaped: errors and `[DONE]` pass unchanged.
fn reshape_event(data: &str) -> Option<String> {
    if data == "[DONE]" {
        return Some(data.to_string());
    }
    match serde_json::from_str::<Value>(data) {
        Ok(value) if value.get("error").is_some() => Some(data.to_string()),
        Ok(value) => text_chunk(&value).map(|v| v.to_string()),
        Err(_) => Some(data.to_string()),
    }
}

/// The chat pipeline's answer in the completion's shapes. Errors are the same in both.
async fn reshape(answer: Response) -> Response {
    if answer.status() != StatusCode::OK {
        return answer;
    }
    let streamed = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (mut parts, body) = answer.into_parts();
    if !streamed {
        let bytes = match axum::body::to_bytes(body, ANSWER_BYTES_MAX).await {
            Ok(bytes) => bytes,
            Err(e) => return OpenAiError::internal(e).into_response(),
        };
        return match serde_json::from_slice::<Value>(&bytes) {
            Ok(chat) => axum::Json(text_completion(&chat)).into_response(),
            Err(e) => OpenAiError::internal(e).into_response(),
        };
    }
    // Events end with a blank line; each is re-framed as one `data:` line and a blank line.
    struct Frames {
        body: axum::body::BodyDataStream,
        buffer: Vec<u8>,
        ready: VecDeque<Bytes>,
        ended: bool,
    }
    let frames = Frames {
        body: body.into_data_stream(),
        buffer: Vec::new(),
        ready: VecDeque::new(),
        ended: false,
    };
    let stream = futures::stream::unfold(frames, |mut frames| async move {
        loop {
            if let Some(frame) = frames.ready.pop_front() {
                return Some((Ok::<_, axum::Error>(frame), frames));
            }
            if frames.ended {
                return None;
            }
            match frames.body.next().await {
                Some(Ok(bytes)) => {
                    frames.buffer.extend_from_slice(&bytes);
                    while let Some(end) = frames.buffer.windows(2).position(|w| w == b"\n\n") {
                        let event: Vec<u8> = frames.buffer.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&event);
                        let data: Vec<&str> = text
                            .lines()
                            .filter_map(|line| line.strip_prefix("data:"))
                            .map(|d| d.strip_prefix(' ').unwrap_or(d))
                            .collect();
                        if data.is_empty() {
                            continue;
                        }
                        if let Some(out) = reshape_event(&data.join("\n")) {
                            frames
                                .ready
                                .push_back(Bytes::from(format!("data: {out}\n\n")));
                        }
                    }
                }
                Some(Err(e)) => {
                    frames.ended = true;
                    return Some((Err(e), frames));
                }
                None => frames.ended = true,
            }
        }
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod fuzz {
    //! The request parsers of the chat and completions routes over arbitrary input: never a
    //! panic, and every refusal a 400 in OpenAI's shape.
    use super::*;
    use proptest::prelude::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,16}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    "model|messages|prompt|stop|stream|stream_options|max_tokens|temperature|top_p|n|seed|tools|response_format|modalities|role|content|type|text|[a-z_]{1,8}",
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn refused_as_openai(err: &OpenAiError) -> bool {
        err.status == StatusCode::BAD_REQUEST && err.kind == "invalid_request_error"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_chat_parser_answers_anything_without_panicking(value in any_json()) {
            if let Err(err) = chat::parse(value.to_string().as_bytes()) {
                prop_assert!(refused_as_openai(&err), "{value}: {:?}", err);
            }
        }

        #[test]
        fn the_chat_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Err(err) = chat::parse(&bytes) {
                prop_assert!(refused_as_openai(&err));
            }
        }

        #[test]
        fn a_completion_request_is_a_chat_request_or_a_400(value in any_json()) {
            match chat_request(value.to_string().as_bytes()) {
                Ok(chat) => {
                    // What it makes is itself parsed by the chat route, without panicking.
                    if let Err(err) = chat::parse(chat.to_string().as_bytes()) {
                        prop_assert!(refused_as_openai(&err));
                    }
                }
                Err(err) => prop_assert!(refused_as_openai(&err)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continue_autocomplete_request_becomes_one_user_message() {
        let body = json!({
            "model": "m", "prompt": "<fim_prefix>fn main() {<fim_suffix>}<fim_middle>",
            "max_tokens": 64, "temperature": 0.01, "top_p": 1, "frequency_penalty": 0,
            "presence_penalty": 0, "stop": ["\n\n", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
            "<|endoftext|>", "</s>", "<file_sep>", "```", "\n}", "<|im_end|>"], "stream": true,
        });
        let chat = chat_request(body.to_string().as_bytes()).unwrap();
        assert_eq!(chat["messages"][0]["role"], "user");
        assert_eq!(
            chat["messages"][0]["content"],
            "<fim_prefix>fn main() {<fim_suffix>}<fim_middle>"
        );
        assert_eq!(chat["stop"].as_array().unwrap().len(), 10);
        assert!(chat.get("prompt").is_none());
        let plain = chat_request(br#"{"model":"m","prompt":["hi"]}"#).unwrap();
        assert_eq!(plain["max_tokens"], COMPLETION_TOKENS_DEFAULT);
    }

    #[test]
    fn what_a_completion_cannot_do_is_a_400_naming_it() {
        for (body, param) in [
            (r#"{"model":"m","prompt":"a","echo":true}"#, Some("echo")),
            (r#"{"model":"m","prompt":"a","suffix":"b"}"#, Some("suffix")),
            (r#"{"model":"m","prompt":[1,2,3]}"#, Some("prompt")),
            (r#"{"model":"m"}"#, Some("prompt")),
            (r#"{"model":"m","prompt":"a","bogus":1}"#, None),
            (r#"{"model":"m","prompt":"#, None),
        ] {
            let err = chat_request(body.as_bytes()).unwrap_err();
            assert_eq!(
                (err.status, err.param),
                (StatusCode::BAD_REQUEST, param),
                "{body}"
            );
        }
    }

    #[test]
    fn chat_chunks_become_text_completion_chunks() {
        let opening = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        assert_eq!(reshape_event(&opening.to_string()), None);
        let text = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": null}]});
        let out: Value = serde_json::from_str(&reshape_event(&text.to_string()).unwrap()).unwrap();
        assert_eq!(out["object"], "text_completion");
        assert_eq!(out["id"], "cmpl-1");
        assert_eq!(out["choices"][0]["text"], "Hel");
        assert_eq!(reshape_event("[DONE]").as_deref(), Some("[DONE]"));
        let error =
            r#"{"error":{"message":"x","type":"server_error","param":null,"code":"node_lost"}}"#;
        assert_eq!(reshape_event(error).as_deref(), Some(error));
    }
}
