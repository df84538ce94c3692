//! Admission of an API call: the rules that decide, before anything reaches a node, whether a
//! call may start and how much it may use. Pure: the gateway's two limit stores (one process's
//! memory, or PostgreSQL rows shared by every instance) read their counters, ask these
//! functions, and write back what they decided, so both give the same answers.
//!
//! - **Rate windows** (minute, hour, day) are GCRA with a burst of the whole limit: a burst of
//!   concurrent requests gets exactly the limit through and not one more. A refused request takes
//!   nothing from any window (it is decided for all windows before any is written).
//! - **Monthly quotas and prepaid credit** are exact under concurrency because a call *holds*
//!   what it may use when it is admitted and settles the hold with what it used when it ends.
//!   Tokens are known only at the end, so the hold is the most the call can use: a bound on its
//!   prompt (`prompt_tokens_bound`) plus the completion tokens it is allowed. When a quota or the
//!   credit cannot cover what the client asked for, the completion is capped to what they can
//!   cover (the call ends with `finish_reason: length`); when they cannot cover one completion
//!   token, the call is refused. So concurrent calls never take a quota or a credit below zero.

use crate::service::{Pricing, RateLimits};
use crate::usage::{call_cost, PeriodUsage};

/// Completion tokens a call may ask for when it names no `max_tokens` and a quota or credit
/// has to bound it.
pub const COMPLETION_TOKENS_DEFAULT_MAX: u32 = 4096;
/// Tokens a chat template may add around one message (role markers, separators), and around
/// the whole prompt (the assistant's opening). ChatML adds 5 per message; Llama 3 and Gemma
/// templates fewer than 8.
pub const TEMPLATE_TOKENS_PER_MESSAGE_MAX: u64 = 8;
pub const TEMPLATE_TOKENS_PER_PROMPT_MAX: u64 = 16;

const MICROS_PER_SEC: i64 = 1_000_000;

/// The windows of a service's rate limits: (name, limit, window in microseconds).
pub fn rate_windows(limits: &RateLimits) -> Vec<(&'static str, u32, i64)> {
    [
        ("minute", limits.requests_per_minute, 60),
        ("hour", limits.requests_per_hour, 3600),
        ("day", limits.requests_per_day, 86_400),
    ]
    .into_iter()
    .filter_map(|(name, limit, secs)| {
        let limit = limit.filter(|l| *l > 0)?;
        Some((name, limit, secs * MICROS_PER_SEC))
    })
    .collect()
}

/// One GCRA step for a window of `limit` requests per `window_micros`, burst = the limit:
/// `Ok(new theoretical arrival time)` when a request at `now` conforms, else `Err(wait)`, both
/// in microseconds. `tat` is the window's state (None for a window never used).
pub fn gcra(tat: Option<i64>, now: i64, limit: u32, window_micros: i64) -> Result<i64, i64> {
    let interval = window_micros / i64::from(limit.max(1));
    let start = tat.unwrap_or(now).max(now);
    let next = start.saturating_add(interval);
    // At most `limit` intervals may stand ahead of now.
    let allowed_until = now.saturating_add(window_micros);
    if next <= allowed_until {
        Ok(next)
    } else {
        Err(next - allowed_until)
    }
}

/// Checks every window of a request at `now`: the new states, or the longest wait and its
/// window's name. Nothing is taken from any window unless all conform.
pub fn check_windows(
    windows: &[(&'static str, u32, i64)],
    tats: &[Option<i64>],
    now: i64,
) -> Result<Vec<i64>, (&'static str, i64)> {
    let mut next = Vec::with_capacity(windows.len());
    let mut refused: Option<(&'static str, i64)> = None;
    for (i, (name, limit, window)) in windows.iter().enumerate() {
        match gcra(tats.get(i).copied().flatten(), now, *limit, *window) {
            Ok(tat) => next.push(tat),
            Err(wait) => {
                if refused.is_none_or(|(_, w)| wait > w) {
                    refused = Some((name, wait));
                }
            }
        }
    }
    match refused {
        Some(refusal) => Err(refusal),
        None => Ok(next),
    }
}

/// An upper bound of a prompt's tokens from its messages' byte lengths (role and content): a
/// byte-level BPE token (and a byte-fallback token) covers at least one byte, and the template
/// adds a bounded number per message.
pub fn prompt_tokens_bound(message_bytes: impl IntoIterator<Item = usize>) -> u64 {
    message_bytes
        .into_iter()
        .map(|bytes| bytes as u64 + TEMPLATE_TOKENS_PER_MESSAGE_MAX)
        .sum::<u64>()
        + TEMPLATE_TOKENS_PER_PROMPT_MAX
}

/// What a subscription has used and holds now, in the period of the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// Settled this period.
    pub used: PeriodUsage,
    /// Held by calls in flight (admitted, not yet settled), this period.
    pub held_requests: u64,
    pub held_tokens: u64,
    /// Prepaid credit added, spent and held, in micro-USDT (all time).
    pub credit_micros: i128,
    pub spent_micros: i128,
    pub held_micros: i128,
}

impl UsageSnapshot {
    /// Usage as a call admitted now must assume (settled plus what others hold): what hybrid
    /// pricing's allowance is measured against, so two calls never spend the same allowance.
    pub fn before(&self) -> PeriodUsage {
        PeriodUsage {
            requests: self.used.requests + self.held_requests,
            tokens: self.used.tokens + self.held_tokens,
        }
    }

    pub fn credit_left_micros(&self) -> i128 {
        self.credit_micros - self.spent_micros - self.held_micros
    }
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEstimate {
    /// `prompt_tokens_bound` of its messages.
    pub prompt_tokens_max: u64,
    /// Its `max_tokens`, if it named one.
    pub completion_tokens: Option<u32>,
}

/// What an admitted call holds until it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub tokens: u64,
    pub micros: i128,
    /// The completion cap the call must run with (None: the client's own, or none).
    pub completion_tokens_max: Option<u32>,
    /// Usage before the call, for its price (`UsageSnapshot::before`).
    pub before: PeriodUsage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this subscription's monthly quota of {max} requests is used up")]
    RequestQuota { max: u64 },
    #[error("this subscription's monthly quota of {max} tokens is used up")]
    TokenQuota { max: u64 },
    #[error("this subscription has no prepaid credit left for this call")]
    NoCredit,
    #[error("rate limit reached: requests per {window} used up; retry in {retry_after_micros} µs")]
    RateLimited {
        window: &'static str,
        retry_after_micros: i64,
    },
}

/// Whether pricing draws on prepaid credit at all.
fn uses_credit(pricing: &Pricing) -> bool {
    !matches!(pricing, Pricing::Monthly { .. })
}

/// Decides a call's quota and credit (rate windows are `check_windows`): the hold, or why not.
pub fn decide(
    limits: &RateLimits,
    pricing: &Pricing,
    usage: &UsageSnapshot,
    estimate: CallEstimate,
) -> Result<Hold, Refusal> {
    let before = usage.before();
    if let Some(max) = limits.requests_per_month {
        if before.requests >= max {
            return Err(Refusal::RequestQuota { max });
        }
    }
    let asked = estimate.completion_tokens;
    let mut cap: Option<u64> = None;
    if let Some(max) = limits.tokens_per_month {
        let left = max.saturating_sub(before.tokens);
        if left < estimate.prompt_tokens_max + 1 {
            return Err(Refusal::TokenQuota { max });
        }
        cap = Some(left - estimate.prompt_tokens_max);
    }
    let cost = |completion: u64| {
        call_cost(
            pricing,
            before,
            u32::try_from(estimate.prompt_tokens_max).unwrap_or(u32::MAX),
            u32::try_from(completion).unwrap_or(u32::MAX),
        )
        .map(|c| c.to_micros())
        .unwrap_or(i128::MAX)
    };
    let wanted = u64::from(asked.unwrap_or(COMPLETION_TOKENS_DEFAULT_MAX));
    let mut completion = cap.map_or(wanted, |c| c.min(wanted));
    let mut micros = 0;
    if uses_credit(pricing) {
        let left = usage.credit_left_micros();
        if cost(1) > left {
            return Err(Refusal::NoCredit);
        }
        if cost(completion) > left {
            // The most completion tokens the credit covers: cost is monotone in them.
            let (mut low, mut high) = (1u64, completion);
            while low < high {
                let mid = low + (high - low).div_ceil(2);
                if cost(mid) <= left {
                    low = mid;
                } else {
                    high = mid - 1;
                }
            }
            completion = low;
        }
        micros = cost(completion);
    }
    let bound = cap.is_some() || (uses_credit(pricing) && micros > 0);
    let completion_tokens_max = if bound || asked.is_some() {
        Some(u32::try_from(completion).unwrap_or(u32::MAX))
    } else {
        None
    };
    Ok(Hold {
        tokens: estimate.prompt_tokens_max + completion,
        micros,
        completion_tokens_max,
        before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Usdt;
    use proptest::prelude::*;

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or(Usdt::ZERO)
    }

    #[test]
    fn a_burst_gets_exactly_the_limit_and_then_waits() {
        let windows = rate_windows(&RateLimits {
            requests_per_minute: Some(5),
            ..RateLimits::default()
        });
        let mut tats = vec![None];
        let mut admitted = 0;
        for _ in 0..20 {
            if let Ok(next) = check_windows(&windows, &tats, 0) {
                tats = next.into_iter().map(Some).collect();
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        let Err((window, wait)) = check_windows(&windows, &tats, 0) else {
            panic!("the sixth is refused");
        };
        assert_eq!(window, "minute");
        assert_eq!(wait, 12 * MICROS_PER_SEC, "one cell comes back every 12 s");
        assert!(check_windows(&windows, &tats, 12 * MICROS_PER_SEC).is_ok());
    }

    #[test]
    fn a_refusal_by_one_window_takes_nothing_from_the_others() {
        let windows = rate_windows(&RateLimits {
            requests_per_minute: Some(10),
            requests_per_hour: Some(1),
            ..RateLimits::default()
        });
        let first = check_windows(&windows, &[None, None], 0).unwrap_or_default();
        let tats: Vec<Option<i64>> = first.into_iter().map(Some).collect();
        let before = tats.clone();
        assert!(check_windows(&windows, &tats, 1).is_err());
        assert_eq!(tats, before);
    }

    #[test]
    fn a_nearly_spent_token_quota_caps_the_completion() {
        let limits = RateLimits {
            tokens_per_month: Some(1000),
            ..RateLimits::default()
        };
        let pricing = Pricing::Monthly {
            price_per_month: Usdt::ZERO,
        };
        let usage = UsageSnapshot {
            used: PeriodUsage {
                requests: 3,
                tokens: 900,
            },
            ..UsageSnapshot::default()
        };
        let estimate = CallEstimate {
            prompt_tokens_max: 60,
            completion_tokens: Some(500),
        };
        let hold = decide(&limits, &pricing, &usage, estimate);
        assert_eq!(
            hold.map(|h| (h.tokens, h.completion_tokens_max)),
            Ok((100, Some(40)))
        );
        let full = UsageSnapshot {
            held_tokens: 40,
            ..usage
        };
        assert_eq!(
            decide(&limits, &pricing, &full, estimate),
            Err(Refusal::TokenQuota { max: 1000 })
        );
    }

    #[test]
    fn credit_caps_the_completion_and_refuses_when_it_cannot_pay_one_token() {
        let limits = RateLimits::default();
        let pricing = Pricing::PayPerRequest {
            price_per_request: usdt("0.01"),
            price_per_1k_input_tokens: Usdt::ZERO,
            price_per_1k_output_tokens: usdt("1"),
        };
        let usage = UsageSnapshot {
            credit_micros: 20_000 + 5_000,
            ..UsageSnapshot::default()
        };
        let estimate = CallEstimate {
            prompt_tokens_max: 10,
            completion_tokens: None,
        };
        let hold = decide(&limits, &pricing, &usage, estimate);
        // 0.01 per request leaves 0.015: 15 output tokens at 0.001 each.
        assert_eq!(
            hold.map(|h| (h.micros, h.completion_tokens_max)),
            Ok((25_000, Some(15)))
        );
        let spent = UsageSnapshot {
            held_micros: 20_000,
            ..usage
        };
        assert_eq!(
            decide(&limits, &pricing, &spent, estimate),
            Err(Refusal::NoCredit)
        );
    }

    #[test]
    fn a_monthly_service_without_quotas_leaves_max_tokens_to_the_client() {
        let hold = decide(
            &RateLimits::default(),
            &Pricing::Monthly {
                price_per_month: usdt("5"),
            },
            &UsageSnapshot::default(),
            CallEstimate {
                prompt_tokens_max: 30,
                completion_tokens: None,
            },
        );
        assert_eq!(hold.map(|h| h.completion_tokens_max), Ok(None));
    }

    #[test]
    fn the_request_quota_counts_calls_in_flight() {
        let limits = RateLimits {
            requests_per_month: Some(5),
            ..RateLimits::default()
        };
        let pricing = Pricing::Monthly {
            price_per_month: Usdt::ZERO,
        };
        let usage = UsageSnapshot {
            used: PeriodUsage {
                requests: 3,
                tokens: 0,
            },
            held_requests: 2,
            ..UsageSnapshot::default()
        };
        let estimate = CallEstimate {
            prompt_tokens_max: 1,
            completion_tokens: None,
        };
        assert_eq!(
            decide(&limits, &pricing, &usage, estimate),
            Err(Refusal::RequestQuota { max: 5 })
        );
    }

    proptest! {
        /// Calls admitted one after another against the same snapshot (each adding its hold)
        /// never hold more credit or quota than there is.
        #[test]
        fn holds_never_exceed_credit_or_quota(
            credit in 0i128..2_000_000,
            quota in 0u64..20_000,
            prompts in proptest::collection::vec(1u64..500, 1..40),
            out_price in 0u32..5000,
        ) {
            let limits = RateLimits { tokens_per_month: Some(quota), ..RateLimits::default() };
            let pricing = Pricing::PayPerRequest {
                price_per_request: Usdt::from_micros(100).unwrap_or(Usdt::ZERO),
                price_per_1k_input_tokens: Usdt::from_micros(1000).unwrap_or(Usdt::ZERO),
                price_per_1k_output_tokens: Usdt::from_micros(i64::from(out_price)).unwrap_or(Usdt::ZERO),
            };
            let mut usage = UsageSnapshot { credit_micros: credit, ..UsageSnapshot::default() };
            for prompt in prompts {
                let estimate = CallEstimate { prompt_tokens_max: prompt, completion_tokens: None };
                if let Ok(hold) = decide(&limits, &pricing, &usage, estimate) {
                    usage.held_requests += 1;
                    usage.held_tokens += hold.tokens;
                    usage.held_micros += hold.micros;
                }
                prop_assert!(usage.held_tokens <= quota);
                prop_assert!(usage.held_micros <= credit);
            }
        }
    }
}
