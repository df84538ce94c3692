//! The NATS transport: nodes anywhere, reached through NATS request/reply with the tokens
//! streamed back on an inbox subject (protocol in `aiforge_inference::remote`). A request goes
//! to the model's content subject first (any node with the same file), then to the subject of
//! nodes configured for the platform model id; "no responders" on both is `NoNode`.
//!
//! The node id a call is metered under is the key index's word (`KeyIndex::metered_node_id`):
//! a registered node's id only when its reply carried that node's token, checked against the
//! digest the index folded from `NodeRegistered` (no database query on the call's path).

use std::sync::Arc;
use std::time::Duration;

use aiforge_commands::gateway::KeyIndex;

use aiforge_inference::remote::{
    content_target, engine_error, model_target, subject, InferRequest, Reply, StreamMessage,
};
use aiforge_inference::{ChatRequest, Delta};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::nodes::{ModelTarget, NodeCompletion, NodeError, NodeTransport};

/// How long a node has to accept a request.
pub const ACCEPT_TIMEOUT_SECS: u64 = 10;
/// The default longest silence of a node mid-generation before it counts as lost.
pub const IDLE_TIMEOUT_SECS_DEFAULT: u64 = 30;

pub struct NatsNodes {
    client: async_nats::Client,
    idle_timeout: Duration,
    index: Arc<KeyIndex>,
}

impl NatsNodes {
    pub fn new(client: async_nats::Client, idle_timeout: Duration, index: Arc<KeyIndex>) -> Self {
        Self {
            client,
            idle_timeout,
            index,
        }
    }

    /// Asks the nodes of `target` to take the request; `None` when none is there.
    async fn offer(
        &self,
        target: &str,
        payload: bytes::Bytes,
    ) -> Result<Option<String>, NodeError> {
        let lost = |reason: String| NodeError::Lost {
            node_id: format!("nats:{target}"),
            reason,
        };
        let request = self.client.request(subject(target), payload);
        match tokio::time::timeout(Duration::from_secs(ACCEPT_TIMEOUT_SECS), request).await {
            Err(_) => Err(lost("no node accepted the request in time".into())),
            Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => Ok(None),
            Ok(Err(err)) => Err(lost(err.to_string())),
            Ok(Ok(reply)) => match serde_json::from_slice::<Reply>(&reply.payload) {
                Ok(Reply::Accepted(node_id)) => {
                    Ok(Some(self.index.metered_node_id(&node_id, None)))
                }
                Ok(Reply::AcceptedBy(node)) => Ok(Some(
                    self.index.metered_node_id(&node.node_id, Some(&node.token)),
                )),
                Ok(Reply::Refused(message)) => Err(NodeError::Engine {
                    node_id: format!("nats:{target}"),
                    source: aiforge_inference::EngineError::InvalidRequest(message),
                }),
                Err(err) => Err(lost(format!("unreadable reply: {err}"))),
            },
        }
    }
}

#[async_trait]
impl NodeTransport for NatsNodes {
    async fn generate(
        &self,
        target: &ModelTarget,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<NodeCompletion, NodeError> {
        let stream = self.client.new_inbox();
        let mut messages =
            self.client
                .subscribe(stream.clone())
                .await
                .map_err(|e| NodeError::Lost {
                    node_id: "nats".into(),
                    reason: e.to_string(),
                })?;
        let payload: bytes::Bytes = serde_json::to_vec(&InferRequest {
            stream: stream.clone(),
            request,
        })
        .map_err(|e| NodeError::Lost {
            node_id: "nats".into(),
            reason: e.to_string(),
        })?
        .into();
        let mut node_id = None;
        for candidate in [
            content_target(&target.sha256),
            model_target(&target.model_id),
        ] {
            if let Some(accepted) = self.offer(&candidate, payload.clone()).await? {
                node_id = Some(accepted);
                break;
            }
        }
        let node_id = node_id.ok_or(NodeError::NoNode)?;
        let lost = |reason: &str| NodeError::Lost {
            node_id: node_id.clone(),
            reason: reason.to_string(),
        };
        let mut cancelled = false;
        loop {
            let next = tokio::time::timeout(self.idle_timeout, messages.next()).await;
            let message = match next {
                Err(_) => return Err(lost("the node went silent mid-generation")),
                Ok(None) => return Err(lost("the connection to NATS closed")),
                Ok(Some(message)) => message,
            };
            match serde_json::from_slice::<StreamMessage>(&message.payload) {
                Ok(StreamMessage::Delta(text)) => {
                    if !cancelled && deltas.send(Delta { text }).await.is_err() {
                        // The client went away: tell the node, then wait for its final count.
                        cancelled = true;
                        let _ = self
                            .client
                            .publish(format!("{stream}.cancel"), bytes::Bytes::new())
                            .await;
                    }
                }
                Ok(StreamMessage::Done(completion)) => {
                    return Ok(NodeCompletion {
                        node_id,
                        completion,
                    })
                }
                Ok(StreamMessage::Error(err)) => {
                    return Err(NodeError::Engine {
                        node_id,
                        source: engine_error(err),
                    })
                }
                Err(err) => return Err(lost(&format!("unreadable message: {err}"))),
            }
        }
    }
}
