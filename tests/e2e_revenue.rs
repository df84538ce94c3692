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
use support::chain::*;
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
    assert_eq!(
        status, 404,
        "an outsider does not see the group's unpublished model"
    );
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

async fn upload_and_publish(
    server: &Server,
    token: &str,
    bytes: &[u8],
    group: Option<&str>,
) -> String {
    let query = match group {
        Some(group) => format!("/api/models?name=m&group_id={group}"),
        None => "/api/models?name=m".to_string(),
    };
    let response = client()
        .post(server.url(&query))
        .bearer_auth(token)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let model: Value = response.json().await.unwrap();
    let model = model["model"]["id"].as_str().unwrap().to_string();
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

async fn service(server: &Server, token: &str, model: &str, price: &str) -> String {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/marketplace/create",
        json!({"model_id": model, "name": "Served", "description": "",
               "pricing": {"type": "monthly", "price_per_month": price}, "rate_limits": {},
               "included_in_plans": true}),
        Some(token),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["service"]["included_in_plans"], true, "{body}");
    body["service"]["id"].as_str().unwrap().to_string()
}

async fn advance(server: &Server, seconds: i64) {
    let (status, _) = send(
        server,
        Method::POST,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

async fn relogin(server: &Server, name: &str) -> String {
    let (status, body) = login(
        server,
        &format!("{name}@example.com"),
        "correct horse battery staple",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn replay(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(binary())
        .args(["--data-dir", dir.to_str().unwrap(), "audit", "replay"])
        .args(args)
        .env_remove("AIFORGE_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The seeds' examples, through the real binary, a real chain and real metered calls: $1,000
/// of platform subscriptions -> $300 platform, $700 pool -> models with 40/30/20/10% of the
/// tokens get $280/$210/$140/$70; the 10% model is a group's at 50/30/20 -> $35/$21/$14; its
/// $100 API subscription -> $10 platform, $90 split $45/$27/$18. Then: two concurrent closes
/// record one; the auditor's replay (live and from an export) matches; a tampered usage event
/// makes the replay differ and `audit verify` name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_month_is_closed_once_by_the_seeds_rules_and_replayed_exactly() {
    let Some(chain) = start_chain() else { return };
    let Some((admin_address, _)) = wallet_sign("ethereum", ADMIN_KEY, "probe") else {
        return;
    };
    let (mock, line) = start_sibling(
        "aiforge-mock-openai",
        &["--reply", "Paris is the capital"],
        "listening on ",
    );
    let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
    let card = format!("aiforge upstream model card\nbase_url: {mock_url}\nmodel: mock\n");
    let dir = temp_dir();
    let (rpc, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-10-20T12:00:00Z"),
            ("AIFORGE_LOCAL_NODE", &format!("upstream:{mock_url}#mock")),
            ("AIFORGE_ETH_RPC_URL", &rpc),
            ("AIFORGE_ETH_USDT_CONTRACT", &usdt),
            ("AIFORGE_ETH_PLATFORM_WALLET", &platform),
            ("AIFORGE_ADMIN_WALLETS", &admin_address),
            // Every close here is the admin's (the scheduled one: e2e_payouts).
            ("AIFORGE_CLOSE_AUTOMATIC", "false"),
        ],
    );

    // October: four creators' models (d is a group's), the group's split for November on.
    let names = ["crea", "creb", "crec", "mem1", "mem2", "mem3"];
    let mut users = std::collections::BTreeMap::new();
    for name in names {
        users.insert(name, user(&server, name).await);
    }
    let (status, group) = send(
        &server,
        Method::POST,
        "/api/groups",
        json!({"name": "Lab", "description": ""}),
        Some(&users["mem1"].1),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group = group["group"]["group_id"].as_str().unwrap().to_string();
    for member in ["mem2", "mem3"] {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/groups/{group}/members"),
            json!({"user_id": users[member].0, "role": "MEMBER"}),
            Some(&users["mem1"].1),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut models = Vec::new();
    for (name, group) in [
        ("crea", None),
        ("creb", None),
        ("crec", None),
        ("mem1", Some(group.as_str())),
    ] {
        models.push(upload_and_publish(&server, &users[name].1, card.as_bytes(), group).await);
    }
    let (status, body) = split(
        &server,
        &models[3],
        &users["mem1"].1,
        json!([{"user_id": users["mem1"].0, "percent": 50},
               {"user_id": users["mem2"].0, "percent": 30},
               {"user_id": users["mem3"].0, "percent": 20}]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut services = Vec::new();
    for (i, name) in ["crea", "creb", "crec", "mem1"].iter().enumerate() {
        let price = if i == 3 { "100" } else { "0" };
        services.push(service(&server, &users[name].1, &models[i], price).await);
    }

    // November: $1,000 of platform subscriptions, a $100 API subscription, metered calls.
    advance(&server, 13 * 86_400).await;
    let payer_key = chain.s("payer_key");
    let payer = wallet_session(&server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    for _ in 0..10 {
        // A renewal may be asked for once the reactor has activated the previous payment.
        let mut created = (0, Value::Null);
        for _ in 0..200 {
            created = send(
                &server,
                Method::POST,
                "/api/subscriptions/create",
                json!({"plan": "enterprise", "network": "ethereum"}),
                Some(&payer),
            )
            .await;
            if created.1["error"]["code"] != "payment_already_awaited" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let (status, body) = created;
        assert_eq!(status, 201, "{body}");
        let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
        pay(&chain, &server, &payer, "payer_key", &payment, 100_000_000).await;
    }
    let mut keys = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let (status, body) = send(
            &server,
            Method::POST,
            &format!("/api/marketplace/{service}/subscribe"),
            json!({"network": "ethereum"}),
            Some(&payer),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        if i == 3 {
            let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
            pay(&chain, &server, &payer, "payer_key", &payment, 100_000_000).await;
        }
        keys.push(body["api_key"].as_str().unwrap().to_string());
    }
    // The payer's platform key: every model included in plans, under the Enterprise plan.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let platform_key = body["key"].as_str().unwrap().to_string();
    let mut tokens = Vec::new();
    for (i, calls) in [4, 3, 2, 1].into_iter().enumerate() {
        for _ in 0..calls {
            let mut answered = None;
            // The plan activates when the reactor reads its payment.
            for _ in 0..100 {
                let response = client()
                    .post(server.url("/api/v1/chat/completions"))
                    .bearer_auth(&platform_key)
                    .json(&json!({"model": models[i], "max_tokens": 16,
                                  "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 200 {
                    answered = Some(response.json::<Value>().await.unwrap());
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let answered = answered.expect("the call is served");
            tokens.push(answered["usage"]["total_tokens"].as_u64().unwrap());
        }
    }
    // Calls under the API subscriptions are paid by them: they do not draw on the pool (rule
    // 2), however many tokens they use.
    for (i, key) in keys.iter().enumerate() {
        let mut served = false;
        for _ in 0..100 {
            let response = client()
                .post(server.url("/api/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": models[i], "max_tokens": 16 + 8 * i,
                              "messages": [{"role": "user", "content": "Tell me about Paris."}]}))
                .send()
                .await
                .unwrap();
            if response.status() == 200 {
                served = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(served, "the API subscription's call is served");
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0] && *t > 0),
        "{tokens:?}"
    );

    // December 1st: the admin closes November, twice at once: one close is recorded.
    advance(&server, 29 * 86_400).await;
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let close = || {
        send(
            &server,
            Method::POST,
            "/api/revenue/close/2026/11",
            json!({}),
            Some(&admin),
        )
    };
    let (first, second) = tokio::join!(close(), close());
    let mut outcomes = [first.clone(), second.clone()];
    outcomes.sort_by_key(|(status, _)| *status);
    assert_eq!(outcomes[0].0, 201, "{first:?} {second:?}");
    assert_eq!(
        (outcomes[1].0, outcomes[1].1["error"]["code"].as_str()),
        (409, Some("already_closed")),
        "{first:?} {second:?}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/10",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("out_of_order")),
        "{body}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/revenue/close/2026/12",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("month_not_over")),
        "{body}"
    );
    let (status, _) = get(&server, "/api/revenue/monthly/2026/13", Some(&admin)).await;
    assert_eq!(status, 422);

    let (status, body) = get(&server, "/api/revenue/distribution/2026/11", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let d = &body["distribution"];
    assert_eq!(d["pool_total"], "700.000000");
    assert_eq!(d["pool_distributed"], "700.000000");
    assert_eq!(d["group_api_total"], "90.000000");
    assert_eq!(
        d["usage_events"], 10,
        "the ten plan calls, not the API subscriptions'"
    );
    // Rule 3: rule 2's pool, and registered inference nodes paid (none here).
    assert_eq!(d["pool_rule_version"], 3);
    let pool_of = |model: &str| {
        d["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model_id"] == model)
            .map(|m| {
                (
                    m["pool_amount"].as_str().unwrap().to_string(),
                    m["usage_percent"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    for (model, (amount, percent)) in models.iter().zip([
        ("280.000000", "40"),
        ("210.000000", "30"),
        ("140.000000", "20"),
        ("70.000000", "10"),
    ]) {
        assert_eq!(pool_of(model), (amount.to_string(), percent.to_string()));
    }
    let paid = |user: &str, source: &str| {
        d["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["user_id"] == user && p["source"] == source)
            .map(|p| p["amount"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(paid(&users["crea"].0, "pool"), ["280.000000"]);
    assert_eq!(paid(&users["mem1"].0, "pool"), ["35.000000"]);
    assert_eq!(paid(&users["mem2"].0, "pool"), ["21.000000"]);
    assert_eq!(paid(&users["mem3"].0, "pool"), ["14.000000"]);
    assert_eq!(paid(&users["mem1"].0, "group_api"), ["45.000000"]);
    assert_eq!(paid(&users["mem2"].0, "group_api"), ["27.000000"]);
    assert_eq!(paid(&users["mem3"].0, "group_api"), ["18.000000"]);

    let (status, body) = get(&server, "/api/revenue/monthly/2026/11", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let line = |t: &str| {
        body["by_type"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            line("platform_subscription")["gross"].as_str(),
            line("platform_subscription")["platform_fee"].as_str()
        ),
        (Some("1000.000000"), Some("300.000000"))
    );
    assert_eq!(
        (
            line("api_subscription")["gross"].as_str(),
            line("api_subscription")["platform_fee"].as_str(),
            line("api_subscription")["net"].as_str()
        ),
        (Some("100.000000"), Some("10.000000"), Some("90.000000"))
    );
    assert_eq!(body["closed"], true);
    let (status, body) = get(&server, "/api/revenue/summary", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["platform_fees"], "310.000000");
    assert_eq!(
        body["balances"]["subscription_pools_undistributed"],
        "0.000000"
    );
    assert_eq!(body["balances"]["group_revenue_undistributed"], "0.000000");
    assert_eq!(body["balances"]["creator_payables"], "790.000000");
    let payer = wallet_session(&server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    let (status, _) = get(&server, "/api/revenue/summary", Some(&payer)).await;
    assert_eq!(status, 403);
    let (status, body) = get(
        &server,
        &format!("/api/revenue/model/{}/2026/11", models[0]),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["usage"]["requests"].as_i64(),
            body["distribution"]["pool_share"].as_str()
        ),
        // Its usage counts every call (4 under the plan, 1 under its API subscription); its
        // pool share only the plan's.
        (Some(5), Some("280.000000"))
    );

    // Creators and group members see their own earnings.
    let u1 = relogin(&server, "mem1").await;
    let (status, body) = get(
        &server,
        "/api/revenue/my-earnings?year=2026&month=11",
        Some(&u1),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], "80.000000");
    assert_eq!(body["payable_balance"], "80.000000");
    let (status, _) = get(&server, "/api/revenue/my-earnings?year=2026", Some(&u1)).await;
    assert_eq!(status, 422);
    let u2 = relogin(&server, "mem2").await;
    let (status, body) = get(&server, "/api/group-revenue/my-group-earnings", Some(&u2)).await;
    assert_eq!(
        (status, body["total"].as_str()),
        (200, Some("48.000000")),
        "{body}"
    );
    let path = format!(
        "/api/group-revenue/model/{}/distribution/2026/11",
        models[3]
    );
    let (status, body) = get(&server, &path, Some(&u2)).await;
    assert_eq!(
        (status, body["total"].as_str()),
        (200, Some("160.000000")),
        "{body}"
    );
    let distribute = format!("/api/group-revenue/model/{}/distribute/2026/11", models[3]);
    let (status, _) = send(&server, Method::POST, &distribute, json!({}), Some(&u2)).await;
    assert_eq!(status, 403);
    let (status, body) = send(&server, Method::POST, &distribute, json!({}), Some(&u1)).await;
    assert_eq!(
        (status, body["distributed"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let ua = relogin(&server, "crea").await;
    let (status, _) = get(&server, &path, Some(&ua)).await;
    assert_eq!(status, 404, "not a member of the group");

    // The auditor: replayed from the live store and from an export, the close matches.
    let (code, out) = replay(&dir, &["--month", "2026-11"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("MATCHES the recorded close of 2026-11"),
        "{out}"
    );
    let export = dir.join("events.jsonl");
    cli(
        &dir,
        &["events", "export", "--output", export.to_str().unwrap()],
    );
    let (code, out) = replay(
        &dir,
        &["--month", "2026-11", "--input", export.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("MATCHES"), "{out}");
    assert!(out.contains("payout"), "{out}");

    // One changed byte in a counted call: the replay differs and verify names the event.
    server.stop();
    drop(mock);
    let connection =
        sqlx::SqlitePool::connect(&format!("sqlite:{}", dir.join("aiforge.db").display()))
            .await
            .unwrap();
    let position: i64 = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE event_type = 'ApiCallMetered' \
         AND payload LIKE '%\"kind\":\"plan\"%' ORDER BY global_position LIMIT 1",
    )
    .fetch_one(&connection)
    .await
    .unwrap();
    sqlx::query("UPDATE events SET payload = replace(payload, '\"streamed\":false', '\"streamed\":true ') WHERE global_position = $1")
        .bind(position)
        .execute(&connection)
        .await
        .unwrap();
    connection.close().await;
    let (code, out) = replay(&dir, &["--month", "2026-11"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("DIFFERS"), "{out}");
    assert!(out.contains("input_digest"), "{out}");
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
