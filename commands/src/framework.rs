//! Executes commands on aggregates with the three guarantees every command of AIForge has:
//! - idempotency: a command id seen before returns the first outcome and appends nothing; the
//!   same id with a different request is refused (Stripe's rule);
//! - optimistic concurrency: a command that lost a race on its aggregate is retried on the new
//!   state, up to `CONFLICT_RETRIES_MAX` times, then reported as a conflict;
//! - uniqueness claims committed atomically with the events.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};

use crate::clock::Clock;
use crate::store::repository::{META_CLAIMS, META_COMMAND_ID, META_REQUEST_HASH};
use crate::store::{AiforgeRepository, Claim, ClaimTaken, Database, LogPosition, StoreError};

/// A command that lost an optimistic-concurrency race is re-run this many times before the
/// caller gets a conflict.
pub const CONFLICT_RETRIES_MAX: usize = 5;

/// Who sent a command and under which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    /// The idempotency key: the client's `Idempotency-Key`, or a fresh UUIDv7.
    pub command_id: String,
    /// A keyed hash of the request that carried the command; a reused key with another hash is
    /// a client error.
    pub request_hash: String,
    pub actor: Option<String>,
    pub request_id: Option<String>,
}

impl CommandMeta {
    /// True for an id made here by [`CommandMeta::generated`] (a fresh UUIDv7 no earlier command
    /// can have), whose first execution needs no look-up of earlier outcomes. A fixed id chosen
    /// by a caller (the demo's `demo:account`, a reactor's id derived from an event) is looked
    /// up even when its request hash equals it: skipping that made a restart's second
    /// registration of the demo account fail with "email is already taken".
    pub fn is_generated(&self) -> bool {
        self.request_hash == self.command_id
            && uuid::Uuid::parse_str(&self.command_id).is_ok_and(|id| id.get_version_num() == 7)
    }

    /// For commands with no client-supplied key (CLI, schedulers): never collides.
    pub fn generated(actor: Option<String>) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        Self {
            request_hash: id.clone(),
            command_id: id,
            actor,
            request_id: None,
        }
    }
}

tokio::task_local! {
    /// Set when a command answers from its first outcome within an `observe_replays` scope.
    static REPLAYS: std::cell::Cell<bool>;
}

/// Runs `work` and says whether any command in it was a replay (Stripe's rule: a retried
/// request answers as the first did, and says so). The HTTP layer wraps every request in it, so
/// every replayed command's answer carries `Idempotent-Replayed: true`, whichever route ran it.
pub async fn observe_replays<F: std::future::Future>(work: F) -> (F::Output, bool) {
    REPLAYS
        .scope(std::cell::Cell::new(false), async move {
            let output = work.await;
            (output, REPLAYS.with(std::cell::Cell::get))
        })
        .await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub aggregate_id: String,
    /// True when this command id had already been executed and nothing new was appended.
    pub replayed: bool,
    /// Where the command's last event stands in the global log (None if it appended nothing).
    pub last: Option<LogPosition>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    #[error(transparent)]
    Rejected(E),
    #[error("{namespace} is already taken")]
    Taken { namespace: String, key: String },
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("the resource was changed concurrently; retry")]
    Conflict,
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl<E: std::error::Error> From<StoreError> for CommandError<E> {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Database(sqlx::Error::PoolTimedOut)
            | StoreError::Database(sqlx::Error::Io(_)) => {
                CommandError::Unavailable(err.to_string())
            }
            other => CommandError::Internal(other.to_string()),
        }
    }
}

pub struct Executor<A>
where
    A: Aggregate,
{
    cqrs: CqrsFramework<A, PersistedEventStore<AiforgeRepository, A>>,
    loader: PersistedEventStore<AiforgeRepository, A>,
    db: Database,
}

impl<A> Executor<A>
where
    A: Aggregate + 'static,
    A::Command: Clone,
{
    pub fn new(db: Database, clock: Arc<dyn Clock>, services: A::Services) -> Self {
        let store =
            PersistedEventStore::new_event_store(AiforgeRepository::new(db.clone(), clock.clone()));
        let loader =
            PersistedEventStore::new_event_store(AiforgeRepository::new(db.clone(), clock));
        Self {
            cqrs: CqrsFramework::new(store, vec![], services),
            loader,
            db,
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The current state of one aggregate, folded from its events.
    pub async fn load(&self, aggregate_id: &str) -> Result<A, CommandError<A::Error>> {
        let mut context = self
            .loader
            .load_aggregate(aggregate_id)
            .await
            .map_err(map_aggregate_error)?;
        Ok(std::mem::take(cqrs_es::AggregateContext::aggregate(
            &mut context,
        )))
    }

    #[tracing::instrument(skip(self, command, claims), fields(aggregate = A::TYPE, command_id = %meta.command_id))]
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
        claims: &[Claim],
    ) -> Result<Outcome, CommandError<A::Error>> {
        // A generated id cannot have run before: skip the look-up (one round trip per command).
        if !meta.is_generated() {
            if let Some(outcome) = self.replay(meta).await? {
                return Ok(outcome);
            }
        }
        let metadata = metadata(meta, claims)?;
        for _ in 0..=CONFLICT_RETRIES_MAX {
            match self
                .cqrs
                .execute_with_metadata(aggregate_id, command.clone(), metadata.clone())
                .await
            {
                Ok(()) => {
                    let last = self
                        .db
                        .find_command(&meta.command_id)
                        .await?
                        .map(|record| record.last);
                    return Ok(Outcome {
                        aggregate_id: aggregate_id.to_string(),
                        replayed: false,
                        last,
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    // Either another command got to this aggregate first (retry on the new
                    // state) or a twin request with the same key won (answer as it did).
                    if let Some(outcome) = self.replay(meta).await? {
                        return Ok(outcome);
                    }
                    tracing::debug!("optimistic concurrency conflict, retrying");
                }
                Err(other) => return Err(map_aggregate_error(other)),
            }
        }
        Err(CommandError::Conflict)
    }

    async fn replay(&self, meta: &CommandMeta) -> Result<Option<Outcome>, CommandError<A::Error>> {
        match self.db.find_command(&meta.command_id).await? {
            None => Ok(None),
            Some(record) if record.request_hash == meta.request_hash => {
                // Outside an `observe_replays` scope (reactors, the CLI) there is no one to tell.
                let _ = REPLAYS.try_with(|seen| seen.set(true));
                Ok(Some(Outcome {
                    aggregate_id: record.aggregate_id,
                    replayed: true,
                    last: Some(record.last),
                }))
            }
            Some(_) => Err(CommandError::IdempotencyKeyReused),
        }
    }
}

fn metadata<E: std::error::Error>(
    meta: &CommandMeta,
    claims: &[Claim],
) -> Result<HashMap<String, String>, CommandError<E>> {
    let mut map = HashMap::from([
        (META_COMMAND_ID.to_string(), meta.command_id.clone()),
        (META_REQUEST_HASH.to_string(), meta.request_hash.clone()),
    ]);
    if let Some(actor) = &meta.actor {
        map.insert("actor".to_string(), actor.clone());
    }
    if let Some(request_id) = &meta.request_id {
        map.insert("request_id".to_string(), request_id.clone());
    }
    if !claims.is_empty() {
        let json =
            serde_json::to_string(claims).map_err(|e| CommandError::Internal(e.to_string()))?;
        map.insert(META_CLAIMS.to_string(), json);
    }
    Ok(map)
}

fn map_aggregate_error<E: std::error::Error>(err: AggregateError<E>) -> CommandError<E> {
    match err {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e.to_string()),
        AggregateError::UnexpectedError(e) => match e.downcast_ref::<ClaimTaken>() {
            Some(taken) => CommandError::Taken {
                namespace: taken.namespace.clone(),
                key: taken.key.clone(),
            },
            None => CommandError::Internal(e.to_string()),
        },
        AggregateError::DeserializationError(e) => CommandError::Internal(e.to_string()),
    }
}
