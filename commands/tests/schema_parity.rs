#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first broken assumption"
)]

//! Both engines' migrations give the same schema: the same tables with the same columns (types
//! differ by engine: `integer` on SQLite is `bigint` on PostgreSQL). A table or column added to
//! one engine's migrations and forgotten in the other's fails here.

use std::collections::BTreeSet;

use aiforge_commands::store::Engine;

/// Columns one engine has on purpose, with the reason: the only differences allowed.
const ONLY_ON_POSTGRES: &[(&str, &str)] = &[
    // The transaction id of each append: PostgreSQL's identity values commit out of order, so
    // the log is read in (tx_id, global_position) order (commands/src/store/log.rs). SQLite
    // assigns positions under its one writer's lock, in commit order, and needs none.
    ("events", "tx_id"),
];
use aiforge_commands::testing::TestDatabase;

async fn columns(db: &TestDatabase) -> BTreeSet<(String, String)> {
    match db.db.engine() {
        Engine::Sqlite(pool) => sqlx::query_as(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect(),
        Engine::Postgres(pool) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name NOT LIKE '_sqlx%'",
        )
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect(),
    }
}

#[tokio::test]
async fn sqlite_and_postgresql_have_the_same_tables_and_columns() {
    let Some(pg) = TestDatabase::postgres().await else {
        return;
    };
    let sqlite = TestDatabase::sqlite().await.unwrap();
    let (on_sqlite, on_postgres) = (columns(&sqlite).await, columns(&pg).await);
    sqlite.cleanup().await;
    pg.cleanup().await;
    assert!(on_sqlite.len() > 50, "the schema was read: {on_sqlite:?}");
    let only_sqlite: Vec<_> = on_sqlite.difference(&on_postgres).collect();
    let only_postgres: Vec<_> = on_postgres
        .difference(&on_sqlite)
        .filter(|(table, column)| !ONLY_ON_POSTGRES.contains(&(table.as_str(), column.as_str())))
        .collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "only on SQLite: {only_sqlite:?}\nonly on PostgreSQL: {only_postgres:?}"
    );
}
