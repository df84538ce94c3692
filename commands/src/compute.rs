//! The compute network's commands: node registration and authentication, heartbeats, job
//! submission against a confirmed job payment, assignment, node reports and cancellation. The
//! `Node` and `Job` aggregates decide; this layer makes ids, tokens and times, checks the
//! payment, and keeps what must not be an event:
//! - heartbeats live in the database (`node_heartbeats`, through `liveness`), never in the log
//!   (`Compute::heartbeat`): the last one of each node and the metrics it carried, shared by
//!   every instance. Only the changes they cause are events (`NodeCameOnline`, and
//!   `NodeWentOffline` when [`Compute::expired`] finds a node silent for
//!   `node::HEARTBEAT_TIMEOUT_SECS`). A node the log says is online but that has not been heard
//!   from since this process started counts from the start, so a restart gives every node a
//!   full timeout to check in again.
//! - node tokens: 256 random bits, shown once; only their SHA-256 is stored, in the
//!   `NodeRegistered` event and in the claim `node_token:<sha256>`, whose holder is the node.
//!   A request names a node in its path and carries a token: a token of no node is a 401, a
//!   token of another node a 403 (`Compute::authenticate`).
//!
//! Payment rule for submission: a job is submitted with the id of the creator's own confirmed
//! `job` payment. Its escrow account `job_escrow:<reference>` names the job: the job's id is the
//! payment's reference, which must therefore be a UUID (the creator picks it when creating the
//! payment). The amount the payment put in escrow must equal the job's price (the `Job`
//! aggregate checks). One payment pays one job: the job id comes from the payment, and a job id
//! is submitted once.
//!
//! Assignments reach nodes two ways: polling (the API reads `jobs_view`), and, when NATS is
//! configured, JetStream (`AssignmentPublisher`: one subject per node, read by the node's own
//! durable consumer).
//!
//! The scheduler's pass and the heartbeat sweeper read views, so their loops live in the API
//! crate (`api/src/compute.rs`); the commands they send are here.

use std::sync::Arc;

use aiforge_domain::blob::{Blob, BlobCommand, BlobError, BlobPurpose, BlobServices};
use aiforge_domain::fees::PaymentType;
use aiforge_domain::job::{
    Job, JobCommand, JobError, JobServices, JobSpec, Output, ReportedFailure, RequeueReason,
};
use aiforge_domain::ledger::Beneficiary;
use aiforge_domain::node::{
    heartbeat_expired, Node, NodeCommand, NodeError, NodeServices, NodeStatus, OfflineReason,
    Resources,
};
use aiforge_domain::payment::{Payment, PaymentError, PaymentEvent, PaymentServices};
use aiforge_domain::OutOfRange;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::store::{Claim, Database};

pub const CLAIM_NODE_TOKEN: &str = "node_token";
/// A content's CID, held by its `Blob` aggregate (id = its SHA-256): how a CID a job names
/// finds its blob without a view.
pub const CLAIM_BLOB_CID: &str = "blob_cid";
/// Every node token starts with this.
pub const NODE_TOKEN_PREFIX: &str = "aiforge_node_";
/// Random bytes in a node token: 256 bits of entropy.
pub const NODE_TOKEN_RANDOM_BYTES: usize = 32;
pub use aiforge_domain::node_protocol::{
    GpuUse, NodeMetrics, METRIC_DISK_GB, METRIC_GPU_MEMORY_MB, METRIC_JOBS, METRIC_MEMORY_MB,
    METRIC_PERCENT,
};

/// The last heartbeat of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub at: OffsetDateTime,
    pub metrics: NodeMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error(transparent)]
    Node(#[from] CommandError<NodeError>),
    #[error(transparent)]
    Job(#[from] CommandError<JobError>),
    #[error(transparent)]
    Blob(#[from] CommandError<BlobError>),
    #[error("the node token is missing or belongs to no node")]
    BadNodeToken,
    #[error("this node token belongs to another node")]
    WrongNode,
    #[error("the node's owner account is deactivated")]
    OwnerDeactivated,
    #[error("no such node")]
    UnknownNode,
    #[error("no such job")]
    UnknownJob,
    #[error("no such payment of yours")]
    UnknownPayment,
    #[error("payment {payment_id} is a {found} payment; a job needs a job payment")]
    WrongPaymentType {
        payment_id: String,
        found: &'static str,
    },
    #[error("payment {payment_id} is not confirmed yet")]
    PaymentNotConfirmed { payment_id: String },
    #[error("the job payment's reference names the job and must be a UUID, got {reference:?}")]
    JobReferenceNotUuid { reference: String },
    /// Said alike of a CID no one stored and of another user's file, so the answer tells no one
    /// whether a file exists.
    #[error("input {cid:?} is not a blob of yours; upload it with POST /api/blobs")]
    InputNotYours { cid: String },
    #[error("output {name:?} ({cid}) is not in the blob store as reported for this job; upload it first")]
    OutputNotStored { name: String, cid: String },
    #[error(transparent)]
    InvalidMetrics(#[from] OutOfRange),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CommandError<PaymentError>> for ComputeError {
    fn from(e: CommandError<PaymentError>) -> Self {
        ComputeError::Internal(e.to_string())
    }
}

/// A freshly made node token: the plaintext (returned once, never stored) and its SHA-256.
pub struct NodeToken {
    pub plaintext: String,
    pub sha256: String,
}

/// A node's owner wallet as an address of either network, canonical; None when it is neither.
pub fn owner_wallet_address(text: &str) -> Option<String> {
    use aiforge_domain::wallet::Network;
    let text = text.trim();
    let network = match text.starts_with("0x") || text.starts_with("0X") {
        true => Network::Ethereum,
        false => Network::Tron,
    };
    crate::wallet_crypto::normalize_address(network, text).ok()
}

/// SHA-256 (hex) of a token's full text: the only form of it the store holds.
pub fn token_sha256(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

pub fn new_node_token() -> NodeToken {
    let mut random = [0u8; NODE_TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let plaintext = format!("{NODE_TOKEN_PREFIX}{}", bs58::encode(random).into_string());
    NodeToken {
        sha256: token_sha256(&plaintext),
        plaintext,
    }
}

/// Equal digests, compared in time independent of where they differ.
fn same_digest(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What registration answers; `token` is None when the request was a replay (the token was
/// shown with the first answer only).
pub struct Registered {
    pub outcome: Outcome,
    pub node_id: String,
    pub token: Option<String>,
}

/// What a node reports about its current attempt at a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Started,
    Exited {
        exit_code: i64,
        outputs: Vec<Output>,
    },
    Failed {
        failure: ReportedFailure,
        message: String,
    },
    TimedOut,
}

pub struct Compute {
    nodes: Executor<Node>,
    /// Node owners' accounts: a deactivated owner's node tokens are refused.
    accounts: Executor<aiforge_domain::account::Account>,
    jobs: Executor<Job>,
    payments: Executor<Payment>,
    blobs: Executor<Blob>,
    clock: Arc<dyn Clock>,
    /// When this process started: the last sign of life of a node not heard from since.
    since: OffsetDateTime,
    heartbeat_timeout_secs: i64,
}

/// For commands the platform sends itself (scheduler, sweeper): a fresh id each time; the
/// aggregates make a repeat harmless (a second assignment of a job is refused, a second
/// offline or requeue writes nothing or is stale).
fn system_meta(actor: &str) -> CommandMeta {
    CommandMeta::generated(Some(actor.to_string()))
}

impl Compute {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self {
            nodes: Executor::new(db.clone(), clock.clone(), NodeServices),
            accounts: Executor::new(
                db.clone(),
                clock.clone(),
                aiforge_domain::account::AccountServices,
            ),
            jobs: Executor::new(
                db.clone(),
                clock.clone(),
                JobServices::new(crate::fees::StoreFees::source(db.clone(), clock.clone())),
            ),
            blobs: Executor::new(db.clone(), clock.clone(), BlobServices),
            payments: Executor::new(
                db.clone(),
                clock.clone(),
                PaymentServices::new(crate::fees::StoreFees::source(db, clock.clone())),
            ),
            since: clock.now(),
            clock,
            heartbeat_timeout_secs: aiforge_domain::node::HEARTBEAT_TIMEOUT_SECS,
        }
    }

    /// A node silent for `secs` is lost (default [`aiforge_domain::node::HEARTBEAT_TIMEOUT_SECS`]).
    pub fn with_heartbeat_timeout_secs(mut self, secs: i64) -> Self {
        self.heartbeat_timeout_secs = secs;
        self
    }

    pub fn heartbeat_timeout_secs(&self) -> i64 {
        self.heartbeat_timeout_secs
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn database(&self) -> &Database {
        self.nodes.database()
    }

    #[tracing::instrument(skip(self, resources, meta))]
    pub async fn register(
        &self,
        owner: &str,
        name: &str,
        owner_wallet: &str,
        resources: Resources,
        meta: &CommandMeta,
    ) -> Result<Registered, ComputeError> {
        // Where a node's earnings are to be paid: a real address (checksummed when the
        // checksum is given), kept in its canonical form. The domain has no crypto to check it.
        let owner_wallet = owner_wallet_address(owner_wallet).ok_or(ComputeError::Node(
            CommandError::Rejected(NodeError::InvalidOwnerWallet),
        ))?;
        let node_id = uuid::Uuid::now_v7().to_string();
        let token = new_node_token();
        let command = NodeCommand::Register {
            node_id: node_id.clone(),
            owner: owner.to_string(),
            name: name.to_string(),
            owner_wallet,
            resources,
            token_digest: token.sha256.clone(),
            at: self.clock.now(),
        };
        let claim = Claim {
            namespace: CLAIM_NODE_TOKEN.into(),
            key: token.sha256,
        };
        let outcome = self
            .nodes
            .execute(&node_id, command, meta, &[claim])
            .await?;
        Ok(Registered {
            node_id: outcome.aggregate_id.clone(),
            token: (!outcome.replayed).then_some(token.plaintext),
            outcome,
        })
    }

    /// The node, when `token` is its token (see the module docs for 401 and 403).
    pub async fn authenticate(&self, node_id: &str, token: &str) -> Result<Node, ComputeError> {
        let digest = token_sha256(token.trim());
        let holder = self
            .database()
            .claim_owner(CLAIM_NODE_TOKEN, &digest)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?
            .ok_or(ComputeError::BadNodeToken)?;
        if holder != node_id {
            return Err(ComputeError::WrongNode);
        }
        let node = self.nodes.load(node_id).await?;
        match &node.token_digest {
            Some(stored) if same_digest(stored, &digest) => {}
            _ => return Err(ComputeError::BadNodeToken),
        }
        // From the event store, so a deactivation on any instance counts at the next request.
        if let Some(owner) = &node.owner {
            let account = self
                .accounts
                .load(owner)
                .await
                .map_err(|e| ComputeError::Internal(e.to_string()))?;
            if account.deactivated.is_some() {
                return Err(ComputeError::OwnerDeactivated);
            }
        }
        Ok(node)
    }

    /// Records a heartbeat in memory and brings an offline node online (the one event a
    /// heartbeat can cause). Returns the node's status afterwards.
    #[tracing::instrument(skip(self, token, metrics))]
    pub async fn heartbeat(
        &self,
        node_id: &str,
        token: &str,
        metrics: NodeMetrics,
    ) -> Result<(NodeStatus, Option<Outcome>), ComputeError> {
        metrics.validate()?;
        let node = self.authenticate(node_id, token).await?;
        let at = self.clock.now();
        if node.status() == Some(NodeStatus::Deactivated) {
            return Err(CommandError::Rejected(NodeError::Deactivated).into());
        }
        crate::liveness::record(self.database(), node_id, at, &metrics)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?;
        if node.status() == Some(NodeStatus::Online) {
            return Ok((NodeStatus::Online, None));
        }
        let outcome = self
            .nodes
            .execute(
                node_id,
                NodeCommand::MarkOnline { at },
                &system_meta("heartbeat"),
                &[],
            )
            .await?;
        Ok((NodeStatus::Online, Some(outcome)))
    }

    /// The last heartbeat of a node (recorded by any instance), if it has one.
    pub async fn last_heartbeat(&self, node_id: &str) -> Result<Option<Heartbeat>, ComputeError> {
        crate::liveness::last(self.database(), node_id)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))
    }

    /// A node's heartbeat samples (one a minute at most) whose minute lies in `from..=to`.
    pub async fn heartbeat_samples(
        &self,
        node_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<Heartbeat>, ComputeError> {
        crate::liveness::samples(self.database(), node_id, from, to)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))
    }

    /// Deletes heartbeat samples past their keep (`liveness::HEARTBEAT_SAMPLES_KEEP_SECS`).
    pub async fn prune_heartbeat_samples(&self, now: OffsetDateTime) -> Result<u64, ComputeError> {
        crate::liveness::prune(self.database(), now)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))
    }

    /// Of the nodes the log says are online, those silent for the heartbeat timeout at `now`
    /// (a node never heard of counts from when this process started).
    pub async fn expired(
        &self,
        online: &[String],
        now: OffsetDateTime,
    ) -> Result<Vec<String>, ComputeError> {
        let beats = crate::liveness::last_of(self.database(), online)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?;
        Ok(online
            .iter()
            .filter(|node_id| {
                let last = beats.get(*node_id).copied().unwrap_or(self.since);
                heartbeat_expired(last, now, self.heartbeat_timeout_secs)
            })
            .cloned()
            .collect())
    }

    /// Takes a node offline (the sweeper on a timeout, or the node itself on shutdown).
    pub async fn mark_offline(
        &self,
        node_id: &str,
        reason: OfflineReason,
    ) -> Result<Outcome, ComputeError> {
        let at = self.clock.now();
        // A heartbeat newer than the decision keeps the node (the sweeper read it stale).
        if reason == OfflineReason::HeartbeatTimeout
            && self
                .last_heartbeat(node_id)
                .await?
                .is_some_and(|beat| !heartbeat_expired(beat.at, at, self.heartbeat_timeout_secs))
        {
            return Ok(Outcome {
                aggregate_id: node_id.to_string(),
                replayed: false,
                last: None,
            });
        }
        crate::liveness::forget(self.database(), node_id)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?;
        Ok(self
            .nodes
            .execute(
                node_id,
                NodeCommand::MarkOffline { reason, at },
                &system_meta("heartbeat-sweeper"),
                &[],
            )
            .await?)
    }

    /// An admin (checked by the caller) deactivates or activates a node.
    pub async fn set_active(
        &self,
        node_id: &str,
        admin: &str,
        active: bool,
        meta: &CommandMeta,
    ) -> Result<Outcome, ComputeError> {
        let node = self.nodes.load(node_id).await?;
        if node.id.is_none() {
            return Err(ComputeError::UnknownNode);
        }
        let at = self.clock.now();
        let by_admin = admin.to_string();
        let command = if active {
            NodeCommand::Activate { by_admin, at }
        } else {
            crate::liveness::forget(self.database(), node_id)
                .await
                .map_err(|e| ComputeError::Internal(e.to_string()))?;
            NodeCommand::Deactivate { by_admin, at }
        };
        Ok(self.nodes.execute(node_id, command, meta, &[]).await?)
    }

    pub async fn node(&self, node_id: &str) -> Result<Node, ComputeError> {
        let node = self.nodes.load(node_id).await?;
        if node.id.is_none() {
            return Err(ComputeError::UnknownNode);
        }
        Ok(node)
    }

    pub async fn job(&self, job_id: &str) -> Result<Job, ComputeError> {
        let job = self.jobs.load(job_id).await?;
        if job.id.is_none() {
            return Err(ComputeError::UnknownJob);
        }
        Ok(job)
    }

    /// The job a confirmed job payment of `creator`'s pays for, and the amount it escrowed.
    async fn job_payment(
        &self,
        creator: &str,
        payment_id: &str,
    ) -> Result<(String, aiforge_domain::Usdt), ComputeError> {
        let payment = self.payments.load(payment_id).await?;
        let Some(PaymentEvent::PaymentCreated {
            payer,
            payment_type,
            amount,
            reference,
            beneficiary,
            ..
        }) = &payment.created
        else {
            return Err(ComputeError::UnknownPayment);
        };
        if payer != creator {
            return Err(ComputeError::UnknownPayment);
        }
        let Beneficiary::JobEscrow { job_id } = beneficiary else {
            return Err(ComputeError::WrongPaymentType {
                payment_id: payment_id.to_string(),
                found: payment_type.as_str(),
            });
        };
        if *payment_type != PaymentType::Job {
            return Err(ComputeError::WrongPaymentType {
                payment_id: payment_id.to_string(),
                found: payment_type.as_str(),
            });
        }
        if payment.confirmed_tx.is_none() {
            return Err(ComputeError::PaymentNotConfirmed {
                payment_id: payment_id.to_string(),
            });
        }
        let job_id = match uuid::Uuid::parse_str(job_id) {
            Ok(uuid) if uuid.to_string() == *job_id => job_id.clone(),
            _ => {
                return Err(ComputeError::JobReferenceNotUuid {
                    reference: reference.clone(),
                })
            }
        };
        Ok((job_id, *amount))
    }

    /// Submits a job paid by `payment_id` (see the module docs for the payment rule).
    #[tracing::instrument(skip(self, spec, meta))]
    pub async fn submit(
        &self,
        creator: &str,
        payment_id: &str,
        spec: JobSpec,
        meta: &CommandMeta,
    ) -> Result<Outcome, ComputeError> {
        self.check_inputs(creator, &spec.inputs).await?;
        let (job_id, escrowed) = self.job_payment(creator, payment_id).await?;
        let command = JobCommand::Submit {
            job_id: job_id.clone(),
            creator: creator.to_string(),
            spec,
            payment_id: payment_id.to_string(),
            escrowed,
            at: self.clock.now(),
        };
        Ok(self.jobs.execute(&job_id, command, meta, &[]).await?)
    }

    /// Records a job input or output the blob store now holds (nothing when that content was
    /// recorded before).
    pub async fn record_blob(
        &self,
        stored: &crate::blob::StoredBlob,
        backend: &str,
        by: &str,
        purpose: BlobPurpose,
        meta: &CommandMeta,
    ) -> Result<Outcome, ComputeError> {
        // The first store of a content claims its CID; later ones find the claim there.
        let claimed = self
            .database()
            .claim_owner(CLAIM_BLOB_CID, &stored.cid)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?
            .is_some();
        let claims = match claimed {
            true => Vec::new(),
            false => vec![Claim {
                namespace: CLAIM_BLOB_CID.to_string(),
                key: stored.cid.clone(),
            }],
        };
        let command = BlobCommand::Store {
            sha256: stored.sha256.clone(),
            cid: stored.cid.clone(),
            size_bytes: stored.size_bytes,
            backend: backend.to_string(),
            by: by.to_string(),
            purpose,
            at: self.clock.now(),
        };
        match self
            .blobs
            .execute(&stored.sha256, command.clone(), meta, &claims)
            .await
        {
            // A concurrent first store of the same content claimed the CID: store as a later one.
            Err(CommandError::Taken { .. }) => Ok(self
                .blobs
                .execute(&stored.sha256, command, meta, &[])
                .await?),
            other => Ok(other?),
        }
    }

    /// The blob `cid` names, when `user` may use it: they uploaded that content, or a job of
    /// theirs wrote it (`Blob::usable_by`). None otherwise, whether or not anyone stored it.
    pub async fn usable_blob(&self, user: &str, cid: &str) -> Result<Option<Blob>, ComputeError> {
        let Some(sha256) = self
            .database()
            .claim_owner(CLAIM_BLOB_CID, cid)
            .await
            .map_err(|e| ComputeError::Internal(e.to_string()))?
        else {
            return Ok(None);
        };
        let blob = self.blobs.load(&sha256).await?;
        let mut theirs = std::collections::BTreeSet::new();
        for job_id in &blob.jobs {
            if self.jobs.load(job_id).await?.creator.as_deref() == Some(user) {
                theirs.insert(job_id.clone());
            }
        }
        Ok(blob
            .usable_by(user, |job| theirs.contains(job))
            .then_some(blob))
    }

    /// Every input of a job `creator` submits is a blob they may use (`usable_blob`).
    pub async fn check_inputs(&self, creator: &str, inputs: &[String]) -> Result<(), ComputeError> {
        for cid in inputs {
            if self.usable_blob(creator, cid).await?.is_none() {
                return Err(ComputeError::InputNotYours { cid: cid.clone() });
            }
        }
        Ok(())
    }

    /// Every output a node reports for `job_id` was stored for that job, with the SHA-256 and
    /// size it reports (content addressed: the same bytes stored before are the same blob).
    pub async fn check_outputs(
        &self,
        job_id: &str,
        outputs: &[Output],
    ) -> Result<(), ComputeError> {
        for output in outputs {
            let sha256 = self
                .database()
                .claim_owner(CLAIM_BLOB_CID, &output.cid)
                .await
                .map_err(|e| ComputeError::Internal(e.to_string()))?;
            let blob = match sha256 {
                Some(sha256) if sha256 == output.sha256 => Some(self.blobs.load(&sha256).await?),
                _ => None,
            };
            let stored = blob.is_some_and(|blob| {
                blob.stored && blob.size_bytes == output.size_bytes && blob.jobs.contains(job_id)
            });
            if !stored {
                return Err(ComputeError::OutputNotStored {
                    name: output.name.clone(),
                    cid: output.cid.clone(),
                });
            }
        }
        Ok(())
    }

    /// The scheduler's assignment; false when the job is no longer pending (another pass, a
    /// cancel or an ending got there first).
    pub async fn assign(&self, job_id: &str, node_id: &str) -> Result<bool, ComputeError> {
        let command = JobCommand::Assign {
            node_id: node_id.to_string(),
            at: self.clock.now(),
        };
        match self
            .jobs
            .execute(job_id, command, &system_meta("scheduler"), &[])
            .await
        {
            Ok(_) => Ok(true),
            Err(CommandError::Rejected(
                JobError::NotPending { .. } | JobError::AlreadyEnded { .. },
            )) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Hands a job back to the queue because `node_id`, its assignee on `attempt`, was lost;
    /// false when that attempt is over already.
    pub async fn requeue(
        &self,
        job_id: &str,
        node_id: &str,
        attempt: u32,
        reason: RequeueReason,
    ) -> Result<bool, ComputeError> {
        let command = JobCommand::Requeue {
            node_id: node_id.to_string(),
            attempt,
            reason,
            at: self.clock.now(),
        };
        match self
            .jobs
            .execute(job_id, command, &system_meta("heartbeat-sweeper"), &[])
            .await
        {
            Ok(_) => Ok(true),
            Err(CommandError::Rejected(
                JobError::StaleReport { .. } | JobError::AlreadyEnded { .. },
            )) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A node's report on its attempt at a job (the caller authenticated the node).
    #[tracing::instrument(skip(self, report, meta))]
    pub async fn report(
        &self,
        node_id: &str,
        job_id: &str,
        attempt: u32,
        report: Report,
        meta: &CommandMeta,
    ) -> Result<Outcome, ComputeError> {
        self.job(job_id).await?;
        if let Report::Exited { outputs, .. } = &report {
            self.check_outputs(job_id, outputs).await?;
        }
        let node_id = node_id.to_string();
        let at = self.clock.now();
        let command = match report {
            Report::Started => JobCommand::Start {
                node_id,
                attempt,
                at,
            },
            Report::Exited { exit_code, outputs } => JobCommand::ReportExit {
                node_id,
                attempt,
                exit_code,
                outputs,
                at,
            },
            Report::Failed { failure, message } => JobCommand::ReportFailure {
                node_id,
                attempt,
                failure,
                message,
                at,
            },
            Report::TimedOut => JobCommand::ReportTimeout {
                node_id,
                attempt,
                at,
            },
        };
        Ok(self.jobs.execute(job_id, command, meta, &[]).await?)
    }

    pub async fn cancel(
        &self,
        job_id: &str,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, ComputeError> {
        let job = self.job(job_id).await?;
        // Another user's job does not exist for them.
        if job.creator.as_deref() != Some(user_id) {
            return Err(ComputeError::UnknownJob);
        }
        let command = JobCommand::Cancel {
            by: user_id.to_string(),
            at: self.clock.now(),
        };
        Ok(self.jobs.execute(job_id, command, meta, &[]).await?)
    }
}

pub use aiforge_domain::job::{
    assignment_consumer, assignment_subject, AssignmentMessage, ASSIGNMENTS_STREAM,
    ASSIGNMENTS_SUBJECT_PREFIX,
};
/// Assignments the stream keeps, per node subject (older ones are long stale).
pub const ASSIGNMENTS_PER_NODE_MAX: i64 = 1000;
pub const ASSIGNMENT_ACK_TIMEOUT_SECS: u64 = 10;

/// Makes sure the assignments stream exists.
pub async fn assignments_stream(
    js: &async_nats::jetstream::Context,
) -> Result<(), async_nats::Error> {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: ASSIGNMENTS_STREAM.to_string(),
        subjects: vec![format!("{ASSIGNMENTS_SUBJECT_PREFIX}.>")],
        max_messages_per_subject: ASSIGNMENTS_PER_NODE_MAX,
        duplicate_window: std::time::Duration::from_secs(crate::bus::NATS_DUPLICATE_WINDOW_SECS),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// A reactor: each `JobAssigned` is published to its node's subject, with the message id
/// `<job id>:<attempt>` so a re-publication after a crash is dropped by JetStream; the reactor
/// moves its checkpoint only after JetStream acknowledged. Polling (`GET /api/nodes/{id}/jobs/next`)
/// reads the same assignments from the views, for nodes without NATS.
pub struct AssignmentPublisher {
    pub js: async_nats::jetstream::Context,
    pub compute: Arc<Compute>,
}

#[async_trait::async_trait]
impl crate::reactor::Reactor for AssignmentPublisher {
    fn name(&self) -> &'static str {
        "job_assignments_nats"
    }

    async fn react(
        &self,
        event: &crate::store::RecordedEvent,
    ) -> Result<(), crate::reactor::ReactError> {
        if event.event_type != "JobAssigned" {
            return Ok(());
        }
        let aiforge_domain::job::JobEvent::JobAssigned {
            job_id,
            node_id,
            attempt,
            at,
        } = serde_json::from_str(&event.payload)?
        else {
            return Ok(());
        };
        let job = self.compute.job(&job_id).await?;
        let spec = job
            .spec
            .ok_or_else(|| format!("job {job_id} has no spec"))?;
        let message = AssignmentMessage {
            job_id: job_id.clone(),
            node_id: node_id.clone(),
            attempt,
            spec,
            assigned_at: at,
        };
        let body = serde_json::to_vec(&message)?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{job_id}:{attempt}").as_str());
        let ack = self
            .js
            .publish_with_headers(assignment_subject(&node_id), headers, body.into())
            .await?;
        tokio::time::timeout(
            std::time::Duration::from_secs(ASSIGNMENT_ACK_TIMEOUT_SECS),
            ack,
        )
        .await
        .map_err(|_| "timed out waiting for a JetStream ack")??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;
    use crate::ManualClock;
    use aiforge_domain::node::Gpu;
    use time::macros::datetime;

    fn resources(gpus: usize) -> Resources {
        Resources {
            cpu_cores: 4,
            memory_mb: 8192,
            disk_gb: 100,
            gpus: vec![
                Gpu {
                    model: "RTX 4090".into(),
                    memory_mb: 24_576,
                };
                gpus
            ],
            max_concurrent_jobs: 2,
        }
    }

    async fn compute() -> (TestDatabase, Arc<ManualClock>, Compute) {
        let db = TestDatabase::sqlite().await.unwrap();
        let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 10:00 UTC)));
        let compute = Compute::new(db.db.clone(), clock.clone());
        (db, clock, compute)
    }

    #[test]
    fn node_tokens_carry_256_bits_and_only_their_hash_is_kept() {
        let a = new_node_token();
        let b = new_node_token();
        assert_ne!(a.plaintext, b.plaintext);
        let random = bs58::decode(&a.plaintext[NODE_TOKEN_PREFIX.len()..])
            .into_vec()
            .unwrap();
        assert_eq!(random.len(), NODE_TOKEN_RANDOM_BYTES);
        assert_eq!(a.sha256, token_sha256(&a.plaintext));
        assert!(aiforge_domain::is_sha256_hex(&a.sha256));
        assert!(same_digest(&a.sha256, &a.sha256.clone()));
        assert!(!same_digest(&a.sha256, &b.sha256));
    }

    #[tokio::test]
    async fn a_token_opens_its_own_node_only() {
        let (db, _clock, compute) = compute().await;
        let meta = || CommandMeta::generated(Some("u1".into()));
        let one = compute
            .register(
                "u1",
                "one",
                "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
                resources(0),
                &meta(),
            )
            .await
            .unwrap();
        let two = compute
            .register(
                "u1",
                "two",
                "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
                resources(0),
                &meta(),
            )
            .await
            .unwrap();
        let token_one = one.token.clone().unwrap();
        compute
            .authenticate(&one.node_id, &token_one)
            .await
            .unwrap();
        assert!(matches!(
            compute.authenticate(&two.node_id, &token_one).await,
            Err(ComputeError::WrongNode)
        ));
        assert!(matches!(
            compute
                .authenticate(&one.node_id, "aiforge_node_forged")
                .await,
            Err(ComputeError::BadNodeToken)
        ));
        db.cleanup().await;
    }

    #[tokio::test]
    async fn heartbeats_bring_a_node_online_once_and_silence_takes_it_offline() {
        let (db, clock, compute) = compute().await;
        let node = compute
            .register(
                "u1",
                "rig",
                "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
                resources(1),
                &CommandMeta::generated(None),
            )
            .await
            .unwrap();
        let token = node.token.unwrap();
        let (status, first) = compute
            .heartbeat(&node.node_id, &token, NodeMetrics::default())
            .await
            .unwrap();
        assert_eq!(status, NodeStatus::Online);
        assert!(first.is_some_and(|o| o.last.is_some()));
        let (_, second) = compute
            .heartbeat(&node.node_id, &token, NodeMetrics::default())
            .await
            .unwrap();
        assert!(
            second.is_none(),
            "a heartbeat of an online node is no event"
        );
        let online = vec![node.node_id.clone()];
        clock.advance(time::Duration::seconds(
            aiforge_domain::node::HEARTBEAT_TIMEOUT_SECS - 1,
        ));
        assert!(compute
            .expired(&online, clock.now())
            .await
            .unwrap()
            .is_empty());
        clock.advance(time::Duration::seconds(1));
        assert_eq!(compute.expired(&online, clock.now()).await.unwrap(), online);
        compute
            .mark_offline(&node.node_id, OfflineReason::HeartbeatTimeout)
            .await
            .unwrap();
        assert_eq!(
            compute.node(&node.node_id).await.unwrap().status(),
            Some(NodeStatus::Offline)
        );
        let bad = NodeMetrics {
            cpu_percent: 101,
            ..NodeMetrics::default()
        };
        assert!(matches!(
            compute.heartbeat(&node.node_id, &token, bad).await,
            Err(ComputeError::InvalidMetrics(_))
        ));
        db.cleanup().await;
    }
}
