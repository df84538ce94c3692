//! Time series over a year of metered calls (issue 18: "time series over 1M metered calls
//! answer in under 200 ms"): generates `AIFORGE_BENCH_SERIES_CALLS` (1,000,000) real
//! `ApiCallMetered` events spread over 2026 (50 models, 100 services, 2,000 consumers with
//! their subscriptions, 20 nodes), builds the `series` projection from them with the real
//! projector (`Projector::rebuild`, timed: what a rebuild of the view costs), then times the
//! series queries the dashboards make, through the same `series::points` the API calls, each
//! `AIFORGE_BENCH_SERIES_RUNS` (20) times (median and worst printed).
//!
//! Run: `cargo bench -p aiforge-projections --bench series`. Engines: `AIFORGE_BENCH_ENGINES`
//! (`sqlite,postgres`; PostgreSQL at `AIFORGE_TEST_POSTGRES_URL`, default
//! postgres://postgres@127.0.0.1:5432, skipped with the reason printed when unreachable). Each
//! engine gets a fresh database, removed afterwards.

use std::time::{Duration, Instant};

use aiforge_commands::clock::rfc3339;
use aiforge_commands::store::Engine;
use aiforge_commands::testing::TestDatabase;
use aiforge_commands::Database;
use aiforge_domain::usage::{
    ApiCallEvent, ApiCallMetered, CallEntitlement, CallOutcome, API_CALL_AGGREGATE,
};
use aiforge_domain::Usdt;
use aiforge_projections::series::{self, Bucket, Rows, SeriesProjection};
use aiforge_projections::Projector;
use time::macros::datetime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MODELS: u64 = 50;
const SERVICES: u64 = 100;
const CONSUMERS: u64 = 2000;
const NODES: u64 = 20;
/// Events per INSERT statement while generating (SQLite binds at most 32,766 values).
const INSERT_ROWS: usize = 2000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Call `n` of `count`, spread evenly over the 365 days of 2026; every id derived from `n`.
fn call(n: u64, count: u64) -> ApiCallMetered {
    let year = 365 * 86_400;
    let at = datetime!(2026-01-01 00:00 UTC)
        + time::Duration::seconds(i64::try_from(n * year / count.max(1)).unwrap_or(0));
    let service = n % SERVICES;
    let consumer = (n * 7919) % CONSUMERS;
    ApiCallMetered {
        request_id: format!("req-{n:09}"),
        subscription_id: if consumer.is_multiple_of(4) {
            format!("plan:u-{consumer:05}:2026-01-01")
        } else {
            format!("sub-{consumer:05}-{service:03}")
        },
        consumer: format!("u-{consumer:05}"),
        service_id: format!("svc-{service:03}"),
        model_id: format!("model-{:03}", service % MODELS),
        node_id: format!("node-{:02}", n % NODES),
        prompt_tokens: u32::try_from(20 + n % 200).unwrap_or(20),
        completion_tokens: u32::try_from(50 + n % 300).unwrap_or(50),
        usage_exact: true,
        cost: Usdt::from_micros(1_000 + i64::try_from(n % 5_000).unwrap_or(0))
            .unwrap_or(Usdt::ZERO),
        pricing_version: 1,
        streamed: n.is_multiple_of(2),
        latency_ms: 100 + n % 900,
        outcome: CallOutcome::Completed,
        at,
        entitlement: CallEntitlement::Subscription,
    }
}

async fn generate(db: &Database, count: u64) -> Result<(), BoxError> {
    let recorded_at = rfc3339(datetime!(2027-01-01 00:00 UTC));
    let mut n = 0u64;
    while n < count {
        let end = (n + INSERT_ROWS as u64).min(count);
        let rows: Vec<(String, String, i64)> = (n..end)
            .map(|i| {
                let c = call(i, count);
                let payload = serde_json::to_string(&serde_json::to_value(
                    ApiCallEvent::ApiCallMetered(c.clone()),
                )?)?;
                Ok((c.request_id, payload, i64::try_from(i + 1)?))
            })
            .collect::<Result<_, BoxError>>()?;
        match db.engine() {
            Engine::Sqlite(pool) => {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, global_position, recorded_at) ",
                );
                q.push_values(rows, |mut b, (id, payload, position)| {
                    b.push_bind(API_CALL_AGGREGATE)
                        .push_bind(id)
                        .push_bind(1i64)
                        .push_bind("ApiCallMetered")
                        .push_bind("1.0")
                        .push_bind(payload)
                        .push_bind("{}")
                        .push_bind(position)
                        .push_bind(recorded_at.clone());
                });
                q.build().execute(pool).await?;
            }
            Engine::Postgres(pool) => {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, recorded_at) ",
                );
                q.push_values(rows, |mut b, (id, payload, _)| {
                    b.push_bind(API_CALL_AGGREGATE)
                        .push_bind(id)
                        .push_bind(1i64)
                        .push_bind("ApiCallMetered")
                        .push_bind("1.0")
                        .push_bind(payload)
                        .push_unseparated("::json")
                        .push("'{}'::json")
                        .push("now()");
                });
                q.build().execute(pool).await?;
            }
        }
        n = end;
    }
    if let Engine::Postgres(pool) = db.engine() {
        sqlx::raw_sql("VACUUM (ANALYZE) events")
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

async fn run(engine: &str, db: &Database, count: u64, runs: u64) -> Result<(), BoxError> {
    let start = Instant::now();
    generate(db, count).await?;
    println!(
        "{engine}: generated {count} ApiCallMetered events in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let projector = Projector::new(db.clone(), vec![]);
    let start = Instant::now();
    projector.rebuild(&SeriesProjection).await?;
    println!(
        "{engine}: series projection rebuilt from them in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let scope = |scope: &'static str, id: &str, dim: &'static str| Rows::Scope {
        scope,
        scope_id: id.to_string(),
        dim,
    };
    let queries: Vec<(&str, &str, Rows, Bucket)> = vec![
        (
            "platform requests by day, a year",
            "requests",
            scope("platform", "", ""),
            Bucket::Day,
        ),
        (
            "platform tokens by month by model, a year",
            "tokens",
            scope("platform", "", "model"),
            Bucket::Month,
        ),
        (
            "platform requests by day by model, a year",
            "requests",
            scope("platform", "", "model"),
            Bucket::Day,
        ),
        (
            "a model's tokens by day by service, a year",
            "tokens",
            scope("model", "model-007", "service"),
            Bucket::Day,
        ),
        (
            "a node's requests by day, a year",
            "requests",
            scope("node", "node-03", ""),
            Bucket::Day,
        ),
        (
            "a consumer's requests by day by subscription, a year",
            "requests",
            scope("consumer", "u-00042", "subscription"),
            Bucket::Day,
        ),
    ];
    for (name, metric, rows, bucket) in &queries {
        let mut times = Vec::new();
        let mut total = 0i64;
        for _ in 0..runs {
            let start = Instant::now();
            let points =
                series::points(db, metric, rows, *bucket, "2026-01-01", "2026-12-31").await?;
            times.push(start.elapsed());
            total = points.iter().map(|p| p.2).sum();
        }
        let (median, worst) = median(times);
        println!(
            "{engine}: {name}: median {:.2} ms, worst {:.2} ms (sum {total})",
            median.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0
        );
    }
    // The whole year's requests add up to the calls generated: the rollup lost nothing.
    let all = series::points(
        db,
        "requests",
        &scope("platform", "", ""),
        Bucket::Month,
        "2026-01-01",
        "2026-12-31",
    )
    .await?;
    let sum: i64 = all.iter().map(|p| p.2).sum();
    if u64::try_from(sum)? != count {
        return Err(format!("the year's requests sum to {sum}, wanted {count}").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let count = env_u64("AIFORGE_BENCH_SERIES_CALLS", 1_000_000);
    let runs = env_u64("AIFORGE_BENCH_SERIES_RUNS", 20).max(1);
    let engines =
        std::env::var("AIFORGE_BENCH_ENGINES").unwrap_or_else(|_| "sqlite,postgres".into());
    for engine in engines.split(',').map(str::trim) {
        let test_db = match engine {
            "sqlite" => TestDatabase::sqlite().await?,
            "postgres" => match TestDatabase::postgres().await {
                Some(db) => db,
                None => continue,
            },
            other => return Err(format!("unknown engine {other}").into()),
        };
        let result = run(engine, &test_db.db, count, runs).await;
        test_db.cleanup().await;
        result?;
    }
    Ok(())
}
