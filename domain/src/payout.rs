//! The `Payout` aggregate: money out, one USDT transfer from the platform's hot wallet to a
//! payee's wallet for the whole of a payable, modelled on BTCPay Server's payouts (awaiting
//! approval → awaiting payment → in progress → completed | cancelled | failed) and on Stripe's
//! idempotent transfers.
//!
//! Exactly once, through crashes: the signed transaction (raw bytes, hash and, on Ethereum, its
//! nonce) is recorded here *before* it is broadcast, so a restart finds it and broadcasts the
//! same bytes again; a payout in progress is never signed anew, only *replaced at the same
//! nonce* (a stuck Ethereum transaction with a higher fee), and then any of its transactions
//! may be the one that is mined. It fails only when none of them can ever be mined: a revert,
//! its nonce taken by another transaction of the hot wallet (Ethereum), or its expiration
//! passed (Tron). Nothing leaves the payable until completion: the completion's postings move
//! the amount from the payable to `hot_wallet:<network>` (what was paid out through it), so a
//! failure or a cancellation returns nothing because nothing was taken, and every account
//! balances at every point of the log.
//!
//! The aggregate id is `<payable account>.<n>`, `n` the payee's count of payouts before it:
//! two instances that decide the same payout at once name the same aggregate, and one of them
//! is refused.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ledger::{balanced, LedgerAccount, Posting};
use crate::revenue_book::Month;
use crate::wallet::{Network, Wallet};
use crate::Usdt;

/// Longest reason text kept in an event (a node's error message may be long).
pub const REASON_CHARS_MAX: usize = 500;

/// Where a payout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    #[default]
    New,
    AwaitingApproval,
    AwaitingPayment,
    InProgress,
    Completed,
    Cancelled,
    Failed,
}

impl PayoutState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PayoutState::New => "new",
            PayoutState::AwaitingApproval => "awaiting_approval",
            PayoutState::AwaitingPayment => "awaiting_payment",
            PayoutState::InProgress => "in_progress",
            PayoutState::Completed => "completed",
            PayoutState::Cancelled => "cancelled",
            PayoutState::Failed => "failed",
        }
    }

    /// Still holds its amount of the payable (the payable is not paid again meanwhile).
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            PayoutState::AwaitingApproval | PayoutState::AwaitingPayment | PayoutState::InProgress
        )
    }
}

/// Why a payout was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PayoutCause {
    /// After the close of `month`.
    Close { month: Month },
    /// The payee asked for it.
    Withdraw,
}

/// A transaction signed for a payout, as recorded before its broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransfer {
    /// `0x…` on Ethereum, the 64-hex txid on Tron.
    pub hash: String,
    /// The signed transaction: RLP bytes as `0x…` hex (Ethereum), the transaction JSON with its
    /// signature (Tron): exactly what is broadcast, again after a restart.
    pub raw: String,
    /// Ethereum: the hot wallet's nonce it uses.
    pub nonce: Option<u64>,
    /// Tron: after this the transaction can never be included.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Why a payout failed: its transactions can never be mined, or one reverted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FailureReason {
    /// Mined and reverted (the token refused the transfer).
    Reverted { hash: String, detail: String },
    /// Ethereum: another transaction of the hot wallet was mined at this payout's nonce.
    NonceTaken { nonce: u64 },
    /// Tron: expired unconfirmed.
    Expired { hash: String },
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::Reverted { hash, detail } => {
                write!(f, "transaction {hash} reverted: {detail}")
            }
            FailureReason::NonceTaken { nonce } => write!(
                f,
                "dropped: nonce {nonce} was used by another transaction of the hot wallet"
            ),
            FailureReason::Expired { hash } => write!(f, "transaction {hash} expired unconfirmed"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutError {
    #[error("this payout exists already")]
    AlreadyRequested,
    #[error("no such payout")]
    NotFound,
    #[error("{amount} is below the payout minimum of {minimum}")]
    BelowMinimum { amount: Usdt, minimum: Usdt },
    #[error("the payout is {state}, not {expected}")]
    WrongState {
        state: &'static str,
        expected: &'static str,
    },
    #[error(
        "the payout's transaction is signed already: it is broadcast again, never signed anew"
    )]
    AlreadySigned,
    #[error("a replacement must use the same nonce ({nonce}) as the transaction it replaces")]
    NonceMismatch { nonce: u64 },
    #[error("{hash} is not a transaction of this payout")]
    UnknownTransaction { hash: String },
    #[error("the payout wallet is on {wallet}, the transaction on {network}")]
    WrongNetwork { wallet: Network, network: Network },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutCommand {
    /// Decided by the payout pass (after a close, on a withdraw): the whole payable, at or above
    /// `minimum`; above `approval_threshold` it waits for an admin.
    Request {
        payable: LedgerAccount,
        /// The user paid (a creator, or a node's owner).
        user_id: String,
        wallet: Wallet,
        amount: Usdt,
        cause: PayoutCause,
        minimum: Usdt,
        approval_threshold: Usdt,
        at: OffsetDateTime,
    },
    Approve {
        admin: String,
        at: OffsetDateTime,
    },
    Cancel {
        by: String,
        reason: String,
        at: OffsetDateTime,
    },
    /// The pass could not pay it now (hot wallet short of USDT or gas, no node): recorded only
    /// when the reason changes, so an admin sees why.
    Wait {
        reason: String,
        at: OffsetDateTime,
    },
    /// Records a signed transaction before its broadcast: the first one, or a replacement at
    /// the same nonce.
    RecordSigned {
        network: Network,
        transfer: SignedTransfer,
        at: OffsetDateTime,
    },
    Complete {
        hash: String,
        block: u64,
        at: OffsetDateTime,
    },
    Fail {
        reason: FailureReason,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutEvent {
    PayoutRequested {
        payout_id: String,
        payable: LedgerAccount,
        user_id: String,
        wallet: Wallet,
        amount: Usdt,
        cause: PayoutCause,
        needs_approval: bool,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    PayoutApproved {
        admin: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    PayoutCancelled {
        by: String,
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    PayoutWaiting {
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    PayoutTransactionSigned {
        network: Network,
        transfer: SignedTransfer,
        /// The hash of the transaction this one replaces at the same nonce.
        replaces: Option<String>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    PayoutCompleted {
        hash: String,
        block: u64,
        /// payable −amount, `hot_wallet:<network>` +amount.
        postings: Vec<Posting>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    PayoutFailed {
        reason: FailureReason,
        /// The reason in words, for views.
        message: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

pub const PAYOUT_COMPLETED: &str = "PayoutCompleted";

impl DomainEvent for PayoutEvent {
    fn event_type(&self) -> String {
        match self {
            PayoutEvent::PayoutRequested { .. } => "PayoutRequested",
            PayoutEvent::PayoutApproved { .. } => "PayoutApproved",
            PayoutEvent::PayoutCancelled { .. } => "PayoutCancelled",
            PayoutEvent::PayoutWaiting { .. } => "PayoutWaiting",
            PayoutEvent::PayoutTransactionSigned { .. } => "PayoutTransactionSigned",
            PayoutEvent::PayoutCompleted { .. } => PAYOUT_COMPLETED,
            PayoutEvent::PayoutFailed { .. } => "PayoutFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// The id of a payee's `n`-th payout (from 0).
pub fn payout_id(payable: &LedgerAccount, n: u64) -> String {
    format!("{}.{n}", payable.name())
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Payout {
    pub payout_id: String,
    pub state: PayoutState,
    pub payable: Option<LedgerAccount>,
    pub user_id: String,
    pub wallet: Option<Wallet>,
    pub amount: Usdt,
    pub cause: Option<PayoutCause>,
    /// Every transaction signed for it, oldest first (replacements share the first's nonce).
    pub transfers: Vec<SignedTransfer>,
    pub waiting: Option<String>,
    /// When the latest transaction was signed (a stuck one is replaced some time after).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub signed_at: Option<OffsetDateTime>,
}

impl Payout {
    fn expect(&self, expected: PayoutState) -> Result<(), PayoutError> {
        if self.state == PayoutState::New {
            return Err(PayoutError::NotFound);
        }
        if self.state != expected {
            return Err(PayoutError::WrongState {
                state: self.state.as_str(),
                expected: expected.as_str(),
            });
        }
        Ok(())
    }

    /// The transaction to broadcast (the latest signed).
    pub fn current_transfer(&self) -> Option<&SignedTransfer> {
        self.transfers.last()
    }
}

fn bounded(reason: &str) -> String {
    reason.chars().take(REASON_CHARS_MAX).collect()
}

pub struct PayoutServices;

impl Aggregate for Payout {
    const TYPE: &'static str = "payout";
    type Command = (String, PayoutCommand);
    type Event = PayoutEvent;
    type Error = PayoutError;
    type Services = PayoutServices;

    async fn handle(
        &mut self,
        (id, command): Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            PayoutCommand::Request {
                payable,
                user_id,
                wallet,
                amount,
                cause,
                minimum,
                approval_threshold,
                at,
            } => {
                if self.state != PayoutState::New {
                    return Err(PayoutError::AlreadyRequested);
                }
                if amount < minimum || !amount.is_positive() {
                    return Err(PayoutError::BelowMinimum { amount, minimum });
                }
                sink.write(
                    PayoutEvent::PayoutRequested {
                        payout_id: id,
                        payable,
                        user_id,
                        wallet,
                        amount,
                        cause,
                        needs_approval: amount > approval_threshold,
                        at,
                    },
                    self,
                )
                .await;
            }
            PayoutCommand::Approve { admin, at } => {
                self.expect(PayoutState::AwaitingApproval)?;
                sink.write(PayoutEvent::PayoutApproved { admin, at }, self)
                    .await;
            }
            PayoutCommand::Cancel { by, reason, at } => {
                // Once a transaction is signed it may be mined: only the chain ends it then.
                if !matches!(
                    self.state,
                    PayoutState::AwaitingApproval | PayoutState::AwaitingPayment
                ) {
                    self.expect(PayoutState::AwaitingApproval)?;
                }
                sink.write(
                    PayoutEvent::PayoutCancelled {
                        by,
                        reason: bounded(&reason),
                        at,
                    },
                    self,
                )
                .await;
            }
            PayoutCommand::Wait { reason, at } => {
                self.expect(PayoutState::AwaitingPayment)?;
                let reason = bounded(&reason);
                if self.waiting.as_deref() != Some(reason.as_str()) {
                    sink.write(PayoutEvent::PayoutWaiting { reason, at }, self)
                        .await;
                }
            }
            PayoutCommand::RecordSigned {
                network,
                transfer,
                at,
            } => {
                if let Some(wallet) = &self.wallet {
                    if wallet.network != network {
                        return Err(PayoutError::WrongNetwork {
                            wallet: wallet.network,
                            network,
                        });
                    }
                }
                let replaces = match self.state {
                    PayoutState::AwaitingPayment => None,
                    PayoutState::InProgress => {
                        // Only an Ethereum transaction at the same nonce replaces: it and its
                        // predecessor can never both be mined.
                        let current = self.current_transfer();
                        match (current.and_then(|c| c.nonce), transfer.nonce) {
                            (Some(old), Some(new)) if old == new => {}
                            (Some(old), _) => {
                                return Err(PayoutError::NonceMismatch { nonce: old })
                            }
                            (None, _) => return Err(PayoutError::AlreadySigned),
                        }
                        if self.transfers.iter().any(|t| t.hash == transfer.hash) {
                            return Ok(());
                        }
                        current.map(|c| c.hash.clone())
                    }
                    _ => {
                        self.expect(PayoutState::AwaitingPayment)?;
                        None
                    }
                };
                sink.write(
                    PayoutEvent::PayoutTransactionSigned {
                        network,
                        transfer,
                        replaces,
                        at,
                    },
                    self,
                )
                .await;
            }
            PayoutCommand::Complete { hash, block, at } => {
                self.expect(PayoutState::InProgress)?;
                if !self.transfers.iter().any(|t| t.hash == hash) {
                    return Err(PayoutError::UnknownTransaction { hash });
                }
                let (Some(payable), Some(wallet)) = (&self.payable, &self.wallet) else {
                    return Err(PayoutError::NotFound);
                };
                let postings = vec![
                    Posting {
                        account: payable.clone(),
                        amount: self.amount.checked_neg(),
                    },
                    Posting {
                        account: LedgerAccount::hot_wallet(wallet.network),
                        amount: self.amount,
                    },
                ];
                // Two postings of one amount and its negation: balanced by construction.
                debug_assert!(balanced(&postings).is_ok());
                sink.write(
                    PayoutEvent::PayoutCompleted {
                        hash,
                        block,
                        postings,
                        at,
                    },
                    self,
                )
                .await;
            }
            PayoutCommand::Fail { reason, at } => {
                self.expect(PayoutState::InProgress)?;
                if let FailureReason::Reverted { hash, .. } | FailureReason::Expired { hash } =
                    &reason
                {
                    if !self.transfers.iter().any(|t| &t.hash == hash) {
                        return Err(PayoutError::UnknownTransaction { hash: hash.clone() });
                    }
                }
                sink.write(
                    PayoutEvent::PayoutFailed {
                        message: bounded(&reason.to_string()),
                        reason,
                        at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PayoutEvent::PayoutRequested {
                payout_id,
                payable,
                user_id,
                wallet,
                amount,
                cause,
                needs_approval,
                ..
            } => {
                self.payout_id = payout_id;
                self.payable = Some(payable);
                self.user_id = user_id;
                self.wallet = Some(wallet);
                self.amount = amount;
                self.cause = Some(cause);
                self.state = if needs_approval {
                    PayoutState::AwaitingApproval
                } else {
                    PayoutState::AwaitingPayment
                };
            }
            PayoutEvent::PayoutApproved { .. } => self.state = PayoutState::AwaitingPayment,
            PayoutEvent::PayoutCancelled { .. } => self.state = PayoutState::Cancelled,
            PayoutEvent::PayoutWaiting { reason, .. } => self.waiting = Some(reason),
            PayoutEvent::PayoutTransactionSigned { transfer, at, .. } => {
                self.transfers.push(transfer);
                self.signed_at = Some(at);
                self.waiting = None;
                self.state = PayoutState::InProgress;
            }
            PayoutEvent::PayoutCompleted { .. } => self.state = PayoutState::Completed,
            PayoutEvent::PayoutFailed { .. } => self.state = PayoutState::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type PayoutTest = TestFramework<Payout>;

    const AT: OffsetDateTime = datetime!(2026-12-02 00:00 UTC);

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap_or(Usdt::ZERO)
    }

    fn wallet() -> Wallet {
        Wallet {
            network: Network::Ethereum,
            address: "0x00000000000000000000000000000000000000aa".into(),
        }
    }

    fn id() -> String {
        payout_id(&LedgerAccount::creator("u1"), 0)
    }

    fn request(amount: &str) -> (String, PayoutCommand) {
        (
            id(),
            PayoutCommand::Request {
                payable: LedgerAccount::creator("u1"),
                user_id: "u1".into(),
                wallet: wallet(),
                amount: usdt(amount),
                cause: PayoutCause::Close {
                    month: Month::new(2026, 11).unwrap_or_else(|| Month::of(AT)),
                },
                minimum: usdt("10"),
                approval_threshold: usdt("1000"),
                at: AT,
            },
        )
    }

    fn requested(amount: &str, needs_approval: bool) -> PayoutEvent {
        PayoutEvent::PayoutRequested {
            payout_id: id(),
            payable: LedgerAccount::creator("u1"),
            user_id: "u1".into(),
            wallet: wallet(),
            amount: usdt(amount),
            cause: PayoutCause::Close {
                month: Month::new(2026, 11).unwrap_or_else(|| Month::of(AT)),
            },
            needs_approval,
            at: AT,
        }
    }

    fn transfer(hash: &str, nonce: u64) -> SignedTransfer {
        SignedTransfer {
            hash: hash.into(),
            raw: format!("0xraw{hash}"),
            nonce: Some(nonce),
            expires_at: None,
        }
    }

    fn signed(hash: &str, nonce: u64, replaces: Option<&str>) -> PayoutEvent {
        PayoutEvent::PayoutTransactionSigned {
            network: Network::Ethereum,
            transfer: transfer(hash, nonce),
            replaces: replaces.map(str::to_string),
            at: AT,
        }
    }

    fn sign(hash: &str, nonce: u64) -> (String, PayoutCommand) {
        (
            id(),
            PayoutCommand::RecordSigned {
                network: Network::Ethereum,
                transfer: transfer(hash, nonce),
                at: AT,
            },
        )
    }

    #[test]
    fn a_payable_below_the_minimum_makes_no_payout_and_one_above_the_threshold_waits_for_approval()
    {
        PayoutTest::with(PayoutServices)
            .given_no_previous_events()
            .when(request("9.999999"))
            .then_expect_error(PayoutError::BelowMinimum {
                amount: usdt("9.999999"),
                minimum: usdt("10"),
            });
        PayoutTest::with(PayoutServices)
            .given_no_previous_events()
            .when(request("1000"))
            .then_expect_events(vec![requested("1000", false)]);
        PayoutTest::with(PayoutServices)
            .given_no_previous_events()
            .when(request("1000.000001"))
            .then_expect_events(vec![requested("1000.000001", true)]);
        PayoutTest::with(PayoutServices)
            .given(vec![requested("50", false)])
            .when(request("50"))
            .then_expect_error(PayoutError::AlreadyRequested);
    }

    #[test]
    fn a_payout_awaiting_approval_is_neither_signed_nor_approved_twice() {
        PayoutTest::with(PayoutServices)
            .given(vec![requested("2000", true)])
            .when(sign("0x1", 0))
            .then_expect_error(PayoutError::WrongState {
                state: "awaiting_approval",
                expected: "awaiting_payment",
            });
        let approved = PayoutEvent::PayoutApproved {
            admin: "a".into(),
            at: AT,
        };
        PayoutTest::with(PayoutServices)
            .given(vec![requested("2000", true)])
            .when((
                id(),
                PayoutCommand::Approve {
                    admin: "a".into(),
                    at: AT,
                },
            ))
            .then_expect_events(vec![approved.clone()]);
        PayoutTest::with(PayoutServices)
            .given(vec![requested("2000", true), approved])
            .when((
                id(),
                PayoutCommand::Approve {
                    admin: "a".into(),
                    at: AT,
                },
            ))
            .then_expect_error(PayoutError::WrongState {
                state: "awaiting_payment",
                expected: "awaiting_approval",
            });
    }

    #[test]
    fn a_signed_payout_is_never_signed_anew_only_replaced_at_its_nonce_and_never_cancelled() {
        let given = vec![requested("50", false), signed("0x1", 7, None)];
        PayoutTest::with(PayoutServices)
            .given(given.clone())
            .when(sign("0x2", 8))
            .then_expect_error(PayoutError::NonceMismatch { nonce: 7 });
        PayoutTest::with(PayoutServices)
            .given(given.clone())
            .when(sign("0x2", 7))
            .then_expect_events(vec![signed("0x2", 7, Some("0x1"))]);
        // The same transaction recorded again (a retry after a crash) records nothing.
        PayoutTest::with(PayoutServices)
            .given(given.clone())
            .when(sign("0x1", 7))
            .then_expect_events(vec![]);
        PayoutTest::with(PayoutServices)
            .given(given)
            .when((
                id(),
                PayoutCommand::Cancel {
                    by: "admin".into(),
                    reason: "no".into(),
                    at: AT,
                },
            ))
            .then_expect_error(PayoutError::WrongState {
                state: "in_progress",
                expected: "awaiting_approval",
            });
    }

    #[test]
    fn completion_moves_the_amount_from_the_payable_to_the_hot_wallet_and_balances() {
        let given = vec![
            requested("50", false),
            signed("0x1", 7, None),
            signed("0x2", 7, Some("0x1")),
        ];
        // Either of the transactions at the nonce may be the one mined.
        let completed = PayoutEvent::PayoutCompleted {
            hash: "0x1".into(),
            block: 9,
            postings: vec![
                Posting {
                    account: LedgerAccount::creator("u1"),
                    amount: usdt("-50"),
                },
                Posting {
                    account: LedgerAccount::hot_wallet(Network::Ethereum),
                    amount: usdt("50"),
                },
            ],
            at: AT,
        };
        PayoutTest::with(PayoutServices)
            .given(given.clone())
            .when((
                id(),
                PayoutCommand::Complete {
                    hash: "0x1".into(),
                    block: 9,
                    at: AT,
                },
            ))
            .then_expect_events(vec![completed.clone()]);
        if let PayoutEvent::PayoutCompleted { postings, .. } = &completed {
            assert!(balanced(postings).is_ok());
        }
        PayoutTest::with(PayoutServices)
            .given(given.clone())
            .when((
                id(),
                PayoutCommand::Complete {
                    hash: "0x9".into(),
                    block: 9,
                    at: AT,
                },
            ))
            .then_expect_error(PayoutError::UnknownTransaction { hash: "0x9".into() });
        let mut done = given;
        done.push(completed);
        PayoutTest::with(PayoutServices)
            .given(done)
            .when((
                id(),
                PayoutCommand::Complete {
                    hash: "0x1".into(),
                    block: 9,
                    at: AT,
                },
            ))
            .then_expect_error(PayoutError::WrongState {
                state: "completed",
                expected: "in_progress",
            });
    }

    #[test]
    fn a_reverted_transfer_fails_the_payout_with_its_reason_and_moves_no_money() {
        let reason = FailureReason::Reverted {
            hash: "0x1".into(),
            detail: "status 0".into(),
        };
        PayoutTest::with(PayoutServices)
            .given(vec![requested("50", false), signed("0x1", 7, None)])
            .when((
                id(),
                PayoutCommand::Fail {
                    reason: reason.clone(),
                    at: AT,
                },
            ))
            .then_expect_events(vec![PayoutEvent::PayoutFailed {
                message: "transaction 0x1 reverted: status 0".into(),
                reason,
                at: AT,
            }]);
    }

    #[test]
    fn a_waiting_reason_is_recorded_once_until_it_changes() {
        let wait = |reason: &str| {
            (
                id(),
                PayoutCommand::Wait {
                    reason: reason.into(),
                    at: AT,
                },
            )
        };
        let waiting = PayoutEvent::PayoutWaiting {
            reason: "hot wallet short of USDT".into(),
            at: AT,
        };
        PayoutTest::with(PayoutServices)
            .given(vec![requested("50", false)])
            .when(wait("hot wallet short of USDT"))
            .then_expect_events(vec![waiting.clone()]);
        PayoutTest::with(PayoutServices)
            .given(vec![requested("50", false), waiting])
            .when(wait("hot wallet short of USDT"))
            .then_expect_events(vec![]);
    }
}
