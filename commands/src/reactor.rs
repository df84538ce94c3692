//! Reactors: followers of the global log that turn events into commands (process managers),
//! e.g. "a subscription payment confirmed -> activate the subscription". Each keeps a checkpoint;
//! delivery is at-least-once, and every command a reactor sends has a command id derived from
//! the event, so a repeat after a crash is an idempotent replay: exactly-once in effect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiforge_domain::fees::PaymentType;
use aiforge_domain::payment::PaymentEvent;
use tokio::sync::watch;

use crate::payments::{Payments, SUBSCRIPTION_REFERENCE_PREFIX};
use crate::store::{Database, LogPosition, RecordedEvent};

pub const REACTOR_BATCH_EVENTS_MAX: i64 = 200;
pub const REACTOR_POLL_MILLIS: u64 = 250;
pub const REACTOR_RETRY_MILLIS: u64 = 1000;

/// Why a reactor could not handle an event (retried; its chain goes to the log).
pub type ReactError = Box<dyn std::error::Error + Send + Sync>;

/// A reactor's batch failed.
#[derive(Debug, thiserror::Error)]
pub enum ReactorError {
    #[error("cannot read the log or save the checkpoint")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot react to the event at {position}")]
    React {
        position: String,
        #[source]
        source: ReactError,
    },
}

#[async_trait::async_trait]
pub trait Reactor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Reacts to one event. An error is retried (the reactor never skips an event).
    async fn react(&self, event: &RecordedEvent) -> Result<(), ReactError>;
}

/// A running reactor writes its checkpoint at most this often (and when it stops, or when a
/// reaction fails): its position is kept in memory between batches, and a checkpoint written
/// late only makes it see some events again after a crash, which its idempotent commands absorb.
/// Without this, every metered call would cost each reactor a write transaction.
pub const REACTOR_CHECKPOINT_MILLIS: u64 = 1000;

/// Runs a reactor until `shutdown` turns true.
pub async fn run(db: Database, reactor: Arc<dyn Reactor>, mut shutdown: watch::Receiver<bool>) {
    let mut cursor = Cursor::new(
        format!("reactor:{}", reactor.name()),
        Duration::from_millis(REACTOR_CHECKPOINT_MILLIS),
    );
    let mut appended = db.subscribe_appends();
    loop {
        match cursor.advance(&db, reactor.as_ref()).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(reactor = reactor.name(), error = %crate::error_chain(&e), "reactor failed; retrying");
                tokio::time::sleep(Duration::from_millis(REACTOR_RETRY_MILLIS)).await;
            }
        }
        if *shutdown.borrow() {
            if let Err(e) = cursor.save(&db).await {
                tracing::warn!(reactor = reactor.name(), error = %e, "the reactor's checkpoint was not saved at shutdown");
            }
            return;
        }
        tokio::select! {
            _ = crate::store::appended_or_polled(&mut appended, Duration::from_millis(REACTOR_POLL_MILLIS)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One batch, from the stored checkpoint; true when the batch was full (more may be waiting).
/// The checkpoint is written once, after the last event reacted to (or, when one fails, after
/// the one before it), without an fsync of its own (`Database::save_checkpoint`): a checkpoint
/// lost to a power cut only makes the reactor see some events again, and every command it sends
/// is idempotent.
pub async fn step(
    db: &Database,
    reactor: &dyn Reactor,
    checkpoint: &str,
) -> Result<bool, ReactorError> {
    Cursor::new(checkpoint.to_string(), Duration::ZERO)
        .advance(db, reactor)
        .await
}

/// Where a reactor stands: in memory, and as last stored.
struct Cursor {
    checkpoint: String,
    /// `None` until read from the stored checkpoint.
    at: Option<LogPosition>,
    stored: LogPosition,
    stored_when: Instant,
    save_every: Duration,
}

impl Cursor {
    fn new(checkpoint: String, save_every: Duration) -> Self {
        Self {
            checkpoint,
            at: None,
            stored: LogPosition::START,
            stored_when: Instant::now(),
            save_every,
        }
    }

    /// Reacts to the next batch; true when it was full.
    async fn advance(
        &mut self,
        db: &Database,
        reactor: &dyn Reactor,
    ) -> Result<bool, ReactorError> {
        let from = match self.at {
            Some(at) => at,
            None => {
                let stored = db.load_checkpoint(&self.checkpoint).await?;
                self.stored = stored;
                self.at = Some(stored);
                stored
            }
        };
        let batch = db.read_log_after(from, REACTOR_BATCH_EVENTS_MAX).await?;
        let began = Instant::now();
        let mut failed = None;
        for event in &batch {
            if let Err(source) = reactor.react(event).await {
                failed = Some(ReactorError::React {
                    position: format!("{:?}", event.log_position()),
                    source,
                });
                break;
            }
            self.at = Some(event.log_position());
        }
        if failed.is_some() || self.stored_when.elapsed() >= self.save_every {
            self.save(db).await?;
        }
        if !batch.is_empty() {
            crate::stages::REACTORS.since(began);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(batch.len() as i64 == REACTOR_BATCH_EVENTS_MAX),
        }
    }

    /// Writes the position reached, if it moved since the last write.
    async fn save(&mut self, db: &Database) -> Result<(), ReactorError> {
        let Some(at) = self.at.filter(|at| *at != self.stored) else {
            return Ok(());
        };
        db.save_checkpoint(&self.checkpoint, at).await?;
        self.stored = at;
        self.stored_when = Instant::now();
        Ok(())
    }
}

/// The event, decoded, when it is a `PaymentConfirmed` of `payment_type`; `None` for any other
/// event (the one test every payment reactor starts with).
fn confirmed_payment(
    event: &RecordedEvent,
    payment_type: PaymentType,
) -> Result<Option<PaymentEvent>, ReactError> {
    if event.event_type != "PaymentConfirmed" {
        return Ok(None);
    }
    let payment: PaymentEvent = serde_json::from_str(&event.payload)?;
    Ok(match &payment {
        PaymentEvent::PaymentConfirmed {
            payment_type: confirmed,
            ..
        } if *confirmed == payment_type => Some(payment),
        _ => None,
    })
}

/// Activates a platform subscription when its payment confirms.
pub struct SubscriptionActivation {
    pub payments: Arc<Payments>,
}

#[async_trait::async_trait]
impl Reactor for SubscriptionActivation {
    fn name(&self) -> &'static str {
        "subscription_activation"
    }

    async fn react(&self, event: &RecordedEvent) -> Result<(), ReactError> {
        let Some(PaymentEvent::PaymentConfirmed {
            payment_id,
            reference,
            ..
        }) = confirmed_payment(event, PaymentType::PlatformSubscription)?
        else {
            return Ok(());
        };
        let Some(user_id) = reference.strip_prefix(SUBSCRIPTION_REFERENCE_PREFIX) else {
            return Ok(());
        };
        self.payments
            .activate_subscription(user_id, &payment_id)
            .await
            .map_err(Into::into)
    }
}

/// Activates an API subscription when its payment confirms; renews it or adds to its credit
/// when a renewal or top-up payment on it confirms.
pub struct ApiSubscriptionActivation {
    pub marketplace: Arc<crate::marketplace::Marketplace>,
}

#[async_trait::async_trait]
impl Reactor for ApiSubscriptionActivation {
    fn name(&self) -> &'static str {
        "api_subscription_activation"
    }

    async fn react(&self, event: &RecordedEvent) -> Result<(), ReactError> {
        let Some(PaymentEvent::PaymentConfirmed {
            payment_id,
            reference,
            amount,
            confirmed_at,
            ..
        }) = confirmed_payment(event, PaymentType::ApiSubscription)?
        else {
            return Ok(());
        };
        use crate::marketplace::{
            API_RENEWAL_REFERENCE_PREFIX, API_SUBSCRIPTION_REFERENCE_PREFIX,
            API_TOP_UP_REFERENCE_PREFIX,
        };
        if let Some(subscription_id) = reference.strip_prefix(API_SUBSCRIPTION_REFERENCE_PREFIX) {
            return self
                .marketplace
                .activate_subscription(subscription_id, &payment_id)
                .await
                .map_err(Into::into);
        }
        let (subscription_id, renewal) = match reference.strip_prefix(API_RENEWAL_REFERENCE_PREFIX)
        {
            Some(id) => (id, true),
            None => match reference.strip_prefix(API_TOP_UP_REFERENCE_PREFIX) {
                Some(id) => (id, false),
                None => return Ok(()),
            },
        };
        self.marketplace
            .apply_subscription_payment(subscription_id, &payment_id, amount, renewal, confirmed_at)
            .await
            .map_err(Into::into)
    }
}

/// Records a model purchase when its `model_sale` payment confirms.
pub struct ModelPurchases {
    pub marketplace: Arc<crate::marketplace::Marketplace>,
}

#[async_trait::async_trait]
impl Reactor for ModelPurchases {
    fn name(&self) -> &'static str {
        "model_purchases"
    }

    async fn react(&self, event: &RecordedEvent) -> Result<(), ReactError> {
        let Some(PaymentEvent::PaymentConfirmed {
            payment_id,
            payer,
            reference,
            amount,
            confirmed_at,
            ..
        }) = confirmed_payment(event, PaymentType::ModelSale)?
        else {
            return Ok(());
        };
        let Some(model_id) =
            reference.strip_prefix(crate::marketplace::MODEL_SALE_REFERENCE_PREFIX)
        else {
            return Ok(());
        };
        self.marketplace
            .record_purchase(model_id, &payer, &payment_id, amount, confirmed_at)
            .await
            .map_err(Into::into)
    }
}
