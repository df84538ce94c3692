//! Fresh, private databases for tests and benchmarks: a SQLite file in a temp dir, or a new
//! PostgreSQL database `aiforge_test_<uuid>` on the local server (dropped by `cleanup`). When
//! PostgreSQL cannot be reached, `postgres()` returns None and says why on stderr, unless
//! `AIFORGE_REQUIRE_SERVICES=1` (CI), where that is a failure.

use std::path::PathBuf;

use crate::store::{Database, Engine, StoreError};

pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDatabase {
    pub db: Database,
    /// What `db` was opened with, for a second handle on the same database (another process).
    pub url: String,
    drop_pg: Option<(String, String)>,
    sqlite_file: Option<PathBuf>,
}

/// True under `AIFORGE_REQUIRE_SERVICES=1` (CI): a missing service or tool fails the test.
pub fn services_required() -> bool {
    std::env::var("AIFORGE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// For a test that cannot run because `service` is missing: says so on stderr as
/// `SKIPPED (<service>): <reason>` and returns, or panics when services are required.
pub fn skip_or_fail(service: &str, reason: &str) {
    if services_required() {
        panic!("AIFORGE_REQUIRE_SERVICES=1 but {service} is unavailable: {reason}");
    }
    eprintln!(
        "SKIPPED ({service}): {reason}; set AIFORGE_REQUIRE_SERVICES=1 to make this a failure"
    );
}

/// Where the scripts install test tools built once per machine (`scripts/s3-server`):
/// `$AIFORGE_TOOLS_DIR`, by default `/var/cache/aiforge/tools`, outside the clone.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("AIFORGE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/aiforge/tools"))
}

/// The admin URL tests create their databases through.
pub fn postgres_admin_url() -> String {
    std::env::var("AIFORGE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.into())
}

impl TestDatabase {
    pub async fn sqlite() -> Result<Self, StoreError> {
        let dir = std::env::temp_dir().join("aiforge-tests");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let file = dir.join(format!("{}.db", uuid::Uuid::now_v7()));
        let url = format!("sqlite:{}", file.display());
        let db = Database::connect(&url).await?;
        db.migrate().await?;
        Ok(Self {
            db,
            url,
            drop_pg: None,
            sqlite_file: Some(file),
        })
    }

    /// A new, migrated PostgreSQL database, or None (with the reason printed) when the server is
    /// not reachable and services are not required.
    pub async fn postgres() -> Option<Self> {
        match Self::try_postgres().await {
            Ok(db) => Some(db),
            Err(e) if !services_required() => {
                eprintln!(
                    "SKIPPED (PostgreSQL): cannot reach {} ({e}); set AIFORGE_REQUIRE_SERVICES=1 to make this a failure",
                    postgres_admin_url()
                );
                None
            }
            Err(e) => panic!("AIFORGE_REQUIRE_SERVICES=1 but PostgreSQL is unavailable: {e}"),
        }
    }

    /// The URL of a new, empty (not migrated) PostgreSQL database, for tests of the binary.
    pub async fn create_postgres_database() -> Result<(String, String), StoreError> {
        let admin_url = postgres_admin_url();
        let admin = Database::connect(&admin_url).await?;
        let name = format!("aiforge_test_{}", uuid::Uuid::new_v4().simple());
        if let Engine::Postgres(pool) = admin.engine() {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(pool)
                .await?;
        }
        admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_string())
            .unwrap_or(admin_url.clone());
        Ok((format!("{base}/{name}"), name))
    }

    async fn try_postgres() -> Result<Self, StoreError> {
        let (url, name) = Self::create_postgres_database().await?;
        let db = Database::connect(&url).await?;
        db.migrate().await?;
        Ok(Self {
            db,
            url,
            drop_pg: Some((postgres_admin_url(), name)),
            sqlite_file: None,
        })
    }

    /// Closes the pool and removes the database.
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some((admin_url, name)) = self.drop_pg {
            drop_postgres_database(&admin_url, &name).await;
        }
        if let Some(file) = self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }
}

pub async fn drop_postgres_database(admin_url: &str, name: &str) {
    if let Ok(admin) = Database::connect(admin_url).await {
        if let Engine::Postgres(pool) = admin.engine() {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(pool)
                .await;
        }
        admin.close().await;
    }
}

/// A minimal aggregate for exercising the store itself (tests, benchmarks): no business rule,
/// no argon2, one event per command.
pub mod tally {
    use cqrs_es::event_sink::EventSink;
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, Serialize, Deserialize)]
    pub struct Tally {
        pub total: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum TallyEvent {
        Added { n: u64, total: u64 },
    }

    impl DomainEvent for TallyEvent {
        fn event_type(&self) -> String {
            "Added".into()
        }
        fn event_version(&self) -> String {
            "1.0".into()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("a tally never refuses a command")]
    pub struct Never;

    impl Aggregate for Tally {
        const TYPE: &'static str = "tally";
        type Command = u64;
        type Event = TallyEvent;
        type Error = Never;
        type Services = ();

        async fn handle(&mut self, n: u64, _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
            let total = self.total + n;
            sink.write(TallyEvent::Added { n, total }, self).await;
            Ok(())
        }

        fn apply(&mut self, event: TallyEvent) {
            let TallyEvent::Added { total, .. } = event;
            self.total = total;
        }
    }
}
