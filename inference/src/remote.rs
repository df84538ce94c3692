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
//! 4. Nodes announce what they serve and how busy they are on `aiforge.nodes.announce`:
//!    `{"node_id", "targets": [...], "in_flight": n}`, at start, every `ANNOUNCE_SECS`, when a
//!    gateway asks on `aiforge.nodes.discover` (it does at its start), when their load changes
//!    (coalesced: at most one every `LOAD_ANNOUNCE_MILLIS`), and with no targets when they stop.
//! 5. Each node also takes requests for each of its targets on its own subject,
//!    `aiforge.infer.node.<node>.<target>` (no queue group): a gateway that knows the nodes from
//!    their announcements sends a call to the least loaded one, and a node that refuses, fails
//!    or goes silent before the first token is retried once on another (`api/src/gateway/nats.rs`).
//!
//! A node that dies mid-stream sends nothing more; the gateway gives up after its idle timeout.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::engine::{ChatRequest, Completion, Delta, Engine, EngineError};

pub const SUBJECT_PREFIX: &str = "aiforge.infer";
pub const ANNOUNCE_SUBJECT: &str = "aiforge.nodes.announce";
/// A gateway asks every node to announce itself at once (an empty message).
pub const DISCOVER_SUBJECT: &str = "aiforge.nodes.discover";
pub const ANNOUNCE_SECS: u64 = 30;
/// A node's load announcements are coalesced: at most one this often.
pub const LOAD_ANNOUNCE_MILLIS: u64 = 200;

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

/// The subject on which one node takes requests for one of its targets.
pub fn node_subject(node_id: &str, target: &str) -> String {
    format!("{SUBJECT_PREFIX}.node.{}.{target}", subject_token(node_id))
}

/// A node id as one NATS subject token (no separators or wildcards).
fn subject_token(node_id: &str) -> String {
    node_id.replace(['.', '*', '>', ' ', '\t', '\r', '\n'], "_")
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub node_id: String,
    pub targets: Vec<String>,
    /// Requests the node is generating now (absent from nodes older than load routing: 0).
    #[serde(default)]
    pub in_flight: u32,
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
    let load = Arc::new(Load::default());
    let mut tasks = tokio::task::JoinSet::new();
    for (target, engine) in engines {
        // The queue group (any node of the target) and this node's own subject (a gateway's
        // choice of the least loaded node) lead to the same answer.
        let shared = client
            .queue_subscribe(subject(&target), queue_group(&target))
            .await?;
        let own = client.subscribe(node_subject(&node_id, &target)).await?;
        let mut requests = futures::stream::select(shared, own);
        let client = client.clone();
        let identity = identity.clone();
        let load = load.clone();
        tasks.spawn(async move {
            while let Some(message) = requests.next().await {
                let (client, identity, engine) = (client.clone(), identity.clone(), engine.clone());
                let busy = load.clone().start();
                tokio::spawn(async move {
                    let _busy = busy;
                    if let Err(err) = answer(client, identity, engine, message).await {
                        tracing::warn!(error = %err, "an inference request failed on this node");
                    }
                });
            }
        });
    }
    let mut discover = client.subscribe(DISCOVER_SUBJECT).await?;
    client.flush().await?;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    tasks.spawn({
        let client = client.clone();
        let (node_id, targets, load) = (node_id.clone(), targets.clone(), load.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(ANNOUNCE_SECS));
            every.tick().await; // the first tick is now: the loop announces at once anyway
            loop {
                let announce = Announce {
                    node_id: node_id.clone(),
                    targets: targets.clone(),
                    in_flight: load.in_flight.load(Ordering::Relaxed),
                };
                let Ok(body) = serde_json::to_vec(&announce) else {
                    return;
                };
                if client.publish(ANNOUNCE_SUBJECT, body.into()).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = every.tick() => {}
                    asked = discover.next() => {
                        if asked.is_none() {
                            return;
                        }
                    }
                    () = load.changed.notified() => {
                        // Coalesce a burst of starts and ends into one announcement.
                        tokio::time::sleep(Duration::from_millis(LOAD_ANNOUNCE_MILLIS)).await;
                    }
                }
            }
        }
    });
    tracing::info!(%node_id, "serving models over NATS");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Says on NATS that this node serves nothing any more (a clean stop), so gateways stop
/// choosing it before its announcements expire.
pub async fn withdraw(client: &async_nats::Client, node_id: &str) {
    let gone = Announce {
        node_id: node_id.to_string(),
        targets: Vec::new(),
        in_flight: 0,
    };
    if let Ok(body) = serde_json::to_vec(&gone) {
        let _ = client.publish(ANNOUNCE_SUBJECT, body.into()).await;
        let _ = client.flush().await;
    }
}

/// The requests this node is generating, and a signal when that changes.
#[derive(Default)]
struct Load {
    in_flight: AtomicU32,
    changed: tokio::sync::Notify,
}

impl Load {
    fn start(self: Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        Busy(self)
    }
}

/// One request in flight; its end is counted when it drops.
struct Busy(Arc<Load>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
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
