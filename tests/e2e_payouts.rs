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
use support::chain::{pay, start_chain, wallet_session, Chain, ADMIN_KEY};
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

/// `MonthClosed` events in the SQLite log of a stopped server, by month.
async fn closes_in_log(dir: &Path) -> Vec<String> {
    let db = dir.join("aiforge.db");
    let connection = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let payloads: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'MonthClosed' ORDER BY global_position",
    )
    .fetch_all(&connection)
    .await
    .unwrap();
    connection.close().await;
    payloads
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_str(p).unwrap();
            v["MonthClosed"]["distribution"]["month"]
                .as_str()
                .unwrap()
                .to_string()
        })
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

/// `balanceOf(address)` of the chain's USDT, in micro-USDT.
async fn token_balance(chain: &Chain, address: &str) -> u128 {
    let data = format!(
        "0x70a08231{:0>64}",
        address.trim_start_matches("0x").to_lowercase()
    );
    let (_, body) = rpc(
        chain,
        "eth_call",
        json!([{"to": chain.s("token"), "data": data}, "latest"]),
    )
    .await;
    u128::from_str_radix(
        body["result"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

async fn rpc(chain: &Chain, method: &str, params: Value) -> (u16, Value) {
    let response = client()
        .post(chain.s("rpc_url"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Recipients of every token `Transfer` sent from `from`, as lower-case hex, in chain order.
async fn transfers_from(chain: &Chain, from: &str) -> Vec<(String, u128)> {
    let topic = |a: &str| format!("0x{:0>64}", a.trim_start_matches("0x").to_lowercase());
    let (_, body) = rpc(
        chain,
        "eth_getLogs",
        json!([{"fromBlock": "0x0", "toBlock": "latest", "address": chain.s("token"),
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

async fn model_and_service(
    server: &Server,
    token: &str,
    bytes: &[u8],
    group: Option<&str>,
) -> String {
    let query = match group {
        Some(group) => format!("/api/models?name=m&group_id={group}"),
        None => "/api/models?name=m".to_string(),
    };
    let response = client()
        .post(server.url(&query))
        .bearer_auth(token)
        // An upstream model card (a service needs a model an engine serves), named by `bytes`
        // so that each model is its own file.
        .body(
            format!(
                "aiforge upstream model card\nbase_url: http://127.0.0.1:9/v1\nmodel: {}\n",
                String::from_utf8_lossy(bytes).replace(' ', "-")
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
/// hot wallet (the platform wallet, which received the payments). With `crash`, the first
/// instance aborts right after recording its first signed transaction, before broadcasting
/// it; the restart sends that same transaction and the rest.
async fn a_month_pays_out(crash: bool) {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let (rpc_url, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let hot_key = chain.s("platform_key");
    let env = |start: &'static str, failpoint: bool| {
        let mut env = vec![
            ("AIFORGE_MANUAL_CLOCK_START", start.to_string()),
            ("AIFORGE_ETH_RPC_URL", rpc_url.clone()),
            ("AIFORGE_ETH_USDT_CONTRACT", usdt.clone()),
            ("AIFORGE_ETH_PLATFORM_WALLET", platform.clone()),
            ("AIFORGE_ETH_HOT_WALLET_KEY", hot_key.clone()),
            ("AIFORGE_ADMIN_WALLETS", admin_address.clone()),
        ];
        if failpoint {
            env.push(("AIFORGE_PAYOUT_FAILPOINT", "after_sign".to_string()));
        }
        env
    };
    let start = |start: &'static str, failpoint: bool| {
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
        services
            .push(model_and_service(&server, token, format!("model {i}").as_bytes(), None).await);
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
    let expected: Vec<u128> = vec![90, 90, 90, 45, 27, 18]
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
    let server = if crash {
        // The failpoint aborts the process once the first transaction is recorded.
        assert!(
            advanced.is_err(),
            "the instance aborted mid-pass: {advanced:?}"
        );
        let mut server = server;
        let _ = server.child.wait();
        drop(server);
        assert!(
            transfers_from(&chain, &platform).await.is_empty(),
            "nothing was broadcast before the crash"
        );
        start("2026-12-02T12:00:01Z", false)
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
        if list["payouts"].as_array().unwrap().len() == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "six payouts complete: {list}");
    }
    // Sessions last a day on the app clock: the payees sign in again.
    let mut tokens = Vec::new();
    for key in &keys[3..9] {
        tokens.push(
            wallet_session(&server, key.trim_start_matches("0x"))
                .await
                .unwrap(),
        );
    }
    // Each payee paid exactly once, exactly their payable.
    let sent = transfers_from(&chain, &platform).await;
    assert_eq!(sent.len(), 6, "{sent:?}");
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
        assert!(mine[0]["explorer_url"]
            .as_str()
            .unwrap()
            .ends_with(mine[0]["tx_hash"].as_str().unwrap()));
    }
    // The close's receipt: each payee's proof leads to the published root; a changed amount
    // does not.
    let (status, receipt) = get(&server, "/api/payouts/receipts/2026/11", None).await;
    assert_eq!(
        (status, receipt["payouts"].as_u64()),
        (200, Some(6)),
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
        if name.starts_with("creator_payable:") || name.starts_with("group_revenue:") {
            assert_eq!(account["balance"], "0.000000", "{account}");
        }
        if name == "hot_wallet:ethereum" {
            assert_eq!(account["balance"], "360.000000", "{account}");
        }
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_month_pays_every_payee_exactly_their_payable_on_chain() {
    a_month_pays_out(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_the_recorded_signature_and_the_broadcast_sends_that_same_transaction_once()
{
    a_month_pays_out(true).await;
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
    let service = model_and_service(&server, &token, b"one model", None).await;
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

    // Funded, it goes, once.
    chain.transfer(
        chain.s("payer_key").trim_start_matches("0x"),
        &chain.s("token"),
        &hot,
        90_000_000,
    );
    let before = token_balance(&chain, &creator.address).await;
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
    let service = model_and_service(&a, &token, b"raced model", None).await;
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
    let sent = transfers_from(&chain, &hot).await;
    assert_eq!(sent, [(creator.address.to_lowercase(), 90_000_000)]);
    a.stop();
    b.stop();
    aiforge_commands::testing::drop_postgres_database(
        &aiforge_commands::testing::postgres_admin_url(),
        &name,
    )
    .await;
}
