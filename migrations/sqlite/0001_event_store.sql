-- The event store. Column names up to `metadata` are exactly those of sqlite-es, so its
-- repository reads this table unchanged; the columns after them are ours.
CREATE TABLE events
(
    aggregate_type  text                           NOT NULL,
    aggregate_id    text                           NOT NULL,
    sequence        integer CHECK (sequence >= 0)  NOT NULL,
    event_type      text                           NOT NULL,
    event_version   text                           NOT NULL,
    payload         text                           NOT NULL,
    metadata        text                           NOT NULL,
    -- SQLite has one writer at a time: the position is taken under the write lock, which is held
    -- until COMMIT, so positions are visible in commit order and are themselves a safe reading
    -- order (no transaction ids needed, unlike PostgreSQL).
    global_position integer                        NOT NULL,
    -- The application clock's time of the append, RFC 3339 (set by commands/).
    recorded_at     text                           NOT NULL,
    -- The optimistic-concurrency guard: one sequence number per aggregate, once.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    UNIQUE (global_position)
) STRICT;

CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

-- Idempotency record, written in the same transaction as the command's events.
CREATE TABLE command_log
(
    command_id      text    NOT NULL PRIMARY KEY,
    request_hash    text    NOT NULL,
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    last_tx         integer NOT NULL,
    last_position   integer NOT NULL,
    recorded_at     text    NOT NULL
) STRICT;

-- Cross-aggregate uniqueness claims, written in the same transaction as the events that make them.
CREATE TABLE claims
(
    namespace      text NOT NULL,
    key            text NOT NULL,
    owner_type     text NOT NULL,
    owner_id       text NOT NULL,
    PRIMARY KEY (namespace, key)
) STRICT;

-- Where each catch-up reader of the global log stands (last_tx is always 0 on SQLite).
CREATE TABLE checkpoints
(
    name          text    NOT NULL PRIMARY KEY,
    last_tx       integer NOT NULL,
    last_position integer NOT NULL
) STRICT;
