//! [`DockerExecutor`]: one container per job through the Docker Engine API (Docker itself, or
//! podman's compatible service: see `scripts/podman`). The container is locked down — no network
//! unless asked, read-only root filesystem, no capabilities, no new privileges, a memory, CPU and
//! process limit — and is removed at the end of every run, whatever the end.
//!
//! Images are never pulled: the job engine of a provider's node reaches no registry; the node
//! puts images in the engine's store before it takes a job that needs one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::logs::{LineSplitter, LogSink};
use super::{
    outputs, prepare_outputs_dir, resolve_inputs, Ended, ExecError, Executor, JobOutcome, JobSpec,
    LogLine, LogStream, Stop, CONTAINER_INPUTS_DIR, CONTAINER_OUTPUTS_DIR, INPUTS_DIR_ENV,
    OUTPUTS_DIR_ENV,
};

/// The label every job container carries, with the job's id as its value.
pub const JOB_ID_LABEL: &str = "io.aiforge.job-id";
/// The label that marks a container as made by this executor.
pub const MANAGED_LABEL: &str = "io.aiforge.managed";
/// The label naming the node whose executor made it ([`DockerConfig::node_id`]).
pub const NODE_ID_LABEL: &str = "io.aiforge.node-id";
/// Processes (threads included) one job may have: stops a fork bomb, not a real program.
pub const PIDS_MAX: i64 = 1024;
/// How often a running job's outputs directory is measured against its limit.
const OUTPUT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// After a kill, how long the engine gets to report the container stopped.
const KILL_WAIT_TIMEOUT: Duration = Duration::from_secs(20);
/// After the job ended, how long the last log lines get to arrive.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The HTTP client's own timeout (for a response to begin) is set out of the way: a followed log
/// stream of a silent job begins only with its first line. Each call has its own timeout instead.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How to reach the engine and name containers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// `unix:///path/to.sock` or `tcp://host:port`; `None` reads `DOCKER_HOST`, then the
    /// platform's default socket.
    pub host: Option<String>,
    /// The time limit of each engine call that is not the job itself (ping, inspect, create,
    /// start, kill, remove).
    pub engine_call_timeout: Duration,
    /// Container names are `<prefix>-<job id>-<random>`.
    pub name_prefix: String,
    /// The network mode of a job that asked for the network.
    pub network_mode_when_allowed: String,
    /// Labels every container with the node it runs for, so that a node restarted after being
    /// killed finds and removes what it left ([`DockerExecutor::remove_leftovers`]).
    pub node_id: Option<String>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            engine_call_timeout: Duration::from_secs(30),
            name_prefix: "aiforge-job".into(),
            network_mode_when_allowed: "bridge".into(),
            node_id: None,
        }
    }
}

/// Runs each job in its own container; see the module documentation.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    host: String,
    config: DockerConfig,
}

impl DockerExecutor {
    /// Connects to the engine and checks that it answers (`/_ping`).
    pub async fn connect(config: DockerConfig) -> Result<Self, ExecError> {
        let host = config
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let docker = Docker::connect_with_host(&host)
            .map_err(|source| ExecError::EngineUnreachable {
                host: host.clone(),
                operation: "connect",
                source,
            })?
            .with_timeout(CLIENT_TIMEOUT);
        let executor = Self {
            docker,
            host,
            config,
        };
        executor.call("ping", executor.docker.ping()).await?;
        Ok(executor)
    }

    /// The engine client, for callers that inspect or clean up (`io.aiforge.job-id` labels).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Removes every container labelled with this executor's node (a node killed mid-job leaves
    /// its container running); call it before the node takes jobs. Returns how many it removed.
    pub async fn remove_leftovers(&self) -> Result<usize, ExecError> {
        let Some(node_id) = &self.config.node_id else {
            return Ok(0);
        };
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{NODE_ID_LABEL}={node_id}")],
        )]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut tries = 0;
        let containers = loop {
            match self
                .call("list", self.docker.list_containers(Some(options.clone())))
                .await
            {
                Ok(containers) => break containers,
                // podman briefly reports a container being removed as `stopped`, a state
                // bollard's model cannot read: ask again.
                Err(ExecError::Engine {
                    source: BollardError::JsonDataError { .. },
                    ..
                }) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut removed = 0;
        for container in containers {
            if let Some(id) = container.id {
                remove(&self.docker, &id, self.config.engine_call_timeout).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// `future`, within the engine call timeout, its error told apart as unreachable / timed
    /// out / refused.
    async fn call<T>(
        &self,
        operation: &'static str,
        future: impl std::future::Future<Output = Result<T, BollardError>>,
    ) -> Result<T, ExecError> {
        match tokio::time::timeout(self.config.engine_call_timeout, future).await {
            Ok(result) => result.map_err(|e| self.engine_error(operation, e)),
            Err(_) => Err(ExecError::EngineTimeout {
                operation,
                after: self.config.engine_call_timeout,
            }),
        }
    }

    fn engine_error(&self, operation: &'static str, source: BollardError) -> ExecError {
        match source {
            BollardError::RequestTimeoutError => ExecError::EngineTimeout {
                operation,
                after: self.config.engine_call_timeout,
            },
            BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::HttpClientError { .. } => ExecError::EngineUnreachable {
                host: self.host.clone(),
                operation,
                source,
            },
            source => ExecError::Engine { operation, source },
        }
    }

    async fn check_image(&self, image: &str) -> Result<(), ExecError> {
        match self
            .call("inspect image", self.docker.inspect_image(image))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(ExecError::ImageNotFound {
                image: image.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    fn container_body(
        &self,
        job: &JobSpec,
        outputs_dir: &Path,
        inputs: &[(String, PathBuf)],
    ) -> ContainerCreateBody {
        let mut env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("{INPUTS_DIR_ENV}={CONTAINER_INPUTS_DIR}"));
        env.push(format!("{OUTPUTS_DIR_ENV}={CONTAINER_OUTPUTS_DIR}"));

        // Mounts rather than `Binds` strings: a host path with ':' or ',' cannot be misread.
        let bind = |source: &Path, target: String, read_only: bool| Mount {
            target: Some(target),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(read_only),
            ..Default::default()
        };
        let mut mounts = vec![bind(outputs_dir, CONTAINER_OUTPUTS_DIR.into(), false)];
        for (name, path) in inputs {
            mounts.push(bind(path, format!("{CONTAINER_INPUTS_DIR}/{name}"), true));
        }

        // Validated to fit an i64.
        let memory = i64::try_from(job.limits.memory_bytes).unwrap_or(i64::MAX);
        let network_mode = if job.network {
            self.config.network_mode_when_allowed.clone()
        } else {
            "none".into()
        };
        let mut labels = HashMap::from([
            (JOB_ID_LABEL.to_string(), job.job_id.to_string()),
            (MANAGED_LABEL.to_string(), "true".to_string()),
        ]);
        if let Some(node_id) = &self.config.node_id {
            labels.insert(NODE_ID_LABEL.to_string(), node_id.clone());
        }
        ContainerCreateBody {
            image: Some(job.image.clone()),
            cmd: (!job.command.is_empty()).then(|| job.command.clone()),
            env: Some(env),
            working_dir: Some("/work".into()),
            labels: Some(labels),
            tty: Some(false),
            host_config: Some(HostConfig {
                memory: Some(memory),
                // Swap equal to memory means no swap: the limit is the limit.
                memory_swap: Some(memory),
                nano_cpus: Some(job.limits.cpus.nano_cpus()),
                pids_limit: Some(PIDS_MAX),
                network_mode: Some(network_mode),
                readonly_rootfs: Some(true),
                mounts: Some(mounts),
                // A writable /tmp for programs that need one; tmpfs pages count against the
                // memory limit, so its size is bounded by it anyway.
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    format!("rw,nosuid,nodev,size={}", job.limits.memory_bytes),
                )])),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                device_requests: gpu_request(job.limits.gpus),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Starts the created container and follows it to its end. Returns why it was stopped (if
    /// it was), its exit code, and the setup and run times.
    async fn drive(
        &self,
        name: &str,
        job: &JobSpec,
        outputs_dir: &Path,
        logs: mpsc::Sender<LogLine>,
        cancel: &CancellationToken,
        began: Instant,
    ) -> Result<Ended, ExecError> {
        self.call("start container", self.docker.start_container(name, None))
            .await?;
        let started = Instant::now();
        let setup = started.duration_since(began);
        let mut log_task = AbortOnDrop(tokio::spawn(forward_logs(
            self.docker.clone(),
            name.to_string(),
            LogSink::new(logs),
        )));

        let limit = job.limits.output_bytes_max;
        let mut wait = pin!(wait_for_exit(self.docker.clone(), name.to_string()));
        let mut deadline = pin!(tokio::time::sleep(job.limits.max_runtime));
        let mut poll = tokio::time::interval(OUTPUT_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (stop, exit_code) = loop {
            tokio::select! {
                exit = &mut wait => {
                    break (None, exit.map_err(|e| self.engine_error("wait for container", e))?)
                }
                () = &mut deadline => break (Some(Stop::TimedOut), None),
                () = cancel.cancelled() => break (Some(Stop::Cancelled), None),
                _ = poll.tick() => {
                    // A failed scan is not a reason to stop the job; the final scan decides.
                    if let Ok(found) = outputs::scan(outputs_dir, limit).await {
                        if found.over_limit(limit) {
                            break (Some(Stop::OutputTooLarge), None);
                        }
                    }
                }
            }
        };
        let run = started.elapsed();

        let exit_code = if stop.is_some() {
            tracing::info!(container = name, reason = ?stop, "killing job container");
            let kill = KillContainerOptionsBuilder::new().signal("KILL").build();
            if let Err(e) = self
                .call(
                    "kill container",
                    self.docker.kill_container(name, Some(kill)),
                )
                .await
            {
                // It may have exited on its own meanwhile; the removal (forced) follows anyway.
                tracing::debug!(container = name, error = %e, "kill failed");
            }
            match tokio::time::timeout(KILL_WAIT_TIMEOUT, &mut wait).await {
                Ok(Ok(code)) => code,
                _ => None,
            }
        } else {
            exit_code
        };

        if tokio::time::timeout(LOG_DRAIN_TIMEOUT, &mut log_task.0)
            .await
            .is_err()
        {
            tracing::warn!(
                container = name,
                "the job's last log lines did not arrive in time"
            );
        }
        Ok(Ended {
            stop,
            exit_code,
            setup,
            run,
        })
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    #[tracing::instrument(skip_all, fields(job_id = %job.job_id, image = %job.image))]
    async fn run_cancellable(
        &self,
        job: &JobSpec,
        work_dir: &Path,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, ExecError> {
        let began = Instant::now();
        job.validate()?;
        let outputs_dir = prepare_outputs_dir(work_dir).await?;
        let inputs = resolve_inputs(job).await?;
        self.check_image(&job.image).await?;

        let short = uuid::Uuid::new_v4().simple().to_string();
        let name = format!(
            "{}-{}-{}",
            self.config.name_prefix,
            job.job_id,
            short.get(..8).unwrap_or(&short)
        );
        // Armed before the create call: a create that timed out may still have made it.
        let removal = Removal::new(
            self.docker.clone(),
            name.clone(),
            self.config.engine_call_timeout,
        );
        let create = CreateContainerOptionsBuilder::new().name(&name).build();
        let body = self.container_body(job, &outputs_dir, &inputs);
        match self
            .call(
                "create container",
                self.docker.create_container(Some(create), body),
            )
            .await
        {
            Ok(_) => {}
            // The image went away after the check.
            Err(e) if is_not_found(&e) => {
                removal.now().await;
                return Err(ExecError::ImageNotFound {
                    image: job.image.clone(),
                });
            }
            Err(e) => {
                removal.now().await;
                return Err(e);
            }
        }
        tracing::debug!(container = %name, "created job container");

        let driven = self
            .drive(&name, job, &outputs_dir, logs, &cancel, began)
            .await;
        removal.now().await;
        driven?
            .outcome(&outputs_dir, job.limits.output_bytes_max, began)
            .await
    }
}

fn is_not_found(e: &ExecError) -> bool {
    matches!(
        e,
        ExecError::Engine {
            source: BollardError::DockerResponseServerError {
                status_code: 404,
                ..
            },
            ..
        }
    )
}

/// The container's exit code once it has stopped. bollard reports a non-zero exit as an error
/// carrying the code; that is an exit, not a failure to wait.
async fn wait_for_exit(docker: Docker, name: String) -> Result<Option<i64>, BollardError> {
    let mut stream = pin!(docker.wait_container(&name, None));
    match stream.next().await {
        Some(Ok(response)) => Ok(Some(response.status_code)),
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(Some(code)),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

/// Follows the container's stdout and stderr and forwards them as lines until the stream ends
/// (the container stopped) or the task is aborted.
async fn forward_logs(docker: Docker, name: String, mut sink: LogSink) {
    let options = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = pin!(docker.logs(&name, Some(options)));
    let mut stdout = LineSplitter::default();
    let mut stderr = LineSplitter::default();
    while let Some(item) = stream.next().await {
        let (stream_kind, splitter, message) = match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                (LogStream::Stdout, &mut stdout, message)
            }
            Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, &mut stderr, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "the job's log stream broke off");
                break;
            }
        };
        for line in splitter.push(&message) {
            sink.send(stream_kind, line).await;
        }
    }
    if let Some(line) = stdout.finish() {
        sink.send(LogStream::Stdout, line).await;
    }
    if let Some(line) = stderr.finish() {
        sink.send(LogStream::Stderr, line).await;
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a job's container (forced: a running one is killed first) when told to, or, if the
/// run's future is dropped first (the caller gave up on it), in the background on drop.
struct Removal {
    docker: Docker,
    name: Option<String>,
    timeout: Duration,
}

impl Removal {
    fn new(docker: Docker, name: String, timeout: Duration) -> Self {
        Self {
            docker,
            name: Some(name),
            timeout,
        }
    }

    async fn now(mut self) {
        if let Some(name) = self.name.take() {
            remove(&self.docker, &name, self.timeout).await;
        }
    }
}

impl Drop for Removal {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else {
            return;
        };
        let docker = self.docker.clone();
        let timeout = self.timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { remove(&docker, &name, timeout).await });
            }
            Err(_) => tracing::error!(
                container = %name,
                "job container left behind: dropped outside a tokio runtime"
            ),
        }
    }
}

/// The device request of `docker run --gpus N`: N devices of any driver with the `gpu`
/// capability (the NVIDIA container toolkit answers it); none for a job without GPUs.
fn gpu_request(gpus: u32) -> Option<Vec<bollard::models::DeviceRequest>> {
    (gpus > 0).then(|| {
        vec![bollard::models::DeviceRequest {
            count: Some(i64::from(gpus)),
            capabilities: Some(vec![vec!["gpu".to_string()]]),
            ..Default::default()
        }]
    })
}

async fn remove(docker: &Docker, name: &str, timeout: Duration) {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match tokio::time::timeout(timeout, docker.remove_container(name, Some(options))).await {
        Ok(Ok(())) => tracing::debug!(container = name, "removed job container"),
        Ok(Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        })) => {}
        Ok(Err(e)) => {
            tracing::error!(container = name, error = %e, "could not remove job container")
        }
        Err(_) => tracing::error!(
            container = name,
            "could not remove job container: the engine did not answer in time"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_job_asks_the_engine_for_its_gpus_and_a_cpu_job_for_none() {
        assert_eq!(gpu_request(0), None);
        let request = gpu_request(2).unwrap_or_default();
        assert_eq!(request.len(), 1);
        assert_eq!(request[0].count, Some(2));
        assert_eq!(request[0].driver, None);
        assert_eq!(request[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
    }
}
