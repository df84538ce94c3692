//! `node-agent run`: a compute node's side of the job network. It heartbeats to the coordinator,
//! takes the jobs assigned to it (from its durable JetStream consumer, or by polling `GET
//! /api/nodes/{id}/jobs/next` without NATS), and for each one:
//!
//! 1. reports it started (a stale or foreign assignment is answered 409 and dropped);
//! 2. downloads its inputs from the coordinator's blob store and recomputes each one's CID from
//!    the bytes (a file that is not the content its CID names is never run: `inputs_unavailable`);
//! 3. runs it with the [`Executor`] (a container through bollard; the process executor only with
//!    the explicit development flag), with the job's memory, CPUs, network and max runtime, and
//!    the node's output limit;
//! 4. uploads each output file (the coordinator hashes it as it stores it; the SHA-256 and CID
//!    must equal the ones computed here) and reports the exit code with the outputs, or why it
//!    failed: `timed_out`, `output_too_large` (the job's own outcomes), `image_pull_failed`
//!    (the image is not in the engine), `node_error`.
//!
//! Heartbeats go over NATS (a request on `aiforge.nodes.heartbeat.<node id>`) when NATS is
//! configured, and over HTTP otherwise or when no coordinator answers there.
//! A running job's log lines stream back to the coordinator in batches (`POST
//! /api/nodes/{id}/jobs/{job_id}/logs`), where its creator reads them.
//! The heartbeat's answer lists the jobs the platform says this node holds; a job running here
//! that is not among them (cancelled by its creator, or handed to another node while this one
//! was silent) is killed. Reports are retried on network errors and 5xx answers, never on a
//! 4xx: those are the platform's verdict.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiforge_domain::cid::CidV0Builder;
use aiforge_domain::job::{self as domain_job, AssignmentMessage, Output};
use aiforge_domain::node_protocol::{
    AssignedJob as Assignment, FailedReason, GpuUse, HeartbeatReply, JobFailed, JobFinished,
    JobLogLines, JobStarted, LogLine as ShippedLine, NatsHeartbeat, NextJob as Next, NodeMetrics,
};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::executor::{
    Cpus, ExecError, Executor, InputFile, JobOutcome, JobSpec, JobState, Limits, LogLine,
};

/// Tries of a report or upload before it is given up (network errors and 5xx only).
const TRIES_MAX: u32 = 5;
/// Log lines kept for a failure's message.
const LOG_TAIL_LINES: usize = 20;
/// On shutdown, how many tenths of a second the killed jobs get to clean up.
const SHUTDOWN_WAIT_STEPS: u32 = 200;
/// How long a call to the coordinator may take (uploads and downloads stream without a limit).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's base URL, e.g. `http://127.0.0.1:8080`.
    pub coordinator: String,
    pub node_id: String,
    pub token: String,
    /// JetStream for assignments; `None` polls the coordinator instead.
    pub nats_url: Option<String>,
    /// Each run gets its own directory here (mode 0700), removed when the run is reported.
    pub work_root: PathBuf,
    pub heartbeat_every: Duration,
    pub poll_every: Duration,
    /// The total size of the files one job may leave; more ends it `output_too_large`.
    pub output_bytes_max: u64,
}

/// One job this node runs now.
struct Running {
    attempt: u32,
    cancel: CancellationToken,
    /// Set once the coordinator accepted the start: only then may a heartbeat's answer that
    /// does not list it stop it (before, the answer may predate the assignment).
    started: bool,
}

pub struct Worker {
    config: WorkerConfig,
    http: reqwest::Client,
    executor: Arc<dyn Executor>,
    running: Mutex<HashMap<String, Running>>,
    /// Heartbeats go over NATS when it is configured (HTTP when it does not answer).
    nats: tokio::sync::OnceCell<async_nats::Client>,
}

/// What the coordinator says about a call.
#[derive(Debug)]
enum CallError {
    /// A 4xx: the platform's verdict (stale, invalid); not retried.
    Refused { status: u16, body: String },
    /// The network, or a 5xx, after every retry.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused { status, body } => write!(f, "refused ({status}): {body}"),
            CallError::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// How a run ended, as the coordinator is told.
enum Verdict {
    Finished {
        exit_code: i64,
        outputs: Vec<Output>,
    },
    Failed {
        reason: FailedReason,
        message: String,
    },
    /// Killed because the platform no longer gives it to this node: nothing to report.
    Stopped,
}

impl Worker {
    pub fn new(config: WorkerConfig, executor: Arc<dyn Executor>) -> Result<Arc<Self>, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Arc::new(Self {
            config: WorkerConfig {
                coordinator: config.coordinator.trim_end_matches('/').to_string(),
                ..config
            },
            http,
            executor,
            running: Mutex::new(HashMap::new()),
            nats: tokio::sync::OnceCell::new(),
        }))
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/api/nodes/{}{path}",
            self.config.coordinator, self.config.node_id
        )
    }

    /// Runs until `shutdown`: then stops every job and tells the coordinator it went offline.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), String> {
        tokio::fs::create_dir_all(&self.config.work_root)
            .await
            .map_err(|e| format!("work dir {}: {e}", self.config.work_root.display()))?;
        tokio::fs::set_permissions(
            &self.config.work_root,
            std::fs::Permissions::from_mode(0o700),
        )
        .await
        .map_err(|e| format!("work dir {}: {e}", self.config.work_root.display()))?;
        if let Some(url) = &self.config.nats_url {
            match async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(10))
                .connect(url.as_str())
                .await
            {
                Ok(client) => {
                    let _ = self.nats.set(client);
                }
                Err(e) => tracing::warn!(error = %e, "NATS unreachable: heartbeats go over HTTP"),
            }
        }
        // The first heartbeat brings the node online and proves the token.
        self.heartbeat()
            .await
            .map_err(|e| format!("heartbeat: {e}"))?;
        let beats = tokio::spawn(self.clone().heartbeats(shutdown.clone()));
        let intake = match self.config.nats_url.clone() {
            Some(url) => tokio::spawn(self.clone().consume(url, shutdown.clone())),
            None => tokio::spawn(self.clone().poll(shutdown.clone())),
        };
        shutdown.cancelled().await;
        intake.abort();
        beats.abort();
        let jobs: Vec<CancellationToken> = self
            .running
            .lock()
            .map(|running| running.values().map(|r| r.cancel.clone()).collect())
            .unwrap_or_default();
        for cancel in jobs {
            cancel.cancel();
        }
        // Give the killed jobs' runs the moment they need to remove their containers and work
        // directories (what a hard stop leaves, the next start removes).
        for _ in 0..SHUTDOWN_WAIT_STEPS {
            if self
                .running
                .lock()
                .map_or(true, |running| running.is_empty())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self
            .http
            .post(self.url("/offline"))
            .bearer_auth(&self.config.token)
            .json(&json!({}))
            .timeout(CALL_TIMEOUT)
            .send()
            .await;
        Ok(())
    }

    async fn heartbeats(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.config.heartbeat_every);
        every.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(e) = self.heartbeat().await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }

    /// One heartbeat; kills the started jobs the answer no longer gives this node.
    async fn heartbeat(&self) -> Result<(), CallError> {
        let started_before: Vec<(String, u32)> = self
            .running
            .lock()
            .map(|running| {
                running
                    .iter()
                    .filter(|(_, r)| r.started)
                    .map(|(id, r)| (id.clone(), r.attempt))
                    .collect()
            })
            .unwrap_or_default();
        let metrics = metrics(started_before.len(), &self.config.work_root).await;
        let answer = match self.nats.get() {
            Some(client) => match self.heartbeat_over_nats(client, &metrics).await {
                Err(CallError::Failed(reason)) => {
                    tracing::warn!(%reason, "heartbeat over NATS failed; sending it over HTTP");
                    self.call_json("/heartbeat", &metrics).await?
                }
                answer => answer?,
            },
            None => self.call_json("/heartbeat", &metrics).await?,
        };
        let reply: HeartbeatReply = serde_json::from_value(answer)
            .map_err(|e| CallError::Failed(format!("heartbeat answer: {e}")))?;
        let held: HashSet<(String, u32)> = reply
            .jobs
            .into_iter()
            .map(|h| (h.job_id, h.attempt))
            .collect();
        if let Ok(running) = self.running.lock() {
            for (job_id, attempt) in started_before {
                if !held.contains(&(job_id.clone(), attempt)) {
                    if let Some(run) = running.get(&job_id).filter(|r| r.attempt == attempt) {
                        tracing::info!(%job_id, attempt, "the platform no longer gives this job to this node: stopping it");
                        run.cancel.cancel();
                    }
                }
            }
        }
        Ok(())
    }

    async fn heartbeat_over_nats(
        &self,
        client: &async_nats::Client,
        metrics: &NodeMetrics,
    ) -> Result<Value, CallError> {
        let body = json!(NatsHeartbeat {
            node_id: self.config.node_id.clone(),
            token: self.config.token.clone(),
            metrics: metrics.clone(),
        });
        let subject = aiforge_domain::node::heartbeat_subject(&self.config.node_id);
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            client.request(subject, body.to_string().into()),
        )
        .await
        .map_err(|_| CallError::Failed("no answer in time".into()))?
        .map_err(|e| CallError::Failed(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| CallError::Failed(format!("heartbeat answer: {e}")))?;
        match answer.get("error") {
            Some(error) => Err(CallError::Refused {
                status: error["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(400),
                body: error.to_string(),
            }),
            None => Ok(answer),
        }
    }

    /// Assignments by polling the coordinator.
    async fn poll(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            match self.next_job().await {
                Ok(Some(assignment)) => {
                    self.clone()
                        .take(assignment.job_id, assignment.attempt, assignment.spec);
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "polling for a job failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.poll_every) => {}
            }
        }
    }

    async fn next_job(&self) -> Result<Option<Assignment>, CallError> {
        let response = self
            .http
            .get(self.url("/jobs/next"))
            .bearer_auth(&self.config.token)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        match response.status().as_u16() {
            204 => Ok(None),
            200 => {
                let next: Next = response
                    .json()
                    .await
                    .map_err(|e| CallError::Failed(format!("next job: {e}")))?;
                // The poll answers the oldest job not yet started: one being started here is
                // not taken twice.
                let busy = self
                    .running
                    .lock()
                    .is_ok_and(|running| running.contains_key(&next.job.job_id));
                Ok((!busy).then_some(next.job))
            }
            status => Err(CallError::Refused {
                status,
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Assignments from this node's durable JetStream consumer; reconnects on failure.
    async fn consume(self: Arc<Self>, url: String, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.clone().consume_once(&url).await {
                tracing::warn!(error = %e, "assignments over NATS failed; reconnecting");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn consume_once(self: Arc<Self>, url: &str) -> Result<(), String> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("node-agent {}", self.config.node_id))
            .connection_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| format!("nats {url}: {e}"))?;
        let js = async_nats::jetstream::new(client);
        // The coordinator creates the stream; a node that starts first waits for it.
        let stream = js
            .get_stream(domain_job::ASSIGNMENTS_STREAM)
            .await
            .map_err(|e| format!("stream {}: {e}", domain_job::ASSIGNMENTS_STREAM))?;
        let consumer = stream
            .get_or_create_consumer(
                &domain_job::assignment_consumer(&self.config.node_id),
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(domain_job::assignment_consumer(&self.config.node_id)),
                    filter_subject: domain_job::assignment_subject(&self.config.node_id),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("messages: {e}"))?;
        println!("node-agent {} consuming assignments", self.config.node_id);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| format!("message: {e}"))?;
            match serde_json::from_slice::<AssignmentMessage>(&message.payload) {
                Ok(assignment) if assignment.node_id == self.config.node_id => {
                    self.clone()
                        .take(assignment.job_id, assignment.attempt, assignment.spec);
                }
                Ok(assignment) => {
                    tracing::warn!(node = %assignment.node_id, "an assignment for another node; ignored")
                }
                Err(e) => tracing::warn!(error = %e, "an unreadable assignment; ignored"),
            }
            // Taken (or refused): the job's fate is now in its reports, not in redelivery.
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack failed");
            }
        }
        Err("the assignments subscription ended".into())
    }

    /// Runs one assignment in the background, unless it runs here already.
    fn take(self: Arc<Self>, job_id: String, attempt: u32, spec: domain_job::JobSpec) {
        let cancel = CancellationToken::new();
        {
            let Ok(mut running) = self.running.lock() else {
                return;
            };
            if running.get(&job_id).is_some_and(|r| r.attempt >= attempt) {
                return;
            }
            running.insert(
                job_id.clone(),
                Running {
                    attempt,
                    cancel: cancel.clone(),
                    started: false,
                },
            );
        }
        tokio::spawn(async move {
            self.run_one(&job_id, attempt, spec, cancel).await;
            if let Ok(mut running) = self.running.lock() {
                if running.get(&job_id).is_some_and(|r| r.attempt == attempt) {
                    running.remove(&job_id);
                }
            }
        });
    }

    async fn run_one(
        &self,
        job_id: &str,
        attempt: u32,
        spec: domain_job::JobSpec,
        cancel: CancellationToken,
    ) {
        let reports = format!("/jobs/{job_id}");
        match self
            .call_json(&format!("{reports}/started"), &JobStarted { attempt })
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::info!(%job_id, attempt, error = %e, "not starting the job");
                return;
            }
        }
        if let Ok(mut running) = self.running.lock() {
            if let Some(run) = running.get_mut(job_id) {
                run.started = true;
            }
        }
        tracing::info!(%job_id, attempt, image = %spec.image, "job started");
        let work_dir = self.config.work_root.join(format!("{job_id}-{attempt}"));
        let verdict = self
            .execute(job_id, attempt, &spec, &work_dir, cancel)
            .await;
        let report = match verdict {
            Verdict::Finished { exit_code, outputs } => self
                .call_json(
                    &format!("{reports}/finished"),
                    &JobFinished {
                        attempt,
                        exit_code,
                        outputs,
                    },
                )
                .await
                .map(|_| format!("finished with exit code {exit_code}")),
            Verdict::Failed { reason, message } => self
                .call_json(
                    &format!("{reports}/failed"),
                    &JobFailed {
                        attempt,
                        reason,
                        message,
                    },
                )
                .await
                .map(|_| format!("failed: {reason:?}")),
            Verdict::Stopped => Ok("stopped".to_string()),
        };
        match report {
            Ok(what) => tracing::info!(%job_id, attempt, "job {what}"),
            Err(e) => {
                tracing::warn!(%job_id, attempt, error = %e, "the job's report was not taken")
            }
        }
        if let Err(e) = tokio::fs::remove_dir_all(&work_dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %work_dir.display(), error = %e, "could not remove a work directory");
            }
        }
    }

    async fn execute(
        &self,
        job_id: &str,
        attempt: u32,
        spec: &domain_job::JobSpec,
        work_dir: &Path,
        cancel: CancellationToken,
    ) -> Verdict {
        let node_error = |message: String| Verdict::Failed {
            reason: FailedReason::NodeError,
            message,
        };
        if let Err(e) = fresh_dir(work_dir).await {
            return node_error(format!("work directory: {e}"));
        }
        let inputs_dir = work_dir.join("inputs");
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        for cid in &spec.inputs {
            let path = inputs_dir.join(cid);
            if let Err(message) = self.download(cid, &path).await {
                return Verdict::Failed {
                    reason: FailedReason::InputsUnavailable,
                    message,
                };
            }
            inputs.push(InputFile::new(cid.clone(), path));
        }
        let job = match executor_job(job_id, spec, inputs, self.config.output_bytes_max) {
            Ok(job) => job,
            Err(message) => return node_error(message),
        };
        let (logs, lines) = mpsc::channel::<LogLine>(256);
        let shipper = LogShipper {
            http: self.http.clone(),
            url: self.url(&format!("/jobs/{job_id}/logs")),
            token: self.config.token.clone(),
            attempt,
        };
        let tail = tokio::spawn(shipper.ship(lines));
        let outcome = self
            .executor
            .run_cancellable(&job, &work_dir.join("run"), logs, cancel)
            .await;
        let tail = tail.await.unwrap_or_default();
        match outcome {
            Ok(outcome) => self.verdict(job_id, attempt, outcome, tail).await,
            Err(ExecError::ImageNotFound { image }) => Verdict::Failed {
                reason: FailedReason::ImagePullFailed,
                message: format!("image {image:?} is not in this node's container engine"),
            },
            Err(e) => node_error(e.to_string()),
        }
    }

    async fn verdict(
        &self,
        job_id: &str,
        attempt: u32,
        outcome: JobOutcome,
        tail: String,
    ) -> Verdict {
        let exit_code = match outcome.state {
            JobState::Succeeded => 0,
            JobState::Failed { exit_code } => exit_code,
            JobState::TimedOut => {
                return Verdict::Failed {
                    reason: FailedReason::TimedOut,
                    message: tail,
                }
            }
            JobState::OutputTooLarge { bytes, limit_bytes } => {
                return Verdict::Failed {
                    reason: FailedReason::OutputTooLarge,
                    message: format!(
                        "the job wrote at least {bytes} bytes of output; this node accepts {limit_bytes}"
                    ),
                }
            }
            JobState::Cancelled => return Verdict::Stopped,
        };
        if exit_code != 0 {
            // A failed job's files are not results (the platform records none for it).
            return Verdict::Finished {
                exit_code,
                outputs: Vec::new(),
            };
        }
        let mut outputs = Vec::with_capacity(outcome.outputs.len());
        let mut names = HashSet::new();
        for file in &outcome.outputs {
            // Results are named by their path under the outputs directory, '/' read as '_'.
            let name = file.path.to_string_lossy().replace('/', "_");
            if !names.insert(name.clone()) {
                return Verdict::Failed {
                    reason: FailedReason::NodeError,
                    message: format!("two outputs are both named {name:?} once flattened"),
                };
            }
            match self.upload(job_id, attempt, &name, &file.host_path).await {
                Ok(output) => outputs.push(output),
                Err(e) => {
                    return Verdict::Failed {
                        reason: FailedReason::NodeError,
                        message: format!("uploading output {name:?}: {e}"),
                    }
                }
            }
        }
        Verdict::Finished { exit_code, outputs }
    }

    /// Downloads one input to `path`, verifying that its bytes are the content its CID names.
    async fn download(&self, cid: &str, path: &Path) -> Result<(), String> {
        let response = self
            .http
            .get(self.url(&format!("/blobs/{cid}")))
            .bearer_auth(&self.config.token)
            .send()
            .await
            .map_err(|e| format!("input {cid}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "input {cid}: the coordinator answered {}",
                response.status()
            ));
        }
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| format!("input {cid}: {e}"))?;
        let mut computed = CidV0Builder::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("input {cid}: {e}"))?;
            computed.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("input {cid}: {e}"))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("input {cid}: {e}"))?;
        let got = computed.finish();
        if got != cid {
            return Err(format!(
                "input {cid}: the bytes received are the content {got}, not {cid}"
            ));
        }
        Ok(())
    }

    /// Uploads one output; the coordinator's SHA-256 and CID must equal the ones of the file.
    async fn upload(
        &self,
        job_id: &str,
        attempt: u32,
        name: &str,
        path: &Path,
    ) -> Result<Output, String> {
        let (sha256, cid, size) = digest_file(path).await?;
        let url = self.url(&format!("/jobs/{job_id}/outputs/{name}?attempt={attempt}"));
        let answer = send_retried(|| async {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| CallError::Failed(format!("{}: {e}", path.display())))?;
            Ok(self
                .http
                .put(&url)
                .bearer_auth(&self.config.token)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::new(file),
                )))
        })
        .await
        .map_err(|e| e.to_string())?;
        let output: Output = serde_json::from_value(answer["output"].clone())
            .map_err(|e| format!("the coordinator's answer to an upload: {e}"))?;
        if output.sha256 != sha256 || output.cid != cid {
            return Err(format!(
                "the coordinator stored {} / {}, the file is {sha256} / {cid}",
                output.sha256, output.cid
            ));
        }
        Ok(output)
    }

    /// A JSON call to one of this node's endpoints, retried on network errors and 5xx.
    async fn call_json(
        &self,
        path: &str,
        body: &(impl serde::Serialize + Sync),
    ) -> Result<Value, CallError> {
        let url = self.url(path);
        send_retried(|| async {
            Ok(self
                .http
                .post(&url)
                .bearer_auth(&self.config.token)
                .json(body)
                .timeout(CALL_TIMEOUT))
        })
        .await
    }
}

/// Sends the request `make` builds and reads its JSON answer; retried (a new request each time)
/// on network errors and 5xx answers, never on a 4xx: that is the platform's verdict.
async fn send_retried<F, Fut>(make: F) -> Result<Value, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<reqwest::RequestBuilder, CallError>>,
{
    let mut last = String::new();
    for try_number in 0..TRIES_MAX {
        if try_number > 0 {
            tokio::time::sleep(backoff(try_number)).await;
        }
        let response = match make().await?.send().await {
            Ok(response) => response,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_server_error() {
            last = format!("{status}: {text}");
            continue;
        }
        if !status.is_success() {
            return Err(CallError::Refused {
                status: status.as_u16(),
                body: text,
            });
        }
        return serde_json::from_str(&text).map_err(|e| CallError::Failed(e.to_string()));
    }
    Err(CallError::Failed(last))
}
/// Streams a job's log lines back to the coordinator in batches (best effort: logs are a
/// courtesy, the outputs are the result) and keeps the last lines for a failure's message.
struct LogShipper {
    http: reqwest::Client,
    url: String,
    token: String,
    attempt: u32,
}

impl LogShipper {
    const BATCH_LINES: usize = 200;
    const BATCH_EVERY: Duration = Duration::from_millis(500);

    async fn ship(self, mut lines: mpsc::Receiver<LogLine>) -> String {
        let mut tail = std::collections::VecDeque::with_capacity(LOG_TAIL_LINES);
        let mut batch: Vec<ShippedLine> = Vec::new();
        let mut every = tokio::time::interval(Self::BATCH_EVERY);
        loop {
            tokio::select! {
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    let stream = match line.stream {
                        crate::executor::LogStream::Stdout => "stdout",
                        crate::executor::LogStream::Stderr => "stderr",
                    };
                    if tail.len() == LOG_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.text.clone());
                    batch.push(ShippedLine { stream: stream.to_string(), text: line.text, attempt: self.attempt });
                    if batch.len() >= Self::BATCH_LINES {
                        self.send(&mut batch).await;
                    }
                }
                _ = every.tick() => self.send(&mut batch).await,
            }
        }
        self.send(&mut batch).await;
        Vec::from(tail).join("\n")
    }

    async fn send(&self, batch: &mut Vec<ShippedLine>) {
        if batch.is_empty() {
            return;
        }
        let body = JobLogLines {
            attempt: self.attempt,
            lines: std::mem::take(batch),
        };
        match self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => tracing::debug!(status = %response.status(), "log lines not taken"),
            Err(e) => tracing::debug!(error = %e, "log lines not sent"),
        }
    }
}

fn backoff(try_number: u32) -> Duration {
    Duration::from_millis(200 * 2u64.pow(try_number.min(6)))
}

/// The executor's job from the platform's: limits from what the job needs.
fn executor_job(
    job_id: &str,
    spec: &domain_job::JobSpec,
    inputs: Vec<InputFile>,
    output_bytes_max: u64,
) -> Result<JobSpec, String> {
    let id = uuid::Uuid::parse_str(job_id).map_err(|e| format!("job id {job_id:?}: {e}"))?;
    let cpus = Cpus::from_millis(spec.needs.cpu_cores.max(1).saturating_mul(1000))
        .map_err(|e| e.to_string())?;
    let mut job = JobSpec::new(id, spec.image.clone(), spec.command.clone());
    job.env = spec.env.clone();
    job.network = spec.network;
    job.inputs = inputs;
    job.limits = Limits {
        memory_bytes: spec
            .needs
            .memory_mb
            .saturating_mul(1024 * 1024)
            .max(Limits::MEMORY_BYTES_MIN),
        cpus,
        max_runtime: Duration::from_secs(spec.max_runtime_secs),
        output_bytes_max,
        gpus: spec.needs.gpus,
    };
    Ok(job)
}

/// An empty directory of this node's own (mode 0700), whatever was there before.
async fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tokio::fs::create_dir_all(dir.join("inputs")).await?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await
}

/// SHA-256 (hex), CIDv0 and size of a file, read once.
pub(crate) async fn digest_file(path: &Path) -> Result<(String, String, u64), String> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sha = Sha256::new();
    let mut cid = CidV0Builder::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if read == 0 {
            break;
        }
        sha.update(&buffer[..read]);
        cid.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((hex::encode(sha.finalize()), cid.finish(), size))
}

/// What a heartbeat says: the load and memory in use (from /proc on Linux; 0 elsewhere), the
/// disk in use where the work directories are (`df`), and each GPU's use (`nvidia-smi`, when
/// the node has it).
async fn metrics(running_jobs: usize, work_root: &Path) -> NodeMetrics {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    };
    let used_mb = field("MemTotal:").saturating_sub(field("MemAvailable:")) / 1024;
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_percent = ((load / cores) * 100.0).clamp(0.0, 100.0).round() as u32;
    let df = command_output("df", &["-Pk", &work_root.to_string_lossy()]).await;
    let gpus = command_output(
        "nvidia-smi",
        &[
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ],
    )
    .await;
    NodeMetrics {
        cpu_percent,
        memory_used_mb: used_mb,
        disk_used_gb: df.as_deref().and_then(disk_used_gb).unwrap_or(0),
        gpus: gpus.as_deref().map(gpu_use).unwrap_or_default(),
        running_jobs: u32::try_from(running_jobs).unwrap_or(u32::MAX),
    }
}

/// A command's stdout, or `None` when it is missing, fails or takes over 5 s.
async fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        _ => None,
    }
}

/// The used space, in whole GiB, from `df -Pk`'s answer (its second line's third column, KiB).
fn disk_used_gb(df: &str) -> Option<u64> {
    let used_kib: u64 = df.lines().nth(1)?.split_whitespace().nth(2)?.parse().ok()?;
    Some(used_kib / (1024 * 1024))
}

/// Each GPU's use from `nvidia-smi --query-gpu=utilization.gpu,memory.used
/// --format=csv,noheader,nounits`: one `percent, MiB` line per GPU; unreadable lines are skipped.
fn gpu_use(csv: &str) -> Vec<GpuUse> {
    csv.lines()
        .filter_map(|line| {
            let (utilization, memory) = line.split_once(',')?;
            let utilization: u32 = utilization.trim().parse().ok()?;
            let memory: u64 = memory.trim().parse().ok()?;
            Some(GpuUse {
                utilization_percent: utilization.min(100),
                memory_used_mb: memory,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn spec(memory_mb: u64, cpu_cores: u32) -> domain_job::JobSpec {
        domain_job::JobSpec {
            job_type: domain_job::JobType::Custom,
            image: "localhost/aiforge-job:busybox".into(),
            command: vec!["true".into()],
            env: Default::default(),
            inputs: vec![],
            needs: domain_job::JobNeeds {
                cpu_cores,
                memory_mb,
                gpus: 0,
                gpu_memory_mb: 0,
            },
            max_runtime_secs: 7,
            network: false,
            price: "1".parse().unwrap(),
        }
    }

    #[test]
    fn the_executor_gets_the_jobs_needs_as_limits() {
        let id = uuid::Uuid::new_v4().to_string();
        let job = executor_job(&id, &spec(256, 2), vec![], 1000).unwrap();
        assert_eq!(job.limits.memory_bytes, 256 * 1024 * 1024);
        assert_eq!(job.limits.cpus.millis(), 2000);
        assert_eq!(job.limits.max_runtime, Duration::from_secs(7));
        assert_eq!(job.limits.output_bytes_max, 1000);
        assert_eq!(job.limits.gpus, 0);
        let mut gpu_job = spec(256, 2);
        gpu_job.needs.gpus = 2;
        assert_eq!(
            executor_job(&id, &gpu_job, vec![], 1000)
                .unwrap()
                .limits
                .gpus,
            2
        );
        // Below the engine's minimum, the minimum; no CPU asked, one CPU.
        let job = executor_job(&id, &spec(0, 0), vec![], 1000).unwrap();
        assert_eq!(job.limits.memory_bytes, Limits::MEMORY_BYTES_MIN);
        assert_eq!(job.limits.cpus.millis(), 1000);
        assert!(executor_job("not-a-uuid", &spec(1, 1), vec![], 1).is_err());
    }

    #[test]
    fn disk_and_gpu_use_are_read_from_df_and_nvidia_smi() {
        let df = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                  /dev/sda1        103081248  52428800  45383520      54% /\n";
        assert_eq!(disk_used_gb(df), Some(50));
        assert_eq!(disk_used_gb("Filesystem\n"), None);
        let smi = "37, 10240\n100, 24000\nN/A, 5\n";
        assert_eq!(
            gpu_use(smi),
            vec![
                GpuUse {
                    utilization_percent: 37,
                    memory_used_mb: 10240
                },
                GpuUse {
                    utilization_percent: 100,
                    memory_used_mb: 24000
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_heartbeat_reports_the_disk_in_use_where_jobs_run() {
        let dir = tempfile::tempdir().unwrap();
        let reported = metrics(2, dir.path()).await;
        assert_eq!(reported.running_jobs, 2);
        let df = command_output("df", &["-Pk", &dir.path().to_string_lossy()])
            .await
            .unwrap();
        assert_eq!(
            Some(reported.disk_used_gb),
            disk_used_gb(&df),
            "{reported:?}"
        );
        assert!(reported.memory_used_mb > 0, "{reported:?}");
        reported.validate().unwrap();
    }

    #[tokio::test]
    async fn a_files_digest_is_its_sha256_and_cid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let (sha, cid, size) = digest_file(&path).await.unwrap();
        assert_eq!(
            sha,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(cid, aiforge_domain::cid::cid_v0(b"hello world"));
        assert_eq!(size, 11);
    }
}
