//! Reactors: every event reached exactly in log order, the checkpoint written once per batch
//! (after the last event reacted to), and a failed reaction retried from that very event
//! without the events before it being seen again.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod common;

use std::sync::Mutex;

use aiforge_commands::reactor::{self, ReactError, Reactor, REACTOR_BATCH_EVENTS_MAX};
use aiforge_commands::testing::TestDatabase;
use aiforge_commands::{LogPosition, RecordedEvent};
use common::register;

/// Remembers every position it reacts to; fails once at `fail_at`.
struct Recording {
    seen: Mutex<Vec<LogPosition>>,
    fail_at: Mutex<Option<LogPosition>>,
}

#[async_trait::async_trait]
impl Reactor for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn react(&self, event: &RecordedEvent) -> Result<(), ReactError> {
        let at = event.log_position();
        if self.fail_at.lock().unwrap().take_if(|f| *f == at).is_some() {
            return Err("refused once".into());
        }
        self.seen.lock().unwrap().push(at);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reaction_is_retried_from_that_event_and_the_checkpoint_moves_once_per_batch() {
    let test_db = TestDatabase::sqlite().await.unwrap();
    let db = test_db.db.clone();
    for n in 0..4 {
        register(&db, n).await;
    }
    let log = db.read_log_after(LogPosition::START, 100).await.unwrap();
    let positions: Vec<LogPosition> = log.iter().map(RecordedEvent::log_position).collect();
    assert!(positions.len() >= 4 && (positions.len() as i64) < REACTOR_BATCH_EVENTS_MAX);
    let reactor = Recording {
        seen: Mutex::default(),
        fail_at: Mutex::new(Some(positions[2])),
    };

    // The third event fails: the checkpoint stands right before it.
    assert!(reactor::step(&db, &reactor, "reactor:recording")
        .await
        .is_err());
    assert_eq!(
        db.load_checkpoint("reactor:recording").await.unwrap(),
        positions[1]
    );
    // Retried from the third event; the batch was not full, so nothing more is waiting.
    assert!(!reactor::step(&db, &reactor, "reactor:recording")
        .await
        .unwrap());
    assert_eq!(*reactor.seen.lock().unwrap(), positions);
    assert_eq!(
        db.load_checkpoint("reactor:recording").await.unwrap(),
        *positions.last().unwrap()
    );
    // Caught up: nothing is seen twice.
    assert!(!reactor::step(&db, &reactor, "reactor:recording")
        .await
        .unwrap());
    assert_eq!(reactor.seen.lock().unwrap().len(), positions.len());
    test_db.cleanup().await;
}
