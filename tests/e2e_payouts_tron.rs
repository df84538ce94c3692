//! Money out on Tron, through the real `aiforge` binary on the manual clock and a local Tron
//! full node (`fixtures/tron/server.mjs`, java-tron's HTTP API shapes, signatures checked with
//! tronweb): a subscription paid in USDT on Tron and verified by the `TronVerifier`, then its
//! creator's payable paid from the Tron hot wallet, exactly once through a crash between the
//! recorded signature and the broadcast; an expired transaction and a refused transfer fail the
//! payout and leave the amount payable; a transaction with a bad signature is refused by the
//! node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aiforge_commands::payouts::HotWallet;
use reqwest::Method;
use serde_json::{json, Value};
use support::chain::{monthly_service_on_card, verify, wallet_session, ADMIN_KEY};
use support::tron::{address_of, hot_key, payer_key, start_tron, test_key, tron_session, TronNode};
use support::*;

const START: &str = "2026-11-20T12:00:00Z";
/// 1000 TRX: pays the energy of many transfers.
const TRX_SUN: u64 = 1_000_000_000;
const CONFIRMATIONS: u64 = 19;

async fn run_pass(server: &Server, admin: &str) -> (u16, Value) {
    send(
        server,
        Method::POST,
        "/api/admin/payouts/run",
        json!({}),
        Some(admin),
    )
    .await
}

/// A creator paid $100 on Tron for a subscription: the node, a server on it, the creator's Tron
/// payout wallet and their $90 payable.
struct Scene {
    node: TronNode,
    dir: PathBuf,
    server: Server,
    admin_address: String,
    admin: String,
    creator: String,
    creator_address: String,
    hot: String,
}

impl Scene {
    fn start_server(&self, start: &str, failpoint: bool) -> Server {
        start_server(&self.dir, &self.node, &self.admin_address, start, failpoint)
    }

    /// The creator's payable, as the ledger says.
    async fn payable(&self, server: &Server) -> String {
        let (_, ledger) = get(server, "/api/admin/ledger", Some(&self.admin)).await;
        let (_, me) = me(server, &self.creator).await;
        let user = me["id"].as_str().or(me["user"]["id"].as_str()).unwrap();
        ledger["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == format!("creator_payable:{user}").as_str())
            .map(|a| a["balance"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    async fn withdraw(&self, server: &Server) -> String {
        let (status, body) = send(
            server,
            Method::POST,
            "/api/payouts/withdraw",
            json!({}),
            Some(&self.creator),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        // The withdraw runs a pass at once: the payout may be signed and sent already.
        assert!(
            ["awaiting_payment", "in_progress"]
                .contains(&body["payouts"][0]["state"].as_str().unwrap()),
            "{body}"
        );
        body["payouts"][0]["payout_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A withdraw on a server with the failpoint: the pass it runs aborts the process after the
    /// signed transaction is recorded (or the lease holder's own pass did), so no answer is
    /// expected; the server is gone once this returns.
    async fn withdraw_and_crash(&mut self) {
        let _ = client()
            .post(self.server.url("/api/payouts/withdraw"))
            .bearer_auth(&self.creator)
            .json(&json!({}))
            .send()
            .await;
        wait_exit(&mut self.server);
    }

    /// The creator's only payout.
    async fn only_payout(&self, server: &Server) -> Value {
        let (_, mine) = get(server, "/api/payouts/mine", Some(&self.creator)).await;
        let payouts = mine["payouts"].as_array().unwrap();
        assert_eq!(payouts.len(), 1, "{mine}");
        payouts[0].clone()
    }

    async fn payout(&self, server: &Server, id: &str) -> Value {
        let (_, mine) = get(server, "/api/payouts/mine", Some(&self.creator)).await;
        mine["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["payout_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {mine}"))
    }

    /// Transfers the hot wallet made on the node.
    async fn sent(&self) -> Vec<(String, String, String, u128, String)> {
        let hot = self.hot.clone();
        self.node
            .transfers()
            .await
            .into_iter()
            .filter(|t| t.1 == hot)
            .collect()
    }
}

fn start_server(
    dir: &std::path::Path,
    node: &TronNode,
    admin_address: &str,
    start: &str,
    failpoint: bool,
) -> Server {
    let hot = address_of(&hot_key());
    let mut env = vec![
        ("AIFORGE_MANUAL_CLOCK_START", start.to_string()),
        ("AIFORGE_TRON_API_URL", node.url.clone()),
        ("AIFORGE_TRON_USDT_CONTRACT", node.token.clone()),
        ("AIFORGE_TRON_PLATFORM_WALLET", hot),
        ("AIFORGE_TRON_HOT_WALLET_KEY", hot_key()),
        ("AIFORGE_ADMIN_WALLETS", admin_address.to_string()),
    ];
    if failpoint {
        env.push(("AIFORGE_PAYOUT_FAILPOINT", "after_sign".to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(dir, &env)
}

/// The scene up to the creator's $90 payable. The payment in is a real TRC-20 transfer from
/// the payer's Tron wallet, signed by our own signer and checked by the node, verified by the
/// `TronVerifier` once 19 blocks deep (and not at 18).
async fn scene(failpoint: bool) -> Option<Scene> {
    let node = start_tron(START)?;
    let (admin_address, _) = wallet_sign("ethereum", ADMIN_KEY, "probe")?;
    let hot = address_of(&hot_key());
    let payer = address_of(&payer_key());
    node.fund(&hot, 0, TRX_SUN).await;
    node.fund(&payer, 100_000_000, TRX_SUN).await;
    let dir = temp_dir();
    let server = start_server(&dir, &node, &admin_address, START, failpoint);
    let creator_key = test_key("aiforge tests: tron creator");
    let creator_address = address_of(&creator_key);
    let creator = tron_session(&server, &creator_key).await;
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/wallets/payout",
        json!({"network": "tron", "address": creator_address}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let service = monthly_service_on_card(&server, &creator, "tron model").await;

    let payer_token = tron_session(&server, &payer_key()).await;
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({"network": "tron"}),
        Some(&payer_token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    let tx = node.transfer(&payer_key(), &hot, 100_000_000).await;
    node.mine(CONFIRMATIONS - 1).await;
    let (status, body) = verify(&server, &payer_token, &payment, &tx).await;
    assert_eq!(
        (status, body["verification"]["confirmations"].as_u64()),
        (202, Some(CONFIRMATIONS - 1)),
        "18 confirmations are not enough: {body}"
    );
    node.mine(1).await;
    let (status, body) = verify(&server, &payer_token, &payment, &tx).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(node.usdt(&hot).await, 100_000_000);

    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let scene = Scene {
        node,
        dir,
        server,
        admin_address,
        admin,
        creator,
        creator_address,
        hot,
    };
    assert_eq!(scene.payable(&scene.server).await, "90.000000");
    Some(scene)
}

/// Runs passes, mining `blocks` before each, until the payout is in `state`.
async fn until_state(scene: &Scene, server: &Server, id: &str, state: &str, blocks: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        scene.node.mine(blocks).await;
        let (status, body) = run_pass(server, &scene.admin).await;
        assert_eq!(status, 200, "{body}");
        let payout = scene.payout(server, id).await;
        if payout["state"] == state {
            return payout;
        }
        assert!(Instant::now() < deadline, "{id} never {state}: {payout}");
    }
}

/// Waits for a server that aborts itself (the failpoint) to be gone.
fn wait_exit(server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the failpoint did not abort the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The payee's wallet grows by exactly the payable; the payout is in progress until its
/// transaction is 19 blocks deep, then completed, and the payable is paid out through the hot
/// wallet's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tron_payout_pays_the_payees_payout_wallet_exactly_its_payable_after_19_blocks() {
    let Some(scene) = scene(false).await else {
        return;
    };
    let server = &scene.server;
    let id = scene.withdraw(server).await;
    let (status, body) = run_pass(server, &scene.admin).await;
    assert_eq!(status, 200, "{body}");
    let payout = scene.payout(server, &id).await;
    assert_eq!(payout["state"], "in_progress", "{payout}");
    let hash = payout["tx_hash"].as_str().unwrap().to_string();
    assert!(payout["explorer_url"]
        .as_str()
        .unwrap()
        .starts_with("https://tronscan.org/"));
    // In the first block, then 17 more: 18 confirmations, still in progress.
    scene.node.mine(CONFIRMATIONS - 1).await;
    let (status, body) = run_pass(server, &scene.admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(scene.payout(server, &id).await["state"], "in_progress");
    assert_eq!(scene.node.usdt(&scene.creator_address).await, 90_000_000);
    let payout = until_state(&scene, server, &id, "completed", 1).await;
    assert_eq!(payout["tx_hash"], hash.as_str());
    assert_eq!(
        scene.sent().await,
        [(
            hash,
            scene.hot.clone(),
            scene.creator_address.clone(),
            90_000_000,
            "SUCCESS".to_string()
        )]
    );
    assert_eq!(scene.node.usdt(&scene.creator_address).await, 90_000_000);
    assert_eq!(scene.node.usdt(&scene.hot).await, 10_000_000);
    assert_eq!(scene.payable(server).await, "0.000000");
    let (_, ledger) = get(server, "/api/admin/ledger", Some(&scene.admin)).await;
    assert_eq!(ledger["sum_micros"], "0", "{ledger}");
    let hot_account = ledger["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "hot_wallet:tron")
        .cloned();
    assert_eq!(
        hot_account.map(|a| a["balance"].clone()),
        Some(json!("90.000000")),
        "{ledger}"
    );
    // The admin's view of the hot wallet: what the node says it holds.
    let (_, wallets) = get(server, "/api/admin/payouts/hot-wallet", Some(&scene.admin)).await;
    assert_eq!(wallets["hot_wallets"][0]["usdt"], "10.000000", "{wallets}");
    let Scene { server, .. } = scene;
    server.stop();
}

/// The first instance aborts right after recording the signed transaction, before any
/// broadcast; the restart broadcasts that same transaction, and the node takes in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_the_recorded_signature_broadcasts_that_same_tron_transaction_once() {
    let Some(mut scene) = scene(true).await else {
        return;
    };
    scene.withdraw_and_crash().await;
    assert_eq!(scene.node.accepted().await, 1, "only the payment went out");
    scene.server = scene.start_server(START, false);
    let payout = scene.only_payout(&scene.server).await;
    assert_eq!(payout["state"], "in_progress", "{payout}");
    let id = payout["payout_id"].as_str().unwrap().to_string();
    let hash = payout["tx_hash"].as_str().unwrap().to_string();
    let server = &scene.server;
    let payout = until_state(&scene, server, &id, "completed", CONFIRMATIONS).await;
    assert_eq!(payout["tx_hash"], hash.as_str());
    assert_eq!(scene.node.accepted().await, 2);
    let sent = scene.sent().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, hash);
    assert_eq!(scene.node.usdt(&scene.creator_address).await, 90_000_000);
    let Scene { server, .. } = scene;
    server.stop();
}

/// Signed and recorded, never broadcast (the crash), and the node's time and the server's clock
/// pass its expiration: the payout fails as expired, nothing was paid, the amount is payable
/// again, and a new withdraw pays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_unbroadcast_tron_transaction_fails_the_payout_and_the_amount_stays_payable() {
    let Some(mut scene) = scene(true).await else {
        return;
    };
    scene.withdraw_and_crash().await;
    assert_eq!(scene.node.accepted().await, 1, "only the payment went out");
    // An hour later on both clocks: 1200 blocks of 3 s on the node.
    scene.node.mine(1200).await;
    scene.server = scene.start_server("2026-11-20T13:00:00Z", false);
    let server = &scene.server;
    let id = scene.only_payout(server).await["payout_id"]
        .as_str()
        .unwrap()
        .to_string();
    let payout = until_state(&scene, server, &id, "failed", 0).await;
    assert!(
        payout["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{payout}"
    );
    assert!(scene.sent().await.is_empty());
    assert_eq!(scene.node.accepted().await, 1, "only the payment went out");
    assert_eq!(scene.payable(server).await, "90.000000");
    // The amount is payable again: a new payout takes it, and pays it.
    let again = scene.withdraw(server).await;
    assert_ne!(again, id);
    until_state(&scene, server, &again, "completed", CONFIRMATIONS).await;
    assert_eq!(scene.node.usdt(&scene.creator_address).await, 90_000_000);
    assert_eq!(scene.payable(server).await, "0.000000");
    let Scene { server, .. } = scene;
    server.stop();
}

/// The token refuses to pay the payee (as USDT's blacklist does): the transfer is mined as a
/// REVERT, the payout fails with the chain's reason, and nothing leaves the payable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tron_transfer_the_token_refuses_fails_the_payout_with_the_reason() {
    let Some(scene) = scene(false).await else {
        return;
    };
    scene
        .node
        .call("/test/refuse", json!({ "address": scene.creator_address }))
        .await;
    let server = &scene.server;
    let id = scene.withdraw(server).await;
    let payout = until_state(&scene, server, &id, "failed", 1).await;
    let reason = payout["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("REVERT") && reason.contains("reverted"),
        "{payout}"
    );
    let sent = scene.sent().await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].4, "REVERT");
    assert_eq!(scene.node.usdt(&scene.creator_address).await, 0);
    assert_eq!(scene.payable(server).await, "90.000000");
    let Scene { server, .. } = scene;
    server.stop();
}

/// The node takes a transfer only when its signature recovers to the owner: a signature
/// changed in one byte, or made by another key, is refused (SIGERROR) and moves nothing; the
/// real one is taken, and taken again is no error (DUP_TRANSACTION_ERROR).
#[tokio::test]
async fn the_node_refuses_a_transfer_whose_signature_does_not_recover_to_the_owner() {
    let Some(node) = start_tron(START) else {
        return;
    };
    let hot = address_of(&hot_key());
    let payee = address_of(&test_key("aiforge tests: tron creator"));
    node.fund(&hot, 5_000_000, TRX_SUN).await;
    let wallet = node.wallet(&hot_key());
    let signed = wallet.sign_transfer(&payee, 5_000_000, None).await.unwrap();
    let raw: Value = serde_json::from_str(&signed.raw).unwrap();
    let signature = raw["signature"][0].as_str().unwrap().to_string();
    assert_eq!(signature.len(), 130, "r || s || v");

    let mut flipped = raw.clone();
    let mut bytes = hex::decode(&signature).unwrap();
    bytes[10] ^= 1;
    flipped["signature"] = json!([hex::encode(bytes)]);
    let other = node.wallet(&payer_key());
    let by_other = other.sign_transfer(&payee, 5_000_000, None).await.unwrap();
    let mut foreign = raw.clone();
    let other_signature: Value = serde_json::from_str(&by_other.raw).unwrap();
    foreign["signature"] = other_signature["signature"].clone();
    for bad in [flipped, foreign] {
        let answer = node.call("/wallet/broadcasttransaction", bad.clone()).await;
        assert_eq!(answer["code"], "SIGERROR", "{answer}");
        // Our wallet reports the refusal as an error, never as sent.
        let tampered = aiforge_domain::payout::SignedTransfer {
            raw: bad.to_string(),
            ..signed.clone()
        };
        let err = wallet.broadcast(&tampered).await.unwrap_err();
        assert!(err.to_string().contains("SIGERROR"), "{err}");
    }
    node.mine(1).await;
    assert!(node.transfers().await.is_empty());
    assert_eq!(node.accepted().await, 0);

    wallet.broadcast(&signed).await.unwrap();
    wallet.broadcast(&signed).await.unwrap();
    assert_eq!(node.accepted().await, 1);
    node.mine(1).await;
    let transfers = node.transfers().await;
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0].0, signed.hash);
    assert_eq!(node.usdt(&payee).await, 5_000_000);
}
