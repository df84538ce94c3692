//! Marketplace commands: models (upload, metadata, publishing, listing, delete), API services
//! and API subscriptions with their keys. This layer gathers the facts the aggregates decide on
//! (the actor's group role, whether a payment is confirmed and whose, the model's state when a
//! service is created or subscribed to), makes ids, keys and times, and holds the claims that
//! make cross-aggregate rules safe under concurrency:
//! - `payment_use:<payment id>`: a publishing or listing-fee payment pays for one thing only;
//! - `free_publish:<user id>`: a user's first free publication happens once;
//! - `model_purchase:<model id>:<buyer>`: a buyer buys a model once.

use std::sync::Arc;

use aiforge_domain::api_subscription::{
    amount_due, ApiSubscription, ApiSubscriptionCommand, ApiSubscriptionError,
    ApiSubscriptionEvent, ApiSubscriptionServices, AwaitedPayment, KeyDigest, ServiceTerms,
};
use aiforge_domain::fees::{FeeSource, PaymentType};
use aiforge_domain::group::{Group, GroupError, GroupServices};
use aiforge_domain::ledger::Beneficiary;
use aiforge_domain::model::{
    Actor, BlobRef, Model, ModelCommand, ModelError, ModelMetadata, ModelOwner, ModelServices,
    ModelSource, PublishingFee,
};
use aiforge_domain::payment::{Payment, PaymentError, PaymentEvent, PaymentServices};
use aiforge_domain::service::{
    ApiService, Pricing, RateLimits, ServiceCommand, ServiceDetails, ServiceError, ServiceServices,
};
use aiforge_domain::serving::Servability;
use aiforge_domain::wallet::Network;
use aiforge_domain::Usdt;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::payments::{Payments, PaymentsError};
use crate::store::{Claim, Database};

pub const CLAIM_PAYMENT_USE: &str = "payment_use";
pub const CLAIM_FREE_PUBLISH: &str = "free_publish";
pub const CLAIM_MODEL_PURCHASE: &str = "model_purchase";
/// A model sale's payment names the model it buys as `model-sale:<model id>`.
pub const MODEL_SALE_REFERENCE_PREFIX: &str = "model-sale:";
/// An API subscription's payment names what it pays for as `api-subscription:<subscription id>`.
pub const API_SUBSCRIPTION_REFERENCE_PREFIX: &str = "api-subscription:";
/// A renewal of an API subscription: `api-subscription-renewal:<subscription id>`.
pub const API_RENEWAL_REFERENCE_PREFIX: &str = "api-subscription-renewal:";
/// A top-up of an API subscription's credit: `api-subscription-top-up:<subscription id>`.
pub const API_TOP_UP_REFERENCE_PREFIX: &str = "api-subscription-top-up:";
/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "aiforge_";
/// Random bytes in a key: 256 bits of entropy.
pub const API_KEY_RANDOM_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MarketplaceError {
    #[error(transparent)]
    Model(#[from] CommandError<ModelError>),
    #[error(transparent)]
    Service(#[from] CommandError<ServiceError>),
    #[error(transparent)]
    Subscription(#[from] CommandError<ApiSubscriptionError>),
    #[error(transparent)]
    Payments(#[from] PaymentsError),
    #[error("no such group, or you are not a member of it")]
    UnknownGroup,
    #[error("no such model")]
    UnknownModel,
    #[error("no such service")]
    UnknownService,
    #[error("no such payment of yours")]
    UnknownPayment,
    #[error("payment {payment_id} is not confirmed yet")]
    PaymentNotConfirmed { payment_id: String },
    #[error("payment {payment_id} is a {found} payment; this needs a {expected} payment")]
    WrongPaymentType {
        payment_id: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("payment {payment_id} already paid for something else")]
    PaymentAlreadyUsed { payment_id: String },
    #[error("this model is not for sale")]
    NotForSale,
    #[error("you have bought this model already")]
    AlreadyPurchased,
    #[error("you may already download this model: it is yours or your group's")]
    OwnModel,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CommandError<GroupError>> for MarketplaceError {
    fn from(e: CommandError<GroupError>) -> Self {
        MarketplaceError::Internal(e.to_string())
    }
}

impl From<CommandError<PaymentError>> for MarketplaceError {
    fn from(e: CommandError<PaymentError>) -> Self {
        MarketplaceError::Payments(PaymentsError::Payment(e))
    }
}

/// A freshly made API key: the plaintext (returned to the user once, never stored) and what the
/// store keeps.
pub struct NewKey {
    pub plaintext: String,
    pub digest: KeyDigest,
}

/// SHA-256 (hex) of a key's full text: the only form of a key the store holds.
pub fn key_sha256(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

pub fn new_key() -> NewKey {
    let mut random = [0u8; API_KEY_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let plaintext = format!("{API_KEY_PREFIX}{}", bs58::encode(random).into_string());
    let hint: String = plaintext
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    NewKey {
        digest: KeyDigest {
            sha256: key_sha256(&plaintext),
            hint,
        },
        plaintext,
    }
}

/// A renewal or top-up asked for: the payment to make (None: a free service renewed at once).
pub struct PaymentAsked {
    pub outcome: Outcome,
    pub payment_id: Option<String>,
    pub amount_due: Usdt,
}

/// What a new subscription answers with; `api_key` is the only time the key is ever shown.
pub struct Subscribed {
    pub outcome: Outcome,
    pub subscription_id: String,
    pub api_key: String,
    pub payment_id: Option<String>,
    pub amount_due: Usdt,
}

pub struct Marketplace {
    models: Executor<Model>,
    services: Executor<ApiService>,
    subscriptions: Executor<ApiSubscription>,
    groups: Executor<Group>,
    payment_store: Executor<Payment>,
    payments: Arc<Payments>,
    clock: Arc<dyn Clock>,
    /// The fee schedule in force (the publishing fee due), read from the store.
    fees: Arc<dyn FeeSource>,
}

/// Who receives the net of a payment for a model's API service or for the model itself: a group
/// model's revenue is held for the month's close, which splits it among the members
/// (domain/src/revenue_book.rs); a user's goes straight to `creator`.
fn revenue_beneficiary(model: &Model, model_id: &str, creator: &str) -> Beneficiary {
    match &model.owner {
        Some(ModelOwner::Group(group_id)) => Beneficiary::GroupModel {
            group_id: group_id.clone(),
            model_id: model_id.to_string(),
        },
        _ => Beneficiary::Creator {
            user_id: creator.to_string(),
        },
    }
}

fn sub_meta(meta: &CommandMeta, suffix: &str) -> CommandMeta {
    CommandMeta {
        command_id: format!("{}:{suffix}", meta.command_id),
        request_hash: if meta.is_generated() {
            format!("{}:{suffix}", meta.command_id)
        } else {
            meta.request_hash.clone()
        },
        ..meta.clone()
    }
}

impl Marketplace {
    pub fn new(db: Database, clock: Arc<dyn Clock>, payments: Arc<Payments>) -> Self {
        Self {
            models: Executor::new(db.clone(), clock.clone(), ModelServices),
            services: Executor::new(db.clone(), clock.clone(), ServiceServices),
            subscriptions: Executor::new(db.clone(), clock.clone(), ApiSubscriptionServices),
            groups: Executor::new(db.clone(), clock.clone(), GroupServices),
            payment_store: Executor::new(
                db.clone(),
                clock.clone(),
                PaymentServices::new(crate::fees::StoreFees::source(db.clone(), clock.clone())),
            ),
            fees: crate::fees::StoreFees::source(db, clock.clone()),
            payments,
            clock,
        }
    }

    /// The acting user, with their role in `owner`'s group when the owner is a group.
    async fn actor(&self, user_id: &str, owner: &ModelOwner) -> Result<Actor, MarketplaceError> {
        let group_role = match owner {
            ModelOwner::User(_) => None,
            ModelOwner::Group(group_id) => self.groups.load(group_id).await?.role_of(user_id),
        };
        Ok(Actor {
            user_id: user_id.to_string(),
            group_role,
        })
    }

    pub async fn model(&self, model_id: &str) -> Result<Model, MarketplaceError> {
        let model = self.models.load(model_id).await?;
        if model.id.is_none() {
            return Err(MarketplaceError::UnknownModel);
        }
        Ok(model)
    }

    async fn model_actor(
        &self,
        model_id: &str,
        user_id: &str,
    ) -> Result<(Model, Actor), MarketplaceError> {
        let model = self.model(model_id).await?;
        let owner = model.owner.clone().ok_or(MarketplaceError::UnknownModel)?;
        let actor = self.actor(user_id, &owner).await?;
        if !model.visible_to(&actor) {
            return Err(MarketplaceError::UnknownModel);
        }
        Ok((model, actor))
    }

    /// Records an uploaded (already stored) blob as a new model.
    #[allow(clippy::too_many_arguments, reason = "an upload has this many facts")]
    pub async fn upload(
        &self,
        user_id: &str,
        group_id: Option<&str>,
        metadata: ModelMetadata,
        blob: BlobRef,
        source: ModelSource,
        servability: Servability,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let owner = match group_id {
            Some(group_id) => {
                let group = self.groups.load(group_id).await?;
                if group.role_of(user_id).is_none() {
                    return Err(MarketplaceError::UnknownGroup);
                }
                ModelOwner::Group(group_id.to_string())
            }
            None => ModelOwner::User(user_id.to_string()),
        };
        let actor = self.actor(user_id, &owner).await?;
        let model_id = uuid::Uuid::now_v7().to_string();
        let command = ModelCommand::Upload {
            model_id: model_id.clone(),
            owner,
            uploaded_by: actor,
            metadata,
            blob,
            source,
            servability,
            at: self.clock.now(),
        };
        Ok(self.models.execute(&model_id, command, meta, &[]).await?)
    }

    pub async fn edit_model(
        &self,
        model_id: &str,
        user_id: &str,
        metadata: ModelMetadata,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let (_, actor) = self.model_actor(model_id, user_id).await?;
        let command = ModelCommand::EditMetadata {
            actor,
            metadata,
            at: self.clock.now(),
        };
        Ok(self.models.execute(model_id, command, meta, &[]).await?)
    }

    /// Sets a group model's revenue split (owner or ADMIN of the group; members only; from the
    /// next month).
    pub async fn set_revenue_split(
        &self,
        model_id: &str,
        user_id: &str,
        shares: Vec<aiforge_domain::revenue::Share>,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let model = self.model(model_id).await?;
        let (group_role, members) = match &model.owner {
            Some(ModelOwner::Group(group_id)) => {
                let group = self.groups.load(group_id).await?;
                (
                    group.role_of(user_id),
                    group.members.keys().cloned().collect(),
                )
            }
            _ => (None, Vec::new()),
        };
        let actor = Actor {
            user_id: user_id.to_string(),
            group_role,
        };
        if !model.visible_to(&actor) {
            return Err(MarketplaceError::UnknownModel);
        }
        let command = ModelCommand::SetRevenueSplit {
            actor,
            shares,
            members,
            at: self.clock.now(),
        };
        Ok(self.models.execute(model_id, command, meta, &[]).await?)
    }

    /// The clock of this marketplace (for what "now" is in answers).
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    pub async fn delete_model(
        &self,
        model_id: &str,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let (_, actor) = self.model_actor(model_id, user_id).await?;
        let command = ModelCommand::Delete {
            actor,
            at: self.clock.now(),
        };
        Ok(self.models.execute(model_id, command, meta, &[]).await?)
    }

    /// A confirmed payment of `user_id`'s of type `expected`, or why not.
    async fn confirmed_payment(
        &self,
        user_id: &str,
        payment_id: &str,
        expected: PaymentType,
    ) -> Result<Usdt, MarketplaceError> {
        let payment = self.payment_store.load(payment_id).await?;
        let Some(PaymentEvent::PaymentCreated {
            payer,
            payment_type,
            amount,
            ..
        }) = &payment.created
        else {
            return Err(MarketplaceError::UnknownPayment);
        };
        if payer != user_id {
            return Err(MarketplaceError::UnknownPayment);
        }
        if *payment_type != expected {
            return Err(MarketplaceError::WrongPaymentType {
                payment_id: payment_id.to_string(),
                expected: expected.as_str(),
                found: payment_type.as_str(),
            });
        }
        if payment.confirmed_tx.is_none() {
            return Err(MarketplaceError::PaymentNotConfirmed {
                payment_id: payment_id.to_string(),
            });
        }
        Ok(*amount)
    }

    fn payment_claim(payment_id: &str) -> Claim {
        Claim {
            namespace: CLAIM_PAYMENT_USE.to_string(),
            key: payment_id.to_string(),
        }
    }

    fn used(e: CommandError<ModelError>, payment_id: &str) -> MarketplaceError {
        match e {
            CommandError::Taken { namespace, .. } if namespace == CLAIM_PAYMENT_USE => {
                MarketplaceError::PaymentAlreadyUsed {
                    payment_id: payment_id.to_string(),
                }
            }
            other => other.into(),
        }
    }

    /// Publishes: free when it is the publisher's first free publication, else with a confirmed
    /// publishing_fee payment of theirs.
    pub async fn publish(
        &self,
        model_id: &str,
        user_id: &str,
        payment_id: Option<&str>,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let (_, actor) = self.model_actor(model_id, user_id).await?;
        let at = self.clock.now();
        let fee_due = self
            .fees
            .schedule_at(at)
            .await
            .map_err(|e| MarketplaceError::Internal(e.to_string()))?
            .publishing_fee();
        let command = |fee| ModelCommand::Publish {
            actor: actor.clone(),
            fee,
            fee_due,
            at,
        };
        if let Some(payment_id) = payment_id {
            let amount = self
                .confirmed_payment(user_id, payment_id, PaymentType::PublishingFee)
                .await?;
            let fee = PublishingFee::Paid {
                payment_id: payment_id.to_string(),
                amount,
            };
            return self
                .models
                .execute(
                    model_id,
                    command(Some(fee)),
                    meta,
                    &[Self::payment_claim(payment_id)],
                )
                .await
                .map_err(|e| Self::used(e, payment_id));
        }
        let free = Claim {
            namespace: CLAIM_FREE_PUBLISH.to_string(),
            key: user_id.to_string(),
        };
        match self
            .models
            .execute(
                model_id,
                command(Some(PublishingFee::FirstFree)),
                meta,
                &[free],
            )
            .await
        {
            // The free publication is used: the aggregate asks for the fee (or says why not).
            Err(CommandError::Taken { namespace, .. }) if namespace == CLAIM_FREE_PUBLISH => {
                Ok(self
                    .models
                    .execute(model_id, command(None), meta, &[])
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Whether `user_id` still has their first free publication.
    pub async fn has_free_publication(&self, user_id: &str) -> Result<bool, MarketplaceError> {
        self.models
            .database()
            .claim_owner(CLAIM_FREE_PUBLISH, user_id)
            .await
            .map(|holder| holder.is_none())
            .map_err(|e| MarketplaceError::Internal(e.to_string()))
    }

    pub async fn pay_listing_fee(
        &self,
        model_id: &str,
        user_id: &str,
        payment_id: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let (_, actor) = self.model_actor(model_id, user_id).await?;
        let amount = self
            .confirmed_payment(user_id, payment_id, PaymentType::ListingFee)
            .await?;
        let command = ModelCommand::PayListingFee {
            actor,
            payment_id: payment_id.to_string(),
            amount,
            at: self.clock.now(),
        };
        self.models
            .execute(model_id, command, meta, &[Self::payment_claim(payment_id)])
            .await
            .map_err(|e| Self::used(e, payment_id))
    }

    /// Puts a model on sale at `price`, or takes it off sale (`None`): its owner, or its
    /// group's OWNER or ADMIN. A new price applies to purchases asked for from now on.
    pub async fn set_sale_price(
        &self,
        model_id: &str,
        user_id: &str,
        price: Option<Usdt>,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let (_, actor) = self.model_actor(model_id, user_id).await?;
        let command = ModelCommand::SetSalePrice {
            actor,
            price,
            at: self.clock.now(),
        };
        Ok(self.models.execute(model_id, command, meta, &[]).await?)
    }

    /// Whether `user_id` bought the model (they may download it for good).
    pub async fn bought(&self, model_id: &str, user_id: &str) -> Result<bool, MarketplaceError> {
        Ok(self.models.load(model_id).await?.bought_by(user_id))
    }

    /// Checks that `user_id` may buy the model now and returns its price: visible to them, on
    /// sale, not theirs or their group's, not bought by them already.
    pub async fn sale_price_for(
        &self,
        model_id: &str,
        user_id: &str,
    ) -> Result<Usdt, MarketplaceError> {
        let (model, actor) = self.model_actor(model_id, user_id).await?;
        let theirs = match &model.owner {
            Some(ModelOwner::User(owner)) => owner == user_id,
            Some(ModelOwner::Group(_)) => actor.group_role.is_some(),
            None => false,
        };
        if theirs {
            return Err(MarketplaceError::OwnModel);
        }
        if model.bought_by(user_id) {
            return Err(MarketplaceError::AlreadyPurchased);
        }
        if model.state() == Some(aiforge_domain::model::ListingState::Deleted) {
            return Err(MarketplaceError::UnknownModel);
        }
        model.sale_price.ok_or(MarketplaceError::NotForSale)
    }

    /// Asks to buy a model: the `model_sale` payment of its price now (5% platform, the rest to
    /// the creator or held for the group's split), which records the purchase when it confirms.
    pub async fn buy(
        &self,
        model_id: &str,
        user_id: &str,
        network: Option<Network>,
        meta: &CommandMeta,
    ) -> Result<(Outcome, Usdt), MarketplaceError> {
        let price = self.sale_price_for(model_id, user_id).await?;
        let model = self.model(model_id).await?;
        let creator = match &model.owner {
            Some(ModelOwner::User(owner)) => owner.clone(),
            // A group model's net goes to group_revenue:<model> (see revenue_beneficiary).
            _ => String::new(),
        };
        let outcome = self
            .payments
            .create_for(
                user_id,
                PaymentType::ModelSale,
                network.unwrap_or(Network::Ethereum),
                price,
                &format!("{MODEL_SALE_REFERENCE_PREFIX}{model_id}"),
                revenue_beneficiary(&model, model_id, &creator),
                meta,
            )
            .await?;
        Ok((outcome, price))
    }

    /// Records the purchase a confirmed `model_sale` payment paid for (called by the reactor;
    /// the command id makes a repeat a no-op, the claim makes a buyer's second purchase fail).
    pub async fn record_purchase(
        &self,
        model_id: &str,
        buyer: &str,
        payment_id: &str,
        price: Usdt,
        confirmed_at: time::OffsetDateTime,
    ) -> Result<(), MarketplaceError> {
        let id = format!("model-purchase:{payment_id}");
        let meta = CommandMeta {
            command_id: id.clone(),
            request_hash: id,
            actor: Some("payments-reactor".into()),
            request_id: None,
        };
        let command = ModelCommand::RecordPurchase {
            buyer: buyer.to_string(),
            payment_id: payment_id.to_string(),
            price,
            at: confirmed_at,
        };
        let claim = Claim {
            namespace: CLAIM_MODEL_PURCHASE.to_string(),
            key: format!("{model_id}:{buyer}"),
        };
        match self
            .models
            .execute(model_id, command, &meta, &[claim])
            .await
        {
            Ok(_) => Ok(()),
            // A second payment of one buyer for one model (two asked at once and both paid):
            // it stays recorded in the ledger for support to refund; no second purchase.
            Err(CommandError::Taken { .. })
            | Err(CommandError::Rejected(ModelError::AlreadyPurchased | ModelError::NotFound)) => {
                tracing::warn!(%payment_id, %model_id, %buyer, "a confirmed model sale payment recorded no purchase");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The scheduler's step for one model: lapse or delist it if its time has come. Returns
    /// whether anything happened. The command id makes a repeated step a no-op.
    pub async fn advance_listing(
        &self,
        model_id: &str,
        delist: bool,
    ) -> Result<bool, MarketplaceError> {
        let at = self.clock.now();
        let (command, what) = if delist {
            (ModelCommand::Delist { at }, "delist")
        } else {
            (ModelCommand::LapseListing { at }, "lapse")
        };
        let model = self.model(model_id).await?;
        let stamp = match (delist, model.listed_until, model.grace_until) {
            (false, Some(until), _) | (true, _, Some(until)) => until.unix_timestamp(),
            _ => 0,
        };
        let id = format!("listing-{what}:{model_id}:{stamp}");
        let meta = CommandMeta {
            command_id: id.clone(),
            request_hash: id,
            actor: Some("listing-scheduler".into()),
            request_id: None,
        };
        match self.models.execute(model_id, command, &meta, &[]).await {
            Ok(outcome) => Ok(!outcome.replayed),
            Err(CommandError::Rejected(
                ModelError::ListingNotEnded | ModelError::GraceNotEnded | ModelError::Deleted,
            )) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    #[allow(clippy::too_many_arguments, reason = "a service has this many facts")]
    pub async fn create_service(
        &self,
        user_id: &str,
        model_id: &str,
        details: ServiceDetails,
        pricing: Pricing,
        rate_limits: RateLimits,
        included_in_plans: bool,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let (model, actor) = self.model_actor(model_id, user_id).await?;
        let service_id = uuid::Uuid::now_v7().to_string();
        let command = ServiceCommand::Create {
            service_id: service_id.clone(),
            owner: user_id.to_string(),
            model_id: model_id.to_string(),
            actor_manages_model: model.may_manage(&actor),
            model_on_marketplace: model.state().is_some_and(|s| s.is_on_marketplace()),
            model_not_servable: model.servability.as_ref().and_then(|s| s.reason().cloned()),
            details,
            pricing,
            rate_limits,
            included_in_plans,
            at: self.clock.now(),
        };
        Ok(self
            .services
            .execute(&service_id, command, meta, &[])
            .await?)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "an update has this many optional parts"
    )]
    pub async fn update_service(
        &self,
        service_id: &str,
        user_id: &str,
        details: Option<ServiceDetails>,
        pricing: Option<Pricing>,
        rate_limits: Option<RateLimits>,
        active: Option<bool>,
        included_in_plans: Option<bool>,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let service = self.service(service_id).await?;
        if service.owner.as_deref() != Some(user_id) && !self.service_public(&service).await? {
            // Only its owner sees a service off the marketplace: to anyone else it is not there.
            return Err(MarketplaceError::UnknownService);
        }
        let command = ServiceCommand::Update {
            actor: user_id.to_string(),
            details,
            pricing,
            rate_limits,
            active,
            included_in_plans,
            at: self.clock.now(),
        };
        Ok(self
            .services
            .execute(service_id, command, meta, &[])
            .await?)
    }

    /// Whether a service is on the public marketplace: active, its model listed or in grace.
    async fn service_public(&self, service: &ApiService) -> Result<bool, MarketplaceError> {
        if !service.active {
            return Ok(false);
        }
        let Some(model_id) = &service.model_id else {
            return Ok(false);
        };
        let model = self.models.load(model_id).await?;
        Ok(model.state().is_some_and(|s| s.is_on_marketplace()))
    }

    pub async fn service(&self, service_id: &str) -> Result<ApiService, MarketplaceError> {
        let service = self.services.load(service_id).await?;
        if service.id.is_none() {
            return Err(MarketplaceError::UnknownService);
        }
        Ok(service)
    }

    /// A subscription as the event store holds it now (not a view): what a command's answer
    /// shows right after the command, however far the projections lag.
    pub async fn api_subscription(
        &self,
        subscription_id: &str,
    ) -> Result<ApiSubscription, MarketplaceError> {
        let subscription = self.subscriptions.load(subscription_id).await?;
        if subscription.requested.is_none() {
            return Err(CommandError::Rejected(ApiSubscriptionError::NotFound).into());
        }
        Ok(subscription)
    }

    /// Subscribes `consumer` to a service: makes the key, and the payment when anything is due.
    pub async fn subscribe(
        &self,
        consumer: &str,
        service_id: &str,
        network: Option<Network>,
        credit: Usdt,
        meta: &CommandMeta,
    ) -> Result<Subscribed, MarketplaceError> {
        let service = self.service(service_id).await?;
        let (Some(owner), Some(model_id), Some(pricing)) =
            (service.owner, service.model_id, service.pricing)
        else {
            return Err(MarketplaceError::UnknownService);
        };
        let model = self.model(&model_id).await?;
        let terms = ServiceTerms {
            service_id: service_id.to_string(),
            service_owner: owner.clone(),
            model_id,
            pricing: pricing.clone(),
            pricing_version: service.pricing_version,
            accepting: service.active && model.state().is_some_and(|s| s.is_on_marketplace()),
        };
        if !terms.accepting && owner != consumer {
            // Off the marketplace, a service is its owner's to see: to anyone else, not there.
            return Err(MarketplaceError::UnknownService);
        }
        let due = amount_due(&pricing, credit).map_err(CommandError::Rejected)?;
        if !terms.accepting {
            return Err(CommandError::Rejected(ApiSubscriptionError::ServiceNotAccepting).into());
        }
        let subscription_id = uuid::Uuid::now_v7().to_string();
        let beneficiary = revenue_beneficiary(&model, &terms.model_id, &owner);
        let payment = if due.is_positive() {
            let network = network.unwrap_or(Network::Ethereum);
            let outcome = self
                .payments
                .create_for(
                    consumer,
                    PaymentType::ApiSubscription,
                    network,
                    due,
                    &format!("{API_SUBSCRIPTION_REFERENCE_PREFIX}{subscription_id}"),
                    beneficiary,
                    &sub_meta(meta, "payment"),
                )
                .await?;
            Some(AwaitedPayment {
                payment_id: outcome.aggregate_id,
                amount: due,
            })
        } else {
            None
        };
        let key = new_key();
        let payment_id = payment.as_ref().map(|p| p.payment_id.clone());
        let command = ApiSubscriptionCommand::Subscribe {
            subscription_id: subscription_id.clone(),
            consumer: consumer.to_string(),
            terms,
            credit,
            key: key.digest,
            payment,
            at: self.clock.now(),
        };
        let outcome = self
            .subscriptions
            .execute(&subscription_id, command, meta, &[])
            .await?;
        Ok(Subscribed {
            // A replayed command answers with the subscription it made the first time.
            subscription_id: if outcome.replayed {
                outcome.aggregate_id.clone()
            } else {
                subscription_id
            },
            outcome,
            api_key: key.plaintext,
            payment_id,
            amount_due: due,
        })
    }

    /// A new key for the subscription; the old one stops working at once.
    pub async fn regenerate_key(
        &self,
        subscription_id: &str,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<(Outcome, String), MarketplaceError> {
        let key = new_key();
        let command = ApiSubscriptionCommand::RegenerateKey {
            actor: user_id.to_string(),
            key: key.digest,
            at: self.clock.now(),
        };
        let outcome = self
            .subscriptions
            .execute(subscription_id, command, meta, &[])
            .await?;
        Ok((outcome, key.plaintext))
    }

    pub async fn cancel_subscription(
        &self,
        subscription_id: &str,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, MarketplaceError> {
        let command = ApiSubscriptionCommand::Cancel {
            actor: user_id.to_string(),
            at: self.clock.now(),
        };
        Ok(self
            .subscriptions
            .execute(subscription_id, command, meta, &[])
            .await?)
    }

    /// The subscriber's own subscription, with the service's owner and the model (for the
    /// beneficiary of a payment on it); another user's is not there.
    async fn own_subscription(
        &self,
        subscription_id: &str,
        consumer: &str,
    ) -> Result<(ApiSubscription, String, Model, String), MarketplaceError> {
        let subscription = self.api_subscription(subscription_id).await?;
        let Some(ApiSubscriptionEvent::ApiSubscriptionRequested {
            consumer: subscriber,
            service_owner,
            model_id,
            ..
        }) = subscription.requested.clone()
        else {
            return Err(CommandError::Rejected(ApiSubscriptionError::NotFound).into());
        };
        if subscriber != consumer {
            return Err(CommandError::Rejected(ApiSubscriptionError::NotFound).into());
        }
        let model = self.models.load(&model_id).await?;
        Ok((subscription, service_owner, model, model_id))
    }

    /// Creates the payment for a payment on a subscription (renewal or top-up), paid like the
    /// subscription itself (10% platform, the rest to the creator or the group model).
    #[allow(clippy::too_many_arguments, reason = "a payment has this many facts")]
    async fn subscription_payment(
        &self,
        consumer: &str,
        prefix: &str,
        subscription_id: &str,
        model: &Model,
        model_id: &str,
        service_owner: &str,
        amount: Usdt,
        network: Option<Network>,
        meta: &CommandMeta,
    ) -> Result<PaymentAsked, MarketplaceError> {
        let outcome = self
            .payments
            .create_for(
                consumer,
                PaymentType::ApiSubscription,
                network.unwrap_or(Network::Ethereum),
                amount,
                &format!("{prefix}{subscription_id}"),
                revenue_beneficiary(model, model_id, service_owner),
                meta,
            )
            .await?;
        Ok(PaymentAsked {
            payment_id: Some(outcome.aggregate_id.clone()),
            outcome,
            amount_due: amount,
        })
    }

    /// Asks to renew a monthly or hybrid subscription: the payment of one monthly fee, which
    /// extends the period when it confirms (see `domain/src/api_subscription.rs`). A free
    /// service's subscription is renewed at once.
    pub async fn renew(
        &self,
        consumer: &str,
        subscription_id: &str,
        network: Option<Network>,
        meta: &CommandMeta,
    ) -> Result<PaymentAsked, MarketplaceError> {
        let (subscription, service_owner, model, model_id) =
            self.own_subscription(subscription_id, consumer).await?;
        let price = subscription
            .renewal_price(consumer)
            .map_err(CommandError::Rejected)?;
        if !price.is_positive() {
            let command = ApiSubscriptionCommand::Renew {
                payment_id: format!("free:{}", meta.command_id),
                amount: price,
                at: self.clock.now(),
            };
            let outcome = self
                .subscriptions
                .execute(subscription_id, command, meta, &[])
                .await?;
            return Ok(PaymentAsked {
                outcome,
                payment_id: None,
                amount_due: price,
            });
        }
        self.subscription_payment(
            consumer,
            API_RENEWAL_REFERENCE_PREFIX,
            subscription_id,
            &model,
            &model_id,
            &service_owner,
            price,
            network,
            meta,
        )
        .await
    }

    /// Asks to top up a pay-per-request or hybrid subscription's credit by `amount`.
    pub async fn top_up(
        &self,
        consumer: &str,
        subscription_id: &str,
        amount: Usdt,
        network: Option<Network>,
        meta: &CommandMeta,
    ) -> Result<PaymentAsked, MarketplaceError> {
        let (subscription, service_owner, model, model_id) =
            self.own_subscription(subscription_id, consumer).await?;
        subscription
            .check_top_up(consumer, amount)
            .map_err(CommandError::Rejected)?;
        self.subscription_payment(
            consumer,
            API_TOP_UP_REFERENCE_PREFIX,
            subscription_id,
            &model,
            &model_id,
            &service_owner,
            amount,
            network,
            meta,
        )
        .await
    }

    /// Applies a confirmed renewal (`renewal`) or top-up payment to its subscription (called by
    /// the reactor; the command id makes a repeat a no-op).
    pub async fn apply_subscription_payment(
        &self,
        subscription_id: &str,
        payment_id: &str,
        amount: Usdt,
        renewal: bool,
        // When the payment confirmed: what decides whether it came within the grace.
        confirmed_at: time::OffsetDateTime,
    ) -> Result<(), MarketplaceError> {
        let what = if renewal { "renew" } else { "top-up" };
        let id = format!("{what}-api-subscription:{payment_id}");
        let meta = CommandMeta {
            command_id: id.clone(),
            request_hash: id,
            actor: Some("payments-reactor".into()),
            request_id: None,
        };
        let (payment_id, at) = (payment_id.to_string(), confirmed_at);
        let command = if renewal {
            ApiSubscriptionCommand::Renew {
                payment_id: payment_id.clone(),
                amount,
                at,
            }
        } else {
            ApiSubscriptionCommand::AddCredit {
                payment_id: payment_id.clone(),
                amount,
                at,
            }
        };
        match self
            .subscriptions
            .execute(subscription_id, command, &meta, &[])
            .await
        {
            Ok(_) => Ok(()),
            // Money paid into a subscription that cannot take it (cancelled meanwhile): the
            // payment stays recorded (and in the ledger) for support to refund; nothing else.
            Err(CommandError::Rejected(e)) => {
                tracing::warn!(%payment_id, %subscription_id, error = %e, "a confirmed renewal or top-up applied to nothing");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Activates the API subscription a confirmed payment paid for (called by the reactor).
    pub async fn activate_subscription(
        &self,
        subscription_id: &str,
        payment_id: &str,
    ) -> Result<(), MarketplaceError> {
        let id = format!("activate-api-subscription:{payment_id}");
        let meta = CommandMeta {
            command_id: id.clone(),
            request_hash: id,
            actor: Some("payments-reactor".into()),
            request_id: None,
        };
        let command = ApiSubscriptionCommand::Activate {
            payment_id: payment_id.to_string(),
            at: self.clock.now(),
        };
        match self
            .subscriptions
            .execute(subscription_id, command, &meta, &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(
                e @ (ApiSubscriptionError::UnknownPayment { .. }
                | ApiSubscriptionError::NotFound
                | ApiSubscriptionError::Cancelled),
            )) => {
                tracing::warn!(%payment_id, %subscription_id, error = %e, "a confirmed API subscription payment activated nothing");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_256_bits_and_only_their_hash_is_kept() {
        let a = new_key();
        let b = new_key();
        assert!(a.plaintext.starts_with(API_KEY_PREFIX));
        assert_ne!(a.plaintext, b.plaintext);
        let random = bs58::decode(&a.plaintext[API_KEY_PREFIX.len()..])
            .into_vec()
            .unwrap();
        assert_eq!(random.len(), 32);
        assert_eq!(a.digest.sha256, key_sha256(&a.plaintext));
        assert_eq!(a.digest.sha256.len(), 64);
        assert!(a.plaintext.ends_with(&a.digest.hint));
        assert!(!a
            .digest
            .sha256
            .contains(&a.plaintext[API_KEY_PREFIX.len()..]));
    }
}
