-- The event store. Column names and types up to `metadata` are exactly those of postgres-es, so
-- its repository reads this table unchanged; the columns after them are ours.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    -- json, not jsonb: the stored text is what the hash chain and exports seal, byte for byte.
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    -- Unique per event, handed out at insert. Identity values are taken in insert order but
    -- become visible in COMMIT order, so on their own they are NOT a safe reading order: a reader
    -- that has seen position 10 may later see 9 appear.
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    -- The inserting transaction's id. The global log is read in (tx_id, global_position) order and
    -- only below the xmin of the reader's snapshot (every transaction with a smaller id has
    -- finished), so a reader never skips an event that commits late. Chosen over serialising
    -- appends because it keeps concurrent writers (and PostgreSQL's group commit) parallel.
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    -- The application clock's time of the append (set by commands/, not by the database).
    recorded_at     timestamptz                  NOT NULL,
    -- The primary key is the optimistic-concurrency guard: two commits of the same sequence for
    -- one aggregate cannot both succeed.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    UNIQUE (global_position)
);

CREATE INDEX events_commit_order ON events (tx_id, global_position);

-- postgres-es can snapshot aggregates; AIForge does not, but keeps its table so the repository's
-- snapshot reads are valid.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- One row per command that appended events, written in the same transaction as its events:
-- the idempotency record (Stripe's rule). A retried command id finds its first outcome here.
CREATE TABLE command_log
(
    command_id      text        NOT NULL PRIMARY KEY,
    request_hash    text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    last_tx         bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL
);

-- Uniqueness across aggregates (an email, a username, later a wallet or a tx hash) cannot be
-- decided inside one aggregate. A command names the keys it claims; they are inserted in the same
-- transaction as its events, so a claim exists if and only if the events that made it exist.
CREATE TABLE claims
(
    namespace      text        NOT NULL,
    key            text        NOT NULL,
    owner_type     text        NOT NULL,
    owner_id       text        NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- Where each catch-up reader of the global log (projections, the bus publisher) stands. A
-- projection updates its row in the same transaction as its view writes.
CREATE TABLE checkpoints
(
    name          text   NOT NULL PRIMARY KEY,
    last_tx       bigint NOT NULL,
    last_position bigint NOT NULL
);
