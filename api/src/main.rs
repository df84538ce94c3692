//! `aiforge`: see `aiforge --help`.

use std::process::ExitCode;

use aiforge_api::cli::{run, Cli};
use aiforge_api::settings::LogFormat;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: the gateway allocates and frees per call and per chunk
/// (request and answer bodies, JSON, SQL rows), and glibc's allocator was the largest share of
/// its CPU after the kernel and SQLite (README, "Gateway overhead").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,tower_http=warn,alloy_transport_http=info")
    });
    let json = std::env::var("AIFORGE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let format = if json {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aiforge: {e}");
            ExitCode::FAILURE
        }
    }
}
