//! End-to-end through the real `aiforge` binary: the compute network over HTTP. Nodes register
//! and heartbeat with their own token (another node's token is a 403), jobs are paid by real
//! confirmed job payments on a local Ethereum chain (ganache, `fixtures/chain/`), nodes poll for
//! their assignments and report, the node's payable grows by 95% of the price, a GPU job never
//! goes to a CPU node, a node never holds more than its max jobs, and a node that falls silent
//! past the heartbeat timeout (on the server's manual clock) loses its job to another node,
//! whose late report is then rejected.

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

/// Every job here reads this one input, uploaded by its creator first.
const INPUT: &[u8] = b"epoch 1: 0.5\nepoch 2: 0.25\n";

fn input_cid() -> String {
    aiforge_domain::cid::cid_v0(INPUT)
}

/// Uploads the jobs' input as `user`; the CID it is stored under is the content's.
async fn upload_input(server: &Server, user: &str) {
    let response = client()
        .post(server.url("/api/blobs"))
        .bearer_auth(user)
        .body(INPUT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["blob"]["cid"], input_cid().as_str(), "{body}");
}

fn resources(gpus: usize, max_jobs: u32) -> Value {
    let gpus: Vec<Value> = (0..gpus)
        .map(|_| json!({"model": "RTX 4090", "memory_mb": 24576}))
        .collect();
    json!({
        "cpu_cores": 4,
        "memory_mb": 8192,
        "disk_gb": 100,
        "gpus": gpus,
        "max_concurrent_jobs": max_jobs,
    })
}

/// Registers a node for `owner`; returns (node id, node token).
async fn register_node(
    server: &Server,
    owner: &str,
    name: &str,
    resources: Value,
) -> (String, String) {
    let (status, body) = send(
        server,
        Method::POST,
        "/api/nodes/register",
        json!({"name": name, "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": resources}),
        Some(owner),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["node"]["status"], "offline");
    (
        body["node"]["id"].as_str().unwrap().to_string(),
        body["node_token"].as_str().unwrap().to_string(),
    )
}

async fn heartbeat(server: &Server, node: &str, token: &str) -> (u16, Value) {
    send(
        server,
        Method::POST,
        &format!("/api/nodes/{node}/heartbeat"),
        json!({"cpu_percent": 12, "memory_used_mb": 2048, "disk_used_gb": 10, "running_jobs": 0}),
        Some(token),
    )
    .await
}

/// The node's next assignment: (job id, attempt), or None on 204.
async fn next_job(server: &Server, node: &str, token: &str) -> Option<(String, u64)> {
    let response = client()
        .get(server.url(&format!("/api/nodes/{node}/jobs/next")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        204 => None,
        200 => {
            let body: Value = response.json().await.unwrap();
            Some((
                body["job"]["job_id"].as_str().unwrap().to_string(),
                body["job"]["attempt"].as_u64().unwrap(),
            ))
        }
        other => panic!("next job: {other} {}", response.text().await.unwrap()),
    }
}

async fn report(
    server: &Server,
    node: &str,
    token: &str,
    job: &str,
    what: &str,
    body: Value,
) -> (u16, Value) {
    send(
        server,
        Method::POST,
        &format!("/api/nodes/{node}/jobs/{job}/{what}"),
        body,
        Some(token),
    )
    .await
}

fn spec(payment_id: &str, gpus: u32, price: &str) -> Value {
    json!({
        "payment_id": payment_id,
        "type": "training",
        "image": "localhost/aiforge-job:busybox",
        "command": ["sh", "-c", "echo hi > /work/outputs/out.txt"],
        "env": {"EPOCHS": "1"},
        "inputs": [input_cid()],
        "needs": {"cpu_cores": 1, "memory_mb": 256, "gpus": gpus, "gpu_memory_mb": 0},
        "max_runtime_secs": 600,
        "price": price,
    })
}

/// A job payment of `micros` for a fresh job id, paid on chain and confirmed: (job id, payment id).
async fn paid_job_payment(
    chain: &Chain,
    server: &Server,
    payer: &str,
    micros: u64,
) -> (String, String) {
    let job_id = uuid::Uuid::new_v4().to_string();
    let amount = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let payment_id = create_payment(server, payer, "job", &amount, &job_id).await;
    pay(chain, server, payer, "payer_key", &payment_id, micros).await;
    (job_id, payment_id)
}

async fn submit(server: &Server, payer: &str, body: Value) -> (u16, Value) {
    send(server, Method::POST, "/api/jobs", body, Some(payer)).await
}

async fn job(server: &Server, payer: &str, job_id: &str) -> Value {
    let (status, body) = get(server, &format!("/api/jobs/{job_id}"), Some(payer)).await;
    assert_eq!(status, 200, "{body}");
    body["job"].clone()
}

async fn balance(server: &Server, admin: &str, account: &str) -> i64 {
    let (status, body) = get(server, "/api/admin/ledger", Some(admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sum_micros"], "0", "the ledger balances: {body}");
    body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .map_or(0, |a| {
            let text = a["balance"].as_str().unwrap();
            let (whole, frac) = text.split_once('.').unwrap();
            let sign = if whole.starts_with('-') { -1 } else { 1 };
            whole.parse::<i64>().unwrap() * 1_000_000 + sign * frac.parse::<i64>().unwrap()
        })
}

/// A server whose payments are verified on the local chain, with the whitelisted admin and the
/// chain's payer signed in by wallet, and the jobs' input uploaded by the payer; `None` (after
/// SKIPPED) without the wallet fixtures.
async fn paying_server(
    chain: &Chain,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> Option<(Server, String, String)> {
    let (admin_address, _) = wallet_sign("ethereum", ADMIN_KEY, "probe")?;
    let (rpc, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let mut all = vec![
        ("AIFORGE_ETH_RPC_URL", rpc.as_str()),
        ("AIFORGE_ETH_USDT_CONTRACT", usdt.as_str()),
        ("AIFORGE_ETH_PLATFORM_WALLET", platform.as_str()),
        ("AIFORGE_ADMIN_WALLETS", admin_address.as_str()),
    ];
    all.extend_from_slice(env);
    let server = Server::start(dir, &all);
    let admin = wallet_session(&server, ADMIN_KEY).await.unwrap();
    let payer_key = chain.s("payer_key");
    let payer = wallet_session(&server, payer_key.trim_start_matches("0x"))
        .await
        .unwrap();
    upload_input(&server, &payer).await;
    Some((server, admin, payer))
}

async fn advance(server: &Server, seconds: i64) -> Value {
    let (status, body) = post(
        server,
        "/api/ops/clock/advance",
        json!({ "seconds": seconds }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_open_their_own_node_only_and_bad_requests_are_refused() {
    let dir = temp_dir();
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-21T10:00:00Z"),
            ("AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS", "90"),
            ("AIFORGE_JOB_BLOB_BYTES_MAX", "1024"),
        ],
    );
    let owner = register_and_sign_in(&server, "miner@example.com").await;
    let stranger = register_and_sign_in(&server, "stranger@example.com").await;
    let (one, one_token) = register_node(&server, &owner, "one", resources(0, 2)).await;
    let (two, two_token) = register_node(&server, &owner, "two", resources(1, 2)).await;

    // Heartbeats bring a node online; the live metrics show in the owner's view.
    let (status, body) = heartbeat(&server, &one, &one_token).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("online")),
        "{body}"
    );
    let (status, body) = get(&server, &format!("/api/nodes/{one}"), Some(&owner)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["status"], "online");
    assert_eq!(body["node"]["last_heartbeat"]["metrics"]["cpu_percent"], 12);
    let events: Vec<&str> = body["node"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["NodeRegistered", "NodeCameOnline"]);
    let before = event_count(&server).await;
    heartbeat(&server, &one, &one_token).await;
    assert_eq!(
        event_count(&server).await,
        before,
        "a heartbeat of an online node is no event"
    );

    // Another node's token is a 403 on every node endpoint; no token or a forged one a 401.
    let (status, body) = heartbeat(&server, &two, &one_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let response = client()
        .get(server.url(&format!("/api/nodes/{two}/jobs/next")))
        .bearer_auth(&one_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let fake_job = uuid::Uuid::new_v4();
    let (status, _) = report(
        &server,
        &two,
        &one_token,
        &fake_job.to_string(),
        "started",
        json!({"attempt": 1}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = heartbeat(&server, &two, "aiforge_node_forged").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("bad_node_token")),
        "{body}"
    );
    let (status, _) = send(
        &server,
        Method::POST,
        &format!("/api/nodes/{two}/heartbeat"),
        json!({}),
        None,
    )
    .await;
    assert_eq!(status, 401);
    // A user's session is not a node token.
    let (status, _) = heartbeat(&server, &two, &owner).await;
    assert_eq!(status, 401);
    let (status, body) = heartbeat(&server, &two, &two_token).await;
    assert_eq!(status, 200, "{body}");

    // Bad input: resources out of bounds, metrics out of range, a stranger's look at a node.
    let (status, body) = send(
        &server,
        Method::POST,
        "/api/nodes/register",
        json!({"name": "x", "owner_wallet": "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1", "resources": resources(0, 0)}),
        Some(&owner),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("max_concurrent_jobs")),
        "{body}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/nodes/{one}/heartbeat"),
        json!({"cpu_percent": 150}),
        Some(&one_token),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("cpu_percent")),
        "{body}"
    );
    let (status, _) = get(&server, &format!("/api/nodes/{one}"), Some(&stranger)).await;
    assert_eq!(status, 404);
    let (status, body) = get(&server, "/api/nodes/my-nodes", Some(&owner)).await;
    assert_eq!(status, 200);
    assert_eq!(body["nodes"].as_array().unwrap().len(), 2);
    let (status, body) = get(&server, "/api/nodes/my-nodes", Some(&stranger)).await;
    assert_eq!((status, body["nodes"].as_array().unwrap().len()), (200, 0));
    let (status, _) = get(&server, "/api/admin/nodes", Some(&owner)).await;
    assert_eq!(status, 403, "admin routes need an admin");

    // A job's inputs are stored blobs; then it needs a confirmed job payment of the creator's own.
    let mut unknown_input = spec(&uuid::Uuid::new_v4().to_string(), 0, "10");
    unknown_input["inputs"] = json!([aiforge_domain::cid::cid_v0(b"never uploaded")]);
    let (status, body) = submit(&server, &stranger, unknown_input).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("inputs")),
        "{body}"
    );
    upload_input(&server, &stranger).await;

    // Job files: an upload over the limit is a 413 and keeps nothing; no session, a 401; a blob
    // is its uploader's to read; a node reads only the inputs of the jobs it holds.
    let blob_upload = |bytes: Vec<u8>, token: Option<String>| {
        let mut request = client().post(server.url("/api/blobs")).body(bytes);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let too_big = vec![7u8; 2000];
    let (status, body) = blob_upload(too_big.clone(), Some(stranger.clone())).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    let too_big_cid = aiforge_domain::cid::cid_v0(&too_big);
    let (status, _) = get(
        &server,
        &format!("/api/blobs/{too_big_cid}"),
        Some(&stranger),
    )
    .await;
    assert_eq!(status, 404, "nothing of an oversized upload is kept");
    let (status, _) = blob_upload(INPUT.to_vec(), None).await;
    assert_eq!(status, 401);
    let own = client()
        .get(server.url(&format!("/api/blobs/{}", input_cid())))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.bytes().await.unwrap().as_ref(), INPUT);
    let (status, _) = get(
        &server,
        &format!("/api/blobs/{}", input_cid()),
        Some(&owner),
    )
    .await;
    assert_eq!(status, 404, "another user's blob is not listed to them");
    let node_read = |node: String, token: String| {
        let url = server.url(&format!("/api/nodes/{node}/blobs/{}", input_cid()));
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        node_read(one.clone(), one_token.clone()).await,
        404,
        "no job of this node reads it"
    );
    assert_eq!(node_read(one.clone(), two_token.clone()).await, 403);

    let (status, body) = submit(
        &server,
        &stranger,
        spec(&uuid::Uuid::new_v4().to_string(), 0, "10"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (404, Some("payment_id")),
        "{body}"
    );
    let mut bad = spec("p", 0, "10");
    bad["image"] = json!("Not An Image!");
    let (status, body) = submit(&server, &stranger, bad).await;
    assert_eq!(status, 404, "the payment is checked first: {body}");
    let (status, body) = get(&server, "/api/jobs/my-jobs", Some(&stranger)).await;
    assert_eq!((status, body["total"].as_i64()), (200, Some(0)), "{body}");

    // A node that shuts down goes offline at once; silence past the timeout takes the other.
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/nodes/{two}/offline"),
        json!({}),
        Some(&one_token),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/nodes/{two}/offline"),
        json!({}),
        Some(&two_token),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("offline")),
        "{body}"
    );
    let (_, body) = get(&server, &format!("/api/nodes/{two}"), Some(&owner)).await;
    assert_eq!(body["node"]["offline_reason"], "shutdown");
    let body = advance(&server, 91).await;
    assert_eq!(body["compute"]["nodes_offline"], 1, "{body}");
    let (_, body) = get(&server, &format!("/api/nodes/{one}"), Some(&owner)).await;
    assert_eq!(body["node"]["status"], "offline");
    assert_eq!(body["node"]["offline_reason"], "heartbeat_timeout");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_jobs_run_on_fitting_nodes_pay_the_node_95_percent_and_survive_a_lost_node() {
    let Some(chain) = start_chain() else { return };
    let dir = temp_dir();
    let Some((server, admin, payer)) = paying_server(
        &chain,
        &dir,
        &[
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-21T10:00:00Z"),
            ("AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS", "90"),
        ],
    )
    .await
    else {
        return;
    };
    let miner = register_and_sign_in(&server, "miner@example.com").await;
    let (cpu, cpu_token) = register_node(&server, &miner, "cpu", resources(0, 1)).await;
    let (gpu_a, gpu_a_token) = register_node(&server, &miner, "gpu-a", resources(1, 1)).await;
    let (gpu_b, gpu_b_token) = register_node(&server, &miner, "gpu-b", resources(1, 1)).await;
    assert_eq!(heartbeat(&server, &cpu, &cpu_token).await.0, 200);

    // Submission: an unconfirmed payment is a 402, a price other than the escrow a 422.
    let job_id = uuid::Uuid::new_v4().to_string();
    let payment = create_payment(&server, &payer, "job", "10.000000", &job_id).await;
    let (status, body) = submit(&server, &payer, spec(&payment, 0, "10")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (402, Some("payment_not_confirmed")),
        "{body}"
    );
    pay(&chain, &server, &payer, "payer_key", &payment, 10_000_000).await;
    let (status, body) = submit(&server, &payer, spec(&payment, 0, "9")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("escrow_mismatch")),
        "{body}"
    );
    let mut invalid = spec(&payment, 0, "10");
    invalid["env"] = json!({"AIFORGE_SECRET": "x"});
    let (status, body) = submit(&server, &payer, invalid).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("env")),
        "{body}"
    );
    let (status, body) = submit(&server, &payer, spec(&payment, 0, "10")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["job"]["id"], job_id.as_str());
    assert_eq!(body["job"]["status"], "pending");
    let (status, body) = submit(&server, &payer, spec(&payment, 0, "10")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_exists")),
        "one payment pays one job: {body}"
    );
    let escrow = format!("job_escrow:{job_id}");
    assert_eq!(balance(&server, &admin, &escrow).await, 10_000_000);

    // A second CPU job waits: the CPU node holds at most one job.
    let (waiting, waiting_payment) = paid_job_payment(&chain, &server, &payer, 4_000_000).await;
    let (status, body) = submit(&server, &payer, spec(&waiting_payment, 0, "4")).await;
    assert_eq!(status, 201, "{body}");
    // A GPU job while only the CPU node is online: it stays pending.
    let (gpu_job, gpu_payment) = paid_job_payment(&chain, &server, &payer, 20_000_000).await;
    let (status, body) = submit(&server, &payer, spec(&gpu_payment, 1, "20")).await;
    assert_eq!(status, 201, "{body}");

    let (got, attempt) = next_job(&server, &cpu, &cpu_token)
        .await
        .expect("the CPU node gets the oldest job");
    assert_eq!((got.as_str(), attempt), (job_id.as_str(), 1));
    assert_eq!(
        job(&server, &payer, &waiting).await["status"],
        "pending",
        "max one job on the CPU node"
    );
    assert_eq!(
        job(&server, &payer, &gpu_job).await["status"],
        "pending",
        "a GPU job never goes to a CPU node"
    );
    let (status, body) = report(
        &server,
        &cpu,
        &cpu_token,
        &job_id,
        "started",
        json!({"attempt": 1}),
    )
    .await;
    assert_eq!(
        (status, body["job"]["status"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    // Reports for another attempt are stale.
    let (status, body) = report(
        &server,
        &cpu,
        &cpu_token,
        &job_id,
        "finished",
        json!({"attempt": 2, "exit_code": 0}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("stale_report")),
        "{body}"
    );
    // An output that is not in the blob store as reported is refused; the uploaded one is taken.
    let made_up = json!([{"name": "out.txt", "sha256": "ab".repeat(32), "cid": input_cid(), "size_bytes": 3}]);
    let (status, body) = report(
        &server,
        &cpu,
        &cpu_token,
        &job_id,
        "finished",
        json!({"attempt": 1, "exit_code": 0, "outputs": made_up}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("outputs")),
        "{body}"
    );
    let uploaded = client()
        .put(server.url(&format!(
            "/api/nodes/{cpu}/jobs/{job_id}/outputs/out.txt?attempt=1"
        )))
        .bearer_auth(&cpu_token)
        .body("hi\n")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let uploaded: Value = uploaded.json().await.unwrap();
    let out_cid = aiforge_domain::cid::cid_v0(b"hi\n");
    assert_eq!(uploaded["output"]["cid"], out_cid.as_str(), "{uploaded}");
    let outputs = json!([uploaded["output"].clone()]);
    let (status, body) = report(
        &server,
        &cpu,
        &cpu_token,
        &job_id,
        "finished",
        json!({"attempt": 1, "exit_code": 0, "outputs": outputs}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["status"], "completed");
    assert_eq!(body["job"]["outputs"][0]["cid"], out_cid.as_str());
    // The creator downloads it, byte for byte.
    let download = client()
        .get(server.url(&format!("/api/jobs/{job_id}/outputs/out.txt")))
        .bearer_auth(&payer)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"hi\n");
    // The job has ended: its node can no longer add outputs to it.
    let late = client()
        .put(server.url(&format!(
            "/api/nodes/{cpu}/jobs/{job_id}/outputs/late.txt?attempt=1"
        )))
        .bearer_auth(&cpu_token)
        .body("late\n")
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    assert_eq!(body["job"]["settlement"]["node_net"], "9.500000");
    assert_eq!(body["job"]["settlement"]["platform_fee"], "0.500000");
    let node_payable = format!("node_payable:{cpu}");
    assert_eq!(
        balance(&server, &admin, &node_payable).await,
        9_500_000,
        "95% of 10 USDT"
    );
    assert_eq!(
        balance(&server, &admin, &escrow).await,
        0,
        "the escrow is emptied"
    );
    let history: Vec<String> = job(&server, &payer, &job_id).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(history, ["pending", "assigned", "running", "completed"]);

    // The slot is free again: the waiting job goes to the CPU node; its creator cancels it
    // before it starts and gets everything back.
    let (got, _) = next_job(&server, &cpu, &cpu_token)
        .await
        .expect("the waiting job");
    assert_eq!(got, waiting);
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/jobs/{waiting}/cancel"),
        json!({}),
        Some(&payer),
    )
    .await;
    assert_eq!(
        (status, body["job"]["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    assert_eq!(body["job"]["settlement"]["refund"], "4.000000");
    let (status, _) = send(
        &server,
        Method::POST,
        &format!("/api/jobs/{waiting}/cancel"),
        json!({}),
        Some(&miner),
    )
    .await;
    assert_eq!(status, 404, "only the creator sees and cancels a job");
    assert!(next_job(&server, &cpu, &cpu_token).await.is_none());

    // The GPU job goes to the one GPU node online, which starts it and then falls silent.
    assert_eq!(heartbeat(&server, &gpu_a, &gpu_a_token).await.0, 200);
    let (got, attempt) = next_job(&server, &gpu_a, &gpu_a_token)
        .await
        .expect("the GPU job");
    assert_eq!((got.as_str(), attempt), (gpu_job.as_str(), 1));
    let (status, _) = report(
        &server,
        &gpu_a,
        &gpu_a_token,
        &gpu_job,
        "started",
        json!({"attempt": 1}),
    )
    .await;
    assert_eq!(status, 200);
    advance(&server, 60).await;
    assert_eq!(heartbeat(&server, &cpu, &cpu_token).await.0, 200);
    assert_eq!(heartbeat(&server, &gpu_b, &gpu_b_token).await.0, 200);
    let body = advance(&server, 31).await;
    assert_eq!(body["compute"]["nodes_offline"], 1, "{body}");
    assert_eq!(body["compute"]["jobs_requeued"], 1, "{body}");
    assert_eq!(body["compute"]["jobs_assigned"], 1, "{body}");
    let now = job(&server, &payer, &gpu_job).await;
    assert_eq!(
        (
            now["status"].as_str(),
            now["node_id"].as_str(),
            now["attempt"].as_i64()
        ),
        (Some("assigned"), Some(gpu_b.as_str()), Some(2)),
        "{now}"
    );
    // The lost node's late completion is rejected and changes nothing.
    let (status, body) = report(
        &server,
        &gpu_a,
        &gpu_a_token,
        &gpu_job,
        "finished",
        json!({"attempt": 1, "exit_code": 0, "outputs": []}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("stale_report")),
        "{body}"
    );
    let (got, attempt) = next_job(&server, &gpu_b, &gpu_b_token)
        .await
        .expect("the requeued job");
    assert_eq!((got.as_str(), attempt), (gpu_job.as_str(), 2));
    report(
        &server,
        &gpu_b,
        &gpu_b_token,
        &gpu_job,
        "started",
        json!({"attempt": 2}),
    )
    .await;
    let (status, body) = report(
        &server,
        &gpu_b,
        &gpu_b_token,
        &gpu_job,
        "finished",
        json!({"attempt": 2, "exit_code": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["job"]["status"].as_str(),
            body["job"]["failure_reason"].as_str()
        ),
        (Some("failed"), Some("non_zero_exit"))
    );
    assert_eq!(
        balance(&server, &admin, &format!("node_payable:{gpu_b}")).await,
        19_000_000,
        "a non-zero exit is the job's own outcome: the node earns"
    );
    assert_eq!(
        balance(&server, &admin, &format!("node_payable:{gpu_a}")).await,
        0,
        "the lost node earns nothing"
    );

    // Admins see every node; deactivation takes a node offline.
    let (status, body) = get(&server, "/api/admin/nodes", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(body["by_status"]["offline"], 1, "{body}");
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/admin/nodes/{cpu}/deactivate"),
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["node"]["status"].as_str()),
        (200, Some("deactivated")),
        "{body}"
    );
    let (status, body) = heartbeat(&server, &cpu, &cpu_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("node_deactivated")),
        "{body}"
    );
    let (status, body) = send(
        &server,
        Method::POST,
        &format!("/api/admin/nodes/{cpu}/activate"),
        json!({}),
        Some(&admin),
    )
    .await;
    assert_eq!(
        (status, body["node"]["status"].as_str()),
        (200, Some("offline")),
        "{body}"
    );
    assert_eq!(heartbeat(&server, &cpu, &cpu_token).await.0, 200);

    // A timeout is believed only once the job could have run its max runtime; then the node
    // earns it all, as the job used everything it paid for.
    let (slow, slow_payment) = paid_job_payment(&chain, &server, &payer, 2_000_000).await;
    let mut slow_spec = spec(&slow_payment, 0, "2");
    slow_spec["max_runtime_secs"] = json!(120);
    let (status, body) = submit(&server, &payer, slow_spec).await;
    assert_eq!(status, 201, "{body}");
    let (got, _) = next_job(&server, &cpu, &cpu_token)
        .await
        .expect("the slow job");
    assert_eq!(got, slow);
    report(
        &server,
        &cpu,
        &cpu_token,
        &slow,
        "started",
        json!({"attempt": 1}),
    )
    .await;
    let timed_out = json!({"attempt": 1, "reason": "timed_out", "message": "killed at 120 s"});
    let (status, body) = report(
        &server,
        &cpu,
        &cpu_token,
        &slow,
        "failed",
        timed_out.clone(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("timeout_too_early")),
        "{body}"
    );
    advance(&server, 60).await;
    let (status, body) = report(&server, &cpu, &cpu_token, &slow, "failed", timed_out).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["status"], "timed_out");
    assert_eq!(body["job"]["settlement"]["node_net"], "1.900000");
    assert_eq!(heartbeat(&server, &cpu, &cpu_token).await.0, 200);

    // The admin stats count nodes and jobs by state and the job money in the ledger.
    let (status, body) = get(&server, "/api/admin/stats", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let compute = &body["compute"];
    assert_eq!(
        compute["nodes"],
        json!({"online": 1, "offline": 2, "deactivated": 0})
    );
    assert_eq!(
        compute["jobs"],
        json!({"pending": 0, "assigned": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 1, "timed_out": 1})
    );
    assert_eq!(compute["job_money"]["owed_to_nodes"], "30.400000");
    assert_eq!(compute["job_money"]["in_escrow"], "0.000000");
    // Job revenue: what the settled jobs paid, 5% to the platform, 95% to the nodes.
    assert_eq!(
        compute["job_revenue"],
        json!({"gross": "32.000000", "platform_fee": "1.600000", "to_nodes": "30.400000"})
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_reach_a_node_over_jetstream_through_its_durable_consumer() {
    use futures::StreamExt;
    let nats_url = "nats://127.0.0.1:4222";
    let Ok(client) = async_nats::connect(nats_url).await else {
        assert!(
            std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "NATS is required"
        );
        eprintln!("SKIPPED (NATS): cannot reach {nats_url}");
        return;
    };
    let Some(chain) = start_chain() else { return };
    let dir = temp_dir();
    let (rpc, usdt, platform) = (chain.s("rpc_url"), chain.s("token"), chain.s("platform"));
    let server = Server::start(
        &dir,
        &[
            ("AIFORGE_ETH_RPC_URL", &rpc),
            ("AIFORGE_ETH_USDT_CONTRACT", &usdt),
            ("AIFORGE_ETH_PLATFORM_WALLET", &platform),
            ("AIFORGE_NATS_URL", nats_url),
        ],
    );
    let payer_key = chain.s("payer_key");
    let Some(payer) = wallet_session(&server, payer_key.trim_start_matches("0x")).await else {
        return;
    };
    upload_input(&server, &payer).await;
    let miner = register_and_sign_in(&server, "miner@example.com").await;
    let (node, token) = register_node(&server, &miner, "nats-node", resources(0, 1)).await;
    // A heartbeat over NATS: a request on the node's subject, answered by the coordinator as
    // the HTTP one; a wrong token is refused there too.
    let nats_heartbeat = |token: String| {
        let client = client.clone();
        let node = node.clone();
        async move {
            let body = json!({"node_id": node, "token": token, "metrics": {"cpu_percent": 5}});
            let reply = client
                .request(
                    aiforge_domain::node::heartbeat_subject(&node),
                    body.to_string().into(),
                )
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let refused = nats_heartbeat("aiforge_node_wrong".into()).await;
    assert_eq!(refused["error"]["code"], "bad_node_token", "{refused}");
    let answer = nats_heartbeat(token.clone()).await;
    assert_eq!(answer["status"], "online", "{answer}");
    assert_eq!(answer["jobs"], json!([]), "{answer}");
    let (job_id, payment) = paid_job_payment(&chain, &server, &payer, 3_000_000).await;
    let (status, body) = submit(&server, &payer, spec(&payment, 0, "3")).await;
    assert_eq!(status, 201, "{body}");
    // The pass after the submission assigns it; wait for the view to say so.
    let mut assigned = false;
    for _ in 0..100 {
        if job(&server, &payer, &job_id).await["status"] == "assigned" {
            assigned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(assigned, "the job was assigned");
    let answer = nats_heartbeat(token.clone()).await;
    assert_eq!(answer["jobs"][0]["job_id"], job_id.as_str(), "{answer}");

    // The node's durable consumer, created only now (as by a node that was away), still
    // receives the assignment the stream kept for it.
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("AIFORGE_ASSIGNMENTS").await.unwrap();
    let consumer = stream
        .get_or_create_consumer(
            &format!("node-{node}"),
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(format!("node-{node}")),
                filter_subject: format!("aiforge.assignments.{node}"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(1)
        .expires(std::time::Duration::from_secs(10))
        .messages()
        .await
        .unwrap();
    let message = messages
        .next()
        .await
        .expect("an assignment within 10 s")
        .unwrap();
    let assignment: Value = serde_json::from_slice(&message.payload).unwrap();
    message.ack().await.unwrap();
    assert_eq!(assignment["job_id"], job_id.as_str());
    assert_eq!(assignment["node_id"], node.as_str());
    assert_eq!(assignment["attempt"], 1);
    assert_eq!(assignment["spec"]["image"], "localhost/aiforge-job:busybox");
    // The node reports through the API as any node does.
    let (status, body) = report(
        &server,
        &node,
        &token,
        &job_id,
        "started",
        json!({"attempt": 1}),
    )
    .await;
    assert_eq!(
        (status, body["job"]["status"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    stream
        .delete_consumer(&format!("node-{node}"))
        .await
        .unwrap();
    server.stop();
}

/// podman's Docker API socket (`scripts/podman`), or None after saying SKIPPED.
fn docker_host() -> Option<String> {
    let host = std::env::var("DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///tmp/aiforge-podman.sock".to_string());
    let socket = host.strip_prefix("unix://").unwrap_or(&host);
    if std::path::Path::new(socket).exists() {
        return Some(host);
    }
    assert!(
        std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "AIFORGE_REQUIRE_SERVICES=1 but the Docker API at {host} is missing"
    );
    eprintln!("SKIPPED (Docker API): {host} is missing; run `eval \"$(scripts/podman)\"`");
    None
}

/// Starts `node-agent run` for a registered node; `extra` adds flags.
fn start_agent(
    server: &Server,
    node: &str,
    token: &str,
    docker: &str,
    work: &std::path::Path,
    extra: &[&str],
) -> Killed {
    let coordinator = server.url("");
    let work = work.join(node);
    let mut args = vec![
        "run",
        "--coordinator",
        &coordinator,
        "--node-id",
        node,
        "--token",
        token,
        "--docker-host",
        docker,
        "--work-dir",
        work.to_str().unwrap(),
        "--heartbeat-secs",
        "1",
        "--poll-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    start_sibling("node-agent", &args, "node-agent").0
}

/// Waits (up to `secs`) until the job's status is one of `states`; returns the job.
async fn job_reaching(
    server: &Server,
    payer: &str,
    job_id: &str,
    states: &[&str],
    secs: u64,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..secs * 4 {
        last = job(server, payer, job_id).await;
        if states.iter().any(|s| last["status"] == *s) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("job {job_id} did not reach {states:?}: {last}");
}

/// The containers (any state) the engine holds for a job, by podman's CLI.
fn containers_of(job_id: &str) -> usize {
    let out = std::process::Command::new("podman")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.aiforge.job-id={job_id}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agents_run_jobs_in_containers_over_jetstream_and_a_killed_node_loses_its_job() {
    let nats_url = "nats://127.0.0.1:4222";
    if async_nats::connect(nats_url).await.is_err() {
        assert!(
            std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "NATS is required"
        );
        eprintln!("SKIPPED (NATS): cannot reach {nats_url}");
        return;
    }
    let Some(docker) = docker_host() else { return };
    let Some(chain) = start_chain() else { return };
    let dir = temp_dir();
    let Some((server, admin, payer)) = paying_server(
        &chain,
        &dir,
        &[
            ("AIFORGE_NATS_URL", nats_url),
            ("AIFORGE_MANUAL_CLOCK_START", "2026-11-21T10:00:00Z"),
            ("AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS", "90"),
        ],
    )
    .await
    else {
        return;
    };
    let miner = register_and_sign_in(&server, "miner@example.com").await;
    let (one, one_token) = register_node(&server, &miner, "one", resources(0, 1)).await;
    let (two, two_token) = register_node(&server, &miner, "two", resources(0, 1)).await;
    let work = dir.join("agents");
    let nats = ["--nats-url", nats_url];
    let mut agents = std::collections::HashMap::from([
        (
            one.clone(),
            start_agent(&server, &one, &one_token, &docker, &work, &nats),
        ),
        (
            two.clone(),
            start_agent(&server, &two, &two_token, &docker, &work, &nats),
        ),
    ]);

    // A job reads its input in a container and writes two outputs; they land in the blob store
    // with the hashes of what the container wrote, and the node earns 95% of the price.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let uploaded = client()
        .post(server.url("/api/blobs"))
        .bearer_auth(&payer)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);
    let uploaded: Value = uploaded.json().await.unwrap();
    let cid = uploaded["blob"]["cid"].as_str().unwrap().to_string();
    assert_eq!(cid, aiforge_domain::cid::cid_v0(&data));
    assert_eq!(uploaded["blob"]["sha256"], sha256_hex(&data).as_str());
    let (job_id, payment) = paid_job_payment(&chain, &server, &payer, 10_000_000).await;
    let mut body = spec(&payment, 0, "10");
    body["inputs"] = json!([cid]);
    body["command"] = json!([
        "sh",
        "-c",
        format!(
            "sha256sum /work/inputs/{cid} | cut -d' ' -f1 > /work/outputs/digest.txt && \
             cp /work/inputs/{cid} /work/outputs/copy.bin && echo done"
        )
    ]);
    let (status, submitted) = submit(&server, &payer, body).await;
    assert_eq!(status, 201, "{submitted}");
    let done = job_reaching(&server, &payer, &job_id, &["completed", "failed"], 120).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");
    let ran_on = done["node_id"].as_str().unwrap().to_string();
    let outputs = done["outputs"].as_array().unwrap();
    let named = |name: &str| outputs.iter().find(|o| o["name"] == name).unwrap().clone();
    let digest = format!("{}\n", sha256_hex(&data));
    assert_eq!(
        named("digest.txt")["sha256"],
        sha256_hex(digest.as_bytes()).as_str()
    );
    assert_eq!(named("copy.bin")["sha256"], sha256_hex(&data).as_str());
    assert_eq!(named("copy.bin")["cid"], cid.as_str());
    for (name, expected) in [("digest.txt", digest.as_bytes()), ("copy.bin", &data[..])] {
        let response = client()
            .get(server.url(&format!("/api/jobs/{job_id}/outputs/{name}")))
            .bearer_auth(&payer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.bytes().await.unwrap().as_ref(), expected, "{name}");
    }
    assert_eq!(
        balance(&server, &admin, &format!("node_payable:{ran_on}")).await,
        9_500_000
    );
    assert_eq!(
        balance(&server, &admin, "platform_fees:platform").await,
        500_000
    );
    // The node's owner sees what it earned.
    let (status, view) = get(&server, &format!("/api/nodes/{ran_on}"), Some(&miner)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        view["node"]["earnings"],
        json!({"payable": "9.500000", "jobs_paid": 1, "jobs": "9.500000", "inference": "0.000000"})
    );
    // Its agent's heartbeats (over NATS) carry the machine's use.
    let metrics = &view["node"]["last_heartbeat"]["metrics"];
    assert!(metrics["memory_used_mb"].as_u64().unwrap() > 0, "{view}");
    assert!(metrics["disk_used_gb"].is_u64(), "{view}");

    // A node killed mid-job: once its heartbeats have been missing for the timeout (on the
    // server's manual clock), the job goes back to pending and runs on the other node; the dead
    // node's late completion is refused.
    let (slow, slow_payment) = paid_job_payment(&chain, &server, &payer, 4_000_000).await;
    let mut body = spec(&slow_payment, 0, "4");
    body["command"] = json!([
        "sh",
        "-c",
        "sleep 3 && echo survived > /work/outputs/done.txt"
    ]);
    let (status, submitted) = submit(&server, &payer, body).await;
    assert_eq!(status, 201, "{submitted}");
    let running = job_reaching(&server, &payer, &slow, &["running"], 60).await;
    let victim = running["node_id"].as_str().unwrap().to_string();
    let (survivor, victim_token) = if victim == one {
        (two.clone(), one_token.clone())
    } else {
        (one.clone(), two_token.clone())
    };
    drop(agents.remove(&victim));
    advance(&server, 60).await;
    // The survivor's next heartbeats come after this point of the clock; the victim's never do.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let swept = advance(&server, 31).await;
    assert_eq!(swept["compute"]["nodes_offline"], 1, "{swept}");
    assert_eq!(swept["compute"]["jobs_requeued"], 1, "{swept}");
    let done = job_reaching(&server, &payer, &slow, &["completed", "failed"], 120).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (done["node_id"].as_str(), done["attempt"].as_u64()),
        (Some(survivor.as_str()), Some(2))
    );
    let (status, late) = report(
        &server,
        &victim,
        &victim_token,
        &slow,
        "finished",
        json!({"attempt": 1, "exit_code": 0}),
    )
    .await;
    // The job ended on the survivor, so the late report is refused as such, and changes nothing.
    assert_eq!(
        (status, late["error"]["code"].as_str()),
        (409, Some("already_ended")),
        "{late}"
    );
    assert_eq!(
        job(&server, &payer, &slow).await["node_id"],
        survivor.as_str()
    );
    assert_eq!(
        balance(&server, &admin, &format!("node_payable:{survivor}")).await
            + balance(&server, &admin, &format!("node_payable:{victim}")).await,
        9_500_000 + 3_800_000,
        "the survivor earned the requeued job, the victim nothing for it"
    );
    // The killed agent left its container; started again, it removes it before taking jobs.
    assert_eq!(
        containers_of(&slow),
        1,
        "the killed node's container is still there"
    );
    let victim_token = if victim == one {
        &one_token
    } else {
        &two_token
    };
    agents.insert(
        victim.clone(),
        start_agent(&server, &victim, victim_token, &docker, &work, &nats),
    );
    let mut left = 1;
    for _ in 0..80 {
        left = containers_of(&slow);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(left, 0, "the restarted node removed what it left");
    drop(agents);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_node_agent_reports_what_went_wrong_and_each_ending_settles_by_its_rule() {
    let Some(docker) = docker_host() else { return };
    let Some(chain) = start_chain() else { return };
    let dir = temp_dir();
    let Some((server, admin, payer)) = paying_server(&chain, &dir, &[]).await else {
        return;
    };
    let miner = register_and_sign_in(&server, "miner@example.com").await;
    let (node, token) = register_node(&server, &miner, "poller", resources(0, 4)).await;
    let work = dir.join("agents");
    // No NATS: this agent polls. Outputs over 1 MiB per job are refused.
    let mut agent = start_agent(
        &server,
        &node,
        &token,
        &docker,
        &work,
        &["--output-bytes-max", "1048576"],
    );

    let mut cases = Vec::new();
    for (command, image, max_runtime) in [
        ("true", "localhost/aiforge-job:no-such-image", 60),
        (
            "echo failing >&2; exit 3",
            "localhost/aiforge-job:busybox",
            60,
        ),
        ("sleep 60", "localhost/aiforge-job:busybox", 2),
        (
            "head -c 2000000 /dev/zero > /work/outputs/big.bin",
            "localhost/aiforge-job:busybox",
            60,
        ),
    ] {
        let (job_id, payment) = paid_job_payment(&chain, &server, &payer, 1_000_000).await;
        let mut body = spec(&payment, 0, "1");
        body["image"] = json!(image);
        body["command"] = json!(["sh", "-c", command]);
        body["max_runtime_secs"] = json!(max_runtime);
        let (status, submitted) = submit(&server, &payer, body).await;
        assert_eq!(status, 201, "{submitted}");
        cases.push(job_id);
    }
    let ended: Vec<Value> = {
        let mut ended = Vec::new();
        for job_id in &cases {
            ended.push(
                job_reaching(
                    &server,
                    &payer,
                    job_id,
                    &["completed", "failed", "timed_out"],
                    120,
                )
                .await,
            );
        }
        ended
    };
    let summary: Vec<Value> = ended
        .iter()
        .map(|j| {
            json!([
                j["status"],
                j["failure_reason"],
                j["exit_code"],
                j["settlement"]["node_net"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            // Not the job's fault: refunded in full.
            json!(["failed", "image_pull_failed", null, "0.000000"]),
            // The job's own outcomes: the node is paid.
            json!(["failed", "non_zero_exit", 3, "0.950000"]),
            json!(["timed_out", null, null, "0.950000"]),
            json!(["failed", "output_too_large", null, "0.950000"]),
        ],
        "{ended:#?}"
    );
    assert!(
        ended[0]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-image"),
        "{}",
        ended[0]
    );
    // What the job printed streamed back to the coordinator while it ran.
    let (status, logs) = get(
        &server,
        &format!("/api/jobs/{}/logs", cases[1]),
        Some(&payer),
    )
    .await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(
        logs["lines"],
        json!([{"stream": "stderr", "text": "failing", "attempt": 1}]),
        "{logs}"
    );
    assert_eq!(
        balance(&server, &admin, &format!("node_payable:{node}")).await,
        3 * 950_000
    );
    // Nothing of the oversized output was kept as a result.
    assert_eq!(ended[3]["outputs"], json!([]));

    // Interrupted, the agent kills its running job, removes its container and tells the
    // platform it is going offline: the job goes back to the queue at once.
    let (long, payment) = paid_job_payment(&chain, &server, &payer, 1_000_000).await;
    let mut body = spec(&payment, 0, "1");
    body["command"] = json!(["sh", "-c", "sleep 120"]);
    let (status, submitted) = submit(&server, &payer, body).await;
    assert_eq!(status, 201, "{submitted}");
    job_reaching(&server, &payer, &long, &["running"], 60).await;
    let pid = agent.0.id().to_string();
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = agent.0.wait().unwrap();
        (agent, status)
    })
    .await
    .unwrap()
    .1;
    assert!(exit.success(), "the agent exits cleanly: {exit}");
    let requeued = job(&server, &payer, &long).await;
    assert_eq!(requeued["status"], "pending", "{requeued}");
    assert_eq!(containers_of(&long), 0, "its container is gone");
    let (status, node_view) = get(&server, &format!("/api/nodes/{node}"), Some(&miner)).await;
    assert_eq!(status, 200, "{node_view}");
    assert_eq!(node_view["node"]["status"], "offline", "{node_view}");
    server.stop();
}
