//! The global event log: every event of every aggregate, in one total order that all readers
//! agree on and that never changes once read.
//!
//! - SQLite: order = `global_position`. Appends hold the single write lock from position
//!   assignment to COMMIT, so positions become visible in order.
//! - PostgreSQL: order = `(tx_id, global_position)`, read only below a *safe bound*: the smallest
//!   transaction id that may still add events. Identity values commit out of order, so reading by
//!   position alone could skip an event that commits late; a transaction id below the bound has
//!   finished, and every later writer gets a larger id, so nothing can appear behind a reader.
//!
//! The bound is computed per database, not from the cluster-wide snapshot xmin, so a long write
//! transaction elsewhere on the server (another database, a migration of another table) does not
//! stall the log. It is the least of: the next transaction id (`xmax` of a snapshot), and the ids
//! of running transactions that hold a lock on this database's `events` table. That is sound
//! because every appender takes its `events` lock before it gets a transaction id (see
//! `repository::append_postgres`), and because the bound is computed in a statement *before* the
//! one that reads events: a transaction that was running then either still holds its lock (and
//! bounds the read) or had finished (and is visible to the later statement).
//!
//! A reader's checkpoint is a [`LogPosition`]; `tx` is 0 on SQLite.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Database, Engine, StoreError};

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// PostgreSQL transaction id of the append (0 on SQLite). Compared first.
    pub tx: i64,
    /// The event's unique global position.
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { tx: 0, position: 0 };
}

/// One event as read from the global log. `payload` and `metadata` are the stored JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: i64,
    pub tx: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    /// RFC 3339, UTC.
    pub recorded_at: String,
}

impl RecordedEvent {
    pub fn log_position(&self) -> LogPosition {
        LogPosition {
            tx: self.tx,
            position: self.position,
        }
    }
}

const PG_SELECT: &str = "SELECT global_position, tx_id::text AS tx, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload::text AS payload, metadata::text AS metadata, \
     to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at \
     FROM events";
const SQLITE_SELECT: &str = "SELECT global_position, '0' AS tx, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata, recorded_at FROM events";

fn decode<R: Row>(row: &R) -> Result<RecordedEvent, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let tx: String = row.try_get("tx")?;
    Ok(RecordedEvent {
        position: row.try_get("global_position")?,
        tx: tx
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("transaction id '{tx}'")))?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// The least transaction id that may still append to this database's `events` table (module
/// docs). Runs as its own statement, before the statement that reads below it.
const PG_SAFE_BOUND: &str = "\
    WITH snap AS (SELECT pg_current_snapshot() AS s), \
    writers AS ( \
        SELECT own.transactionid::text::bigint AS xid32 \
        FROM pg_locks rel \
        JOIN pg_locks own ON own.pid = rel.pid AND own.locktype = 'transactionid' \
             AND own.mode = 'ExclusiveLock' AND own.granted \
        WHERE rel.locktype = 'relation' AND rel.relation = 'events'::regclass \
          AND rel.database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
    SELECT COALESCE( \
        (SELECT MIN(x::text::bigint) FROM snap, pg_snapshot_xip(snap.s) AS x \
         WHERE (x::text::bigint % 4294967296) IN (SELECT xid32 FROM writers)), \
        (SELECT pg_snapshot_xmax(snap.s)::text::bigint FROM snap))";

async fn pg_safe_bound(pool: &sqlx::PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(PG_SAFE_BOUND).fetch_one(pool).await?)
}

/// Events kept by [`LogTail`]: a few batches of every follower, so one that falls a little
/// behind the others is still answered from memory.
pub const LOG_TAIL_EVENTS_MAX: usize = 4096;
/// A read that found nothing after the kept stretch is trusted this long by the followers that
/// ask next, as long as this process appended nothing since: followers caught up together ask
/// the database once, not once each. Appends by other processes are found by the followers'
/// polls (every 250 ms), each of which comes after this has run out.
pub const LOG_TAIL_QUIET_MILLIS: u64 = 50;

/// The stretch of the log this process read last: every event after `from` up to and including
/// `to`, in global order, with none missing (each read returns the whole prefix of the log after
/// its start, and a read from `to` continues it). Oldest events leave first.
#[derive(Debug, Default)]
pub(crate) struct LogTail {
    from: LogPosition,
    to: LogPosition,
    events: std::collections::VecDeque<RecordedEvent>,
    /// The last read from `to` found nothing: when, and this process's append count before it.
    nothing_after: Option<(u64, std::time::Instant)>,
}

impl LogTail {
    /// Whether a read from `to` found nothing lately, with no local append since.
    fn nothing_new(&self, appends: u64) -> bool {
        self.nothing_after.is_some_and(|(count, at)| {
            count == appends
                && at.elapsed() < std::time::Duration::from_millis(LOG_TAIL_QUIET_MILLIS)
        })
    }

    fn found_nothing(&mut self, appends: u64) {
        self.nothing_after = Some((appends, std::time::Instant::now()));
    }

    /// Up to `want` kept events after `after` (which lies in `from..=to`).
    fn after(&self, after: LogPosition, want: usize) -> Vec<RecordedEvent> {
        let first = self.events.partition_point(|e| e.log_position() <= after);
        self.events.range(first..).take(want).cloned().collect()
    }

    /// Appends what a read from `to` returned.
    fn extend(&mut self, events: &[RecordedEvent]) {
        let Some(last) = events.last() else {
            return;
        };
        self.nothing_after = None;
        self.to = last.log_position();
        self.events.extend(events.iter().cloned());
        while self.events.len() > LOG_TAIL_EVENTS_MAX {
            if let Some(oldest) = self.events.pop_front() {
                self.from = oldest.log_position();
            }
        }
    }

    /// Starts over at `after` with what a read from there returned.
    fn restart(&mut self, after: LogPosition, events: &[RecordedEvent]) {
        self.from = after;
        self.to = after;
        self.nothing_after = None;
        self.events.clear();
        self.extend(events);
    }
}

impl Database {
    /// Events behind which no event can still appear, counted after `at` (projection lag).
    pub async fn count_log_after(&self, at: LogPosition) -> Result<i64, StoreError> {
        match self.engine() {
            Engine::Sqlite(pool) => Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE global_position > $1",
            )
            .bind(at.position)
            .fetch_one(pool)
            .await?),
            Engine::Postgres(pool) => {
                let bound = pg_safe_bound(pool).await?;
                Ok(sqlx::query_scalar(
                    "SELECT COUNT(*) FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
                     AND tx_id < $3::text::xid8",
                )
                .bind(at.tx.to_string())
                .bind(at.position)
                .bind(bound.to_string())
                .fetch_one(pool)
                .await?)
            }
        }
    }

    /// Up to `limit` events strictly after `after`, in global order, none of which can ever be
    /// preceded by an event not yet visible.
    ///
    /// Every follower of the log in this process (projections, reactors, the bus, the gateway's
    /// key index) wakes on the same append and asks for the same events: the stretch of the log
    /// read last is kept ([`LogTail`]), so one of them reads the database and the others are
    /// answered from memory. A read that starts before the kept stretch (a rebuild, an export)
    /// goes to the database and leaves the stretch alone.
    pub async fn read_log_after(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let want = usize::try_from(limit).unwrap_or(0);
        if want == 0 {
            return Ok(Vec::new());
        }
        // Taken before reading: an append committed during the read moves it, so an empty read
        // is never trusted past an append it may have missed.
        let appends = *self.appended.borrow();
        // Held across the read below: followers woken together wait for the one read instead of
        // each sending their own.
        let mut tail = self.tail.lock().await;
        if after < tail.from {
            drop(tail);
            return self.read_log_after_uncached(after, limit).await;
        }
        if after > tail.to {
            // Ahead of the stretch (it was never read this far here): start a new one.
            let events = self.read_log_after_uncached(after, limit).await?;
            tail.restart(after, &events);
            return Ok(events);
        }
        let mut out = tail.after(after, want);
        if out.len() < want && !tail.nothing_new(appends) {
            let more = self
                .read_log_after_uncached(tail.to, i64::try_from(want - out.len()).unwrap_or(limit))
                .await?;
            if more.is_empty() {
                tail.found_nothing(appends);
            }
            tail.extend(&more);
            out.extend(more);
        }
        Ok(out)
    }

    /// [`Database::read_log_after`] from the database itself, never from memory: what an audit
    /// reads (the seal chain's verification must see the stored bytes, altered or not).
    pub async fn read_log_after_uncached(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let began = std::time::Instant::now();
        let read = self.read_log_after_from_db(after, limit).await;
        crate::stages::LOG_READ_DB.since(began);
        read
    }

    async fn read_log_after_from_db(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.engine() {
            Engine::Sqlite(pool) => {
                let sql = format!(
                    "{SQLITE_SELECT} WHERE global_position > $1 ORDER BY global_position LIMIT $2"
                );
                let rows = sqlx::query(&sql)
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode).collect()
            }
            Engine::Postgres(pool) => {
                let bound = pg_safe_bound(pool).await?;
                let sql = format!(
                    "{PG_SELECT} WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
                     AND tx_id < $3::text::xid8 \
                     ORDER BY tx_id, global_position LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(after.tx.to_string())
                    .bind(after.position)
                    .bind(bound.to_string())
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode).collect()
            }
        }
    }

    /// Streams the log from its start through `through` (a point a reader has already seen as
    /// safe, e.g. from `log_head`), in global order, in one query: rows arrive while `each`
    /// works on earlier ones, and nothing is held. A lean read for folds over the raw log:
    /// `event_version`, `metadata` and `recorded_at` are left empty. `each` returns `false` to stop early.
    pub async fn fold_log_through<E: From<StoreError>>(
        &self,
        through: LogPosition,
        mut each: impl FnMut(RecordedEvent) -> Result<bool, E>,
    ) -> Result<(), E> {
        use futures::TryStreamExt;
        // Columns by position (the queries below select them in this order): name look-ups
        // cost more than the fold itself at millions of rows.
        macro_rules! lean {
            ($row:expr) => {{
                let row = $row;
                let tx: &str = row.try_get(1).map_err(StoreError::from)?;
                RecordedEvent {
                    position: row.try_get(0).map_err(StoreError::from)?,
                    tx: tx
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("transaction id '{tx}'")))?,
                    aggregate_type: row.try_get(2).map_err(StoreError::from)?,
                    aggregate_id: row.try_get(3).map_err(StoreError::from)?,
                    sequence: row.try_get(4).map_err(StoreError::from)?,
                    event_type: row.try_get(5).map_err(StoreError::from)?,
                    event_version: String::new(),
                    payload: row.try_get(6).map_err(StoreError::from)?,
                    metadata: String::new(),
                    recorded_at: String::new(),
                }
            }};
        }
        match self.engine() {
            Engine::Sqlite(pool) => {
                let mut rows = sqlx::query(
                    "SELECT global_position, '0' AS tx, aggregate_type, aggregate_id, sequence, \
                     event_type, payload FROM events WHERE global_position <= $1 \
                     ORDER BY global_position",
                )
                .bind(through.position)
                .fetch(pool);
                while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
                    if !each(lean!(&row))? {
                        break;
                    }
                }
            }
            Engine::Postgres(pool) => {
                // Reading the whole log, the planner prefers a parallel scan and an external sort
                // (gigabytes of temp files, no first row for many seconds) to the commit-order
                // index; the index streams from the first row and was 2.5 times faster on 10
                // million events. Both settings last for this read-only transaction only.
                let mut tx = pool.begin().await.map_err(StoreError::from)?;
                sqlx::query("SET LOCAL enable_sort = off")
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                sqlx::query("SET LOCAL jit = off")
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                {
                    let mut rows = sqlx::query(
                        "SELECT global_position, tx_id::text AS tx, aggregate_type, aggregate_id, \
                         sequence, event_type, payload::text AS payload FROM events \
                         WHERE (tx_id, global_position) <= ($1::text::xid8, $2) \
                         ORDER BY tx_id, global_position",
                    )
                    .bind(through.tx.to_string())
                    .bind(through.position)
                    .fetch(&mut *tx);
                    while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
                        if !each(lean!(&row))? {
                            break;
                        }
                    }
                }
                tx.rollback().await.map_err(StoreError::from)?;
            }
        }
        Ok(())
    }

    /// One aggregate's events in sequence order, as the log holds them.
    pub async fn aggregate_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self.engine() {
            Engine::Sqlite(pool) => {
                let sql = format!(
                    "{SQLITE_SELECT} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
                );
                let rows = sqlx::query(&sql)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode).collect()
            }
            Engine::Postgres(pool) => {
                let sql = format!(
                    "{PG_SELECT} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
                );
                let rows = sqlx::query(&sql)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(decode).collect()
            }
        }
    }

    /// The position of the last event a reader can safely see now (`START` if none).
    /// When the log's first event was recorded: the platform's first fact (None on an empty
    /// log). No month before it can hold a fact.
    pub async fn log_began(&self) -> Result<Option<time::OffsetDateTime>, StoreError> {
        let text: Option<String> = match self.engine() {
            Engine::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT recorded_at FROM events ORDER BY global_position LIMIT 1",
                )
                .fetch_optional(pool)
                .await?
            }
            Engine::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT to_char(MIN(recorded_at) AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM events",
                )
                .fetch_one(pool)
                .await?
            }
        };
        text.map(|text| {
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| StoreError::Corrupt(format!("recorded_at '{text}': {e}")))
        })
        .transpose()
    }

    pub async fn log_head(&self) -> Result<LogPosition, StoreError> {
        match self.engine() {
            Engine::Sqlite(pool) => {
                let position: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(global_position) FROM events")
                        .fetch_one(pool)
                        .await?;
                Ok(LogPosition {
                    tx: 0,
                    position: position.unwrap_or(0),
                })
            }
            Engine::Postgres(pool) => {
                let bound = pg_safe_bound(pool).await?;
                let row: Option<(String, i64)> = sqlx::query_as(
                    "SELECT tx_id::text, global_position FROM events \
                     WHERE tx_id < $1::text::xid8 \
                     ORDER BY tx_id DESC, global_position DESC LIMIT 1",
                )
                .bind(bound.to_string())
                .fetch_optional(pool)
                .await?;
                match row {
                    None => Ok(LogPosition::START),
                    Some((tx, position)) => Ok(LogPosition {
                        tx: tx
                            .parse()
                            .map_err(|_| StoreError::Corrupt(format!("transaction id '{tx}'")))?,
                        position,
                    }),
                }
            }
        }
    }

    /// The log position of the event with this global position, to start a range read just
    /// before or after it (`aiforge events export --from/--to`).
    pub async fn log_position_of(&self, position: i64) -> Result<Option<LogPosition>, StoreError> {
        match self.engine() {
            Engine::Sqlite(pool) => {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT global_position FROM events WHERE global_position = $1",
                )
                .bind(position)
                .fetch_optional(pool)
                .await?;
                Ok(found.map(|position| LogPosition { tx: 0, position }))
            }
            Engine::Postgres(pool) => {
                let tx: Option<String> =
                    sqlx::query_scalar("SELECT tx_id::text FROM events WHERE global_position = $1")
                        .bind(position)
                        .fetch_optional(pool)
                        .await?;
                tx.map(|tx| {
                    tx.parse()
                        .map(|tx| LogPosition { tx, position })
                        .map_err(|_| StoreError::Corrupt(format!("transaction id '{tx}'")))
                })
                .transpose()
            }
        }
    }

    /// How many events the store holds.
    pub async fn count_events(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM events";
        Ok(match self.engine() {
            Engine::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Engine::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }
}
