#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on a broken setup"
)]
//! The IPFS blob store against a real IPFS node speaking Kubo's HTTP RPC: js-ipfs from
//! `fixtures/ipfs` (npm, pinned by its package-lock.json), one offline node per test in a temp
//! repo with its API on a free port, killed when the test ends. Without `node` or the npm
//! install these tests say SKIPPED (or fail under AIFORGE_REQUIRE_SERVICES=1).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use aiforge_commands::blob::{BlobError, BlobStore, IpfsBlobStore, IpfsSettings, StoredBlob};
use aiforge_commands::testing::skip_or_fail;
use common::{free_port, hash_all, read_all, wait_for_port, KillOnDrop, Pattern, TempDir};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

struct IpfsNode {
    _process: KillOnDrop,
    _repo: TempDir,
    api_url: String,
    store: IpfsBlobStore,
}

impl IpfsNode {
    /// The CIDs pinned recursively, asked of the node directly.
    async fn pins(&self) -> BTreeSet<String> {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v0/pin/ls?type=recursive", self.api_url))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["Keys"]
            .as_object()
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ipfs")
}

fn jsipfs(repo: &TempDir) -> Command {
    let mut command = Command::new(fixtures().join("node_modules/.bin/jsipfs"));
    command
        .env("IPFS_PATH", &repo.0)
        .env(
            "NODE_OPTIONS",
            format!("--import {}", fixtures().join("polyfill.mjs").display()),
        )
        .stdin(Stdio::null());
    command
}

fn set(config: &mut serde_json::Value, path: &[&str], value: serde_json::Value) {
    let mut node = config;
    for key in &path[..path.len() - 1] {
        node = node
            .as_object_mut()
            .unwrap()
            .entry(*key)
            .or_insert_with(|| serde_json::json!({}));
    }
    node[path[path.len() - 1]] = value;
}

async fn ipfs_node() -> Option<IpfsNode> {
    let binary = fixtures().join("node_modules/.bin/jsipfs");
    if !binary.exists() {
        skip_or_fail(
            "IPFS node",
            &format!(
                "{} is missing (npm ci --prefix fixtures/ipfs)",
                binary.display()
            ),
        );
        return None;
    }
    let repo = TempDir::new("ipfs");
    let init = jsipfs(&repo)
        .args(["init", "--profile", "test", "--empty-repo"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "jsipfs init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Offline and alone: no bootstrap peers, no swarm, every listener on a free local port so
    // tests running side by side do not collide.
    let config_file = repo.0.join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    let port = free_port();
    set(&mut config, &["Bootstrap"], serde_json::json!([]));
    set(&mut config, &["Addresses", "Swarm"], serde_json::json!([]));
    set(
        &mut config,
        &["Addresses", "Delegates"],
        serde_json::json!([]),
    );
    set(
        &mut config,
        &["Addresses", "API"],
        format!("/ip4/127.0.0.1/tcp/{port}").into(),
    );
    for listener in ["Gateway", "RPC"] {
        set(
            &mut config,
            &["Addresses", listener],
            format!("/ip4/127.0.0.1/tcp/{}", free_port()).into(),
        );
    }
    set(&mut config, &["Discovery", "MDNS", "Enabled"], false.into());
    set(
        &mut config,
        &["Discovery", "webRTCStar", "Enabled"],
        false.into(),
    );
    std::fs::write(&config_file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let process = KillOnDrop(
        jsipfs(&repo)
            .args(["daemon", "--offline"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api_url = format!("http://127.0.0.1:{port}");
    assert!(
        wait_for_port(port, Duration::from_secs(60)).await,
        "jsipfs daemon did not listen on {port}"
    );
    // Listening comes a little before answering.
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let answered = client
            .post(format!("{api_url}/api/v0/version"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = IpfsBlobStore::new(IpfsSettings::new(&api_url)).unwrap();
    Some(IpfsNode {
        _process: process,
        _repo: repo,
        api_url,
        store,
    })
}

#[tokio::test]
async fn hello_world_is_pinned_under_the_cid_ipfs_add_gives_read_back_and_unpinned() {
    let Some(node) = ipfs_node().await else {
        return;
    };
    let store = &node.store;
    let blob = store.put(&mut &b"hello world"[..], 1024).await.unwrap();
    // put succeeds only when the node's CID equals ours; both are the known vector.
    assert_eq!(blob.cid, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
    assert_eq!(
        blob.sha256,
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert!(node.pins().await.contains(&blob.cid));
    assert!(store.exists(&blob).await.unwrap());
    assert_eq!(
        read_all(store.get(&blob).await.unwrap()).await.unwrap(),
        b"hello world"
    );

    store.delete(&blob).await.unwrap();
    assert!(!store.exists(&blob).await.unwrap());
    assert!(!node.pins().await.contains(&blob.cid));
    store.delete(&blob).await.unwrap();
    assert!(matches!(
        store.get(&blob).await,
        Err(BlobError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_multi_chunk_upload_gets_the_same_cid_from_the_node_as_computed_here() {
    let Some(node) = ipfs_node().await else {
        return;
    };
    // Many 256 KiB chunks, the last one short: the node builds the balanced DAG.
    let total = 3 * MIB + 4321;
    let blob = node
        .store
        .put(&mut Pattern::new(total), 100 * MIB)
        .await
        .unwrap();
    let (sha256, cid) = Pattern::digests(total);
    assert_eq!(
        (blob.size_bytes, &blob.sha256, &blob.cid),
        (total, &sha256, &cid)
    );
    assert!(node.pins().await.contains(&cid));
    assert_eq!(
        hash_all(node.store.get(&blob).await.unwrap())
            .await
            .unwrap(),
        (total, sha256)
    );
}

#[tokio::test]
async fn cut_off_and_over_limit_uploads_pin_nothing() {
    let Some(node) = ipfs_node().await else {
        return;
    };
    let before = node.pins().await;

    let cut = node
        .store
        .put(&mut Pattern::failing_after(MIB + 100), 100 * MIB)
        .await;
    assert!(matches!(cut, Err(BlobError::Io(_))), "{cut:?}");
    assert_eq!(node.pins().await, before);

    let limit = 300 * KIB;
    let over = node.store.put(&mut Pattern::new(limit + 1), limit).await;
    assert!(
        matches!(over, Err(BlobError::TooLarge { limit_bytes }) if limit_bytes == limit),
        "{over:?}"
    );
    assert_eq!(node.pins().await, before);

    // The node is still fine, and exactly the limit is accepted.
    let blob = node
        .store
        .put(&mut Pattern::new(limit), limit)
        .await
        .unwrap();
    assert_eq!(node.pins().await.len(), before.len() + 1);
    assert!(node.store.exists(&blob).await.unwrap());
}

#[tokio::test]
async fn bytes_that_do_not_hash_to_the_recorded_sha256_fail_on_read() {
    let Some(node) = ipfs_node().await else {
        return;
    };
    let blob = node
        .store
        .put(&mut &b"model weights"[..], 1024)
        .await
        .unwrap();
    // A catalogue entry whose sha256 does not match what is pinned under its CID.
    let wrong = StoredBlob {
        sha256: "0".repeat(64),
        ..blob.clone()
    };
    let read = read_all(node.store.get(&wrong).await.unwrap()).await;
    assert!(matches!(read, Err(BlobError::Corrupt { .. })), "{read:?}");
    let bad_cid = StoredBlob {
        cid: "Qm&arg=x".into(),
        ..blob
    };
    assert!(matches!(
        node.store.get(&bad_cid).await,
        Err(BlobError::BadCid(_))
    ));
}
