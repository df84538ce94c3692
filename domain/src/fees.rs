//! The fee schedule, as versioned data. Each confirmed payment records the version it was split
//! by; a change of rates is a new version with its own effective date, so the past is never
//! re-priced. Version 1 ([`genesis`]) is the schedule the platform launched with and is not an
//! event: every history recorded before fees became data replays under it byte for byte. Later
//! versions are adopted proposals of the `FeeBook` aggregate ([`crate::fee_book`]); the
//! schedule in force at an instant is read from the store through the [`FeeSource`] port, never
//! from a per-process constant, so an adoption on one instance applies on every instance.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    pub version: u32,
    /// Payments confirmed at or after this instant use this version (until a later one starts).
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    #[serde(flatten)]
    pub rates: FeeRates,
}

/// What a version decides: the platform's share of each payment type, the fixed fees, and the
/// compute rate once inference nodes earn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeRates {
    /// The platform's share of each payment type, in whole percent (the rest goes to the
    /// beneficiary: the subscription pool, the creator, or the node). Every type is named.
    pub platform_percent: BTreeMap<PaymentType, u32>,
    pub publishing_fee: Usdt,
    pub listing_fee: Usdt,
    /// What a node earns per 1,000 tokens it serves; `None` until inference nodes earn (room
    /// kept in the shape so that adding the rate is a new version, not a new event shape).
    #[serde(default)]
    pub compute_per_1k_tokens: Option<Usdt>,
}

/// Version 1: the rates the platform launched with. Not an event (histories from before fees
/// became data name it by number), so it must never change.
pub fn genesis() -> FeeSchedule {
    FeeSchedule {
        version: 1,
        effective_from: datetime!(2026-01-01 00:00 UTC),
        rates: FeeRates {
            platform_percent: BTreeMap::from([
                (PaymentType::PlatformSubscription, 30),
                (PaymentType::ApiSubscription, 10),
                (PaymentType::Job, 5),
                (PaymentType::ModelSale, 5),
                (PaymentType::PublishingFee, 100),
                (PaymentType::ListingFee, 100),
            ]),
            publishing_fee: Usdt::from_micros(5_000_000).unwrap_or(Usdt::ZERO),
            listing_fee: Usdt::from_micros(2_000_000).unwrap_or(Usdt::ZERO),
            compute_per_1k_tokens: None,
        },
    }
}

/// Why a set of rates cannot be a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatesError {
    #[error("platform_percent must name every payment type; {0} is missing")]
    MissingType(PaymentType),
    #[error("the platform's share of {payment_type} must be 0 to 100 percent, not {percent}")]
    PercentOutOfRange {
        payment_type: PaymentType,
        percent: u32,
    },
    #[error("{field} must not be negative")]
    Negative { field: &'static str },
}

impl RatesError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            RatesError::MissingType(_) | RatesError::PercentOutOfRange { .. } => "platform_percent",
            RatesError::Negative { field } => field,
        }
    }
}

impl FeeRates {
    pub fn validate(&self) -> Result<(), RatesError> {
        for payment_type in PaymentType::ALL {
            match self.platform_percent.get(&payment_type) {
                None => return Err(RatesError::MissingType(payment_type)),
                Some(&percent) if percent > 100 => {
                    return Err(RatesError::PercentOutOfRange {
                        payment_type,
                        percent,
                    })
                }
                Some(_) => {}
            }
        }
        for (field, amount) in [
            ("publishing_fee", Some(self.publishing_fee)),
            ("listing_fee", Some(self.listing_fee)),
            ("compute_per_1k_tokens", self.compute_per_1k_tokens),
        ] {
            if amount.is_some_and(|a| a.is_negative()) {
                return Err(RatesError::Negative { field });
            }
        }
        Ok(())
    }
}

impl FeeSchedule {
    pub fn platform_percent(&self, payment_type: PaymentType) -> u32 {
        self.rates
            .platform_percent
            .get(&payment_type)
            .copied()
            .unwrap_or(100)
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
        self.rates.publishing_fee
    }

    pub fn listing_fee(&self) -> Usdt {
        self.rates.listing_fee
    }
}

/// Every adopted version, genesis first, ordered by effective date (and so by version: an
/// adoption must start after the latest version, see `fee_book`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeTable {
    versions: Vec<FeeSchedule>,
}

impl Default for FeeTable {
    fn default() -> Self {
        Self::genesis()
    }
}

impl FeeTable {
    /// Only version 1: the table of a store where no version was ever adopted.
    pub fn genesis() -> Self {
        Self {
            versions: vec![genesis()],
        }
    }

    /// Genesis, then `adopted` in the order they were adopted.
    pub fn with_adopted(adopted: impl IntoIterator<Item = FeeSchedule>) -> Self {
        let mut versions = vec![genesis()];
        versions.extend(adopted);
        Self { versions }
    }

    /// The version in force at `at` (genesis also covers anything earlier).
    pub fn at(&self, at: OffsetDateTime) -> &FeeSchedule {
        self.versions
            .iter()
            .rev()
            .find(|s| s.effective_from <= at)
            .unwrap_or(&self.versions[0])
    }

    pub fn by_version(&self, version: u32) -> Option<&FeeSchedule> {
        self.versions.iter().find(|s| s.version == version)
    }

    pub fn latest(&self) -> &FeeSchedule {
        self.versions.last().unwrap_or(&self.versions[0])
    }

    pub fn versions(&self) -> &[FeeSchedule] {
        &self.versions
    }
}

/// The store could not say which schedule is in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fee schedule could not be read: {0}")]
pub struct FeeSourceError(pub String);

pub type FeeLookup<'a> =
    Pin<Box<dyn Future<Output = Result<FeeSchedule, FeeSourceError>> + Send + 'a>>;

/// The port through which an aggregate learns the schedule in force at an instant. The real
/// adapter reads the `FeeBook` from the store on every call (`aiforge_commands::fees`), so no
/// instance decides with a stale copy; tests use a [`FeeTable`].
pub trait FeeSource: Send + Sync {
    fn schedule_at(&self, at: OffsetDateTime) -> FeeLookup<'_>;
}

impl FeeSource for FeeTable {
    fn schedule_at(&self, at: OffsetDateTime) -> FeeLookup<'_> {
        let schedule = self.at(at).clone();
        Box::pin(std::future::ready(Ok(schedule)))
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
        let v1 = FeeTable::genesis()
            .at(datetime!(2026-11-21 00:00 UTC))
            .clone();
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
        let v1 = FeeTable::genesis()
            .at(datetime!(2026-11-21 00:00 UTC))
            .clone();
        let (fee, net) = v1
            .split(PaymentType::ApiSubscription, usdt("0.000001"))
            .unwrap();
        assert_eq!(fee.checked_add(net).unwrap(), usdt("0.000001"));
    }

    #[test]
    fn genesis_rates_are_valid_and_name_every_type() {
        assert_eq!(genesis().rates.validate(), Ok(()));
    }

    #[test]
    fn the_table_answers_the_version_in_force_at_an_instant() {
        let mut v2 = genesis();
        v2.version = 2;
        v2.effective_from = datetime!(2026-12-01 00:00 UTC);
        v2.rates
            .platform_percent
            .insert(PaymentType::PlatformSubscription, 40);
        let table = FeeTable::with_adopted([v2]);
        assert_eq!(table.at(datetime!(2025-06-01 00:00 UTC)).version, 1);
        assert_eq!(table.at(datetime!(2026-11-30 23:59:59 UTC)).version, 1);
        assert_eq!(table.at(datetime!(2026-12-01 00:00 UTC)).version, 2);
        assert_eq!(table.by_version(2).map(|s| s.version), Some(2));
        assert_eq!(
            table
                .at(datetime!(2026-12-02 00:00 UTC))
                .split(PaymentType::PlatformSubscription, usdt("100"))
                .unwrap(),
            (usdt("40"), usdt("60"))
        );
    }

    #[test]
    fn rates_refuse_a_missing_type_a_percent_over_100_and_a_negative_fee() {
        let mut rates = genesis().rates;
        rates.platform_percent.remove(&PaymentType::Job);
        assert_eq!(
            rates.validate(),
            Err(RatesError::MissingType(PaymentType::Job))
        );
        let mut rates = genesis().rates;
        rates.platform_percent.insert(PaymentType::Job, 101);
        assert_eq!(rates.validate().unwrap_err().field(), "platform_percent");
        let mut rates = genesis().rates;
        rates.listing_fee = usdt("-1");
        assert_eq!(
            rates.validate(),
            Err(RatesError::Negative {
                field: "listing_fee"
            })
        );
    }

    #[test]
    fn a_schedule_serializes_its_rates_flat_with_money_as_strings() {
        let json = serde_json::to_value(genesis()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["platform_percent"]["platform_subscription"], 30);
        assert_eq!(json["publishing_fee"], "5.000000");
        assert_eq!(json["compute_per_1k_tokens"], serde_json::Value::Null);
        let back: FeeSchedule = serde_json::from_value(json).unwrap();
        assert_eq!(back, genesis());
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
