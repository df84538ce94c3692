//! Nodes' heartbeats: the last one of each node, in the database (`node_heartbeats`), so a node
//! heartbeating to one instance is online for all of them and a restart forgets nothing.
//! Heartbeats are not events (a node sends one every 30 s; they decide nothing but liveness,
//! and the one event they can cause, `NodeCameOnline`, is written by `compute`).
//!
//! Their metrics over time, for charts, go to `node_heartbeat_samples`: at most one sample per
//! node per UTC minute (the minute's first heartbeat), kept [`HEARTBEAT_SAMPLES_KEEP_SECS`] and
//! pruned by the compute pass ([`prune`]). The sample is written with the latest heartbeat (on
//! PostgreSQL in the same statement, one round trip; on SQLite a second local statement), and a
//! second heartbeat in the same minute writes nothing (the primary key makes it a no-op).

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::compute::{Heartbeat, NodeMetrics};
use crate::store::{Database, StoreError};

/// How long heartbeat samples are kept (30 days): the span a node's chart can show.
pub const HEARTBEAT_SAMPLES_KEEP_SECS: i64 = 30 * 24 * 3600;
/// One sample per node per this many seconds at most (a UTC minute).
pub const HEARTBEAT_SAMPLE_SECS: i64 = 60;
/// Samples one read answers at most: a whole retention period of one node.
pub const HEARTBEAT_SAMPLES_READ_MAX: i64 = HEARTBEAT_SAMPLES_KEEP_SECS / HEARTBEAT_SAMPLE_SECS;

const UPSERT_LATEST: &str =
    "INSERT INTO node_heartbeats (node_id, at, at_unix, metrics) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (node_id) DO UPDATE SET at = excluded.at, at_unix = excluded.at_unix, \
     metrics = excluded.metrics WHERE node_heartbeats.at_unix <= excluded.at_unix";
/// PostgreSQL's sample, a CTE of [`UPSERT_LATEST`] reading its binds (and the minute as `$5`).
const INSERT_SAMPLE: &str =
    "INSERT INTO node_heartbeat_samples (node_id, minute_unix, at, metrics) \
     VALUES ($1, $5, $2, $4) ON CONFLICT (node_id, minute_unix) DO NOTHING";

/// The UTC minute (in Unix seconds) a heartbeat at `at` is sampled in.
pub fn sample_minute(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(HEARTBEAT_SAMPLE_SECS) * HEARTBEAT_SAMPLE_SECS
}

/// Records a node's latest heartbeat (an older one never replaces a newer one) and, when it is
/// the first of its minute, its sample.
pub async fn record(
    db: &Database,
    node_id: &str,
    at: OffsetDateTime,
    metrics: &NodeMetrics,
) -> Result<(), StoreError> {
    let metrics = serde_json::to_string(metrics).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let at_text = crate::clock::rfc3339(at);
    match db.engine() {
        crate::store::Engine::Postgres(pool) => {
            // One round trip: the heartbeat path is every node's, every 30 s.
            let sql = format!("WITH sample AS ({INSERT_SAMPLE}) {UPSERT_LATEST}");
            sqlx::query(&sql)
                .bind(node_id)
                .bind(&at_text)
                .bind(at.unix_timestamp())
                .bind(&metrics)
                .bind(sample_minute(at))
                .execute(pool)
                .await?;
        }
        crate::store::Engine::Sqlite(pool) => {
            // Two statements of one local process.
            sqlx::query(UPSERT_LATEST)
                .bind(node_id)
                .bind(&at_text)
                .bind(at.unix_timestamp())
                .bind(&metrics)
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO node_heartbeat_samples (node_id, minute_unix, at, metrics) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (node_id, minute_unix) DO NOTHING",
            )
            .bind(node_id)
            .bind(sample_minute(at))
            .bind(&at_text)
            .bind(&metrics)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// A node's samples whose minute lies in `from..=to`, oldest first, at most
/// [`HEARTBEAT_SAMPLES_READ_MAX`].
pub async fn samples(
    db: &Database,
    node_id: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<Heartbeat>, StoreError> {
    let rows: Vec<(String, String)> = crate::on_engine!(db, |pool| sqlx::query_as(
        "SELECT at, metrics FROM node_heartbeat_samples \
         WHERE node_id = $1 AND minute_unix >= $2 AND minute_unix <= $3 \
         ORDER BY minute_unix LIMIT $4"
    )
    .bind(node_id)
    .bind(sample_minute(from))
    .bind(to.unix_timestamp())
    .bind(HEARTBEAT_SAMPLES_READ_MAX)
    .fetch_all(pool)
    .await?);
    rows.iter()
        .map(|(at, metrics)| heartbeat(at, metrics))
        .collect()
}

/// Deletes every node's samples older than [`HEARTBEAT_SAMPLES_KEEP_SECS`] before `now`;
/// returns how many went.
pub async fn prune(db: &Database, now: OffsetDateTime) -> Result<u64, StoreError> {
    let before = now.unix_timestamp() - HEARTBEAT_SAMPLES_KEEP_SECS;
    Ok(crate::on_engine!(db, |pool| sqlx::query(
        "DELETE FROM node_heartbeat_samples WHERE minute_unix < $1"
    )
    .bind(before)
    .execute(pool)
    .await?
    .rows_affected()))
}

fn heartbeat(at: &str, metrics: &str) -> Result<Heartbeat, StoreError> {
    let at = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("heartbeat time {at:?}: {e}")))?;
    let metrics = serde_json::from_str(metrics)
        .map_err(|e| StoreError::Corrupt(format!("heartbeat metrics: {e}")))?;
    Ok(Heartbeat { at, metrics })
}

/// A node's last heartbeat, if any was ever recorded.
pub async fn last(db: &Database, node_id: &str) -> Result<Option<Heartbeat>, StoreError> {
    let row: Option<(String, String)> = crate::on_engine!(db, |pool| sqlx::query_as(
        "SELECT at, metrics FROM node_heartbeats WHERE node_id = $1"
    )
    .bind(node_id)
    .fetch_optional(pool)
    .await?);
    row.map(|(at, metrics)| heartbeat(&at, &metrics))
        .transpose()
}

/// The last heartbeat of each of `node_ids` that has one.
pub async fn last_of(
    db: &Database,
    node_ids: &[String],
) -> Result<HashMap<String, OffsetDateTime>, StoreError> {
    let mut found = HashMap::new();
    // Few nodes are online at once; one bounded query per chunk keeps the bind count small.
    for chunk in node_ids.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT node_id, at_unix FROM node_heartbeats WHERE node_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(String, i64)> = crate::on_engine!(db, |pool| {
            let mut query = sqlx::query_as(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            query.fetch_all(pool).await?
        });
        for (node_id, at_unix) in rows {
            let at = OffsetDateTime::from_unix_timestamp(at_unix)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            found.insert(node_id, at);
        }
    }
    Ok(found)
}

/// Forgets a node's heartbeat (it went offline or was deactivated).
pub async fn forget(db: &Database, node_id: &str) -> Result<(), StoreError> {
    crate::on_engine!(db, |pool| sqlx::query(
        "DELETE FROM node_heartbeats WHERE node_id = $1"
    )
    .bind(node_id)
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok(())
}
