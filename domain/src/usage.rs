//! Metering of the OpenAI-compatible API: one `ApiCallMetered` event per request, the fact that
//! billing, quotas, credit and revenue distribution read. Each call is its own aggregate (the
//! request id), so metering never contends on a shared stream: two calls of one key are two
//! independent appends, and the same request id can be metered only once.
//!
//! The price of a call (`call_cost`) lives here too, so the gateway, the projections and an
//! auditor's replay compute it by one rule.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::money::{MoneyError, Usdt};
use crate::service::Pricing;
use crate::subscription::PlanId;

/// The aggregate type of metered calls in the event store.
pub const API_CALL_AGGREGATE: &str = "api_call";
pub const API_CALL_METERED: &str = "ApiCallMetered";

/// How a metered call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// The model ended its answer (or reached a stop sequence).
    Completed,
    /// `max_tokens` or the context window ended it.
    Length,
    /// The client went away mid-stream; what was delivered is billed.
    ClientDisconnected,
    /// The node failed or vanished mid-answer; what was delivered is billed.
    NodeFailed,
}

/// Usage of a subscription within one period, before the call being priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodUsage {
    pub requests: u64,
    pub tokens: u64,
}

/// What entitled a call, recorded on its metering event: an API subscription (paid by the
/// subscription's own pricing) or a platform plan (paid by the plan's fee; its tokens are what
/// the month's pool is split by, `revenue_book::POOL_RULE_PLAN_TOKENS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallEntitlement {
    /// The API subscription named by the event's `subscription_id`. Every call metered before
    /// plans granted access was one (the serde default for those events).
    #[default]
    Subscription,
    /// A platform plan held by `user_id`; the event's `subscription_id` names the plan's usage
    /// counter (`plan:<user>:<period start>`), and its `service_id` the service that included
    /// the model in plans.
    Plan { plan: PlanId, user_id: String },
}

impl CallEntitlement {
    pub fn is_plan(&self) -> bool {
        matches!(self, CallEntitlement::Plan { .. })
    }
}

/// One call as the gateway metered it. Token counts come from the node's tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCallMetered {
    pub request_id: String,
    pub subscription_id: String,
    pub consumer: String,
    pub service_id: String,
    pub model_id: String,
    pub node_id: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// `false` only when an upstream was cut off before it reported its usage (an estimate).
    pub usage_exact: bool,
    pub cost: Usdt,
    pub pricing_version: u32,
    pub streamed: bool,
    pub latency_ms: u64,
    pub outcome: CallOutcome,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What entitled the call (events from before plans: an API subscription).
    #[serde(default)]
    pub entitlement: CallEntitlement,
}

impl ApiCallMetered {
    pub fn total_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

/// The events of the `api_call` aggregate (stored externally tagged, as cqrs-es stores events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiCallEvent {
    ApiCallMetered(ApiCallMetered),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("a request id is required")]
    MissingRequestId,
    #[error("a call's cost is never negative")]
    NegativeCost,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Checks a metered call before it is appended.
pub fn validate(call: &ApiCallMetered) -> Result<(), UsageError> {
    if call.request_id.trim().is_empty() {
        return Err(UsageError::MissingRequestId);
    }
    if call.cost.is_negative() {
        return Err(UsageError::NegativeCost);
    }
    Ok(())
}

const THOUSAND: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);

/// `tokens` at `price_per_1k`, exact (not yet rounded).
fn per_thousand(tokens: u64, price_per_1k: Usdt) -> Decimal {
    Decimal::from(tokens) * price_per_1k.as_decimal() / THOUSAND
}

/// What one call costs under `pricing`, given the subscription's usage earlier in the period.
///
/// - Monthly: nothing per call (the fee was paid up front).
/// - Pay-per-request: the per-request price plus input and output tokens at their per-1K prices.
/// - Hybrid: the first `included_requests` requests of a period carry no request price, and the
///   first `included_tokens` tokens carry no token price; the allowance covers a call's prompt
///   tokens first, then its completion tokens. Beyond it, pay-per-request prices apply.
///
/// The sum is computed exactly and rounded once, half-even, to the micro-USDT.
pub fn call_cost(
    pricing: &Pricing,
    before: PeriodUsage,
    prompt_tokens: u32,
    completion_tokens: u32,
) -> Result<Usdt, MoneyError> {
    let prompt = u64::from(prompt_tokens);
    let completion = u64::from(completion_tokens);
    let exact = match pricing {
        Pricing::Monthly { .. } => Decimal::ZERO,
        Pricing::PayPerRequest {
            price_per_request,
            price_per_1k_input_tokens,
            price_per_1k_output_tokens,
        } => {
            price_per_request.as_decimal()
                + per_thousand(prompt, *price_per_1k_input_tokens)
                + per_thousand(completion, *price_per_1k_output_tokens)
        }
        Pricing::Hybrid {
            included_requests,
            included_tokens,
            price_per_request,
            price_per_1k_input_tokens,
            price_per_1k_output_tokens,
            ..
        } => {
            let request_price = if before.requests < *included_requests {
                Decimal::ZERO
            } else {
                price_per_request.as_decimal()
            };
            let allowance = included_tokens.saturating_sub(before.tokens);
            let free_prompt = prompt.min(allowance);
            let free_completion = completion.min(allowance - free_prompt);
            request_price
                + per_thousand(prompt - free_prompt, *price_per_1k_input_tokens)
                + per_thousand(completion - free_completion, *price_per_1k_output_tokens)
        }
    };
    Usdt::from_decimal_rounded(exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_metered_before_plans_was_an_api_subscriptions_and_a_plan_call_says_whose() {
        let old = r#"{"request_id":"r1","subscription_id":"s1","consumer":"u1","service_id":"svc","model_id":"m1","node_id":"local","prompt_tokens":3,"completion_tokens":4,"usage_exact":true,"cost":"0","pricing_version":1,"streamed":false,"latency_ms":5,"outcome":"completed","at":"2026-10-01T00:00:00Z"}"#;
        let call: ApiCallMetered = serde_json::from_str(old).unwrap();
        assert_eq!(call.entitlement, CallEntitlement::Subscription);
        let plan = ApiCallMetered {
            entitlement: CallEntitlement::Plan {
                plan: PlanId::Free,
                user_id: "u1".into(),
            },
            ..call
        };
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json["entitlement"],
            serde_json::json!({"kind": "plan", "plan": "free", "user_id": "u1"})
        );
        assert!(serde_json::from_value::<ApiCallMetered>(json)
            .unwrap()
            .entitlement
            .is_plan());
    }

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or(Usdt::ZERO)
    }

    #[test]
    fn monthly_calls_cost_nothing() {
        let pricing = Pricing::Monthly {
            price_per_month: usdt("10"),
        };
        assert_eq!(
            call_cost(&pricing, PeriodUsage::default(), 1000, 1000),
            Ok(Usdt::ZERO)
        );
    }

    #[test]
    fn pay_per_request_adds_request_and_token_prices() {
        let pricing = Pricing::PayPerRequest {
            price_per_request: usdt("0.001"),
            price_per_1k_input_tokens: usdt("0.5"),
            price_per_1k_output_tokens: usdt("1.5"),
        };
        // 0.001 + 12 * 0.0005 + 7 * 0.0015 = 0.001 + 0.006 + 0.0105
        assert_eq!(
            call_cost(&pricing, PeriodUsage::default(), 12, 7),
            Ok(usdt("0.0175"))
        );
    }

    #[test]
    fn rounding_is_once_and_half_even() {
        let pricing = Pricing::PayPerRequest {
            price_per_request: Usdt::ZERO,
            price_per_1k_input_tokens: usdt("0.000001"),
            price_per_1k_output_tokens: Usdt::ZERO,
        };
        // 500 tokens at 0.000001 per 1K = 0.0000005, half-even -> 0.
        assert_eq!(
            call_cost(&pricing, PeriodUsage::default(), 500, 0),
            Ok(Usdt::ZERO)
        );
        // 1500 tokens = 0.0000015 -> 0.000002.
        assert_eq!(
            call_cost(&pricing, PeriodUsage::default(), 1500, 0),
            Ok(usdt("0.000002"))
        );
    }

    #[test]
    fn hybrid_allowance_covers_prompt_first_then_completion() {
        let pricing = Pricing::Hybrid {
            price_per_month: usdt("5"),
            included_requests: 2,
            included_tokens: 100,
            price_per_request: usdt("0.01"),
            price_per_1k_input_tokens: usdt("1"),
            price_per_1k_output_tokens: usdt("2"),
        };
        let within = PeriodUsage {
            requests: 1,
            tokens: 40,
        };
        // 60 tokens of allowance left: 50 prompt free, 10 of 30 completion free, 20 * 0.002.
        assert_eq!(call_cost(&pricing, within, 50, 30), Ok(usdt("0.04")));
        let beyond = PeriodUsage {
            requests: 2,
            tokens: 100,
        };
        assert_eq!(
            call_cost(&pricing, beyond, 10, 10),
            Ok(usdt("0.04")) // 0.01 + 0.01 + 0.02
        );
    }
}
