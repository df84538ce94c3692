//! The admin whitelist: the wallets whose holders are platform admins. There is no admin
//! password to steal; an admin is whoever signs in with a whitelisted wallet. One aggregate
//! instance (`ADMIN_WHITELIST_ID`) holds the whole list, so "never remove the last admin" is a
//! rule inside one consistency boundary.

use std::collections::BTreeSet;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::wallet::Wallet;

pub const ADMIN_WHITELIST_ID: &str = "admin-whitelist";
/// Who added the wallets seeded from settings at first start.
pub const SEEDED_BY_SETTINGS: &str = "settings";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("this wallet is already an admin")]
    AlreadyAdmin,
    #[error("this wallet is not an admin")]
    NotAdmin,
    #[error("the last admin wallet cannot be removed")]
    LastAdmin,
    #[error("only an admin may change the whitelist")]
    NotAuthorized,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// Seeds the whitelist from settings, once: when the whitelist has never changed. Later
    /// starts leave it alone, so a wallet removed through the API stays removed even if the
    /// settings still name it.
    Seed {
        wallets: Vec<Wallet>,
        at: OffsetDateTime,
    },
    Add {
        actor: Wallet,
        wallet: Wallet,
        at: OffsetDateTime,
    },
    Remove {
        actor: Wallet,
        wallet: Wallet,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminEvent {
    AdminWalletAdded {
        wallet: Wallet,
        added_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    AdminWalletRemoved {
        wallet: Wallet,
        removed_by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for AdminEvent {
    fn event_type(&self) -> String {
        match self {
            AdminEvent::AdminWalletAdded { .. } => "AdminWalletAdded".to_string(),
            AdminEvent::AdminWalletRemoved { .. } => "AdminWalletRemoved".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AdminWhitelist {
    pub wallets: BTreeSet<Wallet>,
    /// True once any event exists: seeding happens only before that.
    pub initialized: bool,
}

impl AdminWhitelist {
    pub fn is_admin(&self, wallet: &Wallet) -> bool {
        self.wallets.contains(wallet)
    }
}

pub struct AdminServices;

impl Aggregate for AdminWhitelist {
    const TYPE: &'static str = "admin_whitelist";
    type Command = AdminCommand;
    type Event = AdminEvent;
    type Error = AdminError;
    type Services = AdminServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            AdminCommand::Seed { wallets, at } => {
                if self.initialized {
                    return Ok(());
                }
                let unique: BTreeSet<Wallet> = wallets.into_iter().collect();
                for wallet in unique {
                    sink.write(
                        AdminEvent::AdminWalletAdded {
                            wallet,
                            added_by: SEEDED_BY_SETTINGS.to_string(),
                            at,
                        },
                        self,
                    )
                    .await;
                }
                Ok(())
            }
            AdminCommand::Add { actor, wallet, at } => {
                if !self.is_admin(&actor) {
                    return Err(AdminError::NotAuthorized);
                }
                if self.is_admin(&wallet) {
                    return Err(AdminError::AlreadyAdmin);
                }
                sink.write(
                    AdminEvent::AdminWalletAdded {
                        wallet,
                        added_by: actor.key(),
                        at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            AdminCommand::Remove { actor, wallet, at } => {
                if !self.is_admin(&actor) {
                    return Err(AdminError::NotAuthorized);
                }
                if !self.is_admin(&wallet) {
                    return Err(AdminError::NotAdmin);
                }
                if self.wallets.len() == 1 {
                    return Err(AdminError::LastAdmin);
                }
                sink.write(
                    AdminEvent::AdminWalletRemoved {
                        wallet,
                        removed_by: actor.key(),
                        at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        self.initialized = true;
        match event {
            AdminEvent::AdminWalletAdded { wallet, .. } => {
                self.wallets.insert(wallet);
            }
            AdminEvent::AdminWalletRemoved { wallet, .. } => {
                self.wallets.remove(&wallet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wallet::Network;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type AdminTest = TestFramework<AdminWhitelist>;
    const AT: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn eth(address: &str) -> Wallet {
        Wallet {
            network: Network::Ethereum,
            address: address.into(),
        }
    }

    fn added(address: &str, by: &str) -> AdminEvent {
        AdminEvent::AdminWalletAdded {
            wallet: eth(address),
            added_by: by.into(),
            at: AT,
        }
    }

    #[test]
    fn seeding_adds_each_configured_wallet_once() {
        AdminTest::with(AdminServices)
            .given_no_previous_events()
            .when(AdminCommand::Seed {
                wallets: vec![eth("0xA"), eth("0xB"), eth("0xA")],
                at: AT,
            })
            .then_expect_events(vec![
                added("0xA", SEEDED_BY_SETTINGS),
                added("0xB", SEEDED_BY_SETTINGS),
            ]);
    }

    #[test]
    fn seeding_again_after_any_change_does_nothing() {
        AdminTest::with(AdminServices)
            .given(vec![
                added("0xA", SEEDED_BY_SETTINGS),
                added("0xB", SEEDED_BY_SETTINGS),
                AdminEvent::AdminWalletRemoved {
                    wallet: eth("0xB"),
                    removed_by: "ethereum:0xA".into(),
                    at: AT,
                },
            ])
            .when(AdminCommand::Seed {
                wallets: vec![eth("0xA"), eth("0xB")],
                at: AT,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_admin_adds_a_wallet() {
        AdminTest::with(AdminServices)
            .given(vec![added("0xA", SEEDED_BY_SETTINGS)])
            .when(AdminCommand::Add {
                actor: eth("0xA"),
                wallet: eth("0xC"),
                at: AT,
            })
            .then_expect_events(vec![added("0xC", "ethereum:0xA")]);
    }

    #[test]
    fn a_non_admin_cannot_change_the_whitelist() {
        AdminTest::with(AdminServices)
            .given(vec![added("0xA", SEEDED_BY_SETTINGS)])
            .when(AdminCommand::Add {
                actor: eth("0xZ"),
                wallet: eth("0xZ"),
                at: AT,
            })
            .then_expect_error(AdminError::NotAuthorized);
    }

    #[test]
    fn the_last_admin_cannot_remove_themselves() {
        AdminTest::with(AdminServices)
            .given(vec![added("0xA", SEEDED_BY_SETTINGS)])
            .when(AdminCommand::Remove {
                actor: eth("0xA"),
                wallet: eth("0xA"),
                at: AT,
            })
            .then_expect_error(AdminError::LastAdmin);
    }

    #[test]
    fn an_admin_removes_another_and_adding_twice_is_refused() {
        AdminTest::with(AdminServices)
            .given(vec![
                added("0xA", SEEDED_BY_SETTINGS),
                added("0xB", "ethereum:0xA"),
            ])
            .when(AdminCommand::Remove {
                actor: eth("0xB"),
                wallet: eth("0xA"),
                at: AT,
            })
            .then_expect_events(vec![AdminEvent::AdminWalletRemoved {
                wallet: eth("0xA"),
                removed_by: "ethereum:0xB".into(),
                at: AT,
            }]);
        AdminTest::with(AdminServices)
            .given(vec![added("0xA", SEEDED_BY_SETTINGS)])
            .when(AdminCommand::Add {
                actor: eth("0xA"),
                wallet: eth("0xA"),
                at: AT,
            })
            .then_expect_error(AdminError::AlreadyAdmin);
    }
}
