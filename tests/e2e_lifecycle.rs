//! End-to-end through the real `aiforge` binary, paid in USDT on a real local chain, on a manual
//! clock: API subscriptions that expire after their period and grace and come back with a
//! renewal (same key), pay-per-request credit topped up on the same key, model sales (a buyer
//! downloads byte for byte, once; 5%/95%; a group model's share held for the group's split), and
//! the marketplace search over services and published models.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::chain::*;
use support::*;

const T0: &str = "2026-10-01T00:00:00Z";
const DAY: i64 = 86_400;

async fn post_as(server: &Server, path: &str, body: Value, token: &str) -> (u16, Value) {
    send(server, Method::POST, path, body, Some(token)).await
}

async fn upload(server: &Server, token: &str, query: &str, bytes: Vec<u8>) -> String {
    let response = client()
        .post(server.url(&format!("/api/models?{query}")))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["model"]["id"].as_str().unwrap().to_string()
}

async fn publish_free(server: &Server, token: &str, model: &str) {
    let (status, body) = post_as(
        server,
        &format!("/api/publishing/model/{model}/publish"),
        json!({}),
        token,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn create_service(
    server: &Server,
    token: &str,
    model: &str,
    name: &str,
    pricing: Value,
) -> String {
    let (status, body) = post_as(
        server,
        "/api/marketplace/create",
        json!({"model_id": model, "name": name, "description": "", "pricing": pricing,
               "rate_limits": {"requests_per_month": 1000}}),
        token,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["service"]["id"].as_str().unwrap().to_string()
}

async fn advance(server: &Server, seconds: i64) {
    let (status, body) = post(
        server,
        "/api/ops/clock/advance",
        json!({"seconds": seconds}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn chat(server: &Server, key: &str, model: &str) -> (u16, Value) {
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 5,
                      "messages": [{"role": "user", "content": "Hi there"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls a chat call until it answers `status` (a reactor applies a confirmed payment a moment
/// after the verification answers); panics after 10 s.
async fn chat_until(server: &Server, key: &str, model: &str, status: u16) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = chat(server, key, model).await;
        if got == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call never answered {status}; last {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn my_subscription(server: &Server, token: &str, id: &str) -> Value {
    let (status, body) = get(server, "/api/marketplace/my-subscriptions", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap()
}

/// Polls "my subscriptions" until `field` of subscription `id` is `want`.
async fn subscription_until(
    server: &Server,
    token: &str,
    id: &str,
    field: &str,
    want: &str,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sub = my_subscription(server, token, id).await;
        if sub[field] == want {
            return sub;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{field} never became {want}: {sub}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pays the payment an answer carries from the chain account `key_name`; returns its id.
async fn pay_answer(
    chain: &Chain,
    server: &Server,
    token: &str,
    key_name: &str,
    answer: &Value,
) -> String {
    let payment = &answer["payment"];
    let id = payment["payment_id"].as_str().unwrap().to_string();
    let amount = aiforge_domain::Usdt::parse(payment["amount"].as_str().unwrap()).unwrap();
    let micros = u64::try_from(amount.to_micros()).unwrap();
    pay(chain, server, token, key_name, &id, micros).await;
    id
}

async fn search(server: &Server, query: &str) -> Value {
    let (status, body) = get(server, &format!("/api/marketplace/search?{query}"), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["kind"].as_str().unwrap(),
                i["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// A fresh PostgreSQL database (url, name), or None (skipped) when PostgreSQL is not required.
async fn postgres() -> Option<(String, String)> {
    use aiforge_commands::testing::{postgres_admin_url, TestDatabase};
    match TestDatabase::create_postgres_database().await {
        Ok(created) => Some(created),
        Err(e) if std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1") => {
            eprintln!(
                "SKIPPED (PostgreSQL): cannot reach {} ({e})",
                postgres_admin_url()
            );
            None
        }
        Err(e) => panic!("AIFORGE_REQUIRE_SERVICES=1 but PostgreSQL is unavailable: {e}"),
    }
}

async fn drop_postgres(name: &str) {
    use aiforge_commands::testing::{drop_postgres_database, postgres_admin_url};
    drop_postgres_database(&postgres_admin_url(), name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_expires_after_its_grace_a_renewal_revives_it_and_credit_is_topped_up() {
    lifecycle_flow(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_key_expires_after_its_grace_a_renewal_revives_it_and_credit_is_topped_up()
{
    let Some((url, name)) = postgres().await else {
        return;
    };
    lifecycle_flow(Some(&url)).await;
    drop_postgres(&name).await;
}

async fn lifecycle_flow(database_url: Option<&str>) {
    let Some(chain) = start_chain() else { return };
    let (_mock, line) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", "fine thanks"],
        "listening on ",
    );
    let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
    let dir = temp_dir();
    let (rpc, token, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let node = format!("upstream:{mock_url}#mock");
    let mut env = vec![
        ("AIFORGE_ETH_RPC_URL", rpc.as_str()),
        ("AIFORGE_ETH_USDT_CONTRACT", token.as_str()),
        ("AIFORGE_ETH_PLATFORM_WALLET", platform.as_str()),
        ("AIFORGE_MANUAL_CLOCK_START", T0),
        ("AIFORGE_LOCAL_NODE", node.as_str()),
        ("AIFORGE_DEMO", "0"),
    ];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let server = Server::start(&dir, &env);
    let (payer_key, other_key) = (chain.s("payer_key"), chain.s("other_key"));
    let (payer_key, other_key) = (
        payer_key.trim_start_matches("0x"),
        other_key.trim_start_matches("0x"),
    );
    let creator = wallet_session(&server, payer_key).await.unwrap();
    let mut consumer = wallet_session(&server, other_key).await.unwrap();
    chain.transfer(payer_key, &token, &chain.s("other"), 100_000_000);

    // The creator's model is the local node's upstream (same content, same SHA-256).
    let card = format!("aiforge upstream model card\nbase_url: {mock_url}\nmodel: mock\n");
    let model = upload(&server, &creator, "name=busy&tags=chat", card.into_bytes()).await;
    publish_free(&server, &creator, &model).await;
    let monthly = create_service(
        &server,
        &creator,
        &model,
        "Monthly",
        json!({"type": "monthly", "price_per_month": "10"}),
    )
    .await;
    let metered = create_service(
        &server,
        &creator,
        &model,
        "Metered",
        json!({"type": "pay_per_request", "price_per_request": "0.5"}),
    )
    .await;

    // A monthly subscription: paid, active for 30 days from its activation.
    let (status, subscribed) = post_as(
        &server,
        &format!("/api/marketplace/{monthly}/subscribe"),
        json!({}),
        &consumer,
    )
    .await;
    assert_eq!(status, 201, "{subscribed}");
    let sub = subscribed["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = subscribed["api_key"].as_str().unwrap().to_string();
    assert_eq!(subscribed["subscription"]["state"], "pending_payment");
    pay_answer(&chain, &server, &consumer, "other_key", &subscribed).await;
    chat_until(&server, &key, &model, 200).await;
    let mine = subscription_until(&server, &consumer, &sub, "state", "active").await;
    assert_eq!(mine["period_end"], "2026-10-31T00:00:00.000000Z");
    assert_eq!(mine["grace_until"], "2026-11-03T00:00:00.000000Z");
    assert_eq!(mine["renewal_price"], "10.000000");
    assert_eq!(mine["accepts_top_up"], false);
    // "My subscriptions" data: this period's usage (the call above) and the quota left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, usage) = get(
            &server,
            &format!("/api/marketplace/subscriptions/{sub}/usage"),
            Some(&consumer),
        )
        .await;
        assert_eq!(status, 200, "{usage}");
        if usage["period"]["requests"] == 1 {
            assert_eq!(usage["period"]["start"], "2026-10-01T00:00:00.000000Z");
            assert_eq!(usage["period"]["end"], "2026-10-31T00:00:00.000000Z");
            assert_eq!(usage["quota"]["requests_per_month"], 1000);
            assert_eq!(usage["quota"]["requests_remaining"], 999);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call never reached the usage: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pay-per-request: 0.5 a call on 1 USDT of credit is two calls, then 429; a top-up on the
    // same subscription makes the same key work again.
    let (status, subscribed) = post_as(
        &server,
        &format!("/api/marketplace/{metered}/subscribe"),
        json!({"credit": "1"}),
        &consumer,
    )
    .await;
    assert_eq!(status, 201, "{subscribed}");
    let metered_sub = subscribed["subscription"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let metered_key = subscribed["api_key"].as_str().unwrap().to_string();
    pay_answer(&chain, &server, &consumer, "other_key", &subscribed).await;
    chat_until(&server, &metered_key, &model, 200).await;
    let (status, _) = chat(&server, &metered_key, &model).await;
    assert_eq!(status, 200);
    let (status, body) = chat(&server, &metered_key, &model).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "{body}"
    );
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{metered_sub}/renew"),
        json!({}),
        &consumer,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("nothing_to_renew")),
        "{body}"
    );
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{metered_sub}/top-up"),
        json!({"amount": "0"}),
        &consumer,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("amount")),
        "{body}"
    );
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{metered_sub}/top-up"),
        json!({"amount": "1"}),
        &creator,
    )
    .await;
    assert_eq!(status, 404, "another's subscription is not there: {body}");
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{sub}/top-up"),
        json!({"amount": "1"}),
        &consumer,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("credit")),
        "a monthly subscription takes no credit: {body}"
    );
    let (status, topped) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{metered_sub}/top-up"),
        json!({"amount": "1"}),
        &consumer,
    )
    .await;
    assert_eq!(status, 201, "{topped}");
    assert_eq!(
        topped["payment"]["reference"],
        format!("api-subscription-top-up:{metered_sub}")
    );
    pay_answer(&chain, &server, &consumer, "other_key", &topped).await;
    chat_until(&server, &metered_key, &model, 200).await;
    let mine = subscription_until(&server, &consumer, &metered_sub, "credit", "2.000000").await;
    assert_eq!(mine["state"], "active");
    assert_eq!(mine["accepts_top_up"], true);
    assert_eq!(mine["renewal_price"], Value::Null);

    // Popular = requests in the last 30 days: the busy model before a quiet one published later.
    advance(&server, 3600).await;
    consumer = wallet_session(&server, other_key).await.unwrap();
    let quiet = upload(&server, &consumer, "name=quiet", b"quiet weights".to_vec()).await;
    publish_free(&server, &consumer, &quiet).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = search(&server, "kind=model&sort=popular").await;
        if page["items"][0]["requests_30d"].as_i64() >= Some(4) {
            assert_eq!(names(&page), ["model:busy", "model:quiet"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never reached the search: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        names(&search(&server, "kind=model&sort=newest").await),
        ["model:quiet", "model:busy"]
    );
    let (status, detail) = get(&server, &format!("/api/marketplace/models/{model}"), None).await;
    assert_eq!(status, 200, "{detail}");
    assert!(
        detail["usage_30d"]["requests"].as_i64().unwrap() >= 4,
        "{detail}"
    );
    assert_eq!(detail["services"].as_array().unwrap().len(), 2);

    // Past the period, inside the grace: the key still works, the subscription says "grace".
    advance(&server, 31 * DAY - 3600).await;
    consumer = wallet_session(&server, other_key).await.unwrap();
    chat_until(&server, &key, &model, 200).await;
    assert_eq!(
        my_subscription(&server, &consumer, &sub).await["state"],
        "grace"
    );
    // A renewal confirmed inside the grace: 30 days on from the old end, the same key.
    let (status, renewal) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{sub}/renew"),
        json!({"network": "ethereum"}),
        &consumer,
    )
    .await;
    assert_eq!(status, 201, "{renewal}");
    assert_eq!(renewal["amount_due"], "10.000000");
    assert_eq!(
        renewal["payment"]["reference"],
        format!("api-subscription-renewal:{sub}")
    );
    let renewal_payment = pay_answer(&chain, &server, &consumer, "other_key", &renewal).await;
    let mine = subscription_until(
        &server,
        &consumer,
        &sub,
        "period_end",
        "2026-11-30T00:00:00.000000Z",
    )
    .await;
    assert_eq!(mine["state"], "active");
    assert_eq!(mine["grace_until"], "2026-12-03T00:00:00.000000Z");
    let (_, payment) = get(
        &server,
        &format!("/api/payments/{renewal_payment}"),
        Some(&consumer),
    )
    .await;
    assert_eq!(
        (
            &payment["payment"]["platform_fee"],
            &payment["payment"]["net"]
        ),
        (&json!("1.000000"), &json!("9.000000")),
        "10% to the platform: {payment}"
    );

    // Exact at the second on the app clock: the last second of the grace works, the next not.
    advance(&server, 32 * DAY - 1).await;
    chat_until(&server, &key, &model, 200).await;
    advance(&server, 1).await;
    let body = chat_until(&server, &key, &model, 403).await;
    assert_eq!(body["error"]["code"], "subscription_expired", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = get(&server, "/api/v1/models", Some(&key)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("subscription_expired"))
    );
    consumer = wallet_session(&server, other_key).await.unwrap();
    assert_eq!(
        my_subscription(&server, &consumer, &sub).await["state"],
        "expired"
    );

    // Renewed after the grace: a new period from the confirmation, the same key works again.
    let (status, renewal) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{sub}/renew"),
        json!({}),
        &consumer,
    )
    .await;
    assert_eq!(status, 201, "{renewal}");
    pay_answer(&chain, &server, &consumer, "other_key", &renewal).await;
    chat_until(&server, &key, &model, 200).await;
    let mine = subscription_until(&server, &consumer, &sub, "state", "active").await;
    assert_eq!(mine["period_end"], "2027-01-02T00:00:00.000000Z");

    // Cancelled: nothing to renew.
    let (status, _) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{sub}/cancel"),
        json!({}),
        &consumer,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{sub}/renew"),
        json!({}),
        &consumer,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("cancelled")),
        "{body}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_sold_once_per_buyer_downloaded_byte_for_byte_and_found_in_the_search() {
    sales_flow(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_model_is_sold_once_per_buyer_downloaded_byte_for_byte_and_found_in_the_search(
) {
    let Some((url, name)) = postgres().await else {
        return;
    };
    sales_flow(Some(&url)).await;
    drop_postgres(&name).await;
}

async fn sales_flow(database_url: Option<&str>) {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let (rpc, token, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let mut env = vec![
        ("AIFORGE_ETH_RPC_URL", rpc.as_str()),
        ("AIFORGE_ETH_USDT_CONTRACT", token.as_str()),
        ("AIFORGE_ETH_PLATFORM_WALLET", platform.as_str()),
        ("AIFORGE_ADMIN_WALLETS", admin_address.as_str()),
        ("AIFORGE_MANUAL_CLOCK_START", T0),
        ("AIFORGE_LOCAL_NODE", "off"),
    ];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let server = Server::start(&dir, &env);
    let (payer_key, other_key) = (chain.s("payer_key"), chain.s("other_key"));
    let (payer_key, other_key) = (
        payer_key.trim_start_matches("0x"),
        other_key.trim_start_matches("0x"),
    );
    let creator = wallet_session(&server, payer_key).await.unwrap();
    let buyer = wallet_session(&server, other_key).await.unwrap();
    chain.transfer(payer_key, &token, &chain.s("other"), 100_000_000);
    let (_, outsider) = signed_up(&server, "outsider@example.com").await;

    // A creator's model for sale, bytes that are not text after an upstream model card's
    // header (a service needs a model an engine serves; the card makes it servable).
    let mut bytes: Vec<u8> =
        b"aiforge upstream model card\nbase_url: http://127.0.0.1:9/v1\nmodel: sold\n".to_vec();
    bytes.extend((0..200_000u32).map(|i| (i * 7 % 251) as u8));
    let model = upload(
        &server,
        &creator,
        "name=sold&tags=chat,small",
        bytes.clone(),
    )
    .await;
    publish_free(&server, &creator, &model).await;
    let sale = |price: Value| json!({"price": price});
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/models/{model}/sale"),
        sale(json!("25")),
        Some(&buyer),
    )
    .await;
    assert_eq!(status, 403, "only the seller sets the price: {body}");
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/models/{model}/sale"),
        sale(json!("-1")),
        Some(&creator),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("price")),
        "{body}"
    );
    let (status, body) = post_as(
        &server,
        &format!("/api/models/{model}/buy"),
        json!({}),
        &buyer,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_for_sale")),
        "{body}"
    );
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/models/{model}/sale"),
        sale(json!("25")),
        Some(&creator),
    )
    .await;
    assert_eq!(
        (status, &body["sale_price"]),
        (200, &json!("25.000000")),
        "{body}"
    );
    let (status, _) = get(
        &server,
        &format!("/api/models/{model}/download"),
        Some(&buyer),
    )
    .await;
    assert_eq!(status, 403, "not bought yet");
    let (status, body) = post_as(
        &server,
        &format!("/api/models/{model}/buy"),
        json!({}),
        &creator,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("own_model")),
        "{body}"
    );

    // Asked twice, one payment; a price change after asking applies to later purchases only.
    let (status, asked) = post_as(
        &server,
        &format!("/api/models/{model}/buy"),
        json!({"network": "ethereum"}),
        &buyer,
    )
    .await;
    assert_eq!(status, 201, "{asked}");
    assert_eq!(asked["payment"]["payment_type"], "model_sale");
    assert_eq!(asked["payment"]["amount"], "25.000000");
    let (status, again) = post_as(
        &server,
        &format!("/api/models/{model}/buy"),
        json!({}),
        &buyer,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["payment"]["payment_id"],
        asked["payment"]["payment_id"]
    );
    let (status, _) = send(
        &server,
        Method::PUT,
        &format!("/api/models/{model}/sale"),
        sale(json!("30")),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200);
    let sale_payment = pay_answer(&chain, &server, &buyer, "other_key", &asked).await;
    let buyer_id = asked["payment"]["payer"].as_str().unwrap().to_string();
    let (_, shown) = get(&server, &format!("/api/models/{model}"), Some(&creator)).await;
    let creator_id = shown["model"]["owner"]["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let downloaded = loop {
        let response = client()
            .get(server.url(&format!("/api/models/{model}/download")))
            .bearer_auth(&buyer)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.bytes().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the purchase never allowed the download"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(downloaded.as_ref() == bytes.as_slice(), "byte for byte");
    let (status, _) = get(
        &server,
        &format!("/api/models/{model}/download"),
        Some(&outsider),
    )
    .await;
    assert_eq!(status, 403, "a non-buyer");
    let (status, body) = post_as(
        &server,
        &format!("/api/models/{model}/buy"),
        json!({}),
        &buyer,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_purchased")),
        "{body}"
    );
    let (_, payment) = get(
        &server,
        &format!("/api/payments/{sale_payment}"),
        Some(&buyer),
    )
    .await;
    assert_eq!(
        (
            &payment["payment"]["amount"],
            &payment["payment"]["platform_fee"],
            &payment["payment"]["net"]
        ),
        (&json!("25.000000"), &json!("1.250000"), &json!("23.750000")),
        "5% of the price asked at: {payment}"
    );
    let (_, shown) = get(&server, &format!("/api/models/{model}"), Some(&buyer)).await;
    assert_eq!(
        (&shown["model"]["purchased"], &shown["model"]["sale_price"]),
        (&json!(true), &json!("30.000000"))
    );

    // A group's model: sold by its OWNER (a MEMBER may not), the net held for the group split.
    advance(&server, 3600).await;
    let (_, owner) = signed_up(&server, "owner@example.com").await;
    let (member_id, member) = signed_up(&server, "member@example.com").await;
    let (status, group) = post_as(
        &server,
        "/api/groups",
        json!({"name": "Lab", "description": ""}),
        &owner,
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group = group["group"]["group_id"].as_str().unwrap().to_string();
    let (status, body) = post_as(
        &server,
        &format!("/api/groups/{group}/members"),
        json!({"user_id": member_id, "role": "MEMBER"}),
        &owner,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let group_model = upload(
        &server,
        &owner,
        &format!("name=lab-vision&tags=vision&group_id={group}"),
        b"lab weights".to_vec(),
    )
    .await;
    publish_free(&server, &owner, &group_model).await;
    let (status, _) = send(
        &server,
        Method::PUT,
        &format!("/api/models/{group_model}/sale"),
        sale(json!("10")),
        Some(&member),
    )
    .await;
    assert_eq!(status, 403, "a MEMBER does not sell the group's model");
    let (status, _) = send(
        &server,
        Method::PUT,
        &format!("/api/models/{group_model}/sale"),
        sale(json!("10")),
        Some(&owner),
    )
    .await;
    assert_eq!(status, 200);
    let (status, asked) = post_as(
        &server,
        &format!("/api/models/{group_model}/buy"),
        json!({}),
        &buyer,
    )
    .await;
    assert_eq!(status, 201, "{asked}");
    pay_answer(&chain, &server, &buyer, "other_key", &asked).await;
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, ledger) = get(&server, "/api/admin/ledger", Some(&admin)).await;
    assert_eq!(status, 200, "{ledger}");
    assert_eq!(ledger["sum_micros"], "0");
    let balance = |account: &str| {
        ledger["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == account)
            .map(|a| a["balance"].as_str().unwrap().to_string())
    };
    assert_eq!(
        balance(&format!("group_revenue:{group_model}")).as_deref(),
        Some("9.500000")
    );
    assert_eq!(
        balance(&format!("creator_payable:{creator_id}")).as_deref(),
        Some("23.750000")
    );
    assert_eq!(
        balance(&format!("payer:{buyer_id}")).as_deref(),
        Some("-35.000000")
    );

    // The search lists published models with or without a service, and services; filters and
    // sorts give the expected order.
    advance(&server, 3600).await;
    let creator = wallet_session(&server, payer_key).await.unwrap();
    create_service(
        &server,
        &creator,
        &model,
        "Sold monthly",
        json!({"type": "monthly", "price_per_month": "12"}),
    )
    .await;
    create_service(
        &server,
        &creator,
        &model,
        "Sold metered",
        json!({"type": "pay_per_request", "price_per_request": "0.5"}),
    )
    .await;
    let all = search(&server, "").await;
    assert_eq!(all["total"], 4, "{all}");
    assert_eq!(
        names(&all),
        [
            "service:Sold metered",
            "service:Sold monthly",
            "model:lab-vision",
            "model:sold"
        ],
        "newest first"
    );
    assert_eq!(
        names(&search(&server, "kind=model&q=SOLD").await),
        ["model:sold"]
    );
    assert_eq!(
        names(&search(&server, "tags=vision").await),
        ["model:lab-vision"]
    );
    assert_eq!(
        names(&search(&server, "tags=chat,small&sort=price_asc").await),
        ["service:Sold metered", "service:Sold monthly", "model:sold"]
    );
    assert_eq!(
        names(&search(&server, "pricing=monthly").await),
        ["service:Sold monthly"]
    );
    assert_eq!(
        names(&search(&server, "min_price=5&max_price=20&sort=price_desc").await),
        ["service:Sold monthly", "model:lab-vision"]
    );
    let page = search(&server, "sort=price_asc&per_page=1&page=2").await;
    assert_eq!(
        (names(&page), &page["total"]),
        (vec!["model:lab-vision".to_string()], &json!(4))
    );
    for bad in [
        "sort=cheapest",
        "kind=plan",
        "min_price=abc",
        "tags=a,b,c,d,e,f",
    ] {
        let (status, _) = get(&server, &format!("/api/marketplace/search?{bad}"), None).await;
        assert_eq!(status, 422, "{bad}");
    }
    let (status, detail) = get(
        &server,
        &format!("/api/marketplace/models/{group_model}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["model"]["owner"],
        json!({"kind": "group", "id": group})
    );
    assert_eq!(detail["model"]["sale_price"], "10.000000");
    assert_eq!(detail["services"], json!([]));
    assert_eq!(detail["usage_30d"], json!({"requests": 0, "tokens": 0}));
    server.stop();
}
