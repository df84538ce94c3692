//! End-to-end through the real `aiforge` binary, a real `node-agent serve` over NATS and the
//! mock OpenAI upstream: inference nodes earn. A registered node serves an upstream model card;
//! a fee version with a compute rate is adopted for a date in the future on the manual clock;
//! calls before it are not paid, N calls after it are; an anonymous node that names itself
//! after the registered node (without its token) is not paid either. The month's close gives
//! the node's owner exactly rate × tokens / 1000 (rounded down to the micro), the platform's
//! net falls by the same, the creator's pool share is untouched, and `audit replay` matches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use aiforge_commands::testing::skip_or_fail;
use reqwest::Method;
use serde_json::{json, Value};
use support::chain::{wallet_session, ADMIN_KEY};
use support::*;

const NATS: &str = "nats://127.0.0.1:4222";
/// The compute rate of version 2, per 1,000 tokens: six decimals, so the rounding shows.
const RATE: &str = "0.123457";
const RATE_MICROS: u64 = 123_457;
/// Calls the registered node serves once the rate is in force.
const PAID_CALLS: usize = 5;

/// One call of `model` with the platform key (Free plan); returns its total tokens.
async fn call(server: &Server, key: &str, model: &str, n: usize) -> u64 {
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 16 + n,
                      "messages": [{"role": "user", "content": format!("Question {n}?")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["usage"]["total_tokens"].as_u64().unwrap()
}

async fn advance(server: &Server, seconds: i64) {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// `node-agent serve` for the upstream, as `node_id`, with `token` when given.
fn serve_node(mock_url: &str, model: &str, node_id: &str, token: Option<&str>) -> Killed {
    let mut args = vec![
        "serve",
        "--nats-url",
        NATS,
        "--node-id",
        node_id,
        "--upstream",
        mock_url,
        "--upstream-model",
        "mock",
        "--serve-as",
        model,
    ];
    if let Some(token) = token {
        args.extend(["--node-token", token]);
    }
    start_sibling(
        "node-agent",
        &args,
        &format!("node-agent {node_id} serving"),
    )
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_node_is_paid_rate_times_tokens_out_of_the_platforms_fee_and_the_replay_matches(
) {
    if tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .is_err()
    {
        skip_or_fail("NATS", "nothing answers on 127.0.0.1:4222");
        return;
    }
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let (_mock, line) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", "Paris is the capital of France"],
        "listening on ",
    );
    let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
    let dir = temp_dir();
    // No in-process node: every answer comes from a node-agent over NATS.
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_NATS_URL", NATS),
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-02T00:00:00Z"),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            ("AIFORGE_CLOSE_AUTOMATIC", "false"),
            ("AIFORGE_PLAN_LIMITS", "free=100/1000000"),
        ],
    );
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();

    // A provider registers a node: its id and token.
    let (provider_id, provider) = signed_up(&server, "provider@example.com").await;
    let (node, token) = registered_node(&server, &provider, "inference rig").await;

    // A creator's upstream model card, published, with a service included in plans.
    let (_, creator) = signed_up(&server, "creator@example.com").await;
    let response = client()
        .post(server.url("/api/models?name=capitals"))
        .bearer_auth(&creator)
        .body(
            format!("aiforge upstream model card\nbase_url: {mock_url}\nmodel: mock\n")
                .into_bytes(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let model = model["model"]["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/publishing/model/{model}/publish"),
        json!({}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Capitals", "description": "",
               "pricing": {"type": "monthly", "price_per_month": "10"}, "rate_limits": {},
               "included_in_plans": true}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Version 2 brings a compute rate from tomorrow.
    assert_eq!(
        adopted_compute_rate(&server, &admin, "2026-11-03T00:00:00Z", RATE).await,
        2
    );

    // A consumer on the Free plan, with a platform key.
    let key = free_plan_key(&server, "consumer@example.com").await;

    // The registered node serves; its first call is before the rate is in force.
    let registered = serve_node(&mock_url, &model, &node, Some(&token));
    let mut tokens_served = call(&server, &key, &model, 0).await;
    advance(&server, 2 * 86_400).await;
    let mut paid_tokens = 0;
    for n in 1..=PAID_CALLS {
        paid_tokens += call(&server, &key, &model, n).await;
    }
    tokens_served += paid_tokens;
    // The same id without the token: served, metered, never paid.
    drop(registered);
    let impostor = serve_node(&mock_url, &model, &node, None);
    tokens_served += call(&server, &key, &model, 99).await;
    drop(impostor);

    // Sessions expire on the app clock: the admin signs in again after the two days.
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, before) = get(&server, "/api/revenue/summary", Some(&admin)).await;
    assert_eq!(status, 200, "{before}");
    advance(&server, 30 * 86_400).await;
    // And after the month.
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, body) = login(
        &server,
        "provider@example.com",
        "correct horse battery staple",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let provider = body["access_token"].as_str().unwrap().to_string();
    let (status, closed) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/11",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{closed}");
    let closed = &closed["closed"];
    let expected_micros = RATE_MICROS * paid_tokens / 1000;
    let expected = format!(
        "{}.{:06}",
        expected_micros / 1_000_000,
        expected_micros % 1_000_000
    );
    assert!(expected_micros > 0, "{paid_tokens} tokens");
    assert_eq!(closed["pool_rule_version"], 3, "{closed}");
    assert_eq!(
        closed["compute"],
        json!([{"node_id": node, "fee_schedule_version": 2, "tokens": paid_tokens,
                "calls": PAID_CALLS, "rate_per_1k_tokens": RATE, "amount": expected}]),
        "{closed}"
    );
    assert_eq!(closed["compute_total"], expected.as_str());
    assert!(tokens_served > paid_tokens);
    assert_eq!(
        closed["tokens_total"], tokens_served,
        "every plan call splits the pool"
    );

    // The node's owner sees it beside its job earnings.
    let (status, detail) = get(&server, &format!("/api/nodes/{node}"), Some(&provider)).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["node"]["earnings"],
        json!({"payable": expected, "jobs_paid": 0, "jobs": "0.000000", "inference": expected}),
        "{detail}"
    );
    assert_eq!(detail["node"]["owner"], provider_id.as_str(), "{detail}");

    // The revenue views: the platform's fee, the compute paid, the platform's net.
    let (_, after) = get(&server, "/api/revenue/summary", Some(&admin)).await;
    assert_eq!(after["compute_paid"], expected.as_str(), "{after}");
    assert_eq!(after["platform_fees"], before["platform_fees"], "{after}");
    let micros = |v: &Value| -> i64 {
        let text = v.as_str().unwrap();
        let negative = text.starts_with('-');
        let (whole, fraction) = text.trim_start_matches('-').split_once('.').unwrap();
        let value = whole.parse::<i64>().unwrap() * 1_000_000 + fraction.parse::<i64>().unwrap();
        if negative {
            -value
        } else {
            value
        }
    };
    assert_eq!(
        micros(&before["platform_net"]) - micros(&after["platform_net"]),
        expected_micros as i64,
        "{before} {after}"
    );
    assert_eq!(
        micros(&before["balances"]["platform_fees"]) - micros(&after["balances"]["platform_fees"]),
        expected_micros as i64,
        "the platform's fee account paid it: {after}"
    );
    let (_, month) = get(&server, "/api/revenue/monthly/2026/11", Some(&admin)).await;
    assert_eq!(month["compute_paid"], expected.as_str(), "{month}");

    // The auditor's replay recomputes it through the same fold.
    server.stop();
    let out = cli(&dir, &["audit", "replay", "--month", "2026-11"]);
    assert!(
        out.contains("MATCHES the recorded close of 2026-11"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
