//! Throughput of the event store on both engines, through the code production runs:
//! - append: commands on the store's test aggregate (`testing::tally::Tally`: no business rule,
//!   no argon2) executed by `aiforge_commands::Executor`, so every event goes through
//!   `AiforgeRepository::persist` with its `command_log` row, by one writer and by
//!   `AIFORGE_BENCH_WRITERS` (16) concurrent writers, each on its own aggregates;
//! - rebuild: `Projector::rebuild` of the `users` view from a log of `AIFORGE_BENCH_REBUILD_EVENTS`
//!   (1,000,000) `UserRegistered` events, generated in bulk by SQL (only the rebuild is timed).
//!
//! Run: `cargo bench -p aiforge-projections --bench event_store`. Each measurement gets a fresh
//! database (a SQLite temp file; a new database on the PostgreSQL server named by
//! `AIFORGE_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432, skipped with the
//! reason printed when unreachable). Counts scale with environment variables, for a smoke run:
//! `AIFORGE_BENCH_APPEND_SEQ_EVENTS`, `AIFORGE_BENCH_APPEND_CONCURRENT_EVENTS`,
//! `AIFORGE_BENCH_WRITERS`, `AIFORGE_BENCH_REBUILD_EVENTS`, and `AIFORGE_BENCH_ENGINES`
//! (`sqlite,postgres`). The default counts take a few seconds to ~20 s per measurement on a
//! 2-core machine.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiforge_commands::clock::{rfc3339, Clock};
use aiforge_commands::store::Engine;
use aiforge_commands::testing::tally::Tally;
use aiforge_commands::testing::TestDatabase;
use aiforge_commands::{CommandMeta, Database, Executor, LogPosition, SystemClock};
use aiforge_domain::account::AccountEvent;
use aiforge_projections::users::UsersProjection;
use aiforge_projections::{decode_payload, Projector};
use time::macros::datetime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Commands per aggregate before a writer moves to a new one: short streams, as real aggregates
/// have, so loading an aggregate stays cheap and the store, not the replay, is measured.
const AGGREGATE_EVENTS: usize = 10;
/// Commands each writer runs before the clock starts (opens pool connections, warms caches).
const WARMUP_COMMANDS_PER_WRITER: usize = 20;

// ---------- configuration ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Sqlite,
    Postgres,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::Sqlite => "sqlite",
            EngineKind::Postgres => "postgres",
        }
    }
}

struct Config {
    engines: Vec<EngineKind>,
    writers: usize,
    /// Per engine: (sqlite, postgres). SQLite commits with `synchronous = FULL` under a single
    /// write lock, so it gets fewer events for a similar duration.
    append_seq_events: (usize, usize),
    append_concurrent_events: (usize, usize),
    rebuild_events: i64,
}

fn env_count(name: &str) -> Result<Option<usize>, BoxError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(
            value
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|e| format!("{name}={value}: {e}"))?,
        )),
        Err(_) => Ok(None),
    }
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let engines = match std::env::var("AIFORGE_BENCH_ENGINES") {
            Ok(list) => list
                .split(',')
                .map(|name| match name.trim() {
                    "sqlite" => Ok(EngineKind::Sqlite),
                    "postgres" => Ok(EngineKind::Postgres),
                    other => Err(format!("AIFORGE_BENCH_ENGINES: unknown engine '{other}'")),
                })
                .collect::<Result<_, _>>()?,
            Err(_) => vec![EngineKind::Sqlite, EngineKind::Postgres],
        };
        let both = |name: &str, defaults: (usize, usize)| -> Result<(usize, usize), BoxError> {
            Ok(env_count(name)?.map_or(defaults, |n| (n, n)))
        };
        let writers = env_count("AIFORGE_BENCH_WRITERS")?.unwrap_or(16).max(1);
        Ok(Self {
            engines,
            writers,
            append_seq_events: both("AIFORGE_BENCH_APPEND_SEQ_EVENTS", (3_000, 5_000))?,
            append_concurrent_events: both(
                "AIFORGE_BENCH_APPEND_CONCURRENT_EVENTS",
                (5_000, 20_000),
            )?,
            rebuild_events: i64::try_from(
                env_count("AIFORGE_BENCH_REBUILD_EVENTS")?.unwrap_or(1_000_000),
            )?,
        })
    }

    fn pick(engine: EngineKind, counts: (usize, usize)) -> usize {
        match engine {
            EngineKind::Sqlite => counts.0,
            EngineKind::Postgres => counts.1,
        }
    }
}

// ---------- results ----------

struct Measurement {
    engine: &'static str,
    name: String,
    events: u64,
    elapsed: Duration,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn report(&self) {
        println!(
            "  {:<8} {:<34} {:>9} events {:>8.2} s {:>10.0} events/s",
            self.engine,
            self.name,
            self.events,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
    }
}

fn table(measurements: &[Measurement], notes: &[String]) -> String {
    let mut out = String::new();
    let line = "-".repeat(84);
    let _ = writeln!(out, "{line}");
    let _ = writeln!(
        out,
        "{:<9} {:<36} {:>10} {:>10} {:>14}",
        "engine", "measurement", "events", "seconds", "events/s"
    );
    let _ = writeln!(out, "{line}");
    for m in measurements {
        let _ = writeln!(
            out,
            "{:<9} {:<36} {:>10} {:>10.2} {:>14.0}",
            m.engine,
            m.name,
            m.events,
            m.elapsed.as_secs_f64(),
            m.rate()
        );
    }
    let _ = writeln!(out, "{line}");
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    out
}

// ---------- fresh databases ----------

/// A new, migrated database, or None (the reason is printed by `TestDatabase`) when PostgreSQL
/// is unreachable.
async fn fresh(engine: EngineKind) -> Result<Option<TestDatabase>, BoxError> {
    Ok(match engine {
        EngineKind::Sqlite => Some(TestDatabase::sqlite().await?),
        EngineKind::Postgres => TestDatabase::postgres().await,
    })
}

// ---------- 1. append throughput ----------

/// `writers` tasks each execute `per_writer` commands on their own aggregates; returns the time
/// of the measured commands (after a warm-up).
async fn append(db: &Database, writers: usize, per_writer: usize) -> Result<Duration, BoxError> {
    let exec = Arc::new(Executor::<Tally>::new(
        db.clone(),
        Arc::new(SystemClock),
        (),
    ));
    let run = |phase: &'static str, count: usize| {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let exec = exec.clone();
                tokio::spawn(async move {
                    for i in 0..count {
                        let aggregate = format!("{phase}-w{w}-{}", i / AGGREGATE_EVENTS);
                        exec.execute(&aggregate, 1, &CommandMeta::generated(None), &[])
                            .await?;
                    }
                    Ok::<(), BoxError>(())
                })
            })
            .collect();
        async move {
            for task in tasks {
                task.await??;
            }
            Ok::<(), BoxError>(())
        }
    };
    run("warm", WARMUP_COMMANDS_PER_WRITER).await?;
    let start = Instant::now();
    run("bench", per_writer).await?;
    let elapsed = start.elapsed();
    let expected = writers * (WARMUP_COMMANDS_PER_WRITER + per_writer);
    let stored = db.count_events().await?;
    if stored != i64::try_from(expected)? {
        return Err(format!("expected {expected} events in the store, found {stored}").into());
    }
    Ok(elapsed)
}

// ---------- 2. catch-up projection rate ----------

/// The time every generated event carries (whole seconds: `time::serde::rfc3339` then writes
/// no fraction, exactly like a real registration at that instant).
const REGISTERED_AT: &str = "2026-11-21T10:00:00Z";

/// The payload text a real `UserRegistered` of user `n` is stored with: cqrs-es turns the event
/// into a `serde_json::Value` (an ordered map, so keys are sorted) and the repository writes that
/// compactly. The SQL generators below must produce exactly this; `check_generated` proves it.
fn real_payload(n: i64) -> Result<String, BoxError> {
    let event = AccountEvent::UserRegistered {
        user_id: format!("u-{n:07}"),
        email: format!("u{n}@example.com"),
        username: format!("u{n}"),
        registered_at: datetime!(2026-11-21 10:00 UTC),
    };
    Ok(serde_json::to_string(&serde_json::to_value(&event)?)?)
}

/// Inserts `count` `UserRegistered` events of aggregates `u-0000001`… in one statement.
async fn generate_registrations(db: &Database, count: i64) -> Result<(), BoxError> {
    // Seven digits: ids stay fixed-width (and distinct) up to 9,999,999 users.
    match db.engine() {
        Engine::Postgres(pool) => {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, recorded_at) \
                 SELECT 'account', id, 1, 'UserRegistered', '1.0', \
                 ('{\"UserRegistered\":{\"email\":\"u' || n || '@example.com\",\
                 \"registered_at\":\"' || $2 || '\",\"user_id\":\"' || id || '\",\
                 \"username\":\"u' || n || '\"}}')::json, '{}'::json, now() \
                 FROM (SELECT n, 'u-' || lpad(n::text, 7, '0') AS id \
                       FROM generate_series(1::bigint, $1::bigint) AS n) AS s",
            )
            .bind(count)
            .bind(REGISTERED_AT)
            .execute(pool)
            .await?;
            // The steady state of a live store: autovacuum has analysed the table and set the
            // visibility hints, so the rebuild is not charged for that one-time work.
            sqlx::raw_sql("VACUUM (ANALYZE) events")
                .execute(pool)
                .await?;
        }
        Engine::Sqlite(pool) => {
            let recorded_at = rfc3339(SystemClock.now());
            sqlx::query(
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $1) \
                 INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, global_position, recorded_at) \
                 SELECT 'account', printf('u-%07d', n), 1, 'UserRegistered', '1.0', \
                 '{\"UserRegistered\":{\"email\":\"u' || n || '@example.com\",\
                 \"registered_at\":\"' || $2 || '\",\"user_id\":\"' || printf('u-%07d', n) || '\",\
                 \"username\":\"u' || n || '\"}}', '{}', n, $3 \
                 FROM s",
            )
            .bind(count)
            .bind(REGISTERED_AT)
            .bind(recorded_at)
            .execute(pool)
            .await?;
            // Fold the bulk load's WAL into the main file, as auto-checkpoints would have.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// The generated log is what the real write path would have written: first and last event
/// byte-identical to the real serialisation, and decodable by the projection's decoder.
async fn check_generated(db: &Database, count: i64) -> Result<(), BoxError> {
    let first = db.read_log_after(LogPosition::START, 1).await?;
    let head = db.log_head().await?;
    let last = db
        .read_log_after(
            LogPosition {
                tx: head.tx,
                position: head.position - 1,
            },
            1,
        )
        .await?;
    for (event, n) in [(first.first(), 1), (last.first(), count)] {
        let event = event.ok_or("the generated log is empty")?;
        let expected = real_payload(n)?;
        if event.payload != expected || event.aggregate_type != "account" || event.sequence != 1 {
            return Err(format!(
                "generated event {n} differs from a real one:\n  got  {} {}\n  want account {expected}",
                event.aggregate_type, event.payload
            )
            .into());
        }
        decode_payload::<AccountEvent>(event)?;
    }
    let stored = db.count_events().await?;
    if stored != count {
        return Err(format!("generated {stored} events, wanted {count}").into());
    }
    Ok(())
}

/// Returns (time to generate the log, time to rebuild the view).
async fn rebuild(db: &Database, count: i64) -> Result<(Duration, Duration), BoxError> {
    let start = Instant::now();
    generate_registrations(db, count).await?;
    let generated = start.elapsed();
    check_generated(db, count).await?;

    let projector = Projector::new(db.clone(), vec![Arc::new(UsersProjection)]);
    let start = Instant::now();
    projector.rebuild(&UsersProjection).await?;
    let elapsed = start.elapsed();

    let (_, rows) = aiforge_projections::users::page(db, 0, 1).await?;
    if rows != count {
        return Err(format!("users_view has {rows} rows after the rebuild, wanted {count}").into());
    }
    Ok((generated, elapsed))
}

// ---------- the run ----------

async fn bench_engine(
    engine: EngineKind,
    config: &Config,
    out: &mut Vec<Measurement>,
    notes: &mut Vec<String>,
) -> Result<(), BoxError> {
    let name = engine.name();
    let seq = Config::pick(engine, config.append_seq_events);
    let concurrent = Config::pick(engine, config.append_concurrent_events);
    let per_writer = (concurrent / config.writers).max(1);
    let cases = [(1usize, seq.max(1)), (config.writers, per_writer)];
    for (writers, per_writer) in cases {
        let Some(test_db) = fresh(engine).await? else {
            notes.push(format!(
                "{name}: skipped, server unreachable (reason printed above)"
            ));
            return Ok(());
        };
        let result = append(&test_db.db, writers, per_writer).await;
        test_db.cleanup().await;
        let m = Measurement {
            engine: name,
            name: format!(
                "append, {writers} writer{}",
                if writers == 1 { "" } else { "s" }
            ),
            events: (writers * per_writer) as u64,
            elapsed: result?,
        };
        m.report();
        out.push(m);
    }

    let Some(test_db) = fresh(engine).await? else {
        notes.push(format!("{name}: rebuild skipped, server unreachable"));
        return Ok(());
    };
    if let Engine::Postgres(pool) = test_db.db.engine() {
        // What the append rates depend on most: the server and whether a commit waits for fsync.
        let (version, sync): (String, String) = sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit')",
        )
        .fetch_one(pool)
        .await?;
        notes.push(format!(
            "postgres: server {version}, synchronous_commit = {sync}"
        ));
    }
    let result = rebuild(&test_db.db, config.rebuild_events).await;
    test_db.cleanup().await;
    let (generated, elapsed) = result?;
    notes.push(format!(
        "{name}: generating the {} events by bulk SQL took {:.1} s (not part of the rate)",
        config.rebuild_events,
        generated.as_secs_f64()
    ));
    let m = Measurement {
        engine: name,
        name: "rebuild users view (catch-up)".into(),
        events: u64::try_from(config.rebuild_events)?,
        elapsed,
    };
    m.report();
    out.push(m);
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let config = Config::from_env()?;
    // Other work on the machine (a build, a test run) skews every number: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!(
        "event_store bench: {} writers, {} events per aggregate, rebuild of {} events, \
         {} CPUs, load average {load} at start",
        config.writers,
        AGGREGATE_EVENTS,
        config.rebuild_events,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let mut measurements = Vec::new();
    let mut notes = Vec::new();
    for engine in config.engines.clone() {
        println!("{}:", engine.name());
        bench_engine(engine, &config, &mut measurements, &mut notes).await?;
    }
    println!();
    print!("{}", table(&measurements, &notes));
    Ok(())
}
