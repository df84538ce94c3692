//! The listing scheduler: finds models whose listing or grace period has ended and sends the
//! `Model` aggregate the command that moves them on; the aggregate checks the dates itself, and
//! the steps' fixed command ids make a repeat harmless.

use time::OffsetDateTime;

use super::{ViewError, Views};
use crate::marketplace::Marketplace;

/// Models handled per round.
pub const SCHEDULER_BATCH_MAX: i64 = 500;

/// One pass at `now`: returns how many models moved. Two rounds, so that a listing that ended long
/// ago may lapse and finish its grace in one pass (the views settle in between).
pub async fn run_once(
    views: &dyn Views,
    marketplace: &Marketplace,
    now: OffsetDateTime,
) -> Result<usize, ViewError> {
    let mut moved = 0;
    for _ in 0..2 {
        views.settle().await;
        let mut round = 0;
        for (model_id, delist) in views.listings_due(now, SCHEDULER_BATCH_MAX).await? {
            match marketplace.advance_listing(&model_id, delist).await {
                Ok(true) => round += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(%model_id, error = %crate::error_chain(&e), "listing step failed")
                }
            }
        }
        moved += round;
        if round == 0 {
            break;
        }
    }
    views.settle().await;
    Ok(moved)
}
