//! The monthly distribution, computed from the raw event log: one streaming fold
//! ([`MonthFold`]) shared by the close (`close`, reading the live store) and the auditor's
//! replay (`replay_export`, reading a file from `aiforge events export`; `replay_live`). Nothing
//! here reads a view, so a replay needs only the events.
//!
//! The fold keeps per-model and per-month totals, never the events: its memory grows with the
//! number of models, groups and months, not with the number of calls. The membership rule and
//! the distribution itself live in `aiforge_domain::revenue_book`.
//!
//! The input digest is SHA-256 over each event the fold used, in log order, as
//! `tx \n position \n aggregate_type \n aggregate_id \n event_type \n payload \n`: the calls and
//! payments counted, and the ownership facts read (models uploaded, revenue splits, groups
//! created, ownership transfers) up to `through`. Changing any byte of those events' payloads
//! changes the digest, so a replay of a tampered log differs from the recorded close.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use aiforge_commands::clock::Clock;
use aiforge_commands::{
    CommandError, CommandMeta, Database, Executor, LogPosition, Outcome, RecordedEvent,
};
use aiforge_domain::group::GroupEvent;
use aiforge_domain::ledger::AccountKind;
use aiforge_domain::model::{ModelEvent, ModelOwner, RevenueSplit};
use aiforge_domain::payment::PaymentEvent;
use aiforge_domain::revenue_book::{
    counted_by, distribute, ClosedMonth, LogPoint, Month, MonthDistribution, MonthTotals,
    RevenueBook, RevenueBookCommand, RevenueBookError, RevenueBookEvent, MONTH_CLOSED,
    REVENUE_BOOK_ID,
};
use aiforge_domain::usage::{API_CALL_AGGREGATE, API_CALL_METERED};
use aiforge_domain::Usdt;
use cqrs_es::Aggregate;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{decode_payload, ProjectionError};

/// Events read per round trip while folding the live log.
const FOLD_BATCH_EVENTS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Store(#[from] aiforge_commands::StoreError),
    #[error(transparent)]
    Rejected(#[from] RevenueBookError),
    #[error("{0}")]
    Command(String),
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line} of the export is not an exported event: {reason}")]
    BadLine { line: u64, reason: String },
}

impl From<CommandError<RevenueBookError>> for DistributionError {
    fn from(e: CommandError<RevenueBookError>) -> Self {
        match e {
            CommandError::Rejected(rejected) => DistributionError::Rejected(rejected),
            other => DistributionError::Command(other.to_string()),
        }
    }
}

/// The few fields of a metered call the fold needs (parsed without the rest).
#[derive(Deserialize)]
struct MeteredCall<'a> {
    #[serde(borrow)]
    model_id: std::borrow::Cow<'a, str>,
    prompt_tokens: u32,
    completion_tokens: u32,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

#[derive(Deserialize)]
enum MeteredEvent<'a> {
    #[serde(borrow)]
    ApiCallMetered(MeteredCall<'a>),
}

fn point(event: &RecordedEvent) -> LogPoint {
    LogPoint {
        tx: event.tx,
        position: event.position,
    }
}

/// The streaming fold of one month (module docs).
pub struct MonthFold {
    month: Month,
    through: LogPoint,
    prior: Vec<ClosedMonth>,
    totals: MonthTotals,
    owners: HashMap<String, ModelOwner>,
    splits: HashMap<String, Vec<RevenueSplit>>,
    group_owners: HashMap<String, String>,
    hasher: Sha256,
}

impl MonthFold {
    pub fn new(month: Month, through: LogPoint, prior: Vec<ClosedMonth>) -> Self {
        Self {
            month,
            through,
            prior,
            totals: MonthTotals::default(),
            owners: HashMap::new(),
            splits: HashMap::new(),
            group_owners: HashMap::new(),
            hasher: Sha256::new(),
        }
    }

    fn hash(&mut self, event: &RecordedEvent) {
        for part in [
            event.tx.to_string().as_bytes(),
            event.position.to_string().as_bytes(),
            event.aggregate_type.as_bytes(),
            event.aggregate_id.as_bytes(),
            event.event_type.as_bytes(),
            event.payload.as_bytes(),
        ] {
            self.hasher.update(part);
            self.hasher.update(b"\n");
        }
    }

    /// Whether a fact timed `at` at this event belongs to this close.
    fn counts(&self, at: OffsetDateTime, event: &RecordedEvent) -> bool {
        at < self.month.end() && !counted_by(&self.prior, at, point(event))
    }

    /// Feeds the next event in log order. Returns `false` (and uses nothing) once past
    /// `through`: the caller stops there.
    pub fn feed(&mut self, event: &RecordedEvent) -> Result<bool, ProjectionError> {
        if point(event) > self.through {
            return Ok(false);
        }
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            (API_CALL_AGGREGATE, API_CALL_METERED) => {
                let MeteredEvent::ApiCallMetered(call) = serde_json::from_str(&event.payload)
                    .map_err(|e| ProjectionError::BadEvent {
                        position: event.position,
                        event_type: event.event_type.clone(),
                        reason: e.to_string(),
                    })?;
                if !self.counts(call.at, event) {
                    return Ok(true);
                }
                let tokens = u64::from(call.prompt_tokens) + u64::from(call.completion_tokens);
                let by_month = match self.totals.tokens.get_mut(call.model_id.as_ref()) {
                    Some(by_month) => by_month,
                    None => self
                        .totals
                        .tokens
                        .entry(call.model_id.to_string())
                        .or_default(),
                };
                *by_month.entry(Month::of(call.at)).or_default() += tokens;
                match self.totals.requests.get_mut(call.model_id.as_ref()) {
                    Some(requests) => *requests += 1,
                    None => {
                        self.totals.requests.insert(call.model_id.to_string(), 1);
                    }
                }
                self.totals.usage_events += 1;
                self.hash(event);
            }
            (aggregate, "PaymentConfirmed")
                if aggregate == aiforge_domain::payment::Payment::TYPE =>
            {
                let PaymentEvent::PaymentConfirmed {
                    postings,
                    confirmed_at,
                    fee_schedule_version,
                    ..
                } = decode_payload::<PaymentEvent>(event)?
                else {
                    return Ok(true);
                };
                if !self.counts(confirmed_at, event) {
                    return Ok(true);
                }
                let mut used = false;
                for posting in postings {
                    match posting.account.kind {
                        AccountKind::SubscriptionPool => {
                            let month = posting.account.key.parse::<Month>().map_err(|reason| {
                                ProjectionError::BadEvent {
                                    position: event.position,
                                    event_type: event.event_type.clone(),
                                    reason,
                                }
                            })?;
                            add(
                                self.totals.pool.entry(month).or_insert(Usdt::ZERO),
                                posting.amount,
                                event,
                            )?;
                            self.totals.fee_schedule_versions.push(fee_schedule_version);
                            used = true;
                        }
                        AccountKind::GroupRevenue => {
                            let slot = self
                                .totals
                                .group_api
                                .entry(posting.account.key.clone())
                                .or_default()
                                .entry(Month::of(confirmed_at))
                                .or_insert(Usdt::ZERO);
                            add(slot, posting.amount, event)?;
                            used = true;
                        }
                        _ => {}
                    }
                }
                if used {
                    self.totals.payments += 1;
                    self.totals.fee_schedule_versions.sort_unstable();
                    self.totals.fee_schedule_versions.dedup();
                    self.hash(event);
                }
            }
            ("model", "ModelUploaded" | "ModelRevenueSplitSet") => {
                match decode_payload::<ModelEvent>(event)? {
                    ModelEvent::ModelUploaded {
                        model_id, owner, ..
                    } => {
                        self.owners.insert(model_id, owner);
                    }
                    ModelEvent::ModelRevenueSplitSet {
                        model_id, split, ..
                    } => self.splits.entry(model_id).or_default().push(split),
                    _ => return Ok(true),
                }
                self.hash(event);
            }
            ("group", "GroupCreated" | "OwnershipTransferred") => {
                match decode_payload::<GroupEvent>(event)? {
                    GroupEvent::GroupCreated { owner_id, .. } => {
                        self.group_owners
                            .insert(event.aggregate_id.clone(), owner_id);
                    }
                    GroupEvent::OwnershipTransferred { to, .. } => {
                        self.group_owners.insert(event.aggregate_id.clone(), to);
                    }
                    _ => return Ok(true),
                }
                self.hash(event);
            }
            _ => {}
        }
        Ok(true)
    }

    /// The month's distribution, with its digests.
    pub fn finish(mut self) -> Result<MonthDistribution, RevenueBookError> {
        let models: Vec<String> = self
            .totals
            .tokens
            .keys()
            .chain(self.totals.group_api.keys())
            .cloned()
            .collect();
        for model in models {
            let Some(owner) = self.owners.get(&model) else {
                continue;
            };
            if let ModelOwner::Group(group) = owner {
                if let Some(split) = self.splits.get(&model).and_then(|splits| {
                    splits
                        .iter()
                        .rev()
                        .find(|s| s.effective_from <= self.month.start())
                }) {
                    self.totals.splits.insert(model.clone(), split.clone());
                }
                if let Some(group_owner) = self.group_owners.get(group) {
                    self.totals
                        .group_owners
                        .insert(group.clone(), group_owner.clone());
                }
            }
            self.totals.owners.insert(model, owner.clone());
        }
        let mut distribution = distribute(self.month, self.through, self.prior, &self.totals)?;
        distribution.input_digest = hex::encode(self.hasher.finalize());
        let mut digest = Sha256::new();
        digest.update(distribution.input_digest.as_bytes());
        digest.update(distribution.canonical());
        distribution.digest = hex::encode(digest.finalize());
        Ok(distribution)
    }
}

fn add(slot: &mut Usdt, amount: Usdt, event: &RecordedEvent) -> Result<(), ProjectionError> {
    *slot = slot
        .checked_add(amount)
        .map_err(|e| ProjectionError::BadEvent {
            position: event.position,
            event_type: event.event_type.clone(),
            reason: e.to_string(),
        })?;
    Ok(())
}

fn to_log(point: LogPoint) -> LogPosition {
    LogPosition {
        tx: point.tx,
        position: point.position,
    }
}

/// Folds the live log from its start up to `through`.
pub async fn fold_live(
    db: &Database,
    month: Month,
    through: LogPoint,
    prior: Vec<ClosedMonth>,
) -> Result<MonthDistribution, DistributionError> {
    let mut fold = MonthFold::new(month, through, prior);
    let mut after = LogPosition::START;
    'read: loop {
        let batch = db.read_log_after(after, FOLD_BATCH_EVENTS).await?;
        let Some(last) = batch.last() else { break };
        after = last.log_position();
        for event in &batch {
            if !fold.feed(event)? {
                break 'read;
            }
        }
        if after >= to_log(through) {
            break;
        }
    }
    Ok(fold.finish()?)
}

/// The closes recorded in the live store, oldest first.
pub async fn recorded_closes(
    db: &Database,
) -> Result<Vec<(LogPoint, MonthDistribution)>, DistributionError> {
    let events = db
        .aggregate_events(RevenueBook::TYPE, REVENUE_BOOK_ID)
        .await?;
    events
        .iter()
        .map(|event| {
            let RevenueBookEvent::MonthClosed { distribution, .. } = decode_payload(event)?;
            Ok((point(event), distribution))
        })
        .collect()
}

pub struct Closed {
    pub outcome: Outcome,
    pub distribution: MonthDistribution,
}

/// Closes `month`: checks it may close, folds the live log up to its current head, records
/// `MonthClosed`. A concurrent close of the same month loses on the aggregate's version and is
/// refused as already closed.
pub async fn close(
    book: &Executor<RevenueBook>,
    clock: &Arc<dyn Clock>,
    month: Month,
    closed_by: &str,
    meta: &CommandMeta,
) -> Result<Closed, DistributionError> {
    let db = book.database();
    let state = book.load(REVENUE_BOOK_ID).await?;
    state.check_closable(month, clock.now())?;
    let head = db.log_head().await?;
    let through = LogPoint {
        tx: head.tx,
        position: head.position,
    };
    let started = std::time::Instant::now();
    let distribution = fold_live(db, month, through, state.prior()).await?;
    tracing::info!(%month, seconds = started.elapsed().as_secs_f64(), usage_events = distribution.usage_events, "month folded");
    let outcome = book
        .execute(
            REVENUE_BOOK_ID,
            RevenueBookCommand::CloseMonth {
                distribution: distribution.clone(),
                closed_by: closed_by.to_string(),
                at: clock.now(),
            },
            meta,
            &[],
        )
        .await?;
    // A replayed command (same idempotency key) answers with the close it recorded.
    let distribution = if outcome.replayed {
        recorded_closes(db)
            .await?
            .into_iter()
            .map(|(_, d)| d)
            .find(|d| d.month == month)
            .unwrap_or(distribution)
    } else {
        distribution
    };
    Ok(Closed {
        outcome,
        distribution,
    })
}

/// What a replay found.
#[derive(Debug)]
pub struct Replay {
    pub computed: MonthDistribution,
    /// The close recorded in the log for that month, if any.
    pub recorded: Option<MonthDistribution>,
}

impl Replay {
    /// Whether the recomputed distribution equals the recorded one, digest included.
    pub fn matches(&self) -> bool {
        self.recorded.as_ref() == Some(&self.computed)
    }
}

fn prior_of(closes: &[(LogPoint, MonthDistribution)], month: Month) -> Vec<ClosedMonth> {
    closes
        .iter()
        .filter(|(_, d)| d.month < month)
        .map(|(_, d)| ClosedMonth {
            month: d.month,
            through: d.through,
        })
        .collect()
}

/// Recomputes `month` from the live store's events (no views).
pub async fn replay_live(db: &Database, month: Month) -> Result<Replay, DistributionError> {
    let closes = recorded_closes(db).await?;
    let recorded = closes
        .iter()
        .find(|(_, d)| d.month == month)
        .map(|(_, d)| d.clone());
    let through = match &recorded {
        Some(d) => d.through,
        None => {
            let head = db.log_head().await?;
            LogPoint {
                tx: head.tx,
                position: head.position,
            }
        }
    };
    let computed = fold_live(db, month, through, prior_of(&closes, month)).await?;
    Ok(Replay { computed, recorded })
}

fn parse_line(line: &str, number: u64) -> Result<RecordedEvent, DistributionError> {
    serde_json::from_str(line).map_err(|e| DistributionError::BadLine {
        line: number,
        reason: e.to_string(),
    })
}

/// Recomputes `month` from an export (`aiforge events export`), reading the file twice: first
/// for the recorded closes (lines naming `MonthClosed`), then the fold. Memory does not grow
/// with the file.
pub fn replay_export(
    open: &dyn Fn() -> std::io::Result<Box<dyn BufRead>>,
    month: Month,
) -> Result<Replay, DistributionError> {
    let needle = format!("\"event_type\":\"{MONTH_CLOSED}\"");
    let mut closes = Vec::new();
    for (n, line) in open()?.lines().enumerate() {
        let line = line?;
        if line.contains(&needle) {
            let event = parse_line(&line, n as u64 + 1)?;
            if event.aggregate_type == RevenueBook::TYPE {
                let RevenueBookEvent::MonthClosed { distribution, .. } = decode_payload(&event)?;
                closes.push((point(&event), distribution));
            }
        }
    }
    let recorded = closes
        .iter()
        .find(|(_, d)| d.month == month)
        .map(|(_, d)| d.clone());
    let mut fold = MonthFold::new(
        month,
        recorded.as_ref().map_or(
            LogPoint {
                tx: i64::MAX,
                position: i64::MAX,
            },
            |d| d.through,
        ),
        prior_of(&closes, month),
    );
    let mut head = LogPoint::default();
    for (n, line) in open()?.lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let event = parse_line(&line, n as u64 + 1)?;
        head = point(&event);
        if !fold.feed(&event)? {
            break;
        }
    }
    if recorded.is_none() {
        // Not closed: the replay reads the whole export, as a close now would.
        fold.through = head;
    }
    let computed = fold.finish()?;
    Ok(Replay { computed, recorded })
}
