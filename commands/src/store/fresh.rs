//! Group commit of single-event aggregates: many brand-new aggregates (one event each, at
//! sequence 1) appended in ONE transaction. It is the write path of facts that need no decision
//! over earlier state, like a metered API call: batching many of them under one commit (one
//! fsync) is what lets metering keep up with the gateway while every call is still durable
//! before its response completes.
//!
//! The usual guarantees hold: positions are assigned as in `repository` (under the SQLite write
//! lock; after `LOCK TABLE events` on PostgreSQL, so the log reader's safe bound covers the
//! batch), and an aggregate id that already exists is skipped, not duplicated, so a retried
//! batch appends each fact exactly once.

use std::sync::atomic::Ordering;

use time::OffsetDateTime;

use super::repository::EVENTS_APPENDED_TOTAL;
use super::{Database, Engine, StoreError};

/// One new aggregate and its only event.
#[derive(Debug, Clone)]
pub struct FreshEvent {
    pub aggregate_id: String,
    pub event_type: &'static str,
    /// The event's JSON, in cqrs-es's externally tagged form (`{"EventType": {...}}`).
    pub payload: serde_json::Value,
}

/// What a metered call used, settled against the hold its admission took (PostgreSQL's shared
/// admission counters, `commands/src/gateway/admission.rs`), in the transaction that appends
/// its event. Settling deletes the hold: a retried batch finds none and counts nothing twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSettlement {
    pub request_id: String,
    pub tokens: i64,
    pub micros: i64,
}

const EVENT_VERSION: &str = "1.0";

impl Database {
    /// Appends every event of `batch` as the first event of its own new aggregate of
    /// `aggregate_type`, in one transaction. Returns how many were new (ids that already exist
    /// are skipped).
    pub async fn append_fresh(
        &self,
        aggregate_type: &str,
        batch: &[FreshEvent],
        recorded_at: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        self.append_fresh_settling(aggregate_type, batch, recorded_at, &[])
            .await
    }

    /// [`Database::append_fresh`], settling `settlements` in the same transaction (PostgreSQL;
    /// on SQLite the admission counters live in memory and there is nothing to settle here).
    pub async fn append_fresh_settling(
        &self,
        aggregate_type: &str,
        batch: &[FreshEvent],
        recorded_at: OffsetDateTime,
        settlements: &[UsageSettlement],
    ) -> Result<usize, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let metadata = serde_json::json!({});
        let mut appended = 0usize;
        match self.engine() {
            Engine::Sqlite(pool) => {
                let recorded_at = crate::clock::rfc3339(recorded_at);
                let metadata = metadata.to_string();
                let _turn = self.write_turn().await;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for event in batch {
                    let done = sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                         event_version, payload, metadata, recorded_at, global_position) \
                         VALUES ($1, $2, 1, $3, $4, $5, $6, $7, \
                         (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events)) \
                         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING",
                    )
                    .bind(aggregate_type)
                    .bind(&event.aggregate_id)
                    .bind(event.event_type)
                    .bind(EVENT_VERSION)
                    .bind(event.payload.to_string())
                    .bind(&metadata)
                    .bind(&recorded_at)
                    .execute(&mut *tx)
                    .await?;
                    appended += done.rows_affected() as usize;
                }
                tx.commit().await?;
            }
            Engine::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let ids: Vec<&str> = batch.iter().map(|e| e.aggregate_id.as_str()).collect();
                let types: Vec<&str> = batch.iter().map(|e| e.event_type).collect();
                let payloads: Vec<String> = batch.iter().map(|e| e.payload.to_string()).collect();
                // One statement for the batch; unnest keeps the input order for the positions.
                let done = sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, recorded_at) \
                     SELECT $1, b.id, 1, b.event_type, $4, b.payload::jsonb, $5, $6 \
                     FROM unnest($2::text[], $3::text[], $7::text[]) \
                          WITH ORDINALITY AS b(id, event_type, payload, n) \
                     ORDER BY b.n \
                     ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING",
                )
                .bind(aggregate_type)
                .bind(&ids)
                .bind(&types)
                .bind(EVENT_VERSION)
                .bind(sqlx::types::Json(&metadata))
                .bind(recorded_at)
                .bind(&payloads)
                .execute(&mut *tx)
                .await?;
                appended = done.rows_affected() as usize;
                if !settlements.is_empty() {
                    settle(&mut tx, settlements).await?;
                }
                tx.commit().await?;
            }
        }
        EVENTS_APPENDED_TOTAL.fetch_add(appended as u64, Ordering::Relaxed);
        if appended > 0 {
            self.notify_appended();
        }
        Ok(appended)
    }
}

/// Holds become usage: each settled call's hold is deleted, and what it really used is added to
/// its subscription's period counters and credit spent. A call whose hold is gone (settled by an
/// earlier attempt of this batch) adds nothing.
async fn settle(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    settlements: &[UsageSettlement],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = settlements.iter().map(|s| s.request_id.as_str()).collect();
    let tokens: Vec<i64> = settlements.iter().map(|s| s.tokens).collect();
    let micros: Vec<i64> = settlements.iter().map(|s| s.micros).collect();
    // The subscriptions' admission locks first, in one order (as `gateway_snapshot` takes them),
    // so a settlement never waits on an admission's rows while holding others' (deadlock).
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('gateway:subscription:' || s.id)) \
         FROM (SELECT DISTINCT subscription_id AS id FROM gateway_holds \
               WHERE request_id = ANY($1::text[]) ORDER BY 1) s",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "WITH settled AS ( \
             DELETE FROM gateway_holds h \
             USING unnest($1::text[], $2::bigint[], $3::bigint[]) AS x(id, tokens, micros) \
             WHERE h.request_id = x.id \
             RETURNING h.subscription_id, h.period, x.tokens, x.micros), \
         usage AS ( \
             UPDATE gateway_usage u \
             SET requests = u.requests + s.n, tokens = u.tokens + s.t \
             FROM (SELECT subscription_id, period, count(*)::bigint AS n, \
                          sum(tokens)::bigint AS t \
                   FROM settled GROUP BY subscription_id, period) s \
             WHERE u.subscription_id = s.subscription_id AND u.period = s.period) \
         UPDATE gateway_credit c SET spent_micros = c.spent_micros + s.m \
         FROM (SELECT subscription_id, sum(micros)::bigint AS m \
               FROM settled GROUP BY subscription_id) s \
         WHERE c.subscription_id = s.subscription_id",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&micros)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
