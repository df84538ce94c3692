//! Inference nodes earn: the rule that pays a registered compute node for the tokens it served.
//!
//! - **Who is paid**: a node whose metered `node_id` (on `ApiCallMetered`) is a registered
//!   compute node (`NodeRegistered`: the id returned at registration). Anonymous serve nodes and
//!   the platform's own in-process node are never paid.
//! - **How much**: the compute rate per 1,000 tokens of the fee version in force at the call's
//!   `at` (`FeeRates::compute_per_1k_tokens`; a version without a rate pays nothing). For each
//!   (node, fee version) of a close, `tokens × rate / 1000`, summed exactly and rounded **down**
//!   to the micro-USDT once (`pay_for`): the node is never paid more than the exact amount, and
//!   loses less than one micro per version per month.
//! - **Out of what**: the platform's fee. A close posts `platform_fees:platform -> node_payable:<node>`
//!   (`postings`), so the creators' and groups' shares (the pool, API-subscription nets) are
//!   exactly what they were; only the platform's net falls by the compute paid.
//! - **When**: at the monthly close (`revenue_book::POOL_RULE_COMPUTE_PAY`), by the same
//!   membership rule as every other fact of the close (a late call is the next close's), and
//!   recorded on `MonthClosed` (`MonthDistribution::compute`) so `audit replay` recomputes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::{LedgerAccount, Posting};
use crate::money::{MoneyError, Usdt};

/// Tokens per unit of the compute rate.
pub const TOKENS_PER_RATE_UNIT: i128 = 1_000;

/// What a node served under one fee version, and what it is paid for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputePay {
    pub node_id: String,
    pub fee_schedule_version: u32,
    /// Prompt and completion tokens of the node's counted calls under that version.
    pub tokens: u64,
    pub calls: u64,
    /// The version's `compute_per_1k_tokens`.
    pub rate_per_1k_tokens: Usdt,
    /// `tokens × rate / 1000`, rounded down to the micro.
    pub amount: Usdt,
}

/// What a close gathered for one (node, fee version): tokens and calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub tokens: u64,
    pub calls: u64,
}

/// `tokens × rate / 1000`, rounded down to the micro-USDT (never more than the exact amount).
pub fn pay_for(tokens: u64, rate_per_1k_tokens: Usdt) -> Result<Usdt, MoneyError> {
    if rate_per_1k_tokens.is_negative() {
        return Err(MoneyError::OutOfRange(rate_per_1k_tokens.to_string()));
    }
    let micros = rate_per_1k_tokens
        .to_micros()
        .checked_mul(i128::from(tokens))
        .ok_or(MoneyError::Overflow)?
        / TOKENS_PER_RATE_UNIT;
    Usdt::from_micros(i64::try_from(micros).map_err(|_| MoneyError::Overflow)?)
}

/// The pay lines of a close: one per (node, fee version) with a rate, in node then version
/// order. `served` is keyed by node, then version; `rates` by version (versions without a rate
/// are absent and pay nothing).
pub fn compute_pay(
    served: &BTreeMap<String, BTreeMap<u32, Served>>,
    rates: &BTreeMap<u32, Usdt>,
) -> Result<Vec<ComputePay>, MoneyError> {
    let mut lines = Vec::new();
    for (node_id, by_version) in served {
        for (version, served) in by_version {
            let Some(rate) = rates.get(version) else {
                continue;
            };
            lines.push(ComputePay {
                node_id: node_id.clone(),
                fee_schedule_version: *version,
                tokens: served.tokens,
                calls: served.calls,
                rate_per_1k_tokens: *rate,
                amount: pay_for(served.tokens, *rate)?,
            });
        }
    }
    Ok(lines)
}

/// The total of the pay lines.
pub fn total(lines: &[ComputePay]) -> Result<Usdt, MoneyError> {
    lines
        .iter()
        .try_fold(Usdt::ZERO, |sum, line| sum.checked_add(line.amount))
}

/// The close's postings for `lines`: the platform's fees pay the total, each node's payable
/// receives its lines' sum. Empty when nothing is paid; always balanced.
pub fn postings(lines: &[ComputePay]) -> Result<Vec<Posting>, MoneyError> {
    let mut by_node: BTreeMap<&str, Usdt> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.amount.is_positive()) {
        let slot = by_node.entry(line.node_id.as_str()).or_insert(Usdt::ZERO);
        *slot = slot.checked_add(line.amount)?;
    }
    if by_node.is_empty() {
        return Ok(Vec::new());
    }
    let paid = total(lines)?;
    let mut postings = vec![Posting {
        account: LedgerAccount::platform_fees(),
        amount: paid.checked_neg(),
    }];
    postings.extend(by_node.into_iter().map(|(node, amount)| Posting {
        account: LedgerAccount::node(node),
        amount,
    }));
    Ok(postings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::balanced;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_node_is_paid_the_rate_per_thousand_tokens_rounded_down_to_the_micro() {
        assert_eq!(pay_for(1_000, usdt("0.002")).unwrap(), usdt("0.002"));
        assert_eq!(pay_for(1_500, usdt("0.002")).unwrap(), usdt("0.003"));
        // 7 × 0.000003 / 1000 = 0.000000021: less than a micro, nothing.
        assert_eq!(pay_for(7, usdt("0.000003")).unwrap(), Usdt::ZERO);
        // 1234 × 0.001001 / 1000 = 0.001235234: down to 0.001235.
        assert_eq!(pay_for(1_234, usdt("0.001001")).unwrap(), usdt("0.001235"));
        assert_eq!(pay_for(0, usdt("5")).unwrap(), Usdt::ZERO);
        assert!(pay_for(10, usdt("-0.1")).is_err());
    }

    #[test]
    fn each_node_and_version_is_rounded_once_and_versions_without_a_rate_pay_nothing() {
        let served = BTreeMap::from([
            (
                "n1".to_string(),
                BTreeMap::from([
                    (
                        1,
                        Served {
                            tokens: 900,
                            calls: 3,
                        },
                    ),
                    (
                        2,
                        Served {
                            tokens: 1_501,
                            calls: 2,
                        },
                    ),
                    (
                        3,
                        Served {
                            tokens: 10,
                            calls: 1,
                        },
                    ),
                ]),
            ),
            (
                "n2".to_string(),
                BTreeMap::from([(
                    2,
                    Served {
                        tokens: 333,
                        calls: 1,
                    },
                )]),
            ),
        ]);
        let rates = BTreeMap::from([(2, usdt("0.01")), (3, usdt("0.02"))]);
        let lines = compute_pay(&served, &rates).unwrap();
        let got: Vec<(&str, u32, u64, String)> = lines
            .iter()
            .map(|l| {
                (
                    l.node_id.as_str(),
                    l.fee_schedule_version,
                    l.tokens,
                    l.amount.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("n1", 2, 1_501, "0.015010".to_string()),
                ("n1", 3, 10, "0.000200".to_string()),
                ("n2", 2, 333, "0.003330".to_string()),
            ]
        );
        let postings = postings(&lines).unwrap();
        balanced(&postings).unwrap();
        assert_eq!(postings[0].account, LedgerAccount::platform_fees());
        assert_eq!(postings[0].amount, usdt("-0.018540"));
        assert_eq!(postings[1].account, LedgerAccount::node("n1"));
        assert_eq!(postings[1].amount, usdt("0.015210"));
        assert_eq!(postings[2].amount, usdt("0.003330"));
        assert!(super::postings(&[]).unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn rounding_never_pays_more_than_the_exact_amount_nor_a_micro_less(
            tokens in 0u64..10_000_000_000,
            rate_micros in 0i64..100_000_000,
        ) {
            let rate = Usdt::from_micros(rate_micros).unwrap();
            let paid = pay_for(tokens, rate).unwrap();
            let exact = rate.as_decimal() * Decimal::from(tokens) / Decimal::from(1_000);
            prop_assert!(paid.as_decimal() <= exact);
            prop_assert!(exact - paid.as_decimal() < Decimal::new(1, 6));
        }

        #[test]
        fn the_postings_of_any_pay_balance_and_pay_each_node_its_lines(
            served in proptest::collection::vec((0usize..4, 1u32..4, 0u64..5_000_000), 0..30),
            rates in proptest::collection::vec(0i64..50_000, 3),
        ) {
            let mut by_node: BTreeMap<String, BTreeMap<u32, Served>> = BTreeMap::new();
            for (node, version, tokens) in served {
                let slot = by_node.entry(format!("n{node}")).or_default().entry(version).or_default();
                slot.tokens += tokens;
                slot.calls += 1;
            }
            let rates: BTreeMap<u32, Usdt> = rates.iter().enumerate()
                .map(|(i, m)| (i as u32 + 1, Usdt::from_micros(*m).unwrap())).collect();
            let lines = compute_pay(&by_node, &rates).unwrap();
            let postings = postings(&lines).unwrap();
            prop_assert!(balanced(&postings).is_ok());
            let paid_to_nodes = postings.iter().filter(|p| p.amount.is_positive())
                .try_fold(Usdt::ZERO, |a, p| a.checked_add(p.amount)).unwrap();
            prop_assert_eq!(paid_to_nodes, total(&lines).unwrap());
        }
    }
}
