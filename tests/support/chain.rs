//! A real local Ethereum chain for end-to-end tests (ganache with an ERC-20 compiled by solc,
//! `fixtures/chain/`), and the payment steps the tests share: a wallet session for a chain
//! account, creating a payment, paying it on chain and verifying it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::Method;
use serde_json::{json, Value};

use super::*;

/// Ganache's deterministic account #0 (the admin here) and #1 (the payer chain.mjs funds).
pub const ADMIN_KEY: &str = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";

pub struct Chain {
    child: Child,
    pub info: Value,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn chain_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/chain")
}

pub fn start_chain() -> Option<Chain> {
    let required = std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() == Ok("1");
    if !chain_dir().join("node_modules/ganache").exists() {
        assert!(
            !required,
            "fixtures/chain has no node_modules: run `npm ci --prefix fixtures/chain`"
        );
        eprintln!("SKIPPED (ethereum chain): fixtures/chain/node_modules missing");
        return None;
    }
    let mut child = Command::new("node")
        .arg(chain_dir().join("chain.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).expect("chain.mjs prints its JSON line");
    Some(Chain { child, info })
}

impl Chain {
    pub fn s(&self, key: &str) -> String {
        self.info[key].as_str().unwrap().to_string()
    }

    /// A real ERC-20 transfer; returns its hash (also for a transfer that reverts).
    pub fn transfer(&self, key: &str, token: &str, to: &str, micros: u64) -> String {
        let output = Command::new("node")
            .arg(chain_dir().join("tx.mjs"))
            .args([
                &self.s("rpc_url"),
                key,
                "transfer",
                token,
                to,
                &micros.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tx.mjs: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out: Value = serde_json::from_slice(&output.stdout).unwrap();
        out["tx_hash"].as_str().unwrap().to_string()
    }

    pub async fn mine(&self, blocks: usize) {
        for _ in 0..blocks {
            client()
                .post(self.s("rpc_url"))
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": []}))
                .send()
                .await
                .unwrap();
        }
    }
}

pub async fn verify(server: &Server, token: &str, payment_id: &str, tx_hash: &str) -> (u16, Value) {
    send(
        server,
        Method::POST,
        "/api/payments/verify",
        json!({"payment_id": payment_id, "tx_hash": tx_hash}),
        Some(token),
    )
    .await
}

pub async fn create_payment(
    server: &Server,
    token: &str,
    kind: &str,
    amount: &str,
    reference: &str,
) -> String {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/payments/create",
        json!({"type": kind, "network": "ethereum", "amount": amount, "reference": reference}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["payment"]["payment_id"].as_str().unwrap().to_string()
}

pub async fn wallet_session(server: &Server, key: &str) -> Option<String> {
    let (address, _) = wallet_sign("ethereum", key, "probe")?;
    let (_, issued) = get(
        server,
        &format!("/api/auth/wallet/auth-message?network=ethereum&address={address}"),
        None,
    )
    .await;
    let message = issued["message"].as_str().unwrap();
    let (_, signature) = wallet_sign("ethereum", key, message)?;
    let (status, body) = post(
        server,
        "/api/auth/wallet/login",
        json!({"network": "ethereum", "address": address, "message": message, "signature": signature}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    Some(body["access_token"].as_str().unwrap().to_string())
}

/// Creates a payment of `kind`, pays exactly its amount from the chain's payer, mines the
/// confirmations and verifies it; returns the payment id.
pub async fn paid_payment(
    chain: &Chain,
    server: &Server,
    token: &str,
    kind: &str,
    amount_micros: u64,
) -> String {
    let amount = format!(
        "{}.{:06}",
        amount_micros / 1_000_000,
        amount_micros % 1_000_000
    );
    let payment_id = create_payment(server, token, kind, &amount, kind).await;
    pay(
        chain,
        server,
        token,
        "payer_key",
        &payment_id,
        amount_micros,
    )
    .await;
    payment_id
}

/// Pays an existing payment from the chain account `key_name` ("payer_key" or "other_key")
/// and verifies it (200 expected).
pub async fn pay(
    chain: &Chain,
    server: &Server,
    token: &str,
    key_name: &str,
    payment_id: &str,
    amount_micros: u64,
) {
    let payer_key = chain.s(key_name);
    let tx = chain.transfer(
        payer_key.trim_start_matches("0x"),
        &chain.s("token"),
        &chain.s("platform"),
        amount_micros,
    );
    chain.mine(3).await;
    let (status, body) = verify(server, token, payment_id, &tx).await;
    assert_eq!(status, 200, "{body}");
}
