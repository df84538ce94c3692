//! `aiforge-mock-openai`: a stand-in OpenAI-compatible server (fixed reply, usage, optional
//! delays) for gateway benchmarks and tests. Prints `listening on http://ADDR` once it accepts
//! connections.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use aiforge_inference::mock_openai::{self, MockConfig};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "aiforge-mock-openai",
    version,
    about = "A mock OpenAI-compatible chat completions server"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The reply every completion gives.
    #[arg(long, default_value = mock_openai::REPLY_DEFAULT)]
    reply: String,
    /// The model name answers carry when the request names none.
    #[arg(long, default_value = "mock")]
    model: String,
    /// Wait this long before answering.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Wait this long between streamed chunks.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Require this bearer key.
    #[arg(long, env = "AIFORGE_MOCK_API_KEY")]
    api_key: Option<String>,
    /// Answer every completion with this HTTP status.
    #[arg(long)]
    fail_status: Option<u16>,
    /// Never send the usage chunk.
    #[arg(long)]
    omit_usage: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = MockConfig {
        reply: args.reply,
        model: args.model,
        delay: Duration::from_millis(args.delay_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        api_key: args.api_key,
        fail_status: args.fail_status,
        omit_usage: args.omit_usage,
    };
    let listener = match tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("aiforge-mock-openai: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    }
    match mock_openai::serve(listener, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aiforge-mock-openai: {e}");
            ExitCode::FAILURE
        }
    }
}
