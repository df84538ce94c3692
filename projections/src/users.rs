//! `users_view`: one row per account (id, email and username or the wallet that created it,
//! registration time), and `wallets_view`: the wallets each account connected and whether they
//! are proven and which is the payout wallet of its network; for `me`, `my-wallets`, the admin's user list and counts.

use aiforge_commands::RecordedEvent;
use aiforge_domain::account::{Account, AccountEvent};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct UsersProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "users_view",
        order_by: "user_id",
    },
    ViewTable {
        name: "wallets_view",
        order_by: "user_id, network, address",
    },
];

#[async_trait::async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == Account::TYPE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(event)).await
    }

    /// `users_view` rows are only ever inserted, and no other write here reads them, so the
    /// batch's new rows are gathered and written with multi-row INSERTs
    /// (`ViewTx::insert_rows`); wallet writes go as they come.
    async fn apply_batch(
        &self,
        tx: &mut ViewTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut rows: Vec<[SqlValue; 5]> = Vec::new();
        for event in events {
            if event.aggregate_type != Account::TYPE {
                continue;
            }
            // A deactivation updates a row that may still be among the batch's pending inserts.
            if matches!(
                event.event_type.as_str(),
                "UserDeactivated" | "UserReactivated"
            ) {
                insert_users(tx, std::mem::take(&mut rows)).await?;
            }
            if let Some(row) = self.apply_one(tx, event).await? {
                rows.push(row);
            }
        }
        insert_users(tx, rows).await
    }
}

async fn insert_users(tx: &mut ViewTx, rows: Vec<[SqlValue; 5]>) -> Result<(), ProjectionError> {
    let values: Vec<SqlValue> = rows.into_iter().flatten().collect();
    tx.insert_rows(
        "INSERT INTO users_view (user_id, email, username, wallet, registered_at) VALUES",
        5,
        &values,
        "",
    )
    .await?;
    Ok(())
}

impl UsersProjection {
    /// Applies the event's wallet writes; returns the `users_view` row it creates, if any.
    async fn apply_one(
        &self,
        tx: &mut ViewTx,
        event: &RecordedEvent,
    ) -> Result<Option<[SqlValue; 5]>, ProjectionError> {
        match decode_payload::<AccountEvent>(event)? {
            AccountEvent::UserRegistered {
                user_id,
                email,
                username,
                registered_at,
            } => {
                return Ok(Some([
                    SqlValue::Text(user_id),
                    SqlValue::Text(email),
                    SqlValue::Text(username),
                    SqlValue::Null,
                    SqlValue::Text(aiforge_commands::clock::rfc3339(registered_at)),
                ]));
            }
            AccountEvent::WalletUserRegistered {
                user_id,
                wallet,
                registered_at,
            } => {
                return Ok(Some([
                    SqlValue::Text(user_id),
                    SqlValue::Null,
                    SqlValue::Null,
                    SqlValue::Text(wallet.key()),
                    SqlValue::Text(aiforge_commands::clock::rfc3339(registered_at)),
                ]));
            }
            AccountEvent::WalletConnected {
                wallet,
                verified,
                at,
            } => {
                let at = aiforge_commands::clock::rfc3339(at);
                tx.execute(
                    "INSERT INTO wallets_view (user_id, network, address, verified, connected_at, verified_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        SqlValue::Text(event.aggregate_id.clone()),
                        SqlValue::Text(wallet.network.to_string()),
                        SqlValue::Text(wallet.address),
                        SqlValue::Int(i64::from(verified)),
                        SqlValue::Text(at.clone()),
                        if verified { SqlValue::Text(at) } else { SqlValue::Null },
                    ],
                )
                .await?;
            }
            AccountEvent::WalletVerified { wallet, at, .. } => {
                tx.execute(
                    "UPDATE wallets_view SET verified = 1, verified_at = $1 \
                     WHERE user_id = $2 AND network = $3 AND address = $4",
                    &[
                        SqlValue::Text(aiforge_commands::clock::rfc3339(at)),
                        SqlValue::Text(event.aggregate_id.clone()),
                        SqlValue::Text(wallet.network.to_string()),
                        SqlValue::Text(wallet.address),
                    ],
                )
                .await?;
            }
            AccountEvent::UserDeactivated {
                user_id,
                reason,
                at,
                ..
            } => {
                tx.execute(
                    "UPDATE users_view SET deactivated_at = $1, deactivation_reason = $2 \
                     WHERE user_id = $3",
                    &[
                        SqlValue::Text(aiforge_commands::clock::rfc3339(at)),
                        SqlValue::Text(reason),
                        SqlValue::Text(user_id),
                    ],
                )
                .await?;
            }
            AccountEvent::PayoutWalletChosen { wallet, .. } => {
                tx.execute(
                    "UPDATE wallets_view SET payout = CASE WHEN address = $1 THEN 1 ELSE 0 END \
                     WHERE user_id = $2 AND network = $3",
                    &[
                        SqlValue::Text(wallet.address),
                        SqlValue::Text(event.aggregate_id.clone()),
                        SqlValue::Text(wallet.network.to_string()),
                    ],
                )
                .await?;
            }
            AccountEvent::UserReactivated { user_id, .. } => {
                tx.execute(
                    "UPDATE users_view SET deactivated_at = NULL, deactivation_reason = NULL \
                     WHERE user_id = $1",
                    &[SqlValue::Text(user_id)],
                )
                .await?;
            }
            AccountEvent::PasswordSet { .. } | AccountEvent::SignedInWithWallet { .. } => {}
        }
        Ok(None)
    }
}

/// A row of `users_view`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserRow {
    pub user_id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub wallet: Option<String>,
    pub registered_at: String,
    /// Set while an admin has the account deactivated, with the reason given.
    pub deactivated_at: Option<String>,
    pub deactivation_reason: Option<String>,
}

const SELECT_USER: &str = "SELECT user_id, email, username, wallet, registered_at, \
    deactivated_at, deactivation_reason FROM users_view";

/// A row of `wallets_view`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct WalletRow {
    pub network: String,
    pub address: String,
    pub verified: i64,
    pub connected_at: String,
    pub verified_at: Option<String>,
    /// 1 on the account's chosen payout wallet of its network.
    pub payout: i64,
}

/// The wallets an account connected, oldest first.
pub async fn wallets_of(
    db: &aiforge_commands::Database,
    user_id: &str,
) -> Result<Vec<WalletRow>, sqlx::Error> {
    let sql =
        // CAST: `integer` columns are INT4 on PostgreSQL; read as i64 on both engines.
        "SELECT network, address, CAST(verified AS bigint) AS verified, connected_at, verified_at, \
         CAST(payout AS bigint) AS payout FROM wallets_view \
               WHERE user_id = $1 ORDER BY connected_at, network, address";
    match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => {
            sqlx::query_as(sql).bind(user_id).fetch_all(pool).await
        }
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(sql).bind(user_id).fetch_all(pool).await
        }
    }
}

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

/// The longest search text [`search`] takes, in characters.
pub const USER_SEARCH_CHARS_MAX: usize = 200;

/// `text` as a LIKE pattern matching it anywhere, lower-cased, with LIKE's wildcards escaped
/// (`\` is the escape character of the statements below): a `%` or `_` typed is matched as itself.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Accounts whose email, username, sign-up wallet or any connected wallet's address contains
/// `text` (case-insensitive), in registration order, `limit` from `offset`, and how many match.
/// A scan of `users_view` (and `wallets_view` per account), bounded by the page: the admin's
/// search, not a hot path. The caller bounds `text` ([`USER_SEARCH_CHARS_MAX`]).
pub async fn search(
    db: &aiforge_commands::Database,
    text: &str,
    offset: i64,
    limit: i64,
) -> Result<(Vec<UserRow>, i64), sqlx::Error> {
    const MATCHES: &str = "WHERE LOWER(COALESCE(email, '')) LIKE $1 ESCAPE '\\' \
        OR LOWER(COALESCE(username, '')) LIKE $1 ESCAPE '\\' \
        OR LOWER(COALESCE(wallet, '')) LIKE $1 ESCAPE '\\' \
        OR EXISTS (SELECT 1 FROM wallets_view w WHERE w.user_id = users_view.user_id \
                   AND LOWER(w.address) LIKE $1 ESCAPE '\\')";
    let pattern = contains_pattern(text);
    let sql = format!("{SELECT_USER} {MATCHES} ORDER BY registered_at, user_id LIMIT $2 OFFSET $3");
    let count_sql = format!("SELECT COUNT(*) FROM users_view {MATCHES}");
    aiforge_commands::on_engine!(db, |pool| Ok((
        sqlx::query_as(&sql)
            .bind(&pattern)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?,
        sqlx::query_scalar(&count_sql)
            .bind(&pattern)
            .fetch_one(pool)
            .await?,
    )))
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
