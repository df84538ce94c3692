//! The usage recorder: every metered API call becomes an `ApiCallMetered` event, durable before
//! the call's response completes. Calls arriving together are committed together (group
//! commit): one task drains what is queued, appends it in one transaction
//! (`Database::append_fresh`) and only then acknowledges each caller. A failed commit is retried
//! with backoff; a caller hears of a failure only after the retries are spent, and a retried
//! batch cannot double-count (the request id is the aggregate id).

use std::sync::Arc;
use std::time::Duration;

use aiforge_domain::usage::{
    self, ApiCallEvent, ApiCallMetered, API_CALL_AGGREGATE, API_CALL_METERED,
};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::store::{Database, FreshEvent, UsageSettlement};

/// Most calls one commit carries.
pub const METERING_BATCH_MAX: usize = 512;
/// Calls waiting for a commit before callers wait for room (backpressure, not loss).
pub const METERING_QUEUE_MAX: usize = 8192;
/// Attempts at a batch's commit before its callers are told it failed.
pub const METERING_ATTEMPTS_MAX: u32 = 5;
pub const METERING_RETRY_BASE_MILLIS: u64 = 50;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MeteringError {
    #[error("invalid usage record: {0}")]
    Invalid(#[from] usage::UsageError),
    #[error("the usage recorder has stopped")]
    Stopped,
    #[error("usage could not be recorded: {0}")]
    Store(String),
}

type Ack = oneshot::Sender<Result<(), MeteringError>>;
type Queued = (ApiCallMetered, Option<UsageSettlement>, Ack);

/// A handle on the recorder task; clone freely.
#[derive(Clone)]
pub struct UsageRecorder {
    queue: mpsc::Sender<Queued>,
}

impl UsageRecorder {
    /// Starts the recorder task on the current runtime.
    pub fn start(db: Database, clock: Arc<dyn Clock>) -> Self {
        let (queue, receiver) = mpsc::channel(METERING_QUEUE_MAX);
        tokio::spawn(run(db, clock, receiver));
        Self { queue }
    }

    /// Records one call; returns once it is committed.
    pub async fn record(&self, call: ApiCallMetered) -> Result<(), MeteringError> {
        self.record_settling(call, None).await
    }

    /// Records one call and, in the same transaction, settles its admission's hold.
    pub async fn record_settling(
        &self,
        call: ApiCallMetered,
        settlement: Option<UsageSettlement>,
    ) -> Result<(), MeteringError> {
        usage::validate(&call)?;
        let (ack, done) = oneshot::channel();
        self.queue
            .send((call, settlement, ack))
            .await
            .map_err(|_| MeteringError::Stopped)?;
        done.await.map_err(|_| MeteringError::Stopped)?
    }
}

fn fresh(call: &ApiCallMetered) -> Result<FreshEvent, MeteringError> {
    let payload = serde_json::to_value(ApiCallEvent::ApiCallMetered(call.clone()))
        .map_err(|e| MeteringError::Store(e.to_string()))?;
    Ok(FreshEvent {
        aggregate_id: call.request_id.clone(),
        event_type: API_CALL_METERED,
        payload,
    })
}

async fn run(db: Database, clock: Arc<dyn Clock>, mut receiver: mpsc::Receiver<Queued>) {
    let mut pending: Vec<Queued> = Vec::with_capacity(METERING_BATCH_MAX);
    while receiver.recv_many(&mut pending, METERING_BATCH_MAX).await > 0 {
        let batch: Result<Vec<FreshEvent>, MeteringError> =
            pending.iter().map(|(call, _, _)| fresh(call)).collect();
        let settlements: Vec<UsageSettlement> = pending
            .iter()
            .filter_map(|(_, settlement, _)| settlement.clone())
            .collect();
        let result = match batch {
            Ok(batch) => commit(&db, clock.as_ref(), &batch, &settlements).await,
            Err(err) => Err(err),
        };
        for (_, _, ack) in pending.drain(..) {
            // A caller that went away no longer waits; its call is recorded all the same.
            let _ = ack.send(result.clone());
        }
    }
}

async fn commit(
    db: &Database,
    clock: &dyn Clock,
    batch: &[FreshEvent],
    settlements: &[UsageSettlement],
) -> Result<(), MeteringError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let began = std::time::Instant::now();
        match db
            .append_fresh_settling(API_CALL_AGGREGATE, batch, clock.now(), settlements)
            .await
        {
            Ok(_) => {
                crate::stages::METER_COMMIT.since(began);
                return Ok(());
            }
            Err(err) if attempt < METERING_ATTEMPTS_MAX => {
                tracing::warn!(error = %err, attempt, "usage batch not committed; retrying");
                let backoff = METERING_RETRY_BASE_MILLIS << attempt;
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
            Err(err) => {
                tracing::error!(error = %err, calls = batch.len(), "usage batch not committed");
                return Err(MeteringError::Store(err.to_string()));
            }
        }
    }
}
