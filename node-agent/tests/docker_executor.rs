#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
//! The Docker executor against a real engine: podman's Docker-compatible API, as
//! `scripts/podman` starts it (with the image `localhost/aiforge-job:busybox`). `DOCKER_HOST`
//! names the engine; without it the socket `scripts/podman` uses is tried. When no engine
//! answers these tests say SKIPPED, unless AIFORGE_REQUIRE_SERVICES=1 (CI), where that fails.
//! Every test has its own job id (so its own container) and work directory: they run in parallel.

use std::collections::HashMap;
use std::time::Duration;

use aiforge_node_agent::executor::{
    DockerConfig, DockerExecutor, ExecError, Executor, InputFile, JobOutcome, JobSpec, JobState,
    LogLine, LogStream,
};
use bollard::query_parameters::ListContainersOptionsBuilder;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "localhost/aiforge-job:busybox";
const SCRIPT_SOCKET: &str = "unix:///tmp/aiforge-podman.sock";

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| SCRIPT_SOCKET.to_string())
}

/// The executor, or `None` after saying SKIPPED when no engine (or no test image) is there.
async fn executor() -> Option<DockerExecutor> {
    let required = std::env::var("AIFORGE_REQUIRE_SERVICES").as_deref() == Ok("1");
    let config = DockerConfig {
        host: Some(docker_host()),
        ..DockerConfig::default()
    };
    let unavailable = match DockerExecutor::connect(config).await {
        Ok(executor) => match executor.docker().inspect_image(IMAGE).await {
            Ok(_) => return Some(executor),
            Err(e) => format!("the test image {IMAGE} is missing ({e})"),
        },
        Err(e) => format!("cannot reach {} ({e})", docker_host()),
    };
    if required {
        panic!("AIFORGE_REQUIRE_SERVICES=1 but the Docker API is unavailable: {unavailable}");
    }
    eprintln!(
        "SKIPPED (Docker API): {unavailable}; run `eval \"$(scripts/podman)\"`, \
         set AIFORGE_REQUIRE_SERVICES=1 to make this a failure"
    );
    None
}

fn job(command: &str) -> JobSpec {
    let mut job = JobSpec::new(
        uuid::Uuid::now_v7(),
        IMAGE,
        vec!["sh".into(), "-c".into(), command.into()],
    );
    job.limits.memory_bytes = 64 * 1024 * 1024;
    job.limits.max_runtime = Duration::from_secs(60);
    job.limits.output_bytes_max = 1024 * 1024;
    job
}

/// Runs `job` in a fresh work directory; returns the result, every log line, and the directory.
async fn run(
    executor: &DockerExecutor,
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
    let result = executor.run(job, work.path(), tx).await;
    (result, collector.await.unwrap(), work)
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

/// The containers, running or not, that belong to `job`.
async fn containers_of(executor: &DockerExecutor, job: &JobSpec) -> usize {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("io.aiforge.job-id={}", job.job_id)],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    match executor.docker().list_containers(Some(options)).await {
        Ok(containers) => containers.len(),
        // podman reports a container being removed as `stopped`, a state bollard's model does
        // not know, so the listing cannot be read: the container still exists.
        Err(bollard::errors::Error::JsonDataError { message, .. })
            if message.contains("unknown variant `stopped`") =>
        {
            1
        }
        Err(err) => panic!("listing containers: {err}"),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_job_reads_its_input_and_its_output_file_comes_back_with_size_and_content() {
    let Some(executor) = executor().await else {
        return;
    };
    let inputs = tempfile::tempdir().unwrap();
    let input = inputs.path().join("prompt.txt");
    let prompt = b"hello aiforge\nsecond line\n";
    std::fs::write(&input, prompt).unwrap();
    let mut job = job("sha256sum /work/inputs/prompt.txt | cut -d ' ' -f 1 > \"$AIFORGE_OUTPUTS_DIR/digest.txt\" \
         && mkdir /work/outputs/text && tr a-z A-Z < /work/inputs/prompt.txt > /work/outputs/text/upper.txt \
         && echo \"greeting=$GREETING\"");
    job.inputs.push(InputFile::new("prompt.txt", &input));
    job.env.insert("GREETING".into(), "hi there".into());

    let (outcome, logs, work) = run(&executor, &job).await;
    let outcome = outcome.unwrap();

    assert_eq!(outcome.state, JobState::Succeeded, "logs: {logs:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(texts(&logs), vec!["greeting=hi there"]);
    let listed: Vec<_> = outcome
        .outputs
        .iter()
        .map(|f| (f.path.to_str().unwrap(), f.size_bytes))
        .collect();
    assert_eq!(
        listed,
        vec![("digest.txt", 65), ("text/upper.txt", prompt.len() as u64)]
    );
    assert_eq!(outcome.output_bytes, 65 + prompt.len() as u64);
    let upper = std::fs::read(&outcome.outputs[1].host_path).unwrap();
    assert_eq!(upper, prompt.to_ascii_uppercase());
    assert_eq!(sha256_hex(&upper), sha256_hex(&prompt.to_ascii_uppercase()));
    assert!(outcome.outputs[1]
        .host_path
        .starts_with(std::fs::canonicalize(work.path()).unwrap()));
    let digest = std::fs::read_to_string(&outcome.outputs[0].host_path).unwrap();
    assert_eq!(digest.trim(), sha256_hex(prompt));
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn a_job_that_exits_non_zero_fails_with_its_exit_code() {
    let Some(executor) = executor().await else {
        return;
    };
    let job = job("echo about to fail >&2; exit 3");
    let (outcome, logs, _work) = run(&executor, &job).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.state, JobState::Failed { exit_code: 3 });
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(logs[0].stream, LogStream::Stderr);
    assert_eq!(logs[0].text, "about to fail");
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn a_job_still_running_at_its_max_runtime_is_killed_and_its_container_removed() {
    let Some(executor) = executor().await else {
        return;
    };
    let mut job = job("echo started; sleep 300");
    job.limits.max_runtime = Duration::from_secs(2);
    let (outcome, logs, _work) = run(&executor, &job).await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.state, JobState::TimedOut);
    assert!(outcome.timing.run >= Duration::from_secs(2));
    assert!(outcome.timing.run < Duration::from_secs(60));
    assert_eq!(texts(&logs), vec!["started"]);
    assert!(outcome.outputs.is_empty());
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn a_job_that_leaves_more_output_than_allowed_ends_output_too_large() {
    let Some(executor) = executor().await else {
        return;
    };
    // 2 MiB against a 1 MiB limit, written at once: found when the job has exited.
    let job = job("dd if=/dev/zero of=/work/outputs/big bs=1024 count=2048 2>/dev/null");
    let (outcome, _logs, _work) = run(&executor, &job).await;
    let outcome = outcome.unwrap();
    assert_eq!(
        outcome.state,
        JobState::OutputTooLarge {
            bytes: 2 * 1024 * 1024,
            limit_bytes: 1024 * 1024
        }
    );
    assert_eq!(outcome.exit_code, Some(0));
    assert!(
        outcome.outputs.is_empty(),
        "oversized outputs are not offered"
    );
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn a_job_that_keeps_writing_output_is_stopped_once_it_passes_the_limit() {
    let Some(executor) = executor().await else {
        return;
    };
    let mut job = job(
        "i=0; while true; do dd if=/dev/zero of=/work/outputs/part$i bs=65536 count=1 2>/dev/null; \
         i=$((i+1)); sleep 0.01; done",
    );
    job.limits.max_runtime = Duration::from_secs(120);
    let (outcome, _logs, _work) = run(&executor, &job).await;
    let outcome = outcome.unwrap();
    assert!(
        matches!(outcome.state, JobState::OutputTooLarge { bytes, limit_bytes: 1_048_576 } if bytes > 1_048_576),
        "{:?}",
        outcome.state
    );
    // Stopped by the output watch, long before its runtime ran out.
    assert!(outcome.timing.run < Duration::from_secs(60));
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn an_image_the_engine_does_not_have_is_image_not_found() {
    let Some(executor) = executor().await else {
        return;
    };
    let mut job = job("true");
    job.image = format!("localhost/aiforge-no-such-image:{}", uuid::Uuid::new_v4());
    let (result, _logs, _work) = run(&executor, &job).await;
    match result {
        Err(ExecError::ImageNotFound { image }) => assert_eq!(image, job.image),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn a_job_without_network_has_only_the_loopback_interface() {
    let Some(executor) = executor().await else {
        return;
    };
    let job = job("ls /sys/class/net");
    let (outcome, logs, _work) = run(&executor, &job).await;
    assert_eq!(outcome.unwrap().state, JobState::Succeeded);
    assert_eq!(texts(&logs), vec!["lo"]);
}

#[tokio::test]
async fn a_job_that_asks_for_the_network_gets_an_interface_besides_loopback() {
    let Some(executor) = executor().await else {
        return;
    };
    // The counterpart of the test above, so that one cannot pass by accident.
    let mut job = job("ls /sys/class/net");
    job.network = true;
    let (outcome, logs, _work) = run(&executor, &job).await;
    assert_eq!(outcome.unwrap().state, JobState::Succeeded, "{logs:?}");
    assert!(texts(&logs).iter().any(|name| *name != "lo"), "{logs:?}");
}

#[tokio::test]
async fn the_root_filesystem_and_the_inputs_are_read_only_and_tmp_is_writable() {
    let Some(executor) = executor().await else {
        return;
    };
    let inputs = tempfile::tempdir().unwrap();
    let input = inputs.path().join("in.txt");
    std::fs::write(&input, b"original").unwrap();
    let mut job = job("touch /rootfs-write 2>/dev/null && echo rootfs-writable; \
         (echo changed > /work/inputs/in.txt) 2>/dev/null && echo input-writable; \
         touch /tmp/scratch && echo tmp-writable");
    job.inputs.push(InputFile::new("in.txt", &input));
    let (outcome, logs, _work) = run(&executor, &job).await;
    assert_eq!(outcome.unwrap().state, JobState::Succeeded);
    assert_eq!(texts(&logs), vec!["tmp-writable"]);
    assert_eq!(std::fs::read(&input).unwrap(), b"original");
}

#[tokio::test]
async fn the_memory_limit_is_applied_and_a_job_allocating_beyond_it_is_killed() {
    let Some(executor) = executor().await else {
        return;
    };
    // The limit as the job's own cgroup states it (cgroup v1, or v2).
    let job_limit = job(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    );
    let (outcome, logs, _work) = run(&executor, &job_limit).await;
    assert_eq!(outcome.unwrap().state, JobState::Succeeded);
    assert_eq!(texts(&logs), vec![(64 * 1024 * 1024).to_string().as_str()]);

    // A string doubled up to 128 MB cannot fit in 64 MiB: the kernel kills awk (SIGKILL, 137).
    let grow = |target: u64| {
        job(&format!(
            "exec awk 'BEGIN {{ s = \"x\"; while (length(s) < {target}) s = s s; print length(s) }}'"
        ))
    };
    let (outcome, _logs, _work) = run(&executor, &grow(128_000_000)).await;
    assert_eq!(outcome.unwrap().state, JobState::Failed { exit_code: 137 });
    // The same program within the limit runs to its end.
    let (outcome, _logs, _work) = run(&executor, &grow(1_000_000)).await;
    assert_eq!(outcome.unwrap().state, JobState::Succeeded);
}

#[tokio::test]
async fn the_cpu_quota_and_the_process_limit_are_applied() {
    let Some(executor) = executor().await else {
        return;
    };
    // Quota and period (cgroup v1 or v2's "quota period"), then the process limit.
    let mut job = job(
        "if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max; \
         else echo \"$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)\"; \
         cat /sys/fs/cgroup/pids/pids.max; fi",
    );
    job.limits.cpus = "0.5".parse().unwrap();
    let (outcome, logs, _work) = run(&executor, &job).await;
    assert_eq!(outcome.unwrap().state, JobState::Succeeded, "{logs:?}");
    assert_eq!(texts(&logs), vec!["50000 100000", "1024"]);
}

#[tokio::test]
async fn a_run_whose_future_is_dropped_leaves_no_container_behind() {
    let Some(executor) = executor().await else {
        return;
    };
    let job = job("echo up; sleep 300");
    let work = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let running = {
        let executor = executor.clone();
        let job = job.clone();
        let dir = work.path().to_path_buf();
        tokio::spawn(async move { executor.run(&job, &dir, tx).await })
    };
    // Running for sure once its first line is out.
    let up = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
    assert_eq!(up.unwrap().unwrap().text, "up");
    assert_eq!(containers_of(&executor, &job).await, 1);
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    // The removal runs in the background: give it a moment.
    for _ in 0..100 {
        if containers_of(&executor, &job).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the container of an abandoned run is still there");
}

#[tokio::test]
async fn log_lines_arrive_while_the_job_is_still_running() {
    let Some(executor) = executor().await else {
        return;
    };
    let job = job("echo first; sleep 3; echo second >&2");
    let work = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let running = {
        let executor = executor.clone();
        let job = job.clone();
        let dir = work.path().to_path_buf();
        tokio::spawn(async move { executor.run(&job, &dir, tx).await })
    };
    let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.stream, first.text.as_str()),
        (LogStream::Stdout, "first")
    );
    assert!(
        !running.is_finished(),
        "the first line came only at the end"
    );
    let second = rx.recv().await.unwrap();
    assert_eq!(
        (second.stream, second.text.as_str()),
        (LogStream::Stderr, "second")
    );
    assert_eq!(running.await.unwrap().unwrap().state, JobState::Succeeded);
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn a_cancelled_job_is_killed_and_its_container_removed() {
    let Some(executor) = executor().await else {
        return;
    };
    let job = job("sleep 300");
    let work = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            cancel.cancel();
        })
    };
    let outcome = executor
        .run_cancellable(&job, work.path(), tx, cancel)
        .await
        .unwrap();
    canceller.await.unwrap();
    assert_eq!(outcome.state, JobState::Cancelled);
    assert!(outcome.timing.run < Duration::from_secs(60));
    assert_eq!(containers_of(&executor, &job).await, 0);
}

#[tokio::test]
async fn a_work_directory_with_leftover_outputs_is_refused() {
    let Some(executor) = executor().await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("outputs")).unwrap();
    std::fs::write(work.path().join("outputs/old"), b"stale").unwrap();
    let (tx, _rx) = mpsc::channel(16);
    let result = executor.run(&job("true"), work.path(), tx).await;
    assert!(
        matches!(result, Err(ExecError::WorkDir { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_engine_unreachable() {
    // No engine needed: a socket path nobody listens on.
    let config = DockerConfig {
        host: Some(format!(
            "unix:///tmp/aiforge-no-engine-{}.sock",
            uuid::Uuid::new_v4()
        )),
        ..DockerConfig::default()
    };
    let result = DockerExecutor::connect(config).await;
    assert!(
        matches!(result, Err(ExecError::EngineUnreachable { .. })),
        "{result:?}"
    );
}
