//! HTTP routes. Handlers are thin: extract, build a command or query, run it, map the result.
//! A route module may use another's helpers, never in a cycle (a test below);
//! what many of them share lives here.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod blobs;
pub mod chat;
pub mod compute;
pub mod conversations;
pub mod fees;
pub mod group_revenue;
pub mod groups;
pub mod inference_nodes;
pub mod marketplace;
pub mod models;
pub mod openai;
pub mod ops;
pub mod payments;
pub mod payouts;
pub mod revenue;
pub mod series;
pub mod wallets;

use std::time::Duration;

use crate::AppState;

/// A command's response waits at most this long for the read models to include it, so that a
/// client's next read sees its own write.
pub const READ_YOUR_WRITES_WAIT_MILLIS: u64 = 2000;

/// Waits (bounded) until the projections include a command's last event, so the client's next
/// read sees its write. A timeout is logged, not failed: the write itself succeeded.
pub async fn read_your_writes(state: &AppState, last: Option<aiforge_commands::LogPosition>) {
    if let Some(at) = last {
        if let Err(e) = state
            .projector
            .wait_for(at, Duration::from_millis(READ_YOUR_WRITES_WAIT_MILLIS))
            .await
        {
            tracing::warn!(error = %e, "projections lag behind a command");
        }
        state
            .gateway
            .index
            .catch_up_to(
                &state.db,
                at,
                Duration::from_millis(READ_YOUR_WRITES_WAIT_MILLIS),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::collections::{BTreeMap, BTreeSet};

    /// Which route modules each route module names (`crate::routes::x` or `routes::x::`).
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
        let mut graph = BTreeMap::new();
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if name != "mod" {
                names.insert(name);
            }
        }
        for name in &names {
            let text = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
            let used = names
                .iter()
                .filter(|other| *other != name)
                .filter(|other| {
                    text.contains(&format!("routes::{other}::"))
                        || text.contains(&format!("routes::{other};"))
                        || text.contains(&format!("super::{other}::"))
                })
                .cloned()
                .collect();
            graph.insert(name.clone(), used);
        }
        graph
    }

    #[test]
    fn the_route_modules_use_each_other_without_a_cycle() {
        let graph = uses();
        assert!(graph.len() > 10, "the route modules were found: {graph:?}");
        // Depth-first search with colours: a grey module reached again closes a cycle.
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            grey: &mut Vec<String>,
            black: &mut BTreeSet<String>,
        ) {
            if black.contains(node) {
                return;
            }
            if let Some(at) = grey.iter().position(|g| g == node) {
                panic!("route modules in a cycle: {:?} -> {node}", &grey[at..]);
            }
            grey.push(node.to_string());
            for next in &graph[node] {
                visit(next, graph, grey, black);
            }
            grey.pop();
            black.insert(node.to_string());
        }
        let mut black = BTreeSet::new();
        for node in graph.keys() {
            visit(node, &graph, &mut Vec::new(), &mut black);
        }
    }
}
