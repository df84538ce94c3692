//! The read models as the application layer's [`Views`] port: what the cluster's periodic passes
//! (`aiforge_commands::passes`) read, each after the projections have caught up with the log.

use std::time::Duration;

use aiforge_commands::passes::{JobOnLostNode, ViewError, Views};
use aiforge_commands::Database;
use aiforge_domain::scheduler::{ActiveNode, PendingJob};
use async_trait::async_trait;
use time::OffsetDateTime;

use crate::Projector;

/// How long a pass waits for the projections before it reads them anyway.
pub const PASS_PROJECTION_WAIT_SECS: u64 = 5;

/// The views over one database, settled by its projector.
#[derive(Clone)]
pub struct ProjectedViews {
    pub db: Database,
    pub projector: Projector,
}

#[async_trait]
impl Views for ProjectedViews {
    async fn settle(&self) {
        match self.db.log_head().await {
            Ok(head) => {
                if let Err(e) = self
                    .projector
                    .wait_for(head, Duration::from_secs(PASS_PROJECTION_WAIT_SECS))
                    .await
                {
                    tracing::warn!(error = %e, "a pass reads views that lag behind the log");
                }
            }
            Err(e) => tracing::warn!(error = %e, "a pass cannot read the log head"),
        }
    }

    async fn online_node_ids(&self) -> Result<Vec<String>, ViewError> {
        crate::compute::online_node_ids(&self.db)
            .await
            .map_err(ViewError::new)
    }

    async fn online_nodes(&self) -> Result<Vec<ActiveNode>, ViewError> {
        crate::compute::online_nodes(&self.db)
            .await
            .map_err(ViewError::new)
    }

    async fn jobs_on_lost_nodes(&self) -> Result<Vec<JobOnLostNode>, ViewError> {
        let rows = crate::compute::jobs_on_lost_nodes(&self.db)
            .await
            .map_err(ViewError::new)?;
        Ok(rows
            .into_iter()
            .map(|(job_id, node_id, attempt, status)| JobOnLostNode {
                job_id,
                node_id,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                node_deactivated: status == "deactivated",
            })
            .collect())
    }

    async fn pending_jobs(&self, limit: i64) -> Result<Vec<PendingJob>, ViewError> {
        crate::compute::pending_jobs(&self.db, limit)
            .await
            .map_err(ViewError::new)
    }

    async fn payables(
        &self,
        limit: i64,
    ) -> Result<Vec<aiforge_commands::passes::PayableLine>, ViewError> {
        crate::payouts::payables(&self.db, limit)
            .await
            .map_err(ViewError::new)
    }

    async fn payable_credits_since(
        &self,
        account: &str,
        since: &str,
        except_reference: &str,
    ) -> Result<i64, ViewError> {
        crate::payouts::credits_since(&self.db, account, since, except_reference)
            .await
            .map_err(ViewError::new)
    }

    async fn payouts_in(
        &self,
        state: &str,
        limit: i64,
    ) -> Result<Vec<aiforge_commands::passes::PayoutLine>, ViewError> {
        crate::payouts::in_state(&self.db, state, limit)
            .await
            .map_err(ViewError::new)
    }

    async fn receipts_due(
        &self,
        limit: i64,
    ) -> Result<Vec<aiforge_commands::passes::ClosePayouts>, ViewError> {
        crate::payouts::receipts_due(&self.db, limit)
            .await
            .map_err(ViewError::new)
    }

    async fn node_owner(&self, node_id: &str) -> Result<Option<String>, ViewError> {
        let sql = "SELECT owner FROM nodes_view WHERE node_id = $1";
        aiforge_commands::on_engine!(self.db, |pool| sqlx::query_scalar(sql)
            .bind(node_id)
            .fetch_optional(pool)
            .await)
        .map_err(ViewError::new)
    }

    async fn last_closed_month(&self) -> Result<Option<String>, ViewError> {
        crate::revenue::closes_summary(&self.db)
            .await
            .map(|s| s.last_closed)
            .map_err(ViewError::new)
    }

    async fn listings_due(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<(String, bool)>, ViewError> {
        crate::marketplace::listings_due(&self.db, now, limit)
            .await
            .map_err(ViewError::new)
    }
}
