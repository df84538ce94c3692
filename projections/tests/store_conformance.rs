//! One conformance suite for the event store, run against both engines: SQLite (a temp file)
//! and PostgreSQL (a fresh database per test on the local server). Each `conformance!` test
//! below becomes `sqlite::<name>` and `postgres::<name>`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aiforge_commands::framework::CommandError;
use aiforge_commands::store::repository::AiforgeRepository;
use aiforge_commands::store::{Claim, Engine};
use aiforge_commands::testing::tally::Tally;
use aiforge_commands::testing::TestDatabase;
use aiforge_commands::{CommandMeta, Database, Executor, LogPosition, ManualClock, RecordedEvent};
use aiforge_domain::account::{Account, AccountCommand, AccountId, AccountServices};
use aiforge_projections::users::UsersProjection;
use aiforge_projections::{view_digest, Projection, ProjectionError, Projector, ViewTx};
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use time::macros::datetime;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(datetime!(2026-11-21 10:00 UTC)))
}

fn tallies(db: &Database) -> Executor<Tally> {
    Executor::new(db.clone(), clock(), ())
}

fn accounts(db: &Database) -> Executor<Account> {
    Executor::new(db.clone(), clock(), AccountServices)
}

fn meta(id: &str, hash: &str) -> CommandMeta {
    CommandMeta {
        command_id: id.into(),
        request_hash: hash.into(),
        actor: None,
        request_id: None,
    }
}

fn register(n: usize) -> (AccountId, AccountCommand) {
    (
        AccountId(format!("user-{n:06}")),
        AccountCommand::Register {
            email: format!("user{n}@example.com"),
            username: format!("user{n}"),
            // A fixed string: these tests exercise the store, not argon2.
            password_hash: "$argon2id$test".into(),
            at: datetime!(2026-11-21 10:00 UTC),
        },
    )
}

async fn register_many(db: &Database, from: usize, to: usize) {
    let exec = accounts(db);
    for n in from..to {
        exec.execute(
            &format!("user-{n:06}"),
            register(n),
            &CommandMeta::generated(None),
            &[],
        )
        .await
        .unwrap();
    }
}

/// The whole log as the database returns it (not this process's kept stretch of it).
async fn read_all(db: &Database) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut at = LogPosition::START;
    loop {
        let batch = db.read_log_after_uncached(at, 97).await.unwrap();
        let Some(last) = batch.last() else { return out };
        at = last.log_position();
        out.extend(batch);
    }
}

// ---------- the suite ----------

async fn appended_events_are_read_back_in_order_with_positions_and_times(db: Database) {
    let exec = tallies(&db);
    for n in 1..=3 {
        exec.execute("t1", n, &CommandMeta::generated(None), &[])
            .await
            .unwrap();
    }
    let loaded = exec.load("t1").await.unwrap();
    assert_eq!(loaded.total, 6);
    let log = read_all(&db).await;
    assert_eq!(log.len(), 3);
    let sequences: Vec<i64> = log.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert!(log
        .windows(2)
        .all(|w| w[0].log_position() < w[1].log_position()));
    assert!(log
        .iter()
        .all(|e| e.recorded_at == "2026-11-21T10:00:00.000000Z"));
    assert_eq!(db.log_head().await.unwrap(), log[2].log_position());
    let payload: serde_json::Value = serde_json::from_str(&log[2].payload).unwrap();
    assert_eq!(payload["Added"]["total"], 6);
}

async fn two_commits_of_the_same_sequence_never_both_succeed(db: Database) {
    let repo = AiforgeRepository::new(db.clone(), clock());
    let event = |total: u64| {
        SerializedEvent::new(
            "t1".into(),
            1,
            "tally".into(),
            "Added".into(),
            "1.0".into(),
            serde_json::json!({"Added": {"n": total, "total": total}}),
            serde_json::json!({}),
        )
    };
    repo.persist::<Tally>(&[event(1)], None).await.unwrap();
    let second = repo.persist::<Tally>(&[event(2)], None).await;
    assert!(
        matches!(second, Err(PersistenceError::OptimisticLockError)),
        "{second:?}"
    );
    assert_eq!(read_all(&db).await.len(), 1);

    // Racing commands on one aggregate: each either commits on the state it saw (after retries)
    // or reports a conflict; the total equals the number of commits exactly.
    let exec = Arc::new(tallies(&db));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            exec.execute("race", 1, &CommandMeta::generated(None), &[])
                .await
        }));
    }
    let mut committed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => committed += 1,
            Err(CommandError::Conflict) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(committed >= 1);
    assert_eq!(exec.load("race").await.unwrap().total, committed);
    let sequences: Vec<i64> = read_all(&db)
        .await
        .into_iter()
        .filter(|e| e.aggregate_id == "race")
        .map(|e| e.sequence)
        .collect();
    assert_eq!(sequences, (1..=committed as i64).collect::<Vec<_>>());
}

async fn a_retried_command_id_returns_the_first_outcome_and_appends_nothing(db: Database) {
    let exec = tallies(&db);
    let first = exec
        .execute("t1", 5, &meta("key-1", "h1"), &[])
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = exec
        .execute("t1", 5, &meta("key-1", "h1"), &[])
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.aggregate_id, first.aggregate_id);
    assert_eq!(again.last, first.last);
    assert_eq!(read_all(&db).await.len(), 1);
    assert_eq!(exec.load("t1").await.unwrap().total, 5);
}

async fn a_reused_command_id_with_another_request_is_refused(db: Database) {
    let exec = tallies(&db);
    exec.execute("t1", 5, &meta("key-1", "h1"), &[])
        .await
        .unwrap();
    let reused = exec.execute("t2", 7, &meta("key-1", "h2"), &[]).await;
    assert!(
        matches!(reused, Err(CommandError::IdempotencyKeyReused)),
        "{reused:?}"
    );
    assert_eq!(read_all(&db).await.len(), 1);
}

async fn concurrent_twins_with_one_command_id_append_once(db: Database) {
    // Twins that would create different aggregates (as a retried registration does, with a new
    // id each time) must still collapse into one.
    let exec = Arc::new(tallies(&db));
    let mut tasks = Vec::new();
    for twin in 0..8 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            exec.execute(
                &format!("twin-{twin}"),
                1,
                &meta("same-key", "same-hash"),
                &[],
            )
            .await
            .unwrap()
        }));
    }
    let mut ids = BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().aggregate_id);
    }
    assert_eq!(
        ids.len(),
        1,
        "all twins answer with the first outcome: {ids:?}"
    );
    assert_eq!(read_all(&db).await.len(), 1);
}

async fn a_claimed_key_cannot_be_claimed_again_even_by_racing_commands(db: Database) {
    let exec = Arc::new(accounts(&db));
    let mut tasks = Vec::new();
    for n in 0..6 {
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            let claim = Claim {
                namespace: "email".into(),
                key: "same@example.com".into(),
            };
            exec.execute(
                &format!("user-{n:06}"),
                register(n),
                &CommandMeta::generated(None),
                &[claim],
            )
            .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(CommandError::Taken { namespace, key }) => {
                assert_eq!(
                    (namespace.as_str(), key.as_str()),
                    ("email", "same@example.com")
                );
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    // Only the winner's two events exist, and the claim names it.
    let log = read_all(&db).await;
    assert_eq!(log.len(), 2);
    let owner = db.claim_owner("email", "same@example.com").await.unwrap();
    assert_eq!(owner.as_deref(), Some(log[0].aggregate_id.as_str()));
}

async fn concurrent_writers_are_read_exactly_once_in_global_order(db: Database) {
    const WRITERS: usize = 16;
    const APPENDS: usize = 25;
    let exec = Arc::new(tallies(&db));
    let done = Arc::new(AtomicUsize::new(0));
    // A reader that follows the log while the writers run, like a projector does.
    let reader = {
        let db = db.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut at = LogPosition::START;
            loop {
                let finished = done.load(Ordering::SeqCst) == WRITERS;
                let batch = db.read_log_after(at, 50).await.unwrap();
                if let Some(last) = batch.last() {
                    at = last.log_position();
                    seen.extend(batch);
                } else if finished {
                    return seen;
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let exec = exec.clone();
        let done = done.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..APPENDS {
                exec.execute(&format!("w{w}"), 1, &CommandMeta::generated(None), &[])
                    .await
                    .unwrap();
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    let unique: BTreeSet<i64> = positions.iter().copied().collect();
    assert_eq!(positions.len(), WRITERS * APPENDS, "every event seen");
    assert_eq!(unique.len(), positions.len(), "no event seen twice");
    let stored: BTreeSet<i64> = read_all(&db).await.iter().map(|e| e.position).collect();
    assert_eq!(unique, stored);
    // The live reader's order is the log's order, and each aggregate's events are in sequence.
    let replay: Vec<i64> = read_all(&db).await.iter().map(|e| e.position).collect();
    assert_eq!(positions, replay);
    let mut last_seq: HashMap<String, i64> = HashMap::new();
    for event in &seen {
        let prev = last_seq
            .insert(event.aggregate_id.clone(), event.sequence)
            .unwrap_or(0);
        assert_eq!(event.sequence, prev + 1);
    }
}

/// A projection that fails at one chosen event, to kill a projector mid-batch.
struct FailingAt {
    inner: UsersProjection,
    fail_at: i64,
}

#[async_trait::async_trait]
impl Projection for FailingAt {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn tables(&self) -> &'static [aiforge_projections::ViewTable] {
        self.inner.tables()
    }
    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.position == self.fail_at {
            return Err(ProjectionError::Timeout);
        }
        self.inner.apply(tx, event).await
    }
}

async fn users_count(db: &Database) -> i64 {
    aiforge_projections::users::page(db, 0, 1).await.unwrap().1
}

async fn a_projector_killed_mid_batch_resumes_without_loss_or_duplicates(db: Database) {
    register_many(&db, 0, 1200).await; // 2400 events: more than two batches
    let log = read_all(&db).await;
    let crash_at = log[1500].position; // inside the second batch
    let dying = Projector::new(db.clone(), vec![]);
    let failing = FailingAt {
        inner: UsersProjection,
        fail_at: crash_at,
    };
    assert!(dying.step(&failing).await.unwrap().is_some()); // first batch commits
    assert!(dying.step(&failing).await.is_err()); // second batch dies: rolled back
    let after_crash = db.load_checkpoint("projection:users").await.unwrap();
    assert_eq!(
        after_crash,
        log[999].log_position(),
        "checkpoint = last committed batch"
    );
    assert_eq!(
        users_count(&db).await,
        500,
        "view holds exactly the committed batch"
    );

    // A new process resumes from the checkpoint.
    let restarted = Projector::new(db.clone(), vec![Arc::new(UsersProjection)]);
    restarted.catch_up(&UsersProjection).await.unwrap();
    assert_eq!(users_count(&db).await, 1200);
    assert_eq!(
        db.load_checkpoint("projection:users").await.unwrap(),
        log.last().unwrap().log_position()
    );
}

async fn a_rebuilt_view_equals_the_live_view_byte_for_byte(db: Database) {
    let projector = Projector::new(db.clone(), vec![Arc::new(UsersProjection)]);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let live = {
        let projector = projector.clone();
        tokio::spawn(async move { projector.run(rx).await })
    };
    register_many(&db, 0, 300).await;
    let head = db.log_head().await.unwrap();
    projector
        .wait_for(head, Duration::from_secs(30))
        .await
        .unwrap();
    tx.send(true).unwrap();
    live.await.unwrap();
    let table = UsersProjection.tables()[0];
    let live_digest = view_digest(&db, &table).await.unwrap();
    assert_eq!(users_count(&db).await, 300);

    projector.rebuild(&UsersProjection).await.unwrap();
    assert_eq!(view_digest(&db, &table).await.unwrap(), live_digest);

    // The digest is sensitive: one changed byte changes it.
    let tamper = "UPDATE users_view SET username = 'userX' WHERE user_id = 'user-000007'";
    match db.engine() {
        Engine::Sqlite(pool) => sqlx::query(tamper).execute(pool).await.map(|_| ()),
        Engine::Postgres(pool) => sqlx::query(tamper).execute(pool).await.map(|_| ()),
    }
    .unwrap();
    assert_ne!(view_digest(&db, &table).await.unwrap(), live_digest);
}

async fn waiting_for_projections_returns_once_the_position_is_applied(db: Database) {
    let projector = Projector::new(db.clone(), vec![Arc::new(UsersProjection)]);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let running = projector.clone();
    tokio::spawn(async move { running.run(rx).await });
    let exec = accounts(&db);
    let outcome = exec
        .execute(
            "user-000001",
            register(1),
            &CommandMeta::generated(None),
            &[],
        )
        .await
        .unwrap();
    projector
        .wait_for(outcome.last.unwrap(), Duration::from_secs(10))
        .await
        .unwrap();
    let row = aiforge_projections::users::find(&db, "user-000001")
        .await
        .unwrap();
    assert_eq!(row.unwrap().email.as_deref(), Some("user1@example.com"));
}

fn metered(n: usize, subscription: &str) -> aiforge_domain::usage::ApiCallMetered {
    aiforge_domain::usage::ApiCallMetered {
        request_id: format!("chatcmpl-{n:04}"),
        subscription_id: subscription.into(),
        consumer: "consumer".into(),
        service_id: "service".into(),
        model_id: "model".into(),
        node_id: "node".into(),
        prompt_tokens: 10 + n as u32,
        completion_tokens: n as u32,
        usage_exact: true,
        cost: aiforge_domain::Usdt::from_micros(n as i64).unwrap(),
        pricing_version: 1,
        streamed: n.is_multiple_of(2),
        latency_ms: 5,
        outcome: aiforge_domain::usage::CallOutcome::Completed,
        at: datetime!(2026-11-21 10:00 UTC),
        // Plan calls: the month's fold below counts them (pool rule 2).
        entitlement: aiforge_domain::usage::CallEntitlement::Plan {
            plan: aiforge_domain::subscription::PlanId::Free,
            user_id: "consumer".into(),
        },
    }
}

/// Metering's write path: concurrent calls are group-committed, each exactly once (a retried
/// request id appends nothing), in the global log in order, and projected into the usage view.
async fn metered_calls_are_group_committed_once_and_projected(db: Database) {
    use aiforge_commands::metering::UsageRecorder;
    use aiforge_commands::store::FreshEvent;
    let recorder = UsageRecorder::start(db.clone(), clock());
    let calls: Vec<_> = (1..=200)
        .map(|n| {
            let recorder = recorder.clone();
            tokio::spawn(async move { recorder.record(metered(n, "sub-a")).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // The same request again (a retried batch): nothing new.
    let again = FreshEvent {
        aggregate_id: "chatcmpl-0001".into(),
        event_type: aiforge_domain::usage::API_CALL_METERED,
        payload: serde_json::to_value(aiforge_domain::usage::ApiCallEvent::ApiCallMetered(
            metered(1, "sub-a"),
        ))
        .unwrap(),
    };
    let appended = db
        .append_fresh(
            aiforge_domain::usage::API_CALL_AGGREGATE,
            &[again],
            datetime!(2026-11-21 10:00 UTC),
        )
        .await
        .unwrap();
    assert_eq!(appended, 0);
    let events = read_all(&db).await;
    assert_eq!(events.len(), 200);
    let mut ids: Vec<_> = events.iter().map(|e| e.aggregate_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert!(events
        .windows(2)
        .all(|w| w[0].log_position() < w[1].log_position()));

    let projector = Projector::new(db.clone(), aiforge_projections::all());
    projector
        .catch_up(&aiforge_projections::usage::UsageProjection)
        .await
        .unwrap();
    let totals = aiforge_projections::usage::subscription_usage(&db, "sub-a")
        .await
        .unwrap();
    assert_eq!(totals.requests, 200);
    assert_eq!(totals.prompt_tokens, (1..=200).map(|n| 10 + n).sum::<i64>());
    assert_eq!(totals.completion_tokens, (1..=200).sum::<i64>());
    assert_eq!(totals.cost_micros, (1..=200).sum::<i64>());
}

/// A projection moves past events it does not project (calls' usage events, for the users
/// projection) without a view transaction: its stored checkpoint stays, yet waiting for those
/// positions returns and its status is caught up. The next event it projects is applied and
/// stores the checkpoint past all of them; a rebuild meanwhile still replays every event.
async fn a_projection_skips_events_it_does_not_project_without_writing(db: Database) {
    use aiforge_commands::metering::UsageRecorder;
    register_many(&db, 0, 3).await;
    let projector = Projector::new(db.clone(), vec![Arc::new(UsersProjection)]);
    let caught_up = projector.catch_up(&UsersProjection).await.unwrap();
    assert_eq!(caught_up, db.log_head().await.unwrap());
    assert!(UsersProjection.cares(&read_all(&db).await[0]));

    let recorder = UsageRecorder::start(db.clone(), clock());
    for n in 1..=20 {
        recorder.record(metered(n, "sub-skip")).await.unwrap();
    }
    let head = db.log_head().await.unwrap();
    assert!(head > caught_up);
    let calls = read_all(&db).await;
    assert!(!UsersProjection.cares(calls.last().unwrap()));
    assert_eq!(projector.step(&UsersProjection).await.unwrap(), Some(head));
    assert_eq!(projector.step(&UsersProjection).await.unwrap(), None);
    assert_eq!(
        db.load_checkpoint("projection:users").await.unwrap(),
        caught_up,
        "no write for events the projection does not project"
    );
    projector
        .wait_for(head, Duration::from_secs(5))
        .await
        .unwrap();
    let status = projector.status().await.unwrap();
    assert_eq!((status[0].checkpoint, status[0].behind), (head, 0));

    // A rebuild by another process resets the stored checkpoint: this one reads from there
    // again, and the views hold every user.
    let other = Projector::new(db.clone(), vec![Arc::new(UsersProjection)]);
    other.rebuild(&UsersProjection).await.unwrap();
    assert_eq!(users_count(&db).await, 3);

    // A user after the calls: applied, and the stored checkpoint moves past everything.
    register_many(&db, 3, 4).await;
    let head = db.log_head().await.unwrap();
    assert_eq!(projector.catch_up(&UsersProjection).await.unwrap(), head);
    assert_eq!(db.load_checkpoint("projection:users").await.unwrap(), head);
    assert_eq!(users_count(&db).await, 4);
}

/// A running projector writes every projection's batch in one transaction
/// (`Projector::step_together`). One projection that fails there keeps its checkpoint before the
/// failing batch and writes nothing, while the others move on; once it no longer fails, all of
/// them move together again.
async fn projections_write_together_and_a_failing_one_holds_no_other_back(db: Database) {
    use aiforge_projections::seals::{verify, SealsProjection, Verdict};
    register_many(&db, 0, 5).await;
    let fail_at = read_all(&db).await[2].position;
    let projector = Projector::new(
        db.clone(),
        vec![
            Arc::new(FailingAt {
                inner: UsersProjection,
                fail_at,
            }),
            Arc::new(SealsProjection),
        ],
    );
    assert!(projector.step_together().await.is_err());
    let head = db.log_head().await.unwrap();
    assert_eq!(db.load_checkpoint("projection:seals").await.unwrap(), head);
    assert_eq!(
        db.load_checkpoint("projection:users").await.unwrap(),
        LogPosition::START
    );
    assert_eq!(users_count(&db).await, 0);

    let projector = Projector::new(
        db.clone(),
        vec![Arc::new(UsersProjection), Arc::new(SealsProjection)],
    );
    register_many(&db, 5, 7).await;
    let stepped = projector.step_together().await.unwrap();
    assert!(stepped.moved && !stepped.more, "{stepped:?}");
    assert_eq!(
        projector.step_together().await.unwrap(),
        aiforge_projections::Stepped::default(),
        "caught up"
    );
    let head = db.log_head().await.unwrap();
    for name in ["projection:users", "projection:seals"] {
        assert_eq!(db.load_checkpoint(name).await.unwrap(), head, "{name}");
    }
    assert_eq!(users_count(&db).await, 7);
    let events = i64::try_from(read_all(&db).await.len()).unwrap();
    assert_eq!(
        verify(&db).await.unwrap(),
        Verdict::Intact { sealed: events }
    );
}

/// The month fold over the live log (the close's read): every call up to `through` counted,
/// none after it, in one streamed read, the same on both engines.
async fn the_month_fold_reads_the_live_log_through_its_point(db: Database) {
    use aiforge_commands::metering::UsageRecorder;
    use aiforge_domain::revenue_book::{LogPoint, Month};
    let recorder = UsageRecorder::start(db.clone(), clock());
    let month: Month = "2026-11".parse().unwrap();
    // The log head on PostgreSQL stops below any transaction still open anywhere in the cluster
    // (other tests run beside this one), so it may trail a committed write for a moment: read it
    // until it covers what was written (a fold over it sees `expected` calls).
    let head_covering = |expected: u64| {
        let db = db.clone();
        async move {
            for _ in 0..100 {
                let head = db.log_head().await.unwrap();
                let point = LogPoint {
                    tx: head.tx,
                    position: head.position,
                };
                let folded = aiforge_projections::distribution::fold_live(
                    &db,
                    month,
                    point,
                    vec![],
                    aiforge_domain::revenue_book::POOL_RULE_CURRENT,
                )
                .await
                .unwrap();
                if folded.usage_events == expected {
                    return (point, folded);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the log head never covered {expected} calls");
        }
    };
    for n in 1..=30 {
        recorder.record(metered(n, "sub-a")).await.unwrap();
    }
    let (through, folded) = head_covering(30).await;
    for n in 31..=40 {
        recorder.record(metered(n, "sub-a")).await.unwrap();
    }
    assert_eq!(
        folded.tokens_total,
        (1..=30u64).map(|n| 10 + 2 * n).sum::<u64>()
    );
    // The point read again, after ten more calls: the same 30, the same digest.
    let again = aiforge_projections::distribution::fold_live(
        &db,
        month,
        through,
        vec![],
        aiforge_domain::revenue_book::POOL_RULE_CURRENT,
    )
    .await
    .unwrap();
    assert_eq!(again.usage_events, 30);
    assert_eq!(again.digest, folded.digest);
    let (_, everything) = head_covering(40).await;
    assert_eq!(everything.usage_events, 40);
    assert_ne!(everything.input_digest, folded.input_digest);
}

/// The hash chain: an intact log verifies; one changed payload byte is named by position.
async fn an_altered_event_breaks_the_seal_chain_at_its_position(db: Database) {
    use aiforge_projections::seals::{verify, SealsProjection, Verdict};
    register_many(&db, 1, 6).await;
    let projector = Projector::new(db.clone(), aiforge_projections::all());
    projector.catch_up(&SealsProjection).await.unwrap();
    let events = read_all(&db).await;
    assert_eq!(
        verify(&db).await.unwrap(),
        Verdict::Intact {
            sealed: events.len() as i64
        }
    );
    let (index, third) = events
        .iter()
        .enumerate()
        .find(|(_, e)| e.payload.contains("user3@"))
        .map(|(i, e)| (i as i64 + 1, e.position))
        .unwrap();
    let sql_sqlite =
        "UPDATE events SET payload = replace(payload, 'user3', 'user8') WHERE global_position = $1";
    let sql_pg = "UPDATE events SET payload = replace(payload::text, 'user3', 'user8')::jsonb WHERE global_position = $1";
    let changed = match db.engine() {
        Engine::Sqlite(pool) => sqlx::query(sql_sqlite)
            .bind(third)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        Engine::Postgres(pool) => sqlx::query(sql_pg)
            .bind(third)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(changed, 1);
    assert_eq!(
        verify(&db).await.unwrap(),
        Verdict::Broken {
            seq: index,
            position: third
        }
    );
    // New events after the alteration are sealed on the chain as stored; the break stays.
    register_many(&db, 6, 8).await;
    projector.catch_up(&SealsProjection).await.unwrap();
    assert!(matches!(
        verify(&db).await.unwrap(),
        Verdict::Broken { seq, .. } if seq == index
    ));
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let test_db = TestDatabase::sqlite().await.unwrap();
                    super::$name(test_db.db.clone()).await;
                    test_db.cleanup().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(test_db) = TestDatabase::postgres().await else { return };
                    super::$name(test_db.db.clone()).await;
                    test_db.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    appended_events_are_read_back_in_order_with_positions_and_times,
    two_commits_of_the_same_sequence_never_both_succeed,
    a_retried_command_id_returns_the_first_outcome_and_appends_nothing,
    a_reused_command_id_with_another_request_is_refused,
    concurrent_twins_with_one_command_id_append_once,
    a_claimed_key_cannot_be_claimed_again_even_by_racing_commands,
    concurrent_writers_are_read_exactly_once_in_global_order,
    a_projector_killed_mid_batch_resumes_without_loss_or_duplicates,
    a_rebuilt_view_equals_the_live_view_byte_for_byte,
    waiting_for_projections_returns_once_the_position_is_applied,
    metered_calls_are_group_committed_once_and_projected,
    a_projection_skips_events_it_does_not_project_without_writing,
    projections_write_together_and_a_failing_one_holds_no_other_back,
    an_altered_event_breaks_the_seal_chain_at_its_position,
    the_month_fold_reads_the_live_log_through_its_point,
);

/// The log's followers in one process share one read ([`Database::read_log_after`] keeps the
/// stretch read last): whatever stretch, limit or start a follower asks for, it gets exactly what
/// the database holds, and after the stretch has let its oldest events go. Events appended by
/// another process are found by a follower's next poll (a read that found nothing is trusted
/// for `LOG_TAIL_QUIET_MILLIS` when this process appended nothing since).
async fn followers_read_the_log_the_database_holds_whoever_appended_it(db: Database, url: &str) {
    use aiforge_commands::metering::UsageRecorder;
    // The log as the database holds it, read by a statement of this test.
    async fn stored(db: &Database) -> Vec<i64> {
        aiforge_commands::on_engine!(db, |pool| sqlx::query_scalar(
            "SELECT global_position FROM events ORDER BY global_position"
        )
        .fetch_all(pool)
        .await
        .unwrap())
    }
    fn positions(events: &[RecordedEvent]) -> Vec<i64> {
        events.iter().map(|e| e.position).collect()
    }
    register_many(&db, 0, 10).await;
    // Twelve followers woken by the same append, all from the start.
    let reads =
        futures::future::join_all((0..12).map(|_| db.read_log_after(LogPosition::START, 1000)))
            .await;
    let all = stored(&db).await;
    assert!(all.len() >= 10);
    for read in reads {
        assert_eq!(positions(&read.unwrap()), all);
    }
    // From inside the stretch, with limits that end inside it and past its end.
    let events = read_all(&db).await;
    for (i, event) in events.iter().enumerate() {
        for limit in [1, 3, 20] {
            let read = db
                .read_log_after(event.log_position(), limit)
                .await
                .unwrap();
            let want: Vec<i64> = all[i + 1..].iter().take(limit as usize).copied().collect();
            assert_eq!(positions(&read), want, "after {i}, {limit} at most");
        }
    }

    // Another process appends: a follower caught up here, polling as followers do, reads its
    // events.
    let other = Database::connect(url).await.unwrap();
    assert!(db
        .read_log_after(events.last().unwrap().log_position(), 1000)
        .await
        .unwrap()
        .is_empty());
    register_many(&other, 10, 13).await;
    let head = events.last().unwrap().log_position();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let read = loop {
        let read = db.read_log_after(head, 1000).await.unwrap();
        if !read.is_empty() || std::time::Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(
            aiforge_commands::store::log::LOG_TAIL_QUIET_MILLIS / 5,
        ))
        .await;
    };
    let before = events.len();
    let all = stored(&db).await;
    assert!(all.len() > before);
    assert_eq!(positions(&read), all[before..].to_vec());
    let ids: BTreeSet<&str> = read.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["user-000010", "user-000011", "user-000012"])
    );

    // More events than the stretch keeps: read in batches, then again from the start (before
    // the stretch), every event comes back once and in order.
    let recorder = UsageRecorder::start(other.clone(), clock());
    let calls = aiforge_commands::store::log::LOG_TAIL_EVENTS_MAX + 500;
    let recorded = futures::future::join_all((1..=calls).map(|n| {
        let recorder = recorder.clone();
        async move { recorder.record(metered(n, "sub-tail")).await }
    }))
    .await;
    assert!(recorded.iter().all(Result::is_ok));
    let all = stored(&db).await;
    assert_eq!(all.len(), before + read.len() + calls);
    let mut at = LogPosition::START;
    let mut seen = Vec::new();
    while seen.len() < all.len() && std::time::Instant::now() < deadline + Duration::from_secs(10) {
        let batch = db.read_log_after(at, 1000).await.unwrap();
        let Some(last) = batch.last() else {
            // Nothing new to this process yet: the next poll.
            tokio::time::sleep(Duration::from_millis(
                aiforge_commands::store::log::LOG_TAIL_QUIET_MILLIS / 5,
            ))
            .await;
            continue;
        };
        at = last.log_position();
        seen.extend(positions(&batch));
    }
    assert_eq!(seen, all);
    assert_eq!(positions(&read_all(&db).await), all);
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_followers_read_the_log_the_database_holds_whoever_appended_it() {
    let test_db = TestDatabase::sqlite().await.unwrap();
    followers_read_the_log_the_database_holds_whoever_appended_it(test_db.db.clone(), &test_db.url)
        .await;
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_followers_read_the_log_the_database_holds_whoever_appended_it() {
    let Some(test_db) = TestDatabase::postgres().await else {
        return;
    };
    followers_read_the_log_the_database_holds_whoever_appended_it(test_db.db.clone(), &test_db.url)
        .await;
    test_db.cleanup().await;
}

/// PostgreSQL only: identity values commit out of order. A transaction that took a lower
/// position but commits after a higher one must still be read, and before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_late_committing_transaction_is_not_skipped() {
    let Some(test_db) = TestDatabase::postgres().await else {
        return;
    };
    let db = test_db.db.clone();
    let Engine::Postgres(pool) = db.engine() else {
        unreachable!()
    };
    let mut slow = pool.begin().await.unwrap();
    let slow_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, recorded_at) VALUES ('tally', 'slow', 1, 'Added', '1.0', \
         '{\"Added\":{\"n\":1,\"total\":1}}', '{}', now()) RETURNING global_position",
    )
    .fetch_one(&mut *slow)
    .await
    .unwrap();
    tallies(&db)
        .execute("fast", 1, &CommandMeta::generated(None), &[])
        .await
        .unwrap();
    let visible = read_all(&db).await;
    // While the slow transaction is open, the reader must not move past it.
    assert!(
        visible.is_empty(),
        "the reader waits behind the open transaction"
    );
    slow.commit().await.unwrap();
    let log = read_all(&db).await;
    let order: Vec<&str> = log.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(order, ["slow", "fast"]);
    assert!(log[0].position == slow_position && log[1].position > slow_position);
    test_db.cleanup().await;
}

/// SQLite: the one-writer rule makes positions commit in order; a reader sees a gapless log.
#[tokio::test]
async fn sqlite_positions_are_gapless_and_in_commit_order() {
    let test_db = TestDatabase::sqlite().await.unwrap();
    let db = test_db.db.clone();
    let exec = tallies(&db);
    for n in 0..20 {
        exec.execute(
            &format!("t{}", n % 3),
            1,
            &CommandMeta::generated(None),
            &[],
        )
        .await
        .unwrap();
    }
    let positions: Vec<i64> = read_all(&db).await.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=20).collect::<Vec<_>>());
    test_db.cleanup().await;
}

/// PostgreSQL only: the read bound is per database. A write transaction left open in another
/// database of the same server (a bulk load, a migration) must not stall this log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_an_open_write_transaction_in_another_database_does_not_stall_the_log() {
    let Some(ours) = TestDatabase::postgres().await else {
        return;
    };
    let Some(theirs) = TestDatabase::postgres().await else {
        return;
    };
    let Engine::Postgres(their_pool) = theirs.db.engine() else {
        unreachable!()
    };
    let mut open = their_pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, recorded_at) VALUES ('tally', 'elsewhere', 1, 'Added', '1.0', \
         '{\"Added\":{\"n\":1,\"total\":1}}', '{}', now())",
    )
    .execute(&mut *open)
    .await
    .unwrap();
    tallies(&ours.db)
        .execute("here", 1, &CommandMeta::generated(None), &[])
        .await
        .unwrap();
    let log = read_all(&ours.db).await;
    assert_eq!(
        log.len(),
        1,
        "our event is readable while the other database's transaction is open"
    );
    open.rollback().await.unwrap();
    ours.cleanup().await;
    theirs.cleanup().await;
}

/// PostgreSQL only: an appender that already has a transaction id (it wrote a claim first) but
/// has not inserted its event yet is still waited for, because appenders lock `events` before
/// anything else (`append_postgres`); the reader never moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_an_appender_that_claimed_before_inserting_its_event_is_not_skipped() {
    let Some(test_db) = TestDatabase::postgres().await else {
        return;
    };
    let db = test_db.db.clone();
    let Engine::Postgres(pool) = db.engine() else {
        unreachable!()
    };
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        .execute(&mut *slow)
        .await
        .unwrap();
    sqlx::query("INSERT INTO claims (namespace, key, owner_type, owner_id) VALUES ('t', 'k', 'tally', 'slow')")
        .execute(&mut *slow)
        .await
        .unwrap();
    tallies(&db)
        .execute("fast", 1, &CommandMeta::generated(None), &[])
        .await
        .unwrap();
    assert!(
        read_all(&db).await.is_empty(),
        "the reader waits for the appender in flight"
    );
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, recorded_at) VALUES ('tally', 'slow', 1, 'Added', '1.0', \
         '{\"Added\":{\"n\":1,\"total\":1}}', '{}', now())",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    slow.commit().await.unwrap();
    let order: Vec<String> = read_all(&db)
        .await
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(order, ["slow", "fast"]);
    test_db.cleanup().await;
}
