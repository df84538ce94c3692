//! The node-agent <-> coordinator contract: every body the two send each other over HTTP and NATS,
//! defined once here and used by both sides (`node-agent/` and `api/`), so that a change on one
//! side is a compile error on the other. The assignment itself is
//! [`crate::job::AssignmentMessage`] (NATS) or [`NextJob`] (polling).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::job::{JobSpec, Output};
use crate::{within, OutOfRange};

pub const METRIC_PERCENT: RangeInclusive<u64> = 0..=100;
/// Bounds of what a heartbeat may say is in use (the node's own limits are higher or equal).
pub const METRIC_MEMORY_MB: RangeInclusive<u64> = 0..=64 * 1024 * 1024;
pub const METRIC_DISK_GB: RangeInclusive<u64> = 0..=1_000_000;
pub const METRIC_GPU_MEMORY_MB: RangeInclusive<u64> = 0..=1024 * 1024;
pub const METRIC_JOBS: RangeInclusive<u64> = 0..=256;

/// A node's current use, as its last heartbeat said (kept in memory, never an event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeMetrics {
    #[serde(default)]
    pub cpu_percent: u32,
    #[serde(default)]
    pub memory_used_mb: u64,
    #[serde(default)]
    pub disk_used_gb: u64,
    #[serde(default)]
    pub gpus: Vec<GpuUse>,
    #[serde(default)]
    pub running_jobs: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuUse {
    pub utilization_percent: u32,
    pub memory_used_mb: u64,
}

impl NodeMetrics {
    pub fn validate(&self) -> Result<(), OutOfRange> {
        within("cpu_percent", self.cpu_percent, &METRIC_PERCENT)?;
        within("memory_used_mb", self.memory_used_mb, &METRIC_MEMORY_MB)?;
        within("disk_used_gb", self.disk_used_gb, &METRIC_DISK_GB)?;
        within("running_jobs", self.running_jobs, &METRIC_JOBS)?;
        within(
            "gpus",
            self.gpus.len() as u64,
            &(0..=crate::node::GPUS_MAX as u64),
        )?;
        for gpu in &self.gpus {
            within(
                "gpus.utilization_percent",
                gpu.utilization_percent,
                &METRIC_PERCENT,
            )?;
            within(
                "gpus.memory_used_mb",
                gpu.memory_used_mb,
                &METRIC_GPU_MEMORY_MB,
            )?;
        }
        Ok(())
    }
}

/// A heartbeat over NATS, on `aiforge.nodes.heartbeat.<node id>` (over HTTP the token is the
/// bearer and the body is the [`NodeMetrics`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsHeartbeat {
    pub node_id: String,
    pub token: String,
    #[serde(default)]
    pub metrics: NodeMetrics,
}

/// An attempt the coordinator says a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldJob {
    pub job_id: String,
    pub attempt: u32,
    /// `assigned` or `running`.
    pub status: String,
}

/// The answer to a heartbeat (HTTP and NATS): the node's status and the attempts it holds; a
/// running attempt missing here is no longer the node's to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = HeartbeatAnswer)]
pub struct HeartbeatReply {
    pub node_id: String,
    pub status: String,
    pub heartbeat_timeout_secs: i64,
    /// The jobs the platform says this node holds; it stops any other it still runs.
    pub jobs: Vec<HeldJob>,
}

/// A job assigned to a node, as `GET /api/nodes/{id}/jobs/next` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Assignment)]
pub struct AssignedJob {
    pub job_id: String,
    /// The attempt the node's reports must name.
    pub attempt: u32,
    pub spec: JobSpec,
    pub assigned_at: Option<String>,
}

/// `GET /api/nodes/{id}/jobs/next`'s answer (204 when there is none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AssignmentAnswer)]
pub struct NextJob {
    pub job: AssignedJob,
}

/// `POST /api/nodes/{id}/jobs/{job_id}/started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobStartedRequest)]
pub struct JobStarted {
    pub attempt: u32,
}

/// `POST /api/nodes/{id}/jobs/{job_id}/finished`: the job exited; its output files were uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobFinishedRequest)]
pub struct JobFinished {
    pub attempt: u32,
    pub exit_code: i64,
    #[serde(default)]
    pub outputs: Vec<Output>,
}

/// Why a node gives up an attempt. `timed_out`: the node killed the job at its max runtime
/// (the creator pays, the node earns); the others are not the job's own outcome (refunded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = JobFailedReason)]
pub enum FailedReason {
    TimedOut,
    ImagePullFailed,
    InputsUnavailable,
    NodeError,
    /// The job wrote more than the node accepts: the job's own outcome (paid).
    OutputTooLarge,
}

/// `POST /api/nodes/{id}/jobs/{job_id}/failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobFailedRequest)]
pub struct JobFailed {
    pub attempt: u32,
    pub reason: FailedReason,
    #[serde(default)]
    pub message: String,
}

/// One line a job printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
    /// The attempt that printed it (set by the coordinator from the batch).
    #[serde(default)]
    pub attempt: u32,
}

/// `POST /api/nodes/{id}/jobs/{job_id}/logs`: lines of the attempt the node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobLogsRequest)]
pub struct JobLogLines {
    pub attempt: u32,
    pub lines: Vec<LogLine>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bodies_round_trip_as_the_coordinator_reads_them() {
        let failed: JobFailed =
            serde_json::from_str(r#"{"attempt":2,"reason":"inputs_unavailable","message":"gone"}"#)
                .unwrap();
        assert_eq!(failed.reason, FailedReason::InputsUnavailable);
        assert_eq!(
            serde_json::from_value::<JobFailed>(serde_json::to_value(&failed).unwrap()).unwrap(),
            failed
        );
        assert!(serde_json::from_str::<JobStarted>(r#"{"attempt":1,"extra":1}"#).is_err());
        let metrics = NodeMetrics {
            cpu_percent: 101,
            ..NodeMetrics::default()
        };
        assert_eq!(metrics.validate().unwrap_err().field, "cpu_percent");
    }
}
