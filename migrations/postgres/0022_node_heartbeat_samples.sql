-- Nodes' heartbeat metrics over time, for the node operator's and the admin's charts
-- (`GET /api/nodes/{id}/heartbeats`). Heartbeats are not events (a node sends one every 30 s and
-- they decide nothing but liveness), so, like `node_heartbeats`, this is a plain table, not a
-- projection: bounded to one sample per node per UTC minute (the first heartbeat of the minute;
-- the primary key makes a second one a no-op, whichever instance took it) and to
-- `HEARTBEAT_SAMPLES_KEEP_SECS` (30 days), older rows pruned by the compute pass.
CREATE TABLE node_heartbeat_samples
(
    node_id     text   NOT NULL,
    minute_unix bigint NOT NULL, -- the sample's UTC minute, in seconds (a multiple of 60)
    at          text   NOT NULL, -- RFC 3339, the app clock: when the heartbeat came
    metrics     text   NOT NULL, -- JSON of NodeMetrics, as the node sent it
    PRIMARY KEY (node_id, minute_unix)
);
-- The prune deletes by age across all nodes (a node that stopped heartbeating included).
CREATE INDEX node_heartbeat_samples_by_minute ON node_heartbeat_samples (minute_unix);
