//! The event bus: after commit, every event goes out in global order. In-process subscribers get
//! a tokio broadcast (always on); when a NATS URL is configured, events are also published to
//! JetStream on `aiforge.events.<aggregate_type>.<aggregate_id>` with `Nats-Msg-Id` = global
//! position, so JetStream and consumers drop duplicates. Delivery is at-least-once: the publisher
//! saves its checkpoint only after JetStream acknowledged a batch, and a restart re-publishes
//! from there.

use std::sync::Arc;
use std::time::Duration;

use aiforge_domain::account::SECRET_EVENT_TYPES;
use async_nats::jetstream;
use tokio::sync::{broadcast, watch};

use crate::store::{Database, LogPosition, RecordedEvent, StoreError};

pub const BUS_CHANNEL_CAPACITY: usize = 4096;
pub const BUS_BATCH_EVENTS_MAX: i64 = 500;
/// How often the publisher looks for events appended by other processes.
pub const BUS_POLL_MILLIS: u64 = 250;
pub const NATS_STREAM: &str = "AIFORGE_EVENTS";
pub const NATS_SUBJECT_PREFIX: &str = "aiforge.events";
pub const NATS_ACK_TIMEOUT_SECS: u64 = 10;
/// JetStream drops a re-published message with the same id within this window.
pub const NATS_DUPLICATE_WINDOW_SECS: u64 = 600;
const CHECKPOINT: &str = "bus:nats";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("nats: {0}")]
    Nats(String),
}

/// The in-process side of the bus; clone freely.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<RecordedEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(BUS_CHANNEL_CAPACITY);
        Self { sender }
    }
}

impl EventBus {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecordedEvent>> {
        self.sender.subscribe()
    }
}

/// The event as it leaves the store: secret payloads (a password hash) are withheld.
pub fn redacted(event: &RecordedEvent) -> RecordedEvent {
    let mut event = event.clone();
    if SECRET_EVENT_TYPES.contains(&event.event_type.as_str()) {
        event.payload = r#"{"redacted":true}"#.to_string();
    }
    event
}

pub fn subject_for(prefix: &str, event: &RecordedEvent) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!(
        "{prefix}.{}.{}",
        clean(&event.aggregate_type),
        clean(&event.aggregate_id)
    )
}

/// Where on NATS the events go. One stream per platform installation: message ids are global
/// positions, which are unique within one event store only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    pub stream: String,
    pub subject_prefix: String,
}

impl Default for NatsTarget {
    fn default() -> Self {
        Self {
            stream: NATS_STREAM.to_string(),
            subject_prefix: NATS_SUBJECT_PREFIX.to_string(),
        }
    }
}

/// A JetStream context bound to its stream and subjects.
#[derive(Clone)]
pub struct NatsPublisher {
    js: jetstream::Context,
    target: NatsTarget,
}

impl NatsPublisher {
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn target(&self) -> &NatsTarget {
        &self.target
    }
}

/// Connects to NATS and makes sure the events stream exists.
pub async fn connect_jetstream(url: &str, target: NatsTarget) -> Result<NatsPublisher, BusError> {
    let client = tokio::time::timeout(
        Duration::from_secs(NATS_ACK_TIMEOUT_SECS),
        async_nats::connect(url),
    )
    .await
    .map_err(|_| BusError::Nats(format!("timed out connecting to {url}")))?
    .map_err(|e| BusError::Nats(e.to_string()))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: target.stream.clone(),
        subjects: vec![format!("{}.>", target.subject_prefix)],
        duplicate_window: Duration::from_secs(NATS_DUPLICATE_WINDOW_SECS),
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::Nats(e.to_string()))?;
    Ok(NatsPublisher { js, target })
}

/// Follows the global log and publishes every event, until `shutdown` turns true; then it
/// finishes the batch in hand (so an acknowledged batch is always checkpointed) and returns.
pub async fn run_publisher(
    db: Database,
    bus: EventBus,
    nats: Option<NatsPublisher>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), BusError> {
    let mut appended = db.subscribe_appends();
    // In-process subscribers only want what happens from now on; NATS resumes where it stood.
    let mut at = match &nats {
        Some(_) => db.load_checkpoint(CHECKPOINT).await?,
        None => db.log_head().await?,
    };
    loop {
        let batch = db.read_log_after(at, BUS_BATCH_EVENTS_MAX).await?;
        if let Some(last) = batch.last() {
            let last = last.log_position();
            if let Some(nats) = &nats {
                publish_batch(nats, &batch).await?;
                db.save_checkpoint(CHECKPOINT, last).await?;
            }
            for event in &batch {
                // No subscriber is not an error: the bus is fire-and-forget in process.
                let _ = bus.sender.send(Arc::new(redacted(event)));
            }
            at = last;
            continue;
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            _ = crate::store::appended_or_polled(&mut appended, Duration::from_millis(BUS_POLL_MILLIS)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn publish_batch(nats: &NatsPublisher, batch: &[RecordedEvent]) -> Result<(), BusError> {
    let mut acks = Vec::with_capacity(batch.len());
    for event in batch {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.position.to_string().as_str());
        let body =
            serde_json::to_vec(&redacted(event)).map_err(|e| BusError::Nats(e.to_string()))?;
        let ack = nats
            .js
            .publish_with_headers(
                subject_for(&nats.target.subject_prefix, event),
                headers,
                body.into(),
            )
            .await
            .map_err(|e| BusError::Nats(e.to_string()))?;
        acks.push(ack);
    }
    for ack in acks {
        tokio::time::timeout(Duration::from_secs(NATS_ACK_TIMEOUT_SECS), ack)
            .await
            .map_err(|_| BusError::Nats("timed out waiting for a JetStream ack".into()))?
            .map_err(|e| BusError::Nats(e.to_string()))?;
    }
    Ok(())
}

/// Where the NATS publisher stands, for status output.
pub async fn nats_checkpoint(db: &Database) -> Result<LogPosition, StoreError> {
    db.load_checkpoint(CHECKPOINT).await
}
