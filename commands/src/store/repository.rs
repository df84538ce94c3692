//! The cqrs-es repository of AIForge. Reads (an aggregate's events, snapshots, replay streams) are
//! delegated unchanged to `postgres-es` and `sqlite-es`, which read our `events` table. Writes
//! are ours, because one append must do more than insert events, all in one transaction:
//! - insert the command's uniqueness claims (`claims`), so a claim exists iff its events do;
//! - insert the events with their global position and `recorded_at` from the application clock;
//! - record the command id and request hash (`command_log`) for idempotent retries.
//!
//! Those extras travel from the command layer in the event metadata (`command_id`,
//! `request_hash`, `claims`), the only per-command channel cqrs-es passes down to `persist`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlite_es::SqliteEventRepository;

use super::{Database, Engine};
use crate::clock::Clock;

/// Metadata keys the command layer sets and `persist` reads.
pub const META_COMMAND_ID: &str = "command_id";
pub const META_REQUEST_HASH: &str = "request_hash";
pub const META_CLAIMS: &str = "claims";

/// Events appended by this process since start (for `/metrics`).
pub static EVENTS_APPENDED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// A uniqueness claim: `key` in `namespace` (e.g. `email`, `alice@example.com`) belongs to the
/// aggregate the command appends to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub namespace: String,
    pub key: String,
}

/// A claim that another aggregate already holds. Surfaces as `AggregateError::UnexpectedError`
/// (cqrs-es has no variant for it) and is downcast by the command layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{namespace} is already taken")]
pub struct ClaimTaken {
    pub namespace: String,
    pub key: String,
}

enum Reader {
    Sqlite(SqliteEventRepository),
    Postgres(PostgresEventRepository),
}

pub struct AiforgeRepository {
    db: Database,
    reader: Reader,
    clock: Arc<dyn Clock>,
}

impl AiforgeRepository {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        let reader = match db.engine() {
            Engine::Sqlite(pool) => Reader::Sqlite(SqliteEventRepository::new(pool.clone())),
            Engine::Postgres(pool) => Reader::Postgres(PostgresEventRepository::new(pool.clone())),
        };
        Self { db, reader, clock }
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // PostgreSQL unique_violation; SQLite CONSTRAINT_PRIMARYKEY and CONSTRAINT_UNIQUE.
            Some("23505") | Some("1555") | Some("2067")
        ),
        _ => false,
    }
}

fn to_persistence(err: sqlx::Error) -> PersistenceError {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => PersistenceError::ConnectionError(Box::new(err)),
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

/// Maps an insert's error: a unique violation means someone else got there first.
fn on_insert(err: sqlx::Error, conflict: impl FnOnce() -> PersistenceError) -> PersistenceError {
    if is_unique_violation(&err) {
        conflict()
    } else {
        to_persistence(err)
    }
}

struct CommandExtras {
    command_id: Option<String>,
    request_hash: String,
    claims: Vec<Claim>,
}

fn extras(events: &[SerializedEvent]) -> Result<CommandExtras, PersistenceError> {
    let metadata = events.first().map(|e| &e.metadata);
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let claims = match text(META_CLAIMS) {
        Some(json) => serde_json::from_str(&json)?,
        None => Vec::new(),
    };
    Ok(CommandExtras {
        command_id: text(META_COMMAND_ID),
        request_hash: text(META_REQUEST_HASH).unwrap_or_default(),
        claims,
    })
}

impl AiforgeRepository {
    async fn append_postgres<A: Aggregate>(
        &self,
        pool: &sqlx::PgPool,
        events: &[SerializedEvent],
        extras: CommandExtras,
    ) -> Result<(), PersistenceError> {
        let recorded_at = self.clock.now();
        let mut tx = pool.begin().await.map_err(to_persistence)?;
        // First, before anything gives this transaction an id: the lock on `events` is what
        // makes the log reader wait for this transaction (see `log.rs`, the safe bound).
        sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(to_persistence)?;
        for claim in &extras.claims {
            sqlx::query(
                "INSERT INTO claims (namespace, key, owner_type, owner_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(&claim.namespace)
            .bind(&claim.key)
            .bind(A::TYPE)
            .bind(&events[0].aggregate_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_insert(e, || taken(claim)))?;
        }
        let mut last = (0i64, 0i64);
        for event in events {
            let sequence = i64::try_from(event.sequence)
                .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            let (position, tx_id): (i64, String) = sqlx::query_as(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING global_position, tx_id::text",
            )
            .bind(A::TYPE)
            .bind(&event.aggregate_id)
            .bind(sequence)
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(sqlx::types::Json(&event.payload))
            .bind(sqlx::types::Json(&event.metadata))
            .bind(recorded_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| on_insert(e, || PersistenceError::OptimisticLockError))?;
            let tx_id = tx_id
                .parse::<i64>()
                .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            last = (tx_id, position);
        }
        if let Some(command_id) = &extras.command_id {
            sqlx::query(
                "INSERT INTO command_log (command_id, request_hash, aggregate_type, aggregate_id, \
                 last_tx, last_position, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(command_id)
            .bind(&extras.request_hash)
            .bind(A::TYPE)
            .bind(&events[0].aggregate_id)
            .bind(last.0)
            .bind(last.1)
            .bind(recorded_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_insert(e, || PersistenceError::OptimisticLockError))?;
        }
        tx.commit().await.map_err(to_persistence)?;
        Ok(())
    }

    async fn append_sqlite<A: Aggregate>(
        &self,
        pool: &sqlx::SqlitePool,
        events: &[SerializedEvent],
        extras: CommandExtras,
    ) -> Result<(), PersistenceError> {
        let recorded_at = crate::clock::rfc3339(self.clock.now());
        // IMMEDIATE takes the single write lock up front: positions below are computed under
        // it, and a reader-turned-writer can never fail with SQLITE_BUSY_SNAPSHOT.
        let _turn = self.db.write_turn().await;
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(to_persistence)?;
        for claim in &extras.claims {
            sqlx::query(
                "INSERT INTO claims (namespace, key, owner_type, owner_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(&claim.namespace)
            .bind(&claim.key)
            .bind(A::TYPE)
            .bind(&events[0].aggregate_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_insert(e, || taken(claim)))?;
        }
        let mut last_position = 0i64;
        for event in events {
            let sequence = i64::try_from(event.sequence)
                .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
            let payload = serde_json::to_string(&event.payload)?;
            let metadata = serde_json::to_string(&event.metadata)?;
            last_position = sqlx::query_scalar(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, recorded_at, global_position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                 (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events)) \
                 RETURNING global_position",
            )
            .bind(A::TYPE)
            .bind(&event.aggregate_id)
            .bind(sequence)
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(payload)
            .bind(metadata)
            .bind(&recorded_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| on_insert(e, || PersistenceError::OptimisticLockError))?;
        }
        if let Some(command_id) = &extras.command_id {
            sqlx::query(
                "INSERT INTO command_log (command_id, request_hash, aggregate_type, aggregate_id, \
                 last_tx, last_position, recorded_at) VALUES ($1, $2, $3, $4, 0, $5, $6)",
            )
            .bind(command_id)
            .bind(&extras.request_hash)
            .bind(A::TYPE)
            .bind(&events[0].aggregate_id)
            .bind(last_position)
            .bind(&recorded_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_insert(e, || PersistenceError::OptimisticLockError))?;
        }
        tx.commit().await.map_err(to_persistence)?;
        Ok(())
    }
}

fn taken(claim: &Claim) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(ClaimTaken {
        namespace: claim.namespace.clone(),
        key: claim.key.clone(),
    }))
}

impl PersistedEventRepository for AiforgeRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(r) => r.get_events::<A>(aggregate_id).await,
            Reader::Postgres(r) => r.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(r) => r.get_last_events::<A>(aggregate_id, last_sequence).await,
            Reader::Postgres(r) => r.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(r) => r.get_snapshot::<A>(aggregate_id).await,
            Reader::Postgres(r) => r.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "AIForge stores are event-sourced without snapshots".into(),
            ));
        }
        if events.is_empty() {
            return Ok(());
        }
        let extras = extras(events)?;
        match self.db.engine() {
            Engine::Sqlite(pool) => self.append_sqlite::<A>(pool, events, extras).await?,
            Engine::Postgres(pool) => self.append_postgres::<A>(pool, events, extras).await?,
        }
        EVENTS_APPENDED_TOTAL.fetch_add(events.len() as u64, Ordering::Relaxed);
        self.db.notify_appended();
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(r) => r.stream_events::<A>(aggregate_id).await,
            Reader::Postgres(r) => r.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match &self.reader {
            Reader::Sqlite(r) => r.stream_all_events::<A>().await,
            Reader::Postgres(r) => r.stream_all_events::<A>().await,
        }
    }
}
