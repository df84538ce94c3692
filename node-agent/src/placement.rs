//! `node-agent serve --auto`: a node that serves what the coordinator places on it. It says how
//! much memory it gives to placed models (in its announcements), takes its placements on
//! `aiforge.placements.<node>` (`aiforge_inference::remote::Placement`: the whole set of model
//! files it is to hold), answers each with its announcement at once, then reconciles: each new
//! file is downloaded from the coordinator by CID (`GET /api/nodes/{id}/models/{cid}`, node
//! token), its SHA-256 and CID checked against the placement before it is loaded, and each
//! file no longer listed is unloaded and deleted. A file that fails to download, verify or load
//! is reported as failed for `FAILED_FOR_SECS` (the coordinator places it elsewhere meanwhile).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aiforge_domain::cid::CidV0Builder;
use aiforge_inference::fetch::{load_gguf, GgufOptions};
use aiforge_inference::remote::{
    content_target, placement_subject, NodeServer, PlacedModel, Placement,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

pub struct AutoConfig {
    /// The coordinator's base URL.
    pub coordinator: String,
    pub node_id: String,
    pub token: String,
    /// Where downloaded model files are kept while they are placed here.
    pub models_dir: PathBuf,
    pub threads: Option<usize>,
}

/// Takes placements until the NATS connection closes.
pub async fn run(
    client: async_nats::Client,
    server: Arc<NodeServer>,
    config: AutoConfig,
) -> Result<(), String> {
    tokio::fs::create_dir_all(&config.models_dir)
        .await
        .map_err(|e| format!("{}: {e}", config.models_dir.display()))?;
    let mut placements = client
        .subscribe(placement_subject(&config.node_id))
        .await
        .map_err(|e| format!("nats: {e}"))?;
    client.flush().await.map_err(|e| format!("nats: {e}"))?;
    let (wanted_tx, wanted_rx) = watch::channel::<BTreeMap<String, PlacedModel>>(BTreeMap::new());
    let reconciler = tokio::spawn(reconcile(server.clone(), config, wanted_rx));
    while let Some(message) = placements.next().await {
        let placement: Placement = match serde_json::from_slice(&message.payload) {
            Ok(placement) => placement,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable placement");
                continue;
            }
        };
        let wanted: BTreeMap<String, PlacedModel> = placement
            .models
            .into_iter()
            .map(|m| (content_target(&m.sha256), m))
            .collect();
        // What is new and not failed is loading from now on: the answer says so, and the
        // coordinator does not place it anywhere else meanwhile.
        let serving = server.serving();
        let failed = server.failed();
        server.set_loading(
            wanted
                .keys()
                .filter(|t| !serving.contains(*t) && !failed.contains_key(*t))
                .cloned()
                .collect(),
        );
        if let Some(reply) = message.reply {
            if let Ok(body) = serde_json::to_vec(&server.announcement()) {
                let _ = client.publish(reply, body.into()).await;
            }
        }
        if *wanted_tx.borrow() != wanted {
            let _ = wanted_tx.send(wanted);
        }
    }
    reconciler.abort();
    Ok(())
}

/// Makes what this node serves the latest placement, one file at a time.
async fn reconcile(
    server: Arc<NodeServer>,
    config: AutoConfig,
    mut wanted: watch::Receiver<BTreeMap<String, PlacedModel>>,
) {
    let http = reqwest::Client::new();
    loop {
        let now = wanted.borrow_and_update().clone();
        for target in server.serving() {
            if !now.contains_key(&target) {
                server.remove(&target);
                let _ = tokio::fs::remove_file(model_path(&config.models_dir, &target)).await;
                tracing::info!(sha256 = %target, "placement: unloaded a model no longer placed here");
            }
        }
        for (target, model) in &now {
            if wanted.has_changed().unwrap_or(false) {
                break; // a newer placement: start over from it
            }
            if server.serving().contains(target) || server.failed().contains_key(target) {
                continue;
            }
            match load(&http, &config, model).await {
                Ok(engine) => match server.add(target.clone(), engine).await {
                    Ok(()) => {
                        tracing::info!(sha256 = %model.sha256, models = ?model.model_ids, "placement: serving")
                    }
                    Err(e) => server.set_failed(target, format!("subscribing on NATS: {e}")),
                },
                Err(reason) => {
                    tracing::warn!(sha256 = %model.sha256, %reason, "placement: cannot serve");
                    server.set_failed(target, reason);
                }
            }
        }
        if wanted.changed().await.is_err() {
            return;
        }
    }
}

fn model_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.gguf"))
}

/// The placed file, downloaded (or found from an earlier placement) and checked, then loaded.
async fn load(
    http: &reqwest::Client,
    config: &AutoConfig,
    model: &PlacedModel,
) -> Result<Arc<dyn aiforge_inference::Engine>, String> {
    let path = model_path(&config.models_dir, &model.sha256);
    let kept = match crate::worker::digest_file(&path).await {
        Ok((sha256, cid, _)) => sha256 == model.sha256 && cid == model.cid,
        Err(_) => false,
    };
    if !kept {
        download(http, config, model, &path).await?;
    }
    let options = GgufOptions {
        model_id: Some(model.sha256.clone()),
        threads: config.threads,
    };
    let file = path.clone();
    tokio::task::spawn_blocking(move || load_gguf(&file, options))
        .await
        .map_err(|e| format!("the load task failed: {e}"))?
        .map_err(|e| format!("loading: {}", aiforge_domain::error_chain(&e)))
}

/// Downloads the file by its CID to `path`, checking its size, SHA-256 and CID as it streams;
/// a file that is not the placed content is removed, never loaded.
async fn download(
    http: &reqwest::Client,
    config: &AutoConfig,
    model: &PlacedModel,
    path: &Path,
) -> Result<(), String> {
    let url = format!(
        "{}/api/nodes/{}/models/{}",
        config.coordinator.trim_end_matches('/'),
        config.node_id,
        model.cid
    );
    let response = http
        .get(&url)
        .bearer_auth(&config.token)
        .send()
        .await
        .map_err(|e| format!("downloading {}: {e}", model.cid))?;
    if !response.status().is_success() {
        return Err(format!(
            "downloading {}: the coordinator answered {}",
            model.cid,
            response.status()
        ));
    }
    let partial = path.with_extension("part");
    let written = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        let (mut sha, mut cid, mut size) = (Sha256::new(), CidV0Builder::new(), 0u64);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("downloading {}: {e}", model.cid))?;
            size += chunk.len() as u64;
            if size > model.size_bytes {
                return Err(format!(
                    "downloading {}: more than the placed {} bytes",
                    model.cid, model.size_bytes
                ));
            }
            sha.update(&chunk);
            cid.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", partial.display()))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        let (sha, cid) = (hex::encode(sha.finalize()), cid.finish());
        if size != model.size_bytes || sha != model.sha256 || cid != model.cid {
            return Err(format!(
                "the file received ({size} bytes, SHA-256 {sha}, CID {cid}) is not the placed one ({} bytes, SHA-256 {}, CID {})",
                model.size_bytes, model.sha256, model.cid
            ));
        }
        tokio::fs::rename(&partial, path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}
