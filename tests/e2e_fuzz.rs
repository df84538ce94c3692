//! A fuzz run against the real `aiforge` binary, for a bounded time (`AIFORGE_FUZZ_SECS`,
//! default 20; `scripts/test` sets it): proptest makes JSON bodies (arbitrary values, valid
//! bodies with one field replaced by anything, and bytes that are not JSON at all) for the JSON
//! command routes and the chat and completions routes, signed in and with an API key. No answer
//! may be a 5xx, every error answer is JSON, and the server must still answer when it is over
//! (no panic took it down).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::Method;
use serde_json::{json, Map, Value};
use support::*;

/// Any JSON value, nested a few levels, with the strings a parser trips on.
fn any_json() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        ".{0,12}",
        Just(String::new()),
        Just("\u{0}\u{202E}".to_string()),
        Just("1e2".to_string()),
        Just("-0.0000001".to_string()),
        Just("99999999999999999999999999".to_string()),
        Just("0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1".to_string()),
        "[a-z_]{1,10}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A route and a valid body for it (`MODEL`, `SERVICE`, `GROUP` replaced by real ids). The
/// Hugging Face import is left out: it calls the hub, and a hub out of reach is a 502 by design.
fn routes() -> Vec<(Method, &'static str, Value)> {
    vec![
        (
            Method::POST,
            "/api/auth/register",
            json!({"email": "f@example.com", "password": "correct horse battery staple", "username": "f"}),
        ),
        (
            Method::POST,
            "/api/auth/login",
            json!({"email": "f@example.com", "password": "correct horse battery staple"}),
        ),
        (
            Method::POST,
            "/api/wallets/connect",
            json!({"network": "ethereum", "address": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"}),
        ),
        (
            Method::POST,
            "/api/auth/wallet/login",
            json!({"network": "ethereum", "address": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "message": "m", "signature": "0x00"}),
        ),
        (
            Method::POST,
            "/api/groups",
            json!({"name": "G", "description": ""}),
        ),
        (
            Method::POST,
            "/api/groups/GROUP/members",
            json!({"user_id": "u", "role": "MEMBER"}),
        ),
        (
            Method::POST,
            "/api/payments/create",
            json!({"type": "publishing_fee", "network": "ethereum", "amount": "5", "reference": "model:x"}),
        ),
        (
            Method::POST,
            "/api/payments/verify",
            json!({"payment_id": "p", "tx_hash": "0x00"}),
        ),
        (
            Method::POST,
            "/api/subscriptions/create",
            json!({"plan": "free"}),
        ),
        (
            Method::PUT,
            "/api/models/MODEL",
            json!({"name": "n", "description": "d", "tags": ["a"]}),
        ),
        (
            Method::POST,
            "/api/publishing/model/MODEL/publish",
            json!({}),
        ),
        (
            Method::POST,
            "/api/marketplace/create",
            json!({"model_id": "MODEL", "name": "S", "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": {}}),
        ),
        (
            Method::PUT,
            "/api/marketplace/SERVICE",
            json!({"active": true}),
        ),
        (
            Method::POST,
            "/api/marketplace/SERVICE/subscribe",
            json!({}),
        ),
        (
            Method::POST,
            "/api/group-revenue/model/MODEL/split",
            json!({"shares": [{"user_id": "u", "percent": "100"}]}),
        ),
        (
            Method::POST,
            "/api/nodes/register",
            json!({"name": "n", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": 1, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}}),
        ),
        (
            Method::POST,
            "/api/jobs",
            json!({"payment_id": "p", "type": "training", "image": "busybox", "command": ["true"], "env": {}, "inputs": [], "needs": {"cpu_cores": 1, "memory_mb": 256, "gpus": 0, "gpu_memory_mb": 0}, "max_runtime_secs": 60, "price": "1"}),
        ),
        (Method::POST, "/api/revenue/close/2026/1", json!({})),
        (
            Method::POST,
            "/api/v1/chat/completions",
            json!({"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
        ),
        (
            Method::POST,
            "/api/v1/completions",
            json!({"model": "MODEL", "prompt": "hi", "max_tokens": 4}),
        ),
    ]
}

/// What a fuzzed request sends: a body of one of three kinds.
#[derive(Debug, Clone)]
enum Fuzzed {
    /// A valid body with one field replaced (or added) by anything.
    Mutated(String, Value),
    /// Anything at all, well-formed JSON.
    Any(Value),
    /// Bytes, mostly not JSON.
    Bytes(Vec<u8>),
}

fn fuzzed() -> impl Strategy<Value = Fuzzed> {
    prop_oneof![
        4 => ("[a-z_]{1,12}|model|messages|stop|prompt|name|pricing|shares|amount|resources|email", any_json())
            .prop_map(|(k, v)| Fuzzed::Mutated(k, v)),
        2 => any_json().prop_map(Fuzzed::Any),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Fuzzed::Bytes),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fuzzed_bodies_never_get_a_5xx_nor_bring_the_server_down() {
    let secs: u64 = std::env::var("AIFORGE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let (_mock, line) = start_sibling("aiforge-mock-openai", &["--reply", "ok"], "listening on ");
    let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
    let data = temp_dir();
    let node = format!("upstream:{mock_url}#mock");
    let server = Server::start(
        &data,
        &[("AIFORGE_LOCAL_NODE", &node), ("AIFORGE_DEMO", "on")],
    );
    let model = server.printed("demo model: ").expect("demo model");
    let service = server.printed("demo service: ").expect("demo service");
    let key = server.printed("demo key (shown once): ").expect("demo key");
    let token = register_and_sign_in(&server, "fuzz@example.com").await;
    let (_, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "Fuzz", "description": ""}),
        Some(&token),
    )
    .await;
    let group = group["group"]["group_id"]
        .as_str()
        .unwrap_or("g")
        .to_string();

    let routes = routes();
    let strategy = (0..routes.len(), fuzzed());
    let mut runner = TestRunner::deterministic();
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0u32;
    while Instant::now() < deadline {
        let (index, case) = strategy.new_tree(&mut runner).unwrap().current();
        let (method, path, valid) = &routes[index];
        let path = path
            .replace("MODEL", &model)
            .replace("SERVICE", &service)
            .replace("GROUP", &group);
        let body = match &case {
            Fuzzed::Mutated(field, value) => {
                let mut body = valid.clone();
                let text = body.to_string().replace("MODEL", &model);
                body = serde_json::from_str(&text).unwrap();
                body[field.as_str()] = value.clone();
                body.to_string().into_bytes()
            }
            Fuzzed::Any(value) => value.to_string().into_bytes(),
            Fuzzed::Bytes(bytes) => bytes.clone(),
        };
        let credential = if path.starts_with("/api/v1/") {
            &key
        } else {
            &token
        };
        let response = http
            .request(method.clone(), server.url(&path))
            .bearer_auth(credential)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} {case:?}: the server did not answer: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.unwrap_or_default();
        assert!(status < 500, "{method} {path} {case:?}: {status} {text}");
        if status >= 400 {
            assert!(
                content_type.starts_with("application/json"),
                "{method} {path}: {status} {content_type} {text}"
            );
            let error: Value = serde_json::from_str(&text).unwrap();
            assert!(
                error["error"]["message"].is_string(),
                "{method} {path}: {text}"
            );
        }
        sent += 1;
    }
    assert!(sent > 20, "only {sent} requests in {secs} s");
    let (status, _) = get(&server, "/healthz", None).await;
    assert_eq!(
        status, 200,
        "the server still answers after {sent} fuzzed requests"
    );
    server.stop();
}
