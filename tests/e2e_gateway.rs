//! End-to-end through the real `aiforge` binary serving a real model (SmolLM2-135M-Instruct on
//! the in-process node): the OpenAI-compatible API non-streaming and streaming, its errors,
//! per-key rate limits under concurrency, metering that equals what the responses carried
//! (including a client that hangs up mid-stream), key revocation, and the official OpenAI
//! Python SDK unmodified.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::time::Duration;

use aiforge_commands::testing::{skip_or_fail, tools_dir};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use support::*;

async fn post_as(server: &Server, path: &str, body: Value, token: &str) -> (u16, Value) {
    send(server, Method::POST, path, body, Some(token)).await
}

/// A chat completion with an API key; the status, the body and the Retry-After header.
async fn chat(base: &str, key: &str, body: Value) -> (u16, Value, Option<String>) {
    let response = client()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.json().await.unwrap_or(Value::Null), retry)
}

/// A streamed completion read to the end: the content, the usage chunk and whether [DONE] came.
async fn chat_stream(base: &str, key: &str, mut body: Value) -> (String, Value, bool) {
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = client()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let (mut content, mut usage, mut done) = (String::new(), Value::Null, false);
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(delta);
        }
        if !chunk["usage"].is_null() {
            assert_eq!(chunk["choices"], json!([]));
            usage = chunk["usage"].clone();
        }
    }
    (content, usage, done)
}

/// A creator with one published model made of `bytes`; returns (model id, token).
async fn published_model(server: &Server, email: &str, bytes: Vec<u8>) -> (String, String) {
    let creator = register_and_sign_in(server, email).await;
    let response = client()
        .post(server.url("/api/models?name=served"))
        .bearer_auth(&creator)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let model = model["model"]["id"].as_str().unwrap().to_string();
    let (status, body) = post_as(
        server,
        &format!("/api/publishing/model/{model}/publish"),
        json!({}),
        &creator,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (model, creator)
}

/// A free service on `model` and a consumer's subscription to it: (subscription id, key).
async fn subscribed(
    server: &Server,
    creator: &str,
    model: &str,
    consumer: &str,
) -> (String, String) {
    let (status, body) = post_as(
        server,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Served", "description": "",
               "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": {}}),
        creator,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let service = body["service"]["id"].as_str().unwrap().to_string();
    let (status, body) = post_as(
        server,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({}),
        consumer,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["subscription"]["id"].as_str().unwrap().to_string(),
        body["api_key"].as_str().unwrap().to_string(),
    )
}

async fn usage_of(server: &Server, token: &str, subscription: &str, requests: i64) -> Value {
    for _ in 0..200 {
        let (status, body) = get(
            server,
            &format!("/api/marketplace/subscriptions/{subscription}/usage"),
            Some(token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["requests"] == requests {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("usage never reached {requests} requests");
}

fn question(model: &str, max_tokens: u32) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "temperature": 0,
           "messages": [{"role": "user", "content": "Name three colors."}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_model_answers_through_the_gateway_metered_and_limited() {
    let model_path = model_file().await;
    let dir = temp_dir();
    let server = Server::start(&dir, &[("AIFORGE_LOCAL_NODE", "smollm2")]);
    let v1 = server.url("/api/v1");

    // The demo the README's first command prints works as printed.
    let demo_model = server.printed("demo model: ").expect("the demo model id");
    let demo_key = server
        .printed("demo key (shown once): ")
        .expect("a demo key");
    let (status, answer, _) = chat(&v1, &demo_key, question(&demo_model, 12)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], demo_model.as_str());
    let greedy = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!greedy.trim().is_empty());
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert!((1..=12).contains(&usage["completion_tokens"].as_u64().unwrap()));
    // Streaming gives the same greedy tokens and counts them the same.
    let (streamed, stream_usage, done) =
        chat_stream(&v1, &demo_key, question(&demo_model, 12)).await;
    assert!(done);
    assert_eq!(streamed, greedy);
    assert_eq!(&stream_usage, usage);

    // Errors in OpenAI's shape.
    let (status, body, _) = chat(&v1, "aiforge_not-a-key", question(&demo_model, 1)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, body, _) = chat(&v1, &demo_key, question("no-such-model", 1)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    for bad in [
        json!({"model": demo_model, "messages": []}),
        json!({"model": demo_model}),
        json!({"model": demo_model, "messages": [{"role": "user", "content": "hi"}], "n": 2}),
        json!({"model": demo_model, "messages": [{"role": "user", "content": "hi"}], "temperature": 3}),
        json!({"model": demo_model, "messages": [{"role": "user", "content": "hi"}], "bogus": 1}),
        json!({"model": demo_model, "messages": [{"role": "tool", "content": "hi"}]}),
    ] {
        let (status, body, _) = chat(&v1, &demo_key, bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }

    // A creator sells the same model file (the node serves it by content) as two services.
    let creator = register_and_sign_in(&server, "creator@example.com").await;
    let response = client()
        .post(server.url("/api/models?name=SmolLM2%20chat"))
        .bearer_auth(&creator)
        .body(tokio::fs::read(&model_path).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let model = model["model"]["id"].as_str().unwrap().to_string();
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{model}/publish"),
        json!({}),
        &creator,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut services = Vec::new();
    for (name, limits) in [
        // The hour's 5 keep the key refused however slowly the rest of the test runs (the
        // minute window alone gives a request back every 12 s).
        (
            "Limited",
            json!({"requests_per_minute": 5, "requests_per_hour": 5}),
        ),
        ("Open", json!({})),
    ] {
        let (status, body) = post_as(
            &server,
            "/api/marketplace/create",
            json!({"model_id": model, "name": name, "description": "",
                   "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": limits}),
            &creator,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        services.push(body["service"]["id"].as_str().unwrap().to_string());
    }
    let consumer = register_and_sign_in(&server, "consumer@example.com").await;
    let mut subscriptions = Vec::new();
    for service in &services {
        let (status, body) = post_as(
            &server,
            &format!("/api/marketplace/{service}/subscribe"),
            json!({}),
            &consumer,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        subscriptions.push((
            body["subscription"]["id"].as_str().unwrap().to_string(),
            body["api_key"].as_str().unwrap().to_string(),
        ));
    }
    let (limited_sub, limited_key) = subscriptions[0].clone();
    let (open_sub, open_key) = subscriptions[1].clone();

    // A key works for its own model only, and under its own service's base URL only.
    let (status, body, _) = chat(&v1, &open_key, question(&demo_model, 1)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("model_not_permitted"))
    );
    let other_service = server.url(&format!("/api/v1/services/{}", services[0]));
    let (status, _, _) = chat(&other_service, &open_key, question(&model, 1)).await;
    assert_eq!(status, 403);

    // Twelve concurrent requests against a limit of 5 (a minute, and an hour): exactly 5 are served.
    let limited_base = server.url(&format!("/api/v1/services/{}", services[0]));
    let calls = (0..12).map(|_| {
        let (base, key, model) = (limited_base.clone(), limited_key.clone(), model.clone());
        tokio::spawn(async move { chat(&base, &key, question(&model, 2)).await })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let served: Vec<_> = results.iter().filter(|(s, _, _)| *s == 200).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!((served.len(), refused.len()), (5, 7), "{results:?}");
    for (_, body, retry) in &refused {
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        let retry: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=720).contains(&retry), "{retry}");
    }
    // Metering equals what the five responses carried.
    let carried: u64 = served
        .iter()
        .map(|(_, b, _)| b["usage"]["total_tokens"].as_u64().unwrap())
        .sum();
    let recorded = usage_of(&server, &consumer, &limited_sub, 5).await;
    assert_eq!(recorded["total_tokens"].as_u64().unwrap(), carried);

    // Mixed streaming and non-streaming: recorded usage equals the usage the responses carried.
    let mut carried = (0u64, 0u64);
    for (i, max_tokens) in [3u32, 7, 4, 9].into_iter().enumerate() {
        let body = json!({"model": model, "max_tokens": max_tokens, "seed": i,
                          "messages": [{"role": "user", "content": format!("Count to {i}.")}]});
        let usage = if i % 2 == 0 {
            let (status, answer, _) = chat(&v1, &open_key, body).await;
            assert_eq!(status, 200, "{answer}");
            answer["usage"].clone()
        } else {
            let (_, usage, done) = chat_stream(&v1, &open_key, body).await;
            assert!(done);
            usage
        };
        carried.0 += usage["prompt_tokens"].as_u64().unwrap();
        carried.1 += usage["completion_tokens"].as_u64().unwrap();
    }
    let recorded = usage_of(&server, &consumer, &open_sub, 4).await;
    assert_eq!(recorded["prompt_tokens"].as_u64().unwrap(), carried.0);
    assert_eq!(recorded["completion_tokens"].as_u64().unwrap(), carried.1);

    // A client that hangs up mid-stream is billed for what was delivered, not for max_tokens.
    let response = client()
        .post(format!("{v1}/chat/completions"))
        .bearer_auth(&open_key)
        .json(
            &json!({"model": model, "max_tokens": 400, "stream": true, "temperature": 1,
                      "messages": [{"role": "user", "content": "Write a very long story."}]}),
        )
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut events = 0;
    while events < 4 {
        let piece = body.next().await.unwrap().unwrap();
        events += piece.windows(6).filter(|w| w == b"data: ").count();
    }
    drop(body);
    let recorded = usage_of(&server, &consumer, &open_sub, 5).await;
    let billed = recorded["completion_tokens"].as_u64().unwrap() - carried.1;
    assert!(
        (1..400).contains(&billed),
        "billed {billed} completion tokens"
    );

    // The official OpenAI Python SDK, unmodified.
    let python = tools_dir().join("python/bin/python");
    if python.is_file() {
        let output = tokio::process::Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/python/openai_sdk_check.py"
            ))
            .env("AIFORGE_BASE_URL", &v1)
            .env("AIFORGE_KEY", &open_key)
            .env("AIFORGE_MODEL", &model)
            .env("AIFORGE_LIMITED_BASE_URL", &limited_base)
            .env("AIFORGE_LIMITED_KEY", &limited_key)
            .env("AIFORGE_LIMITED_MODEL", &model)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the OpenAI SDK checks failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("openai sdk checks passed"), "{stdout}");
    } else {
        skip_or_fail(
            "the openai Python SDK",
            &format!(
                "{} not found (scripts/python-sdk installs it)",
                python.display()
            ),
        );
    }

    // A regenerated key replaces the old one at once.
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{open_sub}/regenerate-key"),
        json!({}),
        &consumer,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let new_key = body["api_key"].as_str().unwrap().to_string();
    let (status, _, _) = chat(&v1, &open_key, question(&model, 1)).await;
    assert_eq!(status, 401);
    let (status, _, _) = chat(&v1, &new_key, question(&model, 1)).await;
    assert_eq!(status, 200);

    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_on_nats_serve_the_real_model_and_an_upstream() {
    let nats = "nats://127.0.0.1:4222";
    if tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .is_err()
    {
        skip_or_fail("NATS", "nothing answers on 127.0.0.1:4222");
        return;
    }
    let model_path = model_file().await;
    let dir = temp_dir();
    // No in-process node: every answer comes from a node-agent over NATS.
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_NATS_URL", nats),
            ("AIFORGE_NODE_IDLE_TIMEOUT_SECS", "3"),
        ],
    );
    let v1 = server.url("/api/v1");
    let (model, creator) = published_model(
        &server,
        "gguf@example.com",
        tokio::fs::read(&model_path).await.unwrap(),
    )
    .await;
    let consumer = register_and_sign_in(&server, "caller@example.com").await;
    let (subscription, key) = subscribed(&server, &creator, &model, &consumer).await;

    // Before any node serves the model: 503, nothing billed.
    let (status, body, _) = chat(&v1, &key, question(&model, 4)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("no_node_available")),
        "{body}"
    );

    let path = model_path.to_str().unwrap();
    let (mut node, line) = start_sibling(
        "node-agent",
        &[
            "serve",
            "--nats-url",
            nats,
            "--node-id",
            "e2e-node",
            "--gguf",
            path,
            "--threads",
            "1",
        ],
        "node-agent e2e-node serving",
    );
    assert!(line.contains(&sha256_hex(&model_path)), "{line}");
    let (status, answer, _) = chat(&v1, &key, question(&model, 8)).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let (streamed, usage, done) = chat_stream(&v1, &key, question(&model, 8)).await;
    assert!(done);
    assert_eq!(
        streamed, text,
        "greedy decoding is the same over NATS, streamed or not"
    );
    assert_eq!(usage, answer["usage"]);
    let recorded = usage_of(&server, &consumer, &subscription, 2).await;
    assert_eq!(
        recorded["total_tokens"].as_u64().unwrap(),
        2 * usage["total_tokens"].as_u64().unwrap()
    );

    // The node dies mid-stream: the client gets an error event, what it got is billed.
    let response = client()
        .post(format!("{v1}/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({"model": model, "max_tokens": 400, "stream": true, "temperature": 1,
                      "messages": [{"role": "user", "content": "Write a very long story."}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("data: ").count() < 4 {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    while let Some(piece) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&piece.unwrap()));
    }
    assert!(seen.contains("\"node_lost\""), "{seen}");
    assert!(!seen.contains("[DONE]"));
    let recorded = usage_of(&server, &consumer, &subscription, 3).await;
    assert!(
        recorded["completion_tokens"].as_u64().unwrap()
            > 2 * usage["completion_tokens"].as_u64().unwrap()
    );

    // An upstream OpenAI-compatible server behind a node, for another platform model.
    let (mock, line) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", "Hello from upstream"],
        "listening on ",
    );
    let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
    let (upstream_model, upstream_creator) = published_model(
        &server,
        "upstream@example.com",
        format!("aiforge upstream model card\nbase_url: {mock_url}\nmodel: mock\n").into_bytes(),
    )
    .await;
    let (_, upstream_key) =
        subscribed(&server, &upstream_creator, &upstream_model, &consumer).await;
    let (upstream_node, _) = start_sibling(
        "node-agent",
        &[
            "serve",
            "--nats-url",
            nats,
            "--node-id",
            "e2e-upstream",
            "--upstream",
            &mock_url,
            "--upstream-model",
            "mock",
            "--serve-as",
            &upstream_model,
        ],
        "node-agent e2e-upstream serving",
    );
    let (status, answer, _) = chat(&v1, &upstream_key, question(&upstream_model, 8)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello from upstream"
    );
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    drop((upstream_node, mock));
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Ganache's deterministic account #0: the admin's wallet here (only its key is used, no chain).
const ADMIN_KEY: &str = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";

/// Polls the instance's view of its NATS nodes until `ready` holds for it.
async fn until_nodes(server: &Server, admin: &str, what: &str, ready: impl Fn(&[Value]) -> bool) {
    for _ in 0..400 {
        let (status, body) = get(server, "/api/admin/inference-nodes", Some(admin)).await;
        assert_eq!(status, 200, "{body}");
        if ready(body["nodes"].as_array().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the nodes never showed {what}");
}

/// The node ids serving `target` that show no load, here or announced.
fn idle_nodes(nodes: &[Value], target: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n["targets"].as_array().unwrap().iter().any(|t| t == target))
        .filter(|n| n["in_flight_here"] == 0 && n["in_flight_announced"] == 0)
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect()
}

async fn retries(server: &Server) -> u64 {
    metric(server, "aiforge_node_retries_total").await
}

/// A streamed call held open until its first word: which node answers it (each node's
/// upstream says its own name first), and the rest of the stream.
async fn first_word(
    v1: &str,
    key: &str,
    model: &str,
) -> (
    String,
    impl futures::Stream<Item = reqwest::Result<bytes::Bytes>>,
) {
    let mut body = question(model, 64);
    body["stream"] = json!(true);
    let response = client()
        .post(format!("{v1}/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    loop {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
        for word in ["Alpha", "Bravo", "Charlie", "Delta"] {
            if seen.contains(&format!("\"content\":\"{word}")) {
                return (word.to_string(), stream);
            }
        }
    }
}

/// Reads a held stream to its end; it must end normally.
async fn finish(mut stream: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin) {
    let mut rest = String::new();
    while let Some(piece) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&piece.unwrap()));
    }
    assert!(rest.contains("[DONE]"), "{rest}");
}

/// Nodes over NATS that serve the same model: a call goes to the least loaded; a node killed
/// without a word (no responders on its subject), a node whose engine fails and a node that
/// stays silent before its first token each have the call retried once on another node, and
/// the client sees a normal answer; a node that stops cleanly is no longer chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_go_to_the_least_loaded_node_and_a_node_failing_before_the_first_token_is_retried_once(
) {
    let nats = "nats://127.0.0.1:4222";
    if tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .is_err()
    {
        skip_or_fail("NATS", "nothing answers on 127.0.0.1:4222");
        return;
    }
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        skip_or_fail("wallets", "the wallet fixtures are not installed");
        return;
    };
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_NATS_URL", nats),
            ("AIFORGE_NODE_IDLE_TIMEOUT_SECS", "2"),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
        ],
    );
    let admin = support::chain::wallet_session(&server, ADMIN_KEY)
        .await
        .unwrap();
    let v1 = server.url("/api/v1");
    // One upstream per node, each saying its node's name first, a word every 50 ms.
    let mock = |reply: &str, extra: &[&str]| {
        let mut args = vec!["--reply", reply, "--chunk-delay-ms", "50"];
        args.extend_from_slice(extra);
        let (child, line) = start_sibling("aiforge-mock-openai", &args, "listening on ");
        (
            child,
            format!("{}/v1", line.trim_start_matches("listening on ")),
        )
    };
    let (_alpha_up, alpha_url) = mock("Alpha one two three four five", &[]);
    let (_bravo_up, bravo_url) = mock("Bravo one two three four five", &[]);
    let (model, creator) = published_model(
        &server,
        "routed@example.com",
        format!("aiforge upstream model card\nbase_url: {alpha_url}\nmodel: mock\n").into_bytes(),
    )
    .await;
    let consumer = register_and_sign_in(&server, "routed-caller@example.com").await;
    let (_, key) = subscribed(&server, &creator, &model, &consumer).await;
    let target = aiforge_inference::remote::model_target(&model);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let node = |name: &str, url: &str| {
        let id = format!("routed-{name}-{suffix}");
        let (child, _) = start_sibling(
            "node-agent",
            &[
                "serve",
                "--nats-url",
                nats,
                "--node-id",
                &id,
                "--upstream",
                url,
                "--upstream-model",
                "mock",
                "--serve-as",
                &model,
            ],
            &format!("node-agent {id} serving"),
        );
        (child, id)
    };
    let mut nodes = vec![node("alpha", &alpha_url), node("bravo", &bravo_url)];
    until_nodes(&server, &admin, "both nodes idle", |n| {
        idle_nodes(n, &target).len() == 2
    })
    .await;

    // The least loaded: while the first call streams on one node, the next goes to the other.
    let (first, held) = first_word(&v1, &key, &model).await;
    let (second, other) = first_word(&v1, &key, &model).await;
    assert_ne!(first, second, "the busy node was not chosen");
    finish(Box::pin(held)).await;
    finish(Box::pin(other)).await;
    assert_eq!(retries(&server).await, 0);
    until_nodes(&server, &admin, "both nodes idle again", |n| {
        idle_nodes(n, &target).len() == 2
    })
    .await;

    // Killed without a word: the directory still lists it, and it is the next choice (chosen
    // longest ago); no responders on its subject, so the call goes to the other at once.
    let killed = usize::from(first != "Alpha");
    let survivor_word = second.clone();
    {
        let (child, _) = &mut nodes[killed];
        child.0.kill().unwrap();
        child.0.wait().unwrap();
    }
    let (status, answer, _) = chat(&v1, &key, question(&model, 16)).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.starts_with(&survivor_word), "{answer}");
    assert_eq!(retries(&server).await, 1);
    let killed_id = nodes[killed].1.clone();
    until_nodes(&server, &admin, "the killed node forgotten", |n| {
        n.iter().all(|node| node["node_id"] != killed_id.as_str())
    })
    .await;

    // A node whose upstream fails (HTTP 500) before any token: never chosen yet, so chosen
    // first; the call is retried once on the survivor and answered.
    let (_charlie_up, charlie_url) = mock("Charlie", &["--fail-status", "500"]);
    let charlie = node("charlie", &charlie_url);
    let charlie_id = charlie.1.clone();
    until_nodes(&server, &admin, "the failing node", |n| {
        idle_nodes(n, &target).contains(&charlie_id)
    })
    .await;
    let (status, answer, _) = chat(&v1, &key, question(&model, 16)).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.starts_with(&survivor_word), "{answer}");
    assert_eq!(retries(&server).await, 2);

    // Stopped cleanly (SIGINT): it says so, and is not chosen again.
    let status = std::process::Command::new("kill")
        .args(["-INT", &charlie.0 .0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_nodes(&server, &admin, "the stopped node gone", |n| {
        n.iter().all(|node| node["node_id"] != charlie_id.as_str())
    })
    .await;
    drop(charlie);

    // Silent before its first token (an upstream that takes a minute): after the idle timeout
    // the call goes to the survivor; streamed, the client sees one normal stream.
    let (_delta_up, delta_url) = mock("Delta", &["--delay-ms", "60000"]);
    let delta = node("delta", &delta_url);
    let delta_id = delta.1.clone();
    until_nodes(&server, &admin, "the silent node", |n| {
        idle_nodes(n, &target).contains(&delta_id)
    })
    .await;
    let (streamed, usage, done) = chat_stream(&v1, &key, question(&model, 16)).await;
    assert!(done);
    assert!(streamed.starts_with(&survivor_word), "{streamed}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(retries(&server).await, 3);
    drop((delta, nodes));
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}
