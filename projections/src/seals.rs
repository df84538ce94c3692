//! The hash chain over the whole event log (`event_seals`): each event, in global log order, is
//! sealed as `sha256(previous seal || canonical event)`. Kept by a projection, so writers are
//! never serialised on it; `verify` recomputes the chain from the stored events and names the
//! first position where it differs from what was sealed, which is where the log was altered.
//!
//! The canonical form of an event is the JSON of its position, aggregate, sequence, type,
//! version, payload and metadata (both re-serialised with sorted keys) and recording time.

use aiforge_commands::{Database, LogPosition, RecordedEvent};
use sha2::{Digest, Sha256};

use crate::{Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct SealsProjection;

const TABLES: &[ViewTable] = &[ViewTable {
    name: "event_seals",
    order_by: "seq",
}];
const VERIFY_BATCH: i64 = 5000;

/// The seal before the first event.
pub const GENESIS: [u8; 32] = [0; 32];

fn sorted(json: &str) -> serde_json::Value {
    // serde_json's map is ordered by key: parsing and re-serialising sorts every object.
    serde_json::from_str(json).unwrap_or_else(|_| serde_json::Value::String(json.to_string()))
}

/// The bytes an event is sealed by.
pub fn canonical(event: &RecordedEvent) -> Vec<u8> {
    serde_json::json!({
        "position": event.position,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "payload": sorted(&event.payload),
        "metadata": sorted(&event.metadata),
        "recorded_at": event.recorded_at,
    })
    .to_string()
    .into_bytes()
}

pub fn seal(previous: &[u8; 32], event: &RecordedEvent) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical(event));
    hasher.finalize().into()
}

fn decode_seal(hex_seal: &str) -> Result<[u8; 32], ProjectionError> {
    hex::decode(hex_seal)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| ProjectionError::BadEvent {
            position: 0,
            event_type: "(seal)".into(),
            reason: format!("stored seal '{hex_seal}' is not 32 bytes of hex"),
        })
}

#[async_trait::async_trait]
impl Projection for SealsProjection {
    fn name(&self) -> &'static str {
        "seals"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut ViewTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let last = tx
            .fetch_texts(
                "SELECT CAST(seq AS text) AS seq_text, seal FROM event_seals ORDER BY event_seals.seq DESC LIMIT 1",
                &[],
            )
            .await?;
        let (mut seq, mut previous) = match last.first() {
            Some(row) => (row[0].parse::<i64>().unwrap_or(0), decode_seal(&row[1])?),
            None => (0, GENESIS),
        };
        let mut values = Vec::with_capacity(events.len() * 3);
        for event in events {
            seq += 1;
            previous = seal(&previous, event);
            values.push(SqlValue::Int(seq));
            values.push(SqlValue::Int(event.position));
            values.push(SqlValue::Text(hex::encode(previous)));
        }
        tx.insert_rows(
            "INSERT INTO event_seals (seq, position, seal) VALUES",
            3,
            &values,
            "",
        )
        .await?;
        Ok(())
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every sealed event matches; `sealed` events were checked.
    Intact { sealed: i64 },
    /// The event at `position` (the `seq`-th in log order) does not match its seal: it, or
    /// an earlier one, was altered, inserted or removed since it was sealed.
    Broken { seq: i64, position: i64 },
}

/// Recomputes the chain from the events as stored and compares it with the recorded seals.
pub async fn verify(db: &Database) -> Result<Verdict, ProjectionError> {
    let mut previous = GENESIS;
    let mut seq = 0i64;
    let mut after = LogPosition::START;
    loop {
        // The stored bytes, not this process's copy of them: an alteration must show.
        let events = db.read_log_after_uncached(after, VERIFY_BATCH).await?;
        if events.is_empty() {
            break;
        }
        let first = seq + 1;
        let last = seq + events.len() as i64;
        let sql =
            "SELECT seq, position, seal FROM event_seals WHERE seq BETWEEN $1 AND $2 ORDER BY seq";
        let seals: Vec<(i64, i64, String)> = on_engine!(db, |pool| sqlx::query_as(sql)
            .bind(first)
            .bind(last)
            .fetch_all(pool)
            .await?);
        for (event, stored) in events
            .iter()
            .zip(seals.iter().map(Some).chain(std::iter::repeat(None)))
        {
            seq += 1;
            let Some((_, sealed_position, sealed)) = stored else {
                // Not sealed yet (the projection lags): nothing more to compare.
                return Ok(Verdict::Intact { sealed: seq - 1 });
            };
            previous = seal(&previous, event);
            if *sealed_position != event.position || hex::encode(previous) != *sealed {
                return Ok(Verdict::Broken {
                    seq,
                    position: event.position,
                });
            }
        }
        after = events
            .last()
            .map(RecordedEvent::log_position)
            .unwrap_or(after);
    }
    // Seals beyond the log: events were removed from its end.
    let sealed: i64 = crate::count(db, "SELECT COUNT(*) FROM event_seals").await?;
    if sealed > seq {
        let sql = "SELECT position FROM event_seals WHERE seq = $1";
        let position: i64 = on_engine!(db, |pool| sqlx::query_scalar(sql)
            .bind(seq + 1)
            .fetch_one(pool)
            .await?);
        return Ok(Verdict::Broken {
            seq: seq + 1,
            position,
        });
    }
    Ok(Verdict::Intact { sealed: seq })
}

/// The seal of the event at global `position` (its sequence number in the chain and the hex
/// seal), once the `seals` projection has reached it.
pub async fn seal_at(db: &Database, position: i64) -> Result<Option<(i64, String)>, sqlx::Error> {
    let sql = "SELECT CAST(seq AS bigint), seal FROM event_seals WHERE position = $1";
    match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_as(sql)
                .bind(position)
                .fetch_optional(pool)
                .await
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(sql)
                .bind(position)
                .fetch_optional(pool)
                .await
        }
    }
}
