//! Engines over NATS: a node serves its engines on subjects named after the model, and a
//! gateway calls them, with the generated text streamed back on an inbox subject.
//!
//! Protocol (JSON payloads):
//! 1. The gateway subscribes to a fresh inbox `S`, then sends a core NATS *request* to
//!    `aiforge.infer.<target>` with `{"stream": S, "request": ChatRequest}`. `<target>` is the
//!    model file's SHA-256 (any node with the same bytes can answer) or `id.<model id>` for an
//!    engine configured for one platform model (an upstream). Every node serving a target
//!    subscribes in the queue group `aiforge-infer.<target>`, so each request reaches one node.
//!    No subscriber: NATS answers "no responders" at once, and the gateway says 503.
//! 2. The node replies to the request with `{"accepted": node_id}` (an anonymous node, never
//!    paid), `{"accepted_by": {"node_id", "token"}}` (a registered compute node proving its id
//!    with its node token, as its NATS heartbeats do, so the gateway meters its calls under
//!    that id and the monthly close pays it: `aiforge_domain::inference_pay`), or
//!    `{"refused": message}`, then publishes to `S`, in order: `{"delta": text}`... and finally `{"done": Completion}`
//!    or `{"error": {"kind", "message"}}`.
//! 3. A gateway whose client went away publishes anything to `S.cancel`; the node stops the
//!    generation and still ends with `done` (the completion counts what was delivered).
//! 4. Nodes announce what they serve on `aiforge.nodes.announce` at start and every
//!    `ANNOUNCE_SECS`: `{"node_id", "targets": [...]}`.
//!
//! A node that dies mid-stream sends nothing more; the gateway gives up after its idle timeout.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::engine::{ChatRequest, Completion, Delta, Engine, EngineError};

pub const SUBJECT_PREFIX: &str = "aiforge.infer";
pub const ANNOUNCE_SUBJECT: &str = "aiforge.nodes.announce";
pub const ANNOUNCE_SECS: u64 = 30;

/// The subject of a model's content (its file's SHA-256).
pub fn content_target(sha256: &str) -> String {
    sha256.to_string()
}

/// The subject target of an engine configured for one platform model id.
pub fn model_target(model_id: &str) -> String {
    format!("id.{}", model_id.replace(['.', '*', '>', ' '], "_"))
}

pub fn subject(target: &str) -> String {
    format!("{SUBJECT_PREFIX}.{target}")
}

pub fn queue_group(target: &str) -> String {
    format!("aiforge-infer.{target}")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct InferRequest {
    pub stream: String,
    pub request: ChatRequest,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Accepted(String),
    AcceptedBy(RegisteredNode),
    Refused(String),
}

/// A registered compute node's id and token (`POST /api/nodes/register`).
#[derive(Clone, Serialize, Deserialize)]
pub struct RegisteredNode {
    pub node_id: String,
    pub token: String,
}

impl std::fmt::Debug for RegisteredNode {
    // The token is a secret: never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredNode")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Who a serving node says it is: a name of its own (anonymous) or a registered node.
#[derive(Debug, Clone)]
pub enum NodeIdentity {
    Anonymous(String),
    Registered(RegisteredNode),
}

impl NodeIdentity {
    pub fn node_id(&self) -> &str {
        match self {
            NodeIdentity::Anonymous(id) => id,
            NodeIdentity::Registered(node) => &node.node_id,
        }
    }

    fn accepted(&self) -> Reply {
        match self {
            NodeIdentity::Anonymous(id) => Reply::Accepted(id.clone()),
            NodeIdentity::Registered(node) => Reply::AcceptedBy(node.clone()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RemoteError {
    /// `invalid_request`, `context_length_exceeded` or `failed`.
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMessage {
    Delta(String),
    Done(Completion),
    Error(RemoteError),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Announce {
    pub node_id: String,
    pub targets: Vec<String>,
}

fn remote_error(err: &EngineError) -> RemoteError {
    let kind = match err {
        EngineError::InvalidRequest(_) => "invalid_request",
        EngineError::ContextLengthExceeded { .. } => "context_length_exceeded",
        _ => "failed",
    };
    RemoteError {
        kind: kind.into(),
        message: err.to_string(),
    }
}

/// The engine error a remote error stands for.
pub fn engine_error(err: RemoteError) -> EngineError {
    match err.kind.as_str() {
        "invalid_request" => EngineError::InvalidRequest(err.message),
        _ => EngineError::Worker(err.message),
    }
}

/// Serves `engines` (target -> engine) on NATS until the connection closes. `ready` is told
/// once every subscription is in place (a request sent after it reaches this node).
pub async fn serve(
    client: async_nats::Client,
    identity: NodeIdentity,
    engines: Vec<(String, Arc<dyn Engine>)>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), async_nats::Error> {
    let node_id = identity.node_id().to_string();
    let identity = Arc::new(identity);
    let targets: Vec<String> = engines.iter().map(|(t, _)| t.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (target, engine) in engines {
        let mut requests = client
            .queue_subscribe(subject(&target), queue_group(&target))
            .await?;
        let client = client.clone();
        let identity = identity.clone();
        tasks.spawn(async move {
            while let Some(message) = requests.next().await {
                let (client, identity, engine) = (client.clone(), identity.clone(), engine.clone());
                tokio::spawn(async move {
                    if let Err(err) = answer(client, identity, engine, message).await {
                        tracing::warn!(error = %err, "an inference request failed on this node");
                    }
                });
            }
        });
    }
    client.flush().await?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let announce = serde_json::to_vec(&Announce {
        node_id: node_id.clone(),
        targets,
    })?;
    tasks.spawn({
        let client = client.clone();
        async move {
            loop {
                if client
                    .publish(ANNOUNCE_SUBJECT, announce.clone().into())
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(ANNOUNCE_SECS)).await;
            }
        }
    });
    tracing::info!(%node_id, "serving models over NATS");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn answer(
    client: async_nats::Client,
    identity: Arc<NodeIdentity>,
    engine: Arc<dyn Engine>,
    message: async_nats::Message,
) -> Result<(), async_nats::Error> {
    let Some(reply) = message.reply.clone() else {
        return Ok(());
    };
    let request: InferRequest = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(err) => {
            let refused = serde_json::to_vec(&Reply::Refused(format!("bad request: {err}")))?;
            client.publish(reply, refused.into()).await?;
            return Ok(());
        }
    };
    let mut cancel = client
        .subscribe(format!("{}.cancel", request.stream))
        .await?;
    client
        .publish(reply, serde_json::to_vec(&identity.accepted())?.into())
        .await?;
    let (deltas, mut received) = mpsc::channel::<Delta>(16);
    let generation = tokio::spawn({
        let engine = engine.clone();
        async move { engine.generate(request.request, deltas).await }
    });
    let stream = request.stream;
    loop {
        tokio::select! {
            delta = received.recv() => match delta {
                Some(delta) => {
                    let message = serde_json::to_vec(&StreamMessage::Delta(delta.text))?;
                    client.publish(stream.clone(), message.into()).await?;
                }
                None => break,
            },
            _ = cancel.next() => break,
        }
    }
    // Dropping the receiver stops a cancelled generation; the completion counts what was sent.
    drop(received);
    let last = match generation.await {
        Ok(Ok(completion)) => StreamMessage::Done(completion),
        Ok(Err(err)) => StreamMessage::Error(remote_error(&err)),
        Err(join) => StreamMessage::Error(RemoteError {
            kind: "failed".into(),
            message: join.to_string(),
        }),
    };
    client
        .publish(stream, serde_json::to_vec(&last)?.into())
        .await?;
    client.flush().await?;
    Ok(())
}
