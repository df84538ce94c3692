//! Leases: a periodic task that must run once for the cluster (the listing scheduler, the
//! compute pass and sweeper) runs only on the instance holding the lease `scheduler`. The holder
//! renews it every [`LEASE_RENEW_MILLIS`]; when it dies (or stops), its lease expires after
//! [`LEASE_TTL_MILLIS`] and another instance takes it at its next renewal attempt. A row in the
//! `leases` table on both engines (one instance on SQLite always holds it).
//!
//! A holder stops acting as one as soon as it cannot renew in time: it counts its lease from
//! when it *asked* for the renewal, less a margin, so it gives up before anyone else may take
//! over (the database's rule uses the same TTL from a later instant).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::store::{Database, StoreError};

pub const LEASE_TTL_MILLIS: i64 = 6_000;
pub const LEASE_RENEW_MILLIS: u64 = 2_000;
/// Given up this long before the lease's end as this process counts it.
pub const LEASE_MARGIN_MILLIS: i64 = 1_000;
/// The lease of the cluster's periodic tasks.
pub const SCHEDULER_LEASE: &str = "scheduler";

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// This process's claim on one lease.
pub struct Lease {
    /// None: this process is the only possible holder (SQLite, one process per database).
    db: Option<Database>,
    name: String,
    holder: String,
    started: Instant,
    /// Milliseconds since `started` until which this process may act as the holder (0: not).
    held_until: AtomicI64,
}

impl Lease {
    pub fn new(db: Database, name: &str) -> Arc<Self> {
        Arc::new(Self {
            db: Some(db),
            name: name.to_string(),
            holder: uuid::Uuid::now_v7().to_string(),
            started: Instant::now(),
            held_until: AtomicI64::new(0),
        })
    }

    /// The lease for `db`: shared through the `leases` table on PostgreSQL, where instances
    /// may be many; on SQLite one process owns the database, and always holds it.
    pub fn for_database(db: &Database, name: &str) -> Arc<Self> {
        match db.engine() {
            crate::store::Engine::Postgres(_) => Self::new(db.clone(), name),
            crate::store::Engine::Sqlite(_) => Arc::new(Self {
                db: None,
                name: name.to_string(),
                holder: uuid::Uuid::now_v7().to_string(),
                started: Instant::now(),
                held_until: AtomicI64::new(i64::MAX),
            }),
        }
    }

    /// This process's id as a holder.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn elapsed_millis(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// True while this process holds the lease.
    pub fn is_held(&self) -> bool {
        self.elapsed_millis() < self.held_until.load(Ordering::Acquire)
    }

    /// Takes the lease if it is free or expired, or renews it if it is ours.
    pub async fn acquire_or_renew(&self) -> Result<bool, StoreError> {
        let Some(db) = &self.db else {
            return Ok(true);
        };
        let asked_at = self.elapsed_millis();
        let now = unix_millis();
        let row: Option<(String,)> = crate::on_engine!(db, |pool| sqlx::query_as(
            "INSERT INTO leases (name, holder, expires_unix_millis) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_unix_millis = excluded.expires_unix_millis \
             WHERE leases.holder = excluded.holder OR leases.expires_unix_millis < $4 \
             RETURNING holder"
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(now + LEASE_TTL_MILLIS)
        .bind(now)
        .fetch_optional(pool)
        .await?);
        let held = row.is_some_and(|(holder,)| holder == self.holder);
        let until = if held {
            asked_at + LEASE_TTL_MILLIS - LEASE_MARGIN_MILLIS
        } else {
            0
        };
        self.held_until.store(until, Ordering::Release);
        Ok(held)
    }

    /// Gives the lease up (on shutdown), so another instance takes it at once.
    pub async fn release(&self) {
        let Some(db) = &self.db else {
            return;
        };
        self.held_until.store(0, Ordering::Release);
        let result = crate::on_engine!(db, |pool| sqlx::query(
            "DELETE FROM leases WHERE name = $1 AND holder = $2"
        )
        .bind(&self.name)
        .bind(&self.holder)
        .execute(pool)
        .await
        .map(|_| ()));
        if let Err(e) = result {
            tracing::warn!(error = %e, lease = %self.name, "could not release a lease; it expires");
        }
    }

    /// Keeps trying to hold the lease until `shutdown`, then releases it.
    pub async fn keep(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut was_held = false;
        loop {
            match self.acquire_or_renew().await {
                Ok(held) => {
                    if held != was_held {
                        tracing::info!(lease = %self.name, held, "lease changed hands");
                        was_held = held;
                    }
                }
                Err(e) => tracing::warn!(error = %e, lease = %self.name, "lease not renewed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(LEASE_RENEW_MILLIS)) => {}
                _ = shutdown.changed() => {
                    self.release().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDatabase;

    async fn one_holder_at_a_time(db: &Database) {
        let a = Lease::new(db.clone(), "t");
        let b = Lease::new(db.clone(), "t");
        assert!(a.acquire_or_renew().await.unwrap());
        assert!(!b.acquire_or_renew().await.unwrap());
        assert!(a.is_held() && !b.is_held());
        assert!(a.acquire_or_renew().await.unwrap(), "the holder renews");
        a.release().await;
        assert!(!a.is_held());
        assert!(
            b.acquire_or_renew().await.unwrap(),
            "a released lease is taken"
        );
        assert!(!a.acquire_or_renew().await.unwrap());
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_and_passes_on_when_released() {
        let db = TestDatabase::sqlite().await.unwrap();
        one_holder_at_a_time(&db.db).await;
        db.cleanup().await;
        if let Some(db) = TestDatabase::postgres().await {
            one_holder_at_a_time(&db.db).await;
            db.cleanup().await;
        }
    }
}
