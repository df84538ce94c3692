//! Placement: which inference node holds which model. A pure rule over what the nodes said
//! (their room and what they hold) and what must be served (every servable model with an
//! active service, plans included); the coordinator runs it on the scheduler lease's holder
//! and sends each node its set (`api/src/gateway/placement.rs`), and any instance runs it to
//! show why a model waits.
//!
//! The rule, in order:
//! 1. **What a node holds stays** (serving or loading), while the model is still wanted and it
//!    fits: a restart of the coordinator, or another instance taking the lease, moves nothing.
//! 2. **A model no node holds goes to the node with the most free room** that it fits in (ties
//!    to the lower node id), never to a node whose load of it failed. Larger models first, so a
//!    large one is not crowded out by small ones.
//! 3. **Traffic**: a model whose every node has at least [`REPLICA_IN_FLIGHT`] calls in flight
//!    gets one more node (the one with the most free room), one per pass.
//!
//! A node is never given more than its room: the sum of its models' memory (as judged at
//! upload) stays within the capacity it announced. A model that cannot be placed waits, with
//! its reason.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// A model gets another node when each of its nodes has this many calls in flight.
pub const REPLICA_IN_FLIGHT: u32 = 4;

/// A model to serve: its file (by SHA-256) and the memory it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedModel {
    pub sha256: String,
    pub memory_bytes: u64,
}

/// An inference node that takes placements, as it last said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeRoom {
    pub node_id: String,
    /// The memory it gives to placed models.
    pub capacity_bytes: u64,
    /// What it serves or is loading (SHA-256s).
    pub holds: BTreeSet<String>,
    /// Models it could not load (not given to it again while it says so).
    pub failed: BTreeSet<String>,
    /// Calls it is generating now.
    pub in_flight: u32,
}

/// Why a model is on no node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Waiting {
    /// No node that takes placements is connected.
    NoNode,
    /// No node has room for it now.
    NoRoom {
        memory_bytes: u64,
        largest_free_bytes: u64,
    },
    /// Every node with room failed to load it.
    LoadFailed,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Waiting::NoNode => write!(f, "no inference node that takes placements is connected"),
            Waiting::NoRoom {
                memory_bytes,
                largest_free_bytes,
            } => write!(
                f,
                "no inference node has room: the model needs {memory_bytes} bytes, the most free on a node is {largest_free_bytes}"
            ),
            Waiting::LoadFailed => write!(f, "every node with room failed to load it"),
        }
    }
}

/// Each node's models (every node listed, maybe with none) and the models that wait.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub nodes: BTreeMap<String, BTreeSet<String>>,
    pub waiting: BTreeMap<String, Waiting>,
}

impl Plan {
    /// The nodes given `sha256`.
    pub fn nodes_of(&self, sha256: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|(_, models)| models.contains(sha256))
            .map(|(node, _)| node.as_str())
            .collect()
    }
}

/// The placement of `wanted` on `nodes` (the rule in the module's comment).
pub fn plan(wanted: &[WantedModel], nodes: &[NodeRoom]) -> Plan {
    let mut order: Vec<&WantedModel> = wanted.iter().collect();
    order.sort_by(|a, b| {
        b.memory_bytes
            .cmp(&a.memory_bytes)
            .then(a.sha256.cmp(&b.sha256))
    });
    order.dedup_by(|a, b| a.sha256 == b.sha256);
    let mut nodes: Vec<&NodeRoom> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let mut free: Vec<u64> = nodes.iter().map(|n| n.capacity_bytes).collect();
    let mut given: Vec<BTreeSet<String>> = vec![BTreeSet::new(); nodes.len()];
    let mut out = Plan::default();

    // 1. What a node holds stays, within its room.
    for model in &order {
        for (i, node) in nodes.iter().enumerate() {
            if node.holds.contains(&model.sha256)
                && !node.failed.contains(&model.sha256)
                && free[i] >= model.memory_bytes
            {
                free[i] -= model.memory_bytes;
                given[i].insert(model.sha256.clone());
            }
        }
    }
    // 2. A model on no node goes where the most room is; 3. a busy one gets one more node.
    for model in &order {
        let on: Vec<usize> = (0..nodes.len())
            .filter(|&i| given[i].contains(&model.sha256))
            .collect();
        let busy = !on.is_empty() && on.iter().all(|&i| nodes[i].in_flight >= REPLICA_IN_FLIGHT);
        if !on.is_empty() && !busy {
            continue;
        }
        let candidates = (0..nodes.len()).filter(|&i| {
            !given[i].contains(&model.sha256) && !nodes[i].failed.contains(&model.sha256)
        });
        let best = candidates
            .clone()
            .filter(|&i| free[i] >= model.memory_bytes)
            .max_by(|&a, &b| free[a].cmp(&free[b]).then(b.cmp(&a)));
        match best {
            Some(i) => {
                free[i] -= model.memory_bytes;
                given[i].insert(model.sha256.clone());
            }
            None if on.is_empty() => {
                let reason = if nodes.is_empty() {
                    Waiting::NoNode
                } else {
                    match candidates.map(|i| free[i]).max() {
                        Some(largest_free_bytes) => Waiting::NoRoom {
                            memory_bytes: model.memory_bytes,
                            largest_free_bytes,
                        },
                        None => Waiting::LoadFailed,
                    }
                };
                out.waiting.insert(model.sha256.clone(), reason);
            }
            None => {}
        }
    }
    for (node, models) in nodes.iter().zip(given) {
        out.nodes.insert(node.node_id.clone(), models);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn model(sha: &str, memory_bytes: u64) -> WantedModel {
        WantedModel {
            sha256: sha.into(),
            memory_bytes,
        }
    }

    fn node(id: &str, capacity_bytes: u64, holds: &[&str]) -> NodeRoom {
        NodeRoom {
            node_id: id.into(),
            capacity_bytes,
            holds: holds.iter().map(|s| s.to_string()).collect(),
            ..NodeRoom::default()
        }
    }

    fn used(plan: &Plan, wanted: &[WantedModel], node: &str) -> u64 {
        plan.nodes[node]
            .iter()
            .map(|sha| {
                wanted
                    .iter()
                    .find(|m| &m.sha256 == sha)
                    .unwrap()
                    .memory_bytes
            })
            .sum()
    }

    #[test]
    fn a_new_model_goes_to_the_node_with_the_most_room_and_held_models_stay() {
        let wanted = [model("a", 100 * MB), model("b", 100 * MB)];
        let nodes = [node("n1", 300 * MB, &["a"]), node("n2", 250 * MB, &[])];
        let plan = plan(&wanted, &nodes);
        assert_eq!(plan.nodes_of("a"), vec!["n1"], "held: stays");
        // n1 has 200 MB free after a, n2 250 MB: b goes to n2.
        assert_eq!(plan.nodes_of("b"), vec!["n2"]);
        assert!(plan.waiting.is_empty());
    }

    #[test]
    fn a_model_no_longer_wanted_is_taken_back() {
        let plan = plan(&[model("a", MB)], &[node("n1", 10 * MB, &["a", "gone"])]);
        assert_eq!(plan.nodes["n1"], BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn a_dead_node_s_models_move_to_the_survivor() {
        let wanted = [model("a", 100 * MB)];
        let before = plan(&wanted, &[node("n1", GB, &[]), node("n2", GB, &[])]);
        assert_eq!(before.nodes_of("a"), vec!["n1"], "ties go to the lower id");
        // n1 is gone: the next plan has only n2.
        let after = plan(&wanted, &[node("n2", GB, &[])]);
        assert_eq!(after.nodes_of("a"), vec!["n2"]);
    }
    const GB: u64 = 1_000 * MB;

    #[test]
    fn a_node_announcing_500_mb_is_never_given_more_than_500_mb() {
        // Every mix of sizes, held or not, over a 500 MB node and a smaller one.
        let sizes = [90, 120, 200, 260, 310, 499, 500, 501];
        for first in 0..sizes.len() {
            for count in 1..=sizes.len() {
                let wanted: Vec<WantedModel> = (0..count)
                    .map(|k| {
                        let size = sizes[(first + k) % sizes.len()];
                        model(&format!("m{k}-{size}"), size * MB)
                    })
                    .collect();
                let held: Vec<&str> = wanted.iter().map(|m| m.sha256.as_str()).collect();
                for holds in [&held[..], &[]] {
                    let nodes = [node("big", 500 * MB, holds), node("small", 150 * MB, &[])];
                    let plan = plan(&wanted, &nodes);
                    assert!(used(&plan, &wanted, "big") <= 500 * MB, "{plan:?}");
                    assert!(used(&plan, &wanted, "small") <= 150 * MB, "{plan:?}");
                    for m in &wanted {
                        let placed = !plan.nodes_of(&m.sha256).is_empty();
                        assert_ne!(placed, plan.waiting.contains_key(&m.sha256), "{m:?}");
                    }
                }
            }
        }
        let plan = plan(&[model("huge", 501 * MB)], &[node("big", 500 * MB, &[])]);
        assert_eq!(
            plan.waiting["huge"],
            Waiting::NoRoom {
                memory_bytes: 501 * MB,
                largest_free_bytes: 500 * MB
            }
        );
        assert_eq!(
            plan.waiting["huge"].to_string(),
            "no inference node has room: the model needs 501000000 bytes, the most free on a node is 500000000"
        );
    }

    #[test]
    fn a_model_waits_with_its_reason_when_there_is_no_node_or_every_load_failed() {
        let wanted = [model("a", MB)];
        assert_eq!(plan(&wanted, &[]).waiting["a"], Waiting::NoNode);
        let mut failed = node("n1", GB, &["a"]);
        failed.failed.insert("a".into());
        let plan = plan(&wanted, &[failed]);
        assert_eq!(plan.waiting["a"], Waiting::LoadFailed);
        assert!(
            plan.nodes["n1"].is_empty(),
            "not given again while it says it failed"
        );
    }

    #[test]
    fn a_model_whose_nodes_are_all_busy_gets_one_more_node() {
        let wanted = [model("a", 100 * MB)];
        let mut busy = node("n1", GB, &["a"]);
        busy.in_flight = REPLICA_IN_FLIGHT;
        let nodes = [busy.clone(), node("n2", GB, &[]), node("n3", GB, &[])];
        let plan_busy = plan(&wanted, &nodes);
        assert_eq!(
            plan_busy.nodes_of("a"),
            vec!["n1", "n2"],
            "one more per pass"
        );
        busy.in_flight = REPLICA_IN_FLIGHT - 1;
        let calm = plan(&wanted, &[busy, node("n2", GB, &[])]);
        assert_eq!(calm.nodes_of("a"), vec!["n1"]);
    }
}
