//! `payouts_view`: one row per payout (money out, `aiforge_domain::payout`) with its state, the
//! transaction that pays it, why it waits or failed; copied from the `Payout` events. The ledger
//! postings of a completed payout are written by the ledger projection (`payments.rs`).
//! `payout_receipts_view`: each close's published Merkle receipt (`PayoutReceiptPublished`).

use aiforge_commands::clock::rfc3339;
use aiforge_commands::{Database, RecordedEvent};
use aiforge_domain::payout::{Payout, PayoutCause, PayoutEvent};
use aiforge_domain::payout_receipt::{PayoutReceipt, PayoutReceiptEvent, ReceiptEntry};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct PayoutsProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "payouts_view",
        order_by: "payout_id",
    },
    ViewTable {
        name: "payout_receipts_view",
        order_by: "month",
    },
];

#[async_trait::async_trait]
impl Projection for PayoutsProjection {
    fn name(&self) -> &'static str {
        "payouts"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == PayoutReceipt::TYPE || event.aggregate_type == Payout::TYPE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type == PayoutReceipt::TYPE {
            let PayoutReceiptEvent::PayoutReceiptPublished {
                month,
                root,
                leaves,
                at,
            } = decode_payload::<PayoutReceiptEvent>(event)?;
            let count = i64::try_from(leaves.len()).unwrap_or(i64::MAX);
            let leaves = serde_json::to_string(&leaves).map_err(|e| ProjectionError::BadEvent {
                position: event.position,
                event_type: event.event_type.clone(),
                reason: e.to_string(),
            })?;
            tx.execute(
                "INSERT INTO payout_receipts_view (month, root, leaves, payouts, published_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    SqlValue::Text(month.to_string()),
                    SqlValue::Text(root),
                    SqlValue::Text(leaves),
                    SqlValue::Int(count),
                    SqlValue::Text(rfc3339(at)),
                ],
            )
            .await?;
            return Ok(());
        }
        if event.aggregate_type != Payout::TYPE {
            return Ok(());
        }
        let id = SqlValue::Text(event.aggregate_id.clone());
        match decode_payload::<PayoutEvent>(event)? {
            PayoutEvent::PayoutRequested {
                payout_id,
                payable,
                user_id,
                wallet,
                amount,
                cause,
                needs_approval,
                at,
            } => {
                let month = match cause {
                    PayoutCause::Close { month } => SqlValue::Text(month.to_string()),
                    PayoutCause::Withdraw => SqlValue::Null,
                };
                tx.execute(
                    "INSERT INTO payouts_view (payout_id, payable, user_id, network, address, \
                     amount_micros, month, state, requested_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                    &[
                        SqlValue::Text(payout_id),
                        SqlValue::Text(payable.name()),
                        SqlValue::Text(user_id),
                        SqlValue::Text(wallet.network.to_string()),
                        SqlValue::Text(wallet.address),
                        SqlValue::Int(crate::revenue::micros(amount, event)?),
                        month,
                        SqlValue::Text(
                            if needs_approval {
                                "awaiting_approval"
                            } else {
                                "awaiting_payment"
                            }
                            .into(),
                        ),
                        SqlValue::Text(rfc3339(at)),
                    ],
                )
                .await?;
            }
            PayoutEvent::PayoutApproved { at, .. } => {
                tx.execute(
                    "UPDATE payouts_view SET state = 'awaiting_payment', updated_at = $1 WHERE payout_id = $2",
                    &[SqlValue::Text(rfc3339(at)), id],
                )
                .await?;
            }
            PayoutEvent::PayoutCancelled { reason, at, .. } => {
                tx.execute(
                    "UPDATE payouts_view SET state = 'cancelled', reason = $1, updated_at = $2 WHERE payout_id = $3",
                    &[SqlValue::Text(reason), SqlValue::Text(rfc3339(at)), id],
                )
                .await?;
            }
            PayoutEvent::PayoutWaiting { reason, at } => {
                tx.execute(
                    "UPDATE payouts_view SET reason = $1, updated_at = $2 WHERE payout_id = $3",
                    &[SqlValue::Text(reason), SqlValue::Text(rfc3339(at)), id],
                )
                .await?;
            }
            PayoutEvent::PayoutTransactionSigned { transfer, at, .. } => {
                tx.execute(
                    "UPDATE payouts_view SET state = 'in_progress', reason = NULL, tx_hash = $1, \
                     nonce = $2, updated_at = $3 WHERE payout_id = $4",
                    &[
                        SqlValue::Text(transfer.hash),
                        transfer
                            .nonce
                            .and_then(|n| i64::try_from(n).ok())
                            .map_or(SqlValue::Null, SqlValue::Int),
                        SqlValue::Text(rfc3339(at)),
                        id,
                    ],
                )
                .await?;
            }
            PayoutEvent::PayoutCompleted { hash, at, .. } => {
                tx.execute(
                    "UPDATE payouts_view SET state = 'completed', tx_hash = $1, updated_at = $2 WHERE payout_id = $3",
                    &[SqlValue::Text(hash), SqlValue::Text(rfc3339(at)), id],
                )
                .await?;
            }
            PayoutEvent::PayoutFailed { message, at, .. } => {
                tx.execute(
                    "UPDATE payouts_view SET state = 'failed', reason = $1, updated_at = $2 WHERE payout_id = $3",
                    &[SqlValue::Text(message), SqlValue::Text(rfc3339(at)), id],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// A row of `payouts_view`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct PayoutRow {
    pub payout_id: String,
    pub payable: String,
    pub user_id: String,
    pub network: String,
    pub address: String,
    pub amount_micros: i64,
    pub month: Option<String>,
    pub state: String,
    pub tx_hash: Option<String>,
    pub nonce: Option<i64>,
    pub reason: Option<String>,
    pub requested_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT payout_id, payable, user_id, network, address, amount_micros, month, \
                      state, tx_hash, nonce, reason, requested_at, updated_at FROM payouts_view";

/// One payout.
pub async fn find(db: &Database, payout_id: &str) -> Result<Option<PayoutRow>, sqlx::Error> {
    let sql = format!("{SELECT} WHERE payout_id = $1");
    aiforge_commands::on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(payout_id)
        .fetch_optional(pool)
        .await)
}

/// Which payouts to list.
#[derive(Debug, Clone, Copy)]
pub enum PayoutFilter<'a> {
    All,
    User(&'a str),
    Payable(&'a str),
    State(&'a str),
    Month(&'a str),
}

/// Payouts, oldest first, at most `limit`.
pub async fn list(
    db: &Database,
    filter: PayoutFilter<'_>,
    limit: i64,
) -> Result<Vec<PayoutRow>, sqlx::Error> {
    let (clause, arg) = match filter {
        PayoutFilter::All => ("", None),
        PayoutFilter::User(u) => (" WHERE user_id = $1", Some(u)),
        PayoutFilter::Payable(p) => (" WHERE payable = $1", Some(p)),
        PayoutFilter::State(s) => (" WHERE state = $1", Some(s)),
        PayoutFilter::Month(m) => (" WHERE month = $1", Some(m)),
    };
    let limit_at = if arg.is_some() { "$2" } else { "$1" };
    let sql = format!("{SELECT}{clause} ORDER BY requested_at, payout_id LIMIT {limit_at}");
    aiforge_commands::on_engine!(db, |pool| {
        let mut q = sqlx::query_as(&sql);
        if let Some(arg) = arg {
            q = q.bind(arg);
        }
        q.bind(limit).fetch_all(pool).await
    })
}

/// Micro-USDT credited to `account` at or after `since`, except by `except_reference`'s
/// postings (`Views::payable_credits_since`). Debits (completed payouts) are not counted.
pub async fn credits_since(
    db: &Database,
    account: &str,
    since: &str,
    except_reference: &str,
) -> Result<i64, sqlx::Error> {
    let sql = "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS bigint) FROM ledger_postings_view \
               WHERE account = $1 AND amount_micros > 0 AND recorded_at >= $2 AND payment_id <> $3";
    match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_scalar(sql)
                .bind(account)
                .bind(since)
                .bind(except_reference)
                .fetch_one(pool)
                .await
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_scalar(sql)
                .bind(account)
                .bind(since)
                .bind(except_reference)
                .fetch_one(pool)
                .await
        }
    }
}

/// account, balance, payouts, open micros, months of payouts that did not fail, of failed ones.
type PayableRow = (String, i64, i64, i64, Option<String>, Option<String>);

/// Payable accounts with a positive balance and their payouts (the payout pass's read).
pub async fn payables(
    db: &Database,
    limit: i64,
) -> Result<Vec<aiforge_commands::passes::PayableLine>, sqlx::Error> {
    let sql = "SELECT b.account, b.balance_micros, \
               (SELECT COUNT(*) FROM payouts_view p WHERE p.payable = b.account), \
               (SELECT CAST(COALESCE(SUM(p.amount_micros), 0) AS bigint) FROM payouts_view p \
                WHERE p.payable = b.account AND p.state IN ('awaiting_approval', 'awaiting_payment', 'in_progress')), \
               (SELECT string_agg(p.month, ',') FROM payouts_view p WHERE p.payable = b.account AND p.month IS NOT NULL AND p.state <> 'failed'), \
               (SELECT string_agg(p.month, ',') FROM payouts_view p WHERE p.payable = b.account AND p.month IS NOT NULL AND p.state = 'failed') \
               FROM ledger_balances_view b \
               WHERE b.kind IN ('creator_payable', 'node_payable') AND b.balance_micros > 0 \
               ORDER BY b.account LIMIT $1";
    // SQLite names string_agg group_concat (string_agg only from 3.44).
    let sqlite_sql = sql.replace("string_agg(p.month, ',')", "group_concat(p.month, ',')");
    let rows: Vec<PayableRow> = match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_as(&sqlite_sql)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(sql).bind(limit).fetch_all(pool).await?
        }
    };
    Ok(rows
        .into_iter()
        .map(
            |(account, balance_micros, payouts, open_micros, months, failed)| {
                let split = |m: Option<String>| -> Vec<String> {
                    m.map(|m| m.split(',').map(str::to_string).collect())
                        .unwrap_or_default()
                };
                aiforge_commands::passes::PayableLine {
                    account,
                    balance_micros,
                    payouts: u64::try_from(payouts).unwrap_or(0),
                    open_micros,
                    paid_closes: split(months),
                    failed_closes: split(failed),
                }
            },
        )
        .collect())
}

/// Payouts in `state`, oldest first (the payout pass's read).
pub async fn in_state(
    db: &Database,
    state: &str,
    limit: i64,
) -> Result<Vec<aiforge_commands::passes::PayoutLine>, sqlx::Error> {
    let sql = "SELECT payout_id, network, amount_micros, nonce FROM payouts_view WHERE state = $1 \
               ORDER BY requested_at, payout_id LIMIT $2";
    let rows: Vec<(String, String, i64, Option<i64>)> = aiforge_commands::on_engine!(db, |pool| {
        sqlx::query_as(sql)
            .bind(state)
            .bind(limit)
            .fetch_all(pool)
            .await
    })?;
    Ok(rows
        .into_iter()
        .map(
            |(payout_id, network, amount_micros, nonce)| aiforge_commands::passes::PayoutLine {
                payout_id,
                network,
                amount_micros,
                nonce,
            },
        )
        .collect())
}

/// A close's published receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedReceipt {
    pub month: String,
    pub root: String,
    /// In payout id order, as published.
    pub leaves: Vec<ReceiptEntry>,
    pub published_at: String,
}

/// The receipt of `month` (`YYYY-MM`), once published.
pub async fn receipt(db: &Database, month: &str) -> Result<Option<PublishedReceipt>, sqlx::Error> {
    let sql = "SELECT month, root, leaves, published_at FROM payout_receipts_view WHERE month = $1";
    let row: Option<(String, String, String, String)> =
        aiforge_commands::on_engine!(db, |pool| sqlx::query_as(sql)
            .bind(month)
            .fetch_optional(pool)
            .await)?;
    row.map(|(month, root, leaves, published_at)| {
        Ok(PublishedReceipt {
            leaves: serde_json::from_str(&leaves).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            month,
            root,
            published_at,
        })
    })
    .transpose()
}

/// Months whose close made payouts, none of them open any more, and whose receipt is not
/// published yet, oldest first, each with its completed payouts (the payout pass's read).
pub async fn receipts_due(
    db: &Database,
    limit: i64,
) -> Result<Vec<aiforge_commands::passes::ClosePayouts>, sqlx::Error> {
    let months_sql = "SELECT DISTINCT p.month FROM payouts_view p WHERE p.month IS NOT NULL \
                      AND p.month NOT IN (SELECT month FROM payout_receipts_view) \
                      AND NOT EXISTS (SELECT 1 FROM payouts_view o WHERE o.month = p.month \
                        AND o.state IN ('awaiting_approval', 'awaiting_payment', 'in_progress')) \
                      ORDER BY p.month LIMIT $1";
    let months: Vec<String> =
        aiforge_commands::on_engine!(db, |pool| sqlx::query_scalar(months_sql)
            .bind(limit)
            .fetch_all(pool)
            .await)?;
    let mut due = Vec::with_capacity(months.len());
    for month in months {
        let sql = "SELECT payout_id, user_id, network, address, amount_micros FROM payouts_view \
                   WHERE month = $1 AND state = 'completed' ORDER BY payout_id";
        let rows: Vec<(String, String, String, String, i64)> =
            aiforge_commands::on_engine!(db, |pool| sqlx::query_as(sql)
                .bind(&month)
                .fetch_all(pool)
                .await)?;
        due.push(aiforge_commands::passes::ClosePayouts {
            month,
            completed: rows
                .into_iter()
                .map(|(payout_id, user_id, network, address, amount_micros)| {
                    aiforge_commands::passes::CompletedPayout {
                        payout_id,
                        user_id,
                        network,
                        address,
                        amount_micros,
                    }
                })
                .collect(),
        });
    }
    Ok(due)
}
