//! The `PayoutReceipt` aggregate, one per closed month (id `YYYY-MM`): the published Merkle
//! receipt of the close's completed payouts (`merkle`), recorded once, when none of the
//! close's payouts is still open, so the root never changes after anyone has seen it.
//!
//! Anchoring the root on chain later is one more event of this aggregate (e.g.
//! `PayoutReceiptAnchored { network, tx_hash }` after `PayoutReceiptPublished`): the root it
//! anchors is the one recorded here, 32 bytes as hex, and the leaves stay in the event so any
//! proof can be rebuilt from the log alone.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::merkle::{root_and_proof, ReceiptLeaf};
use crate::revenue_book::Month;

/// One leaf of a receipt and the payout it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    pub payout_id: String,
    pub leaf: ReceiptLeaf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayoutReceiptError {
    #[error("the receipt of {month} is published already")]
    AlreadyPublished { month: String },
    #[error("a leaf of {leaf_month} cannot be in the receipt of {month}")]
    WrongMonth { month: String, leaf_month: String },
    #[error("payout {payout_id} is twice in the receipt")]
    Duplicate { payout_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutReceiptCommand {
    /// Publishes the receipt of `month`'s close over `entries` (any order: they are sorted by
    /// payout id, the order the README documents).
    Publish {
        month: Month,
        entries: Vec<ReceiptEntry>,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutReceiptEvent {
    PayoutReceiptPublished {
        month: Month,
        /// Hex SHA-256 Merkle root over `leaves` in their order.
        root: String,
        /// In payout id order.
        leaves: Vec<ReceiptEntry>,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for PayoutReceiptEvent {
    fn event_type(&self) -> String {
        match self {
            PayoutReceiptEvent::PayoutReceiptPublished { .. } => "PayoutReceiptPublished",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PayoutReceipt {
    pub month: Option<Month>,
    pub root: Option<String>,
}

pub struct PayoutReceiptServices;

impl Aggregate for PayoutReceipt {
    const TYPE: &'static str = "payout_receipt";
    type Command = PayoutReceiptCommand;
    type Event = PayoutReceiptEvent;
    type Error = PayoutReceiptError;
    type Services = PayoutReceiptServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            PayoutReceiptCommand::Publish {
                month,
                mut entries,
                at,
            } => {
                if self.root.is_some() {
                    return Err(PayoutReceiptError::AlreadyPublished {
                        month: month.to_string(),
                    });
                }
                let text = month.to_string();
                if let Some(e) = entries.iter().find(|e| e.leaf.month != text) {
                    return Err(PayoutReceiptError::WrongMonth {
                        month: text,
                        leaf_month: e.leaf.month.clone(),
                    });
                }
                entries.sort_by(|a, b| a.payout_id.cmp(&b.payout_id));
                if let Some(pair) = entries
                    .windows(2)
                    .find(|w| w[0].payout_id == w[1].payout_id)
                {
                    return Err(PayoutReceiptError::Duplicate {
                        payout_id: pair[0].payout_id.clone(),
                    });
                }
                let leaves: Vec<ReceiptLeaf> = entries.iter().map(|e| e.leaf.clone()).collect();
                let (root, _) = root_and_proof(&leaves, None);
                sink.write(
                    PayoutReceiptEvent::PayoutReceiptPublished {
                        month,
                        root,
                        leaves: entries,
                        at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PayoutReceiptEvent::PayoutReceiptPublished { month, root, .. } => {
                self.month = Some(month);
                self.root = Some(root);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::verify;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    const AT: OffsetDateTime = datetime!(2026-12-02 00:00 UTC);

    fn november() -> Month {
        Month::new(2026, 11).unwrap_or_else(|| Month::of(AT))
    }

    fn entry(id: &str, payee: &str, amount: &str) -> ReceiptEntry {
        ReceiptEntry {
            payout_id: id.into(),
            leaf: ReceiptLeaf {
                payee: payee.into(),
                wallet: format!("ethereum:0x{payee:0>40}"),
                amount: amount.into(),
                month: "2026-11".into(),
            },
        }
    }

    #[test]
    fn a_receipt_is_published_once_in_payout_id_order_and_its_root_checks_every_leaf() {
        let given = vec![
            entry("b.0", "b", "27.000000"),
            entry("a.0", "a", "90.000000"),
        ];
        let sorted = vec![given[1].clone(), given[0].clone()];
        let leaves: Vec<ReceiptLeaf> = sorted.iter().map(|e| e.leaf.clone()).collect();
        let (root, _) = root_and_proof(&leaves, None);
        let published = PayoutReceiptEvent::PayoutReceiptPublished {
            month: november(),
            root: root.clone(),
            leaves: sorted,
            at: AT,
        };
        TestFramework::<PayoutReceipt>::with(PayoutReceiptServices)
            .given_no_previous_events()
            .when(PayoutReceiptCommand::Publish {
                month: november(),
                entries: given.clone(),
                at: AT,
            })
            .then_expect_events(vec![published.clone()]);
        for (i, leaf) in leaves.iter().enumerate() {
            let (_, proof) = root_and_proof(&leaves, Some(i));
            assert!(verify(leaf, &proof, &root));
            let mut changed = leaf.clone();
            changed.amount = "90.000001".into();
            assert!(!verify(&changed, &proof, &root));
        }
        TestFramework::<PayoutReceipt>::with(PayoutReceiptServices)
            .given(vec![published])
            .when(PayoutReceiptCommand::Publish {
                month: november(),
                entries: given,
                at: AT,
            })
            .then_expect_error(PayoutReceiptError::AlreadyPublished {
                month: "2026-11".into(),
            });
    }

    #[test]
    fn a_leaf_of_another_month_or_a_payout_twice_is_refused() {
        let mut october = entry("a.0", "a", "1.000000");
        october.leaf.month = "2026-10".into();
        TestFramework::<PayoutReceipt>::with(PayoutReceiptServices)
            .given_no_previous_events()
            .when(PayoutReceiptCommand::Publish {
                month: november(),
                entries: vec![october],
                at: AT,
            })
            .then_expect_error(PayoutReceiptError::WrongMonth {
                month: "2026-11".into(),
                leaf_month: "2026-10".into(),
            });
        TestFramework::<PayoutReceipt>::with(PayoutReceiptServices)
            .given_no_previous_events()
            .when(PayoutReceiptCommand::Publish {
                month: november(),
                entries: vec![entry("a.0", "a", "1.000000"), entry("a.0", "a", "1.000000")],
                at: AT,
            })
            .then_expect_error(PayoutReceiptError::Duplicate {
                payout_id: "a.0".into(),
            });
    }
}
