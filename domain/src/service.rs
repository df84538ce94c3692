//! The `ApiService` aggregate: a model sold as an API, with its pricing and limits.
//!
//! Rules, all here:
//! - Only the model's manager creates a service for it, and only while the model is on the
//!   marketplace (listed or in grace); the application layer passes those facts in.
//! - Pricing is one of three models ([`Pricing`]); every price is a non-negative exact USDT amount.
//!   A pricing change gets a new `pricing_version` and applies to new subscriptions only: a
//!   subscription keeps the pricing it subscribed at (it copies it into its own events).
//! - Limits ([`RateLimits`]) are per key: requests per minute, hour and day, and a monthly quota
//!   of requests and tokens. A limit of `None` means unlimited.
//! - A service is created only for a model an engine here can serve ([`crate::serving`]): a
//!   model assessed not servable is refused with its reason (models recorded before uploads were
//!   assessed have no assessment and are not refused).
//! - Only the owner updates a service; a deactivated service takes no new subscriptions (and is
//!   off the marketplace) until activated again.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::money::Usdt;
use crate::serving::NotServable;

pub const NAME_CHARS_MAX: usize = 100;
pub const DESCRIPTION_CHARS_MAX: usize = 5000;

/// How a service charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
// Unknown keys are refused, as in every other body: a misspelt price must not pass as "no price".
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pricing {
    /// A flat monthly fee (zero: a free service).
    Monthly { price_per_month: Usdt },
    /// Prepaid credit drawn down per request and per 1,000 input/output tokens.
    PayPerRequest {
        #[serde(default = "zero")]
        price_per_request: Usdt,
        #[serde(default = "zero")]
        price_per_1k_input_tokens: Usdt,
        #[serde(default = "zero")]
        price_per_1k_output_tokens: Usdt,
    },
    /// A monthly fee with an included quota, then per use from prepaid credit.
    Hybrid {
        price_per_month: Usdt,
        included_requests: u64,
        included_tokens: u64,
        #[serde(default = "zero")]
        price_per_request: Usdt,
        #[serde(default = "zero")]
        price_per_1k_input_tokens: Usdt,
        #[serde(default = "zero")]
        price_per_1k_output_tokens: Usdt,
    },
}

fn zero() -> Usdt {
    Usdt::ZERO
}

impl Pricing {
    pub fn kind(&self) -> &'static str {
        match self {
            Pricing::Monthly { .. } => "monthly",
            Pricing::PayPerRequest { .. } => "pay_per_request",
            Pricing::Hybrid { .. } => "hybrid",
        }
    }

    /// What a subscriber pays up front each month (zero for pay-per-request).
    pub fn monthly_fee(&self) -> Usdt {
        match self {
            Pricing::Monthly { price_per_month }
            | Pricing::Hybrid {
                price_per_month, ..
            } => *price_per_month,
            Pricing::PayPerRequest { .. } => Usdt::ZERO,
        }
    }

    /// Whether usage beyond a subscription draws on prepaid credit.
    pub fn uses_credit(&self) -> bool {
        !matches!(self, Pricing::Monthly { .. })
    }

    /// The price the marketplace sorts by: the monthly fee, or the per-request price.
    pub fn sort_price(&self) -> Usdt {
        match self {
            Pricing::PayPerRequest {
                price_per_request, ..
            } => *price_per_request,
            other => other.monthly_fee(),
        }
    }

    fn prices(&self) -> Vec<Usdt> {
        match self {
            Pricing::Monthly { price_per_month } => vec![*price_per_month],
            Pricing::PayPerRequest {
                price_per_request,
                price_per_1k_input_tokens,
                price_per_1k_output_tokens,
            } => vec![
                *price_per_request,
                *price_per_1k_input_tokens,
                *price_per_1k_output_tokens,
            ],
            Pricing::Hybrid {
                price_per_month,
                price_per_request,
                price_per_1k_input_tokens,
                price_per_1k_output_tokens,
                ..
            } => vec![
                *price_per_month,
                *price_per_request,
                *price_per_1k_input_tokens,
                *price_per_1k_output_tokens,
            ],
        }
    }

    pub fn validate(&self) -> Result<(), ServiceError> {
        if self.prices().iter().any(Usdt::is_negative) {
            return Err(ServiceError::NegativePrice);
        }
        if let Pricing::PayPerRequest { .. } = self {
            if self.prices().iter().all(|p| !p.is_positive()) {
                return Err(ServiceError::FreePayPerRequest);
            }
        }
        Ok(())
    }
}

/// Per-key limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub requests_per_hour: Option<u32>,
    #[serde(default)]
    pub requests_per_day: Option<u32>,
    #[serde(default)]
    pub requests_per_month: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
}

impl RateLimits {
    pub fn validate(&self) -> Result<(), ServiceError> {
        let windows = [
            self.requests_per_minute,
            self.requests_per_hour,
            self.requests_per_day,
        ];
        if windows.contains(&Some(0))
            || self.requests_per_month == Some(0)
            || self.tokens_per_month == Some(0)
        {
            return Err(ServiceError::ZeroLimit);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDetails {
    pub name: String,
    pub description: String,
}

impl ServiceDetails {
    pub fn validated(self) -> Result<Self, ServiceError> {
        let name = crate::trimmed_within(&self.name, 1..=NAME_CHARS_MAX)
            .ok_or(ServiceError::InvalidName)?;
        let description = crate::trimmed_within(&self.description, 0..=DESCRIPTION_CHARS_MAX)
            .ok_or(ServiceError::DescriptionTooLong)?;
        Ok(Self { name, description })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("no such service")]
    NotFound,
    #[error("the service already exists")]
    AlreadyExists,
    #[error("the name must be 1 to {NAME_CHARS_MAX} characters, without control or bidirectional-override characters")]
    InvalidName,
    #[error("the description must be at most {DESCRIPTION_CHARS_MAX} characters, without control or bidirectional-override characters")]
    DescriptionTooLong,
    #[error("prices may not be negative")]
    NegativePrice,
    #[error("a pay-per-request service needs at least one positive price")]
    FreePayPerRequest,
    #[error("a limit of 0 would refuse every request; leave it out for unlimited")]
    ZeroLimit,
    #[error("only the model's owner may sell it as a service")]
    NotModelManager,
    #[error("the model is not on the marketplace (publish it, or renew its listing)")]
    ModelNotOnMarketplace,
    #[error("the model cannot be served, so it cannot be sold as an API: {reason}")]
    ModelNotServable { reason: NotServable },
    #[error("only the service's owner may change it")]
    NotOwner,
    #[error("nothing to change")]
    NothingToChange,
}

impl ServiceError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ServiceError::InvalidName => Some("name"),
            ServiceError::DescriptionTooLong => Some("description"),
            ServiceError::NegativePrice | ServiceError::FreePayPerRequest => Some("pricing"),
            ServiceError::ZeroLimit => Some("rate_limits"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceCommand {
    Create {
        service_id: String,
        owner: String,
        model_id: String,
        /// Facts from the model aggregate, checked by the application layer at this moment.
        actor_manages_model: bool,
        model_on_marketplace: bool,
        /// Why the model cannot be served, when its upload was assessed not servable.
        model_not_servable: Option<NotServable>,
        details: ServiceDetails,
        pricing: Pricing,
        rate_limits: RateLimits,
        /// Whether holders of a platform plan may call the model under their plan.
        included_in_plans: bool,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Update {
        actor: String,
        details: Option<ServiceDetails>,
        pricing: Option<Pricing>,
        rate_limits: Option<RateLimits>,
        active: Option<bool>,
        included_in_plans: Option<bool>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceEvent {
    ServiceCreated {
        service_id: String,
        owner: String,
        model_id: String,
        details: ServiceDetails,
        pricing: Pricing,
        pricing_version: u32,
        rate_limits: RateLimits,
        /// Services created before the flag existed were not included (the default).
        #[serde(default)]
        included_in_plans: bool,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    /// The creator included the service in platform plans, or took it out (from now on).
    ServicePlanInclusionChanged {
        service_id: String,
        included_in_plans: bool,
        #[serde(with = "time::serde::rfc3339")]
        changed_at: OffsetDateTime,
    },
    ServiceDetailsEdited {
        service_id: String,
        details: ServiceDetails,
        #[serde(with = "time::serde::rfc3339")]
        edited_at: OffsetDateTime,
    },
    /// Applies to subscriptions made from now on.
    ServicePricingChanged {
        service_id: String,
        pricing: Pricing,
        pricing_version: u32,
        #[serde(with = "time::serde::rfc3339")]
        changed_at: OffsetDateTime,
    },
    ServiceRateLimitsChanged {
        service_id: String,
        rate_limits: RateLimits,
        #[serde(with = "time::serde::rfc3339")]
        changed_at: OffsetDateTime,
    },
    ServiceDeactivated {
        service_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    ServiceActivated {
        service_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for ServiceEvent {
    fn event_type(&self) -> String {
        match self {
            ServiceEvent::ServiceCreated { .. } => "ServiceCreated",
            ServiceEvent::ServiceDetailsEdited { .. } => "ServiceDetailsEdited",
            ServiceEvent::ServicePricingChanged { .. } => "ServicePricingChanged",
            ServiceEvent::ServiceRateLimitsChanged { .. } => "ServiceRateLimitsChanged",
            ServiceEvent::ServicePlanInclusionChanged { .. } => "ServicePlanInclusionChanged",
            ServiceEvent::ServiceDeactivated { .. } => "ServiceDeactivated",
            ServiceEvent::ServiceActivated { .. } => "ServiceActivated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiService {
    pub id: Option<String>,
    pub owner: Option<String>,
    pub model_id: Option<String>,
    pub details: Option<ServiceDetails>,
    pub pricing: Option<Pricing>,
    pub pricing_version: u32,
    pub rate_limits: RateLimits,
    pub active: bool,
    pub included_in_plans: bool,
}

pub struct ServiceServices;

impl Aggregate for ApiService {
    const TYPE: &'static str = "api_service";
    type Command = ServiceCommand;
    type Event = ServiceEvent;
    type Error = ServiceError;
    type Services = ServiceServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ServiceCommand::Create {
                service_id,
                owner,
                model_id,
                actor_manages_model,
                model_on_marketplace,
                model_not_servable,
                details,
                pricing,
                rate_limits,
                included_in_plans,
                at,
            } => {
                if self.id.is_some() {
                    return Err(ServiceError::AlreadyExists);
                }
                if !actor_manages_model {
                    return Err(ServiceError::NotModelManager);
                }
                if !model_on_marketplace {
                    return Err(ServiceError::ModelNotOnMarketplace);
                }
                if let Some(reason) = model_not_servable {
                    return Err(ServiceError::ModelNotServable { reason });
                }
                let details = details.validated()?;
                pricing.validate()?;
                rate_limits.validate()?;
                sink.write(
                    ServiceEvent::ServiceCreated {
                        service_id,
                        owner,
                        model_id,
                        details,
                        pricing,
                        pricing_version: 1,
                        rate_limits,
                        included_in_plans,
                        created_at: at,
                    },
                    self,
                )
                .await;
            }
            ServiceCommand::Update {
                actor,
                details,
                pricing,
                rate_limits,
                active,
                included_in_plans,
                at,
            } => {
                let service_id = self.id.clone().ok_or(ServiceError::NotFound)?;
                if self.owner.as_deref() != Some(actor.as_str()) {
                    return Err(ServiceError::NotOwner);
                }
                // Decide everything first, then write.
                let mut events = Vec::new();
                if let Some(details) = details {
                    let details = details.validated()?;
                    if self.details.as_ref() != Some(&details) {
                        events.push(ServiceEvent::ServiceDetailsEdited {
                            service_id: service_id.clone(),
                            details,
                            edited_at: at,
                        });
                    }
                }
                if let Some(pricing) = pricing {
                    pricing.validate()?;
                    if self.pricing.as_ref() != Some(&pricing) {
                        events.push(ServiceEvent::ServicePricingChanged {
                            service_id: service_id.clone(),
                            pricing,
                            pricing_version: self.pricing_version + 1,
                            changed_at: at,
                        });
                    }
                }
                if let Some(rate_limits) = rate_limits {
                    rate_limits.validate()?;
                    if self.rate_limits != rate_limits {
                        events.push(ServiceEvent::ServiceRateLimitsChanged {
                            service_id: service_id.clone(),
                            rate_limits,
                            changed_at: at,
                        });
                    }
                }
                if let Some(included) = included_in_plans {
                    if included != self.included_in_plans {
                        events.push(ServiceEvent::ServicePlanInclusionChanged {
                            service_id: service_id.clone(),
                            included_in_plans: included,
                            changed_at: at,
                        });
                    }
                }
                match active {
                    Some(true) if !self.active => events.push(ServiceEvent::ServiceActivated {
                        service_id: service_id.clone(),
                        at,
                    }),
                    Some(false) if self.active => events.push(ServiceEvent::ServiceDeactivated {
                        service_id: service_id.clone(),
                        at,
                    }),
                    _ => {}
                }
                if events.is_empty() {
                    return Err(ServiceError::NothingToChange);
                }
                for event in events {
                    sink.write(event, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ServiceEvent::ServiceCreated {
                service_id,
                owner,
                model_id,
                details,
                pricing,
                pricing_version,
                rate_limits,
                included_in_plans,
                ..
            } => {
                self.included_in_plans = included_in_plans;
                self.id = Some(service_id);
                self.owner = Some(owner);
                self.model_id = Some(model_id);
                self.details = Some(details);
                self.pricing = Some(pricing);
                self.pricing_version = pricing_version;
                self.rate_limits = rate_limits;
                self.active = true;
            }
            ServiceEvent::ServiceDetailsEdited { details, .. } => self.details = Some(details),
            ServiceEvent::ServicePricingChanged {
                pricing,
                pricing_version,
                ..
            } => {
                self.pricing = Some(pricing);
                self.pricing_version = pricing_version;
            }
            ServiceEvent::ServiceRateLimitsChanged { rate_limits, .. } => {
                self.rate_limits = rate_limits
            }
            ServiceEvent::ServicePlanInclusionChanged {
                included_in_plans, ..
            } => self.included_in_plans = included_in_plans,
            ServiceEvent::ServiceDeactivated { .. } => self.active = false,
            ServiceEvent::ServiceActivated { .. } => self.active = true,
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

    fn created() -> ServiceEvent {
        ServiceEvent::ServiceCreated {
            service_id: "s1".into(),
            owner: "u1".into(),
            model_id: "m1".into(),
            details: ServiceDetails {
                name: "Chat".into(),
                description: String::new(),
            },
            pricing: Pricing::Monthly {
                price_per_month: usdt("10"),
            },
            pricing_version: 1,
            rate_limits: RateLimits::default(),
            included_in_plans: false,
            created_at: T0,
        }
    }

    fn create(manages: bool, on_marketplace: bool, pricing: Pricing) -> ServiceCommand {
        ServiceCommand::Create {
            service_id: "s1".into(),
            owner: "u1".into(),
            model_id: "m1".into(),
            actor_manages_model: manages,
            model_on_marketplace: on_marketplace,
            model_not_servable: None,
            details: ServiceDetails {
                name: " Chat ".into(),
                description: String::new(),
            },
            pricing,
            rate_limits: RateLimits::default(),
            included_in_plans: false,
            at: T0,
        }
    }

    #[test]
    fn a_service_needs_a_managed_model_on_the_marketplace() {
        let monthly = Pricing::Monthly {
            price_per_month: usdt("10"),
        };
        TestFramework::<ApiService>::with(ServiceServices)
            .given_no_previous_events()
            .when(create(false, true, monthly.clone()))
            .then_expect_error(ServiceError::NotModelManager);
        TestFramework::<ApiService>::with(ServiceServices)
            .given_no_previous_events()
            .when(create(true, false, monthly.clone()))
            .then_expect_error(ServiceError::ModelNotOnMarketplace);
        TestFramework::<ApiService>::with(ServiceServices)
            .given_no_previous_events()
            .when(create(true, true, monthly))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_model_no_engine_can_serve_gets_no_service_and_the_refusal_says_why() {
        let reason = NotServable::Architecture {
            architecture: "mamba".into(),
            supported: "llama".into(),
        };
        let ServiceCommand::Create {
            service_id,
            owner,
            model_id,
            details,
            pricing,
            rate_limits,
            included_in_plans,
            at,
            ..
        } = create(
            true,
            true,
            Pricing::Monthly {
                price_per_month: usdt("10"),
            },
        )
        else {
            unreachable!()
        };
        let refused = ServiceError::ModelNotServable {
            reason: reason.clone(),
        };
        assert!(refused.to_string().contains("'mamba'"), "{refused}");
        TestFramework::<ApiService>::with(ServiceServices)
            .given_no_previous_events()
            .when(ServiceCommand::Create {
                service_id,
                owner,
                model_id,
                actor_manages_model: true,
                model_on_marketplace: true,
                model_not_servable: Some(reason),
                details,
                pricing,
                rate_limits,
                included_in_plans,
                at,
            })
            .then_expect_error(refused);
    }

    #[test]
    fn prices_are_checked() {
        TestFramework::<ApiService>::with(ServiceServices)
            .given_no_previous_events()
            .when(create(
                true,
                true,
                Pricing::Monthly {
                    price_per_month: usdt("-1"),
                },
            ))
            .then_expect_error(ServiceError::NegativePrice);
        TestFramework::<ApiService>::with(ServiceServices)
            .given_no_previous_events()
            .when(create(
                true,
                true,
                Pricing::PayPerRequest {
                    price_per_request: Usdt::ZERO,
                    price_per_1k_input_tokens: Usdt::ZERO,
                    price_per_1k_output_tokens: Usdt::ZERO,
                },
            ))
            .then_expect_error(ServiceError::FreePayPerRequest);
    }

    #[test]
    fn a_pricing_change_gets_a_new_version_and_deactivation_is_an_event() {
        TestFramework::<ApiService>::with(ServiceServices)
            .given(vec![created()])
            .when(ServiceCommand::Update {
                actor: "u1".into(),
                details: None,
                pricing: Some(Pricing::Monthly {
                    price_per_month: usdt("12"),
                }),
                rate_limits: None,
                active: Some(false),
                included_in_plans: None,
                at: T0,
            })
            .then_expect_events(vec![
                ServiceEvent::ServicePricingChanged {
                    service_id: "s1".into(),
                    pricing: Pricing::Monthly {
                        price_per_month: usdt("12"),
                    },
                    pricing_version: 2,
                    changed_at: T0,
                },
                ServiceEvent::ServiceDeactivated {
                    service_id: "s1".into(),
                    at: T0,
                },
            ]);
    }

    #[test]
    fn only_the_owner_updates_and_an_empty_update_is_refused() {
        TestFramework::<ApiService>::with(ServiceServices)
            .given(vec![created()])
            .when(ServiceCommand::Update {
                actor: "u2".into(),
                details: None,
                pricing: None,
                rate_limits: None,
                active: Some(false),
                included_in_plans: None,
                at: T0,
            })
            .then_expect_error(ServiceError::NotOwner);
        TestFramework::<ApiService>::with(ServiceServices)
            .given(vec![created()])
            .when(ServiceCommand::Update {
                actor: "u1".into(),
                details: None,
                pricing: None,
                rate_limits: None,
                active: Some(true),
                included_in_plans: None,
                at: T0,
            })
            .then_expect_error(ServiceError::NothingToChange);
    }

    #[test]
    fn the_creator_includes_a_service_in_plans_and_takes_it_out() {
        TestFramework::<ApiService>::with(ServiceServices)
            .given(vec![created()])
            .when(ServiceCommand::Update {
                actor: "u1".into(),
                details: None,
                pricing: None,
                rate_limits: None,
                active: None,
                included_in_plans: Some(true),
                at: T0,
            })
            .then_expect_events(vec![ServiceEvent::ServicePlanInclusionChanged {
                service_id: "s1".into(),
                included_in_plans: true,
                changed_at: T0,
            }]);
        TestFramework::<ApiService>::with(ServiceServices)
            .given(vec![created()])
            .when(ServiceCommand::Update {
                actor: "u1".into(),
                details: None,
                pricing: None,
                rate_limits: None,
                active: None,
                included_in_plans: Some(false),
                at: T0,
            })
            .then_expect_error(ServiceError::NothingToChange);
        TestFramework::<ApiService>::with(ServiceServices)
            .given(vec![created()])
            .when(ServiceCommand::Update {
                actor: "u2".into(),
                details: None,
                pricing: None,
                rate_limits: None,
                active: None,
                included_in_plans: Some(true),
                at: T0,
            })
            .then_expect_error(ServiceError::NotOwner);
    }

    #[test]
    fn a_service_created_before_the_flag_is_not_included() {
        let old = r#"{"ServiceCreated":{"service_id":"s1","owner":"u1","model_id":"m1","details":{"name":"Chat","description":""},"pricing":{"type":"monthly","price_per_month":"10"},"pricing_version":1,"rate_limits":{},"created_at":"2026-10-01T00:00:00Z"}}"#;
        let event: ServiceEvent = serde_json::from_str(old).unwrap();
        let mut service = ApiService::default();
        service.apply(event);
        assert!(!service.included_in_plans);
    }

    #[test]
    fn a_zero_limit_is_refused() {
        let limits = RateLimits {
            requests_per_minute: Some(0),
            ..RateLimits::default()
        };
        assert_eq!(limits.validate(), Err(ServiceError::ZeroLimit));
    }
}

#[cfg(test)]
mod strict_bodies {
    use super::*;

    #[test]
    fn pricing_and_limits_refuse_unknown_keys() {
        let ok: Pricing =
            serde_json::from_str(r#"{"type":"monthly","price_per_month":"1"}"#).unwrap();
        assert!(matches!(ok, Pricing::Monthly { .. }));
        for bad in [
            r#"{"type":"monthly","price_per_month":"1","price_per_mont":"0"}"#,
            r#"{"type":"pay_per_request","price_per_requests":"1"}"#,
        ] {
            assert!(serde_json::from_str::<Pricing>(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RateLimits>(r#"{"requests_per_minit":1}"#).is_err());
    }
}
