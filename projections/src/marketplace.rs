//! The marketplace's read models: `models_view`, `services_view` (the public listing and "my
//! services"), `api_subscriptions_view` ("my subscriptions") and `api_keys_view` (key lookup on
//! the hot path of every API call). One projection writes all four so that they move together
//! under one checkpoint: a service's copy of its model's state is never behind the model's own.
//! Values are copied from events; nothing here re-derives a rule (the listing scheduler reads
//! dates from here, but the `Model` aggregate decides).

use aiforge_commands::clock::rfc3339;
use aiforge_commands::{Database, RecordedEvent};
use aiforge_domain::api_subscription::{ApiSubscription, ApiSubscriptionEvent};
use aiforge_domain::model::{ListingState, Model, ModelEvent, ModelOwner, PublishingFee};
use aiforge_domain::service::{ApiService, ServiceEvent};
use cqrs_es::Aggregate;

use crate::{decode_payload, Projection, ProjectionError, SqlValue, ViewTable, ViewTx};

pub struct MarketplaceProjection;

const TABLES: &[ViewTable] = &[
    ViewTable {
        name: "models_view",
        order_by: "model_id",
    },
    ViewTable {
        name: "services_view",
        order_by: "service_id",
    },
    ViewTable {
        name: "api_subscriptions_view",
        order_by: "subscription_id",
    },
    ViewTable {
        name: "api_keys_view",
        order_by: "key_sha256",
    },
    ViewTable {
        name: "model_purchases_view",
        order_by: "model_id, buyer",
    },
    ViewTable {
        name: "model_tags_view",
        order_by: "tag, model_id",
    },
];

/// Replaces a model's rows in `model_tags_view` (lower case, each once).
async fn set_tags(tx: &mut ViewTx, model_id: &str, tags: &[String]) -> Result<(), ProjectionError> {
    tx.execute(
        "DELETE FROM model_tags_view WHERE model_id = $1",
        &[text(model_id)],
    )
    .await?;
    let mut lower: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
    lower.sort();
    lower.dedup();
    for tag in lower {
        tx.execute(
            "INSERT INTO model_tags_view (tag, model_id) VALUES ($1, $2)",
            &[text(tag), text(model_id)],
        )
        .await?;
    }
    Ok(())
}

fn text(value: impl Into<String>) -> SqlValue {
    SqlValue::Text(value.into())
}

fn json<T: serde::Serialize>(value: &T) -> Result<SqlValue, ProjectionError> {
    serde_json::to_string(value)
        .map(SqlValue::Text)
        .map_err(|e| ProjectionError::BadEvent {
            position: 0,
            event_type: "(view column)".into(),
            reason: e.to_string(),
        })
}

fn micros(amount: aiforge_domain::Usdt) -> SqlValue {
    SqlValue::Int(i64::try_from(amount.to_micros()).unwrap_or(i64::MAX))
}

async fn set_model_state(
    tx: &mut ViewTx,
    model_id: &str,
    state: ListingState,
    at: String,
    extra_sql: &str,
    extra: Vec<SqlValue>,
) -> Result<(), ProjectionError> {
    let mut args = vec![text(state.as_str()), SqlValue::Text(at), text(model_id)];
    args.extend(extra);
    tx.execute(
        &format!(
            "UPDATE models_view SET state = $1, updated_at = $2{extra_sql} WHERE model_id = $3"
        ),
        &args,
    )
    .await?;
    tx.execute(
        "UPDATE services_view SET model_state = $1 WHERE model_id = $2",
        &[text(state.as_str()), text(model_id)],
    )
    .await?;
    Ok(())
}

async fn apply_model(tx: &mut ViewTx, event: ModelEvent) -> Result<(), ProjectionError> {
    match event {
        ModelEvent::ModelUploaded {
            model_id,
            owner,
            uploaded_by,
            metadata,
            blob,
            source,
            uploaded_at,
        } => {
            let (owner_kind, owner_id) = match owner {
                ModelOwner::User(id) => ("user", id),
                ModelOwner::Group(id) => ("group", id),
            };
            let at = rfc3339(uploaded_at);
            set_tags(tx, &model_id, &metadata.tags).await?;
            tx.execute(
                "INSERT INTO models_view (model_id, owner_kind, owner_id, uploaded_by, name, \
                 description, tags, sha256, cid, size_bytes, backend, source, state, uploaded_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                &[
                    text(model_id),
                    text(owner_kind),
                    text(owner_id),
                    text(uploaded_by),
                    text(metadata.name),
                    text(metadata.description),
                    json(&metadata.tags)?,
                    text(blob.sha256),
                    text(blob.cid),
                    SqlValue::Int(i64::try_from(blob.size_bytes).unwrap_or(i64::MAX)),
                    text(blob.backend),
                    json(&source)?,
                    text(ListingState::Uploaded.as_str()),
                    text(at.clone()),
                    text(at),
                ],
            )
            .await?;
        }
        ModelEvent::ModelMetadataEdited {
            model_id,
            metadata,
            edited_at,
            ..
        } => {
            set_tags(tx, &model_id, &metadata.tags).await?;
            tx.execute(
                "UPDATE models_view SET name = $1, description = $2, tags = $3, updated_at = $4 \
                 WHERE model_id = $5",
                &[
                    text(metadata.name.clone()),
                    text(metadata.description),
                    json(&metadata.tags)?,
                    text(rfc3339(edited_at)),
                    text(model_id.clone()),
                ],
            )
            .await?;
            tx.execute(
                "UPDATE services_view SET model_name = $1 WHERE model_id = $2",
                &[text(metadata.name), text(model_id)],
            )
            .await?;
        }
        ModelEvent::ModelPublished {
            model_id,
            fee,
            listed_until,
            published_at,
            ..
        } => {
            let fee = match fee {
                PublishingFee::FirstFree => "first_free".to_string(),
                PublishingFee::Paid { payment_id, .. } => payment_id,
            };
            set_model_state(
                tx,
                &model_id,
                ListingState::Listed,
                rfc3339(published_at),
                ", publish_fee = $4, published_at = $2, listed_until = $5, grace_until = NULL",
                vec![text(fee), text(rfc3339(listed_until))],
            )
            .await?;
        }
        ModelEvent::ModelListingExtended {
            model_id,
            listed_until,
            extended_at,
            ..
        } => {
            set_model_state(
                tx,
                &model_id,
                ListingState::Listed,
                rfc3339(extended_at),
                ", listed_until = $4, grace_until = NULL",
                vec![text(rfc3339(listed_until))],
            )
            .await?;
        }
        ModelEvent::ModelListingLapsed {
            model_id,
            grace_until,
            lapsed_at,
        } => {
            set_model_state(
                tx,
                &model_id,
                ListingState::Grace,
                rfc3339(lapsed_at),
                ", grace_until = $4",
                vec![text(rfc3339(grace_until))],
            )
            .await?;
        }
        ModelEvent::ModelDelisted {
            model_id,
            delisted_at,
        } => {
            set_model_state(
                tx,
                &model_id,
                ListingState::Delisted,
                rfc3339(delisted_at),
                "",
                vec![],
            )
            .await?;
        }
        ModelEvent::ModelDeleted {
            model_id,
            deleted_at,
            ..
        } => {
            set_model_state(
                tx,
                &model_id,
                ListingState::Deleted,
                rfc3339(deleted_at),
                "",
                vec![],
            )
            .await?;
        }
        // Revenue splits are read from the model itself (and, at the monthly close, from the
        // log); no view holds them yet.
        ModelEvent::ModelRevenueSplitSet { .. } => {}
        ModelEvent::ModelSalePriceSet {
            model_id,
            price,
            set_at,
            ..
        } => {
            tx.execute(
                "UPDATE models_view SET sale_price = $1, sale_price_micros = $2, updated_at = $3 \
                 WHERE model_id = $4",
                &[
                    price.map_or(SqlValue::Null, |p| text(p.to_string())),
                    price.map_or(SqlValue::Null, micros),
                    text(rfc3339(set_at)),
                    text(model_id),
                ],
            )
            .await?;
        }
        ModelEvent::ModelPurchased {
            model_id,
            buyer,
            payment_id,
            price,
            purchased_at,
        } => {
            tx.execute(
                "INSERT INTO model_purchases_view (model_id, buyer, payment_id, price, \
                 purchased_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    text(model_id),
                    text(buyer),
                    text(payment_id),
                    text(price.to_string()),
                    text(rfc3339(purchased_at)),
                ],
            )
            .await?;
        }
        ModelEvent::ModelServabilityAssessed {
            model_id,
            servability,
            ..
        } => {
            tx.execute(
                "UPDATE models_view SET servability = $1 WHERE model_id = $2",
                &[json(&servability)?, text(model_id)],
            )
            .await?;
        }
    }
    Ok(())
}

async fn apply_service(tx: &mut ViewTx, event: ServiceEvent) -> Result<(), ProjectionError> {
    match event {
        ServiceEvent::ServiceCreated {
            service_id,
            owner,
            model_id,
            details,
            pricing,
            pricing_version,
            rate_limits,
            included_in_plans,
            created_at,
        } => {
            let at = rfc3339(created_at);
            // The model's name and state come from its own row, which this projection wrote
            // from earlier events.
            tx.execute(
                "INSERT INTO services_view (service_id, owner, model_id, model_name, model_state, \
                 name, description, pricing, pricing_kind, sort_price_micros, pricing_version, \
                 rate_limits, active, subscribers, created_at, updated_at, included_in_plans) \
                 SELECT $1, $2, $3, m.name, m.state, $4, $5, $6, $7, $8, $9, $10, 1, 0, $11, $11, $12 \
                 FROM models_view m WHERE m.model_id = $3",
                &[
                    text(service_id),
                    text(owner),
                    text(model_id),
                    text(details.name),
                    text(details.description),
                    json(&pricing)?,
                    text(pricing.kind()),
                    micros(pricing.sort_price()),
                    SqlValue::Int(i64::from(pricing_version)),
                    json(&rate_limits)?,
                    text(at),
                    SqlValue::Int(i64::from(included_in_plans)),
                ],
            )
            .await?;
        }
        ServiceEvent::ServicePlanInclusionChanged {
            service_id,
            included_in_plans,
            changed_at,
        } => {
            tx.execute(
                "UPDATE services_view SET included_in_plans = $1, updated_at = $2 \
                 WHERE service_id = $3",
                &[
                    SqlValue::Int(i64::from(included_in_plans)),
                    text(rfc3339(changed_at)),
                    text(service_id),
                ],
            )
            .await?;
        }
        ServiceEvent::ServiceDetailsEdited {
            service_id,
            details,
            edited_at,
        } => {
            tx.execute(
                "UPDATE services_view SET name = $1, description = $2, updated_at = $3 \
                 WHERE service_id = $4",
                &[
                    text(details.name),
                    text(details.description),
                    text(rfc3339(edited_at)),
                    text(service_id),
                ],
            )
            .await?;
        }
        ServiceEvent::ServicePricingChanged {
            service_id,
            pricing,
            pricing_version,
            changed_at,
        } => {
            tx.execute(
                "UPDATE services_view SET pricing = $1, pricing_kind = $2, sort_price_micros = $3, \
                 pricing_version = $4, updated_at = $5 WHERE service_id = $6",
                &[
                    json(&pricing)?,
                    text(pricing.kind()),
                    micros(pricing.sort_price()),
                    SqlValue::Int(i64::from(pricing_version)),
                    text(rfc3339(changed_at)),
                    text(service_id),
                ],
            )
            .await?;
        }
        ServiceEvent::ServiceRateLimitsChanged {
            service_id,
            rate_limits,
            changed_at,
        } => {
            tx.execute(
                "UPDATE services_view SET rate_limits = $1, updated_at = $2 WHERE service_id = $3",
                &[
                    json(&rate_limits)?,
                    text(rfc3339(changed_at)),
                    text(service_id),
                ],
            )
            .await?;
        }
        ServiceEvent::ServiceDeactivated { service_id, at } => {
            set_active(tx, service_id, false, at).await?;
        }
        ServiceEvent::ServiceActivated { service_id, at } => {
            set_active(tx, service_id, true, at).await?;
        }
    }
    Ok(())
}

async fn set_active(
    tx: &mut ViewTx,
    service_id: String,
    active: bool,
    at: time::OffsetDateTime,
) -> Result<(), ProjectionError> {
    tx.execute(
        "UPDATE services_view SET active = $1, updated_at = $2 WHERE service_id = $3",
        &[
            SqlValue::Int(i64::from(active)),
            text(rfc3339(at)),
            text(service_id),
        ],
    )
    .await?;
    Ok(())
}

async fn apply_subscription(
    tx: &mut ViewTx,
    event: ApiSubscriptionEvent,
) -> Result<(), ProjectionError> {
    match event {
        ApiSubscriptionEvent::ApiSubscriptionRequested {
            subscription_id,
            consumer,
            service_id,
            model_id,
            pricing,
            pricing_version,
            amount_due,
            credit,
            payment_id,
            key,
            requested_at,
            ..
        } => {
            tx.execute(
                "INSERT INTO api_subscriptions_view (subscription_id, consumer, service_id, \
                 model_id, status, pricing, pricing_version, amount_due, credit_micros, payment_id, \
                 key_hint, requested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    text(subscription_id.clone()),
                    text(consumer.clone()),
                    text(service_id.clone()),
                    text(model_id.clone()),
                    text("pending_payment"),
                    json(&pricing)?,
                    SqlValue::Int(i64::from(pricing_version)),
                    text(amount_due.to_string()),
                    micros(credit),
                    payment_id.map_or(SqlValue::Null, SqlValue::Text),
                    text(key.hint),
                    text(rfc3339(requested_at)),
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO api_keys_view (key_sha256, subscription_id, consumer, service_id, \
                 model_id, status) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    text(key.sha256),
                    text(subscription_id),
                    text(consumer),
                    text(service_id),
                    text(model_id),
                    text("pending_payment"),
                ],
            )
            .await?;
        }
        ApiSubscriptionEvent::ApiSubscriptionActivated {
            subscription_id,
            service_id,
            period_end,
            activated_at,
            ..
        } => {
            tx.execute(
                "UPDATE services_view SET subscribers = subscribers + 1 WHERE service_id = $1",
                &[text(service_id)],
            )
            .await?;
            tx.execute(
                "UPDATE api_subscriptions_view SET status = 'active', period_end = $1, \
                 activated_at = $2 WHERE subscription_id = $3",
                &[
                    period_end.map_or(SqlValue::Null, |end| SqlValue::Text(rfc3339(end))),
                    text(rfc3339(activated_at)),
                    text(subscription_id.clone()),
                ],
            )
            .await?;
            tx.execute(
                "UPDATE api_keys_view SET status = 'active' WHERE subscription_id = $1",
                &[text(subscription_id)],
            )
            .await?;
        }
        ApiSubscriptionEvent::ApiKeyRegenerated {
            subscription_id,
            revoked,
            key,
            ..
        } => {
            tx.execute(
                "INSERT INTO api_keys_view (key_sha256, subscription_id, consumer, service_id, \
                 model_id, status) SELECT $1, subscription_id, consumer, service_id, model_id, \
                 status FROM api_keys_view WHERE key_sha256 = $2",
                &[text(key.sha256), text(revoked.sha256.clone())],
            )
            .await?;
            tx.execute(
                "DELETE FROM api_keys_view WHERE key_sha256 = $1",
                &[text(revoked.sha256)],
            )
            .await?;
            tx.execute(
                "UPDATE api_subscriptions_view SET key_hint = $1 WHERE subscription_id = $2",
                &[text(key.hint), text(subscription_id)],
            )
            .await?;
        }
        ApiSubscriptionEvent::ApiSubscriptionCancelled {
            subscription_id,
            cancelled_at,
            ..
        } => {
            // Only an active subscription counted as a subscriber.
            tx.execute(
                "UPDATE services_view SET subscribers = subscribers - 1 WHERE service_id = \
                 (SELECT service_id FROM api_subscriptions_view WHERE subscription_id = $1 \
                 AND status = 'active')",
                &[text(subscription_id.clone())],
            )
            .await?;
            tx.execute(
                "UPDATE api_subscriptions_view SET status = 'cancelled', cancelled_at = $1 \
                 WHERE subscription_id = $2",
                &[text(rfc3339(cancelled_at)), text(subscription_id.clone())],
            )
            .await?;
            tx.execute(
                "DELETE FROM api_keys_view WHERE subscription_id = $1",
                &[text(subscription_id)],
            )
            .await?;
        }
        ApiSubscriptionEvent::ApiSubscriptionRenewed {
            subscription_id,
            period_end,
            ..
        } => {
            tx.execute(
                "UPDATE api_subscriptions_view SET period_end = $1 WHERE subscription_id = $2",
                &[text(rfc3339(period_end)), text(subscription_id)],
            )
            .await?;
        }
        ApiSubscriptionEvent::ApiSubscriptionCreditAdded {
            subscription_id,
            credit_added,
            ..
        } => {
            tx.execute(
                "UPDATE api_subscriptions_view SET credit_micros = credit_micros + $1 \
                 WHERE subscription_id = $2",
                &[micros(credit_added), text(subscription_id)],
            )
            .await?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Projection for MarketplaceProjection {
    fn name(&self) -> &'static str {
        "marketplace"
    }

    fn tables(&self) -> &'static [ViewTable] {
        TABLES
    }

    fn cares(&self, event: &RecordedEvent) -> bool {
        [Model::TYPE, ApiService::TYPE, ApiSubscription::TYPE]
            .contains(&event.aggregate_type.as_str())
    }

    async fn apply(&self, tx: &mut ViewTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
        match event.aggregate_type.as_str() {
            Model::TYPE => apply_model(tx, decode_payload(event)?).await,
            ApiService::TYPE => apply_service(tx, decode_payload(event)?).await,
            ApiSubscription::TYPE => apply_subscription(tx, decode_payload(event)?).await,
            _ => Ok(()),
        }
    }
}

// ---- Readers -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelRow {
    pub model_id: String,
    pub owner_kind: String,
    pub owner_id: String,
    pub uploaded_by: String,
    pub name: String,
    pub description: String,
    pub tags: String,
    pub sha256: String,
    pub cid: String,
    pub size_bytes: i64,
    pub backend: String,
    pub source: String,
    pub state: String,
    pub publish_fee: Option<String>,
    pub published_at: Option<String>,
    pub listed_until: Option<String>,
    pub grace_until: Option<String>,
    pub uploaded_at: String,
    pub updated_at: String,
    pub sale_price: Option<String>,
    /// `Servability` as JSON; `None` for a model recorded before uploads were assessed.
    pub servability: Option<String>,
}

const MODEL_COLUMNS: &str = "model_id, owner_kind, owner_id, uploaded_by, name, description, \
    tags, sha256, cid, size_bytes, backend, source, state, publish_fee, published_at, \
    listed_until, grace_until, uploaded_at, updated_at, sale_price, servability";

pub async fn find_model(db: &Database, model_id: &str) -> Result<Option<ModelRow>, sqlx::Error> {
    let sql = format!("SELECT {MODEL_COLUMNS} FROM models_view WHERE model_id = $1");
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(model_id)
        .fetch_optional(pool)
        .await?))
}

/// Models that must be served: an active service (plans' models included) and not deleted or
/// delisted; whether each is servable is its `servability` (placement reads it).
pub async fn models_to_serve(db: &Database) -> Result<Vec<ModelRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM models_view WHERE state NOT IN ('deleted', 'delisted') \
         AND model_id IN (SELECT model_id FROM services_view WHERE active = 1) \
         ORDER BY model_id"
    );
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .fetch_all(pool)
        .await?))
}

/// Models the user owns or that belong to a group they are in (deleted ones left out).
pub async fn models_of(db: &Database, user_id: &str) -> Result<Vec<ModelRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM models_view WHERE state <> 'deleted' AND \
         ((owner_kind = 'user' AND owner_id = $1) OR (owner_kind = 'group' AND owner_id IN \
         (SELECT group_id FROM group_members_view WHERE user_id = $1))) \
         ORDER BY uploaded_at DESC, model_id"
    );
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(user_id)
        .fetch_all(pool)
        .await?))
}

/// Models whose listing (`delist = false`) or grace period (`delist = true`) ended by `now`.
pub async fn listings_due(
    db: &Database,
    now: time::OffsetDateTime,
    limit: i64,
) -> Result<Vec<(String, bool)>, sqlx::Error> {
    let sql = "SELECT model_id, 0 AS delist FROM models_view WHERE state = 'listed' AND listed_until <= $1 \
               UNION ALL SELECT model_id, 1 AS delist FROM models_view WHERE state = 'grace' AND grace_until <= $1 \
               LIMIT $2";
    let rows: Vec<(String, i32)> = on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(rfc3339(now))
        .bind(limit)
        .fetch_all(pool)
        .await?);
    Ok(rows.into_iter().map(|(id, d)| (id, d == 1)).collect())
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ServiceRow {
    pub service_id: String,
    pub owner: String,
    pub model_id: String,
    pub model_name: String,
    pub model_state: String,
    pub name: String,
    pub description: String,
    pub pricing: String,
    pub pricing_kind: String,
    pub sort_price_micros: i64,
    pub pricing_version: i32,
    pub rate_limits: String,
    pub active: i32,
    pub subscribers: i32,
    pub created_at: String,
    pub updated_at: String,
    pub included_in_plans: i32,
}

const SERVICE_COLUMNS: &str = "service_id, owner, model_id, model_name, model_state, name, \
    description, pricing, pricing_kind, sort_price_micros, pricing_version, rate_limits, \
    CAST(active AS integer) AS active, CAST(subscribers AS integer) AS subscribers, created_at, updated_at, \
    CAST(included_in_plans AS integer) AS included_in_plans";

pub async fn find_service(
    db: &Database,
    service_id: &str,
) -> Result<Option<ServiceRow>, sqlx::Error> {
    let sql = format!("SELECT {SERVICE_COLUMNS} FROM services_view WHERE service_id = $1");
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(service_id)
        .fetch_optional(pool)
        .await?))
}

pub async fn services_of(db: &Database, owner: &str) -> Result<Vec<ServiceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SERVICE_COLUMNS} FROM services_view WHERE owner = $1 \
         ORDER BY created_at DESC, service_id"
    );
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(owner)
        .fetch_all(pool)
        .await?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketplaceSort {
    Newest,
    Popular,
    Price,
}

#[derive(Debug, Clone, Default)]
pub struct MarketplaceQuery {
    /// Matched case-insensitively against the service's and the model's name and description.
    pub search: Option<String>,
    /// A pricing kind: monthly | pay_per_request | hybrid.
    pub pricing: Option<String>,
    pub sort: Option<MarketplaceSort>,
    pub limit: i64,
    pub offset: i64,
}

/// Escapes `%`, `_` and `\` so user text matches literally inside a LIKE pattern.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The public marketplace: active services whose model is listed or in grace. Returns the page
/// and the total number of matches.
pub async fn marketplace(
    db: &Database,
    query: &MarketplaceQuery,
) -> Result<(Vec<ServiceRow>, i64), sqlx::Error> {
    let order = match query.sort.unwrap_or(MarketplaceSort::Newest) {
        MarketplaceSort::Newest => "created_at DESC, service_id",
        MarketplaceSort::Popular => "subscribers DESC, created_at DESC, service_id",
        MarketplaceSort::Price => "sort_price_micros ASC, created_at DESC, service_id",
    };
    let filter = "active = 1 AND model_state IN ('listed', 'grace') \
         AND ($1 = '' OR lower(name) LIKE $2 ESCAPE '\\' OR lower(description) LIKE $2 ESCAPE '\\' \
              OR lower(model_name) LIKE $2 ESCAPE '\\') \
         AND ($3 = '' OR pricing_kind = $3)";
    let search = query.search.clone().unwrap_or_default();
    let pattern = like_pattern(search.trim());
    let pricing = query.pricing.clone().unwrap_or_default();
    let rows_sql = format!(
        "SELECT {SERVICE_COLUMNS} FROM services_view WHERE {filter} ORDER BY {order} LIMIT $4 OFFSET $5"
    );
    let count_sql = format!("SELECT COUNT(*) FROM services_view WHERE {filter}");
    let rows: Vec<ServiceRow> = on_engine!(db, |pool| sqlx::query_as(&rows_sql)
        .bind(search.trim())
        .bind(&pattern)
        .bind(&pricing)
        .bind(query.limit)
        .bind(query.offset)
        .fetch_all(pool)
        .await?);
    let total: i64 = on_engine!(db, |pool| sqlx::query_scalar(&count_sql)
        .bind(search.trim())
        .bind(&pattern)
        .bind(&pricing)
        .fetch_one(pool)
        .await?);
    Ok((rows, total))
}

/// How the marketplace search orders its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchSort {
    Newest,
    /// Requests in the last 30 days.
    Popular,
    PriceAsc,
    PriceDesc,
}

/// Tags a search may require at once.
pub const SEARCH_TAGS_MAX: usize = 5;

#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Matched case-insensitively against the item's name, description and model name.
    pub text: Option<String>,
    /// `model` or `service`; None: both.
    pub kind: Option<String>,
    /// A pricing kind (service items only).
    pub pricing: Option<String>,
    /// Price bounds in micro-USDT (a service's sort price; a model's sale price).
    pub min_price_micros: Option<i64>,
    pub max_price_micros: Option<i64>,
    /// Lower-case tags, all required (at most [`SEARCH_TAGS_MAX`]).
    pub tags: Vec<String>,
    pub sort: SearchSort,
    /// Days from this one (`YYYY-MM-DD`, exclusive) count as "the last 30 days".
    pub since_day: String,
    pub limit: i64,
    pub offset: i64,
}

/// One marketplace item: a public service, or a published model (with or without services).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MarketItemRow {
    pub kind: String,
    pub id: String,
    pub model_id: String,
    pub name: String,
    pub description: String,
    pub tags: String,
    pub owner_kind: String,
    pub owner_id: String,
    pub price_micros: Option<i64>,
    pub pricing_kind: Option<String>,
    pub created_at: String,
    pub requests_30d: i64,
}

/// Public services (active, their model listed or in grace) and published models, as one list.
const MARKET_ITEMS: &str = "WITH items AS ( \
    SELECT 'service' AS kind, s.service_id AS id, s.model_id AS model_id, s.name AS name, \
           s.description AS description, m.name AS model_name, m.tags AS tags, \
           m.owner_kind AS owner_kind, m.owner_id AS owner_id, s.sort_price_micros AS price_micros, \
           s.pricing_kind AS pricing_kind, s.created_at AS created_at \
      FROM services_view s JOIN models_view m ON m.model_id = s.model_id \
     WHERE s.active = 1 AND s.model_state IN ('listed', 'grace') \
    UNION ALL \
    SELECT 'model', m.model_id, m.model_id, m.name, m.description, m.name, m.tags, m.owner_kind, \
           m.owner_id, m.sale_price_micros, CAST(NULL AS text), COALESCE(m.published_at, m.uploaded_at) \
      FROM models_view m WHERE m.state IN ('listed', 'grace')) ";

const MARKET_FILTER: &str = "($1 = '' OR lower(name) LIKE $2 ESCAPE '\\' \
      OR lower(description) LIKE $2 ESCAPE '\\' OR lower(model_name) LIKE $2 ESCAPE '\\') \
    AND ($3 = '' OR kind = $3) AND ($4 = '' OR pricing_kind = $4) \
    AND ($5 < 0 OR price_micros >= $5) AND ($6 < 0 OR price_micros <= $6) \
    AND ($7 = '' OR EXISTS (SELECT 1 FROM model_tags_view t WHERE t.tag = $7 AND t.model_id = items.model_id)) \
    AND ($8 = '' OR EXISTS (SELECT 1 FROM model_tags_view t WHERE t.tag = $8 AND t.model_id = items.model_id)) \
    AND ($9 = '' OR EXISTS (SELECT 1 FROM model_tags_view t WHERE t.tag = $9 AND t.model_id = items.model_id)) \
    AND ($10 = '' OR EXISTS (SELECT 1 FROM model_tags_view t WHERE t.tag = $10 AND t.model_id = items.model_id)) \
    AND ($11 = '' OR EXISTS (SELECT 1 FROM model_tags_view t WHERE t.tag = $11 AND t.model_id = items.model_id))";

/// The marketplace search: a page of items and the number of matches. Bounded: one page
/// (`limit`), the recent usage read from the daily rows (at most 30 per item).
pub async fn search(
    db: &Database,
    query: &SearchQuery,
) -> Result<(Vec<MarketItemRow>, i64), sqlx::Error> {
    let order = match query.sort {
        // Ids are UUIDv7: on a tie of times, the later id is the newer item.
        SearchSort::Newest => "created_at DESC, id DESC",
        SearchSort::Popular => "requests_30d DESC, created_at DESC, id DESC",
        SearchSort::PriceAsc => "price_micros IS NULL, price_micros ASC, created_at DESC, id DESC",
        SearchSort::PriceDesc => {
            "price_micros IS NULL, price_micros DESC, created_at DESC, id DESC"
        }
    };
    let rows_sql = format!(
        "{MARKET_ITEMS} SELECT kind, id, model_id, name, description, tags, owner_kind, owner_id, \
         price_micros, pricing_kind, created_at, CAST(CASE WHEN kind = 'model' THEN \
         COALESCE((SELECT SUM(d.requests) FROM model_usage_daily_view d \
                   WHERE d.model_id = items.model_id AND d.day > $12), 0) \
         ELSE COALESCE((SELECT SUM(d.requests) FROM model_usage_daily_view d \
                   WHERE d.service_id = items.id AND d.day > $12), 0) END AS bigint) AS requests_30d \
         FROM items WHERE {MARKET_FILTER} ORDER BY {order} LIMIT $13 OFFSET $14"
    );
    let count_sql = format!("{MARKET_ITEMS} SELECT COUNT(*) FROM items WHERE {MARKET_FILTER}");
    let text = query.text.clone().unwrap_or_default().trim().to_string();
    let pattern = like_pattern(&text);
    let kind = query.kind.clone().unwrap_or_default();
    let pricing = query.pricing.clone().unwrap_or_default();
    let (min, max) = (
        query.min_price_micros.unwrap_or(-1),
        query.max_price_micros.unwrap_or(-1),
    );
    let tag = |i: usize| query.tags.get(i).cloned().unwrap_or_default();
    let rows: Vec<MarketItemRow> = on_engine!(db, |pool| sqlx::query_as(&rows_sql)
        .bind(&text)
        .bind(&pattern)
        .bind(&kind)
        .bind(&pricing)
        .bind(min)
        .bind(max)
        .bind(tag(0))
        .bind(tag(1))
        .bind(tag(2))
        .bind(tag(3))
        .bind(tag(4))
        .bind(&query.since_day)
        .bind(query.limit)
        .bind(query.offset)
        .fetch_all(pool)
        .await?);
    // The count takes the same first eleven parameters (not the day, the page).
    let total: i64 = on_engine!(db, |pool| sqlx::query_scalar(&count_sql)
        .bind(&text)
        .bind(&pattern)
        .bind(&kind)
        .bind(&pricing)
        .bind(min)
        .bind(max)
        .bind(tag(0))
        .bind(tag(1))
        .bind(tag(2))
        .bind(tag(3))
        .bind(tag(4))
        .fetch_one(pool)
        .await?);
    Ok((rows, total))
}

/// A model's public services (active, its model on the marketplace), oldest first.
pub async fn public_services_of_model(
    db: &Database,
    model_id: &str,
) -> Result<Vec<ServiceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SERVICE_COLUMNS} FROM services_view WHERE model_id = $1 AND active = 1 \
         AND model_state IN ('listed', 'grace') ORDER BY created_at, service_id"
    );
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(model_id)
        .fetch_all(pool)
        .await?))
}

/// A model's requests and tokens on days after `since_day` (`YYYY-MM-DD`).
pub async fn model_usage_since(
    db: &Database,
    model_id: &str,
    since_day: &str,
) -> Result<(i64, i64), sqlx::Error> {
    let sql = "SELECT CAST(COALESCE(SUM(requests), 0) AS bigint), \
               CAST(COALESCE(SUM(tokens), 0) AS bigint) FROM model_usage_daily_view \
               WHERE model_id = $1 AND day > $2";
    Ok(on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(model_id)
        .bind(since_day)
        .fetch_one(pool)
        .await?))
}

/// Whether `buyer` bought the model.
pub async fn purchased(db: &Database, model_id: &str, buyer: &str) -> Result<bool, sqlx::Error> {
    let sql = "SELECT COUNT(*) FROM model_purchases_view WHERE model_id = $1 AND buyer = $2";
    let n: i64 = on_engine!(db, |pool| sqlx::query_scalar(sql)
        .bind(model_id)
        .bind(buyer)
        .fetch_one(pool)
        .await?);
    Ok(n > 0)
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub subscription_id: String,
    pub consumer: String,
    pub service_id: String,
    pub model_id: String,
    pub status: String,
    pub pricing: String,
    pub pricing_version: i32,
    pub amount_due: String,
    pub credit_micros: i64,
    pub payment_id: Option<String>,
    pub key_hint: String,
    pub period_end: Option<String>,
    pub requested_at: String,
    pub activated_at: Option<String>,
    pub cancelled_at: Option<String>,
}

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, consumer, service_id, model_id, status, \
    pricing, pricing_version, amount_due, credit_micros, payment_id, key_hint, period_end, \
    requested_at, activated_at, cancelled_at";

pub async fn subscriptions_of(
    db: &Database,
    consumer: &str,
) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM api_subscriptions_view WHERE consumer = $1 \
         ORDER BY requested_at DESC, subscription_id"
    );
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(consumer)
        .fetch_all(pool)
        .await?))
}

pub async fn find_subscription(
    db: &Database,
    subscription_id: &str,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM api_subscriptions_view WHERE subscription_id = $1"
    );
    Ok(on_engine!(db, |pool| sqlx::query_as(&sql)
        .bind(subscription_id)
        .fetch_optional(pool)
        .await?))
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRow {
    pub key_sha256: String,
    pub subscription_id: String,
    pub consumer: String,
    pub service_id: String,
    pub model_id: String,
    pub status: String,
}

/// The live key with this SHA-256, if any. The caller compares the digest it computed with the
/// row's in constant time (the index lookup finds the row; the comparison decides).
pub async fn find_key(db: &Database, key_sha256: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    let sql = "SELECT key_sha256, subscription_id, consumer, service_id, model_id, status \
               FROM api_keys_view WHERE key_sha256 = $1";
    Ok(on_engine!(db, |pool| sqlx::query_as(sql)
        .bind(key_sha256)
        .fetch_optional(pool)
        .await?))
}

/// How many models are in each state (`uploaded`, `listed`, `grace`, `delisted`, `deleted`).
pub async fn models_by_state(db: &Database) -> Result<Vec<(String, i64)>, sqlx::Error> {
    Ok(on_engine!(db, |pool| sqlx::query_as(
        "SELECT state, COUNT(*) FROM models_view GROUP BY state ORDER BY state"
    )
    .fetch_all(pool)
    .await?))
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn search_text_matches_literally() {
        assert_eq!(like_pattern("Chat"), "%chat%");
        assert_eq!(like_pattern("100%_x\\"), "%100\\%\\_x\\\\%");
    }
}
