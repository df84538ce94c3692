//! The platform's Ethereum hot wallet ([`HotWallet`]): signs ERC-20 `transfer`s locally with
//! alloy's signer (legacy transactions, EIP-155, a gas price from the node) and talks to the
//! node through alloy's provider: balances (`eth_getBalance`, the token's `balanceOf`), nonces
//! (`eth_getTransactionCount` pending and latest), `eth_sendRawTransaction`, receipts.
//!
//! The key is a secret setting (`AIFORGE_ETH_HOT_WALLET_KEY`): it lives only inside the signer,
//! is never logged, never in an event (events hold the signed transaction, which reveals only
//! the address). The RPC URL is a secret too (see `ethereum.rs`).

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use aiforge_domain::payout::SignedTransfer;
use aiforge_domain::wallet::Network;
use alloy_network::eip2718::Encodable2718;
use alloy_network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_provider::transport::TransportError;
use alloy_provider::{Provider, RootProvider};
use alloy_rpc_client::RpcClient;
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{sol, SolCall};
use reqwest_alloy as reqwest;
use secrecy::{ExposeSecret, SecretString};

use super::{ChainError, ETHEREUM_CONFIRMATIONS_MIN, RPC_TIMEOUT_SECS};
use crate::payouts::{HotWallet, HotWalletBalances, SentStatus};
use crate::wallet_crypto::{eip55, parse_eth_address};

sol! {
    function transfer(address to, uint256 value) returns (bool);
    function balanceOf(address owner) returns (uint256);
}

/// Gas one ERC-20 `transfer` may use (USDT's takes about 50,000; a margin for tokens that do
/// more). An unused part is not charged.
pub const TRANSFER_GAS_LIMIT: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum HotWalletConfigError {
    #[error("AIFORGE_ETH_HOT_WALLET_KEY is not a 32-byte hex private key")]
    InvalidKey,
    #[error("the token contract is not an Ethereum address")]
    InvalidToken,
    #[error("the RPC URL is not an http(s) URL")]
    InvalidRpcUrl,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

pub struct EthereumHotWallet {
    provider: RootProvider,
    wallet: EthereumWallet,
    address: Address,
    token: Address,
    chain_id: u64,
    confirmations: u64,
    rpc_timeout: Duration,
}

impl fmt::Debug for EthereumHotWallet {
    // Written out: neither the key nor the RPC URL is ever printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthereumHotWallet")
            .field("address", &self.address)
            .field("token", &self.token)
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(reason: String) -> ChainError {
    ChainError::Unavailable {
        network: Network::Ethereum,
        reason,
    }
}

fn bad(reason: String) -> ChainError {
    ChainError::BadResponse {
        network: Network::Ethereum,
        reason,
    }
}

/// Nodes replace a pending transaction only by one paying at least 10% more (geth's
/// `txpool.pricebump`, ganache's `miner.priceBump`); an eighth more clears it with a margin for
/// rounding.
pub const REPLACEMENT_PRICE_BUMP_DIVISOR: u128 = 8;

/// The gas price of a replacement: an eighth above the replaced one (rounded up), or the node's
/// price if fees rose further.
pub fn replacement_gas_price(replaced: u128, node: u128) -> u128 {
    let bumped = replaced
        .saturating_add(replaced.div_ceil(REPLACEMENT_PRICE_BUMP_DIVISOR))
        .max(replaced.saturating_add(1));
    bumped.max(node)
}

type Envelope = <alloy_network::Ethereum as alloy_network::Network>::TxEnvelope;

/// The gas price of a transaction this wallet signed (legacy, see `sign_at`).
fn signed_gas_price(raw: &str) -> Result<u128, ChainError> {
    use alloy_network::eip2718::Decodable2718;
    let bytes = alloy_primitives::hex::decode(raw.trim_start_matches("0x"))
        .map_err(|_| bad("a recorded transaction is not hex".into()))?;
    match Envelope::decode_2718(&mut bytes.as_slice()) {
        Ok(Envelope::Legacy(signed)) => Ok(signed.tx().gas_price),
        Ok(_) => Err(bad("a recorded transaction is not a legacy one".into())),
        Err(e) => Err(bad(format!("a recorded transaction does not decode: {e}"))),
    }
}

impl EthereumHotWallet {
    /// Signs an ERC-20 `transfer` at `nonce` and gas price `price` (legacy, EIP-155).
    async fn sign_at(
        &self,
        to: &str,
        micros: u64,
        nonce: u64,
        price: u128,
    ) -> Result<SignedTransfer, ChainError> {
        let to = parse_eth_address(to)
            .map(Address::from)
            .map_err(|e| bad(format!("payee address: {e}")))?;
        let input = transferCall {
            to,
            value: U256::from(micros),
        }
        .abi_encode();
        let request = TransactionRequest::default()
            .with_from(self.address)
            .with_to(self.token)
            .with_input(Bytes::from(input))
            .with_nonce(nonce)
            .with_chain_id(self.chain_id().await?)
            .with_gas_price(price)
            .with_gas_limit(TRANSFER_GAS_LIMIT);
        let envelope =
            <TransactionRequest as NetworkTransactionBuilder<alloy_network::Ethereum>>::build(
                request,
                &self.wallet,
            )
            .await
            .map_err(|e| bad(format!("cannot sign: {e}")))?;
        let raw = envelope.encoded_2718();
        Ok(SignedTransfer {
            hash: format!("{:#x}", envelope.tx_hash()),
            raw: format!("0x{}", alloy_primitives::hex::encode(raw)),
            nonce: Some(nonce),
            expires_at: None,
        })
    }

    /// Connects to the node (its chain id is read once, and signed into every transaction).
    pub async fn connect(
        rpc_url: &SecretString,
        token_contract: &str,
        key: &SecretString,
        confirmations: Option<u64>,
    ) -> Result<Self, HotWalletConfigError> {
        let signer: PrivateKeySigner = key
            .expose_secret()
            .trim()
            .trim_start_matches("0x")
            .parse()
            .map_err(|_| HotWalletConfigError::InvalidKey)?;
        let address = signer.address();
        let token = parse_eth_address(token_contract)
            .map(Address::from)
            .map_err(|_| HotWalletConfigError::InvalidToken)?;
        let url = reqwest::Url::parse(rpc_url.expose_secret())
            .map_err(|_| HotWalletConfigError::InvalidRpcUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HotWalletConfigError::InvalidRpcUrl);
        }
        super::ethereum::install_ring_crypto_provider();
        let rpc_timeout = Duration::from_secs(RPC_TIMEOUT_SECS);
        let client = reqwest::Client::builder()
            .timeout(rpc_timeout)
            .connect_timeout(rpc_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HotWalletConfigError::Client(e.to_string()))?;
        let provider = RootProvider::new(RpcClient::new_http_with_client(client, url));
        let mut wallet = Self {
            provider,
            wallet: EthereumWallet::from(signer),
            address,
            token,
            chain_id: 0,
            confirmations: confirmations.unwrap_or(ETHEREUM_CONFIRMATIONS_MIN),
            rpc_timeout,
        };
        // The chain id may be read later, if the node is down at start.
        if let Ok(id) = wallet
            .call("eth_chainId", wallet.provider.get_chain_id())
            .await
        {
            wallet.chain_id = id;
        }
        Ok(wallet)
    }

    async fn call<T>(
        &self,
        method: &'static str,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(self.rpc_timeout, call.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            // alloy's errors may carry the URL: only their kind goes out.
            Ok(Err(e)) => Err(unavailable(format!("{method}: {}", describe(&e)))),
            Err(_) => Err(unavailable(format!("{method}: no answer in time"))),
        }
    }

    async fn chain_id(&self) -> Result<u64, ChainError> {
        if self.chain_id != 0 {
            return Ok(self.chain_id);
        }
        self.call("eth_chainId", self.provider.get_chain_id()).await
    }
}

/// An RPC error without its URL: the JSON-RPC error's message, or the transport error's kind.
fn describe(e: &TransportError) -> String {
    match e {
        alloy_provider::transport::RpcError::ErrorResp(payload) => {
            payload.message.chars().take(200).collect()
        }
        alloy_provider::transport::RpcError::Transport(_) => "transport error".to_string(),
        other => other.to_string().chars().take(200).collect(),
    }
}

fn parse_hash(s: &str) -> Result<B256, ChainError> {
    s.parse::<B256>()
        .map_err(|_| ChainError::MalformedTxHash(s.chars().take(80).collect()))
}

#[async_trait::async_trait]
impl HotWallet for EthereumHotWallet {
    fn network(&self) -> Network {
        Network::Ethereum
    }

    fn address(&self) -> String {
        eip55(&self.address.into())
    }

    fn confirmations(&self) -> u64 {
        self.confirmations
    }

    async fn balances(&self) -> Result<HotWalletBalances, ChainError> {
        let gas = self
            .call("eth_getBalance", self.provider.get_balance(self.address))
            .await?;
        let price = self
            .call("eth_gasPrice", self.provider.get_gas_price())
            .await?;
        let input = balanceOfCall {
            owner: self.address,
        }
        .abi_encode();
        let request = TransactionRequest::default()
            .with_to(self.token)
            .with_input(Bytes::from(input));
        let answer = self.call("eth_call", self.provider.call(request)).await?;
        if answer.len() != 32 {
            return Err(bad(format!("balanceOf answered {} bytes", answer.len())));
        }
        let usdt = U256::from_be_slice(&answer);
        let per_transfer = U256::from(price.max(1)) * U256::from(TRANSFER_GAS_LIMIT);
        Ok(HotWalletBalances {
            usdt_micros: u128::try_from(usdt).unwrap_or(u128::MAX),
            gas: format!("{gas} wei"),
            transfers_gas_pays: u64::try_from(gas / per_transfer).unwrap_or(u64::MAX),
        })
    }

    async fn pending_nonce(&self) -> Result<Option<u64>, ChainError> {
        self.call(
            "eth_getTransactionCount",
            self.provider.get_transaction_count(self.address).pending(),
        )
        .await
        .map(Some)
    }

    async fn mined_nonce(&self) -> Result<Option<u64>, ChainError> {
        self.call(
            "eth_getTransactionCount",
            self.provider.get_transaction_count(self.address).latest(),
        )
        .await
        .map(Some)
    }

    async fn sign_transfer(
        &self,
        to: &str,
        micros: u64,
        nonce: Option<u64>,
    ) -> Result<SignedTransfer, ChainError> {
        let nonce = nonce.ok_or_else(|| bad("an Ethereum transfer needs a nonce".into()))?;
        let price = self
            .call("eth_gasPrice", self.provider.get_gas_price())
            .await?;
        self.sign_at(to, micros, nonce, price).await
    }

    async fn sign_replacement(
        &self,
        replaced: &SignedTransfer,
        to: &str,
        micros: u64,
    ) -> Result<SignedTransfer, ChainError> {
        let nonce = replaced
            .nonce
            .ok_or_else(|| bad("the replaced transaction has no nonce".into()))?;
        let old = signed_gas_price(&replaced.raw)?;
        let node = self
            .call("eth_gasPrice", self.provider.get_gas_price())
            .await?;
        self.sign_at(to, micros, nonce, replacement_gas_price(old, node))
            .await
    }

    async fn broadcast(&self, transfer: &SignedTransfer) -> Result<(), ChainError> {
        let sent: Result<B256, ChainError> = self
            .call(
                "eth_sendRawTransaction",
                self.provider.raw_request::<_, B256>(
                    "eth_sendRawTransaction".into(),
                    (transfer.raw.clone(),),
                ),
            )
            .await;
        match sent {
            Ok(_) => Ok(()),
            // The node has it already (pending or mined): what a rebroadcast hopes for.
            Err(ChainError::Unavailable { reason, .. })
                if reason.contains("known") || reason.contains("already") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn status(&self, hash: &str) -> Result<SentStatus, ChainError> {
        let hash = parse_hash(hash)?;
        let receipt = self
            .call(
                "eth_getTransactionReceipt",
                self.provider.get_transaction_receipt(hash),
            )
            .await?;
        let Some(receipt) = receipt else {
            return Ok(SentStatus::NotMined);
        };
        let Some(block) = receipt.block_number else {
            return Ok(SentStatus::NotMined);
        };
        if !receipt.status() {
            return Ok(SentStatus::Reverted {
                block,
                detail: format!("status 0 in block {block}"),
            });
        }
        let latest = self
            .call("eth_blockNumber", self.provider.get_block_number())
            .await?;
        Ok(SentStatus::Succeeded {
            block,
            confirmations: latest.saturating_sub(block).saturating_add(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_pays_at_least_a_tenth_more_than_the_replaced_and_never_less_than_the_node() {
        for old in [
            0u128,
            1,
            7,
            8,
            1_000_000_000,
            20_000_000_001,
            10u128.pow(30),
        ] {
            let new = replacement_gas_price(old, 0);
            assert!(new > old, "{old} -> {new}");
            // geth's rule: new * 100 >= old * 110.
            assert!(new * 100 >= old * 110, "{old} -> {new}");
        }
        assert_eq!(replacement_gas_price(8, 1_000), 1_000);
        assert_eq!(replacement_gas_price(8, 2), 9);
    }
}
