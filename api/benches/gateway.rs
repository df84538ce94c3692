//! Gateway overhead: the same load sent straight to a mock OpenAI-compatible upstream and through
//! `aiforge` (key auth, rate limits and durable metering on, SQLite with synchronous=FULL), with
//! the gateway pinned to core 0 and the load generator and the mock to core 1. Reports, as
//! gateway minus direct in the same run: p50/p99 latency at 1 request in flight, requests/s at 10
//! and 50 in flight, time to first token when streaming, and the gateway's peak RSS. When LiteLLM
//! is installed (`scripts/litellm install`: `$AIFORGE_TOOLS_DIR/litellm/bin/litellm`), the same
//! for LiteLLM's proxy.
//!
//!   cargo build --release -p aiforge-inference --bin aiforge-mock-openai
//!   cargo bench -p aiforge-api --bench gateway
//!
//! Then the cost of exact shared limits: the same load through 1, 2 and 3 `aiforge` instances on
//! one PostgreSQL database (admission holds, quotas and rate windows in shared rows; calls spread
//! round-robin over the instances, all of them on core 0), beside the single SQLite instance's
//! in-memory limiter above. Skipped when PostgreSQL does not answer.
//!
//! Then where a call's time goes: the gateway's stage counters (`aiforge_stage_*` on its
//! `/metrics`) read around calls one at a time and 50 at a time, per call and per stage.
//!
//! Settings: BENCH_SECS (throughput window, default 5), BENCH_LATENCY_N (default 2000),
//! BENCH_INSTANCES (default `1,2,3`; empty skips the shared-limits part), BENCH_PROFILE (a
//! directory: also profile the SQLite gateway with `perf` at 1 and at 50 in flight).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops on the first broken assumption"
)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The proxy's master key (LiteLLM refuses to start without one).
const LITELLM_KEY: &str = "sk-aiforge-bench-0123456789abcdef";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts `program` pinned to `core`, returns it and the rest of its first stdout line with
/// `prefix`. Later lines go to `lines`.
fn start(
    core: u32,
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    prefix: &str,
) -> (Child, String, Arc<std::sync::Mutex<Vec<String>>>) {
    let mut command = Command::new("taskset");
    command
        .arg("-c")
        .arg(core.to_string())
        .arg(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap_or_else(|e| panic!("{program}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let (prefix, all) = (prefix.to_string(), lines.clone());
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.to_string());
            }
            all.lock().unwrap().push(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("{program} did not start"));
    (child, first, lines)
}

fn printed(lines: &std::sync::Mutex<Vec<String>>, prefix: &str) -> String {
    for _ in 0..200 {
        if let Some(found) = lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing printed with {prefix}");
}

struct Target {
    name: String,
    /// Calls go round-robin over these base URLs.
    urls: Vec<String>,
    key: String,
    model: String,
    next: std::sync::atomic::AtomicUsize,
}

impl Target {
    fn new(name: &str, urls: Vec<String>, key: &str, model: &str) -> Self {
        Self {
            name: name.to_string(),
            urls,
            key: key.to_string(),
            model: model.to_string(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn url(&self) -> &str {
        &self.urls[self.next.fetch_add(1, Ordering::Relaxed) % self.urls.len()]
    }

    fn body(&self, stream: bool) -> Value {
        let mut body = json!({"model": self.model, "max_tokens": 32,
                              "messages": [{"role": "user", "content": "Say something."}]});
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn one(client: &reqwest::Client, target: &Target, body: &Value) -> Duration {
    let started = Instant::now();
    let response = client
        .post(format!("{}/chat/completions", target.url()))
        .bearer_auth(&target.key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}: {}",
        target.name,
        response.status()
    );
    response.bytes().await.unwrap();
    started.elapsed()
}

/// Latencies of `n` requests one after another.
async fn latencies(client: &reqwest::Client, target: &Target, n: u64) -> Vec<Duration> {
    let body = target.body(false);
    for _ in 0..50 {
        one(client, target, &body).await;
    }
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(one(client, target, &body).await);
    }
    all.sort();
    all
}

/// Requests per second with `in_flight` concurrent workers for `secs`.
async fn throughput(
    client: &reqwest::Client,
    target: Arc<Target>,
    in_flight: u64,
    secs: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, target, done) = (client.clone(), target.clone(), done.clone());
            tokio::spawn(async move {
                let body = target.body(false);
                while Instant::now() < until {
                    one(&client, &target, &body).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Time to the first content chunk of streamed answers (median of `n`).
async fn first_token(client: &reqwest::Client, target: &Target, n: u64) -> Duration {
    use futures::StreamExt;
    let body = target.body(true);
    let mut all = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let response = client
            .post(format!("{}/chat/completions", target.url()))
            .bearer_auth(&target.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let mut seen = String::new();
        let mut first = None;
        while let Some(piece) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&piece.unwrap()));
            if first.is_none()
                && seen.contains("\"content\":\"")
                && seen.contains("\"content\":\"H")
            {
                first = Some(started.elapsed());
            }
        }
        all.push(first.unwrap_or_else(|| started.elapsed()));
    }
    all.sort();
    percentile(&all, 0.5)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

struct Measured {
    p50: Duration,
    p99: Duration,
    rps10: f64,
    rps50: f64,
    ttft: Duration,
}

async fn measure(client: &reqwest::Client, target: Target) -> Measured {
    let n = env_u64("BENCH_LATENCY_N", 2000);
    let secs = env_u64("BENCH_SECS", 5);
    let lat = latencies(client, &target, n).await;
    let ttft = first_token(client, &target, 200).await;
    let target = Arc::new(target);
    let rps10 = throughput(client, target.clone(), 10, secs).await;
    let rps50 = throughput(client, target.clone(), 50, secs).await;
    let m = Measured {
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        rps10,
        rps50,
        ttft,
    };
    println!(
        "{:<10} p50 {:>8.3} ms  p99 {:>8.3} ms  ttft {:>8.3} ms  {:>8.0} req/s @10  {:>8.0} req/s @50",
        target.name,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
        m.ttft.as_secs_f64() * 1e3,
        m.rps10,
        m.rps50
    );
    m
}

/// With `BENCH_PROFILE=<dir>`: `perf record` (sampling the gateway's process at 1999 Hz) while
/// it serves calls one at a time, then 50 at a time, for `BENCH_SECS` each; prints where its CPU
/// went (self time by binary and symbol, above 0.5%) and keeps the data in `<dir>` for
/// `perf report -i`.
async fn profile(client: &reqwest::Client, target: Arc<Target>, pid: u32, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let secs = env_u64("BENCH_SECS", 5);
    for in_flight in [1, 50] {
        let data = dir.join(format!("gateway-{in_flight}-in-flight.perf.data"));
        let mut perf = Command::new("perf")
            .args(["record", "-F", "1999", "-p", &pid.to_string(), "-o"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf (linux-perf) is installed");
        // perf is attached once it has written the data file's header.
        for _ in 0..100 {
            if std::fs::metadata(&data).is_ok_and(|m| m.len() > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rps = throughput(client, target.clone(), in_flight, secs).await;
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
        let report = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "dso,sym"])
            .args(["--percent-limit", "0.5", "-i"])
            .arg(&data)
            .output()
            .unwrap();
        println!(
            "profile at {in_flight} in flight ({rps:.0} req/s under perf; {}):",
            data.display()
        );
        for line in String::from_utf8_lossy(&report.stdout)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            println!("  {}", line.trim_end());
        }
    }
}

/// The gateway's own stage counters (`aiforge_stage_*` on `/metrics`), by stage.
async fn read_stages(client: &reqwest::Client, metrics: &str) -> BTreeMap<String, (f64, f64)> {
    let text = client
        .get(metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut stages: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((series, value)) = line.split_once(' ') else {
            continue;
        };
        let Some((name, stage)) = series.split_once("{stage=\"") else {
            continue;
        };
        let stage = stage.trim_end_matches("\"}").to_string();
        let value: f64 = value.parse().unwrap_or(0.0);
        match name {
            "aiforge_stage_runs_total" => stages.entry(stage).or_default().0 = value,
            "aiforge_stage_seconds_total" => stages.entry(stage).or_default().1 = value,
            _ => {}
        }
    }
    stages
}

/// Where a call's time goes, stage by stage: the gateway's stage counters read before and after
/// `BENCH_LATENCY_N` calls one at a time, then `BENCH_SECS` of calls 50 at a time. For each
/// stage: its runs per call and its mean time per run and per call (wall time, waits included).
async fn stages(client: &reqwest::Client, target: Arc<Target>, metrics: &str) {
    let order = [
        "auth",
        "parse",
        "resolve",
        "admit",
        "generate",
        "meter",
        "call",
        "meter_commit",
        "log_read_db",
        "projections",
        "key_index",
        "reactors",
    ];
    for in_flight in [1u64, 50] {
        let before = read_stages(client, metrics).await;
        if in_flight == 1 {
            latencies(client, &target, env_u64("BENCH_LATENCY_N", 2000)).await;
        } else {
            throughput(client, target.clone(), in_flight, env_u64("BENCH_SECS", 5)).await;
        }
        let after = read_stages(client, metrics).await;
        let delta = |stage: &str| {
            let (r0, s0) = before.get(stage).copied().unwrap_or_default();
            let (r1, s1) = after.get(stage).copied().unwrap_or_default();
            (r1 - r0, s1 - s0)
        };
        let calls = delta("call").0.max(1.0);
        println!("stages at {in_flight} in flight ({calls:.0} calls): runs per call, mean µs per run, µs per call");
        for stage in order {
            let (runs, seconds) = delta(stage);
            if runs == 0.0 {
                println!("  {stage:<13} none");
                continue;
            }
            println!(
                "  {stage:<13} {:>7.3} {:>9.1} {:>9.1}",
                runs / calls,
                seconds * 1e6 / runs,
                seconds * 1e6 / calls
            );
        }
    }
}

fn added(name: &str, direct: &Measured, via: &Measured) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "added by {name}: p50 {:+.3} ms, p99 {:+.3} ms, ttft {:+.3} ms; throughput {:.0} req/s @10 ({:.0}% of direct), {:.0} req/s @50 ({:.0}% of direct)",
        ms(via.p50) - ms(direct.p50),
        ms(via.p99) - ms(direct.p99),
        ms(via.ttft) - ms(direct.ttft),
        via.rps10,
        100.0 * via.rps10 / direct.rps10,
        via.rps50,
        100.0 * via.rps50 / direct.rps50,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let aiforge = env!("CARGO_BIN_EXE_aiforge");
    let mock_path = std::path::Path::new(aiforge).with_file_name("aiforge-mock-openai");
    assert!(
        mock_path.is_file(),
        "build the mock first: cargo build --release -p aiforge-inference --bin aiforge-mock-openai"
    );
    // Load generator on core 1 (this process), with the mock; the gateway alone on core 0.
    let me = std::process::id().to_string();
    let _ = Command::new("taskset").args(["-cp", "1", &me]).output();
    let (mut mock, mock_url, _) = start(1, mock_path.to_str().unwrap(), &[], &[], "listening on ");
    let mock_v1 = format!("{mock_url}/v1");
    let data = tempfile::tempdir().unwrap();
    let spec = format!("upstream:{mock_v1}#mock");
    let (mut gateway, gateway_url, lines) = start(
        0,
        aiforge,
        &[
            "--data-dir",
            data.path().to_str().unwrap(),
            "serve",
            "--bind",
            "127.0.0.1:0",
        ],
        &[
            ("AIFORGE_LOCAL_NODE", spec.as_str()),
            ("RUST_LOG", "error"),
            ("AIFORGE_METRICS_BIND", "127.0.0.1:0"),
        ],
        "aiforge listening on ",
    );
    let metrics = format!(
        "{}/metrics",
        printed(&lines, "aiforge metrics listening on ")
    );
    let key = printed(&lines, "demo key (shown once): ");
    let model = printed(&lines, "demo model: ");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        println!("gateway overhead (aiforge on core 0; load generator and mock on core 1)");
        let direct = measure(
            &client,
            Target::new("direct", vec![mock_v1.clone()], "unused", "mock"),
        )
        .await;
        let via = measure(
            &client,
            Target::new("aiforge", vec![format!("{gateway_url}/api/v1")], &key, &model),
        )
        .await;
        added("aiforge", &direct, &via);
        println!("aiforge peak RSS: {:.1} MiB", peak_rss_mib(gateway.id()));
        let target = Arc::new(Target::new("aiforge", vec![format!("{gateway_url}/api/v1")], &key, &model));
        stages(&client, target, &metrics).await;
        if let Ok(dir) = std::env::var("BENCH_PROFILE") {
            let target = Target::new("aiforge", vec![format!("{gateway_url}/api/v1")], &key, &model);
            profile(&client, Arc::new(target), gateway.id(), std::path::Path::new(&dir)).await;
        }

        let tools = std::env::var("AIFORGE_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/aiforge/tools".into());
        let litellm = std::path::Path::new(&tools).join("litellm/bin/litellm");
        if litellm.is_file() {
            let port = "4011";
            let config = data.path().join("litellm.yaml");
            std::fs::write(
                &config,
                format!(
                    "model_list:\n  - model_name: mock\n    litellm_params:\n      model: openai/mock\n      api_base: {mock_v1}\n      api_key: unused\n"
                ),
            )
            .unwrap();
            let mut proxy = Command::new("taskset")
                .args(["-c", "0", litellm.to_str().unwrap(), "--config", config.to_str().unwrap(), "--port", port])
                .env("LITELLM_MASTER_KEY", LITELLM_KEY)
                // The model cost map from the package (fetching it needs the internet).
                .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}");
            let mut up = false;
            for _ in 0..240 {
                if client.get(format!("{url}/health/liveliness")).send().await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if up {
                let lite = measure(
                    &client,
                    Target::new("litellm", vec![format!("{url}/v1")], LITELLM_KEY, "mock"),
                )
                .await;
                added("litellm", &direct, &lite);
                println!("litellm peak RSS: {:.1} MiB", peak_rss_mib(proxy.id()));
                println!(
                    "aiforge / litellm throughput: {:.1}x @10, {:.1}x @50",
                    via.rps10 / lite.rps10,
                    via.rps50 / lite.rps50
                );
            } else {
                println!("litellm did not start; not measured");
            }
            let _ = proxy.kill();
            let _ = proxy.wait();
        } else {
            println!("litellm not installed at {}; not measured", litellm.display());
        }
        shared_limits(&client, aiforge, &mock_v1, &direct, &via).await;
    });
    let _ = gateway.kill();
    let _ = mock.kill();
    let _ = gateway.wait();
    let _ = mock.wait();
}

/// The cost of exact shared limits: 1, 2 and 3 instances on one PostgreSQL database.
async fn shared_limits(
    client: &reqwest::Client,
    aiforge: &str,
    mock_v1: &str,
    direct: &Measured,
    memory: &Measured,
) {
    let counts: Vec<usize> = std::env::var("BENCH_INSTANCES")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    if counts.is_empty() {
        return;
    }
    let Ok((url, name)) = aiforge_commands::testing::TestDatabase::create_postgres_database().await
    else {
        println!("PostgreSQL does not answer; shared limits not measured");
        return;
    };
    println!("shared limits (PostgreSQL; instances on core 0, calls round-robin over them)");
    let spec = format!("upstream:{mock_v1}#mock");
    let max = counts.iter().copied().max().unwrap_or(1);
    let mut instances = Vec::new();
    let mut urls = Vec::new();
    let mut demo = None;
    let dirs: Vec<_> = (0..max).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, dir) in dirs.iter().enumerate() {
        // The first instance makes the demo (and prints its key); the others serve the same
        // upstream model and learn the key from the shared log.
        let demo_flag = if i == 0 { "on" } else { "off" };
        let (child, gateway_url, lines) = start(
            0,
            aiforge,
            &[
                "--data-dir",
                dir.path().to_str().unwrap(),
                "serve",
                "--bind",
                "127.0.0.1:0",
            ],
            &[
                ("AIFORGE_LOCAL_NODE", spec.as_str()),
                ("AIFORGE_DATABASE_URL", url.as_str()),
                ("AIFORGE_DEMO", demo_flag),
                ("RUST_LOG", "error"),
            ],
            "aiforge listening on ",
        );
        if i == 0 {
            demo = Some((
                printed(&lines, "demo key (shown once): "),
                printed(&lines, "demo model: "),
            ));
        }
        instances.push(child);
        urls.push(format!("{gateway_url}/api/v1"));
    }
    let (key, model) = demo.unwrap();
    // Each instance answers the key once its index has read it from the log.
    for base in &urls {
        let target = Target::new("probe", vec![base.clone()], &key, &model);
        let body = target.body(false);
        for _ in 0..600 {
            let status = client
                .post(format!("{base}/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for &n in &counts {
        let target = Target::new(&format!("pg x{n}"), urls[..n].to_vec(), &key, &model);
        let shared = measure(client, target).await;
        added(&format!("{n} instance(s), shared limits"), direct, &shared);
        println!(
            "shared vs in-memory (1 SQLite instance): p50 {:+.3} ms, p99 {:+.3} ms, {:.0}% of its req/s @50",
            (shared.p50.as_secs_f64() - memory.p50.as_secs_f64()) * 1e3,
            (shared.p99.as_secs_f64() - memory.p99.as_secs_f64()) * 1e3,
            100.0 * shared.rps50 / memory.rps50,
        );
    }
    for mut child in instances {
        let _ = child.kill();
        let _ = child.wait();
    }
    aiforge_commands::testing::drop_postgres_database(
        &aiforge_commands::testing::postgres_admin_url(),
        &name,
    )
    .await;
}
