//! Payment and platform-subscription commands. This layer makes ids and times, reads the chain
//! through the configured `ChainVerifier` of the payment's network and the payer's proven wallets
//! from their account, and hands those facts to the `Payment` aggregate, which decides. The
//! transaction hash is claimed in the same transaction as `PaymentConfirmed`, so one
//! transaction confirms one payment, ever, also when two verifications race.

use std::collections::HashMap;
use std::sync::Arc;

use aiforge_domain::account::{Account, AccountServices};
use aiforge_domain::fees::PaymentType;
use aiforge_domain::ledger::Beneficiary;
use aiforge_domain::payment::{
    ChainObservation, ObservedTransfer, Payment, PaymentCommand, PaymentError, PaymentServices,
};
use aiforge_domain::subscription::{
    PlanId, PlatformSubscription, SubscriptionCommand, SubscriptionError, SubscriptionServices,
};
use aiforge_domain::wallet::Network;
use aiforge_domain::Usdt;

use crate::chain::{ChainError, ChainVerifier, TxStatus};
use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::store::{Claim, Database};

pub const CLAIM_PAYMENT_TX: &str = "payment_tx";
/// A platform subscription's payment names what it pays for as `subscription:<user id>`.
pub const SUBSCRIPTION_REFERENCE_PREFIX: &str = "subscription:";

/// One network the platform accepts payments on.
#[derive(Clone)]
pub struct PaymentNetwork {
    pub verifier: Arc<dyn ChainVerifier>,
    /// The platform wallet payers send to (canonical address).
    pub platform_wallet: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error(transparent)]
    Payment(#[from] CommandError<PaymentError>),
    #[error(transparent)]
    Subscription(#[from] CommandError<SubscriptionError>),
    #[error("payments on {0} are not configured on this platform")]
    NetworkNotConfigured(Network),
    #[error("{0} payments are created by their own flow, not directly")]
    TypeNotDirect(PaymentType),
    #[error("malformed transaction hash")]
    MalformedTxHash,
    #[error("this transaction already paid for another payment")]
    TxAlreadyUsed,
    #[error("no such payment")]
    NotFound,
    #[error(transparent)]
    Chain(ChainError),
}

/// The answer to a verification: confirmed, or still pending with what the chain says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Confirmed { outcome: Outcome },
    Pending { confirmations: u64, required: u64 },
}

pub struct Payments {
    payments: Executor<Payment>,
    subscriptions: Executor<PlatformSubscription>,
    accounts: Executor<Account>,
    networks: HashMap<Network, PaymentNetwork>,
    clock: Arc<dyn Clock>,
}

/// Canonical text of a transaction hash: Ethereum `0x` + 64 lowercase hex; Tron 64 lowercase hex.
pub fn normalize_tx_hash(network: Network, hash: &str) -> Result<String, PaymentsError> {
    let trimmed = hash.trim();
    let hex = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PaymentsError::MalformedTxHash);
    }
    let hex = hex.to_ascii_lowercase();
    Ok(match network {
        Network::Ethereum => format!("0x{hex}"),
        Network::Tron => hex,
    })
}

fn observe(status: TxStatus) -> ChainObservation {
    match status {
        TxStatus::NotFound => ChainObservation::NotFound,
        TxStatus::Failed { block } => ChainObservation::Failed { block },
        TxStatus::Succeeded {
            block,
            confirmations,
            transfers,
        } => ChainObservation::Succeeded {
            block,
            confirmations,
            transfers: transfers
                .into_iter()
                .map(|t| ObservedTransfer {
                    from: t.from,
                    value_micros: t.value,
                })
                .collect(),
        },
    }
}

impl Payments {
    pub fn new(
        db: Database,
        clock: Arc<dyn Clock>,
        networks: HashMap<Network, PaymentNetwork>,
    ) -> Self {
        Self {
            payments: Executor::new(
                db.clone(),
                clock.clone(),
                PaymentServices::new(crate::fees::StoreFees::source(db.clone(), clock.clone())),
            ),
            subscriptions: Executor::new(db.clone(), clock.clone(), SubscriptionServices),
            accounts: Executor::new(db, clock.clone(), AccountServices),
            networks,
            clock,
        }
    }

    pub fn networks(&self) -> impl Iterator<Item = (&Network, &PaymentNetwork)> {
        self.networks.iter()
    }

    fn network(&self, network: Network) -> Result<&PaymentNetwork, PaymentsError> {
        self.networks
            .get(&network)
            .ok_or(PaymentsError::NetworkNotConfigured(network))
    }

    /// A payment of the payer's own making (jobs, publishing and listing fees). Subscriptions
    /// go through `subscribe`; API subscriptions and model sales through the marketplace.
    pub async fn create(
        &self,
        payer: &str,
        payment_type: PaymentType,
        network: Network,
        amount: Usdt,
        reference: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, PaymentsError> {
        let beneficiary = match payment_type {
            PaymentType::Job => Beneficiary::JobEscrow {
                job_id: reference.trim().to_string(),
            },
            PaymentType::PublishingFee | PaymentType::ListingFee => Beneficiary::Platform,
            other => return Err(PaymentsError::TypeNotDirect(other)),
        };
        self.create_for(
            payer,
            payment_type,
            network,
            amount,
            reference,
            beneficiary,
            meta,
        )
        .await
    }

    /// A payment whose beneficiary the caller decides (the marketplace's API subscriptions).
    #[allow(clippy::too_many_arguments, reason = "a payment has this many facts")]
    pub async fn create_for(
        &self,
        payer: &str,
        payment_type: PaymentType,
        network: Network,
        amount: Usdt,
        reference: &str,
        beneficiary: Beneficiary,
        meta: &CommandMeta,
    ) -> Result<Outcome, PaymentsError> {
        let pay_to = self.network(network)?.platform_wallet.clone();
        let payment_id = uuid::Uuid::now_v7().to_string();
        let command = PaymentCommand::Create {
            payment_id: payment_id.clone(),
            payer: payer.to_string(),
            payment_type,
            network,
            amount,
            reference: reference.to_string(),
            pay_to,
            beneficiary,
            at: self.clock.now(),
        };
        Ok(self
            .payments
            .execute(&payment_id, command, meta, &[])
            .await?)
    }

    /// The payer's own payment (None for another user's: they learn nothing of it).
    pub async fn get(
        &self,
        payer: &str,
        payment_id: &str,
    ) -> Result<Option<Payment>, PaymentsError> {
        let payment = self.payments.load(payment_id).await?;
        Ok(match &payment.created {
            Some(aiforge_domain::payment::PaymentEvent::PaymentCreated {
                payer: owner, ..
            }) if owner == payer => Some(payment),
            _ => None,
        })
    }

    /// Checks `tx_hash` on chain for the payer's payment and confirms it when it pays.
    #[tracing::instrument(skip(self, meta))]
    pub async fn verify(
        &self,
        payer: &str,
        payment_id: &str,
        tx_hash: &str,
        meta: &CommandMeta,
    ) -> Result<Verification, PaymentsError> {
        let payment = self
            .get(payer, payment_id)
            .await?
            .ok_or(PaymentsError::NotFound)?;
        let Some(aiforge_domain::payment::PaymentEvent::PaymentCreated { network, .. }) =
            payment.created.clone()
        else {
            return Err(PaymentsError::NotFound);
        };
        let tx_hash = normalize_tx_hash(network, tx_hash)?;
        let chain = self.network(network)?;
        let status = chain
            .verifier
            .transaction(&tx_hash)
            .await
            .map_err(|e| match e {
                ChainError::MalformedTxHash(_) => PaymentsError::MalformedTxHash,
                other => PaymentsError::Chain(other),
            })?;
        let confirmations = match &status {
            TxStatus::Succeeded { confirmations, .. } => *confirmations,
            _ => 0,
        };
        let required = chain.verifier.required_confirmations();
        let account = self
            .accounts
            .load(payer)
            .await
            .map_err(|e| PaymentsError::Payment(CommandError::Internal(e.to_string())))?;
        let payer_wallets = account
            .wallets
            .values()
            .filter(|w| w.verified && w.wallet.network == network)
            .map(|w| w.wallet.address.clone())
            .collect();
        let command = PaymentCommand::Verify {
            network,
            tx_hash: tx_hash.clone(),
            observation: observe(status),
            required_confirmations: required,
            payer_wallets,
            at: self.clock.now(),
        };
        let claim = Claim {
            namespace: CLAIM_PAYMENT_TX.into(),
            key: format!("{network}:{tx_hash}"),
        };
        let outcome = match self
            .payments
            .execute(payment_id, command, meta, &[claim])
            .await
        {
            Ok(outcome) => outcome,
            Err(CommandError::Taken { namespace, .. }) if namespace == CLAIM_PAYMENT_TX => {
                return Err(PaymentsError::TxAlreadyUsed)
            }
            Err(e) => return Err(e.into()),
        };
        let now = self.payments.load(payment_id).await?;
        Ok(match now.confirmed_tx {
            Some(_) => Verification::Confirmed { outcome },
            None => Verification::Pending {
                confirmations,
                required,
            },
        })
    }

    /// Subscribes the user to a plan: Free at once; a paid plan creates its payment and waits.
    /// Returns the payment id for a paid plan.
    pub async fn subscribe(
        &self,
        user_id: &str,
        plan: PlanId,
        network: Network,
        meta: &CommandMeta,
    ) -> Result<(Outcome, Option<String>), PaymentsError> {
        let at = self.clock.now();
        if plan == PlanId::Free {
            let command = SubscriptionCommand::Request {
                plan,
                payment_id: None,
                at,
            };
            let outcome = self
                .subscriptions
                .execute(user_id, (user_id.to_string(), command), meta, &[])
                .await?;
            return Ok((outcome, None));
        }
        // Fail before creating a payment if a subscription payment is already awaited.
        let current = self.subscriptions.load(user_id).await?;
        if let Some((_, payment_id)) = current.awaiting {
            return Err(
                CommandError::Rejected(SubscriptionError::PaymentAlreadyAwaited { payment_id })
                    .into(),
            );
        }
        let payment = self
            .create_for(
                user_id,
                PaymentType::PlatformSubscription,
                network,
                plan.price(),
                &format!("{SUBSCRIPTION_REFERENCE_PREFIX}{user_id}"),
                Beneficiary::Pool,
                &CommandMeta {
                    command_id: format!("{}:payment", meta.command_id),
                    ..meta.clone()
                },
            )
            .await?;
        let command = SubscriptionCommand::Request {
            plan,
            payment_id: Some(payment.aggregate_id.clone()),
            at,
        };
        let outcome = self
            .subscriptions
            .execute(user_id, (user_id.to_string(), command), meta, &[])
            .await?;
        Ok((outcome, Some(payment.aggregate_id)))
    }

    pub async fn subscription(&self, user_id: &str) -> Result<PlatformSubscription, PaymentsError> {
        Ok(self.subscriptions.load(user_id).await?)
    }

    pub async fn cancel_subscription(
        &self,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, PaymentsError> {
        let command = SubscriptionCommand::Cancel {
            at: self.clock.now(),
        };
        Ok(self
            .subscriptions
            .execute(user_id, (user_id.to_string(), command), meta, &[])
            .await?)
    }

    /// Activates the subscription a confirmed payment paid for (called by the reactor; the
    /// command id makes a repeat a no-op).
    pub async fn activate_subscription(
        &self,
        user_id: &str,
        payment_id: &str,
    ) -> Result<(), PaymentsError> {
        let meta = CommandMeta {
            command_id: format!("activate-subscription:{payment_id}"),
            request_hash: payment_id.to_string(),
            actor: Some("payments-reactor".into()),
            request_id: None,
        };
        let command = SubscriptionCommand::Activate {
            payment_id: payment_id.to_string(),
            at: self.clock.now(),
        };
        match self
            .subscriptions
            .execute(user_id, (user_id.to_string(), command), &meta, &[])
            .await
        {
            Ok(_) => Ok(()),
            // A payment that no subscription awaits (e.g. replaced) activates nothing.
            Err(CommandError::Rejected(SubscriptionError::UnknownPayment { payment_id })) => {
                tracing::warn!(%payment_id, "a confirmed subscription payment matched no awaited subscription");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_hashes_are_canonical_per_network() {
        let hex = "AB".repeat(32);
        assert_eq!(
            normalize_tx_hash(Network::Ethereum, &hex).unwrap(),
            format!("0x{}", "ab".repeat(32))
        );
        assert_eq!(
            normalize_tx_hash(Network::Tron, &format!("0x{hex}")).unwrap(),
            "ab".repeat(32)
        );
        assert!(normalize_tx_hash(Network::Ethereum, "0x1234").is_err());
        assert!(normalize_tx_hash(Network::Ethereum, &"zz".repeat(32)).is_err());
    }
}
