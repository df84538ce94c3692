//! The compute network's pass: the heartbeat sweeper and the scheduler, run together every
//! [`COMPUTE_PASS_SECS`], after a job is submitted, when a node polls for work and when the
//! manual clock moves. One pass at a time (a lock), each step reading the views only after the
//! projections have applied everything before it, so a pass sees the previous step's effect.
//! The aggregates re-check everything: a stale view can delay a step, never make a wrong one
//! (a job is assigned only while pending; a requeue names the attempt it ends).
//!
//! Steps:
//! 1. online nodes silent for the heartbeat timeout go offline (`NodeWentOffline`);
//! 2. jobs assigned to or running on a node that is not online go back to pending (or fail on
//!    their last attempt: the `Job` aggregate's rule);
//! 3. `aiforge_domain::scheduler::schedule` over the pending jobs and the online nodes with
//!    their load; each assignment is a `JobCommand::Assign`.

use std::sync::Arc;
use std::time::Duration;

use aiforge_commands::compute::Compute;
use aiforge_commands::Database;
use aiforge_domain::job::RequeueReason;
use aiforge_domain::node::OfflineReason;
use aiforge_projections::Projector;
use tokio::sync::watch;

/// How often the pass runs on its own.
pub const COMPUTE_PASS_SECS: u64 = 5;
/// Pending jobs one pass considers (the oldest).
pub const SCHEDULER_PENDING_MAX: i64 = 1000;
/// How long a pass waits for the projections before it reads them anyway.
pub const PASS_PROJECTION_WAIT_SECS: u64 = 5;

/// The compute commands and the lock that keeps passes one at a time.
pub struct ComputeNetwork {
    pub commands: Arc<Compute>,
    /// Jobs' live logs, as their nodes stream them (`aiforge_commands::job_logs`).
    pub logs: aiforge_commands::job_logs::JobLogs,
    pass: tokio::sync::Mutex<()>,
    /// Passes asked for by submissions and not yet started (bounded).
    pub queued: Arc<tokio::sync::Semaphore>,
}

/// Passes submissions may ask for at once: the running one and one waiting behind it (which
/// sees every job submitted meanwhile); a further submission asks for none.
pub const SUBMISSION_PASSES_MAX: usize = 2;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PassReport {
    pub nodes_offline: usize,
    pub jobs_requeued: usize,
    pub jobs_assigned: usize,
}

impl ComputeNetwork {
    pub fn new(commands: Arc<Compute>, db: Database) -> Self {
        Self {
            commands,
            logs: aiforge_commands::job_logs::JobLogs::new(db),
            pass: tokio::sync::Mutex::new(()),
            queued: Arc::new(tokio::sync::Semaphore::new(SUBMISSION_PASSES_MAX)),
        }
    }

    async fn settle(db: &Database, projector: &Projector) {
        if let Ok(head) = db.log_head().await {
            if let Err(e) = projector
                .wait_for(head, Duration::from_secs(PASS_PROJECTION_WAIT_SECS))
                .await
            {
                tracing::warn!(error = %e, "compute pass: projections lag behind the log");
            }
        }
    }

    /// One pass (see the module docs).
    #[tracing::instrument(skip_all)]
    pub async fn run_once(
        &self,
        db: &Database,
        projector: &Projector,
    ) -> Result<PassReport, String> {
        let _one_at_a_time = self.pass.lock().await;
        let mut report = PassReport::default();
        Self::settle(db, projector).await;
        let online = aiforge_projections::compute::online_node_ids(db)
            .await
            .map_err(|e| e.to_string())?;
        let expired = self
            .commands
            .expired(&online, self.commands.now())
            .await
            .map_err(|e| e.to_string())?;
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
                Err(e) => tracing::error!(%node_id, error = %e, "cannot mark a node offline"),
            }
        }
        Self::settle(db, projector).await;
        let lost = aiforge_projections::compute::jobs_on_lost_nodes(db)
            .await
            .map_err(|e| e.to_string())?;
        for (job_id, node_id, attempt, node_status) in lost {
            let reason = if node_status == "deactivated" {
                RequeueReason::NodeDeactivated
            } else {
                RequeueReason::NodeLost
            };
            let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
            match self
                .commands
                .requeue(&job_id, &node_id, attempt, reason)
                .await
            {
                Ok(true) => report.jobs_requeued += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(%job_id, %node_id, error = %e, "cannot requeue a job"),
            }
        }
        Self::settle(db, projector).await;
        let pending = aiforge_projections::compute::pending_jobs(db, SCHEDULER_PENDING_MAX)
            .await
            .map_err(|e| e.to_string())?;
        if !pending.is_empty() {
            let nodes = aiforge_projections::compute::online_nodes(db)
                .await
                .map_err(|e| e.to_string())?;
            for assignment in aiforge_domain::scheduler::schedule(&pending, &nodes) {
                match self
                    .commands
                    .assign(&assignment.job_id, &assignment.node_id)
                    .await
                {
                    Ok(true) => report.jobs_assigned += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(job_id = %assignment.job_id, error = %e, "cannot assign a job")
                    }
                }
            }
            Self::settle(db, projector).await;
        }
        Ok(report)
    }
}

/// Runs the pass every `every` until shutdown.
/// Runs a pass every `every` on the instance that holds the scheduler lease (the sweeper and
/// the scheduler run once for the cluster; passes a request triggers run where it arrives, and
/// the aggregates make a concurrent step harmless).
pub async fn run_compute_passes(
    db: Database,
    projector: Projector,
    network: Arc<ComputeNetwork>,
    lease: Arc<aiforge_commands::lease::Lease>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if lease.is_held() {
            if let Err(e) = network.run_once(&db, &projector).await {
                tracing::error!(error = %e, "compute pass failed");
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
