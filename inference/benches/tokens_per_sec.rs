//! Prompt-processing and generation speed of the candle engine on SmolLM2-135M-Instruct, for each
//! weight format. Run with `cargo bench -p aiforge-inference --bench tokens_per_sec`; the model is
//! fetched into the model cache first if needed. `AIFORGE_BENCH_FORMATS=q8_0,as_stored` picks
//! formats; `AIFORGE_BENCH_TOKENS` the generated tokens per run (default 128);
//! `AIFORGE_BENCH_THREADS=1,2` the engine's thread counts (`global` for rayon's global pool).

use std::time::{Duration, Instant};

use aiforge_inference::fetch::{self, FetchOptions, ModelSource};
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

async fn run(engine: &CandleEngine, request: ChatRequest) -> Result<Run, String> {
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let tokens: u32 = std::env::var("AIFORGE_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let formats =
        std::env::var("AIFORGE_BENCH_FORMATS").unwrap_or_else(|_| "q8_0,q4_0,as_stored".into());
    let path = fetch::fetch_model(
        &ModelSource::smollm2_135m_instruct(),
        &FetchOptions::default(),
    )
    .await?;

    // A long prompt for the prompt pass, and an open question for generation.
    let long_prompt = "The history of the Roman Empire spans many centuries, from the founding \
        of the city to the fall of Constantinople. "
        .repeat(12);
    let thread_counts = std::env::var("AIFORGE_BENCH_THREADS").unwrap_or_else(|_| "1,2".into());
    let cases: Vec<(String, String)> = formats
        .split(',')
        .flat_map(|f| {
            thread_counts
                .split(',')
                .map(move |t| (f.trim().to_string(), t.trim().to_string()))
        })
        .collect();
    for (name, threads_name) in cases {
        let threads = match threads_name.as_str() {
            "global" => None,
            n => Some(n.parse::<usize>()?),
        };
        let weights = match name.as_str() {
            "q8_0" => WeightFormat::Q8_0,
            "q4_0" => WeightFormat::Q4_0,
            "as_stored" => WeightFormat::AsStored,
            other => return Err(format!("unknown format {other}").into()),
        };
        let load_start = Instant::now();
        let p = path.clone();
        let engine = tokio::task::spawn_blocking(move || {
            CandleEngine::load(
                &p,
                CandleOptions {
                    weights,
                    threads,
                    ..CandleOptions::default()
                },
            )
        })
        .await??;
        let load = load_start.elapsed();

        // Warm-up (allocations, rayon threads).
        run(
            &engine,
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
                &engine,
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
            // Sampled, so the model does not end its turn early; the stop never matches.
            let r = run(
                &engine,
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
        println!(
            "{name:>9}, threads {threads_name:>6}: load {:>5.2} s | prompt {:>6.1} tok/s ({prompt_len} tokens) | generation {:>6.1} tok/s ({generated} tokens) | median of {RUNS}",
            load.as_secs_f64(),
            median(prompt_rates),
            median(gen_rates),
        );
    }
    Ok(())
}
