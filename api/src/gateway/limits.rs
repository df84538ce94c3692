//! Per-subscription rate limits with governor's GCRA: one direct limiter per window (minute,
//! hour, day), each with a burst of the whole limit, so a burst of concurrent requests gets
//! exactly the limit through and not one more. Limiters are built from the service's limits and
//! rebuilt when the service changes them (see `index::SubscriptionState::limiters`).

use std::num::NonZeroU32;
use std::time::Duration;

use aiforge_domain::service::RateLimits;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct Limiters {
    windows: Vec<(&'static str, DefaultDirectRateLimiter)>,
}

/// A refused request: which window, and when to try again.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub window: &'static str,
    pub retry_after: Duration,
}

fn quota(limit: u32, window: Duration) -> Option<Quota> {
    let burst = NonZeroU32::new(limit)?;
    // One cell comes back every window/limit; the burst is the whole limit.
    Quota::with_period(window / limit).map(|q| q.allow_burst(burst))
}

impl Limiters {
    pub fn new(limits: &RateLimits) -> Self {
        let windows = [
            ("minute", limits.requests_per_minute, 60u64),
            ("hour", limits.requests_per_hour, 3600),
            ("day", limits.requests_per_day, 86_400),
        ]
        .into_iter()
        .filter_map(|(name, limit, secs)| {
            let quota = quota(limit?, Duration::from_secs(secs))?;
            Some((name, RateLimiter::direct(quota)))
        })
        .collect();
        Self { windows }
    }

    /// Takes one request from every window, or refuses with the longest wait. A window refused
    /// after earlier windows admitted does not give their cells back: a refused request counts
    /// against the shorter windows (it was made), never past any limit.
    pub fn check(&self) -> Result<(), Refused> {
        let clock = DefaultClock::default();
        let mut refused: Option<Refused> = None;
        for (window, limiter) in &self.windows {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(clock.now());
                if refused.is_none_or(|r| wait > r.retry_after) {
                    refused = Some(Refused {
                        window,
                        retry_after: wait,
                    });
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gets_exactly_the_limit() {
        let limiters = Limiters::new(&RateLimits {
            requests_per_minute: Some(5),
            ..RateLimits::default()
        });
        let admitted = (0..20).filter(|_| limiters.check().is_ok()).count();
        assert_eq!(admitted, 5);
        let refused = limiters.check().err();
        assert!(refused.is_some_and(|r| r.window == "minute"
            && r.retry_after > Duration::from_secs(1)
            && r.retry_after <= Duration::from_secs(12)));
    }

    #[test]
    fn no_limits_admit_everything() {
        let limiters = Limiters::new(&RateLimits::default());
        assert!((0..1000).all(|_| limiters.check().is_ok()));
    }
}
