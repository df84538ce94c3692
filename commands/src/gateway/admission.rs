//! Admission of an API call (the rules are `aiforge_domain::admission`): rate windows, monthly
//! quotas and prepaid credit, decided before anything reaches a node, and the hold each admitted
//! call keeps until it settles.
//!
//! Two stores of the counters, one set of rules:
//! - [`AdmissionStore::Memory`]: this process's memory (the embedded default, one instance on
//!   SQLite). No round trip on the hot path.
//! - [`AdmissionStore::Shared`]: PostgreSQL rows that every instance on the database shares
//!   (migration 0012): one transaction reads the counters under row locks
//!   (`gateway_snapshot`), the domain decides, the hold and the windows are written, commit.
//!   The hold is settled in the metering transaction itself
//!   (`Database::append_fresh_settling`), so the counters never disagree with the log.
//!
//! Rate windows bind a subscriber (consumer and service), not a key: subscribing again does not
//! multiply them. Quotas and credit bind a subscription (each is paid for).
//!
//! One admission for every entitlement ([`CallTerms`]): an API subscription's terms are its
//! pricing and its service's limits; a platform plan's are the plan's monthly requests and
//! tokens, counted on the plan period's counter (`index::PlanGrant`), with no price per call.
//! Both hold and settle alike, in memory or in the same shared rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aiforge_domain::admission::{
    check_windows, decide, rate_windows, CallEstimate, Hold, Refusal, UsageSnapshot,
};
use aiforge_domain::service::{Pricing, RateLimits};
use aiforge_domain::usage::{ApiCallMetered, CallEntitlement};
use aiforge_domain::Usdt;

use super::index::{lock, KeyIndex, PlanGrant, PlanModel, Subscription};
use crate::clock::Clock;
use crate::store::{Database, Engine, StoreError, UsageSettlement};

/// A hold older than this no longer counts (its instance died mid-call): longer than any call.
pub const HOLD_TTL_SECS: i64 = 900;

/// Where the counters live.
pub enum AdmissionStore {
    Memory,
    Shared,
}

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("admission could not read its counters")]
    Store(#[from] StoreError),
}

/// What a call is admitted under: whose counters, which limits and prices, and the
/// entitlement its metering records.
#[derive(Clone)]
pub struct CallTerms {
    /// The counters the call is held against and settles into (an API subscription, or a plan
    /// period's counter).
    pub counter: Arc<Subscription>,
    pub consumer: String,
    pub service_id: String,
    pub model_id: String,
    pub pricing: Pricing,
    pub pricing_version: u32,
    pub limits: RateLimits,
    pub entitlement: CallEntitlement,
}

impl CallTerms {
    /// An API subscription's terms: its pricing, its service's limits.
    pub fn subscription(index: &KeyIndex, subscription: &Arc<Subscription>) -> CallTerms {
        let (consumer, service_id, model_id, pricing, pricing_version) = {
            let s = lock(subscription);
            (
                s.consumer.clone(),
                s.service_id.clone(),
                s.model_id.clone(),
                s.pricing.clone(),
                s.pricing_version,
            )
        };
        let limits = index
            .service_limits(&service_id)
            .map(|l| l.limits)
            .unwrap_or_default();
        CallTerms {
            counter: subscription.clone(),
            consumer,
            service_id,
            model_id,
            pricing,
            pricing_version,
            limits,
            entitlement: CallEntitlement::Subscription,
        }
    }

    /// A plan's terms for one of the models included in plans: the plan's monthly requests and
    /// tokens on this deployment, nothing priced per call, no rate windows.
    pub fn plan(index: &KeyIndex, grant: &PlanGrant, model: &PlanModel) -> CallTerms {
        let limits = index.plan_limits(grant.plan);
        CallTerms {
            counter: grant.counter.clone(),
            consumer: grant.user_id.clone(),
            service_id: model.service_id.clone(),
            model_id: model.model_id.clone(),
            pricing: Pricing::Monthly {
                price_per_month: Usdt::ZERO,
            },
            pricing_version: 0,
            limits: RateLimits {
                requests_per_month: Some(limits.requests_per_month),
                tokens_per_month: Some(limits.tokens_per_month),
                ..RateLimits::default()
            },
            entitlement: CallEntitlement::Plan {
                plan: grant.plan,
                user_id: grant.user_id.clone(),
            },
        }
    }
}

/// An admitted call: the facts its metering needs and what it holds.
pub struct Admitted {
    pub subscription: Arc<Subscription>,
    pub consumer: String,
    pub service_id: String,
    pub model_id: String,
    pub pricing: Pricing,
    pub pricing_version: u32,
    pub entitlement: CallEntitlement,
    pub hold: Hold,
}

impl Admitted {
    /// What the metering transaction settles for this call (the shared store's hold).
    pub fn settlement(&self, call: &ApiCallMetered) -> UsageSettlement {
        UsageSettlement {
            request_id: call.request_id.clone(),
            tokens: i64::try_from(call.total_tokens()).unwrap_or(i64::MAX),
            micros: i64::try_from(call.cost.to_micros()).unwrap_or(i64::MAX),
        }
    }
}

pub struct Admission {
    db: Database,
    store: AdmissionStore,
    clock: Arc<dyn Clock>,
    index: Arc<KeyIndex>,
    /// The memory store's rate windows by subject, in microseconds since `started`.
    windows: Mutex<HashMap<String, HashMap<&'static str, i64>>>,
    started: Instant,
}

fn subject(consumer: &str, service_id: &str) -> String {
    format!("{consumer}:{service_id}")
}

impl Admission {
    pub fn new(
        db: Database,
        store: AdmissionStore,
        clock: Arc<dyn Clock>,
        index: Arc<KeyIndex>,
    ) -> Self {
        Self {
            db,
            store,
            clock,
            index,
            windows: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The store for this database: shared on PostgreSQL (instances may be many), memory on
    /// SQLite (one process).
    pub fn store_for(db: &Database) -> AdmissionStore {
        match db.engine() {
            Engine::Postgres(_) => AdmissionStore::Shared,
            Engine::Sqlite(_) => AdmissionStore::Memory,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.store, AdmissionStore::Shared)
    }

    /// Admits a call of `subscription` with id `request_id`, or says why not.
    pub async fn admit(
        &self,
        subscription: &Arc<Subscription>,
        request_id: &str,
        estimate: CallEstimate,
    ) -> Result<Admitted, AdmissionError> {
        let terms = CallTerms::subscription(&self.index, subscription);
        self.admit_under(terms, request_id, estimate).await
    }

    /// Admits a call under `terms` (any entitlement) with id `request_id`, or says why not.
    #[tracing::instrument(skip_all, fields(request_id))]
    pub async fn admit_under(
        &self,
        terms: CallTerms,
        request_id: &str,
        estimate: CallEstimate,
    ) -> Result<Admitted, AdmissionError> {
        let now = self.clock.now();
        let CallTerms {
            counter: subscription,
            consumer,
            service_id,
            model_id,
            pricing,
            pricing_version,
            limits,
            entitlement,
        } = terms;
        let subscription = &subscription;
        let (period, seed) = {
            let mut s = lock(subscription);
            s.roll_to(now);
            (s.period, s.snapshot())
        };
        // A plan's counter has no rate windows; its subject is the counter itself.
        let subject = match &entitlement {
            CallEntitlement::Subscription => subject(&consumer, &service_id),
            CallEntitlement::Plan { .. } => subscription.subscription_id.clone(),
        };
        let hold = match self.store {
            AdmissionStore::Memory => {
                self.admit_in_memory(subscription, &subject, &limits, &pricing, estimate)?
            }
            AdmissionStore::Shared => {
                self.admit_shared(
                    &subscription.subscription_id,
                    request_id,
                    &subject,
                    period,
                    &limits,
                    &pricing,
                    seed,
                    estimate,
                )
                .await?
            }
        };
        Ok(Admitted {
            subscription: subscription.clone(),
            consumer,
            service_id,
            model_id,
            pricing,
            pricing_version,
            entitlement,
            hold,
        })
    }

    fn admit_in_memory(
        &self,
        subscription: &Arc<Subscription>,
        subject: &str,
        limits: &RateLimits,
        pricing: &Pricing,
        estimate: CallEstimate,
    ) -> Result<Hold, Refusal> {
        // One lock order everywhere: the subscription, then the windows.
        let mut s = lock(subscription);
        let hold = decide(limits, pricing, &s.snapshot(), estimate)?;
        let windows = rate_windows(limits);
        if !windows.is_empty() {
            let now = i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX);
            let mut all = self
                .windows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let state = all.entry(subject.to_string()).or_default();
            let tats: Vec<Option<i64>> = windows
                .iter()
                .map(|(name, _, _)| state.get(name).copied())
                .collect();
            let next = check_windows(&windows, &tats, now).map_err(|(window, wait)| {
                Refusal::RateLimited {
                    window,
                    retry_after_micros: wait,
                }
            })?;
            for ((name, _, _), tat) in windows.iter().zip(next) {
                state.insert(name, tat);
            }
        }
        s.held_requests += 1;
        s.held_tokens += hold.tokens;
        s.held_micros += hold.micros;
        Ok(hold)
    }

    #[expect(clippy::too_many_arguments, reason = "one call's facts, passed once")]
    async fn admit_shared(
        &self,
        subscription_id: &str,
        request_id: &str,
        subject: &str,
        period: i64,
        limits: &RateLimits,
        pricing: &Pricing,
        seed: UsageSnapshot,
        estimate: CallEstimate,
    ) -> Result<Hold, AdmissionError> {
        let Engine::Postgres(pool) = self.db.engine() else {
            return Err(AdmissionError::Store(StoreError::Unsupported(
                "the shared admission store needs PostgreSQL",
            )));
        };
        let windows = rate_windows(limits);
        let names: Vec<&str> = windows.iter().map(|(name, _, _)| *name).collect();
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut tx = pool.begin().await.map_err(StoreError::from)?;
        let row: (i64, i64, i64, i64, i64, i64, Vec<Option<i64>>, i64) = sqlx::query_as(
            "SELECT requests, tokens, spent_micros, held_requests, held_tokens, held_micros, \
             tats, now_micros FROM gateway_snapshot($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(subscription_id)
        .bind(subject)
        .bind(period)
        .bind(&names)
        .bind(big(seed.used.requests))
        .bind(big(seed.used.tokens))
        .bind(i64::try_from(seed.spent_micros).unwrap_or(i64::MAX))
        .bind(HOLD_TTL_SECS * 1_000_000)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let (requests, tokens, spent, held_requests, held_tokens, held_micros, tats, now) = row;
        let usage = UsageSnapshot {
            used: aiforge_domain::usage::PeriodUsage {
                requests: u64::try_from(requests).unwrap_or(0),
                tokens: u64::try_from(tokens).unwrap_or(0),
            },
            held_requests: u64::try_from(held_requests).unwrap_or(0),
            held_tokens: u64::try_from(held_tokens).unwrap_or(0),
            // Credit added is a fact of the log (activation events), read by the index.
            credit_micros: seed.credit_micros,
            spent_micros: i128::from(spent),
            held_micros: i128::from(held_micros),
        };
        // A refusal writes nothing: the transaction is dropped (rolled back).
        let hold = decide(limits, pricing, &usage, estimate)?;
        let next =
            check_windows(&windows, &tats, now).map_err(|(window, wait)| Refusal::RateLimited {
                window,
                retry_after_micros: wait,
            })?;
        sqlx::query(
            "WITH hold AS (INSERT INTO gateway_holds \
             (request_id, subscription_id, period, tokens, micros, held_at_micros) \
             VALUES ($1, $2, $3, $4, $5, $6)) \
             UPDATE gateway_rate_windows w SET tat_micros = x.tat \
             FROM unnest($7::text[], $8::bigint[]) AS x(name, tat) \
             WHERE w.subject = $9 AND w.window_name = x.name",
        )
        .bind(request_id)
        .bind(subscription_id)
        .bind(period)
        .bind(big(hold.tokens))
        .bind(i64::try_from(hold.micros).unwrap_or(i64::MAX))
        .bind(now)
        .bind(&names)
        .bind(&next)
        .bind(subject)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(hold)
    }

    /// A call that ended before anything reached its client: nothing is billed, its hold goes.
    pub async fn release(&self, admitted: &Admitted, request_id: &str) {
        match self.store {
            AdmissionStore::Memory => self.drop_local_hold(admitted),
            AdmissionStore::Shared => {
                if let Engine::Postgres(pool) = self.db.engine() {
                    if let Err(e) = sqlx::query("DELETE FROM gateway_holds WHERE request_id = $1")
                        .bind(request_id)
                        .execute(pool)
                        .await
                    {
                        tracing::warn!(error = %e, %request_id, "a released hold stays until its TTL");
                    }
                }
            }
        }
    }

    /// After the call's metering committed: the memory store's hold becomes usage (the shared
    /// store's did so in the metering transaction). Either way the index counts the call now.
    pub fn settled(&self, admitted: &Admitted, call: &ApiCallMetered) {
        if matches!(self.store, AdmissionStore::Memory) {
            self.drop_local_hold(admitted);
        }
        let mut s = lock(&admitted.subscription);
        s.roll_to(call.at);
        s.settle(call);
    }

    fn drop_local_hold(&self, admitted: &Admitted) {
        let mut s = lock(&admitted.subscription);
        s.held_requests = s.held_requests.saturating_sub(1);
        s.held_tokens = s.held_tokens.saturating_sub(admitted.hold.tokens);
        s.held_micros = (s.held_micros - admitted.hold.micros).max(0);
    }
}

/// Deletes the shared store's holds older than [`HOLD_TTL_SECS`]: those of calls whose instance
/// died before settling or releasing them. They already count for nothing (`gateway_snapshot`
/// skips them); this keeps the table from growing. Run by the scheduler lease's holder. On
/// SQLite (the memory store) there is nothing to sweep.
pub async fn sweep_expired_holds(db: &Database) -> Result<u64, StoreError> {
    let Engine::Postgres(pool) = db.engine() else {
        return Ok(0);
    };
    let swept = sqlx::query(
        "DELETE FROM gateway_holds \
         WHERE held_at_micros <= (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - $1",
    )
    .bind(HOLD_TTL_SECS * 1_000_000)
    .execute(pool)
    .await
    .map_err(StoreError::from)?;
    Ok(swept.rows_affected())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::testing::TestDatabase;

    #[tokio::test]
    async fn the_sweep_deletes_expired_holds_and_keeps_live_ones() {
        let Some(db) = TestDatabase::postgres().await else {
            return;
        };
        let Engine::Postgres(pool) = db.db.engine() else {
            unreachable!("a PostgreSQL test database")
        };
        let now: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint")
                .fetch_one(pool)
                .await
                .unwrap();
        for (request_id, held_at) in [
            ("crashed", now - (HOLD_TTL_SECS + 1) * 1_000_000),
            ("in-flight", now),
        ] {
            sqlx::query(
                "INSERT INTO gateway_holds \
                 (request_id, subscription_id, period, tokens, micros, held_at_micros) \
                 VALUES ($1, 'sub', 0, 10, 10, $2)",
            )
            .bind(request_id)
            .bind(held_at)
            .execute(pool)
            .await
            .unwrap();
        }
        assert_eq!(sweep_expired_holds(&db.db).await.unwrap(), 1);
        let left: Vec<String> = sqlx::query_scalar("SELECT request_id FROM gateway_holds")
            .fetch_all(pool)
            .await
            .unwrap();
        assert_eq!(left, vec!["in-flight".to_string()]);
        assert_eq!(sweep_expired_holds(&db.db).await.unwrap(), 0);
        db.cleanup().await;
    }
}
