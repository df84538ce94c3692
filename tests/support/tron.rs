//! A local Tron full node for end-to-end tests (`fixtures/tron/server.mjs`: java-tron's HTTP API
//! shapes, one TRC-20 USDT in memory, tronweb's protobuf and signature recovery, blocks made
//! on request), and the steps the Tron tests share: a Tron wallet session, a transfer signed by
//! our own hot wallet code with a test key.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use aiforge_commands::chain::tron::TronConfig;
use aiforge_commands::chain::tron_hot_wallet::{TronHotWallet, DEFAULT_FEE_LIMIT_SUN};
use aiforge_commands::payouts::HotWallet;
use serde_json::{json, Value};
use sha2::Digest;

use super::*;

/// A test-only Tron private key: sha256 of its label (fixtures/tron/README.md lists the ones the
/// fixtures use). Never fund such a key on a real chain.
pub fn test_key(label: &str) -> String {
    hex::encode(sha2::Sha256::digest(label.as_bytes()))
}

/// The key of the platform wallet, also the hot wallet payouts are sent from.
pub fn hot_key() -> String {
    test_key("aiforge fixtures: tron platform wallet")
}

pub fn payer_key() -> String {
    test_key("aiforge fixtures: tron payer")
}

pub struct TronNode {
    child: Child,
    pub url: String,
    /// The node's TRC-20 USDT, base58.
    pub token: String,
}

impl Drop for TronNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Starts the node with its first block at `start` (RFC 3339): the manual clock's start, so
/// that the node's time (3 s a block) and the server's agree.
pub fn start_tron(start: &str) -> Option<TronNode> {
    let required = std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() == Ok("1");
    if !node_dir().join("wallets/node_modules/tronweb").exists() {
        assert!(
            !required,
            "fixtures/wallets has no node_modules: run `npm ci --prefix fixtures/wallets`"
        );
        eprintln!("SKIPPED (tron node): fixtures/wallets/node_modules missing");
        return None;
    }
    let mut child = Command::new("node")
        .arg(node_dir().join("tron/server.mjs"))
        .args(["--start", start])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).expect("server.mjs prints its JSON line");
    Some(TronNode {
        child,
        url: info["url"].as_str().unwrap().to_string(),
        token: info["token"].as_str().unwrap().to_string(),
    })
}

impl TronNode {
    pub async fn call(&self, path: &str, body: Value) -> Value {
        let response = client()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }

    pub async fn mine(&self, blocks: u64) {
        self.call("/test/mine", json!({ "blocks": blocks })).await;
    }

    pub async fn fund(&self, address: &str, usdt_micros: u64, trx_sun: u64) {
        self.call(
            "/test/fund",
            json!({ "address": address, "usdt_micros": usdt_micros, "trx_sun": trx_sun }),
        )
        .await;
    }

    pub async fn usdt(&self, address: &str) -> u128 {
        let body = self
            .call("/test/balance", json!({ "address": address }))
            .await;
        body["usdt_micros"].as_str().unwrap().parse().unwrap()
    }

    /// Transfers run in blocks: (txid, from, to, amount, receipt result), in chain order.
    pub async fn transfers(&self) -> Vec<(String, String, String, u128, String)> {
        let body = self.call("/test/transfers", json!({})).await;
        body["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["txid"].as_str().unwrap().to_string(),
                    t["from"].as_str().unwrap().to_string(),
                    t["to"].as_str().unwrap().to_string(),
                    t["amount"].as_str().unwrap().parse().unwrap(),
                    t["result"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Transactions the node took in (each once, whatever the rebroadcasts).
    pub async fn accepted(&self) -> u64 {
        self.call("/test/broadcasts", json!({})).await["accepted"]
            .as_u64()
            .unwrap()
    }

    /// A wallet of our own code (the hot wallet's) on `key`, talking to this node.
    pub fn wallet(&self, key: &str) -> TronHotWallet {
        let address = address_of(key);
        TronHotWallet::new(
            TronConfig::new(&self.url, &self.token, &address),
            &secrecy::SecretString::from(key.to_string()),
            DEFAULT_FEE_LIMIT_SUN,
        )
        .unwrap()
    }

    /// A USDT transfer from `key`'s address, signed and broadcast; returns the txid.
    pub async fn transfer(&self, key: &str, to: &str, micros: u64) -> String {
        let wallet = self.wallet(key);
        let signed = wallet.sign_transfer(to, micros, None).await.unwrap();
        wallet.broadcast(&signed).await.unwrap();
        signed.hash
    }
}

/// The base58 address of a key (tronweb's, through the wallet signer).
pub fn address_of(key: &str) -> String {
    wallet_sign("tron", key, "probe").unwrap().0
}

/// A Tron wallet sign-in (signMessageV2, as TronLink signs).
pub async fn tron_session(server: &Server, key: &str) -> String {
    let address = address_of(key);
    let (_, issued) = get(
        server,
        &format!("/api/auth/wallet/auth-message?network=tron&address={address}"),
        None,
    )
    .await;
    let message = issued["message"].as_str().unwrap();
    let (_, signature) = wallet_sign("tron", key, message).unwrap();
    let (status, body) = post(
        server,
        "/api/auth/wallet/login",
        json!({"network": "tron", "address": address, "message": message, "signature": signature}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}
