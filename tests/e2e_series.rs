//! End-to-end through the real `aiforge` binary, on SQLite and on PostgreSQL: time series for
//! charts (`GET /api/series`). A month of real facts (an API subscription paid on the local
//! chain, metered calls through an upstream, a paid job run by a node over HTTP) and then: each
//! month figure equals the existing route's for the same thing (revenue by type and platform
//! fees, a creator's earnings, a subscription's usage, a node's earnings); day buckets are all
//! there, zero-filled; who may see which scope (others get 404, no session 401); bad values 400.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use aiforge_commands::testing::TestDatabase;
use reqwest::Method;
use serde_json::{json, Value};
use support::chain::{node_runs_a_paid_job, pay, start_chain, wallet_session, ADMIN_KEY};
use support::*;

const INPUT: &[u8] = b"series input\n";

async fn series(server: &Server, token: Option<&str>, query: &str) -> (u16, Value) {
    get(server, &format!("/api/series?{query}"), token).await
}

/// The one line of a series answer with `key`, as (bucket, value) pairs.
fn line(body: &Value, key: &str) -> Vec<(String, String)> {
    body["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {body}"))
        .iter()
        .find(|l| l["key"] == key)
        .unwrap_or_else(|| panic!("no line {key} in {body}"))["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["t"].as_str().unwrap().to_string(),
                p["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The value of `key`'s line at bucket `t`.
fn at(body: &Value, key: &str, t: &str) -> String {
    line(body, key)
        .into_iter()
        .find(|(bucket, _)| bucket == t)
        .unwrap_or_else(|| panic!("no bucket {t} in {key} of {body}"))
        .1
}

async fn advance(server: &Server, seconds: i64) {
    let (status, body) = post(
        server,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn chat(server: &Server, key: &str, model: &str) {
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
}

async fn subscribe(
    server: &Server,
    token: &str,
    service: &str,
    network: bool,
) -> (String, String, Value) {
    let body = if network {
        json!({"network": "ethereum"})
    } else {
        json!({})
    };
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        body,
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["subscription"]["id"].as_str().unwrap().to_string(),
        body["api_key"].as_str().unwrap().to_string(),
        body,
    )
}

async fn create_service(server: &Server, token: &str, model: &str, price: &str) -> String {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": format!("Served at {price}"), "description": "",
               "pricing": {"type": "monthly", "price_per_month": price}, "rate_limits": {}}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["service"]["id"].as_str().unwrap().to_string()
}

async fn user_id(server: &Server, token: &str) -> String {
    let (_, me) = me(server, token).await;
    me["id"]
        .as_str()
        .or(me["user"]["id"].as_str())
        .unwrap()
        .to_string()
}

async fn series_equal_the_routes_figures(database_url: Option<&str>) {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let (_mock, listening) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", "Hello there"],
        "listening on ",
    );
    let mock_url = format!("{}/v1", listening.trim_start_matches("listening on "));
    let node = format!("upstream:{mock_url}#mock");
    let (rpc, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let mut env = vec![
        ("AIFORGE_MANUAL_CLOCK_START", "2026-11-10T22:00:00Z"),
        ("AIFORGE_LOCAL_NODE", node.as_str()),
        ("AIFORGE_DEMO", "off"),
        ("AIFORGE_ETH_RPC_URL", rpc.as_str()),
        ("AIFORGE_ETH_USDT_CONTRACT", usdt.as_str()),
        ("AIFORGE_ETH_PLATFORM_WALLET", platform.as_str()),
        ("AIFORGE_ADMIN_WALLETS", admin_address.as_str()),
    ];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let dir = temp_dir();
    let server = Server::start(&dir, &env);
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let payer = wallet_session(&server, chain.s("payer_key").trim_start_matches("0x"))
        .await
        .unwrap();
    let payer_id = user_id(&server, &payer).await;
    let (creator_id, creator) = signed_up(&server, "creator@example.com").await;
    let outsider = register_and_sign_in(&server, "outsider@example.com").await;
    let miner = register_and_sign_in(&server, "miner@example.com").await;

    // The creator's model (an upstream card the local node serves) and two services.
    let response = client()
        .post(server.url("/api/models?name=served"))
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
    let paid_service = create_service(&server, &creator, &model, "100").await;
    let free_service = create_service(&server, &creator, &model, "0").await;

    // The payer subscribes to both ($100 paid on chain for one) and calls: 3 + 2 on November
    // 10th, 1 more on the 11th.
    let (paid_sub, paid_key, body) = subscribe(&server, &payer, &paid_service, true).await;
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    pay(&chain, &server, &payer, "payer_key", &payment, 100_000_000).await;
    let (free_sub, free_key, _) = subscribe(&server, &payer, &free_service, false).await;
    for key in [&paid_key, &paid_key, &paid_key, &free_key, &free_key] {
        chat(&server, key, &model).await;
    }
    advance(&server, 3 * 3600).await;
    chat(&server, &paid_key, &model).await;
    let node = node_runs_a_paid_job(&chain, &server, &payer, &miner, 10_000_000, INPUT).await;

    // Revenue by type for November equals the monthly route's, and so do platform fees.
    let (status, monthly) = get(&server, "/api/revenue/monthly/2026/11", Some(&admin)).await;
    assert_eq!(status, 200, "{monthly}");
    let month = "bucket=month&from=2026-11-01&to=2026-11-30";
    let (status, revenue) = series(
        &server,
        Some(&admin),
        &format!("metric=revenue&scope=platform&group_by=type&{month}"),
    )
    .await;
    assert_eq!(status, 200, "{revenue}");
    assert_eq!(revenue["unit"], "usdt");
    let types = monthly["by_type"].as_array().unwrap();
    assert_eq!(
        revenue["series"].as_array().unwrap().len(),
        6,
        "the six payment types: {revenue}"
    );
    for t in types {
        let key = t["type"].as_str().unwrap();
        assert_eq!(
            at(&revenue, key, "2026-11-01"),
            t["gross"].as_str().unwrap(),
            "{key}"
        );
    }
    assert_eq!(at(&revenue, "api_subscription", "2026-11-01"), "100.000000");
    assert_eq!(at(&revenue, "job", "2026-11-01"), "10.000000");
    let (_, total) = series(
        &server,
        Some(&admin),
        &format!("metric=revenue&scope=platform&{month}"),
    )
    .await;
    assert_eq!(
        at(&total, "total", "2026-11-01"),
        monthly["total_revenue"].as_str().unwrap()
    );
    let (_, fees) = series(
        &server,
        Some(&admin),
        &format!("metric=fees&scope=platform&{month}"),
    )
    .await;
    assert_eq!(
        at(&fees, "total", "2026-11-01"),
        monthly["platform_fees"].as_str().unwrap()
    );

    // The creator's earnings by kind equal my-earnings.
    let (status, mine) = get(
        &server,
        "/api/revenue/my-earnings?year=2026&month=11",
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    let (status, earnings) = series(
        &server,
        Some(&creator),
        &format!("metric=earnings&scope=creator&id=me&group_by=kind&{month}"),
    )
    .await;
    assert_eq!(status, 200, "{earnings}");
    let by_month = &mine["by_month"][0];
    assert_eq!(
        at(&earnings, "api_subscription", "2026-11-01"),
        by_month["api_and_sales"].as_str().unwrap()
    );
    assert_eq!(
        at(&earnings, "pool_share", "2026-11-01"),
        by_month["subscription_pool"].as_str().unwrap()
    );
    assert_eq!(
        at(&earnings, "group_split", "2026-11-01"),
        by_month["group_api"].as_str().unwrap()
    );
    assert_eq!(at(&earnings, "api_subscription", "2026-11-01"), "90.000000");

    // A subscription's usage equals the usage route's; the plan key is absent (no plan calls).
    let (status, usage) = series(
        &server,
        Some(&payer),
        &format!("metric=requests&scope=consumer&group_by=subscription&{month}"),
    )
    .await;
    assert_eq!(status, 200, "{usage}");
    let (_, tokens) = series(
        &server,
        Some(&payer),
        &format!("metric=tokens&scope=consumer&id={payer_id}&group_by=subscription&{month}"),
    )
    .await;
    for (sub, calls) in [(&paid_sub, "4"), (&free_sub, "2")] {
        let (status, route) = get(
            &server,
            &format!("/api/marketplace/subscriptions/{sub}/usage"),
            Some(&payer),
        )
        .await;
        assert_eq!(status, 200, "{route}");
        assert_eq!(at(&usage, sub, "2026-11-01"), route["requests"].to_string());
        assert_eq!(at(&usage, sub, "2026-11-01"), calls);
        assert_eq!(
            at(&tokens, sub, "2026-11-01"),
            route["total_tokens"].to_string()
        );
        assert!(route["total_tokens"].as_i64().unwrap() > 0, "{route}");
    }
    assert_eq!(usage["unit"], "count");

    // A node's earnings equal its payable (no payout yet): 95% of the job.
    let (status, detail) = get(&server, &format!("/api/nodes/{node}"), Some(&miner)).await;
    assert_eq!(status, 200, "{detail}");
    let (status, node_earnings) = series(
        &server,
        Some(&miner),
        &format!("metric=earnings&scope=node&id={node}&{month}"),
    )
    .await;
    assert_eq!(status, 200, "{node_earnings}");
    assert_eq!(
        at(&node_earnings, "total", "2026-11-01"),
        detail["node"]["earnings"]["payable"].as_str().unwrap()
    );
    assert_eq!(at(&node_earnings, "total", "2026-11-01"), "9.500000");

    // Day buckets: every day of the range, zero-filled; the model's calls by service per day.
    let days = "from=2026-11-09&to=2026-11-12";
    let (status, by_day) = series(
        &server,
        Some(&creator),
        &format!("metric=requests&scope=model&id={model}&group_by=service&{days}"),
    )
    .await;
    assert_eq!(status, 200, "{by_day}");
    assert_eq!(
        line(&by_day, &paid_service),
        [
            ("2026-11-09", "0"),
            ("2026-11-10", "3"),
            ("2026-11-11", "1"),
            ("2026-11-12", "0")
        ]
        .map(|(t, v)| (t.to_string(), v.to_string()))
    );
    assert_eq!(at(&by_day, &free_service, "2026-11-10"), "2");
    let (_, creator_usage) = series(
        &server,
        Some(&creator),
        &format!("metric=requests&scope=creator&{days}"),
    )
    .await;
    assert_eq!(at(&creator_usage, "total", "2026-11-10"), "5");
    let (_, service_usage) = series(
        &server,
        Some(&creator),
        &format!("metric=requests&scope=service&id={paid_service}&{days}"),
    )
    .await;
    assert_eq!(at(&service_usage, "total", "2026-11-11"), "1");
    // Defaults: the last 30 days on the app clock (now November 11th).
    let (status, default) = series(&server, Some(&admin), "metric=requests&scope=platform").await;
    assert_eq!(status, 200, "{default}");
    assert_eq!(
        (default["from"].as_str(), default["to"].as_str()),
        (Some("2026-10-13"), Some("2026-11-11"))
    );
    assert_eq!(line(&default, "total").len(), 30);
    let (_, default) = series(
        &server,
        Some(&admin),
        "metric=requests&scope=platform&bucket=month",
    )
    .await;
    assert_eq!(
        (default["from"].as_str(), default["to"].as_str()),
        (Some("2025-12-01"), Some("2026-11-01"))
    );
    assert_eq!(at(&default, "total", "2026-11-01"), "6");

    // Who may see what: others get 404 (the scope's existence is not revealed), no session 401.
    let private = [
        format!("metric=requests&scope=platform&{days}"),
        format!("metric=requests&scope=model&id={model}&{days}"),
        format!("metric=requests&scope=service&id={paid_service}&{days}"),
        format!("metric=earnings&scope=node&id={node}&{days}"),
        format!("metric=earnings&scope=creator&id={creator_id}&{days}"),
        format!("metric=requests&scope=consumer&id={payer_id}&{days}"),
    ];
    for query in &private {
        let (status, body) = series(&server, Some(&outsider), query).await;
        assert_eq!(status, 404, "{query}: {body}");
        let (status, _) = series(&server, None, query).await;
        assert_eq!(status, 401, "{query}");
        let (status, body) = series(&server, Some(&admin), query).await;
        assert_eq!(status, 200, "the admin sees {query}: {body}");
    }
    let (status, _) = series(
        &server,
        Some(&outsider),
        &format!("metric=requests&scope=model&id=no-such-model&{days}"),
    )
    .await;
    assert_eq!(status, 404, "an unknown model answers as a hidden one");
    let (status, _) = series(
        &server,
        Some(&creator),
        &format!("metric=requests&scope=platform&{days}"),
    )
    .await;
    assert_eq!(status, 404, "the platform is the admin's");

    // Bad values: 400 with the field named, or range_too_large.
    for (query, field) in [
        ("metric=clicks&scope=platform", "metric"),
        ("metric=requests&scope=galaxy", "scope"),
        ("metric=requests&scope=platform&bucket=week", "bucket"),
        ("metric=requests&scope=platform&from=2026-13-01", "from"),
        (
            "metric=requests&scope=platform&from=2026-11-12&to=2026-11-10",
            "from",
        ),
        ("metric=revenue&scope=model&id=x", "scope"),
        ("metric=revenue&scope=platform&group_by=model", "group_by"),
        ("metric=requests&scope=model", "id"),
        ("scope=platform", "metric"),
    ] {
        let (status, body) = series(&server, Some(&admin), query).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {body}"
        );
    }
    for query in [
        "metric=requests&scope=platform&from=2025-11-01&to=2026-11-11",
        "metric=requests&scope=platform&bucket=month&from=2016-01-01&to=2026-11-11",
    ] {
        let (status, body) = series(&server, Some(&admin), query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("range_too_large")),
            "{query}: {body}"
        );
    }
    let (status, _) = series(
        &server,
        Some(&admin),
        "metric=requests&scope=platform&from=2025-11-11&to=2026-11-11",
    )
    .await;
    assert_eq!(status, 200, "366 days is a year with a leap day's room");

    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn series_on_sqlite_equal_the_routes_figures_and_show_only_their_owners() {
    series_equal_the_routes_figures(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn series_on_postgresql_equal_the_routes_figures_and_show_only_their_owners() {
    let (url, name) = match TestDatabase::create_postgres_database().await {
        Ok(created) => created,
        Err(e) => {
            aiforge_commands::testing::skip_or_fail("PostgreSQL", &e.to_string());
            return;
        }
    };
    series_equal_the_routes_figures(Some(&url)).await;
    aiforge_commands::testing::drop_postgres_database(
        &aiforge_commands::testing::postgres_admin_url(),
        &name,
    )
    .await;
}
