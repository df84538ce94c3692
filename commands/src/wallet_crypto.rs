//! Wallet sign-in cryptography: parsing and canonicalizing Ethereum (EIP-55) and Tron
//! (base58check `T...`) addresses, and recovering the signer of a wallet-signed message
//! (Ethereum EIP-191 `personal_sign`, TronLink `signMessageV2`). Everything here is a pure
//! function over bytes and text, so the rules can be tested against vectors produced by real
//! wallet libraries (`fixtures/wallets/`).
//!
//! What must not live here: reading or checking the *content* of the signed message (domain,
//! nonce, expiry: that is the sign-in message check, which needs a clock and the nonce store),
//! HTTP status mapping (only `api/` decides statuses; [`WalletError::is_malformed_input`] just
//! says which class an error belongs to), and any IO.

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

/// Wallets sign a short human-readable text (an EIP-4361 message is a few hundred bytes); a
/// bound keeps a hostile client from making us hash megabytes per request.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024;

/// `r || s || v`. Wallets (MetaMask `personal_sign`, ethers `signMessage`, TronLink
/// `signMessageV2`) produce 65 bytes.
const SIGNATURE_LEN_BYTES: usize = 65;
const ADDRESS_LEN_BYTES: usize = 20;
/// Every base58check encoding of `0x41 || 20 bytes || 4-byte checksum` is exactly 34 characters,
/// so anything else is rejected before decoding.
const TRON_ADDRESS_LEN_CHARS: usize = 34;
/// Tron's mainnet address version byte: the reason every address starts with `T`.
const TRON_ADDRESS_VERSION: u8 = 0x41;

const ETHEREUM_MESSAGE_PREFIX: &str = "\x19Ethereum Signed Message:\n";
const TRON_MESSAGE_PREFIX: &str = "\x19TRON Signed Message:\n";

/// The chains whose wallets can sign in. One type for the whole system: the domain owns it
/// (with its case-insensitive `FromStr`, `Display` and lowercase serde form), so a wallet parsed
/// here is the same value an aggregate stores.
pub use aiforge_domain::wallet::Network;

fn message_prefix(network: Network) -> &'static str {
    match network {
        Network::Ethereum => ETHEREUM_MESSAGE_PREFIX,
        Network::Tron => TRON_MESSAGE_PREFIX,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("malformed {network} address: {reason}")]
    MalformedAddress {
        network: Network,
        reason: &'static str,
    },
    /// The text has the right shape but its checksum (EIP-55 letter case, or base58check's
    /// 4 bytes) does not match: most likely a mistyped or corrupted address.
    #[error("{network} address checksum does not match")]
    BadChecksum { network: Network },
    #[error("malformed signature: {reason}")]
    MalformedSignature { reason: &'static str },
    #[error("signature is {len_bytes} bytes, expected 65 (r || s || v)")]
    BadSignatureLength { len_bytes: usize },
    #[error("signature recovery byte v={v} is not one of 0, 1, 27, 28")]
    BadRecoveryId { v: u8 },
    #[error("message is {len_bytes} bytes, more than the {max_bytes} allowed")]
    MessageTooLong { len_bytes: usize, max_bytes: usize },
    /// `s` in the upper half of the curve order. `(r, n - s)` verifies for the same key, so
    /// accepting both would give one login two valid signatures; wallets always emit low `s`.
    #[error("signature is not canonical (high s value)")]
    NonCanonicalSignature,
    /// Well formed, but no public key produced it over this message (`r` or `s` out of range,
    /// `r` not an x coordinate on the curve, or the recovered key does not verify).
    #[error("signature does not verify for any key")]
    InvalidSignature,
    #[error("message was signed by {recovered}, not by the claimed {claimed}")]
    SignerMismatch { claimed: String, recovered: String },
}

impl WalletError {
    /// True when the client sent something that is not a well-formed address, signature or
    /// message (the API answers 422); false when the input is well formed but does not prove
    /// ownership of the claimed address (the API answers 401).
    pub fn is_malformed_input(&self) -> bool {
        match self {
            WalletError::MalformedAddress { .. }
            | WalletError::BadChecksum { .. }
            | WalletError::MalformedSignature { .. }
            | WalletError::BadSignatureLength { .. }
            | WalletError::BadRecoveryId { .. }
            | WalletError::MessageTooLong { .. } => true,
            WalletError::NonCanonicalSignature
            | WalletError::InvalidSignature
            | WalletError::SignerMismatch { .. } => false,
        }
    }
}

fn keccak256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

// ---------------------------------------------------------------------------------------------
// Ethereum addresses
// ---------------------------------------------------------------------------------------------

fn malformed_eth(reason: &'static str) -> WalletError {
    WalletError::MalformedAddress {
        network: Network::Ethereum,
        reason,
    }
}

/// Parses `0x` + 40 hex digits. Mixed-case input must carry a valid EIP-55 checksum; single-case
/// input (all lower or all upper) carries none and is accepted as is, as EIP-55 prescribes.
pub fn parse_eth_address(s: &str) -> Result<[u8; ADDRESS_LEN_BYTES], WalletError> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| malformed_eth("must start with 0x"))?;
    if digits.len() != 2 * ADDRESS_LEN_BYTES {
        return Err(malformed_eth("must have 40 hex digits after 0x"));
    }
    let mut addr = [0u8; ADDRESS_LEN_BYTES];
    hex::decode_to_slice(digits, &mut addr).map_err(|_| malformed_eth("not hexadecimal"))?;

    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && eip55(&addr) != s {
        return Err(WalletError::BadChecksum {
            network: Network::Ethereum,
        });
    }
    Ok(addr)
}

/// The EIP-55 mixed-case checksummed form: a hex letter is upper case when the matching nibble of
/// keccak256(lowercase hex) is 8 or more.
pub fn eip55(addr: &[u8; ADDRESS_LEN_BYTES]) -> String {
    let lower = hex::encode(addr);
    let hash = keccak256(&[lower.as_bytes()]);
    let mut out = String::with_capacity(2 + lower.len());
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let byte = hash[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tron addresses
// ---------------------------------------------------------------------------------------------

fn malformed_tron(reason: &'static str) -> WalletError {
    WalletError::MalformedAddress {
        network: Network::Tron,
        reason,
    }
}

/// Parses a base58check `T...` address and returns the 20 bytes after the 0x41 version byte
/// (the same 20 bytes an Ethereum address would hold for the same key).
pub fn parse_tron_address(s: &str) -> Result<[u8; ADDRESS_LEN_BYTES], WalletError> {
    if s.len() != TRON_ADDRESS_LEN_CHARS {
        return Err(malformed_tron("must be 34 base58 characters"));
    }
    let decoded = bs58::decode(s)
        .with_check(Some(TRON_ADDRESS_VERSION))
        .into_vec()
        .map_err(|e| match e {
            bs58::decode::Error::InvalidChecksum { .. } => WalletError::BadChecksum {
                network: Network::Tron,
            },
            bs58::decode::Error::InvalidVersion { .. } => {
                malformed_tron("version byte is not 0x41 (must start with T)")
            }
            _ => malformed_tron("not base58"),
        })?;
    // `decoded` is the version byte followed by the payload; the checksum is already stripped.
    match decoded.as_slice() {
        [TRON_ADDRESS_VERSION, payload @ ..] => payload
            .try_into()
            .map_err(|_| malformed_tron("payload is not 20 bytes")),
        _ => Err(malformed_tron(
            "version byte is not 0x41 (must start with T)",
        )),
    }
}

/// The base58check text of `0x41 || addr`.
pub fn tron_address(addr: &[u8; ADDRESS_LEN_BYTES]) -> String {
    bs58::encode(addr)
        .with_check_version(TRON_ADDRESS_VERSION)
        .into_string()
}

/// The one canonical text of an address (EIP-55 for Ethereum, base58check for Tron), so an
/// account is found whatever case or form the client typed it in.
pub fn normalize_address(network: Network, s: &str) -> Result<String, WalletError> {
    let addr = parse_address(network, s)?;
    Ok(format_address(network, &addr))
}

fn parse_address(network: Network, s: &str) -> Result<[u8; ADDRESS_LEN_BYTES], WalletError> {
    match network {
        Network::Ethereum => parse_eth_address(s),
        Network::Tron => parse_tron_address(s),
    }
}

fn format_address(network: Network, addr: &[u8; ADDRESS_LEN_BYTES]) -> String {
    match network {
        Network::Ethereum => eip55(addr),
        Network::Tron => tron_address(addr),
    }
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

/// keccak256(prefix || decimal byte length of message || message): EIP-191 version 0x45 for
/// Ethereum, and TronLink's copy of it with "TRON" in the prefix.
fn signed_message_hash(network: Network, message: &str) -> [u8; 32] {
    let header = format!("{}{}", message_prefix(network), message.len());
    keccak256(&[header.as_bytes(), message.as_bytes()])
}

/// Decodes `0x` + 130 hex digits into a low-s signature and its recovery id.
fn parse_signature(signature: &str) -> Result<(Signature, RecoveryId), WalletError> {
    let digits = signature
        .strip_prefix("0x")
        .ok_or(WalletError::MalformedSignature {
            reason: "must start with 0x",
        })?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WalletError::MalformedSignature {
            reason: "not hexadecimal",
        });
    }
    if digits.len() % 2 != 0 {
        return Err(WalletError::MalformedSignature {
            reason: "odd number of hex digits",
        });
    }
    let len_bytes = digits.len() / 2;
    // A 64-byte EIP-2098 compact signature (v folded into the top bit of s) is rejected rather
    // than decoded: wallets (MetaMask personal_sign, ethers, TronLink) produce 65 bytes, and a
    // truncated 65-byte signature would otherwise be read as a different, compact one.
    if len_bytes != SIGNATURE_LEN_BYTES {
        return Err(WalletError::BadSignatureLength { len_bytes });
    }
    let mut bytes = [0u8; SIGNATURE_LEN_BYTES];
    hex::decode_to_slice(digits, &mut bytes).map_err(|_| WalletError::MalformedSignature {
        reason: "not hexadecimal",
    })?;

    let (rs, v) = (
        &bytes[..SIGNATURE_LEN_BYTES - 1],
        bytes[SIGNATURE_LEN_BYTES - 1],
    );
    // 27/28 is what Ethereum wallets emit (Bitcoin's legacy offset); some hardware signers emit
    // 0/1. Ids 2 and 3 (r >= n) are never produced in practice and not accepted.
    let recovery_id = match v {
        0 | 27 => RecoveryId::new(false, false),
        1 | 28 => RecoveryId::new(true, false),
        _ => return Err(WalletError::BadRecoveryId { v }),
    };
    let signature = Signature::from_slice(rs).map_err(|_| WalletError::InvalidSignature)?;
    if signature.normalize_s().is_some() {
        return Err(WalletError::NonCanonicalSignature);
    }
    Ok((signature, recovery_id))
}

fn recover_address_bytes(
    network: Network,
    message: &str,
    signature: &str,
) -> Result<[u8; ADDRESS_LEN_BYTES], WalletError> {
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(WalletError::MessageTooLong {
            len_bytes: message.len(),
            max_bytes: MESSAGE_BYTES_MAX,
        });
    }
    let (signature, recovery_id) = parse_signature(signature)?;
    let hash = signed_message_hash(network, message);
    let key = VerifyingKey::recover_from_prehash(&hash, &signature, recovery_id)
        .map_err(|_| WalletError::InvalidSignature)?;
    Ok(address_of_key(&key))
}

/// The last 20 bytes of keccak256 of the uncompressed public key without its 0x04 tag; the same
/// for Ethereum and Tron, which differ only in how the bytes are written.
pub(crate) fn address_of_key(key: &VerifyingKey) -> [u8; ADDRESS_LEN_BYTES] {
    let point = key.to_encoded_point(false);
    let xy = point.as_bytes().get(1..).unwrap_or_default();
    let hash = keccak256(&[xy]);
    let mut addr = [0u8; ADDRESS_LEN_BYTES];
    addr.copy_from_slice(&hash[32 - ADDRESS_LEN_BYTES..]);
    addr
}

/// The canonical address of whoever signed `message` (as `network`'s wallets sign messages).
pub fn recover_address(
    network: Network,
    message: &str,
    signature: &str,
) -> Result<String, WalletError> {
    let addr = recover_address_bytes(network, message, signature)?;
    Ok(format_address(network, &addr))
}

/// Succeeds when `signature` over `message` was made by the key of `address`. The address is
/// checked first, so a malformed address is reported as such whatever the signature is.
pub fn verify_signature(
    network: Network,
    address: &str,
    message: &str,
    signature: &str,
) -> Result<(), WalletError> {
    let claimed = parse_address(network, address)?;
    let recovered = recover_address_bytes(network, message, signature)?;
    if claimed != recovered {
        return Err(WalletError::SignerMismatch {
            claimed: format_address(network, &claimed),
            recovered: format_address(network, &recovered),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::SigningKey;
    use k256::elliptic_curve::scalar::IsHigh;

    #[derive(Debug, serde::Deserialize)]
    struct Case {
        name: String,
        network: Network,
        address: String,
        message: String,
        signature: String,
        private_key_hex: String,
        expect: String,
    }

    fn cases() -> Vec<Case> {
        serde_json::from_str(include_str!("../../fixtures/wallets/signatures.json"))
            .expect("signatures.json parses")
    }

    fn case(name: &str) -> Case {
        cases()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("fixture case {name} is missing"))
    }

    fn key_address(private_key_hex: &str) -> [u8; 20] {
        let bytes = hex::decode(private_key_hex).expect("hex key");
        let key = SigningKey::from_slice(&bytes).expect("valid key");
        address_of_key(key.verifying_key())
    }

    /// Rewrites the last byte (v) of a `0x` hex signature.
    fn with_v(signature: &str, v: u8) -> String {
        format!("{}{v:02x}", &signature[..signature.len() - 2])
    }

    // --- fixtures made by ethers.js and tronweb ---

    #[test]
    fn every_fixture_case_is_covered_by_a_test() {
        let mut names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
        names.sort();
        let mut covered = vec![
            "eth_valid_v27",
            "eth_valid_v28",
            "eth_valid_v_normalized_0",
            "eth_invalid_signed_by_other_key",
            "eth_invalid_truncated_signature",
            "eth_invalid_garbage_hex",
            "tron_valid_key_a",
            "tron_valid_key_b",
            "tron_invalid_signed_by_other_key",
            "eth_signature_over_tron_message",
        ];
        covered.sort_unstable();
        assert_eq!(names, covered);
    }

    #[test]
    fn valid_fixture_signatures_verify_and_recover_the_claimed_address() {
        let valid: Vec<Case> = cases()
            .into_iter()
            .filter(|c| c.expect == "valid")
            .collect();
        assert_eq!(valid.len(), 5);
        for c in valid {
            verify_signature(c.network, &c.address, &c.message, &c.signature)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let recovered = recover_address(c.network, &c.message, &c.signature)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(recovered, c.address, "{}", c.name);
        }
    }

    #[test]
    fn fixture_addresses_are_the_canonical_addresses_of_their_keys() {
        for c in cases().into_iter().filter(|c| c.expect == "valid") {
            let derived = format_address(c.network, &key_address(&c.private_key_hex));
            assert_eq!(derived, c.address, "{}", c.name);
            assert_eq!(normalize_address(c.network, &c.address), Ok(derived));
        }
    }

    #[test]
    fn an_ethereum_signature_by_another_key_is_a_signer_mismatch() {
        let c = case("eth_invalid_signed_by_other_key");
        let err = verify_signature(c.network, &c.address, &c.message, &c.signature).unwrap_err();
        assert_eq!(
            err,
            WalletError::SignerMismatch {
                claimed: c.address.clone(),
                recovered: eip55(&key_address(&c.private_key_hex)),
            }
        );
        assert!(!err.is_malformed_input());
    }

    #[test]
    fn a_tron_signature_by_another_key_is_a_signer_mismatch() {
        let c = case("tron_invalid_signed_by_other_key");
        let err = verify_signature(c.network, &c.address, &c.message, &c.signature).unwrap_err();
        assert_eq!(
            err,
            WalletError::SignerMismatch {
                claimed: c.address.clone(),
                recovered: tron_address(&key_address(&c.private_key_hex)),
            }
        );
    }

    #[test]
    fn a_truncated_64_byte_signature_is_rejected_for_its_length() {
        let c = case("eth_invalid_truncated_signature");
        let err = verify_signature(c.network, &c.address, &c.message, &c.signature).unwrap_err();
        assert_eq!(err, WalletError::BadSignatureLength { len_bytes: 64 });
        assert!(err.is_malformed_input());
    }

    #[test]
    fn a_signature_that_is_not_hex_is_malformed() {
        let c = case("eth_invalid_garbage_hex");
        let err = verify_signature(c.network, &c.address, &c.message, &c.signature).unwrap_err();
        assert!(
            matches!(err, WalletError::MalformedSignature { .. }),
            "{err:?}"
        );
        assert!(err.is_malformed_input());
    }

    #[test]
    fn an_ethereum_signature_over_a_tron_message_still_verifies_as_ethereum() {
        // The message content (which network's sign-in text it is) is checked elsewhere.
        let c = case("eth_signature_over_tron_message");
        assert_eq!(c.expect, "valid_signature_wrong_network");
        assert_eq!(
            verify_signature(Network::Ethereum, &c.address, &c.message, &c.signature),
            Ok(())
        );
    }

    #[test]
    fn an_ethereum_signature_does_not_verify_as_tron_for_the_same_key() {
        // Same key, same 20 bytes, but the Tron prefix changes the hash, so another key recovers.
        let c = case("eth_valid_v27");
        let tron = tron_address(&parse_eth_address(&c.address).unwrap());
        let err = verify_signature(Network::Tron, &tron, &c.message, &c.signature).unwrap_err();
        assert!(matches!(err, WalletError::SignerMismatch { .. }), "{err:?}");
    }

    #[test]
    fn recovery_bytes_0_and_1_are_accepted_like_27_and_28() {
        for name in ["eth_valid_v27", "eth_valid_v28", "tron_valid_key_a"] {
            let c = case(name);
            let v = u8::from_str_radix(&c.signature[c.signature.len() - 2..], 16).unwrap();
            let low = with_v(&c.signature, v - 27);
            assert_eq!(
                verify_signature(c.network, &c.address, &c.message, &low),
                Ok(()),
                "{name}"
            );
        }
    }

    #[test]
    fn a_flipped_recovery_byte_recovers_another_signer() {
        let c = case("eth_valid_v27");
        let flipped = with_v(&c.signature, 28);
        let err = verify_signature(c.network, &c.address, &c.message, &flipped).unwrap_err();
        assert!(
            matches!(
                err,
                WalletError::SignerMismatch { .. } | WalletError::InvalidSignature
            ),
            "{err:?}"
        );
    }

    #[test]
    fn recovery_bytes_other_than_0_1_27_28_are_rejected() {
        let c = case("eth_valid_v27");
        for v in [2, 26, 29, 37, 255] {
            let err = verify_signature(c.network, &c.address, &c.message, &with_v(&c.signature, v))
                .unwrap_err();
            assert_eq!(err, WalletError::BadRecoveryId { v });
            assert!(err.is_malformed_input());
        }
    }

    #[test]
    fn a_high_s_signature_is_rejected_as_non_canonical() {
        for name in ["eth_valid_v27", "eth_valid_v28", "tron_valid_key_b"] {
            let c = case(name);
            let bytes = hex::decode(&c.signature[2..]).unwrap();
            let sig = Signature::from_slice(&bytes[..64]).unwrap();
            let (r, s) = sig.split_scalars();
            let high = Signature::from_scalars(r, -s).unwrap();
            assert!(bool::from(high.s().is_high()), "{name}: s must now be high");
            let v = bytes[64];
            let flipped_v = if v == 27 { 28 } else { 27 };
            // (r, n - s) with the other parity of R is the same key's signature, mathematically.
            let malleated = format!("0x{}{flipped_v:02x}", hex::encode(high.to_bytes()));
            let err = verify_signature(c.network, &c.address, &c.message, &malleated).unwrap_err();
            assert_eq!(err, WalletError::NonCanonicalSignature, "{name}");
            assert!(!err.is_malformed_input());
        }
    }

    #[test]
    fn a_signature_over_a_different_message_does_not_verify() {
        let c = case("tron_valid_key_a");
        let tampered = c.message.replace("Nonce: 0", "Nonce: 1");
        assert_ne!(tampered, c.message);
        let err = verify_signature(c.network, &c.address, &tampered, &c.signature).unwrap_err();
        assert!(
            matches!(
                err,
                WalletError::SignerMismatch { .. } | WalletError::InvalidSignature
            ),
            "{err:?}"
        );
    }

    #[test]
    fn signatures_without_0x_or_with_odd_length_are_malformed() {
        let c = case("eth_valid_v27");
        for bad in [
            c.signature[2..].to_string(),
            format!("0X{}", &c.signature[2..]),
            format!("{}0", c.signature),
            String::new(),
        ] {
            let err = verify_signature(c.network, &c.address, &c.message, &bad).unwrap_err();
            assert!(
                matches!(err, WalletError::MalformedSignature { .. }),
                "{bad}: {err:?}"
            );
        }
        let long = format!("{}00", c.signature);
        assert_eq!(
            verify_signature(c.network, &c.address, &c.message, &long),
            Err(WalletError::BadSignatureLength { len_bytes: 66 })
        );
    }

    #[test]
    fn a_zero_r_signature_is_invalid_not_malformed() {
        let c = case("eth_valid_v27");
        let zero = format!("0x{}1b", "00".repeat(64));
        let err = verify_signature(c.network, &c.address, &c.message, &zero).unwrap_err();
        assert_eq!(err, WalletError::InvalidSignature);
        assert!(!err.is_malformed_input());
    }

    #[test]
    fn a_message_over_the_limit_is_rejected_before_hashing() {
        let c = case("eth_valid_v27");
        let long = "a".repeat(MESSAGE_BYTES_MAX + 1);
        assert_eq!(
            recover_address(c.network, &long, &c.signature),
            Err(WalletError::MessageTooLong {
                len_bytes: MESSAGE_BYTES_MAX + 1,
                max_bytes: MESSAGE_BYTES_MAX,
            })
        );
    }

    #[test]
    fn a_malformed_claimed_address_is_reported_before_the_signature() {
        let c = case("eth_invalid_garbage_hex");
        let err = verify_signature(c.network, "0x1234", &c.message, &c.signature).unwrap_err();
        assert!(
            matches!(err, WalletError::MalformedAddress { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_key_signing_with_the_tron_prefix_recovers_its_tron_address() {
        // Independent of the fixtures: sign the prefixed hash with k256 directly.
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let message = "héllo, multi-byte UTF-8 counts bytes not chars";
        let hash = signed_message_hash(Network::Tron, message);
        let (sig, recid) = key.sign_prehash_recoverable(&hash).unwrap();
        let signature = format!(
            "0x{}{:02x}",
            hex::encode(sig.to_bytes()),
            recid.to_byte() + 27
        );
        let expected = tron_address(&address_of_key(key.verifying_key()));
        assert_eq!(
            recover_address(Network::Tron, message, &signature),
            Ok(expected)
        );
    }

    // --- Ethereum addresses ---

    const EIP55_VECTORS: [&str; 8] = [
        // From EIP-55 itself: all caps, all lower, and mixed.
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn eip55_reproduces_the_test_vectors_of_the_eip() {
        for vector in EIP55_VECTORS {
            let addr = parse_eth_address(vector).unwrap();
            assert_eq!(eip55(&addr), vector);
        }
    }

    #[test]
    fn a_mixed_case_address_with_a_wrong_checksum_is_rejected() {
        // One letter's case flipped in an EIP-55 vector.
        let err = parse_eth_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").unwrap_err();
        assert_eq!(
            err,
            WalletError::BadChecksum {
                network: Network::Ethereum
            }
        );
        assert!(err.is_malformed_input());
    }

    #[test]
    fn single_case_addresses_carry_no_checksum_and_are_accepted() {
        let canonical = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
        let lower = canonical.to_ascii_lowercase();
        let upper = format!("0x{}", canonical[2..].to_ascii_uppercase());
        for s in [lower, upper] {
            assert_eq!(
                normalize_address(Network::Ethereum, &s),
                Ok(canonical.to_string()),
                "{s}"
            );
        }
    }

    #[test]
    fn malformed_ethereum_addresses_are_rejected() {
        for s in [
            "",
            "0x",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00",
            "0xgaaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "TEbzWuv1SoXKtA1tnpVMY1TewKW6D4mTRg",
        ] {
            let err = parse_eth_address(s).unwrap_err();
            assert!(
                matches!(err, WalletError::MalformedAddress { .. }),
                "{s}: {err:?}"
            );
        }
    }

    // --- Tron addresses ---

    #[test]
    fn a_known_tron_address_parses_and_round_trips() {
        for s in [
            "TEbzWuv1SoXKtA1tnpVMY1TewKW6D4mTRg",
            "TZHoxdqkAjg4Hy7byBMnmFiggFrrTWRWNb",
            "TPBkHycN1Hmr2bFcfjvp2fjkca1hfPbPka",
        ] {
            let addr = parse_tron_address(s).unwrap();
            assert_eq!(tron_address(&addr), s);
            assert_eq!(normalize_address(Network::Tron, s), Ok(s.to_string()));
        }
    }

    #[test]
    fn a_tron_address_holds_the_same_bytes_as_the_ethereum_address_of_its_key() {
        let c = case("tron_valid_key_a");
        let key = key_address(&c.private_key_hex);
        assert_eq!(parse_tron_address(&c.address), Ok(key));
    }

    #[test]
    fn a_tron_address_with_a_flipped_character_fails_its_checksum() {
        // 'R' -> 'S' in the last-but-one position: still base58, still 34 characters.
        let err = parse_tron_address("TEbzWuv1SoXKtA1tnpVMY1TewKW6D4mTSg").unwrap_err();
        assert_eq!(
            err,
            WalletError::BadChecksum {
                network: Network::Tron
            }
        );
        assert!(err.is_malformed_input());
    }

    #[test]
    fn malformed_tron_addresses_are_rejected() {
        // A valid base58check string of the right length, with version byte 0x42 for 0x41.
        let wrong_version = bs58::encode([0u8; 20])
            .with_check_version(0x42)
            .into_string();
        assert_eq!(wrong_version.len(), 34);
        for s in [
            "",
            "TEbzWuv1SoXKtA1tnpVMY1TewKW6D4mTR",
            "TEbzWuv1SoXKtA1tnpVMY1TewKW6D4mTRgg",
            "TEbzWuv1SoXKtA1tnpVMY1TewKW6D4mT0g",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            wrong_version.as_str(),
        ] {
            let err = parse_tron_address(s).unwrap_err();
            assert!(
                matches!(err, WalletError::MalformedAddress { .. }),
                "{s}: {err:?}"
            );
        }
    }

    // --- Network ---

    #[test]
    fn network_names_parse_case_insensitively_and_display_in_lower_case() {
        assert_eq!("Ethereum".parse(), Ok(Network::Ethereum));
        assert_eq!("TRON".parse(), Ok(Network::Tron));
        assert!("bitcoin".parse::<Network>().is_err());
        assert_eq!(Network::Ethereum.to_string(), "ethereum");
        assert_eq!(Network::Tron.to_string(), "tron");
    }

    #[test]
    fn networks_serialize_as_lower_case_strings() {
        assert_eq!(serde_json::to_string(&Network::Tron).unwrap(), "\"tron\"");
        assert_eq!(
            serde_json::from_str::<Network>("\"ethereum\"").unwrap(),
            Network::Ethereum
        );
    }
}
