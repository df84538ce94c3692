//! The gateway's in-memory projection (it moved here from `api/` with the admission, so the
//! OpenAI endpoint and the web chat share one pipeline): keys, subscriptions, service limits and model content
//! addresses, folded from the global event log. It sits on the hot path of every API call
//! (SHA-256 -> subscription in one hash lookup, no database round trip) and follows the log:
//! woken at once by local appends and polling every `INDEX_POLL_MILLIS` for other processes'
//! appends, so a revoked key is refused well within a second.
//!
//! Per subscription it also keeps the period's usage (requests, tokens, spent credit). A call
//! this gateway metered is counted at once (`settle`); when the same event comes back through
//! the log it is recognised by its request id and not counted twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::{Database, LogPosition, RecordedEvent};
use aiforge_domain::account::AccountEvent;
use aiforge_domain::api_subscription::{
    access_at, Access, ApiSubscriptionEvent, ApiSubscriptionStatus,
};
use aiforge_domain::model::ModelEvent;
use aiforge_domain::platform_key::{PlatformKeyEvent, PLATFORM_KEY_AGGREGATE};
use aiforge_domain::service::{Pricing, RateLimits, ServiceEvent};
use aiforge_domain::subscription::{Period, PlanId, PlanLimits, SubscriptionEvent};
use aiforge_domain::usage::{ApiCallEvent, ApiCallMetered, PeriodUsage, API_CALL_AGGREGATE};
use aiforge_domain::Usdt;
use time::OffsetDateTime;

pub const INDEX_POLL_MILLIS: u64 = 250;
/// What a call is metered under when its node claimed an id it could not prove
/// (`KeyIndex::metered_node_id`).
pub const UNPROVEN_NODE_PREFIX: &str = "unproven:";
pub const INDEX_BATCH_EVENTS_MAX: i64 = 2000;
/// Quota periods are 30 days from activation, like subscription periods.
pub const QUOTA_PERIOD_DAYS: i64 = 30;

/// A subscription as the gateway needs it.
pub struct Subscription {
    pub subscription_id: String,
    pub state: Mutex<SubscriptionState>,
}

pub struct SubscriptionState {
    pub consumer: String,
    pub service_id: String,
    pub model_id: String,
    pub pricing: Pricing,
    pub pricing_version: u32,
    pub active: bool,
    pub activated_at: Option<OffsetDateTime>,
    /// The paid period's end (monthly and hybrid; moved on by renewals): the key works to the
    /// end of the grace after it, checked on the app clock at every call.
    pub period_end: Option<OffsetDateTime>,
    /// Prepaid credit added, and spent, in micro-USDT.
    pub credit_micros: i128,
    pub spent_micros: i128,
    /// The quota period the counters below are for.
    pub period: i64,
    pub period_usage: PeriodUsage,
    /// What calls admitted by this process and not yet settled hold (the in-memory admission;
    /// the shared one keeps holds in the database).
    pub held_requests: u64,
    pub held_tokens: u64,
    pub held_micros: i128,
    /// Request ids settled here and not yet seen in the log.
    pub settled_locally: HashSet<String>,
}

impl SubscriptionState {
    /// Where the subscription stands at `now` (`active` false: pending or cancelled).
    pub fn access_at(&self, now: OffsetDateTime) -> Access {
        let status = if self.active {
            ApiSubscriptionStatus::Active
        } else if self.activated_at.is_some() {
            ApiSubscriptionStatus::Cancelled
        } else {
            ApiSubscriptionStatus::PendingPayment
        };
        access_at(status, self.period_end, now)
    }

    /// The quota period `at` falls in (0 before activation).
    pub fn period_of(&self, at: OffsetDateTime) -> i64 {
        match self.activated_at {
            Some(start) if at > start => (at - start).whole_days() / QUOTA_PERIOD_DAYS,
            _ => 0,
        }
    }

    /// Moves the counters to `at`'s period when a new one has begun.
    pub fn roll_to(&mut self, at: OffsetDateTime) {
        let period = self.period_of(at);
        if period > self.period {
            self.period = period;
            self.period_usage = PeriodUsage::default();
        }
    }

    fn count(&mut self, call: &ApiCallMetered) {
        let period = self.period_of(call.at);
        if period > self.period {
            self.period = period;
            self.period_usage = PeriodUsage::default();
        }
        if period == self.period {
            self.period_usage.requests += 1;
            self.period_usage.tokens += call.total_tokens();
        }
        self.spent_micros += call.cost.to_micros();
    }

    /// Counts a call this gateway metered, now; the log's copy of it will be skipped.
    pub fn settle(&mut self, call: &ApiCallMetered) {
        self.settled_locally.insert(call.request_id.clone());
        self.count(call);
    }

    /// What admission decides against: settled usage, holds and credit, as this process knows
    /// them.
    pub fn snapshot(&self) -> aiforge_domain::admission::UsageSnapshot {
        aiforge_domain::admission::UsageSnapshot {
            used: self.period_usage,
            held_requests: self.held_requests,
            held_tokens: self.held_tokens,
            credit_micros: self.credit_micros,
            spent_micros: self.spent_micros,
            held_micros: self.held_micros,
        }
    }

    pub fn remaining_credit_micros(&self) -> i128 {
        self.credit_micros - self.spent_micros
    }
}

#[derive(Clone)]
pub struct ServiceLimits {
    pub limits: RateLimits,
    /// Bumped on every change, so limiters are rebuilt.
    pub version: u64,
    pub model_id: String,
    pub name: String,
    pub active: bool,
    /// Holders of a platform plan may call its model under their plan.
    pub included_in_plans: bool,
}

#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    pub sha256: String,
    pub owned_by: String,
    pub created: i64,
    pub deleted: bool,
    /// Listed or in its grace period.
    pub on_marketplace: bool,
}

/// One period of a user's platform plan, with the counter of its usage: an
/// [`Subscription`] whose id is `plan:<user>:<period start, unix seconds>`, whose quota periods
/// run from the plan period's start, and which admission treats as it treats an API
/// subscription's (the same holds, the same shared rows).
#[derive(Clone)]
pub struct PlanGrant {
    pub user_id: String,
    pub plan: PlanId,
    pub period: Period,
    pub counter: Arc<Subscription>,
}

/// A model that holders of a plan may call, and the service that included it in plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanModel {
    pub model_id: String,
    pub name: String,
    pub service_id: String,
    pub service_name: String,
    pub owned_by: String,
}

#[derive(Default)]
struct State {
    position: LogPosition,
    keys: HashMap<String, Arc<Subscription>>,
    subscriptions: HashMap<String, Arc<Subscription>>,
    services: HashMap<String, ServiceLimits>,
    models: HashMap<String, ModelEntry>,
    /// Each user's plan periods, oldest first.
    plans: HashMap<String, Vec<PlanGrant>>,
    /// Live platform keys: SHA-256 -> user id.
    platform_keys: HashMap<String, String>,
    /// Accounts an admin has deactivated: every key of theirs is refused.
    deactivated: HashSet<String>,
    /// Registered compute nodes: id -> SHA-256 of the node token (`NodeRegistered`), so a
    /// serving node's claim to be one is checked without a database query.
    nodes: HashMap<String, String>,
}

#[derive(Default)]
pub struct KeyIndex {
    state: RwLock<State>,
    /// Plan limits that differ from the domain's `PLANS` (a test deployment's setting).
    plan_limits: HashMap<PlanId, PlanLimits>,
    /// One reader of the log at a time (the follower, or a handler catching up to its own
    /// write): an event must be applied exactly once.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    #[error("event at position {position} ({event_type}) is malformed: {reason}")]
    BadEvent {
        position: i64,
        event_type: String,
        reason: String,
    },
}

/// What the index reads of an `ApiCallMetered` first (the event's own layout; every other
/// field is skipped).
#[derive(serde::Deserialize)]
enum CallIds<'a> {
    ApiCallMetered(#[serde(borrow)] CallIdFields<'a>),
}

#[derive(serde::Deserialize)]
struct CallIdFields<'a> {
    #[serde(borrow)]
    request_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    subscription_id: std::borrow::Cow<'a, str>,
}

fn decode<'a, T: serde::Deserialize<'a>>(event: &'a RecordedEvent) -> Result<T, IndexError> {
    serde_json::from_str(&event.payload).map_err(|e| IndexError::BadEvent {
        position: event.position,
        event_type: event.event_type.clone(),
        reason: e.to_string(),
    })
}

fn read<'a>(lock: &'a RwLock<State>) -> std::sync::RwLockReadGuard<'a, State> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<'a>(lock: &'a RwLock<State>) -> std::sync::RwLockWriteGuard<'a, State> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn lock(sub: &Subscription) -> std::sync::MutexGuard<'_, SubscriptionState> {
    sub.state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The counter id of a plan period (see [`PlanGrant`]).
pub fn plan_counter_id(user_id: &str, starts_at: OffsetDateTime) -> String {
    format!("plan:{user_id}:{}", starts_at.unix_timestamp())
}

impl KeyIndex {
    /// An index whose plans have these limits instead of the domain's (tests).
    pub fn with_plan_limits(overrides: HashMap<PlanId, PlanLimits>) -> Self {
        Self {
            plan_limits: overrides,
            ..Self::default()
        }
    }

    /// A plan's monthly limits on this deployment.
    pub fn plan_limits(&self, plan: PlanId) -> PlanLimits {
        self.plan_limits
            .get(&plan)
            .copied()
            .unwrap_or_else(|| plan.plan().limits())
    }

    /// The plan period of `user_id` in force at `at` (a paid period over the Free plan).
    pub fn plan_of(&self, user_id: &str, at: OffsetDateTime) -> Option<PlanGrant> {
        read(&self.state)
            .plans
            .get(user_id)?
            .iter()
            .rev()
            .find(|g| g.period.starts_at <= at && g.period.ends_at.is_none_or(|end| at < end))
            .cloned()
    }

    /// How many users have each plan in force at `at` (the plan `plan_of` gives each user).
    pub fn plans_in_force(&self, at: OffsetDateTime) -> std::collections::BTreeMap<String, u64> {
        let state = read(&self.state);
        let mut counts = std::collections::BTreeMap::new();
        for grants in state.plans.values() {
            let in_force = grants
                .iter()
                .rev()
                .find(|g| g.period.starts_at <= at && g.period.ends_at.is_none_or(|end| at < end));
            if let Some(grant) = in_force {
                *counts.entry(grant.plan.as_str().to_string()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Every model holders of a plan may call, by model id: listed (or in grace), not deleted,
    /// with an active service its creator included in plans (the lowest service id when
    /// several are).
    pub fn plan_models(&self) -> Vec<PlanModel> {
        let state = read(&self.state);
        let mut by_model: std::collections::BTreeMap<String, PlanModel> =
            std::collections::BTreeMap::new();
        for (service_id, service) in &state.services {
            if !(service.active && service.included_in_plans) {
                continue;
            }
            let Some(model) = state
                .models
                .get(&service.model_id)
                .filter(|m| !m.deleted && m.on_marketplace)
            else {
                continue;
            };
            let candidate = PlanModel {
                model_id: service.model_id.clone(),
                name: model.name.clone(),
                service_id: service_id.clone(),
                service_name: service.name.clone(),
                owned_by: model.owned_by.clone(),
            };
            match by_model.get(&service.model_id) {
                Some(kept) if kept.service_id <= candidate.service_id => {}
                _ => {
                    by_model.insert(service.model_id.clone(), candidate);
                }
            }
        }
        by_model.into_values().collect()
    }

    /// The model if holders of a plan may call it.
    pub fn plan_model(&self, model_id: &str) -> Option<PlanModel> {
        self.plan_models()
            .into_iter()
            .find(|m| m.model_id == model_id)
    }

    /// Whether an admin has deactivated the account (its keys are refused).
    pub fn is_deactivated(&self, user_id: &str) -> bool {
        read(&self.state).deactivated.contains(user_id)
    }

    /// The node id a call is metered under when the node that answered said it is `node_id`
    /// and showed `token` (registered nodes do, `aiforge_inference::remote`). Registered nodes
    /// are paid for what they serve (`aiforge_domain::inference_pay`), so a registered node's
    /// id is used only with that node's own token; an anonymous node keeps the name it gave,
    /// unless the name is a registered node's: then `unproven:<name>`, which no close pays.
    pub fn metered_node_id(&self, node_id: &str, token: Option<&str>) -> String {
        let state = read(&self.state);
        match (state.nodes.get(node_id), token) {
            (None, None) => node_id.to_string(),
            (Some(digest), Some(token))
                if crate::wallet_auth::constant_time_eq(
                    crate::compute::token_sha256(token.trim()).as_bytes(),
                    digest.as_bytes(),
                ) =>
            {
                node_id.to_string()
            }
            _ => format!("{UNPROVEN_NODE_PREFIX}{node_id}"),
        }
    }

    /// Whether `node_id` is a node registered on this platform: placement gives models only to
    /// those (a node another platform's coordinator knows on the same NATS is never given any).
    pub fn is_registered_node(&self, node_id: &str) -> bool {
        read(&self.state).nodes.contains_key(node_id)
    }

    /// The user whose live platform key has this SHA-256 (hex), if any.
    pub fn platform_key_user(&self, key_sha256: &str) -> Option<String> {
        read(&self.state).platform_keys.get(key_sha256).cloned()
    }

    /// An API subscription (or a plan counter) by id.
    pub fn subscription(&self, subscription_id: &str) -> Option<Arc<Subscription>> {
        read(&self.state)
            .subscriptions
            .get(subscription_id)
            .cloned()
    }

    /// The API subscriptions of `consumer` (plan counters excluded).
    pub fn subscriptions_of(&self, consumer: &str) -> Vec<Arc<Subscription>> {
        let state = read(&self.state);
        let mut found: Vec<Arc<Subscription>> = state
            .subscriptions
            .values()
            .filter(|s| !s.subscription_id.starts_with("plan:") && lock(s).consumer == consumer)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        found
    }

    /// The subscription of the live key with this SHA-256 (hex), if any.
    pub fn by_key(&self, key_sha256: &str) -> Option<Arc<Subscription>> {
        read(&self.state).keys.get(key_sha256).cloned()
    }

    pub fn service(&self, service_id: &str) -> Option<ServiceLimits> {
        self.service_limits(service_id)
    }

    pub fn service_limits(&self, service_id: &str) -> Option<ServiceLimits> {
        read(&self.state).services.get(service_id).cloned()
    }

    pub fn model(&self, model_id: &str) -> Option<ModelEntry> {
        read(&self.state)
            .models
            .get(model_id)
            .filter(|m| !m.deleted)
            .cloned()
    }

    pub fn position(&self) -> LogPosition {
        read(&self.state).position
    }

    /// Reads and applies what the log holds after the index's position; returns how many
    /// events were read.
    pub async fn catch_up_once(&self, db: &Database) -> Result<usize, IndexError> {
        let _reading = self.reading.lock().await;
        let after = self.position();
        let events = db.read_log_after(after, INDEX_BATCH_EVENTS_MAX).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let began = std::time::Instant::now();
        let mut state = write(&self.state);
        for event in &events {
            apply(&mut state, event)?;
            state.position = event.log_position();
        }
        drop(state);
        crate::stages::KEY_INDEX.since(began);
        Ok(events.len())
    }

    /// Waits (up to `wait`) until the index has applied the event at `at`: a handler that just
    /// issued, regenerated or revoked a key answers only once the key works (or is refused).
    pub async fn catch_up_to(&self, db: &Database, at: LogPosition, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while self.position() < at && tokio::time::Instant::now() < deadline {
            match self.catch_up_once(db).await {
                Ok(0) => tokio::time::sleep(Duration::from_millis(2)).await,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "the key index could not catch up");
                    return;
                }
            }
        }
    }

    /// Applies everything in the log now.
    pub async fn catch_up(&self, db: &Database) -> Result<(), IndexError> {
        while self.catch_up_once(db).await? > 0 {}
        Ok(())
    }

    /// Follows the log until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        db: Database,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut appended = db.subscribe_appends();
        loop {
            match self.catch_up_once(&db).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error = %err, "the gateway's key index could not follow the log")
                }
            }
            tokio::select! {
                // A burst of appends is read at once; revocation still takes milliseconds.
                _ = crate::store::appended_or_polled(
                    &mut appended,
                    Duration::from_millis(INDEX_POLL_MILLIS),
                ) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn apply(state: &mut State, event: &RecordedEvent) -> Result<(), IndexError> {
    match event.aggregate_type.as_str() {
        API_CALL_AGGREGATE => {
            // Most calls were settled by this instance already: their two ids are all that is
            // read of them. Another instance's call is read whole and counted.
            let CallIds::ApiCallMetered(ids) = decode(event)?;
            if let Some(sub) = state.subscriptions.get(ids.subscription_id.as_ref()) {
                let mut sub = lock(sub);
                if !sub.settled_locally.remove(ids.request_id.as_ref()) {
                    let ApiCallEvent::ApiCallMetered(call) = decode(event)?;
                    sub.count(&call);
                }
            }
        }
        "api_subscription" => apply_subscription(state, decode(event)?),
        "platform_subscription" => apply_plan(state, decode(event)?),
        PLATFORM_KEY_AGGREGATE => {
            let PlatformKeyEvent::PlatformKeyIssued {
                user_id,
                key,
                revoked,
                ..
            } = decode(event)?;
            if let Some(revoked) = revoked {
                state.platform_keys.remove(&revoked.sha256);
            }
            state.platform_keys.insert(key.sha256, user_id);
        }
        "api_service" => apply_service(state, decode(event)?),
        "model" => apply_model(state, decode(event)?),
        "node" if event.event_type == "NodeRegistered" => {
            if let aiforge_domain::node::NodeEvent::NodeRegistered {
                node_id,
                token_digest,
                ..
            } = decode(event)?
            {
                state.nodes.insert(node_id, token_digest);
            }
        }
        // Only the two events that matter here are decoded (an account's other events are
        // frequent and, one of them, secret).
        "account"
            if event.event_type == "UserDeactivated" || event.event_type == "UserReactivated" =>
        {
            match decode(event)? {
                AccountEvent::UserDeactivated { user_id, .. } => {
                    state.deactivated.insert(user_id);
                }
                AccountEvent::UserReactivated { user_id, .. } => {
                    state.deactivated.remove(&user_id);
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

fn apply_subscription(state: &mut State, event: ApiSubscriptionEvent) {
    match event {
        ApiSubscriptionEvent::ApiSubscriptionRequested {
            subscription_id,
            consumer,
            service_id,
            model_id,
            pricing,
            pricing_version,
            key,
            ..
        } => {
            let sub = Arc::new(Subscription {
                subscription_id: subscription_id.clone(),
                state: Mutex::new(SubscriptionState {
                    consumer,
                    service_id,
                    model_id,
                    pricing,
                    pricing_version,
                    active: false,
                    activated_at: None,
                    period_end: None,
                    credit_micros: 0,
                    spent_micros: 0,
                    period: 0,
                    period_usage: PeriodUsage::default(),
                    held_requests: 0,
                    held_tokens: 0,
                    held_micros: 0,
                    settled_locally: HashSet::new(),
                }),
            });
            state.keys.insert(key.sha256, sub.clone());
            state.subscriptions.insert(subscription_id, sub);
        }
        ApiSubscriptionEvent::ApiSubscriptionActivated {
            subscription_id,
            credit_added,
            activated_at,
            period_end,
            ..
        } => {
            if let Some(sub) = state.subscriptions.get(&subscription_id) {
                let mut sub = lock(sub);
                sub.active = true;
                sub.activated_at.get_or_insert(activated_at);
                if period_end.is_some() {
                    sub.period_end = period_end;
                }
                sub.credit_micros += credit_added.to_micros();
            }
        }
        ApiSubscriptionEvent::ApiSubscriptionRenewed {
            subscription_id,
            period_end,
            ..
        } => {
            if let Some(sub) = state.subscriptions.get(&subscription_id) {
                lock(sub).period_end = Some(period_end);
            }
        }
        ApiSubscriptionEvent::ApiSubscriptionCreditAdded {
            subscription_id,
            credit_added,
            ..
        } => {
            if let Some(sub) = state.subscriptions.get(&subscription_id) {
                lock(sub).credit_micros += credit_added.to_micros();
            }
        }
        ApiSubscriptionEvent::ApiKeyRegenerated {
            subscription_id,
            revoked,
            key,
            ..
        } => {
            state.keys.remove(&revoked.sha256);
            if let Some(sub) = state.subscriptions.get(&subscription_id).cloned() {
                state.keys.insert(key.sha256, sub);
            }
        }
        ApiSubscriptionEvent::ApiSubscriptionCancelled {
            subscription_id,
            revoked,
            ..
        } => {
            state.keys.remove(&revoked.sha256);
            if let Some(sub) = state.subscriptions.get(&subscription_id) {
                lock(sub).active = false;
            }
        }
    }
}

fn apply_plan(state: &mut State, event: SubscriptionEvent) {
    let SubscriptionEvent::SubscriptionActivated {
        user_id,
        plan,
        starts_at,
        ends_at,
        ..
    } = event
    else {
        return;
    };
    let periods = state.plans.entry(user_id.clone()).or_default();
    // Asking for the Free plan again does not start a new Free period: its usage goes on
    // being counted where it was (a fresh counter would be a fresh quota).
    if plan == PlanId::Free && periods.iter().any(|g| g.plan == PlanId::Free) {
        return;
    }
    let counter_id = plan_counter_id(&user_id, starts_at);
    let counter = Arc::new(Subscription {
        subscription_id: counter_id.clone(),
        state: Mutex::new(SubscriptionState {
            consumer: user_id.clone(),
            service_id: String::new(),
            model_id: String::new(),
            pricing: Pricing::Monthly {
                price_per_month: Usdt::ZERO,
            },
            pricing_version: 0,
            active: true,
            activated_at: Some(starts_at),
            // A plan period's end is the plan's own (`plan_of` checks it).
            period_end: None,
            credit_micros: 0,
            spent_micros: 0,
            period: 0,
            period_usage: PeriodUsage::default(),
            held_requests: 0,
            held_tokens: 0,
            held_micros: 0,
            settled_locally: HashSet::new(),
        }),
    });
    periods.push(PlanGrant {
        user_id,
        plan,
        period: Period {
            plan,
            starts_at,
            ends_at,
        },
        counter: counter.clone(),
    });
    state.subscriptions.insert(counter_id, counter);
}

fn apply_service(state: &mut State, event: ServiceEvent) {
    match event {
        ServiceEvent::ServiceCreated {
            service_id,
            rate_limits,
            model_id,
            details,
            included_in_plans,
            ..
        } => {
            state.services.insert(
                service_id,
                ServiceLimits {
                    limits: rate_limits,
                    version: 1,
                    model_id,
                    name: details.name,
                    active: true,
                    included_in_plans,
                },
            );
        }
        ServiceEvent::ServiceDetailsEdited {
            service_id,
            details,
            ..
        } => {
            if let Some(service) = state.services.get_mut(&service_id) {
                service.name = details.name;
            }
        }
        ServiceEvent::ServicePlanInclusionChanged {
            service_id,
            included_in_plans,
            ..
        } => {
            if let Some(service) = state.services.get_mut(&service_id) {
                service.included_in_plans = included_in_plans;
            }
        }
        ServiceEvent::ServiceActivated { service_id, .. } => {
            if let Some(service) = state.services.get_mut(&service_id) {
                service.active = true;
            }
        }
        ServiceEvent::ServiceDeactivated { service_id, .. } => {
            if let Some(service) = state.services.get_mut(&service_id) {
                service.active = false;
            }
        }
        ServiceEvent::ServiceRateLimitsChanged {
            service_id,
            rate_limits,
            ..
        } => {
            if let Some(service) = state.services.get_mut(&service_id) {
                service.limits = rate_limits;
                service.version += 1;
            }
        }
        _ => {}
    }
}

fn apply_model(state: &mut State, event: ModelEvent) {
    match event {
        ModelEvent::ModelUploaded {
            model_id,
            owner,
            metadata,
            blob,
            uploaded_at,
            ..
        } => {
            let owned_by = match owner {
                aiforge_domain::model::ModelOwner::User(id) => format!("user:{id}"),
                aiforge_domain::model::ModelOwner::Group(id) => format!("group:{id}"),
            };
            state.models.insert(
                model_id,
                ModelEntry {
                    name: metadata.name,
                    sha256: blob.sha256,
                    owned_by,
                    created: uploaded_at.unix_timestamp(),
                    deleted: false,
                    on_marketplace: false,
                },
            );
        }
        ModelEvent::ModelMetadataEdited {
            model_id, metadata, ..
        } => {
            if let Some(model) = state.models.get_mut(&model_id) {
                model.name = metadata.name;
            }
        }
        ModelEvent::ModelDeleted { model_id, .. } => {
            if let Some(model) = state.models.get_mut(&model_id) {
                model.deleted = true;
            }
        }
        ModelEvent::ModelPublished { model_id, .. }
        | ModelEvent::ModelListingExtended { model_id, .. }
        | ModelEvent::ModelListingLapsed { model_id, .. } => {
            if let Some(model) = state.models.get_mut(&model_id) {
                model.on_marketplace = true;
            }
        }
        ModelEvent::ModelDelisted { model_id, .. } => {
            if let Some(model) = state.models.get_mut(&model_id) {
                model.on_marketplace = false;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiforge_domain::node::{NodeEvent, Resources};

    fn registered(node_id: &str, token: &str) -> RecordedEvent {
        let event = NodeEvent::NodeRegistered {
            node_id: node_id.into(),
            owner: "provider".into(),
            name: "rig".into(),
            owner_wallet: "0xprovider".into(),
            resources: Resources {
                cpu_cores: 2,
                memory_mb: 1024,
                disk_gb: 10,
                gpus: vec![],
                max_concurrent_jobs: 1,
            },
            token_digest: crate::compute::token_sha256(token),
            at: OffsetDateTime::UNIX_EPOCH,
        };
        RecordedEvent {
            position: 1,
            tx: 0,
            aggregate_type: "node".into(),
            aggregate_id: node_id.into(),
            sequence: 1,
            event_type: "NodeRegistered".into(),
            event_version: "1.0".into(),
            payload: serde_json::to_string(&event).unwrap_or_default(),
            metadata: "{}".into(),
            recorded_at: "2026-11-01T00:00:00.000000Z".into(),
        }
    }

    #[test]
    fn a_registered_nodes_id_is_metered_only_with_its_own_token() {
        let index = KeyIndex::default();
        apply(
            &mut write(&index.state),
            &registered("n1", "aiforge_node_secret"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            index.metered_node_id("n1", Some("aiforge_node_secret")),
            "n1"
        );
        assert_eq!(
            index.metered_node_id("n1", Some("aiforge_node_other")),
            "unproven:n1"
        );
        assert_eq!(index.metered_node_id("n1", None), "unproven:n1");
        // Anonymous nodes keep their own names; a token for no registered node proves nothing.
        assert_eq!(index.metered_node_id("node-abc", None), "node-abc");
        assert_eq!(
            index.metered_node_id("node-abc", Some("aiforge_node_secret")),
            "unproven:node-abc"
        );
    }
}
