//! Exact money. `Usdt` is a `rust_decimal::Decimal` held at USDT's on-chain precision of 6
//! decimal places; it never passes through a float. Amounts serialize as strings with exactly six
//! decimals ("10.500000") so that stored events and digests are canonical. Splits are done in
//! integer micro-units with the largest-remainder method, so the parts always sum back to the
//! whole.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// USDT's token unit on Ethereum and Tron: 1 USDT = 10^6 base units.
pub const USDT_DECIMALS: u32 = 6;
/// No amount on this platform is larger than this (it is more than all USDT in existence), so an
/// input beyond it is a mistake or an attack, never a payment.
pub const USDT_ABS_MAX: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not a decimal number")]
    NotANumber(String),
    #[error("an amount has at most {USDT_DECIMALS} decimal places, got {0}")]
    TooManyDecimals(String),
    #[error("an amount is at most {USDT_ABS_MAX} in absolute value, got {0}")]
    OutOfRange(String),
    #[error("the amount must be greater than zero, got {0}")]
    NotPositive(String),
    #[error("arithmetic overflow")]
    Overflow,
    #[error("a split needs at least one weight, all weights >= 0 and a positive total")]
    InvalidWeights,
}

/// An exact amount of USDT (may be negative: ledger postings are signed).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usdt(Decimal);

/// Digits with at most one `.`, an optional leading `-`, starting with a digit: the one form
/// a decimal takes in a request (money, percentages). No exponent, no `+`, no spaces inside.
pub fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    !unsigned.is_empty()
        && unsigned.chars().all(|c| c.is_ascii_digit() || c == '.')
        && unsigned.matches('.').count() <= 1
        && unsigned.starts_with(|c: char| c.is_ascii_digit())
}

impl Usdt {
    pub const ZERO: Usdt = Usdt(Decimal::ZERO);

    /// From a count of base units (1 USDT = 1_000_000 micros).
    pub fn from_micros(micros: i64) -> Result<Self, MoneyError> {
        Self::checked(Decimal::new(micros, USDT_DECIMALS))
    }

    /// From whole dollars, for constants like fee amounts.
    pub fn from_whole(dollars: i64) -> Result<Self, MoneyError> {
        Self::checked(Decimal::from(dollars))
    }

    /// Parses user input strictly: plain decimal notation, at most 6 decimal places, within range.
    pub fn parse(input: &str) -> Result<Self, MoneyError> {
        let trimmed = input.trim();
        if !is_plain_decimal(trimmed) {
            return Err(MoneyError::NotANumber(input.to_string()));
        }
        let value =
            Decimal::from_str(trimmed).map_err(|_| MoneyError::OutOfRange(input.to_string()))?;
        if value.scale() > USDT_DECIMALS && value.normalize().scale() > USDT_DECIMALS {
            return Err(MoneyError::TooManyDecimals(input.to_string()));
        }
        Self::checked(value)
    }

    /// Like `parse`, and the amount must be > 0 (what a price or a payment must be).
    pub fn parse_positive(input: &str) -> Result<Self, MoneyError> {
        let amount = Self::parse(input)?;
        if amount.is_positive() {
            Ok(amount)
        } else {
            Err(MoneyError::NotPositive(input.to_string()))
        }
    }

    fn checked(value: Decimal) -> Result<Self, MoneyError> {
        if value.abs() > Decimal::from(USDT_ABS_MAX) {
            return Err(MoneyError::OutOfRange(value.to_string()));
        }
        let mut rounded = value;
        // Values built here always have scale <= 6; rescale pins the representation so that
        // equal amounts have equal strings.
        rounded.rescale(USDT_DECIMALS);
        if rounded != value {
            return Err(MoneyError::TooManyDecimals(value.to_string()));
        }
        Ok(Usdt(rounded))
    }

    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// The amount in base units; exact because the scale is pinned to 6.
    pub fn to_micros(&self) -> i128 {
        self.0.mantissa()
    }

    fn from_micros_i128(micros: i128) -> Result<Self, MoneyError> {
        let as_i64 = i64::try_from(micros).map_err(|_| MoneyError::Overflow)?;
        Self::from_micros(as_i64)
    }

    pub fn is_positive(&self) -> bool {
        self.0 > Decimal::ZERO
    }

    pub fn is_negative(&self) -> bool {
        self.0 < Decimal::ZERO
    }

    pub fn checked_add(self, other: Usdt) -> Result<Usdt, MoneyError> {
        Self::from_micros_i128(self.to_micros() + other.to_micros())
    }

    pub fn checked_sub(self, other: Usdt) -> Result<Usdt, MoneyError> {
        Self::from_micros_i128(self.to_micros() - other.to_micros())
    }

    pub fn checked_neg(self) -> Usdt {
        Usdt(-self.0)
    }

    /// Divides the amount into parts proportional to `weights` that sum back to the amount
    /// exactly, to the micro-unit.
    ///
    /// Method: largest remainder (Hamilton). Each part first gets the floor of its exact quota in
    /// micros; the micros left over go one each to the parts with the largest fractional
    /// remainders. Ties rule: equal remainders are served in the order the weights were given
    /// (lower index first), so the result is a pure function of the input order.
    /// A negative amount is split as its absolute value and negated, so refunds mirror charges.
    pub fn split(&self, weights: &[Decimal]) -> Result<Vec<Usdt>, MoneyError> {
        if weights.is_empty() || weights.iter().any(|w| w.is_sign_negative() && !w.is_zero()) {
            return Err(MoneyError::InvalidWeights);
        }
        // Bring every weight to one common integer scale so that the quota arithmetic below
        // is exact integer arithmetic, with no rounding anywhere.
        let scale = weights.iter().map(|w| w.scale()).max().unwrap_or(0);
        let mut ints = Vec::with_capacity(weights.len());
        for weight in weights {
            let mut w = *weight;
            w.rescale(scale);
            if w.scale() != scale {
                return Err(MoneyError::Overflow);
            }
            ints.push(w.mantissa());
        }
        let total_weight: i128 = ints
            .iter()
            .try_fold(0i128, |acc, w| acc.checked_add(*w))
            .ok_or(MoneyError::Overflow)?;
        if total_weight <= 0 {
            return Err(MoneyError::InvalidWeights);
        }
        let negative = self.is_negative();
        let total = self.to_micros().abs();

        let mut parts = Vec::with_capacity(ints.len());
        let mut remainders = Vec::with_capacity(ints.len());
        let mut distributed: i128 = 0;
        for w in &ints {
            let product = total.checked_mul(*w).ok_or(MoneyError::Overflow)?;
            let floor = product / total_weight;
            parts.push(floor);
            remainders.push(product % total_weight);
            distributed += floor;
        }
        let mut left = total - distributed;
        let mut order: Vec<usize> = (0..ints.len()).collect();
        // Stable sort: equal remainders keep input order (the documented tie rule).
        order.sort_by(|a, b| remainders[*b].cmp(&remainders[*a]));
        for index in order {
            if left == 0 {
                break;
            }
            parts[index] += 1;
            left -= 1;
        }
        parts
            .into_iter()
            .map(|micros| Self::from_micros_i128(if negative { -micros } else { micros }))
            .collect()
    }

    /// `self * rate`, rounded half-even to the micro (banker's rounding keeps aggregate bias at
    /// zero). Use `split` instead wherever the parts must add back to the whole.
    pub fn mul_rounded(&self, rate: Decimal) -> Result<Usdt, MoneyError> {
        let product = self.0.checked_mul(rate).ok_or(MoneyError::Overflow)?;
        let rounded = product.round_dp_with_strategy(
            USDT_DECIMALS,
            rust_decimal::RoundingStrategy::MidpointNearestEven,
        );
        Self::checked(rounded)
    }

    /// `value` rounded half-even to the micro: for a price computed exactly from several parts,
    /// rounded once at the end.
    pub fn from_decimal_rounded(value: Decimal) -> Result<Usdt, MoneyError> {
        Self::checked(value.round_dp_with_strategy(
            USDT_DECIMALS,
            rust_decimal::RoundingStrategy::MidpointNearestEven,
        ))
    }

    /// Whole micros as f64 for metrics only; never used for money decisions.
    pub fn approx_f64_for_metrics(&self) -> f64 {
        self.0.to_f64().unwrap_or(0.0)
    }
}

impl fmt::Display for Usdt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.0)
    }
}

impl fmt::Debug for Usdt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usdt({self})")
    }
}

impl FromStr for Usdt {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Usdt {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Usdt {
    /// Only strings are accepted: a JSON number may already have passed through a float.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Usdt::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document an amount is what it is on the wire: a decimal string, never a
/// number (a JSON number may already have passed through a float).
impl utoipa::PartialSchema for Usdt {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^-?[0-9]+(\.[0-9]{1,6})?$"))
            .description(Some(
                "An exact amount of USDT as a decimal string, at most 6 decimal places \
                 (answers always carry 6); never a JSON number.",
            ))
            .examples(["10.500000"])
            .into()
    }
}

impl utoipa::ToSchema for Usdt {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap()
    }

    #[test]
    fn amounts_serialize_as_strings_with_six_decimals() {
        assert_eq!(
            serde_json::to_string(&usdt("10.5")).unwrap(),
            "\"10.500000\""
        );
        assert_eq!(serde_json::to_string(&usdt("0")).unwrap(), "\"0.000000\"");
        let back: Usdt = serde_json::from_str("\"0.000001\"").unwrap();
        assert_eq!(back.to_micros(), 1);
    }

    #[test]
    fn json_numbers_are_refused_because_they_may_have_been_floats() {
        assert!(serde_json::from_str::<Usdt>("10.5").is_err());
    }

    #[test]
    fn malformed_inputs_are_named_errors() {
        assert!(matches!(Usdt::parse("abc"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usdt::parse("1e5"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(Usdt::parse(""), Err(MoneyError::NotANumber(_))));
        assert!(matches!(
            Usdt::parse("1.2.3"),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(Usdt::parse(".5"), Err(MoneyError::NotANumber(_))));
        assert!(matches!(
            Usdt::parse("0.0000001"),
            Err(MoneyError::TooManyDecimals(_))
        ));
        assert!(matches!(
            Usdt::parse("99999999999999999999999"),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(
            Usdt::parse_positive("0"),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            Usdt::parse_positive("-1"),
            Err(MoneyError::NotPositive(_))
        ));
        // Trailing zeros beyond six places do not change the value, so they are accepted.
        assert_eq!(usdt("1.50000000").to_micros(), 1_500_000);
    }

    #[test]
    fn the_seed_example_splits_exactly() {
        let pool = usdt("700");
        let parts = pool
            .split(&[
                Decimal::from(40),
                Decimal::from(30),
                Decimal::from(20),
                Decimal::from(10),
            ])
            .unwrap();
        let as_strings: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            as_strings,
            ["280.000000", "210.000000", "140.000000", "70.000000"]
        );
    }

    #[test]
    fn a_split_into_thirds_gives_the_extra_micro_to_the_first_part() {
        let parts = usdt("1")
            .split(&[Decimal::ONE, Decimal::ONE, Decimal::ONE])
            .unwrap();
        let micros: Vec<i128> = parts.iter().map(|p| p.to_micros()).collect();
        assert_eq!(micros, [333_334, 333_333, 333_333]);
    }

    #[test]
    fn a_split_with_no_positive_weight_is_refused() {
        assert_eq!(usdt("1").split(&[]), Err(MoneyError::InvalidWeights));
        assert_eq!(
            usdt("1").split(&[Decimal::ZERO]),
            Err(MoneyError::InvalidWeights)
        );
        assert_eq!(
            usdt("1").split(&[Decimal::ONE, Decimal::NEGATIVE_ONE]),
            Err(MoneyError::InvalidWeights)
        );
    }

    proptest! {
        #[test]
        fn parse_and_display_round_trip(micros in -1_000_000_000_000_000i64..1_000_000_000_000_000i64) {
            let amount = Usdt::from_micros(micros).unwrap();
            prop_assert_eq!(Usdt::parse(&amount.to_string()).unwrap(), amount);
            let json = serde_json::to_string(&amount).unwrap();
            prop_assert_eq!(serde_json::from_str::<Usdt>(&json).unwrap(), amount);
        }

        #[test]
        fn checked_arithmetic_is_exact(a in -1_000_000_000_000i64..1_000_000_000_000i64,
                                       b in -1_000_000_000_000i64..1_000_000_000_000i64) {
            let x = Usdt::from_micros(a).unwrap();
            let y = Usdt::from_micros(b).unwrap();
            let sum = x.checked_add(y).unwrap();
            prop_assert_eq!(sum.to_micros(), i128::from(a) + i128::from(b));
            prop_assert_eq!(sum.checked_sub(y).unwrap(), x);
        }

        #[test]
        fn adding_beyond_the_maximum_is_an_error_not_a_wrap(a in 0i64..1_000_000i64) {
            let max = Usdt::from_whole(USDT_ABS_MAX).unwrap();
            let extra = Usdt::from_micros(a + 1).unwrap();
            prop_assert!(max.checked_add(extra).is_err());
        }

        #[test]
        fn split_parts_sum_back_exactly(micros in -1_000_000_000_000_000i64..1_000_000_000_000_000i64,
                                        weights in proptest::collection::vec(0u64..10_000_000_000u64, 1..40)) {
            prop_assume!(weights.iter().any(|w| *w > 0));
            let amount = Usdt::from_micros(micros).unwrap();
            let weights: Vec<Decimal> = weights.into_iter().map(Decimal::from).collect();
            let parts = amount.split(&weights).unwrap();
            prop_assert_eq!(parts.len(), weights.len());
            let sum: i128 = parts.iter().map(|p| p.to_micros()).sum();
            prop_assert_eq!(sum, amount.to_micros());
            // No part strays more than one micro from its exact quota, and a zero weight gets zero.
            let total_w: Decimal = weights.iter().sum();
            for (part, w) in parts.iter().zip(&weights) {
                if w.is_zero() { prop_assert_eq!(part.to_micros(), 0); }
                let quota = Decimal::from(micros) * *w / total_w;
                prop_assert!((Decimal::from(part.to_micros() as i64) - quota).abs() < Decimal::from(1) + Decimal::new(1, 9));
                if micros >= 0 { prop_assert!(!part.is_negative()); }
            }
        }

        #[test]
        fn split_by_percentages_with_two_decimals_sums_back(micros in 0i64..1_000_000_000_000i64,
                                                             cents in proptest::collection::vec(1u32..10_000u32, 1..10)) {
            let amount = Usdt::from_micros(micros).unwrap();
            let weights: Vec<Decimal> = cents.into_iter().map(|c| Decimal::new(i64::from(c), 2)).collect();
            let parts = amount.split(&weights).unwrap();
            let sum: i128 = parts.iter().map(|p| p.to_micros()).sum();
            prop_assert_eq!(sum, amount.to_micros());
        }
    }
}
