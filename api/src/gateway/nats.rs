//! The NATS transport: nodes anywhere, reached through NATS request/reply with the tokens
//! streamed back on an inbox subject (protocol in `aiforge_inference::remote`).
//!
//! Routing: the nodes announce what they serve and how many requests they are generating
//! ([`Directory`], filled from `aiforge.nodes.announce`; at start the gateway asks every node to
//! announce itself). A call goes to the least loaded node that serves the model's content (its
//! SHA-256) or its platform model id, on that node's own subject. A node that refuses, fails, is
//! gone (no responders) or stays silent until the idle timeout *before the first token* is
//! counted as a retry and the call goes once to another node; after the first token, what was
//! delivered stands and is billed (the node is lost). Before any announcement has arrived, a
//! call goes to the queue group of the content subject, then of the model id's subject (any
//! node of the target); "no responders" on both is `NoNode`.
//!
//! Load is what the node last announced or what this gateway has in flight to it, whichever is
//! larger: one instance sees its own calls at once, and the others' through the announcements
//! (coalesced, a few a second at most).
//!
//! The node id a call is metered under is the key index's word (`KeyIndex::metered_node_id`):
//! a registered node's id only when its reply carried that node's token, checked against the
//! digest the index folded from `NodeRegistered` (no database query on the call's path).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiforge_commands::gateway::KeyIndex;
use aiforge_domain::placement::NodeRoom;
use aiforge_inference::remote::{
    content_target, engine_error, model_target, node_subject, subject, Announce, LoadFailure,
    Reply, StreamMessage, ANNOUNCE_SECS, ANNOUNCE_SUBJECT, DISCOVER_SUBJECT,
};
use aiforge_inference::{ChatRequest, Delta};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use super::nodes::{ModelTarget, NodeCompletion, NodeError, NodeTransport};

/// How long a node has to accept a request.
pub const ACCEPT_TIMEOUT_SECS: u64 = 10;
/// The default longest silence of a node mid-generation before it counts as lost.
pub const IDLE_TIMEOUT_SECS_DEFAULT: u64 = 30;
/// A node not heard from for this long (two and a half announcement periods) is not chosen.
pub const NODE_EXPIRY_SECS: u64 = ANNOUNCE_SECS * 5 / 2;
/// How many nodes one call may try: the first choice and one other.
pub const ATTEMPTS_MAX: usize = 2;

/// Calls sent to a second node because the first refused, failed, was gone or went silent
/// before the first token (`/metrics`: `aiforge_node_retries_total`).
pub static NODE_RETRIES_TOTAL: AtomicU64 = AtomicU64::new(0);

pub struct NatsNodes {
    client: async_nats::Client,
    idle_timeout: Duration,
    directory: Arc<Directory>,
    index: Arc<KeyIndex>,
}

impl NatsNodes {
    /// The nodes this gateway routes to.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.clone()
    }
}

impl NatsNodes {
    /// Follows the nodes' announcements (asking every node to announce itself now) and routes
    /// calls by them.
    pub async fn connect(
        client: async_nats::Client,
        idle_timeout: Duration,
        index: Arc<KeyIndex>,
    ) -> Result<Self, async_nats::Error> {
        let directory = Arc::new(Directory::default());
        let mut announcements = client.subscribe(ANNOUNCE_SUBJECT).await?;
        client
            .publish(DISCOVER_SUBJECT, bytes::Bytes::new())
            .await?;
        client.flush().await?;
        tokio::spawn({
            let directory = directory.clone();
            async move {
                while let Some(message) = announcements.next().await {
                    match serde_json::from_slice::<Announce>(&message.payload) {
                        Ok(announce) => directory.heard(announce, Instant::now()),
                        Err(e) => tracing::warn!(error = %e, "unreadable node announcement"),
                    }
                }
            }
        });
        Ok(Self {
            client,
            idle_timeout,
            directory,
            index,
        })
    }

    /// A chosen node that did not accept in time: a node killed a moment ago can still hold its
    /// subscription on a busy NATS server (the request then times out instead of finding no
    /// responders), and a live node that cannot accept is no better a choice. Not chosen again
    /// until it announces (its next announcement, at the latest `ANNOUNCE_SECS` later).
    fn forget_unresponsive(&self, route: &Route) {
        if let Some(node) = &route.node {
            tracing::warn!(%node, "a node did not accept a request in time; not chosen until it announces again");
            self.directory.forget(node);
        }
    }

    /// Tells the node generating on `stream` to stop.
    async fn cancel(&self, stream: &str) {
        let _ = self
            .client
            .publish(format!("{stream}.cancel"), bytes::Bytes::new())
            .await;
    }

    /// One node's try at the call: offered on `subject`, then streamed. `delivered` says
    /// whether any token reached the client (after which nothing is retried).
    async fn attempt(
        &self,
        route: &Route,
        request: &ChatRequest,
        deltas: &mpsc::Sender<Delta>,
        delivered: &mut bool,
    ) -> Result<NodeCompletion, Failure> {
        let fail = |error: NodeError, retry: bool| Failure { error, retry };
        let lost = |reason: String| NodeError::Lost {
            node_id: route.label(),
            reason,
        };
        let stream = self.client.new_inbox();
        let mut messages = self
            .client
            .subscribe(stream.clone())
            .await
            .map_err(|e| fail(lost(e.to_string()), true))?;
        let payload: bytes::Bytes = serde_json::to_vec(&InferRequestRef {
            stream: &stream,
            request,
        })
        .map_err(|e| fail(lost(e.to_string()), false))?
        .into();
        let mut node_id = None;
        for subject in &route.subjects {
            let offer = self.client.request(subject.clone(), payload.clone());
            match tokio::time::timeout(Duration::from_secs(ACCEPT_TIMEOUT_SECS), offer).await {
                Err(_) => {
                    self.forget_unresponsive(route);
                    return Err(fail(
                        lost("no node accepted the request in time".into()),
                        true,
                    ));
                }
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    if let Some(node) = &route.node {
                        // Gone without saying so (killed): not chosen again until it announces.
                        self.directory.forget(node);
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    if e.kind() == async_nats::RequestErrorKind::TimedOut {
                        self.forget_unresponsive(route);
                    }
                    return Err(fail(lost(e.to_string()), true));
                }
                Ok(Ok(reply)) => match serde_json::from_slice::<Reply>(&reply.payload) {
                    Ok(Reply::Accepted(id)) => {
                        node_id = Some(self.index.metered_node_id(&id, None));
                        break;
                    }
                    Ok(Reply::AcceptedBy(node)) => {
                        node_id =
                            Some(self.index.metered_node_id(&node.node_id, Some(&node.token)));
                        break;
                    }
                    Ok(Reply::Refused(message)) => {
                        return Err(fail(
                            NodeError::Engine {
                                node_id: route.label(),
                                source: aiforge_inference::EngineError::InvalidRequest(message),
                            },
                            true,
                        ))
                    }
                    Err(e) => return Err(fail(lost(format!("unreadable reply: {e}")), true)),
                },
            }
        }
        let Some(node_id) = node_id else {
            return Err(fail(NodeError::NoNode, true));
        };
        let lost = |reason: &str| NodeError::Lost {
            node_id: node_id.clone(),
            reason: reason.to_string(),
        };
        let mut cancelled = false;
        loop {
            let next = tokio::time::timeout(self.idle_timeout, messages.next()).await;
            let message = match next {
                Err(_) => {
                    // A silent node may still be generating: tell it to stop.
                    self.cancel(&stream).await;
                    return Err(fail(
                        lost("the node went silent mid-generation"),
                        !*delivered,
                    ));
                }
                Ok(None) => return Err(fail(lost("the connection to NATS closed"), !*delivered)),
                Ok(Some(message)) => message,
            };
            match serde_json::from_slice::<StreamMessage>(&message.payload) {
                Ok(StreamMessage::Delta(text)) => {
                    *delivered = true;
                    if !cancelled && deltas.send(Delta { text }).await.is_err() {
                        // The client went away: tell the node, then wait for its final count.
                        cancelled = true;
                        self.cancel(&stream).await;
                    }
                }
                Ok(StreamMessage::Done(completion)) => {
                    return Ok(NodeCompletion {
                        node_id,
                        completion,
                    })
                }
                Ok(StreamMessage::Error(err)) => {
                    // The request's own fault answers the same on every node: not retried.
                    let retry = !*delivered && err.kind == "failed";
                    return Err(fail(
                        NodeError::Engine {
                            node_id,
                            source: engine_error(err),
                        },
                        retry,
                    ));
                }
                Err(e) => return Err(fail(lost(&format!("unreadable message: {e}")), !*delivered)),
            }
        }
    }
}

/// [`aiforge_inference::remote::InferRequest`]'s JSON, borrowing the request so a retry does
/// not copy it.
#[derive(Serialize)]
struct InferRequestRef<'a> {
    stream: &'a str,
    request: &'a ChatRequest,
}

/// Where one attempt goes: a chosen node's own subject, or the targets' queue groups.
struct Route {
    node: Option<String>,
    subjects: Vec<String>,
    /// Counts this call in the chosen node's load while the attempt runs.
    _in_flight: Option<InFlight>,
}

impl Route {
    fn label(&self) -> String {
        match &self.node {
            Some(node) => node.clone(),
            None => "nats".into(),
        }
    }
}

/// An attempt that did not end in a completion, and whether another node may take the call.
struct Failure {
    error: NodeError,
    retry: bool,
}

#[async_trait]
impl NodeTransport for NatsNodes {
    async fn generate(
        &self,
        target: &ModelTarget,
        request: ChatRequest,
        deltas: mpsc::Sender<Delta>,
    ) -> Result<NodeCompletion, NodeError> {
        // A remote node streams every answer: its deltas are what tells this gateway it is still
        // alive (`idle_timeout`), and what it delivered before dying is what gets billed.
        let request = ChatRequest {
            whole: false,
            ..request
        };
        let targets = [
            content_target(&target.sha256),
            model_target(&target.model_id),
        ];
        let mut tried: Vec<String> = Vec::new();
        let mut queue_tried = false;
        let mut last = NodeError::NoNode;
        let mut delivered = false;
        for attempt in 0..ATTEMPTS_MAX {
            let route = match self.directory.choose(&targets, &tried, Instant::now()) {
                Some((node, target, in_flight)) => {
                    tried.push(node.clone());
                    Route {
                        subjects: vec![node_subject(&node, &target)],
                        node: Some(node),
                        _in_flight: Some(in_flight),
                    }
                }
                None if !queue_tried => {
                    queue_tried = true;
                    Route {
                        node: None,
                        subjects: targets.iter().map(|t| subject(t)).collect(),
                        _in_flight: None,
                    }
                }
                None => break,
            };
            match self
                .attempt(&route, &request, &deltas, &mut delivered)
                .await
            {
                Ok(done) => return Ok(done),
                Err(Failure { error, retry }) if retry && attempt + 1 < ATTEMPTS_MAX => {
                    if !matches!(error, NodeError::NoNode) {
                        tracing::warn!(error = %error, "a node failed before the first token; trying another");
                    }
                    NODE_RETRIES_TOTAL.fetch_add(1, Ordering::Relaxed);
                    last = error;
                }
                Err(Failure { error, .. }) => return Err(error),
            }
        }
        Err(last)
    }
}

/// The nodes this gateway has heard announce themselves, their targets and their load.
#[derive(Default)]
pub struct Directory {
    nodes: Mutex<HashMap<String, NodeState>>,
    picks: AtomicU64,
}

#[derive(Debug)]
struct NodeState {
    targets: HashSet<String>,
    /// A node that takes placements: its room, what it loads, what it failed to load.
    capacity_bytes: Option<u64>,
    loading: Vec<String>,
    failed: Vec<LoadFailure>,
    /// Requests in flight as the node last announced.
    announced: u32,
    seen: Instant,
    /// This gateway's calls to the node now.
    ours: u32,
    /// When it was last chosen (a sequence number): ties go to the longest unchosen.
    last_pick: u64,
}

impl Directory {
    /// A node's announcement: its targets, load and room; no targets and no room means it
    /// stopped.
    pub fn heard(&self, announce: Announce, at: Instant) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if announce.targets.is_empty() && announce.capacity_bytes.is_none() {
            nodes.remove(&announce.node_id);
            return;
        }
        let node = nodes.entry(announce.node_id).or_insert(NodeState {
            targets: HashSet::new(),
            capacity_bytes: None,
            loading: Vec::new(),
            failed: Vec::new(),
            announced: 0,
            seen: at,
            ours: 0,
            last_pick: 0,
        });
        node.targets = announce.targets.into_iter().collect();
        node.capacity_bytes = announce.capacity_bytes;
        node.loading = announce.loading;
        node.failed = announce.failed;
        node.announced = announce.in_flight;
        node.seen = at;
    }

    /// The live nodes that take placements, as placement sees them.
    pub fn rooms(&self, now: Instant) -> Vec<NodeRoom> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let expiry = Duration::from_secs(NODE_EXPIRY_SECS);
        nodes
            .iter()
            .filter(|(_, node)| now.saturating_duration_since(node.seen) < expiry)
            .filter_map(|(id, node)| {
                Some(NodeRoom {
                    node_id: id.clone(),
                    capacity_bytes: node.capacity_bytes?,
                    holds: node
                        .targets
                        .iter()
                        .chain(node.loading.iter())
                        .cloned()
                        .collect(),
                    failed: node.failed.iter().map(|f| f.sha256.clone()).collect(),
                    in_flight: node.ours.max(node.announced),
                })
            })
            .collect()
    }

    /// A node that did not answer on its own subject: not chosen until it announces again.
    pub fn forget(&self, node_id: &str) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
    }

    /// The least loaded live node serving one of `targets` (in their order of preference for
    /// a node serving both), other than `excluded`; counted in flight until the guard drops.
    pub fn choose(
        self: &Arc<Self>,
        targets: &[String],
        excluded: &[String],
        now: Instant,
    ) -> Option<(String, String, InFlight)> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let expiry = Duration::from_secs(NODE_EXPIRY_SECS);
        let (id, target) = nodes
            .iter()
            .filter(|(id, node)| {
                now.saturating_duration_since(node.seen) < expiry && !excluded.contains(id)
            })
            .filter_map(|(id, node)| {
                let target = targets.iter().find(|t| node.targets.contains(*t))?;
                Some((id, node, target))
            })
            .min_by_key(|(id, node, _)| {
                (node.ours.max(node.announced), node.last_pick, (*id).clone())
            })
            .map(|(id, _, target)| (id.clone(), target.clone()))?;
        let node = nodes.get_mut(&id)?;
        node.ours += 1;
        node.last_pick = self.picks.fetch_add(1, Ordering::Relaxed) + 1;
        Some((
            id.clone(),
            target,
            InFlight {
                directory: self.clone(),
                node_id: id,
            },
        ))
    }

    /// Every node heard from and not expired, by id: what it serves and its load.
    pub fn snapshot(&self, now: Instant) -> Vec<NodeSeen> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let expiry = Duration::from_secs(NODE_EXPIRY_SECS);
        let mut out: Vec<NodeSeen> = nodes
            .iter()
            .filter(|(_, node)| now.saturating_duration_since(node.seen) < expiry)
            .map(|(id, node)| {
                let mut targets: Vec<String> = node.targets.iter().cloned().collect();
                targets.sort();
                NodeSeen {
                    node_id: id.clone(),
                    targets,
                    capacity_bytes: node.capacity_bytes,
                    loading: node.loading.clone(),
                    failed: node
                        .failed
                        .iter()
                        .map(|f| (f.sha256.clone(), f.reason.clone()))
                        .collect(),
                    in_flight_announced: node.announced,
                    in_flight_here: node.ours,
                    seen_secs_ago: now.saturating_duration_since(node.seen).as_secs(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// This gateway's calls in flight to `node_id`.
    pub fn ours(&self, node_id: &str) -> u32 {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .map_or(0, |n| n.ours)
    }
}

/// A node as this gateway knows it (`GET /api/admin/inference-nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NodeSeen {
    pub node_id: String,
    /// What it serves: model file SHA-256s and `id.<model id>` for upstream engines.
    pub targets: Vec<String>,
    /// A node that takes placements (`serve --auto`): the memory it gives to placed models.
    pub capacity_bytes: Option<u64>,
    /// Model files placed on it that it is downloading or loading.
    pub loading: Vec<String>,
    /// Model files it failed to load lately (SHA-256 -> why).
    pub failed: std::collections::BTreeMap<String, String>,
    /// Requests in flight as the node last announced (every gateway's).
    pub in_flight_announced: u32,
    /// This instance's calls to it now.
    pub in_flight_here: u32,
    pub seen_secs_ago: u64,
}

/// One call counted in a node's load; the count falls when it drops.
pub struct InFlight {
    directory: Arc<Directory>,
    node_id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut nodes = self
            .directory
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(node) = nodes.get_mut(&self.node_id) {
            node.ours = node.ours.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(node: &str, targets: &[&str], in_flight: u32) -> Announce {
        Announce {
            node_id: node.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            in_flight,
            ..Announce::default()
        }
    }

    fn targets() -> Vec<String> {
        vec!["sha".into(), "id.m".into()]
    }

    #[test]
    fn the_least_loaded_node_of_the_target_is_chosen_and_counted_until_the_call_ends() {
        let directory = Arc::new(Directory::default());
        let now = Instant::now();
        directory.heard(announce("a", &["sha"], 0), now);
        directory.heard(announce("b", &["sha"], 0), now);
        directory.heard(announce("c", &["other"], 0), now);
        let (first, target, one) = directory.choose(&targets(), &[], now).unwrap();
        assert_eq!(target, "sha");
        // The other node has nothing in flight: it takes the next call.
        let (second, _, two) = directory.choose(&targets(), &[], now).unwrap();
        assert_ne!(first, second);
        assert_ne!(second, "c", "c serves another model");
        assert_eq!(directory.ours(&first), 1);
        drop(one);
        assert_eq!(directory.ours(&first), 0);
        // `first` is free again, `second` is still busy.
        let (third, _, _three) = directory.choose(&targets(), &[], now).unwrap();
        assert_eq!(third, first);
        drop(two);
    }

    #[test]
    fn a_node_s_announced_load_counts_calls_of_other_gateways() {
        let directory = Arc::new(Directory::default());
        let now = Instant::now();
        directory.heard(announce("a", &["sha"], 3), now);
        directory.heard(announce("b", &["id.m"], 1), now);
        let (node, target, _g) = directory.choose(&targets(), &[], now).unwrap();
        assert_eq!((node.as_str(), target.as_str()), ("b", "id.m"));
    }

    #[test]
    fn excluded_expired_stopped_and_forgotten_nodes_are_never_chosen() {
        let directory = Arc::new(Directory::default());
        let start = Instant::now();
        directory.heard(announce("a", &["sha"], 0), start);
        directory.heard(announce("b", &["sha"], 0), start);
        assert_eq!(
            directory
                .choose(&targets(), &["a".into()], start)
                .map(|c| c.0),
            Some("b".into())
        );
        let later = start + Duration::from_secs(NODE_EXPIRY_SECS);
        assert!(directory.choose(&targets(), &[], later).is_none());
        directory.heard(announce("a", &["sha"], 0), later);
        directory.forget("b");
        assert_eq!(
            directory.choose(&targets(), &[], later).map(|c| c.0),
            Some("a".into())
        );
        directory.heard(announce("a", &[], 0), later);
        assert!(directory.choose(&targets(), &[], later).is_none());
    }
}
