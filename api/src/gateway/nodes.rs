//! Routing a chat request to a node that serves its model. The gateway sees nodes only through
//! the `NodeTransport` port; `LocalNodes` is the in-process transport (the embedded default:
//! engines inside `aiforge serve`). A node serves model *content*: it is found by the model's
//! SHA-256 (the same bytes uploaded twice are the same model to a node), or by a platform model
//! id it was configured for (an upstream engine has no blob).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aiforge_inference::{ChatRequest, Completion, Delta, Engine, EngineError};
use async_trait::async_trait;
use tokio::sync::mpsc;

/// What the gateway asks for: the platform model and its content address.
#[derive(Debug, Clone)]
pub struct ModelTarget {
    pub model_id: String,
    pub sha256: String,
}

/// A generation that ended, and which node produced it.
#[derive(Debug, Clone)]
pub struct NodeCompletion {
    pub node_id: String,
    pub completion: Completion,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no node serves this model now")]
    NoNode,
    /// The engine refused or failed; before any delta when it is a refusal.
    #[error("node {node_id}: {source}")]
    Engine {
        node_id: String,
        #[source]
        source: EngineError,
    },
    /// The node went away or stopped answering mid-generation.
    #[error("node {node_id} was lost: {reason}")]
    Lost { node_id: String, reason: String },
}

#[async_trait]
pub trait NodeTransport: Send + Sync {
    /// Streams the generation through `deltas` and returns how it ended. Dropping the receiver
    /// cancels the generation (the completion then counts what was delivered).
    async fn generate(
        &self,
        target: &ModelTarget,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<NodeCompletion, NodeError>;
}

/// Engines running in this process.
pub struct LocalNodes {
    node_id: String,
    by_sha256: RwLock<HashMap<String, Arc<dyn Engine>>>,
    by_model_id: RwLock<HashMap<String, Arc<dyn Engine>>>,
}

impl LocalNodes {
    pub fn new(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            by_sha256: RwLock::default(),
            by_model_id: RwLock::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Serves every platform model whose file has this SHA-256.
    pub fn serve_content(&self, sha256: &str, engine: Arc<dyn Engine>) {
        self.by_sha256
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sha256.to_string(), engine);
    }

    /// Serves one platform model id (an upstream engine).
    pub fn serve_model(&self, model_id: &str, engine: Arc<dyn Engine>) {
        self.by_model_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(model_id.to_string(), engine);
    }

    fn engine_for(&self, target: &ModelTarget) -> Option<Arc<dyn Engine>> {
        let by_id = self
            .by_model_id
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&target.model_id)
            .cloned();
        by_id.or_else(|| {
            self.by_sha256
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&target.sha256)
                .cloned()
        })
    }
}

#[async_trait]
impl NodeTransport for LocalNodes {
    async fn generate(
        &self,
        target: &ModelTarget,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<NodeCompletion, NodeError> {
        let engine = self.engine_for(target).ok_or(NodeError::NoNode)?;
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

/// Tries transports in order; the first that has a node for the model answers.
pub struct FirstAvailable(pub Vec<Arc<dyn NodeTransport>>);

#[async_trait]
impl NodeTransport for FirstAvailable {
    async fn generate(
        &self,
        target: &ModelTarget,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<NodeCompletion, NodeError> {
        for transport in &self.0 {
            match transport
                .generate(target, request.clone(), deltas.clone())
                .await
            {
                Err(NodeError::NoNode) => continue,
                other => return other,
            }
        }
        Err(NodeError::NoNode)
    }
}
