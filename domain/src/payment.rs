//! The `Payment` aggregate: a USDT payment the platform asked for, and its confirmation by one
//! on-chain transfer. What the chain says about a transaction is read by the application layer
//! (`commands::chain`) and handed in with the command as a [`ChainObservation`]; this aggregate
//! decides whether it pays: enough confirmations, a transfer of the configured token to the
//! platform wallet for at least the amount, from a wallet the payer has proven. On
//! confirmation it records the fee split and the ledger postings, by the fee schedule in force.
//!
//! Payer rule (documented, not accidental): a transfer counts only if its sender is one of the
//! payer's *verified* wallets on that network. Anyone can read a transaction hash off the chain;
//! without this rule, whoever submits a hash first could take credit for someone else's payment.
//! Overpayment is accepted and recorded (`overpaid`); it is not refunded automatically.
//! "One transaction pays for one thing" is enforced across payments by a uniqueness claim on the
//! transaction hash, in the same transaction as `PaymentConfirmed` (application layer).

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fees::{FeeSchedule, FeeSource, FeeSourceError, FeeTable, PaymentType};
use crate::ledger::{payment_postings, Beneficiary, LedgerError, Posting};
use crate::money::Usdt;
use crate::wallet::Network;

pub const REFERENCE_CHARS_MAX: usize = 200;

/// A token transfer to the platform wallet found in a transaction, value in base units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedTransfer {
    pub from: String,
    pub value_micros: u128,
}

/// What the chain said about a transaction when the payment was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainObservation {
    NotFound,
    Failed {
        block: u64,
    },
    Succeeded {
        block: u64,
        confirmations: u64,
        /// Transfers of the configured token to the platform wallet only.
        transfers: Vec<ObservedTransfer>,
    },
}

/// A job id as the platform writes it: a UUID, lower-case and hyphenated.
pub fn is_job_id(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok_and(|id| id.to_string() == text)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("this payment already exists")]
    AlreadyExists,
    #[error("no such payment")]
    NotFound,
    #[error("the amount must be greater than zero")]
    AmountNotPositive,
    #[error("a {payment_type} payment is exactly {expected} USDT")]
    WrongAmount {
        payment_type: &'static str,
        expected: Usdt,
    },
    #[error("reference must be 1-{REFERENCE_CHARS_MAX} characters")]
    InvalidReference,
    /// A job payment escrows for the job it names: its reference is that job's id, a UUID
    /// (lower-case, hyphenated), or no job could ever use the money.
    #[error("a job payment's reference is the id of the job it pays for: a UUID such as 0191c1d2-7f3a-7c3e-9d1e-2b9f4e5a6c7d")]
    JobReferenceNotUuid,
    #[error("this payment is already confirmed by transaction {tx_hash}")]
    AlreadyConfirmed { tx_hash: String },
    #[error("the transaction failed on chain (reverted); it paid nothing")]
    TxFailed,
    #[error("the transaction has no transfer of the payment token to the platform wallet")]
    NoTransferToPlatform,
    #[error("the transfer paid {paid} USDT, the payment is {required} USDT")]
    Underpaid { paid: Usdt, required: Usdt },
    #[error("the transfer came from {from}, which is not a verified wallet of the payer")]
    SenderNotPayerWallet { from: String },
    #[error("the transaction is on {found}, the payment on {expected}")]
    WrongNetwork { expected: Network, found: Network },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Fees(#[from] FeeSourceError),
}

impl PaymentError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            PaymentError::AmountNotPositive | PaymentError::WrongAmount { .. } => Some("amount"),
            PaymentError::InvalidReference | PaymentError::JobReferenceNotUuid => Some("reference"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentCommand {
    Create {
        payment_id: String,
        payer: String,
        payment_type: PaymentType,
        network: Network,
        amount: Usdt,
        reference: String,
        /// The platform wallet on `network` the payer must send to.
        pay_to: String,
        beneficiary: Beneficiary,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Decide on a transaction the payer says pays this payment.
    Verify {
        network: Network,
        tx_hash: String,
        observation: ChainObservation,
        required_confirmations: u64,
        /// The payer's verified wallet addresses on this network (canonical).
        payer_wallets: Vec<String>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentCreated {
        payment_id: String,
        payer: String,
        payment_type: PaymentType,
        network: Network,
        amount: Usdt,
        reference: String,
        pay_to: String,
        beneficiary: Beneficiary,
        #[serde(with = "time::serde::rfc3339")]
        created_at: OffsetDateTime,
    },
    /// Carries every fact the ledger, revenue and payment views need, so none re-derives a rule.
    PaymentConfirmed {
        payment_id: String,
        payer: String,
        payment_type: PaymentType,
        reference: String,
        network: Network,
        tx_hash: String,
        from: String,
        amount: Usdt,
        paid: Usdt,
        overpaid: Usdt,
        fee_schedule_version: u32,
        platform_fee: Usdt,
        net: Usdt,
        postings: Vec<Posting>,
        block: u64,
        confirmations: u64,
        #[serde(with = "time::serde::rfc3339")]
        confirmed_at: OffsetDateTime,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            PaymentEvent::PaymentCreated { .. } => "PaymentCreated".to_string(),
            PaymentEvent::PaymentConfirmed { .. } => "PaymentConfirmed".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    Pending,
    Confirmed { tx_hash: String },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub created: Option<PaymentEvent>,
    pub confirmed_tx: Option<String>,
}

impl Payment {
    pub fn status(&self) -> Option<PaymentStatus> {
        self.created.as_ref()?;
        Some(match &self.confirmed_tx {
            Some(tx_hash) => PaymentStatus::Confirmed {
                tx_hash: tx_hash.clone(),
            },
            None => PaymentStatus::Pending,
        })
    }
}

/// The amount a payment of this type must be, if fixed by the schedule.
pub fn fixed_amount(schedule: &FeeSchedule, payment_type: PaymentType) -> Option<Usdt> {
    match payment_type {
        PaymentType::PublishingFee => Some(schedule.publishing_fee()),
        PaymentType::ListingFee => Some(schedule.listing_fee()),
        _ => None,
    }
}

/// The payment's port: the fee schedule in force when it is created (fixed fees) and when it
/// confirms (the split), read from the store by the real adapter.
#[derive(Clone)]
pub struct PaymentServices {
    pub fees: std::sync::Arc<dyn FeeSource>,
}

impl PaymentServices {
    pub fn new(fees: std::sync::Arc<dyn FeeSource>) -> Self {
        Self { fees }
    }

    /// Only version 1 (tests, and tools that never confirm).
    pub fn genesis() -> Self {
        Self::new(std::sync::Arc::new(FeeTable::genesis()))
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = PaymentServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            PaymentCommand::Create {
                payment_id,
                payer,
                payment_type,
                network,
                amount,
                reference,
                pay_to,
                beneficiary,
                at,
            } => {
                if self.created.is_some() {
                    return Err(PaymentError::AlreadyExists);
                }
                if !amount.is_positive() {
                    return Err(PaymentError::AmountNotPositive);
                }
                let schedule = services.fees.schedule_at(at).await?;
                if let Some(expected) = fixed_amount(&schedule, payment_type) {
                    if amount != expected {
                        return Err(PaymentError::WrongAmount {
                            payment_type: payment_type.as_str(),
                            expected,
                        });
                    }
                }
                let reference = reference.trim().to_string();
                if reference.is_empty() || reference.chars().count() > REFERENCE_CHARS_MAX {
                    return Err(PaymentError::InvalidReference);
                }
                if payment_type == PaymentType::Job && !is_job_id(&reference) {
                    return Err(PaymentError::JobReferenceNotUuid);
                }
                sink.write(
                    PaymentEvent::PaymentCreated {
                        payment_id,
                        payer,
                        payment_type,
                        network,
                        amount,
                        reference,
                        pay_to,
                        beneficiary,
                        created_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            PaymentCommand::Verify {
                network: tx_network,
                tx_hash,
                observation,
                required_confirmations,
                payer_wallets,
                at,
            } => {
                let Some(PaymentEvent::PaymentCreated {
                    payment_id,
                    payer,
                    payment_type,
                    network,
                    amount,
                    reference,
                    beneficiary,
                    ..
                }) = self.created.clone()
                else {
                    return Err(PaymentError::NotFound);
                };
                if let Some(confirmed) = &self.confirmed_tx {
                    // The same transaction again: already done, nothing to add.
                    return if *confirmed == tx_hash {
                        Ok(())
                    } else {
                        Err(PaymentError::AlreadyConfirmed {
                            tx_hash: confirmed.clone(),
                        })
                    };
                }
                if tx_network != network {
                    return Err(PaymentError::WrongNetwork {
                        expected: network,
                        found: tx_network,
                    });
                }
                let (block, confirmations, transfers) = match observation {
                    // Not yet visible: pending, the client polls.
                    ChainObservation::NotFound => return Ok(()),
                    ChainObservation::Failed { .. } => return Err(PaymentError::TxFailed),
                    ChainObservation::Succeeded {
                        block,
                        confirmations,
                        transfers,
                    } => (block, confirmations, transfers),
                };
                if transfers.is_empty() {
                    return Err(PaymentError::NoTransferToPlatform);
                }
                let required = amount.to_micros();
                let mut best: Option<&ObservedTransfer> = None;
                for transfer in &transfers {
                    if !payer_wallets.contains(&transfer.from) {
                        continue;
                    }
                    if best.is_none_or(|b| transfer.value_micros > b.value_micros) {
                        best = Some(transfer);
                    }
                }
                let Some(transfer) = best else {
                    return Err(PaymentError::SenderNotPayerWallet {
                        from: transfers[0].from.clone(),
                    });
                };
                let paid = i64::try_from(transfer.value_micros)
                    .ok()
                    .and_then(|m| Usdt::from_micros(m).ok())
                    .ok_or(PaymentError::Underpaid {
                        paid: Usdt::ZERO,
                        required: amount,
                    })?;
                if (transfer.value_micros as i128) < required {
                    return Err(PaymentError::Underpaid {
                        paid,
                        required: amount,
                    });
                }
                if confirmations < required_confirmations {
                    // Right transfer, not final yet: pending, the client polls.
                    return Ok(());
                }
                let schedule = services.fees.schedule_at(at).await?;
                let (platform_fee, net) = match &beneficiary {
                    // Held whole until the job ends.
                    Beneficiary::JobEscrow { .. } => (Usdt::ZERO, amount),
                    _ => schedule
                        .split(payment_type, amount)
                        .map_err(LedgerError::from)?,
                };
                let postings = payment_postings(
                    &schedule,
                    payment_type,
                    &payer,
                    amount,
                    &beneficiary,
                    &crate::ledger::month_key(at),
                )?;
                let overpaid = paid.checked_sub(amount).map_err(LedgerError::from)?;
                sink.write(
                    PaymentEvent::PaymentConfirmed {
                        payment_id,
                        payer,
                        payment_type,
                        reference,
                        network,
                        tx_hash,
                        from: transfer.from.clone(),
                        amount,
                        paid,
                        overpaid,
                        fee_schedule_version: schedule.version,
                        platform_fee,
                        net,
                        postings,
                        block,
                        confirmations,
                        confirmed_at: at,
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
            created @ PaymentEvent::PaymentCreated { .. } => self.created = Some(created),
            PaymentEvent::PaymentConfirmed { tx_hash, .. } => self.confirmed_tx = Some(tx_hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type PaymentTest = TestFramework<Payment>;
    const AT: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);
    const PAYER_WALLET: &str = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap()
    }

    fn created(payment_type: PaymentType, amount: &str, beneficiary: Beneficiary) -> PaymentEvent {
        PaymentEvent::PaymentCreated {
            payment_id: "p1".into(),
            payer: "u1".into(),
            payment_type,
            network: Network::Ethereum,
            amount: usdt(amount),
            reference: "plan:pro".into(),
            pay_to: "0xPLATFORM".into(),
            beneficiary,
            created_at: AT,
        }
    }

    fn subscription() -> PaymentEvent {
        created(PaymentType::PlatformSubscription, "30", Beneficiary::Pool)
    }

    fn verify(confirmations: u64, transfers: Vec<(&str, u128)>) -> PaymentCommand {
        PaymentCommand::Verify {
            network: Network::Ethereum,
            tx_hash: "0xabc".into(),
            observation: ChainObservation::Succeeded {
                block: 10,
                confirmations,
                transfers: transfers
                    .into_iter()
                    .map(|(from, value_micros)| ObservedTransfer {
                        from: from.into(),
                        value_micros,
                    })
                    .collect(),
            },
            required_confirmations: 3,
            payer_wallets: vec![PAYER_WALLET.into()],
            at: AT,
        }
    }

    #[test]
    fn an_exact_confirmed_transfer_confirms_with_the_fee_split_and_balanced_postings() {
        let result = PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(3, vec![(PAYER_WALLET, 30_000_000)]))
            .inspect_result()
            .unwrap();
        let [PaymentEvent::PaymentConfirmed {
            platform_fee,
            net,
            postings,
            fee_schedule_version,
            overpaid,
            ..
        }] = result.as_slice()
        else {
            panic!("expected one confirmation, got {result:?}");
        };
        assert_eq!((*platform_fee, *net), (usdt("9"), usdt("21")));
        assert_eq!(*fee_schedule_version, 1);
        assert_eq!(*overpaid, Usdt::ZERO);
        crate::ledger::balanced(postings).unwrap();
    }

    #[test]
    fn two_confirmations_are_pending_and_append_nothing() {
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(2, vec![(PAYER_WALLET, 30_000_000)]))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_transaction_not_yet_visible_is_pending() {
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(PaymentCommand::Verify {
                network: Network::Ethereum,
                tx_hash: "0xabc".into(),
                observation: ChainObservation::NotFound,
                required_confirmations: 3,
                payer_wallets: vec![],
                at: AT,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn paying_too_little_is_refused() {
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(5, vec![(PAYER_WALLET, 29_999_999)]))
            .then_expect_error(PaymentError::Underpaid {
                paid: usdt("29.999999"),
                required: usdt("30"),
            });
    }

    #[test]
    fn a_transfer_from_a_wallet_the_payer_has_not_proven_is_refused() {
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(5, vec![("0xSOMEONEELSE", 30_000_000)]))
            .then_expect_error(PaymentError::SenderNotPayerWallet {
                from: "0xSOMEONEELSE".into(),
            });
    }

    #[test]
    fn no_transfer_to_the_platform_and_a_reverted_transaction_are_refused() {
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(5, vec![]))
            .then_expect_error(PaymentError::NoTransferToPlatform);
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(PaymentCommand::Verify {
                network: Network::Ethereum,
                tx_hash: "0xabc".into(),
                observation: ChainObservation::Failed { block: 9 },
                required_confirmations: 3,
                payer_wallets: vec![PAYER_WALLET.into()],
                at: AT,
            })
            .then_expect_error(PaymentError::TxFailed);
    }

    #[test]
    fn overpaying_confirms_and_records_the_excess() {
        let result = PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(3, vec![(PAYER_WALLET, 31_500_000)]))
            .inspect_result()
            .unwrap();
        let [PaymentEvent::PaymentConfirmed {
            overpaid,
            paid,
            amount,
            ..
        }] = result.as_slice()
        else {
            panic!()
        };
        assert_eq!(
            (*overpaid, *paid, *amount),
            (usdt("1.5"), usdt("31.5"), usdt("30"))
        );
    }

    #[test]
    fn a_confirmed_payment_cannot_be_paid_by_another_transaction() {
        let confirm = PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription()])
            .when(verify(3, vec![(PAYER_WALLET, 30_000_000)]))
            .inspect_result()
            .unwrap();
        let mut other = verify(3, vec![(PAYER_WALLET, 30_000_000)]);
        if let PaymentCommand::Verify { tx_hash, .. } = &mut other {
            *tx_hash = "0xdef".into();
        }
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription(), confirm[0].clone()])
            .when(other)
            .then_expect_error(PaymentError::AlreadyConfirmed {
                tx_hash: "0xabc".into(),
            });
        PaymentTest::with(PaymentServices::genesis())
            .given(vec![subscription(), confirm[0].clone()])
            .when(verify(3, vec![(PAYER_WALLET, 30_000_000)]))
            .then_expect_events(vec![]);
    }

    #[test]
    fn fixed_price_payments_must_be_the_schedule_price() {
        PaymentTest::with(PaymentServices::genesis())
            .given_no_previous_events()
            .when(PaymentCommand::Create {
                payment_id: "p1".into(),
                payer: "u1".into(),
                payment_type: PaymentType::PublishingFee,
                network: Network::Tron,
                amount: usdt("4.99"),
                reference: "model:m1".into(),
                pay_to: "TPLATFORM".into(),
                beneficiary: Beneficiary::Platform,
                at: AT,
            })
            .then_expect_error(PaymentError::WrongAmount {
                payment_type: "publishing_fee",
                expected: usdt("5"),
            });
    }
}
