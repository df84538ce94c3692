//! The compute network's pass: the heartbeat sweeper and the scheduler, run together every
//! [`COMPUTE_PASS_SECS`], after a job is submitted, when a node polls for work and when the
//! manual clock moves. One pass at a time per instance (a lock), each step reading the views only
//! after they have applied everything before it, so a pass sees the previous step's effect. The
//! aggregates re-check everything: a job is assigned only while pending; a requeue names the
//! attempt it ends.
//!
//! Steps:
//! 1. online nodes silent for the heartbeat timeout go offline (`NodeWentOffline`);
//! 2. jobs assigned to or running on a node that is not online go back to pending (or fail on
//!    their last attempt: the `Job` aggregate's rule);
//! 3. `aiforge_domain::scheduler::schedule` over the pending jobs and the online nodes with
//!    their load; each assignment is a `JobCommand::Assign`;
//! 4. once per minute of the clock, heartbeat samples past their keep are deleted
//!    (`liveness::prune`; a delete is a write, so not on every pass).

use std::sync::Arc;

use aiforge_domain::job::RequeueReason;
use aiforge_domain::node::OfflineReason;

use super::{ViewError, Views};
use crate::compute::{Compute, ComputeError};
use crate::job_logs::JobLogs;
use crate::Database;

/// How often the pass runs on its own.
pub const COMPUTE_PASS_SECS: u64 = 5;
/// Pending jobs one pass considers (the oldest).
pub const SCHEDULER_PENDING_MAX: i64 = 1000;
/// Passes submissions may ask for at once: the running one and one waiting behind it (which
/// sees every job submitted meanwhile); a further submission asks for none.
pub const SUBMISSION_PASSES_MAX: usize = 2;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PassReport {
    pub nodes_offline: usize,
    pub jobs_requeued: usize,
    pub jobs_assigned: usize,
}

/// A pass could not read what it needs.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Views(#[from] ViewError),
    #[error("cannot find the silent nodes")]
    Heartbeats(#[from] ComputeError),
}

/// The compute commands, the views the pass reads and the lock that keeps passes one at a time.
pub struct ComputeNetwork {
    pub commands: Arc<Compute>,
    /// Jobs' live logs, as their nodes stream them.
    pub logs: JobLogs,
    views: Arc<dyn Views>,
    pass: tokio::sync::Mutex<()>,
    /// The clock's minute (Unix seconds) of the last prune of heartbeat samples.
    pruned_minute: std::sync::Mutex<Option<i64>>,
    /// Passes asked for by submissions and not yet started (bounded).
    pub queued: Arc<tokio::sync::Semaphore>,
}

impl ComputeNetwork {
    pub fn new(commands: Arc<Compute>, db: Database, views: Arc<dyn Views>) -> Self {
        Self {
            commands,
            logs: JobLogs::new(db),
            views,
            pass: tokio::sync::Mutex::new(()),
            pruned_minute: std::sync::Mutex::new(None),
            queued: Arc::new(tokio::sync::Semaphore::new(SUBMISSION_PASSES_MAX)),
        }
    }

    /// One pass (see the module docs).
    #[tracing::instrument(skip_all)]
    pub async fn run_once(&self) -> Result<PassReport, PassError> {
        let _one_at_a_time = self.pass.lock().await;
        let views = self.views.as_ref();
        let mut report = PassReport::default();
        views.settle().await;
        let online = views.online_node_ids().await?;
        let expired = self.commands.expired(&online, self.commands.now()).await?;
        for node_id in expired {
            match self
                .commands
                .mark_offline(&node_id, OfflineReason::HeartbeatTimeout)
                .await
            {
                Ok(outcome) if outcome.last.is_some() => {
                    tracing::info!(%node_id, "node silent past the heartbeat timeout: offline");
                    report.nodes_offline += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(%node_id, error = %crate::error_chain(&e), "cannot mark a node offline")
                }
            }
        }
        views.settle().await;
        for lost in views.jobs_on_lost_nodes().await? {
            let reason = if lost.node_deactivated {
                RequeueReason::NodeDeactivated
            } else {
                RequeueReason::NodeLost
            };
            match self
                .commands
                .requeue(&lost.job_id, &lost.node_id, lost.attempt, reason)
                .await
            {
                Ok(true) => report.jobs_requeued += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(
                    job_id = %lost.job_id,
                    node_id = %lost.node_id,
                    error = %crate::error_chain(&e),
                    "cannot requeue a job"
                ),
            }
        }
        views.settle().await;
        let pending = views.pending_jobs(SCHEDULER_PENDING_MAX).await?;
        if !pending.is_empty() {
            let nodes = views.online_nodes().await?;
            for assignment in aiforge_domain::scheduler::schedule(&pending, &nodes) {
                match self
                    .commands
                    .assign(&assignment.job_id, &assignment.node_id)
                    .await
                {
                    Ok(true) => report.jobs_assigned += 1,
                    Ok(false) => {}
                    Err(e) => tracing::error!(
                        job_id = %assignment.job_id,
                        error = %crate::error_chain(&e),
                        "cannot assign a job"
                    ),
                }
            }
            views.settle().await;
        }
        self.prune_samples().await;
        Ok(report)
    }
}

impl ComputeNetwork {
    /// Step 4: prunes heartbeat samples when the clock's minute changed since the last prune. A
    /// failure is logged and retried by the next minute's pass (the samples only wait longer).
    async fn prune_samples(&self) {
        let now = self.commands.now();
        let minute = crate::liveness::sample_minute(now);
        {
            let mut pruned = self
                .pruned_minute
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *pruned == Some(minute) {
                return;
            }
            *pruned = Some(minute);
        }
        match self.commands.prune_heartbeat_samples(now).await {
            Ok(0) => {}
            Ok(gone) => tracing::debug!(gone, "heartbeat samples past their keep deleted"),
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "cannot prune heartbeat samples")
            }
        }
    }
}
