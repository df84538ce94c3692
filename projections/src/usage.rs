//! Metered API calls: `api_calls_view`, one row per `ApiCallMetered` event, and the totals read
//! from it (a subscription's usage, what the gateway's counters are checked against in tests,
//! what revenue distribution reads per model). Rows are written with multi-row inserts, so the
//! view keeps up with the gateway's group-committed metering.

use aiforge_commands::clock::rfc3339;
use aiforge_commands::{Database, RecordedEvent};
use aiforge_domain::usage::{ApiCallEvent, API_CALL_AGGREGATE};

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct UsageProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "api_calls_view",
        order_by: "request_id",
    },
    ViewTable {
        name: "model_usage_daily_view",
        order_by: "model_id, day, service_id",
    },
];
const COLUMNS: usize = 15;

fn row(event: &RecordedEvent) -> Result<Vec<SqlValue>, ProjectionError> {
    let ApiCallEvent::ApiCallMetered(call) = decode_payload(event)?;
    let int = |v: u64| SqlValue::Int(i64::try_from(v).unwrap_or(i64::MAX));
    Ok(vec![
        SqlValue::Text(call.request_id),
        SqlValue::Text(call.subscription_id),
        SqlValue::Text(call.consumer),
        SqlValue::Text(call.service_id),
        SqlValue::Text(call.model_id),
        SqlValue::Text(call.node_id),
        int(call.prompt_tokens.into()),
        int(call.completion_tokens.into()),
        int(u64::from(call.usage_exact)),
        SqlValue::Text(call.cost.to_string()),
        SqlValue::Int(i64::try_from(call.cost.to_micros()).unwrap_or(i64::MAX)),
        int(u64::from(call.streamed)),
        int(call.latency_ms),
        SqlValue::Text(
            serde_json::to_value(call.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        ),
        SqlValue::Text(rfc3339(call.at)),
    ])
}

#[async_trait::async_trait]
impl Projection for UsageProjection {
    fn name(&self) -> &'static str {
        "usage"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == API_CALL_AGGREGATE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut ViewTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut values = Vec::new();
        // Requests and tokens per (model, service, UTC day) of this batch, added to the daily
        // rows below (a batch is applied exactly once, with the checkpoint).
        let mut daily: std::collections::BTreeMap<(String, String, String), (i64, i64)> =
            std::collections::BTreeMap::new();
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == API_CALL_AGGREGATE)
        {
            let ApiCallEvent::ApiCallMetered(call) = decode_payload(event)?;
            let day = rfc3339(call.at).chars().take(10).collect::<String>();
            let slot = daily
                .entry((call.model_id.clone(), call.service_id.clone(), day))
                .or_default();
            slot.0 += 1;
            slot.1 += i64::try_from(call.total_tokens()).unwrap_or(i64::MAX);
            values.extend(row(event)?);
        }
        for ((model_id, service_id, day), (requests, tokens)) in daily {
            tx.execute(
                "INSERT INTO model_usage_daily_view (model_id, service_id, day, requests, tokens) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_id, day, service_id) DO UPDATE \
                 SET requests = model_usage_daily_view.requests + excluded.requests, \
                 tokens = model_usage_daily_view.tokens + excluded.tokens",
                &[
                    SqlValue::Text(model_id),
                    SqlValue::Text(service_id),
                    SqlValue::Text(day),
                    SqlValue::Int(requests),
                    SqlValue::Int(tokens),
                ],
            )
            .await?;
        }
        // A re-delivered event (a retried batch) leaves one row.
        tx.insert_rows(
            "INSERT INTO api_calls_view (request_id, subscription_id, consumer, service_id, \
             model_id, node_id, prompt_tokens, completion_tokens, usage_exact, cost, cost_micros, \
             streamed, latency_ms, outcome, at) VALUES",
            COLUMNS,
            &values,
            "ON CONFLICT (request_id) DO NOTHING",
        )
        .await?;
        Ok(())
    }
}

/// A subscription's (or any filter's) usage totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct UsageTotals {
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

/// Totals of a subscription's metered calls.
pub async fn subscription_usage(
    db: &Database,
    subscription_id: &str,
) -> Result<UsageTotals, sqlx::Error> {
    let sql = "SELECT COUNT(*) AS requests, \
               CAST(COALESCE(SUM(prompt_tokens), 0) AS bigint) AS prompt_tokens, \
               CAST(COALESCE(SUM(completion_tokens), 0) AS bigint) AS completion_tokens, \
               CAST(COALESCE(SUM(cost_micros), 0) AS bigint) AS cost_micros \
               FROM api_calls_view WHERE subscription_id = $1";
    Ok(on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(subscription_id)
        .fetch_one(pool)
        .await?))
}

/// Tokens metered under platform plans (calls whose counter is a plan's, `plan:…`), by model,
/// for calls timed in `[from, until)` (RFC 3339 texts, the view's format): what a month's pool
/// is split by so far (pool rule 2).
pub async fn plan_tokens_by_model(
    db: &aiforge_commands::Database,
    from: &str,
    until: &str,
) -> Result<std::collections::BTreeMap<String, u64>, sqlx::Error> {
    let sql = "SELECT model_id, CAST(SUM(prompt_tokens + completion_tokens) AS bigint) \
               FROM api_calls_view WHERE subscription_id LIKE 'plan:%' AND at >= $1 AND at < $2 \
               GROUP BY model_id";
    let rows: Vec<(String, i64)> = match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_as(sql)
                .bind(from)
                .bind(until)
                .fetch_all(pool)
                .await?
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(sql)
                .bind(from)
                .bind(until)
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(model, tokens)| (model, u64::try_from(tokens).unwrap_or(0)))
        .collect())
}
