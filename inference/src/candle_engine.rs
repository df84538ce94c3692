//! The built-in engine: a llama-architecture GGUF model (SmolLM2 and the like) run on the CPU
//! by candle, with the tokenizer taken from the same file and the ChatML chat template.
//!
//! One `CandleEngine` holds one copy of the weights and one KV cache, so requests to it are
//! served one at a time, in arrival order (a fair `tokio::sync::Mutex` is the queue). Generation
//! runs on tokio's blocking pool, never on the async runtime's threads; a request whose client
//! has gone while it waited in the queue is not run at all.

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use tokio::sync::{mpsc, Mutex};

use crate::engine::{
    validate_request, ChatMessage, ChatRequest, Completion, Delta, Engine, EngineError,
    FinishReason, ModelInfo, Usage,
};
use crate::sampling::Sampler;
use crate::stop::{Ended, TokenText};
use crate::tokenizer::{Tokenizer, TokenizerError};

pub(crate) const IM_START: &str = "<|im_start|>";
pub(crate) const IM_END: &str = "<|im_end|>";
const END_OF_TEXT: &str = "<|endoftext|>";

/// Most tokens one request may generate unless `CandleOptions` says otherwise.
pub const COMPLETION_TOKENS_MAX_DEFAULT: u32 = 2048;
/// The prompt is fed in chunks of this many tokens: attention scores then take
/// chunk x context floats per head instead of context x context, and a client that leaves is
/// noticed between chunks.
pub const PREFILL_CHUNK_TOKENS_DEFAULT: usize = 512;

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the file.
    AsStored,
    /// Q4_1 matrices re-quantized to Q8_0 at load. candle 0.11 has no SIMD kernel for Q4_1 but an
    /// AVX2 one (chosen at run time) for Q8_0; Q4_1's 16 levels per block fit Q8_0's 256 almost
    /// exactly, so the model's output barely changes. Costs a second or two at load and about
    /// 1.8 times the memory of the Q4_1 matrices.
    #[default]
    Q8_0,
    /// Q4_1 matrices re-quantized to Q4_0 (also AVX2): less memory than Q8_0, but the second
    /// 4-bit rounding loses precision.
    Q4_0,
}

impl WeightFormat {
    fn target(self) -> Option<GgmlDType> {
        match self {
            WeightFormat::AsStored => None,
            WeightFormat::Q8_0 => Some(GgmlDType::Q8_0),
            WeightFormat::Q4_0 => Some(GgmlDType::Q4_0),
        }
    }

    /// The type a tensor stored as `stored` has once loaded (only Q4_1 is re-quantized).
    pub fn loaded_as(self, stored: GgmlDType) -> GgmlDType {
        match self.target() {
            Some(target) if stored == GgmlDType::Q4_1 => target,
            _ => stored,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CandleOptions {
    /// The model name clients use; `None` takes the file name without `.gguf`.
    pub model_id: Option<String>,
    pub weights: WeightFormat,
    /// Cap on generated tokens per request, whatever the request asks.
    pub completion_tokens_max: u32,
    /// Prompt tokens per forward pass (at least 1).
    pub prefill_chunk_tokens: usize,
    /// Threads of this engine's own pool for candle's parallel kernels; `None` uses rayon's
    /// global pool (one thread per core). Every matrix product of a generated token is split
    /// across the pool and joined, and a thread descheduled by another busy process stalls the
    /// join: where cores are shared, fewer threads than cores may be faster (measure with the
    /// benchmark).
    pub threads: Option<usize>,
}

impl Default for CandleOptions {
    fn default() -> Self {
        Self {
            model_id: None,
            weights: WeightFormat::default(),
            completion_tokens_max: COMPLETION_TOKENS_MAX_DEFAULT,
            prefill_chunk_tokens: PREFILL_CHUNK_TOKENS_DEFAULT,
            threads: None,
        }
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the GGUF model")]
    Model(#[from] candle_core::Error),
    #[error("cannot build the tokenizer from the GGUF metadata")]
    Tokenizer(#[from] TokenizerError),
    #[error("the model has no ChatML token {0}")]
    NoChatTemplate(&'static str),
    #[error("cannot start the inference threads")]
    Threads(#[from] rayon::ThreadPoolBuildError),
}

pub struct CandleEngine {
    info: ModelInfo,
    tokenizer: Arc<Tokenizer>,
    model: Arc<Mutex<ModelWeights>>,
    im_start: u32,
    im_end: u32,
    end_ids: Arc<Vec<u32>>,
    context_tokens: u32,
    completion_tokens_max: u32,
    prefill_chunk_tokens: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
}

fn inference_error(e: candle_core::Error) -> EngineError {
    EngineError::Inference(Box::new(e))
}

impl CandleEngine {
    /// Loads a GGUF model. This reads the whole file and may re-quantize it: call it at startup
    /// or from a blocking thread.
    #[tracing::instrument(skip(options), fields(weights = ?options.weights))]
    pub fn load(path: &Path, options: CandleOptions) -> Result<Self, LoadError> {
        let io = |source| LoadError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let content = gguf_file::Content::read(&mut reader)?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let im_start = tokenizer
            .token_id(IM_START)
            .ok_or(LoadError::NoChatTemplate(IM_START))?;
        let im_end = tokenizer
            .token_id(IM_END)
            .ok_or(LoadError::NoChatTemplate(IM_END))?;
        let mut end_ids = vec![tokenizer.eos_id(), im_end];
        end_ids.extend(tokenizer.token_id(END_OF_TEXT));
        end_ids.sort_unstable();
        end_ids.dedup();

        // candle's llama precomputes rotary embeddings for MAX_SEQ_LEN positions only.
        let trained = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .unwrap_or(u32::MAX);
        let context_tokens = trained.min(u32::try_from(MAX_SEQ_LEN).unwrap_or(u32::MAX));

        let pool = match options.threads {
            None => None,
            Some(n) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .thread_name(|i| format!("candle-{i}"))
                    .build()?,
            )),
        };
        let device = Device::Cpu;
        let model = match options.weights.target() {
            None => ModelWeights::from_gguf(content, &mut reader, &device)?,
            Some(target) => {
                let requantized = requantize(&content, &mut reader, target)?;
                let mut cursor = Cursor::new(requantized);
                let content = gguf_file::Content::read(&mut cursor)?;
                ModelWeights::from_gguf(content, &mut cursor, &device)?
            }
        };
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
            tokenizer: Arc::new(tokenizer),
            model: Arc::new(Mutex::new(model)),
            im_start,
            im_end,
            end_ids: Arc::new(end_ids),
            context_tokens,
            completion_tokens_max: options.completion_tokens_max,
            prefill_chunk_tokens: options.prefill_chunk_tokens.max(1),
            pool,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt as ChatML text: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n` for the model to continue.
    pub fn render_chatml(messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        for m in messages {
            out.push_str(IM_START);
            out.push_str(m.role.as_str());
            out.push('\n');
            out.push_str(&m.content);
            out.push_str(IM_END);
            out.push('\n');
        }
        out.push_str(IM_START);
        out.push_str("assistant\n");
        out
    }

    /// The prompt tokens. The same as encoding `render_chatml` with control tokens allowed (plus
    /// bos if the model wants it), except that control-token text inside message content stays
    /// ordinary text, so content cannot forge turns.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Vec<u32> {
        encode_chatml(&self.tokenizer, self.im_start, self.im_end, messages)
    }
}

fn encode_chatml(
    tok: &Tokenizer,
    im_start: u32,
    im_end: u32,
    messages: &[ChatMessage],
) -> Vec<u32> {
    let mut ids = Vec::new();
    if tok.adds_bos() {
        ids.push(tok.bos_id());
    }
    for m in messages {
        ids.push(im_start);
        ids.extend(tok.encode(&format!("{}\n{}", m.role.as_str(), m.content), false));
        ids.push(im_end);
        ids.extend(tok.encode("\n", false));
    }
    ids.push(im_start);
    ids.extend(tok.encode("assistant\n", false));
    ids
}

/// Rewrites the GGUF in memory with every Q4_1 matrix re-quantized to `target`, so that candle's
/// own loader builds the model from it.
fn requantize<R: std::io::Read + std::io::Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    target: GgmlDType,
) -> Result<Vec<u8>, candle_core::Error> {
    let device = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let tensor = content.tensor(reader, name, &device)?;
        let tensor = if tensor.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(&tensor.dequantize(&device)?, target)?
        } else {
            tensor
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensor_refs)?;
    Ok(out.into_inner())
}

#[async_trait]
impl Engine for CandleEngine {
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
        // Tokenizing a long prompt is CPU work too: off the async threads.
        let (tokenizer, im_start, im_end) =
            (Arc::clone(&self.tokenizer), self.im_start, self.im_end);
        let messages = std::mem::take(&mut request.messages);
        let prompt = tokio::task::spawn_blocking(move || {
            encode_chatml(&tokenizer, im_start, im_end, &messages)
        })
        .await
        .map_err(|e| EngineError::Worker(e.to_string()))?;
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

        // The queue: one generation at a time per loaded model, in arrival order. A client that
        // leaves while waiting gives up its place.
        let model = tokio::select! {
            model = Arc::clone(&self.model).lock_owned() => model,
            () = deltas.closed() => {
                return Ok(Completion {
                    finish_reason: FinishReason::Cancelled,
                    usage: Usage {
                        prompt_tokens,
                        completion_tokens: 0,
                    },
                    usage_exact: true,
                });
            }
        };
        let job = Generation {
            tokenizer: Arc::clone(&self.tokenizer),
            end_ids: Arc::clone(&self.end_ids),
            prompt,
            prefill_chunk_tokens: self.prefill_chunk_tokens,
            sampler: Sampler::new(request.temperature, request.top_p, request.seed),
            text: TokenText::new(&request.stop, completion_max, deltas),
        };
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut model = model;
            match pool {
                // candle's parallel loops run on the pool they are called from.
                Some(pool) => pool.install(|| job.run(&mut model)),
                None => job.run(&mut model),
            }
        })
        .await
        .map_err(|e| EngineError::Worker(e.to_string()))?
    }
}

/// One request's generation, run on a blocking thread while holding the model.
struct Generation {
    tokenizer: Arc<Tokenizer>,
    end_ids: Arc<Vec<u32>>,
    prompt: Vec<u32>,
    prefill_chunk_tokens: usize,
    sampler: Sampler,
    text: TokenText,
}

impl Generation {
    fn run(mut self, model: &mut ModelWeights) -> Result<Completion, EngineError> {
        let device = Device::Cpu;
        let prompt_tokens = u32::try_from(self.prompt.len()).unwrap_or(u32::MAX);
        let finish = |ended: Ended| Completion {
            finish_reason: ended.reason,
            usage: Usage {
                prompt_tokens,
                completion_tokens: ended.completion_tokens,
            },
            usage_exact: true,
        };
        // Position 0 also discards the previous request's KV cache; later chunks extend it.
        let mut logits = None;
        for (i, chunk) in self.prompt.chunks(self.prefill_chunk_tokens).enumerate() {
            if let Some(ended) = self.text.cancelled() {
                return Ok(finish(ended));
            }
            let input = Tensor::new(chunk, &device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(inference_error)?;
            let position = i * self.prefill_chunk_tokens;
            logits = Some(model.forward(&input, position).map_err(inference_error)?);
        }
        let Some(mut logits) = logits else {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        };
        loop {
            if let Some(ended) = self.text.cancelled() {
                return Ok(finish(ended));
            }
            let logits_vec: Vec<f32> = logits
                .squeeze(0)
                .and_then(|l| l.to_dtype(candle_core::DType::F32))
                .and_then(|l| l.to_vec1())
                .map_err(inference_error)?;
            let next = self.sampler.sample(&logits_vec);
            if self.end_ids.contains(&next) {
                return Ok(finish(self.text.end()));
            }
            let bytes = self.tokenizer.token_bytes(next).map_err(|e| {
                EngineError::Inference(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })?;
            if let Some(ended) = self.text.token(&bytes) {
                return Ok(finish(ended));
            }

            let position =
                self.prompt.len() + usize::try_from(self.text.generated() - 1).unwrap_or(0);
            let input = Tensor::new(&[next], &device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(inference_error)?;
            logits = model.forward(&input, position).map_err(inference_error)?;
        }
    }
}
