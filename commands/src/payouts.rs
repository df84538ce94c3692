//! Money out: the payout pass and the commands around it (withdraw, approve, cancel). The rules
//! of a payout's life are the `Payout` aggregate's (`aiforge_domain::payout`); the chain is
//! reached through the [`HotWallet`] port (`chain::hot_wallet` on Ethereum).
//!
//! One pass, in this order (one at a time per instance, a lock):
//! 1. payouts in progress: the chain says completed (enough confirmations), reverted, or
//!    dropped (Ethereum: its nonce used by another transaction of the hot wallet; Tron: expired);
//!    otherwise the recorded transaction is broadcast again, the same bytes;
//! 2. after a close, each payable at or above the minimum becomes one payout for the whole of
//!    it (less what open payouts hold), to the payee's payout wallet;
//! 3. payouts awaiting payment are signed (Ethereum nonce: the chain's pending nonce or past the
//!    highest recorded, whichever is higher), the signed transaction is RECORDED, and only then
//!    broadcast; a hot wallet short of USDT or gas records why the payout waits;
//! 4. a close whose payouts have all ended (and none failed one waits to be asked for again)
//!    gets its receipt published: the Merkle root of its completed payouts, recorded once
//!    (`PayoutReceiptPublished`), which the receipt and proof routes serve.
//!
//! A payout in progress unmined for `replace_after` (app clock) is replaced at its nonce with a
//! higher gas price (step 1), recorded before its broadcast like the first transaction.
//!
//! Exactly once: a payout's transaction is recorded before it leaves this process, and a
//! payout in progress is never signed again (the aggregate refuses), so a crash at any point
//! leaves at most that one transaction, which the next pass broadcasts again. Two instances
//! that pay the same payout at once both sign, but only one record succeeds (the aggregate's
//! version), and the loser broadcasts nothing.

use std::collections::HashMap;
use std::sync::Arc;

use aiforge_domain::account::{Account, AccountServices};
use aiforge_domain::ledger::{AccountKind, LedgerAccount};
use aiforge_domain::merkle::ReceiptLeaf;
use aiforge_domain::payout::{
    payout_id, FailureReason, Payout, PayoutCause, PayoutCommand, PayoutError, PayoutServices,
    PayoutState, SignedTransfer,
};
use aiforge_domain::payout_receipt::{
    PayoutReceipt, PayoutReceiptCommand, PayoutReceiptError, PayoutReceiptServices, ReceiptEntry,
};
use aiforge_domain::revenue_book::Month;
use aiforge_domain::wallet::{Network, Wallet};
use aiforge_domain::Usdt;

use crate::chain::ChainError;
use crate::passes::{ViewError, Views};
use crate::{Clock, CommandError, CommandMeta, Database, Executor};

/// Payouts one pass handles per step.
pub const PAYOUT_BATCH_MAX: i64 = 200;
/// How often the lease holder runs the pass on its own.
pub const PAYOUT_PASS_SECS: u64 = 10;
/// Payouts the pass makes for one payable after one close, failed ones included: a failed
/// payout (reverted, dropped) is asked for again by a later pass, since its cause (a token that
/// refused the payee, gas that rose) may be gone; a cause that stays (a payee the token blocks
/// for good) costs at most this many reverted transfers' gas. Past it, the payable waits for
/// its payee's withdraw or the next close.
pub const PAYOUT_CLOSE_ATTEMPTS_MAX: usize = 3;

/// What the chain says about a payout's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentStatus {
    /// Not mined (yet), or unknown to the node.
    NotMined,
    Reverted {
        block: u64,
        /// What the chain says of the failure (Tron: `REVERT`, `OUT_OF_ENERGY`, the node's text).
        detail: String,
    },
    Succeeded {
        block: u64,
        confirmations: u64,
    },
}

/// The hot wallet's holdings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotWalletBalances {
    /// USDT, in micro-units.
    pub usdt_micros: u128,
    /// The native coin for fees, in its smallest unit (wei, sun), as text.
    pub gas: String,
    /// How many more transfers the gas balance pays for at the current price.
    pub transfers_gas_pays: u64,
}

/// The platform's hot wallet on one network: signs USDT transfers locally and talks to a node.
/// Every call is bounded by a timeout (`chain::RPC_TIMEOUT_SECS`).
#[async_trait::async_trait]
pub trait HotWallet: Send + Sync {
    fn network(&self) -> Network;
    /// The hot wallet's address (canonical).
    fn address(&self) -> String;
    /// Confirmations a payout's transaction needs.
    fn confirmations(&self) -> u64;
    async fn balances(&self) -> Result<HotWalletBalances, ChainError>;
    /// Ethereum: the next nonce counting pending transactions (Tron: None).
    async fn pending_nonce(&self) -> Result<Option<u64>, ChainError>;
    /// Ethereum: how many of the hot wallet's transactions are mined (Tron: None).
    async fn mined_nonce(&self) -> Result<Option<u64>, ChainError>;
    /// Signs a transfer of `micros` USDT to `to` (at `nonce` on Ethereum); nothing is sent.
    async fn sign_transfer(
        &self,
        to: &str,
        micros: u64,
        nonce: Option<u64>,
    ) -> Result<SignedTransfer, ChainError>;
    /// Ethereum: signs the same transfer at the nonce of `replaced` (still unmined) with a gas
    /// price high enough for a node to replace it in its pool; nothing is sent. A network
    /// whose transactions cannot be replaced (Tron: they expire instead) keeps the default.
    async fn sign_replacement(
        &self,
        replaced: &SignedTransfer,
        to: &str,
        micros: u64,
    ) -> Result<SignedTransfer, ChainError> {
        let _ = (replaced, to, micros);
        Err(ChainError::BadResponse {
            network: self.network(),
            reason: "transactions on this network are not replaced".into(),
        })
    }
    /// Sends the signed transaction (again). A node that already has it is not an error.
    async fn broadcast(&self, transfer: &SignedTransfer) -> Result<(), ChainError>;
    async fn status(&self, hash: &str) -> Result<SentStatus, ChainError>;
}

/// The payout settings (README, "Payouts").
#[derive(Debug, Clone)]
pub struct PayoutSettings {
    pub minimum: Usdt,
    pub approval_threshold: Usdt,
    /// TEST ONLY (`AIFORGE_PAYOUT_FAILPOINT=after_sign`): abort the process right after a signed
    /// transaction is recorded, before its broadcast (the crash-safety test). Off by default.
    pub abort_after_sign: bool,
    /// TEST ONLY (`AIFORGE_PAYOUT_FAILPOINT=after_broadcast`): abort the process right after a
    /// transaction's broadcast, before its confirmation (the crash-safety test). Off by default.
    pub abort_after_broadcast: bool,
    /// An unmined transaction older than this (app clock) is replaced at its nonce with a
    /// higher gas price (Ethereum).
    pub replace_after: time::Duration,
    pub explorer_tx_urls: ExplorerTxUrls,
}

/// A transaction's page on an explorer, per network: `{hash}` stands for its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplorerTxUrls {
    pub ethereum: String,
    pub tron: String,
}

impl ExplorerTxUrls {
    /// The page of transaction `hash` on `network` (`ethereum`, `tron`).
    pub fn url(&self, network: &str, hash: &str) -> Option<String> {
        match network {
            "ethereum" => Some(self.ethereum.replace("{hash}", hash)),
            // Tron explorers name a transaction by its bare hex id.
            "tron" => Some(self.tron.replace("{hash}", hash.trim_start_matches("0x"))),
            _ => None,
        }
    }
}

/// Replacements of one payout's transaction at most: each pays a higher gas price than the
/// last, so a bound keeps a stuck payout (a node that never mines it) from bidding without end;
/// past it the same transaction is broadcast again and the admin's list shows it in progress.
pub const PAYOUT_REPLACEMENTS_MAX: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PayoutPassError {
    #[error(transparent)]
    Views(#[from] ViewError),
    #[error(transparent)]
    Command(#[from] CommandError<PayoutError>),
    #[error(transparent)]
    Receipt(#[from] CommandError<PayoutReceiptError>),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PayoutPassReport {
    pub requested: usize,
    pub sent: usize,
    pub completed: usize,
    pub failed: usize,
    pub waiting: usize,
    /// Close receipts published (step 4).
    pub receipts_published: usize,
}

/// Why a withdraw made no payout.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    #[error("nothing to withdraw at or above the minimum of {minimum} (available {available})")]
    BelowMinimum { available: Usdt, minimum: Usdt },
    #[error("choose a verified payout wallet on {network} first")]
    NoPayoutWallet { network: Network },
    #[error("payouts are not configured on this platform (no hot wallet)")]
    NotConfigured,
    #[error(transparent)]
    Views(#[from] ViewError),
    #[error(transparent)]
    Command(#[from] CommandError<PayoutError>),
    #[error("cannot read the account: {0}")]
    Account(String),
}

pub struct Payouts {
    pub executor: Executor<Payout>,
    accounts: Executor<Account>,
    receipts: Executor<PayoutReceipt>,
    clock: Arc<dyn Clock>,
    views: Arc<dyn Views>,
    settings: PayoutSettings,
    wallets: HashMap<Network, Arc<dyn HotWallet>>,
    pass: tokio::sync::Mutex<()>,
}

fn meta(id: String) -> CommandMeta {
    CommandMeta {
        request_hash: id.clone(),
        command_id: id,
        actor: Some("payouts".to_string()),
        request_id: None,
    }
}

fn usdt_of(micros: i64) -> Usdt {
    Usdt::from_micros(micros).unwrap_or(Usdt::ZERO)
}

fn micros_u64(amount: Usdt) -> u64 {
    u64::try_from(amount.to_micros()).unwrap_or(0)
}

/// `creator_payable:<user>` / `node_payable:<node>` back to its account.
fn parse_payable(name: &str) -> Option<LedgerAccount> {
    let (kind, key) = name.split_once(':')?;
    match kind {
        "creator_payable" => Some(LedgerAccount::creator(key)),
        "node_payable" => Some(LedgerAccount::node(key)),
        _ => None,
    }
}

impl Payouts {
    pub fn new(
        db: Database,
        clock: Arc<dyn Clock>,
        views: Arc<dyn Views>,
        settings: PayoutSettings,
        wallets: Vec<Arc<dyn HotWallet>>,
    ) -> Self {
        Self {
            executor: Executor::new(db.clone(), clock.clone(), PayoutServices),
            receipts: Executor::new(db.clone(), clock.clone(), PayoutReceiptServices),
            accounts: Executor::new(db, clock.clone(), AccountServices),
            clock,
            views,
            settings,
            wallets: wallets.into_iter().map(|w| (w.network(), w)).collect(),
            pass: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &PayoutSettings {
        &self.settings
    }

    pub fn hot_wallets(&self) -> impl Iterator<Item = &Arc<dyn HotWallet>> {
        self.wallets.values()
    }

    /// The networks payouts go out on, Ethereum first.
    fn networks(&self) -> Vec<Network> {
        [Network::Ethereum, Network::Tron]
            .into_iter()
            .filter(|n| self.wallets.contains_key(n))
            .collect()
    }

    /// Who is paid for `payable` and where: the creator, or the node's owner, at their payout
    /// wallet on the first network with a hot wallet where they chose one.
    async fn payee(
        &self,
        payable: &LedgerAccount,
    ) -> Result<Option<(String, Wallet)>, WithdrawError> {
        let user_id = match payable.kind {
            AccountKind::CreatorPayable => payable.key.clone(),
            AccountKind::NodePayable => match self.views.node_owner(&payable.key).await? {
                Some(owner) => owner,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let account = self
            .accounts
            .load(&user_id)
            .await
            .map_err(|e| WithdrawError::Account(e.to_string()))?;
        Ok(self
            .networks()
            .into_iter()
            .find_map(|n| account.payout_wallet(n))
            .map(|w| (user_id, w)))
    }

    async fn request(
        &self,
        line: &crate::passes::PayableLine,
        payable: &LedgerAccount,
        cause: PayoutCause,
    ) -> Result<Option<String>, WithdrawError> {
        // A close pays what was owed when its month ended: money credited since (a payment
        // confirmed today) waits for its own month's close, or the payee's withdraw.
        let held_back = match &cause {
            PayoutCause::Close { month } => self
                .views
                .payable_credits_since(
                    &line.account,
                    &crate::clock::rfc3339(month.end()),
                    &format!("revenue:{month}"),
                )
                .await
                .map_err(WithdrawError::Views)?,
            _ => 0,
        };
        let available = usdt_of(
            line.balance_micros
                .saturating_sub(line.open_micros)
                .saturating_sub(held_back),
        );
        if available < self.settings.minimum || !available.is_positive() {
            return Err(WithdrawError::BelowMinimum {
                available,
                minimum: self.settings.minimum,
            });
        }
        let Some((user_id, wallet)) = self.payee(payable).await? else {
            return Err(WithdrawError::NoPayoutWallet {
                network: self
                    .networks()
                    .first()
                    .copied()
                    .unwrap_or(Network::Ethereum),
            });
        };
        let id = payout_id(payable, line.payouts);
        let command = PayoutCommand::Request {
            payable: payable.clone(),
            user_id,
            wallet,
            amount: available,
            cause,
            minimum: self.settings.minimum,
            approval_threshold: self.settings.approval_threshold,
            at: self.clock.now(),
        };
        match self
            .executor
            .execute(
                &id,
                (id.clone(), command),
                &meta(format!("request:{id}")),
                &[],
            )
            .await
        {
            Ok(_) => Ok(Some(id)),
            // Another pass (or instance) decided this payout first.
            Err(CommandError::Rejected(PayoutError::AlreadyRequested)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The payee asks for their payables now: one payout per payable account of theirs at or
    /// above the minimum (their creator payable, their nodes'). Returns the payouts made.
    pub async fn withdraw(&self, user_id: &str) -> Result<Vec<String>, WithdrawError> {
        if self.wallets.is_empty() {
            return Err(WithdrawError::NotConfigured);
        }
        self.views.settle().await;
        let mut made = Vec::new();
        let mut last = None;
        for line in self.views.payables(PAYOUT_BATCH_MAX).await? {
            let Some(payable) = parse_payable(&line.account) else {
                continue;
            };
            let mine = match payable.kind {
                AccountKind::CreatorPayable => payable.key == user_id,
                AccountKind::NodePayable => {
                    self.views.node_owner(&payable.key).await?.as_deref() == Some(user_id)
                }
                _ => false,
            };
            if !mine {
                continue;
            }
            match self.request(&line, &payable, PayoutCause::Withdraw).await {
                Ok(Some(id)) => made.push(id),
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        match (made.is_empty(), last) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(WithdrawError::BelowMinimum {
                available: Usdt::ZERO,
                minimum: self.settings.minimum,
            }),
            _ => Ok(made),
        }
    }

    pub async fn approve(
        &self,
        payout_id: &str,
        admin: &str,
        meta: &CommandMeta,
    ) -> Result<crate::Outcome, CommandError<PayoutError>> {
        let command = PayoutCommand::Approve {
            admin: admin.to_string(),
            at: self.clock.now(),
        };
        self.executor
            .execute(payout_id, (payout_id.to_string(), command), meta, &[])
            .await
    }

    pub async fn cancel(
        &self,
        payout_id: &str,
        by: &str,
        reason: &str,
        meta: &CommandMeta,
    ) -> Result<crate::Outcome, CommandError<PayoutError>> {
        let command = PayoutCommand::Cancel {
            by: by.to_string(),
            reason: reason.to_string(),
            at: self.clock.now(),
        };
        self.executor
            .execute(payout_id, (payout_id.to_string(), command), meta, &[])
            .await
    }

    /// One pass (module docs).
    #[tracing::instrument(skip_all)]
    pub async fn run_once(&self) -> Result<PayoutPassReport, PayoutPassError> {
        let _one_at_a_time = self.pass.lock().await;
        let mut report = PayoutPassReport::default();
        if self.wallets.is_empty() {
            return Ok(report);
        }
        self.views.settle().await;
        let failed_now = self.follow_in_progress(&mut report).await?;
        self.views.settle().await;
        self.request_after_close(&mut report, &failed_now).await?;
        self.views.settle().await;
        self.pay(&mut report).await?;
        self.views.settle().await;
        self.publish_receipts(&mut report).await?;
        self.views.settle().await;
        Ok(report)
    }

    async fn execute(
        &self,
        id: &str,
        command: PayoutCommand,
    ) -> Result<(), CommandError<PayoutError>> {
        self.executor
            .execute(
                id,
                (id.to_string(), command),
                &CommandMeta::generated(Some("payouts".into())),
                &[],
            )
            .await
            .map(drop)
    }

    /// Step 1 (module docs). Returns the payables whose payout failed in this step: the same
    /// pass does not ask for them again (a cause seconds old is rarely gone; the next pass asks).
    async fn follow_in_progress(
        &self,
        report: &mut PayoutPassReport,
    ) -> Result<std::collections::HashSet<String>, PayoutPassError> {
        let mut failed_now = std::collections::HashSet::new();
        for line in self
            .views
            .payouts_in("in_progress", PAYOUT_BATCH_MAX)
            .await?
        {
            let payout = self.executor.load(&line.payout_id).await?;
            if payout.state != PayoutState::InProgress {
                continue;
            }
            let Some(wallet) = payout
                .wallet
                .as_ref()
                .and_then(|w| self.wallets.get(&w.network))
            else {
                continue;
            };
            match self.follow(&payout, wallet.as_ref()).await {
                Ok(Some(PayoutCommand::RecordSigned {
                    network,
                    transfer,
                    at,
                })) => {
                    // A replacement: recorded BEFORE its broadcast, like the first.
                    let record = PayoutCommand::RecordSigned {
                        network,
                        transfer: transfer.clone(),
                        at,
                    };
                    if let Err(e) = self.execute(&payout.payout_id, record).await {
                        tracing::warn!(payout = %payout.payout_id, error = %crate::error_chain(&e), "replacement not recorded; nothing sent");
                        continue;
                    }
                    report.sent += 1;
                    if let Err(e) = wallet.broadcast(&transfer).await {
                        tracing::warn!(payout = %payout.payout_id, error = %e, "broadcast of the replacement failed; retried by the next pass");
                    }
                }
                Ok(Some(command)) => {
                    let completed = matches!(command, PayoutCommand::Complete { .. });
                    match self.execute(&payout.payout_id, command).await {
                        Ok(()) if completed => report.completed += 1,
                        Ok(()) => {
                            report.failed += 1;
                            if let Some(payable) = &payout.payable {
                                failed_now.insert(payable.name());
                            }
                        }
                        Err(e) => {
                            tracing::error!(payout = %payout.payout_id, error = %crate::error_chain(&e), "payout step refused")
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(payout = %payout.payout_id, error = %crate::error_chain(&e), "cannot follow the payout's transaction");
                }
            }
        }
        Ok(failed_now)
    }

    /// What the chain says of one payout in progress, as the command to record (if any).
    async fn follow(
        &self,
        payout: &Payout,
        wallet: &dyn HotWallet,
    ) -> Result<Option<PayoutCommand>, ChainError> {
        let at = self.clock.now();
        // Read before the receipts: a nonce used by then was used by a mined transaction whose
        // receipt the next reads would find if it were one of ours.
        let mined_nonce = wallet.mined_nonce().await?;
        for transfer in payout.transfers.iter().rev() {
            match wallet.status(&transfer.hash).await? {
                SentStatus::Succeeded {
                    block,
                    confirmations,
                } => {
                    if confirmations >= wallet.confirmations() {
                        return Ok(Some(PayoutCommand::Complete {
                            hash: transfer.hash.clone(),
                            block,
                            at,
                        }));
                    }
                    return Ok(None);
                }
                SentStatus::Reverted { detail, .. } => {
                    return Ok(Some(PayoutCommand::Fail {
                        reason: FailureReason::Reverted {
                            hash: transfer.hash.clone(),
                            detail,
                        },
                        at,
                    }));
                }
                SentStatus::NotMined => {}
            }
        }
        let Some(current) = payout.current_transfer() else {
            return Ok(None);
        };
        if let (Some(nonce), Some(mined)) = (current.nonce, mined_nonce) {
            if mined > nonce {
                return Ok(Some(PayoutCommand::Fail {
                    reason: FailureReason::NonceTaken { nonce },
                    at,
                }));
            }
        }
        if let Some(expires_at) = current.expires_at {
            if at > expires_at {
                return Ok(Some(PayoutCommand::Fail {
                    reason: FailureReason::Expired {
                        hash: current.hash.clone(),
                    },
                    at,
                }));
            }
        }
        // Stuck (unmined for `replace_after` since its last signature): the same transfer at
        // the same nonce with a higher gas price; whichever of them is mined, the other can
        // never be (its nonce is taken), so the payee is paid once.
        if let (Some(_), Some(signed_at)) = (current.nonce, payout.signed_at) {
            if at - signed_at >= self.settings.replace_after
                && payout.transfers.len() <= PAYOUT_REPLACEMENTS_MAX
            {
                if let Some(to) = payout.wallet.as_ref().map(|w| w.address.clone()) {
                    let transfer = wallet
                        .sign_replacement(current, &to, micros_u64(payout.amount))
                        .await?;
                    return Ok(Some(PayoutCommand::RecordSigned {
                        network: wallet.network(),
                        transfer,
                        at,
                    }));
                }
            }
        }
        // Not mined, still valid: the same bytes again (a node that lost it, a restart).
        wallet.broadcast(current).await?;
        Ok(None)
    }

    /// Step 2 (module docs). A payable whose payout of this close failed is asked for again
    /// (a new payout, the next number), but not in the pass that saw it fail and not past
    /// [`PAYOUT_CLOSE_ATTEMPTS_MAX`] payouts of the close.
    async fn request_after_close(
        &self,
        report: &mut PayoutPassReport,
        failed_now: &std::collections::HashSet<String>,
    ) -> Result<(), PayoutPassError> {
        let Some(month) = self.views.last_closed_month().await? else {
            return Ok(());
        };
        let Ok(parsed) = month.parse::<Month>() else {
            return Ok(());
        };
        for line in self.views.payables(PAYOUT_BATCH_MAX).await? {
            if line.paid_closes.contains(&month) || failed_now.contains(&line.account) {
                continue;
            }
            let failures = line.failed_closes.iter().filter(|m| **m == month).count();
            if failures >= PAYOUT_CLOSE_ATTEMPTS_MAX {
                continue;
            }
            let Some(payable) = parse_payable(&line.account) else {
                continue;
            };
            match self
                .request(&line, &payable, PayoutCause::Close { month: parsed })
                .await
            {
                Ok(Some(_)) => report.requested += 1,
                Ok(None) | Err(WithdrawError::BelowMinimum { .. }) => {}
                Err(WithdrawError::NoPayoutWallet { .. }) => {
                    tracing::info!(payable = %line.account, "a payable waits for its payee's payout wallet");
                }
                Err(WithdrawError::Views(e)) => return Err(e.into()),
                Err(WithdrawError::Command(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(payable = %line.account, error = %e, "payout not requested")
                }
            }
        }
        Ok(())
    }

    /// Step 4 (module docs). The last close waits while a payable's failed payout of it will
    /// be asked for again (step 2 of a later pass): its receipt then covers the retry too.
    async fn publish_receipts(&self, report: &mut PayoutPassReport) -> Result<(), PayoutPassError> {
        let due = self.views.receipts_due(PAYOUT_BATCH_MAX).await?;
        if due.is_empty() {
            return Ok(());
        }
        let last = self.views.last_closed_month().await?;
        let mut retry_pending = false;
        if let Some(last) = &last {
            if due.iter().any(|d| &d.month == last) {
                retry_pending = self
                    .views
                    .payables(PAYOUT_BATCH_MAX)
                    .await?
                    .iter()
                    .any(|line| {
                        let failures = line.failed_closes.iter().filter(|m| *m == last).count();
                        let available =
                            usdt_of(line.balance_micros.saturating_sub(line.open_micros));
                        failures > 0
                            && failures < PAYOUT_CLOSE_ATTEMPTS_MAX
                            && !line.paid_closes.contains(last)
                            && available >= self.settings.minimum
                    });
            }
        }
        for close in due {
            if retry_pending && Some(&close.month) == last.as_ref() {
                continue;
            }
            let Ok(month) = close.month.parse::<Month>() else {
                continue;
            };
            let entries = close
                .completed
                .iter()
                .map(|p| ReceiptEntry {
                    payout_id: p.payout_id.clone(),
                    leaf: ReceiptLeaf {
                        payee: p.user_id.clone(),
                        wallet: format!("{}:{}", p.network, p.address),
                        amount: usdt_of(p.amount_micros).to_string(),
                        month: close.month.clone(),
                    },
                })
                .collect();
            let command = PayoutReceiptCommand::Publish {
                month,
                entries,
                at: self.clock.now(),
            };
            match self
                .receipts
                .execute(
                    &close.month,
                    command,
                    &meta(format!("receipt:{}", close.month)),
                    &[],
                )
                .await
            {
                Ok(_) => report.receipts_published += 1,
                // Another instance published it first (or is publishing it now).
                Err(
                    CommandError::Rejected(PayoutReceiptError::AlreadyPublished { .. })
                    | CommandError::Conflict,
                ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Step 3 (module docs).
    async fn pay(&self, report: &mut PayoutPassReport) -> Result<(), PayoutPassError> {
        let waiting = self
            .views
            .payouts_in("awaiting_payment", PAYOUT_BATCH_MAX)
            .await?;
        if waiting.is_empty() {
            return Ok(());
        }
        let in_progress = self
            .views
            .payouts_in("in_progress", PAYOUT_BATCH_MAX)
            .await?;
        for network in self.networks() {
            let Some(wallet) = self.wallets.get(&network) else {
                continue;
            };
            let mine: Vec<_> = waiting
                .iter()
                .filter(|p| p.network == network.as_str())
                .collect();
            if mine.is_empty() {
                continue;
            }
            let balances = match wallet.balances().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%network, error = %e, "cannot read the hot wallet's balances");
                    continue;
                }
            };
            // What transactions already signed will still take from the hot wallet.
            let committed: i64 = in_progress
                .iter()
                .filter(|p| p.network == network.as_str())
                .map(|p| p.amount_micros)
                .sum();
            let mut usdt_left = balances
                .usdt_micros
                .saturating_sub(u128::try_from(committed).unwrap_or(0));
            let mut gas_left = balances.transfers_gas_pays;
            let recorded_next = in_progress
                .iter()
                .filter(|p| p.network == network.as_str())
                .filter_map(|p| p.nonce)
                .max()
                .and_then(|n| u64::try_from(n).ok())
                .map(|n| n + 1);
            let mut next_nonce = match wallet.pending_nonce().await {
                Ok(Some(chain)) => Some(chain.max(recorded_next.unwrap_or(0))),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(%network, error = %e, "cannot read the hot wallet's nonce");
                    continue;
                }
            };
            for line in mine {
                let payout = self.executor.load(&line.payout_id).await?;
                if payout.state != PayoutState::AwaitingPayment {
                    continue;
                }
                let Some(to) = payout.wallet.as_ref().map(|w| w.address.clone()) else {
                    continue;
                };
                let micros = micros_u64(payout.amount);
                let short = if u128::from(micros) > usdt_left {
                    Some(format!(
                        "the hot wallet is short of USDT: it holds {} free, this payout needs {}",
                        usdt_of(i64::try_from(usdt_left).unwrap_or(i64::MAX)),
                        payout.amount
                    ))
                } else if gas_left == 0 {
                    Some(format!(
                        "the hot wallet is short of gas: {} pays for no further transfer",
                        balances.gas
                    ))
                } else {
                    None
                };
                if let Some(reason) = short {
                    let at = self.clock.now();
                    if let Err(e) = self
                        .execute(&payout.payout_id, PayoutCommand::Wait { reason, at })
                        .await
                    {
                        tracing::warn!(payout = %payout.payout_id, error = %crate::error_chain(&e), "cannot record why a payout waits");
                    }
                    report.waiting += 1;
                    continue;
                }
                let transfer = match wallet.sign_transfer(&to, micros, next_nonce).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(payout = %payout.payout_id, error = %e, "cannot sign the payout's transfer");
                        continue;
                    }
                };
                let record = PayoutCommand::RecordSigned {
                    network,
                    transfer: transfer.clone(),
                    at: self.clock.now(),
                };
                // Recorded BEFORE the broadcast: a refusal (another instance recorded first)
                // sends nothing.
                if let Err(e) = self.execute(&payout.payout_id, record).await {
                    tracing::warn!(payout = %payout.payout_id, error = %crate::error_chain(&e), "signed transfer not recorded; nothing sent");
                    continue;
                }
                if self.settings.abort_after_sign {
                    tracing::error!(payout = %payout.payout_id, "AIFORGE_PAYOUT_FAILPOINT=after_sign: aborting before the broadcast");
                    std::process::abort();
                }
                usdt_left = usdt_left.saturating_sub(u128::from(micros));
                gas_left = gas_left.saturating_sub(1);
                next_nonce = next_nonce.map(|n| n + 1);
                report.sent += 1;
                if let Err(e) = wallet.broadcast(&transfer).await {
                    // Recorded: the next pass broadcasts it again.
                    tracing::warn!(payout = %payout.payout_id, error = %e, "broadcast failed; retried by the next pass");
                }
                if self.settings.abort_after_broadcast {
                    tracing::error!(payout = %payout.payout_id, "AIFORGE_PAYOUT_FAILPOINT=after_broadcast: aborting before the confirmation");
                    std::process::abort();
                }
            }
        }
        Ok(())
    }
}
