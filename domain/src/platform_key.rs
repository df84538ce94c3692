//! The platform API key: one per user (aggregate id = the user id), for the OpenAI-compatible
//! API under the user's platform plan (any model included in plans), beside the per-service keys
//! of API subscriptions. Shown once when issued; only its SHA-256 and last 4 characters are
//! kept. Issuing again replaces it: the event names the revoked digest, so every instance's key
//! index drops the old key as it reads the event.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::api_subscription::KeyDigest;

pub const PLATFORM_KEY_AGGREGATE: &str = "platform_api_key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlatformKeyCommand {
    /// A new key for `user_id` (the first, or a replacement).
    Issue {
        user_id: String,
        key: KeyDigest,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlatformKeyEvent {
    PlatformKeyIssued {
        user_id: String,
        key: KeyDigest,
        /// The key this one replaces, refused from now on.
        revoked: Option<KeyDigest>,
        #[serde(with = "time::serde::rfc3339")]
        issued_at: OffsetDateTime,
    },
}

impl DomainEvent for PlatformKeyEvent {
    fn event_type(&self) -> String {
        match self {
            PlatformKeyEvent::PlatformKeyIssued { .. } => "PlatformKeyIssued".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformKeyError {
    #[error("this key belongs to another user")]
    NotOwner,
    #[error("the new key must differ from the current one")]
    SameKey,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PlatformKey {
    pub user_id: Option<String>,
    pub key: Option<KeyDigest>,
    pub issued_at: Option<OffsetDateTime>,
}

pub struct PlatformKeyServices;

impl Aggregate for PlatformKey {
    const TYPE: &'static str = PLATFORM_KEY_AGGREGATE;
    type Command = PlatformKeyCommand;
    type Event = PlatformKeyEvent;
    type Error = PlatformKeyError;
    type Services = PlatformKeyServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            PlatformKeyCommand::Issue { user_id, key, at } => {
                if self.user_id.as_ref().is_some_and(|owner| *owner != user_id) {
                    return Err(PlatformKeyError::NotOwner);
                }
                if self.key.as_ref().is_some_and(|k| k.sha256 == key.sha256) {
                    return Err(PlatformKeyError::SameKey);
                }
                sink.write(
                    PlatformKeyEvent::PlatformKeyIssued {
                        user_id,
                        key,
                        revoked: self.key.clone(),
                        issued_at: at,
                    },
                    self,
                )
                .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PlatformKeyEvent::PlatformKeyIssued {
                user_id,
                key,
                issued_at,
                ..
            } => {
                self.user_id = Some(user_id);
                self.key = Some(key);
                self.issued_at = Some(issued_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    const AT: OffsetDateTime = datetime!(2026-12-01 10:00 UTC);

    fn digest(n: u8) -> KeyDigest {
        KeyDigest {
            sha256: format!("{n:02x}").repeat(32),
            hint: format!("k{n:03}"),
        }
    }

    fn issued(n: u8, revoked: Option<u8>) -> PlatformKeyEvent {
        PlatformKeyEvent::PlatformKeyIssued {
            user_id: "u1".into(),
            key: digest(n),
            revoked: revoked.map(digest),
            issued_at: AT,
        }
    }

    fn issue(user: &str, n: u8) -> PlatformKeyCommand {
        PlatformKeyCommand::Issue {
            user_id: user.into(),
            key: digest(n),
            at: AT,
        }
    }

    #[test]
    fn the_first_key_revokes_nothing_and_a_new_one_revokes_the_old() {
        TestFramework::<PlatformKey>::with(PlatformKeyServices)
            .given_no_previous_events()
            .when(issue("u1", 1))
            .then_expect_events(vec![issued(1, None)]);
        TestFramework::<PlatformKey>::with(PlatformKeyServices)
            .given(vec![issued(1, None)])
            .when(issue("u1", 2))
            .then_expect_events(vec![issued(2, Some(1))]);
    }

    #[test]
    fn another_user_cannot_replace_a_key_and_the_same_digest_is_refused() {
        TestFramework::<PlatformKey>::with(PlatformKeyServices)
            .given(vec![issued(1, None)])
            .when(issue("u2", 2))
            .then_expect_error(PlatformKeyError::NotOwner);
        TestFramework::<PlatformKey>::with(PlatformKeyServices)
            .given(vec![issued(1, None)])
            .when(issue("u1", 1))
            .then_expect_error(PlatformKeyError::SameKey);
    }
}
