//! Read models (views) built from the global event log, and the catch-up projector that keeps
//! them current. Each projection owns its view tables and a checkpoint row; a batch of events
//! and the checkpoint move in one transaction, so a crash never applies an event twice or skips
//! one, and a restart resumes where the last commit stopped. A rebuild empties the views and
//! replays from the start; because views copy event fields and the database adds nothing of its
//! own, the rebuilt tables equal the live ones byte for byte (see `view_digest`).
//!
//! Business rules do not live here: events carry the facts, projections copy them.

// The workspace's one engine dispatch (`aiforge_commands::on_engine!`), in textual scope for
// every module below.
#[macro_use]
extern crate aiforge_commands;

pub mod admins;
pub mod compute;
pub mod distribution;
pub mod groups;
pub mod marketplace;
pub mod payments;
pub mod payouts;
pub mod revenue;
pub mod seals;
pub mod series;
pub mod usage;
pub mod users;
pub mod views;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aiforge_commands::store::Engine;
use aiforge_commands::{Database, LogPosition, RecordedEvent, StoreError};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::watch;

/// Events applied per transaction: large enough to amortise the commit, small enough to keep
/// the SQLite write lock short.
pub const PROJECTION_BATCH_EVENTS_MAX: i64 = 1000;
/// How often a projector looks for events appended by other processes.
pub const PROJECTION_POLL_MILLIS: u64 = 250;
/// Bound values per multi-row INSERT (`ViewTx::insert_rows`), well under SQLite's 32,766 and
/// PostgreSQL's 65,535.
pub const INSERT_VALUES_MAX: usize = 5000;
/// Rows per multi-row INSERT at most (`ViewTx::insert_rows`).
pub const INSERT_ROWS_MAX: usize = 64;
/// After a failing batch, wait this long before trying again.
pub const PROJECTION_RETRY_MILLIS: u64 = 1000;
/// A projection's checkpoint moved only past events it does not project (a call's usage event
/// for the users projection) is kept in memory and written at most this often, instead of one
/// write transaction per batch: skipping such events again after a restart changes nothing.
pub const PROJECTION_IDLE_CHECKPOINT_MILLIS: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} ({event_type}) cannot be read: {reason}")]
    BadEvent {
        position: i64,
        event_type: String,
        reason: String,
    },
    #[error("no projection named '{0}'")]
    Unknown(String),
    #[error("timed out waiting for projections to reach the log position")]
    Timeout,
}

/// A value bound into view SQL (views hold only text and integers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Null,
}

/// A transaction on the view database, whichever the engine. View SQL uses `$1, $2, …` in
/// order, which both engines accept.
pub enum ViewTx {
    /// With this process's SQLite write turn, held until the transaction ends.
    Sqlite(
        Transaction<'static, Sqlite>,
        Option<tokio::sync::OwnedMutexGuard<()>>,
    ),
    Postgres(Transaction<'static, Postgres>),
}

impl ViewTx {
    async fn begin(db: &Database) -> Result<Self, sqlx::Error> {
        Ok(match db.engine() {
            // IMMEDIATE: take the write lock now, so the batch cannot fail half-way on BUSY.
            // Through the view pool: no fsync per batch (see `Database::view_pool`).
            Engine::Sqlite(pool) => {
                let turn = db.write_turn().await;
                let tx = db
                    .view_pool()
                    .unwrap_or(pool)
                    .begin_with("BEGIN IMMEDIATE")
                    .await?;
                ViewTx::Sqlite(tx, turn)
            }
            Engine::Postgres(pool) => ViewTx::Postgres(pool.begin().await?),
        })
    }

    pub async fn execute(&mut self, sql: &str, args: &[SqlValue]) -> Result<u64, sqlx::Error> {
        match self {
            ViewTx::Sqlite(tx, _) => {
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = match arg {
                        SqlValue::Text(s) => query.bind(s.clone()),
                        SqlValue::Int(i) => query.bind(*i),
                        SqlValue::Null => query.bind(None::<String>),
                    };
                }
                Ok(query.execute(&mut **tx).await?.rows_affected())
            }
            ViewTx::Postgres(tx) => {
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = match arg {
                        SqlValue::Text(s) => query.bind(s.clone()),
                        SqlValue::Int(i) => query.bind(*i),
                        SqlValue::Null => query.bind(None::<String>),
                    };
                }
                Ok(query.execute(&mut **tx).await?.rows_affected())
            }
        }
    }

    /// Inserts rows of `width` values each (`values` holds them one after another) with
    /// multi-row INSERTs: `head` is `INSERT INTO table (columns) VALUES`, `tail` follows the rows
    /// (an `ON CONFLICT` clause without parameters, or nothing). One statement per chunk instead
    /// of one per row. Chunks hold a power of two of rows, at most `INSERT_ROWS_MAX` (and
    /// `INSERT_VALUES_MAX` values), so a table's inserts are a handful of distinct statements
    /// that stay prepared in the connection's cache. On SQLite the placeholders are anonymous
    /// (`?`, numbered in order like `$n`): SQLite finds a named one by a linear search, which
    /// sqlx does for every value bound, so a statement of n named values cost O(n²).
    pub async fn insert_rows(
        &mut self,
        head: &str,
        width: usize,
        values: &[SqlValue],
        tail: &str,
    ) -> Result<(), sqlx::Error> {
        use std::fmt::Write as _;
        let width = width.max(1);
        let most = INSERT_ROWS_MAX.min((INSERT_VALUES_MAX / width).max(1));
        let anonymous = matches!(self, ViewTx::Sqlite(..));
        let mut rest = values;
        while rest.len() >= width {
            let rows_left = rest.len() / width;
            let rows = if rows_left >= most {
                most
            } else {
                1 << rows_left.ilog2()
            };
            let (chunk, after) = rest.split_at(rows * width);
            let mut sql = String::with_capacity(head.len() + tail.len() + rows * width * 5 + 8);
            sql.push_str(head);
            for row in 0..rows {
                sql.push_str(if row == 0 { " (" } else { ", (" });
                for cell in 0..width {
                    if cell > 0 {
                        sql.push_str(", ");
                    }
                    if anonymous {
                        sql.push('?');
                    } else {
                        let _ = write!(sql, "${}", row * width + cell + 1);
                    }
                }
                sql.push(')');
            }
            sql.push(' ');
            sql.push_str(tail);
            self.execute(&sql, chunk).await?;
            rest = after;
        }
        Ok(())
    }

    /// Rows of text columns (cast in SQL where needed) read inside the batch transaction.
    pub async fn fetch_texts(
        &mut self,
        sql: &str,
        args: &[SqlValue],
    ) -> Result<Vec<Vec<String>>, sqlx::Error> {
        use sqlx::Row;
        macro_rules! run {
            ($tx:expr) => {{
                let mut query = sqlx::query(sql);
                for arg in args {
                    query = match arg {
                        SqlValue::Text(s) => query.bind(s.clone()),
                        SqlValue::Int(i) => query.bind(*i),
                        SqlValue::Null => query.bind(None::<String>),
                    };
                }
                let rows = query.fetch_all(&mut **$tx).await?;
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| row.try_get::<String, _>(i))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect()
            }};
        }
        match self {
            ViewTx::Sqlite(tx, _) => run!(tx),
            ViewTx::Postgres(tx) => run!(tx),
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            ViewTx::Sqlite(tx, _) => tx.commit().await,
            ViewTx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// A view table and the columns that order its rows uniquely (for digests).
#[derive(Debug, Clone, Copy)]
pub struct ViewTable {
    pub name: &'static str,
    pub order_by: &'static str,
}

#[async_trait::async_trait]
pub trait Projection: Send + Sync {
    /// Stable name: the checkpoint row and the CLI use it.
    fn name(&self) -> &'static str;
    fn tables(&self) -> &'static [ViewTable];
    /// Applies one event to the views inside the batch transaction. Events it does not care
    /// about are ignored (the checkpoint still moves past them).
    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError>;

    /// Whether `apply` may write anything for this event (true unless the projection says
    /// otherwise). A batch with no such event costs no view transaction: the checkpoint moves
    /// past it in memory (see `PROJECTION_IDLE_CHECKPOINT_MILLIS`). Decided from the envelope
    /// only (aggregate and event type), never from the payload.
    fn cares(&self, _event: &RecordedEvent) -> bool {
        true
    }

    /// Applies a batch in log order. The default applies event by event; a projection whose
    /// writes can be grouped (many inserts into one table) overrides it to send fewer statements,
    /// with the same resulting rows.
    async fn apply_batch(
        &self,
        tx: &mut ViewTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }
}

/// All projections of the platform, in one place so the server and the CLI agree.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(users::UsersProjection),
        Arc::new(admins::AdminWalletsProjection),
        Arc::new(groups::GroupsProjection),
        Arc::new(payments::PaymentsProjection),
        Arc::new(revenue::RevenueProjection),
        Arc::new(marketplace::MarketplaceProjection),
        Arc::new(usage::UsageProjection),
        Arc::new(compute::ComputeProjection),
        Arc::new(payouts::PayoutsProjection),
        Arc::new(seals::SealsProjection),
        Arc::new(series::SeriesProjection),
    ]
}

/// `SELECT COUNT(*) …` on whichever engine (for stats read from views).
pub async fn count(db: &Database, sql: &str) -> Result<i64, sqlx::Error> {
    match db.engine() {
        Engine::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Engine::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
}

fn checkpoint_name(projection: &dyn Projection) -> String {
    format!("projection:{}", projection.name())
}

/// Runs projections and lets callers wait until they have caught up with a log position
/// (read-your-writes after a command).
#[derive(Clone)]
pub struct Projector {
    db: Database,
    projections: Vec<Arc<dyn Projection>>,
    positions: Arc<HashMap<&'static str, watch::Sender<LogPosition>>>,
    /// Per projection, how far it moved past events it does not project without writing its
    /// checkpoint (see [`Skipped`]).
    skipped: Arc<std::sync::Mutex<HashMap<&'static str, Skipped>>>,
    /// Per projection, its stored checkpoint as this process last read or wrote it, so a step
    /// does not read it again. Only a guess: every write of a checkpoint is conditional on the
    /// stored value being this one, and a write that finds another (a rebuild, another
    /// instance) reads it again and starts from there.
    stored: Arc<std::sync::Mutex<HashMap<&'static str, LogPosition>>>,
}

/// What `Projector::step_together` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stepped {
    /// Some projection moved (wrote a batch, or moved past events in memory).
    pub moved: bool,
    /// Some projection read a full batch: more may be waiting now.
    pub more: bool,
}

/// A projection's next step (`Projector::next_batch`).
enum Next {
    CaughtUp,
    /// Moved in memory past events it does not project, to here; `full` when the batch read was
    /// as long as a batch may be (more may be waiting).
    Skipped {
        at: LogPosition,
        full: bool,
    },
    Write(Batch),
}

/// A batch to write: the checkpoint moves from `stored` to `last`; `events` is `None` when the
/// projection projects none of them (only its idle checkpoint is written).
struct Batch {
    stored: LogPosition,
    last: LogPosition,
    full: bool,
    events: Option<Vec<RecordedEvent>>,
}

/// A checkpoint moved in memory only: every event after `stored` up to `at` is one the
/// projection does not project. Valid only while the stored checkpoint is still `stored` (a
/// rebuild or another instance that moves it makes this process read from the stored one).
#[derive(Debug, Clone, Copy)]
struct Skipped {
    stored: LogPosition,
    at: LogPosition,
    since: std::time::Instant,
}

impl Projector {
    pub fn new(db: Database, projections: Vec<Arc<dyn Projection>>) -> Self {
        let positions = projections
            .iter()
            .map(|p| (p.name(), watch::channel(LogPosition::START).0))
            .collect();
        Self {
            db,
            projections,
            positions: Arc::new(positions),
            skipped: Arc::default(),
            stored: Arc::default(),
        }
    }

    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    pub fn find(&self, name: &str) -> Result<Arc<dyn Projection>, ProjectionError> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .cloned()
            .ok_or_else(|| ProjectionError::Unknown(name.to_string()))
    }

    /// Applies at most one batch; returns the new checkpoint, or None when caught up.
    pub async fn step(
        &self,
        projection: &dyn Projection,
    ) -> Result<Option<LogPosition>, ProjectionError> {
        let batch = match self.next_batch(projection).await? {
            Next::CaughtUp => return Ok(None),
            Next::Skipped { at, .. } => return Ok(Some(at)),
            Next::Write(batch) => batch,
        };
        let mut tx = ViewTx::begin(&self.db).await?;
        match self.write(&mut tx, projection, &batch).await {
            Ok(true) => {}
            Ok(false) => {
                drop(tx);
                return Ok(Some(self.load_stored(projection).await?));
            }
            Err(e) => {
                // The stored checkpoint is unknown until the rollback is seen: read it again.
                self.forget_stored(projection.name());
                return Err(e);
            }
        }
        if let Err(e) = tx.commit().await {
            self.forget_stored(projection.name());
            return Err(e.into());
        }
        self.written(projection, &batch);
        Ok(Some(batch.last))
    }

    /// One batch for every projection with something to write, in ONE view transaction: a
    /// metered call is projected by the usage, series and seals projections, and one commit
    /// (one write turn, one WAL append) serves them all. Says whether any projection moved, and
    /// whether one read a full batch (more is waiting now).
    /// Should the shared batch fail (a projection's error, a checkpoint another instance moved),
    /// nothing of it stays and each of those projections takes its own step, so one failing
    /// projection never holds the others back.
    pub async fn step_together(&self) -> Result<Stepped, ProjectionError> {
        let mut stepped = Stepped::default();
        let mut batches = Vec::new();
        for projection in &self.projections {
            match self.next_batch(projection.as_ref()).await? {
                Next::CaughtUp => {}
                Next::Skipped { full, .. } => {
                    stepped.moved = true;
                    stepped.more |= full;
                }
                Next::Write(batch) => {
                    stepped.moved = true;
                    stepped.more |= batch.full;
                    batches.push((projection.clone(), batch));
                }
            }
        }
        if batches.is_empty() {
            return Ok(stepped);
        }
        let began = std::time::Instant::now();
        let mut tx = ViewTx::begin(&self.db).await?;
        let mut together = true;
        for (projection, batch) in &batches {
            if !matches!(
                self.write(&mut tx, projection.as_ref(), batch).await,
                Ok(true)
            ) {
                together = false;
                break;
            }
        }
        // Ended before any projection steps alone: it holds the write turn until it ends.
        let committed = if together {
            tx.commit().await.is_ok()
        } else {
            drop(tx);
            false
        };
        if committed {
            aiforge_commands::stages::PROJECTIONS.since(began);
            for (projection, batch) in &batches {
                self.written(projection.as_ref(), batch);
            }
            return Ok(stepped);
        }
        let mut failed = None;
        for (projection, _) in &batches {
            self.forget_stored(projection.name());
            if let Err(e) = self.step(projection.as_ref()).await {
                tracing::error!(projection = projection.name(), error = %e, "projection batch failed");
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            // Some batch was dropped (a checkpoint moved by somebody else): read again now.
            None => Ok(Stepped {
                moved: true,
                more: true,
            }),
        }
    }

    /// What the projection's next step is: nothing (caught up), a move in memory past events
    /// it does not project (done here), or a batch to write.
    async fn next_batch(&self, projection: &dyn Projection) -> Result<Next, ProjectionError> {
        let known = self
            .stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(projection.name())
            .copied();
        let stored = match known {
            Some(stored) => stored,
            None => self.load_stored(projection).await?,
        };
        let skipped = self.skipped_from(projection.name(), stored);
        let from = skipped.map_or(stored, |s| s.at);
        let events = self
            .db
            .read_log_after(from, PROJECTION_BATCH_EVENTS_MAX)
            .await?;
        let Some(last) = events.last().map(RecordedEvent::log_position) else {
            self.publish(projection.name(), from);
            return Ok(Next::CaughtUp);
        };
        let full = events.len() as i64 >= PROJECTION_BATCH_EVENTS_MAX;
        let projects = events.iter().any(|event| projection.cares(event));
        if !projects {
            let since = skipped.map_or_else(std::time::Instant::now, |s| s.since);
            if since.elapsed() < Duration::from_millis(PROJECTION_IDLE_CHECKPOINT_MILLIS) {
                self.set_skipped(
                    projection.name(),
                    Some(Skipped {
                        stored,
                        at: last,
                        since,
                    }),
                );
                self.publish(projection.name(), last);
                return Ok(Next::Skipped { at: last, full });
            }
        }
        Ok(Next::Write(Batch {
            stored,
            last,
            full,
            events: projects.then_some(events),
        }))
    }

    /// Moves the checkpoint and applies the batch inside `tx`. `Ok(false)`: somebody else (a
    /// rebuild, another instance) moved the stored checkpoint since it was read; nothing of this
    /// batch may be committed.
    async fn write(
        &self,
        tx: &mut ViewTx,
        projection: &dyn Projection,
        batch: &Batch,
    ) -> Result<bool, ProjectionError> {
        let name = checkpoint_name(projection);
        let (stored, last) = (batch.stored, batch.last);
        // Moving the checkpoint first takes its row lock and proves nobody (another instance, a
        // rebuild) moved it since we read it; if somebody did, drop this batch and re-read.
        let moved = tx
            .execute(
                "UPDATE checkpoints SET last_tx = $1, last_position = $2 \
                 WHERE name = $3 AND last_tx = $4 AND last_position = $5",
                &[
                    SqlValue::Int(last.tx),
                    SqlValue::Int(last.position),
                    SqlValue::Text(name.clone()),
                    SqlValue::Int(stored.tx),
                    SqlValue::Int(stored.position),
                ],
            )
            .await?;
        if moved == 0 {
            let inserted = tx
                .execute(
                    "INSERT INTO checkpoints (name, last_tx, last_position) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                    &[
                        SqlValue::Text(name),
                        SqlValue::Int(last.tx),
                        SqlValue::Int(last.position),
                    ],
                )
                .await?;
            if inserted == 0 || stored != LogPosition::START {
                self.set_skipped(projection.name(), None);
                return Ok(false);
            }
        }
        if let Some(events) = &batch.events {
            projection.apply_batch(tx, events).await?;
        }
        Ok(true)
    }

    /// After the commit of `batch`.
    fn written(&self, projection: &dyn Projection, batch: &Batch) {
        self.set_stored(projection.name(), batch.last);
        self.set_skipped(projection.name(), None);
        self.publish(projection.name(), batch.last);
    }

    /// Reads the projection's stored checkpoint and remembers it.
    async fn load_stored(&self, projection: &dyn Projection) -> Result<LogPosition, StoreError> {
        let stored = self
            .db
            .load_checkpoint(&checkpoint_name(projection))
            .await?;
        self.set_stored(projection.name(), stored);
        Ok(stored)
    }

    fn set_stored(&self, name: &'static str, at: LogPosition) {
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, at);
    }

    fn forget_stored(&self, name: &str) {
        self.stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The in-memory skip of `name`, if it still starts at the stored checkpoint.
    fn skipped_from(&self, name: &str, stored: LogPosition) -> Option<Skipped> {
        let skipped = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        skipped.get(name).copied().filter(|s| s.stored == stored)
    }

    fn set_skipped(&self, name: &'static str, to: Option<Skipped>) {
        let mut skipped = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        match to {
            Some(s) => skipped.insert(name, s),
            None => skipped.remove(name),
        };
    }

    /// Where the projection stands: its stored checkpoint, or further when it moved past events
    /// it does not project since.
    async fn checkpoint(&self, projection: &dyn Projection) -> Result<LogPosition, StoreError> {
        let stored = self.load_stored(projection).await?;
        Ok(self
            .skipped_from(projection.name(), stored)
            .map_or(stored, |s| s.at))
    }

    fn publish(&self, name: &str, at: LogPosition) {
        if let Some(sender) = self.positions.get(name) {
            sender.send_if_modified(|current| {
                let changed = *current != at;
                *current = at;
                changed
            });
        }
    }

    /// Applies batches until the projection has seen everything visible now.
    pub async fn catch_up(
        &self,
        projection: &dyn Projection,
    ) -> Result<LogPosition, ProjectionError> {
        loop {
            if self.step(projection).await?.is_none() {
                return Ok(self.checkpoint(projection).await?);
            }
        }
    }

    /// Empties the projection's views and resets its checkpoint in one transaction, then
    /// replays the whole log into them.
    pub async fn rebuild(
        &self,
        projection: &dyn Projection,
    ) -> Result<LogPosition, ProjectionError> {
        let name = checkpoint_name(projection);
        self.set_skipped(projection.name(), None);
        self.forget_stored(projection.name());
        let mut tx = ViewTx::begin(&self.db).await?;
        // Checkpoint first: its row lock orders this reset after any batch in flight.
        tx.execute(
            "INSERT INTO checkpoints (name, last_tx, last_position) VALUES ($1, 0, 0) \
             ON CONFLICT (name) DO UPDATE SET last_tx = 0, last_position = 0",
            &[SqlValue::Text(name)],
        )
        .await?;
        for table in projection.tables() {
            tx.execute(&format!("DELETE FROM {}", table.name), &[])
                .await?;
        }
        tx.commit().await?;
        self.set_stored(projection.name(), LogPosition::START);
        self.publish(projection.name(), LogPosition::START);
        self.catch_up(projection).await
    }

    /// Runs every projection until `shutdown` turns true, their batches written together
    /// (`step_together`). A failing batch is logged and retried; the other projections go on.
    /// After a batch that was not full, it waits for the next append (and the coalescing delay
    /// after it) rather than reading again at once: views are written about once per
    /// `APPEND_COALESCE_MILLIS` under load, not back to back, so the write turn stays free for
    /// metering commits most of the time.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut appended = self.db.subscribe_appends();
        loop {
            match self.step_together().await {
                Ok(Stepped { more: true, .. }) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "a projection batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(PROJECTION_RETRY_MILLIS)).await;
                }
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = aiforge_commands::store::appended_or_polled(
                    &mut appended,
                    Duration::from_millis(PROJECTION_POLL_MILLIS),
                ) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Waits until every projection has applied the log up to `at` (inclusive).
    pub async fn wait_for(
        &self,
        at: LogPosition,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let all = async {
            for sender in self.positions.values() {
                let mut receiver = sender.subscribe();
                if receiver.wait_for(|p| *p >= at).await.is_err() {
                    return Err(ProjectionError::Timeout);
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| ProjectionError::Timeout)?
    }

    /// Name, checkpoint and the number of events behind the head, for each projection.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = self.db.log_head().await?;
        let mut out = Vec::new();
        for projection in &self.projections {
            let at = self.checkpoint(projection.as_ref()).await?;
            let behind = self.db.count_log_after(at).await?;
            out.push(ProjectionStatus {
                name: projection.name().to_string(),
                checkpoint: at,
                head,
                behind,
            });
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: LogPosition,
    pub head: LogPosition,
    pub behind: i64,
}

/// SHA-256 over every row of a view table in key order, each row rendered by the engine as
/// JSON. Two tables with equal digests hold the same rows with the same bytes.
pub async fn view_digest(db: &Database, table: &ViewTable) -> Result<String, ProjectionError> {
    let rows: Vec<String> = match db.engine() {
        Engine::Postgres(pool) => {
            sqlx::query_scalar(&format!(
                "SELECT row_to_json(t)::text FROM (SELECT * FROM {} ORDER BY {}) t",
                table.name, table.order_by
            ))
            .fetch_all(pool)
            .await?
        }
        Engine::Sqlite(pool) => {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table.name)
                    .fetch_all(pool)
                    .await?;
            let list = columns
                .iter()
                .map(|c| format!("'{c}', \"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            sqlx::query_scalar(&format!(
                "SELECT json_object({list}) FROM {} ORDER BY {}",
                table.name, table.order_by
            ))
            .fetch_all(pool)
            .await?
        }
    };
    let mut hasher = Sha256::new();
    for row in rows {
        hasher.update(row.as_bytes());
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Parses an event payload into the domain's event type, naming the event when it cannot.
pub fn decode_payload<T: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
) -> Result<T, ProjectionError> {
    serde_json::from_str(&event.payload).map_err(|e| ProjectionError::BadEvent {
        position: event.position,
        event_type: event.event_type.clone(),
        reason: e.to_string(),
    })
}
