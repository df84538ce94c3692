//! The llama.cpp engine (build feature `llama`): a GGUF model of any architecture llama.cpp runs
//! (llama, qwen2/qwen3, gemma2/gemma3, phi3, ...) through the `llama-cpp-2` bindings, with
//! llama.cpp's own tokenizer and the file's own chat template (`tokenizer.chat_template`,
//! rendered by [`crate::chat_template`]; the template of its vocabulary's turn tokens when the file
//! has none).
//!
//! As in the candle engine, one generation runs at a time per loaded model, in arrival order (a
//! fair `tokio::sync::Mutex` is the queue; it also keeps llama.cpp's context creation, which
//! mutates the model, from running twice at once), on tokio's blocking pool, and a client that
//! leaves stops it between prompt chunks or tokens. Each request gets its own llama.cpp context
//! sized to what it can use (prompt plus its completion limit), so memory follows the request,
//! not the model's whole window. Sampling (temperature, top-p, seed) is llama.cpp's sampler
//! chain in OpenAI's order (temperature, then nucleus); stop sequences are matched on the
//! streamed text by [`crate::stop`], as in the candle engine.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, Mutex};

use crate::chat_template::{self, ChatTemplate, Segment, TemplateError};
use crate::engine::{
    validate_request, ChatMessage, ChatRequest, Completion, Delta, Engine, EngineError,
    FinishReason, ModelInfo, Usage,
};
use crate::stop::{Ended, TokenText};

/// Most tokens one request may generate unless `LlamaCppOptions` says otherwise.
pub const COMPLETION_TOKENS_MAX_DEFAULT: u32 = 2048;
/// The longest context (prompt plus completion) a request may use unless the options say
/// otherwise, whatever longer window the model was trained for: the KV cache of a request grows
/// with it, and the servability judgement counts memory for this many tokens.
pub const CONTEXT_TOKENS_MAX_DEFAULT: u32 = crate::servable::LLAMA_CONTEXT_TOKENS_MAX;
/// Prompt tokens per forward pass (llama.cpp's `n_batch`); a client that leaves is noticed
/// between chunks.
pub const PREFILL_CHUNK_TOKENS_DEFAULT: u32 = 512;
/// Contexts are sized in steps of this many tokens (llama.cpp pads its KV cache to 256).
const CONTEXT_STEP_TOKENS: u32 = 256;

#[derive(Debug, Clone)]
pub struct LlamaCppOptions {
    /// The model name clients use; `None` takes the file name without `.gguf`.
    pub model_id: Option<String>,
    /// Cap on generated tokens per request, whatever the request asks.
    pub completion_tokens_max: u32,
    /// Cap on a request's context (prompt plus completion), below the model's trained window.
    pub context_tokens_max: u32,
    /// Prompt tokens per forward pass (at least 1).
    pub prefill_chunk_tokens: u32,
    /// Threads llama.cpp computes with; `None` uses one per core. As for candle, where cores are
    /// shared fewer threads than cores may be faster (measure with the benchmark).
    pub threads: Option<usize>,
}

impl Default for LlamaCppOptions {
    fn default() -> Self {
        Self {
            model_id: None,
            completion_tokens_max: COMPLETION_TOKENS_MAX_DEFAULT,
            context_tokens_max: CONTEXT_TOKENS_MAX_DEFAULT,
            prefill_chunk_tokens: PREFILL_CHUNK_TOKENS_DEFAULT,
            threads: None,
        }
    }
}

/// Why a model could not be loaded on llama.cpp.
#[derive(Debug, thiserror::Error)]
pub enum LlamaLoadError {
    #[error("cannot start llama.cpp: {0}")]
    Backend(String),
    #[error("llama.cpp cannot load the GGUF model: {0}")]
    Model(#[from] llama_cpp_2::LlamaModelLoadError),
    #[error("the model has no chat template and its vocabulary names no known turn format")]
    NoChatTemplate,
    #[error("the model's chat template cannot be used")]
    Template(#[from] TemplateError),
}

/// llama.cpp's process-wide state: initialised once, never torn down.
fn backend() -> Result<&'static LlamaBackend, LlamaLoadError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor it loads to stderr; tracing decides what is shown.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlamaLoadError::Backend(e.clone()))
}

pub struct LlamaCppEngine {
    info: ModelInfo,
    model: Arc<LlamaModel>,
    template: Arc<ChatTemplate>,
    /// The queue: one generation at a time.
    queue: Arc<Mutex<()>>,
    context_tokens: u32,
    completion_tokens_max: u32,
    prefill_chunk_tokens: u32,
    threads: i32,
}

fn inference_error(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::Inference(Box::new(e))
}

fn token_text(model: &LlamaModel, token: LlamaToken) -> String {
    String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned()
}

impl LlamaCppEngine {
    /// Loads a GGUF model (memory-mapped). Call it at startup or from a blocking thread.
    #[tracing::instrument(skip(options))]
    pub fn load(path: &Path, options: LlamaCppOptions) -> Result<Self, LlamaLoadError> {
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())?;
        let template = load_template(&model)?;
        let context_tokens = model.n_ctx_train().min(options.context_tokens_max).max(1);
        let threads = options
            .threads
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
            .max(1);
        let id = options.model_id.unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "gguf".into())
        });
        Ok(Self {
            info: ModelInfo {
                id,
                context_tokens: Some(context_tokens),
            },
            model: Arc::new(model),
            template: Arc::new(template),
            queue: Arc::new(Mutex::new(())),
            context_tokens,
            completion_tokens_max: options.completion_tokens_max,
            prefill_chunk_tokens: options.prefill_chunk_tokens.max(1),
            threads: i32::try_from(threads).unwrap_or(i32::MAX),
        })
    }

    /// The prompt tokens of `messages`: the chat template rendered, its own text tokenized with
    /// control tokens allowed and each message's content as plain text (so content cannot forge
    /// a turn), with the model's BOS first when it wants one and the template did not write it.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        encode_chat(&self.model, &self.template, messages)
            .map(|ids| ids.into_iter().map(|t| t.0.cast_unsigned()).collect())
    }

    /// Tokenizes `text` with llama.cpp's tokenizer, control tokens allowed, nothing added.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0.cast_unsigned())
            .collect()
    }
}

fn load_template(model: &LlamaModel) -> Result<ChatTemplate, LlamaLoadError> {
    let vocab = model.vocab();
    let bos = token_text(model, vocab.bos());
    let eos = token_text(model, vocab.eos());
    let own = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok())
        .filter(|t| !t.trim().is_empty());
    let source = match own {
        Some(source) => source,
        None => {
            // A token is in the vocabulary when it tokenizes to exactly one id.
            let has_token = |text: &str| vocab.tokenize(text.as_bytes(), false, true).len() == 1;
            chat_template::template_for_vocabulary(has_token)
                .ok_or(LlamaLoadError::NoChatTemplate)?
                .to_string()
        }
    };
    Ok(ChatTemplate::new(&source, &bos, &eos)?)
}

fn encode_chat(
    model: &LlamaModel,
    template: &ChatTemplate,
    messages: &[ChatMessage],
) -> Result<Vec<LlamaToken>, EngineError> {
    let segments = template
        .render(messages)
        .map_err(|e| EngineError::InvalidRequest(e.to_string()))?;
    let vocab = model.vocab();
    let mut ids = Vec::new();
    for segment in segments {
        match segment {
            Segment::Template(text) => ids.extend(vocab.tokenize(text.as_bytes(), false, true)),
            Segment::Content(text) => ids.extend(vocab.tokenize(text.as_bytes(), false, false)),
        }
    }
    if vocab.should_add_bos() && ids.first() != Some(&vocab.bos()) {
        ids.insert(0, vocab.bos());
    }
    Ok(ids)
}

#[async_trait]
impl Engine for LlamaCppEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    #[tracing::instrument(skip_all, fields(model = %self.info.id))]
    async fn generate(
        &self,
        mut request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<Completion, EngineError> {
        validate_request(&request)?;
        let (model, template) = (Arc::clone(&self.model), Arc::clone(&self.template));
        let messages = std::mem::take(&mut request.messages);
        let prompt = tokio::task::spawn_blocking(move || encode_chat(&model, &template, &messages))
            .await
            .map_err(|e| EngineError::Worker(e.to_string()))??;
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if prompt_tokens >= self.context_tokens {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens,
                context_tokens: self.context_tokens,
            });
        }
        let completion_max = request
            .max_tokens
            .unwrap_or(u32::MAX)
            .min(self.completion_tokens_max)
            .min(self.context_tokens - prompt_tokens);

        let turn = tokio::select! {
            turn = Arc::clone(&self.queue).lock_owned() => turn,
            () = deltas.closed() => {
                return Ok(Completion {
                    finish_reason: FinishReason::Cancelled,
                    usage: Usage { prompt_tokens, completion_tokens: 0 },
                    usage_exact: true,
                });
            }
        };
        let job = Generation {
            model: Arc::clone(&self.model),
            prompt,
            completion_max,
            prefill_chunk_tokens: self.prefill_chunk_tokens,
            threads: self.threads,
            sampler: sampler(&request),
            text: TokenText::new(&request.stop, completion_max, deltas),
        };
        tokio::task::spawn_blocking(move || {
            let result = job.run();
            drop(turn);
            result
        })
        .await
        .map_err(|e| EngineError::Worker(e.to_string()))?
    }
}

/// Below this temperature sampling is greedy, as in [`crate::sampling`].
const GREEDY_TEMPERATURE_MAX: f64 = 1e-5;

/// The sampler chain for a request: greedy at temperature 0; else temperature, then top-p on the
/// tempered distribution (OpenAI's order, and the candle engine's), then a draw seeded by the
/// request's seed (folded to llama.cpp's 32 bits) or at random.
fn sampler(request: &ChatRequest) -> LlamaSampler {
    let temperature = request.temperature.unwrap_or(1.0);
    if temperature < GREEDY_TEMPERATURE_MAX {
        return LlamaSampler::greedy();
    }
    let seed = match request.seed {
        Some(seed) => (seed ^ (seed >> 32)) as u32,
        None => rand::random::<u32>(),
    };
    let mut chain = vec![LlamaSampler::temp(temperature as f32)];
    if let Some(p) = request.top_p.filter(|p| *p < 1.0) {
        chain.push(LlamaSampler::top_p(p as f32, 1));
    }
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

/// One request's generation, run on a blocking thread while holding the queue.
struct Generation {
    model: Arc<LlamaModel>,
    prompt: Vec<LlamaToken>,
    completion_max: u32,
    prefill_chunk_tokens: u32,
    threads: i32,
    sampler: LlamaSampler,
    text: TokenText,
}

impl Generation {
    fn run(mut self) -> Result<Completion, EngineError> {
        let prompt_tokens = u32::try_from(self.prompt.len()).unwrap_or(u32::MAX);
        let finish = |ended: Ended| Completion {
            finish_reason: ended.reason,
            usage: Usage {
                prompt_tokens,
                completion_tokens: ended.completion_tokens,
            },
            usage_exact: true,
        };
        let backend = backend().map_err(inference_error)?;
        let needed = prompt_tokens.saturating_add(self.completion_max);
        let n_ctx = needed.div_ceil(CONTEXT_STEP_TOKENS) * CONTEXT_STEP_TOKENS;
        let chunk = self.prefill_chunk_tokens.min(n_ctx);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(chunk)
            .with_n_ubatch(chunk)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let model = Arc::clone(&self.model);
        let mut ctx = model
            .new_context(backend, params)
            .map_err(inference_error)?;
        let vocab = model.vocab();
        let chunk = usize::try_from(chunk).unwrap_or(1);
        let mut batch = LlamaBatch::new(chunk, 1);

        let mut position: i32 = 0;
        let last = self.prompt.len().saturating_sub(1);
        for (c, tokens) in self.prompt.chunks(chunk).enumerate() {
            if let Some(ended) = self.text.cancelled() {
                return Ok(finish(ended));
            }
            batch.clear();
            for (j, &token) in tokens.iter().enumerate() {
                let is_last = c * chunk + j == last;
                batch
                    .add(token, position, &[0], is_last)
                    .map_err(inference_error)?;
                position += 1;
            }
            ctx.decode(&mut batch).map_err(inference_error)?;
        }

        loop {
            if let Some(ended) = self.text.cancelled() {
                return Ok(finish(ended));
            }
            let next = self.sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(next) {
                return Ok(finish(self.text.end()));
            }
            // Control tokens (a stray turn marker) have no text for the client.
            let bytes = vocab.token_to_piece(next, false, None);
            if let Some(ended) = self.text.token(&bytes) {
                return Ok(finish(ended));
            }

            batch.clear();
            batch
                .add(next, position, &[0], true)
                .map_err(inference_error)?;
            position += 1;
            ctx.decode(&mut batch).map_err(inference_error)?;
        }
    }
}
