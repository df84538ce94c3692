//! The monthly close at scale (issue: "close a month of 10,000,000 usage events on
//! PostgreSQL: time and peak memory of the close and of `audit replay` from an export").
//!
//! `cargo bench -p aiforge-api --bench month_close` (env: `AIFORGE_BENCH_PG`, default
//! `postgres://postgres@127.0.0.1:5432`; `AIFORGE_BENCH_EVENTS`, default 10,000,000 usage
//! events). It generates the fixture once into database `aiforge_bench_close_<events>` (100
//! models, 1,000 platform-subscription payments, the usage events spread over November 2026,
//! written by SQL in the exact JSON layout serde writes), then runs each step in its own child
//! process so each peak RSS (VmHWM) is that step's alone:
//! - `close`: the real `distribution::close` (fold of the live log + `MonthClosed`);
//! - `export`: the real `aiforge events export` code path, to a file;
//! - `replay`: `distribution::replay_export` of that file, compared with the recorded close.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use aiforge_commands::{CommandMeta, Database, Executor, ManualClock};
use aiforge_domain::fees::{FeeTable, PaymentType};
use aiforge_domain::ledger::{month_key, payment_postings, Beneficiary};
use aiforge_domain::model::{BlobRef, ModelEvent, ModelMetadata, ModelOwner, ModelSource};
use aiforge_domain::payment::PaymentEvent;
use aiforge_domain::revenue_book::{Month, RevenueBookServices};
use aiforge_domain::wallet::Network;
use aiforge_domain::Usdt;
use aiforge_projections::distribution;
use time::macros::datetime;

const MODELS: usize = 100;
const PAYMENTS: usize = 1000;
const INSERT_CHUNK: i64 = 500_000;

type BenchResult = Result<(), Box<dyn std::error::Error>>;

fn events() -> i64 {
    std::env::var("AIFORGE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn database_url() -> String {
    let base = std::env::var("AIFORGE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
    format!("{base}/aiforge_bench_close_{}", events())
}

fn export_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("aiforge-bench-close-{}.jsonl", events()))
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn insert_json(
    pool: &sqlx::PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: String,
) -> BenchResult {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, recorded_at) VALUES ($1, $2, 1, $3, '1.0', $4::json, '{}'::json, \
         timestamptz '2026-11-01 00:00:00+00')",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(event_type)
    .bind(payload)
    .execute(pool)
    .await?;
    Ok(())
}

async fn generate(db: &Database) -> BenchResult {
    let aiforge_commands::store::Engine::Postgres(pool) = db.engine() else {
        return Err("the close benchmark runs on PostgreSQL".into());
    };
    let have: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE aggregate_type = 'api_call'")
            .fetch_one(pool)
            .await?;
    if have == events() {
        println!("fixture: {have} usage events already in place");
        return Ok(());
    }
    sqlx::query("TRUNCATE events, command_log, claims, checkpoints")
        .execute(pool)
        .await?;
    let started = Instant::now();
    for m in 0..MODELS {
        let event = ModelEvent::ModelUploaded {
            model_id: format!("model-{m}"),
            owner: ModelOwner::User(format!("creator-{}", m % 37)),
            uploaded_by: format!("creator-{}", m % 37),
            metadata: ModelMetadata {
                name: format!("model {m}"),
                description: String::new(),
                tags: vec![],
            },
            blob: BlobRef {
                sha256: format!("{m:064x}"),
                cid: format!("Qm{m}"),
                size_bytes: 1,
                backend: "local".into(),
            },
            source: ModelSource::Upload {
                filename: "m.gguf".into(),
            },
            uploaded_at: datetime!(2026-10-01 00:00 UTC),
        };
        insert_json(
            pool,
            "model",
            &format!("model-{m}"),
            "ModelUploaded",
            serde_json::to_string(&event)?,
        )
        .await?;
    }
    for p in 0..PAYMENTS {
        let at = datetime!(2026-11-01 00:00 UTC) + time::Duration::minutes(p as i64 * 40);
        let schedule = FeeTable::genesis().at(at).clone();
        let amount = Usdt::from_whole(30)?;
        let postings = payment_postings(
            &schedule,
            PaymentType::PlatformSubscription,
            &format!("payer-{p}"),
            amount,
            &Beneficiary::Pool,
            &month_key(at),
        )?;
        let (platform_fee, net) = schedule.split(PaymentType::PlatformSubscription, amount)?;
        let event = PaymentEvent::PaymentConfirmed {
            payment_id: format!("payment-{p}"),
            payer: format!("payer-{p}"),
            payment_type: PaymentType::PlatformSubscription,
            reference: format!("subscription:payer-{p}"),
            network: Network::Ethereum,
            tx_hash: format!("0x{p:064x}"),
            from: format!("0x{p:040x}"),
            amount,
            paid: amount,
            overpaid: Usdt::ZERO,
            fee_schedule_version: schedule.version,
            platform_fee,
            net,
            postings,
            block: 100,
            confirmations: 3,
            confirmed_at: at,
        };
        insert_json(
            pool,
            "payment",
            &format!("payment-{p}"),
            "PaymentConfirmed",
            serde_json::to_string(&event)?,
        )
        .await?;
    }
    // The usage events, in the layout serde writes `ApiCallMetered` (field order included).
    let mut from = 1i64;
    while from <= events() {
        let to = (from + INSERT_CHUNK - 1).min(events());
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, recorded_at) \
             SELECT 'api_call', 'bench-' || i, 1, 'ApiCallMetered', '1.0', \
             ('{\"ApiCallMetered\":{\"request_id\":\"bench-' || i || '\",\"subscription_id\":\"sub-' || (i % 1000) \
             || '\",\"consumer\":\"consumer-' || (i % 1000) || '\",\"service_id\":\"service-' || (i % 100) \
             || '\",\"model_id\":\"model-' || ((i * 7919) % 100) || '\",\"node_id\":\"local\",\"prompt_tokens\":' || (10 + i % 50) \
             || ',\"completion_tokens\":' || (20 + i % 200) || ',\"usage_exact\":true,\"cost\":\"0.000000\",\"pricing_version\":1,\"streamed\":false,\"latency_ms\":' \
             || (100 + i % 900) || ',\"outcome\":\"completed\",\"at\":\"' \
             || to_char(timestamp '2026-11-01' + (i % 2592000) * interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') || '\"}}')::json, \
             '{}'::json, timestamptz '2026-11-01 00:00:00+00' + (i % 2592000) * interval '1 second' \
             FROM generate_series($1::bigint, $2::bigint) AS i",
        )
        .bind(from)
        .bind(to)
        .execute(pool)
        .await?;
        println!(
            "fixture: {to} usage events written ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        from = to + 1;
    }
    sqlx::query("VACUUM ANALYZE events").execute(pool).await?;
    println!(
        "fixture: generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn close(db: &Database) -> BenchResult {
    let aiforge_commands::store::Engine::Postgres(pool) = db.engine() else {
        return Err("PostgreSQL only".into());
    };
    // Each run closes November afresh.
    sqlx::query("DELETE FROM events WHERE aggregate_type = 'revenue_book'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM command_log WHERE aggregate_type = 'revenue_book'")
        .execute(pool)
        .await?;
    let clock: Arc<dyn aiforge_commands::Clock> =
        Arc::new(ManualClock::new(datetime!(2026-12-01 00:00:05 UTC)));
    let book = Executor::new(db.clone(), clock.clone(), RevenueBookServices);
    let meta = CommandMeta {
        command_id: format!("bench-close-{}", uuid::Uuid::now_v7()),
        request_hash: "bench".into(),
        actor: None,
        request_id: None,
    };
    let month: Month = "2026-11".parse()?;
    let started = Instant::now();
    let closed = distribution::close(&book, &clock, month, "bench", &meta).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "RESULT close: {} usage events, pool {}, {} models, digest {}: {seconds:.1} s, peak RSS {:.0} MiB",
        closed.distribution.usage_events,
        closed.distribution.pool_total,
        closed.distribution.models.len(),
        &closed.distribution.digest[..16],
        peak_rss_mib()
    );
    Ok(())
}

async fn export(db: &Database) -> BenchResult {
    let started = Instant::now();
    let mut file =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(export_path())?);
    let written = aiforge_api::cli::export(db, None, None, None, None, &mut file).await?;
    println!(
        "RESULT export: {written} events in {:.1} s, peak RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}

fn replay() -> BenchResult {
    let path = export_path();
    let open = move || -> std::io::Result<Box<dyn std::io::BufRead>> {
        Ok(Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&path)?,
        )))
    };
    let started = Instant::now();
    let replay = distribution::replay_export(&open, "2026-11".parse()?)?;
    println!(
        "RESULT replay: {} usage events, matches the recorded close: {}: {:.1} s, peak RSS {:.0} MiB",
        replay.computed.usage_events,
        replay.matches(),
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    if !replay.matches() {
        return Err("the replay differs from the close".into());
    }
    Ok(())
}

async fn open_database() -> Result<Database, Box<dyn std::error::Error>> {
    let url = database_url();
    let (server, name) = url.rsplit_once('/').ok_or("bad url")?;
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    let db = Database::connect(&url).await?;
    db.migrate().await?;
    Ok(db)
}

#[tokio::main]
async fn main() -> BenchResult {
    let step = std::env::args()
        .skip(1)
        .find(|a| ["generate", "close", "export", "replay"].contains(&a.as_str()));
    match step.as_deref() {
        Some("generate") => generate(&open_database().await?).await,
        Some("close") => close(&open_database().await?).await,
        Some("export") => export(&open_database().await?).await,
        Some("replay") => replay(),
        _ => {
            // `cargo bench` passes `--bench`: run every step in its own process.
            let me = std::env::current_exe()?;
            for step in ["generate", "close", "export", "replay"] {
                let status = Command::new(&me).arg(step).status()?;
                if !status.success() {
                    return Err(format!("step {step} failed").into());
                }
            }
            let _ = std::fs::remove_file(export_path());
            Ok(())
        }
    }
}
