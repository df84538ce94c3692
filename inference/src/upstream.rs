//! An engine that forwards to any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama,
//! OpenAI itself): `POST {base_url}/chat/completions` with `stream: true` and
//! `stream_options.include_usage`, reading the server-sent events into deltas; or, when the
//! caller takes the answer only whole (`ChatRequest::whole`), with `stream: false` and one
//! JSON body, sent on as one delta.
//!
//! Usage is the upstream's: the chunk it sends after the last choice. An upstream that sends no
//! usage is an error (`UpstreamProtocol`), after the text has streamed: this crate cannot count
//! tokens of a model it does not have, and a guessed count must not reach billing silently. If
//! the receiver is dropped the connection is closed at once (servers stop generating when their
//! client goes); the completion then counts the content chunks delivered, one per token as
//! OpenAI-compatible servers send them, and says so with `usage_exact: false`.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::engine::{
    validate_request, ChatMessage, ChatRequest, Completion, Delta, Engine, EngineError,
    FinishReason, ModelInfo, Usage,
};

pub const CONNECT_TIMEOUT_SECS_DEFAULT: u64 = 10;
pub const RESPONSE_TIMEOUT_SECS_DEFAULT: u64 = 120;
pub const IDLE_TIMEOUT_SECS_DEFAULT: u64 = 60;
/// A whole (non-streamed) answer is waited for this long: OpenAI's SDKs' own default.
pub const ANSWER_TIMEOUT_SECS_DEFAULT: u64 = 600;
/// The longest whole answer read.
const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most an error body is read, and the longest one server-sent event may be.
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;
const EVENT_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Up to and including the version prefix, as OpenAI SDKs take it: `http://host:8000/v1`.
    pub base_url: String,
    /// The model name the upstream knows.
    pub model: String,
    /// The name this engine is served under; `None` uses `model`.
    pub served_id: Option<String>,
    pub api_key: Option<SecretString>,
    pub context_tokens: Option<u32>,
    pub connect_timeout: Duration,
    /// From sending the request to the response headers (queueing and prompt processing).
    pub response_timeout: Duration,
    /// Longest wait for the next piece of the stream.
    pub idle_timeout: Duration,
    /// Longest wait for a whole answer (`ChatRequest::whole`), from sending the request to its
    /// last byte: a server answers such a request only once it has generated all of it.
    pub answer_timeout: Duration,
}

impl UpstreamConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            served_id: None,
            api_key: None,
            context_tokens: None,
            connect_timeout: Duration::from_secs(CONNECT_TIMEOUT_SECS_DEFAULT),
            response_timeout: Duration::from_secs(RESPONSE_TIMEOUT_SECS_DEFAULT),
            idle_timeout: Duration::from_secs(IDLE_TIMEOUT_SECS_DEFAULT),
            answer_timeout: Duration::from_secs(ANSWER_TIMEOUT_SECS_DEFAULT),
        }
    }
}

pub struct UpstreamEngine {
    info: ModelInfo,
    config: UpstreamConfig,
    url: String,
    client: reqwest::Client,
}

impl UpstreamEngine {
    pub fn new(config: UpstreamConfig) -> Result<Self, EngineError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(EngineError::UpstreamTransport)?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            info: ModelInfo {
                id: config
                    .served_id
                    .clone()
                    .unwrap_or_else(|| config.model.clone()),
                context_tokens: config.context_tokens,
            },
            config,
            url,
            client,
        })
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct UpstreamRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

#[derive(Deserialize, Default)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl From<ChunkUsage> for Usage {
    fn from(u: ChunkUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize, Default)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct AnswerChoice {
    #[serde(default)]
    message: AnswerMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// A whole `chat.completion`: only what this engine reads of it.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    choices: Vec<AnswerChoice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        // "stop", and "content_filter" or "tool_calls", which end the turn too.
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// Splits a byte stream of server-sent events into the `data` of each event.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, EngineError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=newline).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line)
                .map_err(|_| EngineError::UpstreamProtocol("an event is not valid UTF-8".into()))?;
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
            // Comments (`:`) and the other fields (`event`, `id`, `retry`) carry nothing here.
        }
        let pending: usize = self.buffer.len() + self.data.iter().map(String::len).sum::<usize>();
        if pending > EVENT_BYTES_MAX {
            return Err(EngineError::UpstreamProtocol(format!(
                "an event is longer than {EVENT_BYTES_MAX} bytes"
            )));
        }
        Ok(events)
    }
}

fn transport(e: reqwest::Error, stage: &'static str, after: Duration) -> EngineError {
    if e.is_timeout() {
        EngineError::UpstreamTimeout {
            stage,
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        }
    } else {
        EngineError::UpstreamTransport(e)
    }
}

fn timed_out(stage: &'static str, after: Duration) -> EngineError {
    EngineError::UpstreamTimeout {
        stage,
        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The upstream's error answer, with its message when it uses OpenAI's error shape.
async fn status_error(response: reqwest::Response, idle: Duration) -> EngineError {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while body.len() < ERROR_BODY_BYTES_MAX {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(ERROR_BODY_BYTES_MAX);
    let message = serde_json::from_slice::<ErrorEnvelope>(&body)
        .ok()
        .and_then(|e| e.error.message)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    EngineError::UpstreamStatus { status, message }
}

#[async_trait]
impl Engine for UpstreamEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    #[tracing::instrument(skip_all, fields(model = %self.config.model, url = %self.url))]
    async fn generate(
        &self,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<Completion, EngineError> {
        validate_request(&request)?;
        if request.whole {
            return self.generate_whole(&request, deltas).await;
        }
        let call = self.post(&request, true);
        let response_timeout = self.config.response_timeout;
        let response = tokio::select! {
            biased;
            _ = deltas.closed() => return Ok(cancelled(None, 0)),
            sent = tokio::time::timeout(response_timeout, call.send()) => match sent {
                Err(_) => return Err(timed_out("response", response_timeout)),
                Ok(Err(e)) => return Err(transport(e, "response", response_timeout)),
                Ok(Ok(response)) => response,
            },
        };
        let idle = self.config.idle_timeout;
        if !response.status().is_success() {
            return Err(status_error(response, idle).await);
        }

        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut usage: Option<Usage> = None;
        let mut finish: Option<FinishReason> = None;
        let mut delivered: u32 = 0;
        let mut done = false;
        while !done {
            let next = tokio::select! {
                biased;
                _ = deltas.closed() => return Ok(cancelled(usage, delivered)),
                next = tokio::time::timeout(idle, stream.next()) => next,
            };
            let bytes = match next {
                Err(_) => return Err(timed_out("stream", idle)),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(transport(e, "stream", idle)),
                Ok(Some(Ok(bytes))) => bytes,
            };
            for data in parser.push(&bytes)? {
                if data.trim() == "[DONE]" {
                    done = true;
                    break;
                }
                let chunk: Chunk = serde_json::from_str(&data).map_err(|e| {
                    EngineError::UpstreamProtocol(format!("a chunk is not a completion chunk: {e}"))
                })?;
                if let Some(error) = chunk.error {
                    return Err(EngineError::UpstreamProtocol(format!(
                        "the upstream failed mid-stream: {}",
                        error.message.unwrap_or_default()
                    )));
                }
                if let Some(u) = chunk.usage {
                    usage = Some(u.into());
                }
                // One choice is asked for (no `n`); choice 0 is the answer.
                if let Some(choice) = chunk.choices.into_iter().next() {
                    if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                        if deltas.send(Delta { text }).await.is_err() {
                            return Ok(cancelled(usage, delivered));
                        }
                        delivered += 1;
                    }
                    if let Some(reason) = choice.finish_reason {
                        finish = Some(finish_reason(&reason));
                    }
                }
            }
        }
        let Some(usage) = usage else {
            return Err(EngineError::UpstreamProtocol(if done || finish.is_some() {
                "the upstream sent no usage chunk (stream_options.include_usage unsupported?)"
                    .into()
            } else {
                "the stream ended before the answer did".into()
            }));
        };
        Ok(Completion {
            finish_reason: finish.unwrap_or(FinishReason::Stop),
            usage,
            usage_exact: true,
        })
    }
}

impl UpstreamEngine {
    /// The request to the upstream: streamed with the usage chunk asked for, or whole.
    fn post(&self, request: &ChatRequest, stream: bool) -> reqwest::RequestBuilder {
        let body = UpstreamRequest {
            model: &self.config.model,
            messages: &request.messages,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.seed,
            stop: &request.stop,
        };
        let call = self.client.post(&self.url).json(&body);
        match &self.config.api_key {
            Some(key) => call.bearer_auth(key.expose_secret()),
            None => call,
        }
    }

    /// A whole answer: one request with `stream: false`, one JSON body, one delta. Nothing is
    /// delivered before the end, so a caller that leaves first is told nothing and nothing is
    /// counted (`usage_exact: false`, like any call cut short).
    async fn generate_whole(
        &self,
        request: &ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<Completion, EngineError> {
        let call = self.post(request, false);
        let limit = self.config.answer_timeout;
        let idle = self.config.idle_timeout;
        let answer = async {
            let response = call
                .send()
                .await
                .map_err(|e| transport(e, "response", limit))?;
            if !response.status().is_success() {
                return Err(status_error(response, idle).await);
            }
            let mut stream = response.bytes_stream();
            let mut body = Vec::new();
            while let Some(piece) = stream.next().await {
                body.extend_from_slice(&piece.map_err(|e| transport(e, "response", limit))?);
                if body.len() > ANSWER_BYTES_MAX {
                    return Err(EngineError::UpstreamProtocol(format!(
                        "the answer is longer than {ANSWER_BYTES_MAX} bytes"
                    )));
                }
            }
            serde_json::from_slice::<Answer>(&body).map_err(|e| {
                EngineError::UpstreamProtocol(format!("the answer is not a chat completion: {e}"))
            })
        };
        let answer = tokio::select! {
            biased;
            _ = deltas.closed() => return Ok(cancelled(None, 0)),
            answer = tokio::time::timeout(limit, answer) => match answer {
                Err(_) => return Err(timed_out("response", limit)),
                Ok(answer) => answer?,
            },
        };
        let Some(usage) = answer.usage else {
            return Err(EngineError::UpstreamProtocol(
                "the upstream's answer has no usage".into(),
            ));
        };
        // One choice is asked for (no `n`); choice 0 is the answer.
        let choice = answer.choices.into_iter().next();
        let finish = choice
            .as_ref()
            .and_then(|c| c.finish_reason.as_deref())
            .map_or(FinishReason::Stop, finish_reason);
        let text = choice.and_then(|c| c.message.content).unwrap_or_default();
        if !text.is_empty() && deltas.send(Delta { text }).await.is_err() {
            return Ok(cancelled(None, 0));
        }
        Ok(Completion {
            finish_reason: finish,
            usage: usage.into(),
            usage_exact: true,
        })
    }
}

fn cancelled(usage: Option<Usage>, delivered: u32) -> Completion {
    Completion {
        finish_reason: FinishReason::Cancelled,
        usage: Usage {
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: delivered,
        },
        usage_exact: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_are_reassembled() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            p.push(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n\n").unwrap(),
            vec!["{\"a\":1}".to_string(), "[DONE]".to_string()]
        );
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let mut p = SseParser::default();
        assert_eq!(
            p.push(b"event: x\ndata: a\ndata:b\n\n").unwrap(),
            vec!["a\nb".to_string()]
        );
    }
}
