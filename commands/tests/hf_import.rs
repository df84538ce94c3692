#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on a broken setup"
)]
//! The Hugging Face importer against a local hub: an axum server that answers
//! `/{owner}/{name}/resolve/{revision}/{file}` as the real hub does (an LFS file is a 302 to a
//! storage host, here a second server on another port, with `X-Linked-Etag`/`X-Linked-Size`; a
//! renamed repo a relative 307; a missing file 404 with `X-Error-Code`), into a local blob store.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use aiforge_commands::blob::{
    BlobStore, HfImporter, HfSettings, HfSource, ImportError, LocalBlobStore,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{pattern_byte, Pattern, TempDir};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_test_token";
const KIB: usize = 1024;

/// What each server was asked: (path, Authorization header).
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

#[derive(Clone)]
struct Hub {
    cdn: String,
    files: Arc<HashMap<String, Vec<u8>>>,
    log: Log,
}

fn record(log: &Log, path: String, headers: &HeaderMap) {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    log.lock().unwrap().push((path, auth));
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn resolve(
    State(hub): State<Hub>,
    Path((owner, name, revision, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    record(
        &hub.log,
        format!("/{owner}/{name}/resolve/{revision}/{file}"),
        &headers,
    );
    let repo = format!("{owner}/{name}");
    match (repo.as_str(), file.as_str()) {
        ("acme/renamed", _) => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("/acme/tiny/resolve/{revision}/{file}"))],
        )
            .into_response(),
        ("acme/private", _) => (
            StatusCode::UNAUTHORIZED,
            [("x-error-code", "RepositoryNotFound")],
        )
            .into_response(),
        ("acme/gated", _) => {
            (StatusCode::FORBIDDEN, [("x-error-code", "GatedRepo")]).into_response()
        }
        ("acme/broken", _) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        // A small file kept in git: served directly.
        ("acme/tiny", "config.json") => (StatusCode::OK, "{\"hidden_size\":64}").into_response(),
        // A large file served without a length or a linked size: only the store's limit
        // stops it.
        ("acme/tiny", "unsized.bin") => {
            let chunks = (0..32).map(|i| {
                Ok::<_, Infallible>(
                    (i * 64 * KIB..(i + 1) * 64 * KIB)
                        .map(|j| pattern_byte(j as u64))
                        .collect::<Vec<u8>>(),
                )
            });
            Body::from_stream(futures::stream::iter(chunks)).into_response()
        }
        ("acme/tiny" | "acme/liar", _) if hub.files.contains_key(&file) => {
            let bytes = &hub.files[&file];
            let sha = if repo == "acme/liar" {
                sha256_hex(b"something else")
            } else {
                sha256_hex(bytes)
            };
            (
                StatusCode::FOUND,
                [
                    ("location", format!("{}/blobs/{file}", hub.cdn)),
                    ("x-linked-etag", format!("\"{sha}\"")),
                    ("x-linked-size", bytes.len().to_string()),
                ],
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, [("x-error-code", "EntryNotFound")]).into_response(),
    }
}

async fn blob(State(hub): State<Hub>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    record(&hub.log, format!("/blobs/{file}"), &headers);
    match hub.files.get(&file) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

struct TestHub {
    hub_log: Log,
    cdn_log: Log,
    files: Arc<HashMap<String, Vec<u8>>>,
    importer: HfImporter,
    store: LocalBlobStore,
    _dir: TempDir,
}

impl TestHub {
    fn requests(&self) -> usize {
        self.hub_log.lock().unwrap().len() + self.cdn_log.lock().unwrap().len()
    }
}

async fn test_hub() -> TestHub {
    let model: Vec<u8> = (0..700 * KIB as u64).map(pattern_byte).collect();
    let files = Arc::new(HashMap::from([("model.safetensors".to_string(), model)]));
    let cdn_log = Log::default();
    let cdn = serve(
        Router::new()
            .route("/blobs/{file}", get(blob))
            .with_state(Hub {
                cdn: String::new(),
                files: files.clone(),
                log: cdn_log.clone(),
            }),
    )
    .await;
    let hub_log = Log::default();
    let hub = serve(
        Router::new()
            .route("/{owner}/{name}/resolve/{revision}/{*file}", get(resolve))
            .with_state(Hub {
                cdn,
                files: files.clone(),
                log: hub_log.clone(),
            }),
    )
    .await;
    let importer = HfImporter::new(HfSettings {
        base_url: hub,
        token: Some(SecretString::from(TOKEN)),
        ..HfSettings::default()
    })
    .unwrap();
    let dir = TempDir::new("hf-import");
    let store = LocalBlobStore::open(&dir.0).await.unwrap();
    TestHub {
        hub_log,
        cdn_log,
        files,
        importer,
        store,
        _dir: dir,
    }
}

#[tokio::test]
async fn an_lfs_file_is_imported_through_the_storage_redirect_with_its_hashes() {
    let hub = test_hub().await;
    let source = HfSource::new("acme/tiny", "model.safetensors");
    let blob = hub
        .importer
        .import(&hub.store, &source, 10 * 1024 * 1024)
        .await
        .unwrap();
    let (sha256, cid) = Pattern::digests(700 * KIB as u64);
    assert_eq!(blob.size_bytes, 700 * KIB as u64);
    assert_eq!(blob.sha256, sha256);
    assert_eq!(blob.cid, cid);
    assert_eq!(blob.sha256, sha256_hex(&hub.files["model.safetensors"]));
    assert!(hub.store.exists(&blob).await.unwrap());
    // The token went to the hub and not to the storage host.
    assert_eq!(
        *hub.hub_log.lock().unwrap(),
        [(
            "/acme/tiny/resolve/main/model.safetensors".to_string(),
            Some(format!("Bearer {TOKEN}"))
        )]
    );
    assert_eq!(
        *hub.cdn_log.lock().unwrap(),
        [("/blobs/model.safetensors".to_string(), None)]
    );
}

#[tokio::test]
async fn a_renamed_repo_and_a_small_git_file_are_followed_and_imported() {
    let hub = test_hub().await;
    let renamed = HfSource::new("acme/renamed", "model.safetensors");
    let blob = hub
        .importer
        .import(&hub.store, &renamed, 10 * 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(blob.sha256, sha256_hex(&hub.files["model.safetensors"]));

    let mut config = HfSource::new("acme/tiny", "config.json");
    config.revision = Some("v1.0".into());
    let blob = hub
        .importer
        .import(&hub.store, &config, 1024)
        .await
        .unwrap();
    assert_eq!(blob.sha256, sha256_hex(b"{\"hidden_size\":64}"));
    assert!(hub
        .hub_log
        .lock()
        .unwrap()
        .iter()
        .any(|(path, _)| path == "/acme/tiny/resolve/v1.0/config.json"));
}

#[tokio::test]
async fn a_missing_file_or_repo_is_not_found_and_a_gated_one_is_denied() {
    let hub = test_hub().await;
    let missing = hub
        .importer
        .import(&hub.store, &HfSource::new("acme/tiny", "nope.bin"), 1024)
        .await;
    assert!(
        matches!(&missing, Err(ImportError::NotFound { repo, filename, revision })
            if repo == "acme/tiny" && filename == "nope.bin" && revision == "main"),
        "{missing:?}"
    );
    let private = hub
        .importer
        .import(&hub.store, &HfSource::new("acme/private", "a.bin"), 1024)
        .await;
    assert!(
        matches!(private, Err(ImportError::NotFound { .. })),
        "{private:?}"
    );
    let gated = hub
        .importer
        .import(&hub.store, &HfSource::new("acme/gated", "a.bin"), 1024)
        .await;
    assert!(
        matches!(gated, Err(ImportError::Denied { status: 403, .. })),
        "{gated:?}"
    );
    let broken = hub
        .importer
        .import(&hub.store, &HfSource::new("acme/broken", "a.bin"), 1024)
        .await;
    assert!(
        matches!(broken, Err(ImportError::Http { status: 500 })),
        "{broken:?}"
    );
}

#[tokio::test]
async fn a_file_over_the_limit_is_refused_by_its_size_or_while_streaming() {
    let hub = test_hub().await;
    // The hub's linked size says so before any byte is fetched from storage.
    let sized = hub
        .importer
        .import(
            &hub.store,
            &HfSource::new("acme/tiny", "model.safetensors"),
            100 * KIB as u64,
        )
        .await;
    assert!(
        matches!(sized, Err(ImportError::TooLarge { limit_bytes }) if limit_bytes == 100 * KIB as u64),
        "{sized:?}"
    );
    assert!(hub.cdn_log.lock().unwrap().is_empty());
    // No size announced: the store's limit cuts the stream.
    let unsized_ = hub
        .importer
        .import(
            &hub.store,
            &HfSource::new("acme/tiny", "unsized.bin"),
            1000 * KIB as u64,
        )
        .await;
    assert!(
        matches!(unsized_, Err(ImportError::TooLarge { .. })),
        "{unsized_:?}"
    );
    let unsized_fits = hub
        .importer
        .import(
            &hub.store,
            &HfSource::new("acme/tiny", "unsized.bin"),
            2048 * KIB as u64,
        )
        .await
        .unwrap();
    assert_eq!(unsized_fits.size_bytes, 2048 * KIB as u64);
}

#[tokio::test]
async fn bytes_that_differ_from_the_hub_s_sha256_are_a_mismatch() {
    let hub = test_hub().await;
    let result = hub
        .importer
        .import(
            &hub.store,
            &HfSource::new("acme/liar", "model.safetensors"),
            10 * 1024 * 1024,
        )
        .await;
    assert!(
        matches!(&result, Err(ImportError::HashMismatch { expected, actual })
            if *expected == sha256_hex(b"something else")
                && *actual == sha256_hex(&hub.files["model.safetensors"])),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_bad_repo_or_file_name_is_refused_before_any_request() {
    let hub = test_hub().await;
    for (repo, file) in [
        ("acme", "model.bin"),
        ("acme/tiny/extra", "model.bin"),
        ("../etc", "passwd"),
        ("acme/tiny?x=1", "model.bin"),
        ("acme/tiny", "../../etc/passwd"),
        ("acme/tiny", "/etc/passwd"),
        ("acme/tiny", ""),
    ] {
        let result = hub
            .importer
            .import(&hub.store, &HfSource::new(repo, file), 1024)
            .await;
        assert!(
            matches!(
                result,
                Err(ImportError::BadRepo(_) | ImportError::BadFilename(_))
            ),
            "{repo} {file}: {result:?}"
        );
    }
    assert_eq!(hub.requests(), 0);
}
