#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]
//! The servability judgement on the real SmolLM2 file, read as the platform reads an upload: a
//! stream of chunks of which only the header is consumed.

mod common;

use aiforge_domain::serving::{NotServable, Servability, ServingEngine};
use aiforge_inference::servable::{self, judge_stream};
use futures::StreamExt;

#[tokio::test]
async fn smollm2_is_judged_servable_on_this_builds_engine_from_its_header_alone() {
    let path = common::model_path().await;
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len() as u64;
    let consumed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = consumed.clone();
    let chunks = futures::stream::iter(
        bytes
            .chunks(1 << 20)
            .map(bytes::Bytes::copy_from_slice)
            .collect::<Vec<_>>(),
    )
    .map(move |c| {
        counter.fetch_add(c.len(), std::sync::atomic::Ordering::Relaxed);
        Ok::<_, std::io::Error>(c)
    });
    let judged = judge_stream(Box::pin(chunks), size).await.unwrap();
    let Servability::Servable(model) = judged else {
        panic!("SmolLM2 is servable: {judged:?}");
    };
    // candle, or llama.cpp in a build with the `llama` feature.
    assert_eq!(model.engine, servable::GGUF_ENGINE);
    assert_eq!(model.architecture.as_deref(), Some("llama"));
    assert_eq!(model.quantisation.as_deref(), Some("Q4_1"));
    // Weights (re-quantized to Q8_0 on candle) and the KV cache take more than the file.
    assert!(
        model.memory_bytes > size,
        "{} <= {size}",
        model.memory_bytes
    );
    assert!(model.memory_bytes < 4 * size, "{}", model.memory_bytes);
    assert!(
        consumed.load(std::sync::atomic::Ordering::Relaxed) < bytes.len() / 4,
        "read only the header"
    );
}

/// Gemma 3's GGUF header, read as the judgement reads an upload.
async fn gemma3_header() -> candle_core::quantized::gguf_file::Content {
    let path = common::gemma3_path().await;
    let mut file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    candle_core::quantized::gguf_file::Content::read(&mut file).unwrap()
}

#[tokio::test]
async fn gemma3_is_servable_on_llama_cpp_and_not_on_candle() {
    let content = gemma3_header().await;
    let Servability::Servable(model) =
        servable::judge_content_for(&content, ServingEngine::LlamaCpp)
    else {
        panic!("Gemma 3 is servable on llama.cpp");
    };
    assert_eq!(model.engine, ServingEngine::LlamaCpp);
    assert_eq!(model.architecture.as_deref(), Some("gemma3"));
    assert!(model.quantisation.is_some());
    assert_eq!(
        model.context_tokens,
        Some(servable::LLAMA_CONTEXT_TOKENS_MAX)
    );
    // The weights as stored (about 240 MB) plus an f16 KV cache of 18 layers x 8192 tokens x
    // one 256-wide key and value head (about 150 MB).
    let kv_cache_bytes = 18 * 8192 * (256 + 256) * 2;
    assert!(
        model.memory_bytes > 200_000_000 + kv_cache_bytes
            && model.memory_bytes < 300_000_000 + kv_cache_bytes,
        "{}",
        model.memory_bytes
    );

    let on_candle = servable::judge_content_for(&content, ServingEngine::Candle);
    assert_eq!(
        on_candle.reason(),
        Some(&NotServable::Architecture {
            architecture: "gemma3".into(),
            supported: "llama".into()
        })
    );
}
