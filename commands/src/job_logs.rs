//! A job's live logs: the lines its node streams back while it runs, kept in the database
//! (`job_logs`, `job_log_lines`) so the creator reads them from any instance
//! (`GET /api/jobs/{id}/logs`) whichever instance the node sent them to. Logs are not events: a
//! chatty job would flood the global log, and they decide nothing (the job's outputs and exit
//! code are its result). Bounded twice: [`JOB_LOG_BYTES_MAX`] per job (the oldest lines go
//! first, counted as dropped) and [`JOBS_KEPT_MAX`] jobs (the job written to least recently goes
//! first).

use crate::store::{Database, Engine, StoreError};

pub const JOB_LOG_BYTES_MAX: i64 = 1024 * 1024;
pub const JOBS_KEPT_MAX: i64 = 1000;
/// Lines one request may bring.
pub const LINES_PER_REQUEST_MAX: usize = 1000;

/// One line a job printed (the node-agent's and the coordinator's shared type).
pub use aiforge_domain::node_protocol::LogLine as Line;

/// Jobs' logs in the database.
#[derive(Clone)]
pub struct JobLogs {
    db: Database,
}

impl JobLogs {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Appends `lines` to a job's log, at `now_unix` (for eviction), in one transaction: the
    /// job's counters are locked, so appends from several instances keep one order.
    pub async fn append(
        &self,
        job_id: &str,
        lines: &[Line],
        now_unix: i64,
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let _turn = self.db.write_turn().await;
        macro_rules! append {
            ($begin:expr) => {{
                let mut tx = $begin;
                let fresh: Option<(i32,)> = sqlx::query_as(
                    "INSERT INTO job_logs (job_id, next_seq, bytes, dropped, touched_unix) \
                     VALUES ($1, 0, 0, 0, $2) ON CONFLICT (job_id) DO NOTHING RETURNING 1",
                )
                .bind(job_id)
                .bind(now_unix)
                .fetch_optional(&mut *tx)
                .await?;
                let (mut seq, mut bytes, mut dropped): (i64, i64, i64) = sqlx::query_as(
                    "UPDATE job_logs SET touched_unix = $2 WHERE job_id = $1 \
                     RETURNING next_seq, bytes, dropped",
                )
                .bind(job_id)
                .bind(now_unix)
                .fetch_one(&mut *tx)
                .await?;
                for line in lines {
                    let size = i64::try_from(line.text.len()).unwrap_or(i64::MAX);
                    sqlx::query(
                        "INSERT INTO job_log_lines (job_id, seq, stream, text, attempt, bytes) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(job_id)
                    .bind(seq)
                    .bind(&line.stream)
                    .bind(&line.text)
                    .bind(i32::try_from(line.attempt).unwrap_or(i32::MAX))
                    .bind(i32::try_from(size).unwrap_or(i32::MAX))
                    .execute(&mut *tx)
                    .await?;
                    seq += 1;
                    bytes += size;
                }
                // The oldest lines go until the log fits.
                while bytes > JOB_LOG_BYTES_MAX {
                    let oldest: Option<(i64, i32)> = sqlx::query_as(
                        "DELETE FROM job_log_lines WHERE job_id = $1 AND seq = \
                         (SELECT MIN(seq) FROM job_log_lines WHERE job_id = $1) \
                         RETURNING seq, bytes",
                    )
                    .bind(job_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((_, size)) = oldest else { break };
                    bytes -= i64::from(size);
                    dropped += 1;
                }
                sqlx::query(
                    "UPDATE job_logs SET next_seq = $2, bytes = $3, dropped = $4 WHERE job_id = $1",
                )
                .bind(job_id)
                .bind(seq)
                .bind(bytes)
                .bind(dropped)
                .execute(&mut *tx)
                .await?;
                if fresh.is_some() {
                    // A new job's log: the least recently written beyond the bound go.
                    sqlx::query(
                        "DELETE FROM job_log_lines WHERE job_id IN (SELECT job_id FROM job_logs \
                         ORDER BY touched_unix DESC, job_id LIMIT 9223372036854775807 OFFSET $1)",
                    )
                    .bind(JOBS_KEPT_MAX)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "DELETE FROM job_logs WHERE job_id IN (SELECT job_id FROM job_logs \
                         ORDER BY touched_unix DESC, job_id LIMIT 9223372036854775807 OFFSET $1)",
                    )
                    .bind(JOBS_KEPT_MAX)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }};
        }
        match self.db.engine() {
            Engine::Sqlite(pool) => append!(pool.begin_with("BEGIN IMMEDIATE").await?),
            Engine::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Serialises appends to one job across instances.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(format!("job_logs:{job_id}"))
                    .execute(&mut *tx)
                    .await?;
                append!(tx)
            }
        }
        Ok(())
    }

    /// The lines kept for a job and how many older ones were dropped.
    pub async fn read(&self, job_id: &str) -> Result<(Vec<Line>, u64), StoreError> {
        let rows: Vec<(String, String, i32)> = crate::on_engine!(self.db, |pool| sqlx::query_as(
            "SELECT stream, text, attempt FROM job_log_lines WHERE job_id = $1 ORDER BY seq"
        )
        .bind(job_id)
        .fetch_all(pool)
        .await?);
        let dropped: Option<(i64,)> = crate::on_engine!(self.db, |pool| sqlx::query_as(
            "SELECT dropped FROM job_logs WHERE job_id = $1"
        )
        .bind(job_id)
        .fetch_optional(pool)
        .await?);
        let lines = rows
            .into_iter()
            .map(|(stream, text, attempt)| Line {
                stream,
                text,
                attempt: u32::try_from(attempt).unwrap_or(0),
            })
            .collect();
        Ok((
            lines,
            dropped.map_or(0, |(d,)| u64::try_from(d).unwrap_or(0)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase as TestDb;

    fn line(text: &str) -> Line {
        Line {
            stream: "stdout".into(),
            text: text.into(),
            attempt: 1,
        }
    }

    async fn keeps_newest_bytes(db: &Database) {
        let logs = JobLogs::new(db.clone());
        let big = "x".repeat(usize::try_from(JOB_LOG_BYTES_MAX / 2).unwrap());
        logs.append("j", &[line(&big), line(&big)], 1)
            .await
            .unwrap();
        logs.append("j", &[line("last")], 2).await.unwrap();
        let (lines, dropped) = logs.read("j").await.unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].text, "last");
        assert_eq!(logs.read("other").await.unwrap(), (vec![], 0));
    }

    #[tokio::test]
    async fn a_jobs_log_keeps_its_newest_bytes_and_counts_what_it_dropped() {
        let db = TestDb::sqlite().await.unwrap();
        keeps_newest_bytes(&db.db).await;
        db.cleanup().await;
        if let Some(db) = TestDb::postgres().await {
            keeps_newest_bytes(&db.db).await;
            db.cleanup().await;
        }
    }

    #[tokio::test]
    async fn the_least_recently_written_job_goes_first() {
        let db = TestDb::sqlite().await.unwrap();
        let logs = JobLogs::new(db.db.clone());
        for i in 0..JOBS_KEPT_MAX {
            logs.append(&i.to_string(), &[line("a")], i).await.unwrap();
        }
        logs.append("0", &[line("b")], JOBS_KEPT_MAX).await.unwrap();
        logs.append("new", &[line("c")], JOBS_KEPT_MAX + 1)
            .await
            .unwrap();
        assert_eq!(
            logs.read("0").await.unwrap().0.len(),
            2,
            "written to recently: kept"
        );
        assert!(
            logs.read("1").await.unwrap().0.is_empty(),
            "the least recent: evicted"
        );
        assert_eq!(logs.read("new").await.unwrap().0.len(), 1);
        db.cleanup().await;
    }
}
