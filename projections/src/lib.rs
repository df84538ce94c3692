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
    /// multi-row INSERTs of at most `INSERT_VALUES_MAX` bound values: `head` is
    /// `INSERT INTO table (columns) VALUES`, `tail` follows the rows (an `ON CONFLICT` clause or
    /// nothing). One statement per chunk instead of one per row.
    pub async fn insert_rows(
        &mut self,
        head: &str,
        width: usize,
        values: &[SqlValue],
        tail: &str,
    ) -> Result<(), sqlx::Error> {
        let width = width.max(1);
        let rows_per_statement = (INSERT_VALUES_MAX / width).max(1);
        for chunk in values.chunks(rows_per_statement * width) {
            let rows: Vec<String> = (0..chunk.len() / width)
                .map(|row| {
                    let cells: Vec<String> = (1..=width)
                        .map(|cell| format!("${}", row * width + cell))
                        .collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            let sql = format!("{head} {} {tail}", rows.join(", "));
            self.execute(&sql, chunk).await?;
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
        let name = checkpoint_name(projection);
        let stored = self.db.load_checkpoint(&name).await?;
        let skipped = self.skipped_from(projection.name(), stored);
        let from = skipped.map_or(stored, |s| s.at);
        let batch = self
            .db
            .read_log_after(from, PROJECTION_BATCH_EVENTS_MAX)
            .await?;
        let Some(last) = batch.last().map(RecordedEvent::log_position) else {
            self.publish(projection.name(), from);
            return Ok(None);
        };
        let projects = batch.iter().any(|event| projection.cares(event));
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
                return Ok(Some(last));
            }
        }
        let mut tx = ViewTx::begin(&self.db).await?;
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
                        SqlValue::Text(name.clone()),
                        SqlValue::Int(last.tx),
                        SqlValue::Int(last.position),
                    ],
                )
                .await?;
            if inserted == 0 || stored != LogPosition::START {
                drop(tx);
                self.set_skipped(projection.name(), None);
                return Ok(Some(self.db.load_checkpoint(&name).await?));
            }
        }
        if projects {
            projection.apply_batch(&mut tx, &batch).await?;
        }
        tx.commit().await?;
        self.set_skipped(projection.name(), None);
        self.publish(projection.name(), last);
        Ok(Some(last))
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
        let stored = self
            .db
            .load_checkpoint(&checkpoint_name(projection))
            .await?;
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
        self.publish(projection.name(), LogPosition::START);
        self.catch_up(projection).await
    }

    /// Runs every projection until `shutdown` turns true. A failing batch is logged and retried;
    /// the other projections go on.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        for projection in &self.projections {
            let projector = self.clone();
            let projection = projection.clone();
            let shutdown = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                projector.run_one(projection.as_ref(), shutdown).await;
            }));
        }
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "projection task ended abnormally");
            }
        }
    }

    async fn run_one(&self, projection: &dyn Projection, mut shutdown: watch::Receiver<bool>) {
        let mut appended = self.db.subscribe_appends();
        loop {
            match self.step(projection).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(projection = projection.name(), error = %e, "projection batch failed");
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
