//! End-to-end through the real `aiforge` binary: revenue splits of group models (who may set
//! them, what a valid split is, and that a change applies from the next month) and the audit
//! command's hash chain over the stored log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

async fn user(server: &Server, name: &str) -> (String, String) {
    signed_up(server, &format!("{name}@example.com")).await
}

async fn split(server: &Server, model: &str, token: &str, shares: Value) -> (u16, Value) {
    send(
        server,
        Method::POST,
        &format!("/api/group-revenue/model/{model}/split"),
        json!({ "shares": shares }),
        Some(token),
    )
    .await
}

#[tokio::test]
async fn group_splits_are_set_by_owners_and_admins_and_apply_from_the_next_month() {
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[("AIFORGE_MANUAL_CLOCK_START", "2026-10-15T12:00:00Z")],
    );
    let owner = user(&server, "owner").await;
    let admin = user(&server, "admin").await;
    let member = user(&server, "member").await;
    let outsider = user(&server, "outsider").await;
    let (status, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "Lab", "description": ""}),
        Some(&owner.1),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group = group["group"]["group_id"].as_str().unwrap().to_string();
    for (who, role) in [(&admin, "ADMIN"), (&member, "MEMBER")] {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/groups/{group}/members"),
            json!({"user_id": who.0, "role": role}),
            Some(&owner.1),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let response = client()
        .post(server.url(&format!("/api/models?name=shared&group_id={group}")))
        .bearer_auth(&member.1)
        .body(b"weights".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let model = model["model"]["id"].as_str().unwrap().to_string();

    // Bad input is refused and records nothing.
    let before = event_count(&server).await;
    let fifty_fifty =
        |a: &str, b: &str| json!([{"user_id": a, "percent": 50}, {"user_id": b, "percent": "50"}]);
    let (status, body) = split(&server, &model, &member.1, fifty_fifty(&owner.0, &member.0)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body) = split(
        &server,
        &model,
        &owner.1,
        fifty_fifty(&owner.0, &outsider.0),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("shares")),
        "{body}"
    );
    for bad in [
        json!([{"user_id": owner.0, "percent": 50}, {"user_id": member.0, "percent": 49.99}]),
        json!([{"user_id": owner.0, "percent": "50.001"}, {"user_id": member.0, "percent": "49.999"}]),
        json!([{"user_id": owner.0, "percent": 100}, {"user_id": owner.0, "percent": 0}]),
        json!([]),
    ] {
        let (status, body) = split(&server, &model, &owner.1, bad.clone()).await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }
    let (status, _) = split(
        &server,
        &model,
        &outsider.1,
        fifty_fifty(&owner.0, &member.0),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(event_count(&server).await, before);

    // An ADMIN sets 50/30/20: pending until November.
    let shares = json!([
        {"user_id": owner.0, "percent": 50},
        {"user_id": admin.0, "percent": "30"},
        {"user_id": member.0, "percent": 20.0},
    ]);
    let (status, body) = split(&server, &model, &admin.1, shares).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"], Value::Null);
    assert_eq!(body["pending"]["version"], 1);
    assert_eq!(
        body["pending"]["effective_from"],
        "2026-11-01T00:00:00.000000Z"
    );
    let percents: Vec<&str> = body["pending"]["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["percent"].as_str().unwrap())
        .collect();
    assert_eq!(percents, ["50", "30", "20"]);
    // Members read it; outsiders do not see the model's split.
    let path = format!("/api/group-revenue/model/{model}/split");
    let (status, read) = get(&server, &path, Some(&member.1)).await;
    assert_eq!((status, &read["pending"]), (200, &body["pending"]));
    let (status, _) = get(&server, &path, Some(&outsider.1)).await;
    assert_eq!(status, 404);

    // On November 1st it is in force; a change made in November waits for December.
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/ops/clock/advance",
        json!({"seconds": 17 * 86_400}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Sessions last a day on the app clock: sign in again.
    let (_, body) = login(&server, "owner@example.com", "correct horse battery staple").await;
    let owner = (owner.0, body["access_token"].as_str().unwrap().to_string());
    let (status, read) = get(&server, &path, Some(&owner.1)).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["current"]["version"], 1);
    assert_eq!(read["pending"], Value::Null);
    let (status, body) = split(&server, &model, &owner.1, fifty_fifty(&owner.0, &admin.0)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"]["version"], 1);
    assert_eq!(body["pending"]["version"], 2);
    assert_eq!(
        body["pending"]["effective_from"],
        "2026-12-01T00:00:00.000000Z"
    );

    // The audit: the log verifies; one changed payload byte is named by its position.
    server.stop();
    let verdict = cli(&dir, &["audit", "verify"]);
    assert!(verdict.starts_with("event log intact: "), "{verdict}");
    let db = dir.join("aiforge.db");
    let connection = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let position: i64 = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE event_type = 'ModelRevenueSplitSet' ORDER BY global_position LIMIT 1",
    )
    .fetch_one(&connection)
    .await
    .unwrap();
    sqlx::query("UPDATE events SET payload = replace(payload, '\"50\"', '\"51\"') WHERE global_position = $1")
        .bind(position)
        .execute(&connection)
        .await
        .unwrap();
    connection.close().await;
    let output = std::process::Command::new(binary())
        .args(["--data-dir", dir.to_str().unwrap(), "audit", "verify"])
        .env_remove("AIFORGE_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("global position {position} ")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
