//! The fee schedule as data: proposals, adoptions and withdrawals on the `FeeBook` aggregate
//! (ids and times made here), and [`StoreFees`], the adapter of the domain's `FeeSource` port.
//! It reads the book from the event store on every call, so the schedule an instance splits a
//! payment by is the store's, never a copy held by the process: an adoption recorded through
//! one instance is in force on every instance from its effective date.

use std::sync::Arc;

use aiforge_domain::fee_book::{
    FeeBook, FeeBookCommand, FeeBookError, FeeBookServices, FEE_BOOK_ID,
};
use aiforge_domain::fees::{FeeLookup, FeeRates, FeeSource, FeeSourceError, FeeTable};
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::store::Database;

/// The real `FeeSource`: the book folded from the store at each look-up (a handful of events).
pub struct StoreFees {
    book: Executor<FeeBook>,
}

impl StoreFees {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self {
            book: Executor::new(db, clock, FeeBookServices),
        }
    }

    /// As the port every aggregate that splits money holds.
    pub fn source(db: Database, clock: Arc<dyn Clock>) -> Arc<dyn FeeSource> {
        Arc::new(Self::new(db, clock))
    }

    pub async fn table(&self) -> Result<FeeTable, FeeSourceError> {
        Ok(self
            .book
            .load(FEE_BOOK_ID)
            .await
            .map_err(|e: CommandError<FeeBookError>| FeeSourceError(e.to_string()))?
            .table())
    }
}

impl FeeSource for StoreFees {
    fn schedule_at(&self, at: OffsetDateTime) -> FeeLookup<'_> {
        Box::pin(async move { Ok(self.table().await?.at(at).clone()) })
    }
}

/// The admin's commands on the fee book.
pub struct Fees {
    book: Executor<FeeBook>,
    clock: Arc<dyn Clock>,
}

impl Fees {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self {
            book: Executor::new(db, clock.clone(), FeeBookServices),
            clock,
        }
    }

    pub fn database(&self) -> &Database {
        self.book.database()
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub async fn book(&self) -> Result<FeeBook, CommandError<FeeBookError>> {
        self.book.load(FEE_BOOK_ID).await
    }

    /// Records a proposal; returns its id and the outcome.
    #[tracing::instrument(skip(self, rates, meta))]
    pub async fn propose(
        &self,
        rates: FeeRates,
        effective_from: OffsetDateTime,
        by: &str,
        meta: &CommandMeta,
    ) -> Result<(String, Outcome), CommandError<FeeBookError>> {
        let proposal_id = uuid::Uuid::now_v7().to_string();
        let outcome = self
            .book
            .execute(
                FEE_BOOK_ID,
                FeeBookCommand::Propose {
                    proposal_id: proposal_id.clone(),
                    rates,
                    effective_from,
                    by: by.to_string(),
                    at: self.clock.now(),
                },
                meta,
                &[],
            )
            .await?;
        Ok((proposal_id, outcome))
    }

    #[tracing::instrument(skip(self, meta))]
    pub async fn adopt(
        &self,
        proposal_id: &str,
        by: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, CommandError<FeeBookError>> {
        let command = FeeBookCommand::Adopt {
            proposal_id: proposal_id.to_string(),
            by: by.to_string(),
            at: self.clock.now(),
        };
        self.book.execute(FEE_BOOK_ID, command, meta, &[]).await
    }

    #[tracing::instrument(skip(self, meta))]
    pub async fn withdraw(
        &self,
        proposal_id: &str,
        by: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, CommandError<FeeBookError>> {
        let command = FeeBookCommand::Withdraw {
            proposal_id: proposal_id.to_string(),
            by: by.to_string(),
            at: self.clock.now(),
        };
        self.book.execute(FEE_BOOK_ID, command, meta, &[]).await
    }
}
