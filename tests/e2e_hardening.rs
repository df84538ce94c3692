//! End-to-end through the real `aiforge` binary: what a security and bad-input probe of the
//! running server found (issue 20), one test per finding, each asserting the fixed behaviour:
//! job inputs are the caller's own files and a refusal does not say whether a file exists;
//! refused uploads keep no bytes; a service's limits bind a subscriber however many keys; no
//! month before the log's first event closes; paging has bounds; a token names a real account;
//! private ids are 404 on write routes too; one error shape; every replayed command says so;
//! headers, `/metrics` and CORS; sign-in throttling; input hygiene; and Continue.dev's real
//! requests (ten stop words, `/completions`) with every documented OpenAI chat field.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::path::Path;

use reqwest::Method;
use serde_json::{json, Value};
use support::chain::{wallet_session, ADMIN_KEY};
use support::*;

fn mock(reply: &str) -> (Killed, String) {
    let (mock, line) = start_sibling("aiforge-mock-openai", &["--reply", reply], "listening on ");
    let url = format!("{}/v1", line.trim_start_matches("listening on "));
    (mock, url)
}

/// The card the local node serves for an upstream model: uploading it makes a model the node
/// answers for.
fn card(mock_url: &str) -> String {
    format!("aiforge upstream model card\nbase_url: {mock_url}\nmodel: mock\n")
}

async fn upload_model(server: &Server, token: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
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

async fn upload_blob(server: &Server, token: &str, bytes: &[u8]) -> (u16, Value) {
    let response = client()
        .post(server.url("/api/blobs"))
        .bearer_auth(token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every file under the blob store's directories (content and temp files alike).
fn stored_files(data: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("blobs"), &mut out);
    out
}

/// A published model of the local node's content, owned by `token`'s user (first publication is
/// free).
async fn published_model(server: &Server, token: &str, mock_url: &str) -> String {
    let (status, body) =
        upload_model(server, token, "name=served", card(mock_url).into_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let model = body["model"]["id"].as_str().unwrap().to_string();
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

async fn service(server: &Server, token: &str, model: &str, limits: Value) -> String {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Served", "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": limits}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["service"]["id"].as_str().unwrap().to_string()
}

/// Subscribes: (subscription id, key).
async fn subscribe(server: &Server, token: &str, service: &str) -> (String, String) {
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["subscription"]["id"].as_str().unwrap().to_string(),
        body["api_key"].as_str().unwrap().to_string(),
    )
}

async fn v1(server: &Server, path: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(server.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn usage_requests(server: &Server, token: &str, subscription: &str) -> i64 {
    let (status, body) = get(
        server,
        &format!("/api/marketplace/subscriptions/{subscription}/usage"),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["requests"].as_i64().unwrap()
}

/// Waits (bounded) until the usage view shows `n` requests.
async fn usage_reaches(server: &Server, token: &str, subscription: &str, n: i64) {
    for _ in 0..200 {
        if usage_requests(server, token, subscription).await == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("usage never reached {n} requests");
}

fn job(payment_id: &str, cid: &str) -> Value {
    json!({
        "payment_id": payment_id,
        "type": "training",
        "image": "localhost/aiforge-job:busybox",
        "command": ["sh", "-c", "true"],
        "env": {},
        "inputs": [cid],
        "needs": {"cpu_cores": 1, "memory_mb": 256, "gpus": 0, "gpu_memory_mb": 0},
        "max_runtime_secs": 60,
        "price": "1",
    })
}

// ---- 1. job inputs ---------------------------------------------------------------------------

#[tokio::test]
async fn a_job_names_only_its_creators_files_and_a_refusal_does_not_say_whether_a_file_exists() {
    let data = temp_dir();
    let server = Server::start(&data, &[]);
    let alice = register_and_sign_in(&server, "alice@example.com").await;
    let mallory = register_and_sign_in(&server, "mallory@example.com").await;
    let secret = b"alice's private training data";
    let (status, body) = upload_blob(&server, &alice, secret).await;
    assert_eq!(status, 201, "{body}");
    let cid = body["blob"]["cid"].as_str().unwrap().to_string();
    let never = aiforge_domain::cid::cid_v0(b"never uploaded by anyone");

    // Mallory names Alice's file, and a file no one stored: the same refusal, word for word
    // (but for the CID itself), before any payment is looked at.
    let payment = uuid::Uuid::new_v4().to_string();
    let (status, theirs) = send(
        &server,
        Method::POST,
        "/api/jobs",
        job(&payment, &cid),
        Some(&mallory),
    )
    .await;
    assert_eq!(
        (status, theirs["error"]["field"].as_str()),
        (422, Some("inputs")),
        "{theirs}"
    );
    let (status, absent) = send(
        &server,
        Method::POST,
        "/api/jobs",
        job(&payment, &never),
        Some(&mallory),
    )
    .await;
    assert_eq!(
        (status, absent["error"]["field"].as_str()),
        (422, Some("inputs")),
        "{absent}"
    );
    assert_eq!(
        theirs["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&cid, "CID"),
        absent["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&never, "CID"),
    );
    let (status, _) = get(&server, &format!("/api/blobs/{cid}"), Some(&mallory)).await;
    assert_eq!(status, 404, "nor can she download it");

    // Alice's own file passes the input check (her payment is the next thing checked).
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/jobs",
        job(&payment, &cid),
        Some(&alice),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (404, Some("payment_id")),
        "{body}"
    );

    // Content addressing: Mallory uploading the same bytes proves she has them; then they are
    // hers to name too.
    let (status, body) = upload_blob(&server, &mallory, secret).await;
    assert_eq!(
        (status, body["blob"]["cid"].as_str()),
        (201, Some(cid.as_str())),
        "{body}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/jobs",
        job(&payment, &cid),
        Some(&mallory),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (404, Some("payment_id")),
        "{body}"
    );
    let response = client()
        .get(server.url(&format!("/api/blobs/{cid}")))
        .bearer_auth(&mallory)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), secret);
    server.stop();
}

// ---- 2 (and 12: empty models). refused uploads --------------------------------------------------

#[tokio::test]
async fn a_refused_upload_leaves_no_bytes_on_disk() {
    let data = temp_dir();
    let server = Server::start(&data, &[]);
    let ada = register_and_sign_in(&server, "ada@example.com").await;
    let bob = register_and_sign_in(&server, "bob@example.com").await;
    let (status, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "Bob's lab", "description": ""}),
        Some(&bob),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group = group["group"]["group_id"].as_str().unwrap().to_string();
    assert!(stored_files(&data).is_empty());

    // A name too long, a group Ada is not in, an empty file, NUL in a name: refused, nothing kept.
    let long = "n".repeat(500);
    for (query, bytes, field) in [
        (format!("name={long}"), b"weights one".to_vec(), "name"),
        (
            format!("name=m&group_id={group}"),
            b"weights two".to_vec(),
            "group_id",
        ),
        ("name=empty".to_string(), Vec::new(), "file"),
        ("name=a%00b".to_string(), b"weights three".to_vec(), "name"),
    ] {
        let (status, body) = upload_model(&server, &ada, &query, bytes).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{query}: {body}"
        );
        assert!(
            stored_files(&data).is_empty(),
            "{query}: {:?}",
            stored_files(&data)
        );
    }
    // A form with two file parts.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"first part".to_vec()).file_name("a.bin"),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"second part".to_vec()).file_name("b.bin"),
        );
    let response = client()
        .post(server.url("/api/models?name=two"))
        .bearer_auth(&ada)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(stored_files(&data).is_empty(), "{:?}", stored_files(&data));

    // An accepted upload is kept; a refused one of the same content does not take it away.
    let (status, body) = upload_model(&server, &ada, "name=kept", b"weights one".to_vec()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(stored_files(&data).len(), 1);
    let (status, _) = upload_model(
        &server,
        &ada,
        &format!("name={long}"),
        b"weights one".to_vec(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(stored_files(&data).len(), 1, "the model's file stays");
    server.stop();
}

// ---- 3. limits bind a subscriber -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_services_rate_limit_binds_the_subscriber_however_many_keys_they_hold() {
    let (_mock, mock_url) = mock("Hi there");
    let data = temp_dir();
    let node = format!("upstream:{mock_url}#mock");
    let server = Server::start(
        &data,
        &[("AIFORGE_LOCAL_NODE", &node), ("AIFORGE_DEMO", "off")],
    );
    let owner = register_and_sign_in(&server, "owner@example.com").await;
    let consumer = register_and_sign_in(&server, "consumer@example.com").await;
    let model = published_model(&server, &owner, &mock_url).await;
    let service = service(&server, &owner, &model, json!({"requests_per_minute": 1})).await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(subscribe(&server, &consumer, &service).await.1);
    }
    let question = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    let mut statuses = Vec::new();
    for key in &keys {
        statuses.push(
            v1(&server, "/api/v1/chat/completions", key, question.clone())
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        vec![200, 429, 429],
        "one request a minute for the subscriber, not per key"
    );
    // Each stage of a call is counted on /metrics: three keys checked and admitted (or not),
    // one call generated, metered (its group commit durable first) and answered.
    let runs = |stage: &str| format!("aiforge_stage_runs_total{{stage=\"{stage}\"}}");
    for (stage, expected) in [
        ("auth", 3),
        ("admit", 3),
        ("generate", 1),
        ("meter", 1),
        ("meter_commit", 1),
        ("call", 1),
    ] {
        assert_eq!(metric(&server, &runs(stage)).await, expected, "{stage}");
    }
    server.stop();
}

// ---- 4. the monthly close ---------------------------------------------------------------------

#[tokio::test]
async fn no_month_before_the_first_event_nor_an_unfinished_one_can_be_closed() {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let data = temp_dir();
    let server = Server::start(
        &data,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-10-15T12:00:00Z"),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            // Every close here is the admin's (the scheduled one: e2e_payouts).
            ("AIFORGE_CLOSE_AUTOMATIC", "false"),
        ],
    );
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let before = event_count(&server).await;
    for (month, code) in [
        ("1970/1", "before_first_event"),
        ("2026/9", "before_first_event"),
        ("2026/10", "month_not_over"),
        ("2027/3", "month_not_over"),
    ] {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/revenue/close/{month}"),
            json!({}),
            Some(&admin),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some(code)),
            "{month}: {body}"
        );
    }
    assert_eq!(event_count(&server).await, before, "nothing recorded");
    // Once October is over, October (the month of the first event) closes.
    let (status, body) = post(
        &server,
        "/api/ops/clock/advance",
        json!({"seconds": 20 * 86_400}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/10",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    server.stop();
}

// ---- 5. paging --------------------------------------------------------------------------------

#[tokio::test]
async fn paging_past_its_bounds_is_a_422_and_never_wraps() {
    let data = temp_dir();
    let server = Server::start(&data, &[]);
    for (query, field) in [
        ("page=4611686018427387906&per_page=4", "page"),
        ("page=0", "page"),
        ("page=-3", "page"),
        ("per_page=0", "per_page"),
        ("per_page=100000", "per_page"),
    ] {
        let (status, body) = get(
            &server,
            &format!("/api/marketplace/marketplace?{query}"),
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{query}: {body}"
        );
    }
    let (status, body) = get(
        &server,
        "/api/marketplace/marketplace?page=2&per_page=4",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.stop();
}

// ---- 6. a session names an account -------------------------------------------------------------

#[tokio::test]
async fn a_validly_signed_token_for_no_account_opens_nothing() {
    let secret = "e2e-hardening-jwt-secret-0123456789abcdef";
    let data = temp_dir();
    let server = Server::start(&data, &[("AIFORGE_JWT_SECRET", secret)]);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": uuid::Uuid::now_v7().to_string(), "iat": now, "exp": now + 3600, "iss": "aiforge"}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let before = event_count(&server).await;
    for (method, path, body) in [
        (
            Method::POST,
            "/api/groups",
            json!({"name": "Ghosts", "description": ""}),
        ),
        (
            Method::POST,
            "/api/nodes/register",
            json!({"name": "n", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": 1, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}}),
        ),
        (Method::GET, "/api/auth/me", json!(null)),
        (Method::GET, "/api/models/my-models", json!(null)),
    ] {
        let (status, answer) = send(&server, method, path, body, Some(&forged)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{path}: {answer}"
        );
    }
    let response = client()
        .post(server.url("/api/blobs"))
        .bearer_auth(&forged)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(event_count(&server).await, before, "nothing recorded");
    // A real account's token still works.
    let token = register_and_sign_in(&server, "real@example.com").await;
    assert_eq!(me(&server, &token).await.0, 200);
    server.stop();
}

// ---- 7. private ids on write routes ------------------------------------------------------------

#[tokio::test]
async fn another_users_private_ids_are_not_found_on_write_routes_either() {
    let (_mock, mock_url) = mock("Hi there");
    let data = temp_dir();
    let node = format!("upstream:{mock_url}#mock");
    let server = Server::start(
        &data,
        &[("AIFORGE_LOCAL_NODE", &node), ("AIFORGE_DEMO", "off")],
    );
    let owner = register_and_sign_in(&server, "owner@example.com").await;
    let stranger = register_and_sign_in(&server, "stranger@example.com").await;
    let (status, body) =
        upload_model(&server, &owner, "name=private", b"private weights".to_vec()).await;
    assert_eq!(status, 201, "{body}");
    let private_model = body["model"]["id"].as_str().unwrap().to_string();
    let model = published_model(&server, &owner, &mock_url).await;
    let hidden = service(&server, &owner, &model, json!({})).await;
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/marketplace/{hidden}"),
        json!({"active": false}),
        Some(&owner),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let public = service(&server, &owner, &model, json!({})).await;
    let (subscription, _) = subscribe(&server, &owner, &public).await;

    let before = event_count(&server).await;
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/api/models/{private_model}"),
            json!({"name": "mine now"}),
        ),
        (
            Method::DELETE,
            format!("/api/models/{private_model}"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/publishing/model/{private_model}/publish"),
            json!({}),
        ),
        (
            Method::POST,
            "/api/marketplace/create".to_string(),
            json!({"model_id": private_model, "name": "x", "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": {}}),
        ),
        (
            Method::PUT,
            format!("/api/marketplace/{hidden}"),
            json!({"active": true}),
        ),
        (
            Method::POST,
            format!("/api/marketplace/{hidden}/subscribe"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/marketplace/subscriptions/{subscription}/regenerate-key"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/marketplace/subscriptions/{subscription}/cancel"),
            json!({}),
        ),
    ] {
        let (status, answer) = send(&server, method.clone(), &path, body, Some(&stranger)).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        let (read, _) = get(&server, &path, Some(&stranger)).await;
        assert!(read == 404 || read == 405, "{path}: reads say {read}");
    }
    assert_eq!(event_count(&server).await, before, "nothing recorded");
    // What the stranger may see stays a 403 where they may not act: a public service.
    let (status, body) = send(
        &server,
        Method::PUT,
        &format!("/api/marketplace/{public}"),
        json!({"active": false}),
        Some(&stranger),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    server.stop();
}

// ---- 8. one error shape -----------------------------------------------------------------------

#[tokio::test]
async fn every_error_answer_has_the_one_json_shape_and_echoes_no_large_input() {
    let data = temp_dir();
    let server = Server::start(
        &data,
        &[("AIFORGE_HF_BASE_URL", "http://127.0.0.1:9/secret-hub-path")],
    );
    let token = register_and_sign_in(&server, "shape@example.com").await;
    let http = client();
    let platform_error = |status: u16, body: &Value, what: &str| {
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{what}: {status} {body}"
        );
    };
    // A bad path value, a bad query value, a method the route does not take.
    for (method, path, expected) in [
        (
            Method::GET,
            "/api/group-revenue/model/m/distribution/2026/notamonth",
            400,
        ),
        (
            Method::PUT,
            "/api/nodes/n/jobs/j/outputs/out.txt?attempt=abc",
            400,
        ),
        (Method::GET, "/api/marketplace/marketplace?page=abc", 400),
        (Method::DELETE, "/api/auth/login", 405),
        (Method::PATCH, "/api/groups", 405),
    ] {
        let response = http
            .request(method.clone(), server.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        platform_error(expected, &body, path);
        let message = body["error"]["message"].as_str().unwrap();
        for leak in ["u8", "u32", "i64", "`", "notamonth", "abc"] {
            assert!(!message.contains(leak), "{path}: {message}");
        }
    }
    // Malformed JSON is a 400, well-formed JSON of the wrong shape a 422, on every JSON route.
    for (body, expected) in [
        ("{\"email\": ", 400),
        ("{\"email\": \"a\", }", 400),
        ("[1, 2", 400),
        ("[]", 422),
        ("{\"email\": 5}", 422),
    ] {
        let response = http
            .post(server.url("/api/auth/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{body}");
        let answer: Value = response.json().await.unwrap();
        platform_error(expected, &answer, body);
    }
    // A huge value in a body is not echoed back, nor a Rust type name.
    let huge = "x".repeat(200_000);
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": 5, "description": huge}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "ok", "description": "", "unknown": huge}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body.to_string().len() < 2_000,
        "the answer echoes the input: {} bytes",
        body.to_string().len()
    );
    let (status, body) = send(&server, Method::POST, "/api/nodes/register", json!({"name": "n", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": huge, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}}), Some(&token)).await;
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    assert!(
        text.len() < 2_000,
        "the answer echoes the input: {} bytes",
        text.len()
    );
    for rust in ["u32", "u64", "struct ", "enum "] {
        assert!(!text.contains(rust), "{text}");
    }
    // The hub's configured URL is not in a message.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/models/import",
        json!({"repo": "owner/name", "filename": "m.gguf"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.to_string().contains("127.0.0.1") && !body.to_string().contains("secret-hub-path"),
        "{body}"
    );
    // On /api/v1, OpenAI's shape (a body over the limit: in the Continue test, with a key).
    let response = http
        .get(server.url("/api/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["type"].is_string(), "{body}");
    server.stop();
}

// ---- 9. replays -------------------------------------------------------------------------------

#[tokio::test]
async fn every_replayed_command_says_so() {
    let data = temp_dir();
    let server = Server::start(&data, &[]);
    let token = register_and_sign_in(&server, "replay@example.com").await;
    let http = client();
    for (path, body) in [
        ("/api/groups", json!({"name": "Once", "description": ""})),
        (
            "/api/nodes/register",
            json!({"name": "n1", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": 1, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}}),
        ),
        (
            "/api/wallets/connect",
            json!({"network": "ethereum", "address": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"}),
        ),
        (
            "/api/auth/register",
            json!({"email": "again@example.com", "password": "correct horse battery staple", "username": "again"}),
        ),
    ] {
        let key = uuid::Uuid::new_v4().to_string();
        let mut statuses = Vec::new();
        for attempt in 0..2 {
            let response = http
                .post(server.url(path))
                .bearer_auth(&token)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap().to_string());
            statuses.push(response.status().as_u16());
            assert_eq!(
                replayed.as_deref(),
                (attempt == 1).then_some("true"),
                "{path} attempt {attempt}"
            );
        }
        assert_eq!(statuses[0], statuses[1], "{path}");
    }
    server.stop();
}

// ---- 10. headers, /metrics, CORS ---------------------------------------------------------------

#[tokio::test]
async fn secrets_are_never_cached_metrics_are_not_public_and_cors_is_deliberate() {
    let data = temp_dir();
    let server = Server::start(&data, &[]);
    let http = client();
    let response = http.post(server.url("/api/auth/register")).json(&json!({"email": "hedy@example.com", "password": "correct horse battery staple", "username": "hedy"})).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let response = http
        .post(server.url("/api/auth/login"))
        .json(&json!({"email": "hedy@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let response = http.post(server.url("/api/nodes/register")).bearer_auth(&token).json(&json!({"name": "n1", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": {"cpu_cores": 1, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}})).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");

    // /metrics: not on the public listener; on its own.
    let (status, body) = get(&server, "/metrics", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let text = http
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("aiforge_log_head_position"), "{text}");

    // CORS: the OpenAI-compatible routes answer any origin; the platform API refuses.
    let preflight = |path: &str| {
        http.request(Method::OPTIONS, server.url(path))
            .header("origin", "https://ide.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let response = preflight("/api/v1/chat/completions").await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let response = preflight("/api/groups").await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cors_refused");
    let response = http
        .get(server.url("/api/v1/models"))
        .header("origin", "https://ide.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    server.stop();
}

// ---- 11. sign-in throttling -------------------------------------------------------------------

#[tokio::test]
async fn sign_in_is_throttled_per_email_and_per_address_alike_for_unknown_emails() {
    let data = temp_dir();
    let server = Server::start(
        &data,
        &[("AIFORGE_MANUAL_CLOCK_START", "2026-10-15T12:00:00Z")],
    );
    let (_, _) = signed_up(&server, "known@example.com").await;
    // Five wrong passwords, then the sixth attempt is refused even with the right one; an
    // unknown email gets exactly the same answers.
    for email in ["known@example.com", "unknown@example.com"] {
        for _ in 0..5 {
            let (status, body) = login(&server, email, "wrong password").await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("invalid_credentials")),
                "{email}"
            );
        }
        let response = client()
            .post(server.url("/api/auth/login"))
            .json(&json!({"email": email, "password": "correct horse battery staple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{email}");
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&wait), "{wait}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_attempts");
    }
    // Another email from the same address still signs in (the address allows more).
    let (_, _) = signed_up(&server, "other@example.com").await;
    // The window ends: the right password works again.
    let (status, body) = post(
        &server,
        "/api/ops/clock/advance",
        json!({"seconds": 901}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = login(&server, "known@example.com", "correct horse battery staple").await;
    assert_eq!(status, 200, "{body}");
    // Per address: many emails from one address, failures pile up to the address's limit.
    let mut last = 0;
    for i in 0..60 {
        last = login(&server, &format!("guess{i}@example.com"), "wrong password")
            .await
            .0;
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "the address is throttled");
    server.stop();
}

// ---- 12. input hygiene ------------------------------------------------------------------------

#[tokio::test]
async fn names_wallets_pricing_percentages_and_job_payments_refuse_bad_input() {
    let data = temp_dir();
    // A chain node that does not answer: creating a payment does not ask it anything.
    let server = Server::start(
        &data,
        &[
            ("AIFORGE_ETH_RPC_URL", "http://127.0.0.1:9"),
            (
                "AIFORGE_ETH_USDT_CONTRACT",
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            ),
            (
                "AIFORGE_ETH_PLATFORM_WALLET",
                "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
            ),
        ],
    );
    let token = register_and_sign_in(&server, "clean@example.com").await;
    let before = event_count(&server).await;
    for name in ["a\u{0}b", "invoice\u{202E}fdp.exe", "x\u{2066}y"] {
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/groups",
            json!({"name": name, "description": ""}),
            Some(&token),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("name")),
            "{name:?}: {body}"
        );
    }
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "ok", "description": "bad\u{0}"}),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("description")),
        "{body}"
    );
    for wallet in [
        "../../etc/passwd",
        "0xabc",
        "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C2",
        "Tnotanaddress",
    ] {
        let (status, body) = send(&server, Method::POST, "/api/nodes/register", json!({"name": "n", "owner_wallet": wallet, "resources": {"cpu_cores": 1, "memory_mb": 512, "disk_gb": 1, "gpus": [], "max_concurrent_jobs": 1}}), Some(&token)).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("owner_wallet")),
            "{wallet}: {body}"
        );
    }
    for reference in [
        "job-1",
        "not a uuid",
        "0191C1D2-7F3A-7C3E-9D1E-2B9F4E5A6C7D",
    ] {
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/payments/create",
            json!({"type": "job", "network": "ethereum", "amount": "1", "reference": reference}),
            Some(&token),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("reference")),
            "{reference}: {body}"
        );
    }
    assert_eq!(event_count(&server).await, before, "nothing recorded");
    let job_id = uuid::Uuid::new_v4().to_string();
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/payments/create",
        json!({"type": "job", "network": "ethereum", "amount": "1", "reference": job_id}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "a job's id is a good reference: {body}");
    server.stop();

    // Pricing with an unknown key and a percent with an exponent need a model to name: the
    // marketplace and the split reject them before any model is looked at.
    let (_mock, mock_url) = mock("Hi");
    let node = format!("upstream:{mock_url}#mock");
    let data = temp_dir();
    let server = Server::start(
        &data,
        &[("AIFORGE_LOCAL_NODE", &node), ("AIFORGE_DEMO", "off")],
    );
    let token = register_and_sign_in(&server, "prices@example.com").await;
    let model = published_model(&server, &token, &mock_url).await;
    let (status, body) = send(&server, Method::POST, "/api/marketplace/create", json!({"model_id": model, "name": "S", "pricing": {"type": "monthly", "price_per_month": "1", "price_per_mont": "0"}, "rate_limits": {}}), Some(&token)).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = send(&server, Method::POST, "/api/marketplace/create", json!({"model_id": model, "name": "S", "pricing": {"type": "monthly", "price_per_month": "1"}, "rate_limits": {"requests_per_minit": 5}}), Some(&token)).await;
    assert_eq!(status, 422, "{body}");
    let (status, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "Lab", "description": ""}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201);
    let group = group["group"]["group_id"].as_str().unwrap().to_string();
    let (status, body) = upload_model(
        &server,
        &token,
        &format!("name=g&group_id={group}"),
        b"group weights".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let group_model = body["model"]["id"].as_str().unwrap().to_string();
    let me_id = me(&server, &token).await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    for percent in [json!("1e2"), json!("1E2"), json!("+100")] {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/group-revenue/model/{group_model}/split"),
            json!({"shares": [{"user_id": me_id, "percent": percent}]}),
            Some(&token),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("shares")),
            "{percent}: {body}"
        );
    }
    server.stop();
}

// ---- 13, 14. OpenAI conformance and Continue.dev -----------------------------------------------

/// Stop words as Continue's OpenAI provider sends them for a chat (a model template's ten).
fn continue_stops() -> Value {
    json!([
        "<|im_end|>",
        "<|im_start|>",
        "<|endoftext|>",
        "</s>",
        "<s>",
        "[INST]",
        "[/INST]",
        "<<SYS>>",
        "<</SYS>>",
        "<|eot_id|>"
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continue_chats_with_ten_stop_words_and_autocompletes_through_completions() {
    let (_mock, mock_url) = mock("fn main() {}");
    let data = temp_dir();
    let node = format!("upstream:{mock_url}#mock");
    let server = Server::start(
        &data,
        &[("AIFORGE_LOCAL_NODE", &node), ("AIFORGE_DEMO", "off")],
    );
    let owner = register_and_sign_in(&server, "owner@example.com").await;
    let model = published_model(&server, &owner, &mock_url).await;
    let service = service(&server, &owner, &model, json!({"requests_per_minute": 4})).await;
    let (subscription, key) = subscribe(&server, &owner, &service).await;

    // Chat, as Continue's OpenAI provider builds it for a host other than api.openai.com.
    let chat = json!({"model": model, "max_tokens": 64, "temperature": 0.01, "top_p": 1,
        "frequency_penalty": 0, "presence_penalty": 0, "stop": continue_stops(), "stream": true,
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "hi"}]});
    let response = v1(&server, "/api/v1/chat/completions", &key, chat).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("chat.completion.chunk") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    let too_many: Vec<String> = (0..17).map(|i| format!("stop{i}")).collect();
    let response = v1(
        &server,
        "/api/v1/chat/completions",
        &key,
        json!({"model": model, "stop": too_many, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "stop");

    // Autocomplete: the legacy completions route, streamed (as Continue calls it) and not.
    let fim = json!({"model": model, "prompt": "<fim_prefix>fn main() {<fim_suffix>}<fim_middle>",
        "max_tokens": 256, "temperature": 0.01, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0,
        "stop": ["\n\n", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>", "</s>", "<file_sep>", "```", "\n}", "<|im_end|>"],
        "stream": true});
    let response = v1(&server, "/api/v1/completions", &key, fim.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        events.iter().all(|e| e["object"] == "text_completion"),
        "{text}"
    );
    let streamed: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, "fn main() {}");
    let mut plain = fim.clone();
    plain["stream"] = json!(false);
    let response = v1(
        &server,
        &format!("/api/v1/services/{service}/completions"),
        &key,
        plain,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "fn main() {}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );

    // Metered and limited exactly as chat: four calls counted, the fifth of the minute refused.
    usage_reaches(&server, &owner, &subscription, 3).await;
    let response = v1(
        &server,
        "/api/v1/completions",
        &key,
        json!({"model": model, "prompt": "x"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let response = v1(
        &server,
        "/api/v1/completions",
        &key,
        json!({"model": model, "prompt": "x"}),
    )
    .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    usage_reaches(&server, &owner, &subscription, 4).await;
    // A body over the limit is a 413 in OpenAI's shape.
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(vec![b' '; 1_200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["type"].as_str(),
            body["error"]["code"].as_str()
        ),
        (Some("invalid_request_error"), Some("body_too_large")),
        "{body}"
    );
    // No key, no completion.
    let response = client()
        .post(server.url("/api/v1/completions"))
        .json(&json!({"model": model, "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_openai_chat_field_is_accepted_and_unknown_ones_are_not() {
    let (_mock, mock_url) = mock("Hello");
    let data = temp_dir();
    let node = format!("upstream:{mock_url}#mock");
    let server = Server::start(
        &data,
        &[("AIFORGE_LOCAL_NODE", &node), ("AIFORGE_DEMO", "off")],
    );
    let owner = register_and_sign_in(&server, "owner@example.com").await;
    let model = published_model(&server, &owner, &mock_url).await;
    let service = service(&server, &owner, &model, json!({})).await;
    let (_, key) = subscribe(&server, &owner, &service).await;
    let full = json!({
        "model": model, "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {}, "logprobs": false, "top_logprobs": null,
        "max_tokens": 16, "max_completion_tokens": 16, "metadata": {"k": "v"}, "modalities": ["text"], "n": 1,
        "parallel_tool_calls": true, "prediction": null, "reasoning_effort": "low", "response_format": {"type": "text"},
        "seed": 7, "service_tier": "auto", "stop": "\n\n", "store": false, "stream": false, "temperature": 1,
        "tool_choice": "none", "tools": [], "top_p": 1, "user": "u-1", "audio": null,
        "prompt_cache_key": "k", "prompt_cache_retention": "in_memory", "safety_identifier": "hash", "verbosity": "low",
        "web_search_options": null, "function_call": "none", "functions": []
    });
    let response = v1(&server, "/api/v1/chat/completions", &key, full).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    for (extra, param) in [
        (json!({"not_an_openai_field": 1}), Value::Null),
        (
            json!({"response_format": {"type": "json_object"}}),
            json!("response_format"),
        ),
        (
            json!({"modalities": ["text", "audio"]}),
            json!("modalities"),
        ),
    ] {
        let mut request = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let response = v1(&server, "/api/v1/chat/completions", &key, request).await;
        assert_eq!(response.status(), 400, "{extra}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
        if extra.get("response_format").is_some() {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("json_object"),
                "{body}"
            );
        }
    }
    server.stop();
}
