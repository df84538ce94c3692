//! The fee book: versions of the fee schedule as events. An admin proposes a version (its rates
//! and an effective date that must lie in the future on the app clock), then adopts it or
//! withdraws it. Adoption gives the proposal the next version number and is refused once its
//! effective date has come, or unless it starts after every adopted version: no rule is ever
//! applied retroactively, and versions stay ordered by date. Version 1 is `fees::genesis`, not
//! an event. One aggregate for the whole platform (`FEE_BOOK_ID`), so two adoptions race on its
//! version and one of them sees the other.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::fees::{FeeRates, FeeSchedule, FeeTable, RatesError};

pub const FEE_BOOK_ID: &str = "platform";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeeBookCommand {
    Propose {
        proposal_id: String,
        rates: FeeRates,
        effective_from: OffsetDateTime,
        by: String,
        at: OffsetDateTime,
    },
    Adopt {
        proposal_id: String,
        by: String,
        at: OffsetDateTime,
    },
    Withdraw {
        proposal_id: String,
        by: String,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeeBookEvent {
    FeeScheduleProposed {
        proposal_id: String,
        rates: FeeRates,
        #[serde(with = "time::serde::rfc3339")]
        effective_from: OffsetDateTime,
        proposed_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Carries the whole resulting version, so a reader copies it and derives nothing.
    FeeScheduleAdopted {
        proposal_id: String,
        schedule: FeeSchedule,
        adopted_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    FeeProposalWithdrawn {
        proposal_id: String,
        withdrawn_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for FeeBookEvent {
    fn event_type(&self) -> String {
        match self {
            FeeBookEvent::FeeScheduleProposed { .. } => "FeeScheduleProposed",
            FeeBookEvent::FeeScheduleAdopted { .. } => "FeeScheduleAdopted",
            FeeBookEvent::FeeProposalWithdrawn { .. } => "FeeProposalWithdrawn",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeBookError {
    #[error("effective_from must lie in the future: {effective_from} is not after now ({now})")]
    NotInTheFuture { effective_from: String, now: String },
    #[error(transparent)]
    Rates(#[from] RatesError),
    #[error("no such fee proposal")]
    UnknownProposal,
    #[error("this proposal id is taken")]
    AlreadyProposed,
    #[error("the proposal is {state}, not proposed")]
    NotPending { state: &'static str },
    #[error("the proposal must start after version {version}, in force from {effective_from}")]
    NotAfterLatest {
        version: u32,
        effective_from: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    Proposed,
    Adopted { version: u32 },
    Withdrawn,
}

impl ProposalState {
    pub fn name(&self) -> &'static str {
        match self {
            ProposalState::Proposed => "proposed",
            ProposalState::Adopted { .. } => "adopted",
            ProposalState::Withdrawn => "withdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub proposal_id: String,
    pub rates: FeeRates,
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    pub proposed_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub proposed_at: OffsetDateTime,
    pub state: ProposalState,
}

impl Proposal {
    /// The schedule this proposal would be as version `version`.
    pub fn as_version(&self, version: u32) -> FeeSchedule {
        FeeSchedule {
            version,
            effective_from: self.effective_from,
            rates: self.rates.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct FeeBook {
    /// By id, in the order proposed (ids are UUIDv7).
    pub proposals: BTreeMap<String, Proposal>,
    /// Adopted versions, in the order adopted (version 2 first).
    pub adopted: Vec<FeeSchedule>,
}

impl FeeBook {
    /// Genesis and every adopted version.
    pub fn table(&self) -> FeeTable {
        FeeTable::with_adopted(self.adopted.iter().cloned())
    }

    /// The number an adoption now would give.
    pub fn next_version(&self) -> u32 {
        self.table().latest().version + 1
    }

    fn pending(&self, proposal_id: &str) -> Result<&Proposal, FeeBookError> {
        let proposal = self
            .proposals
            .get(proposal_id)
            .ok_or(FeeBookError::UnknownProposal)?;
        match proposal.state {
            ProposalState::Proposed => Ok(proposal),
            other => Err(FeeBookError::NotPending {
                state: other.name(),
            }),
        }
    }
}

/// An instant as the error messages show it (RFC 3339).
fn instant(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn in_the_future(effective_from: OffsetDateTime, at: OffsetDateTime) -> Result<(), FeeBookError> {
    if effective_from <= at {
        return Err(FeeBookError::NotInTheFuture {
            effective_from: instant(effective_from),
            now: instant(at),
        });
    }
    Ok(())
}

pub struct FeeBookServices;

impl Aggregate for FeeBook {
    const TYPE: &'static str = "fee_book";
    type Command = FeeBookCommand;
    type Event = FeeBookEvent;
    type Error = FeeBookError;
    type Services = FeeBookServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            FeeBookCommand::Propose {
                proposal_id,
                rates,
                effective_from,
                by,
                at,
            } => {
                if self.proposals.contains_key(&proposal_id) {
                    return Err(FeeBookError::AlreadyProposed);
                }
                in_the_future(effective_from, at)?;
                rates.validate()?;
                FeeBookEvent::FeeScheduleProposed {
                    proposal_id,
                    rates,
                    effective_from,
                    proposed_by: by,
                    at,
                }
            }
            FeeBookCommand::Adopt {
                proposal_id,
                by,
                at,
            } => {
                let proposal = self.pending(&proposal_id)?;
                // Checked again at adoption: a proposal left waiting past its date would
                // otherwise re-price payments already confirmed.
                in_the_future(proposal.effective_from, at)?;
                let table = self.table();
                let latest = table.latest();
                if proposal.effective_from <= latest.effective_from {
                    return Err(FeeBookError::NotAfterLatest {
                        version: latest.version,
                        effective_from: instant(latest.effective_from),
                    });
                }
                FeeBookEvent::FeeScheduleAdopted {
                    schedule: proposal.as_version(latest.version + 1),
                    proposal_id,
                    adopted_by: by,
                    at,
                }
            }
            FeeBookCommand::Withdraw {
                proposal_id,
                by,
                at,
            } => {
                self.pending(&proposal_id)?;
                FeeBookEvent::FeeProposalWithdrawn {
                    proposal_id,
                    withdrawn_by: by,
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            FeeBookEvent::FeeScheduleProposed {
                proposal_id,
                rates,
                effective_from,
                proposed_by,
                at,
            } => {
                self.proposals.insert(
                    proposal_id.clone(),
                    Proposal {
                        proposal_id,
                        rates,
                        effective_from,
                        proposed_by,
                        proposed_at: at,
                        state: ProposalState::Proposed,
                    },
                );
            }
            FeeBookEvent::FeeScheduleAdopted {
                proposal_id,
                schedule,
                ..
            } => {
                if let Some(p) = self.proposals.get_mut(&proposal_id) {
                    p.state = ProposalState::Adopted {
                        version: schedule.version,
                    };
                }
                self.adopted.push(schedule);
            }
            FeeBookEvent::FeeProposalWithdrawn { proposal_id, .. } => {
                if let Some(p) = self.proposals.get_mut(&proposal_id) {
                    p.state = ProposalState::Withdrawn;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fees::{genesis, PaymentType};
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type FeeBookTest = TestFramework<FeeBook>;
    const NOW: OffsetDateTime = datetime!(2026-11-20 12:00 UTC);
    const DECEMBER: OffsetDateTime = datetime!(2026-12-01 00:00 UTC);

    fn forty() -> FeeRates {
        let mut rates = genesis().rates;
        rates
            .platform_percent
            .insert(PaymentType::PlatformSubscription, 40);
        rates
    }

    fn propose(id: &str, effective_from: OffsetDateTime) -> FeeBookCommand {
        FeeBookCommand::Propose {
            proposal_id: id.into(),
            rates: forty(),
            effective_from,
            by: "admin".into(),
            at: NOW,
        }
    }

    fn proposed(id: &str, effective_from: OffsetDateTime) -> FeeBookEvent {
        FeeBookEvent::FeeScheduleProposed {
            proposal_id: id.into(),
            rates: forty(),
            effective_from,
            proposed_by: "admin".into(),
            at: NOW,
        }
    }

    fn adopted(id: &str, version: u32, effective_from: OffsetDateTime) -> FeeBookEvent {
        FeeBookEvent::FeeScheduleAdopted {
            proposal_id: id.into(),
            schedule: FeeSchedule {
                version,
                effective_from,
                rates: forty(),
            },
            adopted_by: "admin".into(),
            at: NOW,
        }
    }

    #[test]
    fn a_proposal_for_the_future_is_recorded() {
        FeeBookTest::with(FeeBookServices)
            .given_no_previous_events()
            .when(propose("p1", DECEMBER))
            .then_expect_events(vec![proposed("p1", DECEMBER)]);
    }

    #[test]
    fn a_back_dated_or_present_proposal_is_refused() {
        for when in [NOW, datetime!(2026-11-01 00:00 UTC)] {
            FeeBookTest::with(FeeBookServices)
                .given_no_previous_events()
                .when(propose("p1", when))
                .then_expect_error(FeeBookError::NotInTheFuture {
                    effective_from: instant(when),
                    now: instant(NOW),
                });
        }
    }

    #[test]
    fn invalid_rates_are_refused() {
        let mut rates = forty();
        rates.platform_percent.insert(PaymentType::Job, 150);
        FeeBookTest::with(FeeBookServices)
            .given_no_previous_events()
            .when(FeeBookCommand::Propose {
                proposal_id: "p1".into(),
                rates,
                effective_from: DECEMBER,
                by: "admin".into(),
                at: NOW,
            })
            .then_expect_error(FeeBookError::Rates(RatesError::PercentOutOfRange {
                payment_type: PaymentType::Job,
                percent: 150,
            }));
    }

    #[test]
    fn adopting_gives_the_next_version_number() {
        FeeBookTest::with(FeeBookServices)
            .given(vec![proposed("p1", DECEMBER)])
            .when(FeeBookCommand::Adopt {
                proposal_id: "p1".into(),
                by: "admin".into(),
                at: NOW,
            })
            .then_expect_events(vec![adopted("p1", 2, DECEMBER)]);
    }

    #[test]
    fn a_proposal_whose_date_has_come_cannot_be_adopted() {
        FeeBookTest::with(FeeBookServices)
            .given(vec![proposed("p1", DECEMBER)])
            .when(FeeBookCommand::Adopt {
                proposal_id: "p1".into(),
                by: "admin".into(),
                at: DECEMBER,
            })
            .then_expect_error(FeeBookError::NotInTheFuture {
                effective_from: instant(DECEMBER),
                now: instant(DECEMBER),
            });
    }

    #[test]
    fn an_adoption_must_start_after_the_latest_version() {
        let november = datetime!(2026-11-25 00:00 UTC);
        FeeBookTest::with(FeeBookServices)
            .given(vec![
                proposed("p1", DECEMBER),
                proposed("p2", november),
                adopted("p1", 2, DECEMBER),
            ])
            .when(FeeBookCommand::Adopt {
                proposal_id: "p2".into(),
                by: "admin".into(),
                at: NOW,
            })
            .then_expect_error(FeeBookError::NotAfterLatest {
                version: 2,
                effective_from: instant(DECEMBER),
            });
    }

    #[test]
    fn a_withdrawn_or_adopted_proposal_is_not_pending() {
        FeeBookTest::with(FeeBookServices)
            .given(vec![
                proposed("p1", DECEMBER),
                FeeBookEvent::FeeProposalWithdrawn {
                    proposal_id: "p1".into(),
                    withdrawn_by: "admin".into(),
                    at: NOW,
                },
            ])
            .when(FeeBookCommand::Adopt {
                proposal_id: "p1".into(),
                by: "admin".into(),
                at: NOW,
            })
            .then_expect_error(FeeBookError::NotPending { state: "withdrawn" });
        FeeBookTest::with(FeeBookServices)
            .given(vec![proposed("p1", DECEMBER), adopted("p1", 2, DECEMBER)])
            .when(FeeBookCommand::Withdraw {
                proposal_id: "p1".into(),
                by: "admin".into(),
                at: NOW,
            })
            .then_expect_error(FeeBookError::NotPending { state: "adopted" });
        FeeBookTest::with(FeeBookServices)
            .given_no_previous_events()
            .when(FeeBookCommand::Withdraw {
                proposal_id: "nope".into(),
                by: "admin".into(),
                at: NOW,
            })
            .then_expect_error(FeeBookError::UnknownProposal);
    }

    #[test]
    fn the_table_of_a_book_holds_genesis_then_its_adoptions() {
        let mut book = FeeBook::default();
        for event in [proposed("p1", DECEMBER), adopted("p1", 2, DECEMBER)] {
            book.apply(event);
        }
        let table = book.table();
        assert_eq!(table.at(NOW), &genesis());
        assert_eq!(table.at(DECEMBER).version, 2);
        assert_eq!(book.next_version(), 3);
        assert_eq!(
            book.proposals["p1"].state,
            ProposalState::Adopted { version: 2 }
        );
    }
}
