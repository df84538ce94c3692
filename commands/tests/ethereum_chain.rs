//! The Ethereum verifier against a real local chain: `fixtures/chain/chain.mjs` starts ganache
//! with two real ERC-20 contracts (the "USDT" the platform accepts and a wrong token), and
//! `fixtures/chain/tx.mjs` signs and sends real transfers with ethers. Each test starts its own
//! chain on a port the OS picks, so tests run side by side. Mining is instant (one transaction,
//! one block); confirmations are added with the JSON-RPC `evm_mine`.
//!
//! Without Node or `fixtures/chain/node_modules` these tests say SKIPPED, unless
//! `AIFORGE_REQUIRE_SERVICES=1` makes that a failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aiforge_commands::chain::ethereum::{EthereumConfig, EthereumVerifier};
use aiforge_commands::chain::{
    ChainError, ChainVerifier, TokenTransfer, TxStatus, ETHEREUM_CONFIRMATIONS_MIN,
};
use aiforge_domain::wallet::Network;
use alloy_provider::{Provider, RootProvider};
use serde::Deserialize;
use serde_json::Value;

/// 25 USDT in base units (6 decimals).
const PAYMENT: u128 = 25_000_000;
/// chain.mjs compiles nothing when TestToken.json is current and starts in about a second; this
/// only bounds a chain that hangs.
const CHAIN_START_TIMEOUT: Duration = Duration::from_secs(120);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/chain")
}

fn services_required() -> bool {
    std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() == Ok("1")
}

fn skip(reason: &str) {
    assert!(
        !services_required(),
        "AIFORGE_REQUIRE_SERVICES=1 but the ethereum chain cannot run: {reason}"
    );
    eprintln!("SKIPPED (ethereum chain): {reason}; run `npm ci --prefix fixtures/chain`");
}

/// The line chain.mjs prints once the chain is ready.
#[derive(Debug, Deserialize)]
struct ChainInfo {
    rpc_url: String,
    chain_id: u64,
    token: String,
    wrong_token: String,
    platform: String,
    payer: String,
    payer_key: String,
    other: String,
}

/// A running chain.mjs; killed when dropped (its stdin closing would also end it).
struct Chain {
    child: Child,
    info: ChainInfo,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A transaction tx.mjs sent and saw mined.
#[derive(Debug, Deserialize)]
struct SentTx {
    tx_hash: String,
    status: u8,
    block: u64,
}

impl Chain {
    /// Starts a fresh chain, or `None` (after saying SKIPPED) when Node or the fixture's
    /// packages are missing and services are not required.
    fn start() -> Option<Chain> {
        if !fixtures().join("node_modules/ganache").exists() {
            skip("fixtures/chain/node_modules missing");
            return None;
        }
        let mut child = match Command::new("node")
            .arg(fixtures().join("chain.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                skip(&format!("cannot run node: {e}"));
                return None;
            }
        };
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = line_tx.send(read);
        });
        let line = match line_rx.recv_timeout(CHAIN_START_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chain.mjs did not start: {other:?}");
            }
        };
        let info: ChainInfo = serde_json::from_str(&line).unwrap();
        assert_eq!(info.chain_id, 1337);
        Some(Chain { child, info })
    }

    fn verifier(&self) -> EthereumVerifier {
        EthereumVerifier::new(EthereumConfig::new(
            self.info.rpc_url.clone(),
            self.info.token.clone(),
            self.info.platform.clone(),
        ))
        .unwrap()
    }

    /// A real ERC-20 `transfer` signed with `key`, mined (its status may be 0: reverted).
    fn transfer(&self, key: &str, token: &str, to: &str, amount: u128) -> SentTx {
        let output = Command::new("node")
            .arg(fixtures().join("tx.mjs"))
            .args([&self.info.rpc_url, key, "transfer", token, to])
            .arg(amount.to_string())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "tx.mjs failed: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Mines `blocks` empty blocks (ganache's `evm_mine`).
    async fn mine(&self, blocks: u64) {
        // alloy's HTTP client needs a rustls provider installed (see chain/ethereum.rs); making
        // a verifier installs ring, and this keeps `mine` from depending on that order.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider: RootProvider = RootProvider::new_http(self.info.rpc_url.parse().unwrap());
        for _ in 0..blocks {
            let _: Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn paying_the_exact_amount_succeeds_with_the_transfer_once_mined_to_three_confirmations() {
    let Some(chain) = Chain::start() else { return };
    let verifier = chain.verifier();
    assert_eq!(verifier.network(), Network::Ethereum);
    assert_eq!(
        verifier.required_confirmations(),
        ETHEREUM_CONFIRMATIONS_MIN
    );
    let i = &chain.info;

    let tx = chain.transfer(&i.payer_key, &i.token, &i.platform, PAYMENT);
    assert_eq!(tx.status, 1);
    chain.mine(ETHEREUM_CONFIRMATIONS_MIN - 1).await;

    let status = verifier.transaction(&tx.tx_hash).await.unwrap();
    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: tx.block,
            confirmations: ETHEREUM_CONFIRMATIONS_MIN,
            transfers: vec![TokenTransfer {
                from: i.payer.clone(),
                to: i.platform.clone(),
                value: PAYMENT,
            }],
        }
    );
}

#[tokio::test]
async fn a_transfer_reports_two_confirmations_then_three_after_one_more_block() {
    let Some(chain) = Chain::start() else { return };
    let verifier = chain.verifier();
    let i = &chain.info;
    let tx = chain.transfer(&i.payer_key, &i.token, &i.platform, PAYMENT);
    chain.mine(1).await;

    let confirmations = |status: TxStatus| match status {
        TxStatus::Succeeded {
            confirmations,
            transfers,
            ..
        } => {
            assert_eq!(transfers.len(), 1);
            confirmations
        }
        other => panic!("expected Succeeded, got {other:?}"),
    };
    let before = verifier.transaction(&tx.tx_hash).await.unwrap();
    assert_eq!(confirmations(before), 2);
    chain.mine(1).await;
    let after = verifier.transaction(&tx.tx_hash).await.unwrap();
    assert_eq!(confirmations(after), 3);
}

#[tokio::test]
async fn paying_with_the_wrong_token_succeeds_without_transfers() {
    let Some(chain) = Chain::start() else { return };
    let i = &chain.info;
    let tx = chain.transfer(&i.payer_key, &i.wrong_token, &i.platform, PAYMENT);
    assert_eq!(tx.status, 1);

    let status = chain.verifier().transaction(&tx.tx_hash).await.unwrap();
    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: tx.block,
            confirmations: 1,
            transfers: vec![],
        }
    );
}

#[tokio::test]
async fn paying_another_address_succeeds_without_transfers_to_the_platform() {
    let Some(chain) = Chain::start() else { return };
    let i = &chain.info;
    let tx = chain.transfer(&i.payer_key, &i.token, &i.other, PAYMENT);
    assert_eq!(tx.status, 1);

    let status = chain.verifier().transaction(&tx.tx_hash).await.unwrap();
    assert_eq!(
        status,
        TxStatus::Succeeded {
            block: tx.block,
            confirmations: 1,
            transfers: vec![],
        }
    );
}

#[tokio::test]
async fn a_reverted_transfer_is_failed() {
    let Some(chain) = Chain::start() else { return };
    let i = &chain.info;
    // Far more than the payer's 1,000,000 USDT: TestToken's `require` reverts, and the failed
    // transaction is still mined (and paid for in gas).
    let tx = chain.transfer(&i.payer_key, &i.token, &i.platform, u128::MAX);
    assert_eq!(tx.status, 0);

    let status = chain.verifier().transaction(&tx.tx_hash).await.unwrap();
    assert_eq!(status, TxStatus::Failed { block: tx.block });
}

#[tokio::test]
async fn an_unknown_hash_is_not_found() {
    let Some(chain) = Chain::start() else { return };
    let unknown = format!("0x{}", "5a".repeat(32));
    let status = chain.verifier().transaction(&unknown).await.unwrap();
    assert_eq!(status, TxStatus::NotFound);
}

/// No node is needed: a malformed hash is refused before any call (the node here is down, so a
/// call would have been `Unavailable`).
#[tokio::test]
async fn a_malformed_hash_is_refused_without_asking_the_node() {
    let verifier = verifier_at(&format!("http://127.0.0.1:{}", closed_port()));
    for bad in [
        "",
        "0x1234",
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5z",
        "0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a00",
    ] {
        match verifier.transaction(bad).await {
            Err(ChainError::MalformedTxHash(_)) => {}
            other => panic!("{bad:?}: expected MalformedTxHash, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_node_that_is_down_is_unavailable_at_once() {
    let verifier = verifier_at(&format!("http://127.0.0.1:{}", closed_port()));
    let hash = format!("0x{}", "5a".repeat(32));
    match verifier.transaction(&hash).await {
        // "cannot connect", not "timed out": the refused connection is reported as soon as it
        // happens, without waiting for RPC_TIMEOUT_SECS.
        Err(ChainError::Unavailable { network, reason }) => {
            assert_eq!(network, Network::Ethereum);
            assert!(reason.contains("cannot connect"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_that_never_answers_is_unavailable_after_the_timeout() {
    // Accepts connections (the OS does, from its backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = EthereumConfig::new(
        format!("http://{}", silent.local_addr().unwrap()),
        "0xe78A0F7E598Cc8b0Bb87894B0F60dD2a88d6a8Ab",
        "0x1dF62f291b2E969fB0849d99D9Ce41e2F137006e",
    );
    config.rpc_timeout = Duration::from_millis(300);
    let verifier = EthereumVerifier::new(config).unwrap();
    let hash = format!("0x{}", "5a".repeat(32));
    match verifier.transaction(&hash).await {
        Err(ChainError::Unavailable { network, .. }) => assert_eq!(network, Network::Ethereum),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn verifier_at(rpc_url: &str) -> EthereumVerifier {
    EthereumVerifier::new(EthereumConfig::new(
        rpc_url,
        "0xe78A0F7E598Cc8b0Bb87894B0F60dD2a88d6a8Ab",
        "0x1dF62f291b2E969fB0849d99D9Ce41e2F137006e",
    ))
    .unwrap()
}

/// A port nothing listens on: bound by the OS, then released.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
