//! End-to-end through the real `aiforge` binary: model uploads streamed into the blob store
//! (bounded memory, cut-off and oversized uploads leave nothing, downloads verified), publishing
//! with its fees paid in USDT on a real local chain, the listing lifecycle on a manual clock,
//! API services on the marketplace, and subscriptions with API keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::io::{Read, Write};
use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::chain::*;
use support::*;

const T0: &str = "2026-10-01T00:00:00Z";
const DAY: i64 = 86_400;

/// POST with a bearer token (`support::post` takes an idempotency key instead).
async fn post_as(server: &Server, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
    match token {
        Some(token) => send(server, Method::POST, path, body, Some(token)).await,
        None => post(server, path, body, None).await,
    }
}

async fn upload(server: &Server, token: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(server.url(&format!("/api/models?{query}")))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A generated body of `total` bytes, sent as a stream (never one buffer).
fn streamed(total: u64) -> reqwest::Body {
    const CHUNK: u64 = 1 << 20;
    let chunks = total.div_ceil(CHUNK);
    let stream = futures::stream::iter((0..chunks).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK) as usize;
        Ok::<_, std::io::Error>(pattern(i * CHUNK, len))
    }));
    reqwest::Body::wrap_stream(stream)
}

fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A local stand-in for the Hugging Face hub's resolve URLs (one repo, one file), so the
/// import goes over real HTTP without the internet.
async fn start_hub() -> String {
    use axum::routing::get as route_get;
    let app = axum::Router::new().route(
        "/acme/tiny-model/resolve/main/model.gguf",
        route_get(|| async { "GGUF weights from the hub" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stream_to_the_blob_store_and_nothing_partial_or_oversized_is_kept() {
    const LIMIT: u64 = 120 * 1024 * 1024;
    let dir = temp_dir();
    let hub = start_hub().await;
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MODEL_BYTES_MAX", &LIMIT.to_string()),
            ("AIFORGE_HF_BASE_URL", &hub),
        ],
    );
    let token = register_and_sign_in(&server, "creator@example.com").await;

    // The known vector: sha256 and the CID `ipfs add` gives.
    let (status, body) = upload(
        &server,
        &token,
        "name=hello&tags=Test,tiny&filename=hello.txt",
        b"hello world".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let hello = body["model"].clone();
    assert_eq!(
        hello["cid"],
        "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    );
    assert_eq!(
        hello["sha256"],
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert_eq!(hello["tags"], json!(["test", "tiny"]));
    assert_eq!(hello["state"], "uploaded");

    // Multipart, with the metadata as text parts.
    let form = reqwest::multipart::Form::new()
        .text("name", "multi")
        .text("description", "a multipart upload")
        .part(
            "file",
            reqwest::multipart::Part::bytes(pattern(0, 300_000)).file_name("m.gguf"),
        );
    let response = client()
        .post(server.url("/api/models"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let multi: Value = response.json().await.unwrap();
    assert_eq!(
        multi["model"]["sha256"],
        hex::encode(Sha256::digest(pattern(0, 300_000)))
    );
    assert_eq!(multi["model"]["source"]["filename"], "m.gguf");

    // A file much larger than the server's memory use may grow by: streamed, so its peak RSS
    // stays far below the file's size.
    let big: u64 = 100 * 1024 * 1024;
    let peak_before = peak_rss_kib(server.pid());
    let response = client()
        .post(server.url("/api/models?name=big"))
        .bearer_auth(&token)
        .body(streamed(big))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let big_model: Value = response.json().await.unwrap();
    assert_eq!(big_model["model"]["size_bytes"], big);
    let mut hasher = Sha256::new();
    for i in 0..100u64 {
        hasher.update(pattern(i << 20, 1 << 20));
    }
    assert_eq!(big_model["model"]["sha256"], hex::encode(hasher.finalize()));
    let peak = peak_rss_kib(server.pid());
    assert!(
        peak - peak_before < 32 * 1024,
        "the server's peak RSS grew from {peak_before} to {peak} KiB for a 100 MiB upload"
    );

    let (_, mine) = get(&server, "/api/models/my-models", Some(&token)).await;
    let models_before = mine["models"].as_array().unwrap().len();
    let blobs_before = files_under(&dir.join("blobs/sha256")).len();

    // Over the size limit: 413, no model, no blob, no temp file.
    let response = client()
        .post(server.url("/api/models?name=huge"))
        .bearer_auth(&token)
        .body(streamed(LIMIT + 1))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status().as_u16(), 413);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_large");
    }

    // Cut off midway: a raw request that promises 5 MB and hangs up after 64 KiB.
    {
        let address = server.url("").trim_start_matches("http://").to_string();
        let address = address.trim_end_matches('/').to_string();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "POST /api/models?name=cut HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: 5000000\r\n\r\n"
        )
        .unwrap();
        stream.write_all(&pattern(0, 64 * 1024)).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let (_, mine) = get(&server, "/api/models/my-models", Some(&token)).await;
    assert_eq!(mine["models"].as_array().unwrap().len(), models_before);
    assert_eq!(files_under(&dir.join("blobs/sha256")).len(), blobs_before);
    assert!(
        files_under(&dir.join("blobs/tmp")).is_empty(),
        "a temp file was left behind"
    );

    // Download: the exact bytes, verified against the hash.
    let hello_id = hello["id"].as_str().unwrap();
    let response = client()
        .get(server.url(&format!("/api/models/{hello_id}/download")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello world");
    // Someone else may not download an unpublished model (it is not even visible to them).
    let stranger = register_and_sign_in(&server, "stranger@example.com").await;
    let (status, _) = get(&server, &format!("/api/models/{hello_id}"), Some(&stranger)).await;
    assert_eq!(status, 404);

    // A blob altered on disk is never served as good: the transfer fails.
    let sha = hello["sha256"].as_str().unwrap();
    let blob_path = dir.join("blobs/sha256").join(&sha[..2]).join(sha);
    std::fs::write(&blob_path, b"hello worle").unwrap();
    // The server cuts the connection when the bytes do not hash to the address: before the
    // headers reach the client (a file this small is read whole first) or mid-body.
    let failed = match client()
        .get(server.url(&format!("/api/models/{hello_id}/download")))
        .bearer_auth(&token)
        .send()
        .await
    {
        Err(cut) => cut.is_request(),
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(
        failed,
        "a corrupt blob must not download as a complete file"
    );

    // Imported from the hub by repo and file name.
    let (status, body) = post_as(
        &server,
        "/api/models/import",
        json!({"repo": "acme/tiny-model", "filename": "model.gguf", "name": "tiny"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["model"]["sha256"],
        hex::encode(Sha256::digest(b"GGUF weights from the hub"))
    );
    assert_eq!(body["model"]["source"]["kind"], "hugging_face");
    assert_eq!(body["model"]["source"]["repo"], "acme/tiny-model");
    let (status, body) = post_as(
        &server,
        "/api/models/import",
        json!({"repo": "acme/tiny-model", "filename": "missing.gguf"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "not_on_hub");
    let (status, body) = post_as(
        &server,
        "/api/models/import",
        json!({"repo": "../etc", "filename": "passwd"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "repo");
    let (_, mine) = get(&server, "/api/models/my-models", Some(&token)).await;
    let models_before = mine["models"].as_array().unwrap().len();

    // Bad metadata: a clear error, and no model.
    let (status, body) = upload(&server, &token, "name=%20%20", b"x".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "name");
    let (status, _) = upload(&server, &token, "name=x&group_id=nope", b"x".to_vec()).await;
    assert_eq!(status, 422);
    let (_, mine) = get(&server, "/api/models/my-models", Some(&token)).await;
    assert_eq!(mine["models"].as_array().unwrap().len(), models_before);
    server.stop();
}

async fn advance(server: &Server, seconds: i64) -> Value {
    let (status, body) = post_as(
        server,
        "/api/ops/clock/advance",
        json!({"seconds": seconds}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn model_state(server: &Server, token: &str, model_id: &str) -> Value {
    let (status, body) = get(server, &format!("/api/models/{model_id}"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["model"].clone()
}

async fn browse(server: &Server, query: &str) -> Value {
    let (status, body) = get(
        server,
        &format!("/api/marketplace/marketplace?{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn service_names(page: &Value) -> Vec<String> {
    page["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

async fn v1(server: &Server, path: &str, key: &str) -> (u16, Value) {
    get(server, &format!("/api/v1/{path}"), Some(key)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_published_listed_sold_and_called_with_keys() {
    marketplace_flow(None).await;
}

/// The same flow on PostgreSQL: every view query of the marketplace on the other engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_models_are_published_listed_sold_and_called_with_keys() {
    use aiforge_commands::testing::{drop_postgres_database, postgres_admin_url, TestDatabase};
    let (url, name) = match TestDatabase::create_postgres_database().await {
        Ok(created) => created,
        Err(e) if std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1") => {
            eprintln!(
                "SKIPPED (PostgreSQL): cannot reach {} ({e})",
                postgres_admin_url()
            );
            return;
        }
        Err(e) => panic!("AIFORGE_REQUIRE_SERVICES=1 but PostgreSQL is unavailable: {e}"),
    };
    marketplace_flow(Some(&url)).await;
    drop_postgres_database(&postgres_admin_url(), &name).await;
}

async fn marketplace_flow(database_url: Option<&str>) {
    let Some(chain) = start_chain() else { return };
    let dir = temp_dir();
    let (rpc, token, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let mut env = vec![
        ("AIFORGE_ETH_RPC_URL", rpc.as_str()),
        ("AIFORGE_ETH_USDT_CONTRACT", token.as_str()),
        ("AIFORGE_ETH_PLATFORM_WALLET", platform.as_str()),
        ("AIFORGE_MANUAL_CLOCK_START", T0),
    ];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let server = Server::start(&dir, &env);
    // The creator signs in with the funded chain account; the consumer with another account,
    // funded here with USDT from the first.
    let payer_key = chain.s("payer_key");
    let mut creator = wallet_session(&server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    let other_key = chain.s("other_key");
    let mut consumer = wallet_session(&server, other_key.trim_start_matches("0x"))
        .await
        .unwrap();
    chain.transfer(
        payer_key.trim_start_matches("0x"),
        &chain.s("token"),
        &chain.s("other"),
        100_000_000,
    );

    let mut models = Vec::new();
    for name in ["chat-small", "chat-large", "coder"] {
        let (status, body) = upload(
            &server,
            &creator,
            &format!("name={name}"),
            // Servable files (upstream model cards): a service needs a model an engine serves.
            format!(
                "aiforge upstream model card\nbase_url: http://127.0.0.1:9/v1\nmodel: {name}\n"
            )
            .into_bytes(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        models.push(body["model"]["id"].as_str().unwrap().to_string());
    }

    // Publishing: the first model is free, the second needs a confirmed $5 publishing fee.
    let (_, info) = get(
        &server,
        &format!("/api/publishing/model/{}/publishing", models[0]),
        Some(&creator),
    )
    .await;
    assert_eq!(info["first_publication_free_available"], true);
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/publish", models[0]),
        json!({}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"]["state"], "listed");
    assert_eq!(body["model"]["listed_until"], "2026-10-31T00:00:00.000000Z");
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/publish", models[1]),
        json!({}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "publishing_fee_required");
    let (_, info) = get(
        &server,
        &format!("/api/publishing/model/{}/publishing", models[1]),
        Some(&creator),
    )
    .await;
    assert_eq!(info["publishing_fee"], "5.000000");
    let fee = paid_payment(&chain, &server, &creator, "publishing_fee", 5_000_000).await;
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/publish", models[1]),
        json!({"payment_id": fee}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // One payment pays for one thing.
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/publish", models[2]),
        json!({"payment_id": fee}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "payment_already_used");
    // A payment not yet confirmed does not publish.
    let pending = create_payment(&server, &creator, "publishing_fee", "5", "m3").await;
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/publish", models[2]),
        json!({"payment_id": pending}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_confirmed");
    pay(&chain, &server, &creator, "payer_key", &pending, 5_000_000).await;
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/publish", models[2]),
        json!({"payment_id": pending}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Services with each pricing model.
    let create = |model: &str, name: &str, description: &str, pricing: Value| {
        json!({"model_id": model, "name": name, "description": description, "pricing": pricing,
               "rate_limits": {"requests_per_minute": 60, "requests_per_month": 10000}})
    };
    let mut services = Vec::new();
    for body in [
        create(
            &models[1],
            "Open chat",
            "free general chat",
            json!({"type": "monthly", "price_per_month": "0"}),
        ),
        create(
            &models[1],
            "Translator",
            "translates between languages",
            json!({"type": "monthly", "price_per_month": "10"}),
        ),
        create(
            &models[0],
            "Metered chat",
            "pay as you go",
            json!({"type": "pay_per_request", "price_per_request": "0.002", "price_per_1k_output_tokens": "0.01"}),
        ),
        create(
            &models[2],
            "Code helper",
            "hybrid plan",
            json!({"type": "hybrid", "price_per_month": "3", "included_requests": 100, "included_tokens": 100000, "price_per_request": "0.01"}),
        ),
    ] {
        let (status, created) =
            post_as(&server, "/api/marketplace/create", body, Some(&creator)).await;
        assert_eq!(status, 201, "{created}");
        services.push(created["service"]["id"].as_str().unwrap().to_string());
    }
    // Bad input changes nothing.
    let before = event_count(&server).await;
    let (status, body) = post_as(
        &server,
        "/api/marketplace/create",
        create(
            &models[1],
            "Bad",
            "",
            json!({"type": "monthly", "price_per_month": "-1"}),
        ),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = post_as(
        &server,
        "/api/marketplace/create",
        create(
            &models[1],
            "Not mine",
            "",
            json!({"type": "monthly", "price_per_month": "1"}),
        ),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(event_count(&server).await, before);

    // Browsing: search, filter, sort, pages.
    let all = browse(&server, "").await;
    assert_eq!(all["total"], 4);
    assert_eq!(
        service_names(&browse(&server, "search=TRANSL").await),
        ["Translator"]
    );
    assert_eq!(
        service_names(&browse(&server, "search=chat&sort=price").await),
        ["Open chat", "Metered chat", "Translator"],
        "the search also matches the model's name (Translator serves chat-large)"
    );
    assert_eq!(
        service_names(&browse(&server, "search=code").await),
        ["Code helper"]
    );
    assert_eq!(
        service_names(&browse(&server, "pricing=pay_per_request").await),
        ["Metered chat"]
    );
    let page = browse(&server, "per_page=3&page=2").await;
    assert_eq!(page["total"], 4);
    assert_eq!(page["services"].as_array().unwrap().len(), 1);
    let (status, _) = get(&server, "/api/marketplace/marketplace?sort=cheapest", None).await;
    assert_eq!(status, 422);
    assert_eq!(
        service_names(&browse(&server, "search=100%25").await).len(),
        0,
        "a % in the search text matches literally"
    );

    // Deactivated: off the marketplace; only the owner may do it.
    let (status, _) = send(
        &server,
        Method::PUT,
        &format!("/api/marketplace/{}", services[1]),
        json!({"active": false}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/marketplace/{}", services[1]),
        json!({"active": false}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!service_names(&browse(&server, "").await).contains(&"Translator".to_string()));
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/{}/subscribe", services[1]),
        json!({}),
        Some(&consumer),
    )
    .await;
    // Off the marketplace, the service is its owner's to see: to others it is not there.
    assert_eq!(status, 404, "{body}");

    // A free subscription: the key at once, shown once, working only for its model.
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/{}/subscribe", services[0]),
        json!({}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["subscription"]["status"], "active");
    let free_subscription = body["subscription"]["id"].as_str().unwrap().to_string();
    let free_key = body["api_key"].as_str().unwrap().to_string();
    assert!(free_key.starts_with("aiforge_") && free_key.len() >= 50);
    let (status, listed) = v1(&server, "models", &free_key).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["id"], models[1].as_str());
    let (status, _) = v1(&server, &format!("models/{}", models[1]), &free_key).await;
    assert_eq!(status, 200);
    let (status, body) = v1(&server, &format!("models/{}", models[0]), &free_key).await;
    assert_eq!(status, 403, "another service's model");
    assert_eq!(body["error"]["code"], "model_not_permitted");
    let (status, body) = v1(&server, "models/no-such-model", &free_key).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = v1(&server, "models", "aiforge_not-a-real-key").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // Regenerated: the new key works, the old one is refused at once.
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{free_subscription}/regenerate-key"),
        json!({}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let new_key = body["api_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, free_key);
    assert_eq!(v1(&server, "models", &free_key).await.0, 401);
    assert_eq!(v1(&server, "models", &new_key).await.0, 200);
    let (status, _) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{free_subscription}/regenerate-key"),
        json!({}),
        Some(&creator),
    )
    .await;
    assert_eq!(
        status, 404,
        "another's subscription is not there for anyone else"
    );

    // Pay-per-request: prepaid credit, pending until its payment confirms.
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/{}/subscribe", services[2]),
        json!({}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "credit");
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/{}/subscribe", services[2]),
        json!({"credit": "2.5", "network": "ethereum"}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["subscription"]["status"], "pending_payment");
    assert_eq!(body["amount_due"], "2.500000");
    let metered_key = body["api_key"].as_str().unwrap().to_string();
    let metered_payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    let (status, body) = v1(&server, "models", &metered_key).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "subscription_inactive");
    pay(
        &chain,
        &server,
        &consumer,
        "other_key",
        &metered_payment,
        2_500_000,
    )
    .await;
    let mut active = false;
    for _ in 0..50 {
        let (status, body) = v1(&server, "models", &metered_key).await;
        if status == 200 {
            assert_eq!(body["data"][0]["id"], models[0].as_str());
            active = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        active,
        "the subscription activates when its payment confirms"
    );
    // The key index saw the activation; the read models follow it (asynchronously, on
    // PostgreSQL a moment later under load): bounded wait for them.
    let mut mine = Value::Null;
    for _ in 0..100 {
        mine = get(
            &server,
            "/api/marketplace/my-subscriptions",
            Some(&consumer),
        )
        .await
        .1;
        let subscriptions = mine["subscriptions"].as_array().unwrap();
        if subscriptions.iter().all(|s| s["status"] == "active") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let subscriptions = mine["subscriptions"].as_array().unwrap();
    assert_eq!(subscriptions.len(), 2);
    assert!(
        subscriptions.iter().all(|s| s["status"] == "active"),
        "{mine}"
    );
    let (_, popular) = get(&server, "/api/marketplace/marketplace?sort=popular", None).await;
    assert_eq!(popular["services"][0]["subscribers"], 1);

    // Pricing changes apply to new subscriptions only.
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/marketplace/{}", services[2]),
        json!({"pricing": {"type": "pay_per_request", "price_per_request": "0.005"}}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["service"]["pricing_version"], 2);
    let (_, mine) = get(
        &server,
        "/api/marketplace/my-subscriptions",
        Some(&consumer),
    )
    .await;
    let metered = mine["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service_id"] == services[2].as_str())
        .unwrap()
        .clone();
    assert_eq!(metered["pricing"]["price_per_request"], "0.002000");
    assert_eq!(metered["pricing_version"], 1);

    // The listing runs out: 30 days, then 7 days of grace, then delisted.
    advance(&server, 30 * DAY).await;
    // Sessions expire on the same clock: sign in again.
    creator = wallet_session(&server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    assert_eq!(
        model_state(&server, &creator, &models[0]).await["state"],
        "grace"
    );
    assert!(service_names(&browse(&server, "").await).contains(&"Metered chat".to_string()));
    advance(&server, 7 * DAY).await;
    creator = wallet_session(&server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    consumer = wallet_session(&server, other_key.trim_start_matches("0x"))
        .await
        .unwrap();
    assert_eq!(
        model_state(&server, &creator, &models[0]).await["state"],
        "delisted"
    );
    let names = service_names(&browse(&server, "").await);
    assert!(!names.contains(&"Metered chat".to_string()), "{names:?}");
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/{}/subscribe", services[2]),
        json!({"credit": "1"}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // The listing fee relists it for 30 days from now.
    let listing = paid_payment(&chain, &server, &creator, "listing_fee", 2_000_000).await;
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/listing-fee", models[0]),
        json!({"payment_id": fee}),
        Some(&creator),
    )
    .await;
    assert_eq!(
        status, 422,
        "a publishing payment is not a listing fee: {body}"
    );
    let (status, body) = post_as(
        &server,
        &format!("/api/publishing/model/{}/listing-fee", models[0]),
        json!({"payment_id": listing}),
        Some(&creator),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"]["state"], "listed");
    assert_eq!(body["model"]["listed_until"], "2026-12-07T00:00:00.000000Z");
    assert!(service_names(&browse(&server, "").await).contains(&"Metered chat".to_string()));

    // Cancelling revokes the key.
    let (status, body) = post_as(
        &server,
        &format!("/api/marketplace/subscriptions/{free_subscription}/cancel"),
        json!({}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscription"]["status"], "cancelled");
    assert_eq!(v1(&server, "models", &new_key).await.0, 401);

    // No key's plaintext is anywhere in the store: events, views, exports.
    server.stop();
    if database_url.is_some() {
        // The SQLite file check below is for the embedded engine; the PostgreSQL run checks the
        // flow's views and queries.
        return;
    }
    let export = cli(&dir, &["events", "export"]);
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.contains(".db") || name.contains("sqlite") {
            stored.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    assert!(!stored.is_empty(), "the SQLite files were found");
    for key in [&free_key, &new_key, &metered_key] {
        let secret = &key["aiforge_".len()..];
        assert!(!export.contains(secret), "a key is in the event export");
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a key is in the database files"
        );
    }
}
