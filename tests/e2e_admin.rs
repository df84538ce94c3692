//! Operating the platform, through the real `aiforge` binary: every admin route refuses a
//! request without a session (401) and an email session (403); an admin lists payments with
//! filters, searches users (email, username, wallet address, any case), sees a user in full, a
//! node's job history and the platform's counts; and
//! deactivating a user refuses their session, API key and node token on two instances of one
//! PostgreSQL database, while reactivating restores them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::time::{Duration, Instant};

use aiforge_commands::testing::{drop_postgres_database, postgres_admin_url, TestDatabase};
use reqwest::Method;
use serde_json::{json, Value};
use support::chain::wallet_session;
use support::{client, get, login, send, signed_up, temp_dir, wallet_sign, Server};

const JWT_SECRET: &str = "e2e-admin-shared-jwt-secret-0123456789abcdef";
/// Ganache's deterministic account #0: the admin's wallet here (only its key is used, no chain).
const ADMIN_KEY: &str = "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";
const PLATFORM_WALLET: &str = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";

/// A value for a path parameter that the route's own parsing accepts.
fn probe_value(name: &str) -> &'static str {
    match name {
        "year" => "2026",
        "month" => "11",
        _ => "00000000-0000-0000-0000-000000000000",
    }
}

fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(probe_value(&rest[start + 1..end]));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Every admin operation of the server's own OpenAPI document (admin paths and the `admin` tag),
/// as (method, concrete path).
async fn admin_operations(server: &Server) -> Vec<(Method, String)> {
    let (status, document) = get(server, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let tagged_admin = operation["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == "admin"));
            if path.starts_with("/api/admin/") || tagged_admin {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                operations.push((method, concrete(path)));
            }
        }
    }
    operations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_refuses_no_session_and_an_email_session() {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let server = Server::start(&dir, &[("AIFORGE_ADMIN_WALLETS", &admin_address)]);
    let (_, email_token) = signed_up(&server, "erin@example.com").await;
    let operations = admin_operations(&server).await;
    assert!(
        operations.len() >= 10,
        "the document lists the admin routes: {operations:?}"
    );
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let events = support::event_count(&server).await;
    for (method, path) in &operations {
        let body = (method != Method::GET).then(|| json!({}));
        let mut request = client().request(method.clone(), server.url(path));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, 401, "{method} {path} without a session");
        let mut request = client()
            .request(method.clone(), server.url(path))
            .bearer_auth(&email_token);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let status = request.send().await.unwrap().status().as_u16();
        assert_eq!(status, 403, "{method} {path} with an email session");
    }
    assert_eq!(
        support::event_count(&server).await,
        events,
        "refused requests append nothing"
    );
    // And the admin's own session passes the gate of each read.
    for (method, path) in operations.iter().filter(|(m, _)| m == Method::GET) {
        let (status, body) = get(&server, path, Some(&admin)).await;
        assert!(
            status != 401 && status != 403,
            "{method} {path} as the admin: {status} {body}"
        );
    }
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_payments_by_filter_and_sees_a_user_in_full() {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            ("AIFORGE_ETH_PLATFORM_WALLET", PLATFORM_WALLET),
            // Payments are only created here, never verified: no node answers on this port.
            ("AIFORGE_ETH_RPC_URL", "http://127.0.0.1:9"),
        ],
    );
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (uma_id, uma) = signed_up(&server, "uma@example.com").await;
    let (_, vic) = signed_up(&server, "vic@example.com").await;
    for (token, plan) in [(&uma, "basic"), (&vic, "pro")] {
        let (status, body) = send(
            &server,
            Method::POST,
            "/api/subscriptions/create",
            json!({"plan": plan, "network": "ethereum"}),
            Some(token),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/payments/create",
        json!({"type": "job", "network": "ethereum", "amount": "1.5",
               "reference": "01890a5d-ac96-774b-bcce-b302099a8057"}),
        Some(&uma),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, page) = get(&server, "/api/admin/payments", Some(&admin)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 3);
    let (_, page) = get(
        &server,
        &format!("/api/admin/payments?user_id={uma_id}&state=pending&network=ethereum"),
        Some(&admin),
    )
    .await;
    assert_eq!(page["total"], 2, "{page}");
    let (_, jobs) = get(&server, "/api/admin/payments?type=job", Some(&admin)).await;
    assert_eq!(jobs["total"], 1, "{jobs}");
    assert_eq!(jobs["payments"][0]["amount"], "1.500000");
    assert!(page["payments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["payer"] == uma_id.as_str() && p["pay_to"] == PLATFORM_WALLET));
    let (_, page) = get(&server, "/api/admin/payments?state=confirmed", Some(&admin)).await;
    assert_eq!(page["total"], 0);
    let (_, page) = get(
        &server,
        "/api/admin/payments?from=2000-01-01T00:00:00Z&to=2000-02-01T00:00:00Z",
        Some(&admin),
    )
    .await;
    assert_eq!(page["total"], 0, "a date range before any payment");
    for (query, field) in [
        ("type=gift", "type"),
        ("state=lost", "state"),
        ("network=bitcoin", "network"),
        ("from=yesterday", "from"),
        ("per_page=201", "per_page"),
    ] {
        let (status, body) = get(
            &server,
            &format!("/api/admin/payments?{query}"),
            Some(&admin),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some(field)),
            "{query}: {body}"
        );
    }

    let (status, details) = get(&server, &format!("/api/admin/users/{uma_id}"), Some(&admin)).await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["user"]["email"], "uma@example.com");
    assert_eq!(details["payments_total"], 2);
    assert_eq!(details["payments"].as_array().unwrap().len(), 2);
    for list in ["wallets", "api_subscriptions", "models", "groups", "nodes"] {
        assert!(details[list].is_array(), "{list}: {details}");
    }
    let (status, _) = get(&server, "/api/admin/users/nobody", Some(&admin)).await;
    assert_eq!(status, 404);

    let (status, stats) = get(&server, "/api/admin/stats", Some(&admin)).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["users"]["total"], 3);
    assert_eq!(stats["users"]["deactivated"], 0);
    assert_eq!(stats["users"]["active_30d"], 0, "no metered call yet");
    assert_eq!(stats["api_subscriptions_active"], 0);
    assert!(stats["plans_active"].is_object(), "{stats}");
    assert!(stats["models"].is_object(), "{stats}");
    assert!(stats["revenue_this_month"]["by_type"].is_array(), "{stats}");
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

async fn postgres_url() -> Option<(String, String)> {
    let probe = TestDatabase::postgres().await?;
    probe.cleanup().await;
    TestDatabase::create_postgres_database().await.ok()
}

/// The status of `GET /api/v1/models` with `key` on `server`, polled until it is `want` (the key
/// index follows the shared log; another instance's append reaches it within its poll interval).
async fn key_status_becomes(server: &Server, key: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client()
            .get(server.url("/api/v1/models"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the key answered {status}, never {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn heartbeat(server: &Server, node: &str, token: &str) -> (u16, Value) {
    send(
        server,
        Method::POST,
        &format!("/api/nodes/{node}/heartbeat"),
        json!({"cpu_percent": 5, "memory_used_mb": 512, "disk_used_gb": 1, "running_jobs": 0}),
        Some(token),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deactivation_refuses_session_key_and_node_token_on_every_instance_until_reactivated() {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let Some((url, name)) = postgres_url().await else {
        return;
    };
    let env = [
        ("AIFORGE_DATABASE_URL", url.as_str()),
        ("AIFORGE_DEMO", "off"),
        ("AIFORGE_JWT_SECRET", JWT_SECRET),
        ("AIFORGE_ADMIN_WALLETS", admin_address.as_str()),
    ];
    let a = Server::start(&temp_dir(), &env);
    let b = Server::start(&temp_dir(), &env);
    let admin = wallet_session(&a, ADMIN_KEY).await.unwrap();
    let (ursula_id, ursula) = signed_up(&a, "ursula@example.com").await;

    let (status, issued) = send(
        &a,
        Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&ursula),
    )
    .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap().to_string();
    let (status, node) = send(
        &a,
        Method::POST,
        "/api/nodes/register",
        json!({"name": "ursulas-gpu", "owner_wallet": PLATFORM_WALLET,
               "resources": {"cpu_cores": 4, "memory_mb": 8192, "disk_gb": 100, "gpus": [], "max_concurrent_jobs": 1}}),
        Some(&ursula),
    )
    .await;
    assert_eq!(status, 201, "{node}");
    let node_id = node["node"]["id"].as_str().unwrap().to_string();
    let node_token = node["node_token"].as_str().unwrap().to_string();
    key_status_becomes(&b, &key, 200).await;
    assert_eq!(heartbeat(&b, &node_id, &node_token).await.0, 200);
    assert_eq!(get(&b, "/api/auth/me", Some(&ursula)).await.0, 200);

    // Bad input changes nothing.
    for reason in ["", "   "] {
        let (status, body) = send(
            &a,
            Method::POST,
            &format!("/api/admin/users/{ursula_id}/deactivate"),
            json!({"reason": reason}),
            Some(&admin),
        )
        .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("reason"))
        );
    }
    assert_eq!(get(&b, "/api/auth/me", Some(&ursula)).await.0, 200);

    let (status, body) = send(
        &a,
        Method::POST,
        &format!("/api/admin/users/{ursula_id}/deactivate"),
        json!({"reason": "chargeback fraud"}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["deactivation_reason"], "chargeback fraud");
    assert!(body["user"]["deactivated_at"].is_string());

    // At once, on the other instance: the session and the node token (both checked against the
    // shared store), and the key as soon as that instance's index has read the event.
    let (status, body) = get(&b, "/api/auth/me", Some(&ursula)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("account_deactivated"))
    );
    let (status, body) = heartbeat(&b, &node_id, &node_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("account_deactivated"))
    );
    let refused = key_status_becomes(&b, &key, 403).await;
    assert_eq!(refused["error"]["code"], "account_deactivated", "{refused}");
    let refused = key_status_becomes(&a, &key, 403).await;
    assert_eq!(refused["error"]["code"], "account_deactivated");
    let (status, body) = login(&b, "ursula@example.com", "correct horse battery staple").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("account_deactivated")),
        "{body}"
    );
    let (status, body) = login(&b, "ursula@example.com", "a wrong password").await;
    assert_eq!(
        status, 401,
        "a wrong password says nothing about the account: {body}"
    );

    // The data stays, and the admin sees why.
    let (_, details) = get(&b, &format!("/api/admin/users/{ursula_id}"), Some(&admin)).await;
    assert_eq!(details["user"]["deactivation_reason"], "chargeback fraud");
    assert_eq!(details["nodes"][0]["id"], node_id.as_str());
    let (_, stats) = get(&b, "/api/admin/stats", Some(&admin)).await;
    assert_eq!(stats["users"]["deactivated"], 1);
    let (status, body) = send(
        &b,
        Method::POST,
        &format!("/api/admin/users/{ursula_id}/deactivate"),
        json!({"reason": "again"}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_deactivated"))
    );

    // Reactivated on the other instance: everything works again on both.
    let (status, body) = send(
        &b,
        Method::POST,
        &format!("/api/admin/users/{ursula_id}/reactivate"),
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["user"]["deactivated_at"].is_null());
    assert_eq!(get(&a, "/api/auth/me", Some(&ursula)).await.0, 200);
    assert_eq!(heartbeat(&a, &node_id, &node_token).await.0, 200);
    key_status_becomes(&a, &key, 200).await;
    key_status_becomes(&b, &key, 200).await;
    let (status, _) = login(&a, "ursula@example.com", "correct horse battery staple").await;
    assert_eq!(status, 200);
    let (status, body) = send(
        &a,
        Method::POST,
        &format!("/api/admin/users/{ursula_id}/reactivate"),
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_deactivated"))
    );

    // A node's job history, for the admin only.
    let (status, jobs) = get(
        &a,
        &format!("/api/admin/nodes/{node_id}/jobs"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{jobs}");
    assert_eq!(jobs["node"]["id"], node_id.as_str());
    assert_eq!(jobs["total"], 0);

    a.stop();
    b.stop();
    drop_postgres_database(&postgres_admin_url(), &name).await;
}

/// The auditor's checks from the admin's page: `POST /api/admin/audit/verify` says the log is
/// intact, then names the position of a payload changed behind the server's back; a month's
/// replay has nothing to compare before its close, and matches the recorded digest after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_runs_audit_verify_and_replay_over_http_as_the_cli_does() {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-20T12:00:00Z"),
            ("AIFORGE_CLOSE_AUTOMATIC", "false"),
        ],
    );
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    signed_up(&server, "audited@example.com").await;

    let (status, verdict) = send(
        &server,
        Method::POST,
        "/api/admin/audit/verify",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["intact"], true, "{verdict}");
    assert!(verdict["sealed"].as_i64().unwrap() > 0, "{verdict}");
    assert!(
        verdict["message"]
            .as_str()
            .unwrap()
            .starts_with("event log intact: "),
        "{verdict}"
    );

    let replay = |month: &'static str| send(&server, Method::POST, month, json!({}), Some(&admin));
    let (status, body) = replay("/api/admin/audit/replay/2026/13").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_field")),
        "{body}"
    );
    let (status, before) = replay("/api/admin/audit/replay/2026/11").await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        (&before["closed"], &before["matches"]),
        (&json!(false), &json!(false)),
        "{before}"
    );
    assert_eq!(before["computed"]["month"], "2026-11", "{before}");

    // December: November may close (the admin signs in again: sessions last a day).
    let (status, _) = send(
        &server,
        Method::POST,
        "/api/ops/clock/advance",
        json!({"seconds": 12 * 86_400}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let replay = |month: &'static str| send(&server, Method::POST, month, json!({}), Some(&admin));
    let (status, closed) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/11",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{closed}");
    let (status, after) = replay("/api/admin/audit/replay/2026/11").await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["matches"], true, "{after}");
    assert_eq!(
        after["recorded_digest"], closed["closed"]["digest"],
        "{after}"
    );
    assert_eq!(after["computed"]["digest"], closed["closed"]["digest"]);
    assert_eq!(after["differences"], json!([]));

    // One changed byte in a sealed event: the verdict names its position.
    let (status, verdict) = send(
        &server,
        Method::POST,
        "/api/admin/audit/verify",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, &verdict["intact"]),
        (200, &json!(true)),
        "{verdict}"
    );
    let db = dir.join("aiforge.db");
    let connection = sqlx::SqlitePool::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let position: i64 = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE event_type = 'UserRegistered' ORDER BY global_position LIMIT 1",
    )
    .fetch_one(&connection)
    .await
    .unwrap();
    sqlx::query("UPDATE events SET payload = replace(payload, 'audited@', 'altered@') WHERE global_position = $1")
        .bind(position)
        .execute(&connection)
        .await
        .unwrap();
    connection.close().await;
    let (status, verdict) = send(
        &server,
        Method::POST,
        "/api/admin/audit/verify",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["intact"], false, "{verdict}");
    assert_eq!(verdict["position"], position, "{verdict}");
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// `GET /api/admin/users?{query}` as the admin, which must answer 200.
async fn users_page(server: &Server, admin: &str, query: String) -> Value {
    let (status, page) = get(server, &format!("/api/admin/users?{query}"), Some(admin)).await;
    assert_eq!(status, 200, "{query}: {page}");
    page
}

/// The admin's user search, on one engine: email, username and wallet address, any case, a `%`
/// or `_` typed matched as itself, paged with the count of matches.
async fn the_admin_searches_users(database_url: Option<&str>) {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let dir = temp_dir();
    let mut env = vec![("AIFORGE_ADMIN_WALLETS", admin_address.as_str())];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let server = Server::start(&dir, &env);
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let (_, me) = get(&server, "/api/auth/me", Some(&admin)).await;
    let admin_id = me["id"].as_str().unwrap().to_string();
    let (uma_id, _) = signed_up(&server, "uma@example.com").await;
    let (under_id, _) = signed_up(&server, "a_b@example.org").await;
    let (plain_id, _) = signed_up(&server, "axb@example.org").await;
    let ids = |page: &Value| -> Vec<String> {
        page["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_string())
            .collect()
    };

    // By email, in another case; by username; by a piece of the wallet address in upper case.
    let page = users_page(&server, &admin, "q=UMA%40EXAMPLE".into()).await;
    assert_eq!(
        (ids(&page), page["total"].as_i64()),
        (vec![uma_id.clone()], Some(1))
    );
    assert_eq!(page["q"], "UMA@EXAMPLE");
    let page = users_page(&server, &admin, "q=%20Uma%20".into()).await;
    assert_eq!(ids(&page), vec![uma_id.clone()], "trimmed: {page}");
    let fragment = admin_address.trim_start_matches("0x")[4..14].to_uppercase();
    let page = users_page(&server, &admin, format!("q={fragment}")).await;
    assert_eq!(ids(&page), vec![admin_id.clone()], "{page}");
    // `_` is a character, not LIKE's any-one-character: a_b, not axb.
    let page = users_page(&server, &admin, "q=a_b".into()).await;
    assert_eq!(ids(&page), vec![under_id.clone()], "{page}");
    let page = users_page(&server, &admin, "q=%25".into()).await;
    assert_eq!(page["total"], 0, "no one's text holds a %: {page}");
    // Paged in registration order, the total counting every match.
    let page = users_page(&server, &admin, "q=example.org&per_page=1&page=2".into()).await;
    assert_eq!(
        (ids(&page), page["total"].as_i64()),
        (vec![plain_id.clone()], Some(2))
    );
    let page = users_page(&server, &admin, "q=nobody-like-this".into()).await;
    assert_eq!((ids(&page), page["total"].as_i64()), (vec![], Some(0)));
    // No search (or a blank one) lists everyone, as before.
    for query in ["", "q=%20%20"] {
        let page = users_page(&server, &admin, query.into()).await;
        assert_eq!(page["total"], 4, "{query}: {page}");
        assert_eq!(page["q"], Value::Null);
    }
    let long = "x".repeat(201);
    let (status, body) = get(&server, &format!("/api/admin/users?q={long}"), Some(&admin)).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("q")),
        "{body}"
    );
    server.stop();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_searches_users_by_email_username_and_wallet_in_any_case_on_sqlite() {
    the_admin_searches_users(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_searches_users_by_email_username_and_wallet_in_any_case_on_postgresql() {
    let Some((url, name)) = postgres_url().await else {
        aiforge_commands::testing::skip_or_fail("PostgreSQL", "cannot create a database");
        return;
    };
    the_admin_searches_users(Some(&url)).await;
    drop_postgres_database(&postgres_admin_url(), &name).await;
}
