//! The scheduler's decision: which pending jobs go to which active nodes now. A pure function
//! of its inputs (the application layer reads them from the views, then sends
//! `JobCommand::Assign` for each assignment); the same inputs give the same assignments.
//!
//! Rules:
//! - Oldest job first: by `submitted_at`, then `job_id`.
//! - A job goes only to a node whose free capacity fits its needs: a free slot (fewer jobs than
//!   `max_concurrent_jobs`), enough free CPU cores and memory, and for a GPU job enough free GPUs
//!   with at least `gpu_memory_mb` each. The views count GPUs in use, not which ones, so the
//!   count is read pessimistically: the GPUs in use are assumed to be the largest. A node with
//!   mixed GPUs may so turn down a job it could run, but never takes one it cannot.
//! - Among the nodes that fit: for a CPU-only job, nodes without GPUs first (GPUs stay free for
//!   the jobs that need them); then the least loaded (fewest jobs per slot); then the lower
//!   node id.
//! - A job that fits on no node now is skipped and the younger jobs still get their turn, so one
//!   large job never blocks the queue. The cost: a large job may wait while small ones keep the
//!   nodes busy; it keeps its place at the head of the queue for every later pass.
//! - Each job id is assigned at most once per pass and each node id counts once (the first entry
//!   of a repeated id is used).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::job::JobNeeds;
use crate::node::Resources;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    pub job_id: String,
    pub submitted_at: OffsetDateTime,
    pub needs: JobNeeds,
}

/// What a node's assigned and running jobs hold now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub jobs: u32,
    pub cpu_cores: u64,
    pub memory_mb: u64,
    pub gpus: u64,
}

impl NodeLoad {
    fn plus(self, needs: &JobNeeds) -> NodeLoad {
        NodeLoad {
            jobs: self.jobs.saturating_add(1),
            cpu_cores: self.cpu_cores.saturating_add(u64::from(needs.cpu_cores)),
            memory_mb: self.memory_mb.saturating_add(needs.memory_mb),
            gpus: self.gpus.saturating_add(u64::from(needs.gpus)),
        }
    }
}

/// An online, active node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveNode {
    pub node_id: String,
    pub resources: Resources,
    pub load: NodeLoad,
}

impl ActiveNode {
    /// Whether `needs` fits in what is free (see the module docs for GPUs).
    pub fn fits(&self, needs: &JobNeeds) -> bool {
        let r = &self.resources;
        let after = self.load.plus(needs);
        let gpus_fit = needs.gpus == 0 || {
            let big_enough = r
                .gpus
                .iter()
                .filter(|gpu| gpu.memory_mb >= needs.gpu_memory_mb)
                .count() as u64;
            big_enough.saturating_sub(self.load.gpus) >= u64::from(needs.gpus)
        };
        self.load.jobs < r.max_concurrent_jobs
            && after.cpu_cores <= u64::from(r.cpu_cores)
            && after.memory_mb <= r.memory_mb
            && gpus_fit
    }

    /// Jobs per slot, compared without division.
    fn cmp_load(&self, other: &ActiveNode) -> Ordering {
        let mine = u64::from(self.load.jobs) * u64::from(other.resources.max_concurrent_jobs);
        let theirs = u64::from(other.load.jobs) * u64::from(self.resources.max_concurrent_jobs);
        mine.cmp(&theirs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub job_id: String,
    pub node_id: String,
}

/// The assignments of one pass, oldest job first (see the module docs for the rules).
pub fn schedule(pending: &[PendingJob], nodes: &[ActiveNode]) -> Vec<Assignment> {
    let mut seen_nodes = BTreeSet::new();
    let mut nodes: Vec<ActiveNode> = nodes
        .iter()
        .filter(|node| seen_nodes.insert(node.node_id.as_str()))
        .cloned()
        .collect();
    let mut queue: Vec<&PendingJob> = pending.iter().collect();
    queue.sort_by(|a, b| (a.submitted_at, &a.job_id).cmp(&(b.submitted_at, &b.job_id)));
    let mut assigned = BTreeSet::new();
    let mut assignments = Vec::new();
    for job in queue {
        if assigned.contains(job.job_id.as_str()) {
            continue;
        }
        let cpu_only = job.needs.gpus == 0;
        let best = nodes
            .iter_mut()
            .filter(|node| node.fits(&job.needs))
            .min_by(|a, b| {
                let gpu_a = cpu_only && !a.resources.gpus.is_empty();
                let gpu_b = cpu_only && !b.resources.gpus.is_empty();
                gpu_a
                    .cmp(&gpu_b)
                    .then_with(|| a.cmp_load(b))
                    .then_with(|| a.node_id.cmp(&b.node_id))
            });
        if let Some(node) = best {
            node.load = node.load.plus(&job.needs);
            assigned.insert(job.job_id.as_str());
            assignments.push(Assignment {
                job_id: job.job_id.clone(),
                node_id: node.node_id.clone(),
            });
        }
    }
    assignments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Gpu;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use time::macros::datetime;
    use time::Duration;

    const T0: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn node(id: &str, cpu_cores: u32, gpus: &[u64], slots: u32) -> ActiveNode {
        ActiveNode {
            node_id: id.into(),
            resources: Resources {
                cpu_cores,
                memory_mb: 65_536,
                disk_gb: 100,
                gpus: gpus
                    .iter()
                    .map(|memory_mb| Gpu {
                        model: "gpu".into(),
                        memory_mb: *memory_mb,
                    })
                    .collect(),
                max_concurrent_jobs: slots,
            },
            load: NodeLoad::default(),
        }
    }

    fn job(id: &str, minute: i64, cpu_cores: u32, gpus: u32, gpu_memory_mb: u64) -> PendingJob {
        PendingJob {
            job_id: id.into(),
            submitted_at: T0 + Duration::minutes(minute),
            needs: JobNeeds {
                cpu_cores,
                memory_mb: 1024,
                gpus,
                gpu_memory_mb,
            },
        }
    }

    fn pairs(assignments: &[Assignment]) -> Vec<(&str, &str)> {
        assignments
            .iter()
            .map(|a| (a.job_id.as_str(), a.node_id.as_str()))
            .collect()
    }

    #[test]
    fn the_oldest_job_gets_the_last_slot() {
        let assignments = schedule(
            &[job("young", 5, 1, 0, 0), job("old", 1, 1, 0, 0)],
            &[node("n1", 8, &[], 1)],
        );
        assert_eq!(pairs(&assignments), [("old", "n1")]);
    }

    #[test]
    fn jobs_submitted_at_the_same_instant_go_in_job_id_order() {
        let assignments = schedule(
            &[job("b", 0, 1, 0, 0), job("a", 0, 1, 0, 0)],
            &[node("n1", 8, &[], 1)],
        );
        assert_eq!(pairs(&assignments), [("a", "n1")]);
    }

    #[test]
    fn a_gpu_job_never_goes_to_a_node_without_enough_gpus_or_gpu_memory() {
        let nodes = [
            node("cpu", 64, &[], 8),
            node("small", 8, &[8_192], 8),
            node("big", 8, &[24_576], 8),
        ];
        let assignments = schedule(
            &[
                job("needs-16g", 0, 1, 1, 16_384),
                job("needs-2", 1, 1, 2, 0),
            ],
            &nodes,
        );
        assert_eq!(pairs(&assignments), [("needs-16g", "big")]);
    }

    #[test]
    fn gpus_in_use_are_counted_as_the_largest() {
        let mut mixed = node("mixed", 8, &[8_192, 24_576], 8);
        mixed.load = NodeLoad {
            jobs: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            gpus: 1,
        };
        assert!(!mixed.fits(&job("j", 0, 1, 1, 16_384).needs));
        assert!(mixed.fits(&job("j", 0, 1, 1, 4_096).needs));
    }

    #[test]
    fn a_cpu_job_prefers_a_node_without_gpus() {
        let assignments = schedule(
            &[job("cpu-job", 0, 1, 0, 0)],
            &[node("a-gpu", 8, &[24_576], 8), node("z-cpu", 8, &[], 8)],
        );
        assert_eq!(pairs(&assignments), [("cpu-job", "z-cpu")]);
        // But it takes a GPU node rather than wait.
        let assignments = schedule(
            &[job("cpu-job", 0, 16, 0, 0)],
            &[node("a-gpu", 16, &[24_576], 8), node("z-cpu", 8, &[], 8)],
        );
        assert_eq!(pairs(&assignments), [("cpu-job", "a-gpu")]);
    }

    #[test]
    fn jobs_spread_to_the_least_loaded_node_then_by_node_id() {
        let mut busy = node("a", 32, &[], 4);
        busy.load = NodeLoad {
            jobs: 2,
            cpu_cores: 2,
            memory_mb: 2048,
            gpus: 0,
        };
        let assignments = schedule(
            &[
                job("j1", 0, 1, 0, 0),
                job("j2", 1, 1, 0, 0),
                job("j3", 2, 1, 0, 0),
                job("j4", 3, 1, 0, 0),
                job("j5", 4, 1, 0, 0),
            ],
            &[busy, node("b", 32, &[], 4), node("c", 32, &[], 4)],
        );
        assert_eq!(
            pairs(&assignments),
            [
                ("j1", "b"),
                ("j2", "c"),
                ("j3", "b"),
                ("j4", "c"),
                // All at 2 of 4: the tie goes to the lowest node id.
                ("j5", "a")
            ]
        );
    }

    #[test]
    fn a_job_that_fits_nowhere_does_not_block_younger_jobs() {
        let assignments = schedule(
            &[job("huge", 0, 64, 0, 0), job("small", 1, 2, 0, 0)],
            &[node("n1", 8, &[], 4)],
        );
        assert_eq!(pairs(&assignments), [("small", "n1")]);
    }

    #[test]
    fn a_full_node_takes_nothing_and_a_repeated_job_is_assigned_once() {
        let mut full = node("n1", 8, &[], 2);
        full.load.jobs = 2;
        assert!(schedule(&[job("j", 0, 1, 0, 0)], &[full]).is_empty());
        let assignments = schedule(
            &[job("j", 0, 1, 0, 0), job("j", 0, 1, 0, 0)],
            &[node("n1", 8, &[], 4)],
        );
        assert_eq!(pairs(&assignments), [("j", "n1")]);
    }

    fn arb_node() -> impl Strategy<Value = ActiveNode> {
        (
            0u8..6,
            1u32..17,
            prop::collection::vec(
                prop::sample::select(vec![8_192u64, 16_384, 24_576, 81_920]),
                0..4,
            ),
            1u32..5,
            0u32..3,
        )
            .prop_map(|(id, cpu_cores, gpus, slots, busy)| {
                let mut node = node(&format!("n{id}"), cpu_cores, &gpus, slots);
                node.resources.memory_mb = 16_384;
                node.load = NodeLoad {
                    jobs: busy,
                    cpu_cores: u64::from(busy),
                    memory_mb: u64::from(busy) * 512,
                    gpus: u64::from(busy.min(gpus.len() as u32)),
                };
                node
            })
    }

    fn arb_job() -> impl Strategy<Value = PendingJob> {
        (
            0i64..10,
            1u32..9,
            1u64..8_192,
            0u32..3,
            prop::sample::select(vec![0u64, 8_192, 16_384, 40_000]),
        )
            .prop_map(
                |(minute, cpu_cores, memory_mb, gpus, gpu_memory_mb)| PendingJob {
                    job_id: String::new(),
                    submitted_at: T0 + Duration::minutes(minute),
                    needs: JobNeeds {
                        cpu_cores,
                        memory_mb,
                        gpus,
                        gpu_memory_mb: if gpus == 0 { 0 } else { gpu_memory_mb },
                    },
                },
            )
    }

    /// Jobs with ids by position, and every third one repeated (same id, same needs).
    fn with_ids_and_repeats(jobs: Vec<PendingJob>) -> Vec<PendingJob> {
        let mut jobs: Vec<PendingJob> = jobs
            .into_iter()
            .enumerate()
            .map(|(n, job)| PendingJob {
                job_id: format!("j{n:02}"),
                ..job
            })
            .collect();
        let repeats: Vec<PendingJob> = jobs.iter().step_by(3).cloned().collect();
        jobs.extend(repeats);
        jobs
    }

    proptest! {
        #[test]
        fn the_scheduler_never_overfills_a_node_never_misplaces_a_gpu_job_and_never_assigns_twice(
            jobs in prop::collection::vec(arb_job(), 0..25),
            nodes in prop::collection::vec(arb_node(), 0..6),
        ) {
            let jobs = with_ids_and_repeats(jobs);
            let assignments = schedule(&jobs, &nodes);
            let mut first_node: BTreeMap<&str, &ActiveNode> = BTreeMap::new();
            for node in &nodes {
                first_node.entry(node.node_id.as_str()).or_insert(node);
            }
            let needs_of: BTreeMap<&str, &JobNeeds> = jobs
                .iter()
                .map(|j| (j.job_id.as_str(), &j.needs))
                .collect();
            let mut assigned = BTreeSet::new();
            let mut added: BTreeMap<&str, NodeLoad> = BTreeMap::new();
            for a in &assignments {
                prop_assert!(assigned.insert(a.job_id.as_str()), "{} assigned twice", a.job_id);
                let node = first_node[a.node_id.as_str()];
                let needs = needs_of[a.job_id.as_str()];
                if needs.gpus > 0 {
                    let big_enough = node.resources.gpus.iter()
                        .filter(|g| g.memory_mb >= needs.gpu_memory_mb).count();
                    prop_assert!(big_enough >= needs.gpus as usize);
                }
                let load = added.entry(a.node_id.as_str()).or_default();
                *load = load.plus(needs);
            }
            for (node_id, load) in added {
                let node = first_node[node_id];
                let r = &node.resources;
                let total = NodeLoad {
                    jobs: node.load.jobs + load.jobs,
                    cpu_cores: node.load.cpu_cores + load.cpu_cores,
                    memory_mb: node.load.memory_mb + load.memory_mb,
                    gpus: node.load.gpus + load.gpus,
                };
                prop_assert!(total.jobs <= r.max_concurrent_jobs);
                prop_assert!(total.cpu_cores <= u64::from(r.cpu_cores));
                prop_assert!(total.memory_mb <= r.memory_mb);
                prop_assert!(total.gpus <= r.gpus.len() as u64);
            }
        }

        #[test]
        fn the_order_pending_jobs_arrive_in_does_not_change_the_assignments(
            jobs in prop::collection::vec(arb_job(), 0..25),
            nodes in prop::collection::vec(arb_node(), 0..6),
        ) {
            let forward = with_ids_and_repeats(jobs);
            let backward: Vec<PendingJob> = forward.iter().rev().cloned().collect();
            prop_assert_eq!(schedule(&forward, &nodes), schedule(&backward, &nodes));
        }
    }
}
