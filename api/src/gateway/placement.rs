//! Placement on NATS inference nodes (`node-agent serve --auto`): every model that must be
//! served (a servable GGUF model with an active service; plans' models are services too) is
//! kept on at least one node that takes placements, within each node's announced room
//! (`aiforge_domain::placement`, the rule). Only nodes registered on this platform (its key
//! index knows their ids) are given models: another platform's nodes on the same NATS are not.
//!
//! The scheduler lease's holder runs the pass every [`PLACEMENT_PASS_SECS`], and at once when a
//! service or a model changes (the event bus, which carries every instance's events): it plans from the
//! nodes' announcements (what each holds and loads, its room and load) and sends every node its
//! whole set on `aiforge.placements.<node>` as a NATS request. The node's answer (its
//! announcement, with what it now loads) updates the directory at once; "no responders" means
//! the node is gone (killed): it is dropped and its models are planned again in the same pass,
//! so a dead node's models move within a pass or two, well inside the heartbeat timeout. The
//! plan keeps no state of its own: what the nodes say they hold is the placement, so a new
//! lease holder carries on where the last one was.
//!
//! Any instance answers `GET /api/admin/placements` by running the same rule on its own
//! directory: which node serves or loads which model, and why a model waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiforge_commands::gateway::KeyIndex;
use aiforge_commands::Database;
use aiforge_domain::placement::{plan, Plan, Waiting, WantedModel};
use aiforge_domain::serving::{Servability, ServingEngine};
use aiforge_inference::remote::{placement_subject, Announce, PlacedModel, Placement};
use serde::Serialize;

use super::nats::Directory;

/// How often the lease holder sends the nodes their placements (and notices a dead node).
pub const PLACEMENT_PASS_SECS: u64 = 2;
/// How long a node has to answer its placement.
pub const PLACEMENT_REPLY_SECS: u64 = 2;

/// A model file that must be served, with the platform models that are this file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToServe {
    pub sha256: String,
    pub cid: String,
    pub size_bytes: u64,
    pub memory_bytes: u64,
    pub model_ids: Vec<String>,
}

/// The model files to serve on nodes, by SHA-256: servable by a GGUF engine (an upstream card
/// is served by an `--upstream` node, never placed).
pub async fn to_serve(db: &Database) -> Result<BTreeMap<String, ToServe>, sqlx::Error> {
    let mut out: BTreeMap<String, ToServe> = BTreeMap::new();
    for row in aiforge_projections::marketplace::models_to_serve(db).await? {
        let servable = row
            .servability
            .as_deref()
            .and_then(|json| serde_json::from_str::<Servability>(json).ok());
        let Some(Servability::Servable(servable)) = servable else {
            continue;
        };
        if !matches!(
            servable.engine,
            ServingEngine::Candle | ServingEngine::LlamaCpp
        ) {
            continue;
        }
        out.entry(row.sha256.clone())
            .or_insert_with(|| ToServe {
                sha256: row.sha256.clone(),
                cid: row.cid.clone(),
                size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
                memory_bytes: servable.memory_bytes,
                model_ids: Vec::new(),
            })
            .model_ids
            .push(row.model_id);
    }
    Ok(out)
}

fn wanted(models: &BTreeMap<String, ToServe>) -> Vec<WantedModel> {
    models
        .values()
        .map(|m| WantedModel {
            sha256: m.sha256.clone(),
            memory_bytes: m.memory_bytes,
        })
        .collect()
}

/// Sends the nodes their placements (on the lease holder).
pub struct Placer {
    pub client: async_nats::Client,
    pub directory: Arc<Directory>,
    pub db: Database,
    pub index: Arc<KeyIndex>,
    /// The pass reads the views: after a service or model event, it waits for them to include it.
    pub projector: aiforge_projections::Projector,
}

/// The live nodes that take placements and are registered here (nodes on the same NATS that
/// this platform does not know are left alone).
fn rooms(directory: &Directory, index: &KeyIndex) -> Vec<aiforge_domain::placement::NodeRoom> {
    let mut rooms = directory.rooms(Instant::now());
    rooms.retain(|room| index.is_registered_node(&room.node_id));
    rooms
}

impl Placer {
    /// Runs a pass every [`PLACEMENT_PASS_SECS`] while this instance holds the scheduler lease,
    /// and at once when a service or a model changes (a new service's model is placed without
    /// waiting for the next tick), until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        lease: Arc<aiforge_commands::lease::Lease>,
        bus: aiforge_commands::bus::EventBus,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut events = bus.subscribe();
        loop {
            if lease.is_held() {
                if let Err(e) = self.run_once().await {
                    tracing::error!(pass = "placement", error = %aiforge_domain::error_chain(&e), "periodic pass failed");
                }
            }
            let next = tokio::time::Instant::now() + Duration::from_secs(PLACEMENT_PASS_SECS);
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => break,
                    _ = shutdown.changed() => return,
                    event = events.recv() => match event {
                        Ok(event) if matches!(event.aggregate_type.as_str(), "api_service" | "model") => {
                            // The pass reads the views: once they include the event.
                            if let Err(e) = self
                                .projector
                                .wait_for(event.log_position(), Duration::from_secs(PLACEMENT_PASS_SECS))
                                .await
                            {
                                tracing::debug!(error = %e, "placement: the views lag behind an event");
                            }
                            break;
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(next).await;
                            break;
                        }
                    },
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One pass: plan, send each node its set; a node gone is dropped and the plan made again.
    pub async fn run_once(&self) -> Result<Plan, sqlx::Error> {
        let models = to_serve(&self.db).await?;
        let wanted = wanted(&models);
        let mut current = plan(&wanted, &rooms(&self.directory, &self.index));
        // Each round drops at least one node, so this ends.
        loop {
            let mut gone = false;
            for (node, shas) in &current.nodes {
                let placement = Placement {
                    models: shas
                        .iter()
                        .filter_map(|sha| models.get(sha))
                        .map(|m| PlacedModel {
                            sha256: m.sha256.clone(),
                            cid: m.cid.clone(),
                            size_bytes: m.size_bytes,
                            memory_bytes: m.memory_bytes,
                            model_ids: m.model_ids.clone(),
                        })
                        .collect(),
                };
                let Ok(body) = serde_json::to_vec(&placement) else {
                    continue;
                };
                let asked = self.client.request(placement_subject(node), body.into());
                match tokio::time::timeout(Duration::from_secs(PLACEMENT_REPLY_SECS), asked).await {
                    Ok(Ok(reply)) => match serde_json::from_slice::<Announce>(&reply.payload) {
                        Ok(announce) => self.directory.heard(announce, Instant::now()),
                        Err(e) => {
                            tracing::warn!(%node, error = %e, "unreadable answer to a placement")
                        }
                    },
                    Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                        tracing::warn!(%node, "an inference node is gone; its models are placed again");
                        self.directory.forget(node);
                        gone = true;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%node, error = %e, "a placement was not delivered")
                    }
                    Err(_) => tracing::warn!(%node, "a node did not answer its placement in time"),
                }
            }
            if !gone {
                return Ok(current);
            }
            current = plan(&wanted, &rooms(&self.directory, &self.index));
        }
    }
}

/// What placement looks like from this instance (`GET /api/admin/placements`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Placements {
    /// Whether this instance holds the scheduler lease (and so sends the placements).
    pub placing: bool,
    /// Whether this instance's in-process node serves any model on its first call as well
    /// (`AIFORGE_LOCAL_NODE`): a model waiting for a node is still answered here.
    pub in_process: bool,
    pub models: Vec<ModelPlacement>,
    pub nodes: Vec<NodePlacement>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelPlacement {
    pub sha256: String,
    /// The platform models that are this file.
    pub model_ids: Vec<String>,
    pub memory_bytes: u64,
    /// Nodes that serve it now (their announcements say so).
    pub serving_on: Vec<String>,
    /// Nodes it is placed on that are downloading or loading it.
    pub loading_on: Vec<String>,
    /// Nodes the rule gives it to now.
    pub placed_on: Vec<String>,
    /// Why it is on no node (`no_node`, `no_room`, `load_failed`), with a sentence.
    pub waiting: Option<WaitingReason>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WaitingReason {
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodePlacement {
    pub node_id: String,
    pub capacity_bytes: u64,
    /// The memory of the models the rule gives it (never above its capacity).
    pub placed_bytes: u64,
    pub placed: Vec<String>,
    /// Model files it failed to load lately, and why.
    pub failed: BTreeMap<String, String>,
}

/// [`view`] with this instance's database, directory, key index and lease.
pub async fn view_of(state: &crate::AppState) -> Result<Placements, sqlx::Error> {
    view(
        &state.db,
        state.gateway.nats_directory.as_deref(),
        &state.gateway.index,
        state.scheduler_lease.is_held(),
        state.gateway.in_process_pool,
    )
    .await
}

/// The placement view: the rule run on this instance's directory.
pub async fn view(
    db: &Database,
    directory: Option<&Directory>,
    index: &KeyIndex,
    placing: bool,
    in_process: bool,
) -> Result<Placements, sqlx::Error> {
    let models = to_serve(db).await?;
    let now = Instant::now();
    let rooms = directory.map(|d| rooms(d, index)).unwrap_or_default();
    let seen = directory.map(|d| d.snapshot(now)).unwrap_or_default();
    let current = plan(&wanted(&models), &rooms);
    let models_out = models
        .values()
        .map(|m| ModelPlacement {
            sha256: m.sha256.clone(),
            model_ids: m.model_ids.clone(),
            memory_bytes: m.memory_bytes,
            serving_on: seen
                .iter()
                .filter(|n| n.targets.contains(&m.sha256))
                .map(|n| n.node_id.clone())
                .collect(),
            loading_on: seen
                .iter()
                .filter(|n| n.loading.contains(&m.sha256))
                .map(|n| n.node_id.clone())
                .collect(),
            placed_on: current
                .nodes_of(&m.sha256)
                .into_iter()
                .map(str::to_string)
                .collect(),
            waiting: current.waiting.get(&m.sha256).map(|w| WaitingReason {
                code: match w {
                    Waiting::NoNode => "no_node",
                    Waiting::NoRoom { .. } => "no_room",
                    Waiting::LoadFailed => "load_failed",
                }
                .to_string(),
                reason: w.to_string(),
            }),
        })
        .collect();
    let nodes = rooms
        .iter()
        .map(|room| {
            let placed: Vec<String> = current
                .nodes
                .get(&room.node_id)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            NodePlacement {
                node_id: room.node_id.clone(),
                capacity_bytes: room.capacity_bytes,
                placed_bytes: placed
                    .iter()
                    .filter_map(|sha| models.get(sha))
                    .map(|m| m.memory_bytes)
                    .sum(),
                placed,
                failed: seen
                    .iter()
                    .find(|n| n.node_id == room.node_id)
                    .map(|n| n.failed.clone())
                    .unwrap_or_default(),
            }
        })
        .collect::<Vec<_>>();
    let mut nodes = nodes;
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(Placements {
        placing,
        in_process,
        models: models_out,
        nodes,
    })
}
