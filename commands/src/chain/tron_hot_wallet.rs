//! The platform's Tron hot wallet ([`HotWallet`]): USDT (TRC-20) `transfer`s built by a full
//! node (`/wallet/triggersmartcontract`), checked here, signed locally with k256, broadcast with
//! `/wallet/broadcasttransaction`; status through `/wallet/gettransactioninfobyid` and
//! `/wallet/getnowblock`; balances through `/wallet/triggerconstantcontract` (`balanceOf`) and
//! `/wallet/getaccount` (TRX, which pays the energy a transfer burns).
//!
//! A Tron node, unlike an Ethereum one, *makes* the transaction we sign (it picks the reference
//! block and the expiration, and encodes the protobuf). So nothing it returns is signed before
//! it is read back: the txID must be sha256 of `raw_data_hex`, and `raw_data_hex` must decode
//! to exactly one `TriggerSmartContract` from the hot wallet to the USDT contract, no TRX or
//! TRC-10 value, with exactly the `transfer(to, amount)` data we asked for and our fee limit
//! ([`check_transfer`]). A node that lies gets nothing signed. The JSON `raw_data` it returned
//! is what `broadcasttransaction` reads; a JSON that differs from the protobuf would make a
//! transaction whose txID our signature does not cover, which every node refuses.
//!
//! The key is a secret setting (`AIFORGE_TRON_HOT_WALLET_KEY`): it lives only in the signer,
//! is never logged ([`fmt::Debug`] is written out without it), never in an event (events hold
//! the signed transaction, which reveals only the address). Addresses go to the node in hex
//! (`visible: false`), as the verifier (`tron.rs`) reads them.

use std::fmt;

use aiforge_domain::payout::SignedTransfer;
use aiforge_domain::wallet::Network;
use k256::ecdsa::SigningKey;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::tron::{
    bad_response, hex_text, normalize_tx_hash, read_transaction_info, Receipt, TronConfig,
    TronConfigError, TronVerifier,
};
use super::ChainError;
use crate::payouts::{HotWallet, HotWalletBalances, SentStatus};
use crate::wallet_crypto::{address_of_key, parse_tron_address, tron_address};

/// Default most TRX (in sun) one transfer may burn for energy and bandwidth: a USDT transfer
/// burns about 14 TRX to a holder and 28 TRX to a new address at 210 sun per energy; 100 TRX
/// leaves room for a rise in the energy price (what is not used is not burnt).
pub const DEFAULT_FEE_LIMIT_SUN: u64 = 100_000_000;
/// `transfer(address,uint256)`'s selector: keccak256 of the signature, first 4 bytes.
const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
const TRANSFER_SIGNATURE: &str = "transfer(address,uint256)";
const BALANCE_OF_SIGNATURE: &str = "balanceOf(address)";
/// `ContractType.TriggerSmartContract` in java-tron's `Tron.proto`.
const TRIGGER_SMART_CONTRACT_TYPE: u64 = 31;
const TRIGGER_SMART_CONTRACT_URL: &str = "type.googleapis.com/protocol.TriggerSmartContract";
const TRON_ADDRESS_VERSION: u8 = 0x41;
/// java-tron refuses an expiration further than this past the transaction's timestamp.
const EXPIRATION_MAX_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum TronHotWalletConfigError {
    #[error("AIFORGE_TRON_HOT_WALLET_KEY is not a 32-byte hex private key")]
    InvalidKey,
    #[error("AIFORGE_TRON_FEE_LIMIT_SUN must be more than zero")]
    ZeroFeeLimit,
    #[error(transparent)]
    Node(#[from] TronConfigError),
}

pub struct TronHotWallet {
    /// The node, reached as the payment verifier reaches it (timeouts, size limit, API key).
    node: TronVerifier,
    key: SigningKey,
    /// The hot wallet's 20 address bytes (without `0x41`).
    address: [u8; 20],
    token: [u8; 20],
    fee_limit_sun: u64,
    confirmations: u64,
}

impl fmt::Debug for TronHotWallet {
    // Written out: the key is never printed (the API URL and key live in `node`, whose Debug
    // does not print them either, but they are left out here too).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TronHotWallet")
            .field("address", &tron_address(&self.address))
            .field("token", &tron_address(&self.token))
            .field("fee_limit_sun", &self.fee_limit_sun)
            .finish_non_exhaustive()
    }
}

fn hex41(address: &[u8; 20]) -> String {
    format!("41{}", hex::encode(address))
}

/// The ABI words of `transfer(to, amount)` / `balanceOf(owner)`: an address is its 20 bytes
/// left-padded to 32 (no `0x41`), an amount a big-endian uint256.
fn address_word(address: &[u8; 20]) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(address);
    word
}

fn amount_word(micros: u64) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[24..].copy_from_slice(&micros.to_be_bytes());
    word
}

/// The call data of `transfer(to, micros)`: selector, then both words.
pub fn transfer_data(to: &[u8; 20], micros: u64) -> Vec<u8> {
    let mut data = TRANSFER_SELECTOR.to_vec();
    data.extend_from_slice(&address_word(to));
    data.extend_from_slice(&amount_word(micros));
    data
}

impl TronHotWallet {
    /// `config.platform_wallet` is not used (the hot wallet is the key's address).
    pub fn new(
        config: TronConfig,
        key: &SecretString,
        fee_limit_sun: u64,
    ) -> Result<Self, TronHotWalletConfigError> {
        let bytes = hex::decode(key.expose_secret().trim().trim_start_matches("0x"))
            .map_err(|_| TronHotWalletConfigError::InvalidKey)?;
        let key =
            SigningKey::from_slice(&bytes).map_err(|_| TronHotWalletConfigError::InvalidKey)?;
        if fee_limit_sun == 0 {
            return Err(TronHotWalletConfigError::ZeroFeeLimit);
        }
        let address = address_of_key(key.verifying_key());
        let token = parse_tron_address(&config.token_contract).map_err(|source| {
            TronConfigError::InvalidAddress {
                field: "token_contract",
                source,
            }
        })?;
        let confirmations = config.confirmations_min;
        let node = TronVerifier::new(TronConfig {
            platform_wallet: tron_address(&address),
            ..config
        })?;
        Ok(Self {
            node,
            key,
            address,
            token,
            fee_limit_sun,
            confirmations,
        })
    }

    /// The node's answer to a contract call: `result.result` true, else its code and message.
    fn call_result(path: &str, answer: &Map<String, Value>) -> Result<(), ChainError> {
        let result = answer.get("result").and_then(Value::as_object);
        if result
            .and_then(|r| r.get("result"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Ok(());
        }
        let code = result
            .and_then(|r| r.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("no result");
        let message = result
            .and_then(|r| r.get("message"))
            .and_then(Value::as_str)
            .map(hex_text)
            .unwrap_or_default();
        Err(bad_response(format!("{path}: {code} {message}")))
    }
}

/// What the node's transaction must be: ours, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTransfer {
    pub owner: [u8; 20],
    pub token: [u8; 20],
    pub data: Vec<u8>,
    pub fee_limit_sun: u64,
}

/// What is read out of a checked transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTransfer {
    pub txid: [u8; 32],
    /// Milliseconds since the epoch.
    pub expiration_ms: i64,
}

/// Checks a transaction a node built for `expected` (module docs): txID, protobuf, and the
/// JSON `raw_data` against the protobuf.
pub fn check_transfer(
    transaction: &Map<String, Value>,
    expected: &ExpectedTransfer,
) -> Result<CheckedTransfer, String> {
    let txid_hex = transaction
        .get("txID")
        .and_then(Value::as_str)
        .ok_or("no txID")?;
    let raw_hex = transaction
        .get("raw_data_hex")
        .and_then(Value::as_str)
        .ok_or("no raw_data_hex")?;
    let raw = hex::decode(raw_hex).map_err(|_| "raw_data_hex is not hex")?;
    let txid: [u8; 32] = Sha256::digest(&raw).into();
    if !hex::encode(txid).eq_ignore_ascii_case(txid_hex) {
        return Err(format!(
            "txID {txid_hex} is not sha256 of raw_data_hex ({})",
            hex::encode(txid)
        ));
    }
    let decoded = protobuf::read_raw(&raw)?;
    if decoded.owner != expected.owner {
        return Err("the transaction is not from the hot wallet".into());
    }
    if decoded.contract != expected.token {
        return Err("the transaction calls another contract than the token".into());
    }
    if decoded.data != expected.data {
        return Err("the call data is not the transfer asked for".into());
    }
    if decoded.fee_limit != expected.fee_limit_sun {
        return Err(format!(
            "fee_limit {} is not the {} asked for",
            decoded.fee_limit, expected.fee_limit_sun
        ));
    }
    let created = decoded.timestamp.unwrap_or(0);
    if decoded.expiration <= created
        || (created > 0 && decoded.expiration > created.saturating_add(EXPIRATION_MAX_MS))
    {
        return Err(format!("expiration {} is not valid", decoded.expiration));
    }
    // The JSON is what broadcasttransaction reads: it must say what the protobuf says.
    let json = transaction
        .get("raw_data")
        .and_then(Value::as_object)
        .ok_or("no raw_data")?;
    let number = |key: &str| json.get(key).and_then(Value::as_i64);
    let text = |key: &str| json.get(key).and_then(Value::as_str).unwrap_or_default();
    if number("expiration") != Some(decoded.expiration)
        || number("timestamp") != decoded.timestamp
        || number("fee_limit") != i64::try_from(decoded.fee_limit).ok()
        || !text("ref_block_bytes").eq_ignore_ascii_case(&hex::encode(&decoded.ref_block_bytes))
        || !text("ref_block_hash").eq_ignore_ascii_case(&hex::encode(&decoded.ref_block_hash))
    {
        return Err("raw_data differs from raw_data_hex".into());
    }
    let contracts = json
        .get("contract")
        .and_then(Value::as_array)
        .ok_or("raw_data without contract")?;
    let [contract] = contracts.as_slice() else {
        return Err("raw_data has more than one contract".into());
    };
    let value = &contract["parameter"]["value"];
    let field = |key: &str| value[key].as_str().unwrap_or_default();
    if contract["type"] != "TriggerSmartContract"
        || !field("owner_address").eq_ignore_ascii_case(&hex41(&expected.owner))
        || !field("contract_address").eq_ignore_ascii_case(&hex41(&expected.token))
        || !field("data").eq_ignore_ascii_case(&hex::encode(&expected.data))
        || value.get("call_value").and_then(Value::as_i64).unwrap_or(0) != 0
    {
        return Err("raw_data's contract differs from raw_data_hex".into());
    }
    Ok(CheckedTransfer {
        txid,
        expiration_ms: decoded.expiration,
    })
}

/// A 65-byte `r || s || v` signature of a txID, `v` = 27 + the recovery id, as TronWeb signs.
pub fn sign_txid(key: &SigningKey, txid: &[u8; 32]) -> Result<[u8; 65], ChainError> {
    let (signature, recovery) = key
        .sign_prehash_recoverable(txid)
        .map_err(|e| bad_response(format!("cannot sign: {e}")))?;
    let mut out = [0u8; 65];
    out[..64].copy_from_slice(&signature.to_bytes());
    out[64] = 27 + recovery.to_byte();
    Ok(out)
}

/// A minimal reader of the protobuf java-tron signs (`Transaction.raw` of `Tron.proto`): only
/// the fields a USDT transfer has are accepted; anything else (a second contract, a memo,
/// scripts, another permission) is refused rather than skipped, since it would be signed too.
mod protobuf {
    pub struct Decoded {
        pub ref_block_bytes: Vec<u8>,
        pub ref_block_hash: Vec<u8>,
        pub expiration: i64,
        pub timestamp: Option<i64>,
        pub fee_limit: u64,
        pub owner: [u8; 20],
        pub contract: [u8; 20],
        pub data: Vec<u8>,
    }

    enum Wire<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    fn varint(buf: &[u8], at: &mut usize) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *buf.get(*at).ok_or("truncated varint")?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// The fields of one message, in order (repeated fields appear as often as they are sent).
    fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let key = varint(buf, &mut at)?;
            let (number, wire) = (key >> 3, key & 7);
            let value = match wire {
                0 => Wire::Varint(varint(buf, &mut at)?),
                2 => {
                    let len =
                        usize::try_from(varint(buf, &mut at)?).map_err(|_| "length too large")?;
                    let end = at.checked_add(len).ok_or("length too large")?;
                    let bytes = buf.get(at..end).ok_or("truncated field")?;
                    at = end;
                    Wire::Bytes(bytes)
                }
                other => return Err(format!("field {number}: wire type {other} not expected")),
            };
            out.push((number, value));
        }
        Ok(out)
    }

    fn address(bytes: &[u8], what: &str) -> Result<[u8; 20], String> {
        match bytes {
            [super::TRON_ADDRESS_VERSION, body @ ..] => body
                .try_into()
                .map_err(|_| format!("{what} is not 21 bytes")),
            _ => Err(format!("{what} is not a 0x41 address")),
        }
    }

    fn int(value: u64, what: &str) -> Result<i64, String> {
        i64::try_from(value).map_err(|_| format!("{what} is negative"))
    }

    pub fn read_raw(raw: &[u8]) -> Result<Decoded, String> {
        let mut ref_block_bytes = Vec::new();
        let mut ref_block_hash = Vec::new();
        let mut expiration = None;
        let mut timestamp = None;
        let mut fee_limit = None;
        let mut contract = None;
        for (number, value) in fields(raw)? {
            match (number, value) {
                (1, Wire::Bytes(b)) => ref_block_bytes = b.to_vec(),
                (3, Wire::Varint(_)) => {} // ref_block_num: unused by java-tron's TaPoS check
                (4, Wire::Bytes(b)) => ref_block_hash = b.to_vec(),
                (8, Wire::Varint(v)) => expiration = Some(int(v, "expiration")?),
                (11, Wire::Bytes(b)) => {
                    if contract.replace(b).is_some() {
                        return Err("more than one contract".into());
                    }
                }
                (14, Wire::Varint(v)) => timestamp = Some(int(v, "timestamp")?),
                (18, Wire::Varint(v)) => fee_limit = Some(v),
                (number, _) => return Err(format!("raw field {number} not expected")),
            }
        }
        let contract = contract.ok_or("no contract")?;
        let mut kind = None;
        let mut parameter = None;
        for (number, value) in fields(contract)? {
            match (number, value) {
                (1, Wire::Varint(v)) => kind = Some(v),
                (2, Wire::Bytes(b)) => parameter = Some(b),
                // Permission_id 0 is the owner permission (the default, left out).
                (5, Wire::Varint(0)) => {}
                (number, _) => return Err(format!("contract field {number} not expected")),
            }
        }
        if kind != Some(super::TRIGGER_SMART_CONTRACT_TYPE) {
            return Err("the contract is not a TriggerSmartContract".into());
        }
        let mut type_url = None;
        let mut value = None;
        for (number, field) in fields(parameter.ok_or("contract without parameter")?)? {
            match (number, field) {
                (1, Wire::Bytes(b)) => type_url = Some(b),
                (2, Wire::Bytes(b)) => value = Some(b),
                (number, _) => return Err(format!("parameter field {number} not expected")),
            }
        }
        if type_url != Some(super::TRIGGER_SMART_CONTRACT_URL.as_bytes()) {
            return Err("the parameter is not a TriggerSmartContract".into());
        }
        let mut owner = None;
        let mut called = None;
        let mut data = Vec::new();
        for (number, field) in fields(value.ok_or("parameter without value")?)? {
            match (number, field) {
                (1, Wire::Bytes(b)) => owner = Some(address(b, "owner_address")?),
                (2, Wire::Bytes(b)) => called = Some(address(b, "contract_address")?),
                (4, Wire::Bytes(b)) => data = b.to_vec(),
                // call_value, call_token_value, token_id: zero is left out by the encoder
                (3 | 5 | 6, Wire::Varint(0)) => {}
                (3, _) => return Err("the call sends TRX".into()),
                (5 | 6, _) => return Err("the call sends a TRC-10 token".into()),
                (number, _) => return Err(format!("trigger field {number} not expected")),
            }
        }
        Ok(Decoded {
            ref_block_bytes,
            ref_block_hash,
            expiration: expiration.ok_or("no expiration")?,
            timestamp,
            fee_limit: fee_limit.ok_or("no fee_limit")?,
            owner: owner.ok_or("no owner_address")?,
            contract: called.ok_or("no contract_address")?,
            data,
        })
    }
}

#[async_trait::async_trait]
impl HotWallet for TronHotWallet {
    fn network(&self) -> Network {
        Network::Tron
    }

    fn address(&self) -> String {
        tron_address(&self.address)
    }

    fn confirmations(&self) -> u64 {
        self.confirmations
    }

    #[tracing::instrument(skip(self), fields(network = "tron"))]
    async fn balances(&self) -> Result<HotWalletBalances, ChainError> {
        let path = "/wallet/triggerconstantcontract";
        let answer = self
            .node
            .post(
                path,
                &json!({
                    "owner_address": hex41(&self.address),
                    "contract_address": hex41(&self.token),
                    "function_selector": BALANCE_OF_SIGNATURE,
                    "parameter": hex::encode(address_word(&self.address)),
                    "visible": false,
                }),
            )
            .await?;
        Self::call_result(path, &answer)?;
        let word = answer
            .get("constant_result")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
            .and_then(Value::as_str)
            .ok_or_else(|| bad_response(format!("{path}: no constant_result")))?;
        let word = hex::decode(word)
            .ok()
            .filter(|w| w.len() == 32)
            .ok_or_else(|| bad_response(format!("{path}: constant_result is not 32 bytes")))?;
        if word[..16].iter().any(|&b| b != 0) {
            return Err(bad_response(format!("{path}: balance above 128 bits")));
        }
        let mut low = [0u8; 16];
        low.copy_from_slice(&word[16..]);
        let usdt_micros = u128::from_be_bytes(low);
        // An account never activated is `{}`: no TRX.
        let account = self
            .node
            .post(
                "/wallet/getaccount",
                &json!({ "address": hex41(&self.address), "visible": false }),
            )
            .await?;
        let sun = account.get("balance").map_or(Ok(0), |b| {
            b.as_u64()
                .ok_or_else(|| bad_response("/wallet/getaccount: balance is not a number"))
        })?;
        Ok(HotWalletBalances {
            usdt_micros,
            gas: format!("{sun} sun"),
            // The fee limit is the most one transfer can burn: a floor, never an overcount.
            transfers_gas_pays: sun / self.fee_limit_sun,
        })
    }

    async fn pending_nonce(&self) -> Result<Option<u64>, ChainError> {
        Ok(None)
    }

    async fn mined_nonce(&self) -> Result<Option<u64>, ChainError> {
        Ok(None)
    }

    #[tracing::instrument(skip(self), fields(network = "tron"))]
    async fn sign_transfer(
        &self,
        to: &str,
        micros: u64,
        _nonce: Option<u64>,
    ) -> Result<SignedTransfer, ChainError> {
        let to = parse_tron_address(to).map_err(|e| bad_response(format!("payee address: {e}")))?;
        if micros == 0 {
            return Err(bad_response("a transfer of nothing"));
        }
        let path = "/wallet/triggersmartcontract";
        let answer = self
            .node
            .post(
                path,
                &json!({
                    "owner_address": hex41(&self.address),
                    "contract_address": hex41(&self.token),
                    "function_selector": TRANSFER_SIGNATURE,
                    "parameter": hex::encode([address_word(&to), amount_word(micros)].concat()),
                    "fee_limit": self.fee_limit_sun,
                    "call_value": 0,
                    "visible": false,
                }),
            )
            .await?;
        Self::call_result(path, &answer)?;
        let Some(Value::Object(mut transaction)) = answer.get("transaction").cloned() else {
            return Err(bad_response(format!("{path}: no transaction")));
        };
        let expected = ExpectedTransfer {
            owner: self.address,
            token: self.token,
            data: transfer_data(&to, micros),
            fee_limit_sun: self.fee_limit_sun,
        };
        let checked = check_transfer(&transaction, &expected)
            .map_err(|reason| bad_response(format!("{path}: refused to sign: {reason}")))?;
        let signature = sign_txid(&self.key, &checked.txid)?;
        transaction.insert("signature".into(), json!([hex::encode(signature)]));
        let expires_at = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(checked.expiration_ms) * 1_000_000,
        )
        .map_err(|_| bad_response(format!("{path}: expiration out of range")))?;
        Ok(SignedTransfer {
            hash: hex::encode(checked.txid),
            raw: Value::Object(transaction).to_string(),
            nonce: None,
            expires_at: Some(expires_at),
        })
    }

    #[tracing::instrument(skip_all, fields(network = "tron", txid = %transfer.hash))]
    async fn broadcast(&self, transfer: &SignedTransfer) -> Result<(), ChainError> {
        let path = "/wallet/broadcasttransaction";
        let transaction: Value = serde_json::from_str(&transfer.raw)
            .map_err(|e| bad_response(format!("the recorded transaction is not JSON: {e}")))?;
        let answer = self.node.post(path, &transaction).await?;
        if answer.get("result").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let code = answer
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("no result");
        let message = answer
            .get("message")
            .and_then(Value::as_str)
            .map(hex_text)
            .unwrap_or_default();
        match code {
            // The node has it already (pending or in a block): what a rebroadcast hopes for.
            "DUP_TRANSACTION_ERROR" => Ok(()),
            "SERVER_BUSY" | "NO_CONNECTION" | "NOT_ENOUGH_EFFECTIVE_CONNECTION" => Err(
                super::tron::unavailable(format!("{path}: {code} {message}")),
            ),
            _ => Err(bad_response(format!("{path}: {code} {message}"))),
        }
    }

    #[tracing::instrument(skip(self), fields(network = "tron"))]
    async fn status(&self, hash: &str) -> Result<SentStatus, ChainError> {
        let txid = normalize_tx_hash(hash)?;
        let info = self
            .node
            .post(
                "/wallet/gettransactioninfobyid",
                &json!({ "value": txid, "visible": false }),
            )
            .await?;
        match read_transaction_info(info.clone(), &txid, &self.token, &self.address)? {
            Receipt::NotFound => Ok(SentStatus::NotMined),
            Receipt::Failed { block } => {
                // The contract's outcome (REVERT, OUT_OF_ENERGY, …) and the node's text of it.
                let result = info
                    .get("receipt")
                    .and_then(|r| r.get("result"))
                    .and_then(Value::as_str)
                    .unwrap_or("FAILED");
                let message = info
                    .get("resMessage")
                    .and_then(Value::as_str)
                    .map(hex_text)
                    .unwrap_or_default();
                Ok(SentStatus::Reverted {
                    block,
                    detail: format!("{result} in block {block}: {message}")
                        .trim_end_matches([' ', ':'])
                        .to_string(),
                })
            }
            Receipt::Succeeded { block, .. } => {
                let now = self.node.now_block().await?;
                Ok(SentStatus::Succeeded {
                    block,
                    confirmations: now.checked_sub(block).map_or(0, |d| d.saturating_add(1)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};

    // The test-only key of fixtures/tron/README.md ("aiforge fixtures: tron platform wallet").
    const KEY: &str = "838b1330509ee2aa2f473062691ec89c14c7578d2383b077213c5c5abe2d9ea8";
    const ADDRESS: &str = "TJwFZdXrRpjctpvyZzHCRzRAz3E9CxVHbW";
    const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
    const PAYEE: &str = "TPaa2tSXpUCvDA9GQr1wZMegMBKXXXcwhd";

    fn key() -> SigningKey {
        SigningKey::from_slice(&hex::decode(KEY).unwrap()).unwrap()
    }

    fn wallet() -> TronHotWallet {
        TronHotWallet::new(
            TronConfig::new("http://127.0.0.1:9", USDT, ADDRESS),
            &SecretString::from(KEY.to_string()),
            DEFAULT_FEE_LIMIT_SUN,
        )
        .unwrap()
    }

    // A protobuf writer for the tests: the node's encoder, field by field.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn int_field(number: u64, v: u64, out: &mut Vec<u8>) {
        varint(number << 3, out);
        varint(v, out);
    }

    fn bytes_field(number: u64, b: &[u8], out: &mut Vec<u8>) {
        varint((number << 3) | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    struct Tx {
        owner: [u8; 20],
        token: [u8; 20],
        data: Vec<u8>,
        call_value: u64,
        fee_limit: u64,
        expiration: u64,
        memo: Option<Vec<u8>>,
        contracts: usize,
    }

    fn good() -> Tx {
        Tx {
            owner: parse_tron_address(ADDRESS).unwrap(),
            token: parse_tron_address(USDT).unwrap(),
            data: transfer_data(&parse_tron_address(PAYEE).unwrap(), 90_000_000),
            call_value: 0,
            fee_limit: DEFAULT_FEE_LIMIT_SUN,
            expiration: 1_790_000_060_000,
            memo: None,
            contracts: 1,
        }
    }

    /// The node's answer for `tx`: txID, raw_data_hex and the JSON raw_data.
    fn node_answer(tx: &Tx) -> Map<String, Value> {
        let mut trigger = Vec::new();
        bytes_field(1, &[&[0x41][..], &tx.owner].concat(), &mut trigger);
        bytes_field(2, &[&[0x41][..], &tx.token].concat(), &mut trigger);
        if tx.call_value != 0 {
            int_field(3, tx.call_value, &mut trigger);
        }
        bytes_field(4, &tx.data, &mut trigger);
        let mut any = Vec::new();
        bytes_field(1, TRIGGER_SMART_CONTRACT_URL.as_bytes(), &mut any);
        bytes_field(2, &trigger, &mut any);
        let mut contract = Vec::new();
        int_field(1, TRIGGER_SMART_CONTRACT_TYPE, &mut contract);
        bytes_field(2, &any, &mut contract);
        let mut raw = Vec::new();
        bytes_field(1, &[0x12, 0x34], &mut raw);
        bytes_field(4, &[0xab; 8], &mut raw);
        int_field(8, tx.expiration, &mut raw);
        if let Some(memo) = &tx.memo {
            bytes_field(10, memo, &mut raw);
        }
        for _ in 0..tx.contracts {
            bytes_field(11, &contract, &mut raw);
        }
        int_field(14, 1_790_000_000_000, &mut raw);
        int_field(18, tx.fee_limit, &mut raw);
        let txid = hex::encode(Sha256::digest(&raw));
        let Value::Object(map) = json!({
            "visible": false,
            "txID": txid,
            "raw_data": {
                "contract": [{
                    "parameter": {
                        "value": {
                            "data": hex::encode(&tx.data),
                            "owner_address": hex41(&tx.owner),
                            "contract_address": hex41(&tx.token),
                        },
                        "type_url": TRIGGER_SMART_CONTRACT_URL,
                    },
                    "type": "TriggerSmartContract",
                }],
                "ref_block_bytes": "1234",
                "ref_block_hash": "abababababababab",
                "expiration": tx.expiration,
                "fee_limit": tx.fee_limit,
                "timestamp": 1_790_000_000_000_u64,
            },
            "raw_data_hex": hex::encode(&raw),
        }) else {
            unreachable!()
        };
        map
    }

    fn expected() -> ExpectedTransfer {
        let tx = good();
        ExpectedTransfer {
            owner: tx.owner,
            token: tx.token,
            data: tx.data,
            fee_limit_sun: DEFAULT_FEE_LIMIT_SUN,
        }
    }

    #[test]
    fn the_hot_wallet_is_the_keys_tron_address_and_its_debug_holds_no_key() {
        let wallet = wallet();
        assert_eq!(wallet.address(), ADDRESS);
        let printed = format!("{wallet:?}");
        assert!(printed.contains(ADDRESS), "{printed}");
        assert!(!printed.contains(KEY), "{printed}");
    }

    #[test]
    fn the_transfer_data_is_the_selector_then_the_payee_and_the_amount() {
        use sha3::{Digest as _, Keccak256};
        let selector = Keccak256::digest(TRANSFER_SIGNATURE.as_bytes());
        assert_eq!(selector[..4], TRANSFER_SELECTOR);
        let data = transfer_data(&parse_tron_address(PAYEE).unwrap(), 90_000_000);
        assert_eq!(
            hex::encode(&data),
            "a9059cbb0000000000000000000000009549c005cd2c7a6130dc14e25f809037d995dbc1\
             00000000000000000000000000000000000000000000000000000000055d4a80"
        );
    }

    #[test]
    fn the_transfer_asked_for_passes_the_check() {
        let checked = check_transfer(&node_answer(&good()), &expected()).unwrap();
        assert_eq!(checked.expiration_ms, 1_790_000_060_000);
    }

    #[test]
    fn a_node_that_changes_anything_gets_nothing_signed() {
        let other = parse_tron_address(PAYEE).unwrap();
        let mut cases: Vec<(&str, Tx)> = Vec::new();
        let mut tx = good();
        tx.data = transfer_data(&other, 90_000_001);
        cases.push(("another amount", tx));
        let mut tx = good();
        tx.data = transfer_data(&parse_tron_address(USDT).unwrap(), 90_000_000);
        cases.push(("another payee", tx));
        let mut tx = good();
        tx.owner = other;
        cases.push(("another owner", tx));
        let mut tx = good();
        tx.token = other;
        cases.push(("another contract", tx));
        let mut tx = good();
        tx.call_value = 1;
        cases.push(("TRX sent along", tx));
        let mut tx = good();
        tx.fee_limit = 1_000_000_000;
        cases.push(("another fee limit", tx));
        let mut tx = good();
        tx.memo = Some(b"hi".to_vec());
        cases.push(("a memo", tx));
        let mut tx = good();
        tx.contracts = 2;
        cases.push(("two contracts", tx));
        let mut tx = good();
        tx.expiration = 1_790_000_000_000 + 2 * EXPIRATION_MAX_MS as u64;
        cases.push(("an expiration past java-tron's maximum", tx));
        for (what, tx) in cases {
            assert!(
                check_transfer(&node_answer(&tx), &expected()).is_err(),
                "{what}"
            );
        }
    }

    #[test]
    fn a_txid_that_is_not_the_hash_of_the_raw_data_is_refused() {
        let mut answer = node_answer(&good());
        answer.insert("txID".into(), json!("00".repeat(32)));
        let err = check_transfer(&answer, &expected()).unwrap_err();
        assert!(err.contains("sha256"), "{err}");
    }

    #[test]
    fn a_json_raw_data_that_differs_from_the_protobuf_is_refused() {
        let mut answer = node_answer(&good());
        answer["raw_data"]["contract"][0]["parameter"]["value"]["data"] =
            json!(hex::encode(transfer_data(&[7; 20], 1)));
        assert!(check_transfer(&answer, &expected()).is_err());
        let mut answer = node_answer(&good());
        answer["raw_data"]["expiration"] = json!(1_790_000_090_000_u64);
        assert!(check_transfer(&answer, &expected()).is_err());
    }

    #[test]
    fn the_signature_recovers_to_the_hot_wallets_address() {
        let txid: [u8; 32] = Sha256::digest(b"a transaction").into();
        let signature = sign_txid(&key(), &txid).unwrap();
        assert!(matches!(signature[64], 27 | 28));
        let recovered = VerifyingKey::recover_from_prehash(
            &txid,
            &Signature::from_slice(&signature[..64]).unwrap(),
            RecoveryId::from_byte(signature[64] - 27).unwrap(),
        )
        .unwrap();
        assert_eq!(tron_address(&address_of_key(&recovered)), ADDRESS);
        // Another txID does not recover to it.
        let other: [u8; 32] = Sha256::digest(b"another transaction").into();
        let recovered = VerifyingKey::recover_from_prehash(
            &other,
            &Signature::from_slice(&signature[..64]).unwrap(),
            RecoveryId::from_byte(signature[64] - 27).unwrap(),
        )
        .unwrap();
        assert_ne!(tron_address(&address_of_key(&recovered)), ADDRESS);
    }
}
