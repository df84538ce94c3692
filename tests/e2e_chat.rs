//! End-to-end through the real `aiforge` binary: platform plans grant access to the models
//! included in plans, in the web chat's conversations (session) and through the platform API
//! key on `/api/v1`, within the plan's exact monthly requests; conversations are private and
//! really deleted; a stopped answer bills and saves only what was delivered; every answer's
//! receipt equals its metering event. The local node is an OpenAI-compatible mock upstream
//! (deterministic, slow enough to stop mid-answer); the demo's service is included in plans.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use support::*;

/// The mock's reply: 40 words, one chunk each.
fn reply() -> String {
    (1..=40)
        .map(|n| format!("word{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The events of a finished chat stream: (event name, data) in order.
fn events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = "message".to_string();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d);
            }
        }
        if !data.is_empty() {
            out.push((name, data));
        }
    }
    out
}

/// A chat message posted and its stream read to the end: (status, events, or the error body).
async fn post_message(
    server: &Server,
    token: &str,
    conversation: &str,
    body: Value,
) -> (u16, Vec<(String, String)>, Value) {
    let response = client()
        .post(server.url(&format!("/api/conversations/{conversation}/messages")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return (status, Vec::new(), response.json().await.unwrap_or(Value::Null));
    }
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    (status, events(&text), Value::Null)
}

/// The streamed answer's text, its start event and its receipt.
fn answer_of(events: &[(String, String)]) -> (String, Value, Value) {
    let mut content = String::new();
    let (mut start, mut receipt) = (Value::Null, Value::Null);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"), "{events:?}");
    for (name, data) in events {
        match name.as_str() {
            "start" => start = serde_json::from_str(data).unwrap(),
            "receipt" => receipt = serde_json::from_str(data).unwrap(),
            "error" => panic!("an error event: {data}"),
            _ if data == "[DONE]" => {}
            _ => {
                let chunk: Value = serde_json::from_str(data).unwrap();
                assert_eq!(chunk["object"], "chat.completion.chunk");
                if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
                    content.push_str(delta);
                }
            }
        }
    }
    (content, start, receipt)
}

async fn v1_chat(server: &Server, key: &str, model: &str) -> (u16, Value) {
    let response = client()
        .post(server.url("/api/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hi there"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The metering event of `request_id` in the exported log.
fn metered(dir: &std::path::Path, request_id: &str) -> Value {
    let export = cli(dir, &["events", "export"]);
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event_type"] == "ApiCallMetered" && e["aggregate_id"] == request_id)
        .unwrap_or_else(|| panic!("no metering event for {request_id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_free_plan_chats_by_session_and_platform_key_within_its_exact_month() {
    let (mock, line) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", &reply(), "--chunk-delay-ms", "40"],
        "listening on ",
    );
    let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_LOCAL_NODE", &format!("upstream:{mock_url}#mock")),
            ("AIFORGE_PLAN_LIMITS", "free=5/100000"),
        ],
    );
    let model = server.printed("demo model: ").expect("the demo model");

    // A new user takes the Free plan: the demo's model is theirs to chat with.
    let (_, ada) = signed_up(&server, "ada@example.com").await;
    let (status, _) = get(&server, "/api/plan/usage", Some(&ada)).await;
    assert_eq!(status, 404, "no plan yet");
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/subscriptions/create",
        json!({"plan": "free"}),
        Some(&ada),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = get(&server, "/api/chat/models", Some(&ada)).await;
    assert_eq!(status, 200, "{body}");
    let models = body["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{body}");
    assert_eq!(models[0]["id"], model.as_str());
    assert_eq!(models[0]["entitlement"], json!({"kind": "plan", "plan": "free"}));
    assert_eq!(models[0]["label"], "Free plan");
    let (status, usage) = get(&server, "/api/plan/usage", Some(&ada)).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(
        (&usage["plan"], &usage["requests_used"], &usage["requests_limit"]),
        (&json!("free"), &json!(0), &json!(5))
    );

    // A conversation: bad input is refused and makes nothing.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/conversations",
        json!({"model": model, "entitlement": {"kind": "plan", "plan": "free"}, "temperature": 3}),
        Some(&ada),
    )
    .await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("temperature")));
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/conversations",
        json!({"model": "no-such-model", "entitlement": {"kind": "plan", "plan": "free"}}),
        Some(&ada),
    )
    .await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("model")));
    let (status, conversation) = send(
        &server,
        Method::POST,
        "/api/conversations",
        json!({"title": "Colours", "model": model, "entitlement": {"kind": "plan", "plan": "free"},
               "system_prompt": "Be brief.", "max_tokens": 100}),
        Some(&ada),
    )
    .await;
    assert_eq!(status, 201, "{conversation}");
    assert_eq!(conversation["messages"], json!([]));
    let id = conversation["id"].as_str().unwrap().to_string();

    // Call 1: a message, answered in a stream, with its receipt.
    let (status, events, error) =
        post_message(&server, &ada, &id, json!({"parent_id": null, "content": "Hello"})).await;
    assert_eq!(status, 200, "{error}");
    let (content, start, receipt) = answer_of(&events);
    assert_eq!(content, reply());
    let first_user = start["user_message"]["id"].as_str().unwrap().to_string();
    assert_eq!(start["user_message"]["content"], "Hello");
    let first_answer = start["assistant_message_id"].as_str().unwrap().to_string();
    assert_eq!(receipt["entitlement"], json!({"kind": "plan", "plan": "free"}));
    assert_eq!(receipt["cost"], "0.000000", "the Free plan's calls are worth nothing");
    assert_eq!(receipt["completion_tokens"], 40);
    assert!(receipt["pool_share_this_month"].is_string(), "{receipt}");
    let parties: Vec<&str> = receipt["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["party"].as_str().unwrap())
        .collect();
    assert_eq!(parties, ["platform", "plan_pool"]);
    let request_id = receipt["request_id"].as_str().unwrap().to_string();
    let (status, again) = get(&server, &format!("/api/receipts/{request_id}"), Some(&ada)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["prompt_tokens"], receipt["prompt_tokens"]);
    assert_eq!(again["event"]["global_position"], receipt["event"]["global_position"]);

    // Call 2: regenerate the answer to the first message (a sibling of the first answer).
    let (status, events, error) =
        post_message(&server, &ada, &id, json!({"parent_id": first_user})).await;
    assert_eq!(status, 200, "{error}");
    let (content, start, _) = answer_of(&events);
    assert_eq!(content, reply());
    assert_eq!(start["user_message"]["id"], first_user.as_str());
    let (status, _, body) =
        post_message(&server, &ada, &id, json!({"parent_id": first_answer})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "regenerating needs a user message: {body}"
    );

    // Call 3: stopped after a few words. What was delivered is billed, and saved as cancelled.
    let response = client()
        .post(server.url(&format!("/api/conversations/{id}/messages")))
        .bearer_auth(&ada)
        .json(&json!({"parent_id": first_answer, "content": "Tell me more"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches("word").count() < 3 {
        let piece = stream.next().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&piece));
    }
    drop(stream);
    let mut cancelled = Value::Null;
    for _ in 0..200 {
        let (status, body) = get(&server, &format!("/api/conversations/{id}"), Some(&ada)).await;
        assert_eq!(status, 200, "{body}");
        if let Some(message) = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["finish_reason"] == "cancelled")
        {
            cancelled = message.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = cancelled["content"].as_str().expect("a cancelled answer is saved");
    assert!(reply().starts_with(stopped) && !stopped.is_empty(), "{stopped}");
    assert!(stopped.len() < reply().len(), "stopped early: {stopped}");
    let billed = cancelled["receipt"]["completion_tokens"].as_u64().unwrap();
    assert!(
        (1..40).contains(&billed),
        "billed {billed} of 40 completion tokens"
    );

    // The platform key: shown once, SHA-256 at rest; /models lists exactly the plan's models.
    let (status, body) = get(&server, "/api/account/api-key", Some(&ada)).await;
    assert_eq!((status, &body["exists"]), (200, &json!(false)));
    let (status, issued) = send(
        &server,
        Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&ada),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("aiforge_"));
    let (status, body) = get(&server, "/api/account/api-key", Some(&ada)).await;
    assert_eq!((status, &body["exists"]), (200, &json!(true)));
    assert!(body.to_string().find(&key[8..]).is_none(), "the key is never shown again");
    let (status, listed) = get(&server, "/api/v1/models", Some(&key)).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [model.as_str()]);

    // Calls 4 and 5 by key; the 6th is refused in the chat and by key: 5 requests a month.
    for _ in 0..2 {
        let (status, body) = v1_chat(&server, &key, &model).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) =
        post_message(&server, &ada, &id, json!({"parent_id": null, "content": "Again"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "{body}"
    );
    let (status, body) = v1_chat(&server, &key, &model).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "{body}"
    );
    let (_, usage) = get(&server, "/api/plan/usage", Some(&ada)).await;
    assert_eq!(usage["requests_used"], 5, "{usage}");
    let (_, body) = get(&server, &format!("/api/conversations/{id}"), Some(&ada)).await;
    assert_eq!(
        body["messages"].as_array().unwrap().len(),
        5,
        "the refused message was not saved: {body}"
    );

    // A regenerated key: the old one is refused at once, the new one is the plan's.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&ada),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let new_key = body["key"].as_str().unwrap().to_string();
    let (status, body) = v1_chat(&server, &key, &model).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let (status, body) = v1_chat(&server, &new_key, &model).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("insufficient_quota")),
        "the new key works, under the same spent plan"
    );

    // Conversations are private: another user gets 404 for everything of Ada's.
    let (_, bob) = signed_up(&server, "bob@example.com").await;
    for (method, path) in [
        (Method::GET, format!("/api/conversations/{id}")),
        (Method::PATCH, format!("/api/conversations/{id}")),
        (Method::DELETE, format!("/api/conversations/{id}")),
        (Method::GET, format!("/api/conversations/{id}/export")),
        (Method::GET, format!("/api/receipts/{request_id}")),
    ] {
        let (status, body) = send(&server, method.clone(), &path, json!({"title": "mine"}), Some(&bob)).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _, _) =
        post_message(&server, &bob, &id, json!({"parent_id": null, "content": "hi"})).await;
    assert_eq!(status, 404);
    let (_, list) = get(&server, "/api/conversations", Some(&bob)).await;
    assert_eq!(list["conversations"], json!([]));

    // Search, rename, export.
    let (_, list) = get(&server, "/api/conversations?q=TELL%20ME", Some(&ada)).await;
    assert_eq!(list["conversations"][0]["id"], id.as_str(), "{list}");
    let (_, list) = get(&server, "/api/conversations?q=nothing-like-it", Some(&ada)).await;
    assert_eq!(list["conversations"], json!([]));
    let (status, body) = send(
        &server,
        Method::PATCH,
        &format!("/api/conversations/{id}"),
        json!({"title": "Words", "temperature": null, "system_prompt": null}),
        Some(&ada),
    )
    .await;
    assert_eq!((status, &body["title"]), (200, &json!("Words")), "{body}");
    assert!(body["system_prompt"].is_null());
    let response = client()
        .get(server.url(&format!("/api/conversations/{id}/export?format=markdown")))
        .bearer_auth(&ada)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let markdown = response.text().await.unwrap();
    assert!(markdown.starts_with("# Words") && markdown.contains("Tell me more"), "{markdown}");

    // The receipt's numbers are the metering event's.
    let event = metered(&dir, &request_id);
    let payload: Value = serde_json::from_str(event["payload"].as_str().unwrap()).unwrap();
    let call = &payload["ApiCallMetered"];
    assert_eq!(receipt["prompt_tokens"], call["prompt_tokens"]);
    assert_eq!(receipt["completion_tokens"], call["completion_tokens"]);
    assert_eq!(receipt["event"]["global_position"], event["global_position"]);
    assert_eq!(call["entitlement"]["kind"], "plan");
    assert!(
        !event["payload"].as_str().unwrap().contains("Hello"),
        "metering carries tokens, never text"
    );

    // Deleting really deletes the rows.
    let (status, _) = send(
        &server,
        Method::DELETE,
        &format!("/api/conversations/{id}"),
        json!({}),
        Some(&ada),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = get(&server, &format!("/api/conversations/{id}"), Some(&ada)).await;
    assert_eq!(status, 404);
    let connection =
        sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.join("aiforge.db").display()))
            .await
            .unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM conversations WHERE id = $1) \
         + (SELECT COUNT(*) FROM conversation_messages WHERE conversation_id = $1)",
    )
    .bind(&id)
    .fetch_one(&connection)
    .await
    .unwrap();
    assert_eq!(rows, 0);
    connection.close().await;

    server.stop();
    drop(mock);
    let _ = std::fs::remove_dir_all(dir);
}
