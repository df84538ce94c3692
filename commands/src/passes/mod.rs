//! The cluster's periodic passes: the compute network's (heartbeat sweeper and job scheduler) and
//! the listing scheduler's. Their rules live here; what they read comes through the [`Views`] port
//! (implemented over the read models by `aiforge_projections::views`), and what they change goes
//! through the aggregates, which re-check everything: a stale view can delay a step, never make a
//! wrong one. `api/` only starts them and calls them after requests that should not wait.

pub mod compute;
pub mod listings;

use std::sync::Arc;
use std::time::Duration;

use aiforge_domain::scheduler::{ActiveNode, PendingJob};
use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::lease::Lease;

/// A read of the views failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the views")]
pub struct ViewError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl ViewError {
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(source))
    }
}

/// A job assigned to or running on a node that is not online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOnLostNode {
    pub job_id: String,
    pub node_id: String,
    pub attempt: u32,
    /// The node was deactivated by its owner (not merely silent).
    pub node_deactivated: bool,
}

/// A payable ledger account (`creator_payable:*`, `node_payable:*`) with money in it, and what
/// its payouts hold (the payout pass, `crate::payouts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayableLine {
    /// The account's name, `kind:key`.
    pub account: String,
    pub balance_micros: i64,
    /// Payouts of this account so far (any state): the next one's number.
    pub payouts: u64,
    /// What its open payouts (awaiting approval or payment, in progress) hold.
    pub open_micros: i64,
    /// Months whose close already made a payout of this account that did not fail (open,
    /// completed or cancelled by an admin: none of them is requested again by the pass).
    pub paid_closes: Vec<String>,
    /// The month of each failed payout of a close (a month once per failure): the pass asks
    /// again for a failed close's payout, a bounded number of times.
    pub failed_closes: Vec<String>,
}

/// A close whose payouts have all ended and whose receipt is not yet published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosePayouts {
    /// `YYYY-MM`.
    pub month: String,
    /// Its completed payouts, in payout id order.
    pub completed: Vec<CompletedPayout>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPayout {
    pub payout_id: String,
    pub user_id: String,
    pub network: String,
    pub address: String,
    pub amount_micros: i64,
}

/// A payout as the pass reads it from the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutLine {
    pub payout_id: String,
    pub network: String,
    pub amount_micros: i64,
    pub nonce: Option<i64>,
}

/// What the passes read: the views, after they have applied the log up to now.
#[async_trait]
pub trait Views: Send + Sync {
    /// Waits (a bounded time) until the views have applied every event in the log now, so a step
    /// sees the previous step's effect. Never fails: a lagging view delays a step at worst.
    async fn settle(&self);
    async fn online_node_ids(&self) -> Result<Vec<String>, ViewError>;
    async fn online_nodes(&self) -> Result<Vec<ActiveNode>, ViewError>;
    async fn jobs_on_lost_nodes(&self) -> Result<Vec<JobOnLostNode>, ViewError>;
    /// The oldest pending jobs, at most `limit`.
    async fn pending_jobs(&self, limit: i64) -> Result<Vec<PendingJob>, ViewError>;
    /// Payable accounts with a positive balance, at most `limit`.
    async fn payables(&self, limit: i64) -> Result<Vec<PayableLine>, ViewError>;
    /// Micro-USDT credited to `account` at or after `since` (RFC 3339, the app clock), except by
    /// the postings of `except_reference` (a close's `revenue:YYYY-MM`): money earned after a
    /// month ended, which that month's close does not pay.
    async fn payable_credits_since(
        &self,
        account: &str,
        since: &str,
        except_reference: &str,
    ) -> Result<i64, ViewError>;
    /// Payouts in `state` (`awaiting_payment`, `in_progress`), oldest first, at most `limit`.
    async fn payouts_in(&self, state: &str, limit: i64) -> Result<Vec<PayoutLine>, ViewError>;
    /// Closes whose payouts have all ended (none awaiting or in progress) and whose receipt is
    /// not published, oldest first, at most `limit`.
    async fn receipts_due(&self, limit: i64) -> Result<Vec<ClosePayouts>, ViewError>;
    /// The user who owns a compute node.
    async fn node_owner(&self, node_id: &str) -> Result<Option<String>, ViewError>;
    /// The latest month closed (`YYYY-MM`).
    async fn last_closed_month(&self) -> Result<Option<String>, ViewError>;
    /// Models whose listing (false) or grace (true: delist) has ended by `now`, at most `limit`.
    async fn listings_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(String, bool)>, ViewError>;
}

/// Runs `pass` every `every` on the instance that holds `lease` (one pass for the cluster), until
/// `shutdown` turns true.
pub async fn every<F, Fut, E>(
    lease: Arc<Lease>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    name: &'static str,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    loop {
        if lease.is_held() {
            if let Err(e) = pass().await {
                tracing::error!(pass = name, error = %crate::error_chain(&e), "periodic pass failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
