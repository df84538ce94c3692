//! The event bus: in-process broadcast and NATS JetStream publishing in global order, with
//! message id = global position, and re-publishing after a restart deduplicated by JetStream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod common;

use std::time::Duration;

use aiforge_commands::bus::{self, EventBus, NatsTarget};
use aiforge_commands::testing::TestDatabase;
use aiforge_commands::{Database, LogPosition};
use common::register;
use futures::StreamExt;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_subscribers_receive_committed_events_in_order_with_secrets_withheld() {
    let test_db = TestDatabase::sqlite().await.unwrap();
    let db = test_db.db.clone();
    let event_bus = EventBus::default();
    let mut receiver = event_bus.subscribe();
    let (stop, stopped) = watch::channel(false);
    let publisher = tokio::spawn(bus::run_publisher(db.clone(), event_bus, None, stopped));
    // Give the publisher its starting point (the head) before appending.
    tokio::time::sleep(Duration::from_millis(100)).await;
    register(&db, 1).await;
    register(&db, 2).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(event);
    }
    let positions: Vec<i64> = got.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    assert_eq!(got[1].event_type, "PasswordSet");
    assert_eq!(got[1].payload, r#"{"redacted":true}"#);
    assert!(!got.iter().any(|e| e.payload.contains("secret-hash")));
    assert!(got[0].payload.contains("u1@example.com"));
    stop.send(true).unwrap();
    publisher.await.unwrap().unwrap();
    test_db.cleanup().await;
}

fn nats_url() -> String {
    std::env::var("AIFORGE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn publish_until_caught_up(db: &Database, nats: &bus::NatsPublisher) {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(bus::run_publisher(
        db.clone(),
        EventBus::default(),
        Some(nats.clone()),
        stopped,
    ));
    let head = db.log_head().await.unwrap();
    for _ in 0..400 {
        if bus::nats_checkpoint(db).await.unwrap() >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_gets_every_event_once_in_order_even_when_a_restart_publishes_again() {
    let target = NatsTarget {
        stream: format!("AIFORGE_TEST_{}", uuid::Uuid::new_v4().simple()),
        subject_prefix: format!("aiforge_test_{}.events", uuid::Uuid::new_v4().simple()),
    };
    let nats = match bus::connect_jetstream(&nats_url(), target.clone()).await {
        Ok(nats) => nats,
        Err(e) if std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1") => {
            eprintln!(
                "SKIPPED (NATS): cannot reach {} ({e}); set AIFORGE_REQUIRE_SERVICES=1 to make this a failure",
                nats_url()
            );
            return;
        }
        Err(e) => panic!("AIFORGE_REQUIRE_SERVICES=1 but NATS is unavailable: {e}"),
    };
    let test_db = TestDatabase::sqlite().await.unwrap();
    let db = test_db.db.clone();
    register(&db, 1).await;
    register(&db, 2).await;
    publish_until_caught_up(&db, &nats).await;

    // A crash after publishing but before the checkpoint was saved: the next run publishes the
    // same events again, and JetStream drops them by message id.
    db.save_checkpoint("bus:nats", LogPosition::START)
        .await
        .unwrap();
    register(&db, 3).await;
    publish_until_caught_up(&db, &nats).await;

    let mut stream = nats.context().get_stream(&target.stream).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, 6,
        "3 accounts x 2 events, no duplicates"
    );
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut ids = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .unwrap()
            .to_string();
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body["position"].to_string(), id);
        assert!(message
            .subject
            .starts_with(&format!("{}.account.user-", target.subject_prefix)));
        assert!(!String::from_utf8_lossy(&message.payload).contains("secret-hash"));
        ids.push(id.parse::<i64>().unwrap());
        message.ack().await.unwrap();
    }
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    nats.context().delete_stream(&target.stream).await.unwrap();
    test_db.cleanup().await;
}
