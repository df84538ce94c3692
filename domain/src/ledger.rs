//! The double-entry ledger: every movement of money is a set of postings that sums to zero
//! (as TigerBeetle and Formance Ledger do). Money that arrives from outside (a payer's USDT
//! transfer) is posted as a negative balance of that payer's external account, so "sum of all
//! postings is zero" holds at every point of the log, and each account's balance is exactly the
//! sum of its postings.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::fees::{FeeSchedule, PaymentType};
use crate::money::{MoneyError, Usdt};

/// The kinds of ledger accounts; an account is a kind plus its owner (`key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Money paid in from a user's wallet (negative: what they have paid the platform).
    Payer,
    /// The platform's fees.
    PlatformFees,
    /// Platform-subscription revenue for one month, distributed to models at the month's close.
    SubscriptionPool,
    /// What the platform owes a creator.
    CreatorPayable,
    /// What the platform owes a compute node.
    NodePayable,
    /// Job payments held until the job ends (then paid out to the node and the platform, or
    /// refunded).
    JobEscrow,
    /// A group model's API-subscription revenue, split among the group's members at the
    /// month's close (key: the model id).
    GroupRevenue,
    /// Paid out through the platform's hot wallet on a network (key: the network): positive,
    /// what left the platform to payees, as a payer's account is negative for what came in.
    HotWallet,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LedgerAccount {
    pub kind: AccountKind,
    /// The owner: a user id, a node id, a month `YYYY-MM`, a job id; "platform" for fees.
    pub key: String,
}

impl LedgerAccount {
    pub fn payer(user_id: &str) -> Self {
        Self {
            kind: AccountKind::Payer,
            key: user_id.to_string(),
        }
    }
    pub fn platform_fees() -> Self {
        Self {
            kind: AccountKind::PlatformFees,
            key: "platform".to_string(),
        }
    }
    pub fn subscription_pool(month: &str) -> Self {
        Self {
            kind: AccountKind::SubscriptionPool,
            key: month.to_string(),
        }
    }
    pub fn creator(user_id: &str) -> Self {
        Self {
            kind: AccountKind::CreatorPayable,
            key: user_id.to_string(),
        }
    }
    pub fn node(node_id: &str) -> Self {
        Self {
            kind: AccountKind::NodePayable,
            key: node_id.to_string(),
        }
    }
    pub fn job_escrow(job_id: &str) -> Self {
        Self {
            kind: AccountKind::JobEscrow,
            key: job_id.to_string(),
        }
    }

    pub fn group_revenue(model_id: &str) -> Self {
        Self {
            kind: AccountKind::GroupRevenue,
            key: model_id.to_string(),
        }
    }

    pub fn hot_wallet(network: crate::wallet::Network) -> Self {
        Self {
            kind: AccountKind::HotWallet,
            key: network.as_str().to_string(),
        }
    }

    /// `kind:key`, the account's one text name in views and exports.
    pub fn name(&self) -> String {
        let kind = match self.kind {
            AccountKind::Payer => "payer",
            AccountKind::PlatformFees => "platform_fees",
            AccountKind::SubscriptionPool => "subscription_pool",
            AccountKind::CreatorPayable => "creator_payable",
            AccountKind::NodePayable => "node_payable",
            AccountKind::JobEscrow => "job_escrow",
            AccountKind::GroupRevenue => "group_revenue",
            AccountKind::HotWallet => "hot_wallet",
        };
        format!("{kind}:{}", self.key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: LedgerAccount,
    /// Signed: positive credits the account, negative debits it.
    pub amount: Usdt,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error("postings do not balance (sum {0})")]
    Unbalanced(Usdt),
    #[error("a {0:?} payment needs a beneficiary")]
    MissingBeneficiary(PaymentType),
}

/// Checks the zero-sum rule.
pub fn balanced(postings: &[Posting]) -> Result<(), LedgerError> {
    let mut sum = Usdt::ZERO;
    for posting in postings {
        sum = sum.checked_add(posting.amount)?;
    }
    if sum == Usdt::ZERO {
        Ok(())
    } else {
        Err(LedgerError::Unbalanced(sum))
    }
}

/// Who receives the net of a payment, besides the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Beneficiary {
    /// The subscription pool of the month the payment confirms in, for platform subscriptions.
    Pool,
    /// A creator (API subscriptions, model sales).
    Creator { user_id: String },
    /// A group-owned model (API subscriptions): held in `group_revenue:<model>` until the
    /// month's close splits it among the members.
    GroupModel { group_id: String, model_id: String },
    /// A job's escrow until it ends.
    JobEscrow { job_id: String },
    /// Nobody: the platform keeps everything (publishing and listing fees).
    Platform,
}

/// `YYYY-MM` of an instant (UTC): the key of a month's subscription pool.
pub fn month_key(at: time::OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}", utc.year(), u8::from(utc.month()))
}

/// The postings of a confirmed payment: the payer pays `amount`; the platform's fee and the
/// beneficiary's net are split by `schedule`, exactly. Job payments go whole into escrow (their
/// fee is taken when the job completes). `month` is the confirmation's month (`YYYY-MM`), whose
/// pool receives platform-subscription revenue. Always balanced.
pub fn payment_postings(
    schedule: &FeeSchedule,
    payment_type: PaymentType,
    payer: &str,
    amount: Usdt,
    beneficiary: &Beneficiary,
    month: &str,
) -> Result<Vec<Posting>, LedgerError> {
    let mut postings = vec![Posting {
        account: LedgerAccount::payer(payer),
        amount: amount.checked_neg(),
    }];
    match beneficiary {
        Beneficiary::JobEscrow { job_id } => {
            postings.push(Posting {
                account: LedgerAccount::job_escrow(job_id),
                amount,
            });
        }
        other => {
            let (fee, net) = schedule.split(payment_type, amount)?;
            postings.push(Posting {
                account: LedgerAccount::platform_fees(),
                amount: fee,
            });
            let net_account = match other {
                Beneficiary::Pool => Some(LedgerAccount::subscription_pool(month)),
                Beneficiary::Creator { user_id } => Some(LedgerAccount::creator(user_id)),
                Beneficiary::GroupModel { model_id, .. } => {
                    Some(LedgerAccount::group_revenue(model_id))
                }
                Beneficiary::Platform => None,
                Beneficiary::JobEscrow { .. } => None,
            };
            match net_account {
                Some(account) => postings.push(Posting {
                    account,
                    amount: net,
                }),
                None if net == Usdt::ZERO => {}
                None => return Err(LedgerError::MissingBeneficiary(payment_type)),
            }
        }
    }
    balanced(&postings)?;
    Ok(postings)
}

/// The part of a job's price its node earned: `used` of `allowed` (seconds run of the seconds
/// allowed, or all or nothing). Which ending of a job earns what is the rule in [`crate::job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earned {
    used: u64,
    allowed: u64,
}

impl Earned {
    pub const ALL: Earned = Earned {
        used: 1,
        allowed: 1,
    };
    pub const NOTHING: Earned = Earned {
        used: 0,
        allowed: 1,
    };

    /// `used` of `allowed`, capped at all of it; nothing when nothing was allowed.
    pub fn part(used: u64, allowed: u64) -> Earned {
        if allowed == 0 {
            Earned::NOTHING
        } else {
            Earned {
                used: used.min(allowed),
                allowed,
            }
        }
    }
}

/// How a job's escrow was paid out: the facts its ending event carries for the projections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSettlement {
    pub fee_schedule_version: u32,
    /// To `node_payable:<node>`.
    pub node_net: Usdt,
    /// To `platform_fees:platform`.
    pub platform_fee: Usdt,
    /// Back to `payer:<creator>`.
    pub refund: Usdt,
    pub postings: Vec<Posting>,
}

/// Empties `job_escrow:<job_id>`, which holds the whole `price` since the job's payment
/// confirmed. The earned part of the price (largest remainder, `used : allowed - used`) is split
/// by `schedule`'s job rate into the platform fee and the node's net; the rest is refunded to the
/// creator's payer account. Parts that are zero get no posting. Exact and always balanced:
/// fee + net + refund == price to the micro.
pub fn job_settlement_postings(
    schedule: &FeeSchedule,
    job_id: &str,
    creator: &str,
    node_id: Option<&str>,
    price: Usdt,
    earned: Earned,
) -> Result<JobSettlement, LedgerError> {
    if !price.is_positive() {
        return Err(MoneyError::NotPositive(price.to_string()).into());
    }
    let parts = price.split(&[
        Decimal::from(earned.used),
        Decimal::from(earned.allowed - earned.used),
    ])?;
    let (earned_amount, refund) = (parts[0], parts[1]);
    let (platform_fee, node_net) = schedule.split(PaymentType::Job, earned_amount)?;
    let mut postings = vec![Posting {
        account: LedgerAccount::job_escrow(job_id),
        amount: price.checked_neg(),
    }];
    if earned_amount.is_positive() {
        let node_id = node_id.ok_or(LedgerError::MissingBeneficiary(PaymentType::Job))?;
        postings.push(Posting {
            account: LedgerAccount::node(node_id),
            amount: node_net,
        });
        postings.push(Posting {
            account: LedgerAccount::platform_fees(),
            amount: platform_fee,
        });
    }
    if refund.is_positive() {
        postings.push(Posting {
            account: LedgerAccount::payer(creator),
            amount: refund,
        });
    }
    postings.retain(|p| p.amount != Usdt::ZERO);
    balanced(&postings)?;
    Ok(JobSettlement {
        fee_schedule_version: schedule.version,
        node_net,
        platform_fee,
        refund,
        postings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    fn v1() -> FeeSchedule {
        crate::fees::FeeTable::genesis()
            .at(datetime!(2026-11-21 00:00 UTC))
            .clone()
    }

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap()
    }

    #[test]
    fn a_platform_subscription_goes_thirty_percent_to_fees_and_the_rest_to_the_month_pool() {
        let postings = payment_postings(
            &v1(),
            PaymentType::PlatformSubscription,
            "u1",
            usdt("30"),
            &Beneficiary::Pool,
            "2026-11",
        )
        .unwrap();
        let named: Vec<(String, String)> = postings
            .iter()
            .map(|p| (p.account.name(), p.amount.to_string()))
            .collect();
        assert_eq!(
            named,
            [
                ("payer:u1".to_string(), "-30.000000".to_string()),
                ("platform_fees:platform".to_string(), "9.000000".to_string()),
                (
                    "subscription_pool:2026-11".to_string(),
                    "21.000000".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_publishing_fee_is_all_platform_and_needs_no_beneficiary() {
        let postings = payment_postings(
            &v1(),
            PaymentType::PublishingFee,
            "u1",
            usdt("5"),
            &Beneficiary::Platform,
            "2026-11",
        )
        .unwrap();
        assert_eq!(postings.len(), 2);
        assert!(matches!(
            payment_postings(
                &v1(),
                PaymentType::ModelSale,
                "u1",
                usdt("5"),
                &Beneficiary::Platform,
                "2026-11"
            ),
            Err(LedgerError::MissingBeneficiary(PaymentType::ModelSale))
        ));
    }

    #[test]
    fn a_job_payment_is_held_whole_in_escrow() {
        let postings = payment_postings(
            &v1(),
            PaymentType::Job,
            "u1",
            usdt("20"),
            &Beneficiary::JobEscrow {
                job_id: "j1".into(),
            },
            "2026-11",
        )
        .unwrap();
        assert_eq!(postings[1].account.name(), "job_escrow:j1");
        assert_eq!(postings[1].amount, usdt("20"));
    }

    #[test]
    fn a_job_settlement_pays_the_node_its_net_and_refunds_what_it_did_not_earn() {
        let named = |s: &JobSettlement| -> Vec<(String, String)> {
            s.postings
                .iter()
                .map(|p| (p.account.name(), p.amount.to_string()))
                .collect()
        };
        let all = job_settlement_postings(&v1(), "j1", "u1", Some("n1"), usdt("20"), Earned::ALL)
            .unwrap();
        assert_eq!(
            named(&all),
            [
                ("job_escrow:j1".to_string(), "-20.000000".to_string()),
                ("node_payable:n1".to_string(), "19.000000".to_string()),
                ("platform_fees:platform".to_string(), "1.000000".to_string()),
            ]
        );
        let none =
            job_settlement_postings(&v1(), "j1", "u1", None, usdt("20"), Earned::NOTHING).unwrap();
        assert_eq!(
            named(&none),
            [
                ("job_escrow:j1".to_string(), "-20.000000".to_string()),
                ("payer:u1".to_string(), "20.000000".to_string()),
            ]
        );
        let quarter = job_settlement_postings(
            &v1(),
            "j1",
            "u1",
            Some("n1"),
            usdt("20"),
            Earned::part(900, 3600),
        )
        .unwrap();
        assert_eq!(
            (quarter.node_net, quarter.platform_fee, quarter.refund),
            (usdt("4.75"), usdt("0.25"), usdt("15"))
        );
        // Earnings are capped at all of the price.
        assert_eq!(
            job_settlement_postings(
                &v1(),
                "j1",
                "u1",
                Some("n1"),
                usdt("20"),
                Earned::part(7200, 3600)
            ),
            Ok(all)
        );
    }

    #[test]
    fn earnings_without_a_node_or_a_price_that_is_not_positive_are_refused() {
        assert_eq!(
            job_settlement_postings(&v1(), "j1", "u1", None, usdt("20"), Earned::ALL),
            Err(LedgerError::MissingBeneficiary(PaymentType::Job))
        );
        assert!(matches!(
            job_settlement_postings(&v1(), "j1", "u1", Some("n1"), Usdt::ZERO, Earned::ALL),
            Err(LedgerError::Money(MoneyError::NotPositive(_)))
        ));
    }

    fn beneficiary_for(t: PaymentType, n: usize) -> Beneficiary {
        match t {
            PaymentType::PlatformSubscription => Beneficiary::Pool,
            PaymentType::ApiSubscription | PaymentType::ModelSale => Beneficiary::Creator {
                user_id: format!("c{}", n % 3),
            },
            PaymentType::Job => Beneficiary::JobEscrow {
                job_id: format!("j{n}"),
            },
            PaymentType::PublishingFee | PaymentType::ListingFee => Beneficiary::Platform,
        }
    }

    proptest! {
        #[test]
        fn for_any_payments_the_postings_sum_to_zero_and_balances_are_sums_of_postings(
            payments in proptest::collection::vec((0usize..6, 1i64..100_000_000_000, 0usize..5), 1..60)
        ) {
            let mut all = Vec::new();
            for (n, (t, micros, payer)) in payments.into_iter().enumerate() {
                let t = PaymentType::ALL[t];
                let amount = Usdt::from_micros(micros).unwrap();
                let month = format!("2026-{:02}", n % 12 + 1);
                let postings = payment_postings(&v1(), t, &format!("p{payer}"), amount, &beneficiary_for(t, n), &month).unwrap();
                balanced(&postings).unwrap();
                all.extend(postings);
            }
            balanced(&all).unwrap();
            let mut balances: BTreeMap<String, i128> = BTreeMap::new();
            for p in &all {
                *balances.entry(p.account.name()).or_default() += p.amount.to_micros();
            }
            prop_assert_eq!(balances.values().sum::<i128>(), 0);
            // Only payer accounts go negative.
            for (name, balance) in &balances {
                prop_assert!(*balance >= 0 || name.starts_with("payer:"));
            }
        }
    }

    proptest! {
        #[test]
        fn a_job_settlement_always_balances_and_the_node_gets_exactly_95_percent_of_what_it_earned(
            price in 1i64..1_000_000_000_000_000,
            allowed in 1u64..100_000,
            used in 0u64..200_000,
        ) {
            let price = Usdt::from_micros(price).unwrap();
            for earned in [Earned::ALL, Earned::NOTHING, Earned::part(used, allowed)] {
                let s = job_settlement_postings(&v1(), "j1", "u1", Some("n1"), price, earned).unwrap();
                balanced(&s.postings).unwrap();
                let parts = s.node_net.to_micros() + s.platform_fee.to_micros() + s.refund.to_micros();
                prop_assert_eq!(parts, price.to_micros());
                prop_assert!(s.postings.iter().all(|p| p.amount != Usdt::ZERO));
                prop_assert!(!s.node_net.is_negative() && !s.platform_fee.is_negative() && !s.refund.is_negative());
                // The node's net is 95% of the earned part, to within the one micro of rounding.
                let earned_micros = s.node_net.to_micros() + s.platform_fee.to_micros();
                prop_assert!((s.node_net.to_micros() * 100 - earned_micros * 95).abs() < 100);
            }
            let all = job_settlement_postings(&v1(), "j1", "u1", Some("n1"), price, Earned::ALL).unwrap();
            prop_assert_eq!((all.platform_fee, all.node_net), v1().split(PaymentType::Job, price).unwrap());
            prop_assert_eq!(all.refund, Usdt::ZERO);
            let none = job_settlement_postings(&v1(), "j1", "u1", None, price, Earned::NOTHING).unwrap();
            prop_assert_eq!(none.refund, price);
        }
    }
}
