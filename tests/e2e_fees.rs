//! End-to-end through the real `aiforge` binary, a real chain and real metered calls, on SQLite
//! and on PostgreSQL: the fee schedule as data. A proposal's what-if over a closed month equals
//! a real close of the same month on a second data set where that rate was in force; an
//! adoption changes nothing before its effective date and applies from it (on another instance
//! too, on PostgreSQL); a back-dated proposal is refused and records nothing; the auditor's
//! replay of a month closed under version 2 matches.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

mod support;

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{json, Value};
use support::chain::*;
use support::*;

/// Where a test's data lives: a SQLite file in the server's data dir, or a fresh PostgreSQL
/// database shared by the instances started on it.
enum Store {
    Sqlite,
    Postgres { url: String, name: String },
}

impl Store {
    /// None when PostgreSQL is wanted and unreachable (and services are not required).
    async fn new(postgres: bool) -> Option<Store> {
        if !postgres {
            return Some(Store::Sqlite);
        }
        let probe = aiforge_commands::testing::TestDatabase::postgres().await?;
        probe.cleanup().await;
        let (url, name) = aiforge_commands::testing::TestDatabase::create_postgres_database()
            .await
            .unwrap();
        Some(Store::Postgres { url, name })
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Store::Sqlite => Vec::new(),
            Store::Postgres { url, .. } => vec![
                ("AIFORGE_DATABASE_URL", url.clone()),
                // Two instances on one database accept each other's sessions.
                (
                    "AIFORGE_JWT_SECRET",
                    "e2e-fees-shared-jwt-secret-0123456789abcdef".to_string(),
                ),
            ],
        }
    }

    /// `aiforge audit replay --month <month>` against this store: (exit code, stdout).
    fn replay(&self, dir: &std::path::Path, month: &str) -> (Option<i32>, String) {
        let mut command = std::process::Command::new(binary());
        command
            .args(["--data-dir", dir.to_str().unwrap(), "audit", "replay"])
            .args(["--month", month])
            .env_remove("AIFORGE_DATABASE_URL")
            .env("RUST_LOG", "warn");
        if let Store::Postgres { url, .. } = self {
            command.env("AIFORGE_DATABASE_URL", url);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    async fn drop(self) {
        if let Store::Postgres { name, .. } = self {
            aiforge_commands::testing::drop_postgres_database(
                &aiforge_commands::testing::postgres_admin_url(),
                &name,
            )
            .await;
        }
    }
}

/// What every server here shares: the chain, the mock upstream model, the admin's wallet.
struct World {
    chain: Chain,
    _mock: Killed,
    mock_url: String,
    admin_address: String,
}

impl World {
    fn new() -> Option<World> {
        let chain = start_chain()?;
        let (admin_address, _) = wallet_sign("ethereum", ADMIN_KEY, "probe")?;
        let (mock, line) = start_sibling(
            "aiforge-mock-openai",
            &["--reply", "Paris is the capital"],
            "listening on ",
        );
        let mock_url = format!("{}/v1", line.trim_start_matches("listening on "));
        Some(World {
            chain,
            _mock: mock,
            mock_url,
            admin_address,
        })
    }

    fn start(&self, dir: &std::path::Path, store: &Store, clock: &str) -> Server {
        let mut env = vec![
            ("AIFORGE_MANUAL_CLOCK_START", clock.to_string()),
            (
                "AIFORGE_LOCAL_NODE",
                format!("upstream:{}#mock", self.mock_url),
            ),
            ("AIFORGE_ETH_RPC_URL", self.chain.s("rpc_url")),
            ("AIFORGE_ETH_USDT_CONTRACT", self.chain.s("token")),
            ("AIFORGE_ETH_PLATFORM_WALLET", self.chain.s("platform")),
            ("AIFORGE_ADMIN_WALLETS", self.admin_address.clone()),
            // Every close here is the admin's.
            ("AIFORGE_CLOSE_AUTOMATIC", "false".to_string()),
        ];
        env.extend(store.env());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start(dir, &env)
    }

    fn card(&self) -> String {
        format!(
            "aiforge upstream model card\nbase_url: {}\nmodel: mock\n",
            self.mock_url
        )
    }
}

async fn advance(server: &Server, seconds: i64) {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn admin(server: &Server) -> String {
    wallet_session(server, ADMIN_KEY).await.unwrap()
}

async fn propose(server: &Server, admin: &str, body: Value) -> (u16, Value) {
    send(
        server,
        Method::POST,
        "/api/admin/fees/proposals",
        body,
        Some(admin),
    )
    .await
}

/// Proposes the platform subscription at 40% from `from` and adopts it; returns the proposal.
async fn adopt_forty(server: &Server, admin: &str, from: &str) -> Value {
    let (status, body) = propose(
        server,
        admin,
        json!({"effective_from": from, "platform_percent": {"platform_subscription": 40}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["proposal"]["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/admin/fees/proposals/{id}/adopt"),
        json!({}),
        Some(admin),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["proposal"]["state"], "adopted", "{body}");
    assert_eq!(body["proposal"]["version"], 2, "{body}");
    body["proposal"].clone()
}

/// A platform subscription (Enterprise, $100) paid on chain; returns the payment id. A renewal
/// may be asked for once the reactor has activated the previous payment.
async fn subscribe_enterprise(world: &World, server: &Server, payer: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, body) = loop {
        let created = send(
            server,
            Method::POST,
            "/api/subscriptions/create",
            json!({"plan": "enterprise", "network": "ethereum"}),
            Some(payer),
        )
        .await;
        if created.1["error"]["code"] != "payment_already_awaited" {
            break created;
        }
        assert!(std::time::Instant::now() < deadline, "{}", created.1);
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(status, 201, "{body}");
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    pay(
        &world.chain,
        server,
        payer,
        "payer_key",
        &payment,
        100_000_000,
    )
    .await;
    payment
}

/// One call of `model` under the payer's plan, once the plan is active (the reactor activates
/// it after its payment); returns its total tokens.
async fn plan_call(server: &Server, key: &str, model: &str) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let response = client()
            .post(server.url("/api/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "max_tokens": 16,
                          "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            return body["usage"]["total_tokens"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the call is served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One data set's month, by creator name: (user id, model id).
struct Month {
    creators: BTreeMap<&'static str, (String, String)>,
}

/// October 20th, noon: two creators publish a model each, served under plans; creb's service
/// costs $100 a month. November 2nd: three Enterprise subscriptions ($300), a subscription to
/// creb's service ($100, creb's direct revenue), and plan calls: 2 of crea's model, 1 of
/// creb's. December 1st, noon: the admin closes November. The same steps on every data set.
async fn build_and_close_november(world: &World, server: &Server, prefix: &str) -> Month {
    let mut creators = BTreeMap::new();
    let mut services = Vec::new();
    for (name, price) in [("crea", "0"), ("creb", "100")] {
        let (user_id, token) = signed_up(server, &format!("{prefix}{name}@example.com")).await;
        let response = client()
            .post(server.url("/api/models?name=m"))
            .bearer_auth(&token)
            .body(world.card().into_bytes())
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
            Some(&token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = send(
            server,
            Method::POST,
            "/api/marketplace/create",
            json!({"model_id": model, "name": "Served", "description": "",
                   "pricing": {"type": "monthly", "price_per_month": price}, "rate_limits": {},
                   "included_in_plans": true}),
            Some(&token),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        services.push(body["service"]["id"].as_str().unwrap().to_string());
        creators.insert(name, (user_id, model));
    }
    advance(server, 13 * 86_400).await;
    let payer_key = world.chain.s("payer_key");
    let payer = wallet_session(server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    for _ in 0..3 {
        subscribe_enterprise(world, server, &payer).await;
    }
    let (status, body) = send(
        server,
        Method::POST,
        &format!("/api/marketplace/{}/subscribe", services[1]),
        json!({"network": "ethereum"}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let payment = body["payment"]["payment_id"].as_str().unwrap().to_string();
    pay(
        &world.chain,
        server,
        &payer,
        "payer_key",
        &payment,
        100_000_000,
    )
    .await;
    let (status, body) = send(
        server,
        Method::POST,
        "/api/account/api-key",
        json!({}),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().unwrap().to_string();
    for (name, calls) in [("crea", 2), ("creb", 1)] {
        for _ in 0..calls {
            assert!(plan_call(server, &key, &creators[name].1).await > 0);
        }
    }
    advance(server, 29 * 86_400).await;
    let admin = admin(server).await;
    let (status, body) = send(
        server,
        Method::POST,
        "/api/revenue/close/2026/11",
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    Month { creators }
}

/// November's recorded close, once the read models hold it (they follow the log).
async fn november(server: &Server, admin: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = get(server, "/api/revenue/distribution/2026/11", Some(admin)).await;
        if status == 200 {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A distribution's figures by creator name: the pool, each model's pool amount and tokens,
/// each creator's pool payout.
fn by_name(d: &Value, month: &Month) -> Value {
    let mut models = serde_json::Map::new();
    let mut payouts = serde_json::Map::new();
    for (name, (user, model)) in &month.creators {
        let line = d["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model_id"] == model.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        models.insert(
            name.to_string(),
            json!([line["pool_amount"], line["tokens"], line["usage_percent"]]),
        );
        let paid: Vec<Value> = d["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["user_id"] == user.as_str())
            .map(|p| json!([p["source"], p["amount"]]))
            .collect();
        payouts.insert(name.to_string(), Value::Array(paid));
    }
    json!({
        "pool_total": d["pool_total"],
        "pool_distributed": d["pool_distributed"],
        "tokens_total": d["tokens_total"],
        "usage_events": d["usage_events"],
        "payments": d["payments"],
        "fee_schedule_versions": d["fee_schedule_versions"],
        "pool_rule_version": d["pool_rule_version"],
        "models": models,
        "payouts": payouts,
    })
}

/// Data set A: November closed at 30%; a proposal of 40% from December 15th; its what-if.
/// Data set B: 40% adopted in October from November 1st; the same November, closed. The
/// what-if's proposed side equals B's close, figure by figure; its actual side equals A's.
async fn a_what_if_equals_a_fresh_close_under_its_rate(postgres: bool) {
    let Some(world) = World::new() else { return };
    let (Some(store_a), Some(store_b)) = (Store::new(postgres).await, Store::new(postgres).await)
    else {
        return;
    };
    let (dir_a, dir_b) = (temp_dir(), temp_dir());
    let a = world.start(&dir_a, &store_a, "2026-10-20T12:00:00Z");
    let b = world.start(&dir_b, &store_b, "2026-10-20T12:00:00Z");
    let admin_b = admin(&b).await;
    adopt_forty(&b, &admin_b, "2026-11-01T00:00:00Z").await;

    let month_a = build_and_close_november(&world, &a, "a").await;
    let month_b = build_and_close_november(&world, &b, "b").await;

    let admin_a = admin(&a).await;
    let (status, body) = propose(
        &a,
        &admin_a,
        json!({"effective_from": "2026-12-15T00:00:00Z", "platform_percent": {"platform_subscription": 40}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let proposal = body["proposal"]["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body["proposal"]["state"], "proposed");
    let (status, what_if) = send(
        &a,
        Method::POST,
        "/api/admin/fees/what-if",
        json!({"proposal_id": proposal}),
        Some(&admin_a),
    )
    .await;
    assert_eq!(status, 200, "{what_if}");
    assert_eq!(what_if["month"], "2026-11");
    assert_eq!(what_if["actual_matches_recorded_close"], true, "{what_if}");

    let closed_a = november(&a, &admin_a).await;
    // Sessions last a day on the app clock.
    let admin_b = admin(&b).await;
    let closed_b = november(&b, &admin_b).await;
    // As paid: A's own close.
    assert_eq!(
        by_name(&what_if["actual"]["distribution"], &month_a),
        by_name(&closed_a["distribution"], &month_a)
    );
    // Under the proposal: what B's close computed with the rate really in force.
    let proposed = by_name(&what_if["proposed"]["distribution"], &month_a);
    assert_eq!(proposed, by_name(&closed_b["distribution"], &month_b));
    // The figures themselves: $300 of subscriptions, $180 to the pool at 40% (not $210), split
    // 2:1 by tokens; the month's platform fee $120 + $10 of creb's API subscription.
    assert_eq!(proposed["pool_total"], "180.000000", "{proposed}");
    assert_eq!(proposed["fee_schedule_versions"], json!([2]));
    assert_eq!(proposed["payouts"]["crea"], json!([["pool", "120.000000"]]));
    assert_eq!(proposed["payouts"]["creb"], json!([["pool", "60.000000"]]));
    assert_eq!(what_if["actual"]["pool_total"], "210.000000");
    assert_eq!(what_if["actual"]["platform_fee"], "100.000000");
    assert_eq!(what_if["proposed"]["platform_fee"], "130.000000");
    let creb = what_if["creators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user_id"] == month_a.creators["creb"].0.as_str())
        .unwrap();
    assert_eq!(
        (
            &creb["actual_pool"],
            &creb["proposed_pool"],
            &creb["actual_direct"],
            &creb["proposed_direct"],
            &creb["proposed_total"]
        ),
        (
            &json!("70.000000"),
            &json!("60.000000"),
            &json!("90.000000"),
            &json!("90.000000"),
            &json!("150.000000")
        ),
        "{creb}"
    );
    // The what-if records nothing; the proposal is still only proposed.
    let (_, book) = get(&a, "/api/admin/fees", Some(&admin_a)).await;
    assert_eq!(book["in_force"], 1, "{book}");
    assert_eq!(book["proposals"][0]["state"], "proposed", "{book}");

    // The auditor: B's November, closed under version 2, replays exactly.
    assert_eq!(
        closed_b["distribution"]["fee_schedule_versions"],
        json!([2])
    );
    a.stop();
    b.stop();
    let (code, out) = store_b.replay(&dir_b, "2026-11");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("MATCHES the recorded close of 2026-11"),
        "{out}"
    );
    let (code, out) = store_a.replay(&dir_a, "2026-11");
    assert_eq!(code, Some(0), "{out}");
    store_a.drop().await;
    store_b.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_with_a_40_percent_subscription_fee_replayed_over_a_closed_month_shows_what_a_fresh_close_under_that_rate_computes_on_sqlite(
) {
    a_what_if_equals_a_fresh_close_under_its_rate(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_with_a_40_percent_subscription_fee_replayed_over_a_closed_month_shows_what_a_fresh_close_under_that_rate_computes_on_postgres(
) {
    a_what_if_equals_a_fresh_close_under_its_rate(true).await;
}

async fn payment_split(server: &Server, token: &str, payment: &str) -> (String, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = get(server, &format!("/api/payments/{payment}"), Some(token)).await;
        assert_eq!(status, 200, "{body}");
        let row = if body["payment"].is_object() {
            &body["payment"]
        } else {
            &body
        };
        if let Some(fee) = row["platform_fee"].as_str() {
            return (
                fee.to_string(),
                row["fee_schedule_version"].as_i64().unwrap(),
            );
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Adopted on instance `a` on November 20th for December 1st: a payment confirmed on instance
/// `b` before then splits at 30% (version 1), one after it at 40% (version 2). On SQLite `a`
/// and `b` are one instance; on PostgreSQL two, each with its own manual clock.
async fn adopting_changes_nothing_before_its_effective_date(postgres: bool) {
    let Some(world) = World::new() else { return };
    let Some(store) = Store::new(postgres).await else {
        return;
    };
    let (dir_a, dir_b) = (temp_dir(), temp_dir());
    let a = world.start(&dir_a, &store, "2026-11-20T12:00:00Z");
    let b = postgres.then(|| world.start(&dir_b, &store, "2026-11-20T12:00:00Z"));
    let on_b = b.as_ref().unwrap_or(&a);
    let admin_a = admin(&a).await;

    // Refused, recording nothing: a back-dated, a present and an unreadable effective date,
    // a rate over 100%; no session and an email session.
    let email = register_and_sign_in(&a, "someone@example.com").await;
    let before = event_count(&a).await;
    for (from, status, code, field) in [
        (
            "2026-11-01T00:00:00Z",
            400,
            "effective_date_not_in_future",
            "effective_from",
        ),
        (
            "2026-11-20T12:00:00Z",
            400,
            "effective_date_not_in_future",
            "effective_from",
        ),
        ("next tuesday", 422, "invalid_field", "effective_from"),
    ] {
        let (got, body) = propose(
            &a,
            &admin_a,
            json!({"effective_from": from, "platform_percent": {"platform_subscription": 40}}),
        )
        .await;
        assert_eq!(
            (
                got,
                body["error"]["code"].as_str(),
                body["error"]["field"].as_str()
            ),
            (status, Some(code), Some(field)),
            "{from}: {body}"
        );
    }
    let (status, body) = propose(
        &a,
        &admin_a,
        json!({"effective_from": "2026-12-01T00:00:00Z", "platform_percent": {"job": 101}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("platform_percent")),
        "{body}"
    );
    let (status, _) = send(
        &a,
        Method::POST,
        "/api/admin/fees/proposals",
        json!({"effective_from": "2026-12-01T00:00:00Z"}),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = propose(
        &a,
        &email,
        json!({"effective_from": "2026-12-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(event_count(&a).await, before, "nothing was recorded");
    let (status, body) = send(
        &a,
        Method::POST,
        "/api/admin/fees/what-if",
        json!({"rates": {"platform_percent": {"platform_subscription": 40}}}),
        Some(&admin_a),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("month_not_closed")),
        "{body}"
    );

    // A proposal withdrawn cannot be adopted; the 40% one is adopted for December 1st.
    let (status, body) = propose(
        &a,
        &admin_a,
        json!({"effective_from": "2026-12-01T00:00:00Z", "platform_percent": {"platform_subscription": 35}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let withdrawn = body["proposal"]["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = send(
        &a,
        Method::POST,
        &format!("/api/admin/fees/proposals/{withdrawn}/withdraw"),
        json!({}),
        Some(&admin_a),
    )
    .await;
    assert_eq!(
        (status, &body["proposal"]["state"]),
        (200, &json!("withdrawn")),
        "{body}"
    );
    let (status, body) = send(
        &a,
        Method::POST,
        &format!("/api/admin/fees/proposals/{withdrawn}/adopt"),
        json!({}),
        Some(&admin_a),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("proposal_not_pending")),
        "{body}"
    );
    adopt_forty(&a, &admin_a, "2026-12-01T00:00:00Z").await;
    let (status, current) = get(on_b, "/api/fees/current", None).await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["current"]["version"], 1, "{current}");
    assert_eq!(current["next"]["version"], 2, "{current}");
    assert_eq!(
        current["next"]["platform_percent"]["platform_subscription"],
        40
    );
    assert_eq!(
        current["next"]["effective_from"],
        "2026-12-01T00:00:00.000000Z"
    );

    // Before December 1st, on b: 30%, version 1.
    let payer_key = world.chain.s("payer_key");
    let payer = wallet_session(on_b, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    let before = subscribe_enterprise(&world, on_b, &payer).await;
    assert_eq!(
        payment_split(on_b, &payer, &before).await,
        ("30.000000".to_string(), 1)
    );
    // December 1st on every instance's clock: 40%, version 2.
    let to_december = 10 * 86_400 + 12 * 3600;
    advance(&a, to_december).await;
    if let Some(b) = &b {
        advance(b, to_december).await;
    }
    let payer = wallet_session(on_b, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    let after = subscribe_enterprise(&world, on_b, &payer).await;
    assert_eq!(
        payment_split(on_b, &payer, &after).await,
        ("40.000000".to_string(), 2)
    );
    // The earlier payment keeps its split; the version list says which is in force.
    assert_eq!(
        payment_split(on_b, &payer, &before).await,
        ("30.000000".to_string(), 1)
    );
    let admin_b = admin(on_b).await;
    let (_, book) = get(on_b, "/api/admin/fees", Some(&admin_b)).await;
    assert_eq!(book["in_force"], 2, "{book}");
    let states: Vec<&str> = book["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["superseded", "in_force"]);
    a.stop();
    if let Some(b) = b {
        b.stop();
    }
    store.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adopting_a_proposal_changes_nothing_before_its_effective_date_and_a_back_dated_one_is_refused_on_sqlite(
) {
    adopting_changes_nothing_before_its_effective_date(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adopting_a_proposal_on_one_instance_applies_on_another_from_its_effective_date_on_postgres(
) {
    adopting_changes_nothing_before_its_effective_date(true).await;
}
