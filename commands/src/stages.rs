//! Where a gateway call's time goes, stage by stage. Each stage counts how often it ran and the
//! time it took in all: two relaxed atomic adds, cheap enough to stay on in production. They are
//! served on `/metrics` (`aiforge_stage_runs_total`, `aiforge_stage_seconds_total`); the
//! gateway benchmark reads them before and after a load and prints the mean per call.
//!
//! The stages of one call, in order: `auth` (the key's digest and its lookup in the key index),
//! `parse`, `resolve` (the model and the caller's terms), `admit` (admission and its hold),
//! `generate` (the node's answer, the upstream's round trip included), `meter` (from handing the
//! usage event to the recorder until it is durable: the queue, the group commit, its fsync),
//! `call` (a non-streamed call's handler from its first line to its answer, the above
//! included). Then what the
//! event costs after the response, per batch of events: `meter_commit` (one group commit),
//! `log_read_db` (a read of the log that went to the database; every other read was answered
//! from the stretch kept in memory), `projections` (one view transaction for every projection
//! with something to write), `key_index` (the gateway's index applying the batch), `reactors`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One stage's runs and total time.
#[derive(Debug)]
pub struct Stage {
    pub name: &'static str,
    runs: AtomicU64,
    nanos: AtomicU64,
}

impl Stage {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            runs: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }

    /// One run that began at `since` and ends now.
    pub fn since(&self, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

pub static AUTH: Stage = Stage::new("auth");
pub static PARSE: Stage = Stage::new("parse");
pub static RESOLVE: Stage = Stage::new("resolve");
pub static ADMIT: Stage = Stage::new("admit");
pub static GENERATE: Stage = Stage::new("generate");
pub static METER: Stage = Stage::new("meter");
pub static CALL: Stage = Stage::new("call");
pub static METER_COMMIT: Stage = Stage::new("meter_commit");
pub static LOG_READ_DB: Stage = Stage::new("log_read_db");
pub static PROJECTIONS: Stage = Stage::new("projections");
pub static KEY_INDEX: Stage = Stage::new("key_index");
pub static REACTORS: Stage = Stage::new("reactors");

/// Every stage, in the order above.
pub static ALL: [&Stage; 12] = [
    &AUTH,
    &PARSE,
    &RESOLVE,
    &ADMIT,
    &GENERATE,
    &METER,
    &CALL,
    &METER_COMMIT,
    &LOG_READ_DB,
    &PROJECTIONS,
    &KEY_INDEX,
    &REACTORS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_adds_one_and_its_time() {
        static S: Stage = Stage::new("test");
        let before = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        S.since(before);
        assert_eq!(S.runs(), 1);
        assert!(S.seconds() >= 0.002, "{}", S.seconds());
    }
}
