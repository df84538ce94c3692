//! Whether a model file can be served by an engine of this platform, decided once when the file
//! is uploaded (or imported) and recorded with the model (`ModelServabilityAssessed`).
//!
//! The facts come from outside (the file's GGUF metadata, read by `aiforge-inference`, and the
//! memory budget of the nodes); the rules here only say what they mean: a model that is not
//! servable may be sold as a download, but no API service can be created for it, so a buyer
//! never meets it as a `503` at call time. Models recorded before this assessment existed have
//! none and keep the rules they were sold under.

use serde::{Deserialize, Serialize};

/// The engines a servable file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingEngine {
    /// The built-in GGUF engine (candle, on the CPU).
    Candle,
    /// llama.cpp (nodes built with the `llama` feature): more architectures than candle
    /// (qwen2/qwen3, gemma2/gemma3, phi3), and faster.
    LlamaCpp,
    /// An OpenAI-compatible upstream named by an AIForge upstream model card.
    Upstream,
}

/// Why no engine here can serve a file. `Display` is the sentence shown to its creator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum NotServable {
    #[error("the file is not a GGUF model (it may be sold as a download, not served)")]
    NotGguf,
    #[error("the GGUF metadata cannot be read: {detail}")]
    UnreadableGguf { detail: String },
    #[error("no engine here runs the architecture '{architecture}' (supported: {supported})")]
    Architecture {
        architecture: String,
        supported: String,
    },
    #[error("no engine here runs the quantisation {quantisation}")]
    Quantisation { quantisation: String },
    #[error("the tokenizer or chat template cannot be used: {detail}")]
    Tokenizer { detail: String },
    #[error("the model needs about {memory_bytes} bytes of memory; the largest node budget here is {budget_bytes}")]
    TooLarge {
        memory_bytes: u64,
        budget_bytes: u64,
    },
}

impl NotServable {
    /// The stable machine-readable code (the `code` of its JSON).
    pub fn code(&self) -> &'static str {
        match self {
            NotServable::NotGguf => "not_gguf",
            NotServable::UnreadableGguf { .. } => "unreadable_gguf",
            NotServable::Architecture { .. } => "architecture",
            NotServable::Quantisation { .. } => "quantisation",
            NotServable::Tokenizer { .. } => "tokenizer",
            NotServable::TooLarge { .. } => "too_large",
        }
    }
}

/// What a servable file is: enough for placement to decide where it fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServableModel {
    pub engine: ServingEngine,
    /// `general.architecture` of a GGUF file.
    pub architecture: Option<String>,
    /// The most common tensor type of a GGUF file (`Q4_1`, `Q8_0`, ...).
    pub quantisation: Option<String>,
    /// Memory the engine needs to hold it (weights as loaded and the KV cache); 0 for upstreams.
    pub memory_bytes: u64,
    pub context_tokens: Option<u32>,
}

/// The assessment recorded with a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Servability {
    Servable(ServableModel),
    NotServable { reason: NotServable },
}

impl Servability {
    pub fn is_servable(&self) -> bool {
        matches!(self, Servability::Servable(_))
    }

    /// The reason a model cannot be served, if it cannot.
    pub fn reason(&self) -> Option<&NotServable> {
        match self {
            Servability::Servable(_) => None,
            Servability::NotServable { reason } => Some(reason),
        }
    }

    /// A servable model that needs more than `budget_bytes` is not servable here.
    pub fn within_budget(self, budget_bytes: u64) -> Self {
        match self {
            Servability::Servable(model) if model.memory_bytes > budget_bytes => {
                Servability::NotServable {
                    reason: NotServable::TooLarge {
                        memory_bytes: model.memory_bytes,
                        budget_bytes,
                    },
                }
            }
            other => other,
        }
    }
}

/// The first line of an upstream model card, the file that stands for a model an
/// OpenAI-compatible upstream serves (`base_url:` and `model:` lines follow).
pub const UPSTREAM_CARD_HEADER: &str = "aiforge upstream model card\n";

/// Whether `prefix` (the first bytes of a file) opens an upstream model card.
pub fn is_upstream_card(prefix: &[u8]) -> bool {
    prefix.starts_with(UPSTREAM_CARD_HEADER.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servable(memory_bytes: u64) -> Servability {
        Servability::Servable(ServableModel {
            engine: ServingEngine::Candle,
            architecture: Some("llama".into()),
            quantisation: Some("Q4_1".into()),
            memory_bytes,
            context_tokens: Some(2048),
        })
    }

    #[test]
    fn a_model_larger_than_the_budget_is_not_servable_and_says_how_large() {
        let judged = servable(600).within_budget(500);
        assert_eq!(
            judged.reason(),
            Some(&NotServable::TooLarge {
                memory_bytes: 600,
                budget_bytes: 500
            })
        );
        assert!(servable(500).within_budget(500).is_servable());
    }

    #[test]
    fn the_assessment_reads_back_as_it_was_written() {
        for assessment in [
            servable(1),
            Servability::NotServable {
                reason: NotServable::Architecture {
                    architecture: "mamba".into(),
                    supported: "llama".into(),
                },
            },
        ] {
            let json = serde_json::to_value(&assessment).unwrap();
            let status = if assessment.is_servable() {
                "servable"
            } else {
                "not_servable"
            };
            assert_eq!(json["status"], status);
            let back: Servability = serde_json::from_value(json).unwrap();
            assert_eq!(back, assessment);
        }
    }

    #[test]
    fn only_a_file_opening_with_the_card_header_is_an_upstream_card() {
        assert!(is_upstream_card(
            b"aiforge upstream model card\nbase_url: x\nmodel: m\n"
        ));
        assert!(!is_upstream_card(b"GGUF\x03\0\0\0"));
        assert!(!is_upstream_card(b"aiforge upstream"));
    }
}
