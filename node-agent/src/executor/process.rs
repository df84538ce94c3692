//! [`ProcessExecutor`]: a job's command as a plain child process of the node, for development
//! on a machine without a container engine. It isolates nothing: the job runs as the node's
//! user, sees its files and its network, and gets no memory or CPU limit. Its runtime and output
//! size limits are enforced as in a container (the whole process group is killed).
//!
//! A node must never pick it by default: it is built only through
//! [`ProcessExecutor::new_unsafe_dev`], and the node binary is to offer it only behind an
//! explicit command-line flag (planned: `node-agent --unsafe-dev-process-executor`) that also
//! logs a warning at startup. The job's `image` and `network` fields are ignored.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::logs::{LineSplitter, LogSink};
use super::{
    outputs, prepare_outputs_dir, resolve_inputs, Ended, ExecError, Executor, JobOutcome, JobSpec,
    LogLine, LogStream, Stop, INPUTS_DIR_ENV, OUTPUTS_DIR_ENV,
};

/// How often a running job's outputs directory is measured against its limit.
const OUTPUT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// After a kill, how long the process gets to be reaped.
const KILL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the job ended, how long the last log lines get to arrive.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The PATH a job gets when the node has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Bytes read from a pipe at a time.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Runs a job's command directly, without a container. Development only: see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    _dev_only: (),
}

impl ProcessExecutor {
    /// An executor that runs jobs **without any isolation** (no container, no memory, CPU or
    /// network limit). Only for development on a machine without a container engine, and only
    /// when the node was started with the explicit flag for it; never on a provider's node.
    pub fn new_unsafe_dev() -> Self {
        tracing::warn!("the process executor runs jobs without isolation: development use only");
        Self { _dev_only: () }
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    #[tracing::instrument(skip_all, fields(job_id = %job.job_id))]
    async fn run_cancellable(
        &self,
        job: &JobSpec,
        work_dir: &Path,
        logs: mpsc::Sender<LogLine>,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, ExecError> {
        let began = Instant::now();
        job.validate()?;
        let Some((program, args)) = job.command.split_first() else {
            return Err(ExecError::InvalidJob(
                "the process executor needs a command (there is no image default)".into(),
            ));
        };
        let outputs_dir = prepare_outputs_dir(work_dir).await?;
        let work_dir = outputs_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| work_dir.to_path_buf());
        let inputs_dir = link_inputs(&work_dir, &resolve_inputs(job).await?).await?;

        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .envs(&job.env)
            .env(INPUTS_DIR_ENV, &inputs_dir)
            .env(OUTPUTS_DIR_ENV, &outputs_dir)
            .current_dir(&work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a kill reaches what the command started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        })?;
        let started = Instant::now();
        let pgid = child.id();
        // Kills the group however this function ends early, a dropped future included.
        let mut group = KillGroupOnDrop(pgid);

        let sink = Arc::new(Mutex::new(LogSink::new(logs)));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(forward(
                stdout,
                LogStream::Stdout,
                sink.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(forward(
                stderr,
                LogStream::Stderr,
                sink.clone(),
            )));
        }

        let limit = job.limits.output_bytes_max;
        let mut deadline = pin!(tokio::time::sleep(job.limits.max_runtime));
        let mut poll = tokio::time::interval(OUTPUT_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (stop, status) = loop {
            tokio::select! {
                status = child.wait() => break (None, Some(status.map_err(ExecError::Wait)?)),
                () = &mut deadline => break (Some(Stop::TimedOut), None),
                () = cancel.cancelled() => break (Some(Stop::Cancelled), None),
                _ = poll.tick() => {
                    if let Ok(found) = outputs::scan(&outputs_dir, limit).await {
                        if found.over_limit(limit) {
                            break (Some(Stop::OutputTooLarge), None);
                        }
                    }
                }
            }
        };
        let run = started.elapsed();
        // Also after a normal exit: what the command left running in the background goes too.
        // (Once the leader is reaped its id could in principle be reused; the kill follows at
        // once, and the guard is disarmed so no late kill can hit a stranger.)
        kill_group(pgid).await;
        group.0 = None;
        let status = match status {
            Some(status) => Some(status),
            None => {
                let _ = child.start_kill();
                tokio::time::timeout(KILL_WAIT_TIMEOUT, child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        for reader in readers {
            if tokio::time::timeout(LOG_DRAIN_TIMEOUT, reader)
                .await
                .is_err()
            {
                tracing::warn!("the job's last log lines did not arrive in time");
            }
        }

        Ended {
            stop,
            exit_code: status.map(exit_code),
            setup: started.duration_since(began),
            run,
        }
        .outcome(&outputs_dir, limit, began)
        .await
    }
}

/// Shells' and Docker's convention: killed by signal N is 128 + N.
fn exit_code(status: ExitStatus) -> i64 {
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

/// `work_dir/inputs/<name>` as a symbolic link to each input.
async fn link_inputs(work_dir: &Path, inputs: &[(String, PathBuf)]) -> Result<PathBuf, ExecError> {
    let dir = work_dir.join("inputs");
    let dir_err = |source| ExecError::WorkDir {
        path: dir.clone(),
        source,
    };
    tokio::fs::create_dir_all(&dir).await.map_err(dir_err)?;
    for (name, path) in inputs {
        tokio::fs::symlink(path, dir.join(name))
            .await
            .map_err(dir_err)?;
    }
    Ok(dir)
}

async fn forward(mut pipe: impl AsyncRead + Unpin, stream: LogStream, sink: Arc<Mutex<LogSink>>) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for line in splitter.push(buf.get(..n).unwrap_or_default()) {
                    sink.lock().await.send(stream, line).await;
                }
            }
        }
    }
    if let Some(line) = splitter.finish() {
        sink.lock().await.send(stream, line).await;
    }
}

/// SIGKILL to a whole process group, through kill(1): the workspace forbids `unsafe`, which a
/// direct kill(2) call would need.
async fn kill_group(pgid: Option<u32>) {
    if let Some(pgid) = pgid {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pgid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // Blocking but brief; a drop cannot await.
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use crate::executor::{InputFile, JobState};

    fn job(script: &str) -> JobSpec {
        let mut job = JobSpec::new(
            uuid::Uuid::now_v7(),
            "ignored-by-the-process-executor",
            vec!["sh".into(), "-c".into(), script.into()],
        );
        job.limits.max_runtime = Duration::from_secs(30);
        job.limits.output_bytes_max = 1024 * 1024;
        job
    }

    async fn run(
        job: &JobSpec,
    ) -> (
        Result<JobOutcome, ExecError>,
        Vec<LogLine>,
        tempfile::TempDir,
    ) {
        let work = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let collector = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(line) = rx.recv().await {
                lines.push(line);
            }
            lines
        });
        let result = ProcessExecutor::new_unsafe_dev()
            .run(job, work.path(), tx)
            .await;
        (result, collector.await.unwrap(), work)
    }

    #[tokio::test]
    async fn a_job_reads_its_input_and_writes_its_output_through_the_directory_variables() {
        let inputs = tempfile::tempdir().unwrap();
        std::fs::write(inputs.path().join("in.txt"), b"abc\n").unwrap();
        let mut job = job(
            "tr a-z A-Z < \"$AIFORGE_INPUTS_DIR/in.txt\" > \"$AIFORGE_OUTPUTS_DIR/out.txt\"; \
             echo \"$GREETING\"; echo warning >&2",
        );
        job.inputs
            .push(InputFile::new("in.txt", inputs.path().join("in.txt")));
        job.env.insert("GREETING".into(), "hello".into());
        let (outcome, logs, _work) = run(&job).await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.state, JobState::Succeeded);
        assert_eq!(outcome.outputs.len(), 1);
        assert_eq!(outcome.outputs[0].path, Path::new("out.txt"));
        assert_eq!(outcome.outputs[0].size_bytes, 4);
        assert_eq!(
            std::fs::read(&outcome.outputs[0].host_path).unwrap(),
            b"ABC\n"
        );
        let mut lines: Vec<_> = logs.iter().map(|l| (l.stream, l.text.as_str())).collect();
        lines.sort_by_key(|(stream, _)| *stream == LogStream::Stderr);
        assert_eq!(
            lines,
            vec![(LogStream::Stdout, "hello"), (LogStream::Stderr, "warning")]
        );
    }

    #[tokio::test]
    async fn a_job_that_exits_non_zero_fails_with_its_exit_code() {
        let (outcome, _logs, _work) = run(&job("exit 7")).await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.state, JobState::Failed { exit_code: 7 });
        assert_eq!(outcome.exit_code, Some(7));
    }

    #[tokio::test]
    async fn a_job_past_its_max_runtime_is_killed_with_what_it_started() {
        let marker = tempfile::tempdir().unwrap();
        let pid_file = marker.path().join("pid");
        // A background child that would outlive a kill of the shell alone.
        let mut job = job(&format!(
            "sleep 300 & echo $! > {}; wait",
            pid_file.display()
        ));
        job.limits.max_runtime = Duration::from_millis(500);
        let (outcome, _logs, _work) = run(&job).await;
        let outcome = outcome.unwrap();
        assert_eq!(outcome.state, JobState::TimedOut);
        assert!(outcome.timing.run < Duration::from_secs(20));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        // SIGKILL takes effect when the process is next scheduled: allow it a moment. Gone, or a
        // zombie waiting for its (reparented) reaper, both mean killed.
        let mut stat = Ok(String::new());
        for _ in 0..100 {
            stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            if stat.as_deref().map_or(true, |s| s.contains(") Z ")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the background sleep still runs: {stat:?}");
    }

    #[tokio::test]
    async fn a_job_that_keeps_writing_output_is_stopped_once_it_passes_the_limit() {
        let mut job = job(
            "i=0; while true; do head -c 65536 /dev/zero > \"$AIFORGE_OUTPUTS_DIR/part$i\"; \
             i=$((i+1)); done",
        );
        job.limits.max_runtime = Duration::from_secs(60);
        let (outcome, _logs, _work) = run(&job).await;
        let outcome = outcome.unwrap();
        assert!(
            matches!(outcome.state, JobState::OutputTooLarge { bytes, .. } if bytes > 1024 * 1024),
            "{:?}",
            outcome.state
        );
        assert!(outcome.outputs.is_empty());
        assert!(outcome.timing.run < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_cancelled_job_ends_cancelled() {
        let work = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let outcome = ProcessExecutor::new_unsafe_dev()
            .run_cancellable(&job("sleep 300"), work.path(), tx, cancel)
            .await
            .unwrap();
        assert_eq!(outcome.state, JobState::Cancelled);
        assert!(outcome.timing.run < Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_program_that_does_not_exist_is_a_spawn_error() {
        let mut job = job("");
        job.command = vec![format!("/nonexistent/{}", uuid::Uuid::new_v4())];
        let (result, _logs, _work) = run(&job).await;
        assert!(matches!(result, Err(ExecError::Spawn { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_job_without_a_command_is_refused() {
        let mut job = job("");
        job.command.clear();
        let (result, _logs, _work) = run(&job).await;
        assert!(
            matches!(result, Err(ExecError::InvalidJob(_))),
            "{result:?}"
        );
    }
}
