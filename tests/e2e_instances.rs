//! One platform however many instances: restarts on the same data (SIGTERM and `kill -9`, on
//! SQLite and PostgreSQL, demo on), and two instances on one PostgreSQL database that share a
//! rate limit exactly, see each other's revocations and nodes' heartbeats. Real binaries: the
//! `aiforge` server, the mock OpenAI upstream as the local node's engine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::time::{Duration, Instant};

use aiforge_commands::testing::{drop_postgres_database, postgres_admin_url, TestDatabase};
use reqwest::Method;
use serde_json::{json, Value};
use support::{client, send, signed_up, start_sibling, temp_dir, Killed, Server};

const JWT_SECRET: &str = "e2e-instances-shared-jwt-secret-0123456789";

fn mock() -> (Killed, String) {
    let (mock, line) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", "Hi there"],
        "listening on ",
    );
    let url = format!("{}/v1", line.trim_start_matches("listening on "));
    (mock, url)
}

/// The card the local node uploads for an upstream model: its content is what the node serves.
fn card(mock_url: &str) -> String {
    format!("aiforge upstream model card\nbase_url: {mock_url}\nmodel: mock\n")
}

async fn chat(server: &Server, key: &str, model: &str) -> (u16, Value) {
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn demo(server: &Server) -> (String, String) {
    (
        server.printed("demo model: ").expect("demo model printed"),
        server
            .printed("demo key (shown once): ")
            .expect("demo key printed"),
    )
}

async fn restarts_keep_the_demo(database_url: Option<&str>) {
    let (_mock, mock_url) = mock();
    let dir = temp_dir();
    let node = format!("upstream:{mock_url}#mock");
    let mut env = vec![("AIFORGE_LOCAL_NODE", node.as_str())];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let first = Server::start(&dir, &env);
    let (model, key1) = demo(&first);
    assert_eq!(chat(&first, &key1, &model).await.0, 200);
    first.stop();

    // SIGTERM, then the same data: the same demo model, a fresh key, the old one refused.
    let second = Server::start(&dir, &env);
    let (model2, key2) = demo(&second);
    assert_eq!(model2, model, "the demo model is found, not made again");
    assert_ne!(key2, key1);
    assert_eq!(
        chat(&second, &key1, &model).await.0,
        401,
        "the last key is revoked"
    );
    assert_eq!(chat(&second, &key2, &model).await.0, 200);

    // kill -9 mid-life, then the same data again.
    let mut killed = second;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let third = Server::start(&dir, &env);
    let (model3, key3) = demo(&third);
    assert_eq!(model3, model);
    assert_eq!(chat(&third, &key2, &model).await.0, 401);
    let (status, body) = chat(&third, &key3, &model).await;
    assert_eq!(status, 200, "{body}");
    let (status, usage) = support::get(&third, "/metrics", None).await;
    assert_eq!(status, 200, "{usage}");
    third.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_survives_restarts_and_a_kill_on_sqlite() {
    restarts_keep_the_demo(None).await;
}

async fn postgres_url() -> Option<(String, String)> {
    // Probe (and skip when not required) through the testing helper, then make a fresh database.
    let probe = TestDatabase::postgres().await?;
    probe.cleanup().await;
    TestDatabase::create_postgres_database().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_survives_restarts_and_a_kill_on_postgres() {
    let Some((url, name)) = postgres_url().await else {
        return;
    };
    restarts_keep_the_demo(Some(&url)).await;
    drop_postgres_database(&postgres_admin_url(), &name).await;
}

/// A service with `limits` on the model (made and published the first time), and a key for it.
async fn limited_key(
    server: &Server,
    token: &str,
    mock_url: &str,
    limits: Value,
) -> (String, String, String) {
    let model = published_model(server, token, mock_url).await;
    service_key(server, token, &model, limits).await
}

/// The user's model of the local node's content, uploaded and published once (the first
/// publication is free).
async fn published_model(server: &Server, token: &str, mock_url: &str) -> String {
    let (_, mine) = support::get(server, "/api/models/my-models", Some(token)).await;
    if let Some(id) = mine["models"][0]["id"].as_str() {
        return id.to_string();
    }
    let response = client()
        .post(server.url("/api/models?name=shared"))
        .bearer_auth(token)
        .body(card(mock_url).into_bytes())
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
    model
}

async fn service_key(
    server: &Server,
    token: &str,
    model: &str,
    limits: Value,
) -> (String, String, String) {
    let model = model.to_string();
    let (status, body) = send(
        server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Shared", "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": limits}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let service = body["service"]["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_string();
    let subscription = body["subscription"]["id"].as_str().unwrap().to_string();
    (model, key, subscription)
}

/// The id of the user's service on `model` (the newest).
async fn service_of(server: &Server, token: &str, model: &str) -> String {
    let (status, body) = support::get(server, "/api/marketplace/my-services", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["model"]["id"] == model)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .max()
        .expect("a service on the model")
}

/// `n` chat calls at once, spread over `servers` in turn: their statuses.
async fn concurrent_calls(servers: &[&Server], key: &str, model: &str, n: usize) -> Vec<u16> {
    let mut calls = Vec::new();
    for i in 0..n {
        let url = servers[i % servers.len()].url("/api/v1/chat/completions");
        let (key, model) = (key.to_string(), model.to_string());
        calls.push(tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(&key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    statuses
}

/// Waits (bounded) until `server` answers `key` with something other than 401.
async fn key_known(server: &Server, key: &str, model: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client()
            .get(server.url(&format!("/api/v1/models/{model}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 401 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the key never reached this instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_database_behave_as_one() {
    let Some((url, name)) = postgres_url().await else {
        return;
    };
    let (_mock, mock_url) = mock();
    let node = format!("upstream:{mock_url}#mock");
    let env = [
        ("AIFORGE_DATABASE_URL", url.as_str()),
        ("AIFORGE_LOCAL_NODE", node.as_str()),
        ("AIFORGE_DEMO", "off"),
        ("AIFORGE_JWT_SECRET", JWT_SECRET),
        ("AIFORGE_PLAN_LIMITS", "free=4/100000"),
    ];
    let a = Server::start(&temp_dir(), &env);
    let b = Server::start(&temp_dir(), &env);
    let (_, token) = signed_up(&a, "ada@example.com").await;

    // 30 concurrent calls over both instances against a 5-per-minute limit: exactly 5.
    let (model, key, subscription) =
        limited_key(&a, &token, &mock_url, json!({"requests_per_minute": 5})).await;
    key_known(&b, &key, &model).await;
    let statuses = concurrent_calls(&[&a, &b], &key, &model, 30).await;
    let mut served = 0;
    let mut limited = 0;
    for status in statuses {
        match status {
            200 => served += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!(
        (served, limited),
        (5, 25),
        "the limit holds across instances"
    );

    // A monthly request quota nearly spent: concurrent calls never take it below zero.
    let (model2, key2, _) =
        limited_key(&a, &token, &mock_url, json!({"requests_per_month": 3})).await;
    key_known(&b, &key2, &model2).await;
    let ok = concurrent_calls(&[&a, &b, &b], &key2, &model2, 30)
        .await
        .into_iter()
        .filter(|status| *status == 200)
        .count();
    assert_eq!(ok, 3, "a monthly quota of 3 serves 3 over both instances");

    // A plan's month is as exact: a Free plan of 4 requests, the model included in plans, the
    // platform key used on both instances at once: 4 are served.
    let (status, body) = send(
        &a,
        Method::PUT,
        &format!("/api/marketplace/{}", service_of(&a, &token, &model2).await),
        json!({"included_in_plans": true}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &a,
        Method::POST,
        "/api/subscriptions/create",
        json!({"plan": "free"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        &a,
        Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let platform_key = body["key"].as_str().unwrap().to_string();
    key_known(&b, &platform_key, &model2).await;
    let ok = concurrent_calls(&[&a, &b], &platform_key, &model2, 30)
        .await
        .into_iter()
        .filter(|status| *status == 200)
        .count();
    assert_eq!(ok, 4, "a plan of 4 requests a month serves 4 over both instances");

    // A key revoked through A is refused by B within a second.
    let (status, body) = send(
        &a,
        Method::POST,
        &format!("/api/marketplace/subscriptions/{subscription}/regenerate-key"),
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let revoked_at = Instant::now();
    loop {
        let (status, _) = chat(&b, &key, &model).await;
        if status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "B still accepts a key revoked through A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A node heartbeating to A is online for B, with its metrics.
    let (status, body) = send(
        &a,
        Method::POST,
        "/api/nodes/register",
        json!({"name": "n1", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": 2, "memory_mb": 2048, "disk_gb": 10, "gpus": [], "max_concurrent_jobs": 1}}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let node = body["node"]["id"].as_str().unwrap().to_string();
    let node_token = body["node_token"].as_str().unwrap().to_string();
    let response = client()
        .post(a.url(&format!("/api/nodes/{node}/heartbeat")))
        .bearer_auth(&node_token)
        .json(&json!({"cpu_percent": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = support::get(&b, &format!("/api/nodes/{node}"), Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        if body["node"]["status"] == "online" {
            assert_eq!(body["node"]["last_heartbeat"]["metrics"]["cpu_percent"], 42);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never saw the node online: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Exactly one instance runs the cluster's periodic tasks; when it dies, the other takes over.
    let held = |text: &str| text.lines().any(|l| l == "aiforge_scheduler_lease_held 1");
    let metrics = |server: &Server| {
        let url = server.url("/metrics");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let (a_held, b_held) = (held(&metrics(&a).await), held(&metrics(&b).await));
    assert!(a_held ^ b_held, "one holder: a={a_held} b={b_held}");
    let (mut holder, other) = if a_held { (a, b) } else { (b, a) };
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !held(&metrics(&other).await) {
        assert!(Instant::now() < deadline, "the lease was never taken over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    other.stop();
    drop_postgres_database(&postgres_admin_url(), &name).await;
}

/// Projections held back on purpose: a transaction that took the appenders' lock on `events` and
/// has a transaction id stays open, so no reader of the log (projections, the key index) may
/// pass it. Subscribing and registering a node still answer with their once-shown secrets, and
/// both work once the log moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_is_answered_while_projections_lag() {
    let Some((url, name)) = postgres_url().await else {
        return;
    };
    let (_mock, mock_url) = mock();
    let node = format!("upstream:{mock_url}#mock");
    let server = Server::start(
        &temp_dir(),
        &[
            ("AIFORGE_DATABASE_URL", url.as_str()),
            ("AIFORGE_LOCAL_NODE", node.as_str()),
            ("AIFORGE_DEMO", "off"),
        ],
    );
    let (_, token) = signed_up(&server, "grace@example.com").await;
    let (model, _, _) = limited_key(&server, &token, &mock_url, json!({})).await;
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Second", "pricing": {"type": "monthly", "price_per_month": "0"}}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let service = body["service"]["id"].as_str().unwrap().to_string();

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT txid_current()")
        .execute(&mut *holder)
        .await
        .unwrap();

    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "subscribing under lag: {body}");
    let key = body["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("aiforge_"));
    assert_eq!(body["subscription"]["service_id"], service.as_str());
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/nodes/register",
        json!({"name": "n2", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": 1, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "registering under lag: {body}");
    assert!(body["node_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["node"]["name"], "n2");
    // The views are behind: the subscription is not listed yet.
    let (_, mine) = support::get(&server, "/api/marketplace/my-subscriptions", Some(&token)).await;
    assert_eq!(
        mine["subscriptions"].as_array().map(Vec::len),
        Some(1),
        "{mine}"
    );

    holder.rollback().await.unwrap();
    pool.close().await;
    key_known(&server, &key, &model).await;
    let (status, body) = chat(&server, &key, &model).await;
    assert_eq!(status, 200, "{body}");
    server.stop();
    drop_postgres_database(&postgres_admin_url(), &name).await;
}
