//! Sign-in with a wallet: the messages the server asks wallets to sign, and the commands that a
//! checked signature allows (sign in, create the account on first sign-in, prove a connected
//! wallet).
//!
//! The message is Sign-In with Ethereum (EIP-4361) text for Ethereum and the same fields in plain
//! text for Tron. Issuing one writes nothing: its nonce is `random || MAC(random, network,
//! address, issued-at, expiration)` under a server key, so the server later recognises exactly
//! the messages it issued, unchanged, without storing them. A nonce is consumed by the command
//! the signature authorises: it is claimed in the same transaction as that command's events, so
//! a replayed message can never sign in twice.

use std::sync::Arc;

use aiforge_domain::account::{Account, AccountCommand, AccountError, AccountId, AccountServices};
use aiforge_domain::wallet::{Network, Wallet};
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::store::{Claim, Database};
use crate::wallet_crypto::{self, WalletError};

/// A sign-in message is valid this long after it is issued (the default; a setting).
pub const SIGN_IN_MESSAGE_TTL_SECS: i64 = 300;
/// Clocks of client and server may differ by this much for "issued at".
pub const CLOCK_SKEW_SECS: i64 = 60;
pub const CLAIM_WALLET: &str = "wallet";
pub const CLAIM_NONCE: &str = "sign_in_nonce";
const NONCE_RANDOM_BYTES: usize = 16;
const NONCE_MAC_BYTES: usize = 16;
const STATEMENT: &str = "Sign in to AIForge Network.";

/// Why a sign-in message or signature was refused. `Malformed*` are the client's syntax errors
/// (422); the rest mean "not proven" (401).
#[derive(Debug, thiserror::Error)]
pub enum SignInRejected {
    #[error("malformed address: {0}")]
    MalformedAddress(WalletError),
    #[error("malformed signature: {0}")]
    MalformedSignature(WalletError),
    #[error("the signature was not made by this wallet")]
    WrongSigner,
    #[error("the message is not a sign-in message issued by this server")]
    NotIssuedHere,
    #[error("the message is for another domain")]
    WrongDomain,
    #[error("the message is for another network")]
    WrongNetwork,
    #[error("the message is for another address")]
    WrongAddress,
    #[error("the message has expired; request a new one")]
    Expired,
    #[error("the message's nonce was already used")]
    NonceUsed,
}

#[derive(Debug, thiserror::Error)]
pub enum WalletSignInError {
    #[error(transparent)]
    Rejected(#[from] SignInRejected),
    #[error(transparent)]
    Command(#[from] CommandError<AccountError>),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedMessage {
    pub message: String,
    pub nonce: String,
    pub issued_at: String,
    pub expires_at: String,
}

/// Issues and checks sign-in messages for one public domain.
#[derive(Clone)]
pub struct SignInMessages {
    key: [u8; 32],
    /// `host[:port]` the user sees; a message for another domain is refused (phishing guard).
    domain: String,
    uri: String,
    chain_id: u64,
    ttl_secs: i64,
}

struct Fields {
    issued_at: String,
    expires_at: String,
    nonce: String,
}

impl SignInMessages {
    pub fn new(key: [u8; 32], public_url: &str, chain_id: u64, ttl_secs: i64) -> Self {
        let uri = public_url.trim_end_matches('/').to_string();
        let domain = uri
            .split_once("://")
            .map_or(uri.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        Self {
            key,
            domain,
            uri,
            chain_id,
            ttl_secs,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn mac(&self, wallet: &Wallet, random: &str, issued_at: &str, expires_at: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        for part in [
            wallet.network.as_str(),
            &wallet.address,
            random,
            issued_at,
            expires_at,
            &self.domain,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hex::encode(&hasher.finalize()[..NONCE_MAC_BYTES])
    }

    fn render(&self, wallet: &Wallet, fields: &Fields) -> String {
        let chain = match wallet.network {
            Network::Ethereum => format!("Chain ID: {}\n", self.chain_id),
            Network::Tron => "Network: tron\n".to_string(),
        };
        format!(
            "{domain} wants you to sign in with your {net} account:\n{address}\n\n{STATEMENT}\n\n\
             URI: {uri}\nVersion: 1\n{chain}Nonce: {nonce}\nIssued At: {issued}\nExpiration Time: {expires}",
            domain = self.domain,
            net = wallet.network.display_name(),
            address = wallet.address,
            uri = self.uri,
            nonce = fields.nonce,
            issued = fields.issued_at,
            expires = fields.expires_at,
        )
    }

    /// A fresh message for `wallet` (its address already canonical).
    pub fn issue(&self, wallet: &Wallet, now: OffsetDateTime) -> IssuedMessage {
        let mut random = [0u8; NONCE_RANDOM_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let random = hex::encode(random);
        let format = |t: OffsetDateTime| {
            t.replace_nanosecond(0)
                .unwrap_or(t)
                .format(&Rfc3339)
                .unwrap_or_default()
        };
        let issued_at = format(now);
        let expires_at = format(now + time::Duration::seconds(self.ttl_secs));
        let nonce = format!(
            "{random}{}",
            self.mac(wallet, &random, &issued_at, &expires_at)
        );
        let fields = Fields {
            issued_at: issued_at.clone(),
            expires_at: expires_at.clone(),
            nonce: nonce.clone(),
        };
        IssuedMessage {
            message: self.render(wallet, &fields),
            nonce,
            issued_at,
            expires_at,
        }
    }

    /// Checks that `message` is one this server issued for `wallet`, unchanged and unexpired;
    /// returns its nonce.
    pub fn check(
        &self,
        wallet: &Wallet,
        message: &str,
        now: OffsetDateTime,
    ) -> Result<String, SignInRejected> {
        let mut lines = message.lines();
        let first = lines.next().unwrap_or_default();
        let Some((domain, rest)) = first.split_once(" wants you to sign in with your ") else {
            return Err(SignInRejected::NotIssuedHere);
        };
        if domain != self.domain {
            return Err(SignInRejected::WrongDomain);
        }
        if rest != format!("{} account:", wallet.network.display_name()) {
            return Err(SignInRejected::WrongNetwork);
        }
        if lines.next().unwrap_or_default() != wallet.address {
            return Err(SignInRejected::WrongAddress);
        }
        let field = |name: &str| {
            message
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
                .ok_or(SignInRejected::NotIssuedHere)
        };
        let fields = Fields {
            issued_at: field("Issued At: ")?,
            expires_at: field("Expiration Time: ")?,
            nonce: field("Nonce: ")?,
        };
        // Byte for byte what we would have issued: no added, dropped or altered line.
        if self.render(wallet, &fields) != message {
            return Err(SignInRejected::NotIssuedHere);
        }
        let split = NONCE_RANDOM_BYTES * 2;
        if fields.nonce.len() != split + NONCE_MAC_BYTES * 2
            || !fields.nonce.is_char_boundary(split)
        {
            return Err(SignInRejected::NotIssuedHere);
        }
        let (random, mac) = fields.nonce.split_at(split);
        let expected = self.mac(wallet, random, &fields.issued_at, &fields.expires_at);
        if !constant_time_eq(mac.as_bytes(), expected.as_bytes()) {
            return Err(SignInRejected::NotIssuedHere);
        }
        let parse =
            |t: &str| OffsetDateTime::parse(t, &Rfc3339).map_err(|_| SignInRejected::NotIssuedHere);
        let issued_at = parse(&fields.issued_at)?;
        let expires_at = parse(&fields.expires_at)?;
        if now >= expires_at || issued_at > now + time::Duration::seconds(CLOCK_SKEW_SECS) {
            return Err(SignInRejected::Expired);
        }
        Ok(fields.nonce)
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses and canonicalises a wallet address (422-class errors).
pub fn parse_wallet(network: Network, address: &str) -> Result<Wallet, SignInRejected> {
    let address = wallet_crypto::normalize_address(network, address)
        .map_err(SignInRejected::MalformedAddress)?;
    Ok(Wallet { network, address })
}

fn check_signature(wallet: &Wallet, message: &str, signature: &str) -> Result<(), SignInRejected> {
    wallet_crypto::verify_signature(wallet.network, &wallet.address, message, signature).map_err(
        |e| {
            if e.is_malformed_input() {
                SignInRejected::MalformedSignature(e)
            } else {
                SignInRejected::WrongSigner
            }
        },
    )
}

/// A successful wallet sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletSession {
    pub user_id: String,
    pub wallet: Wallet,
    pub created: bool,
    pub outcome: Outcome,
}

pub struct WalletAuth {
    executor: Executor<Account>,
    messages: SignInMessages,
    clock: Arc<dyn Clock>,
    db: Database,
}

impl WalletAuth {
    pub fn new(db: Database, clock: Arc<dyn Clock>, messages: SignInMessages) -> Self {
        Self {
            executor: Executor::new(db.clone(), clock.clone(), AccountServices),
            messages,
            clock,
            db,
        }
    }

    pub fn messages(&self) -> &SignInMessages {
        &self.messages
    }

    pub fn issue(&self, wallet: &Wallet) -> IssuedMessage {
        self.messages.issue(wallet, self.clock.now())
    }

    /// Checks message and signature; returns the nonce the command will consume.
    fn prove(
        &self,
        wallet: &Wallet,
        message: &str,
        signature: &str,
    ) -> Result<String, SignInRejected> {
        let nonce = self.messages.check(wallet, message, self.clock.now())?;
        check_signature(wallet, message, signature)?;
        Ok(nonce)
    }

    /// Signs in with a wallet signature; the first sign-in of a wallet creates its account.
    #[tracing::instrument(skip(self, message, signature, meta), fields(wallet = %wallet))]
    pub async fn sign_in(
        &self,
        wallet: Wallet,
        message: &str,
        signature: &str,
        meta: &CommandMeta,
    ) -> Result<WalletSession, WalletSignInError> {
        let nonce = self.prove(&wallet, message, signature)?;
        let nonce_claim = Claim {
            namespace: CLAIM_NONCE.into(),
            key: nonce.clone(),
        };
        let at = self.clock.now();
        let owner = self
            .db
            .claim_owner(CLAIM_WALLET, &wallet.key())
            .await
            .map_err(CommandError::from)?;
        let (user_id, created, result) = match owner {
            Some(user_id) => {
                let command = AccountCommand::SignInWithWallet {
                    wallet: wallet.clone(),
                    nonce,
                    at,
                };
                let result = self
                    .executor
                    .execute(
                        &user_id,
                        (AccountId(user_id.clone()), command),
                        meta,
                        &[nonce_claim],
                    )
                    .await;
                (user_id, false, result)
            }
            None => {
                let user_id = uuid::Uuid::now_v7().to_string();
                let wallet_claim = Claim {
                    namespace: CLAIM_WALLET.into(),
                    key: wallet.key(),
                };
                let command = AccountCommand::RegisterWithWallet {
                    wallet: wallet.clone(),
                    nonce,
                    at,
                };
                let result = self
                    .executor
                    .execute(
                        &user_id,
                        (AccountId(user_id.clone()), command),
                        meta,
                        &[wallet_claim, nonce_claim],
                    )
                    .await;
                (user_id, true, result)
            }
        };
        match result {
            Ok(outcome) => Ok(WalletSession {
                // A replayed idempotent request answers with the account it first signed into.
                user_id: if outcome.replayed {
                    outcome.aggregate_id.clone()
                } else {
                    user_id
                },
                wallet,
                created: created && !outcome.replayed,
                outcome,
            }),
            Err(CommandError::Taken { namespace, .. }) if namespace == CLAIM_NONCE => {
                Err(SignInRejected::NonceUsed.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An account lists a wallet; it stays unverified (and unclaimed) until proven.
    pub async fn connect(
        &self,
        user_id: &str,
        wallet: Wallet,
        meta: &CommandMeta,
    ) -> Result<Outcome, WalletSignInError> {
        let command = AccountCommand::ConnectWallet {
            wallet,
            at: self.clock.now(),
        };
        Ok(self
            .executor
            .execute(
                user_id,
                (AccountId(user_id.to_string()), command),
                meta,
                &[],
            )
            .await?)
    }

    /// Proves a connected wallet with a signature: the wallet is claimed for this account.
    pub async fn verify(
        &self,
        user_id: &str,
        wallet: Wallet,
        message: &str,
        signature: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, WalletSignInError> {
        let nonce = self.prove(&wallet, message, signature)?;
        let claims = [
            Claim {
                namespace: CLAIM_WALLET.into(),
                key: wallet.key(),
            },
            Claim {
                namespace: CLAIM_NONCE.into(),
                key: nonce.clone(),
            },
        ];
        let command = AccountCommand::VerifyWallet {
            wallet,
            nonce,
            at: self.clock.now(),
        };
        match self
            .executor
            .execute(
                user_id,
                (AccountId(user_id.to_string()), command),
                meta,
                &claims,
            )
            .await
        {
            Err(CommandError::Taken { namespace, .. }) if namespace == CLAIM_NONCE => {
                Err(SignInRejected::NonceUsed.into())
            }
            other => Ok(other?),
        }
    }

    /// Chooses one of the account's verified wallets as its payout wallet on that network.
    pub async fn choose_payout_wallet(
        &self,
        user_id: &str,
        wallet: Wallet,
        meta: &CommandMeta,
    ) -> Result<Outcome, WalletSignInError> {
        let command = AccountCommand::ChoosePayoutWallet {
            wallet,
            at: self.clock.now(),
        };
        Ok(self
            .executor
            .execute(
                user_id,
                (AccountId(user_id.to_string()), command),
                meta,
                &[],
            )
            .await?)
    }

    pub async fn account(&self, user_id: &str) -> Result<Account, CommandError<AccountError>> {
        self.executor.load(user_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn messages() -> SignInMessages {
        SignInMessages::new(
            [7u8; 32],
            "http://localhost:8080",
            1,
            SIGN_IN_MESSAGE_TTL_SECS,
        )
    }

    fn wallet() -> Wallet {
        Wallet {
            network: Network::Ethereum,
            address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
        }
    }

    const NOW: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    #[test]
    fn an_issued_message_is_eip_4361_text_and_checks_back_to_its_nonce() {
        let issued = messages().issue(&wallet(), NOW);
        assert!(issued.message.starts_with(
            "localhost:8080 wants you to sign in with your Ethereum account:\n0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\n"
        ));
        assert!(issued
            .message
            .contains("\nURI: http://localhost:8080\nVersion: 1\nChain ID: 1\nNonce: "));
        assert!(issued
            .message
            .ends_with("Expiration Time: 2026-11-21T10:05:00Z"));
        assert_eq!(
            messages().check(&wallet(), &issued.message, NOW).unwrap(),
            issued.nonce
        );
    }

    #[test]
    fn an_expired_message_is_refused() {
        let issued = messages().issue(&wallet(), NOW);
        let later = NOW + time::Duration::seconds(SIGN_IN_MESSAGE_TTL_SECS);
        assert!(matches!(
            messages().check(&wallet(), &issued.message, later),
            Err(SignInRejected::Expired)
        ));
    }

    #[test]
    fn an_altered_or_foreign_message_is_refused() {
        let issued = messages().issue(&wallet(), NOW);
        let longer = issued
            .message
            .replace("2026-11-21T10:05:00Z", "2027-11-21T10:05:00Z");
        assert!(matches!(
            messages().check(&wallet(), &longer, NOW),
            Err(SignInRejected::NotIssuedHere)
        ));
        let other_domain = SignInMessages::new(
            [7u8; 32],
            "https://evil.example",
            1,
            SIGN_IN_MESSAGE_TTL_SECS,
        );
        assert!(matches!(
            other_domain.check(&wallet(), &issued.message, NOW),
            Err(SignInRejected::WrongDomain)
        ));
        let other_key = SignInMessages::new(
            [8u8; 32],
            "http://localhost:8080",
            1,
            SIGN_IN_MESSAGE_TTL_SECS,
        );
        assert!(matches!(
            other_key.check(&wallet(), &issued.message, NOW),
            Err(SignInRejected::NotIssuedHere)
        ));
        let tron = Wallet {
            network: Network::Tron,
            address: wallet().address,
        };
        assert!(matches!(
            messages().check(&tron, &issued.message, NOW),
            Err(SignInRejected::WrongNetwork)
        ));
        let mut other_address = wallet();
        other_address.address = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359".into();
        assert!(matches!(
            messages().check(&other_address, &issued.message, NOW),
            Err(SignInRejected::WrongAddress)
        ));
        let extra = format!("{}\nResources:\n- https://evil.example", issued.message);
        assert!(matches!(
            messages().check(&wallet(), &extra, NOW),
            Err(SignInRejected::NotIssuedHere)
        ));
    }
}
