//! Time enters the system here and only here, so tests can move it.

use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        // Microseconds: the precision both engines store, so a value reads back unchanged.
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
            .unwrap_or(now)
    }
}

/// A clock that stands still until told to move (tests, replays).
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: time::Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        match self.0.lock() {
            Ok(now) => *now,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// RFC 3339 in UTC with microseconds, the one text form of time in stored data.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    let micros = utc.microsecond();
    let base = utc
        .replace_nanosecond(0)
        .unwrap_or(utc)
        .format(&Rfc3339)
        .unwrap_or_default();
    // Rfc3339 formatting of a whole second ends in "Z"; insert the fixed 6-digit fraction.
    match base.strip_suffix('Z') {
        Some(stem) => format!("{stem}.{micros:06}Z"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn rfc3339_always_has_six_fraction_digits_in_utc() {
        assert_eq!(
            rfc3339(datetime!(2026-11-21 10:00:00 UTC)),
            "2026-11-21T10:00:00.000000Z"
        );
        assert_eq!(
            rfc3339(datetime!(2026-11-21 12:00:00.123456 +02:00)),
            "2026-11-21T10:00:00.123456Z"
        );
    }
}
