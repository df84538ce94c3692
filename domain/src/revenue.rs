//! Revenue distribution, as pure functions of the month's facts, so the monthly close and an
//! auditor's replay compute the same result from the same events.
//!
//! - **The subscription pool** (70% of the month's platform-subscription revenue) goes to models
//!   in proportion to the tokens they served that month (`distribute_pool`).
//! - **A model's amount** goes to its owner: a user's whole; a group's split among members by
//!   the percentages in force at the start of the month (`split_among_members`).
//!
//! Rounding is exact to the micro-USDT by the largest-remainder method (`Usdt::split`): every
//! part gets the floor of its exact quota, the micros left go one each to the largest fractional
//! remainders. **Ties rule:** equal remainders are served in input order, and the inputs are
//! ordered deterministically: models by model id (ascending), members in the order the split
//! lists them. So the parts always sum exactly to the whole, and the result is a pure function
//! of the facts. A month with no tokens served distributes nothing: the pool stays in its ledger
//! account.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{MoneyError, Usdt};

/// Percentages have at most this many decimals.
pub const SPLIT_DECIMALS: u32 = 2;
pub const SPLIT_MEMBERS_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevenueError {
    #[error("a split needs at least one member")]
    EmptySplit,
    #[error("a split has at most {SPLIT_MEMBERS_MAX} members")]
    TooManyMembers,
    #[error("member {0} appears more than once in the split")]
    DuplicateMember(String),
    #[error("percentages are greater than 0 with at most {SPLIT_DECIMALS} decimals, got {0}")]
    BadPercentage(String),
    #[error("percentages must sum to exactly 100, got {0}")]
    NotHundred(String),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// A percentage as a request writes it: a plain decimal (`33.33`; no exponent, as money);
/// whether it is a valid share is `validate_split`'s to say.
pub fn parse_percent(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if !crate::money::is_plain_decimal(text) {
        return None;
    }
    text.parse().ok()
}

/// One member's percentage of a group model's revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub user_id: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub percent: Decimal,
}

/// Checks a split: members unique, each percentage in (0, 100] with at most two decimals, the
/// sum exactly 100. (Membership of the group is the application layer's fact to check.)
pub fn validate_split(shares: &[Share]) -> Result<(), RevenueError> {
    if shares.is_empty() {
        return Err(RevenueError::EmptySplit);
    }
    if shares.len() > SPLIT_MEMBERS_MAX {
        return Err(RevenueError::TooManyMembers);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut total = Decimal::ZERO;
    for share in shares {
        if !seen.insert(share.user_id.as_str()) {
            return Err(RevenueError::DuplicateMember(share.user_id.clone()));
        }
        let p = share.percent;
        if p <= Decimal::ZERO || p > Decimal::ONE_HUNDRED || p.normalize().scale() > SPLIT_DECIMALS
        {
            return Err(RevenueError::BadPercentage(p.to_string()));
        }
        total += p;
    }
    if total != Decimal::ONE_HUNDRED {
        return Err(RevenueError::NotHundred(total.normalize().to_string()));
    }
    Ok(())
}

/// What one member receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAmount {
    pub user_id: String,
    pub amount: Usdt,
}

/// `amount` split among the members by their percentages (largest remainder, ties in the
/// split's order).
pub fn split_among_members(
    amount: Usdt,
    shares: &[Share],
) -> Result<Vec<MemberAmount>, RevenueError> {
    validate_split(shares)?;
    let weights: Vec<Decimal> = shares.iter().map(|s| s.percent).collect();
    let parts = amount.split(&weights)?;
    Ok(shares
        .iter()
        .zip(parts)
        .map(|(share, amount)| MemberAmount {
            user_id: share.user_id.clone(),
            amount,
        })
        .collect())
}

/// A model's part of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShare {
    pub model_id: String,
    pub tokens: u64,
    pub amount: Usdt,
}

/// The pool split among models by tokens served; models with no tokens get nothing and are not
/// listed. Empty when no tokens were served.
pub fn distribute_pool(
    pool: Usdt,
    tokens_by_model: &BTreeMap<String, u64>,
) -> Result<Vec<ModelShare>, RevenueError> {
    let served: Vec<(&String, u64)> = tokens_by_model
        .iter()
        .filter(|(_, tokens)| **tokens > 0)
        .map(|(model, tokens)| (model, *tokens))
        .collect();
    if served.is_empty() || !pool.is_positive() {
        return Ok(Vec::new());
    }
    let weights: Vec<Decimal> = served.iter().map(|(_, t)| Decimal::from(*t)).collect();
    let parts = pool.split(&weights)?;
    Ok(served
        .into_iter()
        .zip(parts)
        .map(|((model_id, tokens), amount)| ModelShare {
            model_id: model_id.clone(),
            tokens,
            amount,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or(Usdt::ZERO)
    }

    #[test]
    fn percentages_are_plain_decimals() {
        assert_eq!(parse_percent("33.33"), Some(Decimal::new(3333, 2)));
        assert_eq!(parse_percent(" 50 "), Some(Decimal::from(50)));
        for bad in ["1e2", "1E2", "+50", "5 0", "", ".5", "0x10", "NaN"] {
            assert_eq!(parse_percent(bad), None, "{bad}");
        }
    }

    fn share(user: &str, percent: &str) -> Share {
        Share {
            user_id: user.into(),
            percent: percent.parse().unwrap_or_default(),
        }
    }

    /// The seeds' example: $700 of pool to models with 40/30/20/10% of the tokens.
    #[test]
    fn the_pool_follows_tokens() {
        let tokens: BTreeMap<String, u64> = [("a", 400u64), ("b", 300), ("c", 200), ("d", 100)]
            .into_iter()
            .map(|(m, t)| (m.to_string(), t))
            .collect();
        let shares = distribute_pool(usdt("700"), &tokens).unwrap_or_default();
        let amounts: Vec<String> = shares.iter().map(|s| s.amount.to_string()).collect();
        assert_eq!(
            amounts,
            ["280.000000", "210.000000", "140.000000", "70.000000"]
        );
    }

    /// The seeds' example: a group model's $70 at 50/30/20, and $90 of API revenue.
    #[test]
    fn a_group_splits_by_percentages() {
        let split = [share("u1", "50"), share("u2", "30"), share("u3", "20")];
        let members = split_among_members(usdt("70"), &split).unwrap_or_default();
        let amounts: Vec<String> = members.iter().map(|m| m.amount.to_string()).collect();
        assert_eq!(amounts, ["35.000000", "21.000000", "14.000000"]);
        let members = split_among_members(usdt("90"), &split).unwrap_or_default();
        let amounts: Vec<String> = members.iter().map(|m| m.amount.to_string()).collect();
        assert_eq!(amounts, ["45.000000", "27.000000", "18.000000"]);
    }

    #[test]
    fn ties_go_to_the_earlier_model_id() {
        let tokens: BTreeMap<String, u64> = [("b", 1u64), ("a", 1), ("c", 1)]
            .into_iter()
            .map(|(m, t)| (m.to_string(), t))
            .collect();
        // 1 micro-USDT... 0.000002 among three equal models: a and b get one micro each.
        let shares = distribute_pool(usdt("0.000002"), &tokens).unwrap_or_default();
        let amounts: Vec<(String, String)> = shares
            .iter()
            .map(|s| (s.model_id.clone(), s.amount.to_string()))
            .collect();
        assert_eq!(
            amounts,
            [
                ("a".to_string(), "0.000001".to_string()),
                ("b".to_string(), "0.000001".to_string()),
                ("c".to_string(), "0.000000".to_string()),
            ]
        );
    }

    #[test]
    fn no_tokens_distribute_nothing() {
        let tokens: BTreeMap<String, u64> = [("a".to_string(), 0u64)].into_iter().collect();
        assert_eq!(distribute_pool(usdt("700"), &tokens), Ok(Vec::new()));
    }

    #[test]
    fn bad_splits_are_refused() {
        assert_eq!(validate_split(&[]), Err(RevenueError::EmptySplit));
        assert!(matches!(
            validate_split(&[share("a", "50"), share("b", "49.99")]),
            Err(RevenueError::NotHundred(_))
        ));
        assert!(matches!(
            validate_split(&[share("a", "50.005"), share("b", "49.995")]),
            Err(RevenueError::BadPercentage(_))
        ));
        assert!(matches!(
            validate_split(&[share("a", "0"), share("b", "100")]),
            Err(RevenueError::BadPercentage(_))
        ));
        assert!(matches!(
            validate_split(&[share("a", "50"), share("a", "50")]),
            Err(RevenueError::DuplicateMember(_))
        ));
        assert_eq!(
            validate_split(&[
                share("a", "33.33"),
                share("b", "33.33"),
                share("c", "33.34")
            ]),
            Ok(())
        );
    }

    proptest! {
        /// Shares sum exactly to the pool, none is negative, and each is within one micro of
        /// its exact quota.
        #[test]
        fn pool_shares_sum_exactly(pool_micros in 0i64..10_000_000_000_000, tokens in proptest::collection::vec(0u64..1_000_000_000, 1..40)) {
            let pool = Usdt::from_micros(pool_micros).unwrap_or(Usdt::ZERO);
            let by_model: BTreeMap<String, u64> = tokens.iter().enumerate().map(|(i, t)| (format!("m{i:03}"), *t)).collect();
            let shares = distribute_pool(pool, &by_model).unwrap_or_default();
            let total_tokens: u64 = tokens.iter().sum();
            if total_tokens > 0 && pool_micros > 0 {
                let sum: i128 = shares.iter().map(|s| s.amount.to_micros()).sum();
                prop_assert_eq!(sum, i128::from(pool_micros));
                for share in &shares {
                    prop_assert!(!share.amount.is_negative());
                    let exact = i128::from(pool_micros) * i128::from(share.tokens) / i128::from(total_tokens);
                    prop_assert!((share.amount.to_micros() - exact).abs() <= 1);
                }
            } else {
                prop_assert!(shares.is_empty());
            }
        }

        /// Member amounts sum exactly to the model's amount and none is negative.
        #[test]
        fn member_amounts_sum_exactly(amount_micros in 0i64..1_000_000_000_000, cents in proptest::collection::vec(1u32..5000, 1..12)) {
            // Percentages with two decimals that sum to exactly 100: scale the draws to 10,000
            // hundredths, the last member taking the rest.
            let total: u64 = cents.iter().map(|c| u64::from(*c)).sum();
            let mut hundredths: Vec<u64> = cents.iter().map(|c| u64::from(*c) * 10_000 / total).collect();
            let assigned: u64 = hundredths.iter().sum();
            if let Some(last) = hundredths.last_mut() { *last += 10_000 - assigned; }
            prop_assume!(hundredths.iter().all(|h| *h > 0));
            let split: Vec<Share> = hundredths.iter().enumerate().map(|(i, h)| Share {
                user_id: format!("u{i}"),
                percent: Decimal::new(*h as i64, 2),
            }).collect();
            let amount = Usdt::from_micros(amount_micros).unwrap_or(Usdt::ZERO);
            let members = split_among_members(amount, &split);
            prop_assert!(members.is_ok());
            let members = members.unwrap_or_default();
            let sum: i128 = members.iter().map(|m| m.amount.to_micros()).sum();
            prop_assert_eq!(sum, i128::from(amount_micros));
            prop_assert!(members.iter().all(|m| !m.amount.is_negative()));
        }
    }
}
