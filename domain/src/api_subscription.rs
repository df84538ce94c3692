//! The `ApiSubscription` aggregate: one consumer's subscription to one API service, and the API
//! key that calls it.
//!
//! Rules, all here:
//! - A subscription copies the service's pricing (and its version) when it is made; later price
//!   changes do not touch it.
//! - What is due up front is the monthly fee (monthly, hybrid) plus any prepaid credit
//!   (pay-per-request needs some, hybrid may have some). Nothing due: active at once. Otherwise
//!   it waits for its `api_subscription` payment, created with it, and activates when that
//!   payment confirms (the reactor sends `Activate`). Prepaid credit is posted as revenue when it
//!   confirms (10% platform fee, 90% to the service owner), and usage draws the balance down.
//! - A monthly period is 30 days from activation.
//! - The key: only its SHA-256 is ever in an event (with a 4-character hint for the user to
//!   recognise it). Regenerating replaces the hash, which revokes the old key at once; cancelling
//!   revokes the key.
//! - Only the subscriber regenerates the key or cancels.
//! - Lifecycle (monthly and hybrid): the key works until `period_end` and then for a grace of
//!   [`RENEWAL_GRACE_DAYS`]; after that it is refused (`subscription_expired`). The state is a
//!   pure function of `period_end` and the clock ([`access_at`]), so the gateway decides it
//!   itself, exact to the second, and no event has to be written for the expiry to happen.
//!   A renewal payment (`api-subscription-renewal:<id>`) that confirms before the grace ends
//!   extends the period by 30 days from its end; one that confirms later starts a new period of
//!   30 days from the confirmation (as the listing fee does once delisted). The key stays.
//! - Credit (pay-per-request and hybrid) is topped up by a payment on the same subscription
//!   (`api-subscription-top-up:<id>`); the key stays.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::money::{MoneyError, Usdt};
use crate::service::Pricing;

pub const PERIOD_DAYS: i64 = 30;
/// Days a monthly subscription's key keeps working after `period_end` while its renewal is paid.
/// Three days: long enough for a renewal started on the last day (or over a weekend) to reach
/// its confirmations, short enough that unpaid use stays a tenth of a period at most.
pub const RENEWAL_GRACE_DAYS: i64 = 3;

/// Where a subscription stands at an instant (the app clock's now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    PendingPayment,
    Active,
    /// Past `period_end`, within the grace: the key still works.
    Grace,
    /// Past the grace: the key is refused until a renewal confirms.
    Expired,
    Cancelled,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::PendingPayment => "pending_payment",
            Access::Active => "active",
            Access::Grace => "grace",
            Access::Expired => "expired",
            Access::Cancelled => "cancelled",
        }
    }

    /// Whether a key in this state may call.
    pub fn admits(self) -> bool {
        matches!(self, Access::Active | Access::Grace)
    }
}

/// The end of the grace after `period_end`.
pub fn grace_until(period_end: OffsetDateTime) -> OffsetDateTime {
    period_end + Duration::days(RENEWAL_GRACE_DAYS)
}

/// The state of a subscription with this stored status and period end at `now` (no period:
/// pay-per-request, active until cancelled).
pub fn access_at(
    status: ApiSubscriptionStatus,
    period_end: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Access {
    match (status, period_end) {
        (ApiSubscriptionStatus::PendingPayment, _) => Access::PendingPayment,
        (ApiSubscriptionStatus::Cancelled, _) => Access::Cancelled,
        (ApiSubscriptionStatus::Active, None) => Access::Active,
        (ApiSubscriptionStatus::Active, Some(end)) if now < end => Access::Active,
        (ApiSubscriptionStatus::Active, Some(end)) if now < grace_until(end) => Access::Grace,
        (ApiSubscriptionStatus::Active, Some(_)) => Access::Expired,
    }
}

/// Where a renewal or top-up payment's period starts and ends: extended from the end while the
/// grace runs, from `at` once it has expired.
pub fn renewed_period(
    period_end: OffsetDateTime,
    at: OffsetDateTime,
) -> (OffsetDateTime, OffsetDateTime) {
    let start = if at < grace_until(period_end) {
        period_end
    } else {
        at
    };
    (start, start + Duration::days(PERIOD_DAYS))
}

/// What the store keeps of a key: its SHA-256 (hex) and the last 4 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDigest {
    pub sha256: String,
    pub hint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiSubscriptionStatus {
    PendingPayment,
    Active,
    Cancelled,
}

impl ApiSubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiSubscriptionStatus::PendingPayment => "pending_payment",
            ApiSubscriptionStatus::Active => "active",
            ApiSubscriptionStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiSubscriptionError {
    #[error("no such subscription")]
    NotFound,
    #[error("the subscription already exists")]
    AlreadyExists,
    #[error("the service is not taking new subscriptions (deactivated, or its model is not on the marketplace)")]
    ServiceNotAccepting,
    #[error("a pay-per-request service needs prepaid credit: pass a positive 'credit'")]
    CreditRequired,
    #[error("this service has no per-use pricing, so it takes no prepaid credit")]
    CreditNotAccepted,
    #[error("an amount is due, so a payment must be attached")]
    PaymentRequired,
    #[error("only the subscriber may do this")]
    NotSubscriber,
    #[error("the subscription is cancelled")]
    Cancelled,
    #[error("payment {payment_id} is not the one this subscription awaits")]
    UnknownPayment { payment_id: String },
    #[error("a pay-per-request subscription has no period to renew; top up its credit instead")]
    NothingToRenew,
    #[error("the subscription is not active yet: its first payment has not confirmed")]
    NotActive,
    #[error("a top-up must be greater than zero")]
    TopUpNotPositive,
    #[error("the payment is {paid} USDT, a renewal is {price} USDT")]
    WrongRenewalAmount { paid: Usdt, price: Usdt },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl ApiSubscriptionError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ApiSubscriptionError::CreditRequired | ApiSubscriptionError::CreditNotAccepted => {
                Some("credit")
            }
            ApiSubscriptionError::TopUpNotPositive => Some("amount"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTerms {
    pub service_id: String,
    pub service_owner: String,
    pub model_id: String,
    pub pricing: Pricing,
    pub pricing_version: u32,
    /// Active and its model on the marketplace, checked by the application layer just now.
    pub accepting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwaitedPayment {
    pub payment_id: String,
    pub amount: Usdt,
}

#[allow(
    clippy::large_enum_variant,
    reason = "a command is built once per request and moved, never stored in bulk"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiSubscriptionCommand {
    Subscribe {
        subscription_id: String,
        consumer: String,
        terms: ServiceTerms,
        credit: Usdt,
        key: KeyDigest,
        payment: Option<AwaitedPayment>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The awaited payment confirmed (sent by the reactor).
    Activate {
        payment_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    RegenerateKey {
        actor: String,
        key: KeyDigest,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Cancel {
        actor: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A renewal payment confirmed (sent by the reactor with the amount the payment was for).
    Renew {
        payment_id: String,
        amount: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A top-up payment confirmed (sent by the reactor).
    AddCredit {
        payment_id: String,
        amount: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiSubscriptionEvent {
    ApiSubscriptionRequested {
        subscription_id: String,
        consumer: String,
        service_id: String,
        service_owner: String,
        model_id: String,
        pricing: Pricing,
        pricing_version: u32,
        /// Monthly fee + credit.
        amount_due: Usdt,
        credit: Usdt,
        payment_id: Option<String>,
        key: KeyDigest,
        #[serde(with = "time::serde::rfc3339")]
        requested_at: OffsetDateTime,
    },
    ApiSubscriptionActivated {
        subscription_id: String,
        consumer: String,
        service_id: String,
        model_id: String,
        payment_id: Option<String>,
        credit_added: Usdt,
        /// None for pay-per-request (no period).
        #[serde(with = "time::serde::rfc3339::option")]
        period_end: Option<OffsetDateTime>,
        #[serde(with = "time::serde::rfc3339")]
        activated_at: OffsetDateTime,
    },
    ApiKeyRegenerated {
        subscription_id: String,
        revoked: KeyDigest,
        key: KeyDigest,
        #[serde(with = "time::serde::rfc3339")]
        regenerated_at: OffsetDateTime,
    },
    ApiSubscriptionCancelled {
        subscription_id: String,
        revoked: KeyDigest,
        #[serde(with = "time::serde::rfc3339")]
        cancelled_at: OffsetDateTime,
    },
    /// A renewal payment confirmed: the period now runs from `period_start` to `period_end`
    /// (`period_start` is the old end, or the confirmation once the old period had expired).
    ApiSubscriptionRenewed {
        subscription_id: String,
        payment_id: String,
        amount: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        period_start: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        period_end: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        renewed_at: OffsetDateTime,
    },
    /// A top-up payment confirmed: the prepaid credit grows by `credit_added`.
    ApiSubscriptionCreditAdded {
        subscription_id: String,
        payment_id: String,
        credit_added: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        added_at: OffsetDateTime,
    },
}

impl DomainEvent for ApiSubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            ApiSubscriptionEvent::ApiSubscriptionRequested { .. } => "ApiSubscriptionRequested",
            ApiSubscriptionEvent::ApiSubscriptionActivated { .. } => "ApiSubscriptionActivated",
            ApiSubscriptionEvent::ApiKeyRegenerated { .. } => "ApiKeyRegenerated",
            ApiSubscriptionEvent::ApiSubscriptionCancelled { .. } => "ApiSubscriptionCancelled",
            ApiSubscriptionEvent::ApiSubscriptionRenewed { .. } => "ApiSubscriptionRenewed",
            ApiSubscriptionEvent::ApiSubscriptionCreditAdded { .. } => "ApiSubscriptionCreditAdded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSubscription {
    pub requested: Option<ApiSubscriptionEvent>,
    pub status: Option<ApiSubscriptionStatus>,
    pub key: Option<KeyDigest>,
    /// Facts a command's answer shows (read from the store, not from a view that may lag).
    #[serde(default)]
    pub credit_added: Usdt,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub activated_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub period_end: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub cancelled_at: Option<OffsetDateTime>,
    /// Renewal and top-up payments applied (a repeated confirmation adds nothing).
    #[serde(default)]
    pub applied_payments: Vec<String>,
}

pub struct ApiSubscriptionServices;

impl ApiSubscription {
    fn requested(&self) -> Result<&ApiSubscriptionEvent, ApiSubscriptionError> {
        self.requested
            .as_ref()
            .ok_or(ApiSubscriptionError::NotFound)
    }

    fn subscriber_acting(&self, actor: &str) -> Result<(String, KeyDigest), ApiSubscriptionError> {
        let ApiSubscriptionEvent::ApiSubscriptionRequested {
            subscription_id,
            consumer,
            ..
        } = self.requested()?
        else {
            return Err(ApiSubscriptionError::NotFound);
        };
        if consumer != actor {
            return Err(ApiSubscriptionError::NotSubscriber);
        }
        if self.status == Some(ApiSubscriptionStatus::Cancelled) {
            return Err(ApiSubscriptionError::Cancelled);
        }
        let key = self.key.clone().ok_or(ApiSubscriptionError::NotFound)?;
        Ok((subscription_id.clone(), key))
    }

    /// The pricing the subscription was made at.
    pub fn pricing(&self) -> Option<&Pricing> {
        match &self.requested {
            Some(ApiSubscriptionEvent::ApiSubscriptionRequested { pricing, .. }) => Some(pricing),
            _ => None,
        }
    }

    /// Where the subscription stands at `now`.
    pub fn access_at(&self, now: OffsetDateTime) -> Option<Access> {
        Some(access_at(self.status?, self.period_end, now))
    }

    /// The price of a renewal the subscriber may ask for now (the monthly fee subscribed at).
    pub fn renewal_price(&self, actor: &str) -> Result<Usdt, ApiSubscriptionError> {
        self.subscriber_acting(actor)?;
        match self.pricing() {
            Some(Pricing::PayPerRequest { .. }) | None => Err(ApiSubscriptionError::NothingToRenew),
            Some(pricing) if self.period_end.is_some() => Ok(pricing.monthly_fee()),
            Some(_) => Err(ApiSubscriptionError::NotActive),
        }
    }

    /// Checks a top-up the subscriber asks for.
    pub fn check_top_up(&self, actor: &str, amount: Usdt) -> Result<(), ApiSubscriptionError> {
        self.subscriber_acting(actor)?;
        if !amount.is_positive() {
            return Err(ApiSubscriptionError::TopUpNotPositive);
        }
        match self.pricing() {
            Some(Pricing::Monthly { .. }) | None => Err(ApiSubscriptionError::CreditNotAccepted),
            Some(_) => Ok(()),
        }
    }

    /// The subscription's id, status and whether `payment_id` was applied already, for the
    /// commands a confirmed payment sends.
    fn paid_into(&self, payment_id: &str) -> Result<(String, bool), ApiSubscriptionError> {
        let ApiSubscriptionEvent::ApiSubscriptionRequested {
            subscription_id, ..
        } = self.requested()?
        else {
            return Err(ApiSubscriptionError::NotFound);
        };
        if self.applied_payments.iter().any(|p| p == payment_id) {
            return Ok((subscription_id.clone(), true));
        }
        match self.status {
            Some(ApiSubscriptionStatus::Cancelled) => Err(ApiSubscriptionError::Cancelled),
            Some(ApiSubscriptionStatus::Active) => Ok((subscription_id.clone(), false)),
            _ => Err(ApiSubscriptionError::NotActive),
        }
    }

    fn activation(&self, payment_id: Option<String>, at: OffsetDateTime) -> ApiSubscriptionEvent {
        let (subscription_id, consumer, service_id, model_id, pricing, credit) =
            match &self.requested {
                Some(ApiSubscriptionEvent::ApiSubscriptionRequested {
                    subscription_id,
                    consumer,
                    service_id,
                    model_id,
                    pricing,
                    credit,
                    ..
                }) => (
                    subscription_id.clone(),
                    consumer.clone(),
                    service_id.clone(),
                    model_id.clone(),
                    Some(pricing),
                    *credit,
                ),
                _ => Default::default(),
            };
        let period_end = match pricing {
            Some(Pricing::PayPerRequest { .. }) | None => None,
            Some(_) => Some(at + Duration::days(PERIOD_DAYS)),
        };
        ApiSubscriptionEvent::ApiSubscriptionActivated {
            subscription_id,
            consumer,
            service_id,
            model_id,
            payment_id,
            credit_added: credit,
            period_end,
            activated_at: at,
        }
    }
}

/// What a new subscription owes up front (see the module docs).
pub fn amount_due(pricing: &Pricing, credit: Usdt) -> Result<Usdt, ApiSubscriptionError> {
    if credit.is_negative() {
        return Err(ApiSubscriptionError::CreditRequired);
    }
    match pricing {
        Pricing::PayPerRequest { .. } if !credit.is_positive() => {
            return Err(ApiSubscriptionError::CreditRequired)
        }
        Pricing::Monthly { .. } if credit != Usdt::ZERO => {
            return Err(ApiSubscriptionError::CreditNotAccepted)
        }
        _ => {}
    }
    Ok(pricing.monthly_fee().checked_add(credit)?)
}

impl Aggregate for ApiSubscription {
    const TYPE: &'static str = "api_subscription";
    type Command = ApiSubscriptionCommand;
    type Event = ApiSubscriptionEvent;
    type Error = ApiSubscriptionError;
    type Services = ApiSubscriptionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ApiSubscriptionCommand::Subscribe {
                subscription_id,
                consumer,
                terms,
                credit,
                key,
                payment,
                at,
            } => {
                if self.requested.is_some() {
                    return Err(ApiSubscriptionError::AlreadyExists);
                }
                if !terms.accepting {
                    return Err(ApiSubscriptionError::ServiceNotAccepting);
                }
                let due = amount_due(&terms.pricing, credit)?;
                let payment_id = match (&payment, due.is_positive()) {
                    (Some(payment), true) if payment.amount == due => {
                        Some(payment.payment_id.clone())
                    }
                    (None, false) => None,
                    _ => return Err(ApiSubscriptionError::PaymentRequired),
                };
                let free = payment_id.is_none();
                sink.write(
                    ApiSubscriptionEvent::ApiSubscriptionRequested {
                        subscription_id,
                        consumer,
                        service_id: terms.service_id,
                        service_owner: terms.service_owner,
                        model_id: terms.model_id,
                        pricing: terms.pricing,
                        pricing_version: terms.pricing_version,
                        amount_due: due,
                        credit,
                        payment_id,
                        key,
                        requested_at: at,
                    },
                    self,
                )
                .await;
                if free {
                    let activated = self.activation(None, at);
                    sink.write(activated, self).await;
                }
            }
            ApiSubscriptionCommand::Activate { payment_id, at } => {
                let ApiSubscriptionEvent::ApiSubscriptionRequested {
                    payment_id: awaited,
                    ..
                } = self.requested()?
                else {
                    return Err(ApiSubscriptionError::NotFound);
                };
                if awaited.as_deref() != Some(payment_id.as_str()) {
                    return Err(ApiSubscriptionError::UnknownPayment { payment_id });
                }
                match self.status {
                    // Already active (a repeated confirmation): nothing to add.
                    Some(ApiSubscriptionStatus::Active) => {}
                    Some(ApiSubscriptionStatus::Cancelled) => {
                        return Err(ApiSubscriptionError::Cancelled)
                    }
                    _ => {
                        let activated = self.activation(Some(payment_id), at);
                        sink.write(activated, self).await;
                    }
                }
            }
            ApiSubscriptionCommand::RegenerateKey { actor, key, at } => {
                let (subscription_id, revoked) = self.subscriber_acting(&actor)?;
                sink.write(
                    ApiSubscriptionEvent::ApiKeyRegenerated {
                        subscription_id,
                        revoked,
                        key,
                        regenerated_at: at,
                    },
                    self,
                )
                .await;
            }
            ApiSubscriptionCommand::Renew {
                payment_id,
                amount,
                at,
            } => {
                let (subscription_id, applied) = self.paid_into(&payment_id)?;
                if applied {
                    return Ok(());
                }
                let price = match self.pricing() {
                    Some(Pricing::PayPerRequest { .. }) | None => {
                        return Err(ApiSubscriptionError::NothingToRenew)
                    }
                    Some(pricing) => pricing.monthly_fee(),
                };
                if amount != price {
                    return Err(ApiSubscriptionError::WrongRenewalAmount {
                        paid: amount,
                        price,
                    });
                }
                let end = self.period_end.ok_or(ApiSubscriptionError::NotActive)?;
                let (period_start, period_end) = renewed_period(end, at);
                sink.write(
                    ApiSubscriptionEvent::ApiSubscriptionRenewed {
                        subscription_id,
                        payment_id,
                        amount,
                        period_start,
                        period_end,
                        renewed_at: at,
                    },
                    self,
                )
                .await;
            }
            ApiSubscriptionCommand::AddCredit {
                payment_id,
                amount,
                at,
            } => {
                let (subscription_id, applied) = self.paid_into(&payment_id)?;
                if applied {
                    return Ok(());
                }
                if !amount.is_positive() {
                    return Err(ApiSubscriptionError::TopUpNotPositive);
                }
                if matches!(self.pricing(), Some(Pricing::Monthly { .. }) | None) {
                    return Err(ApiSubscriptionError::CreditNotAccepted);
                }
                sink.write(
                    ApiSubscriptionEvent::ApiSubscriptionCreditAdded {
                        subscription_id,
                        payment_id,
                        credit_added: amount,
                        added_at: at,
                    },
                    self,
                )
                .await;
            }
            ApiSubscriptionCommand::Cancel { actor, at } => {
                let (subscription_id, revoked) = self.subscriber_acting(&actor)?;
                sink.write(
                    ApiSubscriptionEvent::ApiSubscriptionCancelled {
                        subscription_id,
                        revoked,
                        cancelled_at: at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ApiSubscriptionEvent::ApiSubscriptionRequested { ref key, .. } => {
                self.key = Some(key.clone());
                self.status = Some(ApiSubscriptionStatus::PendingPayment);
                self.requested = Some(event);
            }
            ApiSubscriptionEvent::ApiSubscriptionActivated {
                credit_added,
                period_end,
                activated_at,
                ..
            } => {
                self.status = Some(ApiSubscriptionStatus::Active);
                self.credit_added = self
                    .credit_added
                    .checked_add(credit_added)
                    .unwrap_or(self.credit_added);
                self.activated_at.get_or_insert(activated_at);
                if period_end.is_some() {
                    self.period_end = period_end;
                }
            }
            ApiSubscriptionEvent::ApiKeyRegenerated { key, .. } => self.key = Some(key),
            ApiSubscriptionEvent::ApiSubscriptionCancelled { cancelled_at, .. } => {
                self.status = Some(ApiSubscriptionStatus::Cancelled);
                self.cancelled_at = Some(cancelled_at);
            }
            ApiSubscriptionEvent::ApiSubscriptionRenewed {
                payment_id,
                period_end,
                ..
            } => {
                self.period_end = Some(period_end);
                self.applied_payments.push(payment_id);
            }
            ApiSubscriptionEvent::ApiSubscriptionCreditAdded {
                payment_id,
                credit_added,
                ..
            } => {
                self.credit_added = self
                    .credit_added
                    .checked_add(credit_added)
                    .unwrap_or(self.credit_added);
                self.applied_payments.push(payment_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-10-01 00:00 UTC);

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap()
    }

    fn terms(pricing: Pricing) -> ServiceTerms {
        ServiceTerms {
            service_id: "s1".into(),
            service_owner: "owner".into(),
            model_id: "m1".into(),
            pricing,
            pricing_version: 1,
            accepting: true,
        }
    }

    fn key(n: u8) -> KeyDigest {
        KeyDigest {
            sha256: format!("{n:02x}").repeat(32),
            hint: "abcd".into(),
        }
    }

    fn subscribe(
        pricing: Pricing,
        credit: &str,
        payment: Option<(&str, &str)>,
    ) -> ApiSubscriptionCommand {
        ApiSubscriptionCommand::Subscribe {
            subscription_id: "sub1".into(),
            consumer: "c1".into(),
            terms: terms(pricing),
            credit: usdt(credit),
            key: key(1),
            payment: payment.map(|(id, amount)| AwaitedPayment {
                payment_id: id.into(),
                amount: usdt(amount),
            }),
            at: T0,
        }
    }

    fn monthly(price: &str) -> Pricing {
        Pricing::Monthly {
            price_per_month: usdt(price),
        }
    }

    #[test]
    fn a_free_service_activates_at_once() {
        let events = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(monthly("0"), "0", None))
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[1],
            ApiSubscriptionEvent::ApiSubscriptionActivated { period_end: Some(end), .. }
                if *end == T0 + Duration::days(30)
        ));
    }

    #[test]
    fn a_paid_service_waits_for_its_payment_of_exactly_the_amount_due() {
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(monthly("10"), "0", None))
            .then_expect_error(ApiSubscriptionError::PaymentRequired);
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(monthly("10"), "0", Some(("p1", "9"))))
            .then_expect_error(ApiSubscriptionError::PaymentRequired);
        let events = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(monthly("10"), "0", Some(("p1", "10"))))
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 1);
        let requested = events[0].clone();
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(vec![requested.clone()])
            .when(ApiSubscriptionCommand::Activate {
                payment_id: "other".into(),
                at: T0,
            })
            .then_expect_error(ApiSubscriptionError::UnknownPayment {
                payment_id: "other".into(),
            });
        let activated = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(vec![requested])
            .when(ApiSubscriptionCommand::Activate {
                payment_id: "p1".into(),
                at: T0,
            })
            .inspect_result()
            .unwrap();
        assert_eq!(activated.len(), 1);
    }

    #[test]
    fn pay_per_request_needs_credit_and_monthly_takes_none() {
        let ppr = Pricing::PayPerRequest {
            price_per_request: usdt("0.01"),
            price_per_1k_input_tokens: Usdt::ZERO,
            price_per_1k_output_tokens: Usdt::ZERO,
        };
        assert_eq!(
            amount_due(&ppr, Usdt::ZERO),
            Err(ApiSubscriptionError::CreditRequired)
        );
        assert_eq!(amount_due(&ppr, usdt("5")), Ok(usdt("5")));
        assert_eq!(
            amount_due(&monthly("10"), usdt("5")),
            Err(ApiSubscriptionError::CreditNotAccepted)
        );
        let hybrid = Pricing::Hybrid {
            price_per_month: usdt("10"),
            included_requests: 100,
            included_tokens: 1000,
            price_per_request: usdt("0.01"),
            price_per_1k_input_tokens: Usdt::ZERO,
            price_per_1k_output_tokens: Usdt::ZERO,
        };
        assert_eq!(amount_due(&hybrid, usdt("2.5")), Ok(usdt("12.5")));
    }

    #[test]
    fn a_service_not_accepting_refuses_subscriptions() {
        let mut command = subscribe(monthly("0"), "0", None);
        if let ApiSubscriptionCommand::Subscribe { terms, .. } = &mut command {
            terms.accepting = false;
        }
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(command)
            .then_expect_error(ApiSubscriptionError::ServiceNotAccepting);
    }

    #[test]
    fn regenerating_revokes_the_old_key_and_only_the_subscriber_may() {
        let requested = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(monthly("0"), "0", None))
            .inspect_result()
            .unwrap();
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(requested.clone())
            .when(ApiSubscriptionCommand::RegenerateKey {
                actor: "someone".into(),
                key: key(2),
                at: T0,
            })
            .then_expect_error(ApiSubscriptionError::NotSubscriber);
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(requested)
            .when(ApiSubscriptionCommand::RegenerateKey {
                actor: "c1".into(),
                key: key(2),
                at: T0,
            })
            .then_expect_events(vec![ApiSubscriptionEvent::ApiKeyRegenerated {
                subscription_id: "sub1".into(),
                revoked: key(1),
                key: key(2),
                regenerated_at: T0,
            }]);
    }

    fn active_monthly(price: &str) -> Vec<ApiSubscriptionEvent> {
        let requested = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(monthly(price), "0", Some(("p1", price))))
            .inspect_result()
            .unwrap();
        let activated = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(requested.clone())
            .when(ApiSubscriptionCommand::Activate {
                payment_id: "p1".into(),
                at: T0,
            })
            .inspect_result()
            .unwrap();
        requested.into_iter().chain(activated).collect()
    }

    fn renew(payment_id: &str, amount: &str, at: OffsetDateTime) -> ApiSubscriptionCommand {
        ApiSubscriptionCommand::Renew {
            payment_id: payment_id.into(),
            amount: usdt(amount),
            at,
        }
    }

    #[test]
    fn a_monthly_key_works_to_the_end_of_the_grace_and_not_a_second_longer() {
        let end = T0 + Duration::days(30);
        let status = ApiSubscriptionStatus::Active;
        assert_eq!(
            access_at(status, Some(end), end - Duration::seconds(1)),
            Access::Active
        );
        assert_eq!(access_at(status, Some(end), end), Access::Grace);
        let grace_end = end + Duration::days(RENEWAL_GRACE_DAYS);
        assert_eq!(
            access_at(status, Some(end), grace_end - Duration::seconds(1)),
            Access::Grace
        );
        assert_eq!(access_at(status, Some(end), grace_end), Access::Expired);
        assert!(!Access::Expired.admits());
        assert!(Access::Grace.admits());
        // Pay-per-request has no period: active until cancelled.
        assert_eq!(access_at(status, None, grace_end), Access::Active);
    }

    #[test]
    fn a_renewal_inside_the_grace_extends_thirty_days_from_the_old_end() {
        let end = T0 + Duration::days(30);
        let at = end + Duration::days(2);
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(active_monthly("10"))
            .when(renew("p2", "10", at))
            .then_expect_events(vec![ApiSubscriptionEvent::ApiSubscriptionRenewed {
                subscription_id: "sub1".into(),
                payment_id: "p2".into(),
                amount: usdt("10"),
                period_start: end,
                period_end: end + Duration::days(30),
                renewed_at: at,
            }]);
    }

    #[test]
    fn a_renewal_after_the_grace_starts_a_new_period_from_its_confirmation() {
        let at = T0 + Duration::days(40);
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(active_monthly("10"))
            .when(renew("p2", "10", at))
            .then_expect_events(vec![ApiSubscriptionEvent::ApiSubscriptionRenewed {
                subscription_id: "sub1".into(),
                payment_id: "p2".into(),
                amount: usdt("10"),
                period_start: at,
                period_end: at + Duration::days(30),
                renewed_at: at,
            }]);
    }

    #[test]
    fn a_renewal_of_the_wrong_amount_or_a_repeated_one_changes_nothing() {
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(active_monthly("10"))
            .when(renew("p2", "9", T0))
            .then_expect_error(ApiSubscriptionError::WrongRenewalAmount {
                paid: usdt("9"),
                price: usdt("10"),
            });
        let mut given = active_monthly("10");
        given.extend(
            TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
                .given(given.clone())
                .when(renew("p2", "10", T0))
                .inspect_result()
                .unwrap(),
        );
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(given)
            .when(renew("p2", "10", T0 + Duration::days(1)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn pay_per_request_tops_up_its_credit_and_has_nothing_to_renew() {
        let ppr = Pricing::PayPerRequest {
            price_per_request: usdt("0.01"),
            price_per_1k_input_tokens: Usdt::ZERO,
            price_per_1k_output_tokens: Usdt::ZERO,
        };
        let requested = TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given_no_previous_events()
            .when(subscribe(ppr, "1", Some(("p1", "1"))))
            .inspect_result()
            .unwrap();
        let mut subscription = ApiSubscription::default();
        for event in requested.clone() {
            subscription.apply(event);
        }
        subscription.apply(subscription.activation(Some("p1".into()), T0));
        assert_eq!(
            subscription.renewal_price("c1"),
            Err(ApiSubscriptionError::NothingToRenew)
        );
        assert_eq!(
            subscription.check_top_up("c1", Usdt::ZERO),
            Err(ApiSubscriptionError::TopUpNotPositive)
        );
        assert_eq!(
            subscription.check_top_up("other", usdt("1")),
            Err(ApiSubscriptionError::NotSubscriber)
        );
        assert_eq!(subscription.check_top_up("c1", usdt("2")), Ok(()));
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(requested.clone())
            .when(ApiSubscriptionCommand::AddCredit {
                payment_id: "p2".into(),
                amount: usdt("2"),
                at: T0,
            })
            .then_expect_error(ApiSubscriptionError::NotActive);
        let mut active = requested;
        active.push(subscription.activation(Some("p1".into()), T0));
        TestFramework::<ApiSubscription>::with(ApiSubscriptionServices)
            .given(active)
            .when(ApiSubscriptionCommand::AddCredit {
                payment_id: "p2".into(),
                amount: usdt("2"),
                at: T0,
            })
            .then_expect_events(vec![ApiSubscriptionEvent::ApiSubscriptionCreditAdded {
                subscription_id: "sub1".into(),
                payment_id: "p2".into(),
                credit_added: usdt("2"),
                added_at: T0,
            }]);
    }

    #[test]
    fn a_monthly_subscription_takes_no_top_up_and_a_cancelled_one_no_renewal() {
        let mut subscription = ApiSubscription::default();
        for event in active_monthly("10") {
            subscription.apply(event);
        }
        assert_eq!(subscription.renewal_price("c1"), Ok(usdt("10")));
        assert_eq!(
            subscription.check_top_up("c1", usdt("1")),
            Err(ApiSubscriptionError::CreditNotAccepted)
        );
        subscription.apply(ApiSubscriptionEvent::ApiSubscriptionCancelled {
            subscription_id: "sub1".into(),
            revoked: key(1),
            cancelled_at: T0,
        });
        assert_eq!(
            subscription.renewal_price("c1"),
            Err(ApiSubscriptionError::Cancelled)
        );
    }
}
