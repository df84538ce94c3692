-- Admin operations (issue: operating the platform). An admin deactivates an account with a
-- reason (AccountEvent::UserDeactivated); the view shows it until a reactivation. No event of
-- these kinds existed before this migration, so the new columns start NULL and the projection's
-- checkpoint stays.
ALTER TABLE users_view ADD COLUMN deactivated_at text;
ALTER TABLE users_view ADD COLUMN deactivation_reason text;

-- The admin's payment list is filtered by type, state, network, payer and date, newest first.
CREATE INDEX payments_view_by_created ON payments_view (created_at, payment_id);
-- A node's job history (the admin's node page).
CREATE INDEX jobs_view_by_node_submitted ON jobs_view (node_id, submitted_at, job_id);
-- Users active in the last 30 days (any metered call), for the admin's counts.
CREATE INDEX api_calls_view_by_at ON api_calls_view (at, consumer);
