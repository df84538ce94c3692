-- State that instances of `aiforge serve` share and that is not an event (see the PostgreSQL
-- migration of the same number for why it lives in the database). On SQLite there is one
-- instance: the gateway's admission keeps its counters in memory (the gateway_* tables stay
-- empty, kept so both engines have the same schema); heartbeats, job logs and leases use the
-- tables as on PostgreSQL.

CREATE TABLE gateway_usage
(
    subscription_id text    NOT NULL,
    period          integer NOT NULL,
    requests        integer NOT NULL,
    tokens          integer NOT NULL,
    PRIMARY KEY (subscription_id, period)
) STRICT;
CREATE TABLE gateway_credit
(
    subscription_id text    NOT NULL PRIMARY KEY,
    spent_micros    integer NOT NULL
) STRICT;
CREATE TABLE gateway_holds
(
    request_id      text    NOT NULL PRIMARY KEY,
    subscription_id text    NOT NULL,
    period          integer NOT NULL,
    tokens          integer NOT NULL,
    micros          integer NOT NULL,
    held_at_micros  integer NOT NULL
) STRICT;
CREATE INDEX gateway_holds_by_subscription ON gateway_holds (subscription_id, period);
CREATE TABLE gateway_rate_windows
(
    subject     text    NOT NULL,
    window_name text    NOT NULL,
    tat_micros  integer,
    PRIMARY KEY (subject, window_name)
) STRICT;

CREATE TABLE node_heartbeats
(
    node_id  text    NOT NULL PRIMARY KEY,
    at       text    NOT NULL,
    at_unix  integer NOT NULL,
    metrics  text    NOT NULL
) STRICT;

CREATE TABLE job_log_lines
(
    job_id  text    NOT NULL,
    seq     integer NOT NULL,
    stream  text    NOT NULL,
    text    text    NOT NULL,
    attempt integer NOT NULL,
    bytes   integer NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT;
CREATE TABLE job_logs
(
    job_id       text    NOT NULL PRIMARY KEY,
    next_seq     integer NOT NULL,
    bytes        integer NOT NULL,
    dropped      integer NOT NULL,
    touched_unix integer NOT NULL
) STRICT;

CREATE TABLE leases
(
    name                text    NOT NULL PRIMARY KEY,
    holder              text    NOT NULL,
    expires_unix_millis integer NOT NULL
) STRICT;
