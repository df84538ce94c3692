//! `groups_view` and `group_members_view`: each group and who is in it with which role, for the
//! group API, "my groups" and counts. Roles are copied from events (the transfer event says which
//! role the former owner keeps), never re-derived here.

use aiforge_commands::RecordedEvent;
use aiforge_domain::group::{Group, GroupEvent};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct GroupsProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "groups_view",
        order_by: "group_id",
    },
    ViewTable {
        name: "group_members_view",
        order_by: "group_id, user_id",
    },
];

async fn set_role(
    tx: &mut ViewTx,
    group_id: &str,
    user_id: &str,
    role: &str,
) -> Result<(), ProjectionError> {
    tx.execute(
        "UPDATE group_members_view SET role = $1 WHERE group_id = $2 AND user_id = $3",
        &[
            SqlValue::Text(role.to_string()),
            SqlValue::Text(group_id.to_string()),
            SqlValue::Text(user_id.to_string()),
        ],
    )
    .await?;
    Ok(())
}

async fn remove(tx: &mut ViewTx, group_id: &str, user_id: &str) -> Result<(), ProjectionError> {
    tx.execute(
        "DELETE FROM group_members_view WHERE group_id = $1 AND user_id = $2",
        &[
            SqlValue::Text(group_id.to_string()),
            SqlValue::Text(user_id.to_string()),
        ],
    )
    .await?;
    Ok(())
}

async fn add(
    tx: &mut ViewTx,
    group_id: &str,
    user_id: &str,
    role: &str,
    at: String,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO group_members_view (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
        &[
            SqlValue::Text(group_id.to_string()),
            SqlValue::Text(user_id.to_string()),
            SqlValue::Text(role.to_string()),
            SqlValue::Text(at),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Projection for GroupsProjection {
    fn name(&self) -> &'static str {
        "groups"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        event.aggregate_type == Group::TYPE
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.aggregate_type != Group::TYPE {
            return Ok(());
        }
        let group_id = event.aggregate_id.as_str();
        let time = aiforge_commands::clock::rfc3339;
        match decode_payload::<GroupEvent>(event)? {
            GroupEvent::GroupCreated {
                group_id: id,
                name,
                description,
                owner_id,
                created_at,
            } => {
                tx.execute(
                    "INSERT INTO groups_view (group_id, name, description, owner_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        SqlValue::Text(id.clone()),
                        SqlValue::Text(name),
                        SqlValue::Text(description),
                        SqlValue::Text(owner_id.clone()),
                        SqlValue::Text(time(created_at)),
                    ],
                )
                .await?;
                add(tx, &id, &owner_id, "OWNER", time(created_at)).await?;
            }
            GroupEvent::MemberAdded {
                user_id, role, at, ..
            } => {
                add(tx, group_id, &user_id, role.as_str(), time(at)).await?;
            }
            GroupEvent::MemberRoleChanged { user_id, to, .. } => {
                set_role(tx, group_id, &user_id, to.as_str()).await?;
            }
            GroupEvent::MemberRemoved { user_id, .. } | GroupEvent::MemberLeft { user_id, .. } => {
                remove(tx, group_id, &user_id).await?;
            }
            GroupEvent::OwnershipTransferred {
                from,
                to,
                former_owner_role,
                ..
            } => {
                set_role(tx, group_id, &to, "OWNER").await?;
                set_role(tx, group_id, &from, former_owner_role.as_str()).await?;
                tx.execute(
                    "UPDATE groups_view SET owner_id = $1 WHERE group_id = $2",
                    &[SqlValue::Text(to), SqlValue::Text(group_id.to_string())],
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GroupRow {
    pub group_id: String,
    pub name: String,
    pub description: String,
    pub owner_id: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MemberRow {
    pub user_id: String,
    pub role: String,
    pub joined_at: String,
}

pub async fn find(
    db: &aiforge_commands::Database,
    group_id: &str,
) -> Result<Option<(GroupRow, Vec<MemberRow>)>, sqlx::Error> {
    let group: Option<GroupRow> = on_engine!(db, |pool| {
        sqlx::query_as(
        "SELECT group_id, name, description, owner_id, created_at FROM groups_view WHERE group_id = $1"
    )
    .bind(group_id)
    .fetch_optional(pool)
    .await?
    });
    let Some(group) = group else { return Ok(None) };
    let members: Vec<MemberRow> = on_engine!(db, |pool| {
        sqlx::query_as(
        "SELECT user_id, role, joined_at FROM group_members_view WHERE group_id = $1 ORDER BY joined_at, user_id"
    )
    .bind(group_id)
    .fetch_all(pool)
    .await?
    });
    Ok(Some((group, members)))
}

/// The groups a user belongs to, with the user's role in each.
pub async fn of_user(
    db: &aiforge_commands::Database,
    user_id: &str,
) -> Result<Vec<(GroupRow, String)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        group_id: String,
        name: String,
        description: String,
        owner_id: String,
        created_at: String,
        role: String,
    }
    let rows: Vec<Row> = on_engine!(db, |pool| sqlx::query_as(
        "SELECT g.group_id, g.name, g.description, g.owner_id, g.created_at, m.role \
         FROM group_members_view m JOIN groups_view g ON g.group_id = m.group_id \
         WHERE m.user_id = $1 ORDER BY g.created_at, g.group_id"
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?);
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                GroupRow {
                    group_id: r.group_id,
                    name: r.name,
                    description: r.description,
                    owner_id: r.owner_id,
                    created_at: r.created_at,
                },
                r.role,
            )
        })
        .collect())
}
