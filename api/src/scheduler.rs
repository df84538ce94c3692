//! The listing scheduler: finds models whose listing or grace period has ended (from
//! `models_view`) and sends the `Model` aggregate the command that moves them on; the aggregate
//! checks the dates itself, so a stale view can delay a step but never take a wrong one.

use std::sync::Arc;
use std::time::Duration;

use aiforge_commands::marketplace::Marketplace;
use aiforge_commands::{Clock, Database};
use aiforge_projections::Projector;
use tokio::sync::watch;

/// Models handled per pass.
pub const SCHEDULER_BATCH_MAX: i64 = 500;

/// One pass at `now`: returns how many models moved. Waits for the projections first so that a
/// model lapsed by the previous pass is seen in grace.
pub async fn run_once(
    db: &Database,
    projector: &Projector,
    marketplace: &Marketplace,
    now: time::OffsetDateTime,
) -> Result<usize, String> {
    let mut moved = 0;
    // Two rounds: a listing that ended long ago may lapse and finish its grace in one pass.
    for _ in 0..2 {
        if let Ok(head) = db.log_head().await {
            let _ = projector.wait_for(head, Duration::from_secs(5)).await;
        }
        let due = aiforge_projections::marketplace::listings_due(db, now, SCHEDULER_BATCH_MAX)
            .await
            .map_err(|e| e.to_string())?;
        let mut round = 0;
        for (model_id, delist) in due {
            match marketplace.advance_listing(&model_id, delist).await {
                Ok(true) => round += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(%model_id, error = %e, "listing step failed"),
            }
        }
        moved += round;
        if round == 0 {
            break;
        }
    }
    if let Ok(head) = db.log_head().await {
        let _ = projector.wait_for(head, Duration::from_secs(5)).await;
    }
    Ok(moved)
}

/// Runs a pass every `every`, on the instance that holds the scheduler lease only (one pass for
/// the cluster; the `Model` aggregate and the steps' fixed command ids make a repeat harmless).
pub async fn run_listing_scheduler(
    db: Database,
    projector: Projector,
    marketplace: Arc<Marketplace>,
    clock: Arc<dyn Clock>,
    lease: Arc<aiforge_commands::lease::Lease>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if lease.is_held() {
            if let Err(e) = run_once(&db, &projector, &marketplace, clock.now()).await {
                tracing::error!(error = %e, "listing scheduler pass failed");
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
