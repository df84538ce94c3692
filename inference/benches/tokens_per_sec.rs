//! Prompt-processing and generation speed of the engines, side by side in one run, on
//! SmolLM2-135M-Instruct (llama, Q4_1) and Gemma 3 270M (gemma3, Q4_K_M): candle for each weight
//! format and thread count, and llama.cpp through `LlamaCppEngine` when the bench is built with the
//! `llama` feature. Both go through the `Engine` port, so template rendering, tokenizing,
//! streaming and stop-sequence matching are in the figures.
//!
//! `cargo bench -p aiforge-inference --bench tokens_per_sec [--features llama]` (with
//! `eval "$(scripts/llama-deps env)"` first for the llama.cpp build); models are fetched into the
//! model cache first if needed. Knobs: `AIFORGE_BENCH_MODELS=smollm2,gemma3`,
//! `AIFORGE_BENCH_FORMATS=q8_0,q4_0,as_stored` (candle's weight formats),
//! `AIFORGE_BENCH_THREADS=1,2` (thread counts; `global` for candle's rayon pool),
//! `AIFORGE_BENCH_TOKENS` (generated tokens per run, default 128).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiforge_inference::fetch::{FetchOptions, NamedModel};
use aiforge_inference::{
    CandleEngine, CandleOptions, ChatMessage, ChatRequest, Delta, Engine, WeightFormat,
};
use tokio::sync::mpsc;

const RUNS: usize = 3;

struct Run {
    prompt_tokens: u32,
    completion_tokens: u32,
    /// From the call to the first delta: the whole prompt pass plus one sampled token.
    first_delta: Duration,
    /// From the first delta to the end: `completion_tokens - 1` single-token steps.
    rest: Duration,
}

async fn run(engine: &dyn Engine, request: ChatRequest) -> Result<Run, String> {
    let (tx, mut rx) = mpsc::channel::<Delta>(1024);
    let start = Instant::now();
    let generation = engine.generate(request, tx);
    let reading = async {
        let mut first = None;
        while rx.recv().await.is_some() {
            first.get_or_insert_with(Instant::now);
        }
        first
    };
    let (completion, first) = tokio::join!(generation, reading);
    let end = Instant::now();
    let completion = completion.map_err(|e| e.to_string())?;
    let first = first.ok_or("no delta")?;
    Ok(Run {
        prompt_tokens: completion.usage.prompt_tokens,
        completion_tokens: completion.usage.completion_tokens,
        first_delta: first - start,
        rest: end - first,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One measured configuration.
struct Row {
    model: &'static str,
    engine: String,
    threads: String,
    /// `Err` when the engine cannot load the model.
    result: Result<Speeds, String>,
}

struct Speeds {
    load: Duration,
    prompt_tokens: u32,
    prompt_per_sec: f64,
    generated: u32,
    generation_per_sec: f64,
}

async fn measure(engine: &dyn Engine, tokens: u32) -> Result<(u32, f64, u32, f64), String> {
    // A long prompt for the prompt pass, and an open question for generation.
    let long_prompt = "The history of the Roman Empire spans many centuries, from the founding \
        of the city to the fall of Constantinople. "
        .repeat(12);
    // Warm-up (allocations, threads).
    run(
        engine,
        ChatRequest {
            max_tokens: Some(4),
            temperature: Some(0.0),
            ..ChatRequest::new(vec![ChatMessage::user("Hi")])
        },
    )
    .await?;

    let mut prompt_rates = Vec::new();
    let mut prompt_len = 0;
    for _ in 0..RUNS {
        let r = run(
            engine,
            ChatRequest {
                max_tokens: Some(1),
                temperature: Some(0.0),
                ..ChatRequest::new(vec![ChatMessage::user(format!("{long_prompt}Summarize."))])
            },
        )
        .await?;
        prompt_len = r.prompt_tokens;
        prompt_rates.push(f64::from(r.prompt_tokens) / r.first_delta.as_secs_f64());
    }

    let mut gen_rates = Vec::new();
    let mut generated = 0;
    for _ in 0..RUNS {
        // Sampled, so the model does not end its turn early.
        let r = run(
            engine,
            ChatRequest {
                max_tokens: Some(tokens),
                temperature: Some(0.7),
                seed: Some(1),
                ..ChatRequest::new(vec![ChatMessage::user(
                    "Write a very long and detailed story about a dragon who learns to cook.",
                )])
            },
        )
        .await?;
        generated = r.completion_tokens;
        if r.completion_tokens > 1 {
            gen_rates.push(f64::from(r.completion_tokens - 1) / r.rest.as_secs_f64());
        }
    }
    Ok((
        prompt_len,
        median(prompt_rates),
        generated,
        median(gen_rates),
    ))
}

type Loader = Box<dyn FnOnce() -> Result<Arc<dyn Engine>, String> + Send>;

async fn measure_row(
    model: &'static str,
    engine: String,
    threads: String,
    load: Loader,
    tokens: u32,
) -> Row {
    let start = Instant::now();
    let loaded = tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    let load_time = start.elapsed();
    let result = match loaded {
        Ok(engine) => measure(engine.as_ref(), tokens).await.map(
            |(prompt_tokens, prompt_per_sec, generated, generation_per_sec)| Speeds {
                load: load_time,
                prompt_tokens,
                prompt_per_sec,
                generated,
                generation_per_sec,
            },
        ),
        Err(e) => Err(e),
    };
    let row = Row {
        model,
        engine,
        threads,
        result,
    };
    print_row(&row);
    row
}

fn print_row(row: &Row) {
    match &row.result {
        Ok(s) => println!(
            "{:>8} | {:>17} | threads {:>6} | load {:>5.2} s | prompt {:>7.1} tok/s ({} tokens) | generation {:>6.1} tok/s ({} tokens) | median of {RUNS}",
            row.model,
            row.engine,
            row.threads,
            s.load.as_secs_f64(),
            s.prompt_per_sec,
            s.prompt_tokens,
            s.generation_per_sec,
            s.generated,
        ),
        Err(e) => println!(
            "{:>8} | {:>17} | threads {:>6} | not supported: {e}",
            row.model, row.engine, row.threads
        ),
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let tokens: u32 = env("AIFORGE_BENCH_TOKENS", "128").parse()?;
    let formats = env("AIFORGE_BENCH_FORMATS", "q8_0,q4_0,as_stored");
    let thread_counts = env("AIFORGE_BENCH_THREADS", "1,2");
    let models = env("AIFORGE_BENCH_MODELS", "smollm2,gemma3");

    let mut rows = Vec::new();
    for model_name in models.split(',').map(str::trim) {
        let model = NamedModel::from_name(model_name)
            .ok_or_else(|| format!("unknown model {model_name}"))?;
        let path = model.fetch(&FetchOptions::default()).await?;
        for threads_name in thread_counts.split(',').map(str::trim) {
            let threads = match threads_name {
                "global" => None,
                n => Some(n.parse::<usize>()?),
            };
            for format in formats.split(',').map(str::trim) {
                let weights = match format {
                    "q8_0" => WeightFormat::Q8_0,
                    "q4_0" => WeightFormat::Q4_0,
                    "as_stored" => WeightFormat::AsStored,
                    other => return Err(format!("unknown format {other}").into()),
                };
                let p = path.clone();
                let load: Loader = Box::new(move || {
                    let options = CandleOptions {
                        weights,
                        threads,
                        ..CandleOptions::default()
                    };
                    CandleEngine::load(&p, options)
                        .map(|e| Arc::new(e) as Arc<dyn Engine>)
                        .map_err(|e| chain(&e))
                });
                rows.push(
                    measure_row(
                        model.name(),
                        format!("candle {format}"),
                        threads_name.into(),
                        load,
                        tokens,
                    )
                    .await,
                );
            }
            #[cfg(feature = "llama")]
            {
                let p = path.clone();
                let load: Loader = Box::new(move || {
                    let options = aiforge_inference::LlamaCppOptions {
                        threads,
                        ..aiforge_inference::LlamaCppOptions::default()
                    };
                    aiforge_inference::LlamaCppEngine::load(&p, options)
                        .map(|e| Arc::new(e) as Arc<dyn Engine>)
                        .map_err(|e| chain(&e))
                });
                rows.push(
                    measure_row(
                        model.name(),
                        "llama.cpp".into(),
                        threads_name.into(),
                        load,
                        tokens,
                    )
                    .await,
                );
            }
        }
    }

    // Side by side: candle's best configuration against llama.cpp's best, per model.
    println!();
    for model in NamedModel::ALL.map(NamedModel::name) {
        let best = |is_llama: bool, speed: fn(&Speeds) -> f64| {
            rows.iter()
                .filter(|r| r.model == model && (r.engine == "llama.cpp") == is_llama)
                .filter_map(|r| r.result.as_ref().ok().map(speed))
                .fold(None, |best: Option<f64>, s| {
                    Some(best.map_or(s, |b| b.max(s)))
                })
        };
        let (candle_gen, llama_gen) = (
            best(false, |s| s.generation_per_sec),
            best(true, |s| s.generation_per_sec),
        );
        let (candle_prompt, llama_prompt) = (
            best(false, |s| s.prompt_per_sec),
            best(true, |s| s.prompt_per_sec),
        );
        let show = |v: Option<f64>| v.map_or("not supported".to_string(), |v| format!("{v:.1}"));
        let ratio = |c: Option<f64>, l: Option<f64>| match (c, l) {
            (Some(c), Some(l)) => format!("{:.2}x", c / l),
            _ => "-".into(),
        };
        if rows.iter().any(|r| r.model == model) {
            println!(
                "{model:>8}: generation candle {} vs llama.cpp {} tok/s ({}) | prompt candle {} vs llama.cpp {} tok/s ({})",
                show(candle_gen),
                show(llama_gen),
                ratio(candle_gen, llama_gen),
                show(candle_prompt),
                show(llama_prompt),
                ratio(candle_prompt, llama_prompt),
            );
        }
    }
    Ok(())
}
