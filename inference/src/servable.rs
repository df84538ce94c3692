//! Whether the engines of this crate can serve a model file, judged from its first bytes: the
//! GGUF header (metadata and tensor table), never the weights. The platform asks at upload, so a
//! model no engine runs is refused a service with the reason instead of answering `503` later.
//!
//! Built with the `llama` feature, llama.cpp serves every GGUF file (it is the faster engine and
//! runs more architectures, [`LLAMA_ARCHITECTURES`]): the judgement asks for an architecture in
//! that list, a tokenizer in the metadata, a chat template (the file's own, or the turn tokens of
//! a known format in its vocabulary) and memory for the weights as stored plus an f16 KV cache of
//! [`LLAMA_CONTEXT_TOKENS_MAX`] tokens. Without it, the judgement mirrors
//! what [`crate::CandleEngine::load`] needs: an architecture it builds, a tokenizer it can read
//! from the metadata, the chat template's tokens, and memory for the weights as loaded
//! (re-quantised per [`crate::WeightFormat`]) plus a full KV cache. Either way the judgement
//! names the engine ([`ServingEngine`]).

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

/// The architectures the llama.cpp engine (feature `llama`) is offered for: the families its
/// tests and benchmark run (llama, gemma3) and their close kin llama.cpp builds the same way.
pub const LLAMA_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"];

/// The longest context (prompt plus completion) the llama.cpp engine gives a request by default,
/// whatever longer window a model was trained for; its KV cache is counted for this many tokens.
pub const LLAMA_CONTEXT_TOKENS_MAX: u32 = 8192;

/// The engine this build serves GGUF files with: llama.cpp when built with the `llama` feature,
/// else candle.
pub const GGUF_ENGINE: ServingEngine = if cfg!(feature = "llama") {
    ServingEngine::LlamaCpp
} else {
    ServingEngine::Candle
};

/// Whether this build can serve a file judged for `engine`: llama.cpp also runs the llama
/// files judged for candle before it was built in.
pub fn serves(engine: ServingEngine) -> bool {
    engine == GGUF_ENGINE
        || (GGUF_ENGINE == ServingEngine::LlamaCpp && engine == ServingEngine::Candle)
}

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
    judge_content_for(content, GGUF_ENGINE)
}

/// The judgement of a read GGUF header for `engine` (`Candle` or `LlamaCpp`), whichever engine
/// this build has.
pub fn judge_content_for(content: &gguf_file::Content, engine: ServingEngine) -> Servability {
    let judged = if engine == ServingEngine::LlamaCpp {
        servable_on_llama_cpp(content)
    } else {
        servable_on_candle(content)
    };
    match judged {
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

fn architecture(content: &gguf_file::Content) -> Result<String, NotServable> {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| NotServable::UnreadableGguf {
            detail: "no general.architecture in the metadata".into(),
        })
}

/// The bytes of each tensor type as stored, largest first; the first is the quantisation.
fn stored_bytes_by_type(content: &gguf_file::Content) -> Vec<(GgmlDType, u64)> {
    let mut by_type: Vec<(GgmlDType, u64)> = Vec::new();
    for info in content.tensor_infos.values() {
        let dtype = info.ggml_dtype;
        let bytes =
            info.shape.elem_count() as u64 / dtype.block_size() as u64 * dtype.type_size() as u64;
        match by_type.iter_mut().find(|(t, _)| *t == dtype) {
            Some((_, total)) => *total += bytes,
            None => by_type.push((dtype, bytes)),
        }
    }
    by_type.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
    by_type
}

fn servable_on_llama_cpp(content: &gguf_file::Content) -> Result<ServableModel, NotServable> {
    let architecture = architecture(content)?;
    if !LLAMA_ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(NotServable::Architecture {
            architecture,
            supported: LLAMA_ARCHITECTURES.join(", "),
        });
    }
    let tokens: Vec<&str> = match content.metadata.get("tokenizer.ggml.tokens") {
        Some(gguf_file::Value::Array(tokens)) => tokens
            .iter()
            .filter_map(|t| t.to_string().ok().map(String::as_str))
            .collect(),
        _ => Vec::new(),
    };
    if tokens.is_empty() || !content.metadata.contains_key("tokenizer.ggml.model") {
        return Err(NotServable::Tokenizer {
            detail: "the metadata has no tokenizer (tokenizer.ggml.model and tokens)".into(),
        });
    }
    let own_template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .filter(|t| !t.trim().is_empty());
    match own_template {
        Some(source) => {
            if let Err(e) = crate::chat_template::ChatTemplate::new(source, "", "") {
                return Err(NotServable::Tokenizer {
                    detail: e.to_string(),
                });
            }
        }
        None => {
            let vocabulary: std::collections::HashSet<&str> = tokens.iter().copied().collect();
            if crate::chat_template::template_for_vocabulary(|t| vocabulary.contains(t)).is_none() {
                return Err(NotServable::Tokenizer {
                    detail: "no tokenizer.chat_template, and the vocabulary has the turn tokens of no known chat format".into(),
                });
            }
        }
    }

    let by_type = stored_bytes_by_type(content);
    let weight_bytes: u64 = by_type.iter().map(|(_, bytes)| bytes).sum();
    let quantisation = by_type.first().map(|(dtype, _)| format!("{dtype:?}"));
    // llama.cpp's KV cache: f16 keys and values per layer, for the longest context allowed.
    let key = |name: &str| format!("{architecture}.{name}");
    let trained = metadata_u64(content, &key("context_length")).unwrap_or(u64::MAX);
    let context_tokens = trained.min(u64::from(LLAMA_CONTEXT_TOKENS_MAX));
    let layers = metadata_u64(content, &key("block_count")).unwrap_or(0);
    let embedding = metadata_u64(content, &key("embedding_length")).unwrap_or(0);
    let heads = metadata_u64(content, &key("attention.head_count"))
        .unwrap_or(1)
        .max(1);
    let kv_heads = metadata_u64(content, &key("attention.head_count_kv")).unwrap_or(heads);
    let key_width =
        metadata_u64(content, &key("attention.key_length")).unwrap_or(embedding / heads);
    let value_width =
        metadata_u64(content, &key("attention.value_length")).unwrap_or(embedding / heads);
    let kv_cache_bytes = layers
        .saturating_mul(context_tokens)
        .saturating_mul(kv_heads.saturating_mul(key_width + value_width))
        .saturating_mul(2);
    Ok(ServableModel {
        engine: ServingEngine::LlamaCpp,
        architecture: Some(architecture),
        quantisation,
        memory_bytes: weight_bytes.saturating_add(kv_cache_bytes),
        context_tokens: u32::try_from(context_tokens).ok(),
    })
}

fn servable_on_candle(content: &gguf_file::Content) -> Result<ServableModel, NotServable> {
    let architecture = architecture(content)?;
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
                supported: if GGUF_ENGINE == ServingEngine::LlamaCpp {
                    LLAMA_ARCHITECTURES.join(", ")
                } else {
                    CANDLE_ARCHITECTURES.join(", ")
                }
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

    fn tokens(list: &[&str]) -> gguf_file::Value {
        gguf_file::Value::Array(
            list.iter()
                .map(|t| gguf_file::Value::String((*t).into()))
                .collect(),
        )
    }

    fn judged_on_llama_cpp(metadata: &[(&str, gguf_file::Value)]) -> Servability {
        let file = gguf(metadata);
        let content = gguf_file::Content::read(&mut Cursor::new(&file)).unwrap();
        judge_content_for(&content, ServingEngine::LlamaCpp)
    }

    #[test]
    fn every_architecture_llama_cpp_is_offered_for_is_servable_with_a_template_in_the_file() {
        for architecture in LLAMA_ARCHITECTURES {
            let judged = judged_on_llama_cpp(&[
                (
                    "general.architecture",
                    gguf_file::Value::String((*architecture).into()),
                ),
                (
                    "tokenizer.ggml.model",
                    gguf_file::Value::String("gpt2".into()),
                ),
                ("tokenizer.ggml.tokens", tokens(&["a", "b"])),
                (
                    "tokenizer.chat_template",
                    gguf_file::Value::String(crate::chat_template::CHATML.into()),
                ),
            ]);
            let Servability::Servable(model) = judged else {
                panic!("{architecture}: {judged:?}");
            };
            assert_eq!(model.engine, ServingEngine::LlamaCpp);
            assert_eq!(model.architecture.as_deref(), Some(*architecture));
        }
    }

    #[test]
    fn a_file_without_a_template_is_servable_on_llama_cpp_only_if_its_vocabulary_names_a_turn_format(
    ) {
        let gemma_turns = judged_on_llama_cpp(&[
            (
                "general.architecture",
                gguf_file::Value::String("gemma3".into()),
            ),
            (
                "tokenizer.ggml.model",
                gguf_file::Value::String("llama".into()),
            ),
            (
                "tokenizer.ggml.tokens",
                tokens(&["<bos>", "<start_of_turn>", "<end_of_turn>"]),
            ),
        ]);
        assert!(gemma_turns.is_servable(), "{gemma_turns:?}");
        let no_turns = judged_on_llama_cpp(&[
            (
                "general.architecture",
                gguf_file::Value::String("qwen3".into()),
            ),
            (
                "tokenizer.ggml.model",
                gguf_file::Value::String("gpt2".into()),
            ),
            ("tokenizer.ggml.tokens", tokens(&["a", "b"])),
        ]);
        assert!(
            matches!(no_turns.reason(), Some(NotServable::Tokenizer { .. })),
            "{no_turns:?}"
        );
    }

    #[test]
    fn an_architecture_llama_cpp_is_not_offered_for_is_named_in_the_reason() {
        let judged = judged_on_llama_cpp(&[(
            "general.architecture",
            gguf_file::Value::String("mamba".into()),
        )]);
        assert_eq!(
            judged.reason(),
            Some(&NotServable::Architecture {
                architecture: "mamba".into(),
                supported: LLAMA_ARCHITECTURES.join(", "),
            })
        );
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
