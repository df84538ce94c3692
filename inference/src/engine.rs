//! The engine port: what a chat-completion backend is asked (`ChatRequest`), what it streams
//! (`Delta`) and what it reports at the end (`Completion`). Backends live in their own modules
//! (`candle_engine`, `upstream`); nothing here knows about models, HTTP or tokenizers.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Who wrote a message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The name OpenAI's API and the ChatML template use.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// A chat-completion request, with OpenAI's meaning for every field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate; `None` means "up to the engine's limit".
    pub max_tokens: Option<u32>,
    /// 0 means greedy (argmax); `None` means OpenAI's default of 1.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1]; `None` means 1 (no truncation).
    pub top_p: Option<f64>,
    /// The same seed, prompt and parameters give the same output on the same engine.
    pub seed: Option<u64>,
    /// Generation stops before any of these strings; none of it is emitted.
    pub stop: Vec<String>,
    /// The caller takes the answer only once it is whole (a non-streamed API call): an engine
    /// that forwards to another server may then ask for it in one piece and send it as one
    /// delta. All or nothing: if the caller leaves first, no completion token is counted, as
    /// none reached it.
    #[serde(default)]
    pub whole: bool,
}

impl ChatRequest {
    /// A request with these messages and every option at its default.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }
}

/// A piece of generated text, in order. Concatenating every delta of a generation gives its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub text: String,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence was reached.
    Stop,
    /// `max_tokens` (or the context window) was reached.
    Length,
    /// The receiver of the deltas was dropped (the client went away).
    Cancelled,
}

/// Token counts of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl Usage {
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The end of a generation. Returned also when the receiver was dropped (`Cancelled`), so that
/// what was delivered can still be accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// `true` when `usage` was counted with the model's own tokenizer (the candle engine) or
    /// reported by the upstream; `false` only for an upstream generation cancelled before the
    /// upstream sent its usage, where `usage` is an estimate (see `upstream`).
    pub usage_exact: bool,
}

/// What an engine serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model name clients ask for.
    pub id: String,
    /// Most tokens (prompt plus completion) one request may use, when the engine knows it.
    pub context_tokens: Option<u32>,
}

/// Why a generation failed. A request the engine refuses fails before any delta is sent.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the prompt has {prompt_tokens} tokens; the context window holds {context_tokens}")]
    ContextLengthExceeded {
        prompt_tokens: u32,
        context_tokens: u32,
    },
    #[error("inference failed")]
    Inference(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the upstream answered {status}: {message}")]
    UpstreamStatus { status: u16, message: String },
    #[error("the upstream sent no answer within {after_ms} ms ({stage})")]
    UpstreamTimeout { stage: &'static str, after_ms: u64 },
    #[error("could not talk to the upstream")]
    UpstreamTransport(#[source] reqwest::Error),
    #[error("the upstream broke the streaming protocol: {0}")]
    UpstreamProtocol(String),
    #[error("the inference worker failed: {0}")]
    Worker(String),
}

/// A chat-completion backend. Object-safe: the gateway holds `Arc<dyn Engine>`.
///
/// `generate` sends the generated text through `deltas` as it is produced and returns the
/// `Completion` when generation ends. Dropping the receiver stops generation promptly; the
/// completion then says `Cancelled` and counts only the tokens whose text was delivered.
#[async_trait]
pub trait Engine: Send + Sync {
    fn info(&self) -> &ModelInfo;

    fn model_id(&self) -> &str {
        &self.info().id
    }

    async fn generate(
        &self,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<Completion, EngineError>;
}

/// Checks the sampling parameters every engine shares, with OpenAI's ranges.
pub(crate) fn validate_request(request: &ChatRequest) -> Result<(), EngineError> {
    if request.messages.is_empty() {
        return Err(EngineError::InvalidRequest(
            "messages must not be empty".into(),
        ));
    }
    if request.max_tokens == Some(0) {
        return Err(EngineError::InvalidRequest(
            "max_tokens must be at least 1".into(),
        ));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(EngineError::InvalidRequest(format!(
                "temperature must be between 0 and 2, got {t}"
            )));
        }
    }
    if let Some(p) = request.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(EngineError::InvalidRequest(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
    }
    if request.stop.len() > STOP_SEQUENCES_MAX {
        return Err(EngineError::InvalidRequest(format!(
            "at most {STOP_SEQUENCES_MAX} stop sequences"
        )));
    }
    if request.stop.iter().any(String::is_empty) {
        return Err(EngineError::InvalidRequest(
            "stop sequences must not be empty".into(),
        ));
    }
    Ok(())
}

/// Stop sequences a request may give: 16, as llama.cpp and DeepSeek take (OpenAI's own API
/// takes 4, but clients such as Continue send every stop word of a model's template, often 10,
/// to any host that is not api.openai.com).
pub const STOP_SEQUENCES_MAX: usize = 16;
/// The longest stop sequence, in bytes.
pub const STOP_SEQUENCE_BYTES_MAX: usize = 256;
