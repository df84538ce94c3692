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

    /// `block` or `unblock` a recipient of the blocking token (`BlockingToken.sol`, owned by
    /// ganache's account #0, the admin key here).
    pub fn blocklist(&self, action: &str, address: &str) {
        let output = Command::new("node")
            .arg(chain_dir().join("tx.mjs"))
            .args([
                &self.s("rpc_url"),
                ADMIN_KEY,
                action,
                &self.s("blocking_token"),
                address,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tx.mjs: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(out["status"], 1, "{action} {address}: {out}");
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
    pay_in(
        chain,
        server,
        token,
        key_name,
        payment_id,
        amount_micros,
        &chain.s("token"),
    )
    .await;
}

/// [`pay`] in the token contract `usdt` (the one the server accepts as USDT).
pub async fn pay_in(
    chain: &Chain,
    server: &Server,
    token: &str,
    key_name: &str,
    payment_id: &str,
    amount_micros: u64,
    usdt: &str,
) {
    let payer_key = chain.s(key_name);
    let tx = chain.transfer(
        payer_key.trim_start_matches("0x"),
        usdt,
        &chain.s("platform"),
        amount_micros,
    );
    chain.mine(3).await;
    let (status, body) = verify(server, token, payment_id, &tx).await;
    assert_eq!(status, 200, "{body}");
}

pub async fn rpc(chain: &Chain, method: &str, params: Value) -> (u16, Value) {
    let response = client()
        .post(chain.s("rpc_url"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `balanceOf(address)` of the chain's USDT, in micro-USDT.
pub async fn token_balance(chain: &Chain, address: &str) -> u128 {
    token_balance_of(chain, &chain.s("token"), address).await
}

/// `balanceOf(address)` of the token contract `token`.
pub async fn token_balance_of(chain: &Chain, token: &str, address: &str) -> u128 {
    let data = format!(
        "0x70a08231{:0>64}",
        address.trim_start_matches("0x").to_lowercase()
    );
    let (_, body) = rpc(
        chain,
        "eth_call",
        json!([{"to": token, "data": data}, "latest"]),
    )
    .await;
    u128::from_str_radix(
        body["result"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

/// Recipients of every USDT `Transfer` sent from `from`, as lower-case hex, in chain order.
pub async fn transfers_from(chain: &Chain, from: &str) -> Vec<(String, u128)> {
    transfers_from_in(chain, &chain.s("token"), from).await
}

/// [`transfers_from`] of the token contract `token`.
pub async fn transfers_from_in(chain: &Chain, token: &str, from: &str) -> Vec<(String, u128)> {
    let topic = |a: &str| format!("0x{:0>64}", a.trim_start_matches("0x").to_lowercase());
    let (_, body) = rpc(
        chain,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest", "address": token,
                "topics": ["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef", topic(from)]}]),
    )
    .await;
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|log| {
            let to = log["topics"][2].as_str().unwrap();
            (
                format!("0x{}", &to[26..]),
                u128::from_str_radix(log["data"].as_str().unwrap().trim_start_matches("0x"), 16)
                    .unwrap(),
            )
        })
        .collect()
}

/// The hot wallet's transactions mined so far (`eth_getTransactionCount` at latest): its next
/// nonce, so the number of transactions it ever signed that reached the chain.
pub async fn mined_nonce(chain: &Chain, address: &str) -> u64 {
    let (_, body) = rpc(chain, "eth_getTransactionCount", json!([address, "latest"])).await;
    u64::from_str_radix(
        body["result"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

/// A paid job of `price_micros` run to the end by `miner`'s node over HTTP (the test plays
/// the node: heartbeat, next job, started, finished), its input `input` uploaded by the payer:
/// returns the node's id. The node's owner is then owed the node's share of the price.
pub async fn node_runs_a_paid_job(
    chain: &Chain,
    server: &Server,
    payer: &str,
    miner: &str,
    price_micros: u64,
    input: &'static [u8],
) -> String {
    let price = format!(
        "{}.{:06}",
        price_micros / 1_000_000,
        price_micros % 1_000_000
    );
    let (status, body) = send(
        server,
        Method::POST,
        "/api/nodes/register",
        json!({"name": "rig", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
               "resources": {"cpu_cores": 4, "memory_mb": 8192, "disk_gb": 100, "gpus": [],
                             "max_concurrent_jobs": 1}}),
        Some(miner),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let node = body["node"]["id"].as_str().unwrap().to_string();
    let node_token = body["node_token"].as_str().unwrap().to_string();
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/nodes/{node}/heartbeat"),
        json!({"cpu_percent": 12, "memory_used_mb": 2048, "disk_used_gb": 10, "running_jobs": 0}),
        Some(&node_token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response = client()
        .post(server.url("/api/blobs"))
        .bearer_auth(payer)
        .body(input)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let job_id = uuid::Uuid::new_v4().to_string();
    let payment = create_payment(server, payer, "job", &price, &job_id).await;
    pay(chain, server, payer, "payer_key", &payment, price_micros).await;
    let (status, body) = send(
        server,
        Method::POST,
        "/api/jobs",
        json!({"payment_id": payment, "type": "training", "image": "localhost/aiforge-job:busybox",
               "command": ["sh", "-c", "true"], "env": {},
               "inputs": [aiforge_domain::cid::cid_v0(input)],
               "needs": {"cpu_cores": 1, "memory_mb": 256, "gpus": 0, "gpu_memory_mb": 0},
               "max_runtime_secs": 600, "price": price}),
        Some(payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let response = client()
        .get(server.url(&format!("/api/nodes/{node}/jobs/next")))
        .bearer_auth(&node_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for (what, body) in [
        ("started", json!({"attempt": 1})),
        ("finished", json!({"attempt": 1, "exit_code": 0})),
    ] {
        let (status, answer) = send(
            server,
            Method::POST,
            &format!("/api/nodes/{node}/jobs/{job_id}/{what}"),
            body,
            Some(&node_token),
        )
        .await;
        assert_eq!(status, 200, "{what}: {answer}");
    }
    node
}

/// A creator's published model, an upstream model card named `model` (a service needs a model
/// an engine serves; each name its own file), and its API service at $100 a month: the
/// service's id.
pub async fn monthly_service_on_card(server: &Server, token: &str, model: &str) -> String {
    let response = client()
        .post(server.url("/api/models?name=m"))
        .bearer_auth(token)
        .body(
            format!(
                "aiforge upstream model card\nbase_url: http://127.0.0.1:9/v1\nmodel: {}\n",
                model.replace(' ', "-")
            )
            .into_bytes(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let model = model["model"]["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/publishing/model/{model}/publish"),
        json!({}),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Served", "description": "",
               "pricing": {"type": "monthly", "price_per_month": "100"}, "rate_limits": {}}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["service"]["id"].as_str().unwrap().to_string()
}
