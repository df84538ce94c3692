//! `payments_view` (each payment and its state) and the ledger views: `ledger_postings_view`
//! (every posting, in log order) and `ledger_balances_view` (each account's balance, the sum of
//! its postings). Fees, nets and postings are copied from `PaymentConfirmed`; nothing here
//! recomputes a rule.
//!
//! This projection owns the ledger views, so it also posts the settlement that ends a job
//! (copied from `JobCompleted`, `JobFailed`, `JobTimedOut`, `JobCancelled`): one owner means a
//! rebuild of the ledger replays every posting, payments' and jobs' alike. Settlement postings
//! name the job's payment (from `JobSubmitted`, kept in `job_payments_view`), and the postings
//! of each month's close (`MonthClosed`: pool and group revenue -> creator payables, named
//! `revenue:YYYY-MM`).

use aiforge_commands::clock::rfc3339;
use aiforge_commands::RecordedEvent;
use aiforge_domain::job::{Job, JobEvent};
use aiforge_domain::ledger::Posting;
use aiforge_domain::payment::{Payment, PaymentEvent};
use aiforge_domain::revenue_book::{RevenueBook, RevenueBookEvent};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct PaymentsProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "payments_view",
        order_by: "payment_id",
    },
    ViewTable {
        name: "ledger_postings_view",
        order_by: "position, idx",
    },
    ViewTable {
        name: "ledger_balances_view",
        order_by: "account",
    },
    ViewTable {
        name: "job_payments_view",
        order_by: "job_id",
    },
];

fn kind_name(kind: aiforge_domain::ledger::AccountKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Projection for PaymentsProjection {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        [
            RevenueBook::TYPE,
            Job::TYPE,
            aiforge_domain::payout::Payout::TYPE,
            Payment::TYPE,
        ]
        .contains(&event.aggregate_type.as_str())
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type == RevenueBook::TYPE {
            // A month's close moves the pool and group revenue to creators' payables.
            let RevenueBookEvent::MonthClosed {
                distribution,
                closed_at,
                ..
            } = decode_payload::<RevenueBookEvent>(event)?;
            let reference = format!("revenue:{}", distribution.month);
            return post_to_ledger(tx, event, &reference, &distribution.postings, closed_at).await;
        }
        if event.aggregate_type == Job::TYPE {
            return apply_job(tx, event).await;
        }
        if event.aggregate_type == aiforge_domain::payout::Payout::TYPE {
            // A completed payout moves its amount from the payable to the hot wallet's account.
            if let aiforge_domain::payout::PayoutEvent::PayoutCompleted { postings, at, .. } =
                decode_payload::<aiforge_domain::payout::PayoutEvent>(event)?
            {
                return post_to_ledger(tx, event, &event.aggregate_id, &postings, at).await;
            }
            return Ok(());
        }
        if event.aggregate_type != Payment::TYPE {
            return Ok(());
        }
        match decode_payload::<PaymentEvent>(event)? {
            PaymentEvent::PaymentCreated {
                payment_id,
                payer,
                payment_type,
                network,
                amount,
                reference,
                pay_to,
                created_at,
                ..
            } => {
                tx.execute(
                    "INSERT INTO payments_view (payment_id, payer, payment_type, network, amount, \
                     reference, pay_to, status, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
                    &[
                        SqlValue::Text(payment_id),
                        SqlValue::Text(payer),
                        SqlValue::Text(payment_type.as_str().to_string()),
                        SqlValue::Text(network.to_string()),
                        SqlValue::Text(amount.to_string()),
                        SqlValue::Text(reference),
                        SqlValue::Text(pay_to),
                        SqlValue::Text(rfc3339(created_at)),
                    ],
                )
                .await?;
            }
            PaymentEvent::PaymentConfirmed {
                payment_id,
                tx_hash,
                from,
                paid,
                platform_fee,
                net,
                fee_schedule_version,
                postings,
                confirmed_at,
                ..
            } => {
                tx.execute(
                    "UPDATE payments_view SET status = 'confirmed', tx_hash = $1, from_address = $2, \
                     paid = $3, platform_fee = $4, net = $5, fee_schedule_version = $6, confirmed_at = $7 \
                     WHERE payment_id = $8",
                    &[
                        SqlValue::Text(tx_hash),
                        SqlValue::Text(from),
                        SqlValue::Text(paid.to_string()),
                        SqlValue::Text(platform_fee.to_string()),
                        SqlValue::Text(net.to_string()),
                        SqlValue::Int(i64::from(fee_schedule_version)),
                        SqlValue::Text(rfc3339(confirmed_at)),
                        SqlValue::Text(payment_id.clone()),
                    ],
                )
                .await?;
                post_to_ledger(tx, event, &payment_id, &postings, confirmed_at).await?;
            }
        }
        Ok(())
    }
}

/// Copies `postings` (of the event at `event.position`, paid by `payment_id`) into the ledger:
/// one row each in `ledger_postings_view`, and each account's balance moved by its amount.
pub async fn post_to_ledger(
    tx: &mut ViewTx,
    event: &RecordedEvent,
    payment_id: &str,
    postings: &[Posting],
    at: time::OffsetDateTime,
) -> Result<(), ProjectionError> {
    for (idx, posting) in postings.iter().enumerate() {
        let micros = crate::revenue::micros(posting.amount, event)?;
        let account = posting.account.name();
        let kind = kind_name(posting.account.kind);
        tx.execute(
            "INSERT INTO ledger_postings_view (position, idx, payment_id, account, kind, \
             amount_micros, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                SqlValue::Int(event.position),
                SqlValue::Int(idx as i64),
                SqlValue::Text(payment_id.to_string()),
                SqlValue::Text(account.clone()),
                SqlValue::Text(kind.clone()),
                SqlValue::Int(micros),
                SqlValue::Text(rfc3339(at)),
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO ledger_balances_view (account, kind, balance_micros, postings) \
             VALUES ($1, $2, $3, 1) ON CONFLICT (account) DO UPDATE SET \
             balance_micros = ledger_balances_view.balance_micros + excluded.balance_micros, \
             postings = ledger_balances_view.postings + 1",
            &[
                SqlValue::Text(account),
                SqlValue::Text(kind),
                SqlValue::Int(micros),
            ],
        )
        .await?;
    }
    Ok(())
}

/// A job's payment (on submission) and its settlement (on its ending).
async fn apply_job(tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let (job_id, settlement, at) = match decode_payload::<JobEvent>(event)? {
        JobEvent::JobSubmitted {
            job_id, payment_id, ..
        } => {
            tx.execute(
                "INSERT INTO job_payments_view (job_id, payment_id) VALUES ($1, $2)",
                &[SqlValue::Text(job_id), SqlValue::Text(payment_id)],
            )
            .await?;
            return Ok(());
        }
        other => match other.into_settlement() {
            Some(ending) => ending,
            None => return Ok(()),
        },
    };
    let payment_id = tx
        .fetch_texts(
            "SELECT payment_id FROM job_payments_view WHERE job_id = $1",
            &[SqlValue::Text(job_id.clone())],
        )
        .await?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .ok_or_else(|| ProjectionError::BadEvent {
            position: event.position,
            event_type: event.event_type.clone(),
            reason: format!("job {job_id} ended but was never submitted"),
        })?;
    post_to_ledger(tx, event, &payment_id, &settlement.postings, at).await
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PaymentRow {
    pub payment_id: String,
    pub payer: String,
    pub payment_type: String,
    pub network: String,
    pub amount: String,
    pub reference: String,
    pub pay_to: String,
    pub status: String,
    pub tx_hash: Option<String>,
    pub from_address: Option<String>,
    pub paid: Option<String>,
    pub platform_fee: Option<String>,
    pub net: Option<String>,
    pub fee_schedule_version: Option<i64>,
    pub created_at: String,
    pub confirmed_at: Option<String>,
}

const SELECT_PAYMENT: &str = "SELECT payment_id, payer, payment_type, network, amount, reference, \
    pay_to, status, tx_hash, from_address, paid, platform_fee, net, CAST(fee_schedule_version AS bigint) AS fee_schedule_version, \
    created_at, confirmed_at FROM payments_view";

pub async fn find(
    db: &aiforge_commands::Database,
    payment_id: &str,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    let sql = format!("{SELECT_PAYMENT} WHERE payment_id = $1");
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(payment_id)
        .fetch_optional(pool)
        .await)
}

/// The payer's newest unconfirmed payment of this type and reference, if any (a purchase asked
/// for again answers with the payment already waiting). Read through the payer's index.
pub async fn pending_for(
    db: &aiforge_commands::Database,
    payer: &str,
    payment_type: &str,
    reference: &str,
) -> Result<Option<PaymentRow>, sqlx::Error> {
    let sql = format!(
        "{SELECT_PAYMENT} WHERE payer = $1 AND payment_type = $2 AND reference = $3 \
         AND status = 'pending' ORDER BY created_at DESC, payment_id DESC LIMIT 1"
    );
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(payer)
        .bind(payment_type)
        .bind(reference)
        .fetch_optional(pool)
        .await)
}

/// A payer's payments, newest first, and their total count.
pub async fn history(
    db: &aiforge_commands::Database,
    payer: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<PaymentRow>, i64), sqlx::Error> {
    let sql = format!("{SELECT_PAYMENT} WHERE payer = $1 ORDER BY created_at DESC, payment_id DESC LIMIT $2 OFFSET $3");
    let rows = on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(payer)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)?;
    let total = on_engine!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM payments_view WHERE payer = $1"
    )
    .bind(payer)
    .fetch_one(pool)
    .await)?;
    Ok((rows, total))
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct BalanceRow {
    pub account: String,
    pub kind: String,
    pub balance_micros: i64,
    pub postings: i64,
}

pub async fn balances(db: &aiforge_commands::Database) -> Result<Vec<BalanceRow>, sqlx::Error> {
    on_engine!(db, |pool| sqlx::query_as(
        "SELECT account, kind, balance_micros, postings FROM ledger_balances_view ORDER BY account"
    )
    .fetch_all(pool)
    .await)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PostingRow {
    pub position: i64,
    pub idx: i64,
    pub payment_id: String,
    pub account: String,
    pub kind: String,
    pub amount_micros: i64,
    pub recorded_at: String,
}

/// One account's postings in log order (its history).
pub async fn postings_of(
    db: &aiforge_commands::Database,
    account: &str,
) -> Result<Vec<PostingRow>, sqlx::Error> {
    on_engine!(db, |pool| {
        sqlx::query_as(
        "SELECT position, CAST(idx AS bigint) AS idx, payment_id, account, kind, amount_micros, recorded_at \
         FROM ledger_postings_view WHERE account = $1 ORDER BY position, idx"
    )
    .bind(account)
    .fetch_all(pool)
    .await
    })
}

/// The money posted into a ledger account so far (its positive postings), in micro-USDT: for a
/// month's subscription pool, the pool before its close moves it out.
pub async fn posted_into(
    db: &aiforge_commands::Database,
    account: &str,
) -> Result<i64, sqlx::Error> {
    let sql = "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS bigint) FROM ledger_postings_view \
               WHERE account = $1 AND amount_micros > 0";
    let (micros,): (i64,) = match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_as(sql).bind(account).fetch_one(pool).await?
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(sql).bind(account).fetch_one(pool).await?
        }
    };
    Ok(micros)
}

/// What an admin narrows the payment list by; an empty field matches everything.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub payment_type: String,
    pub status: String,
    pub network: String,
    pub payer: String,
    /// RFC 3339 bounds on `created_at`: `from` inclusive, `to` exclusive.
    pub from: String,
    pub to: String,
}

/// Every payment matching `filter`, newest first, and their total count (the admin's list).
pub async fn search(
    db: &aiforge_commands::Database,
    filter: &PaymentFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<PaymentRow>, i64), sqlx::Error> {
    let predicate = "($1 = '' OR payment_type = $1) AND ($2 = '' OR status = $2) \
        AND ($3 = '' OR network = $3) AND ($4 = '' OR payer = $4) \
        AND ($5 = '' OR created_at >= $5) AND ($6 = '' OR created_at < $6)";
    let sql = format!(
        "{SELECT_PAYMENT} WHERE {predicate} ORDER BY created_at DESC, payment_id DESC LIMIT $7 OFFSET $8"
    );
    let count_sql = format!("SELECT COUNT(*) FROM payments_view WHERE {predicate}");
    let rows = on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(&filter.payment_type)
        .bind(&filter.status)
        .bind(&filter.network)
        .bind(&filter.payer)
        .bind(&filter.from)
        .bind(&filter.to)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)?;
    let total = on_engine!(db, |pool| sqlx::query_scalar(&count_sql)
        .bind(&filter.payment_type)
        .bind(&filter.status)
        .bind(&filter.network)
        .bind(&filter.payer)
        .bind(&filter.from)
        .bind(&filter.to)
        .fetch_one(pool)
        .await)?;
    Ok((rows, total))
}
