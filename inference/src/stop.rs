//! Stop sequences over streamed text. Text arrives in pieces whose boundaries have nothing to do
//! with the stop strings, so the tail that could still grow into a stop string is held back until
//! the next piece decides it. A stop string therefore never starts in text already emitted.
//! [`TokenText`] is the engines' side of it: tokens in, deltas out, usage counted.

use tokio::sync::mpsc;

use crate::engine::{Delta, FinishReason};
use crate::tokenizer::Utf8Stream;

/// What to do with the text pushed so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text that can be sent now.
    pub emit: String,
    /// A stop sequence was found: `emit` ends right before it and generation must end.
    pub stopped: bool,
}

#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds a piece of generated text.
    pub fn push(&mut self, piece: &str) -> StopStep {
        self.held.push_str(piece);
        // The earliest stop string wins, as in OpenAI's API.
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = earliest {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopStep {
                emit,
                stopped: true,
            };
        }
        let keep = self.longest_suffix_that_starts_a_stop();
        let split = self.held.len() - keep;
        let emit = self.held[..split].to_string();
        self.held.drain(..split);
        StopStep {
            emit,
            stopped: false,
        }
    }

    /// Text held back that turned out not to be a stop sequence, at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether some text is held back (so not everything pushed has been emitted).
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    fn longest_suffix_that_starts_a_stop(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            // A proper prefix of `stop` that is a suffix of `held`; full matches were handled.
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start)
                    && stop.is_char_boundary(len)
                    && stop.as_bytes()[..len] == self.held.as_bytes()[start..]
                {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

/// How a generation ended, and the completion tokens its usage counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub reason: FinishReason,
    pub completion_tokens: u32,
}

/// The text side of one generation, shared by the engines' decode loops: each generated token's
/// bytes go through UTF-8 reassembly and the stop sequences to the receiver, and the usage is
/// counted however the generation ends. Every generated token counts when it ends by itself, by
/// a stop sequence or by length (the end-of-turn token included); when the receiver leaves, only
/// the tokens whose text reached it in full (none of it held back) count.
pub struct TokenText {
    utf8: Utf8Stream,
    stops: StopMatcher,
    deltas: mpsc::Sender<Delta>,
    completion_max: u32,
    generated: u32,
    delivered: u32,
}

impl TokenText {
    pub fn new(stops: &[String], completion_max: u32, deltas: mpsc::Sender<Delta>) -> Self {
        Self {
            utf8: Utf8Stream::default(),
            stops: StopMatcher::new(stops),
            deltas,
            completion_max,
            generated: 0,
            delivered: 0,
        }
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> u32 {
        self.generated
    }

    /// `Some` when the receiver has left: stop generating.
    pub fn cancelled(&self) -> Option<Ended> {
        self.deltas
            .is_closed()
            .then(|| self.ended(FinishReason::Cancelled))
    }

    /// The model generated its end-of-generation token.
    pub fn end(&mut self) -> Ended {
        self.generated += 1;
        match self.flush() {
            Ok(_) => self.ended(FinishReason::Stop),
            Err(()) => self.ended(FinishReason::Cancelled),
        }
    }

    /// The model generated a token whose text is `bytes`: `Some` when generation must end here
    /// (a stop sequence, `completion_max` reached, or the receiver left).
    pub fn token(&mut self, bytes: &[u8]) -> Option<Ended> {
        self.generated += 1;
        let piece = self.utf8.push(bytes);
        let step = self.stops.push(&piece);
        if !step.emit.is_empty() && self.send(step.emit).is_err() {
            return Some(self.ended(FinishReason::Cancelled));
        }
        if step.stopped {
            return Some(self.ended(FinishReason::Stop));
        }
        if !self.stops.is_holding() && !self.utf8.is_pending() {
            self.delivered = self.generated;
        }
        if self.generated >= self.completion_max {
            return Some(match self.flush() {
                // The held-back text completed a stop sequence after all.
                Ok(true) => self.ended(FinishReason::Stop),
                Ok(false) => self.ended(FinishReason::Length),
                Err(()) => self.ended(FinishReason::Cancelled),
            });
        }
        None
    }

    fn ended(&self, reason: FinishReason) -> Ended {
        let completion_tokens = match reason {
            FinishReason::Cancelled => self.delivered,
            FinishReason::Stop | FinishReason::Length => self.generated,
        };
        Ended {
            reason,
            completion_tokens,
        }
    }

    fn send(&self, text: String) -> Result<(), ()> {
        self.deltas.blocking_send(Delta { text }).map_err(|_| ())
    }

    /// Sends the text still held back at the end of generation. `Ok(true)` if it completed a
    /// stop sequence, `Err` if the receiver is gone.
    fn flush(&mut self) -> Result<bool, ()> {
        let tail = self.utf8.finish();
        let step = self.stops.push(&tail);
        let mut text = step.emit;
        if !step.stopped {
            text.push_str(&self.stops.finish());
        }
        if !text.is_empty() {
            self.send(text)?;
        }
        Ok(step.stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let step = m.push(p);
            out.push_str(&step.emit);
            if step.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn text_without_stops_passes_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn a_stop_spanning_pieces_is_not_emitted() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn a_held_prefix_that_does_not_complete_is_released() {
        let stops = vec!["END".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xE").emit, "x");
        assert!(m.is_holding());
        assert_eq!(m.push("Nx").emit, "ENx");
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn the_earliest_stop_wins() {
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
    }

    #[test]
    fn multibyte_stops_are_matched_on_char_boundaries() {
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&["é!"], &["café", "?"]), ("café?".into(), false));
    }

    /// The texts received, and how the generation ended.
    fn generate(
        stops: &[&str],
        completion_max: u32,
        tokens: &[Option<&[u8]>],
        receiver_leaves_after: Option<usize>,
    ) -> (Vec<String>, Option<Ended>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let (tx, mut rx) = mpsc::channel(64);
        let mut text = TokenText::new(&stops, completion_max, tx);
        let mut received = Vec::new();
        let mut ended = None;
        for (i, token) in tokens.iter().enumerate() {
            if receiver_leaves_after == Some(i) {
                while let Ok(delta) = rx.try_recv() {
                    received.push(delta.text);
                }
                rx.close();
            }
            if let Some(e) = text.cancelled() {
                ended = Some(e);
                break;
            }
            let step = match token {
                Some(bytes) => text.token(bytes),
                None => Some(text.end()),
            };
            if step.is_some() {
                ended = step;
                break;
            }
        }
        while let Ok(delta) = rx.try_recv() {
            received.push(delta.text);
        }
        (received, ended)
    }

    fn ended(reason: FinishReason, completion_tokens: u32) -> Option<Ended> {
        Some(Ended {
            reason,
            completion_tokens,
        })
    }

    #[test]
    fn the_end_of_turn_token_counts_and_held_text_is_sent() {
        let tokens: [Option<&[u8]>; 3] = [Some(b"Hel"), Some(b"lo E"), None];
        assert_eq!(
            generate(&["END"], 10, &tokens, None),
            (
                vec!["Hel".into(), "lo ".into(), "E".into()],
                ended(FinishReason::Stop, 3)
            )
        );
    }

    #[test]
    fn a_stop_sequence_ends_it_with_every_token_counted() {
        let tokens: [Option<&[u8]>; 3] = [Some(b"a E"), Some(b"ND b"), Some(b"c")];
        assert_eq!(
            generate(&["END"], 10, &tokens, None),
            (vec!["a ".into()], ended(FinishReason::Stop, 2))
        );
    }

    #[test]
    fn the_limit_ends_it_by_length_and_a_split_character_is_completed_or_dropped() {
        // "é" is two bytes: the first token alone has no text yet.
        let tokens: [Option<&[u8]>; 3] = [Some(&[0xC3]), Some(&[0xA9, b'x']), Some(b"y")];
        assert_eq!(
            generate(&[], 2, &tokens, None),
            (vec!["éx".into()], ended(FinishReason::Length, 2))
        );
        let (texts, end) = generate(&[], 1, &tokens, None);
        assert_eq!(end, ended(FinishReason::Length, 1));
        assert_eq!(texts.concat().chars().next(), Some('\u{FFFD}'));
    }

    #[test]
    fn a_receiver_that_left_is_charged_only_the_tokens_it_received_in_full() {
        // Two tokens reach it; the third's text is held back (it could start "END") when it
        // leaves, so the usage counts two.
        let tokens: [Option<&[u8]>; 5] = [Some(b"a"), Some(b"b"), Some(b" E"), Some(b"x"), None];
        let (texts, end) = generate(&["END"], 10, &tokens, Some(3));
        assert_eq!(texts.concat(), "ab ");
        assert_eq!(end, ended(FinishReason::Cancelled, 2));
    }
}
