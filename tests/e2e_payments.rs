//! End-to-end: USDT payments verified on a real local Ethereum chain (ganache with an ERC-20
//! compiled by solc, `fixtures/chain/`), through the real `aiforge` binary: subscriptions paid
//! and activated, every way a transfer can fail to pay, one transaction for one payment (also
//! when two verifications race), the double-entry ledger, and a down RPC node.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::chain::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdt_payments_are_verified_on_chain_and_posted_to_a_balanced_ledger() {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let (rpc, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_ETH_RPC_URL", &rpc),
            ("AIFORGE_ETH_USDT_CONTRACT", &usdt),
            ("AIFORGE_ETH_PLATFORM_WALLET", &platform),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
        ],
    );
    let payer_key = chain.s("payer_key");
    let payer_key = payer_key.trim_start_matches("0x");
    let payer = wallet_session(&server, payer_key).await.unwrap();

    // A Pro subscription: its payment is created with the platform wallet and the exact amount.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/subscriptions/create",
        json!({"plan": "pro", "network": "ethereum"}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payment"]["amount"], "30.000000");
    assert_eq!(
        body["payment"]["pay_to"].as_str().unwrap().to_lowercase(),
        platform.to_lowercase()
    );
    let subscription_payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    let events = event_count(&server).await;

    // Every way a transaction can fail to pay: refused, nothing appended.
    let too_little = chain.transfer(payer_key, &usdt, &platform, 29_999_999);
    let wrong_token = chain.transfer(payer_key, &chain.s("wrong_token"), &platform, 30_000_000);
    let wrong_address = chain.transfer(payer_key, &usdt, &chain.s("other"), 30_000_000);
    let reverted = chain.transfer(payer_key, &usdt, &platform, 10_000_000_000_000); // more than the balance
    let other_key = chain.s("other_key");
    let from_stranger = chain.transfer(
        other_key.trim_start_matches("0x"),
        &usdt,
        &platform,
        30_000_000,
    );
    chain.mine(3).await;
    for (tx, code) in [
        (&too_little, "underpaid"),
        (&wrong_token, "no_transfer_to_platform"),
        (&wrong_address, "no_transfer_to_platform"),
        (&reverted, "tx_failed"),
        (&from_stranger, "sender_not_payer_wallet"),
    ] {
        let (status, body) = verify(&server, &payer, &subscription_payment, tx).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some(code)),
            "{body}"
        );
    }
    let (status, body) = verify(
        &server,
        &payer,
        &subscription_payment,
        &format!("0x{}", "ab".repeat(32)),
    )
    .await;
    assert_eq!(
        (status, body["verification"]["confirmations"].as_u64()),
        (202, Some(0)),
        "unknown tx: pending, {body}"
    );
    let (status, body) = verify(&server, &payer, &subscription_payment, "0x1234").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("tx_hash"))
    );
    assert_eq!(
        event_count(&server).await,
        events,
        "no refused verification appended an event"
    );

    // The exact payment: 1 confirmation, 2, then 3 confirms it.
    let exact = chain.transfer(payer_key, &usdt, &platform, 30_000_000);
    let (status, body) = verify(&server, &payer, &subscription_payment, &exact).await;
    assert_eq!(
        (status, body["verification"]["confirmations"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    chain.mine(1).await;
    let (status, body) = verify(&server, &payer, &subscription_payment, &exact).await;
    assert_eq!(
        (status, body["verification"]["confirmations"].as_u64()),
        (202, Some(2)),
        "{body}"
    );
    chain.mine(1).await;
    let (status, body) = verify(&server, &payer, &subscription_payment, &exact).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payment"]["status"], "confirmed");
    assert_eq!(body["payment"]["platform_fee"], "9.000000");
    assert_eq!(body["payment"]["net"], "21.000000");
    assert_eq!(body["payment"]["fee_schedule_version"], 1);

    // The subscription activates when its payment confirms (a reactor follows the log).
    let mut active = Value::Null;
    for _ in 0..100 {
        let (_, mine) = get(&server, "/api/subscriptions/my-subscription", Some(&payer)).await;
        if !mine["subscription"]["active"].is_null() {
            active = mine["subscription"]["active"].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(active["plan"], "pro", "the paid subscription is active");

    // The same transaction cannot pay for anything else.
    let listing = create_payment(&server, &payer, "listing_fee", "2", "model:m1").await;
    let (status, body) = verify(&server, &payer, &listing, &exact).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("tx_already_used")),
        "{body}"
    );

    // Two verifications of one transaction for two payments, at once: exactly one wins.
    let first = create_payment(&server, &payer, "listing_fee", "2", "model:m2").await;
    let second = create_payment(&server, &payer, "listing_fee", "2", "model:m3").await;
    let shared = chain.transfer(payer_key, &usdt, &platform, 2_000_000);
    chain.mine(2).await;
    let (a, b) = tokio::join!(
        verify(&server, &payer, &first, &shared),
        verify(&server, &payer, &second, &shared)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");

    // The ledger balances: every posting sums to zero; fees and the month's pool as expected.
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, ledger) = get(&server, "/api/admin/ledger", Some(&admin)).await;
    assert_eq!(status, 200, "{ledger}");
    assert_eq!(ledger["sum_micros"], "0");
    let balance = |prefix: &str| {
        ledger["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"].as_str().unwrap().starts_with(prefix))
            .map(|a| a["balance"].as_str().unwrap().to_string())
    };
    assert_eq!(
        balance("platform_fees:").as_deref(),
        Some("11.000000"),
        "9 of the subscription + 2 listing fee"
    );
    assert_eq!(balance("subscription_pool:").as_deref(), Some("21.000000"));
    assert_eq!(balance("payer:").as_deref(), Some("-32.000000"));
    let (_, history) = get(
        &server,
        "/api/payments/history/all?per_page=10",
        Some(&payer),
    )
    .await;
    assert_eq!(history["total"], 4, "subscription, three listing fees");
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_amounts_are_refused_and_a_down_rpc_node_is_a_503_never_a_confirmation() {
    let dir = temp_dir();
    // Port 9 (discard) on loopback: nothing listens, so every RPC call fails fast.
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_ETH_RPC_URL", "http://127.0.0.1:9"),
            (
                "AIFORGE_ETH_USDT_CONTRACT",
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            ),
            (
                "AIFORGE_ETH_PLATFORM_WALLET",
                "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            ),
        ],
    );
    let body =
        json!({"email": "pay@example.com", "username": "payer", "password": "long password"});
    assert_eq!(post(&server, "/api/auth/register", body, None).await.0, 201);
    let (_, session) = login(&server, "pay@example.com", "long password").await;
    let token = session["access_token"].as_str().unwrap().to_string();
    let events = event_count(&server).await;
    for amount in [
        json!("0"),
        json!("-1"),
        json!("1.0000001"),
        json!("1000000000000000000000"),
        json!("abc"),
        json!(null),
        json!(true),
    ] {
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/payments/create",
            json!({"type": "job", "network": "ethereum", "amount": amount, "reference": "0191c1d2-7f3a-7c3e-9d1e-2b9f4e5a6c7d"}),
            Some(&token),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("amount")),
            "{amount} -> {body}"
        );
    }
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/payments/create",
        json!({"type": "donation", "network": "ethereum", "amount": "1", "reference": "x"}),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("type"))
    );
    let (status, body) = send(&server, Method::POST, "/api/payments/create", json!({"type": "publishing_fee", "network": "ethereum", "amount": "4", "reference": "model:x"}), Some(&token)).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("amount")),
        "publishing is exactly 5: {body}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/payments/create",
        json!({"type": "job", "network": "tron", "amount": "1", "reference": "0191c1d2-7f3a-7c3e-9d1e-2b9f4e5a6c7d"}),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("network_not_configured"))
    );
    assert_eq!(event_count(&server).await, events, "nothing written");

    let payment = create_payment(
        &server,
        &token,
        "job",
        "12.5",
        "0191c1d2-7f3a-7c3e-9d1e-2b9f4e5a6c7d",
    )
    .await;
    let response = client()
        .post(server.url("/api/payments/verify"))
        .bearer_auth(&token)
        .json(&json!({"payment_id": payment, "tx_hash": format!("0x{}", "cd".repeat(32))}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let (_, body) = get(&server, &format!("/api/payments/{payment}"), Some(&token)).await;
    assert_eq!(body["payment"]["status"], "pending");
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}
