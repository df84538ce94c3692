//! On-chain verification of USDT payments: a port (`ChainVerifier`) and its real adapters,
//! Ethereum JSON-RPC through alloy (`ethereum`) and the Tron full-node HTTP API (`tron`).
//! A verifier only reports what the chain says about one transaction; whether that pays for a
//! given payment (amount, payer rule, one transaction per payment) is decided by the `Payment`
//! aggregate in `aiforge_domain`.

pub mod ethereum;
pub mod hot_wallet;
pub mod tron;
pub mod tron_hot_wallet;

use aiforge_domain::wallet::Network;

/// Every RPC call gives up after this long: a slow node is "unavailable", never "confirmed".
pub const RPC_TIMEOUT_SECS: u64 = 10;
/// Confirmations required before a transfer counts (latest block - receipt block + 1).
pub const ETHEREUM_CONFIRMATIONS_MIN: u64 = 3;
pub const TRON_CONFIRMATIONS_MIN: u64 = 19;

/// One ERC-20 / TRC-20 `Transfer(from, to, value)` of the configured token found in a
/// transaction. Addresses are canonical (EIP-55 `0x…` or base58check `T…`); `value` is in the
/// token's base units (USDT: 6 decimals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTransfer {
    pub from: String,
    pub to: String,
    pub value: u128,
}

/// What the chain says about a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    /// No such transaction (yet): not mined, or unknown to this node.
    NotFound,
    /// Mined but failed (reverted): it moved nothing.
    Failed { block: u64 },
    /// Mined and succeeded. `transfers` are the configured token's Transfer events to the
    /// platform wallet only (other tokens and other recipients are left out);
    /// `confirmations` = latest block - `block` + 1.
    Succeeded {
        block: u64,
        confirmations: u64,
        transfers: Vec<TokenTransfer>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or did not answer in time: retry later.
    #[error("{network} node unavailable: {reason}")]
    Unavailable { network: Network, reason: String },
    /// The node answered something we cannot read (never treated as a confirmation).
    #[error("{network} node answered unexpectedly: {reason}")]
    BadResponse { network: Network, reason: String },
    /// The tx hash is not a well-formed hash for this network (a client error).
    #[error("malformed transaction hash: {0}")]
    MalformedTxHash(String),
}

/// The chain-reading port. Implementations must time out every call (`RPC_TIMEOUT_SECS`).
/// Object-safe (`Arc<dyn ChainVerifier>`), so the application holds one per network.
#[async_trait::async_trait]
pub trait ChainVerifier: Send + Sync {
    fn network(&self) -> Network;
    fn required_confirmations(&self) -> u64;
    async fn transaction(&self, tx_hash: &str) -> Result<TxStatus, ChainError>;
}
