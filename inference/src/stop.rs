//! Stop sequences over streamed text. Text arrives in pieces whose boundaries have nothing to do
//! with the stop strings, so the tail that could still grow into a stop string is held back until
//! the next piece decides it. A stop string therefore never starts in text already emitted.

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
}
