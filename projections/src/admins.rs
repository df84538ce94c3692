//! `admin_wallets_view`: the admin whitelist as it stands, for `GET /api/admin/wallets`.
//! (Authorisation itself reads the whitelist aggregate, so a removal takes effect on the very next
//! request, not when this view catches up.)

use aiforge_commands::RecordedEvent;
use aiforge_domain::admin::{AdminEvent, AdminWhitelist};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct AdminWalletsProjection;

const TABLES: &[ViewTable] = &[ViewTable {
    name: "admin_wallets_view",
    order_by: "wallet",
}];

#[async_trait::async_trait]
impl Projection for AdminWalletsProjection {
    fn name(&self) -> &'static str {
        "admin_wallets"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == AdminWhitelist::TYPE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type != AdminWhitelist::TYPE {
            return Ok(());
        }
        match decode_payload::<AdminEvent>(event)? {
            AdminEvent::AdminWalletAdded {
                wallet,
                added_by,
                at,
            } => {
                tx.execute(
                    "INSERT INTO admin_wallets_view (wallet, network, address, added_by, added_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        SqlValue::Text(wallet.key()),
                        SqlValue::Text(wallet.network.to_string()),
                        SqlValue::Text(wallet.address),
                        SqlValue::Text(added_by),
                        SqlValue::Text(aiforge_commands::clock::rfc3339(at)),
                    ],
                )
                .await?;
            }
            AdminEvent::AdminWalletRemoved { wallet, .. } => {
                tx.execute(
                    "DELETE FROM admin_wallets_view WHERE wallet = $1",
                    &[SqlValue::Text(wallet.key())],
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AdminWalletRow {
    pub network: String,
    pub address: String,
    pub added_by: String,
    pub added_at: String,
}

pub async fn list(db: &aiforge_commands::Database) -> Result<Vec<AdminWalletRow>, sqlx::Error> {
    let sql = "SELECT network, address, added_by, added_at FROM admin_wallets_view ORDER BY added_at, wallet";
    match db.engine() {
        aiforge_commands::store::Engine::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        aiforge_commands::store::Engine::Postgres(pool) => {
            sqlx::query_as(sql).fetch_all(pool).await
        }
    }
}
