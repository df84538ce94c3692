//! Running one compute job: what a job asks for ([`JobSpec`]), what came of it ([`JobOutcome`]),
//! and the [`Executor`] port with its two adapters: [`DockerExecutor`] (a container through the
//! Docker Engine API, the only one a provider's node runs) and [`ProcessExecutor`] (the command
//! as a plain child process, for development only). Nothing here knows about NATS, the
//! coordinator or payment: the caller downloads inputs, picks a work directory, and reports.
//!
//! The contract a job sees, in either executor: its input files under `$AIFORGE_INPUTS_DIR/<name>`
//! (read-only; `/work/inputs/<name>` in a container), and whatever it writes under
//! `$AIFORGE_OUTPUTS_DIR` (`/work/outputs` in a container) is its result.

mod docker;
mod logs;
mod outputs;
mod process;
mod spec;

pub use docker::{DockerConfig, DockerExecutor};
pub use logs::{LogLine, LogStream, LOG_BYTES_MAX, LOG_LINE_BYTES_MAX};
pub use outputs::OUTPUT_FILES_MAX;
pub use process::ProcessExecutor;
pub use spec::{Cpus, CpusParseError, InputFile, JobSpec, Limits};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a job's inputs are mounted inside a container.
pub const CONTAINER_INPUTS_DIR: &str = "/work/inputs";
/// Where a job writes its results inside a container.
pub const CONTAINER_OUTPUTS_DIR: &str = "/work/outputs";
/// The environment variable that names the inputs directory, in both executors.
pub const INPUTS_DIR_ENV: &str = "AIFORGE_INPUTS_DIR";
/// The environment variable that names the outputs directory, in both executors.
pub const OUTPUTS_DIR_ENV: &str = "AIFORGE_OUTPUTS_DIR";

/// Runs jobs. `work_dir` is a host directory that belongs to this one run: the executor creates
/// `work_dir/outputs` (it must not exist yet or be empty) and, for the process executor,
/// `work_dir/inputs`. The caller removes `work_dir` when it has taken the outputs, and keeps it
/// out of other host users' reach (mode 0700 on it or a parent): `outputs` is world-writable, so
/// that a container running as any uid can write its results.
///
/// Log lines go to `logs` as they are produced; a full channel slows the job's log reading, a
/// closed one only stops the forwarding. A job that ran to any end, including a timeout or a
/// cancellation, is an `Ok(JobOutcome)`; `Err` means the job could not be run or the engine failed.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `job` to its end, with no way to cancel it but dropping the future.
    async fn run(
        &self,
        job: &JobSpec,
        work_dir: &Path,
        logs: mpsc::Sender<LogLine>,
    ) -> Result<JobOutcome, ExecError> {
        self.run_cancellable(job, work_dir, logs, CancellationToken::new())
            .await
    }

    /// Runs `job` until it ends or `cancel` is cancelled; a cancelled job is killed and ends as
    /// [`JobState::Cancelled`]. Dropping the future also kills the job and removes its container,
    /// in the background.
    async fn run_cancellable(
        &self,
        job: &JobSpec,
        work_dir: &Path,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, ExecError>;
}

/// What came of a job that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub state: JobState,
    /// The exit code the engine reported (a process killed by a signal as 128 + the signal, as
    /// shells and Docker do), `None` when it is not known.
    pub exit_code: Option<i64>,
    /// The regular files under the outputs directory, sorted by path; empty unless the job
    /// succeeded or failed on its own (a timed-out, cancelled or oversized job's files are left in
    /// `work_dir` for the caller to delete, not offered as results).
    pub outputs: Vec<OutputFile>,
    /// The total size of the files found under the outputs directory.
    pub output_bytes: u64,
    pub timing: Timing,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// It exited with code 0 and its outputs are within the limit.
    Succeeded,
    /// It exited with a non-zero code (137 for a process the kernel's OOM killer ended).
    Failed { exit_code: i64 },
    /// It still ran at `Limits::max_runtime` and was killed.
    TimedOut,
    /// Its outputs grew beyond `Limits::output_bytes_max` (or [`OUTPUT_FILES_MAX`] files); it was
    /// killed as soon as that was seen, or found so after it exited.
    OutputTooLarge { bytes: u64, limit_bytes: u64 },
    /// The caller cancelled it and it was killed.
    Cancelled,
}

/// One file a job wrote under its outputs directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Relative to the outputs directory, e.g. `result.json` or `images/0.png`.
    pub path: PathBuf,
    /// Where the file is on the host (`work_dir/outputs/<path>`).
    pub host_path: PathBuf,
    pub size_bytes: u64,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From the call to the job's start (image check, container creation, start).
    pub setup: Duration,
    /// From the job's start to its end (exit, or kill).
    pub run: Duration,
    /// The whole call, cleanup included.
    pub total: Duration,
}

/// Why a job could not be run. The job's own failures (a non-zero exit, a timeout) are not
/// errors but [`JobState`]s.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("invalid job: {0}")]
    InvalidJob(String),
    #[error("input file {name:?} is not readable at {path}: {source}")]
    InputUnreadable {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image is not in the engine's local store. Images are never pulled here (no registry
    /// is reachable from a provider's job engine by design): the node fetches them beforehand.
    #[error("image {image:?} is not present in the container engine (images are not pulled)")]
    ImageNotFound { image: String },
    #[error("container engine at {host} is unreachable ({operation}): {source}")]
    EngineUnreachable {
        host: String,
        operation: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("container engine did not answer {operation} within {after:?}")]
    EngineTimeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("container engine failed {operation}: {source}")]
    Engine {
        operation: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("could not start {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for the job's process failed: {0}")]
    Wait(#[source] std::io::Error),
}

/// Why a running job was stopped before it exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    OutputTooLarge,
    Cancelled,
}

/// The state of a job from how it ended and what it left, the same rules for both executors.
fn final_state(
    stop: Option<Stop>,
    exit_code: Option<i64>,
    found: &outputs::Found,
    limit_bytes: u64,
) -> JobState {
    let too_large = || JobState::OutputTooLarge {
        bytes: found.bytes,
        limit_bytes,
    };
    match stop {
        Some(Stop::OutputTooLarge) => too_large(),
        Some(Stop::TimedOut) => JobState::TimedOut,
        Some(Stop::Cancelled) => JobState::Cancelled,
        None if found.over_limit(limit_bytes) => too_large(),
        None => match exit_code {
            Some(0) => JobState::Succeeded,
            Some(code) => JobState::Failed { exit_code: code },
            // An exit whose code the engine did not give is not a success.
            None => JobState::Failed { exit_code: -1 },
        },
    }
}

/// How a run ended, as the executors saw it; [`Ended::outcome`] adds what the outputs say.
struct Ended {
    stop: Option<Stop>,
    exit_code: Option<i64>,
    setup: Duration,
    run: Duration,
}

impl Ended {
    async fn outcome(
        self,
        outputs_dir: &Path,
        limit_bytes: u64,
        began: std::time::Instant,
    ) -> Result<JobOutcome, ExecError> {
        let found = outputs::scan(outputs_dir, limit_bytes)
            .await
            .map_err(|source| ExecError::WorkDir {
                path: outputs_dir.to_path_buf(),
                source,
            })?;
        let state = final_state(self.stop, self.exit_code, &found, limit_bytes);
        let offered = matches!(state, JobState::Succeeded | JobState::Failed { .. });
        Ok(JobOutcome {
            state,
            exit_code: self.exit_code,
            output_bytes: found.bytes,
            outputs: if offered { found.files } else { Vec::new() },
            timing: Timing {
                setup: self.setup,
                run: self.run,
                total: began.elapsed(),
            },
        })
    }
}

/// Creates `work_dir/outputs`, empty, and returns its path.
async fn prepare_outputs_dir(work_dir: &Path) -> Result<PathBuf, ExecError> {
    let work_err = |source| ExecError::WorkDir {
        path: work_dir.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(work_dir)
        .await
        .map_err(work_err)?;
    // Bind mounts need an absolute source, and a relative one would move with the cwd.
    let work_dir = tokio::fs::canonicalize(work_dir).await.map_err(work_err)?;
    let dir = work_dir.join("outputs");
    let dir_err = |source| ExecError::WorkDir {
        path: dir.clone(),
        source,
    };
    tokio::fs::create_dir_all(&dir).await.map_err(dir_err)?;
    // Writable by any uid: an image may run as a user of its own, and a job has no capability
    // to bypass file modes. Other host users are kept out by `work_dir` (see `Executor`).
    tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
        .await
        .map_err(dir_err)?;
    let mut entries = tokio::fs::read_dir(&dir).await.map_err(dir_err)?;
    if entries.next_entry().await.map_err(dir_err)?.is_some() {
        return Err(ExecError::WorkDir {
            path: dir.clone(),
            source: std::io::Error::other(
                "the outputs directory is not empty; each run needs a fresh work directory",
            ),
        });
    }
    Ok(dir)
}

/// Checks that every input exists and is readable, and returns their absolute paths.
async fn resolve_inputs(job: &JobSpec) -> Result<Vec<(String, PathBuf)>, ExecError> {
    let mut resolved = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        let unreadable = |source| ExecError::InputUnreadable {
            name: input.name.clone(),
            path: input.path.clone(),
            source,
        };
        let path = tokio::fs::canonicalize(&input.path)
            .await
            .map_err(unreadable)?;
        tokio::fs::metadata(&path).await.map_err(unreadable)?;
        resolved.push((input.name.clone(), path));
    }
    Ok(resolved)
}
