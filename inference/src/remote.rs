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
//! 6. A node started with `serve --auto` also says how much memory it gives to placed models
//!    (`capacity_bytes`), what it is loading and what it failed to load, and answers placement
//!    requests on `aiforge.placements.<node>`: the coordinator sends the whole set of model
//!    files it is to hold ([`Placement`]); the node answers with its announcement at once, then
//!    downloads, verifies and loads what is new and unloads what is no longer listed.
//!    "No responders" there tells the coordinator the node is gone.
//!
//! A node that dies mid-stream sends nothing more; the gateway gives up after its idle timeout.

use std::collections::{BTreeMap, BTreeSet};
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
/// `aiforge.placements.<node>`: a node's placements (`placement_subject`).
pub const PLACEMENT_PREFIX: &str = "aiforge.placements";
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

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Announce {
    pub node_id: String,
    pub targets: Vec<String>,
    /// Requests the node is generating now (absent from nodes older than load routing: 0).
    #[serde(default)]
    pub in_flight: u32,
    /// A node that takes placements (`serve --auto`): the memory it gives to placed models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Model files (SHA-256) it was given and is downloading or loading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loading: Vec<String>,
    /// Model files it could not load, and why (not given to it again while it says so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<LoadFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailure {
    pub sha256: String,
    pub reason: String,
}

/// The subject on which the coordinator gives one node its placements (a request: the node
/// answers with its [`Announce`]).
pub fn placement_subject(node_id: &str) -> String {
    format!("{PLACEMENT_PREFIX}.{}", subject_token(node_id))
}

/// Every model file one node is to hold now; what it holds and is not listed, it unloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub models: Vec<PlacedModel>,
}

/// One model file placed on a node: where to get it and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedModel {
    pub sha256: String,
    pub cid: String,
    pub size_bytes: u64,
    pub memory_bytes: u64,
    /// The platform models this file is (for the node's log).
    pub model_ids: Vec<String>,
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
    let server = NodeServer::new(client, identity, None);
    for (target, engine) in engines {
        server.add(target, engine).await?;
    }
    server.announcements(ready).await
}

/// A node's serving side: the targets it serves now (added and removed while it runs, as
/// placements come and go), its load, and its announcements.
pub struct NodeServer {
    client: async_nats::Client,
    identity: Arc<NodeIdentity>,
    load: Arc<Load>,
    /// The memory it gives to placed models (`serve --auto`); `None`: takes no placements.
    capacity_bytes: Option<u64>,
    state: std::sync::Mutex<ServerState>,
}

#[derive(Default)]
struct ServerState {
    /// Each served target's request loop.
    serving: BTreeMap<String, tokio::task::AbortHandle>,
    loading: BTreeSet<String>,
    /// Targets that could not be loaded: why, and until when that is said.
    failed: BTreeMap<String, (String, std::time::Instant)>,
}

impl ServerState {
    fn forget_old_failures(&mut self) {
        let now = std::time::Instant::now();
        self.failed.retain(|_, (_, until)| *until > now);
    }
}

/// How long a node says a model failed to load (and is not given it again): after it, a
/// placement may try it once more.
pub const FAILED_FOR_SECS: u64 = 300;

impl NodeServer {
    pub fn new(
        client: async_nats::Client,
        identity: NodeIdentity,
        capacity_bytes: Option<u64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            identity: Arc::new(identity),
            load: Arc::new(Load::default()),
            capacity_bytes,
            state: std::sync::Mutex::new(ServerState::default()),
        })
    }

    pub fn node_id(&self) -> &str {
        self.identity.node_id()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `target` with `engine` from now on (a request sent after it returns reaches this
    /// node), in place of any engine it had.
    pub async fn add(
        &self,
        target: String,
        engine: Arc<dyn Engine>,
    ) -> Result<(), async_nats::Error> {
        // The queue group (any node of the target) and this node's own subject (a gateway's
        // choice of the least loaded node) lead to the same answer.
        let shared = self
            .client
            .queue_subscribe(subject(&target), queue_group(&target))
            .await?;
        let own = self
            .client
            .subscribe(node_subject(self.node_id(), &target))
            .await?;
        self.client.flush().await?;
        let mut requests = futures::stream::select(shared, own);
        let (client, identity, load) = (
            self.client.clone(),
            self.identity.clone(),
            self.load.clone(),
        );
        let task = tokio::spawn(async move {
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
        let mut state = self.state();
        state.loading.remove(&target);
        state.failed.remove(&target);
        if let Some(old) = state.serving.insert(target, task.abort_handle()) {
            old.abort();
        }
        drop(state);
        self.load.changed.notify_one();
        Ok(())
    }

    /// Stops taking requests for `target` (calls already generating finish).
    pub fn remove(&self, target: &str) {
        let mut state = self.state();
        if let Some(task) = state.serving.remove(target) {
            task.abort();
        }
        state.loading.remove(target);
        drop(state);
        self.load.changed.notify_one();
    }

    /// Says what it is loading now (announced with what it serves).
    pub fn set_loading(&self, loading: BTreeSet<String>) {
        self.state().loading = loading;
        self.load.changed.notify_one();
    }

    /// Says a target could not be loaded, and why.
    pub fn set_failed(&self, target: &str, reason: String) {
        let mut state = self.state();
        state.loading.remove(target);
        let until = std::time::Instant::now() + Duration::from_secs(FAILED_FOR_SECS);
        state.failed.insert(target.to_string(), (reason, until));
        drop(state);
        self.load.changed.notify_one();
    }

    pub fn serving(&self) -> BTreeSet<String> {
        self.state().serving.keys().cloned().collect()
    }

    /// The targets that failed to load lately, and why.
    pub fn failed(&self) -> BTreeMap<String, String> {
        let mut state = self.state();
        state.forget_old_failures();
        state
            .failed
            .iter()
            .map(|(target, (reason, _))| (target.clone(), reason.clone()))
            .collect()
    }

    /// What this node says about itself now.
    pub fn announcement(&self) -> Announce {
        let mut state = self.state();
        state.forget_old_failures();
        Announce {
            node_id: self.node_id().to_string(),
            targets: state.serving.keys().cloned().collect(),
            in_flight: self.load.in_flight.load(Ordering::Relaxed),
            capacity_bytes: self.capacity_bytes,
            loading: state.loading.iter().cloned().collect(),
            failed: state
                .failed
                .iter()
                .map(|(sha256, (reason, _))| LoadFailure {
                    sha256: sha256.clone(),
                    reason: reason.clone(),
                })
                .collect(),
        }
    }

    /// Announces this node at once, every `ANNOUNCE_SECS`, when a gateway asks and when its
    /// load or targets change (coalesced), until the connection closes. `ready` is told once
    /// it listens for gateways' questions.
    pub async fn announcements(
        &self,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), async_nats::Error> {
        let mut discover = self.client.subscribe(DISCOVER_SUBJECT).await?;
        self.client.flush().await?;
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        tracing::info!(node_id = %self.node_id(), "serving models over NATS");
        let mut every = tokio::time::interval(Duration::from_secs(ANNOUNCE_SECS));
        every.tick().await; // the first tick is now: the loop announces at once anyway
        loop {
            let body = serde_json::to_vec(&self.announcement())?;
            self.client.publish(ANNOUNCE_SUBJECT, body.into()).await?;
            tokio::select! {
                _ = every.tick() => {}
                asked = discover.next() => {
                    if asked.is_none() {
                        return Ok(());
                    }
                }
                () = self.load.changed.notified() => {
                    // Coalesce a burst of starts and ends into one announcement.
                    tokio::time::sleep(Duration::from_millis(LOAD_ANNOUNCE_MILLIS)).await;
                }
            }
        }
    }
}

/// Says on NATS that this node serves nothing any more (a clean stop), so gateways stop
/// choosing it before its announcements expire.
pub async fn withdraw(client: &async_nats::Client, node_id: &str) {
    let gone = Announce {
        node_id: node_id.to_string(),
        ..Announce::default()
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
