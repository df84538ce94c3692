//! Whether the engines of this crate can serve a model file, judged from its first bytes: the
//! GGUF header (metadata and tensor table), never the weights. The platform asks at upload, so a
//! model no engine runs is refused a service with the reason instead of answering `503` later.
//!
//! The judgement mirrors what [`crate::CandleEngine::load`] needs: an architecture it builds, a
//! tokenizer it can read from the metadata, the chat template's tokens, and memory for the
//! weights as loaded (re-quantised per [`crate::WeightFormat`]) plus a full KV cache.

use std::io::Cursor;

use aiforge_domain::serving::{
    is_upstream_card, NotServable, Servability, ServableModel, ServingEngine,
};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

use crate::tokenizer::Tokenizer;

/// The most of a file's first bytes read to find its GGUF header. Real headers hold the whole
/// vocabulary (Gemma 3's 262,144 tokens with scores and types: about 6 MiB); a header larger than
/// this is refused as unreadable rather than buffered without bound.
pub const GGUF_HEADER_BYTES_MAX: usize = 64 << 20;

/// The architectures [`crate::CandleEngine`] builds (`general.architecture`).
pub const CANDLE_ARCHITECTURES: &[&str] = &["llama"];

/// What the first bytes of a file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The answer.
    Known(Servability),
    /// The GGUF header goes on past `prefix`: read more (up to [`GGUF_HEADER_BYTES_MAX`]).
    NeedMore,
}

fn not_servable(reason: NotServable) -> Judgement {
    Judgement::Known(Servability::NotServable { reason })
}

/// Judges a file from `prefix`, its first bytes (all of it when `prefix.len() == file_bytes`).
/// Memory is not compared with any budget here: see [`Servability::within_budget`].
pub fn judge(prefix: &[u8], file_bytes: u64) -> Judgement {
    if is_upstream_card(prefix) {
        return Judgement::Known(Servability::Servable(ServableModel {
            engine: ServingEngine::Upstream,
            architecture: None,
            quantisation: None,
            memory_bytes: 0,
            context_tokens: None,
        }));
    }
    let whole = u64::try_from(prefix.len()).map_or(true, |n| n >= file_bytes);
    if !prefix.starts_with(b"GGUF") {
        return if prefix.len() < 4 && !whole {
            Judgement::NeedMore
        } else {
            not_servable(NotServable::NotGguf)
        };
    }
    let content = match gguf_file::Content::read(&mut Cursor::new(prefix)) {
        Ok(content) => content,
        // Any failure inside a cut-off prefix may just be the cut: read more first.
        Err(_) if !whole && prefix.len() < GGUF_HEADER_BYTES_MAX => return Judgement::NeedMore,
        Err(e) if !whole => {
            return not_servable(NotServable::UnreadableGguf {
                detail: format!(
                    "the header is larger than {GGUF_HEADER_BYTES_MAX} bytes or broken ({e})"
                ),
            })
        }
        Err(e) => {
            return not_servable(NotServable::UnreadableGguf {
                detail: e.to_string(),
            })
        }
    };
    Judgement::Known(judge_content(&content))
}

/// Judges a file from its bytes as they stream, reading no more than its header needs (at most
/// [`GGUF_HEADER_BYTES_MAX`]); the rest of the stream is never read. Fails only when the
/// stream does.
pub async fn judge_stream<S, E>(mut bytes: S, file_bytes: u64) -> Result<Servability, E>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    use futures::StreamExt;
    let mut prefix: Vec<u8> = Vec::new();
    // Try at 64 KiB, then each time the prefix has grown fourfold: few parses, little waste.
    let mut next_try = 64 << 10;
    loop {
        let chunk = bytes.next().await.transpose()?;
        let ended = chunk.is_none();
        if let Some(chunk) = chunk {
            let room = GGUF_HEADER_BYTES_MAX - prefix.len();
            prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        let full = prefix.len() >= GGUF_HEADER_BYTES_MAX;
        if ended || full || prefix.len() >= next_try {
            // A stream that ended early is judged as the whole file it turned out to be.
            let file_bytes = if ended {
                prefix.len() as u64
            } else {
                file_bytes
            };
            match judge(&prefix, file_bytes) {
                Judgement::Known(servability) => return Ok(servability),
                Judgement::NeedMore if ended || full => {
                    return Ok(Servability::NotServable {
                        reason: NotServable::UnreadableGguf {
                            detail: "the header does not end within the file".into(),
                        },
                    })
                }
                Judgement::NeedMore => next_try = prefix.len().saturating_mul(4),
            }
        }
    }
}

/// The judgement of a read GGUF header.
pub fn judge_content(content: &gguf_file::Content) -> Servability {
    match servable_on_candle(content) {
        Ok(model) => Servability::Servable(model),
        Err(reason) => Servability::NotServable { reason },
    }
}

fn metadata_u64(content: &gguf_file::Content, key: &str) -> Option<u64> {
    content
        .metadata
        .get(key)
        .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
}

fn servable_on_candle(content: &gguf_file::Content) -> Result<ServableModel, NotServable> {
    let architecture = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| NotServable::UnreadableGguf {
            detail: "no general.architecture in the metadata".into(),
        })?;
    if !CANDLE_ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(NotServable::Architecture {
            architecture,
            supported: CANDLE_ARCHITECTURES.join(", "),
        });
    }
    let tokenizer = Tokenizer::from_gguf(content).map_err(|e| NotServable::Tokenizer {
        detail: e.to_string(),
    })?;
    for control in [crate::candle_engine::IM_START, crate::candle_engine::IM_END] {
        if tokenizer.token_id(control).is_none() {
            return Err(NotServable::Tokenizer {
                detail: format!(
                    "the vocabulary has no {control} token of the ChatML chat template"
                ),
            });
        }
    }

    let weights = crate::WeightFormat::default();
    let mut weight_bytes = 0u64;
    let mut by_type: Vec<(GgmlDType, u64)> = Vec::new();
    for info in content.tensor_infos.values() {
        let stored = info.ggml_dtype;
        let loaded = weights.loaded_as(stored);
        let elements = info.shape.elem_count() as u64;
        let bytes_as =
            |dtype: GgmlDType| elements / dtype.block_size() as u64 * dtype.type_size() as u64;
        weight_bytes = weight_bytes.saturating_add(bytes_as(loaded));
        match by_type.iter_mut().find(|(t, _)| *t == stored) {
            Some((_, total)) => *total += bytes_as(stored),
            None => by_type.push((stored, bytes_as(stored))),
        }
    }
    let quantisation = by_type
        .iter()
        .max_by_key(|(_, bytes)| *bytes)
        .map(|(dtype, _)| format!("{dtype:?}"));

    // The KV cache at the longest context the engine allows: f32 keys and values per layer.
    let key = |name: &str| format!("{architecture}.{name}");
    let trained = metadata_u64(content, &key("context_length")).unwrap_or(MAX_SEQ_LEN as u64);
    let context_tokens = trained.min(MAX_SEQ_LEN as u64);
    let layers = metadata_u64(content, &key("block_count")).unwrap_or(0);
    let embedding = metadata_u64(content, &key("embedding_length")).unwrap_or(0);
    let heads = metadata_u64(content, &key("attention.head_count"))
        .unwrap_or(1)
        .max(1);
    let kv_heads = metadata_u64(content, &key("attention.head_count_kv")).unwrap_or(heads);
    let kv_width = embedding / heads * kv_heads;
    let kv_cache_bytes = layers
        .saturating_mul(2)
        .saturating_mul(context_tokens)
        .saturating_mul(kv_width)
        .saturating_mul(4);

    Ok(ServableModel {
        engine: ServingEngine::Candle,
        architecture: Some(architecture),
        quantisation,
        memory_bytes: weight_bytes.saturating_add(kv_cache_bytes),
        context_tokens: u32::try_from(context_tokens).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// A GGUF file with `metadata` and one small F32 tensor, written by candle's own writer.
    fn gguf(metadata: &[(&str, gguf_file::Value)]) -> Vec<u8> {
        let tensor = QTensor::quantize(
            &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap();
        let metadata: Vec<(&str, &gguf_file::Value)> =
            metadata.iter().map(|(k, v)| (*k, v)).collect();
        let mut out = Cursor::new(Vec::new());
        gguf_file::write(&mut out, &metadata, &[("token_embd.weight", &tensor)]).unwrap();
        out.into_inner()
    }

    fn reason(judgement: Judgement) -> NotServable {
        match judgement {
            Judgement::Known(Servability::NotServable { reason }) => reason,
            other => panic!("expected not servable, got {other:?}"),
        }
    }

    #[test]
    fn random_bytes_are_not_a_gguf_model() {
        let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert_eq!(reason(judge(&bytes, 4096)), NotServable::NotGguf);
    }

    #[test]
    fn a_truncated_header_asks_for_more_bytes_then_is_unreadable_when_the_file_ends() {
        let file = gguf(&[(
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        )]);
        let cut = &file[..20];
        assert_eq!(judge(cut, file.len() as u64), Judgement::NeedMore);
        assert!(matches!(
            reason(judge(cut, cut.len() as u64)),
            NotServable::UnreadableGguf { .. }
        ));
    }

    #[test]
    fn an_architecture_no_engine_runs_is_named_in_the_reason() {
        let file = gguf(&[(
            "general.architecture",
            gguf_file::Value::String("mamba".into()),
        )]);
        assert_eq!(
            reason(judge(&file, file.len() as u64)),
            NotServable::Architecture {
                architecture: "mamba".into(),
                supported: "llama".into()
            }
        );
    }

    #[test]
    fn a_llama_file_without_a_tokenizer_is_not_servable() {
        let file = gguf(&[(
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        )]);
        assert!(matches!(
            reason(judge(&file, file.len() as u64)),
            NotServable::Tokenizer { .. }
        ));
    }

    #[test]
    fn an_upstream_card_is_served_by_an_upstream() {
        let card = b"aiforge upstream model card\nbase_url: http://x/v1\nmodel: m\n";
        let Judgement::Known(Servability::Servable(model)) = judge(card, card.len() as u64) else {
            panic!("a card is servable");
        };
        assert_eq!(model.engine, ServingEngine::Upstream);
    }
}
