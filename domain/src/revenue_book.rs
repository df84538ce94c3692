//! The monthly close: the `RevenueBook` aggregate (one per platform, id [`REVENUE_BOOK_ID`]) and
//! the rule that turns a month's totals into its distribution ([`distribute`]).
//!
//! What a close counts (the *membership rule*, applied by the fold in
//! `projections/src/distribution.rs` and by the auditor's replay alike): the close of month N
//! reads the global log up to a point `through` (the log's head when the close starts) and counts
//! every revenue fact whose business time (a payment's confirmation, a call's time) is before
//! the end of N and which no earlier close counted (an earlier close of M counted the facts
//! timed before the end of M at or before its own `through`). Facts timed in N are N's own; facts
//! timed in an earlier month that arrived after that month's close (late) are **corrections**:
//! they join N's totals and are listed as corrections with their month, so a closed month is
//! never rewritten.
//!
//! The distribution of a month (`distribute`):
//! - **The pool**: the money posted to the subscription pool accounts (N's, and late money of
//!   earlier months), split among models in proportion to their tokens (`revenue::distribute_pool`:
//!   largest remainder, ties to the lower model id). With no tokens served, nothing moves: the
//!   pool stays in its account.
//! - **Group API revenue**: API-subscription payments of group models post their net (90%) to
//!   `group_revenue:<model>`; the close splits each model's amount for the month.
//! - **Who receives a model's amount**: a user-owned model's owner, whole; a group model's members
//!   by the split in force at the start of N (`revenue::split_among_members`: largest
//!   remainder, ties in the split's order); a group model with no split in force pays its
//!   group's OWNER (as of `through`), whole.
//!
//! - **Inference nodes** (close rule 3, [`POOL_RULE_COMPUTE_PAY`]): registered nodes are paid
//!   for the tokens they served at the fee schedule's compute rate, out of the platform's fee
//!   (`crate::inference_pay`); nothing above changes.
//!
//! Closes go in order: the first close may be any month that has ended (earlier facts are its
//! corrections); after it, only the month after the last closed one. A closed month cannot be
//! closed again. The close's ledger postings (pool and group revenue accounts -> creator
//! payables; platform fees -> node payables) are in the event and sum to zero.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::inference_pay::{self, ComputePay, Served};
use crate::ledger::{balanced, LedgerAccount, LedgerError, Posting};
use crate::model::{ModelOwner, RevenueSplit};
use crate::money::Usdt;
use crate::revenue::{distribute_pool, split_among_members, RevenueError};

pub const REVENUE_BOOK_ID: &str = "platform";

/// Pool rule 1: the pool is split by every metered token (the closes made before platform plans
/// granted access to models).
pub const POOL_RULE_ALL_TOKENS: u32 = 1;
/// Pool rule 2: the pool is split by the tokens used under platform plans only; calls under an
/// API subscription are paid by that subscription and do not draw on the pool.
pub const POOL_RULE_PLAN_TOKENS: u32 = 2;
/// Close rule 3: rule 2's pool, and registered inference nodes are paid for the tokens they
/// served at the fee schedule's compute rate, out of the platform's fee
/// (`crate::inference_pay`). Closes under rules 1 and 2 pay no node and replay as recorded.
pub const POOL_RULE_COMPUTE_PAY: u32 = 3;
/// The rule a close made now applies (recorded in its `MonthDistribution::pool_rule_version`;
/// a replay applies the recorded one).
pub const POOL_RULE_CURRENT: u32 = POOL_RULE_COMPUTE_PAY;

fn pool_rule_all_tokens() -> u32 {
    POOL_RULE_ALL_TOKENS
}

/// Rule 1 is not written, so a close recorded before the version existed keeps its canonical
/// bytes (and digest) when it is read and written back.
fn is_pool_rule_all_tokens(version: &u32) -> bool {
    *version == POOL_RULE_ALL_TOKENS
}

/// A calendar month in UTC, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: time::Month,
}

impl Month {
    pub fn new(year: i32, month: u8) -> Option<Month> {
        let month = time::Month::try_from(month).ok()?;
        (1970..=9999)
            .contains(&year)
            .then_some(Month { year, month })
    }

    pub fn of(at: OffsetDateTime) -> Month {
        let at = at.to_offset(time::UtcOffset::UTC);
        Month {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn number(&self) -> u8 {
        u8::from(self.month)
    }

    /// The first instant of the month.
    pub fn start(&self) -> OffsetDateTime {
        time::Date::from_calendar_date(self.year, self.month, 1)
            .map(|d| d.midnight().assume_utc())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The first instant after the month.
    pub fn end(&self) -> OffsetDateTime {
        self.next().start()
    }

    pub fn next(&self) -> Month {
        match self.month {
            time::Month::December => Month {
                year: self.year + 1,
                month: time::Month::January,
            },
            month => Month {
                year: self.year,
                month: month.next(),
            },
        }
    }

    pub fn contains(&self, at: OffsetDateTime) -> bool {
        at >= self.start() && at < self.end()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

impl std::str::FromStr for Month {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a month: use YYYY-MM, e.g. 2026-10");
        let (year, month) = s.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u8 = month.parse().map_err(|_| bad())?;
        Month::new(year, month).ok_or_else(bad)
    }
}

impl Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A point in the global log (`tx` is PostgreSQL's transaction id, 0 on SQLite; compared first).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPoint {
    pub tx: i64,
    pub position: i64,
}

/// A close already recorded: the month and how far into the log it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedMonth {
    pub month: Month,
    pub through: LogPoint,
}

/// Whether an earlier close already counted a fact timed `at`, found at `point` in the log.
pub fn counted_by(prior: &[ClosedMonth], at: OffsetDateTime, point: LogPoint) -> bool {
    prior
        .iter()
        .any(|c| at < c.month.end() && point <= c.through)
}

/// What the fold gathered for a month: the facts `distribute` needs, already filtered by the
/// membership rule. Keys are sorted, so the distribution is a pure function of these totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthTotals {
    /// Money posted to the subscription pool, by the pool's month (the closed month and late
    /// money of earlier ones).
    pub pool: BTreeMap<Month, Usdt>,
    /// Tokens served, by model, then by the month they were served in.
    pub tokens: BTreeMap<String, BTreeMap<Month, u64>>,
    /// Calls counted, by model.
    pub requests: BTreeMap<String, u64>,
    /// Group API revenue posted to `group_revenue:<model>`, by model, then by month.
    pub group_api: BTreeMap<String, BTreeMap<Month, Usdt>>,
    /// Fee schedule versions of the pool's payments.
    pub fee_schedule_versions: Vec<u32>,
    /// Fee schedule versions of every payment and job settlement the month counts; `None`
    /// when folding for a close made before closes named them (`MonthDistribution`).
    #[serde(default)]
    pub fee_schedule_versions_used: Option<Vec<u32>>,
    /// Who owns each model that appears above.
    pub owners: BTreeMap<String, ModelOwner>,
    /// The split in force at the month's start, for group models that have one.
    pub splits: BTreeMap<String, RevenueSplit>,
    /// Each group's OWNER as of `through`.
    pub group_owners: BTreeMap<String, String>,
    /// Facts counted: usage events and payments.
    pub usage_events: u64,
    pub payments: u64,
    /// The pool rule the tokens above were gathered by.
    #[serde(
        default = "pool_rule_all_tokens",
        skip_serializing_if = "is_pool_rule_all_tokens"
    )]
    pub pool_rule_version: u32,
    /// Tokens and calls served by registered nodes, by node, then by the fee version in force
    /// at each call (rule 3; only versions with a compute rate are gathered).
    #[serde(default)]
    pub compute_served: BTreeMap<String, BTreeMap<u32, Served>>,
    /// The compute rate per 1K tokens of each version in `compute_served`.
    #[serde(default)]
    pub compute_rates: BTreeMap<u32, Usdt>,
}

impl Default for MonthTotals {
    fn default() -> Self {
        Self {
            pool: BTreeMap::new(),
            tokens: BTreeMap::new(),
            requests: BTreeMap::new(),
            group_api: BTreeMap::new(),
            fee_schedule_versions: Vec::new(),
            fee_schedule_versions_used: Some(Vec::new()),
            owners: BTreeMap::new(),
            splits: BTreeMap::new(),
            group_owners: BTreeMap::new(),
            usage_events: 0,
            payments: 0,
            pool_rule_version: POOL_RULE_CURRENT,
            compute_served: BTreeMap::new(),
            compute_rates: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutSource {
    /// A share of the subscription pool.
    Pool,
    /// A group model's API-subscription revenue.
    GroupApi,
}

/// What one user receives from one model for one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub user_id: String,
    pub model_id: String,
    pub source: PayoutSource,
    pub amount: Usdt,
    /// The split version used (group models with a split).
    pub split_version: Option<u32>,
}

/// One model's line in a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLine {
    pub model_id: String,
    pub owner: Option<ModelOwner>,
    pub tokens: u64,
    pub requests: u64,
    /// Percent of the month's tokens, for display (6 decimals, rounded half-even).
    pub usage_percent: String,
    pub pool_amount: Usdt,
    pub group_api_amount: Usdt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionKind {
    PoolMoney,
    Tokens,
    GroupApiRevenue,
}

/// A late fact of an earlier month, counted in this close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    pub from_month: Month,
    pub kind: CorrectionKind,
    pub model_id: Option<String>,
    pub amount: Option<Usdt>,
    pub tokens: Option<u64>,
}

/// A month's whole distribution, as recorded by `MonthClosed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthDistribution {
    pub month: Month,
    pub through: LogPoint,
    /// The earlier closes the membership rule used.
    pub prior: Vec<ClosedMonth>,
    pub pool_total: Usdt,
    pub pool_distributed: Usdt,
    pub tokens_total: u64,
    pub group_api_total: Usdt,
    /// The fee schedule versions of the pool's payments (what the pool was split from).
    pub fee_schedule_versions: Vec<u32>,
    /// Every fee schedule version the month used: of each payment and each job settlement it
    /// counts (by the membership rule), sorted, once each. Absent in closes made before closes
    /// named them; those replay without it, byte for byte (the fold follows the recorded close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee_schedule_versions_used: Option<Vec<u32>>,
    pub models: Vec<ModelLine>,
    pub payouts: Vec<Payout>,
    pub corrections: Vec<Correction>,
    pub postings: Vec<Posting>,
    pub usage_events: u64,
    pub payments: u64,
    /// SHA-256 (hex) of the canonical input events, in log order.
    pub input_digest: String,
    /// SHA-256 (hex) of `input_digest` and this distribution's canonical JSON with `digest`
    /// empty.
    pub digest: String,
    /// Which tokens split the pool (`POOL_RULE_*`); absent in closes made under rule 1.
    #[serde(
        default = "pool_rule_all_tokens",
        skip_serializing_if = "is_pool_rule_all_tokens"
    )]
    pub pool_rule_version: u32,
    /// What registered inference nodes are paid (rule 3), by node and fee version; the postings
    /// above include `platform_fees:platform -> node_payable:<node>` for them. Absent (empty)
    /// in closes that paid no node, so closes recorded before the rule keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compute: Vec<ComputePay>,
    /// The sum of `compute`: what the platform's fee paid nodes this close.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compute_total: Usdt,
}

fn is_zero(amount: &Usdt) -> bool {
    *amount == Usdt::ZERO
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevenueBookError {
    #[error("{month} has not ended yet; a month closes from {closes_from}")]
    MonthNotOver { month: Month, closes_from: String },
    #[error("{month} is already closed (digest {digest})")]
    AlreadyClosed { month: Month, digest: String },
    #[error("months close in order: the next month to close is {expected}")]
    OutOfOrder { expected: Month },
    #[error(
        "{month} ended before the platform's first event ({first}): it holds no facts to close"
    )]
    BeforeTheLog { month: Month, first: Month },
    #[error("{month} ended before the platform's first event: the log is empty")]
    EmptyLog { month: Month },
    #[error("the distribution was computed before another close was recorded; compute it again")]
    StaleInputs,
    #[error(transparent)]
    Revenue(#[from] RevenueError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Splits `amount` of `model_id` among its receivers (module docs).
fn receivers(
    totals: &MonthTotals,
    model_id: &str,
    amount: Usdt,
    source: PayoutSource,
) -> Result<Vec<Payout>, RevenueBookError> {
    let payout = |user_id: &str, amount, split_version| Payout {
        user_id: user_id.to_string(),
        model_id: model_id.to_string(),
        source,
        amount,
        split_version,
    };
    Ok(match totals.owners.get(model_id) {
        Some(ModelOwner::User(user)) => vec![payout(user, amount, None)],
        Some(ModelOwner::Group(group)) => match totals.splits.get(model_id) {
            Some(split) => split_among_members(amount, &split.shares)?
                .into_iter()
                .map(|m| payout(&m.user_id, m.amount, Some(split.version)))
                .collect(),
            None => match totals.group_owners.get(group) {
                Some(owner) => vec![payout(owner, amount, None)],
                None => Vec::new(),
            },
        },
        None => Vec::new(),
    })
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0".to_string();
    }
    let value = rust_decimal::Decimal::from(part) * rust_decimal::Decimal::ONE_HUNDRED
        / rust_decimal::Decimal::from(whole);
    value
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .normalize()
        .to_string()
}

/// The distribution of `month` from its totals (module docs). `input_digest` and `digest` are
/// left empty for the caller, which hashes the inputs it read.
pub fn distribute(
    month: Month,
    through: LogPoint,
    prior: Vec<ClosedMonth>,
    totals: &MonthTotals,
) -> Result<MonthDistribution, RevenueBookError> {
    let mut corrections = Vec::new();
    let mut pool_total = Usdt::ZERO;
    for (from, amount) in &totals.pool {
        pool_total = pool_total
            .checked_add(*amount)
            .map_err(RevenueError::from)?;
        if *from != month {
            corrections.push(Correction {
                from_month: *from,
                kind: CorrectionKind::PoolMoney,
                model_id: None,
                amount: Some(*amount),
                tokens: None,
            });
        }
    }
    let mut tokens_by_model = BTreeMap::new();
    for (model, by_month) in &totals.tokens {
        let mut sum = 0u64;
        for (from, tokens) in by_month {
            sum = sum.saturating_add(*tokens);
            if *from != month {
                corrections.push(Correction {
                    from_month: *from,
                    kind: CorrectionKind::Tokens,
                    model_id: Some(model.clone()),
                    amount: None,
                    tokens: Some(*tokens),
                });
            }
        }
        tokens_by_model.insert(model.clone(), sum);
    }
    let tokens_total: u64 = tokens_by_model.values().sum();
    let shares = distribute_pool(pool_total, &tokens_by_model)?;

    let mut postings = Vec::new();
    if !shares.is_empty() {
        for (from, amount) in &totals.pool {
            postings.push(Posting {
                account: LedgerAccount::subscription_pool(&from.to_string()),
                amount: amount.checked_neg(),
            });
        }
    }
    let mut payouts = Vec::new();
    let mut pool_by_model = BTreeMap::new();
    for share in &shares {
        pool_by_model.insert(share.model_id.clone(), share.amount);
        payouts.extend(receivers(
            totals,
            &share.model_id,
            share.amount,
            PayoutSource::Pool,
        )?);
    }
    let mut group_api_total = Usdt::ZERO;
    let mut group_api_by_model = BTreeMap::new();
    for (model, by_month) in &totals.group_api {
        let mut sum = Usdt::ZERO;
        for (from, amount) in by_month {
            sum = sum.checked_add(*amount).map_err(RevenueError::from)?;
            if *from != month {
                corrections.push(Correction {
                    from_month: *from,
                    kind: CorrectionKind::GroupApiRevenue,
                    model_id: Some(model.clone()),
                    amount: Some(*amount),
                    tokens: None,
                });
            }
        }
        if !sum.is_positive() {
            continue;
        }
        let split = receivers(totals, model, sum, PayoutSource::GroupApi)?;
        if split.is_empty() {
            continue;
        }
        group_api_total = group_api_total
            .checked_add(sum)
            .map_err(RevenueError::from)?;
        group_api_by_model.insert(model.clone(), sum);
        postings.push(Posting {
            account: LedgerAccount::group_revenue(model),
            amount: sum.checked_neg(),
        });
        payouts.extend(split);
    }
    // A model's pool share whose owner is unknown stays in the pool: take it back out.
    let paid: BTreeMap<&str, Usdt> =
        payouts
            .iter()
            .fold(BTreeMap::new(), |mut acc: BTreeMap<&str, Usdt>, p| {
                let entry = acc.entry(p.user_id.as_str()).or_insert(Usdt::ZERO);
                *entry = entry.checked_add(p.amount).unwrap_or(*entry);
                acc
            });
    for (user, amount) in &paid {
        postings.push(Posting {
            account: LedgerAccount::creator(user),
            amount: *amount,
        });
    }
    let unpaid: Usdt = shares
        .iter()
        .filter(|s| !payouts.iter().any(|p| p.model_id == s.model_id))
        .try_fold(Usdt::ZERO, |acc, s| acc.checked_add(s.amount))
        .map_err(RevenueError::from)?;
    if unpaid.is_positive() {
        // Stays in the closed month's pool account (documented; only a model with no recorded
        // owner can get here, which the log never produces).
        postings.push(Posting {
            account: LedgerAccount::subscription_pool(&month.to_string()),
            amount: unpaid,
        });
    }
    let compute = if totals.pool_rule_version >= POOL_RULE_COMPUTE_PAY {
        inference_pay::compute_pay(&totals.compute_served, &totals.compute_rates)
            .map_err(RevenueError::from)?
    } else {
        Vec::new()
    };
    let compute_total = inference_pay::total(&compute).map_err(RevenueError::from)?;
    postings.extend(inference_pay::postings(&compute).map_err(RevenueError::from)?);
    balanced(&postings)?;
    let pool_distributed = if shares.is_empty() {
        Usdt::ZERO
    } else {
        pool_total.checked_sub(unpaid).map_err(RevenueError::from)?
    };

    let mut model_ids: Vec<&String> = tokens_by_model.keys().collect();
    for model in group_api_by_model.keys() {
        if !tokens_by_model.contains_key(model) {
            model_ids.push(model);
        }
    }
    model_ids.sort();
    let models = model_ids
        .into_iter()
        .map(|model| {
            let tokens = tokens_by_model.get(model).copied().unwrap_or(0);
            ModelLine {
                model_id: model.clone(),
                owner: totals.owners.get(model).cloned(),
                tokens,
                requests: totals.requests.get(model).copied().unwrap_or(0),
                usage_percent: percent(tokens, tokens_total),
                pool_amount: pool_by_model.get(model).copied().unwrap_or(Usdt::ZERO),
                group_api_amount: group_api_by_model.get(model).copied().unwrap_or(Usdt::ZERO),
            }
        })
        .collect();
    let mut fee_schedule_versions = totals.fee_schedule_versions.clone();
    fee_schedule_versions.sort_unstable();
    fee_schedule_versions.dedup();
    let fee_schedule_versions_used = totals.fee_schedule_versions_used.clone().map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v
    });
    Ok(MonthDistribution {
        month,
        through,
        prior,
        pool_total,
        pool_distributed,
        tokens_total,
        group_api_total,
        fee_schedule_versions,
        fee_schedule_versions_used,
        models,
        payouts,
        corrections,
        postings,
        usage_events: totals.usage_events,
        payments: totals.payments,
        input_digest: String::new(),
        digest: String::new(),
        pool_rule_version: totals.pool_rule_version,
        compute,
        compute_total,
    })
}

impl MonthDistribution {
    /// The canonical bytes the digest covers: this distribution with `digest` empty.
    pub fn canonical(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.digest = String::new();
        serde_json::to_vec(&copy).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevenueBookCommand {
    CloseMonth {
        distribution: MonthDistribution,
        closed_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// When the log's first event was recorded (`check_closable`).
        #[serde(with = "time::serde::rfc3339::option")]
        log_began: Option<OffsetDateTime>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevenueBookEvent {
    MonthClosed {
        distribution: MonthDistribution,
        closed_by: String,
        #[serde(with = "time::serde::rfc3339")]
        closed_at: OffsetDateTime,
    },
}

pub const MONTH_CLOSED: &str = "MonthClosed";

impl DomainEvent for RevenueBookEvent {
    fn event_type(&self) -> String {
        match self {
            RevenueBookEvent::MonthClosed { .. } => MONTH_CLOSED.to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// The closes recorded so far, oldest first, with their digests.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RevenueBook {
    pub closed: Vec<(ClosedMonth, String)>,
}

impl RevenueBook {
    pub fn prior(&self) -> Vec<ClosedMonth> {
        self.closed.iter().map(|(c, _)| *c).collect()
    }

    pub fn is_closed(&self, month: Month) -> bool {
        self.closed.iter().any(|(c, _)| c.month == month)
    }

    /// The month a close may be recorded for next (`None` before the first close: any month
    /// that has ended).
    pub fn next_to_close(&self) -> Option<Month> {
        self.closed.last().map(|(c, _)| c.month.next())
    }

    /// The month the scheduled close records at `at`, if one is due: the next month to close
    /// (before the first close, the month of the log's first event) once it has ended and
    /// `settle` more has passed. `None` on an empty log. A month closed by hand is simply not
    /// due any more; the aggregate still refuses a second close of any month.
    pub fn due(
        &self,
        at: OffsetDateTime,
        settle: time::Duration,
        log_began: Option<OffsetDateTime>,
    ) -> Option<Month> {
        let candidate = match self.next_to_close() {
            Some(next) => next,
            None => Month::of(log_began?),
        };
        (candidate.end() + settle <= at).then_some(candidate)
    }

    /// Whether `month` may be closed at `at` (module docs), before any work is done. `log_began`
    /// is when the log's first event was recorded: the first close is of that month or a later
    /// one (an earlier month holds no facts, and closing it would make every month between
    /// it and now wait for its own empty close, a mistake the log cannot forget).
    pub fn check_closable(
        &self,
        month: Month,
        at: OffsetDateTime,
        log_began: Option<OffsetDateTime>,
    ) -> Result<(), RevenueBookError> {
        if let Some((_, digest)) = self.closed.iter().find(|(c, _)| c.month == month) {
            return Err(RevenueBookError::AlreadyClosed {
                month,
                digest: digest.clone(),
            });
        }
        if at < month.end() {
            return Err(RevenueBookError::MonthNotOver {
                month,
                closes_from: crate::ledger::month_key(month.end()) + "-01T00:00:00Z",
            });
        }
        match self.next_to_close() {
            Some(expected) if expected != month => Err(RevenueBookError::OutOfOrder { expected }),
            Some(_) => Ok(()),
            None => match log_began {
                None => Err(RevenueBookError::EmptyLog { month }),
                Some(first) if month.end() <= first => Err(RevenueBookError::BeforeTheLog {
                    month,
                    first: Month::of(first),
                }),
                Some(_) => Ok(()),
            },
        }
    }
}

pub struct RevenueBookServices;

impl Aggregate for RevenueBook {
    const TYPE: &'static str = "revenue_book";
    type Command = RevenueBookCommand;
    type Event = RevenueBookEvent;
    type Error = RevenueBookError;
    type Services = RevenueBookServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            RevenueBookCommand::CloseMonth {
                distribution,
                closed_by,
                at,
                log_began,
            } => {
                self.check_closable(distribution.month, at, log_began)?;
                if distribution.prior != self.prior() {
                    return Err(RevenueBookError::StaleInputs);
                }
                balanced(&distribution.postings)?;
                sink.write(
                    RevenueBookEvent::MonthClosed {
                        distribution,
                        closed_by,
                        closed_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RevenueBookEvent::MonthClosed { distribution, .. } => self.closed.push((
                ClosedMonth {
                    month: distribution.month,
                    through: distribution.through,
                },
                distribution.digest,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revenue::Share;
    use cqrs_es::test::TestFramework;
    use rust_decimal::Decimal;
    use time::macros::datetime;

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or(Usdt::ZERO)
    }

    fn month(s: &str) -> Month {
        s.parse().unwrap_or_else(|e: String| panic!("{e}"))
    }

    fn tokens(of: &[(&str, u64)], m: Month) -> BTreeMap<String, BTreeMap<Month, u64>> {
        of.iter()
            .map(|(model, t)| (model.to_string(), BTreeMap::from([(m, *t)])))
            .collect()
    }

    fn group_split(version: u32, shares: &[(&str, &str)]) -> RevenueSplit {
        RevenueSplit {
            version,
            shares: shares
                .iter()
                .map(|(u, p)| Share {
                    user_id: u.to_string(),
                    percent: p.parse::<Decimal>().unwrap_or_default(),
                })
                .collect(),
            effective_from: datetime!(2026-10-01 00:00 UTC),
            set_by: "u1".into(),
            set_at: datetime!(2026-09-15 00:00 UTC),
        }
    }

    /// The seeds' examples: a $700 pool over 40/30/20/10% of tokens; model a is a group's at
    /// 50/30/20, and also has $90 of API net.
    fn seeds_totals(m: Month) -> MonthTotals {
        MonthTotals {
            pool: BTreeMap::from([(m, usdt("700"))]),
            tokens: tokens(&[("a", 4000), ("b", 3000), ("c", 2000), ("d", 1000)], m),
            group_api: BTreeMap::from([("a".to_string(), BTreeMap::from([(m, usdt("90"))]))]),
            owners: BTreeMap::from([
                ("a".to_string(), ModelOwner::Group("g".into())),
                ("b".to_string(), ModelOwner::User("ub".into())),
                ("c".to_string(), ModelOwner::User("uc".into())),
                ("d".to_string(), ModelOwner::User("ud".into())),
            ]),
            splits: BTreeMap::from([(
                "a".to_string(),
                group_split(1, &[("u1", "50"), ("u2", "30"), ("u3", "20")]),
            )]),
            group_owners: BTreeMap::from([("g".to_string(), "u1".to_string())]),
            ..MonthTotals::default()
        }
    }

    fn amount_of(d: &MonthDistribution, user: &str, source: PayoutSource) -> Usdt {
        d.payouts
            .iter()
            .filter(|p| p.user_id == user && p.source == source)
            .fold(Usdt::ZERO, |a, p| a.checked_add(p.amount).unwrap_or(a))
    }

    #[test]
    fn the_seeds_examples_are_distributed_to_the_cent() {
        let m = month("2026-10");
        let d = distribute(m, LogPoint::default(), vec![], &seeds_totals(m)).unwrap();
        let pools: Vec<(String, String)> = d
            .models
            .iter()
            .map(|l| (l.model_id.clone(), l.pool_amount.to_string()))
            .collect();
        assert_eq!(
            pools,
            [
                ("a".to_string(), "280.000000".to_string()),
                ("b".to_string(), "210.000000".to_string()),
                ("c".to_string(), "140.000000".to_string()),
                ("d".to_string(), "70.000000".to_string()),
            ]
        );
        // Model a's $280 at 50/30/20 and its $90 of API net at 50/30/20.
        assert_eq!(amount_of(&d, "u1", PayoutSource::Pool), usdt("140"));
        assert_eq!(amount_of(&d, "u2", PayoutSource::Pool), usdt("84"));
        assert_eq!(amount_of(&d, "u3", PayoutSource::Pool), usdt("56"));
        assert_eq!(amount_of(&d, "u1", PayoutSource::GroupApi), usdt("45"));
        assert_eq!(amount_of(&d, "u2", PayoutSource::GroupApi), usdt("27"));
        assert_eq!(amount_of(&d, "u3", PayoutSource::GroupApi), usdt("18"));
        assert_eq!(d.models[0].usage_percent, "40");
        balanced(&d.postings).unwrap();
        assert!(d.corrections.is_empty());
    }

    #[test]
    fn a_close_records_its_pool_rule_and_a_rule_one_close_keeps_its_bytes() {
        let m = month("2026-10");
        let d = distribute(m, LogPoint::default(), vec![], &seeds_totals(m)).unwrap();
        assert_eq!(d.pool_rule_version, POOL_RULE_CURRENT);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["pool_rule_version"], POOL_RULE_CURRENT);
        assert!(
            json.get("compute").is_none() && json.get("compute_total").is_none(),
            "a close that paid no node writes no compute fields"
        );
        // A close recorded before the rule had a version: read as rule 1, written back without
        // the field, so its canonical bytes (and so its digest) are unchanged.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("pool_rule_version");
        let read: MonthDistribution = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(read.pool_rule_version, POOL_RULE_ALL_TOKENS);
        assert_eq!(serde_json::to_value(&read).unwrap(), old);
    }

    #[test]
    fn registered_nodes_are_paid_from_the_platforms_fee_and_creators_keep_their_shares() {
        let m = month("2026-10");
        let mut totals = seeds_totals(m);
        totals.compute_served = BTreeMap::from([(
            "node-1".to_string(),
            BTreeMap::from([
                (
                    2,
                    Served {
                        tokens: 12_345,
                        calls: 4,
                    },
                ),
                (
                    3,
                    Served {
                        tokens: 1_000,
                        calls: 1,
                    },
                ),
            ]),
        )]);
        totals.compute_rates = BTreeMap::from([(2, usdt("0.002")), (3, usdt("0.01"))]);
        let without = distribute(m, LogPoint::default(), vec![], &seeds_totals(m)).unwrap();
        let with = distribute(m, LogPoint::default(), vec![], &totals).unwrap();
        // 12345 × 0.002 / 1000 = 0.02469; 1000 × 0.01 / 1000 = 0.01.
        assert_eq!(with.compute_total, usdt("0.03469"));
        assert_eq!(with.compute.len(), 2);
        assert_eq!(
            with.payouts, without.payouts,
            "creators' and groups' shares unchanged"
        );
        assert_eq!(with.models, without.models);
        balanced(&with.postings).unwrap();
        let extra: Vec<&Posting> = with.postings[without.postings.len()..].iter().collect();
        assert_eq!(extra[0].account, LedgerAccount::platform_fees());
        assert_eq!(extra[0].amount, usdt("-0.03469"));
        assert_eq!(extra[1].account, LedgerAccount::node("node-1"));
        assert_eq!(extra[1].amount, usdt("0.03469"));
        // A close under rule 2 (recorded before nodes earned) pays no node from the same totals.
        totals.pool_rule_version = POOL_RULE_PLAN_TOKENS;
        let old = distribute(m, LogPoint::default(), vec![], &totals).unwrap();
        assert!(old.compute.is_empty());
        assert_eq!(old.postings, without.postings);
    }

    #[test]
    fn a_group_model_without_a_split_pays_its_owner() {
        let m = month("2026-10");
        let mut totals = seeds_totals(m);
        totals.splits.clear();
        let d = distribute(m, LogPoint::default(), vec![], &totals).unwrap();
        assert_eq!(amount_of(&d, "u1", PayoutSource::Pool), usdt("280"));
        assert_eq!(amount_of(&d, "u1", PayoutSource::GroupApi), usdt("90"));
        assert!(d.payouts.iter().all(|p| p.split_version.is_none()));
    }

    #[test]
    fn no_tokens_means_the_pool_stays_and_late_facts_are_corrections() {
        let m = month("2026-11");
        let totals = MonthTotals {
            pool: BTreeMap::from([(month("2026-10"), usdt("7")), (m, usdt("21"))]),
            ..MonthTotals::default()
        };
        let d = distribute(m, LogPoint::default(), vec![], &totals).unwrap();
        assert_eq!(d.pool_total, usdt("28"));
        assert_eq!(d.pool_distributed, Usdt::ZERO);
        assert!(d.postings.is_empty());
        assert_eq!(d.corrections.len(), 1);
        assert_eq!(d.corrections[0].from_month, month("2026-10"));

        let mut totals = totals;
        totals.tokens = tokens(&[("b", 10)], month("2026-10"));
        totals.owners = BTreeMap::from([("b".to_string(), ModelOwner::User("ub".into()))]);
        let d = distribute(m, LogPoint::default(), vec![], &totals).unwrap();
        assert_eq!(amount_of(&d, "ub", PayoutSource::Pool), usdt("28"));
        assert_eq!(d.corrections.len(), 2);
        balanced(&d.postings).unwrap();
    }

    #[test]
    fn the_membership_rule_skips_what_an_earlier_close_counted() {
        let prior = [ClosedMonth {
            month: month("2026-10"),
            through: LogPoint {
                tx: 0,
                position: 50,
            },
        }];
        let oct = datetime!(2026-10-31 23:59 UTC);
        let nov = datetime!(2026-11-01 00:00 UTC);
        let at = |position| LogPoint { tx: 0, position };
        assert!(counted_by(&prior, oct, at(50)));
        assert!(!counted_by(&prior, oct, at(51)), "late: a correction");
        assert!(!counted_by(&prior, nov, at(10)), "November's own");
    }

    #[test]
    fn months_parse_strictly_and_know_their_bounds() {
        assert_eq!(month("2026-12").next(), month("2027-01"));
        assert_eq!(month("2026-02").end(), datetime!(2026-03-01 00:00 UTC));
        assert!(month("2026-10").contains(datetime!(2026-10-31 23:59:59 UTC)));
        for bad in ["2026-13", "2026-1", "26-10", "2026/10", "", "2026-00"] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&month("2026-10")).unwrap(),
            "\"2026-10\""
        );
    }

    fn closing(m: &str, prior: Vec<ClosedMonth>, position: i64) -> RevenueBookCommand {
        let m = month(m);
        let mut distribution = distribute(
            m,
            LogPoint { tx: 0, position },
            prior,
            &MonthTotals::default(),
        )
        .unwrap();
        distribution.digest = format!("d{position}");
        RevenueBookCommand::CloseMonth {
            distribution,
            closed_by: "admin".into(),
            at: datetime!(2027-01-02 00:00 UTC),
            log_began: Some(datetime!(2026-10-05 12:00 UTC)),
        }
    }

    fn closed_event(command: RevenueBookCommand) -> RevenueBookEvent {
        let RevenueBookCommand::CloseMonth {
            distribution,
            closed_by,
            at,
            ..
        } = command;
        RevenueBookEvent::MonthClosed {
            distribution,
            closed_by,
            closed_at: at,
        }
    }

    #[test]
    fn a_month_closes_once_in_order_and_only_when_over() {
        let oct = ClosedMonth {
            month: month("2026-10"),
            through: LogPoint {
                tx: 0,
                position: 10,
            },
        };
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given_no_previous_events()
            .when(closing("2026-10", vec![], 10))
            .then_expect_events(vec![closed_event(closing("2026-10", vec![], 10))]);
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given(vec![closed_event(closing("2026-10", vec![], 10))])
            .when(closing("2026-10", vec![], 12))
            .then_expect_error(RevenueBookError::AlreadyClosed {
                month: month("2026-10"),
                digest: "d10".into(),
            });
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given(vec![closed_event(closing("2026-10", vec![], 10))])
            .when(closing("2026-12", vec![oct], 12))
            .then_expect_error(RevenueBookError::OutOfOrder {
                expected: month("2026-11"),
            });
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given(vec![closed_event(closing("2026-10", vec![], 10))])
            .when(closing("2026-11", vec![], 12))
            .then_expect_error(RevenueBookError::StaleInputs);
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given_no_previous_events()
            .when(RevenueBookCommand::CloseMonth {
                distribution: distribute(
                    month("2026-12"),
                    LogPoint::default(),
                    vec![],
                    &MonthTotals::default(),
                )
                .unwrap(),
                closed_by: "admin".into(),
                at: datetime!(2026-12-31 23:59 UTC),
                log_began: Some(datetime!(2026-10-05 12:00 UTC)),
            })
            .then_expect_error(RevenueBookError::MonthNotOver {
                month: month("2026-12"),
                closes_from: "2027-01-01T00:00:00Z".into(),
            });
    }

    #[test]
    fn no_month_before_the_platforms_first_event_can_be_closed() {
        let mut before = closing("2026-09", vec![], 10);
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given_no_previous_events()
            .when(before.clone())
            .then_expect_error(RevenueBookError::BeforeTheLog {
                month: month("2026-09"),
                first: month("2026-10"),
            });
        let RevenueBookCommand::CloseMonth { log_began, .. } = &mut before;
        *log_began = None;
        TestFramework::<RevenueBook>::with(RevenueBookServices)
            .given_no_previous_events()
            .when(before)
            .then_expect_error(RevenueBookError::EmptyLog {
                month: month("2026-09"),
            });
        // The month of the first event closes (`a_month_closes_once_in_order_and_only_when_over`).
    }

    #[test]
    fn the_scheduled_close_takes_the_next_month_once_it_has_ended_and_settled() {
        let day = time::Duration::days(1);
        let began = Some(datetime!(2026-10-05 12:00 UTC));
        let empty = RevenueBook::default();
        // Before the first close: the month of the first event, one settling day after its end.
        assert_eq!(empty.due(datetime!(2026-10-31 23:59 UTC), day, began), None);
        assert_eq!(empty.due(datetime!(2026-11-01 23:59 UTC), day, began), None);
        assert_eq!(
            empty.due(datetime!(2026-11-02 00:00 UTC), day, began),
            Some(month("2026-10"))
        );
        // Months later, still the oldest open month first: closes go in order.
        assert_eq!(
            empty.due(datetime!(2027-03-15 00:00 UTC), day, began),
            Some(month("2026-10"))
        );
        assert_eq!(empty.due(datetime!(2027-03-15 00:00 UTC), day, None), None);
        let mut book = RevenueBook::default();
        book.apply(closed_event(closing("2026-10", vec![], 10)));
        assert_eq!(book.due(datetime!(2026-12-01 12:00 UTC), day, began), None);
        assert_eq!(
            book.due(datetime!(2026-12-02 00:00 UTC), day, began),
            Some(month("2026-11"))
        );
        // What `due` names, the aggregate accepts.
        let due = book.due(datetime!(2026-12-02 00:00 UTC), time::Duration::ZERO, began);
        assert!(book
            .check_closable(month("2026-11"), datetime!(2026-12-02 00:00 UTC), began)
            .is_ok());
        assert_eq!(due, Some(month("2026-11")));
    }
}
