-- Nodes' heartbeat metrics over time (see the PostgreSQL migration of the same number for why
-- this is a plain table, one sample per node per minute, kept 30 days).
CREATE TABLE node_heartbeat_samples
(
    node_id     text    NOT NULL,
    minute_unix integer NOT NULL,
    at          text    NOT NULL,
    metrics     text    NOT NULL,
    PRIMARY KEY (node_id, minute_unix)
) STRICT;
CREATE INDEX node_heartbeat_samples_by_minute ON node_heartbeat_samples (minute_unix);
