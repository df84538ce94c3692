//! Revenue views: `revenue_entries_view` (each revenue fact as it confirms: confirmed payments
//! with their recorded fee and net; job revenue when the job settles (fee and the node's net),
//! not while its payment is held in escrow), and the closes (`revenue_closes_view`, `revenue_model_lines_view`,
//! `revenue_payouts_view`) copied from `MonthClosed`. Nothing here recomputes a rule; the ledger
//! postings of a close are written by the ledger projection (`payments.rs`).

use aiforge_commands::clock::rfc3339;
use aiforge_commands::{Database, RecordedEvent};
use aiforge_domain::fees::PaymentType;
use aiforge_domain::job::{Job, JobEvent};
use aiforge_domain::ledger::{month_key, AccountKind};
use aiforge_domain::model::ModelOwner;
use aiforge_domain::payment::{Payment, PaymentEvent};
use aiforge_domain::revenue_book::{RevenueBook, RevenueBookEvent};
use aiforge_domain::Usdt;
use cqrs_es::Aggregate;
use serde::Serialize;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct RevenueProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "revenue_entries_view",
        order_by: "position, idx",
    },
    ViewTable {
        name: "revenue_closes_view",
        order_by: "month",
    },
    ViewTable {
        name: "revenue_model_lines_view",
        order_by: "month, model_id",
    },
    ViewTable {
        name: "revenue_payouts_view",
        order_by: "month, idx",
    },
];

pub(crate) fn micros(amount: Usdt, event: &RecordedEvent) -> Result<i64, ProjectionError> {
    i64::try_from(amount.to_micros()).map_err(|_| ProjectionError::BadEvent {
        position: event.position,
        event_type: event.event_type.clone(),
        reason: "amount out of range".into(),
    })
}

#[async_trait::async_trait]
impl Projection for RevenueProjection {
    fn name(&self) -> &'static str {
        "revenue"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        (event.aggregate_type == Payment::TYPE && event.event_type == "PaymentConfirmed")
            || event.aggregate_type == Job::TYPE
            || event.aggregate_type == RevenueBook::TYPE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type == Payment::TYPE && event.event_type == "PaymentConfirmed" {
            let PaymentEvent::PaymentConfirmed {
                payment_id,
                payment_type,
                amount,
                platform_fee,
                net,
                postings,
                confirmed_at,
                ..
            } = decode_payload::<PaymentEvent>(event)?
            else {
                return Ok(());
            };
            if payment_type == PaymentType::Job {
                return Ok(());
            }
            let model_id = postings
                .iter()
                .find(|p| p.account.kind == AccountKind::GroupRevenue)
                .map(|p| SqlValue::Text(p.account.key.clone()))
                .unwrap_or(SqlValue::Null);
            tx.execute(
                "INSERT INTO revenue_entries_view (position, idx, month, revenue_type, source_id, \
                 gross_micros, fee_micros, net_micros, model_id, at) \
                 VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    SqlValue::Int(event.position),
                    SqlValue::Text(month_key(confirmed_at)),
                    SqlValue::Text(payment_type.as_str().to_string()),
                    SqlValue::Text(payment_id),
                    SqlValue::Int(micros(amount, event)?),
                    SqlValue::Int(micros(platform_fee, event)?),
                    SqlValue::Int(micros(net, event)?),
                    model_id,
                    SqlValue::Text(rfc3339(confirmed_at)),
                ],
            )
            .await?;
            return Ok(());
        }
        if event.aggregate_type == Job::TYPE {
            // Job revenue counts when the job settles (its payment was held in escrow).
            let Some((job_id, settlement, at)) =
                decode_payload::<JobEvent>(event)?.into_settlement()
            else {
                return Ok(());
            };
            let fee = micros(settlement.platform_fee, event)?;
            let net = micros(settlement.node_net, event)?;
            if fee + net == 0 {
                return Ok(());
            }
            tx.execute(
                "INSERT INTO revenue_entries_view (position, idx, month, revenue_type, source_id, \
                 gross_micros, fee_micros, net_micros, model_id, at) \
                 VALUES ($1, 0, $2, 'job', $3, $4, $5, $6, NULL, $7)",
                &[
                    SqlValue::Int(event.position),
                    SqlValue::Text(month_key(at)),
                    SqlValue::Text(job_id),
                    SqlValue::Int(fee + net),
                    SqlValue::Int(fee),
                    SqlValue::Int(net),
                    SqlValue::Text(rfc3339(at)),
                ],
            )
            .await?;
            return Ok(());
        }
        if event.aggregate_type != RevenueBook::TYPE {
            return Ok(());
        }
        let RevenueBookEvent::MonthClosed {
            distribution: d,
            closed_by,
            closed_at,
        } = decode_payload::<RevenueBookEvent>(event)?;
        let month = d.month.to_string();
        tx.execute(
            "INSERT INTO revenue_closes_view (month, through_tx, through_position, \
             pool_total_micros, pool_distributed_micros, group_api_micros, tokens_total, \
             usage_events, payments, corrections, input_digest, digest, closed_by, closed_at, \
             record) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &[
                SqlValue::Text(month.clone()),
                SqlValue::Int(d.through.tx),
                SqlValue::Int(d.through.position),
                SqlValue::Int(micros(d.pool_total, event)?),
                SqlValue::Int(micros(d.pool_distributed, event)?),
                SqlValue::Int(micros(d.group_api_total, event)?),
                SqlValue::Int(i64::try_from(d.tokens_total).unwrap_or(i64::MAX)),
                SqlValue::Int(i64::try_from(d.usage_events).unwrap_or(i64::MAX)),
                SqlValue::Int(i64::try_from(d.payments).unwrap_or(i64::MAX)),
                SqlValue::Int(d.corrections.len() as i64),
                SqlValue::Text(d.input_digest.clone()),
                SqlValue::Text(d.digest.clone()),
                SqlValue::Text(closed_by),
                SqlValue::Text(rfc3339(closed_at)),
                SqlValue::Text(serde_json::to_string(&d).unwrap_or_default()),
            ],
        )
        .await?;
        for line in &d.models {
            let (kind, owner) = match &line.owner {
                Some(ModelOwner::User(id)) => {
                    (SqlValue::Text("user".into()), SqlValue::Text(id.clone()))
                }
                Some(ModelOwner::Group(id)) => {
                    (SqlValue::Text("group".into()), SqlValue::Text(id.clone()))
                }
                None => (SqlValue::Null, SqlValue::Null),
            };
            tx.execute(
                "INSERT INTO revenue_model_lines_view (month, model_id, owner_kind, owner_id, \
                 tokens, requests, usage_percent, pool_micros, group_api_micros) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    SqlValue::Text(month.clone()),
                    SqlValue::Text(line.model_id.clone()),
                    kind,
                    owner,
                    SqlValue::Int(i64::try_from(line.tokens).unwrap_or(i64::MAX)),
                    SqlValue::Int(i64::try_from(line.requests).unwrap_or(i64::MAX)),
                    SqlValue::Text(line.usage_percent.clone()),
                    SqlValue::Int(micros(line.pool_amount, event)?),
                    SqlValue::Int(micros(line.group_api_amount, event)?),
                ],
            )
            .await?;
        }
        for (idx, payout) in d.payouts.iter().enumerate() {
            tx.execute(
                // The cast: a missing split version is bound as an untyped (text) NULL,
                // which PostgreSQL refuses for a bigint column (SQLite takes it as is).
                "INSERT INTO revenue_payouts_view (month, idx, user_id, model_id, source, \
                 amount_micros, split_version) VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS BIGINT))",
                &[
                    SqlValue::Text(month.clone()),
                    SqlValue::Int(idx as i64),
                    SqlValue::Text(payout.user_id.clone()),
                    SqlValue::Text(payout.model_id.clone()),
                    SqlValue::Text(
                        serde_json::to_value(payout.source)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    ),
                    SqlValue::Int(micros(payout.amount, event)?),
                    payout
                        .split_version
                        .map_or(SqlValue::Null, |v| SqlValue::Int(i64::from(v))),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

/// Micro-USDT as USDT text (`12.500000`).
pub fn usdt_text(micros: i64) -> String {
    Usdt::from_micros(micros)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| micros.to_string())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TypeTotals {
    pub revenue_type: String,
    pub count: i64,
    pub gross_micros: i64,
    pub fee_micros: i64,
    pub net_micros: i64,
}

/// Revenue by type, for one month (`YYYY-MM`) or all time.
pub async fn by_type(db: &Database, month: Option<&str>) -> Result<Vec<TypeTotals>, sqlx::Error> {
    let sql = "SELECT revenue_type, COUNT(*) AS count, \
        CAST(COALESCE(SUM(gross_micros), 0) AS bigint) AS gross_micros, \
        CAST(COALESCE(SUM(fee_micros), 0) AS bigint) AS fee_micros, \
        CAST(COALESCE(SUM(net_micros), 0) AS bigint) AS net_micros \
        FROM revenue_entries_view WHERE ($1 = '' OR month = $1) \
        GROUP BY revenue_type ORDER BY revenue_type";
    on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(month.unwrap_or(""))
        .fetch_all(pool)
        .await)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CloseRow {
    pub month: String,
    pub digest: String,
    pub record: String,
    pub closed_by: String,
    pub closed_at: String,
}

pub async fn close_of(db: &Database, month: &str) -> Result<Option<CloseRow>, sqlx::Error> {
    let sql = "SELECT month, digest, record, closed_by, closed_at FROM revenue_closes_view \
               WHERE month = $1";
    on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(month)
        .fetch_optional(pool)
        .await)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ClosesSummary {
    pub months_closed: i64,
    pub pool_distributed_micros: i64,
    pub group_api_micros: i64,
    pub last_closed: Option<String>,
}

pub async fn closes_summary(db: &Database) -> Result<ClosesSummary, sqlx::Error> {
    let sql = "SELECT COUNT(*) AS months_closed, \
        CAST(COALESCE(SUM(pool_distributed_micros), 0) AS bigint) AS pool_distributed_micros, \
        CAST(COALESCE(SUM(group_api_micros), 0) AS bigint) AS group_api_micros, \
        MAX(month) AS last_closed FROM revenue_closes_view";
    on_engine!(db, |pool| sqlx::query_as(sql).fetch_one(pool).await)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PayoutRow {
    pub month: String,
    pub user_id: String,
    pub model_id: String,
    pub source: String,
    pub amount_micros: i64,
    pub split_version: Option<i64>,
}

const SELECT_PAYOUT: &str = "SELECT month, user_id, model_id, source, amount_micros, \
    CAST(split_version AS bigint) AS split_version FROM revenue_payouts_view";

/// Payouts filtered by user and/or model and/or month, in month then record order.
pub async fn payouts(
    db: &Database,
    user_id: Option<&str>,
    model_id: Option<&str>,
    month: Option<&str>,
) -> Result<Vec<PayoutRow>, sqlx::Error> {
    let sql = format!(
        "{SELECT_PAYOUT} WHERE ($1 = '' OR user_id = $1) AND ($2 = '' OR model_id = $2) \
         AND ($3 = '' OR month = $3) ORDER BY month, idx"
    );
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(user_id.unwrap_or(""))
        .bind(model_id.unwrap_or(""))
        .bind(month.unwrap_or(""))
        .fetch_all(pool)
        .await)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ModelLineRow {
    pub month: String,
    pub model_id: String,
    pub owner_kind: Option<String>,
    pub owner_id: Option<String>,
    pub tokens: i64,
    pub requests: i64,
    pub usage_percent: String,
    pub pool_micros: i64,
    pub group_api_micros: i64,
}

pub async fn model_line(
    db: &Database,
    model_id: &str,
    month: &str,
) -> Result<Option<ModelLineRow>, sqlx::Error> {
    let sql = "SELECT month, model_id, owner_kind, owner_id, tokens, requests, usage_percent, \
        pool_micros, group_api_micros FROM revenue_model_lines_view \
        WHERE model_id = $1 AND month = $2";
    on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(model_id)
        .bind(month)
        .fetch_optional(pool)
        .await)
}

/// Net credited to a creator's payable directly by payments (API subscriptions of the creator's
/// own models, model sales), by month: `(month, micros)`.
pub async fn direct_earnings(
    db: &Database,
    user_id: &str,
    month: Option<&str>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let sql = "SELECT month, CAST(SUM(net_micros) AS bigint) FROM revenue_entries_view e \
        WHERE e.revenue_type IN ('api_subscription', 'model_sale') AND e.model_id IS NULL \
        AND ($2 = '' OR e.month = $2) AND EXISTS (SELECT 1 FROM ledger_postings_view l \
            WHERE l.payment_id = e.source_id AND l.account = $1) \
        GROUP BY month ORDER BY month";
    let account = format!("creator_payable:{user_id}");
    on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(account)
        .bind(month.unwrap_or(""))
        .fetch_all(pool)
        .await)
}

/// What monthly closes paid inference nodes out of the platform's fees, in micros: the
/// closes' (`revenue:YYYY-MM`) postings to node payables, of one month's close or of all.
pub async fn compute_paid(db: &Database, month: Option<&str>) -> Result<i64, sqlx::Error> {
    let sql = "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS bigint) FROM ledger_postings_view \
        WHERE kind = 'node_payable' AND payment_id LIKE 'revenue:%' \
        AND ($1 = '' OR payment_id = $1)";
    let reference = month.map(|m| format!("revenue:{m}")).unwrap_or_default();
    on_engine!(db, |pool| sqlx::query_scalar(sql)
        .bind(reference)
        .fetch_one(pool)
        .await)
}

/// One ledger account's balance in micros (0 when it has no postings).
pub async fn balance(db: &Database, account: &str) -> Result<i64, sqlx::Error> {
    sum_of_balances(db, "account", account).await
}

/// The sum of the balances of every account of a kind (e.g. all subscription pools).
pub async fn kind_balance(db: &Database, kind: &str) -> Result<i64, sqlx::Error> {
    sum_of_balances(db, "kind", kind).await
}

async fn sum_of_balances(
    db: &Database,
    column: &'static str,
    value: &str,
) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(balance_micros), 0) AS bigint) FROM ledger_balances_view \
         WHERE {column} = $1"
    );
    on_engine!(db, |pool| sqlx::query_scalar(&sql)
        .bind(value)
        .fetch_one(pool)
        .await)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ModelUsage {
    pub requests: i64,
    pub tokens: i64,
    pub cost_micros: i64,
}

/// A model's metered calls in `[from, until)` (RFC 3339 bounds), from `api_calls_view`.
pub async fn model_usage(
    db: &Database,
    model_id: &str,
    from: &str,
    until: &str,
) -> Result<ModelUsage, sqlx::Error> {
    let sql = "SELECT COUNT(*) AS requests, \
        CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS bigint) AS tokens, \
        CAST(COALESCE(SUM(cost_micros), 0) AS bigint) AS cost_micros \
        FROM api_calls_view WHERE model_id = $1 AND at >= $2 AND at < $3";
    on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(model_id)
        .bind(from)
        .bind(until)
        .fetch_one(pool)
        .await)
}

/// A user's payouts from group-owned models, in month order.
pub async fn group_payouts_of(db: &Database, user_id: &str) -> Result<Vec<PayoutRow>, sqlx::Error> {
    let sql = "SELECT p.month, p.user_id, p.model_id, p.source, p.amount_micros, \
        CAST(p.split_version AS bigint) AS split_version FROM revenue_payouts_view p \
        JOIN revenue_model_lines_view l ON l.month = p.month AND l.model_id = p.model_id \
        WHERE p.user_id = $1 AND l.owner_kind = 'group' ORDER BY p.month, p.idx";
    on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(user_id)
        .fetch_all(pool)
        .await)
}
