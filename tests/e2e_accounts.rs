//! End-to-end: the real `aiforge` binary on port 0, on the embedded default (SQLite) and on
//! PostgreSQL, driven over HTTP with reqwest and stopped with SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::path::Path;

use aiforge_commands::testing::{drop_postgres_database, postgres_admin_url, TestDatabase};
use serde_json::{json, Value};
use support::*;

async fn register_login_me_and_survive_a_restart(data_dir: &Path, env: &[(&str, &str)]) {
    let server = Server::start(data_dir, env);
    let (status, body) = post(
        &server,
        "/api/auth/register",
        json!({"email": "Ada@Example.com", "username": "ada", "password": "analytical engine"}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let user_id = body["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["user"]["email"], "ada@example.com");

    let (status, body) = login(&server, "ada@example.com", "analytical engine").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let (status, body) = me(&server, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], user_id.as_str());
    assert_eq!(body["username"], "ada");
    server.stop();

    // Nothing is lost across a restart: the account, its password, and the token's key.
    let server = Server::start(data_dir, env);
    let (status, body) = me(&server, &token).await;
    assert_eq!(
        status, 200,
        "a token from before the restart still works: {body}"
    );
    let (status, body) = login(&server, "ADA@example.com", "analytical engine").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], user_id.as_str());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_default_an_account_registers_signs_in_and_survives_a_restart() {
    let dir = temp_dir();
    register_login_me_and_survive_a_restart(&dir, &[]).await;
    assert!(
        dir.join("aiforge.db").exists(),
        "the embedded store is a file in the data dir"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_an_account_registers_signs_in_and_survives_a_restart() {
    let (url, name) = match TestDatabase::create_postgres_database().await {
        Ok(created) => created,
        Err(e) if std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1") => {
            eprintln!("SKIPPED (PostgreSQL): cannot reach {} ({e}); set AIFORGE_REQUIRE_SERVICES=1 to make this a failure", postgres_admin_url());
            return;
        }
        Err(e) => panic!("AIFORGE_REQUIRE_SERVICES=1 but PostgreSQL is unavailable: {e}"),
    };
    let dir = temp_dir();
    register_login_me_and_survive_a_restart(&dir, &[("AIFORGE_DATABASE_URL", &url)]).await;
    assert!(
        !dir.join("aiforge.db").exists(),
        "PostgreSQL was used, not SQLite"
    );
    drop_postgres_database(&postgres_admin_url(), &name).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_appends_nothing() {
    let dir = temp_dir();
    let server = Server::start(&dir, &[("AIFORGE_BODY_BYTES_MAX", "4096")]);
    let ok = json!({"email": "grace@example.com", "username": "grace", "password": "compiler one"});
    assert_eq!(
        post(&server, "/api/auth/register", ok.clone(), None)
            .await
            .0,
        201
    );
    let before = event_count(&server).await;
    assert_eq!(before, 2);

    let cases = [
        (
            json!({"email": "not-an-email", "username": "x1x", "password": "long enough"}),
            422,
            "email",
        ),
        (
            json!({"email": "a@example.com", "username": "no spaces", "password": "long enough"}),
            422,
            "username",
        ),
        (
            json!({"email": "a@example.com", "username": "abc", "password": "short"}),
            422,
            "password",
        ),
        (
            json!({"email": "GRACE@example.com", "username": "other", "password": "long enough"}),
            409,
            "email",
        ),
        (
            json!({"email": "b@example.com", "username": "Grace", "password": "long enough"}),
            409,
            "username",
        ),
    ];
    for (body, status, field) in cases {
        let (got, error) = post(&server, "/api/auth/register", body.clone(), None).await;
        assert_eq!(got, status, "{body} -> {error}");
        assert_eq!(error["error"]["field"], field, "{error}");
        assert!(error["error"]["code"].is_string());
    }
    let (status, error) = post(&server, "/api/auth/register", json!({"email": 5}), None).await;
    assert_eq!(status, 422, "{error}");
    let response = client()
        .post(server.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    let response = client()
        .post(server.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body(vec![b' '; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);

    // Wrong password and unknown email answer alike.
    let (s1, b1) = login(&server, "grace@example.com", "wrong password").await;
    let (s2, b2) = login(&server, "nobody@example.com", "wrong password").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1, b2);
    let (status, _) = me(&server, "not-a-token").await;
    assert_eq!(status, 401);
    let response = client()
        .get(server.url("/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    assert_eq!(
        event_count(&server).await,
        before,
        "no failed request appended an event"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_result_and_refuses_another_body() {
    let dir = temp_dir();
    let server = Server::start(&dir, &[]);
    let body =
        json!({"email": "linus@example.com", "username": "linus", "password": "monolithic kernel"});
    let (s1, first) = post(
        &server,
        "/api/auth/register",
        body.clone(),
        Some("signup-42"),
    )
    .await;
    let (s2, second) = post(
        &server,
        "/api/auth/register",
        body.clone(),
        Some("signup-42"),
    )
    .await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second, "the retry returns the first result");
    assert_eq!(event_count(&server).await, 2, "and appends nothing");

    let other =
        json!({"email": "other@example.com", "username": "other", "password": "monolithic kernel"});
    let (status, error) = post(&server, "/api/auth/register", other, Some("signup-42")).await;
    assert_eq!(status, 409);
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    assert_eq!(event_count(&server).await, 2);
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_the_log_in_order_and_rebuilds_projections() {
    let dir = temp_dir();
    let server = Server::start(&dir, &[]);
    for n in 0..3 {
        let body = json!({"email": format!("u{n}@example.com"), "username": format!("user{n}"), "password": "password123"});
        assert_eq!(post(&server, "/api/auth/register", body, None).await.0, 201);
    }
    server.stop();

    let export = cli(&dir, &["events", "export"]);
    let events: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6);
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
    assert!(events
        .iter()
        .all(|e| e["recorded_at"].as_str().unwrap().ends_with('Z')));
    assert!(
        !export.contains("argon2"),
        "password hashes never leave the store"
    );
    let ranged = cli(&dir, &["events", "export", "--from", "3", "--to", "4"]);
    let ranged: Vec<i64> = ranged
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ranged, [3, 4]);

    let rebuilt = cli(&dir, &["projections", "rebuild", "users"]);
    assert!(
        rebuilt.contains("rebuilt users up to position 6"),
        "{rebuilt}"
    );
    let status = cli(&dir, &["projections", "status"]);
    let users_line = status.lines().find(|l| l.starts_with("users")).unwrap();
    let columns: Vec<&str> = users_line.split_whitespace().collect();
    assert_eq!(columns, ["users", "6", "6", "0"]);

    // After the rebuild the server still answers from the view.
    let server = Server::start(&dir, &[]);
    let (status, body) = login(&server, "u1@example.com", "password123").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = me(&server, body["access_token"].as_str().unwrap()).await;
    assert_eq!((status, body["username"].as_str()), (200, Some("user1")));
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}
