//! The platform API key's commands (the rule is `aiforge_domain::platform_key`): a new key of 256
//! random bits, shown once; the store keeps its SHA-256 and last 4 characters. The gateway's key
//! index follows the log, so a replaced key is refused on every instance as soon as each has
//! read the event (the handler that issued it waits for its own).

use std::sync::Arc;

use aiforge_domain::platform_key::{
    PlatformKey, PlatformKeyCommand, PlatformKeyError, PlatformKeyServices,
};

use crate::clock::Clock;
use crate::framework::{CommandError, CommandMeta, Executor, Outcome};
use crate::marketplace::new_key;
use crate::store::Database;

pub struct PlatformKeys {
    keys: Executor<PlatformKey>,
    clock: Arc<dyn Clock>,
}

/// A key just issued: its text (shown this once) and what the store keeps.
pub struct Issued {
    pub outcome: Outcome,
    pub plaintext: String,
    pub key: PlatformKey,
}

impl PlatformKeys {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys: Executor::new(db, clock.clone(), PlatformKeyServices),
            clock,
        }
    }

    /// The user's key as the store holds it (never the text).
    pub async fn current(
        &self,
        user_id: &str,
    ) -> Result<PlatformKey, CommandError<PlatformKeyError>> {
        self.keys.load(user_id).await
    }

    /// A new key for `user_id`; the one it replaces stops working. A retried request (same
    /// idempotency key) cannot show the first answer's key again (only its digest was kept), so
    /// it issues another one: the key the client holds is the one that works.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn issue(
        &self,
        user_id: &str,
        meta: &CommandMeta,
    ) -> Result<Issued, CommandError<PlatformKeyError>> {
        let mut meta = meta.clone();
        for _ in 0..2 {
            let key = new_key();
            let command = PlatformKeyCommand::Issue {
                user_id: user_id.to_string(),
                key: key.digest,
                at: self.clock.now(),
            };
            let outcome = self.keys.execute(user_id, command, &meta, &[]).await?;
            if !outcome.replayed {
                return Ok(Issued {
                    outcome,
                    plaintext: key.plaintext,
                    key: self.keys.load(user_id).await?,
                });
            }
            meta = CommandMeta::generated(meta.actor.clone());
        }
        Err(CommandError::Internal(
            "a generated command id was replayed".into(),
        ))
    }
}
