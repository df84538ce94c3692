//! The Ethereum adapter of [`ChainVerifier`]: reads one transaction through a node's JSON-RPC
//! (`eth_getTransactionReceipt`, then `eth_blockNumber` for the chain head) with alloy, and
//! reports the configured ERC-20 token's `Transfer` events to the platform wallet.
//!
//! Everything read from the node is checked before it is believed: an answer we cannot read, or
//! one about another transaction, is a [`ChainError::BadResponse`], never a confirmation; a node
//! that cannot be reached, answers with an error, or is slower than the timeout is
//! [`ChainError::Unavailable`]. Whether a transfer pays for a payment (amount, payer, one
//! transaction per payment, enough confirmations) is decided by the `Payment` aggregate, not here.
//!
//! The RPC URL is a secret (hosted nodes carry the API key in its path): it is never put in an
//! error or a span of ours, and reqwest errors are described without their URL. alloy's HTTP
//! transport itself records the URL in a DEBUG span (`ReqwestTransport`), so a deployment must
//! not enable debug logging for `alloy_transport_http`.
//!
//! Limits: every call is bounded by the configured timeout (default [`RPC_TIMEOUT_SECS`]).
//! alloy reads a response body whole; the node is one the operator configured, and a receipt is
//! bounded by the block gas limit, so no separate size limit is applied here.

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use aiforge_domain::wallet::Network;
use alloy_primitives::{Address, B256};
use alloy_provider::transport::{RpcError, TransportError, TransportErrorKind};
use alloy_provider::{Provider, RootProvider};
use alloy_rpc_client::RpcClient;
use alloy_rpc_types_eth::TransactionReceipt;
use alloy_sol_types::{sol, SolEvent};
use reqwest_alloy as reqwest;
use secrecy::{ExposeSecret, SecretString};

use super::{
    ChainError, ChainVerifier, TokenTransfer, TxStatus, ETHEREUM_CONFIRMATIONS_MIN,
    RPC_TIMEOUT_SECS,
};
use crate::wallet_crypto::{eip55, parse_eth_address, WalletError};

sol! {
    /// The ERC-20 transfer event (topic 0 = keccak256("Transfer(address,address,uint256)")).
    event Transfer(address indexed from, address indexed to, uint256 value);
}

const TX_HASH_LEN_HEX: usize = 64;
/// How much of a node's unreadable answer goes into an error (for the log, never for a client).
const REASON_CHARS_MAX: usize = 200;

/// Where and what to verify.
#[derive(Debug, Clone)]
pub struct EthereumConfig {
    /// The node's JSON-RPC URL, `http(s)://…`. A secret: hosted nodes (Infura, Alchemy) carry
    /// the API key in it.
    pub rpc_url: SecretString,
    /// The ERC-20 token contract, `0x…` (USDT on mainnet:
    /// `0xdAC17F958D2ee523a2206206994597C13D831ec7`). Mixed case must be valid EIP-55.
    pub token_contract: String,
    /// The address payments must be sent to, `0x…`.
    pub platform_wallet: String,
    pub confirmations_min: u64,
    /// Limit on each JSON-RPC call, connecting included.
    pub rpc_timeout: Duration,
}

impl EthereumConfig {
    /// A configuration with the defaults: [`ETHEREUM_CONFIRMATIONS_MIN`], [`RPC_TIMEOUT_SECS`].
    pub fn new(
        rpc_url: impl Into<String>,
        token_contract: impl Into<String>,
        platform_wallet: impl Into<String>,
    ) -> Self {
        EthereumConfig {
            rpc_url: SecretString::from(rpc_url.into()),
            token_contract: token_contract.into(),
            platform_wallet: platform_wallet.into(),
            confirmations_min: ETHEREUM_CONFIRMATIONS_MIN,
            rpc_timeout: Duration::from_secs(RPC_TIMEOUT_SECS),
        }
    }
}

/// An [`EthereumConfig`] that cannot work: found at startup, not at the first payment.
#[derive(Debug, thiserror::Error)]
pub enum EthereumConfigError {
    #[error("ethereum {field} is not a valid address: {source}")]
    InvalidAddress {
        field: &'static str,
        source: WalletError,
    },
    /// The URL itself is not repeated: it may hold an API key.
    #[error("ethereum rpc_url is not an http(s) URL")]
    InvalidRpcUrl,
    #[error("ethereum confirmations_min must be at least 1")]
    ZeroConfirmations,
    #[error("ethereum rpc_timeout must be more than zero")]
    ZeroTimeout,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// [`ChainVerifier`] over an Ethereum node's JSON-RPC.
#[derive(Clone)]
pub struct EthereumVerifier {
    provider: RootProvider,
    token: Address,
    platform_wallet: Address,
    confirmations_min: u64,
    rpc_timeout: Duration,
}

impl fmt::Debug for EthereumVerifier {
    // Written out so the provider (and the secret URL inside its transport) is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthereumVerifier")
            .field("token", &self.token)
            .field("platform_wallet", &self.platform_wallet)
            .field("confirmations_min", &self.confirmations_min)
            .field("rpc_timeout", &self.rpc_timeout)
            .finish_non_exhaustive()
    }
}

impl EthereumVerifier {
    pub fn new(config: EthereumConfig) -> Result<Self, EthereumConfigError> {
        let address = |field: &'static str, s: &str| {
            parse_eth_address(s)
                .map(Address::from)
                .map_err(|source| EthereumConfigError::InvalidAddress { field, source })
        };
        let token = address("token_contract", &config.token_contract)?;
        let platform_wallet = address("platform_wallet", &config.platform_wallet)?;
        let url = reqwest::Url::parse(config.rpc_url.expose_secret())
            .map_err(|_| EthereumConfigError::InvalidRpcUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(EthereumConfigError::InvalidRpcUrl);
        }
        if config.confirmations_min == 0 {
            return Err(EthereumConfigError::ZeroConfirmations);
        }
        if config.rpc_timeout.is_zero() {
            return Err(EthereumConfigError::ZeroTimeout);
        }

        install_ring_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.rpc_timeout)
            .connect_timeout(config.rpc_timeout)
            // A node has no reason to redirect a JSON-RPC POST; following one could carry the
            // request somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aiforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EthereumConfigError::Client(describe_reqwest(&e)))?;
        let provider = RootProvider::new(RpcClient::new_http_with_client(client, url));

        Ok(EthereumVerifier {
            provider,
            token,
            platform_wallet,
            confirmations_min: config.confirmations_min,
            rpc_timeout: config.rpc_timeout,
        })
    }

    /// Runs one JSON-RPC call under the timeout and sorts its failure.
    async fn call<T>(
        &self,
        method: &'static str,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<T, ChainError> {
        match tokio::time::timeout(self.rpc_timeout, call.into_future()).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(rpc_error(method, e)),
            Err(_elapsed) => Err(unavailable(format!(
                "{method}: no answer within {} ms",
                self.rpc_timeout.as_millis()
            ))),
        }
    }
}

/// reqwest 0.13 (alloy's HTTP client) offers ring only as "no provider, install your own"; its
/// default would build aws-lc-rs, which this workspace avoids. Installing is process-wide and
/// first come first served: if a provider is already installed, that one stays.
pub(crate) fn install_ring_crypto_provider() {
    // An Err only says a provider was already installed, which is what we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[async_trait::async_trait]
impl ChainVerifier for EthereumVerifier {
    fn network(&self) -> Network {
        Network::Ethereum
    }

    fn required_confirmations(&self) -> u64 {
        self.confirmations_min
    }

    #[tracing::instrument(skip(self), fields(network = "ethereum"))]
    async fn transaction(&self, tx_hash: &str) -> Result<TxStatus, ChainError> {
        let hash = parse_tx_hash(tx_hash)?;
        let receipt = self
            .call(
                "eth_getTransactionReceipt",
                self.provider.get_transaction_receipt(hash),
            )
            .await?;
        match read_receipt(receipt.as_ref(), hash, self.token, self.platform_wallet)? {
            Receipt::NotFound => Ok(TxStatus::NotFound),
            Receipt::Failed { block } => Ok(TxStatus::Failed { block }),
            Receipt::Succeeded { block, transfers } => {
                let latest = self
                    .call("eth_blockNumber", self.provider.get_block_number())
                    .await?;
                let confirmations = confirmations(latest, block);
                tracing::debug!(
                    block,
                    latest,
                    confirmations,
                    transfers = transfers.len(),
                    "ethereum receipt"
                );
                Ok(TxStatus::Succeeded {
                    block,
                    confirmations,
                    transfers,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the node's answers (pure functions, unit-tested below)
// ---------------------------------------------------------------------------------------------

/// `0x` + 64 hex digits (either case).
fn parse_tx_hash(s: &str) -> Result<B256, ChainError> {
    let malformed = || ChainError::MalformedTxHash(truncate(s));
    let digits = s.strip_prefix("0x").ok_or_else(malformed)?;
    if digits.len() != TX_HASH_LEN_HEX || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    digits.parse::<B256>().map_err(|_| malformed())
}

/// latest - block + 1. A node behind the one that served the receipt (load-balanced providers)
/// can report an older head: that is no confirmation yet, never an error or a wrap-around.
fn confirmations(latest: u64, block: u64) -> u64 {
    latest.checked_sub(block).map_or(0, |d| d.saturating_add(1))
}

/// What the receipt says, before the chain head is known.
#[derive(Debug, PartialEq, Eq)]
enum Receipt {
    NotFound,
    Failed {
        block: u64,
    },
    Succeeded {
        block: u64,
        transfers: Vec<TokenTransfer>,
    },
}

fn read_receipt(
    receipt: Option<&TransactionReceipt>,
    requested: B256,
    token: Address,
    platform_wallet: Address,
) -> Result<Receipt, ChainError> {
    let Some(receipt) = receipt else {
        return Ok(Receipt::NotFound);
    };
    if receipt.transaction_hash != requested {
        return Err(bad_response(format!(
            "receipt is for {}, not {requested}",
            receipt.transaction_hash
        )));
    }
    // Some nodes answer a receipt for a transaction still in the mempool, without a block.
    let Some(block) = receipt.block_number else {
        return Ok(Receipt::NotFound);
    };
    if !receipt.status() {
        return Ok(Receipt::Failed { block });
    }

    let mut transfers = Vec::new();
    for log in receipt.logs() {
        if log.removed
            || log.address() != token
            || log.topics().first() != Some(&Transfer::SIGNATURE_HASH)
        {
            continue;
        }
        let event = Transfer::decode_log_data(log.data())
            .map_err(|e| bad_response(format!("undecodable Transfer log of the token: {e}")))?;
        if event.to != platform_wallet {
            continue;
        }
        let value = u128::try_from(event.value).map_err(|_| {
            bad_response(format!("Transfer value {} does not fit u128", event.value))
        })?;
        transfers.push(TokenTransfer {
            from: eip55(&event.from.into()),
            to: eip55(&event.to.into()),
            value,
        });
    }
    Ok(Receipt::Succeeded { block, transfers })
}

/// Sorts an alloy failure: could not get an answer (retry later) or got one we cannot read.
fn rpc_error(method: &str, e: TransportError) -> ChainError {
    match e {
        RpcError::Transport(kind) => match kind {
            TransportErrorKind::HttpError(http)
            | TransportErrorKind::HttpErrorWithRetryAfter { error: http, .. } => {
                let reason = format!("{method}: HTTP {}: {}", http.status, truncate(&http.body));
                // These say "try again later" (hosted nodes answer 429 past a rate limit);
                // any other status (401 for a wrong key, 404 for a wrong path) is a node we
                // will never get an answer from as configured.
                match http.status {
                    429 | 502 | 503 | 504 => unavailable(reason),
                    _ => bad_response(reason),
                }
            }
            TransportErrorKind::Custom(inner) | TransportErrorKind::NonRetryable(inner) => {
                // reqwest's own message names the URL, which may hold the API key.
                let reason = match inner.downcast_ref::<reqwest::Error>() {
                    Some(e) => describe_reqwest(e),
                    None => inner.to_string(),
                };
                unavailable(format!("{method}: {reason}"))
            }
            other => unavailable(format!("{method}: {other}")),
        },
        // A JSON-RPC error object: the node is there but will not answer this now (rate limits,
        // a syncing or overloaded node). Our requests are validated, so it is not our mistake.
        RpcError::ErrorResp(payload) => unavailable(format!(
            "{method}: node error {}: {}",
            payload.code,
            truncate(&payload.message)
        )),
        RpcError::DeserError { err, text } => {
            bad_response(format!("{method}: {err}: {}", truncate(&text)))
        }
        RpcError::NullResp => bad_response(format!("{method}: null result")),
        other => bad_response(format!("{method}: {other}")),
    }
}

/// A reqwest error without the request URL: what kind of failure, then its cause chain.
fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_builder() {
        "bad request setup"
    } else if e.is_body() || e.is_decode() {
        "cannot read the response"
    } else {
        "request failed"
    };
    let mut reason = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

fn unavailable(reason: String) -> ChainError {
    ChainError::Unavailable {
        network: Network::Ethereum,
        reason,
    }
}

fn bad_response(reason: String) -> ChainError {
    ChainError::BadResponse {
        network: Network::Ethereum,
        reason,
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(REASON_CHARS_MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "a test fails loudly on the first broken assumption"
    )]

    use serde_json::json;

    use super::*;

    const HASH: &str = "0x735bba9d338a6afae57ec4a113e4233aba61f74f128a69cd44d3f48ca8f48a7b";
    const TOKEN: &str = "0xe78A0F7E598Cc8b0Bb87894B0F60dD2a88d6a8Ab";
    const OTHER_TOKEN: &str = "0xCfEB869F69431e42cdB54A4F4f105C19C080A601";
    const PLATFORM: &str = "0x1dF62f291b2E969fB0849d99D9Ce41e2F137006e";
    const PAYER: &str = "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0";

    fn addr(s: &str) -> Address {
        s.parse().unwrap()
    }

    fn topic(a: &str) -> String {
        format!("0x{:0>64}", a.trim_start_matches("0x").to_lowercase())
    }

    fn transfer_log(contract: &str, from: &str, to: &str, value_hex: &str) -> serde_json::Value {
        json!({
            "address": contract,
            "topics": [Transfer::SIGNATURE_HASH.to_string(), topic(from), topic(to)],
            "data": format!("0x{value_hex:0>64}"),
            "blockNumber": "0x5", "transactionHash": HASH, "transactionIndex": "0x0",
            "blockHash": format!("0x{:064}", 1), "logIndex": "0x0", "removed": false
        })
    }

    /// A receipt in the shape geth and ganache answer `eth_getTransactionReceipt` with.
    fn receipt(status: &str, logs: Vec<serde_json::Value>) -> TransactionReceipt {
        serde_json::from_value(json!({
            "transactionHash": HASH, "transactionIndex": "0x0",
            "blockHash": format!("0x{:064}", 1), "blockNumber": "0x5",
            "from": PAYER, "to": TOKEN, "cumulativeGasUsed": "0xb5a6", "gasUsed": "0xb5a6",
            "contractAddress": null, "logs": logs, "logsBloom": format!("0x{:0512}", 0),
            "status": status, "effectiveGasPrice": "0x77359400", "type": "0x2"
        }))
        .unwrap()
    }

    fn read(receipt: &TransactionReceipt) -> Result<Receipt, ChainError> {
        read_receipt(
            Some(receipt),
            parse_tx_hash(HASH).unwrap(),
            addr(TOKEN),
            addr(PLATFORM),
        )
    }

    #[test]
    fn the_transfer_signature_is_the_erc20_topic() {
        assert_eq!(
            Transfer::SIGNATURE_HASH.to_string(),
            "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        );
    }

    #[test]
    fn a_token_transfer_to_the_platform_is_reported_with_eip55_addresses() {
        let r = receipt("0x1", vec![transfer_log(TOKEN, PAYER, PLATFORM, "989680")]);
        assert_eq!(
            read(&r).unwrap(),
            Receipt::Succeeded {
                block: 5,
                transfers: vec![TokenTransfer {
                    from: PAYER.to_owned(),
                    to: PLATFORM.to_owned(),
                    value: 10_000_000,
                }],
            }
        );
    }

    #[test]
    fn other_tokens_and_other_recipients_are_left_out() {
        let r = receipt(
            "0x1",
            vec![
                transfer_log(OTHER_TOKEN, PAYER, PLATFORM, "1"),
                transfer_log(TOKEN, PAYER, PAYER, "2"),
            ],
        );
        assert_eq!(
            read(&r).unwrap(),
            Receipt::Succeeded {
                block: 5,
                transfers: vec![]
            }
        );
    }

    #[test]
    fn a_reverted_receipt_is_failed_whatever_its_logs() {
        let r = receipt("0x0", vec![]);
        assert_eq!(read(&r).unwrap(), Receipt::Failed { block: 5 });
    }

    #[test]
    fn a_value_beyond_u128_is_a_bad_response_not_a_truncated_payment() {
        let r = receipt(
            "0x1",
            vec![transfer_log(TOKEN, PAYER, PLATFORM, &"f".repeat(64))],
        );
        assert!(matches!(read(&r), Err(ChainError::BadResponse { .. })));
    }

    #[test]
    fn a_transfer_log_of_the_token_without_its_indexed_topics_is_a_bad_response() {
        let mut log = transfer_log(TOKEN, PAYER, PLATFORM, "1");
        log["topics"] = json!([Transfer::SIGNATURE_HASH.to_string()]);
        let r = receipt("0x1", vec![log]);
        assert!(matches!(read(&r), Err(ChainError::BadResponse { .. })));
    }

    #[test]
    fn a_receipt_for_another_transaction_is_a_bad_response() {
        let r = receipt("0x1", vec![]);
        let other = parse_tx_hash(&format!("0x{}", "ab".repeat(32))).unwrap();
        assert!(matches!(
            read_receipt(Some(&r), other, addr(TOKEN), addr(PLATFORM)),
            Err(ChainError::BadResponse { .. })
        ));
    }

    #[test]
    fn a_missing_receipt_is_not_found() {
        let hash = parse_tx_hash(HASH).unwrap();
        assert_eq!(
            read_receipt(None, hash, addr(TOKEN), addr(PLATFORM)).unwrap(),
            Receipt::NotFound
        );
    }

    #[test]
    fn tx_hashes_must_be_0x_and_64_hex_digits() {
        assert!(parse_tx_hash(HASH).is_ok());
        assert!(parse_tx_hash(&HASH.to_uppercase().replacen("0X", "0x", 1)).is_ok());
        for bad in [
            "",
            "0x",
            &HASH[2..],
            &HASH[..65],
            &format!("{HASH}00"),
            &HASH.replacen('7', "g", 1),
            &format!("0x+{}", &HASH[3..]),
        ] {
            assert!(
                matches!(parse_tx_hash(bad), Err(ChainError::MalformedTxHash(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn confirmations_count_the_receipt_block_and_never_wrap() {
        assert_eq!(confirmations(5, 5), 1);
        assert_eq!(confirmations(7, 5), 3);
        assert_eq!(confirmations(4, 5), 0);
        assert_eq!(confirmations(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn a_config_with_a_bad_address_url_or_limit_is_refused_at_startup() {
        let ok = || EthereumConfig::new("http://127.0.0.1:8545", TOKEN, PLATFORM);
        assert!(EthereumVerifier::new(ok()).is_ok());
        let mut c = ok();
        c.token_contract = TOKEN.to_lowercase().replacen('e', "E", 1);
        assert!(matches!(
            EthereumVerifier::new(c),
            Err(EthereumConfigError::InvalidAddress {
                field: "token_contract",
                ..
            })
        ));
        let mut c = ok();
        c.platform_wallet = "0x1234".into();
        assert!(matches!(
            EthereumVerifier::new(c),
            Err(EthereumConfigError::InvalidAddress {
                field: "platform_wallet",
                ..
            })
        ));
        for url in ["ws://127.0.0.1:8545", "not a url", "mailto:a@b.c"] {
            let mut c = ok();
            c.rpc_url = SecretString::from(url);
            assert!(matches!(
                EthereumVerifier::new(c),
                Err(EthereumConfigError::InvalidRpcUrl)
            ));
        }
        let mut c = ok();
        c.confirmations_min = 0;
        assert!(matches!(
            EthereumVerifier::new(c),
            Err(EthereumConfigError::ZeroConfirmations)
        ));
        let mut c = ok();
        c.rpc_timeout = Duration::ZERO;
        assert!(matches!(
            EthereumVerifier::new(c),
            Err(EthereumConfigError::ZeroTimeout)
        ));
    }

    #[test]
    fn the_verifier_debug_output_leaves_the_rpc_url_out() {
        let v = EthereumVerifier::new(EthereumConfig::new(
            "https://mainnet.example/v3/SECRETKEY",
            TOKEN,
            PLATFORM,
        ))
        .unwrap();
        assert!(!format!("{v:?}").contains("SECRETKEY"));
    }
}
