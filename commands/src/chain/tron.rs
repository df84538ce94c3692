//! The Tron adapter of [`ChainVerifier`]: reads one transaction through a full node's HTTP API
//! (`/wallet/gettransactioninfobyid` for the receipt and its event logs, `/wallet/getnowblock`
//! for the chain head) and reports the configured TRC-20 token's `Transfer` events to the
//! platform wallet.
//!
//! Everything read from the node is checked before it is believed: a response we cannot read is
//! a [`ChainError::BadResponse`], never a confirmation, and a node that does not answer within
//! the configured timeout is [`ChainError::Unavailable`]. Whether a transfer pays for a payment
//! (amount, payer, one transaction per payment) is not decided here but by the `Payment`
//! aggregate.
//!
//! Shapes follow the java-tron HTTP API with `visible: false` (hex addresses): a log's `address`
//! is the contract's 20 bytes without the `0x41` version byte, `topics` and `data` are hex
//! without `0x`. A transaction the node does not know (or has not put in a block yet) is `{}`.

use std::time::Duration;

use aiforge_domain::wallet::Network;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    ChainError, ChainVerifier, TokenTransfer, TxStatus, RPC_TIMEOUT_SECS, TRON_CONFIRMATIONS_MIN,
};
use crate::wallet_crypto::{parse_tron_address, tron_address, WalletError};

/// keccak256("Transfer(address,address,uint256)"): topic 0 of every TRC-20 / ERC-20 transfer.
pub const TRANSFER_TOPIC: [u8; 32] = [
    0xdd, 0xf2, 0x52, 0xad, 0x1b, 0xe2, 0xc8, 0x9b, 0x69, 0xc2, 0xb0, 0x68, 0xfc, 0x37, 0x8d, 0xaa,
    0x95, 0x2b, 0xa7, 0xf1, 0x63, 0xc4, 0xa1, 0x16, 0x28, 0xf5, 0x5a, 0x4d, 0xf5, 0x23, 0xb3, 0xef,
];

/// A node's answer is read into memory, so it is bounded. `getnowblock` returns the whole head
/// block with its transactions; a Tron block is at most ~2 MB of protobuf, a few MB as JSON.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The header TronGrid reads its API key from.
const API_KEY_HEADER: &str = "TRON-PRO-API-KEY";
const TX_HASH_LEN_HEX: usize = 64;
const ADDRESS_LEN_BYTES: usize = 20;
const WORD_LEN_BYTES: usize = 32;
/// `0x41`: the version byte in front of every Tron address.
const TRON_ADDRESS_VERSION: u8 = 0x41;
/// How much of an unreadable answer goes into an error (for the log, never for a client).
const REASON_BODY_CHARS_MAX: usize = 200;

/// Where and what to verify. `api_url` is the node's base URL (`https://api.trongrid.io`, or a
/// provider URL that may itself carry a key in its path, which is why it is never logged).
#[derive(Debug, Clone)]
pub struct TronConfig {
    pub api_url: String,
    /// The TRC-20 token contract, base58check `T…` (USDT on mainnet:
    /// `TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t`).
    pub token_contract: String,
    /// The address payments must be sent to, base58check `T…`.
    pub platform_wallet: String,
    pub confirmations_min: u64,
    /// Sent as `TRON-PRO-API-KEY` (TronGrid). A secret: never logged, never in an error.
    pub api_key: Option<SecretString>,
    /// Limit on each HTTP call, connecting included.
    pub rpc_timeout: Duration,
}

impl TronConfig {
    /// A configuration with the defaults: [`TRON_CONFIRMATIONS_MIN`], no API key,
    /// [`RPC_TIMEOUT_SECS`].
    pub fn new(
        api_url: impl Into<String>,
        token_contract: impl Into<String>,
        platform_wallet: impl Into<String>,
    ) -> Self {
        TronConfig {
            api_url: api_url.into(),
            token_contract: token_contract.into(),
            platform_wallet: platform_wallet.into(),
            confirmations_min: TRON_CONFIRMATIONS_MIN,
            api_key: None,
            rpc_timeout: Duration::from_secs(RPC_TIMEOUT_SECS),
        }
    }
}

/// A [`TronConfig`] that cannot work: found at startup, not at the first payment.
#[derive(Debug, thiserror::Error)]
pub enum TronConfigError {
    #[error("tron {field} is not a valid address: {source}")]
    InvalidAddress {
        field: &'static str,
        source: WalletError,
    },
    #[error("tron api_url is not an http(s) URL")]
    InvalidApiUrl,
    #[error("tron api_key contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    #[error("tron confirmations_min must be at least 1")]
    ZeroConfirmations,
    #[error("tron rpc_timeout must be more than zero")]
    ZeroTimeout,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// [`ChainVerifier`] over a Tron full node's HTTP API.
#[derive(Debug, Clone)]
pub struct TronVerifier {
    client: reqwest::Client,
    /// `api_url` without a trailing slash.
    base_url: String,
    token: [u8; ADDRESS_LEN_BYTES],
    platform_wallet: [u8; ADDRESS_LEN_BYTES],
    confirmations_min: u64,
}

impl TronVerifier {
    pub fn new(config: TronConfig) -> Result<Self, TronConfigError> {
        let token = parse_tron_address(&config.token_contract).map_err(|source| {
            TronConfigError::InvalidAddress {
                field: "token_contract",
                source,
            }
        })?;
        let platform_wallet = parse_tron_address(&config.platform_wallet).map_err(|source| {
            TronConfigError::InvalidAddress {
                field: "platform_wallet",
                source,
            }
        })?;
        let url =
            reqwest::Url::parse(&config.api_url).map_err(|_| TronConfigError::InvalidApiUrl)?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(TronConfigError::InvalidApiUrl);
        }
        if config.confirmations_min == 0 {
            return Err(TronConfigError::ZeroConfirmations);
        }
        if config.rpc_timeout.is_zero() {
            return Err(TronConfigError::ZeroTimeout);
        }

        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(key.expose_secret())
                .map_err(|_| TronConfigError::InvalidApiKey)?;
            value.set_sensitive(true);
            headers.insert(API_KEY_HEADER, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.rpc_timeout)
            .connect_timeout(config.rpc_timeout)
            // The API key is a custom header, which reqwest would carry along a redirect to
            // another host; a node API has no reason to redirect, so a 3xx is a bad response.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aiforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TronConfigError::Client)?;

        Ok(TronVerifier {
            client,
            base_url: config.api_url.trim_end_matches('/').to_owned(),
            token,
            platform_wallet,
            confirmations_min: config.confirmations_min,
        })
    }

    /// POSTs `body` to `path` and returns the JSON object the node answered (also the Tron hot
    /// wallet's way to its node, `tron_hot_wallet.rs`).
    pub(super) async fn post(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<Map<String, Value>, ChainError> {
        let url = format!("{}{path}", self.base_url);
        let mut response = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(path, e))?;

        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(path, e))?
        {
            if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(bad_response(format!(
                    "{path}: response larger than {RESPONSE_BYTES_MAX} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }

        if !status.is_success() {
            let reason = format!("{path}: HTTP {status}: {}", excerpt(&bytes));
            // These say "try again later" (TronGrid answers 429 past an API key's rate limit);
            // every other status means we asked something the node will never answer.
            return Err(match status.as_u16() {
                429 | 502 | 503 | 504 => unavailable(reason),
                _ => bad_response(reason),
            });
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => {
                // java-tron reports a failed request as HTTP 200 with {"Error": "..."}.
                if let Some(error) = object.get("Error") {
                    return Err(bad_response(format!("{path}: node error: {error}")));
                }
                Ok(object)
            }
            Ok(_) => Err(bad_response(format!("{path}: not a JSON object"))),
            Err(e) => Err(bad_response(format!(
                "{path}: not JSON ({e}): {}",
                excerpt(&bytes)
            ))),
        }
    }

    pub(super) async fn now_block(&self) -> Result<u64, ChainError> {
        let block = self.post("/wallet/getnowblock", &json!({})).await?;
        now_block_number(Value::Object(block))
    }
}

#[async_trait::async_trait]
impl ChainVerifier for TronVerifier {
    fn network(&self) -> Network {
        Network::Tron
    }

    fn required_confirmations(&self) -> u64 {
        self.confirmations_min
    }

    #[tracing::instrument(skip(self), fields(network = "tron"))]
    async fn transaction(&self, tx_hash: &str) -> Result<TxStatus, ChainError> {
        let txid = normalize_tx_hash(tx_hash)?;
        let info = self
            .post(
                "/wallet/gettransactioninfobyid",
                &json!({ "value": txid, "visible": false }),
            )
            .await?;
        match read_transaction_info(info, &txid, &self.token, &self.platform_wallet)? {
            Receipt::NotFound => Ok(TxStatus::NotFound),
            Receipt::Failed { block } => Ok(TxStatus::Failed { block }),
            Receipt::Succeeded { block, transfers } => {
                // Read after the receipt, so the head is normally at or past `block`. A node
                // behind the one that served the receipt (load-balanced providers) can still
                // report an older head: that counts as no confirmation yet, never as an error
                // or a wrap-around.
                let now = self.now_block().await?;
                let confirmations = now.checked_sub(block).map_or(0, |d| d.saturating_add(1));
                tracing::debug!(
                    block,
                    now,
                    confirmations,
                    transfers = transfers.len(),
                    "tron receipt"
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

/// What `gettransactioninfobyid` says, before the chain head is known.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Receipt {
    NotFound,
    Failed {
        block: u64,
    },
    Succeeded {
        block: u64,
        transfers: Vec<TokenTransfer>,
    },
}

#[derive(Deserialize)]
struct TransactionInfo {
    id: Option<String>,
    #[serde(rename = "blockNumber")]
    block_number: Option<u64>,
    #[serde(default)]
    receipt: ResourceReceipt,
    #[serde(default)]
    log: Vec<Log>,
    /// Absent when the transaction succeeded, `"FAILED"` otherwise.
    result: Option<String>,
    /// Hex of the failure reason (e.g. "REVERT opcode executed").
    #[serde(rename = "resMessage")]
    res_message: Option<String>,
}

#[derive(Deserialize, Default)]
struct ResourceReceipt {
    /// The contract call's outcome: "SUCCESS", "REVERT", "OUT_OF_ENERGY", …; absent for
    /// transactions that call no contract (a TRX transfer), which cannot fail this way.
    result: Option<String>,
}

#[derive(Deserialize)]
struct Log {
    address: String,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct Block {
    block_header: BlockHeader,
}

#[derive(Deserialize)]
struct BlockHeader {
    raw_data: BlockRawData,
}

#[derive(Deserialize)]
struct BlockRawData {
    number: u64,
}

pub(super) fn read_transaction_info(
    info: Map<String, Value>,
    txid: &str,
    token: &[u8; ADDRESS_LEN_BYTES],
    platform_wallet: &[u8; ADDRESS_LEN_BYTES],
) -> Result<Receipt, ChainError> {
    if info.is_empty() {
        return Ok(Receipt::NotFound);
    }
    let info: TransactionInfo = serde_json::from_value(Value::Object(info))
        .map_err(|e| bad_response(format!("transaction info: {e}")))?;
    // The answer must be about the transaction we asked for.
    match &info.id {
        Some(id) if id.eq_ignore_ascii_case(txid) => {}
        Some(id) => {
            return Err(bad_response(format!(
                "transaction info is for {}, not {txid}",
                truncate(id)
            )))
        }
        None => return Err(bad_response("transaction info without id")),
    }
    let block = info
        .block_number
        .ok_or_else(|| bad_response("transaction info without blockNumber"))?;

    let contract_failed = info
        .receipt
        .result
        .as_deref()
        .is_some_and(|result| result != "SUCCESS");
    if contract_failed || info.result.as_deref() == Some("FAILED") {
        tracing::debug!(
            block,
            receipt_result = info.receipt.result.as_deref(),
            reason = info.res_message.as_deref().map(hex_text).as_deref(),
            "tron transaction failed"
        );
        return Ok(Receipt::Failed { block });
    }
    if let Some(other) = info.result.as_deref() {
        // Only "FAILED" is ever written; a success leaves the field out ("SUCESS" is accepted
        // since the enum value really is spelled that way in java-tron's protobuf).
        if !matches!(other, "SUCESS" | "SUCCESS") {
            return Err(bad_response(format!("unknown result {}", truncate(other))));
        }
    }

    let mut transfers = Vec::new();
    for log in &info.log {
        let Some(transfer) = read_transfer_log(log, token)? else {
            continue;
        };
        if &transfer.to == platform_wallet {
            transfers.push(TokenTransfer {
                from: tron_address(&transfer.from),
                to: tron_address(&transfer.to),
                value: transfer.value,
            });
        }
    }
    Ok(Receipt::Succeeded { block, transfers })
}

struct RawTransfer {
    from: [u8; ADDRESS_LEN_BYTES],
    to: [u8; ADDRESS_LEN_BYTES],
    value: u128,
}

/// `Some` for a `Transfer` event emitted by `token`, `None` for any other event.
fn read_transfer_log(
    log: &Log,
    token: &[u8; ADDRESS_LEN_BYTES],
) -> Result<Option<RawTransfer>, ChainError> {
    if &log_address(&log.address)? != token {
        return Ok(None);
    }
    let Some(topic0) = log.topics.first() else {
        return Ok(None); // an anonymous event
    };
    if hex_word(topic0, "topic")? != TRANSFER_TOPIC {
        return Ok(None); // Approval, or another event of the token
    }
    let [_, from, to] = log.topics.as_slice() else {
        return Err(bad_response(format!(
            "token Transfer log with {} topics, expected 3",
            log.topics.len()
        )));
    };
    Ok(Some(RawTransfer {
        from: word_address(&hex_word(from, "topic")?)?,
        to: word_address(&hex_word(to, "topic")?)?,
        value: word_u128(&hex_word(&log.data, "data")?)?,
    }))
}

/// A log's emitter. The documented form is 40 hex digits (no `0x41`); the `41`-prefixed hex
/// and base58check forms (`visible: true`, some providers) are read as the same address.
fn log_address(s: &str) -> Result<[u8; ADDRESS_LEN_BYTES], ChainError> {
    if s.starts_with('T') {
        return parse_tron_address(s).map_err(|e| bad_response(format!("log address: {e}")));
    }
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(digits).map_err(|_| bad_response("log address is not hex"))?;
    let body = match bytes.as_slice() {
        [TRON_ADDRESS_VERSION, body @ ..] if body.len() == ADDRESS_LEN_BYTES => body,
        body => body,
    };
    body.try_into()
        .map_err(|_| bad_response(format!("log address is {} bytes", bytes.len())))
}

fn hex_word(s: &str, what: &str) -> Result<[u8; WORD_LEN_BYTES], ChainError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(digits).map_err(|_| bad_response(format!("log {what} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| bad_response(format!("log {what} is not 32 bytes")))
}

/// An indexed `address` parameter: 12 zero bytes, then the 20 address bytes.
fn word_address(word: &[u8; WORD_LEN_BYTES]) -> Result<[u8; ADDRESS_LEN_BYTES], ChainError> {
    let (padding, address) = word.split_at(WORD_LEN_BYTES - ADDRESS_LEN_BYTES);
    if padding.iter().any(|&b| b != 0) {
        return Err(bad_response("address topic has non-zero padding"));
    }
    address
        .try_into()
        .map_err(|_| bad_response("address topic is not 20 bytes"))
}

/// A `uint256` that must fit in `u128` (all the USDT ever minted is far below 2^128 base units).
fn word_u128(word: &[u8; WORD_LEN_BYTES]) -> Result<u128, ChainError> {
    let (high, low) = word.split_at(WORD_LEN_BYTES / 2);
    if high.iter().any(|&b| b != 0) {
        return Err(bad_response("transfer value does not fit in 128 bits"));
    }
    let low: [u8; WORD_LEN_BYTES / 2] = low
        .try_into()
        .map_err(|_| bad_response("transfer value is not 32 bytes"))?;
    Ok(u128::from_be_bytes(low))
}

fn now_block_number(block: Value) -> Result<u64, ChainError> {
    let block: Block =
        serde_json::from_value(block).map_err(|e| bad_response(format!("getnowblock: {e}")))?;
    Ok(block.block_header.raw_data.number)
}

/// 64 hex digits, optionally after `0x`; returned in lower case, as the node prints txids.
pub(super) fn normalize_tx_hash(tx_hash: &str) -> Result<String, ChainError> {
    let digits = tx_hash
        .strip_prefix("0x")
        .or_else(|| tx_hash.strip_prefix("0X"))
        .unwrap_or(tx_hash);
    if digits.len() != TX_HASH_LEN_HEX || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChainError::MalformedTxHash(format!(
            "{:?} is not 64 hex digits",
            truncate(tx_hash)
        )));
    }
    Ok(digits.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

pub(super) fn bad_response(reason: impl Into<String>) -> ChainError {
    ChainError::BadResponse {
        network: Network::Tron,
        reason: reason.into(),
    }
}

pub(super) fn unavailable(reason: impl Into<String>) -> ChainError {
    ChainError::Unavailable {
        network: Network::Tron,
        reason: reason.into(),
    }
}

/// Could not connect, timed out, or the connection broke: all "try again later". The URL is
/// dropped from the message since a provider URL can carry an API key.
fn transport_error(path: &str, error: reqwest::Error) -> ChainError {
    let error = error.without_url();
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    let mut reason = format!("{path}: {kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    unavailable(reason)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(REASON_BODY_CHARS_MAX) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

fn excerpt(bytes: &[u8]) -> String {
    truncate(&String::from_utf8_lossy(bytes)).to_owned()
}

/// `resMessage` is hex of a text (e.g. "REVERT opcode executed"); shown as text when it is one.
pub(super) fn hex_text(s: &str) -> String {
    hex::decode(s)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map_or_else(|| truncate(s).to_owned(), |text| truncate(&text).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXID: &str = "4c1bc0d1a1b0ad3c7f6e0f6dcd2a8b1f1b0a8a4c3d5e6f708192a3b4c5d6e7f8";
    // USDT (TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t) without the 0x41 byte.
    const USDT_HEX: &str = "a614f803b6fd780986a42c78ec9c7f77e6ded13c";
    const PLATFORM_HEX: &str = "625a703cf756a6472a2728b6e165ce2b50fc3b16";
    const PAYER_HEX: &str = "9549c005cd2c7a6130dc14e25f809037d995dbc1";
    const TRANSFER_HEX: &str = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

    fn address(hex_body: &str) -> [u8; 20] {
        hex::decode(hex_body).unwrap().try_into().unwrap()
    }

    fn topic(address_hex: &str) -> String {
        format!("000000000000000000000000{address_hex}")
    }

    fn info(log: Value) -> Map<String, Value> {
        let Value::Object(map) = json!({
            "id": TXID,
            "blockNumber": 100,
            "receipt": { "result": "SUCCESS" },
            "log": [log],
        }) else {
            unreachable!()
        };
        map
    }

    fn transfer_log(emitter: &str, data: &str) -> Value {
        json!({
            "address": emitter,
            "topics": [TRANSFER_HEX, topic(PAYER_HEX), topic(PLATFORM_HEX)],
            "data": data,
        })
    }

    fn read(info: Map<String, Value>) -> Result<Receipt, ChainError> {
        read_transaction_info(info, TXID, &address(USDT_HEX), &address(PLATFORM_HEX))
    }

    const ONE_USDT: &str = "00000000000000000000000000000000000000000000000000000000000f4240";

    #[test]
    fn the_transfer_topic_is_keccak_of_the_event_signature() {
        use sha3::{Digest, Keccak256};
        let hash: [u8; 32] = Keccak256::digest(b"Transfer(address,address,uint256)").into();
        assert_eq!(hash, TRANSFER_TOPIC);
        assert_eq!(hex::encode(TRANSFER_TOPIC), TRANSFER_HEX);
    }

    #[test]
    fn a_log_address_with_the_41_prefix_or_in_base58_is_the_same_contract() {
        for emitter in [
            USDT_HEX.to_owned(),
            format!("41{USDT_HEX}"),
            format!("0x{USDT_HEX}"),
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".to_owned(),
        ] {
            let receipt = read(info(transfer_log(&emitter, ONE_USDT))).unwrap();
            let Receipt::Succeeded { transfers, .. } = receipt else {
                panic!("{emitter}: {receipt:?}");
            };
            assert_eq!(transfers.len(), 1, "{emitter}");
            assert_eq!(transfers[0].value, 1_000_000);
            assert_eq!(transfers[0].to, "TJwFZdXrRpjctpvyZzHCRzRAz3E9CxVHbW");
            assert_eq!(transfers[0].from, "TPaa2tSXpUCvDA9GQr1wZMegMBKXXXcwhd");
        }
    }

    #[test]
    fn a_value_above_u128_is_a_bad_response() {
        let data = "0000000000000000000000000000000100000000000000000000000000000000";
        let err = read(info(transfer_log(USDT_HEX, data))).unwrap_err();
        assert!(matches!(err, ChainError::BadResponse { .. }), "{err:?}");
    }

    #[test]
    fn the_largest_u128_value_is_read_exactly() {
        let data = "00000000000000000000000000000000ffffffffffffffffffffffffffffffff";
        let Receipt::Succeeded { transfers, .. } =
            read(info(transfer_log(USDT_HEX, data))).unwrap()
        else {
            panic!("not a success");
        };
        assert_eq!(transfers[0].value, u128::MAX);
    }

    #[test]
    fn an_address_topic_with_non_zero_padding_is_a_bad_response() {
        let mut log = transfer_log(USDT_HEX, ONE_USDT);
        log["topics"][2] = json!(format!("000000000000000000000001{PLATFORM_HEX}"));
        assert!(matches!(
            read(info(log)),
            Err(ChainError::BadResponse { .. })
        ));
    }

    #[test]
    fn a_token_transfer_log_without_both_address_topics_is_a_bad_response() {
        let mut log = transfer_log(USDT_HEX, ONE_USDT);
        log["topics"] = json!([TRANSFER_HEX, topic(PAYER_HEX)]);
        assert!(matches!(
            read(info(log)),
            Err(ChainError::BadResponse { .. })
        ));
    }

    #[test]
    fn other_events_of_the_token_are_ignored() {
        let approval = json!({
            "address": USDT_HEX,
            "topics": [
                "8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925",
                topic(PAYER_HEX),
                topic(PLATFORM_HEX),
            ],
            "data": ONE_USDT,
        });
        assert_eq!(
            read(info(approval)).unwrap(),
            Receipt::Succeeded {
                block: 100,
                transfers: vec![]
            }
        );
    }

    #[test]
    fn out_of_energy_is_a_failure_even_without_the_top_level_result() {
        let mut map = info(transfer_log(USDT_HEX, ONE_USDT));
        map.insert("receipt".into(), json!({ "result": "OUT_OF_ENERGY" }));
        assert_eq!(read(map).unwrap(), Receipt::Failed { block: 100 });
    }

    #[test]
    fn a_top_level_failed_result_is_a_failure_whatever_the_receipt_says() {
        let mut map = info(transfer_log(USDT_HEX, ONE_USDT));
        map.insert("result".into(), json!("FAILED"));
        assert_eq!(read(map).unwrap(), Receipt::Failed { block: 100 });
    }

    #[test]
    fn a_transaction_that_calls_no_contract_succeeds_with_no_transfers() {
        let Value::Object(map) = json!({
            "id": TXID,
            "fee": 1_100_000,
            "blockNumber": 100,
            "blockTimeStamp": 1_767_100_200_000_u64,
            "receipt": { "net_fee": 100_000 },
        }) else {
            unreachable!()
        };
        assert_eq!(
            read(map).unwrap(),
            Receipt::Succeeded {
                block: 100,
                transfers: vec![]
            }
        );
    }

    #[test]
    fn an_answer_about_another_transaction_is_a_bad_response() {
        let mut map = info(transfer_log(USDT_HEX, ONE_USDT));
        map.insert("id".into(), json!("00".repeat(32)));
        assert!(matches!(read(map), Err(ChainError::BadResponse { .. })));
    }

    #[test]
    fn an_answer_without_a_block_number_is_a_bad_response() {
        let mut map = info(transfer_log(USDT_HEX, ONE_USDT));
        map.remove("blockNumber");
        assert!(matches!(read(map), Err(ChainError::BadResponse { .. })));
    }

    #[test]
    fn a_head_block_without_a_number_is_a_bad_response() {
        let block = json!({ "blockID": "00", "block_header": { "raw_data": {} } });
        assert!(matches!(
            now_block_number(block),
            Err(ChainError::BadResponse { .. })
        ));
    }

    #[test]
    fn tx_hashes_are_accepted_with_or_without_0x_and_in_any_case() {
        let upper = TXID.to_ascii_uppercase();
        for hash in [
            TXID.to_owned(),
            format!("0x{TXID}"),
            upper.clone(),
            format!("0X{upper}"),
        ] {
            assert_eq!(normalize_tx_hash(&hash).unwrap(), TXID);
        }
        for bad in [
            "",
            "0x",
            &TXID[1..],
            &format!("{TXID}0"),
            &format!("{}g", &TXID[1..]),
        ] {
            assert!(
                matches!(normalize_tx_hash(bad), Err(ChainError::MalformedTxHash(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_res_message_is_shown_as_text() {
        assert_eq!(
            hex_text("524556455254206f70636f6465206578656375746564"),
            "REVERT opcode executed"
        );
        assert_eq!(hex_text("zz"), "zz");
    }
}
