//! The `Job` aggregate: one paid container run on the compute network, from submission to its
//! one ending, and who its escrowed payment goes to.
//!
//! ```text
//! pending ──Assign──▶ assigned ──Start──▶ running ──ReportExit 0──────────────▶ completed
//!    ▲                   │                   ├──ReportExit ≠ 0, ReportFailure──▶ failed
//!    │                   │                   └──ReportTimeout─────────────────▶ timed_out
//!    └──Requeue (node lost; attempt < ATTEMPTS_MAX, else failed)──┘
//! pending | assigned | running ──Cancel (creator)──▶ cancelled
//! ```
//!
//! Rules, all here:
//! - A job is submitted once its payment has confirmed: the application layer checks that
//!   `payment_id` is a confirmed `job` payment of the creator's into `job_escrow:<job_id>` and
//!   passes the amount it escrowed, which must equal the spec's price.
//! - Assignment only from pending, so a job has at most one assignee at a time. Each assignment
//!   is a new attempt (1, 2, ...). Every report names its node and attempt; a report from any
//!   other node, or from an earlier attempt (a lost node's late completion after a requeue), is
//!   rejected with [`JobError::StaleReport`] and changes nothing.
//! - Start: from assigned; the same start again while running writes nothing (a retried report).
//! - `ReportExit` (from running) decides the ending from the exit code: 0 completes, anything
//!   else fails with [`FailureReason::NonZeroExit`]. `ReportFailure` (from assigned or running)
//!   is for failures that are not the job's own (image pull, inputs unavailable, node error:
//!   refunded), and for an output over the node's limit, which is (from running; paid as a
//!   non-zero exit).
//! - `ReportTimeout` (from running): the node killed the job at `max_runtime_secs`; refused if
//!   the platform saw it start less than that ago, by more than [`TIMEOUT_EARLY_SLACK_SECS`].
//! - `Requeue`: the assignee was lost (went offline, was deactivated, did not start the job in
//!   time). The job goes back to pending, unless that was attempt [`ATTEMPTS_MAX`]: then it fails
//!   with [`FailureReason::AttemptsExhausted`].
//! - Only the creator cancels, while pending, assigned or running.
//!
//! Payment rule. Each ending event empties the escrow and carries the postings
//! ([`crate::ledger::job_settlement_postings`]); the platform's fee is the job rate of the fee
//! schedule in force at the ending (5% in version 1), taken from what the node earned:
//!
//! | ending                                   | the node earns                       |
//! |------------------------------------------|--------------------------------------|
//! | completed (exit code 0)                  | all: 95% to the node, 5% fee         |
//! | failed, the job exited non-zero          | all, as completed                    |
//! | timed out                                | all, as completed                    |
//! | cancelled while running                  | seconds run / `max_runtime_secs`     |
//! | cancelled while pending or assigned      | nothing: full refund to the creator  |
//! | failed for a platform or node reason     | nothing: full refund to the creator  |
//!
//! Why: the node ran the creator's code as asked, so a crash, an OOM kill at the memory the
//! creator asked for or a wrong command is the job's own outcome. The price buys up to
//! `max_runtime_secs` of the node; a job that ran out of it used everything it paid for, and a
//! job cancelled while running pays for the seconds (platform clock, from `JobStarted`) it held
//! the node. A job that never ran, or failed because of the image, its inputs, the node or lost
//! nodes, cost its creator nothing. What is not earned is refunded to `payer:<creator>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::RangeInclusive;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fees::{FeeSchedule, FeeSource, FeeSourceError, FeeTable};
use crate::ledger::{job_settlement_postings, Earned, JobSettlement, LedgerError};
use crate::money::Usdt;
use crate::node;
use crate::{within, OutOfRange};

/// Docker's limit on a whole image reference.
pub const IMAGE_CHARS_MAX: usize = 255;
/// Docker's limit on a tag.
pub const IMAGE_TAG_CHARS_MAX: usize = 128;
pub const COMMAND_ARGS_MAX: usize = 256;
pub const COMMAND_ARG_BYTES_MAX: usize = 4096;
pub const ENV_VARS_MAX: usize = 128;
pub const ENV_KEY_BYTES_MAX: usize = 128;
pub const ENV_VALUE_BYTES_MAX: usize = 4096;
/// The node agent sets variables with this prefix (the inputs and outputs directories).
pub const ENV_RESERVED_PREFIX: &str = "AIFORGE_";
/// At most this many input blobs (the node agent's own limit is higher).
pub const INPUTS_MAX: usize = 64;
pub const RUNTIME_SECS: RangeInclusive<u64> = 1..=86_400;
/// What a job may ask for; the node bounds, except memory, whose floor is a container's.
pub const NEEDS_MEMORY_MB: RangeInclusive<u64> = 8..=64 * 1024 * 1024;
pub const NEEDS_GPU_MEMORY_MB: RangeInclusive<u64> = 0..=1024 * 1024;
pub const OUTPUTS_MAX: usize = 256;
pub const OUTPUT_NAME_BYTES_MAX: usize = 128;
/// Longer failure messages from nodes are cut to this.
pub const MESSAGE_CHARS_MAX: usize = 1000;
/// Assignments a job gets before lost nodes make it fail.
pub const ATTEMPTS_MAX: u32 = 3;
/// How much earlier than `max_runtime_secs` after its start a timeout may be reported: the node's
/// clock starts before the platform hears of the start.
pub const TIMEOUT_EARLY_SLACK_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobType {
    Training,
    Inference,
    Custom,
}

/// What a job needs from its node. `gpu_memory_mb` is per GPU (0: any GPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobNeeds {
    pub cpu_cores: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    pub gpu_memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSpec {
    pub job_type: JobType,
    /// A container image reference: `[host[:port]/]path[:tag][@sha256:digest]`.
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Blob CIDs (CIDv0), mounted read-only for the job.
    pub inputs: Vec<String>,
    pub needs: JobNeeds,
    pub max_runtime_secs: u64,
    pub network: bool,
    pub price: Usdt,
}

impl JobSpec {
    /// Checks every field against its limit (see the constants).
    pub fn validate(&self) -> Result<(), JobError> {
        if !is_image_reference(&self.image) {
            return Err(JobError::InvalidImage);
        }
        if self.command.len() > COMMAND_ARGS_MAX {
            return Err(JobError::TooManyArgs);
        }
        if self
            .command
            .iter()
            .any(|arg| arg.len() > COMMAND_ARG_BYTES_MAX || arg.contains('\0'))
        {
            return Err(JobError::InvalidArg);
        }
        if self.env.len() > ENV_VARS_MAX {
            return Err(JobError::TooManyEnvVars);
        }
        for (key, value) in &self.env {
            if !is_env_key(key) {
                return Err(JobError::InvalidEnvKey(key.clone()));
            }
            if key.to_ascii_uppercase().starts_with(ENV_RESERVED_PREFIX) {
                return Err(JobError::ReservedEnvKey(key.clone()));
            }
            if value.len() > ENV_VALUE_BYTES_MAX || value.contains('\0') {
                return Err(JobError::InvalidEnvValue(key.clone()));
            }
        }
        if self.inputs.len() > INPUTS_MAX {
            return Err(JobError::TooManyInputs);
        }
        let mut seen = BTreeSet::new();
        for cid in &self.inputs {
            if !is_cid_v0(cid) {
                return Err(JobError::InvalidInput(cid.clone()));
            }
            if !seen.insert(cid) {
                return Err(JobError::DuplicateInput(cid.clone()));
            }
        }
        let needs = &self.needs;
        within("needs.cpu_cores", needs.cpu_cores, &node::CPU_CORES)?;
        within("needs.memory_mb", needs.memory_mb, &NEEDS_MEMORY_MB)?;
        within("needs.gpus", needs.gpus, &(0..=node::GPUS_MAX as u64))?;
        within(
            "needs.gpu_memory_mb",
            needs.gpu_memory_mb,
            &NEEDS_GPU_MEMORY_MB,
        )?;
        if needs.gpus == 0 && needs.gpu_memory_mb > 0 {
            return Err(JobError::GpuMemoryWithoutGpus);
        }
        within("max_runtime_secs", self.max_runtime_secs, &RUNTIME_SECS)?;
        if !self.price.is_positive() {
            return Err(JobError::PriceNotPositive);
        }
        Ok(())
    }
}

/// A sanity check, not Docker's full grammar: `[host[:port]/]path[:tag][@sha256:<hex>]`, path
/// components lower-case `[a-z0-9._-]` starting and ending alphanumeric, the first component a
/// host when it has a '.' or ':' or is `localhost` (Docker's rule).
pub fn is_image_reference(image: &str) -> bool {
    if image.is_empty() || image.len() > IMAGE_CHARS_MAX {
        return false;
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        if !digest
            .strip_prefix("sha256:")
            .is_some_and(crate::is_sha256_hex)
        {
            return false;
        }
    }
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        let tag_ok = (1..=IMAGE_TAG_CHARS_MAX).contains(&tag.len())
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return false;
        }
    }
    let components: Vec<&str> = name.split('/').collect();
    let has_host = components.len() > 1
        && (components[0].contains(['.', ':']) || components[0] == "localhost");
    let path = if has_host {
        let (host, port) = match components[0].split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (components[0], None),
        };
        let host_ok = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && !host.ends_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
        let port_ok = port
            .is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return false;
        }
        &components[1..]
    } else {
        &components[..]
    };
    path.iter().all(|component| {
        let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        component.bytes().next().is_some_and(lower_alnum)
            && component.bytes().last().is_some_and(lower_alnum)
            && component
                .bytes()
                .all(|b| lower_alnum(b) || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// A POSIX-portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_key(key: &str) -> bool {
    key.len() <= ENV_KEY_BYTES_MAX
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The blob store's content address: a CIDv0 (`Qm` and 44 more base58btc characters).
pub fn is_cid_v0(cid: &str) -> bool {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    cid.len() == 46 && cid.starts_with("Qm") && cid.bytes().all(|b| BASE58.contains(&b))
}

/// A file the job left in its outputs directory, stored by the node in the blob store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Output {
    pub name: String,
    pub sha256: String,
    pub cid: String,
    pub size_bytes: u64,
}

fn validate_outputs(outputs: &[Output]) -> Result<(), JobError> {
    if outputs.len() > OUTPUTS_MAX {
        return Err(JobError::TooManyOutputs);
    }
    let mut names = BTreeSet::new();
    for output in outputs {
        // A plain file name, as the node agent writes them: no separators, no leading '.'.
        let plain = (1..=OUTPUT_NAME_BYTES_MAX).contains(&output.name.len())
            && !output.name.starts_with('.')
            && output
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !plain || !crate::is_sha256_hex(&output.sha256) || !is_cid_v0(&output.cid) {
            return Err(JobError::InvalidOutput(output.name.clone()));
        }
        if !names.insert(output.name.as_str()) {
            return Err(JobError::DuplicateOutput(output.name.clone()));
        }
    }
    Ok(())
}

// The wire format of assignments, shared by the coordinator and `node-agent`.

/// Where assignments go on NATS: one JetStream stream, one subject per node. A node reads its
/// subject through a durable consumer of its own, so an assignment made while it was away
/// waits for it (the stream keeps it).
pub const ASSIGNMENTS_STREAM: &str = "AIFORGE_ASSIGNMENTS";
pub const ASSIGNMENTS_SUBJECT_PREFIX: &str = "aiforge.assignments";

/// What a node receives for each assignment: the job and the attempt its reports must name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentMessage {
    pub job_id: String,
    pub node_id: String,
    pub attempt: u32,
    pub spec: JobSpec,
    #[serde(with = "time::serde::rfc3339")]
    pub assigned_at: OffsetDateTime,
}

/// The subject a node's assignments are published on.
pub fn assignment_subject(node_id: &str) -> String {
    format!(
        "{ASSIGNMENTS_SUBJECT_PREFIX}.{}",
        crate::node::subject_token(node_id)
    )
}

/// The durable consumer a node reads its subject through.
pub fn assignment_consumer(node_id: &str) -> String {
    format!("node-{}", crate::node::subject_token(node_id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Assigned,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Assigned => "assigned",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
        }
    }

    pub fn has_ended(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failures a node reports. `OutputTooLarge` is the job's own outcome (it wrote more than the
/// node's output limit; paid as a non-zero exit); the others are not (the creator is refunded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedFailure {
    ImagePullFailed,
    InputsUnavailable,
    NodeError,
    OutputTooLarge,
}

impl ReportedFailure {
    /// Whether the job itself caused it (the node earns the job as if it exited non-zero).
    pub fn is_jobs_own(self) -> bool {
        self == ReportedFailure::OutputTooLarge
    }
}

/// Why a job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The job's container exited with a non-zero code: the job's own outcome.
    NonZeroExit,
    ImagePullFailed,
    InputsUnavailable,
    NodeError,
    /// It wrote more output than its node accepts: the job's own outcome.
    OutputTooLarge,
    /// Its node was lost on attempt [`ATTEMPTS_MAX`].
    AttemptsExhausted,
}

impl From<ReportedFailure> for FailureReason {
    fn from(failure: ReportedFailure) -> Self {
        match failure {
            ReportedFailure::ImagePullFailed => FailureReason::ImagePullFailed,
            ReportedFailure::InputsUnavailable => FailureReason::InputsUnavailable,
            ReportedFailure::NodeError => FailureReason::NodeError,
            ReportedFailure::OutputTooLarge => FailureReason::OutputTooLarge,
        }
    }
}

/// Why a job left its node for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueReason {
    /// The node went offline (heartbeat timeout or shutdown).
    NodeLost,
    NodeDeactivated,
    /// The node did not start the job in time.
    NotStarted,
}

impl RequeueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RequeueReason::NodeLost => "node_lost",
            RequeueReason::NodeDeactivated => "node_deactivated",
            RequeueReason::NotStarted => "not_started",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    #[error("the job already exists")]
    AlreadyExists,
    #[error(
        "the image is not a valid container image reference (at most {IMAGE_CHARS_MAX} characters)"
    )]
    InvalidImage,
    #[error("the command has more than {COMMAND_ARGS_MAX} arguments")]
    TooManyArgs,
    #[error(
        "a command argument is longer than {COMMAND_ARG_BYTES_MAX} bytes or contains a NUL byte"
    )]
    InvalidArg,
    #[error("at most {ENV_VARS_MAX} environment variables")]
    TooManyEnvVars,
    #[error("environment variable {0:?} is not a name of letters, digits and '_' (at most {ENV_KEY_BYTES_MAX} bytes, not starting with a digit)")]
    InvalidEnvKey(String),
    #[error("environment variable {0:?} is reserved (prefix {ENV_RESERVED_PREFIX})")]
    ReservedEnvKey(String),
    #[error("the value of environment variable {0:?} is longer than {ENV_VALUE_BYTES_MAX} bytes or contains a NUL byte")]
    InvalidEnvValue(String),
    #[error("at most {INPUTS_MAX} inputs")]
    TooManyInputs,
    #[error("input {0:?} is not a blob CID")]
    InvalidInput(String),
    #[error("input {0:?} is listed twice")]
    DuplicateInput(String),
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error("gpu_memory_mb needs gpus > 0")]
    GpuMemoryWithoutGpus,
    #[error("the price must be greater than zero")]
    PriceNotPositive,
    #[error("the job's price is {price} USDT but its payment escrowed {escrowed} USDT")]
    EscrowMismatch { price: Usdt, escrowed: Usdt },
    #[error("the job is {status}, not pending")]
    NotPending { status: JobStatus },
    #[error("the job is {status}, not running")]
    NotRunning { status: JobStatus },
    #[error("the job has already ended ({status})")]
    AlreadyEnded { status: JobStatus },
    #[error("node {node_id} attempt {attempt} is not the job's current assignment")]
    StaleReport { node_id: String, attempt: u32 },
    #[error("only the job's creator may cancel it")]
    NotCreator,
    #[error("the job ran {ran_secs} s of its {max_runtime_secs} s; too early to time out")]
    TimeoutTooEarly {
        ran_secs: u64,
        max_runtime_secs: u64,
    },
    #[error("at most {OUTPUTS_MAX} outputs")]
    TooManyOutputs,
    #[error("output {0:?} needs a plain file name, a SHA-256 (hex) and a blob CID")]
    InvalidOutput(String),
    #[error("output {0:?} is listed twice")]
    DuplicateOutput(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Fees(#[from] FeeSourceError),
}

impl JobError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            JobError::InvalidImage => Some("image"),
            JobError::TooManyArgs | JobError::InvalidArg => Some("command"),
            JobError::TooManyEnvVars
            | JobError::InvalidEnvKey(_)
            | JobError::ReservedEnvKey(_)
            | JobError::InvalidEnvValue(_) => Some("env"),
            JobError::TooManyInputs | JobError::InvalidInput(_) | JobError::DuplicateInput(_) => {
                Some("inputs")
            }
            JobError::OutOfRange(e) => Some(e.field),
            JobError::GpuMemoryWithoutGpus => Some("needs.gpu_memory_mb"),
            JobError::PriceNotPositive | JobError::EscrowMismatch { .. } => Some("price"),
            JobError::TooManyOutputs
            | JobError::InvalidOutput(_)
            | JobError::DuplicateOutput(_) => Some("outputs"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobCommand {
    Submit {
        job_id: String,
        creator: String,
        spec: JobSpec,
        /// The creator's confirmed `job` payment into `job_escrow:<job_id>`, and its amount.
        payment_id: String,
        escrowed: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Sent by the scheduler's pass.
    Assign {
        node_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Start {
        node_id: String,
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The job's container exited with `exit_code`.
    ReportExit {
        node_id: String,
        attempt: u32,
        exit_code: i64,
        outputs: Vec<Output>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    ReportFailure {
        node_id: String,
        attempt: u32,
        failure: ReportedFailure,
        message: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    ReportTimeout {
        node_id: String,
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Sent by the application layer when the assignee is lost.
    Requeue {
        node_id: String,
        attempt: u32,
        reason: RequeueReason,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Cancel {
        by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEvent {
    JobSubmitted {
        job_id: String,
        creator: String,
        spec: JobSpec,
        payment_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    JobAssigned {
        job_id: String,
        node_id: String,
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    JobStarted {
        job_id: String,
        node_id: String,
        attempt: u32,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    JobCompleted {
        job_id: String,
        node_id: String,
        attempt: u32,
        exit_code: i64,
        outputs: Vec<Output>,
        settlement: JobSettlement,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    JobFailed {
        job_id: String,
        node_id: String,
        attempt: u32,
        reason: FailureReason,
        exit_code: Option<i64>,
        message: String,
        settlement: JobSettlement,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    JobTimedOut {
        job_id: String,
        node_id: String,
        attempt: u32,
        settlement: JobSettlement,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// `node_id`: the assignee at the time, to be told to stop.
    JobCancelled {
        job_id: String,
        by: String,
        node_id: Option<String>,
        attempt: u32,
        settlement: JobSettlement,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Back to pending: `node_id`'s attempt `attempt` is over.
    JobRequeued {
        job_id: String,
        node_id: String,
        attempt: u32,
        reason: RequeueReason,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl JobEvent {
    /// The settlement of an ending (completed, failed, timed out, cancelled), with its job and
    /// time; `None` for the other events.
    pub fn into_settlement(self) -> Option<(String, JobSettlement, OffsetDateTime)> {
        match self {
            JobEvent::JobCompleted {
                job_id,
                settlement,
                at,
                ..
            }
            | JobEvent::JobFailed {
                job_id,
                settlement,
                at,
                ..
            }
            | JobEvent::JobTimedOut {
                job_id,
                settlement,
                at,
                ..
            }
            | JobEvent::JobCancelled {
                job_id,
                settlement,
                at,
                ..
            } => Some((job_id, settlement, at)),
            JobEvent::JobSubmitted { .. }
            | JobEvent::JobAssigned { .. }
            | JobEvent::JobStarted { .. }
            | JobEvent::JobRequeued { .. } => None,
        }
    }
}

impl DomainEvent for JobEvent {
    fn event_type(&self) -> String {
        match self {
            JobEvent::JobSubmitted { .. } => "JobSubmitted",
            JobEvent::JobAssigned { .. } => "JobAssigned",
            JobEvent::JobStarted { .. } => "JobStarted",
            JobEvent::JobCompleted { .. } => "JobCompleted",
            JobEvent::JobFailed { .. } => "JobFailed",
            JobEvent::JobTimedOut { .. } => "JobTimedOut",
            JobEvent::JobCancelled { .. } => "JobCancelled",
            JobEvent::JobRequeued { .. } => "JobRequeued",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: Option<String>,
    pub creator: Option<String>,
    pub spec: Option<JobSpec>,
    pub status: Option<JobStatus>,
    /// The current assignee, while assigned or running.
    pub node_id: Option<String>,
    /// The latest assignment's number (0 before the first).
    pub attempt: u32,
    pub started_at: Option<OffsetDateTime>,
}

/// The job's port: the fee schedule in force when its escrow settles.
#[derive(Clone)]
pub struct JobServices {
    pub fees: std::sync::Arc<dyn FeeSource>,
}

impl JobServices {
    pub fn new(fees: std::sync::Arc<dyn FeeSource>) -> Self {
        Self { fees }
    }

    /// Only version 1 (tests).
    pub fn genesis() -> Self {
        Self::new(std::sync::Arc::new(FeeTable::genesis()))
    }
}

/// What a decision needs to know about a submitted job.
struct Submitted {
    job_id: String,
    creator: String,
    spec: JobSpec,
    status: JobStatus,
}

impl Job {
    pub fn status(&self) -> Option<JobStatus> {
        self.status
    }

    fn submitted(&self) -> Result<Submitted, JobError> {
        match (&self.id, &self.creator, &self.spec, self.status) {
            (Some(job_id), Some(creator), Some(spec), Some(status)) => Ok(Submitted {
                job_id: job_id.clone(),
                creator: creator.clone(),
                spec: spec.clone(),
                status,
            }),
            _ => Err(JobError::NotFound),
        }
    }

    /// The job, when `node_id`'s `attempt` is its current assignment.
    fn reported_by(&self, node_id: &str, attempt: u32) -> Result<Submitted, JobError> {
        let job = self.submitted()?;
        if job.status.has_ended() {
            return Err(JobError::AlreadyEnded { status: job.status });
        }
        if self.node_id.as_deref() != Some(node_id) || attempt != self.attempt {
            return Err(JobError::StaleReport {
                node_id: node_id.to_string(),
                attempt,
            });
        }
        Ok(job)
    }

    fn end(&mut self, status: JobStatus) {
        self.status = Some(status);
        self.node_id = None;
    }

    /// The seconds between the platform's `JobStarted` and `at` (0 if it has not started).
    fn ran_secs(&self, at: OffsetDateTime) -> u64 {
        self.started_at.map_or(0, |started| {
            (at - started).whole_seconds().max(0).unsigned_abs()
        })
    }
}

fn settle(
    job: &Submitted,
    node_id: Option<&str>,
    earned: Earned,
    schedule: &FeeSchedule,
) -> Result<JobSettlement, JobError> {
    Ok(job_settlement_postings(
        schedule,
        &job.job_id,
        &job.creator,
        node_id,
        job.spec.price,
        earned,
    )?)
}

impl Aggregate for Job {
    const TYPE: &'static str = "job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;
    type Services = JobServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            JobCommand::Submit {
                job_id,
                creator,
                spec,
                payment_id,
                escrowed,
                at,
            } => {
                if self.id.is_some() {
                    return Err(JobError::AlreadyExists);
                }
                spec.validate()?;
                if escrowed != spec.price {
                    return Err(JobError::EscrowMismatch {
                        price: spec.price,
                        escrowed,
                    });
                }
                JobEvent::JobSubmitted {
                    job_id,
                    creator,
                    spec,
                    payment_id,
                    at,
                }
            }
            JobCommand::Assign { node_id, at } => {
                let job = self.submitted()?;
                if job.status != JobStatus::Pending {
                    return Err(JobError::NotPending { status: job.status });
                }
                JobEvent::JobAssigned {
                    job_id: job.job_id,
                    node_id,
                    attempt: self.attempt + 1,
                    at,
                }
            }
            JobCommand::Start {
                node_id,
                attempt,
                at,
            } => match self.reported_by(&node_id, attempt)? {
                Submitted {
                    status: JobStatus::Running,
                    ..
                } => return Ok(()),
                job => JobEvent::JobStarted {
                    job_id: job.job_id,
                    node_id,
                    attempt,
                    at,
                },
            },
            JobCommand::ReportExit {
                node_id,
                attempt,
                exit_code,
                outputs,
                at,
            } => {
                let job = self.reported_by(&node_id, attempt)?;
                if job.status != JobStatus::Running {
                    return Err(JobError::NotRunning { status: job.status });
                }
                if exit_code == 0 {
                    validate_outputs(&outputs)?;
                }
                // Completed or failed by its own code, the node earns all of it.
                let settlement = settle(
                    &job,
                    Some(&node_id),
                    Earned::ALL,
                    &services.fees.schedule_at(at).await?,
                )?;
                if exit_code == 0 {
                    JobEvent::JobCompleted {
                        job_id: job.job_id,
                        node_id,
                        attempt,
                        exit_code,
                        outputs,
                        settlement,
                        at,
                    }
                } else {
                    JobEvent::JobFailed {
                        job_id: job.job_id,
                        node_id,
                        attempt,
                        reason: FailureReason::NonZeroExit,
                        exit_code: Some(exit_code),
                        message: format!("the job exited with code {exit_code}"),
                        settlement,
                        at,
                    }
                }
            }
            JobCommand::ReportFailure {
                node_id,
                attempt,
                failure,
                message,
                at,
            } => {
                let job = self.reported_by(&node_id, attempt)?;
                let settlement = if failure.is_jobs_own() {
                    if job.status != JobStatus::Running {
                        return Err(JobError::NotRunning { status: job.status });
                    }
                    settle(
                        &job,
                        Some(&node_id),
                        Earned::ALL,
                        &services.fees.schedule_at(at).await?,
                    )?
                } else {
                    settle(
                        &job,
                        None,
                        Earned::NOTHING,
                        &services.fees.schedule_at(at).await?,
                    )?
                };
                JobEvent::JobFailed {
                    settlement,
                    job_id: job.job_id,
                    node_id,
                    attempt,
                    reason: failure.into(),
                    exit_code: None,
                    message: message.trim().chars().take(MESSAGE_CHARS_MAX).collect(),
                    at,
                }
            }
            JobCommand::ReportTimeout {
                node_id,
                attempt,
                at,
            } => {
                let job = self.reported_by(&node_id, attempt)?;
                if job.status != JobStatus::Running {
                    return Err(JobError::NotRunning { status: job.status });
                }
                let ran_secs = self.ran_secs(at);
                let max_runtime_secs = job.spec.max_runtime_secs;
                if ran_secs.saturating_add(TIMEOUT_EARLY_SLACK_SECS) < max_runtime_secs {
                    return Err(JobError::TimeoutTooEarly {
                        ran_secs,
                        max_runtime_secs,
                    });
                }
                JobEvent::JobTimedOut {
                    settlement: settle(
                        &job,
                        Some(&node_id),
                        Earned::ALL,
                        &services.fees.schedule_at(at).await?,
                    )?,
                    job_id: job.job_id,
                    node_id,
                    attempt,
                    at,
                }
            }
            JobCommand::Requeue {
                node_id,
                attempt,
                reason,
                at,
            } => {
                let job = self.reported_by(&node_id, attempt)?;
                if attempt >= ATTEMPTS_MAX {
                    JobEvent::JobFailed {
                        settlement: settle(
                            &job,
                            None,
                            Earned::NOTHING,
                            &services.fees.schedule_at(at).await?,
                        )?,
                        job_id: job.job_id,
                        message: format!(
                            "attempt {attempt} of {ATTEMPTS_MAX} ended: {} (node {node_id})",
                            reason.as_str()
                        ),
                        node_id,
                        attempt,
                        reason: FailureReason::AttemptsExhausted,
                        exit_code: None,
                        at,
                    }
                } else {
                    JobEvent::JobRequeued {
                        job_id: job.job_id,
                        node_id,
                        attempt,
                        reason,
                        at,
                    }
                }
            }
            JobCommand::Cancel { by, at } => {
                let job = self.submitted()?;
                if job.creator != by {
                    return Err(JobError::NotCreator);
                }
                let earned = match job.status {
                    JobStatus::Pending | JobStatus::Assigned => Earned::NOTHING,
                    JobStatus::Running => {
                        Earned::part(self.ran_secs(at), job.spec.max_runtime_secs)
                    }
                    status => return Err(JobError::AlreadyEnded { status }),
                };
                JobEvent::JobCancelled {
                    settlement: settle(
                        &job,
                        self.node_id.as_deref(),
                        earned,
                        &services.fees.schedule_at(at).await?,
                    )?,
                    job_id: job.job_id,
                    by,
                    node_id: self.node_id.clone(),
                    attempt: self.attempt,
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            JobEvent::JobSubmitted {
                job_id,
                creator,
                spec,
                ..
            } => {
                self.id = Some(job_id);
                self.creator = Some(creator);
                self.spec = Some(spec);
                self.status = Some(JobStatus::Pending);
            }
            JobEvent::JobAssigned {
                node_id, attempt, ..
            } => {
                self.status = Some(JobStatus::Assigned);
                self.node_id = Some(node_id);
                self.attempt = attempt;
                self.started_at = None;
            }
            JobEvent::JobStarted { at, .. } => {
                self.status = Some(JobStatus::Running);
                self.started_at = Some(at);
            }
            JobEvent::JobRequeued { .. } => {
                self.status = Some(JobStatus::Pending);
                self.node_id = None;
                self.started_at = None;
            }
            JobEvent::JobCompleted { .. } => self.end(JobStatus::Completed),
            JobEvent::JobFailed { .. } => self.end(JobStatus::Failed),
            JobEvent::JobTimedOut { .. } => self.end(JobStatus::TimedOut),
            JobEvent::JobCancelled { .. } => self.end(JobStatus::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{LedgerAccount, Posting};
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;
    use time::Duration;

    type JobTest = TestFramework<Job>;
    const AT: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);
    const CID: &str = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD";

    fn usdt(s: &str) -> Usdt {
        Usdt::parse(s).unwrap()
    }

    fn spec() -> JobSpec {
        JobSpec {
            job_type: JobType::Training,
            image: "ghcr.io/aiforge/trainer:1.2".into(),
            command: vec!["python".into(), "train.py".into()],
            env: BTreeMap::from([("EPOCHS".to_string(), "3".to_string())]),
            inputs: vec![CID.into()],
            needs: JobNeeds {
                cpu_cores: 4,
                memory_mb: 8192,
                gpus: 1,
                gpu_memory_mb: 16_384,
            },
            max_runtime_secs: 3600,
            network: false,
            price: usdt("20"),
        }
    }

    fn submit(spec: JobSpec) -> JobCommand {
        JobCommand::Submit {
            job_id: "j1".into(),
            creator: "u1".into(),
            escrowed: spec.price,
            spec,
            payment_id: "p1".into(),
            at: AT,
        }
    }

    fn submitted() -> JobEvent {
        JobEvent::JobSubmitted {
            job_id: "j1".into(),
            creator: "u1".into(),
            spec: spec(),
            payment_id: "p1".into(),
            at: AT,
        }
    }

    fn assigned(node_id: &str, attempt: u32) -> JobEvent {
        JobEvent::JobAssigned {
            job_id: "j1".into(),
            node_id: node_id.into(),
            attempt,
            at: AT,
        }
    }

    fn started(node_id: &str, attempt: u32) -> JobEvent {
        JobEvent::JobStarted {
            job_id: "j1".into(),
            node_id: node_id.into(),
            attempt,
            at: AT,
        }
    }

    fn requeued(node_id: &str, attempt: u32) -> JobEvent {
        JobEvent::JobRequeued {
            job_id: "j1".into(),
            node_id: node_id.into(),
            attempt,
            reason: RequeueReason::NodeLost,
            at: AT,
        }
    }

    fn running() -> Vec<JobEvent> {
        vec![submitted(), assigned("n1", 1), started("n1", 1)]
    }

    fn output() -> Output {
        Output {
            name: "model.safetensors".into(),
            sha256: "cd".repeat(32),
            cid: CID.into(),
            size_bytes: 1234,
        }
    }

    fn exit(node_id: &str, attempt: u32, exit_code: i64) -> JobCommand {
        JobCommand::ReportExit {
            node_id: node_id.into(),
            attempt,
            exit_code,
            outputs: vec![output()],
            at: AT + Duration::minutes(10),
        }
    }

    fn posting(account: LedgerAccount, amount: &str) -> Posting {
        Posting {
            account,
            amount: usdt(amount),
        }
    }

    fn settlement(node_net: &str, platform_fee: &str, refund: &str) -> JobSettlement {
        let mut postings = vec![posting(LedgerAccount::job_escrow("j1"), "-20")];
        if usdt(node_net).is_positive() {
            postings.push(posting(LedgerAccount::node("n1"), node_net));
            postings.push(posting(LedgerAccount::platform_fees(), platform_fee));
        }
        if usdt(refund).is_positive() {
            postings.push(posting(LedgerAccount::payer("u1"), refund));
        }
        JobSettlement {
            fee_schedule_version: 1,
            node_net: usdt(node_net),
            platform_fee: usdt(platform_fee),
            refund: usdt(refund),
            postings,
        }
    }

    fn full_refund() -> JobSettlement {
        settlement("0", "0", "20")
    }

    fn paid_in_full() -> JobSettlement {
        settlement("19", "1", "0")
    }

    fn state_after(events: Vec<JobEvent>) -> Job {
        let mut job = Job::default();
        events.into_iter().for_each(|e| job.apply(e));
        job
    }

    #[test]
    fn a_paid_valid_job_is_submitted_pending() {
        JobTest::with(JobServices::genesis())
            .given_no_previous_events()
            .when(submit(spec()))
            .then_expect_events(vec![submitted()]);
        assert_eq!(
            state_after(vec![submitted()]).status(),
            Some(JobStatus::Pending)
        );
        JobTest::with(JobServices::genesis())
            .given(vec![submitted()])
            .when(submit(spec()))
            .then_expect_error(JobError::AlreadyExists);
    }

    #[test]
    fn a_job_whose_escrow_is_not_its_price_is_rejected() {
        JobTest::with(JobServices::genesis())
            .given_no_previous_events()
            .when(JobCommand::Submit {
                job_id: "j1".into(),
                creator: "u1".into(),
                spec: spec(),
                payment_id: "p1".into(),
                escrowed: usdt("19.99"),
                at: AT,
            })
            .then_expect_error(JobError::EscrowMismatch {
                price: usdt("20"),
                escrowed: usdt("19.99"),
            });
    }

    #[test]
    fn image_references_are_sanity_checked() {
        for good in [
            "busybox",
            "python:3.12-slim",
            "localhost/aiforge-job:busybox",
            "ghcr.io/org/team/img:v1.2",
            "registry.local:5000/a/b",
            &format!("pytorch/pytorch@sha256:{}", "ab".repeat(32)),
        ] {
            assert!(is_image_reference(good), "{good}");
        }
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "img name",
            "-img",
            "img@sha256:abc",
            "host:port/img",
            &"a".repeat(IMAGE_CHARS_MAX + 1),
        ] {
            assert!(!is_image_reference(bad), "{bad}");
        }
    }

    #[test]
    fn each_invalid_spec_field_is_rejected_with_its_error() {
        let mut long_env = spec();
        long_env.env = (0..=ENV_VARS_MAX)
            .map(|n| (format!("K{n}"), String::new()))
            .collect();
        let cases: Vec<(JobSpec, JobError)> = vec![
            (
                JobSpec {
                    image: "not an image".into(),
                    ..spec()
                },
                JobError::InvalidImage,
            ),
            (
                JobSpec {
                    command: vec!["a\0b".into()],
                    ..spec()
                },
                JobError::InvalidArg,
            ),
            (
                JobSpec {
                    command: vec![String::new(); COMMAND_ARGS_MAX + 1],
                    ..spec()
                },
                JobError::TooManyArgs,
            ),
            (long_env, JobError::TooManyEnvVars),
            (
                JobSpec {
                    env: BTreeMap::from([("1ST".to_string(), String::new())]),
                    ..spec()
                },
                JobError::InvalidEnvKey("1ST".into()),
            ),
            (
                JobSpec {
                    env: BTreeMap::from([("aiforge_outputs_dir".to_string(), String::new())]),
                    ..spec()
                },
                JobError::ReservedEnvKey("aiforge_outputs_dir".into()),
            ),
            (
                JobSpec {
                    env: BTreeMap::from([("K".to_string(), "x".repeat(ENV_VALUE_BYTES_MAX + 1))]),
                    ..spec()
                },
                JobError::InvalidEnvValue("K".into()),
            ),
            (
                JobSpec {
                    inputs: vec!["QmNotACid".into()],
                    ..spec()
                },
                JobError::InvalidInput("QmNotACid".into()),
            ),
            (
                JobSpec {
                    inputs: vec![CID.into(), CID.into()],
                    ..spec()
                },
                JobError::DuplicateInput(CID.into()),
            ),
            (
                JobSpec {
                    inputs: vec![CID.into(); INPUTS_MAX + 1],
                    ..spec()
                },
                JobError::TooManyInputs,
            ),
            (
                JobSpec {
                    needs: JobNeeds {
                        gpus: 0,
                        ..spec().needs
                    },
                    ..spec()
                },
                JobError::GpuMemoryWithoutGpus,
            ),
            (
                JobSpec {
                    max_runtime_secs: 86_401,
                    ..spec()
                },
                JobError::OutOfRange(OutOfRange {
                    field: "max_runtime_secs",
                    min: 1,
                    max: 86_400,
                    got: 86_401,
                }),
            ),
            (
                JobSpec {
                    needs: JobNeeds {
                        cpu_cores: 0,
                        ..spec().needs
                    },
                    ..spec()
                },
                JobError::OutOfRange(OutOfRange {
                    field: "needs.cpu_cores",
                    min: 1,
                    max: 1024,
                    got: 0,
                }),
            ),
            (
                JobSpec {
                    price: Usdt::ZERO,
                    ..spec()
                },
                JobError::PriceNotPositive,
            ),
        ];
        for (spec, error) in cases {
            assert!(error.field().is_some(), "{error}");
            JobTest::with(JobServices::genesis())
                .given_no_previous_events()
                .when(submit(spec))
                .then_expect_error(error);
        }
    }

    #[test]
    fn a_pending_job_is_assigned_as_attempt_one_and_only_once() {
        JobTest::with(JobServices::genesis())
            .given(vec![submitted()])
            .when(JobCommand::Assign {
                node_id: "n1".into(),
                at: AT,
            })
            .then_expect_events(vec![assigned("n1", 1)]);
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(JobCommand::Assign {
                node_id: "n2".into(),
                at: AT,
            })
            .then_expect_error(JobError::NotPending {
                status: JobStatus::Assigned,
            });
    }

    #[test]
    fn the_assignee_starts_the_job_and_a_repeated_start_writes_nothing() {
        let start = |node_id: &str| JobCommand::Start {
            node_id: node_id.into(),
            attempt: 1,
            at: AT,
        };
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(start("n1"))
            .then_expect_events(vec![started("n1", 1)]);
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(start("n1"))
            .then_expect_events(vec![]);
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(start("n2"))
            .then_expect_error(JobError::StaleReport {
                node_id: "n2".into(),
                attempt: 1,
            });
        JobTest::with(JobServices::genesis())
            .given(vec![submitted()])
            .when(start("n1"))
            .then_expect_error(JobError::StaleReport {
                node_id: "n1".into(),
                attempt: 1,
            });
    }

    #[test]
    fn exit_code_zero_completes_and_pays_the_node_95_percent() {
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(exit("n1", 1, 0))
            .then_expect_events(vec![JobEvent::JobCompleted {
                job_id: "j1".into(),
                node_id: "n1".into(),
                attempt: 1,
                exit_code: 0,
                outputs: vec![output()],
                settlement: paid_in_full(),
                at: AT + Duration::minutes(10),
            }]);
    }

    #[test]
    fn a_non_zero_exit_fails_the_job_and_still_pays_the_node() {
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(exit("n1", 1, 137))
            .then_expect_events(vec![JobEvent::JobFailed {
                job_id: "j1".into(),
                node_id: "n1".into(),
                attempt: 1,
                reason: FailureReason::NonZeroExit,
                exit_code: Some(137),
                message: "the job exited with code 137".into(),
                settlement: paid_in_full(),
                at: AT + Duration::minutes(10),
            }]);
    }

    #[test]
    fn an_exit_before_the_start_or_with_bad_outputs_is_rejected() {
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(exit("n1", 1, 0))
            .then_expect_error(JobError::NotRunning {
                status: JobStatus::Assigned,
            });
        let with_outputs = |outputs: Vec<Output>| JobCommand::ReportExit {
            node_id: "n1".into(),
            attempt: 1,
            exit_code: 0,
            outputs,
            at: AT,
        };
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(with_outputs(vec![Output {
                name: "../etc/passwd".into(),
                ..output()
            }]))
            .then_expect_error(JobError::InvalidOutput("../etc/passwd".into()));
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(with_outputs(vec![output(), output()]))
            .then_expect_error(JobError::DuplicateOutput("model.safetensors".into()));
    }

    #[test]
    fn an_image_pull_failure_refunds_the_creator_in_full() {
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(JobCommand::ReportFailure {
                node_id: "n1".into(),
                attempt: 1,
                failure: ReportedFailure::ImagePullFailed,
                message: format!("  manifest unknown{}", "!".repeat(2000)),
                at: AT,
            })
            .then_expect_events(vec![JobEvent::JobFailed {
                job_id: "j1".into(),
                node_id: "n1".into(),
                attempt: 1,
                reason: FailureReason::ImagePullFailed,
                exit_code: None,
                message: format!("manifest unknown{}", "!".repeat(MESSAGE_CHARS_MAX - 16)),
                settlement: full_refund(),
                at: AT,
            }]);
    }

    #[test]
    fn an_output_too_large_is_the_jobs_own_failure_and_pays_the_node() {
        let too_large = JobCommand::ReportFailure {
            node_id: "n1".into(),
            attempt: 1,
            failure: ReportedFailure::OutputTooLarge,
            message: "2000000 bytes of output, the limit is 1048576".into(),
            at: AT + Duration::minutes(10),
        };
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(too_large.clone())
            .then_expect_events(vec![JobEvent::JobFailed {
                job_id: "j1".into(),
                node_id: "n1".into(),
                attempt: 1,
                reason: FailureReason::OutputTooLarge,
                exit_code: None,
                message: "2000000 bytes of output, the limit is 1048576".into(),
                settlement: paid_in_full(),
                at: AT + Duration::minutes(10),
            }]);
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(too_large)
            .then_expect_error(JobError::NotRunning {
                status: JobStatus::Assigned,
            });
    }

    #[test]
    fn a_timeout_pays_the_node_in_full_but_not_before_the_runtime_is_up() {
        let timeout = |minutes: i64| JobCommand::ReportTimeout {
            node_id: "n1".into(),
            attempt: 1,
            at: AT + Duration::minutes(minutes),
        };
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(timeout(30))
            .then_expect_error(JobError::TimeoutTooEarly {
                ran_secs: 1800,
                max_runtime_secs: 3600,
            });
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(timeout(59))
            .then_expect_events(vec![JobEvent::JobTimedOut {
                job_id: "j1".into(),
                node_id: "n1".into(),
                attempt: 1,
                settlement: paid_in_full(),
                at: AT + Duration::minutes(59),
            }]);
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(timeout(61))
            .then_expect_error(JobError::NotRunning {
                status: JobStatus::Assigned,
            });
    }

    #[test]
    fn a_lost_node_requeues_the_job_and_its_late_reports_are_rejected() {
        let requeue = JobCommand::Requeue {
            node_id: "n1".into(),
            attempt: 1,
            reason: RequeueReason::NodeLost,
            at: AT,
        };
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(requeue)
            .then_expect_events(vec![requeued("n1", 1)]);
        let mut after = running();
        after.push(requeued("n1", 1));
        let job = state_after(after.clone());
        assert_eq!(
            (job.status(), job.node_id.clone()),
            (Some(JobStatus::Pending), None)
        );
        JobTest::with(JobServices::genesis())
            .given(after.clone())
            .when(exit("n1", 1, 0))
            .then_expect_error(JobError::StaleReport {
                node_id: "n1".into(),
                attempt: 1,
            });
        JobTest::with(JobServices::genesis())
            .given(after.clone())
            .when(JobCommand::Assign {
                node_id: "n2".into(),
                at: AT,
            })
            .then_expect_events(vec![assigned("n2", 2)]);
        after.extend([assigned("n1", 2), started("n1", 2)]);
        // Even the same node, once reassigned, may not report for its earlier attempt.
        JobTest::with(JobServices::genesis())
            .given(after.clone())
            .when(exit("n1", 1, 0))
            .then_expect_error(JobError::StaleReport {
                node_id: "n1".into(),
                attempt: 1,
            });
        let result = JobTest::with(JobServices::genesis())
            .given(after)
            .when(exit("n1", 2, 0))
            .inspect_result()
            .unwrap();
        assert!(matches!(
            result.as_slice(),
            [JobEvent::JobCompleted { attempt: 2, .. }]
        ));
    }

    #[test]
    fn losing_the_node_on_the_last_attempt_fails_the_job_with_a_full_refund() {
        let mut history = vec![submitted()];
        for attempt in 1..ATTEMPTS_MAX {
            history.extend([assigned("n1", attempt), requeued("n1", attempt)]);
        }
        history.push(assigned("n1", ATTEMPTS_MAX));
        JobTest::with(JobServices::genesis())
            .given(history)
            .when(JobCommand::Requeue {
                node_id: "n1".into(),
                attempt: ATTEMPTS_MAX,
                reason: RequeueReason::NotStarted,
                at: AT,
            })
            .then_expect_events(vec![JobEvent::JobFailed {
                job_id: "j1".into(),
                node_id: "n1".into(),
                attempt: ATTEMPTS_MAX,
                reason: FailureReason::AttemptsExhausted,
                exit_code: None,
                message: "attempt 3 of 3 ended: not_started (node n1)".into(),
                settlement: full_refund(),
                at: AT,
            }]);
    }

    #[test]
    fn only_the_creator_cancels_and_a_job_that_never_ran_is_refunded_in_full() {
        let cancel = |by: &str| JobCommand::Cancel {
            by: by.into(),
            at: AT,
        };
        JobTest::with(JobServices::genesis())
            .given(vec![submitted()])
            .when(cancel("u2"))
            .then_expect_error(JobError::NotCreator);
        JobTest::with(JobServices::genesis())
            .given(vec![submitted()])
            .when(cancel("u1"))
            .then_expect_events(vec![JobEvent::JobCancelled {
                job_id: "j1".into(),
                by: "u1".into(),
                node_id: None,
                attempt: 0,
                settlement: full_refund(),
                at: AT,
            }]);
        JobTest::with(JobServices::genesis())
            .given(vec![submitted(), assigned("n1", 1)])
            .when(cancel("u1"))
            .then_expect_events(vec![JobEvent::JobCancelled {
                job_id: "j1".into(),
                by: "u1".into(),
                node_id: Some("n1".into()),
                attempt: 1,
                settlement: full_refund(),
                at: AT,
            }]);
    }

    #[test]
    fn a_job_cancelled_while_running_pays_the_node_for_the_seconds_it_ran() {
        // Half of the hour it was allowed: 10 USDT earned (9.50 node, 0.50 fee), 10 refunded.
        JobTest::with(JobServices::genesis())
            .given(running())
            .when(JobCommand::Cancel {
                by: "u1".into(),
                at: AT + Duration::minutes(30),
            })
            .then_expect_events(vec![JobEvent::JobCancelled {
                job_id: "j1".into(),
                by: "u1".into(),
                node_id: Some("n1".into()),
                attempt: 1,
                settlement: settlement("9.5", "0.5", "10"),
                at: AT + Duration::minutes(30),
            }]);
    }

    #[test]
    fn an_ended_job_takes_no_more_reports_or_cancels() {
        let mut completed = running();
        completed.push(JobEvent::JobCompleted {
            job_id: "j1".into(),
            node_id: "n1".into(),
            attempt: 1,
            exit_code: 0,
            outputs: vec![],
            settlement: paid_in_full(),
            at: AT,
        });
        assert_eq!(
            state_after(completed.clone()).status(),
            Some(JobStatus::Completed)
        );
        JobTest::with(JobServices::genesis())
            .given(completed.clone())
            .when(exit("n1", 1, 0))
            .then_expect_error(JobError::AlreadyEnded {
                status: JobStatus::Completed,
            });
        JobTest::with(JobServices::genesis())
            .given(completed.clone())
            .when(JobCommand::Cancel {
                by: "u1".into(),
                at: AT,
            })
            .then_expect_error(JobError::AlreadyEnded {
                status: JobStatus::Completed,
            });
        JobTest::with(JobServices::genesis())
            .given(completed)
            .when(JobCommand::Assign {
                node_id: "n2".into(),
                at: AT,
            })
            .then_expect_error(JobError::NotPending {
                status: JobStatus::Completed,
            });
    }

    #[test]
    fn commands_to_an_unsubmitted_job_are_rejected() {
        JobTest::with(JobServices::genesis())
            .given_no_previous_events()
            .when(JobCommand::Assign {
                node_id: "n1".into(),
                at: AT,
            })
            .then_expect_error(JobError::NotFound);
        JobTest::with(JobServices::genesis())
            .given_no_previous_events()
            .when(exit("n1", 1, 0))
            .then_expect_error(JobError::NotFound);
    }
}
