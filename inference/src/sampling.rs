//! Choosing the next token from the model's logits: greedy (temperature 0), or temperature and
//! nucleus (top-p) sampling from a seeded generator, so that a seed reproduces a generation.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Below this temperature sampling is greedy: dividing by it would only amplify float noise.
const GREEDY_TEMPERATURE_MAX: f64 = 1e-5;

pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    /// Defaults follow OpenAI: temperature 1, top_p 1. Without a seed the generator is seeded
    /// from the operating system.
    pub fn new(temperature: Option<f64>, top_p: Option<f64>, seed: Option<u64>) -> Self {
        Self {
            temperature: temperature.unwrap_or(1.0),
            top_p: top_p.unwrap_or(1.0),
            rng: match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_entropy(),
            },
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE_MAX
    }

    /// The next token id. `logits` must not be empty.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .zip(0u32..)
            .map(|(&l, i)| {
                (
                    i,
                    ((f64::from(l) - f64::from(max)) / self.temperature).exp(),
                )
            })
            .filter(|(_, p)| *p > 0.0)
            .collect();
        let total: f64 = probs.iter().map(|(_, p)| p).sum();
        if probs.is_empty() || !total.is_finite() {
            return argmax(logits);
        }
        if self.top_p < 1.0 {
            // Highest first; ties by id so that the order, and so a seeded draw, is reproducible.
            probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut kept = 0;
            let mut mass = 0.0;
            for (_, p) in &probs {
                kept += 1;
                mass += p / total;
                if mass >= self.top_p {
                    break;
                }
            }
            probs.truncate(kept);
        }
        let kept_total: f64 = probs.iter().map(|(_, p)| p).sum();
        let mut draw = self.rng.gen::<f64>() * kept_total;
        for &(id, p) in &probs {
            if draw < p {
                return id;
            }
            draw -= p;
        }
        probs.last().map_or_else(|| argmax(logits), |(id, _)| *id)
    }
}

/// The index of the largest logit; the lowest index on a tie.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    u32::try_from(best).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(Some(0.0), None, None);
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn a_seed_reproduces_the_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draws = |seed| {
            let mut s = Sampler::new(Some(1.0), Some(0.9), Some(seed));
            (0..30).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn a_small_top_p_keeps_only_the_most_likely_token() {
        let mut s = Sampler::new(Some(1.0), Some(0.01), Some(1));
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 5.0, 4.9]), 1);
        }
    }
}
