-- State that every instance of `aiforge serve` on this database shares, and that is not an event:
-- it decides nothing after the fact (the events do), it makes many instances behave as one.
-- Chosen over Redis or NATS KV because PostgreSQL is already what makes instances share a log:
-- one engine, row locks that are exact under concurrency, and the usage counters settle in the
-- same transaction as the metering events, so they can never disagree with the log.

-- Admission of API calls (commands/src/gateway/admission.rs; rules in domain/src/admission.rs).
-- Usage settled per subscription and quota period; seeded from the log on first use.
CREATE TABLE gateway_usage
(
    subscription_id text   NOT NULL,
    period          bigint NOT NULL,
    requests        bigint NOT NULL,
    tokens          bigint NOT NULL,
    PRIMARY KEY (subscription_id, period)
);
-- Prepaid credit spent, all time (credit added comes from the log's activation events).
CREATE TABLE gateway_credit
(
    subscription_id text   NOT NULL PRIMARY KEY,
    spent_micros    bigint NOT NULL
);
-- What each call in flight holds until it settles (in the metering transaction) or is released.
-- A hold older than the hold TTL (a crashed instance's) no longer counts.
CREATE TABLE gateway_holds
(
    request_id      text   NOT NULL PRIMARY KEY,
    subscription_id text   NOT NULL,
    period          bigint NOT NULL,
    tokens          bigint NOT NULL,
    micros          bigint NOT NULL,
    held_at_micros  bigint NOT NULL
);
CREATE INDEX gateway_holds_by_subscription ON gateway_holds (subscription_id, period);
-- GCRA state of each rate window of a subscriber (consumer and service).
CREATE TABLE gateway_rate_windows
(
    subject     text   NOT NULL,
    window_name text   NOT NULL,
    tat_micros  bigint,
    PRIMARY KEY (subject, window_name)
);

-- The admission's read, in one round trip: seeds the rows on first use, locks them in a fixed
-- order (usage, credit, windows by name: no deadlock between subscriptions of one subscriber),
-- and returns the counters, what calls in flight hold, the windows' states and the database's
-- clock (one clock for every instance). The caller decides (domain rules) and then writes its
-- hold and the windows in the same transaction.
CREATE FUNCTION gateway_snapshot(
    p_subscription text, p_subject text, p_period bigint, p_windows text[],
    p_seed_requests bigint, p_seed_tokens bigint, p_seed_spent bigint, p_hold_ttl_micros bigint)
    RETURNS TABLE
            (
                requests      bigint,
                tokens        bigint,
                spent_micros  bigint,
                held_requests bigint,
                held_tokens   bigint,
                held_micros   bigint,
                tats          bigint[],
                now_micros    bigint
            )
    LANGUAGE plpgsql
AS
$$
DECLARE
    v_now bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
BEGIN
    -- Admissions of one subscription, and of one subscriber's windows, take turns (always in
    -- this order): first-use inserts of concurrent admissions would otherwise wait on each
    -- other's uncommitted rows in any order, and deadlock.
    PERFORM pg_advisory_xact_lock(hashtext('gateway:subscription:' || p_subscription));
    PERFORM pg_advisory_xact_lock(hashtext('gateway:subject:' || p_subject));
    INSERT INTO gateway_usage (subscription_id, period, requests, tokens)
    VALUES (p_subscription, p_period, p_seed_requests, p_seed_tokens)
    ON CONFLICT DO NOTHING;
    INSERT INTO gateway_credit (subscription_id, spent_micros)
    VALUES (p_subscription, p_seed_spent)
    ON CONFLICT DO NOTHING;
    INSERT INTO gateway_rate_windows (subject, window_name, tat_micros)
    SELECT p_subject, w, NULL FROM unnest(p_windows) AS w
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM gateway_usage u WHERE u.subscription_id = p_subscription AND u.period = p_period FOR UPDATE;
    PERFORM 1 FROM gateway_credit c WHERE c.subscription_id = p_subscription FOR UPDATE;
    PERFORM 1
    FROM gateway_rate_windows r
    WHERE r.subject = p_subject
      AND r.window_name = ANY (p_windows)
    ORDER BY r.window_name
        FOR UPDATE;
    RETURN QUERY
        SELECT u.requests,
               u.tokens,
               c.spent_micros,
               (SELECT count(*)
                FROM gateway_holds h
                WHERE h.subscription_id = p_subscription
                  AND h.period = p_period
                  AND h.held_at_micros > v_now - p_hold_ttl_micros)::bigint,
               (SELECT COALESCE(sum(h.tokens), 0)
                FROM gateway_holds h
                WHERE h.subscription_id = p_subscription
                  AND h.period = p_period
                  AND h.held_at_micros > v_now - p_hold_ttl_micros)::bigint,
               (SELECT COALESCE(sum(h.micros), 0)
                FROM gateway_holds h
                WHERE h.subscription_id = p_subscription
                  AND h.held_at_micros > v_now - p_hold_ttl_micros)::bigint,
               ARRAY(SELECT r.tat_micros
                     FROM unnest(p_windows) WITH ORDINALITY AS x(name, n)
                              LEFT JOIN gateway_rate_windows r
                                        ON r.subject = p_subject AND r.window_name = x.name
                     ORDER BY x.n),
               v_now
        FROM gateway_usage u,
             gateway_credit c
        WHERE u.subscription_id = p_subscription
          AND u.period = p_period
          AND c.subscription_id = p_subscription;
END
$$;

-- The last heartbeat of each node (heartbeats are not events: a node sends one every 30 s).
-- Any instance records it; every instance's sweeper reads it.
CREATE TABLE node_heartbeats
(
    node_id  text   NOT NULL PRIMARY KEY,
    at       text   NOT NULL, -- RFC 3339, the app clock
    at_unix  bigint NOT NULL, -- the same instant in seconds, for the sweeper's comparison
    metrics  text   NOT NULL  -- JSON of NodeMetrics
);

-- Jobs' live log lines as their nodes stream them (not events: they decide nothing), readable
-- from any instance; bounded per job by the writer (JOB_LOG_BYTES_MAX, oldest lines dropped).
CREATE TABLE job_log_lines
(
    job_id  text    NOT NULL,
    seq     bigint  NOT NULL,
    stream  text    NOT NULL,
    text    text    NOT NULL,
    attempt integer NOT NULL,
    bytes   integer NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE job_logs
(
    job_id  text   NOT NULL PRIMARY KEY,
    next_seq bigint NOT NULL,
    bytes   bigint NOT NULL,
    dropped bigint NOT NULL,
    touched_unix bigint NOT NULL
);

-- Leases: a periodic task that must run once for the cluster (the listing scheduler, the compute
-- pass) runs on the instance holding its lease; the holder renews it, and another instance takes
-- it once it has expired (its holder died or stopped).
CREATE TABLE leases
(
    name               text   NOT NULL PRIMARY KEY,
    holder             text   NOT NULL,
    expires_unix_millis bigint NOT NULL
);
