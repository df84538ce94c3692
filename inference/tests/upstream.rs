#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]
//! `UpstreamEngine` against the mock OpenAI-compatible server: in process for each case, and
//! once as the real `aiforge-mock-openai` binary.

mod common;

use std::time::Duration;

use aiforge_inference::mock_openai::{self, MockConfig};
use aiforge_inference::{
    ChatMessage, ChatRequest, Delta, Engine, EngineError, FinishReason, UpstreamConfig,
    UpstreamEngine,
};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

const REPLY: &str = "The quick brown fox jumps over the lazy dog.";

async fn start_mock(config: MockConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(mock_openai::serve(listener, config));
    format!("http://{addr}/v1")
}

fn mock(reply: &str) -> MockConfig {
    MockConfig {
        reply: reply.into(),
        ..MockConfig::default()
    }
}

fn request() -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("Be brief."),
        ChatMessage::user("Say the pangram please"),
    ])
}

#[tokio::test]
async fn deltas_stream_and_the_upstream_usage_passes_through() {
    let base = start_mock(mock(REPLY)).await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "mock-model")).unwrap();
    assert_eq!(engine.model_id(), "mock-model");
    let (deltas, completion) = common::collect(&engine, request()).await;
    assert_eq!(deltas.concat(), REPLY);
    assert_eq!(deltas.len(), 9, "one delta per word: {deltas:?}");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    // The mock counts words: 2 + 4 in the prompt, 9 in the reply.
    assert_eq!(completion.usage.prompt_tokens, 6);
    assert_eq!(completion.usage.completion_tokens, 9);
    assert!(completion.usage_exact);
}

#[tokio::test]
async fn max_tokens_is_forwarded_and_length_reported() {
    let base = start_mock(mock(REPLY)).await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let (deltas, completion) = common::collect(
        &engine,
        ChatRequest {
            max_tokens: Some(3),
            ..request()
        },
    )
    .await;
    assert_eq!(deltas.concat(), "The quick brown");
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.usage.completion_tokens, 3);
}

#[tokio::test]
async fn the_bearer_key_is_sent_and_a_wrong_one_is_an_upstream_status_error() {
    let base = start_mock(MockConfig {
        api_key: Some("sk-right".into()),
        ..mock(REPLY)
    })
    .await;
    let mut config = UpstreamConfig::new(base, "m");
    config.api_key = Some("sk-right".to_string().into());
    let (deltas, _) =
        common::collect(&UpstreamEngine::new(config.clone()).unwrap(), request()).await;
    assert_eq!(deltas.concat(), REPLY);

    config.api_key = Some("sk-wrong".to_string().into());
    let (tx, _rx) = mpsc::channel::<Delta>(8);
    let error = UpstreamEngine::new(config)
        .unwrap()
        .generate(request(), tx)
        .await
        .unwrap_err();
    match error {
        EngineError::UpstreamStatus { status, message } => {
            assert_eq!(status, 401);
            assert_eq!(message, "Incorrect API key provided.");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_upstream_failure_is_a_typed_error_with_its_status() {
    let base = start_mock(MockConfig {
        fail_status: Some(503),
        ..mock(REPLY)
    })
    .await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let (tx, _rx) = mpsc::channel::<Delta>(8);
    let error = engine.generate(request(), tx).await.unwrap_err();
    assert!(
        matches!(error, EngineError::UpstreamStatus { status: 503, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_upstream_slower_than_the_response_timeout_times_out() {
    let base = start_mock(MockConfig {
        delay: Duration::from_secs(5),
        ..mock(REPLY)
    })
    .await;
    let mut config = UpstreamConfig::new(base, "m");
    config.response_timeout = Duration::from_millis(200);
    let (tx, _rx) = mpsc::channel::<Delta>(8);
    let error = UpstreamEngine::new(config)
        .unwrap()
        .generate(request(), tx)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            EngineError::UpstreamTimeout {
                stage: "response",
                after_ms: 200
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_stream_that_stalls_longer_than_the_idle_timeout_times_out() {
    let base = start_mock(MockConfig {
        chunk_delay: Duration::from_secs(5),
        ..mock(REPLY)
    })
    .await;
    let mut config = UpstreamConfig::new(base, "m");
    config.idle_timeout = Duration::from_millis(200);
    let (tx, _rx) = mpsc::channel::<Delta>(8);
    let error = UpstreamEngine::new(config)
        .unwrap()
        .generate(request(), tx)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            EngineError::UpstreamTimeout {
                stage: "stream",
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_sends_no_usage_is_a_protocol_error() {
    let base = start_mock(MockConfig {
        omit_usage: true,
        ..mock(REPLY)
    })
    .await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let (tx, mut rx) = mpsc::channel::<Delta>(64);
    let error = engine.generate(request(), tx).await.unwrap_err();
    assert!(
        matches!(error, EngineError::UpstreamProtocol(_)),
        "{error:?}"
    );
    // The text itself did stream before the missing usage was noticed.
    let mut text = String::new();
    while let Ok(d) = rx.try_recv() {
        text.push_str(&d.text);
    }
    assert_eq!(text, REPLY);
}

#[tokio::test]
async fn dropping_the_receiver_closes_the_upstream_stream() {
    let base = start_mock(MockConfig {
        chunk_delay: Duration::from_millis(20),
        reply: "word ".repeat(500),
        ..MockConfig::default()
    })
    .await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let (tx, mut rx) = mpsc::channel::<Delta>(1);
    let generation = engine.generate(request(), tx);
    let reading = async move {
        for _ in 0..3 {
            rx.recv().await.unwrap();
        }
    };
    let (completion, ()) = tokio::join!(generation, reading);
    let completion = completion.unwrap();
    assert_eq!(completion.finish_reason, FinishReason::Cancelled);
    assert!(!completion.usage_exact);
    assert!((3..=4).contains(&completion.usage.completion_tokens));
}

/// A caller that takes the answer only whole (a non-streamed API call): one request with
/// `stream: false`, one JSON body, one delta, the upstream's own usage and finish reason.
#[tokio::test]
async fn a_whole_answer_is_read_in_one_piece_with_the_upstream_usage() {
    let base = start_mock(mock(REPLY)).await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let whole = |max_tokens| ChatRequest {
        whole: true,
        max_tokens,
        ..request()
    };
    let (deltas, completion) = common::collect(&engine, whole(None)).await;
    assert_eq!(deltas, [REPLY], "one delta: {deltas:?}");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert_eq!(
        (
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens
        ),
        (6, 9)
    );
    assert!(completion.usage_exact);

    let (deltas, completion) = common::collect(&engine, whole(Some(3))).await;
    assert_eq!(deltas, ["The quick brown"]);
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.usage.completion_tokens, 3);
}

/// All or nothing: a caller that leaves before a whole answer arrives was told nothing, and
/// nothing of the completion is counted; an upstream error is the same typed error as streamed.
#[tokio::test]
async fn a_caller_gone_before_a_whole_answer_counts_nothing() {
    let base = start_mock(MockConfig {
        delay: Duration::from_secs(30),
        ..mock(REPLY)
    })
    .await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let (tx, rx) = mpsc::channel::<Delta>(1);
    let generation = engine.generate(
        ChatRequest {
            whole: true,
            ..request()
        },
        tx,
    );
    let leaving = async move { drop(rx) };
    let (completion, ()) = tokio::join!(generation, leaving);
    let completion = completion.unwrap();
    assert_eq!(completion.finish_reason, FinishReason::Cancelled);
    assert_eq!(completion.usage.completion_tokens, 0);
    assert!(!completion.usage_exact);

    let base = start_mock(MockConfig {
        fail_status: Some(503),
        ..mock(REPLY)
    })
    .await;
    let engine = UpstreamEngine::new(UpstreamConfig::new(base, "m")).unwrap();
    let (tx, _rx) = mpsc::channel::<Delta>(8);
    let error = engine
        .generate(
            ChatRequest {
                whole: true,
                ..request()
            },
            tx,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, EngineError::UpstreamStatus { status: 503, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_mock_binary_serves_an_upstream_engine() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aiforge-mock-openai"))
        .args(["--port", "0", "--reply", "Hi from the binary"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line.strip_prefix("listening on ").unwrap().to_string();
    let engine = UpstreamEngine::new(UpstreamConfig::new(format!("{url}/v1"), "m")).unwrap();
    let (deltas, completion) = common::collect(&engine, request()).await;
    assert_eq!(deltas.concat(), "Hi from the binary");
    assert_eq!(completion.usage.completion_tokens, 4);
    child.kill().await.unwrap();
}
