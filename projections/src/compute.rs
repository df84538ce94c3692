//! The compute network's views: `nodes_view` (each node, what it offers, its state) with
//! `node_history_view`, and `jobs_view` (each job, its state, assignee, ending and settlement)
//! with `job_history_view` (every transition). Fields are copied from the events; the ledger
//! postings of a job's settlement go to the ledger views through the `payments` projection,
//! which owns them (`payments::post_to_ledger`), so a rebuild of either projection is complete.
//! Also the queries the scheduler and the heartbeat sweeper read.

use aiforge_commands::clock::rfc3339;
use aiforge_commands::RecordedEvent;
use aiforge_domain::blob::{Blob, BlobEvent, BlobPurpose};
use aiforge_domain::job::{Job, JobEvent, JobStatus};
use aiforge_domain::ledger::JobSettlement;
use aiforge_domain::node::{Node, NodeEvent, NodeStatus, Resources};
use cqrs_es::Aggregate;
use serde_json::json;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct ComputeProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "nodes_view",
        order_by: "node_id",
    },
    ViewTable {
        name: "node_history_view",
        order_by: "node_id, position",
    },
    ViewTable {
        name: "jobs_view",
        order_by: "job_id",
    },
    ViewTable {
        name: "job_history_view",
        order_by: "job_id, position",
    },
    ViewTable {
        name: "blobs_view",
        order_by: "cid",
    },
];

fn int(value: u64) -> SqlValue {
    SqlValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

fn text(value: impl Into<String>) -> SqlValue {
    SqlValue::Text(value.into())
}

fn json_text(
    event: &RecordedEvent,
    value: &impl serde::Serialize,
) -> Result<SqlValue, ProjectionError> {
    serde_json::to_string(value)
        .map(SqlValue::Text)
        .map_err(|e| ProjectionError::BadEvent {
            position: event.position,
            event_type: event.event_type.clone(),
            reason: e.to_string(),
        })
}

async fn node_changed(
    tx: &mut ViewTx,
    event: &RecordedEvent,
    node_id: &str,
    status: NodeStatus,
    offline_reason: Option<String>,
    detail: serde_json::Value,
    at: time::OffsetDateTime,
) -> Result<(), ProjectionError> {
    let at = rfc3339(at);
    tx.execute(
        "UPDATE nodes_view SET status = $1, offline_reason = $2, updated_at = $3 WHERE node_id = $4",
        &[
            text(status.as_str()),
            offline_reason.map_or(SqlValue::Null, SqlValue::Text),
            text(at.clone()),
            text(node_id),
        ],
    )
    .await?;
    node_history(tx, event, node_id, status, detail, at).await
}

async fn node_history(
    tx: &mut ViewTx,
    event: &RecordedEvent,
    node_id: &str,
    status: NodeStatus,
    detail: serde_json::Value,
    at: String,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO node_history_view (node_id, position, event_type, status, detail, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            text(node_id),
            SqlValue::Int(event.position),
            text(event.event_type.clone()),
            text(status.as_str()),
            text(detail.to_string()),
            text(at),
        ],
    )
    .await?;
    Ok(())
}

async fn job_history(
    tx: &mut ViewTx,
    event: &RecordedEvent,
    job_id: &str,
    status: JobStatus,
    node_id: Option<&str>,
    attempt: u32,
    at: &str,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO job_history_view (job_id, position, event_type, status, node_id, attempt, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            text(job_id),
            SqlValue::Int(event.position),
            text(event.event_type.clone()),
            text(status.as_str()),
            node_id.map_or(SqlValue::Null, text),
            SqlValue::Int(i64::from(attempt)),
            text(at),
        ],
    )
    .await?;
    Ok(())
}

/// What an ending event writes besides its status.
struct Ending<'a> {
    status: JobStatus,
    node_id: Option<&'a str>,
    attempt: u32,
    exit_code: Option<i64>,
    failure_reason: Option<String>,
    message: Option<String>,
    outputs: Option<SqlValue>,
    settlement: &'a JobSettlement,
    at: time::OffsetDateTime,
}

async fn job_ended(
    tx: &mut ViewTx,
    event: &RecordedEvent,
    job_id: &str,
    ending: Ending<'_>,
) -> Result<(), ProjectionError> {
    let at = rfc3339(ending.at);
    tx.execute(
        "UPDATE jobs_view SET status = $1, node_id = COALESCE($2, node_id), exit_code = $3, \
         failure_reason = $4, message = $5, outputs = COALESCE($6, outputs), node_net = $7, \
         platform_fee = $8, refund = $9, ended_at = $10, updated_at = $10 WHERE job_id = $11",
        &[
            text(ending.status.as_str()),
            ending.node_id.map_or(SqlValue::Null, text),
            ending.exit_code.map_or(SqlValue::Null, SqlValue::Int),
            ending.failure_reason.map_or(SqlValue::Null, SqlValue::Text),
            ending.message.map_or(SqlValue::Null, SqlValue::Text),
            ending.outputs.unwrap_or(SqlValue::Null),
            text(ending.settlement.node_net.to_string()),
            text(ending.settlement.platform_fee.to_string()),
            text(ending.settlement.refund.to_string()),
            text(at.clone()),
            text(job_id),
        ],
    )
    .await?;
    job_history(
        tx,
        event,
        job_id,
        ending.status,
        ending.node_id,
        ending.attempt,
        &at,
    )
    .await
}

fn snake(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl ComputeProjection {
    async fn apply_node(
        &self,
        tx: &mut ViewTx,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode_payload::<NodeEvent>(event)? {
            NodeEvent::NodeRegistered {
                node_id,
                owner,
                name,
                owner_wallet,
                resources,
                at,
                ..
            } => {
                let at = rfc3339(at);
                tx.execute(
                    "INSERT INTO nodes_view (node_id, owner, name, owner_wallet, resources, cpu_cores, \
                     memory_mb, disk_gb, gpus, max_concurrent_jobs, status, offline_reason, \
                     registered_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'offline', NULL, $11, $11)",
                    &[
                        text(node_id.clone()),
                        text(owner),
                        text(name),
                        text(owner_wallet),
                        json_text(event, &resources)?,
                        int(u64::from(resources.cpu_cores)),
                        int(resources.memory_mb),
                        int(resources.disk_gb),
                        int(resources.gpus.len() as u64),
                        int(u64::from(resources.max_concurrent_jobs)),
                        text(at.clone()),
                    ],
                )
                .await?;
                node_history(tx, event, &node_id, NodeStatus::Offline, json!({}), at).await?;
            }
            NodeEvent::NodeCameOnline { node_id, at } => {
                node_changed(tx, event, &node_id, NodeStatus::Online, None, json!({}), at).await?;
            }
            NodeEvent::NodeWentOffline {
                node_id,
                reason,
                at,
            } => {
                let reason = snake(&reason);
                node_changed(
                    tx,
                    event,
                    &node_id,
                    NodeStatus::Offline,
                    Some(reason.clone()),
                    json!({ "reason": reason }),
                    at,
                )
                .await?;
            }
            NodeEvent::NodeDeactivated {
                node_id,
                by_admin,
                at,
            } => {
                node_changed(
                    tx,
                    event,
                    &node_id,
                    NodeStatus::Deactivated,
                    None,
                    json!({ "by_admin": by_admin }),
                    at,
                )
                .await?;
            }
            NodeEvent::NodeActivated {
                node_id,
                by_admin,
                at,
            } => {
                node_changed(
                    tx,
                    event,
                    &node_id,
                    NodeStatus::Offline,
                    None,
                    json!({ "by_admin": by_admin }),
                    at,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn apply_job(
        &self,
        tx: &mut ViewTx,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match decode_payload::<JobEvent>(event)? {
            JobEvent::JobSubmitted {
                job_id,
                creator,
                spec,
                payment_id,
                at,
            } => {
                let at = rfc3339(at);
                tx.execute(
                    "INSERT INTO jobs_view (job_id, creator, payment_id, job_type, image, spec, \
                     needs_cpu_cores, needs_memory_mb, needs_gpus, needs_gpu_memory_mb, \
                     max_runtime_secs, price, status, node_id, attempt, outputs, submitted_at, \
                     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                     'pending', NULL, 0, '[]', $13, $13)",
                    &[
                        text(job_id.clone()),
                        text(creator),
                        text(payment_id),
                        text(snake(&spec.job_type)),
                        text(spec.image.clone()),
                        json_text(event, &spec)?,
                        int(u64::from(spec.needs.cpu_cores)),
                        int(spec.needs.memory_mb),
                        int(u64::from(spec.needs.gpus)),
                        int(spec.needs.gpu_memory_mb),
                        int(spec.max_runtime_secs),
                        text(spec.price.to_string()),
                        text(at.clone()),
                    ],
                )
                .await?;
                job_history(tx, event, &job_id, JobStatus::Pending, None, 0, &at).await?;
            }
            JobEvent::JobAssigned {
                job_id,
                node_id,
                attempt,
                at,
            } => {
                let at = rfc3339(at);
                tx.execute(
                    "UPDATE jobs_view SET status = 'assigned', node_id = $1, attempt = $2, \
                     assigned_at = $3, started_at = NULL, updated_at = $3 WHERE job_id = $4",
                    &[
                        text(node_id.clone()),
                        SqlValue::Int(i64::from(attempt)),
                        text(at.clone()),
                        text(job_id.clone()),
                    ],
                )
                .await?;
                job_history(
                    tx,
                    event,
                    &job_id,
                    JobStatus::Assigned,
                    Some(node_id.as_str()),
                    attempt,
                    &at,
                )
                .await?;
            }
            JobEvent::JobStarted {
                job_id,
                node_id,
                attempt,
                at,
            } => {
                let at = rfc3339(at);
                tx.execute(
                    "UPDATE jobs_view SET status = 'running', started_at = $1, updated_at = $1 \
                     WHERE job_id = $2",
                    &[text(at.clone()), text(job_id.clone())],
                )
                .await?;
                job_history(
                    tx,
                    event,
                    &job_id,
                    JobStatus::Running,
                    Some(node_id.as_str()),
                    attempt,
                    &at,
                )
                .await?;
            }
            JobEvent::JobRequeued {
                job_id,
                node_id,
                attempt,
                reason,
                at,
            } => {
                let at = rfc3339(at);
                tx.execute(
                    "UPDATE jobs_view SET status = 'pending', node_id = NULL, message = $1, \
                     started_at = NULL, updated_at = $2 WHERE job_id = $3",
                    &[
                        text(format!("requeued: {} (node {node_id})", reason.as_str())),
                        text(at.clone()),
                        text(job_id.clone()),
                    ],
                )
                .await?;
                job_history(
                    tx,
                    event,
                    &job_id,
                    JobStatus::Pending,
                    Some(node_id.as_str()),
                    attempt,
                    &at,
                )
                .await?;
            }
            JobEvent::JobCompleted {
                job_id,
                node_id,
                attempt,
                exit_code,
                outputs,
                settlement,
                at,
            } => {
                let outputs = json_text(event, &outputs)?;
                job_ended(
                    tx,
                    event,
                    &job_id,
                    Ending {
                        status: JobStatus::Completed,
                        node_id: Some(node_id.as_str()),
                        attempt,
                        exit_code: Some(exit_code),
                        failure_reason: None,
                        message: None,
                        outputs: Some(outputs),
                        settlement: &settlement,
                        at,
                    },
                )
                .await?;
            }
            JobEvent::JobFailed {
                job_id,
                node_id,
                attempt,
                reason,
                exit_code,
                message,
                settlement,
                at,
            } => {
                job_ended(
                    tx,
                    event,
                    &job_id,
                    Ending {
                        status: JobStatus::Failed,
                        node_id: Some(node_id.as_str()),
                        attempt,
                        exit_code,
                        failure_reason: Some(snake(&reason)),
                        message: Some(message),
                        outputs: None,
                        settlement: &settlement,
                        at,
                    },
                )
                .await?;
            }
            JobEvent::JobTimedOut {
                job_id,
                node_id,
                attempt,
                settlement,
                at,
            } => {
                job_ended(
                    tx,
                    event,
                    &job_id,
                    Ending {
                        status: JobStatus::TimedOut,
                        node_id: Some(node_id.as_str()),
                        attempt,
                        exit_code: None,
                        failure_reason: None,
                        message: None,
                        outputs: None,
                        settlement: &settlement,
                        at,
                    },
                )
                .await?;
            }
            JobEvent::JobCancelled {
                job_id,
                by,
                node_id,
                attempt,
                settlement,
                at,
            } => {
                job_ended(
                    tx,
                    event,
                    &job_id,
                    Ending {
                        status: JobStatus::Cancelled,
                        node_id: node_id.as_deref(),
                        attempt,
                        exit_code: None,
                        failure_reason: None,
                        message: Some(format!("cancelled by {by}")),
                        outputs: None,
                        settlement: &settlement,
                        at,
                    },
                )
                .await?;
            }
        }
        Ok(())
    }
}

async fn apply_blob(tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
    // The view names a content's first store; who else holds it is the aggregate's to know.
    let BlobEvent::BlobStored {
        sha256,
        cid,
        size_bytes,
        backend,
        by,
        purpose,
        at,
    } = decode_payload::<BlobEvent>(event)?
    else {
        return Ok(());
    };
    let (kind, job_id) = match purpose {
        BlobPurpose::JobInput => ("job_input", SqlValue::Null),
        BlobPurpose::JobOutput { job_id, .. } => ("job_output", text(job_id)),
    };
    tx.execute(
        "INSERT INTO blobs_view (cid, sha256, size_bytes, backend, stored_by, purpose, job_id, \
         stored_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (cid) DO NOTHING",
        &[
            text(cid),
            text(sha256),
            int(size_bytes),
            text(backend),
            text(by),
            text(kind),
            job_id,
            text(rfc3339(at)),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projection for ComputeProjection {
    fn name(&self) -> &'static str {
        "compute"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        [Node::TYPE, Job::TYPE, Blob::TYPE].contains(&event.aggregate_type.as_str())
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type == Node::TYPE {
            self.apply_node(tx, event).await
        } else if event.aggregate_type == Job::TYPE {
            self.apply_job(tx, event).await
        } else if event.aggregate_type == Blob::TYPE {
            apply_blob(tx, event).await
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub owner: String,
    pub name: String,
    pub owner_wallet: String,
    pub resources: String,
    pub status: String,
    pub offline_reason: Option<String>,
    pub registered_at: String,
    pub updated_at: String,
}

const SELECT_NODE: &str = "SELECT node_id, owner, name, owner_wallet, resources, status, \
    offline_reason, registered_at, updated_at FROM nodes_view";

pub async fn find_node(
    db: &aiforge_commands::Database,
    node_id: &str,
) -> Result<Option<NodeRow>, sqlx::Error> {
    let sql = format!("{SELECT_NODE} WHERE node_id = $1");
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(node_id)
        .fetch_optional(pool)
        .await)
}

/// One owner's nodes (`Some`), or every node (`None`, admins), oldest first.
pub async fn nodes(
    db: &aiforge_commands::Database,
    owner: Option<&str>,
) -> Result<Vec<NodeRow>, sqlx::Error> {
    match owner {
        Some(owner) => {
            let sql = format!("{SELECT_NODE} WHERE owner = $1 ORDER BY registered_at, node_id");
            on_engine!(db, |pool| sqlx::query_as(&sql)
                .bind(owner)
                .fetch_all(pool)
                .await)
        }
        None => {
            let sql = format!("{SELECT_NODE} ORDER BY registered_at, node_id");
            on_engine!(db, |pool| sqlx::query_as(&sql).fetch_all(pool).await)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct NodeHistoryRow {
    pub position: i64,
    pub event_type: String,
    pub status: String,
    pub detail: String,
    pub at: String,
}

pub async fn node_history_of(
    db: &aiforge_commands::Database,
    node_id: &str,
) -> Result<Vec<NodeHistoryRow>, sqlx::Error> {
    on_engine!(db, |pool| sqlx::query_as(
        "SELECT position, event_type, status, detail, at FROM node_history_view \
         WHERE node_id = $1 ORDER BY position"
    )
    .bind(node_id)
    .fetch_all(pool)
    .await)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub job_id: String,
    pub creator: String,
    pub payment_id: String,
    pub job_type: String,
    pub spec: String,
    pub price: String,
    pub status: String,
    pub node_id: Option<String>,
    pub attempt: i64,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<String>,
    pub message: Option<String>,
    pub outputs: String,
    pub node_net: Option<String>,
    pub platform_fee: Option<String>,
    pub refund: Option<String>,
    pub submitted_at: String,
    pub assigned_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub updated_at: String,
}

const SELECT_JOB: &str = "SELECT job_id, creator, payment_id, job_type, spec, price, status, \
    node_id, CAST(attempt AS bigint) AS attempt, CAST(exit_code AS bigint) AS exit_code, \
    failure_reason, message, outputs, node_net, platform_fee, refund, submitted_at, assigned_at, \
    started_at, ended_at, updated_at FROM jobs_view";

pub async fn find_job(
    db: &aiforge_commands::Database,
    job_id: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("{SELECT_JOB} WHERE job_id = $1");
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(job_id)
        .fetch_optional(pool)
        .await)
}

/// A creator's jobs, newest first, and their total count.
pub async fn jobs_of(
    db: &aiforge_commands::Database,
    creator: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<JobRow>, i64), sqlx::Error> {
    let sql = format!(
        "{SELECT_JOB} WHERE creator = $1 ORDER BY submitted_at DESC, job_id DESC LIMIT $2 OFFSET $3"
    );
    let rows = on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(creator)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)?;
    let total = on_engine!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs_view WHERE creator = $1"
    )
    .bind(creator)
    .fetch_one(pool)
    .await)?;
    Ok((rows, total))
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct JobHistoryRow {
    pub position: i64,
    pub event_type: String,
    pub status: String,
    pub node_id: Option<String>,
    pub attempt: i64,
    pub at: String,
}

pub async fn job_history_of(
    db: &aiforge_commands::Database,
    job_id: &str,
) -> Result<Vec<JobHistoryRow>, sqlx::Error> {
    on_engine!(db, |pool| sqlx::query_as(
        "SELECT position, event_type, status, node_id, CAST(attempt AS bigint) AS attempt, at \
         FROM job_history_view WHERE job_id = $1 ORDER BY position"
    )
    .bind(job_id)
    .fetch_all(pool)
    .await)
}

/// The scheduler's inputs: pending jobs (oldest first, at most `limit`) and the online nodes
/// with what their assigned and running jobs hold.
pub async fn pending_jobs(
    db: &aiforge_commands::Database,
    limit: i64,
) -> Result<Vec<aiforge_domain::scheduler::PendingJob>, ProjectionError> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = on_engine!(db, |pool| sqlx::query_as(
        "SELECT job_id, submitted_at, needs_cpu_cores, needs_memory_mb, needs_gpus, \
         needs_gpu_memory_mb FROM jobs_view WHERE status = 'pending' \
         ORDER BY submitted_at, job_id LIMIT $1"
    )
    .bind(limit)
    .fetch_all(pool)
    .await)?;
    rows.into_iter()
        .map(|(job_id, submitted_at, cpu, memory, gpus, gpu_memory)| {
            let submitted_at = time::OffsetDateTime::parse(
                &submitted_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| ProjectionError::BadEvent {
                position: 0,
                event_type: "JobSubmitted".into(),
                reason: e.to_string(),
            })?;
            Ok(aiforge_domain::scheduler::PendingJob {
                job_id,
                submitted_at,
                needs: aiforge_domain::job::JobNeeds {
                    cpu_cores: u32::try_from(cpu).unwrap_or(u32::MAX),
                    memory_mb: u64::try_from(memory).unwrap_or(u64::MAX),
                    gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
                    gpu_memory_mb: u64::try_from(gpu_memory).unwrap_or(u64::MAX),
                },
            })
        })
        .collect()
}

pub async fn online_nodes(
    db: &aiforge_commands::Database,
) -> Result<Vec<aiforge_domain::scheduler::ActiveNode>, ProjectionError> {
    let nodes: Vec<(String, String)> = on_engine!(db, |pool| sqlx::query_as(
        "SELECT node_id, resources FROM nodes_view WHERE status = 'online' ORDER BY node_id"
    )
    .fetch_all(pool)
    .await)?;
    let loads: Vec<(String, i64, i64, i64, i64)> = on_engine!(db, |pool| sqlx::query_as(
        "SELECT node_id, COUNT(*), CAST(SUM(needs_cpu_cores) AS bigint), \
         CAST(SUM(needs_memory_mb) AS bigint), CAST(SUM(needs_gpus) AS bigint) FROM jobs_view \
         WHERE status IN ('assigned', 'running') AND node_id IS NOT NULL GROUP BY node_id"
    )
    .fetch_all(pool)
    .await)?;
    let loads: std::collections::HashMap<String, aiforge_domain::scheduler::NodeLoad> = loads
        .into_iter()
        .map(|(node_id, jobs, cpu, memory, gpus)| {
            let load = aiforge_domain::scheduler::NodeLoad {
                jobs: u32::try_from(jobs).unwrap_or(u32::MAX),
                cpu_cores: u64::try_from(cpu).unwrap_or(u64::MAX),
                memory_mb: u64::try_from(memory).unwrap_or(u64::MAX),
                gpus: u64::try_from(gpus).unwrap_or(u64::MAX),
            };
            (node_id, load)
        })
        .collect();
    nodes
        .into_iter()
        .map(|(node_id, resources)| {
            let resources: Resources =
                serde_json::from_str(&resources).map_err(|e| ProjectionError::BadEvent {
                    position: 0,
                    event_type: "NodeRegistered".into(),
                    reason: e.to_string(),
                })?;
            Ok(aiforge_domain::scheduler::ActiveNode {
                load: loads.get(&node_id).copied().unwrap_or_default(),
                node_id,
                resources,
            })
        })
        .collect()
}

/// Jobs held (assigned or running) by a node that is not online: the sweeper requeues them.
/// (job id, node id, attempt, node status).
pub async fn jobs_on_lost_nodes(
    db: &aiforge_commands::Database,
) -> Result<Vec<(String, String, i64, String)>, sqlx::Error> {
    on_engine!(db, |pool| sqlx::query_as(
        "SELECT j.job_id, j.node_id, CAST(j.attempt AS bigint), n.status FROM jobs_view j \
         JOIN nodes_view n ON n.node_id = j.node_id \
         WHERE j.status IN ('assigned', 'running') AND n.status <> 'online' \
         ORDER BY j.submitted_at, j.job_id"
    )
    .fetch_all(pool)
    .await)
}

/// Ids of the nodes the log says are online.
pub async fn online_node_ids(db: &aiforge_commands::Database) -> Result<Vec<String>, sqlx::Error> {
    on_engine!(db, |pool| sqlx::query_scalar(
        "SELECT node_id FROM nodes_view WHERE status = 'online' ORDER BY node_id"
    )
    .fetch_all(pool)
    .await)
}

/// The admin stats of the compute network: nodes by status, jobs by status, and the job money
/// the ledger holds (in escrow, owed to nodes), in micro-USDT.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ComputeStats {
    pub nodes: std::collections::BTreeMap<String, i64>,
    pub jobs: std::collections::BTreeMap<String, i64>,
    pub escrow_micros: i64,
    pub node_payable_micros: i64,
    /// Settled jobs: what their creators paid, the platform's fee and the nodes' share.
    pub job_gross_micros: i64,
    pub job_fee_micros: i64,
    pub job_net_micros: i64,
}

pub async fn stats(db: &aiforge_commands::Database) -> Result<ComputeStats, sqlx::Error> {
    let nodes: Vec<(String, i64)> = on_engine!(db, |pool| sqlx::query_as(
        "SELECT status, COUNT(*) FROM nodes_view GROUP BY status"
    )
    .fetch_all(pool)
    .await)?;
    let jobs: Vec<(String, i64)> = on_engine!(db, |pool| sqlx::query_as(
        "SELECT status, COUNT(*) FROM jobs_view GROUP BY status"
    )
    .fetch_all(pool)
    .await)?;
    let sum = |kind: &'static str| async move {
        crate::count(
            db,
            &format!(
                "SELECT CAST(COALESCE(SUM(balance_micros), 0) AS BIGINT) FROM ledger_balances_view \
                 WHERE kind = '{kind}'"
            ),
        )
        .await
    };
    let job_revenue = |column: &'static str| async move {
        crate::count(
            db,
            &format!(
                "SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM revenue_entries_view \
                 WHERE revenue_type = 'job'"
            ),
        )
        .await
    };
    let mut stats = ComputeStats {
        escrow_micros: sum("job_escrow").await?,
        node_payable_micros: sum("node_payable").await?,
        job_gross_micros: job_revenue("gross_micros").await?,
        job_fee_micros: job_revenue("fee_micros").await?,
        job_net_micros: job_revenue("net_micros").await?,
        ..ComputeStats::default()
    };
    for status in ["online", "offline", "deactivated"] {
        stats.nodes.insert(status.to_string(), 0);
    }
    for status in [
        "pending",
        "assigned",
        "running",
        "completed",
        "failed",
        "cancelled",
        "timed_out",
    ] {
        stats.jobs.insert(status.to_string(), 0);
    }
    stats.nodes.extend(nodes);
    stats.jobs.extend(jobs);
    Ok(stats)
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct BlobRow {
    pub cid: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub backend: String,
    pub stored_by: String,
    pub purpose: String,
    pub job_id: Option<String>,
    pub stored_at: String,
}

/// A job input or output in the blob store, by its CID.
pub async fn find_blob(
    db: &aiforge_commands::Database,
    cid: &str,
) -> Result<Option<BlobRow>, sqlx::Error> {
    on_engine!(db, |pool| sqlx::query_as(
        "SELECT cid, sha256, size_bytes, backend, stored_by, purpose, job_id, stored_at \
         FROM blobs_view WHERE cid = $1"
    )
    .bind(cid)
    .fetch_optional(pool)
    .await)
}

/// The jobs a node holds now (assigned or running), oldest assignment first.
pub async fn held_by(
    db: &aiforge_commands::Database,
    node_id: &str,
) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = format!(
        "{SELECT_JOB} WHERE node_id = $1 AND status IN ('assigned', 'running') \
         ORDER BY assigned_at, job_id"
    );
    on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(node_id)
        .fetch_all(pool)
        .await)
}

/// What a node has earned, in micro-USDT, as the ledger holds it for its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeEarnings {
    /// The payable's balance (earned, less what was paid out).
    pub payable_micros: i64,
    /// How many jobs paid it.
    pub jobs_paid: i64,
    /// Its share of the jobs it ran (settlements' postings to its payable).
    pub jobs_micros: i64,
    /// What monthly closes paid it for the tokens it served (`inference_pay`; postings named
    /// `revenue:YYYY-MM`).
    pub inference_micros: i64,
}

/// What a node has earned (`NodeEarnings`).
pub async fn node_earnings(
    db: &aiforge_commands::Database,
    node_id: &str,
) -> Result<NodeEarnings, sqlx::Error> {
    let account = format!("node_payable:{node_id}");
    let payable: Option<i64> = on_engine!(db, |pool| sqlx::query_scalar(
        "SELECT CAST(balance_micros AS BIGINT) FROM ledger_balances_view WHERE account = $1"
    )
    .bind(&account)
    .fetch_optional(pool)
    .await)?;
    let jobs_paid: i64 = on_engine!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs_view WHERE node_id = $1 \
         AND status IN ('completed', 'failed', 'timed_out', 'cancelled') \
         AND node_net IS NOT NULL AND node_net <> '0.000000'"
    )
    .bind(node_id)
    .fetch_one(pool)
    .await)?;
    // Credits only: a payout's posting is a debit of the payable.
    let (jobs_micros, inference_micros): (i64, i64) = on_engine!(db, |pool| {
        sqlx::query_as(
        "SELECT \
         CAST(COALESCE(SUM(CASE WHEN payment_id NOT LIKE 'revenue:%' THEN amount_micros ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN payment_id LIKE 'revenue:%' THEN amount_micros ELSE 0 END), 0) AS BIGINT) \
         FROM ledger_postings_view WHERE account = $1 AND amount_micros > 0"
    )
    .bind(&account)
    .fetch_one(pool)
    .await
    })?;
    Ok(NodeEarnings {
        payable_micros: payable.unwrap_or(0),
        jobs_paid,
        jobs_micros,
        inference_micros,
    })
}

/// The jobs a node ran or holds, newest first, and their total count (the admin's job history
/// of a node; `node_id` is the last assignee).
pub async fn jobs_on_node(
    db: &aiforge_commands::Database,
    node_id: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<JobRow>, i64), sqlx::Error> {
    let sql = format!(
        "{SELECT_JOB} WHERE node_id = $1 ORDER BY submitted_at DESC, job_id DESC LIMIT $2 OFFSET $3"
    );
    let rows = on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(node_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await)?;
    let total = on_engine!(db, |pool| sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs_view WHERE node_id = $1"
    )
    .bind(node_id)
    .fetch_one(pool)
    .await)?;
    Ok((rows, total))
}
