//! A job's live logs: the lines its node streams back while it runs, kept in this process's
//! memory for its creator to read (`GET /api/jobs/{id}/logs`). Logs are not events: a chatty job
//! would flood the global log, and they decide nothing (the job's outputs and exit code are its
//! result). Bounded twice: [`JOB_LOG_BYTES_MAX`] per job (the oldest lines go first, counted as
//! dropped) and [`JOBS_KEPT_MAX`] jobs (the job written to least recently goes first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub const JOB_LOG_BYTES_MAX: usize = 1024 * 1024;
pub const JOBS_KEPT_MAX: usize = 1000;
/// Lines one request may bring.
pub const LINES_PER_REQUEST_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
    /// The attempt that printed it.
    #[serde(default)]
    pub attempt: u32,
}

#[derive(Debug, Default)]
struct Kept {
    lines: VecDeque<Line>,
    bytes: usize,
    dropped: u64,
    /// When it was last written to (a counter, for eviction).
    touched: u64,
}

#[derive(Debug, Default)]
pub struct JobLogs {
    jobs: Mutex<(HashMap<String, Kept>, u64)>,
}

impl JobLogs {
    pub fn append(&self, job_id: &str, lines: Vec<Line>) {
        let Ok(mut guard) = self.jobs.lock() else {
            return;
        };
        let (jobs, clock) = &mut *guard;
        *clock += 1;
        if !jobs.contains_key(job_id) && jobs.len() >= JOBS_KEPT_MAX {
            if let Some(oldest) = jobs
                .iter()
                .min_by_key(|(_, kept)| kept.touched)
                .map(|(id, _)| id.clone())
            {
                jobs.remove(&oldest);
            }
        }
        let kept = jobs.entry(job_id.to_string()).or_default();
        kept.touched = *clock;
        for line in lines {
            kept.bytes += line.text.len();
            kept.lines.push_back(line);
            while kept.bytes > JOB_LOG_BYTES_MAX {
                let Some(old) = kept.lines.pop_front() else {
                    break;
                };
                kept.bytes -= old.text.len();
                kept.dropped += 1;
            }
        }
    }

    /// The lines kept for a job and how many older ones were dropped.
    pub fn read(&self, job_id: &str) -> (Vec<Line>, u64) {
        self.jobs
            .lock()
            .ok()
            .and_then(|guard| {
                guard
                    .0
                    .get(job_id)
                    .map(|kept| (kept.lines.iter().cloned().collect(), kept.dropped))
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line {
        Line {
            stream: "stdout".into(),
            text: text.into(),
            attempt: 1,
        }
    }

    #[test]
    fn a_jobs_log_keeps_its_newest_bytes_and_counts_what_it_dropped() {
        let logs = JobLogs::default();
        let big = "x".repeat(JOB_LOG_BYTES_MAX / 2);
        logs.append("j", vec![line(&big), line(&big)]);
        logs.append("j", vec![line("last")]);
        let (lines, dropped) = logs.read("j");
        assert_eq!(dropped, 1);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].text, "last");
        assert_eq!(logs.read("other"), (vec![], 0));
    }

    #[test]
    fn the_least_recently_written_job_goes_first() {
        let logs = JobLogs::default();
        for i in 0..JOBS_KEPT_MAX {
            logs.append(&i.to_string(), vec![line("a")]);
        }
        logs.append("0", vec![line("b")]);
        logs.append("new", vec![line("c")]);
        assert_eq!(logs.read("0").0.len(), 2, "written to recently: kept");
        assert!(logs.read("1").0.is_empty(), "the least recent: evicted");
        assert_eq!(logs.read("new").0.len(), 1);
    }
}
