//! The web chat's conversations, stored per user in plain tables (`conversations`,
//! `conversation_messages`; migration 0013), never in the event log: chat text is user content,
//! the log is immutable and exported, and deleting a conversation must really delete it.
//! Metering events carry a call's tokens, never its text.
//!
//! Every read and write names the owner, so another user's conversation is not found (the API
//! answers 404, never 403). Messages form a tree by `parent_id`: siblings are the branches of a
//! point in the conversation, in the order they were written (`seq`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock::rfc3339;
use crate::store::{Database, Engine, StoreError};

pub const TITLE_CHARS_MAX: usize = 200;
pub const SYSTEM_PROMPT_CHARS_MAX: usize = 20_000;
pub const MESSAGE_CHARS_MAX: usize = 100_000;
pub const SEARCH_CHARS_MAX: usize = 200;
pub const MAX_TOKENS_MAX: u32 = 32_768;
/// Conversations one list answer shows (newest first).
pub const CONVERSATIONS_LISTED_MAX: i64 = 200;
/// Messages one conversation may hold.
pub const MESSAGES_MAX: i64 = 5_000;
pub const DEFAULT_TITLE: &str = "New conversation";

/// What pays a conversation's calls: the user's plan, or one of their API subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatEntitlement {
    Plan {
        plan: aiforge_domain::subscription::PlanId,
    },
    Subscription {
        subscription_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub model: String,
    pub entitlement: ChatEntitlement,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub id: String,
    pub title: String,
    pub model: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub id: String,
    pub parent_id: Option<String>,
    pub role: String,
    pub content: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    /// The metered call that answered (its receipt), for assistant messages.
    #[serde(skip)]
    pub request_id: Option<String>,
}

/// What a new conversation is made with (validated by [`NewConversation::validated`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewConversation {
    pub title: Option<String>,
    pub model: String,
    pub entitlement: ChatEntitlement,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

/// A change: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub title: Option<String>,
    pub model: Option<String>,
    pub entitlement: Option<ChatEntitlement>,
    pub system_prompt: Option<Option<String>>,
    pub temperature: Option<Option<f64>>,
    pub max_tokens: Option<Option<u32>>,
}

/// Why a conversation's field was refused, and which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

pub fn check_title(title: &str) -> Result<String, Invalid> {
    let title = title.trim();
    if title.is_empty() || title.chars().count() > TITLE_CHARS_MAX {
        return Err(invalid(
            "title",
            format!("a title is 1 to {TITLE_CHARS_MAX} characters"),
        ));
    }
    Ok(title.to_string())
}

pub fn check_system_prompt(prompt: &str) -> Result<(), Invalid> {
    if prompt.chars().count() > SYSTEM_PROMPT_CHARS_MAX {
        return Err(invalid(
            "system_prompt",
            format!("a system prompt has at most {SYSTEM_PROMPT_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

pub fn check_temperature(temperature: f64) -> Result<(), Invalid> {
    if !(0.0..=2.0).contains(&temperature) {
        return Err(invalid("temperature", "temperature is a number from 0 to 2"));
    }
    Ok(())
}

pub fn check_max_tokens(max_tokens: u32) -> Result<(), Invalid> {
    if max_tokens == 0 || max_tokens > MAX_TOKENS_MAX {
        return Err(invalid(
            "max_tokens",
            format!("max_tokens is an integer from 1 to {MAX_TOKENS_MAX}"),
        ));
    }
    Ok(())
}

pub fn check_message(content: &str) -> Result<(), Invalid> {
    if content.trim().is_empty() || content.chars().count() > MESSAGE_CHARS_MAX {
        return Err(invalid(
            "content",
            format!("a message is 1 to {MESSAGE_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

impl NewConversation {
    pub fn validated(mut self) -> Result<Self, Invalid> {
        self.title = match self.title.as_deref() {
            Some(title) => Some(check_title(title)?),
            None => None,
        };
        if self.model.trim().is_empty() {
            return Err(invalid("model", "a model is required"));
        }
        if let Some(prompt) = &self.system_prompt {
            check_system_prompt(prompt)?;
        }
        if let Some(t) = self.temperature {
            check_temperature(t)?;
        }
        if let Some(m) = self.max_tokens {
            check_max_tokens(m)?;
        }
        Ok(self)
    }
}

impl Patch {
    pub fn validated(mut self) -> Result<Self, Invalid> {
        if let Some(title) = &self.title {
            self.title = Some(check_title(title)?);
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err(invalid("model", "a model is required"));
        }
        if let Some(Some(prompt)) = &self.system_prompt {
            check_system_prompt(prompt)?;
        }
        if let Some(Some(t)) = self.temperature {
            check_temperature(t)?;
        }
        if let Some(Some(m)) = self.max_tokens {
            check_max_tokens(m)?;
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        *self == Patch::default()
    }
}

/// `%`, `_` and `\` stand for themselves in a search (LIKE with `ESCAPE '\'`).
fn like_pattern(q: &str) -> String {
    let mut pattern = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: String,
    title: String,
    model: String,
    entitlement: String,
    system_prompt: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<i64>,
    created_at: String,
    updated_at: String,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    parent_id: Option<String>,
    role: String,
    content: String,
    model: Option<String>,
    finish_reason: Option<String>,
    error: Option<String>,
    request_id: Option<String>,
    created_at: String,
}

impl MessageRow {
    fn into_message(self) -> Message {
        Message {
            id: self.id,
            parent_id: self.parent_id,
            role: self.role,
            content: self.content,
            created_at: self.created_at,
            model: self.model,
            finish_reason: self.finish_reason,
            error: self.error.and_then(|e| serde_json::from_str(&e).ok()),
            request_id: self.request_id,
        }
    }
}

const CONVERSATION_COLUMNS: &str = "id, title, model, entitlement, system_prompt, temperature, \
    max_tokens, created_at, updated_at";
const MESSAGE_COLUMNS: &str =
    "id, parent_id, role, content, model, finish_reason, error, request_id, created_at";

/// A new message's id (UUIDv7): made before the message is written when it must be announced
/// first (the chat stream names its answer's id at its start).
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A message to add (its time is made here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: String,
    pub parent_id: Option<String>,
    pub role: &'static str,
    pub content: String,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
    pub error: Option<MessageError>,
    pub request_id: Option<String>,
}

/// Conversations in the database.
#[derive(Clone)]
pub struct Conversations {
    db: Database,
}

/// Runs the same statements on either engine: `$pool` is the engine's pool (or transaction).
macro_rules! on_engine {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db.engine() {
            Engine::Sqlite($pool) => $body,
            Engine::Postgres($pool) => $body,
        }
    };
}

impl Conversations {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The user's conversations, newest first; `q` matches a title or any message's text
    /// (case-insensitive).
    pub async fn list(&self, user_id: &str, q: Option<&str>) -> Result<Vec<Summary>, StoreError> {
        let pattern = like_pattern(q.unwrap_or("").trim());
        let sql = "SELECT id, title, model, updated_at FROM conversations c WHERE user_id = $1 \
                   AND (lower(title) LIKE $2 ESCAPE '\\' OR EXISTS (SELECT 1 FROM \
                   conversation_messages m WHERE m.conversation_id = c.id AND \
                   lower(m.content) LIKE $2 ESCAPE '\\')) ORDER BY updated_at DESC, id DESC LIMIT $3";
        let rows: Vec<(String, String, String, String)> = on_engine!(self.db, |pool| {
            sqlx::query_as(sql)
                .bind(user_id)
                .bind(&pattern)
                .bind(CONVERSATIONS_LISTED_MAX)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, title, model, updated_at)| Summary {
                id,
                title,
                model,
                updated_at,
            })
            .collect())
    }

    pub async fn create(
        &self,
        user_id: &str,
        new: NewConversation,
        at: OffsetDateTime,
    ) -> Result<Conversation, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let at = rfc3339(at);
        let entitlement = serde_json::to_string(&new.entitlement)
            .map_err(|e| StoreError::Unsupported(leak_reason(e)))?;
        let title = new.title.unwrap_or_else(|| DEFAULT_TITLE.to_string());
        let _turn = self.db.write_turn().await;
        on_engine!(self.db, |pool| {
            sqlx::query(
                "INSERT INTO conversations (id, user_id, title, model, entitlement, \
                 system_prompt, temperature, max_tokens, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(&id)
            .bind(user_id)
            .bind(&title)
            .bind(&new.model)
            .bind(&entitlement)
            .bind(&new.system_prompt)
            .bind(new.temperature)
            .bind(new.max_tokens.map(i64::from))
            .bind(&at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(Conversation {
            id,
            title,
            model: new.model,
            entitlement: new.entitlement,
            system_prompt: new.system_prompt,
            temperature: new.temperature,
            max_tokens: new.max_tokens,
            created_at: at.clone(),
            updated_at: at,
            messages: Vec::new(),
        })
    }

    /// The user's conversation with its messages (in the order written), or None.
    pub async fn get(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2"
        );
        let row: Option<ConversationRow> = on_engine!(self.db, |pool| {
            sqlx::query_as(&sql)
                .bind(id)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        let Some(row) = row else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM conversation_messages WHERE conversation_id = $1 \
             ORDER BY seq"
        );
        let messages: Vec<MessageRow> = on_engine!(self.db, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_all(pool).await?
        });
        let entitlement = serde_json::from_str(&row.entitlement)
            .map_err(|e| StoreError::Unsupported(leak_reason(e)))?;
        Ok(Some(Conversation {
            id: row.id,
            title: row.title,
            model: row.model,
            entitlement,
            system_prompt: row.system_prompt,
            temperature: row.temperature,
            max_tokens: row.max_tokens.and_then(|m| u32::try_from(m).ok()),
            created_at: row.created_at,
            updated_at: row.updated_at,
            messages: messages.into_iter().map(MessageRow::into_message).collect(),
        }))
    }

    /// Applies a (validated) patch to the user's conversation; false when it is not theirs.
    pub async fn patch(
        &self,
        user_id: &str,
        id: &str,
        patch: Patch,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let Some(current) = self.get(user_id, id).await? else {
            return Ok(false);
        };
        let title = patch.title.unwrap_or(current.title);
        let model = patch.model.unwrap_or(current.model);
        let entitlement = serde_json::to_string(&patch.entitlement.unwrap_or(current.entitlement))
            .map_err(|e| StoreError::Unsupported(leak_reason(e)))?;
        let system_prompt = patch.system_prompt.unwrap_or(current.system_prompt);
        let temperature = patch.temperature.unwrap_or(current.temperature);
        let max_tokens = patch.max_tokens.unwrap_or(current.max_tokens);
        let _turn = self.db.write_turn().await;
        let done = on_engine!(self.db, |pool| {
            sqlx::query(
                "UPDATE conversations SET title = $1, model = $2, entitlement = $3, \
                 system_prompt = $4, temperature = $5, max_tokens = $6, updated_at = $7 \
                 WHERE id = $8 AND user_id = $9",
            )
            .bind(&title)
            .bind(&model)
            .bind(&entitlement)
            .bind(&system_prompt)
            .bind(temperature)
            .bind(max_tokens.map(i64::from))
            .bind(rfc3339(at))
            .bind(id)
            .bind(user_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Deletes the user's conversation and its messages (really: the rows go); false when it is
    /// not theirs.
    pub async fn delete(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let _turn = self.db.write_turn().await;
        let deleted = on_engine!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM conversations WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 1 {
                sqlx::query("DELETE FROM conversation_messages WHERE conversation_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            deleted
        });
        Ok(deleted == 1)
    }

    /// How many message rows a conversation has (tests check a delete really deletes).
    pub async fn message_rows(&self, id: &str) -> Result<i64, StoreError> {
        let (count,): (i64,) = on_engine!(self.db, |pool| {
            sqlx::query_as(
                "SELECT CAST(COUNT(*) AS bigint) FROM conversation_messages \
                 WHERE conversation_id = $1",
            )
            .bind(id)
            .fetch_one(pool)
            .await?
        });
        Ok(count)
    }

    /// Adds a message to the user's conversation (and touches it); None when the conversation
    /// is not theirs (or was deleted meanwhile).
    pub async fn add_message(
        &self,
        user_id: &str,
        conversation_id: &str,
        message: NewMessage,
        at: OffsetDateTime,
    ) -> Result<Option<Message>, StoreError> {
        let id = message.id.clone();
        let at = rfc3339(at);
        let error = match &message.error {
            Some(e) => Some(
                serde_json::to_string(e).map_err(|e| StoreError::Unsupported(leak_reason(e)))?,
            ),
            None => None,
        };
        let _turn = self.db.write_turn().await;
        let added = on_engine!(self.db, |pool| {
            let mut tx = pool.begin().await?;
            let touched = sqlx::query(
                "UPDATE conversations SET updated_at = $1 WHERE id = $2 AND user_id = $3",
            )
            .bind(&at)
            .bind(conversation_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let (next, count): (i64, i64) = sqlx::query_as(
                "SELECT CAST(COALESCE(MAX(seq), 0) + 1 AS bigint), CAST(COUNT(*) AS bigint) \
                 FROM conversation_messages WHERE conversation_id = $1",
            )
            .bind(conversation_id)
            .fetch_one(&mut *tx)
            .await?;
            if touched == 1 && count < MESSAGES_MAX {
                sqlx::query(
                    "INSERT INTO conversation_messages (id, conversation_id, seq, parent_id, \
                     role, content, model, finish_reason, error, request_id, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&id)
                .bind(conversation_id)
                .bind(next)
                .bind(&message.parent_id)
                .bind(message.role)
                .bind(&message.content)
                .bind(&message.model)
                .bind(&message.finish_reason)
                .bind(&error)
                .bind(&message.request_id)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                true
            } else {
                false
            }
        });
        Ok(added.then(|| Message {
            id,
            parent_id: message.parent_id,
            role: message.role.to_string(),
            content: message.content,
            created_at: at,
            model: message.model,
            finish_reason: message.finish_reason,
            error: message.error,
            request_id: message.request_id,
        }))
    }
}

/// `StoreError::Unsupported` holds a static reason: a stored row that does not parse is a bug,
/// logged here with its cause.
fn leak_reason(err: serde_json::Error) -> &'static str {
    tracing::error!(error = %err, "a conversation's JSON column does not parse");
    "a conversation's JSON column does not parse"
}

/// The path from the root to `message_id` (inclusive), root first; empty when it is not there.
pub fn path_to<'a>(messages: &'a [Message], message_id: &str) -> Vec<&'a Message> {
    let mut path = Vec::new();
    let mut next = Some(message_id);
    while let Some(id) = next {
        let Some(message) = messages.iter().find(|m| m.id == id) else {
            return Vec::new();
        };
        path.push(message);
        next = message.parent_id.as_deref();
        if path.len() > messages.len() {
            return Vec::new();
        }
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, parent: Option<&str>) -> Message {
        Message {
            id: id.into(),
            parent_id: parent.map(str::to_string),
            role: "user".into(),
            content: id.into(),
            created_at: String::new(),
            model: None,
            finish_reason: None,
            error: None,
            request_id: None,
        }
    }

    #[test]
    fn the_path_to_a_message_follows_its_parents_from_the_root() {
        let messages = vec![
            message("a", None),
            message("b", Some("a")),
            message("b2", Some("a")),
            message("c", Some("b2")),
        ];
        let ids: Vec<&str> = path_to(&messages, "c")
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b2", "c"]);
        assert!(path_to(&messages, "zz").is_empty());
    }

    #[test]
    fn searches_match_literally_and_fields_are_checked() {
        assert_eq!(like_pattern("50%_a\\B"), "%50\\%\\_a\\\\b%");
        assert!(check_temperature(2.5).is_err());
        assert!(check_temperature(f64::NAN).is_err());
        assert!(check_max_tokens(0).is_err());
        assert!(check_title("  ").is_err());
        assert_eq!(check_title(" Hi ").as_deref(), Ok("Hi"));
        assert!(check_message(" ").is_err());
    }
}
