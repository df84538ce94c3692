#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]
//! The servability judgement on the real SmolLM2 file, read as the platform reads an upload: a
//! stream of chunks of which only the header is consumed.

mod common;

use aiforge_domain::serving::{Servability, ServingEngine};
use aiforge_inference::servable::judge_stream;
use futures::StreamExt;

#[tokio::test]
async fn smollm2_is_judged_servable_on_candle_from_its_header_alone() {
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
    assert_eq!(model.engine, ServingEngine::Candle);
    assert_eq!(model.architecture.as_deref(), Some("llama"));
    assert_eq!(model.quantisation.as_deref(), Some("Q4_1"));
    // Weights re-quantized to Q8_0 are larger than the file; the KV cache comes on top.
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
