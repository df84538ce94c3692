//! The `Account` aggregate: a person's identity on the platform (email sign-up now; wallets join
//! it later). It decides whether a registration is well-formed and keeps the password hash that
//! sign-in checks. Uniqueness of email and username across accounts is not decidable inside one
//! aggregate: the application layer reserves both in the same transaction as the events
//! (see `commands::store` claims), and this aggregate only guards its own history.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::wallet::{Network, Wallet};

pub const EMAIL_BYTES_MAX: usize = 254;
pub const USERNAME_CHARS_MIN: usize = 3;
pub const USERNAME_CHARS_MAX: usize = 32;
pub const PASSWORD_CHARS_MIN: usize = 8;
/// argon2 work grows with input; a cap keeps a login from being a CPU denial of service.
pub const PASSWORD_CHARS_MAX: usize = 128;
/// Wallets one account may link; more is abuse, not use.
pub const WALLETS_PER_ACCOUNT_MAX: usize = 20;
/// A deactivation's reason is read by people; a paragraph is enough.
pub const DEACTIVATION_REASON_CHARS_MAX: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("email is not a valid address")]
    InvalidEmail,
    #[error("username must be {USERNAME_CHARS_MIN}-{USERNAME_CHARS_MAX} characters of letters, digits, '_' or '-'")]
    InvalidUsername,
    #[error("password must be {PASSWORD_CHARS_MIN}-{PASSWORD_CHARS_MAX} characters")]
    InvalidPassword,
    #[error("this account is already registered")]
    AlreadyRegistered,
    #[error("no such account")]
    NotRegistered,
    #[error("this wallet is already linked to the account")]
    WalletAlreadyLinked,
    #[error("this wallet is not linked to the account")]
    WalletNotLinked,
    #[error("this wallet is already verified")]
    WalletAlreadyVerified,
    #[error("an account links at most {WALLETS_PER_ACCOUNT_MAX} wallets")]
    TooManyWallets,
    #[error("this account is deactivated")]
    Deactivated,
    #[error("this account is already deactivated")]
    AlreadyDeactivated,
    #[error("this account is not deactivated")]
    NotDeactivated,
    #[error("a deactivation needs a reason of 1-{DEACTIVATION_REASON_CHARS_MAX} characters")]
    InvalidReason,
    #[error("only a verified wallet receives payouts: verify this wallet first")]
    WalletNotVerified,
}

impl AccountError {
    /// The request field a validation error is about, for a 422 that names it.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            AccountError::InvalidEmail => Some("email"),
            AccountError::InvalidUsername => Some("username"),
            AccountError::InvalidPassword => Some("password"),
            AccountError::InvalidReason => Some("reason"),
            AccountError::Deactivated
            | AccountError::AlreadyDeactivated
            | AccountError::NotDeactivated => None,
            AccountError::AlreadyRegistered
            | AccountError::NotRegistered
            | AccountError::WalletAlreadyLinked
            | AccountError::WalletNotLinked
            | AccountError::WalletAlreadyVerified
            | AccountError::TooManyWallets
            | AccountError::WalletNotVerified => None,
        }
    }
}

/// Emails are compared case-insensitively and without surrounding space.
pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_ascii_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err(AccountError::InvalidEmail);
    };
    let valid = email.len() <= EMAIL_BYTES_MAX
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@');
    if valid {
        Ok(email)
    } else {
        Err(AccountError::InvalidEmail)
    }
}

pub fn validate_username(username: &str) -> Result<(), AccountError> {
    let count = username.chars().count();
    let charset_ok = username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if (USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&count) && charset_ok {
        Ok(())
    } else {
        Err(AccountError::InvalidUsername)
    }
}

/// Usernames are unique case-insensitively ("Alice" and "alice" are one name).
pub fn username_key(username: &str) -> String {
    username.to_ascii_lowercase()
}

pub fn validate_password(password: &str) -> Result<(), AccountError> {
    let count = password.chars().count();
    if (PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&count) {
        Ok(())
    } else {
        Err(AccountError::InvalidPassword)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountCommand {
    /// `password_hash` is an argon2id PHC string made by the application layer; `at` comes from
    /// its clock.
    Register {
        email: String,
        username: String,
        password_hash: String,
        at: OffsetDateTime,
    },
    /// First wallet sign-in of a wallet no account holds: the wallet becomes an account. The
    /// signature and the sign-in message were checked by the application layer; `nonce` is the
    /// message's single-use nonce, consumed by this command.
    RegisterWithWallet {
        wallet: Wallet,
        nonce: String,
        at: OffsetDateTime,
    },
    /// A checked wallet signature signs in to the account that holds the wallet.
    SignInWithWallet {
        wallet: Wallet,
        nonce: String,
        at: OffsetDateTime,
    },
    /// An account lists a wallet it says it owns; unproven until `VerifyWallet`.
    ConnectWallet {
        wallet: Wallet,
        at: OffsetDateTime,
    },
    /// A checked signature proves the account owns a connected wallet.
    VerifyWallet {
        wallet: Wallet,
        nonce: String,
        at: OffsetDateTime,
    },
    /// An admin (the application layer checked the whitelist; `by` is the admin's wallet key)
    /// stops the account: its sessions, API keys and node tokens are refused from the next request.
    /// Its data stays.
    Deactivate {
        by: String,
        reason: String,
        at: OffsetDateTime,
    },
    Reactivate {
        by: String,
        at: OffsetDateTime,
    },
    /// Payouts on the wallet's network go to this verified wallet from now on.
    ChoosePayoutWallet {
        wallet: Wallet,
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    UserRegistered {
        user_id: String,
        email: String,
        username: String,
        #[serde(with = "time::serde::rfc3339")]
        registered_at: OffsetDateTime,
    },
    /// Kept apart from `UserRegistered` so that exports and the event bus can withhold exactly
    /// this event's payload: a password hash is a secret even at rest.
    PasswordSet {
        password_hash: String,
        #[serde(with = "time::serde::rfc3339")]
        set_at: OffsetDateTime,
    },
    /// An account created by a wallet's first sign-in (no email, no password).
    WalletUserRegistered {
        user_id: String,
        wallet: Wallet,
        #[serde(with = "time::serde::rfc3339")]
        registered_at: OffsetDateTime,
    },
    WalletConnected {
        wallet: Wallet,
        /// True when the connection itself was proven by a signature (wallet registration).
        verified: bool,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    WalletVerified {
        wallet: Wallet,
        nonce: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    SignedInWithWallet {
        wallet: Wallet,
        nonce: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    UserDeactivated {
        user_id: String,
        by: String,
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    UserReactivated {
        user_id: String,
        by: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The account's payouts on `wallet.network` go to `wallet` (verified when chosen).
    PayoutWalletChosen {
        wallet: Wallet,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// Event types whose payload must not leave the store (exports and the bus redact them).
pub const SECRET_EVENT_TYPES: &[&str] = &["PasswordSet"];

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::UserRegistered { .. } => "UserRegistered".to_string(),
            AccountEvent::PasswordSet { .. } => "PasswordSet".to_string(),
            AccountEvent::WalletUserRegistered { .. } => "WalletUserRegistered".to_string(),
            AccountEvent::WalletConnected { .. } => "WalletConnected".to_string(),
            AccountEvent::WalletVerified { .. } => "WalletVerified".to_string(),
            AccountEvent::SignedInWithWallet { .. } => "SignedInWithWallet".to_string(),
            AccountEvent::UserDeactivated { .. } => "UserDeactivated".to_string(),
            AccountEvent::UserReactivated { .. } => "UserReactivated".to_string(),
            AccountEvent::PayoutWalletChosen { .. } => "PayoutWalletChosen".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Account {
    pub user_id: Option<String>,
    pub email: String,
    pub username: String,
    pub password_hash: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub registered_at: Option<OffsetDateTime>,
    /// Linked wallets by `network:address`, with whether ownership is proven.
    #[serde(default)]
    pub wallets: BTreeMap<String, LinkedWallet>,
    /// Set while an admin has the account deactivated.
    #[serde(default)]
    pub deactivated: Option<Deactivation>,
    /// The chosen payout wallet of each network.
    #[serde(default)]
    pub payout_wallets: BTreeMap<Network, Wallet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deactivation {
    pub by: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedWallet {
    pub wallet: Wallet,
    pub verified: bool,
}

impl Account {
    pub fn is_registered(&self) -> bool {
        self.user_id.is_some()
    }

    /// Registered and not deactivated: what every session, key and node token of the account
    /// needs.
    pub fn is_active(&self) -> bool {
        self.is_registered() && self.deactivated.is_none()
    }

    /// Where this account's payouts on `network` go: the payout wallet it chose (verified when
    /// chosen). None until it chooses one: a payout never guesses between wallets.
    pub fn payout_wallet(&self, network: Network) -> Option<Wallet> {
        self.payout_wallets.get(&network).cloned()
    }
}

/// The aggregate id is the account's UUIDv7, made by the application layer; it travels in the
/// command so the first event can carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountId(pub String);

pub struct AccountServices;

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = (AccountId, AccountCommand);
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = AccountServices;

    async fn handle(
        &mut self,
        (id, command): Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            AccountCommand::Register {
                email,
                username,
                password_hash,
                at,
            } => {
                if self.is_registered() {
                    return Err(AccountError::AlreadyRegistered);
                }
                let email = normalize_email(&email)?;
                validate_username(&username)?;
                sink.write(
                    AccountEvent::UserRegistered {
                        user_id: id.0,
                        email,
                        username,
                        registered_at: at,
                    },
                    self,
                )
                .await;
                sink.write(
                    AccountEvent::PasswordSet {
                        password_hash,
                        set_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            AccountCommand::RegisterWithWallet { wallet, nonce, at } => {
                if self.is_registered() {
                    return Err(AccountError::AlreadyRegistered);
                }
                sink.write(
                    AccountEvent::WalletUserRegistered {
                        user_id: id.0,
                        wallet: wallet.clone(),
                        registered_at: at,
                    },
                    self,
                )
                .await;
                sink.write(
                    AccountEvent::WalletConnected {
                        wallet: wallet.clone(),
                        verified: true,
                        at,
                    },
                    self,
                )
                .await;
                sink.write(AccountEvent::SignedInWithWallet { wallet, nonce, at }, self)
                    .await;
                Ok(())
            }
            AccountCommand::SignInWithWallet { wallet, nonce, at } => {
                if !self.is_registered() {
                    return Err(AccountError::NotRegistered);
                }
                if self.deactivated.is_some() {
                    return Err(AccountError::Deactivated);
                }
                // Only a proven wallet signs in (the application layer finds the account through
                // the wallet's claim, which exists only once ownership was proven).
                match self.wallets.get(&wallet.key()) {
                    Some(linked) if linked.verified => {}
                    _ => return Err(AccountError::WalletNotLinked),
                }
                sink.write(AccountEvent::SignedInWithWallet { wallet, nonce, at }, self)
                    .await;
                Ok(())
            }
            AccountCommand::ConnectWallet { wallet, at } => {
                if !self.is_registered() {
                    return Err(AccountError::NotRegistered);
                }
                if self.wallets.contains_key(&wallet.key()) {
                    return Err(AccountError::WalletAlreadyLinked);
                }
                if self.wallets.len() >= WALLETS_PER_ACCOUNT_MAX {
                    return Err(AccountError::TooManyWallets);
                }
                sink.write(
                    AccountEvent::WalletConnected {
                        wallet,
                        verified: false,
                        at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            AccountCommand::VerifyWallet { wallet, nonce, at } => {
                if !self.is_registered() {
                    return Err(AccountError::NotRegistered);
                }
                match self.wallets.get(&wallet.key()) {
                    None => Err(AccountError::WalletNotLinked),
                    Some(linked) if linked.verified => Err(AccountError::WalletAlreadyVerified),
                    Some(_) => {
                        sink.write(AccountEvent::WalletVerified { wallet, nonce, at }, self)
                            .await;
                        Ok(())
                    }
                }
            }
            AccountCommand::Deactivate { by, reason, at } => {
                let user_id = self.user_id.clone().ok_or(AccountError::NotRegistered)?;
                if self.deactivated.is_some() {
                    return Err(AccountError::AlreadyDeactivated);
                }
                let reason = crate::trimmed_within(&reason, 1..=DEACTIVATION_REASON_CHARS_MAX)
                    .ok_or(AccountError::InvalidReason)?;
                sink.write(
                    AccountEvent::UserDeactivated {
                        user_id,
                        by,
                        reason,
                        at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
            AccountCommand::Reactivate { by, at } => {
                let user_id = self.user_id.clone().ok_or(AccountError::NotRegistered)?;
                if self.deactivated.is_none() {
                    return Err(AccountError::NotDeactivated);
                }
                sink.write(AccountEvent::UserReactivated { user_id, by, at }, self)
                    .await;
                Ok(())
            }
            AccountCommand::ChoosePayoutWallet { wallet, at } => {
                if !self.is_registered() {
                    return Err(AccountError::NotRegistered);
                }
                match self.wallets.get(&wallet.key()) {
                    None => Err(AccountError::WalletNotLinked),
                    Some(linked) if !linked.verified => Err(AccountError::WalletNotVerified),
                    // Choosing the wallet already chosen records nothing.
                    Some(_) if self.payout_wallets.get(&wallet.network) == Some(&wallet) => Ok(()),
                    Some(_) => {
                        sink.write(AccountEvent::PayoutWalletChosen { wallet, at }, self)
                            .await;
                        Ok(())
                    }
                }
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AccountEvent::UserRegistered {
                user_id,
                email,
                username,
                registered_at,
            } => {
                self.user_id = Some(user_id);
                self.email = email;
                self.username = username;
                self.registered_at = Some(registered_at);
            }
            AccountEvent::PasswordSet { password_hash, .. } => {
                self.password_hash = Some(password_hash);
            }
            AccountEvent::WalletUserRegistered {
                user_id,
                registered_at,
                ..
            } => {
                self.user_id = Some(user_id);
                self.registered_at = Some(registered_at);
            }
            AccountEvent::WalletConnected {
                wallet, verified, ..
            } => {
                self.wallets
                    .insert(wallet.key(), LinkedWallet { wallet, verified });
            }
            AccountEvent::WalletVerified { wallet, .. } => {
                if let Some(linked) = self.wallets.get_mut(&wallet.key()) {
                    linked.verified = true;
                }
            }
            AccountEvent::SignedInWithWallet { .. } => {}
            AccountEvent::UserDeactivated { by, reason, at, .. } => {
                self.deactivated = Some(Deactivation { by, reason, at });
            }
            AccountEvent::UserReactivated { .. } => self.deactivated = None,
            AccountEvent::PayoutWalletChosen { wallet, .. } => {
                self.payout_wallets.insert(wallet.network, wallet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type AccountTest = TestFramework<Account>;

    fn register(email: &str, username: &str) -> (AccountId, AccountCommand) {
        (
            AccountId("u1".into()),
            AccountCommand::Register {
                email: email.into(),
                username: username.into(),
                password_hash: "$argon2id$stub".into(),
                at: datetime!(2026-11-21 10:00 UTC),
            },
        )
    }

    fn registered_events() -> Vec<AccountEvent> {
        vec![
            AccountEvent::UserRegistered {
                user_id: "u1".into(),
                email: "alice@example.com".into(),
                username: "alice".into(),
                registered_at: datetime!(2026-11-21 10:00 UTC),
            },
            AccountEvent::PasswordSet {
                password_hash: "$argon2id$stub".into(),
                set_at: datetime!(2026-11-21 10:00 UTC),
            },
        ]
    }

    #[test]
    fn registering_records_the_normalized_email_and_the_password_hash() {
        AccountTest::with(AccountServices)
            .given_no_previous_events()
            .when(register("  Alice@Example.COM ", "alice"))
            .then_expect_events(registered_events());
    }

    #[test]
    fn registering_twice_is_rejected() {
        AccountTest::with(AccountServices)
            .given(registered_events())
            .when(register("alice@example.com", "alice"))
            .then_expect_error(AccountError::AlreadyRegistered);
    }

    #[test]
    fn a_malformed_email_is_rejected_and_names_the_field() {
        for bad in [
            "",
            "no-at-sign",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@.com",
        ] {
            AccountTest::with(AccountServices)
                .given_no_previous_events()
                .when(register(bad, "alice"))
                .then_expect_error(AccountError::InvalidEmail);
        }
        assert_eq!(AccountError::InvalidEmail.field(), Some("email"));
    }

    #[test]
    fn a_malformed_username_is_rejected() {
        for bad in ["ab", "has space", "emoji🙂", &"x".repeat(33)] {
            AccountTest::with(AccountServices)
                .given_no_previous_events()
                .when(register("alice@example.com", bad))
                .then_expect_error(AccountError::InvalidUsername);
        }
    }

    #[test]
    fn passwords_outside_the_length_bounds_are_rejected() {
        assert_eq!(
            validate_password("short"),
            Err(AccountError::InvalidPassword)
        );
        assert_eq!(
            validate_password(&"p".repeat(129)),
            Err(AccountError::InvalidPassword)
        );
        assert_eq!(validate_password("long enough"), Ok(()));
    }

    fn deactivated_event() -> AccountEvent {
        AccountEvent::UserDeactivated {
            user_id: "u1".into(),
            by: "ethereum:0xadmin".into(),
            reason: "fraudulent payments".into(),
            at: datetime!(2026-11-22 10:00 UTC),
        }
    }

    #[test]
    fn an_admin_deactivates_an_account_with_a_trimmed_reason() {
        AccountTest::with(AccountServices)
            .given(registered_events())
            .when((
                AccountId("u1".into()),
                AccountCommand::Deactivate {
                    by: "ethereum:0xadmin".into(),
                    reason: "  fraudulent payments ".into(),
                    at: datetime!(2026-11-22 10:00 UTC),
                },
            ))
            .then_expect_events(vec![deactivated_event()]);
    }

    #[test]
    fn a_deactivation_without_a_reason_or_twice_is_refused() {
        for reason in ["", "   ", &"r".repeat(501)] {
            AccountTest::with(AccountServices)
                .given(registered_events())
                .when((
                    AccountId("u1".into()),
                    AccountCommand::Deactivate {
                        by: "ethereum:0xadmin".into(),
                        reason: reason.to_string(),
                        at: datetime!(2026-11-22 10:00 UTC),
                    },
                ))
                .then_expect_error(AccountError::InvalidReason);
        }
        let mut given = registered_events();
        given.push(deactivated_event());
        AccountTest::with(AccountServices)
            .given(given)
            .when((
                AccountId("u1".into()),
                AccountCommand::Deactivate {
                    by: "ethereum:0xadmin".into(),
                    reason: "again".into(),
                    at: datetime!(2026-11-22 11:00 UTC),
                },
            ))
            .then_expect_error(AccountError::AlreadyDeactivated);
    }

    #[test]
    fn a_deactivated_account_cannot_sign_in_with_its_wallet_until_reactivated() {
        let wallet = Wallet {
            network: crate::wallet::Network::Ethereum,
            address: "0x52908400098527886E0F7030069857D2E4169EE7".into(),
        };
        let mut given = vec![
            AccountEvent::WalletUserRegistered {
                user_id: "u1".into(),
                wallet: wallet.clone(),
                registered_at: datetime!(2026-11-21 10:00 UTC),
            },
            AccountEvent::WalletConnected {
                wallet: wallet.clone(),
                verified: true,
                at: datetime!(2026-11-21 10:00 UTC),
            },
            deactivated_event(),
        ];
        let sign_in = |nonce: &str| {
            (
                AccountId("u1".into()),
                AccountCommand::SignInWithWallet {
                    wallet: wallet.clone(),
                    nonce: nonce.into(),
                    at: datetime!(2026-11-23 10:00 UTC),
                },
            )
        };
        AccountTest::with(AccountServices)
            .given(given.clone())
            .when(sign_in("n1"))
            .then_expect_error(AccountError::Deactivated);
        given.push(AccountEvent::UserReactivated {
            user_id: "u1".into(),
            by: "ethereum:0xadmin".into(),
            at: datetime!(2026-11-23 09:00 UTC),
        });
        AccountTest::with(AccountServices)
            .given(given)
            .when(sign_in("n2"))
            .then_expect_events(vec![AccountEvent::SignedInWithWallet {
                wallet: wallet.clone(),
                nonce: "n2".into(),
                at: datetime!(2026-11-23 10:00 UTC),
            }]);
    }

    #[test]
    fn reactivating_an_active_account_is_refused() {
        AccountTest::with(AccountServices)
            .given(registered_events())
            .when((
                AccountId("u1".into()),
                AccountCommand::Reactivate {
                    by: "ethereum:0xadmin".into(),
                    at: datetime!(2026-11-22 10:00 UTC),
                },
            ))
            .then_expect_error(AccountError::NotDeactivated);
    }

    #[test]
    fn only_a_verified_wallet_becomes_the_payout_wallet_of_its_network() {
        let at = datetime!(2026-11-22 10:00 UTC);
        let wallet = |address: &str| Wallet {
            network: Network::Ethereum,
            address: address.into(),
        };
        let mut given = registered_events();
        given.push(AccountEvent::WalletConnected {
            wallet: wallet("0xA"),
            verified: false,
            at,
        });
        let choose = |w: Wallet| {
            (
                AccountId("u1".into()),
                AccountCommand::ChoosePayoutWallet { wallet: w, at },
            )
        };
        AccountTest::with(AccountServices)
            .given(given.clone())
            .when(choose(wallet("0xA")))
            .then_expect_error(AccountError::WalletNotVerified);
        AccountTest::with(AccountServices)
            .given(given.clone())
            .when(choose(wallet("0xB")))
            .then_expect_error(AccountError::WalletNotLinked);
        given.push(AccountEvent::WalletVerified {
            wallet: wallet("0xA"),
            nonce: "n".into(),
            at,
        });
        AccountTest::with(AccountServices)
            .given(given.clone())
            .when(choose(wallet("0xA")))
            .then_expect_events(vec![AccountEvent::PayoutWalletChosen {
                wallet: wallet("0xA"),
                at,
            }]);
        given.push(AccountEvent::PayoutWalletChosen {
            wallet: wallet("0xA"),
            at,
        });
        AccountTest::with(AccountServices)
            .given(given)
            .when(choose(wallet("0xA")))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_payout_wallet_is_only_ever_the_chosen_one() {
        let at = datetime!(2026-11-22 10:00 UTC);
        let wallet = |address: &str| Wallet {
            network: Network::Ethereum,
            address: address.into(),
        };
        let mut account = Account::default();
        for event in registered_events() {
            account.apply(event);
        }
        account.apply(AccountEvent::WalletConnected {
            wallet: wallet("0xA"),
            verified: true,
            at,
        });
        assert_eq!(
            account.payout_wallet(Network::Ethereum),
            None,
            "never guessed"
        );
        account.apply(AccountEvent::PayoutWalletChosen {
            wallet: wallet("0xA"),
            at,
        });
        assert_eq!(
            account.payout_wallet(Network::Ethereum),
            Some(wallet("0xA"))
        );
        assert_eq!(account.payout_wallet(Network::Tron), None);
    }
}
