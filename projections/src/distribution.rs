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
//! payments counted, the job settlements and other payments whose fee versions the close names
//! (closes that name every version, `fee_schedule_versions_used`), and the ownership facts read
//! (models uploaded, revenue splits, groups created, ownership transfers) up to `through`; under
//! close rule 3 also the fee versions adopted and the nodes registered (what the inference pay
//! is computed from) and every call a registered node was paid for. Changing any byte of those
//! events' payloads
//! changes the digest, so a replay of a tampered log differs from the recorded close.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::Arc;

use aiforge_commands::clock::Clock;
use aiforge_commands::{
    CommandError, CommandMeta, Database, Executor, LogPosition, Outcome, RecordedEvent,
};
use aiforge_domain::fee_book::FeeBookEvent;
use aiforge_domain::fees::{FeeSchedule, FeeTable, PaymentType};
use aiforge_domain::group::GroupEvent;
use aiforge_domain::job::{Job, JobEvent};
use aiforge_domain::ledger::{AccountKind, Posting};
use aiforge_domain::model::{ModelEvent, ModelOwner, RevenueSplit};
use aiforge_domain::node::NodeEvent;
use aiforge_domain::payment::PaymentEvent;
use aiforge_domain::revenue_book::{
    counted_by, distribute, ClosedMonth, LogPoint, Month, MonthDistribution, MonthTotals,
    RevenueBook, RevenueBookCommand, RevenueBookError, RevenueBookEvent, MONTH_CLOSED,
    POOL_RULE_COMPUTE_PAY, POOL_RULE_CURRENT, POOL_RULE_PLAN_TOKENS, REVENUE_BOOK_ID,
};
use aiforge_domain::usage::{API_CALL_AGGREGATE, API_CALL_METERED};
use aiforge_domain::Usdt;
use cqrs_es::Aggregate;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{decode_payload, ProjectionError};

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
    #[serde(borrow)]
    node_id: std::borrow::Cow<'a, str>,
    prompt_tokens: u32,
    completion_tokens: u32,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    /// Absent on calls metered before plans: an API subscription's.
    #[serde(default, borrow)]
    entitlement: Option<MeteredEntitlement<'a>>,
}

#[derive(Deserialize)]
struct MeteredEntitlement<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
enum MeteredEvent<'a> {
    #[serde(borrow)]
    ApiCallMetered(MeteredCall<'a>),
}

const JOB_AGGREGATE: &str = <Job as Aggregate>::TYPE;

fn point(event: &RecordedEvent) -> LogPoint {
    LogPoint {
        tx: event.tx,
        position: event.position,
    }
}

/// Which fee schedule the fold splits the month's payments by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeeBasis {
    /// As they were split: the postings each `PaymentConfirmed` recorded under the version in
    /// force at its confirmation. Every close and every audit replay.
    Recorded,
    /// As `schedule` would have split them: each payment's amount split again by it, into the
    /// same accounts; each job settlement's earned part (its node's net and platform fee)
    /// split again by its job rate, as a settlement under it would; and (close rule 3) each
    /// registered node's calls priced at its compute rate (the what-if of a proposal). Nothing
    /// else of the fold changes.
    Proposed(FeeSchedule),
}

/// What the month's payments paid beside the distribution: the platform's fees by payment
/// type and each creator's direct revenue (API subscriptions and sales of their own models),
/// under the fold's `FeeBasis`. Not part of the distribution nor of its digests (a close
/// records only what it distributes), so adding it changed no recorded close.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthFees {
    pub platform_fees: BTreeMap<PaymentType, Usdt>,
    pub creators: BTreeMap<String, Usdt>,
    /// Each node's net of the month's job settlements (`node_payable:<node>`).
    pub nodes: BTreeMap<String, Usdt>,
}

/// The streaming fold of one month (module docs).
pub struct MonthFold {
    month: Month,
    basis: FeeBasis,
    fees: MonthFees,
    /// Which calls' tokens split the pool (`revenue_book::POOL_RULE_*`).
    pool_rule: u32,
    through: LogPoint,
    prior: Vec<ClosedMonth>,
    totals: MonthTotals,
    owners: HashMap<String, ModelOwner>,
    splits: HashMap<String, Vec<RevenueSplit>>,
    group_owners: HashMap<String, String>,
    /// Rule 3: the fee versions adopted so far (a call's compute rate is the one in force at
    /// its `at`; an adoption is refused once its date has come, so it precedes every call it
    /// prices in the log) and the registered nodes (registration precedes serving).
    fee_versions: Vec<FeeSchedule>,
    fee_table: FeeTable,
    registered_nodes: std::collections::HashSet<String>,
    hasher: Sha256,
}

impl MonthFold {
    /// A fold under `pool_rule` (a close: `POOL_RULE_CURRENT`; a replay: the recorded close's),
    /// with payments as recorded.
    pub fn new(month: Month, through: LogPoint, prior: Vec<ClosedMonth>, pool_rule: u32) -> Self {
        Self::with_basis(month, through, prior, pool_rule, FeeBasis::Recorded)
    }

    /// A fold whose payments are split by `basis`.
    pub fn with_basis(
        month: Month,
        through: LogPoint,
        prior: Vec<ClosedMonth>,
        pool_rule: u32,
        basis: FeeBasis,
    ) -> Self {
        Self {
            month,
            basis,
            fees: MonthFees::default(),
            pool_rule,
            through,
            prior,
            totals: MonthTotals {
                pool_rule_version: pool_rule,
                ..MonthTotals::default()
            },
            owners: HashMap::new(),
            splits: HashMap::new(),
            group_owners: HashMap::new(),
            fee_versions: Vec::new(),
            fee_table: FeeTable::genesis(),
            registered_nodes: std::collections::HashSet::new(),
            hasher: Sha256::new(),
        }
    }

    /// Whether the close names every fee version it used (`fee_schedule_versions_used`): every
    /// close from now on does; a replay follows the recorded close, so one made before replays
    /// without it (and without hashing the events read only for it).
    pub fn naming_every_fee_version(mut self, named: bool) -> Self {
        self.totals.fee_schedule_versions_used = named.then(Vec::new);
        self
    }

    /// Notes a fee version the month used, when the close names them; returns whether it did
    /// (then the event is an input of the close).
    fn used_version(&mut self, version: u32) -> bool {
        match &mut self.totals.fee_schedule_versions_used {
            Some(versions) => {
                if !versions.contains(&version) {
                    versions.push(version);
                }
                true
            }
            None => false,
        }
    }

    fn hash(&mut self, event: &RecordedEvent) {
        use std::io::Write;
        // The two numbers as decimal text without an allocation per event.
        let mut numbers = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut numbers[..]);
        let _ = write!(cursor, "{}\n{}\n", event.tx, event.position);
        let written = cursor.position() as usize;
        self.hasher.update(&numbers[..written]);
        for part in [
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

    /// Rule 3: counts a call's tokens for its node when the node is registered and the fee
    /// version in force at `at` has a compute rate. Whether it did.
    fn serve_for_pay(&mut self, node_id: &str, at: OffsetDateTime, tokens: u64) -> bool {
        if self.pool_rule < POOL_RULE_COMPUTE_PAY || !self.registered_nodes.contains(node_id) {
            return false;
        }
        // A what-if prices every call at the proposal's rate, as it splits every payment.
        let schedule = match &self.basis {
            FeeBasis::Recorded => self.fee_table.at(at),
            FeeBasis::Proposed(schedule) => schedule,
        };
        let Some(rate) = schedule.rates.compute_per_1k_tokens else {
            return false;
        };
        let version = schedule.version;
        self.totals.compute_rates.insert(version, rate);
        let served = self
            .totals
            .compute_served
            .entry(node_id.to_string())
            .or_default()
            .entry(version)
            .or_default();
        served.tokens = served.tokens.saturating_add(tokens);
        served.calls += 1;
        true
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
                let paid_node = self.serve_for_pay(&call.node_id, call.at, tokens);
                // Rule 2: only calls under a platform plan draw on the pool.
                let plan_call = call.entitlement.as_ref().is_some_and(|e| e.kind == "plan");
                if self.pool_rule >= POOL_RULE_PLAN_TOKENS && !plan_call {
                    if paid_node {
                        self.hash(event);
                    }
                    return Ok(true);
                }
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
            (aggregate, "FeeScheduleAdopted")
                if aggregate == aiforge_domain::fee_book::FeeBook::TYPE
                    && self.pool_rule >= POOL_RULE_COMPUTE_PAY =>
            {
                if let FeeBookEvent::FeeScheduleAdopted { schedule, .. } =
                    decode_payload::<FeeBookEvent>(event)?
                {
                    self.fee_versions.push(schedule);
                    self.fee_table = FeeTable::with_adopted(self.fee_versions.iter().cloned());
                    self.hash(event);
                }
            }
            (aggregate, "NodeRegistered")
                if aggregate == aiforge_domain::node::Node::TYPE
                    && self.pool_rule >= POOL_RULE_COMPUTE_PAY =>
            {
                if let NodeEvent::NodeRegistered { node_id, .. } =
                    decode_payload::<NodeEvent>(event)?
                {
                    self.registered_nodes.insert(node_id);
                    self.hash(event);
                }
            }
            (aggregate, "PaymentConfirmed")
                if aggregate == aiforge_domain::payment::Payment::TYPE =>
            {
                let PaymentEvent::PaymentConfirmed {
                    mut postings,
                    confirmed_at,
                    mut fee_schedule_version,
                    payment_type,
                    amount,
                    mut platform_fee,
                    ..
                } = decode_payload::<PaymentEvent>(event)?
                else {
                    return Ok(true);
                };
                if !self.counts(confirmed_at, event) {
                    return Ok(true);
                }
                if let FeeBasis::Proposed(schedule) = &self.basis {
                    platform_fee = resplit(schedule, payment_type, amount, &mut postings).map_err(
                        |reason| ProjectionError::BadEvent {
                            position: event.position,
                            event_type: event.event_type.clone(),
                            reason,
                        },
                    )?;
                    fee_schedule_version = schedule.version;
                }
                add(
                    self.fees
                        .platform_fees
                        .entry(payment_type)
                        .or_insert(Usdt::ZERO),
                    platform_fee,
                    event,
                )?;
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
                        AccountKind::CreatorPayable => add(
                            self.fees
                                .creators
                                .entry(posting.account.key.clone())
                                .or_insert(Usdt::ZERO),
                            posting.amount,
                            event,
                        )?,
                        _ => {}
                    }
                }
                if used {
                    self.totals.payments += 1;
                    self.totals.fee_schedule_versions.sort_unstable();
                    self.totals.fee_schedule_versions.dedup();
                }
                if self.used_version(fee_schedule_version) || used {
                    self.hash(event);
                }
            }
            (JOB_AGGREGATE, "JobCompleted" | "JobFailed" | "JobTimedOut" | "JobCancelled") => {
                let Some((_, settlement, at)) =
                    decode_payload::<JobEvent>(event)?.into_settlement()
                else {
                    return Ok(true);
                };
                if !self.counts(at, event) {
                    return Ok(true);
                }
                let bad = |reason: String| ProjectionError::BadEvent {
                    position: event.position,
                    event_type: event.event_type.clone(),
                    reason,
                };
                let node = settlement
                    .postings
                    .iter()
                    .find(|p| p.account.kind == AccountKind::NodePayable)
                    .map(|p| p.account.key.clone());
                let (mut platform_fee, mut node_net, mut version) = (
                    settlement.platform_fee,
                    settlement.node_net,
                    settlement.fee_schedule_version,
                );
                if let FeeBasis::Proposed(schedule) = &self.basis {
                    // The earned part is what the settlement split (the refund stays the
                    // creator's); `ledger::job_settlement_postings` splits it by the job rate.
                    let earned = platform_fee
                        .checked_add(node_net)
                        .map_err(|e| bad(e.to_string()))?;
                    (platform_fee, node_net) = schedule
                        .split(PaymentType::Job, earned)
                        .map_err(|e| bad(e.to_string()))?;
                    version = schedule.version;
                }
                add(
                    self.fees
                        .platform_fees
                        .entry(PaymentType::Job)
                        .or_insert(Usdt::ZERO),
                    platform_fee,
                    event,
                )?;
                if let Some(node) = node {
                    add(
                        self.fees.nodes.entry(node).or_insert(Usdt::ZERO),
                        node_net,
                        event,
                    )?;
                }
                if self.used_version(version) {
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
    pub fn finish(self) -> Result<MonthDistribution, RevenueBookError> {
        Ok(self.finish_with_fees()?.0)
    }

    /// The distribution and what the month's payments paid beside it.
    pub fn finish_with_fees(mut self) -> Result<(MonthDistribution, MonthFees), RevenueBookError> {
        let fees = std::mem::take(&mut self.fees);
        Ok((self.distribute()?, fees))
    }

    fn distribute(mut self) -> Result<MonthDistribution, RevenueBookError> {
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

/// Splits a confirmed payment again by `schedule`: the platform's fee posting and the
/// beneficiary's net posting (pool, group revenue, creator) take the new parts; the payer's
/// posting and a job's escrow (whole until the job ends) stay. Returns the new platform fee.
/// The postings stay balanced, as `ledger::payment_postings` would have made them.
fn resplit(
    schedule: &FeeSchedule,
    payment_type: PaymentType,
    amount: Usdt,
    postings: &mut [Posting],
) -> Result<Usdt, String> {
    if postings
        .iter()
        .any(|p| p.account.kind == AccountKind::JobEscrow)
    {
        return Ok(Usdt::ZERO);
    }
    let (fee, net) = schedule
        .split(payment_type, amount)
        .map_err(|e| e.to_string())?;
    for posting in postings.iter_mut() {
        match posting.account.kind {
            AccountKind::PlatformFees => posting.amount = fee,
            AccountKind::SubscriptionPool
            | AccountKind::GroupRevenue
            | AccountKind::CreatorPayable => posting.amount = net,
            _ => {}
        }
    }
    Ok(fee)
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

/// Folds the live log from its start up to `through`, naming every fee version (a close now).
pub async fn fold_live(
    db: &Database,
    month: Month,
    through: LogPoint,
    prior: Vec<ClosedMonth>,
    pool_rule: u32,
) -> Result<MonthDistribution, DistributionError> {
    fold_live_under(db, month, through, prior, pool_rule, true).await
}

/// [`fold_live`] under a recorded close's rules (`MonthFold::naming_every_fee_version`).
async fn fold_live_under(
    db: &Database,
    month: Month,
    through: LogPoint,
    prior: Vec<ClosedMonth>,
    pool_rule: u32,
    names_every_fee_version: bool,
) -> Result<MonthDistribution, DistributionError> {
    let mut fold = MonthFold::new(month, through, prior, pool_rule)
        .naming_every_fee_version(names_every_fee_version);
    db.fold_log_through(to_log(through), |event| {
        fold.feed(&event).map_err(DistributionError::from)
    })
    .await?;
    Ok(fold.finish()?)
}

/// A closed month folded twice in one pass over the log, with the same inputs as its close
/// (the same `through`, earlier closes and pool rule): as recorded, and under a proposed
/// schedule.
#[derive(Debug)]
pub struct WhatIf {
    pub month: Month,
    pub actual: (MonthDistribution, MonthFees),
    pub proposed: (MonthDistribution, MonthFees),
    /// The recorded close, which `actual.0` equals when the log is intact.
    pub recorded: MonthDistribution,
}

#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error("no month is closed yet: a what-if replays a closed month")]
    NothingClosed,
    #[error("{0} is not closed: a what-if replays a closed month")]
    NotClosed(Month),
    #[error(transparent)]
    Distribution(#[from] DistributionError),
}

/// Replays `month` (by default the last closed one) under `proposed`, beside what was paid.
/// The same fold as the close (`MonthFold`), only its `FeeBasis` differs.
pub async fn what_if(
    db: &Database,
    month: Option<Month>,
    proposed: FeeSchedule,
) -> Result<WhatIf, WhatIfError> {
    let closes = recorded_closes(db).await?;
    let recorded = match month {
        Some(month) => closes
            .iter()
            .find(|(_, d)| d.month == month)
            .ok_or(WhatIfError::NotClosed(month))?,
        None => closes.last().ok_or(WhatIfError::NothingClosed)?,
    }
    .1
    .clone();
    let month = recorded.month;
    let prior = prior_of(&closes, month);
    let fold = |basis| {
        MonthFold::with_basis(
            month,
            recorded.through,
            prior.clone(),
            recorded.pool_rule_version,
            basis,
        )
        .naming_every_fee_version(recorded.fee_schedule_versions_used.is_some())
    };
    let mut actual = fold(FeeBasis::Recorded);
    let mut proposal = fold(FeeBasis::Proposed(proposed));
    db.fold_log_through(to_log(recorded.through), |event| {
        let more = actual.feed(&event)?;
        proposal.feed(&event)?;
        Ok::<bool, DistributionError>(more)
    })
    .await?;
    Ok(WhatIf {
        month,
        actual: actual.finish_with_fees().map_err(DistributionError::from)?,
        proposed: proposal
            .finish_with_fees()
            .map_err(DistributionError::from)?,
        recorded,
    })
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
    let log_began = db.log_began().await?;
    state.check_closable(month, clock.now(), log_began)?;
    let head = db.log_head().await?;
    let through = LogPoint {
        tx: head.tx,
        position: head.position,
    };
    let started = std::time::Instant::now();
    let distribution = fold_live(db, month, through, state.prior(), POOL_RULE_CURRENT).await?;
    tracing::info!(%month, seconds = started.elapsed().as_secs_f64(), usage_events = distribution.usage_events, "month folded");
    let outcome = book
        .execute(
            REVENUE_BOOK_ID,
            RevenueBookCommand::CloseMonth {
                distribution: distribution.clone(),
                closed_by: closed_by.to_string(),
                at: clock.now(),
                log_began,
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

/// Who records a scheduled close (`closed_by` of its `MonthClosed`).
pub const SCHEDULED_CLOSER: &str = "scheduler";
/// Months one scheduled pass closes at most (a platform that was down for a year catches up
/// over a few passes, never in one unbounded loop).
pub const SCHEDULED_CLOSES_MAX: usize = 12;

/// The scheduled close: closes every month that is due at the clock's now (ended, and `settle`
/// more has passed; `RevenueBook::due`), oldest first, and returns them. Run by the holder of
/// the scheduler lease; exactly once across instances all the same, since each close's command
/// id is fixed by its month (`close:YYYY-MM`: a retry replays the first outcome) and the
/// aggregate refuses a second close of a month. A month someone else closed meanwhile (by hand,
/// or another instance) is not an error: the pass reads the book again and moves on.
pub async fn close_due(
    book: &Executor<RevenueBook>,
    clock: &Arc<dyn Clock>,
    settle: time::Duration,
) -> Result<Vec<Month>, DistributionError> {
    let db = book.database();
    let mut closed = Vec::new();
    for _ in 0..SCHEDULED_CLOSES_MAX {
        let state = book.load(REVENUE_BOOK_ID).await?;
        let Some(month) = state.due(clock.now(), settle, db.log_began().await?) else {
            break;
        };
        let id = format!("close:{month}");
        let meta = CommandMeta {
            command_id: id.clone(),
            request_hash: id,
            actor: Some(SCHEDULED_CLOSER.to_string()),
            request_id: None,
        };
        match close(book, clock, month, SCHEDULED_CLOSER, &meta).await {
            Ok(done) => {
                if !done.outcome.replayed {
                    tracing::info!(%month, digest = %done.distribution.digest, "month closed by the schedule");
                }
                closed.push(month);
            }
            Err(DistributionError::Rejected(
                RevenueBookError::AlreadyClosed { .. } | RevenueBookError::StaleInputs,
            )) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(closed)
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
    let pool_rule = recorded
        .as_ref()
        .map_or(POOL_RULE_CURRENT, |d| d.pool_rule_version);
    let names_every_fee_version = recorded
        .as_ref()
        .is_none_or(|d| d.fee_schedule_versions_used.is_some());
    let computed = fold_live_under(
        db,
        month,
        through,
        prior_of(&closes, month),
        pool_rule,
        names_every_fee_version,
    )
    .await?;
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
        recorded
            .as_ref()
            .map_or(POOL_RULE_CURRENT, |d| d.pool_rule_version),
    )
    .naming_every_fee_version(
        recorded
            .as_ref()
            .is_none_or(|d| d.fee_schedule_versions_used.is_some()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use aiforge_domain::fees::{FeeTable, PaymentType};
    use aiforge_domain::ledger::{month_key, payment_postings, Beneficiary};
    use aiforge_domain::model::{BlobRef, ModelMetadata, ModelSource};
    use aiforge_domain::revenue_book::PayoutSource;
    use aiforge_domain::usage::{ApiCallEvent, ApiCallMetered, CallEntitlement, CallOutcome};
    use aiforge_domain::wallet::Network;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn recorded(
        position: i64,
        aggregate_type: &str,
        event_type: &str,
        payload: String,
    ) -> RecordedEvent {
        RecordedEvent {
            position,
            tx: 0,
            aggregate_type: aggregate_type.into(),
            aggregate_id: format!("a{position}"),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload,
            metadata: "{}".into(),
            recorded_at: "2026-12-01T00:00:00.000000Z".into(),
        }
    }

    fn uploaded(position: i64, model: &str, owner: &str) -> RecordedEvent {
        let event = ModelEvent::ModelUploaded {
            model_id: model.into(),
            owner: ModelOwner::User(owner.into()),
            uploaded_by: owner.into(),
            metadata: ModelMetadata {
                name: model.into(),
                description: String::new(),
                tags: vec![],
            },
            blob: BlobRef {
                sha256: "00".repeat(32),
                cid: "Qm".into(),
                size_bytes: 1,
                backend: "local".into(),
            },
            source: ModelSource::Upload {
                filename: "m.gguf".into(),
            },
            uploaded_at: datetime!(2026-10-01 00:00 UTC),
        };
        recorded(
            position,
            "model",
            "ModelUploaded",
            serde_json::to_string(&event).unwrap_or_default(),
        )
    }

    /// A call under the Free plan (what the pool is split by).
    fn call(position: i64, model: &str, tokens: u32, at: OffsetDateTime) -> RecordedEvent {
        metered(
            position,
            model,
            tokens,
            at,
            CallEntitlement::Plan {
                plan: aiforge_domain::subscription::PlanId::Free,
                user_id: "c".into(),
            },
        )
    }

    /// A call under an API subscription (paid by it; not in the pool under rule 2).
    fn api_call(position: i64, model: &str, tokens: u32, at: OffsetDateTime) -> RecordedEvent {
        metered(position, model, tokens, at, CallEntitlement::Subscription)
    }

    fn metered(
        position: i64,
        model: &str,
        tokens: u32,
        at: OffsetDateTime,
        entitlement: CallEntitlement,
    ) -> RecordedEvent {
        let event = ApiCallEvent::ApiCallMetered(ApiCallMetered {
            request_id: format!("r{position}"),
            subscription_id: "s".into(),
            consumer: "c".into(),
            service_id: "svc".into(),
            model_id: model.into(),
            node_id: "local".into(),
            prompt_tokens: tokens / 2,
            completion_tokens: tokens - tokens / 2,
            usage_exact: true,
            cost: Usdt::ZERO,
            pricing_version: 1,
            streamed: false,
            latency_ms: 1,
            outcome: CallOutcome::Completed,
            at,
            entitlement,
        });
        recorded(
            position,
            API_CALL_AGGREGATE,
            API_CALL_METERED,
            serde_json::to_string(&event).unwrap_or_default(),
        )
    }

    fn pool_payment(position: i64, micros: i64, at: OffsetDateTime) -> RecordedEvent {
        pool_payment_under(&FeeTable::genesis().at(at).clone(), position, micros, at)
    }

    /// Version 1 with the platform subscription at `percent`, as version 2.
    fn subscriptions_at(percent: u32) -> FeeSchedule {
        let mut schedule = aiforge_domain::fees::genesis();
        schedule.version = 2;
        schedule
            .rates
            .platform_percent
            .insert(PaymentType::PlatformSubscription, percent);
        schedule
    }

    fn pool_payment_under(
        schedule: &FeeSchedule,
        position: i64,
        micros: i64,
        at: OffsetDateTime,
    ) -> RecordedEvent {
        payment_under(
            schedule,
            PaymentType::PlatformSubscription,
            &Beneficiary::Pool,
            position,
            micros,
            at,
        )
    }

    fn payment_under(
        schedule: &FeeSchedule,
        payment_type: PaymentType,
        beneficiary: &Beneficiary,
        position: i64,
        micros: i64,
        at: OffsetDateTime,
    ) -> RecordedEvent {
        let schedule = schedule.clone();
        let amount = Usdt::from_micros(micros).unwrap_or(Usdt::ZERO);
        let postings = payment_postings(
            &schedule,
            payment_type,
            "payer",
            amount,
            beneficiary,
            &month_key(at),
        )
        .unwrap_or_default();
        let (platform_fee, net) = match beneficiary {
            Beneficiary::JobEscrow { .. } => (Usdt::ZERO, amount),
            _ => schedule
                .split(payment_type, amount)
                .unwrap_or((Usdt::ZERO, Usdt::ZERO)),
        };
        let event = PaymentEvent::PaymentConfirmed {
            payment_id: format!("p{position}"),
            payer: "payer".into(),
            payment_type,
            reference: "subscription:payer".into(),
            network: Network::Ethereum,
            tx_hash: format!("0x{position:064x}"),
            from: "0xpayer".into(),
            amount,
            paid: amount,
            overpaid: Usdt::ZERO,
            fee_schedule_version: schedule.version,
            platform_fee,
            net,
            postings,
            block: 1,
            confirmations: 3,
            confirmed_at: at,
        };
        recorded(
            position,
            "payment",
            "PaymentConfirmed",
            serde_json::to_string(&event).unwrap_or_default(),
        )
    }

    fn fold(
        month: &str,
        through: i64,
        prior: Vec<ClosedMonth>,
        events: &[RecordedEvent],
    ) -> MonthDistribution {
        fold_by(month, through, prior, events, POOL_RULE_CURRENT)
    }

    fn fold_by(
        month: &str,
        through: i64,
        prior: Vec<ClosedMonth>,
        events: &[RecordedEvent],
        pool_rule: u32,
    ) -> MonthDistribution {
        let month: Month = month.parse().unwrap_or_else(|e: String| panic!("{e}"));
        let mut fold = MonthFold::new(
            month,
            LogPoint {
                tx: 0,
                position: through,
            },
            prior,
            pool_rule,
        );
        for event in events {
            if !fold.feed(event).unwrap_or_else(|e| panic!("{e}")) {
                break;
            }
        }
        fold.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or(Usdt::ZERO)
    }

    fn fold_with(events: &[RecordedEvent], basis: FeeBasis) -> (MonthDistribution, MonthFees) {
        let month: Month = "2026-11".parse().unwrap_or_else(|e: String| panic!("{e}"));
        let through = LogPoint {
            tx: 0,
            position: i64::MAX,
        };
        let mut fold = MonthFold::with_basis(month, through, vec![], POOL_RULE_CURRENT, basis);
        for event in events {
            fold.feed(event).unwrap_or_else(|e| panic!("{e}"));
        }
        fold.finish_with_fees().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The what-if's promise, at the fold: a month paid at 30% and folded under a 40% proposal
    /// distributes exactly what the same month paid at 40% distributes as recorded; only the
    /// digest of its inputs differs (they are other events).
    #[test]
    fn a_month_folded_under_a_proposal_equals_the_month_paid_at_its_rate() {
        let nov = datetime!(2026-11-10 00:00 UTC);
        let forty = subscriptions_at(40);
        let month = |paid_under: Option<&FeeSchedule>| {
            let payment = |position, micros| match paid_under {
                Some(schedule) => pool_payment_under(schedule, position, micros, nov),
                None => pool_payment(position, micros, nov),
            };
            vec![
                uploaded(1, "m1", "u1"),
                uploaded(2, "m2", "u2"),
                payment(3, 100_000_000),
                payment(4, 33_333_333),
                call(5, "m1", 200, nov),
                call(6, "m2", 100, nov),
            ]
        };
        let (what_if, what_if_fees) = fold_with(&month(None), FeeBasis::Proposed(forty.clone()));
        let (paid, paid_fees) = fold_with(&month(Some(&forty)), FeeBasis::Recorded);
        let without_digests = |mut d: MonthDistribution| {
            d.input_digest.clear();
            d.digest.clear();
            d
        };
        assert_eq!(without_digests(what_if.clone()), without_digests(paid));
        assert_eq!(what_if_fees, paid_fees);
        assert_eq!(what_if.pool_total, usdt("80"), "60% of $133.333333");
        assert_eq!(what_if.fee_schedule_versions, vec![2]);
        assert_eq!(
            what_if_fees.platform_fees[&PaymentType::PlatformSubscription],
            usdt("53.333333")
        );
        // As recorded, the same 30% month: $93.333333 to the pool, version 1.
        let (actual, actual_fees) = fold_with(&month(None), FeeBasis::Recorded);
        assert_eq!(actual.pool_total, usdt("93.333333"));
        assert_eq!(actual.fee_schedule_versions, vec![1]);
        assert_eq!(
            actual_fees.platform_fees[&PaymentType::PlatformSubscription],
            usdt("40")
        );
        assert_eq!(
            actual,
            fold("2026-11", i64::MAX, vec![], &month(None)),
            "the recorded basis is the close's fold"
        );
    }

    /// Version 1 with the job rate at `percent`, as `version`.
    fn jobs_at(version: u32, percent: u32) -> FeeSchedule {
        let mut schedule = aiforge_domain::fees::genesis();
        schedule.version = version;
        schedule
            .rates
            .platform_percent
            .insert(PaymentType::Job, percent);
        schedule
    }

    /// A job of `price_micros` on node `node` that timed out having earned `used` of `allowed`,
    /// settled under `schedule`; returns the event and its settlement.
    fn job_settled(
        schedule: &FeeSchedule,
        position: i64,
        node: &str,
        price_micros: i64,
        (used, allowed): (u64, u64),
        at: OffsetDateTime,
    ) -> (RecordedEvent, aiforge_domain::ledger::JobSettlement) {
        let settlement = aiforge_domain::ledger::job_settlement_postings(
            schedule,
            &format!("job{position}"),
            "creator",
            Some(node),
            Usdt::from_micros(price_micros).unwrap_or(Usdt::ZERO),
            aiforge_domain::ledger::Earned::part(used, allowed),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let event = JobEvent::JobTimedOut {
            job_id: format!("job{position}"),
            node_id: node.into(),
            attempt: 1,
            settlement: settlement.clone(),
            at,
        };
        let recorded = recorded(
            position,
            JOB_AGGREGATE,
            "JobTimedOut",
            serde_json::to_string(&event).unwrap_or_default(),
        );
        (recorded, settlement)
    }

    /// A close names the fee version of every payment and job settlement it counts, not only the
    /// pool's; a close made before it did (no `fee_schedule_versions_used`) folds and replays as
    /// it was recorded, byte for byte, with the same input digest as without those events.
    #[test]
    fn a_close_names_the_fee_version_of_every_payment_and_job_settlement_of_its_month() {
        let nov = datetime!(2026-11-10 00:00 UTC);
        let v1 = aiforge_domain::fees::genesis();
        let (v2, v3) = (subscriptions_at(40), jobs_at(3, 12));
        let (settled, _) = job_settled(&v3, 5, "n1", 20_000_000, (1, 1), nov);
        let (december, _) = job_settled(
            &v3,
            7,
            "n1",
            20_000_000,
            (1, 1),
            datetime!(2026-12-02 00:00 UTC),
        );
        let creator = Beneficiary::Creator {
            user_id: "u1".into(),
        };
        let events = vec![
            uploaded(1, "m1", "u1"),
            pool_payment_under(&v1, 2, 100_000_000, nov),
            call(3, "m1", 100, nov),
            payment_under(
                &v2,
                PaymentType::ApiSubscription,
                &creator,
                4,
                10_000_000,
                nov,
            ),
            settled,
            payment_under(
                &v2,
                PaymentType::Job,
                &Beneficiary::JobEscrow {
                    job_id: "job9".into(),
                },
                6,
                20_000_000,
                nov,
            ),
            december,
        ];
        let close = fold("2026-11", i64::MAX, vec![], &events);
        assert_eq!(close.fee_schedule_versions, vec![1], "the pool's payments");
        assert_eq!(close.fee_schedule_versions_used, Some(vec![1, 2, 3]));
        let json = serde_json::to_value(&close).unwrap_or_default();
        assert_eq!(
            json["fee_schedule_versions_used"],
            serde_json::json!([1, 2, 3])
        );
        // The settlement is an input of the close: a changed byte changes its digest.
        let mut tampered = events.clone();
        tampered[4].payload = tampered[4]
            .payload
            .replace("\"attempt\":1", "\"attempt\":2");
        assert_ne!(
            fold("2026-11", i64::MAX, vec![], &tampered).digest,
            close.digest
        );

        // A close of before: the fold under its rule leaves the field out and reads the same
        // inputs as a log without the other payments and the settlements.
        let before = |events: &[RecordedEvent]| {
            let mut fold = MonthFold::new(
                "2026-11".parse().unwrap_or_else(|e: String| panic!("{e}")),
                LogPoint {
                    tx: 0,
                    position: i64::MAX,
                },
                vec![],
                POOL_RULE_CURRENT,
            )
            .naming_every_fee_version(false);
            for event in events {
                fold.feed(event).unwrap_or_else(|e| panic!("{e}"));
            }
            fold.finish().unwrap_or_else(|e| panic!("{e}"))
        };
        let old = before(&events);
        assert_eq!(old.fee_schedule_versions_used, None);
        let old_json = serde_json::to_value(&old).unwrap_or_default();
        assert!(
            old_json.get("fee_schedule_versions_used").is_none(),
            "{old_json}"
        );
        assert_eq!(old.digest, before(&events[..3]).digest);
        assert_eq!(old.pool_total, close.pool_total);
        // Each replays as recorded.
        for recorded_close in [&close, &old] {
            let path = std::env::temp_dir().join(format!(
                "aiforge-replay-versions-{}.jsonl",
                uuid::Uuid::now_v7()
            ));
            export_with_close(&events, recorded_close, &path);
            let open = || -> std::io::Result<Box<dyn BufRead>> {
                Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
                    &path,
                )?)))
            };
            let replay = replay_export(
                &open,
                "2026-11".parse().unwrap_or_else(|e: String| panic!("{e}")),
            );
            let _ = std::fs::remove_file(&path);
            assert!(replay.unwrap_or_else(|e| panic!("{e}")).matches());
        }
    }

    /// The what-if re-splits job settlements under the proposal's job rate: the platform fee and
    /// each node's net are what a settlement of the same earned part under it computes; the
    /// refund and everything else stay.
    #[test]
    fn a_proposal_with_another_job_rate_resplits_settlements_as_a_fresh_settlement_would() {
        let nov = datetime!(2026-11-10 00:00 UTC);
        let v1 = aiforge_domain::fees::genesis();
        let proposal = jobs_at(2, 12);
        let (a, paid_a) = job_settled(&v1, 1, "n1", 20_000_000, (3, 4), nov);
        let (b, paid_b) = job_settled(&v1, 2, "n1", 33_333_333, (1, 1), nov);
        let (c, paid_c) = job_settled(&v1, 3, "n2", 7_777_777, (2, 3), nov);
        let (refunded, _) = job_settled(&v1, 4, "n2", 5_000_000, (0, 1), nov);
        let events = vec![a, b, c, refunded];
        let fresh = |position, node, price, earned| {
            job_settled(&proposal, position, node, price, earned, nov).1
        };
        let (fresh_a, fresh_b, fresh_c) = (
            fresh(1, "n1", 20_000_000, (3, 4)),
            fresh(2, "n1", 33_333_333, (1, 1)),
            fresh(3, "n2", 7_777_777, (2, 3)),
        );
        let sum = |parts: &[Usdt]| {
            parts
                .iter()
                .try_fold(Usdt::ZERO, |t, p| t.checked_add(*p))
                .unwrap_or_else(|e| panic!("{e}"))
        };

        let (_, proposed) = fold_with(&events, FeeBasis::Proposed(proposal.clone()));
        assert_eq!(
            proposed.platform_fees[&PaymentType::Job],
            sum(&[
                fresh_a.platform_fee,
                fresh_b.platform_fee,
                fresh_c.platform_fee
            ])
        );
        assert_eq!(
            proposed.nodes["n1"],
            sum(&[fresh_a.node_net, fresh_b.node_net])
        );
        assert_eq!(proposed.nodes["n2"], fresh_c.node_net);
        // $15 earned of $20 at 12%: $1.80 to the platform, $13.20 to the node (was $0.75 and
        // $14.25 at 5%).
        assert_eq!(fresh_a.platform_fee, usdt("1.8"));
        assert_eq!(fresh_a.node_net, usdt("13.2"));

        let (_, actual) = fold_with(&events, FeeBasis::Recorded);
        assert_eq!(paid_a.platform_fee, usdt("0.75"));
        assert_eq!(
            actual.platform_fees[&PaymentType::Job],
            sum(&[
                paid_a.platform_fee,
                paid_b.platform_fee,
                paid_c.platform_fee
            ])
        );
        assert_eq!(actual.nodes["n1"], sum(&[paid_a.node_net, paid_b.node_net]));
        assert_eq!(actual.nodes["n2"], paid_c.node_net);
        assert_ne!(actual.nodes["n1"], proposed.nodes["n1"]);
    }

    #[test]
    fn late_facts_of_a_closed_month_are_corrections_of_the_next_close() {
        let oct = datetime!(2026-10-20 00:00 UTC);
        let nov = datetime!(2026-11-10 00:00 UTC);
        let events = vec![
            uploaded(1, "m1", "u1"),
            uploaded(2, "m2", "u2"),
            pool_payment(3, 30_000_000, oct), // $21 to October's pool
            call(4, "m1", 100, oct),
            // October is closed through position 4; what follows is late or November's.
            call(5, "m2", 100, oct),
            pool_payment(6, 10_000_000, oct), // $7 late to October's pool
            call(7, "m1", 200, nov),
            pool_payment(8, 100_000_000, nov), // $70
            call(9, "m1", 999, datetime!(2026-12-01 00:00 UTC)), // December's
        ];
        let october = fold("2026-10", 4, vec![], &events);
        assert_eq!(october.pool_total, usdt("21"));
        assert_eq!(october.tokens_total, 100);
        assert_eq!(october.payouts.len(), 1);
        assert!(october.corrections.is_empty());

        let prior = vec![ClosedMonth {
            month: october.month,
            through: october.through,
        }];
        let november = fold("2026-11", 9, prior, &events);
        assert_eq!(november.pool_total, usdt("77"));
        assert_eq!(
            november.tokens_total, 300,
            "November's 200 and October's late 100"
        );
        assert_eq!(november.usage_events, 2);
        let kinds: Vec<(String, CorrectionKind)> = november
            .corrections
            .iter()
            .map(|c| (c.from_month.to_string(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("2026-10".to_string(), CorrectionKind::PoolMoney),
                ("2026-10".to_string(), CorrectionKind::Tokens),
            ]
        );
        // $77 by 200:100 tokens, largest remainder: 51.333333 + 25.666667.
        let paid: Vec<(String, Usdt)> = november
            .payouts
            .iter()
            .map(|p| (p.user_id.clone(), p.amount))
            .collect();
        assert_eq!(
            paid,
            [
                ("u1".to_string(), usdt("51.333333")),
                ("u2".to_string(), usdt("25.666667"))
            ]
        );
        aiforge_domain::ledger::balanced(&november.postings).unwrap_or_else(|e| panic!("{e}"));
        // The same events give the same digest; a changed byte in a counted event does not.
        assert_eq!(fold("2026-10", 4, vec![], &events).digest, october.digest);
        let mut tampered = events.clone();
        tampered[3].payload = tampered[3]
            .payload
            .replace("\"streamed\":false", "\"streamed\":true");
        assert_ne!(fold("2026-10", 4, vec![], &tampered).digest, october.digest);
        assert_eq!(
            fold("2026-10", 4, vec![], &tampered).payouts,
            october.payouts
        );
    }

    use aiforge_domain::revenue_book::{CorrectionKind, POOL_RULE_ALL_TOKENS};

    /// The product description's example under rule 2: a $700 pool ($1000 of plan fees) and
    /// plan tokens of 40/30/20/10% give $280/$210/$140/$70, however many tokens API
    /// subscriptions used (they are paid by their subscriptions).
    #[test]
    fn the_pool_is_split_by_plan_tokens_only() {
        let nov = datetime!(2026-11-10 00:00 UTC);
        let mut events = vec![
            uploaded(1, "m1", "u1"),
            uploaded(2, "m2", "u2"),
            uploaded(3, "m3", "u3"),
            uploaded(4, "m4", "u4"),
            pool_payment(5, 1_000_000_000, nov),
            call(6, "m1", 4000, nov),
            call(7, "m2", 3000, nov),
            call(8, "m3", 2000, nov),
            call(9, "m4", 1000, nov),
        ];
        events.push(api_call(10, "m4", 90_000, nov));
        events.push(api_call(11, "m3", 5_000, nov));
        let close = fold("2026-11", 11, vec![], &events);
        assert_eq!(close.pool_rule_version, POOL_RULE_CURRENT);
        assert_eq!(close.pool_total, usdt("700"));
        assert_eq!(close.tokens_total, 10_000);
        let pools: Vec<(String, Usdt)> = close
            .models
            .iter()
            .map(|l| (l.model_id.clone(), l.pool_amount))
            .collect();
        assert_eq!(
            pools,
            [
                ("m1".to_string(), usdt("280")),
                ("m2".to_string(), usdt("210")),
                ("m3".to_string(), usdt("140")),
                ("m4".to_string(), usdt("70")),
            ]
        );
        assert_eq!(
            close.usage_events, 4,
            "the API-subscription calls are not counted"
        );
        // Rule 1 (closes made before plans) counted every call: the same log gives another
        // split, and its replay applies the rule the close recorded.
        let old = fold_by("2026-11", 11, vec![], &events, POOL_RULE_ALL_TOKENS);
        assert_eq!(old.tokens_total, 105_000);
        assert_eq!(old.pool_rule_version, POOL_RULE_ALL_TOKENS);
        let path = std::env::temp_dir().join(format!(
            "aiforge-replay-rule1-{}.jsonl",
            uuid::Uuid::now_v7()
        ));
        export_with_close(&events, &old, &path);
        let open = || -> std::io::Result<Box<dyn BufRead>> {
            Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
                &path,
            )?)))
        };
        let replay = replay_export(
            &open,
            "2026-11".parse().unwrap_or_else(|e: String| panic!("{e}")),
        );
        let _ = std::fs::remove_file(&path);
        let replay = replay.unwrap_or_else(|e| panic!("{e}"));
        assert!(replay.matches(), "a rule-1 close replays exactly");
    }

    /// A call served by `node` (the helpers' calls are the platform's node, `local`).
    fn on_node(mut event: RecordedEvent, node: &str) -> RecordedEvent {
        event.payload = event
            .payload
            .replace("\"node_id\":\"local\"", &format!("\"node_id\":\"{node}\""));
        event
    }

    fn node_registered(position: i64, node: &str) -> RecordedEvent {
        let event = NodeEvent::NodeRegistered {
            node_id: node.into(),
            owner: "provider".into(),
            name: node.into(),
            owner_wallet: "0xprovider".into(),
            resources: aiforge_domain::node::Resources {
                cpu_cores: 2,
                memory_mb: 1024,
                disk_gb: 10,
                gpus: vec![],
                max_concurrent_jobs: 1,
            },
            token_digest: "00".repeat(32),
            at: datetime!(2026-10-01 00:00 UTC),
        };
        let mut event = recorded(
            position,
            aiforge_domain::node::Node::TYPE,
            "NodeRegistered",
            serde_json::to_string(&event).unwrap_or_default(),
        );
        event.aggregate_id = node.into();
        event
    }

    fn compute_rate_adopted(position: i64, rate: &str, from: OffsetDateTime) -> RecordedEvent {
        let mut schedule = aiforge_domain::fees::genesis();
        schedule.version = 2;
        schedule.effective_from = from;
        schedule.rates.compute_per_1k_tokens = Some(usdt(rate));
        let event = FeeBookEvent::FeeScheduleAdopted {
            proposal_id: "p".into(),
            schedule,
            adopted_by: "admin".into(),
            at: datetime!(2026-11-01 00:00 UTC),
        };
        recorded(
            position,
            aiforge_domain::fee_book::FeeBook::TYPE,
            "FeeScheduleAdopted",
            serde_json::to_string(&event).unwrap_or_default(),
        )
    }

    /// Rule 3 at the fold: a registered node is paid for the tokens of its calls (plan and API
    /// subscription alike) timed once a rate is in force, rounded down once per version; an
    /// anonymous node is not; the pool and the creators' payouts are those of the same month
    /// without nodes; the replay of an export matches; a rule-2 replay pays nobody.
    #[test]
    fn registered_nodes_are_paid_by_the_rate_in_force_at_each_call() {
        let before = datetime!(2026-11-03 00:00 UTC);
        let after = datetime!(2026-11-10 00:00 UTC);
        let base = vec![
            uploaded(1, "m1", "u1"),
            node_registered(2, "n1"),
            compute_rate_adopted(3, "0.002", datetime!(2026-11-05 00:00 UTC)),
            pool_payment(4, 100_000_000, after),
        ];
        let mut events = base.clone();
        events.push(on_node(call(5, "m1", 500, before), "n1")); // no rate yet
        events.push(on_node(call(6, "m1", 1_501, after), "n1"));
        events.push(on_node(api_call(7, "m1", 1_000, after), "n1"));
        events.push(on_node(call(8, "m1", 700, after), "anonymous"));
        events.push(call(9, "m1", 300, after)); // the platform's own node
        let close = fold("2026-11", 9, vec![], &events);
        assert_eq!(close.compute.len(), 1);
        let line = &close.compute[0];
        assert_eq!(
            (line.node_id.as_str(), line.fee_schedule_version),
            ("n1", 2)
        );
        assert_eq!((line.tokens, line.calls), (2_501, 2));
        // 2501 × 0.002 / 1000 = 0.005002.
        assert_eq!(line.amount, usdt("0.005002"));
        assert_eq!(close.compute_total, usdt("0.005002"));
        aiforge_domain::ledger::balanced(&close.postings).unwrap_or_else(|e| panic!("{e}"));
        let node_paid: Vec<&Posting> = close
            .postings
            .iter()
            .filter(|p| p.account.kind == AccountKind::NodePayable)
            .collect();
        assert_eq!(node_paid.len(), 1);
        assert_eq!(node_paid[0].amount, usdt("0.005002"));
        // The creators' side is what the same calls on the platform's node give.
        let platform_only: Vec<RecordedEvent> = base
            .iter()
            .cloned()
            .chain([
                call(5, "m1", 500, before),
                call(6, "m1", 1_501, after),
                api_call(7, "m1", 1_000, after),
                call(8, "m1", 700, after),
                call(9, "m1", 300, after),
            ])
            .collect();
        let unpaid = fold("2026-11", 9, vec![], &platform_only);
        assert!(unpaid.compute.is_empty());
        assert_eq!(unpaid.payouts, close.payouts);
        assert_eq!(unpaid.pool_total, close.pool_total);
        // The auditor's replay of an export recomputes it exactly.
        let path = std::env::temp_dir().join(format!(
            "aiforge-replay-compute-{}.jsonl",
            uuid::Uuid::now_v7()
        ));
        export_with_close(&events, &close, &path);
        let open = || -> std::io::Result<Box<dyn BufRead>> {
            Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
                &path,
            )?)))
        };
        let month: Month = "2026-11".parse().unwrap_or_else(|e: String| panic!("{e}"));
        let replay = replay_export(&open, month);
        let _ = std::fs::remove_file(&path);
        assert!(replay.unwrap_or_else(|e| panic!("{e}")).matches());
        // A change of the node's tokens changes the digest.
        let mut tampered = events.clone();
        tampered[5].payload = tampered[5].payload.replace("750", "751");
        assert_ne!(fold("2026-11", 9, vec![], &tampered).digest, close.digest);
        // Under rule 2 (closes recorded before nodes earned) the same log pays no node.
        let old = fold_by("2026-11", 9, vec![], &events, POOL_RULE_PLAN_TOKENS);
        assert!(old.compute.is_empty());
        assert_eq!(old.postings, unpaid.postings);
    }

    fn export_with_close(
        events: &[RecordedEvent],
        close: &MonthDistribution,
        path: &std::path::Path,
    ) {
        let mut text = String::new();
        for event in events {
            text.push_str(&serde_json::to_string(event).unwrap_or_default());
            text.push('\n');
        }
        let closed = RevenueBookEvent::MonthClosed {
            distribution: close.clone(),
            closed_by: "admin".into(),
            closed_at: datetime!(2026-12-01 00:00 UTC),
        };
        let position = events.len() as i64 + 1;
        let mut event = recorded(
            position,
            RevenueBook::TYPE,
            MONTH_CLOSED,
            serde_json::to_string(&closed).unwrap_or_default(),
        );
        event.aggregate_id = REVENUE_BOOK_ID.into();
        text.push_str(&serde_json::to_string(&event).unwrap_or_default());
        text.push('\n');
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn the_replay_of_an_export_equals_the_close_and_shares_sum_to_the_pool(
            facts in proptest::collection::vec((0u8..3, 0usize..4, 1u32..5_000, 0i64..40, 1i64..200_000_000), 1..80)
        ) {
            let mut events: Vec<RecordedEvent> = (0..4).map(|m| uploaded(m as i64 + 1, &format!("m{m}"), &format!("u{}", m % 3))).collect();
            for (kind, model, tokens, day, micros) in facts {
                let at = datetime!(2026-11-01 00:00 UTC) + time::Duration::hours(day * 18);
                let position = events.len() as i64 + 1;
                events.push(if kind == 0 { pool_payment(position, micros, at) } else { call(position, &format!("m{model}"), tokens, at) });
            }
            let through = events.len() as i64;
            let close = fold("2026-11", through, vec![], &events);
            let paid = close.payouts.iter().filter(|p| p.source == PayoutSource::Pool)
                .try_fold(Usdt::ZERO, |a, p| a.checked_add(p.amount)).unwrap_or(Usdt::ZERO);
            prop_assert_eq!(paid, close.pool_distributed);
            prop_assert!(close.payouts.iter().all(|p| !p.amount.is_negative()));
            prop_assert!(aiforge_domain::ledger::balanced(&close.postings).is_ok());
            if close.tokens_total > 0 {
                prop_assert_eq!(close.pool_distributed, close.pool_total);
            }
            let path = std::env::temp_dir().join(format!("aiforge-replay-{}.jsonl", uuid::Uuid::now_v7()));
            export_with_close(&events, &close, &path);
            let open = || -> std::io::Result<Box<dyn BufRead>> {
                Ok(Box::new(std::io::BufReader::new(std::fs::File::open(&path)?)))
            };
            let replay = replay_export(&open, "2026-11".parse().unwrap_or_else(|e: String| panic!("{e}")));
            let _ = std::fs::remove_file(&path);
            let replay = replay.unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(replay.matches(), "{:?}", replay.computed.digest);
        }
    }
}
