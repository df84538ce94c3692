//! The in-process node's model pool: every servable GGUF model of this instance is served
//! without anyone starting a node for it. A call for a model no engine holds loads it (its file
//! read from the blob store, verified against its SHA-256 as it streams, then loaded by this
//! build's GGUF engine, candle or llama.cpp, `aiforge_inference::fetch::load_gguf`); when the models' memory (as judged at upload, `ServableModel::memory_bytes`)
//! would pass the budget (`AIFORGE_SERVING_MEMORY_BYTES`), the least recently used are unloaded
//! first. Only models a call was admitted for reach here, that is models with a service (or
//! included in plans); a model judged not servable, or served by an upstream, is never loaded.
//!
//! One load at a time: the pool's lock is held while a model loads, so concurrent first calls
//! for one model load it once (calls for models already loaded wait for that load too; on a
//! machine of a few cores a load is CPU-bound anyway). An unloaded engine lives on until the
//! calls that hold it end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aiforge_commands::blob::{BlobStore, StoredBlob};
use aiforge_commands::marketplace::Marketplace;
use aiforge_domain::serving::Servability;
use aiforge_inference::fetch::{load_gguf, GgufOptions};
use aiforge_inference::{ChatRequest, Delta, Engine};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Mutex};

use super::nodes::{ModelTarget, NodeCompletion, NodeError, NodeTransport};

/// Loads and unloads since start, and what is loaded now (for `/metrics`).
pub static MODEL_LOADS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static MODEL_UNLOADS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static MODELS_LOADED: AtomicU64 = AtomicU64::new(0);
pub static MODEL_MEMORY_BYTES: AtomicU64 = AtomicU64::new(0);

struct Loaded {
    sha256: String,
    engine: Arc<dyn Engine>,
    memory_bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct PoolState {
    loaded: Vec<Loaded>,
    /// A counter, not a clock: the order of use is all LRU needs.
    tick: u64,
}

impl PoolState {
    fn memory_bytes(&self) -> u64 {
        self.loaded.iter().map(|l| l.memory_bytes).sum()
    }

    fn publish_gauges(&self) {
        MODELS_LOADED.store(self.loaded.len() as u64, Ordering::Relaxed);
        MODEL_MEMORY_BYTES.store(self.memory_bytes(), Ordering::Relaxed);
    }
}

pub struct ModelPool {
    node_id: String,
    budget_bytes: u64,
    /// Where a model file is written while it loads (removed once loaded).
    work_dir: PathBuf,
    marketplace: Arc<Marketplace>,
    blobs: Arc<dyn BlobStore>,
    state: Mutex<PoolState>,
}

/// Why a model could not be loaded (logged; the caller gets `no_node_available`).
#[derive(Debug, thiserror::Error)]
enum LoadFailure {
    #[error("reading the model file from the blob store")]
    Blob(#[from] aiforge_commands::blob::BlobError),
    #[error("writing the model file for loading")]
    Io(#[from] std::io::Error),
    #[error("loading the model")]
    Load(#[from] aiforge_inference::fetch::GgufLoadError),
    #[error("the load task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ModelPool {
    pub fn new(
        node_id: impl Into<String>,
        budget_bytes: u64,
        work_dir: PathBuf,
        marketplace: Arc<Marketplace>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            budget_bytes,
            work_dir,
            marketplace,
            blobs,
            state: Mutex::new(PoolState::default()),
        }
    }

    /// The engine for `target`, loading it (and unloading others) when needed; `None` when the
    /// model is not one this pool serves.
    async fn engine_for(&self, target: &ModelTarget) -> Option<Arc<dyn Engine>> {
        let mut state = self.state.lock().await;
        state.tick += 1;
        let tick = state.tick;
        if let Some(loaded) = state.loaded.iter_mut().find(|l| l.sha256 == target.sha256) {
            loaded.last_used = tick;
            return Some(loaded.engine.clone());
        }
        let model = match self.marketplace.model(&target.model_id).await {
            Ok(model) => model,
            Err(e) => {
                tracing::warn!(model_id = %target.model_id, error = %aiforge_domain::error_chain(&e), "model pool: no such model");
                return None;
            }
        };
        let (Some(Servability::Servable(servable)), Some(blob)) = (&model.servability, &model.blob)
        else {
            return None;
        };
        if !aiforge_inference::servable::serves(servable.engine)
            || servable.memory_bytes > self.budget_bytes
            || blob.sha256 != target.sha256
        {
            return None;
        }
        while state.memory_bytes() + servable.memory_bytes > self.budget_bytes {
            let Some(oldest) = state
                .loaded
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| l.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let unloaded = state.loaded.swap_remove(oldest);
            MODEL_UNLOADS_TOTAL.fetch_add(1, Ordering::Relaxed);
            tracing::info!(sha256 = %unloaded.sha256, memory_bytes = unloaded.memory_bytes, "model pool: unloaded the least recently used model");
            state.publish_gauges();
        }
        let stored = StoredBlob {
            sha256: blob.sha256.clone(),
            cid: blob.cid.clone(),
            size_bytes: blob.size_bytes,
        };
        match self.load(&stored).await {
            Ok(engine) => {
                MODEL_LOADS_TOTAL.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model_id = %target.model_id, sha256 = %stored.sha256, memory_bytes = servable.memory_bytes, "model pool: loaded");
                state.loaded.push(Loaded {
                    sha256: stored.sha256.clone(),
                    engine: engine.clone(),
                    memory_bytes: servable.memory_bytes,
                    last_used: tick,
                });
                state.publish_gauges();
                Some(engine)
            }
            Err(e) => {
                tracing::error!(model_id = %target.model_id, error = %aiforge_domain::error_chain(&e), "model pool: cannot load");
                None
            }
        }
    }

    /// Copies the blob to a file (its bytes verified against the SHA-256 as they stream: a
    /// corrupt blob fails at its last chunk and the file is removed), loads it, removes it.
    async fn load(&self, blob: &StoredBlob) -> Result<Arc<dyn Engine>, LoadFailure> {
        tokio::fs::create_dir_all(&self.work_dir).await?;
        let path = self.work_dir.join(format!(
            "{}-{}.gguf",
            blob.sha256,
            uuid::Uuid::now_v7().simple()
        ));
        let written = async {
            let mut bytes = self.blobs.get(blob).await?;
            let mut file = tokio::fs::File::create(&path).await?;
            while let Some(chunk) = bytes.next().await {
                file.write_all(&chunk?).await?;
            }
            file.flush().await?;
            Ok::<_, LoadFailure>(())
        }
        .await;
        let loaded = match written {
            Ok(()) => {
                let file = path.clone();
                let options = GgufOptions {
                    model_id: Some(blob.sha256.clone()),
                    ..GgufOptions::default()
                };
                tokio::task::spawn_blocking(move || load_gguf(&file, options))
                    .await
                    .map_err(LoadFailure::from)
                    .and_then(|r| r.map_err(LoadFailure::from))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "model pool: cannot remove the loaded file");
        }
        loaded
    }
}

#[async_trait]
impl NodeTransport for ModelPool {
    async fn generate(
        &self,
        target: &ModelTarget,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<NodeCompletion, NodeError> {
        let engine = self.engine_for(target).await.ok_or(NodeError::NoNode)?;
        let completion =
            engine
                .generate(request, deltas)
                .await
                .map_err(|source| NodeError::Engine {
                    node_id: self.node_id.clone(),
                    source,
                })?;
        Ok(NodeCompletion {
            node_id: self.node_id.clone(),
            completion,
        })
    }
}
