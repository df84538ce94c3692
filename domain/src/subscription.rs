//! Platform subscriptions: the plans (data) and the `PlatformSubscription` aggregate, one per
//! user (aggregate id = the user id). A paid plan is requested with a payment; it becomes active
//! for 30 days when that payment confirms. Cancelling stops renewal; the paid period runs to its
//! end. A subscription paid while another is active starts when the active one ends.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::money::Usdt;

pub const SUBSCRIPTION_PERIOD_DAYS: i64 = 30;
/// A plan's requests and tokens are counted per 30-day usage period from the plan period's
/// start (a paid period is exactly one; the Free plan, which does not lapse, has one after
/// another from its first activation).
pub const PLAN_USAGE_PERIOD_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanId {
    Free,
    Basic,
    Pro,
    Enterprise,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub id: PlanId,
    pub name: &'static str,
    pub price_usd_per_month: i64,
    pub requests_per_month: u64,
    pub tokens_per_month: u64,
}

pub const PLANS: [Plan; 4] = [
    Plan {
        id: PlanId::Free,
        name: "Free",
        price_usd_per_month: 0,
        requests_per_month: 1_000,
        tokens_per_month: 100_000,
    },
    Plan {
        id: PlanId::Basic,
        name: "Basic",
        price_usd_per_month: 10,
        requests_per_month: 10_000,
        tokens_per_month: 2_000_000,
    },
    Plan {
        id: PlanId::Pro,
        name: "Pro",
        price_usd_per_month: 30,
        requests_per_month: 100_000,
        tokens_per_month: 20_000_000,
    },
    Plan {
        id: PlanId::Enterprise,
        name: "Enterprise",
        price_usd_per_month: 100,
        requests_per_month: 1_000_000,
        tokens_per_month: 200_000_000,
    },
];

/// A plan's monthly limits (the domain's `PLANS`, or a test deployment's override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    pub requests_per_month: u64,
    pub tokens_per_month: u64,
}

impl Plan {
    pub fn limits(&self) -> PlanLimits {
        PlanLimits {
            requests_per_month: self.requests_per_month,
            tokens_per_month: self.tokens_per_month,
        }
    }

    /// What `tokens` are worth under this plan: the plan's monthly price spread evenly over its
    /// monthly tokens (price × tokens / tokens per month), rounded once, half-even, to the
    /// micro-USDT. The receipt of a plan call shows it as the call's cost; nothing is charged
    /// per call (the plan's fee was paid), so the Free plan's calls are worth 0.
    pub fn worth_of(&self, tokens: u64) -> Usdt {
        if self.tokens_per_month == 0 {
            return Usdt::ZERO;
        }
        let exact = rust_decimal::Decimal::from(self.price_usd_per_month)
            * rust_decimal::Decimal::from(tokens)
            / rust_decimal::Decimal::from(self.tokens_per_month);
        Usdt::from_decimal_rounded(exact).unwrap_or(Usdt::ZERO)
    }
}

impl PlanId {
    pub fn as_str(&self) -> &'static str {
        match self {
            PlanId::Free => "free",
            PlanId::Basic => "basic",
            PlanId::Pro => "pro",
            PlanId::Enterprise => "enterprise",
        }
    }

    pub fn plan(&self) -> &'static Plan {
        match self {
            PlanId::Free => &PLANS[0],
            PlanId::Basic => &PLANS[1],
            PlanId::Pro => &PLANS[2],
            PlanId::Enterprise => &PLANS[3],
        }
    }

    pub fn price(&self) -> Usdt {
        Usdt::from_whole(self.plan().price_usd_per_month).unwrap_or(Usdt::ZERO)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("a payment for a subscription is already awaited ({payment_id})")]
    PaymentAlreadyAwaited { payment_id: String },
    #[error("a paid plan needs a payment")]
    PaymentRequired,
    #[error("no subscription awaits payment {payment_id}")]
    UnknownPayment { payment_id: String },
    #[error("there is no active paid subscription to cancel")]
    NothingToCancel,
    #[error("the subscription is already cancelled; it ends at {ends_at}")]
    AlreadyCancelled { ends_at: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionCommand {
    /// `payment_id` is the payment created for a paid plan (None for Free).
    Request {
        plan: PlanId,
        payment_id: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The awaited payment confirmed (sent by the payments reactor).
    Activate {
        payment_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Cancel {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    SubscriptionRequested {
        user_id: String,
        plan: PlanId,
        price: Usdt,
        payment_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    SubscriptionActivated {
        user_id: String,
        plan: PlanId,
        payment_id: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        starts_at: OffsetDateTime,
        /// None: the Free plan does not lapse.
        #[serde(with = "time::serde::rfc3339::option")]
        ends_at: Option<OffsetDateTime>,
    },
    SubscriptionCancelled {
        user_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// The paid period still runs until then.
        #[serde(with = "time::serde::rfc3339")]
        ends_at: OffsetDateTime,
    },
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            SubscriptionEvent::SubscriptionRequested { .. } => "SubscriptionRequested".to_string(),
            SubscriptionEvent::SubscriptionActivated { .. } => "SubscriptionActivated".to_string(),
            SubscriptionEvent::SubscriptionCancelled { .. } => "SubscriptionCancelled".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub plan: PlanId,
    pub starts_at: OffsetDateTime,
    pub ends_at: Option<OffsetDateTime>,
}

impl Period {
    /// The usage period (`PLAN_USAGE_PERIOD_DAYS`) `at` falls in: its number from the plan
    /// period's start, and its bounds (the last one ends with the plan period).
    pub fn usage_period(&self, at: OffsetDateTime) -> (i64, OffsetDateTime, OffsetDateTime) {
        let number = if at > self.starts_at {
            (at - self.starts_at).whole_days() / PLAN_USAGE_PERIOD_DAYS
        } else {
            0
        };
        let start = self.starts_at + time::Duration::days(number * PLAN_USAGE_PERIOD_DAYS);
        let mut end = start + time::Duration::days(PLAN_USAGE_PERIOD_DAYS);
        if let Some(ends_at) = self.ends_at {
            end = end.min(ends_at);
        }
        (number, start, end)
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PlatformSubscription {
    pub user_id: Option<String>,
    pub awaiting: Option<(PlanId, String)>,
    pub periods: Vec<Period>,
    pub cancelled: bool,
}

impl PlatformSubscription {
    /// The period in force at `at`, if any.
    pub fn active_at(&self, at: OffsetDateTime) -> Option<&Period> {
        self.periods
            .iter()
            .rev()
            .find(|p| p.starts_at <= at && p.ends_at.is_none_or(|end| at < end))
    }

    /// When the last paid period ends (a new paid period starts there, or now if later).
    fn paid_until(&self) -> Option<OffsetDateTime> {
        self.periods.iter().filter_map(|p| p.ends_at).max()
    }
}

pub struct SubscriptionServices;

/// The aggregate id is the user id; it travels with each command.
impl Aggregate for PlatformSubscription {
    const TYPE: &'static str = "platform_subscription";
    type Command = (String, SubscriptionCommand);
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = SubscriptionServices;

    async fn handle(
        &mut self,
        (user_id, command): Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            SubscriptionCommand::Request {
                plan,
                payment_id,
                at,
            } => {
                if let Some((_, awaited)) = &self.awaiting {
                    return Err(SubscriptionError::PaymentAlreadyAwaited {
                        payment_id: awaited.clone(),
                    });
                }
                match (plan, payment_id) {
                    (PlanId::Free, _) => {
                        sink.write(
                            SubscriptionEvent::SubscriptionActivated {
                                user_id,
                                plan,
                                payment_id: None,
                                starts_at: at,
                                ends_at: None,
                            },
                            self,
                        )
                        .await;
                    }
                    (_, None) => return Err(SubscriptionError::PaymentRequired),
                    (_, Some(payment_id)) => {
                        sink.write(
                            SubscriptionEvent::SubscriptionRequested {
                                user_id,
                                plan,
                                price: plan.price(),
                                payment_id,
                                at,
                            },
                            self,
                        )
                        .await;
                    }
                }
                Ok(())
            }
            SubscriptionCommand::Activate { payment_id, at } => {
                let Some((plan, awaited)) = self.awaiting.clone() else {
                    return Err(SubscriptionError::UnknownPayment { payment_id });
                };
                if awaited != payment_id {
                    return Err(SubscriptionError::UnknownPayment { payment_id });
                }
                let starts_at = self.paid_until().filter(|end| *end > at).unwrap_or(at);
                sink.write(
                    SubscriptionEvent::SubscriptionActivated {
                        user_id,
                        plan,
                        payment_id: Some(payment_id),
                        starts_at,
                        ends_at: Some(starts_at + time::Duration::days(SUBSCRIPTION_PERIOD_DAYS)),
                    },
                    self,
                )
                .await;
                Ok(())
            }
            SubscriptionCommand::Cancel { at } => {
                let Some(ends_at) = self.paid_until().filter(|end| *end > at) else {
                    return Err(SubscriptionError::NothingToCancel);
                };
                if self.cancelled {
                    return Err(SubscriptionError::AlreadyCancelled {
                        ends_at: ends_at.to_string(),
                    });
                }
                sink.write(
                    SubscriptionEvent::SubscriptionCancelled {
                        user_id,
                        at,
                        ends_at,
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
            SubscriptionEvent::SubscriptionRequested {
                user_id,
                plan,
                payment_id,
                ..
            } => {
                self.user_id = Some(user_id);
                self.awaiting = Some((plan, payment_id));
            }
            SubscriptionEvent::SubscriptionActivated {
                user_id,
                plan,
                starts_at,
                ends_at,
                payment_id,
            } => {
                self.user_id = Some(user_id);
                if payment_id.is_some() {
                    self.awaiting = None;
                    self.cancelled = false;
                }
                self.periods.push(Period {
                    plan,
                    starts_at,
                    ends_at,
                });
            }
            SubscriptionEvent::SubscriptionCancelled { .. } => self.cancelled = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type SubscriptionTest = TestFramework<PlatformSubscription>;
    const AT: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn requested() -> SubscriptionEvent {
        SubscriptionEvent::SubscriptionRequested {
            user_id: "u1".into(),
            plan: PlanId::Pro,
            price: PlanId::Pro.price(),
            payment_id: "p1".into(),
            at: AT,
        }
    }

    fn activated(starts_at: OffsetDateTime) -> SubscriptionEvent {
        SubscriptionEvent::SubscriptionActivated {
            user_id: "u1".into(),
            plan: PlanId::Pro,
            payment_id: Some("p1".into()),
            starts_at,
            ends_at: Some(starts_at + time::Duration::days(30)),
        }
    }

    #[test]
    fn a_plans_usage_periods_are_thirty_days_from_its_start() {
        let free = Period {
            plan: PlanId::Free,
            starts_at: AT,
            ends_at: None,
        };
        assert_eq!(
            free.usage_period(AT + time::Duration::days(29)),
            (0, AT, AT + time::Duration::days(30))
        );
        assert_eq!(
            free.usage_period(AT + time::Duration::days(65)),
            (
                2,
                AT + time::Duration::days(60),
                AT + time::Duration::days(90)
            )
        );
        let pro = Period {
            plan: PlanId::Pro,
            starts_at: AT,
            ends_at: Some(AT + time::Duration::days(20)),
        };
        assert_eq!(
            pro.usage_period(AT + time::Duration::days(1)).2,
            AT + time::Duration::days(20)
        );
    }

    #[test]
    fn a_plan_calls_worth_is_the_price_spread_over_the_plans_tokens() {
        // Basic: $10 for 2,000,000 tokens = $0.000005 a token.
        assert_eq!(
            PlanId::Basic.plan().worth_of(1_000),
            Usdt::parse("0.005").unwrap()
        );
        // Pro: $30 / 20,000,000 = 0.0000015 a token; 1 token rounds half-even to 0.000002.
        assert_eq!(
            PlanId::Pro.plan().worth_of(1),
            Usdt::parse("0.000002").unwrap()
        );
        assert_eq!(PlanId::Free.plan().worth_of(50_000), Usdt::ZERO);
    }

    #[test]
    fn the_plans_are_free_basic_pro_and_enterprise() {
        let prices: Vec<i64> = PLANS.iter().map(|p| p.price_usd_per_month).collect();
        assert_eq!(prices, [0, 10, 30, 100]);
    }

    #[test]
    fn a_paid_plan_waits_for_its_payment_then_runs_thirty_days() {
        SubscriptionTest::with(SubscriptionServices)
            .given(vec![requested()])
            .when((
                "u1".into(),
                SubscriptionCommand::Activate {
                    payment_id: "p1".into(),
                    at: AT,
                },
            ))
            .then_expect_events(vec![activated(AT)]);
    }

    #[test]
    fn another_payment_does_not_activate_it() {
        SubscriptionTest::with(SubscriptionServices)
            .given(vec![requested()])
            .when((
                "u1".into(),
                SubscriptionCommand::Activate {
                    payment_id: "p2".into(),
                    at: AT,
                },
            ))
            .then_expect_error(SubscriptionError::UnknownPayment {
                payment_id: "p2".into(),
            });
    }

    #[test]
    fn the_free_plan_activates_at_once_without_payment_and_a_paid_plan_needs_one() {
        SubscriptionTest::with(SubscriptionServices)
            .given_no_previous_events()
            .when((
                "u1".into(),
                SubscriptionCommand::Request {
                    plan: PlanId::Free,
                    payment_id: None,
                    at: AT,
                },
            ))
            .then_expect_events(vec![SubscriptionEvent::SubscriptionActivated {
                user_id: "u1".into(),
                plan: PlanId::Free,
                payment_id: None,
                starts_at: AT,
                ends_at: None,
            }]);
        SubscriptionTest::with(SubscriptionServices)
            .given_no_previous_events()
            .when((
                "u1".into(),
                SubscriptionCommand::Request {
                    plan: PlanId::Basic,
                    payment_id: None,
                    at: AT,
                },
            ))
            .then_expect_error(SubscriptionError::PaymentRequired);
    }

    #[test]
    fn cancelling_runs_to_the_end_of_the_paid_period() {
        SubscriptionTest::with(SubscriptionServices)
            .given(vec![requested(), activated(AT)])
            .when((
                "u1".into(),
                SubscriptionCommand::Cancel {
                    at: AT + time::Duration::days(3),
                },
            ))
            .then_expect_events(vec![SubscriptionEvent::SubscriptionCancelled {
                user_id: "u1".into(),
                at: AT + time::Duration::days(3),
                ends_at: AT + time::Duration::days(30),
            }]);
        let mut state = PlatformSubscription::default();
        state.apply(requested());
        state.apply(activated(AT));
        assert!(state.active_at(AT + time::Duration::days(29)).is_some());
        assert!(state.active_at(AT + time::Duration::days(30)).is_none());
    }

    #[test]
    fn a_renewal_paid_early_starts_when_the_current_period_ends() {
        let renewal = SubscriptionEvent::SubscriptionRequested {
            user_id: "u1".into(),
            plan: PlanId::Pro,
            price: PlanId::Pro.price(),
            payment_id: "p2".into(),
            at: AT,
        };
        SubscriptionTest::with(SubscriptionServices)
            .given(vec![requested(), activated(AT), renewal])
            .when((
                "u1".into(),
                SubscriptionCommand::Activate {
                    payment_id: "p2".into(),
                    at: AT + time::Duration::days(10),
                },
            ))
            .then_expect_events(vec![SubscriptionEvent::SubscriptionActivated {
                user_id: "u1".into(),
                plan: PlanId::Pro,
                payment_id: Some("p2".into()),
                starts_at: AT + time::Duration::days(30),
                ends_at: Some(AT + time::Duration::days(60)),
            }]);
    }
}
