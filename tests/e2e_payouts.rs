//! Money out, through the real `aiforge` binary on the manual clock: the monthly close that runs
//! by itself once a month has ended and settled (exactly once, across a `kill -9` in the middle
//! of it, and still by hand); and the payouts it makes, paid on a real ganache chain with the
//! ERC-20 from the platform's hot wallet, exactly once through a crash between the recorded
//! signature and the broadcast.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::chain::{
    mined_nonce, monthly_service_on_card, node_runs_a_paid_job, pay, pay_in, rpc, start_chain,
    token_balance, token_balance_of, transfers_from, transfers_from_in, wallet_session, Chain,
    ADMIN_KEY,
};
use support::*;

async fn advance(server: &Server, seconds: i64) -> Value {
    let (status, body) = post(
        server,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The payloads of the events of `event_type` in the SQLite log of a server (stopped, or
/// read beside it), in log order.
async fn events_in_log(dir: &Path, event_type: &str) -> Vec<Value> {
    let db = dir.join("aiforge.db");
    let connection = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = ? ORDER BY global_position",
    )
    .bind(event_type)
    .fetch_all(&connection)
    .await
    .unwrap();
    connection.close().await;
    payloads
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap()[event_type].clone())
        .collect()
}

/// `MonthClosed` events in the SQLite log of a stopped server, by month.
async fn closes_in_log(dir: &Path) -> Vec<String> {
    events_in_log(dir, "MonthClosed")
        .await
        .iter()
        .map(|v| v["distribution"]["month"].as_str().unwrap().to_string())
        .collect()
}

async fn closed_by(server: &Server, admin: &str, month: &str) -> (u16, Value) {
    get(
        server,
        &format!("/api/revenue/distribution/{month}"),
        Some(admin),
    )
    .await
}

/// October holds the first event; it closes by itself a settling day after its end, not a
/// second earlier, and a hand close of it is then refused. November is closed by hand before
/// its settling day ends: the schedule leaves it alone.
#[tokio::test]
async fn a_month_closes_by_itself_once_it_has_ended_and_settled_and_by_hand_too() {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-10-20T12:00:00Z"),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
        ],
    );
    let _ = register_and_sign_in(&server, "someone@example.com").await;
    // November 1st, 23:59:59: October has ended, the settling day has not.
    let body = advance(&server, 12 * 86_400 + 11 * 3600 + 3599).await;
    assert_eq!(body["months_closed"], json!([]), "{body}");
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, body) = closed_by(&server, &admin, "2026/10").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("month_not_closed")),
        "{body}"
    );
    let body = advance(&server, 1).await;
    assert_eq!(body["now"], "2026-11-02T00:00:00.000000Z");
    // Closed by this advance's pass (or the minute's pass, had it run in between).
    let (status, body) = closed_by(&server, &admin, "2026/10").await;
    assert_eq!(
        (status, body["closed_by"].as_str()),
        (200, Some("scheduler")),
        "{body}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/10",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_closed")),
        "{body}"
    );
    // December 1st, noon: the admin closes November before the schedule would.
    let body = advance(&server, 29 * 86_400 + 12 * 3600).await;
    assert_eq!(body["months_closed"], json!([]), "{body}");
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/11",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let body = advance(&server, 86_400).await;
    assert_eq!(body["months_closed"], json!([]), "{body}");
    // Sessions last a day on the app clock.
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, body) = closed_by(&server, &admin, "2026/11").await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["closed_by"], "scheduler", "{body}");
    server.stop();
    assert_eq!(closes_in_log(&dir).await, ["2026-10", "2026-11"]);
}

/// `kill -9` while the scheduled close runs: whether the close was recorded or not, the next
/// start closes the month if it must, and the log holds exactly one close of it.
#[tokio::test]
async fn a_close_killed_midway_is_recorded_exactly_once_after_the_restart() {
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[("AIFORGE_MANUAL_CLOCK_START", "2026-10-20T12:00:00Z")],
    );
    let _ = register_and_sign_in(&server, "someone@example.com").await;
    let advancing = {
        let url = server.url("/api/ops/clock/advance");
        tokio::spawn(async move {
            client()
                .post(url)
                .json(&json!({ "seconds": 13 * 86_400 }))
                .send()
                .await
        })
    };
    // Killed as soon as the close has begun or ended: the process never finishes its answer
    // (or finishes it just in time); either way the restart must settle to one close.
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = closes_in_log(&dir).await.len();
        if before > 0 || advancing.is_finished() || Instant::now() > deadline {
            break;
        }
        tokio::task::yield_now().await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = advancing.await;
    drop(server);
    // The same data, the clock past October's settling day: the start's pass closes it.
    let server = Server::start(
        &dir,
        &[("AIFORGE_MANUAL_CLOCK_START", "2026-11-02T00:00:01Z")],
    );
    // The start's own pass may have closed it already; this one closes it otherwise.
    let _ = advance(&server, 1).await;
    server.stop();
    assert_eq!(closes_in_log(&dir).await, ["2026-10"]);
}

// ---- payouts on a real chain ------------------------------------------------------------------

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

/// A payee: a wallet sign-in (so a verified wallet) chosen as the payout wallet.
struct Payee {
    user_id: String,
    address: String,
}

async fn payee(server: &Server, key: &str) -> (Payee, String) {
    let key = key.trim_start_matches("0x");
    let token = wallet_session(server, key).await.unwrap();
    let (address, _) = wallet_sign("ethereum", key, "probe").unwrap();
    let (status, body) = send(
        server,
        Method::POST,
        "/api/wallets/payout",
        json!({"network": "ethereum", "address": address}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, me) = me(server, &token).await;
    let user_id = me["id"]
        .as_str()
        .or(me["user"]["id"].as_str())
        .unwrap()
        .to_string();
    (Payee { user_id, address }, token)
}

/// Three creators' API services and a group's (split 50/30/20 from November), each subscribed
/// once for $100 in November: each creator is owed $90 at once, the group's $90 goes to
/// its members at November's close. Closes by itself on December 2nd; the payouts go from the
/// hot wallet (the platform wallet, which received the payments). With a `crash` failpoint,
/// the first instance aborts right after recording its first signed transaction
/// (`after_sign`: before broadcasting it; the restart sends that same transaction and the
/// rest) or right after broadcasting it (`after_broadcast`: before its confirmation; the
/// restart follows that same transaction to completion and pays the rest). Either way nothing
/// is signed twice: six `PayoutTransactionSigned` events, six transactions of the hot wallet.
async fn a_month_pays_out(crash: Option<&'static str>) {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let (rpc_url, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let hot_key = chain.s("platform_key");
    let env = |start: &'static str, failpoint: Option<&'static str>| {
        let mut env = vec![
            ("AIFORGE_MANUAL_CLOCK_START", start.to_string()),
            ("AIFORGE_ETH_RPC_URL", rpc_url.clone()),
            ("AIFORGE_ETH_USDT_CONTRACT", usdt.clone()),
            ("AIFORGE_ETH_PLATFORM_WALLET", platform.clone()),
            ("AIFORGE_ETH_HOT_WALLET_KEY", hot_key.clone()),
            ("AIFORGE_ADMIN_WALLETS", admin_address.clone()),
            // Only the passes the test drives (the clock's, `run`): a timed pass between
            // November's payments would pay them under October's close, before November's.
            ("AIFORGE_PAYOUT_PASS_SECS", "3600".to_string()),
        ];
        if let Some(failpoint) = failpoint {
            env.push(("AIFORGE_PAYOUT_FAILPOINT", failpoint.to_string()));
        }
        env
    };
    let start = |start: &'static str, failpoint: Option<&'static str>| {
        let env = env(start, failpoint);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start(&dir, &env)
    };
    let server = start("2026-10-20T12:00:00Z", crash);
    let keys: Vec<String> = chain.info["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut payees = Vec::new();
    let mut tokens = Vec::new();
    for key in &keys[3..9] {
        let (p, token) = payee(&server, key).await;
        payees.push(p);
        tokens.push(token);
    }
    let (status, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "Lab", "description": ""}),
        Some(&tokens[3]),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group = group["group"]["group_id"].as_str().unwrap().to_string();
    for member in [4, 5] {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/groups/{group}/members"),
            json!({"user_id": payees[member].user_id, "role": "MEMBER"}),
            Some(&tokens[3]),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut services = Vec::new();
    for (i, token) in tokens.iter().take(3).enumerate() {
        services.push(monthly_service_on_card(&server, token, &format!("model {i}")).await);
    }
    let response = client()
        .post(server.url(&format!("/api/models?name=m&group_id={group}")))
        .bearer_auth(&tokens[3])
        .body(
            b"aiforge upstream model card\nbase_url: http://127.0.0.1:9/v1\nmodel: group\n"
                .to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let group_model = model["model"]["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/group-revenue/model/{group_model}/split"),
        json!({"shares": [{"user_id": payees[3].user_id, "percent": 50},
                          {"user_id": payees[4].user_id, "percent": 30},
                          {"user_id": payees[5].user_id, "percent": 20}]}),
        Some(&tokens[3]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/publishing/model/{group_model}/publish"),
        json!({}),
        Some(&tokens[3]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": group_model, "name": "Served", "description": "",
               "pricing": {"type": "monthly", "price_per_month": "100"}, "rate_limits": {}}),
        Some(&tokens[3]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    services.push(body["service"]["id"].as_str().unwrap().to_string());

    // November: the payer subscribes to the four services.
    let _ = advance(&server, 13 * 86_400).await;
    let payer = wallet_session(&server, chain.s("payer_key").trim_start_matches("0x"))
        .await
        .unwrap();
    for service in &services {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/marketplace/{service}/subscribe"),
            json!({"network": "ethereum"}),
            Some(&payer),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
        pay(&chain, &server, &payer, "payer_key", &payment, 100_000_000).await;
    }
    // A seventh payee's node runs a paid $20 job; its owner is owed 95%, at their verified
    // payout wallet (the wallet typed at the node's registration is another: not proof).
    let (miner, miner_token) = payee(&server, &keys[2]).await;
    node_runs_a_paid_job(
        &chain,
        &server,
        &payer,
        &miner_token,
        20_000_000,
        b"a job paid out at the close\n",
    )
    .await;
    payees.push(miner);
    // October closed at the advance above; its close does not pay November's money: a pass
    // now asks for nothing, and each payable waits for November's close.
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, report) = run_pass(&server, &admin).await;
    assert_eq!(status, 200, "{report}");
    let (_, list) = get(&server, "/api/admin/payouts", Some(&admin)).await;
    assert_eq!(list["payouts"], json!([]), "{list}");
    let expected: Vec<u128> = vec![90, 90, 90, 45, 27, 18, 19]
        .into_iter()
        .map(|d| d * 1_000_000)
        .collect();
    let before: Vec<u128> = {
        let mut b = Vec::new();
        for p in &payees {
            b.push(token_balance(&chain, &p.address).await);
        }
        b
    };

    // December 2nd: November closes by itself and its payouts go.
    let advanced = client()
        .post(server.url("/api/ops/clock/advance"))
        .json(&json!({"seconds": 30 * 86_400}))
        .send()
        .await;
    let server = if let Some(failpoint) = crash {
        // The failpoint aborts the process at the first transaction.
        assert!(
            advanced.is_err(),
            "the instance aborted mid-pass: {advanced:?}"
        );
        let mut server = server;
        let _ = server.child.wait();
        drop(server);
        let sent = transfers_from(&chain, &platform).await;
        if failpoint == "after_sign" {
            assert!(sent.is_empty(), "nothing was broadcast before the crash");
        } else {
            // ganache mines at once: one block, short of the three confirmations.
            assert_eq!(sent.len(), 1, "one broadcast before the crash: {sent:?}");
        }
        assert_eq!(events_in_log(&dir, "PayoutCompleted").await.len(), 0);
        start("2026-12-02T12:00:01Z", None)
    } else {
        let body: Value = advanced.unwrap().json().await.unwrap();
        assert_eq!(body["now"], "2026-12-02T12:00:00.000000Z", "{body}");
        server
    };
    // Three confirmations, then the pass completes them.
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        chain.mine(1).await;
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/admin/payouts/run",
            json!({}),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (_, list) = get(&server, "/api/admin/payouts?state=completed", Some(&admin)).await;
        if list["payouts"].as_array().unwrap().len() == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "seven payouts complete: {list}");
    }
    // Sessions last a day on the app clock: the payees sign in again.
    let mut tokens = Vec::new();
    for key in keys[3..9].iter().chain([&keys[2]]) {
        tokens.push(
            wallet_session(&server, key.trim_start_matches("0x"))
                .await
                .unwrap(),
        );
    }
    // Each payee paid exactly once, exactly their payable.
    let sent = transfers_from(&chain, &platform).await;
    assert_eq!(sent.len(), 7, "{sent:?}");
    for (i, p) in payees.iter().enumerate() {
        let after = token_balance(&chain, &p.address).await;
        assert_eq!(after - before[i], expected[i], "payee {i}");
        let to_them: Vec<_> = sent
            .iter()
            .filter(|(to, _)| *to == p.address.to_lowercase())
            .collect();
        assert_eq!(to_them.len(), 1, "payee {i}: {sent:?}");
        let (_, mine) = get(&server, "/api/payouts/mine", Some(&tokens[i])).await;
        let mine = mine["payouts"].as_array().unwrap().clone();
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0]["state"], "completed");
        assert_eq!(mine[0]["month"], "2026-11");
        // The default explorer.
        assert_eq!(
            mine[0]["explorer_url"].as_str().unwrap(),
            format!(
                "https://etherscan.io/tx/{}",
                mine[0]["tx_hash"].as_str().unwrap()
            )
        );
    }
    // The close's receipt: each payee's proof leads to the published root; a changed amount
    // does not.
    let (status, receipt) = get(&server, "/api/payouts/receipts/2026/11", None).await;
    assert_eq!(
        (status, receipt["payouts"].as_u64()),
        (200, Some(7)),
        "{receipt}"
    );
    for (i, token) in tokens.iter().enumerate() {
        let (_, mine) = get(&server, "/api/payouts/mine", Some(token)).await;
        let id = mine["payouts"][0]["payout_id"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, proof) = get(&server, &format!("/api/payouts/{id}/proof"), Some(token)).await;
        assert_eq!(status, 200, "{proof}");
        assert_eq!(proof["root"], receipt["root"]);
        let mut leaf: aiforge_domain::merkle::ReceiptLeaf =
            serde_json::from_value(proof["leaf"].clone()).unwrap();
        assert_eq!(leaf.payee, payees[i].user_id);
        assert_eq!(leaf.wallet, format!("ethereum:{}", payees[i].address));
        let steps: Vec<aiforge_domain::merkle::ProofStep> =
            serde_json::from_value(proof["proof"].clone()).unwrap();
        let root = receipt["root"].as_str().unwrap();
        assert!(
            aiforge_domain::merkle::verify(&leaf, &steps, root),
            "{proof}"
        );
        leaf.amount = "1000.000000".to_string();
        assert!(!aiforge_domain::merkle::verify(&leaf, &steps, root));
    }
    // Payables are zero; every account balances.
    let (_, ledger) = get(&server, "/api/admin/ledger", Some(&admin)).await;
    assert_eq!(ledger["sum_micros"], "0", "{ledger}");
    for account in ledger["accounts"].as_array().unwrap() {
        let name = account["account"].as_str().unwrap();
        if name.starts_with("creator_payable:")
            || name.starts_with("node_payable:")
            || name.starts_with("group_revenue:")
        {
            assert_eq!(account["balance"], "0.000000", "{account}");
        }
        if name == "hot_wallet:ethereum" {
            assert_eq!(account["balance"], "379.000000", "{account}");
        }
    }
    // Nothing signed twice: one recorded signature and one hot wallet transaction per payout.
    assert_eq!(mined_nonce(&chain, &platform).await, 7);
    server.stop();
    assert_eq!(
        events_in_log(&dir, "PayoutTransactionSigned").await.len(),
        7
    );
    let receipts = events_in_log(&dir, "PayoutReceiptPublished").await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0]["root"], receipt["root"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_month_pays_every_payee_exactly_their_payable_on_chain() {
    a_month_pays_out(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_the_recorded_signature_and_the_broadcast_sends_that_same_transaction_once()
{
    a_month_pays_out(Some("after_sign")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_the_broadcast_and_the_confirmation_completes_that_same_transaction_once() {
    a_month_pays_out(Some("after_broadcast")).await;
}

/// A creator's $90 payable over a $50 approval threshold, from a hot wallet with no USDT: the
/// withdraw waits for approval; cancelled, the amount stays payable; withdrawn again and
/// approved, it waits with its reason until the hot wallet is funded, then goes, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payout_over_the_threshold_waits_for_approval_and_a_short_hot_wallet_says_why() {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let hot = chain.s("other");
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-20T12:00:00Z"),
            ("AIFORGE_ETH_RPC_URL", &chain.s("rpc_url")),
            ("AIFORGE_ETH_USDT_CONTRACT", &chain.s("token")),
            ("AIFORGE_ETH_PLATFORM_WALLET", &chain.s("platform")),
            ("AIFORGE_ETH_HOT_WALLET_KEY", &chain.s("other_key")),
            ("AIFORGE_PAYOUT_APPROVAL_THRESHOLD", "50"),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
        ],
    );
    let keys: Vec<String> = chain.info["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let (creator, token) = payee(&server, &keys[3]).await;
    let service = monthly_service_on_card(&server, &token, "one model").await;
    let payer = wallet_session(&server, chain.s("payer_key").trim_start_matches("0x"))
        .await
        .unwrap();
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({"network": "ethereum"}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    pay(&chain, &server, &payer, "payer_key", &payment, 100_000_000).await;
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let payable = |server: &Server| {
        let admin = admin.clone();
        let account = format!("creator_payable:{}", creator.user_id);
        let url = server.url("/api/admin/ledger");
        async move {
            let body: Value = client()
                .get(url)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["account"] == account.as_str())
                .map(|a| a["balance"].as_str().unwrap().to_string())
                .unwrap_or_default()
        }
    };
    assert_eq!(payable(&server).await, "90.000000");

    let withdraw = || {
        send(
            &server,
            Method::POST,
            "/api/payouts/withdraw",
            json!({}),
            Some(&token),
        )
    };
    let (status, body) = withdraw().await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payouts"][0]["state"], "awaiting_approval", "{body}");
    let first = body["payouts"][0]["payout_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A second withdraw finds nothing free: the open payout holds the whole payable.
    let (status, body) = withdraw().await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("below_payout_minimum")),
        "{body}"
    );
    let (_, pending) = get(
        &server,
        "/api/admin/payouts?state=awaiting_approval",
        Some(&admin),
    )
    .await;
    assert_eq!(pending["payouts"].as_array().unwrap().len(), 1, "{pending}");
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/admin/payouts/{first}/cancel"),
        json!({"reason": "checking the payee first"}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["payout"]["state"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    assert_eq!(
        payable(&server).await,
        "90.000000",
        "the amount stays payable"
    );

    let (status, body) = withdraw().await;
    assert_eq!(status, 201, "{body}");
    let second = body["payouts"][0]["payout_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second, first);
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/admin/payouts/{second}/approve"),
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payout"]["state"], "awaiting_payment", "{body}");
    assert!(
        body["payout"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("short of USDT"),
        "{body}"
    );
    let (_, wallets) = get(&server, "/api/admin/payouts/hot-wallet", Some(&admin)).await;
    assert_eq!(wallets["hot_wallets"][0]["usdt"], "0.000000", "{wallets}");
    assert!(transfers_from(&chain, &hot).await.is_empty());

    // Funded, it goes, once. (The balance is read before the funding: the server's own pass
    // may pay the moment the hot wallet holds enough.)
    let before = token_balance(&chain, &creator.address).await;
    chain.transfer(
        chain.s("payer_key").trim_start_matches("0x"),
        &chain.s("token"),
        &hot,
        90_000_000,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/admin/payouts/run",
            json!({}),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        chain.mine(1).await;
        let (_, mine) = get(&server, "/api/payouts/mine", Some(&token)).await;
        let states: Vec<&str> = mine["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["state"].as_str().unwrap())
            .collect();
        if states == ["cancelled", "completed"] {
            break;
        }
        assert!(Instant::now() < deadline, "{mine}");
    }
    assert_eq!(
        token_balance(&chain, &creator.address).await - before,
        90_000_000
    );
    assert_eq!(transfers_from(&chain, &hot).await.len(), 1);
    assert_eq!(payable(&server).await, "0.000000");
    server.stop();
}

/// Two instances on one PostgreSQL database pay the same payout at the same moment: one
/// transaction reaches the chain, and the payout completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_to_pay_one_payout_put_one_transaction_on_chain() {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let Some(probe) = aiforge_commands::testing::TestDatabase::postgres().await else {
        return;
    };
    probe.cleanup().await;
    let (url, name) = aiforge_commands::testing::TestDatabase::create_postgres_database()
        .await
        .unwrap();
    let hot = chain.s("other");
    // The hot wallet's nonce 0 is used up first: ganache 7 reads a raw transaction's nonce 0 as
    // "no nonce", so the other instance's rebroadcast of a nonce-0 payout racing its first
    // broadcast would be run again at the next nonce (and revert), a ganache bug.
    chain.transfer(
        chain.s("other_key").trim_start_matches("0x"),
        &chain.s("token"),
        &chain.s("payer"),
        0,
    );
    let env = [
        ("AIFORGE_DATABASE_URL", url.clone()),
        (
            "AIFORGE_JWT_SECRET",
            "e2e-payouts-shared-jwt-secret-0123456789".to_string(),
        ),
        ("AIFORGE_ETH_RPC_URL", chain.s("rpc_url")),
        ("AIFORGE_ETH_USDT_CONTRACT", chain.s("token")),
        ("AIFORGE_ETH_PLATFORM_WALLET", chain.s("platform")),
        ("AIFORGE_ETH_HOT_WALLET_KEY", chain.s("other_key")),
        ("AIFORGE_ADMIN_WALLETS", admin_address.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start(&temp_dir(), &env);
    let b = Server::start(&temp_dir(), &env);
    let keys: Vec<String> = chain.info["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let (creator, token) = payee(&a, &keys[3]).await;
    let service = monthly_service_on_card(&a, &token, "raced model").await;
    let payer = wallet_session(&a, chain.s("payer_key").trim_start_matches("0x"))
        .await
        .unwrap();
    let (status, body) = send(
        &a,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({"network": "ethereum"}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    pay(&chain, &a, &payer, "payer_key", &payment, 100_000_000).await;
    // The hot wallet holds no USDT yet: the payout waits on both instances.
    let (status, body) = send(
        &b,
        Method::POST,
        "/api/payouts/withdraw",
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    chain.transfer(
        chain.s("payer_key").trim_start_matches("0x"),
        &chain.s("token"),
        &hot,
        90_000_000,
    );
    let admin = wallet_session(&a, ADMIN_KEY).await.unwrap();
    let run = |server| run_pass(server, &admin);
    let (first, second) = tokio::join!(run(&a), run(&b));
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        chain.mine(1).await;
        let (_, _) = tokio::join!(run(&a), run(&b));
        let (_, mine) = get(&a, "/api/payouts/mine", Some(&token)).await;
        if mine["payouts"][0]["state"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{mine}");
    }
    // The zero transfer that used nonce 0, then the one payout.
    let sent = transfers_from(&chain, &hot).await;
    assert_eq!(
        sent,
        [
            (chain.s("payer").to_lowercase(), 0),
            (creator.address.to_lowercase(), 90_000_000)
        ]
    );
    a.stop();
    b.stop();
    aiforge_commands::testing::drop_postgres_database(
        &aiforge_commands::testing::postgres_admin_url(),
        &name,
    )
    .await;
}

/// A creator (chain account `keys[key]`, its payout wallet chosen) whose service a payer
/// subscribes to once for $100, paid in the token contract `usdt`: a $90 payable.
async fn creator_with_payable(
    chain: &Chain,
    server: &Server,
    key: usize,
    usdt: &str,
) -> (Payee, String) {
    let key = chain.info["keys"][key].as_str().unwrap().to_string();
    let (creator, token) = payee(server, &key).await;
    let service = monthly_service_on_card(server, &token, &format!("model of {key}")).await;
    let payer = wallet_session(server, chain.s("payer_key").trim_start_matches("0x"))
        .await
        .unwrap();
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({"network": "ethereum"}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    pay_in(
        chain,
        server,
        &payer,
        "payer_key",
        &payment,
        100_000_000,
        usdt,
    )
    .await;
    (creator, token)
}

/// The balance of one ledger account as the admin's ledger shows it ("" when it has none).
async fn ledger_balance(server: &Server, admin: &str, account: &str) -> String {
    let (status, ledger) = get(server, "/api/admin/ledger", Some(admin)).await;
    assert_eq!(status, 200, "{ledger}");
    assert_eq!(
        ledger["sum_micros"], "0",
        "every account balances: {ledger}"
    );
    ledger["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .map(|a| a["balance"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The caller's payouts' states, oldest first.
async fn my_states(server: &Server, token: &str) -> (Vec<String>, Value) {
    let (status, mine) = get(server, "/api/payouts/mine", Some(token)).await;
    assert_eq!(status, 200, "{mine}");
    let states = mine["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap().to_string())
        .collect();
    (states, mine)
}

/// The USDT contract refuses transfers to a payee its owner blocked (USDT's blacklist): the
/// close's payout is mined and reverts, fails with its reason, and nothing leaves the payable
/// (every account balances); the pass that saw it fail does not send it again, and the close's
/// receipt waits for the retry. Unblocked, the next pass asks for a new payout, which pays the
/// payee exactly once (one Transfer log); the receipt then covers it, and only it. The explorer
/// link follows the `AIFORGE_ETH_EXPLORER_TX_URL` setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reverted_transfer_fails_the_payout_returns_the_amount_and_a_later_pass_pays_it_once() {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let (usdt, platform) = (chain.s("blocking_token"), chain.s("platform"));
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-20T12:00:00Z"),
            ("AIFORGE_ETH_RPC_URL", &chain.s("rpc_url")),
            ("AIFORGE_ETH_USDT_CONTRACT", &usdt),
            ("AIFORGE_ETH_PLATFORM_WALLET", &platform),
            ("AIFORGE_ETH_HOT_WALLET_KEY", &chain.s("platform_key")),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            // Only the passes this test asks for (and the clock's) run.
            ("AIFORGE_PAYOUT_PASS_SECS", "3600"),
            (
                "AIFORGE_ETH_EXPLORER_TX_URL",
                "https://explorer.example/eth/tx/{hash}?from=aiforge",
            ),
        ],
    );
    let (creator, _) = creator_with_payable(&chain, &server, 3, &usdt).await;
    let payable = format!("creator_payable:{}", creator.user_id);
    chain.blocklist("block", &creator.address);

    // December 2nd, noon: November closes, its payout is signed, broadcast, mined, reverted.
    let body = advance(&server, 12 * 86_400).await;
    assert!(
        body["months_closed"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-11")),
        "{body}"
    );
    assert_eq!(body["payouts"]["sent"], 1, "{body}");
    let (status, body) = get(&server, "/api/payouts/receipts/2026/11", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("receipt_not_published")),
        "a payout of the close is in progress: {body}"
    );
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, report) = run_pass(&server, &admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["failed"], &report["requested"], &report["sent"]),
        (&json!(1), &json!(0), &json!(0)),
        "the pass that sees it fail does not ask again: {report}"
    );
    let token = wallet_session(
        &server,
        chain.info["keys"][3]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .await
    .unwrap();
    let (states, mine) = my_states(&server, &token).await;
    assert_eq!(states, ["failed"], "{mine}");
    let failed = &mine["payouts"][0];
    let failed_id = failed["payout_id"].as_str().unwrap().to_string();
    assert!(
        failed["reason"].as_str().unwrap().contains("reverted"),
        "{failed}"
    );
    let reverted = failed["tx_hash"].as_str().unwrap();
    assert_eq!(
        failed["explorer_url"],
        format!("https://explorer.example/eth/tx/{reverted}?from=aiforge")
    );
    let (_, receipt) = rpc(&chain, "eth_getTransactionReceipt", json!([reverted])).await;
    assert_eq!(receipt["result"]["status"], "0x0", "{receipt}");
    let (_, listed) = get(&server, "/api/admin/payouts?state=failed", Some(&admin)).await;
    assert_eq!(listed["payouts"][0]["explorer_url"], failed["explorer_url"]);
    // Nothing left the payable, nothing reached the payee.
    assert_eq!(ledger_balance(&server, &admin, &payable).await, "90.000000");
    assert_eq!(
        ledger_balance(&server, &admin, "hot_wallet:ethereum").await,
        ""
    );
    assert_eq!(token_balance_of(&chain, &usdt, &creator.address).await, 0);
    assert!(transfers_from_in(&chain, &usdt, &platform).await.is_empty());
    let (status, _) = get(&server, "/api/payouts/receipts/2026/11", None).await;
    assert_eq!(status, 404, "the receipt waits for the retry");

    // Unblocked: the next pass asks again and pays, once.
    chain.blocklist("unblock", &creator.address);
    let (status, report) = run_pass(&server, &admin).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (&report["requested"], &report["sent"]),
        (&json!(1), &json!(1)),
        "{report}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        chain.mine(1).await;
        let (status, report) = run_pass(&server, &admin).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["requested"], 0, "asked for once: {report}");
        let (states, mine) = my_states(&server, &token).await;
        if states == ["failed", "completed"] {
            break;
        }
        assert!(Instant::now() < deadline, "{mine}");
    }
    assert_eq!(
        transfers_from_in(&chain, &usdt, &platform).await,
        [(creator.address.to_lowercase(), 90_000_000)]
    );
    assert_eq!(
        token_balance_of(&chain, &usdt, &creator.address).await,
        90_000_000
    );
    assert_eq!(ledger_balance(&server, &admin, &payable).await, "0.000000");
    assert_eq!(
        ledger_balance(&server, &admin, "hot_wallet:ethereum").await,
        "90.000000"
    );
    // The receipt covers the completed payout; the failed one has no proof.
    let (status, receipt) = get(&server, "/api/payouts/receipts/2026/11", None).await;
    assert_eq!(
        (status, receipt["payouts"].as_u64()),
        (200, Some(1)),
        "{receipt}"
    );
    let (_, mine) = get(&server, "/api/payouts/mine", Some(&token)).await;
    let paid = mine["payouts"][1]["payout_id"].as_str().unwrap();
    let (status, proof) = get(&server, &format!("/api/payouts/{paid}/proof"), Some(&token)).await;
    assert_eq!(status, 200, "{proof}");
    let leaf: aiforge_domain::merkle::ReceiptLeaf =
        serde_json::from_value(proof["leaf"].clone()).unwrap();
    assert_eq!(leaf.amount, "90.000000");
    let steps: Vec<aiforge_domain::merkle::ProofStep> =
        serde_json::from_value(proof["proof"].clone()).unwrap();
    assert!(aiforge_domain::merkle::verify(
        &leaf,
        &steps,
        receipt["root"].as_str().unwrap()
    ));
    let (status, body) = get(
        &server,
        &format!("/api/payouts/{failed_id}/proof"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    server.stop();
    assert_eq!(events_in_log(&dir, "PayoutFailed").await.len(), 1);
    assert_eq!(events_in_log(&dir, "PayoutReceiptPublished").await.len(), 1);
}

/// With the chain's mining stopped, a payout's transaction stays pending; once it has waited
/// `AIFORGE_PAYOUT_REPLACE_AFTER_SECS` (the default, 600 s, on the app clock) the pass signs a
/// replacement at the same nonce with a higher gas price, records it, and broadcasts it; never
/// a transaction at another nonce. Mining again, exactly one of the two is mined (the
/// replacement, which took the nonce), and the payout completes with its hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_transaction_is_replaced_at_its_nonce_with_a_higher_gas_price_and_paid_once() {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let (usdt, platform) = (chain.s("token"), chain.s("platform"));
    // The hot wallet is the payer's account, which has sent a transaction (its payment) before
    // the payout: ganache 7 reads a raw transaction's nonce 0 (RLP's empty bytes) as no nonce
    // and renumbers it, so a replacement at nonce 0 would be mined as a second transaction, a
    // ganache bug no Ethereum node has. At nonce 1 it replaces as geth does.
    let hot = chain.s("payer");
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-20T12:00:00Z"),
            ("AIFORGE_ETH_RPC_URL", &chain.s("rpc_url")),
            ("AIFORGE_ETH_USDT_CONTRACT", &usdt),
            ("AIFORGE_ETH_PLATFORM_WALLET", &platform),
            ("AIFORGE_ETH_HOT_WALLET_KEY", &chain.s("payer_key")),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            ("AIFORGE_PAYOUT_PASS_SECS", "3600"),
        ],
    );
    let (creator, token) = creator_with_payable(&chain, &server, 3, &usdt).await;
    let (_, stopped) = rpc(&chain, "miner_stop", json!([])).await;
    assert!(stopped.get("error").is_none(), "{stopped}");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/payouts/withdraw",
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payouts"][0]["state"], "in_progress", "{body}");
    let first = body["payouts"][0]["tx_hash"].as_str().unwrap().to_string();
    let (_, pending) = rpc(&chain, "eth_getTransactionByHash", json!([first])).await;
    let pending = pending["result"].clone();
    assert!(pending["blockNumber"].is_null(), "pending: {pending}");
    assert_eq!(
        pending["nonce"], "0x1",
        "the payer's second transaction: {pending}"
    );
    let price = u128::from_str_radix(
        pending["gasPrice"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();

    // A second short of the setting: the same transaction, broadcast again.
    let body = advance(&server, 599).await;
    assert_eq!(body["payouts"]["sent"], 0, "{body}");
    let (_, mine) = get(&server, "/api/payouts/mine", Some(&token)).await;
    assert_eq!(mine["payouts"][0]["tx_hash"], first.as_str(), "{mine}");
    // Ten minutes: replaced.
    let body = advance(&server, 1).await;
    assert_eq!(body["payouts"]["sent"], 1, "{body}");
    let (_, mine) = get(&server, "/api/payouts/mine", Some(&token)).await;
    let second = mine["payouts"][0]["tx_hash"].as_str().unwrap().to_string();
    assert_ne!(second, first, "{mine}");
    assert_eq!(mine["payouts"][0]["state"], "in_progress", "{mine}");
    let (_, replacement) = rpc(&chain, "eth_getTransactionByHash", json!([second])).await;
    let replacement = replacement["result"].clone();
    assert_eq!(
        replacement["nonce"], "0x1",
        "at the same nonce: {replacement}"
    );
    let bumped = u128::from_str_radix(
        replacement["gasPrice"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(bumped * 100 >= price * 110, "{price} -> {bumped}");

    // Mining again: one of them is mined, the payout completes with its hash.
    let (_, started) = rpc(&chain, "miner_start", json!([])).await;
    assert!(started.get("error").is_none(), "{started}");
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let token = wallet_session(
        &server,
        chain.info["keys"][3]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        chain.mine(1).await;
        let (status, report) = run_pass(&server, &admin).await;
        assert_eq!(status, 200, "{report}");
        let (states, mine) = my_states(&server, &token).await;
        if states == ["completed"] {
            break;
        }
        assert_eq!(states, ["in_progress"], "{mine}");
        assert!(Instant::now() < deadline, "{mine}");
    }
    let (_, mine) = get(&server, "/api/payouts/mine", Some(&token)).await;
    let paid = mine["payouts"][0]["tx_hash"].as_str().unwrap().to_string();
    let mined: Vec<&String> = [&first, &second]
        .into_iter()
        .filter(|h| **h == paid)
        .collect();
    assert_eq!(
        mined.len(),
        1,
        "completed with one of its transactions: {mine}"
    );
    let (_, receipt) = rpc(&chain, "eth_getTransactionReceipt", json!([paid])).await;
    assert_eq!(receipt["result"]["status"], "0x1", "{receipt}");
    // One Transfer to the payee in it (read from the receipt: ganache's eth_getLogs misses the
    // logs of a transaction that replaced another in its pool).
    let logs = receipt["result"]["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{receipt}");
    assert_eq!(
        logs[0]["topics"][2].as_str().unwrap()[26..],
        creator.address.to_lowercase()[2..],
        "{receipt}"
    );
    let other = if paid == first { &second } else { &first };
    let (_, receipt) = rpc(&chain, "eth_getTransactionReceipt", json!([other])).await;
    assert!(receipt["result"].is_null(), "never mined: {receipt}");
    assert_eq!(token_balance(&chain, &creator.address).await, 90_000_000);
    assert_eq!(
        mined_nonce(&chain, &hot).await,
        2,
        "one nonce used by the payout"
    );
    server.stop();
    let signed = events_in_log(&dir, "PayoutTransactionSigned").await;
    assert_eq!(signed.len(), 2, "{signed:?}");
    assert_eq!(signed[1]["replaces"], first.as_str());
    assert_eq!(
        signed[0]["transfer"]["nonce"], signed[1]["transfer"]["nonce"],
        "{signed:?}"
    );
}
