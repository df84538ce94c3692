//! Account commands and sign-in. Password hashing (argon2id, on a blocking thread) and id and
//! time creation happen here; the rules of what a valid registration is live in
//! `aiforge_domain::account`.

use std::sync::Arc;

use aiforge_domain::account::{
    normalize_email, username_key, validate_password, validate_username, Account, AccountCommand,
    AccountError, AccountId, AccountServices,
};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::store::{Claim, Database};

pub const CLAIM_EMAIL: &str = "email";
pub const CLAIM_USERNAME: &str = "username";

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// One error for unknown email and wrong password, so a caller cannot probe for accounts.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many attempts for this email or from this address (`sign_in_throttle`); said alike
    /// whether or not an account has the email.
    #[error("too many sign-in attempts; try again in {retry_after_secs} s")]
    Throttled { retry_after_secs: i64 },
    #[error(transparent)]
    Store(#[from] CommandError<AccountError>),
}

pub struct Accounts {
    executor: Executor<Account>,
    clock: Arc<dyn Clock>,
    /// Verified against when the email is unknown, so both paths cost one argon2 run.
    decoy_hash: String,
}

impl Accounts {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Result<Self, CommandError<AccountError>> {
        let decoy_hash = hash_password("decoy password never used")?;
        Ok(Self {
            executor: Executor::new(db, clock.clone(), AccountServices),
            clock,
            decoy_hash,
        })
    }

    pub fn executor(&self) -> &Executor<Account> {
        &self.executor
    }

    /// Registers an account; its id is in `Outcome::aggregate_id`. Email and username are claimed
    /// atomically with the events, so two racing registrations of one email cannot both win.
    #[tracing::instrument(skip(self, password, meta), fields(command_id = %meta.command_id))]
    pub async fn register(
        &self,
        email: &str,
        username: &str,
        password: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, CommandError<AccountError>> {
        let email = normalize_email(email).map_err(CommandError::Rejected)?;
        validate_username(username).map_err(CommandError::Rejected)?;
        validate_password(password).map_err(CommandError::Rejected)?;
        let password = password.to_string();
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| CommandError::Internal(e.to_string()))??;
        let user_id = uuid::Uuid::now_v7().to_string();
        let claims = [
            Claim {
                namespace: CLAIM_EMAIL.into(),
                key: email.clone(),
            },
            Claim {
                namespace: CLAIM_USERNAME.into(),
                key: username_key(username),
            },
        ];
        let command = AccountCommand::Register {
            email,
            username: username.to_string(),
            password_hash,
            at: self.clock.now(),
        };
        self.executor
            .execute(
                &user_id,
                (AccountId(user_id.clone()), command),
                meta,
                &claims,
            )
            .await
    }

    /// An admin (`by`: the whitelisted wallet the admin signed in with) deactivates an account:
    /// its sessions, keys and node tokens are refused from then on, on every instance; its data
    /// stays. The whitelist was checked by the caller.
    #[tracing::instrument(skip(self, reason, meta), fields(command_id = %meta.command_id))]
    pub async fn deactivate(
        &self,
        user_id: &str,
        by: &str,
        reason: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, CommandError<AccountError>> {
        let command = AccountCommand::Deactivate {
            by: by.to_string(),
            reason: reason.to_string(),
            at: self.clock.now(),
        };
        self.executor
            .execute(
                user_id,
                (AccountId(user_id.to_string()), command),
                meta,
                &[],
            )
            .await
    }

    /// Lifts a deactivation.
    #[tracing::instrument(skip(self, meta), fields(command_id = %meta.command_id))]
    pub async fn reactivate(
        &self,
        user_id: &str,
        by: &str,
        meta: &CommandMeta,
    ) -> Result<Outcome, CommandError<AccountError>> {
        let command = AccountCommand::Reactivate {
            by: by.to_string(),
            at: self.clock.now(),
        };
        self.executor
            .execute(
                user_id,
                (AccountId(user_id.to_string()), command),
                meta,
                &[],
            )
            .await
    }

    /// Checks an email and password from a client at `address` (the TCP peer, when known);
    /// returns the account id. Attempts are throttled per email and per address
    /// (`sign_in_throttle`) before the password is looked at.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(
        &self,
        email: &str,
        password: &str,
        address: Option<&str>,
    ) -> Result<String, SignInError> {
        let db = self.executor.database();
        let subjects = crate::sign_in_throttle::Subjects::new(
            &normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase()),
            address,
        );
        let now = self.clock.now().unix_timestamp();
        let allowed = crate::sign_in_throttle::attempt(db, &subjects, now)
            .await
            .map_err(CommandError::from)?;
        if let Err(throttled) = allowed {
            return Err(SignInError::Throttled {
                retry_after_secs: throttled.retry_after_secs,
            });
        }
        let user_id = self.check_password(email, password).await?;
        crate::sign_in_throttle::succeeded(db, &subjects)
            .await
            .map_err(CommandError::from)?;
        Ok(user_id)
    }

    async fn check_password(&self, email: &str, password: &str) -> Result<String, SignInError> {
        let owner = match normalize_email(email) {
            Ok(email) => self
                .executor
                .database()
                .claim_owner(CLAIM_EMAIL, &email)
                .await
                .map_err(CommandError::from)?,
            Err(_) => None,
        };
        let (user_id, stored_hash, deactivated) = match owner {
            Some(user_id) => {
                let account = self.executor.load(&user_id).await?;
                let deactivated = account.deactivated.is_some();
                (Some(user_id), account.password_hash, deactivated)
            }
            None => (None, None, false),
        };
        let hash = stored_hash
            .clone()
            .unwrap_or_else(|| self.decoy_hash.clone());
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| CommandError::<AccountError>::Internal(e.to_string()))?;
        match (user_id, stored_hash.is_some() && matches) {
            // Said only to whoever knows the password: it reveals nothing to a prober.
            (Some(_), true) if deactivated => Err(SignInError::Store(CommandError::Rejected(
                AccountError::Deactivated,
            ))),
            (Some(user_id), true) => Ok(user_id),
            _ => Err(SignInError::InvalidCredentials),
        }
    }
}

fn hash_password(password: &str) -> Result<String, CommandError<AccountError>> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| CommandError::Internal(format!("password hashing failed: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    // Bounded here too: a login must never run argon2 over an unbounded input.
    if password.chars().count() > aiforge_domain::account::PASSWORD_CHARS_MAX {
        return false;
    }
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}
