//! The byte-level BPE tokenizer of GPT-2 style GGUF models (`tokenizer.ggml.model = gpt2`), built
//! from the GGUF metadata alone: `tokenizer.ggml.tokens`, `tokenizer.ggml.merges`,
//! `tokenizer.ggml.token_type`, the bos/eos ids and the pre-tokenizer name.
//!
//! Text is split first at control tokens (`<|im_start|>`, `<|im_end|>`, ...) when the caller allows
//! them, then by the pre-tokenizer (GPT-2's regex; SmolLM also isolates every digit), then every
//! piece is mapped byte by byte to GPT-2's printable alphabet and merged by rank. Decoding maps the
//! alphabet back to bytes; `Utf8Stream` turns those bytes into text without splitting a character.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use regex::Regex;

/// GGUF `tokenizer.ggml.token_type` of control tokens (llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`).
const TOKEN_TYPE_CONTROL: i32 = 3;

/// GPT-2's pre-tokenizer regex without its `\s+(?!\S)` look-ahead, which the `regex` crate does
/// not have; `pre_split` puts the look-ahead back by hand.
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata `{key}`: {problem}")]
    Metadata { key: &'static str, problem: String },
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("token id {0} is outside the vocabulary")]
    UnknownId(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizer {
    Gpt2,
    /// GPT-2's regex after isolating every `\p{N}` character (SmolLM, llama.cpp's `smollm`).
    Gpt2DigitsIsolated,
}

#[derive(Debug)]
pub struct Tokenizer {
    /// Token text in GPT-2's byte alphabet (control tokens: their literal text).
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    /// (left, right) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    is_control: Vec<bool>,
    /// Control tokens by text, longest first so that the longest one matches.
    controls: Vec<(String, u32)>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// The single-character token of every byte; `None` for bytes the vocabulary lacks
    /// (SmolLM2 has no token for some ASCII control characters nor for bytes that never occur
    /// in UTF-8).
    byte_ids: [Option<u32>; 256],
    pre: PreTokenizer,
    pattern: Regex,
    digit: Regex,
    bos_id: u32,
    eos_id: u32,
    add_bos: bool,
}

fn metadata<'a>(
    ct: &'a gguf_file::Content,
    key: &'static str,
) -> Result<&'a gguf_file::Value, TokenizerError> {
    ct.metadata.get(key).ok_or(TokenizerError::Metadata {
        key,
        problem: "missing".into(),
    })
}

fn bad(key: &'static str, problem: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Metadata {
        key,
        problem: problem.to_string(),
    }
}

fn string_list(ct: &gguf_file::Content, key: &'static str) -> Result<Vec<String>, TokenizerError> {
    metadata(ct, key)?
        .to_vec()
        .map_err(|e| bad(key, e))?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| bad(key, e)))
        .collect()
}

fn int_value(v: &gguf_file::Value) -> Option<i64> {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => Some(i64::from(*x)),
        V::I8(x) => Some(i64::from(*x)),
        V::U16(x) => Some(i64::from(*x)),
        V::I16(x) => Some(i64::from(*x)),
        V::U32(x) => Some(i64::from(*x)),
        V::I32(x) => Some(i64::from(*x)),
        V::U64(x) => i64::try_from(*x).ok(),
        V::I64(x) => Some(*x),
        _ => None,
    }
}

fn id_value(ct: &gguf_file::Content, key: &'static str) -> Result<u32, TokenizerError> {
    let v = metadata(ct, key)?;
    int_value(v)
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| bad(key, "not a token id"))
}

/// GPT-2's map from bytes to printable characters: printable Latin-1 bytes stand for themselves,
/// the others are shifted to 256 and above.
fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            let c = next;
            next += 1;
            c
        };
        map[usize::from(b)] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    map
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self, TokenizerError> {
        let model = metadata(ct, "tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| bad("tokenizer.ggml.model", e))?;
        if model != "gpt2" {
            return Err(TokenizerError::Unsupported(format!(
                "tokenizer.ggml.model = {model} (only byte-level BPE, `gpt2`, is built in)"
            )));
        }
        let pre = match ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
        {
            None | Some("gpt2" | "default") => PreTokenizer::Gpt2,
            Some("smollm") => PreTokenizer::Gpt2DigitsIsolated,
            Some(other) => {
                return Err(TokenizerError::Unsupported(format!(
                    "tokenizer.ggml.pre = {other}"
                )))
            }
        };
        let tokens = string_list(ct, "tokenizer.ggml.tokens")?;
        let vocab = u32::try_from(tokens.len())
            .map_err(|_| bad("tokenizer.ggml.tokens", "too many tokens"))?;
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => v
                .to_vec()
                .map_err(|e| bad("tokenizer.ggml.token_type", e))?
                .iter()
                .map(|t| {
                    int_value(t)
                        .and_then(|x| i32::try_from(x).ok())
                        .ok_or_else(|| bad("tokenizer.ggml.token_type", "not an integer"))
                })
                .collect::<Result<_, _>>()?,
        };
        if types.len() != tokens.len() {
            return Err(bad(
                "tokenizer.ggml.token_type",
                "length differs from tokenizer.ggml.tokens",
            ));
        }
        let ids: HashMap<String, u32> = tokens.iter().cloned().zip(0..vocab).collect();
        let mut merges = HashMap::new();
        for (rank, line) in string_list(ct, "tokenizer.ggml.merges")?.iter().enumerate() {
            let rank = u32::try_from(rank).map_err(|_| bad("tokenizer.ggml.merges", "too many"))?;
            let (left, right) = line
                .split_once(' ')
                .ok_or_else(|| bad("tokenizer.ggml.merges", format!("no space in {line:?}")))?;
            let (Some(&l), Some(&r), Some(&m)) = (
                ids.get(left),
                ids.get(right),
                ids.get(&format!("{left}{right}")),
            ) else {
                return Err(bad(
                    "tokenizer.ggml.merges",
                    format!("{line:?} names a token outside the vocabulary"),
                ));
            };
            // The first (lowest) rank of a pair wins, as in Hugging Face's tokenizers.
            merges.entry((l, r)).or_insert((rank, m));
        }
        let is_control: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let mut controls: Vec<(String, u32)> = tokens
            .iter()
            .zip(0..vocab)
            .filter(|(t, id)| is_control[*id as usize] && !t.is_empty())
            .map(|(t, id)| (t.clone(), id))
            .collect();
        controls.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        let byte_to_char = byte_alphabet();
        let char_to_byte = (0..=255u8)
            .map(|b| (byte_to_char[usize::from(b)], b))
            .collect();
        let mut byte_ids = [None; 256];
        for b in 0..=255u8 {
            let c = byte_to_char[usize::from(b)].to_string();
            byte_ids[usize::from(b)] = ids.get(&c).copied();
        }
        let bos_id = id_value(ct, "tokenizer.ggml.bos_token_id")?;
        let eos_id = id_value(ct, "tokenizer.ggml.eos_token_id")?;
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", bos_id),
            ("tokenizer.ggml.eos_token_id", eos_id),
        ] {
            if id >= vocab {
                return Err(bad(key, format!("{id} is outside the vocabulary")));
            }
        }
        let add_bos = ct
            .metadata
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let pattern = Regex::new(GPT2_PATTERN)
            .map_err(|e| TokenizerError::Unsupported(format!("pre-tokenizer regex: {e}")))?;
        let digit = Regex::new(r"\p{N}")
            .map_err(|e| TokenizerError::Unsupported(format!("digit regex: {e}")))?;
        Ok(Self {
            tokens,
            ids,
            merges,
            is_control,
            controls,
            byte_to_char,
            char_to_byte,
            byte_ids,
            pre,
            pattern,
            digit,
            bos_id,
            eos_id,
            add_bos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Whether the model expects a bos token in front of every prompt
    /// (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The id of a token given by its exact text (for control tokens: `<|im_end|>`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.is_control.get(id as usize).copied().unwrap_or(false)
    }

    /// Encodes text. With `allow_control`, control-token texts (`<|im_start|>`) in `text` become
    /// their single token; without it they are encoded as ordinary text, so that user content
    /// cannot forge the chat template. No bos token is added.
    pub fn encode(&self, text: &str, allow_control: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if !allow_control {
            self.encode_ordinary(text, &mut out);
            return out;
        }
        let mut rest = text;
        while !rest.is_empty() {
            match self.next_control(rest) {
                Some((at, len, id)) => {
                    self.encode_ordinary(&rest[..at], &mut out);
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_ordinary(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// The earliest control token in `text`: (byte offset, byte length, id).
    fn next_control(&self, text: &str) -> Option<(usize, usize, u32)> {
        let mut best: Option<(usize, usize, u32)> = None;
        for (t, id) in &self.controls {
            if let Some(at) = text.find(t.as_str()) {
                // Longest first, so on a tie of position the longer token is kept.
                if best.is_none_or(|(b, _, _)| at < b) {
                    best = Some((at, t.len(), *id));
                }
            }
        }
        best
    }

    fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) {
        for piece in self.pre_split(text) {
            self.bpe(piece, out);
        }
    }

    /// Splits text the way the model's pre-tokenizer does.
    fn pre_split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        match self.pre {
            PreTokenizer::Gpt2 => self.gpt2_split(text, &mut pieces),
            PreTokenizer::Gpt2DigitsIsolated => {
                let mut last = 0;
                for m in self.digit.find_iter(text) {
                    self.gpt2_split(&text[last..m.start()], &mut pieces);
                    pieces.push(m.as_str());
                    last = m.end();
                }
                self.gpt2_split(&text[last..], &mut pieces);
            }
        }
        pieces
    }

    fn gpt2_split<'t>(&self, text: &'t str, pieces: &mut Vec<&'t str>) {
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.pattern.find_at(text, pos) else {
                // The pattern matches every character; this is only a guard against looping.
                pieces.push(&text[pos..]);
                break;
            };
            let mut end = m.end();
            let s = m.as_str();
            // GPT-2's `\s+(?!\S)`: a run of whitespace followed by text leaves its last character
            // to the next piece (so " word" keeps its space), unless the run is one character.
            if end < text.len() && s.chars().all(char::is_whitespace) {
                if let Some((last, _)) = s.char_indices().last() {
                    if last > 0 {
                        end = m.start() + last;
                    }
                }
            }
            pieces.push(&text[m.start()..end]);
            pos = end;
        }
    }

    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        // A byte without a token stays in place as a barrier to merges and is then dropped, as
        // Hugging Face's BPE does when the model has no unknown token.
        let mut symbols: Vec<Option<u32>> = piece
            .bytes()
            .map(|b| self.byte_ids[usize::from(b)])
            .collect();
        // Merge the adjacent pair of lowest rank until none is left; pieces are short (words), so
        // the quadratic scan costs less than a heap.
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for (i, pair) in symbols.windows(2).enumerate() {
                let (Some(left), Some(right)) = (pair[0], pair[1]) else {
                    continue;
                };
                if let Some(&(rank, merged)) = self.merges.get(&(left, right)) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            symbols[i] = Some(merged);
            symbols.remove(i + 1);
        }
        out.extend(symbols.into_iter().flatten());
    }

    /// The bytes a token stands for. Control tokens stand for nothing: they are structure, not
    /// text, and Hugging Face's `skip_special_tokens` drops them the same way.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        let text = self
            .tokens
            .get(id as usize)
            .ok_or(TokenizerError::UnknownId(id))?;
        if self.is_control(id) {
            return Ok(Vec::new());
        }
        let mut bytes = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.char_to_byte.get(&c) {
                Some(&b) => bytes.push(b),
                // Not in the byte alphabet (user-defined tokens): the text itself.
                None => bytes.extend_from_slice(c.to_string().as_bytes()),
            }
        }
        Ok(bytes)
    }

    /// Decodes tokens to text (control tokens dropped, invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The text of a token as the vocabulary spells it (byte alphabet), for diagnostics.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// GPT-2's printable stand-in for a byte.
    pub fn byte_char(&self, b: u8) -> char {
        self.byte_to_char[usize::from(b)]
    }
}

/// Turns a stream of token bytes into text without ever splitting a UTF-8 character: bytes of an
/// unfinished character wait for the next token.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: keep it for later.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_alphabet_is_a_bijection() {
        let map = byte_alphabet();
        let set: std::collections::HashSet<char> = map.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(map[usize::from(b' ')], 'Ġ');
        assert_eq!(map[usize::from(b'\n')], 'Ċ');
        assert_eq!(map[usize::from(b'a')], 'a');
    }

    #[test]
    fn utf8_stream_never_splits_a_character() {
        let mut s = Utf8Stream::default();
        let bytes = "é€".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert!(s.is_pending());
        assert_eq!(s.push(&bytes[3..]), "€");
        assert_eq!(s.push(&[0xFF, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xE2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
