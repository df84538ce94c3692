//! What a job asks for: image, command, environment, inputs and limits, and the checks that a
//! spec is runnable before anything is created for it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::ExecError;

/// Inputs a job may have; each one is a mount (container) or a symlink (process).
pub const INPUT_FILES_MAX: usize = 256;
/// The length of an input's name, which becomes a file name.
pub const INPUT_NAME_BYTES_MAX: usize = 128;

/// One job to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Names the container and labels it (`io.aiforge.job-id`), so a run can be found and
    /// cleaned up by its job.
    pub job_id: uuid::Uuid,
    /// An image already in the engine's local store, e.g. `localhost/aiforge-job:busybox`.
    pub image: String,
    /// The container's command (the image's `Cmd`, after its entrypoint, as `docker run IMAGE
    /// COMMAND...`); empty means the image's default. The process executor runs it as argv.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub limits: Limits,
    /// Whether the job may use the network. Off by default: the container gets no network
    /// interface but loopback.
    pub network: bool,
    /// Files already downloaded to the host, each mounted read-only at `/work/inputs/<name>`.
    pub inputs: Vec<InputFile>,
}

impl JobSpec {
    /// A job with no inputs, no environment, no network and [`Limits::default`].
    pub fn new(job_id: uuid::Uuid, image: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            job_id,
            image: image.into(),
            command,
            env: BTreeMap::new(),
            limits: Limits::default(),
            network: false,
            inputs: Vec::new(),
        }
    }

    /// Rejects what no executor should try to run; the reason names the field.
    pub fn validate(&self) -> Result<(), ExecError> {
        let invalid = |reason: String| Err(ExecError::InvalidJob(reason));
        if self.image.trim().is_empty() {
            return invalid("the image is empty".into());
        }
        if self.command.iter().any(|arg| arg.contains('\0')) {
            return invalid("a command argument contains a NUL byte".into());
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return invalid(format!("environment variable {key:?} is not a valid name"));
            }
        }
        if self.inputs.len() > INPUT_FILES_MAX {
            return invalid(format!(
                "{} input files, at most {INPUT_FILES_MAX}",
                self.inputs.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for input in &self.inputs {
            input.validate()?;
            if !names.insert(input.name.as_str()) {
                return invalid(format!("input name {:?} appears twice", input.name));
            }
        }
        self.limits.validate()
    }
}

/// A file on the host that the job reads as `/work/inputs/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// A plain file name: letters, digits, `.`, `_` and `-`, not starting with `.`.
    pub name: String,
    pub path: PathBuf,
}

impl InputFile {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
        }
    }

    fn validate(&self) -> Result<(), ExecError> {
        // A name becomes a path component of a mount target: no separators, no `..`, and
        // nothing a bind-mount option parser could read as syntax.
        let plain = !self.name.is_empty()
            && self.name.len() <= INPUT_NAME_BYTES_MAX
            && !self.name.starts_with('.')
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if plain {
            Ok(())
        } else {
            Err(ExecError::InvalidJob(format!(
                "input name {:?} is not a plain file name (letters, digits, '.', '_', '-'; \
                 not starting with '.'; at most {INPUT_NAME_BYTES_MAX} bytes)",
                self.name
            )))
        }
    }
}

/// What a job may use. Every field is enforced by [`super::DockerExecutor`]; the process
/// executor enforces only the runtime and the output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory, swap excluded (a job gets no swap): beyond it the kernel OOM-kills the job.
    pub memory_bytes: u64,
    pub cpus: Cpus,
    /// Wall-clock time from start; then the job is killed and ends `TimedOut`.
    pub max_runtime: Duration,
    /// The total size of the files the job may leave in its outputs directory.
    pub output_bytes_max: u64,
    /// GPUs the container is given (`docker run --gpus N`: a device request for N devices with
    /// the `gpu` capability); 0 gives none.
    pub gpus: u32,
}

impl Limits {
    /// Containers below this are refused by the engines (Docker's minimum is 6 MiB).
    pub const MEMORY_BYTES_MIN: u64 = 6 * 1024 * 1024;

    fn validate(&self) -> Result<(), ExecError> {
        if self.memory_bytes < Self::MEMORY_BYTES_MIN || i64::try_from(self.memory_bytes).is_err() {
            return Err(ExecError::InvalidJob(format!(
                "memory limit {} bytes is outside {}..={}",
                self.memory_bytes,
                Self::MEMORY_BYTES_MIN,
                i64::MAX
            )));
        }
        if self.max_runtime.is_zero() {
            return Err(ExecError::InvalidJob("max_runtime is zero".into()));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// Small enough to be safe on any node: 512 MiB, one CPU, 10 minutes, 100 MiB of outputs,
    /// no GPU.
    fn default() -> Self {
        Self {
            memory_bytes: 512 * 1024 * 1024,
            cpus: Cpus(1000),
            max_runtime: Duration::from_secs(600),
            output_bytes_max: 100 * 1024 * 1024,
            gpus: 0,
        }
    }
}

/// A CPU quota in thousandths of a CPU, as Kubernetes' `1500m`; never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(u32);

impl Cpus {
    /// More than any machine a provider runs; keeps `nano_cpus` far from overflow.
    pub const MILLIS_MAX: u32 = 1024 * 1000;

    pub fn from_millis(millis: u32) -> Result<Self, CpusParseError> {
        if millis == 0 || millis > Self::MILLIS_MAX {
            return Err(CpusParseError(format!(
                "{millis} milli-CPUs is outside 1..={}",
                Self::MILLIS_MAX
            )));
        }
        Ok(Self(millis))
    }

    /// From a decimal number of CPUs such as `1.5`; finer than a thousandth is refused rather
    /// than rounded, so the quota is the one asked for.
    pub fn from_decimal(cpus: Decimal) -> Result<Self, CpusParseError> {
        let millis = cpus * Decimal::from(1000);
        if millis.fract() != Decimal::ZERO {
            return Err(CpusParseError(format!(
                "{cpus} CPUs is finer than a thousandth of a CPU"
            )));
        }
        let millis = millis
            .to_u32()
            .ok_or_else(|| CpusParseError(format!("{cpus} CPUs is out of range")))?;
        Self::from_millis(millis)
    }

    pub fn millis(self) -> u32 {
        self.0
    }

    /// Docker's `NanoCpus`: 1 CPU is 10^9.
    pub fn nano_cpus(self) -> i64 {
        i64::from(self.0) * 1_000_000
    }
}

impl FromStr for Cpus {
    type Err = CpusParseError;

    /// `"1.5"` (CPUs) or `"1500m"` (milli-CPUs).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(millis) = s.strip_suffix('m') {
            let millis = millis
                .parse::<u32>()
                .map_err(|e| CpusParseError(format!("{s:?} is not a number of milli-CPUs: {e}")))?;
            return Self::from_millis(millis);
        }
        let cpus = Decimal::from_str(s)
            .map_err(|e| CpusParseError(format!("{s:?} is not a number of CPUs: {e}")))?;
        Self::from_decimal(cpus)
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU quota: {0}")]
pub struct CpusParseError(String);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn cpus_parse_as_decimal_or_milli_cpus() {
        assert_eq!("1.5".parse::<Cpus>().unwrap().millis(), 1500);
        assert_eq!("1500m".parse::<Cpus>().unwrap().millis(), 1500);
        assert_eq!("0.25".parse::<Cpus>().unwrap().nano_cpus(), 250_000_000);
        assert_eq!("2".parse::<Cpus>().unwrap().millis(), 2000);
        assert_eq!("0.001".parse::<Cpus>().unwrap().millis(), 1);
    }

    #[test]
    fn cpus_that_are_zero_too_fine_or_too_many_are_refused() {
        for bad in ["0", "0m", "0.0001", "1.0005", "-1", "abc", "99999", "1e3m"] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn input_names_that_could_escape_the_inputs_directory_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a:b", "a,b", "a b"] {
            let mut job = JobSpec::new(uuid::Uuid::nil(), "img", vec![]);
            job.inputs.push(InputFile::new(bad, "/etc/hostname"));
            assert!(job.validate().is_err(), "{bad:?} was accepted");
        }
        let mut job = JobSpec::new(uuid::Uuid::nil(), "img", vec![]);
        job.inputs
            .push(InputFile::new("prompt-1.txt", "/etc/hostname"));
        job.validate().unwrap();
    }

    #[test]
    fn a_job_with_the_same_input_name_twice_is_refused() {
        let mut job = JobSpec::new(uuid::Uuid::nil(), "img", vec![]);
        job.inputs.push(InputFile::new("a", "/etc/hostname"));
        job.inputs.push(InputFile::new("a", "/etc/hosts"));
        assert!(job.validate().is_err());
    }

    #[test]
    fn limits_below_the_engine_minimum_or_without_time_are_refused() {
        let mut job = JobSpec::new(uuid::Uuid::nil(), "img", vec![]);
        job.limits.memory_bytes = 1024;
        assert!(job.validate().is_err());
        let mut job = JobSpec::new(uuid::Uuid::nil(), "img", vec![]);
        job.limits.max_runtime = Duration::ZERO;
        assert!(job.validate().is_err());
    }
}
