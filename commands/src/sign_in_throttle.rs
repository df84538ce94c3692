//! Password sign-in throttling, per account and per client address, in the database
//! (`sign_in_attempts`), so every instance counts the same attempts.
//!
//! Rules:
//! - An attempt is counted before its password is checked (one row update, atomic), so a burst
//!   of parallel guesses cannot slip past the limit; a success takes its own attempt back and
//!   clears the account's count.
//! - Per account: `ACCOUNT_ATTEMPTS_MAX` failures in a `WINDOW_SECS` window, then every attempt
//!   is refused (without checking the password) until the window ends. The account is named by
//!   the SHA-256 of its normalized email, whether or not an account has that email, so the
//!   throttle says nothing about which emails exist (the refusal is the same either way).
//! - Per address: `ADDRESS_ATTEMPTS_MAX` failures in a window, for one client trying many
//!   accounts. The address is the TCP peer's; behind a reverse proxy every client shares the
//!   proxy's address, so the per-address limit then bounds the proxy as a whole (README).

use sha2::{Digest, Sha256};

use crate::store::{Database, StoreError};

/// The window over which failures count, in seconds.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Failed sign-ins of one account (email) in a window.
pub const ACCOUNT_ATTEMPTS_MAX: i64 = 5;
/// Failed sign-ins from one client address in a window.
pub const ADDRESS_ATTEMPTS_MAX: i64 = 50;

/// Where a refused attempt may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: i64,
}

/// The subjects of one sign-in: its account, and its client's address when known.
pub struct Subjects {
    account: String,
    address: Option<String>,
}

impl Subjects {
    pub fn new(normalized_email: &str, address: Option<&str>) -> Self {
        Self {
            account: format!(
                "email:{}",
                hex::encode(Sha256::digest(normalized_email.as_bytes()))
            ),
            address: address.map(|a| format!("address:{a}")),
        }
    }

    fn each(&self) -> impl Iterator<Item = (&str, i64)> {
        std::iter::once((self.account.as_str(), ACCOUNT_ATTEMPTS_MAX)).chain(
            self.address
                .as_deref()
                .map(|address| (address, ADDRESS_ATTEMPTS_MAX)),
        )
    }
}

/// Whether an attempt that is the `attempts`-th of a window that started at `window_start` may
/// go on at `now`, with its limit `max`: the pure rule.
pub fn decide(window_start: i64, attempts: i64, max: i64, now: i64) -> Result<(), Throttled> {
    if attempts <= max {
        return Ok(());
    }
    Err(Throttled {
        retry_after_secs: (window_start + WINDOW_SECS - now).max(1),
    })
}

/// Counts one attempt of each subject at `now` (unix seconds of the app clock) and says whether
/// it may go on.
pub async fn attempt(
    db: &Database,
    subjects: &Subjects,
    now: i64,
) -> Result<Result<(), Throttled>, StoreError> {
    let mut verdict = Ok(());
    for (subject, max) in subjects.each() {
        let (window_start, attempts): (i64, i64) = crate::on_engine!(db, |pool| {
            sqlx::query_as(
            "INSERT INTO sign_in_attempts (subject, window_start, attempts) VALUES ($1, $2, 1) \
             ON CONFLICT (subject) DO UPDATE SET \
             attempts = CASE WHEN sign_in_attempts.window_start + $3 <= $2 THEN 1 \
                        ELSE sign_in_attempts.attempts + 1 END, \
             window_start = CASE WHEN sign_in_attempts.window_start + $3 <= $2 THEN $2 \
                        ELSE sign_in_attempts.window_start END \
             RETURNING window_start, attempts"
        )
        .bind(subject)
        .bind(now)
        .bind(WINDOW_SECS)
        .fetch_one(pool)
        .await?
        });
        if let Err(throttled) = decide(window_start, attempts, max, now) {
            // The longest wait of the subjects refused.
            verdict = match verdict {
                Err(Throttled { retry_after_secs })
                    if retry_after_secs >= throttled.retry_after_secs =>
                {
                    verdict
                }
                _ => Err(throttled),
            };
        }
    }
    Ok(verdict)
}

/// A successful sign-in: the account's count is cleared, and the address's attempt given back
/// (the address counts failures only).
pub async fn succeeded(db: &Database, subjects: &Subjects) -> Result<(), StoreError> {
    crate::on_engine!(db, |pool| sqlx::query(
        "DELETE FROM sign_in_attempts WHERE subject = $1"
    )
    .bind(&subjects.account)
    .execute(pool)
    .await
    .map(|_| ())?);
    if let Some(address) = &subjects.address {
        crate::on_engine!(db, |pool| sqlx::query(
            "UPDATE sign_in_attempts SET attempts = attempts - 1 \
             WHERE subject = $1 AND attempts > 0"
        )
        .bind(address)
        .execute(pool)
        .await
        .map(|_| ())?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_past_the_limit_waits_for_the_window_to_end() {
        assert_eq!(
            decide(1000, ACCOUNT_ATTEMPTS_MAX, ACCOUNT_ATTEMPTS_MAX, 1010),
            Ok(())
        );
        assert_eq!(
            decide(1000, ACCOUNT_ATTEMPTS_MAX + 1, ACCOUNT_ATTEMPTS_MAX, 1010),
            Err(Throttled {
                retry_after_secs: WINDOW_SECS - 10
            })
        );
    }

    #[test]
    fn an_email_is_named_by_its_digest_whether_or_not_it_exists() {
        let subjects = Subjects::new("ada@example.com", Some("127.0.0.1"));
        let names: Vec<_> = subjects.each().map(|(s, _)| s.to_string()).collect();
        assert!(names[0].starts_with("email:") && !names[0].contains("ada"));
        assert_eq!(names[1], "address:127.0.0.1");
    }

    #[tokio::test]
    async fn attempts_are_counted_in_the_database_and_a_success_clears_the_account() {
        let db = crate::testing::TestDatabase::sqlite().await.unwrap();
        let subjects = Subjects::new("ada@example.com", Some("10.0.0.1"));
        for _ in 0..ACCOUNT_ATTEMPTS_MAX {
            assert_eq!(attempt(&db.db, &subjects, 100).await.unwrap(), Ok(()));
        }
        let refused = attempt(&db.db, &subjects, 160).await.unwrap();
        assert_eq!(
            refused,
            Err(Throttled {
                retry_after_secs: WINDOW_SECS - 60
            })
        );
        // The window ends: attempts count from one again.
        assert_eq!(
            attempt(&db.db, &subjects, 100 + WINDOW_SECS).await.unwrap(),
            Ok(())
        );
        succeeded(&db.db, &subjects).await.unwrap();
        assert_eq!(
            attempt(&db.db, &subjects, 100 + WINDOW_SECS).await.unwrap(),
            Ok(())
        );
    }
}
