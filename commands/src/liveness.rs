//! Nodes' heartbeats: the last one of each node, in the database (`node_heartbeats`), so a node
//! heartbeating to one instance is online for all of them and a restart forgets nothing.
//! Heartbeats are not events (a node sends one every 30 s; they decide nothing but liveness,
//! and the one event they can cause, `NodeCameOnline`, is written by `compute`).

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::compute::{Heartbeat, NodeMetrics};
use crate::store::{Database, StoreError};

/// Records a node's latest heartbeat (an older one never replaces a newer one).
pub async fn record(
    db: &Database,
    node_id: &str,
    at: OffsetDateTime,
    metrics: &NodeMetrics,
) -> Result<(), StoreError> {
    let metrics = serde_json::to_string(metrics).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let at_text = crate::clock::rfc3339(at);
    crate::on_engine!(db, |pool| sqlx::query(
        "INSERT INTO node_heartbeats (node_id, at, at_unix, metrics) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (node_id) DO UPDATE SET at = excluded.at, at_unix = excluded.at_unix, \
         metrics = excluded.metrics WHERE node_heartbeats.at_unix <= excluded.at_unix"
    )
    .bind(node_id)
    .bind(&at_text)
    .bind(at.unix_timestamp())
    .bind(&metrics)
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok(())
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
