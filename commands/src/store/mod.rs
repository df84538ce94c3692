//! The event store on its two engines. SQLite (a file in the data dir) is the embedded default;
//! PostgreSQL is used when the database URL says so. Both hold the same tables (see
//! `migrations/`), are written by one repository (`repository`) and read in global order by one
//! log reader (`log`). Everything engine-specific is a `match` on [`Database`] in this module
//! tree, so the two engines keep one behaviour.

pub mod fresh;
pub mod log;
pub mod repository;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::watch;

pub use fresh::{FreshEvent, UsageSettlement};
pub use log::{LogPosition, RecordedEvent};
pub use repository::{AiforgeRepository, Claim, ClaimTaken};

/// A connection attempt gives up after this long, so a down database is an error, not a hang.
pub const DB_CONNECT_TIMEOUT_SECS: u64 = 10;
/// SQLite waits this long for the single write lock before reporting "busy".
pub const SQLITE_BUSY_TIMEOUT_SECS: u64 = 30;
pub const PG_POOL_CONNECTIONS_MAX: u32 = 32;
pub const SQLITE_POOL_CONNECTIONS_MAX: u32 = 8;
pub const SQLITE_VIEW_CONNECTIONS_MAX: u32 = 2;
/// Readers of the log woken by a local append (projections, reactors, the bus, the gateway's
/// index) wait this long before reading, so a burst of appends is read and applied as one
/// batch instead of one transaction per event.
pub const APPEND_COALESCE_MILLIS: u64 = 10;

/// The wait of every follower of the log between reads: until this process appends (then
/// `APPEND_COALESCE_MILLIS` more, to take a burst as one batch) or `poll` has passed (appends by
/// other processes are found by polling).
pub async fn appended_or_polled(appended: &mut watch::Receiver<u64>, poll: Duration) {
    tokio::select! {
        _ = appended.changed() => {
            tokio::time::sleep(Duration::from_millis(APPEND_COALESCE_MILLIS)).await;
        }
        _ = tokio::time::sleep(poll) => {}
    }
}

/// SQLite: after appends, the WAL is checkpointed (copied into the database file) this long
/// after the first of them, by `checkpoint_wal`; and at least this often when idle.
pub const WAL_CHECKPOINT_MILLIS: u64 = 200;
pub const WAL_CHECKPOINT_IDLE_SECS: u64 = 5;

/// SQLite's WAL checkpoints, off the commit path: a PASSIVE checkpoint neither waits for nor
/// blocks writers and readers, so a commit never pays for one; the WAL stays small because this
/// runs shortly after every burst of appends. Ends when the pool closes or the database handle
/// is dropped.
async fn checkpoint_wal(pool: SqlitePool, mut appended: watch::Receiver<u64>) {
    loop {
        tokio::select! {
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(WAL_CHECKPOINT_MILLIS)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(WAL_CHECKPOINT_IDLE_SECS)) => {}
        }
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "the WAL checkpoint failed; trying again after the next append");
        }
    }
}

/// Runs `$body` with `$pool` bound to the engine's pool: the one engine dispatch of the
/// workspace (queries written once, in the `$1` placeholder style both engines accept).
#[macro_export]
macro_rules! on_engine {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.engine() {
            $crate::store::Engine::Sqlite($pool) => $body,
            $crate::store::Engine::Postgres($pool) => $body,
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url (expected sqlite:… or postgres://…)")]
    UnsupportedUrl,
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("not supported on this engine: {0}")]
    Unsupported(&'static str),
}

/// A handle on the one database that holds events, claims, checkpoints and views.
#[derive(Clone)]
pub struct Database {
    engine: Engine,
    /// Bumped after every local commit of events, so local readers of the log wake at once
    /// instead of waiting for their next poll (writers in other processes are found by polling).
    appended: Arc<watch::Sender<u64>>,
    /// SQLite only: connections for projection batches, with `synchronous = NORMAL` (see
    /// `view_pool`).
    views: Option<SqlitePool>,
    /// SQLite only: write transactions of this process take turns here (see `write_turn`).
    write_gate: Arc<tokio::sync::Mutex<()>>,
    /// The stretch of the log read last, shared by this process's followers (`read_log_after`).
    tail: Arc<tokio::sync::Mutex<log::LogTail>>,
}

#[derive(Clone)]
pub enum Engine {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// Connects to `url`: `sqlite:PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut views = None;
        let engine = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            // No ping before each checkout (it cost a round trip per query): a connection that
            // died fails one query, answered as "unavailable, retry", and is then replaced.
            let pool = PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(PG_POOL_CONNECTIONS_MAX)
                .acquire_timeout(Duration::from_secs(DB_CONNECT_TIMEOUT_SECS))
                .connect_with(options)
                .await?;
            Engine::Postgres(pool)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            let options = SqliteConnectOptions::new()
                .filename(path.trim_start_matches("//"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a committed event survives power loss, not only a process crash.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))
                .foreign_keys(true)
                // The WAL is copied back into the database file by a task of its own
                // (`checkpoint_wal`), not by whichever commit crosses SQLite's 1000-page mark:
                // that copy and its fsync would otherwise land inside a metered call.
                .pragma("wal_autocheckpoint", "0");
            let pool = SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(SQLITE_POOL_CONNECTIONS_MAX)
                .acquire_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))
                .connect_with(options.clone())
                .await?;
            views = Some(
                SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(SQLITE_VIEW_CONNECTIONS_MAX)
                    .acquire_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECS))
                    .connect_with(options.synchronous(SqliteSynchronous::Normal))
                    .await?,
            );
            Engine::Sqlite(pool)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let (appended, _) = watch::channel(0);
        if let Engine::Sqlite(pool) = &engine {
            tokio::spawn(checkpoint_wal(pool.clone(), appended.subscribe()));
        }
        Ok(Self {
            engine,
            appended: Arc::new(appended),
            views,
            write_gate: Arc::default(),
            tail: Arc::default(),
        })
    }

    /// The embedded default: `events.db` in the data dir.
    pub async fn open_sqlite_file(path: &Path) -> Result<Self, StoreError> {
        Self::connect(&format!("sqlite:{}", path.display())).await
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// SQLite has one writer at a time; writers that collide wait in its busy handler, which
    /// sleeps in steps of up to 100 ms. Write transactions of this process therefore queue here
    /// first (in FIFO order, without sleeping), and meet SQLite's lock only from another process.
    /// `None` on PostgreSQL, whose writers run in parallel.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.engine {
            Engine::Sqlite(_) => Some(self.write_gate.clone().lock_owned().await),
            Engine::Postgres(_) => None,
        }
    }

    /// SQLite: the pool projection batches write through. Its commits do not fsync
    /// (`synchronous = NORMAL` in WAL mode): views and their checkpoints are rebuilt from the log,
    /// so a power cut may only roll a view back together with its checkpoint, never tear them
    /// apart, and the next event commit (`FULL`) makes every earlier WAL frame durable anyway.
    /// Event appends never use it.
    pub fn view_pool(&self) -> Option<&SqlitePool> {
        self.views.as_ref()
    }

    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }

    /// Applies the numbered migrations of this engine (`migrations/<engine>/`). Concurrent
    /// migrators are serialised by sqlx (an advisory lock on PostgreSQL).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
            Engine::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// A receiver that changes whenever this process commits events.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub(crate) fn notify_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Checks the database answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Engine::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(views) = &self.views {
            views.close().await;
        }
        match &self.engine {
            Engine::Sqlite(pool) => pool.close().await,
            Engine::Postgres(pool) => pool.close().await,
        }
    }

    /// Whether a recorded fact names the content `sha256`: a job blob (`Blob` aggregate, id = the
    /// SHA-256) or an uploaded model. Read on the rare path of a refused upload only (it scans
    /// models' upload events).
    pub async fn content_recorded(&self, sha256: &str) -> Result<bool, StoreError> {
        let sql =
            "SELECT COUNT(*) FROM events WHERE (aggregate_type = 'blob' AND aggregate_id = $1) \
                   OR (aggregate_type = 'model' AND event_type = 'ModelUploaded' \
                   AND CAST(payload AS TEXT) LIKE $2)";
        let pattern = format!("%\"{sha256}\"%");
        let count: i64 = on_engine!(self, |pool| sqlx::query_scalar(sql)
            .bind(sha256)
            .bind(&pattern)
            .fetch_one(pool)
            .await?);
        Ok(count > 0)
    }

    /// The owner of a uniqueness claim, e.g. the account id that holds an email.
    pub async fn claim_owner(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let sql = "SELECT owner_id FROM claims WHERE namespace = $1 AND key = $2";
        let owner = match &self.engine {
            Engine::Sqlite(pool) => {
                sqlx::query_scalar(sql)
                    .bind(namespace)
                    .bind(key)
                    .fetch_optional(pool)
                    .await?
            }
            Engine::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(namespace)
                    .bind(key)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(owner)
    }

    /// The outcome recorded for a command id, if a command with that id appended events.
    pub async fn find_command(
        &self,
        command_id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let sql = "SELECT request_hash, aggregate_type, aggregate_id, last_tx, last_position \
                   FROM command_log WHERE command_id = $1";
        let row: Option<(String, String, String, i64, i64)> = match &self.engine {
            Engine::Sqlite(pool) => {
                sqlx::query_as(sql)
                    .bind(command_id)
                    .fetch_optional(pool)
                    .await?
            }
            Engine::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(command_id)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row.map(
            |(request_hash, aggregate_type, aggregate_id, tx, position)| CommandRecord {
                request_hash,
                aggregate_type,
                aggregate_id,
                last: LogPosition { tx, position },
            },
        ))
    }
}

/// What the store remembers of a command that appended events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    pub request_hash: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Where the command's last event stands in the global log.
    pub last: LogPosition,
}

impl Database {
    /// Where the named log reader stands (`START` if it never ran).
    pub async fn load_checkpoint(&self, name: &str) -> Result<LogPosition, StoreError> {
        let sql = "SELECT last_tx, last_position FROM checkpoints WHERE name = $1";
        let row: Option<(i64, i64)> = match &self.engine {
            Engine::Sqlite(pool) => sqlx::query_as(sql).bind(name).fetch_optional(pool).await?,
            Engine::Postgres(pool) => sqlx::query_as(sql).bind(name).fetch_optional(pool).await?,
        };
        Ok(
            row.map_or(LogPosition::START, |(tx, position)| LogPosition {
                tx,
                position,
            }),
        )
    }

    /// Records where a reader with no view of its own stands (the reactors, the bus publisher).
    /// Such readers are at-least-once (what they do for an event is idempotent), so on SQLite
    /// the write takes its turn with the other writers and goes through the view pool: no fsync
    /// of its own (the next event commit makes it durable), and never a busy wait against a
    /// metering commit.
    pub async fn save_checkpoint(&self, name: &str, at: LogPosition) -> Result<(), StoreError> {
        let sql = "INSERT INTO checkpoints (name, last_tx, last_position) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET last_tx = excluded.last_tx, \
                   last_position = excluded.last_position";
        match &self.engine {
            Engine::Sqlite(pool) => {
                let _turn = self.write_turn().await;
                sqlx::query(sql)
                    .bind(name)
                    .bind(at.tx)
                    .bind(at.position)
                    .execute(self.views.as_ref().unwrap_or(pool))
                    .await?;
            }
            Engine::Postgres(pool) => {
                sqlx::query(sql)
                    .bind(name)
                    .bind(at.tx)
                    .bind(at.position)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }
}
