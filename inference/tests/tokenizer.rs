#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]
//! The GGUF tokenizer of SmolLM2 against Hugging Face's `tokenizers` built from the same
//! vocabulary and merges (ids recorded from it), and round trips.

mod common;

/// (text, ids from Hugging Face `tokenizers` with SmolLM2's pre-tokenizer: isolated digits, then
/// byte-level GPT-2 regex; control tokens as added special tokens).
const REFERENCE: &[(&str, &[u32])] = &[
    ("Hello, world!", &[19556, 28, 905, 17]),
    (
        "The year 2024 had 366 days.",
        &[
            504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 38, 2009, 30,
        ],
    ),
    (
        "  leading spaces\tand\ttabs\n\nnewlines   end  ",
        &[
            216, 2899, 5600, 197, 397, 197, 100, 7366, 198, 198, 2241, 5110, 256, 1112, 256,
        ],
    ),
    (
        "naïve café — 東京 😀 emoji",
        &[
            3546, 46494, 37366, 1841, 17097, 247, 126, 16736, 122, 40303, 218, 649, 33777,
        ],
    ),
    (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        &[
            1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198,
        ],
    ),
    ("don't I'll we've", &[12420, 982, 339, 3060, 392, 3543]),
    // \x04 and \x06 have no token: dropped, and "a" and "b" are not merged across the gap.
    ("a\x04b c\x06", &[81, 82, 265]),
    (
        "x = [1, 2, 3]\nprint(x)",
        &[
            104, 446, 933, 33, 28, 216, 34, 28, 216, 35, 77, 198, 3272, 24, 104, 25,
        ],
    ),
];

#[tokio::test]
async fn encoding_matches_the_reference_tokenizer() {
    let engine = common::engine().await;
    let tok = engine.tokenizer();
    for (text, ids) in REFERENCE {
        assert_eq!(tok.encode(text, true), *ids, "{text:?}");
    }
}

#[tokio::test]
async fn decoding_inverts_encoding() {
    let engine = common::engine().await;
    let tok = engine.tokenizer();
    let representable = |t: &&str| {
        !t.contains("<|")
            && !t
                .chars()
                .any(|c| c.is_ascii_control() && !c.is_ascii_whitespace())
    };
    for (text, _) in REFERENCE.iter().filter(|(t, _)| representable(t)) {
        assert_eq!(tok.decode(&tok.encode(text, false)).unwrap(), *text);
    }
    let odd = "tabs\t\t\n \n  x\r\n Ünïcödé ∑ 🦀🦀 1234567890 ''' \u{200b}end";
    assert_eq!(tok.decode(&tok.encode(odd, false)).unwrap(), odd);
}

#[tokio::test]
async fn chat_markers_are_single_control_tokens_only_when_allowed() {
    let engine = common::engine().await;
    let tok = engine.tokenizer();
    assert_eq!(tok.encode("<|im_start|>", true), vec![1]);
    assert_eq!(tok.encode("<|im_end|>", true), vec![2]);
    assert_eq!(tok.bos_id(), 1);
    assert_eq!(tok.eos_id(), 2);
    assert_eq!(tok.vocab_size(), 49152);
    let plain = tok.encode("<|im_start|>", false);
    assert!(plain.len() > 1 && !plain.contains(&1));
    // Control tokens carry no text.
    assert_eq!(tok.decode(&[1, 19556, 2]).unwrap(), "Hello");
}
