//! The fee schedule, as versioned data. Each confirmed payment records the version it was split
//! by; a change of rates is a new version with its own effective date, so the past is never
//! re-priced. To change fees, append a version to `SCHEDULES` (never edit a published one).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::money::{MoneyError, Usdt};

/// What a payment pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentType {
    PlatformSubscription,
    ApiSubscription,
    Job,
    ModelSale,
    PublishingFee,
    ListingFee,
}

impl PaymentType {
    pub const ALL: [PaymentType; 6] = [
        PaymentType::PlatformSubscription,
        PaymentType::ApiSubscription,
        PaymentType::Job,
        PaymentType::ModelSale,
        PaymentType::PublishingFee,
        PaymentType::ListingFee,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentType::PlatformSubscription => "platform_subscription",
            PaymentType::ApiSubscription => "api_subscription",
            PaymentType::Job => "job",
            PaymentType::ModelSale => "model_sale",
            PaymentType::PublishingFee => "publishing_fee",
            PaymentType::ListingFee => "listing_fee",
        }
    }
}

impl std::fmt::Display for PaymentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PaymentType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PaymentType::ALL.iter().map(|t| t.as_str()).collect();
                format!("type must be one of {}", names.join(", "))
            })
    }
}

/// One version of the fee schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeSchedule {
    pub version: u32,
    /// Payments confirmed at or after this instant use this version (until a later one starts).
    pub effective_from: OffsetDateTime,
    /// The platform's share of each payment type, in percent (the rest goes to the beneficiary:
    /// the subscription pool, the creator, or the node).
    pub platform_percent: [(PaymentType, u32); 6],
    /// Fixed prices, in whole dollars.
    pub publishing_fee_usd: i64,
    pub listing_fee_usd: i64,
    pub listing_period_days: i64,
}

/// All versions, oldest first. Append only.
pub const SCHEDULES: &[FeeSchedule] = &[FeeSchedule {
    version: 1,
    effective_from: datetime!(2026-01-01 00:00 UTC),
    platform_percent: [
        (PaymentType::PlatformSubscription, 30),
        (PaymentType::ApiSubscription, 10),
        (PaymentType::Job, 5),
        (PaymentType::ModelSale, 5),
        (PaymentType::PublishingFee, 100),
        (PaymentType::ListingFee, 100),
    ],
    publishing_fee_usd: 5,
    listing_fee_usd: 2,
    listing_period_days: 30,
}];

impl FeeSchedule {
    /// The version in force at `at` (the first version also covers anything earlier).
    pub fn at(at: OffsetDateTime) -> &'static FeeSchedule {
        SCHEDULES
            .iter()
            .rev()
            .find(|s| s.effective_from <= at)
            .unwrap_or(&SCHEDULES[0])
    }

    pub fn by_version(version: u32) -> Option<&'static FeeSchedule> {
        SCHEDULES.iter().find(|s| s.version == version)
    }

    pub fn platform_percent(&self, payment_type: PaymentType) -> u32 {
        self.platform_percent
            .iter()
            .find(|(t, _)| *t == payment_type)
            .map_or(100, |(_, p)| *p)
    }

    /// Splits `amount` into (platform fee, net to the beneficiary), exactly: the two parts sum
    /// back to `amount` (largest remainder, the fee first on a tie).
    pub fn split(
        &self,
        payment_type: PaymentType,
        amount: Usdt,
    ) -> Result<(Usdt, Usdt), MoneyError> {
        let fee = Decimal::from(self.platform_percent(payment_type));
        let parts = amount.split(&[fee, Decimal::from(100) - fee])?;
        Ok((parts[0], parts[1]))
    }

    pub fn publishing_fee(&self) -> Usdt {
        Usdt::from_whole(self.publishing_fee_usd).unwrap_or(Usdt::ZERO)
    }

    pub fn listing_fee(&self) -> Usdt {
        Usdt::from_whole(self.listing_fee_usd).unwrap_or(Usdt::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap()
    }

    #[test]
    fn version_one_holds_the_published_rates() {
        let v1 = FeeSchedule::at(datetime!(2026-11-21 00:00 UTC));
        assert_eq!(v1.version, 1);
        assert_eq!(
            v1.split(PaymentType::PlatformSubscription, usdt("1000"))
                .unwrap(),
            (usdt("300"), usdt("700"))
        );
        assert_eq!(
            v1.split(PaymentType::ApiSubscription, usdt("100")).unwrap(),
            (usdt("10"), usdt("90"))
        );
        assert_eq!(
            v1.split(PaymentType::Job, usdt("20")).unwrap(),
            (usdt("1"), usdt("19"))
        );
        assert_eq!(
            v1.split(PaymentType::ModelSale, usdt("20")).unwrap(),
            (usdt("1"), usdt("19"))
        );
        assert_eq!(
            v1.split(PaymentType::PublishingFee, usdt("5")).unwrap(),
            (usdt("5"), usdt("0"))
        );
        assert_eq!(
            v1.split(PaymentType::ListingFee, usdt("2")).unwrap(),
            (usdt("2"), usdt("0"))
        );
        assert_eq!(v1.publishing_fee(), usdt("5"));
        assert_eq!(v1.listing_fee(), usdt("2"));
    }

    #[test]
    fn an_odd_micro_is_split_exactly() {
        let v1 = FeeSchedule::at(datetime!(2026-11-21 00:00 UTC));
        let (fee, net) = v1
            .split(PaymentType::ApiSubscription, usdt("0.000001"))
            .unwrap();
        assert_eq!(fee.checked_add(net).unwrap(), usdt("0.000001"));
    }

    #[test]
    fn versions_are_ordered_and_unique() {
        assert!(SCHEDULES
            .windows(2)
            .all(|w| w[0].effective_from < w[1].effective_from && w[0].version < w[1].version));
    }

    #[test]
    fn payment_types_parse_by_their_api_names() {
        assert_eq!(
            "listing_fee".parse::<PaymentType>(),
            Ok(PaymentType::ListingFee)
        );
        assert!("donation".parse::<PaymentType>().is_err());
    }
}
