//! The pure core of AIForge: aggregates, their commands and events, money and the rules that
//! decide what may happen. Nothing here performs IO, reads a clock or makes an id: those enter
//! through each aggregate's `Services` port or through the command itself, so every rule here is
//! unit-testable in microseconds. No tokio, no sqlx, no HTTP.

pub mod account;
pub mod admin;
pub mod admission;
pub mod api_subscription;
pub mod blob;
pub mod cid;
pub mod fee_book;
pub mod fees;
pub mod group;
pub mod inference_pay;
pub mod job;
pub mod ledger;
pub mod merkle;
pub mod model;
pub mod money;
pub mod node;
pub mod node_protocol;
pub mod payment;
pub mod payout;
pub mod payout_receipt;
pub mod placement;
pub mod platform_key;
pub mod revenue;
pub mod revenue_book;
pub mod scheduler;
pub mod service;
pub mod serving;
pub mod subscription;
pub mod usage;
pub mod wallet;

pub use money::{MoneyError, Usdt};

use std::ops::RangeInclusive;

/// `text` trimmed, when its length in characters is within `chars` and it holds no character
/// that hides or disguises text: the one rule for names and descriptions of groups, models,
/// services and nodes. Refused: control characters (NUL and the rest; a tab and line breaks
/// excepted, descriptions have paragraphs) and the bidirectional embedding, override and
/// isolate controls (U+202A-U+202E, U+2066-U+2069), which make a name read as another.
pub fn trimmed_within(text: &str, chars: std::ops::RangeInclusive<usize>) -> Option<String> {
    let text = text.trim();
    (chars.contains(&text.chars().count()) && text.chars().all(is_plain_text_char))
        .then(|| text.to_string())
}

/// Not a control character (but `\t`, `\n`, `\r`) nor a bidirectional control.
pub fn is_plain_text_char(c: char) -> bool {
    let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    !bidi && (!c.is_control() || matches!(c, '\t' | '\n' | '\r'))
}

/// A SHA-256 digest as lower-case hex, the one form digests take in events.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A number outside its allowed range; `field` names it as the API does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be within {min}..={max}, got {got}")]
pub struct OutOfRange {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
    pub got: u64,
}

/// `got` within `range`, or the error that names `field`.
pub fn within(
    field: &'static str,
    got: impl Into<u64>,
    range: &RangeInclusive<u64>,
) -> Result<(), OutOfRange> {
    let got = got.into();
    if range.contains(&got) {
        Ok(())
    } else {
        Err(OutOfRange {
            field,
            min: *range.start(),
            max: *range.end(),
            got,
        })
    }
}

/// An error and its whole `source()` chain, `outer: inner: root`, for the log (never for a client).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` and `{0}` wrappers repeat their source's text: say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn names_and_descriptions_refuse_nul_and_bidirectional_overrides() {
        assert_eq!(trimmed_within(" Llama ", 1..=10).as_deref(), Some("Llama"));
        assert_eq!(
            trimmed_within("two\nlines\tok", 1..=20).as_deref(),
            Some("two\nlines\tok")
        );
        for bad in ["a\0b", "evil\u{202E}txt.exe", "x\u{2066}y", "bell\u{7}"] {
            assert_eq!(trimmed_within(bad, 1..=100), None, "{bad:?}");
        }
    }
}
