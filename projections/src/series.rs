//! Time series for charts: `series_daily_view`, daily rollups of the facts the dashboards draw
//! (metered calls' requests and tokens, revenue and platform fees as payments confirm and jobs
//! settle, creators' and nodes' earnings), each along the dimensions a chart breaks it down by.
//! The rows copy event fields and add them up per UTC day; months are sums of days, read with
//! one indexed range scan per key (`points`). Who may read which scope is the API's business,
//! not this module's.
//!
//! The figures must equal the existing routes' for the same thing, so each rule of what counts
//! follows the view those routes read: revenue as `revenue.rs` enters it (a job's payment at its
//! settlement, not while in escrow); a creator's direct earnings are the payment postings to their
//! payable (what `direct_earnings` counts); pool shares and group splits are a close's payouts,
//! dated to the first day of the month they distribute (as my-earnings files them); a node's
//! earnings are its settlements' postings to its payable (kind `job`) and a close's postings to
//! it for the tokens it served (kind `inference`, dated as the close's payouts).

use std::collections::BTreeMap;

use aiforge_commands::clock::rfc3339;
use aiforge_commands::{Database, RecordedEvent};
use aiforge_domain::fees::PaymentType;
use aiforge_domain::job::{Job, JobEvent};
use aiforge_domain::ledger::AccountKind;
use aiforge_domain::payment::{Payment, PaymentEvent};
use aiforge_domain::revenue_book::{PayoutSource, RevenueBook, RevenueBookEvent};
use aiforge_domain::usage::{ApiCallEvent, API_CALL_AGGREGATE};
use cqrs_es::Aggregate;

use crate::revenue::micros;
use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct SeriesProjection;

const TABLES: &[ViewTable] = &[ViewTable {
    name: "series_daily_view",
    order_by: "metric, scope, scope_id, dim, day, dim_key",
}];

/// The platform's scope id (there is one platform).
pub const PLATFORM: &str = "";
/// The key a plan's calls are filed under in a consumer's breakdown by subscription (a plan's
/// counter id, `plan:<user>:<start>`, changes every period; the dashboard shows "the plan").
pub const PLAN_KEY: &str = "plan";

/// One cell of the rollup: `(metric, scope, scope_id, dim, dim_key, day)`.
type Cell = (
    &'static str,
    &'static str,
    String,
    &'static str,
    String,
    String,
);

/// What one batch adds, summed per cell before it is written (a batch is applied once, with
/// its checkpoint, so adding is exact).
#[derive(Default)]
struct Rollup(BTreeMap<Cell, i64>);

impl Rollup {
    fn add(&mut self, cell: Cell, value: i64) {
        *self.0.entry(cell).or_default() += value;
    }

    /// A fact counted in a scope's total and in each of its breakdowns.
    fn fan(
        &mut self,
        metric: &'static str,
        scope: &'static str,
        scope_id: &str,
        dims: &[(&'static str, &str)],
        day: &str,
        value: i64,
    ) {
        let cell = |dim: &'static str, key: &str| {
            (
                metric,
                scope,
                scope_id.to_string(),
                dim,
                key.to_string(),
                day.to_string(),
            )
        };
        self.add(cell("", ""), value);
        for (dim, key) in dims {
            self.add(cell(dim, key), value);
        }
    }
}

fn day_of(at: time::OffsetDateTime) -> String {
    rfc3339(at).chars().take(10).collect()
}

fn metered(rollup: &mut Rollup, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let ApiCallEvent::ApiCallMetered(call) = decode_payload(event)?;
    let day = day_of(call.at);
    let tokens = i64::try_from(call.total_tokens()).unwrap_or(i64::MAX);
    let subscription = if call.subscription_id.starts_with("plan:") {
        PLAN_KEY
    } else {
        call.subscription_id.as_str()
    };
    for (metric, value) in [("requests", 1), ("tokens", tokens)] {
        let (model, service) = (call.model_id.as_str(), call.service_id.as_str());
        rollup.fan(
            metric,
            "platform",
            PLATFORM,
            &[("model", model), ("service", service)],
            &day,
            value,
        );
        rollup.fan(metric, "model", model, &[("service", service)], &day, value);
        rollup.fan(metric, "service", service, &[], &day, value);
        rollup.fan(
            metric,
            "node",
            &call.node_id,
            &[("model", model)],
            &day,
            value,
        );
        rollup.fan(
            metric,
            "consumer",
            &call.consumer,
            &[("subscription", subscription), ("model", model)],
            &day,
            value,
        );
    }
    Ok(())
}

fn payment(rollup: &mut Rollup, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let PaymentEvent::PaymentConfirmed {
        payment_type,
        amount,
        platform_fee,
        postings,
        confirmed_at,
        ..
    } = decode_payload::<PaymentEvent>(event)?
    else {
        return Ok(());
    };
    // A job's payment is held in escrow: it counts when the job settles (`settlement`).
    if payment_type == PaymentType::Job {
        return Ok(());
    }
    let day = day_of(confirmed_at);
    let kind = payment_type.as_str();
    rollup.fan(
        "revenue",
        "platform",
        PLATFORM,
        &[("type", kind)],
        &day,
        micros(amount, event)?,
    );
    rollup.fan(
        "fees",
        "platform",
        PLATFORM,
        &[("type", kind)],
        &day,
        micros(platform_fee, event)?,
    );
    for posting in postings
        .iter()
        .filter(|p| p.account.kind == AccountKind::CreatorPayable && p.amount.is_positive())
    {
        rollup.fan(
            "earnings",
            "creator",
            &posting.account.key,
            &[("kind", kind)],
            &day,
            micros(posting.amount, event)?,
        );
    }
    Ok(())
}

fn settlement(rollup: &mut Rollup, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some((_, settlement, at)) = decode_payload::<JobEvent>(event)?.into_settlement() else {
        return Ok(());
    };
    let fee = micros(settlement.platform_fee, event)?;
    let net = micros(settlement.node_net, event)?;
    let day = day_of(at);
    // As `revenue_entries_view`: a settlement that earned nothing is no revenue entry.
    if fee + net != 0 {
        let job = PaymentType::Job.as_str();
        rollup.fan(
            "revenue",
            "platform",
            PLATFORM,
            &[("type", job)],
            &day,
            fee + net,
        );
        rollup.fan("fees", "platform", PLATFORM, &[("type", job)], &day, fee);
    }
    for posting in settlement
        .postings
        .iter()
        .filter(|p| p.account.kind == AccountKind::NodePayable && p.amount.is_positive())
    {
        rollup.fan(
            "earnings",
            "node",
            &posting.account.key,
            &[("kind", PaymentType::Job.as_str())],
            &day,
            micros(posting.amount, event)?,
        );
    }
    Ok(())
}

fn close(rollup: &mut Rollup, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let RevenueBookEvent::MonthClosed { distribution, .. } =
        decode_payload::<RevenueBookEvent>(event)?;
    let day = day_of(distribution.month.start());
    for payout in &distribution.payouts {
        let kind = match payout.source {
            PayoutSource::Pool => "pool_share",
            PayoutSource::GroupApi => "group_split",
        };
        rollup.fan(
            "earnings",
            "creator",
            &payout.user_id,
            &[("kind", kind)],
            &day,
            micros(payout.amount, event)?,
        );
    }
    // What the close paid inference nodes for the tokens they served (its postings to their
    // payables), dated as the payouts are.
    for posting in distribution
        .postings
        .iter()
        .filter(|p| p.account.kind == AccountKind::NodePayable && p.amount.is_positive())
    {
        rollup.fan(
            "earnings",
            "node",
            &posting.account.key,
            &[("kind", "inference")],
            &day,
            micros(posting.amount, event)?,
        );
    }
    Ok(())
}

/// Columns of `series_daily_view` a batch writes.
const COLUMNS: usize = 7;

#[async_trait::async_trait]
impl Projection for SeriesProjection {
    fn name(&self) -> &'static str {
        "series"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == API_CALL_AGGREGATE
            || (event.aggregate_type == Payment::TYPE && event.event_type == "PaymentConfirmed")
            || event.aggregate_type == Job::TYPE
            || event.aggregate_type == RevenueBook::TYPE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        tx: &mut ViewTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut rollup = Rollup::default();
        for event in events {
            if event.aggregate_type == API_CALL_AGGREGATE {
                metered(&mut rollup, event)?;
            } else if event.aggregate_type == Payment::TYPE
                && event.event_type == "PaymentConfirmed"
            {
                payment(&mut rollup, event)?;
            } else if event.aggregate_type == Job::TYPE {
                settlement(&mut rollup, event)?;
            } else if event.aggregate_type == RevenueBook::TYPE {
                close(&mut rollup, event)?;
            }
        }
        let mut values = Vec::with_capacity(rollup.0.len() * COLUMNS);
        for ((metric, scope, scope_id, dim, dim_key, day), value) in rollup.0 {
            values.extend([
                SqlValue::Text(metric.to_string()),
                SqlValue::Text(scope.to_string()),
                SqlValue::Text(scope_id),
                SqlValue::Text(dim.to_string()),
                SqlValue::Text(dim_key),
                SqlValue::Text(day),
                SqlValue::Int(value),
            ]);
        }
        tx.insert_rows(
            "INSERT INTO series_daily_view (metric, scope, scope_id, dim, dim_key, day, value) \
             VALUES",
            COLUMNS,
            &values,
            "ON CONFLICT (metric, scope, scope_id, dim, day, dim_key) DO UPDATE \
             SET value = series_daily_view.value + excluded.value",
        )
        .await?;
        Ok(())
    }
}

/// Which rows of a scope a series reads.
#[derive(Debug, Clone)]
pub enum Rows {
    /// The scope's own rows (`scope`, `scope_id`), along `dim` ('' for the total).
    Scope {
        scope: &'static str,
        scope_id: String,
        dim: &'static str,
    },
    /// A creator's metered usage: the rows of the models they own themselves, totalled or by
    /// model (ownership is read at query time from `models_view`: a call's event does not
    /// name its model's owner, and an owner's models are few).
    ModelsOf { owner: String, by_model: bool },
}

/// Day (`YYYY-MM-DD`) or month (`YYYY-MM`) buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Month,
}

/// A series' values: `(key, bucket, value)` for every bucket with a row, `key` '' for a total.
/// `from` and `to` are days, both included.
pub async fn points(
    db: &Database,
    metric: &str,
    rows: &Rows,
    bucket: Bucket,
    from: &str,
    to: &str,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let slot = match bucket {
        Bucket::Day => "day",
        Bucket::Month => "substr(day, 1, 7)",
    };
    let (key, filter, scope_id, dim) = match rows {
        Rows::Scope {
            scope,
            scope_id,
            dim,
        } => (
            "dim_key",
            format!("scope = '{scope}' AND scope_id = $2"),
            scope_id.clone(),
            *dim,
        ),
        Rows::ModelsOf { owner, by_model } => (
            // The total's rows have the key '' (dim '' and dim_key ''): no constant to group by.
            if *by_model { "scope_id" } else { "dim_key" },
            "scope = 'model' AND scope_id IN (SELECT model_id FROM models_view \
             WHERE owner_kind = 'user' AND owner_id = $2)"
                .to_string(),
            owner.clone(),
            "",
        ),
    };
    let sql = format!(
        "SELECT {key} AS k, {slot} AS b, CAST(SUM(value) AS bigint) AS v FROM series_daily_view \
         WHERE metric = $1 AND {filter} AND dim = $3 AND day >= $4 AND day <= $5 \
         GROUP BY {key}, {slot} ORDER BY 1, 2"
    );
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(metric)
        .bind(&scope_id)
        .bind(dim)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await)
}
