#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on a broken setup"
)]
//! The S3 blob store against a real S3 server: s3s-fs (SigV4, multipart uploads) over a temp
//! directory, one server per test on a free port, killed when the test ends. The binary is
//! installed once per machine by `scripts/s3-server install` into `$AIFORGE_TOOLS_DIR/bin`;
//! without it these tests say SKIPPED (or fail under AIFORGE_REQUIRE_SERVICES=1).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aiforge_commands::blob::{BlobError, BlobStore, S3BlobStore, S3Settings, StoredBlob};
use aiforge_commands::testing::{skip_or_fail, tools_dir};
use common::{free_port, hash_all, read_all, wait_for_port, KillOnDrop, Pattern, TempDir};
use secrecy::SecretString;

const BUCKET: &str = "models";
const PREFIX: &str = "blobs";
const MIB: u64 = 1024 * 1024;

struct S3Server {
    _process: KillOnDrop,
    port: u16,
    root: TempDir,
    store: S3BlobStore,
}

impl S3Server {
    /// The object file s3s-fs keeps for a key.
    fn object_file(&self, key: &str) -> PathBuf {
        self.root.0.join(BUCKET).join(key)
    }

    /// Multipart uploads in progress or parts left over (s3s-fs keeps them at its root).
    fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(&self.root.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".upload"))
            .collect()
    }
}

async fn s3_server() -> Option<S3Server> {
    let binary = tools_dir().join("bin").join("s3s-fs");
    if !binary.is_file() {
        skip_or_fail(
            "S3 server",
            &format!(
                "{} is not installed (scripts/s3-server install)",
                binary.display()
            ),
        );
        return None;
    }
    let root = TempDir::new("s3");
    std::fs::create_dir_all(root.0.join(BUCKET)).unwrap();
    let port = free_port();
    let (access, secret) = ("aiforge-test", "aiforge-test-secret");
    let process = KillOnDrop(
        Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access, "--secret-key", secret])
            .arg(&root.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for_port(port, Duration::from_secs(20)).await,
        "s3s-fs did not listen on {port}"
    );
    let mut settings = S3Settings::new(BUCKET, access, SecretString::from(secret));
    settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
    settings.allow_http = true;
    settings.key_prefix = PREFIX.into();
    let store = S3BlobStore::new(&settings).unwrap();
    Some(S3Server {
        _process: process,
        port,
        root,
        store,
    })
}

fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        file_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn hello_world_is_stored_under_its_sha256_read_back_and_deleted() {
    let Some(s3) = s3_server().await else { return };
    let store = &s3.store;
    let blob = store.put(&mut &b"hello world"[..], 1024).await.unwrap();
    assert_eq!(blob.cid, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
    assert_eq!(
        blob.sha256,
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert_eq!(blob.size_bytes, 11);
    // Only the content-addressed object remains: the temporary one was deleted.
    assert_eq!(
        store.list_keys().await.unwrap(),
        [format!("{PREFIX}/sha256/{}", blob.sha256)]
    );
    assert!(store.exists(&blob).await.unwrap());
    assert_eq!(
        read_all(store.get(&blob).await.unwrap()).await.unwrap(),
        b"hello world"
    );
    // The same content again is a no-op that answers the same blob.
    assert_eq!(
        store.put(&mut &b"hello world"[..], 1024).await.unwrap(),
        blob
    );
    assert_eq!(store.list_keys().await.unwrap().len(), 1);

    store.delete(&blob).await.unwrap();
    assert!(!store.exists(&blob).await.unwrap());
    store.delete(&blob).await.unwrap();
    assert!(matches!(
        store.get(&blob).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(store.list_keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_multi_mib_upload_streams_in_parts_with_its_sha256_and_cid() {
    let Some(s3) = s3_server().await else { return };
    // Three 5 MiB parts (the last one short), from a reader that never holds the whole file.
    let total = 12 * MIB + 12345;
    let blob = s3
        .store
        .put(&mut Pattern::new(total), 100 * MIB)
        .await
        .unwrap();
    let (sha256, cid) = Pattern::digests(total);
    assert_eq!(blob.size_bytes, total);
    assert_eq!(blob.sha256, sha256);
    assert_eq!(blob.cid, cid);
    assert_eq!(
        hash_all(s3.store.get(&blob).await.unwrap()).await.unwrap(),
        (total, sha256)
    );
    let stored = s3.object_file(&s3.store.key_of(&blob.sha256));
    assert_eq!(std::fs::metadata(stored).unwrap().len(), total);
    assert!(s3.pending_uploads().is_empty());
}

#[tokio::test]
async fn an_upload_cut_off_after_a_part_was_sent_leaves_no_object_and_no_parts() {
    let Some(s3) = s3_server().await else { return };
    let result = s3
        .store
        .put(&mut Pattern::failing_after(7 * MIB), 100 * MIB)
        .await;
    assert!(matches!(result, Err(BlobError::Io(_))), "{result:?}");
    assert!(s3.store.list_keys().await.unwrap().is_empty());
    assert!(
        s3.pending_uploads().is_empty(),
        "{:?}",
        s3.pending_uploads()
    );
    assert_eq!(file_count(&s3.root.0.join(BUCKET)), 0);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_leaves_nothing() {
    let Some(s3) = s3_server().await else { return };
    let limit = 6 * MIB;
    let result = s3.store.put(&mut Pattern::new(limit + 1), limit).await;
    assert!(
        matches!(result, Err(BlobError::TooLarge { limit_bytes }) if limit_bytes == limit),
        "{result:?}"
    );
    assert!(s3.store.list_keys().await.unwrap().is_empty());
    assert!(
        s3.pending_uploads().is_empty(),
        "{:?}",
        s3.pending_uploads()
    );
    // Exactly the limit is fine.
    let blob = s3.store.put(&mut Pattern::new(limit), limit).await.unwrap();
    assert_eq!(blob.size_bytes, limit);
}

#[tokio::test]
async fn an_object_changed_behind_the_store_s_back_fails_verification_on_read() {
    let Some(s3) = s3_server().await else { return };
    let blob = s3
        .store
        .put(&mut &b"model weights"[..], 1024)
        .await
        .unwrap();
    std::fs::write(
        s3.object_file(&s3.store.key_of(&blob.sha256)),
        b"model weightz",
    )
    .unwrap();
    let read = read_all(s3.store.get(&blob).await.unwrap()).await;
    assert!(matches!(read, Err(BlobError::Corrupt { .. })), "{read:?}");

    let bad = StoredBlob {
        sha256: "not-hex".into(),
        ..blob.clone()
    };
    assert!(matches!(
        s3.store.get(&bad).await,
        Err(BlobError::BadDigest(_))
    ));
}

#[tokio::test]
async fn a_wrong_secret_is_a_backend_error_not_a_missing_blob() {
    let Some(s3) = s3_server().await else { return };
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let mut settings = S3Settings::new(BUCKET, "aiforge-test", SecretString::from("wrong"));
    settings.endpoint = Some(endpoint);
    settings.allow_http = true;
    let store = S3BlobStore::new(&settings).unwrap();
    let result = store.put(&mut &b"x"[..], 10).await;
    assert!(
        matches!(result, Err(BlobError::Backend { backend: "s3", .. })),
        "{result:?}"
    );
}
