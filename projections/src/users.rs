//! `users_view`: one row per registered account (id, email, username, registration time),
//! for `me`, the admin's user list and counts.

use aiforge_commands::RecordedEvent;
use aiforge_domain::account::{Account, AccountEvent};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct UsersProjection;

const TABLES: &[ViewTable] = &[ViewTable {
    name: "users_view",
    order_by: "user_id",
}];

#[async_trait::async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type != Account::TYPE {
            return Ok(());
        }
        match decode_payload::<AccountEvent>(event)? {
            AccountEvent::UserRegistered {
                user_id,
                email,
                username,
                registered_at,
            } => {
                tx.execute(
                    "INSERT INTO users_view (user_id, email, username, registered_at) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        SqlValue::Text(user_id),
                        SqlValue::Text(email),
                        SqlValue::Text(username),
                        SqlValue::Text(aiforge_commands::clock::rfc3339(registered_at)),
                    ],
                )
                .await?;
            }
            AccountEvent::PasswordSet { .. } => {}
        }
        Ok(())
    }
}

/// A row of `users_view`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: String,
    pub email: String,
    pub username: String,
    pub registered_at: String,
}

const SELECT_USER: &str = "SELECT user_id, email, username, registered_at FROM users_view";

/// One account's row, if the projection has seen it.
pub async fn find(
    db: &aiforge_commands::Database,
    user_id: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("{SELECT_USER} WHERE user_id = $1");
    match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_as(&sql)
                .bind(user_id)
                .fetch_optional(pool)
                .await
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(&sql)
                .bind(user_id)
                .fetch_optional(pool)
                .await
        }
    }
}

/// Accounts in registration order, `limit` from `offset`, and the total count.
pub async fn page(
    db: &aiforge_commands::Database,
    offset: i64,
    limit: i64,
) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    let sql = format!("{SELECT_USER} ORDER BY registered_at, user_id LIMIT $1 OFFSET $2");
    let count_sql = "SELECT COUNT(*) FROM users_view";
    match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => Ok((
            sqlx::query_as(&sql)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?,
            sqlx::query_scalar(count_sql).fetch_one(pool).await?,
        )),
        aiforge_commands::store::Engine::Postgres(pool) => Ok((
            sqlx::query_as(&sql)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?,
            sqlx::query_scalar(count_sql).fetch_one(pool).await?,
        )),
    }
}
