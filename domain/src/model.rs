//! The `Model` aggregate: an uploaded model file and its life on the marketplace.
//!
//! ```text
//! uploaded ──publish──▶ listed (until a date) ──date passes──▶ grace (7 days) ──▶ delisted
//!                          ▲        │ listing fee: +30 days       │ listing fee      │ listing fee
//!                          └────────┴─────────────────────────────┴──────────────────┘
//! any state ──delete──▶ deleted (terminal)
//! ```
//!
//! Rules, all here:
//! - Who may manage a model: its owning user, or for a group's model a member whose role may
//!   upload models to the group (the group's permission matrix, [`crate::group::can`]).
//! - Publishing: a user's first free publication is free (the application layer proves it is the
//!   first with a claim on the user id); any other needs a confirmed `publishing_fee` payment,
//!   which the application layer has checked and claimed, so one payment pays for one thing.
//!   Publishing lists the model for [`LISTING_PERIOD_DAYS`].
//! - A confirmed `listing_fee` payment extends the listing by [`LISTING_PERIOD_DAYS`]: from the
//!   current end while listed or in grace (grace days are not free), from now once delisted.
//! - When the listing ends the model enters [`GRACE_DAYS`] of grace (still on the marketplace,
//!   flagged), then is delisted: off the marketplace, its services take no new subscriptions.
//!   The clock is the command's `at`: the scheduler sends these commands; nothing here reads time.
//! - Deleting keeps the blob: the application layer removes it only when no subscription
//!   references the model.
//! - Sales: the model's seller (its owning user, or a group OWNER or ADMIN: the roles that
//!   configure the group's revenue) sets a sale price or takes it down. A buyer's confirmed
//!   `model_sale` payment records the purchase at the price the payment was created at (a price
//!   change applies to later payments only); one purchase per buyer (also a claim in the
//!   application layer); a buyer may download the file for good, whatever happens to the sale.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::group::{can, GroupAction, Role};
use crate::money::Usdt;
use crate::revenue::{validate_split, Share};

pub const LISTING_PERIOD_DAYS: i64 = 30;
pub const GRACE_DAYS: i64 = 7;
pub const NAME_CHARS_MAX: usize = 100;
pub const DESCRIPTION_CHARS_MAX: usize = 5000;
pub const TAGS_MAX: usize = 20;
pub const TAG_CHARS_MAX: usize = 40;

/// Who owns a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ModelOwner {
    User(String),
    Group(String),
}

/// Where the stored bytes are: the content address and the backend that holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub cid: String,
    pub size_bytes: u64,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    Upload {
        filename: String,
    },
    HuggingFace {
        repo: String,
        filename: String,
        revision: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PublishingFee {
    /// The publisher's first free publication.
    FirstFree,
    Paid {
        payment_id: String,
        amount: Usdt,
    },
}

/// Editable description of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
}

impl ModelMetadata {
    /// Trims and checks; tags are lower-cased and de-duplicated in order.
    pub fn validated(self) -> Result<Self, ModelError> {
        let name =
            crate::trimmed_within(&self.name, 1..=NAME_CHARS_MAX).ok_or(ModelError::InvalidName)?;
        let description = crate::trimmed_within(&self.description, 0..=DESCRIPTION_CHARS_MAX)
            .ok_or(ModelError::DescriptionTooLong)?;
        let mut tags: Vec<String> = Vec::new();
        for tag in self.tags {
            let tag = tag.trim().to_lowercase();
            if tag.is_empty()
                || tag.chars().count() > TAG_CHARS_MAX
                || !tag
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(ModelError::InvalidTag(tag));
            }
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.len() > TAGS_MAX {
            return Err(ModelError::TooManyTags);
        }
        Ok(Self {
            name,
            description,
            tags,
        })
    }
}

/// The acting user and, for a group's model, their role in that group now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: String,
    pub group_role: Option<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("no such model")]
    NotFound,
    #[error("the model already exists")]
    AlreadyExists,
    #[error("the name must be 1 to {NAME_CHARS_MAX} characters, without control or bidirectional-override characters")]
    InvalidName,
    #[error("the description must be at most {DESCRIPTION_CHARS_MAX} characters, without control or bidirectional-override characters")]
    DescriptionTooLong,
    #[error("tag '{0}' must be 1 to {TAG_CHARS_MAX} letters, digits, '-', '_' or '.'")]
    InvalidTag(String),
    #[error("a model has at most {TAGS_MAX} tags")]
    TooManyTags,
    #[error("the model file is empty")]
    EmptyFile,
    #[error("only the model's owner (or a group member who may upload models) may do this")]
    NotPermitted,
    #[error("the model was deleted")]
    Deleted,
    #[error("the model is already published")]
    AlreadyPublished,
    #[error("the model is not published yet")]
    NotPublished,
    #[error("publishing costs {fee} USDT: pay a publishing_fee and pass its payment_id")]
    PublishingFeeRequired { fee: Usdt },
    #[error("the listing has not ended yet")]
    ListingNotEnded,
    #[error("the grace period has not ended yet")]
    GraceNotEnded,
    #[error("only a group's model has a revenue split")]
    NotAGroupModel,
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    #[error("{0} is not a member of the model's group")]
    NotAMember(String),
    #[error("a sale price must be greater than zero")]
    SalePriceNotPositive,
    #[error("only the model's owner (or its group's OWNER or ADMIN) may sell it")]
    NotSeller,
    #[error("you have bought this model already")]
    AlreadyPurchased,
}

impl ModelError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ModelError::InvalidName => Some("name"),
            ModelError::DescriptionTooLong => Some("description"),
            ModelError::InvalidTag(_) | ModelError::TooManyTags => Some("tags"),
            ModelError::EmptyFile => Some("file"),
            ModelError::PublishingFeeRequired { .. } => Some("payment_id"),
            ModelError::InvalidSplit(_) | ModelError::NotAMember(_) => Some("shares"),
            ModelError::SalePriceNotPositive => Some("price"),
            _ => None,
        }
    }
}

#[allow(
    clippy::large_enum_variant,
    reason = "a command is built once per request and moved, never stored in bulk"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelCommand {
    Upload {
        model_id: String,
        owner: ModelOwner,
        uploaded_by: Actor,
        metadata: ModelMetadata,
        blob: BlobRef,
        source: ModelSource,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    EditMetadata {
        actor: Actor,
        metadata: ModelMetadata,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// `fee` is `FirstFree` only when the application layer holds the publisher's free claim,
    /// or `Paid` with a confirmed, unused publishing_fee payment of the publisher's.
    Publish {
        actor: Actor,
        fee: Option<PublishingFee>,
        /// The publishing fee in force (for the error that asks for it).
        fee_due: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A confirmed, unused listing_fee payment (checked and claimed by the application layer).
    PayListingFee {
        actor: Actor,
        payment_id: String,
        amount: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Sent by the scheduler; refused unless the listing has ended at `at`.
    LapseListing {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Sent by the scheduler; refused unless the grace period has ended at `at`.
    Delist {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Delete {
        actor: Actor,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A group model's revenue split among members; `members` are the group's members now
    /// (a fact the application layer reads from the group). Applies from the next month.
    SetRevenueSplit {
        actor: Actor,
        shares: Vec<Share>,
        members: Vec<String>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Puts the model on sale at `price`, or takes it down (`None`).
    SetSalePrice {
        actor: Actor,
        price: Option<Usdt>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A buyer's `model_sale` payment confirmed (sent by the reactor with the payment's amount).
    RecordPurchase {
        buyer: String,
        payment_id: String,
        price: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// A recorded revenue split and the month it applies from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueSplit {
    pub version: u32,
    pub shares: Vec<Share>,
    /// The first instant of the month it applies from (the month after it was set).
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    pub set_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub set_at: OffsetDateTime,
}

/// The first instant (UTC) of the month after `at`'s.
pub fn next_month_start(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    let (year, month) = match at.month() {
        time::Month::December => (at.year() + 1, time::Month::January),
        month => (at.year(), month.next()),
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(at)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelEvent {
    ModelUploaded {
        model_id: String,
        owner: ModelOwner,
        uploaded_by: String,
        metadata: ModelMetadata,
        blob: BlobRef,
        source: ModelSource,
        #[serde(with = "time::serde::rfc3339")]
        uploaded_at: OffsetDateTime,
    },
    ModelMetadataEdited {
        model_id: String,
        metadata: ModelMetadata,
        edited_by: String,
        #[serde(with = "time::serde::rfc3339")]
        edited_at: OffsetDateTime,
    },
    ModelPublished {
        model_id: String,
        published_by: String,
        fee: PublishingFee,
        #[serde(with = "time::serde::rfc3339")]
        listed_until: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        published_at: OffsetDateTime,
    },
    ModelListingExtended {
        model_id: String,
        paid_by: String,
        payment_id: String,
        amount: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        listed_until: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        extended_at: OffsetDateTime,
    },
    /// The listing ended unpaid: the grace period runs until `grace_until`.
    ModelListingLapsed {
        model_id: String,
        #[serde(with = "time::serde::rfc3339")]
        grace_until: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        lapsed_at: OffsetDateTime,
    },
    ModelDelisted {
        model_id: String,
        #[serde(with = "time::serde::rfc3339")]
        delisted_at: OffsetDateTime,
    },
    ModelDeleted {
        model_id: String,
        deleted_by: String,
        blob: BlobRef,
        #[serde(with = "time::serde::rfc3339")]
        deleted_at: OffsetDateTime,
    },
    ModelRevenueSplitSet {
        model_id: String,
        group_id: String,
        split: RevenueSplit,
    },
    ModelSalePriceSet {
        model_id: String,
        /// None: taken off sale.
        price: Option<Usdt>,
        set_by: String,
        #[serde(with = "time::serde::rfc3339")]
        set_at: OffsetDateTime,
    },
    ModelPurchased {
        model_id: String,
        buyer: String,
        payment_id: String,
        /// What the buyer paid: the price when the payment was created.
        price: Usdt,
        #[serde(with = "time::serde::rfc3339")]
        purchased_at: OffsetDateTime,
    },
}

impl DomainEvent for ModelEvent {
    fn event_type(&self) -> String {
        match self {
            ModelEvent::ModelRevenueSplitSet { .. } => "ModelRevenueSplitSet",
            ModelEvent::ModelUploaded { .. } => "ModelUploaded",
            ModelEvent::ModelMetadataEdited { .. } => "ModelMetadataEdited",
            ModelEvent::ModelPublished { .. } => "ModelPublished",
            ModelEvent::ModelListingExtended { .. } => "ModelListingExtended",
            ModelEvent::ModelListingLapsed { .. } => "ModelListingLapsed",
            ModelEvent::ModelDelisted { .. } => "ModelDelisted",
            ModelEvent::ModelDeleted { .. } => "ModelDeleted",
            ModelEvent::ModelSalePriceSet { .. } => "ModelSalePriceSet",
            ModelEvent::ModelPurchased { .. } => "ModelPurchased",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

/// Where a model stands on the marketplace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListingState {
    Uploaded,
    Listed,
    Grace,
    Delisted,
    Deleted,
}

impl ListingState {
    pub fn as_str(self) -> &'static str {
        match self {
            ListingState::Uploaded => "uploaded",
            ListingState::Listed => "listed",
            ListingState::Grace => "grace",
            ListingState::Delisted => "delisted",
            ListingState::Deleted => "deleted",
        }
    }

    /// On the marketplace: services of the model take new subscriptions.
    pub fn is_on_marketplace(self) -> bool {
        matches!(self, ListingState::Listed | ListingState::Grace)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: Option<String>,
    pub owner: Option<ModelOwner>,
    pub metadata: Option<ModelMetadata>,
    pub blob: Option<BlobRef>,
    pub state: Option<ListingState>,
    pub listed_until: Option<OffsetDateTime>,
    pub grace_until: Option<OffsetDateTime>,
    /// Every split recorded, oldest first.
    #[serde(default)]
    pub splits: Vec<RevenueSplit>,
    /// The price of a purchase now (None: not for sale).
    #[serde(default)]
    pub sale_price: Option<Usdt>,
    /// Who bought the model (each once).
    #[serde(default)]
    pub buyers: Vec<String>,
}

pub struct ModelServices;

impl Model {
    pub fn state(&self) -> Option<ListingState> {
        self.state
    }

    /// Who may see a model at all: its owner, the members of its group, and anyone once it is
    /// on the marketplace. A command from anyone else is answered as if the model did not
    /// exist, so its existence does not leak.
    pub fn visible_to(&self, actor: &Actor) -> bool {
        let theirs = match &self.owner {
            Some(ModelOwner::User(user_id)) => *user_id == actor.user_id,
            Some(ModelOwner::Group(_)) => actor.group_role.is_some(),
            None => false,
        };
        theirs || self.state.is_some_and(|s| s.is_on_marketplace())
    }

    /// The manage rule (see the module docs).
    pub fn may_manage(&self, actor: &Actor) -> bool {
        match &self.owner {
            Some(ModelOwner::User(user_id)) => *user_id == actor.user_id,
            Some(ModelOwner::Group(_)) => actor
                .group_role
                .is_some_and(|role| can(role, GroupAction::UploadModel)),
            None => false,
        }
    }

    /// The split in force for the month starting at `month_start`: the last one recorded whose
    /// `effective_from` is not after it.
    pub fn split_for(&self, month_start: OffsetDateTime) -> Option<&RevenueSplit> {
        self.splits
            .iter()
            .rev()
            .find(|s| s.effective_from <= month_start)
    }

    /// A split recorded but not yet in force at `now`.
    pub fn pending_split(&self, now: OffsetDateTime) -> Option<&RevenueSplit> {
        self.splits.last().filter(|s| s.effective_from > now)
    }

    fn live(&self) -> Result<(String, ListingState), ModelError> {
        match (&self.id, self.state) {
            (_, Some(ListingState::Deleted)) => Err(ModelError::Deleted),
            (Some(id), Some(state)) => Ok((id.clone(), state)),
            _ => Err(ModelError::NotFound),
        }
    }

    /// Who may sell the model: its owning user, or its group's OWNER or ADMIN.
    pub fn may_sell(&self, actor: &Actor) -> bool {
        match &self.owner {
            Some(ModelOwner::User(user_id)) => *user_id == actor.user_id,
            Some(ModelOwner::Group(_)) => actor
                .group_role
                .is_some_and(|role| can(role, GroupAction::ConfigureRevenueSplit)),
            None => false,
        }
    }

    /// Whether `user_id` bought the model.
    pub fn bought_by(&self, user_id: &str) -> bool {
        self.buyers.iter().any(|b| b == user_id)
    }

    fn managed_by(&self, actor: &Actor) -> Result<(String, ListingState), ModelError> {
        let live = self.live()?;
        if self.may_manage(actor) {
            Ok(live)
        } else {
            Err(ModelError::NotPermitted)
        }
    }
}

/// The new end of a listing paid at `at` (see the module docs).
pub fn extended_listing(
    state: ListingState,
    listed_until: Option<OffsetDateTime>,
    at: OffsetDateTime,
) -> OffsetDateTime {
    let period = Duration::days(LISTING_PERIOD_DAYS);
    match (state, listed_until) {
        (ListingState::Listed | ListingState::Grace, Some(until)) => until + period,
        _ => at + period,
    }
}

impl Aggregate for Model {
    const TYPE: &'static str = "model";
    type Command = ModelCommand;
    type Event = ModelEvent;
    type Error = ModelError;
    type Services = ModelServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ModelCommand::Upload {
                model_id,
                owner,
                uploaded_by,
                metadata,
                blob,
                source,
                at,
            } => {
                if self.id.is_some() {
                    return Err(ModelError::AlreadyExists);
                }
                let metadata = metadata.validated()?;
                if blob.size_bytes == 0 {
                    return Err(ModelError::EmptyFile);
                }
                if let ModelOwner::Group(_) = owner {
                    if !uploaded_by
                        .group_role
                        .is_some_and(|role| can(role, GroupAction::UploadModel))
                    {
                        return Err(ModelError::NotPermitted);
                    }
                }
                ModelEvent::ModelUploaded {
                    model_id,
                    owner,
                    uploaded_by: uploaded_by.user_id,
                    metadata,
                    blob,
                    source,
                    uploaded_at: at,
                }
            }
            ModelCommand::EditMetadata {
                actor,
                metadata,
                at,
            } => {
                let (model_id, _) = self.managed_by(&actor)?;
                ModelEvent::ModelMetadataEdited {
                    model_id,
                    metadata: metadata.validated()?,
                    edited_by: actor.user_id,
                    edited_at: at,
                }
            }
            ModelCommand::Publish {
                actor,
                fee,
                fee_due,
                at,
            } => {
                let (model_id, state) = self.managed_by(&actor)?;
                if state != ListingState::Uploaded {
                    return Err(ModelError::AlreadyPublished);
                }
                let fee = fee.ok_or(ModelError::PublishingFeeRequired { fee: fee_due })?;
                ModelEvent::ModelPublished {
                    model_id,
                    published_by: actor.user_id,
                    fee,
                    listed_until: at + Duration::days(LISTING_PERIOD_DAYS),
                    published_at: at,
                }
            }
            ModelCommand::PayListingFee {
                actor,
                payment_id,
                amount,
                at,
            } => {
                let (model_id, state) = self.managed_by(&actor)?;
                if state == ListingState::Uploaded {
                    return Err(ModelError::NotPublished);
                }
                ModelEvent::ModelListingExtended {
                    model_id,
                    paid_by: actor.user_id,
                    payment_id,
                    amount,
                    listed_until: extended_listing(state, self.listed_until, at),
                    extended_at: at,
                }
            }
            ModelCommand::LapseListing { at } => {
                let (model_id, state) = self.live()?;
                match (state, self.listed_until) {
                    (ListingState::Listed, Some(until)) if at >= until => {
                        ModelEvent::ModelListingLapsed {
                            model_id,
                            grace_until: until + Duration::days(GRACE_DAYS),
                            lapsed_at: at,
                        }
                    }
                    _ => return Err(ModelError::ListingNotEnded),
                }
            }
            ModelCommand::Delist { at } => {
                let (model_id, state) = self.live()?;
                match (state, self.grace_until) {
                    (ListingState::Grace, Some(until)) if at >= until => {
                        ModelEvent::ModelDelisted {
                            model_id,
                            delisted_at: at,
                        }
                    }
                    _ => return Err(ModelError::GraceNotEnded),
                }
            }
            ModelCommand::SetRevenueSplit {
                actor,
                shares,
                members,
                at,
            } => {
                let (model_id, _) = self.live()?;
                let Some(ModelOwner::Group(group_id)) = self.owner.clone() else {
                    return Err(ModelError::NotAGroupModel);
                };
                if !actor
                    .group_role
                    .is_some_and(|role| can(role, GroupAction::ConfigureRevenueSplit))
                {
                    return Err(ModelError::NotPermitted);
                }
                validate_split(&shares).map_err(|e| ModelError::InvalidSplit(e.to_string()))?;
                if let Some(outsider) = shares.iter().find(|s| !members.contains(&s.user_id)) {
                    return Err(ModelError::NotAMember(outsider.user_id.clone()));
                }
                let version = self.splits.last().map_or(1, |s| s.version + 1);
                ModelEvent::ModelRevenueSplitSet {
                    model_id,
                    group_id,
                    split: RevenueSplit {
                        version,
                        shares,
                        effective_from: next_month_start(at),
                        set_by: actor.user_id,
                        set_at: at,
                    },
                }
            }
            ModelCommand::SetSalePrice { actor, price, at } => {
                let (model_id, _) = self.live()?;
                if !self.may_sell(&actor) {
                    return Err(ModelError::NotSeller);
                }
                if price.is_some_and(|p| !p.is_positive()) {
                    return Err(ModelError::SalePriceNotPositive);
                }
                ModelEvent::ModelSalePriceSet {
                    model_id,
                    price,
                    set_by: actor.user_id,
                    set_at: at,
                }
            }
            ModelCommand::RecordPurchase {
                buyer,
                payment_id,
                price,
                at,
            } => {
                // A purchase paid is recorded even if the model was deleted or taken off sale
                // meanwhile: the buyer paid the price of the moment they asked.
                let model_id = self.id.clone().ok_or(ModelError::NotFound)?;
                if self.bought_by(&buyer) {
                    return Err(ModelError::AlreadyPurchased);
                }
                ModelEvent::ModelPurchased {
                    model_id,
                    buyer,
                    payment_id,
                    price,
                    purchased_at: at,
                }
            }
            ModelCommand::Delete { actor, at } => {
                let (model_id, _) = self.managed_by(&actor)?;
                ModelEvent::ModelDeleted {
                    model_id,
                    deleted_by: actor.user_id,
                    blob: self.blob.clone().ok_or(ModelError::NotFound)?,
                    deleted_at: at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ModelEvent::ModelUploaded {
                model_id,
                owner,
                metadata,
                blob,
                ..
            } => {
                self.id = Some(model_id);
                self.owner = Some(owner);
                self.metadata = Some(metadata);
                self.blob = Some(blob);
                self.state = Some(ListingState::Uploaded);
            }
            ModelEvent::ModelMetadataEdited { metadata, .. } => self.metadata = Some(metadata),
            ModelEvent::ModelPublished { listed_until, .. }
            | ModelEvent::ModelListingExtended { listed_until, .. } => {
                self.state = Some(ListingState::Listed);
                self.listed_until = Some(listed_until);
                self.grace_until = None;
            }
            ModelEvent::ModelListingLapsed { grace_until, .. } => {
                self.state = Some(ListingState::Grace);
                self.grace_until = Some(grace_until);
            }
            ModelEvent::ModelDelisted { .. } => self.state = Some(ListingState::Delisted),
            ModelEvent::ModelDeleted { .. } => self.state = Some(ListingState::Deleted),
            ModelEvent::ModelRevenueSplitSet { split, .. } => self.splits.push(split),
            ModelEvent::ModelSalePriceSet { price, .. } => self.sale_price = price,
            ModelEvent::ModelPurchased { buyer, .. } => self.buyers.push(buyer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-10-01 00:00 UTC);

    fn owner() -> Actor {
        Actor {
            user_id: "u1".into(),
            group_role: None,
        }
    }

    fn blob() -> BlobRef {
        BlobRef {
            sha256: "ab".repeat(32),
            cid: "Qm".into(),
            size_bytes: 11,
            backend: "local".into(),
        }
    }

    fn uploaded() -> ModelEvent {
        ModelEvent::ModelUploaded {
            model_id: "m1".into(),
            owner: ModelOwner::User("u1".into()),
            uploaded_by: "u1".into(),
            metadata: ModelMetadata {
                name: "tiny".into(),
                description: String::new(),
                tags: vec![],
            },
            blob: blob(),
            source: ModelSource::Upload {
                filename: "m.gguf".into(),
            },
            uploaded_at: T0,
        }
    }

    fn published() -> ModelEvent {
        ModelEvent::ModelPublished {
            model_id: "m1".into(),
            published_by: "u1".into(),
            fee: PublishingFee::FirstFree,
            listed_until: T0 + Duration::days(30),
            published_at: T0,
        }
    }

    fn framework() -> TestFramework<Model> {
        TestFramework::with(ModelServices)
    }

    #[test]
    fn publishing_without_a_fee_asks_for_the_fee_in_force() {
        framework()
            .given(vec![uploaded()])
            .when(ModelCommand::Publish {
                actor: owner(),
                fee: None,
                fee_due: Usdt::from_whole(5).unwrap(),
                at: T0,
            })
            .then_expect_error(ModelError::PublishingFeeRequired {
                fee: Usdt::from_whole(5).unwrap(),
            });
    }

    #[test]
    fn publishing_lists_the_model_for_thirty_days() {
        framework()
            .given(vec![uploaded()])
            .when(ModelCommand::Publish {
                actor: owner(),
                fee: Some(PublishingFee::FirstFree),
                fee_due: Usdt::from_whole(5).unwrap(),
                at: T0,
            })
            .then_expect_events(vec![published()]);
    }

    #[test]
    fn someone_else_may_not_publish() {
        framework()
            .given(vec![uploaded()])
            .when(ModelCommand::Publish {
                actor: Actor {
                    user_id: "u2".into(),
                    group_role: None,
                },
                fee: Some(PublishingFee::FirstFree),
                fee_due: Usdt::ZERO,
                at: T0,
            })
            .then_expect_error(ModelError::NotPermitted);
    }

    #[test]
    fn a_group_viewer_may_not_upload_but_a_member_may() {
        let command = |role| ModelCommand::Upload {
            model_id: "m1".into(),
            owner: ModelOwner::Group("g1".into()),
            uploaded_by: Actor {
                user_id: "u1".into(),
                group_role: Some(role),
            },
            metadata: ModelMetadata {
                name: "tiny".into(),
                description: String::new(),
                tags: vec![],
            },
            blob: blob(),
            source: ModelSource::Upload {
                filename: "m.gguf".into(),
            },
            at: T0,
        };
        framework()
            .given_no_previous_events()
            .when(command(Role::Viewer))
            .then_expect_error(ModelError::NotPermitted);
        let result = framework()
            .given_no_previous_events()
            .when(command(Role::Member))
            .inspect_result();
        assert_eq!(result.is_ok(), can(Role::Member, GroupAction::UploadModel));
    }

    #[test]
    fn the_listing_lapses_only_after_its_end_then_grace_then_delisting() {
        let end = T0 + Duration::days(30);
        framework()
            .given(vec![uploaded(), published()])
            .when(ModelCommand::LapseListing {
                at: end - Duration::seconds(1),
            })
            .then_expect_error(ModelError::ListingNotEnded);
        framework()
            .given(vec![uploaded(), published()])
            .when(ModelCommand::LapseListing { at: end })
            .then_expect_events(vec![ModelEvent::ModelListingLapsed {
                model_id: "m1".into(),
                grace_until: end + Duration::days(7),
                lapsed_at: end,
            }]);
        let lapsed = ModelEvent::ModelListingLapsed {
            model_id: "m1".into(),
            grace_until: end + Duration::days(7),
            lapsed_at: end,
        };
        framework()
            .given(vec![uploaded(), published(), lapsed.clone()])
            .when(ModelCommand::Delist {
                at: end + Duration::days(6),
            })
            .then_expect_error(ModelError::GraceNotEnded);
        framework()
            .given(vec![uploaded(), published(), lapsed])
            .when(ModelCommand::Delist {
                at: end + Duration::days(7),
            })
            .then_expect_events(vec![ModelEvent::ModelDelisted {
                model_id: "m1".into(),
                delisted_at: end + Duration::days(7),
            }]);
    }

    #[test]
    fn a_listing_fee_extends_from_the_end_while_listed_or_in_grace_and_from_now_once_delisted() {
        let end = T0 + Duration::days(30);
        let now = T0 + Duration::days(33);
        let period = Duration::days(30);
        assert_eq!(
            extended_listing(ListingState::Listed, Some(end), T0),
            end + period
        );
        assert_eq!(
            extended_listing(ListingState::Grace, Some(end), now),
            end + period
        );
        assert_eq!(
            extended_listing(ListingState::Delisted, Some(end), now),
            now + period
        );
    }

    #[test]
    fn metadata_is_validated_and_tags_normalised() {
        let metadata = ModelMetadata {
            name: "  Tiny  ".into(),
            description: "d".into(),
            tags: vec!["Chat".into(), "chat".into(), "gguf".into()],
        }
        .validated()
        .unwrap();
        assert_eq!(metadata.name, "Tiny");
        assert_eq!(metadata.tags, vec!["chat", "gguf"]);
        assert_eq!(
            ModelMetadata {
                name: " ".into(),
                description: String::new(),
                tags: vec![]
            }
            .validated(),
            Err(ModelError::InvalidName)
        );
        assert!(matches!(
            ModelMetadata {
                name: "x".into(),
                description: String::new(),
                tags: vec!["a b".into()]
            }
            .validated(),
            Err(ModelError::InvalidTag(_))
        ));
    }

    #[test]
    fn a_deleted_model_takes_no_more_commands() {
        let deleted = ModelEvent::ModelDeleted {
            model_id: "m1".into(),
            deleted_by: "u1".into(),
            blob: blob(),
            deleted_at: T0,
        };
        framework()
            .given(vec![uploaded(), deleted])
            .when(ModelCommand::Publish {
                actor: owner(),
                fee: Some(PublishingFee::FirstFree),
                fee_due: Usdt::ZERO,
                at: T0,
            })
            .then_expect_error(ModelError::Deleted);
    }
    #[test]
    fn the_seller_sets_a_sale_price_and_a_stranger_or_a_bad_price_is_refused() {
        let price = Usdt::parse("25").unwrap();
        TestFramework::<Model>::with(ModelServices)
            .given(vec![uploaded()])
            .when(ModelCommand::SetSalePrice {
                actor: owner(),
                price: Some(price),
                at: T0,
            })
            .then_expect_events(vec![ModelEvent::ModelSalePriceSet {
                model_id: "m1".into(),
                price: Some(price),
                set_by: "u1".into(),
                set_at: T0,
            }]);
        TestFramework::<Model>::with(ModelServices)
            .given(vec![uploaded()])
            .when(ModelCommand::SetSalePrice {
                actor: Actor {
                    user_id: "stranger".into(),
                    group_role: None,
                },
                price: Some(price),
                at: T0,
            })
            .then_expect_error(ModelError::NotSeller);
        TestFramework::<Model>::with(ModelServices)
            .given(vec![uploaded()])
            .when(ModelCommand::SetSalePrice {
                actor: owner(),
                price: Some(Usdt::ZERO),
                at: T0,
            })
            .then_expect_error(ModelError::SalePriceNotPositive);
    }

    #[test]
    fn a_group_model_is_sold_by_its_owner_or_admin_not_a_plain_member() {
        let group_model = ModelEvent::ModelUploaded {
            model_id: "m1".into(),
            owner: ModelOwner::Group("g1".into()),
            uploaded_by: "u1".into(),
            metadata: ModelMetadata {
                name: "tiny".into(),
                description: String::new(),
                tags: vec![],
            },
            blob: blob(),
            source: ModelSource::Upload {
                filename: "m.gguf".into(),
            },
            uploaded_at: T0,
        };
        let mut model = Model::default();
        model.apply(group_model);
        let as_role = |role| Actor {
            user_id: "x".into(),
            group_role: Some(role),
        };
        assert!(model.may_sell(&as_role(Role::Owner)));
        assert!(model.may_sell(&as_role(Role::Admin)));
        assert!(!model.may_sell(&as_role(Role::Member)));
    }

    #[test]
    fn a_buyer_buys_once_at_the_price_of_their_payment() {
        let purchase = |price: &str| ModelCommand::RecordPurchase {
            buyer: "b1".into(),
            payment_id: "p1".into(),
            price: Usdt::parse(price).unwrap(),
            at: T0,
        };
        TestFramework::<Model>::with(ModelServices)
            .given(vec![uploaded()])
            .when(purchase("25"))
            .then_expect_events(vec![ModelEvent::ModelPurchased {
                model_id: "m1".into(),
                buyer: "b1".into(),
                payment_id: "p1".into(),
                price: Usdt::parse("25").unwrap(),
                purchased_at: T0,
            }]);
        TestFramework::<Model>::with(ModelServices)
            .given(vec![
                uploaded(),
                ModelEvent::ModelPurchased {
                    model_id: "m1".into(),
                    buyer: "b1".into(),
                    payment_id: "p0".into(),
                    price: Usdt::parse("20").unwrap(),
                    purchased_at: T0,
                },
            ])
            .when(purchase("25"))
            .then_expect_error(ModelError::AlreadyPurchased);
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    fn group_model() -> ModelEvent {
        ModelEvent::ModelUploaded {
            model_id: "m1".into(),
            owner: ModelOwner::Group("g1".into()),
            uploaded_by: "owner".into(),
            metadata: ModelMetadata {
                name: "shared".into(),
                description: String::new(),
                tags: vec![],
            },
            blob: BlobRef {
                sha256: "ab".repeat(32),
                cid: "Qm".into(),
                size_bytes: 1,
                backend: "local".into(),
            },
            source: ModelSource::Upload {
                filename: "m.gguf".into(),
            },
            uploaded_at: datetime!(2026-10-01 00:00 UTC),
        }
    }

    fn share(user: &str, percent: &str) -> Share {
        Share {
            user_id: user.into(),
            percent: percent.parse().unwrap_or_default(),
        }
    }

    fn set(role: Role, shares: Vec<Share>) -> ModelCommand {
        ModelCommand::SetRevenueSplit {
            actor: Actor {
                user_id: "owner".into(),
                group_role: Some(role),
            },
            shares,
            members: vec!["owner".into(), "a".into(), "b".into()],
            at: datetime!(2026-10-15 12:00 UTC),
        }
    }

    #[test]
    fn a_split_applies_from_the_next_month() {
        let shares = vec![share("owner", "50"), share("a", "30"), share("b", "20")];
        TestFramework::<Model>::with(ModelServices)
            .given(vec![group_model()])
            .when(set(Role::Admin, shares.clone()))
            .then_expect_events(vec![ModelEvent::ModelRevenueSplitSet {
                model_id: "m1".into(),
                group_id: "g1".into(),
                split: RevenueSplit {
                    version: 1,
                    shares,
                    effective_from: datetime!(2026-11-01 00:00 UTC),
                    set_by: "owner".into(),
                    set_at: datetime!(2026-10-15 12:00 UTC),
                },
            }]);
    }

    #[test]
    fn members_only_admins_only_and_exactly_one_hundred() {
        let framework = || TestFramework::<Model>::with(ModelServices).given(vec![group_model()]);
        framework()
            .when(set(Role::Member, vec![share("owner", "100")]))
            .then_expect_error(ModelError::NotPermitted);
        framework()
            .when(set(
                Role::Owner,
                vec![share("owner", "50"), share("x", "50")],
            ))
            .then_expect_error(ModelError::NotAMember("x".into()));
        framework()
            .when(set(
                Role::Owner,
                vec![share("owner", "50"), share("a", "40")],
            ))
            .then_expect_error(ModelError::InvalidSplit(
                "percentages must sum to exactly 100, got 90".into(),
            ));
    }

    #[test]
    fn the_split_in_force_is_the_one_recorded_at_the_month_start() {
        let mut model = Model::default();
        model.apply(group_model());
        for (version, from) in [
            (1, datetime!(2026-11-01 00:00 UTC)),
            (2, datetime!(2026-12-01 00:00 UTC)),
        ] {
            model.apply(ModelEvent::ModelRevenueSplitSet {
                model_id: "m1".into(),
                group_id: "g1".into(),
                split: RevenueSplit {
                    version,
                    shares: vec![share("owner", "100")],
                    effective_from: from,
                    set_by: "owner".into(),
                    set_at: from - Duration::days(3),
                },
            });
        }
        let version = |at| model.split_for(at).map(|s| s.version);
        assert_eq!(version(datetime!(2026-10-01 00:00 UTC)), None);
        assert_eq!(version(datetime!(2026-11-01 00:00 UTC)), Some(1));
        assert_eq!(version(datetime!(2026-12-01 00:00 UTC)), Some(2));
        assert_eq!(
            next_month_start(datetime!(2026-12-31 23:59 UTC)),
            datetime!(2027-01-01 00:00 UTC)
        );
    }
}
