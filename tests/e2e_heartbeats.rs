//! End-to-end through the real `aiforge` binary on its manual clock: a node's heartbeat metrics
//! over time. Heartbeats posted over HTTP are sampled at most once per node per UTC minute (the
//! minute's first), read back exactly by the node's owner and an admin (anyone else: 404), and
//! pruned by the compute pass once older than 30 days. Run on SQLite and on PostgreSQL, whose
//! heartbeat writes the latest heartbeat and the sample in one statement.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use aiforge_commands::testing::TestDatabase;
use reqwest::Method;
use serde_json::{json, Value};
use support::chain::{wallet_session, ADMIN_KEY};
use support::*;

async fn advance(server: &Server, seconds: i64) {
    let (status, body) = post(
        server,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

fn metrics(cpu: u32, memory_mb: u64, jobs: u32) -> Value {
    json!({
        "cpu_percent": cpu,
        "memory_used_mb": memory_mb,
        "disk_used_gb": 10,
        "gpus": [{"utilization_percent": cpu / 2, "memory_used_mb": memory_mb / 4}],
        "running_jobs": jobs,
    })
}

async fn beat(server: &Server, node: &str, token: &str, metrics: &Value) {
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/nodes/{node}/heartbeat"),
        metrics.clone(),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn history(server: &Server, node: &str, query: &str, token: Option<&str>) -> (u16, Value) {
    get(
        server,
        &format!("/api/nodes/{node}/heartbeats{query}"),
        token,
    )
    .await
}

async fn heartbeat_history_is_sampled_per_minute_and_pruned(database_url: Option<&str>) {
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let mut env = vec![
        ("AIFORGE_MANUAL_CLOCK_START", "2026-11-10T10:00:00Z"),
        ("AIFORGE_DEMO", "off"),
        ("AIFORGE_ADMIN_WALLETS", admin_address.as_str()),
    ];
    if let Some(url) = database_url {
        env.push(("AIFORGE_DATABASE_URL", url));
    }
    let dir = temp_dir();
    let server = Server::start(&dir, &env);
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let owner = register_and_sign_in(&server, "operator@example.com").await;
    let outsider = register_and_sign_in(&server, "outsider@example.com").await;
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/nodes/register",
        json!({"name": "rig", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
               "resources": {"cpu_cores": 4, "memory_mb": 8192, "disk_gb": 100, "gpus": [],
                             "max_concurrent_jobs": 2}}),
        Some(&owner),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let node = body["node"]["id"].as_str().unwrap().to_string();
    let token = body["node_token"].as_str().unwrap().to_string();

    // 10:00:00 and 10:00:20 share a minute: only the first is sampled (the second is still the
    // node's latest). Then 10:01:05 and 10:03:05.
    let (m1, m2, m3, m4) = (
        metrics(12, 2048, 0),
        metrics(90, 4096, 1),
        metrics(40, 3072, 2),
        metrics(7, 1024, 0),
    );
    beat(&server, &node, &token, &m1).await;
    advance(&server, 20).await;
    beat(&server, &node, &token, &m2).await;
    let (_, body) = get(&server, &format!("/api/nodes/{node}"), Some(&owner)).await;
    assert_eq!(body["node"]["last_heartbeat"]["metrics"], m2, "{body}");
    advance(&server, 45).await;
    beat(&server, &node, &token, &m3).await;
    advance(&server, 120).await;
    beat(&server, &node, &token, &m4).await;

    let all = json!([
        {"at": "2026-11-10T10:00:00.000000Z", "metrics": m1},
        {"at": "2026-11-10T10:01:05.000000Z", "metrics": m3},
        {"at": "2026-11-10T10:03:05.000000Z", "metrics": m4},
    ]);
    let (status, body) = history(
        &server,
        &node,
        "?from=2026-11-10T09:00:00Z&to=2026-11-10T11:00:00Z",
        Some(&owner),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["samples"], all, "{body}");
    assert_eq!(body["node_id"], node.as_str());
    assert_eq!(body["from"], "2026-11-10T09:00:00.000000Z");
    assert_eq!(body["to"], "2026-11-10T11:00:00.000000Z");
    assert_eq!(body["sample_secs"], 60);
    assert_eq!(body["keep_secs"], 30 * 24 * 3600);

    // The admin sees it too; the default range is the last 24 hours up to now (10:03:05).
    let (status, body) = history(&server, &node, "", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["samples"], all, "{body}");
    assert_eq!(body["to"], "2026-11-10T10:03:05.000000Z");
    assert_eq!(body["from"], "2026-11-09T10:03:05.000000Z");

    // A range holds the samples whose minute lies in it.
    let (_, body) = history(
        &server,
        &node,
        "?from=2026-11-10T10:01:00Z&to=2026-11-10T10:02:00Z",
        Some(&owner),
    )
    .await;
    assert_eq!(body["samples"], json!([all[1]]), "{body}");

    // Anyone else learns nothing; bad ranges are refused.
    assert_eq!(history(&server, &node, "", Some(&outsider)).await.0, 404);
    assert_eq!(history(&server, &node, "", None).await.0, 401);
    assert_eq!(
        history(&server, "no-such-node", "", Some(&admin)).await.0,
        404
    );
    for query in [
        "?from=yesterday",
        "?from=2026-11-10T11:00:00Z&to=2026-11-10T10:00:00Z",
        "?from=2026-10-01T00:00:00Z&to=2026-11-10T10:00:00Z",
    ] {
        let (status, body) = history(&server, &node, query, Some(&owner)).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    }

    // To 2026-12-10T10:02:30: the samples of 10:00 and 10:01 are now over 30 days old and the
    // pass the clock's move runs deletes them; the one of 10:03 stays, read in a 30-day range
    // that would still hold the others.
    advance(&server, 30 * 24 * 3600 - 35).await;
    // Sessions expire on the app clock too: the owner signs in again.
    let (status, body) = login(
        &server,
        "operator@example.com",
        "correct horse battery staple",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let owner = body["access_token"].as_str().unwrap().to_string();
    let (status, body) = history(
        &server,
        &node,
        "?from=2026-11-10T10:00:00Z&to=2026-12-10T10:00:00Z",
        Some(&owner),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["samples"], json!([all[2]]), "{body}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_history_on_sqlite_is_sampled_per_minute_read_back_exactly_and_pruned() {
    heartbeat_history_is_sampled_per_minute_and_pruned(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_history_on_postgresql_is_sampled_per_minute_read_back_exactly_and_pruned() {
    let (url, name) = match TestDatabase::create_postgres_database().await {
        Ok(created) => created,
        Err(e) => {
            aiforge_commands::testing::skip_or_fail("PostgreSQL", &e.to_string());
            return;
        }
    };
    heartbeat_history_is_sampled_per_minute_and_pruned(Some(&url)).await;
    aiforge_commands::testing::drop_postgres_database(
        &aiforge_commands::testing::postgres_admin_url(),
        &name,
    )
    .await;
}
