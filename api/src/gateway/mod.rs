//! The OpenAI-compatible gateway's transport: the HTTP handlers and SSE (`chat`; `completions`,
//! the legacy text completions re-shaped from the chat pipeline), routing to a
//! node (`nodes`, `nats`) and the local node (`local`). The rules of a call (the key index,
//! admission with its limits, quota and credit holds, metering) are the application layer's:
//! `aiforge_commands::gateway` and `aiforge_commands::metering`.

pub mod chat;
pub mod completions;
pub mod local;
pub mod nats;
pub mod nodes;
pub mod placement;
pub mod pool;

use std::sync::Arc;

use aiforge_commands::gateway::{Admission, KeyIndex, Subscription};
use aiforge_commands::metering::UsageRecorder;

/// Calls generating at once on this instance; beyond it a call is refused 503
/// `server_overloaded` at once (bounded memory, never an unbounded queue of tasks).
pub const CALLS_IN_FLIGHT_MAX: usize = 1024;

/// What entitles a caller to call models: the pipeline (`chat::handle`, `chat::start`) is
/// parameterised by it, whoever the caller is.
#[derive(Clone)]
pub enum Entitlement {
    /// An API subscription: its key on `/api/v1`, or a session naming one of the user's
    /// subscriptions in the web chat. Its own model, its pricing and its service's limits.
    Subscription(Arc<Subscription>),
    /// The user's platform plan: the platform key on `/api/v1`, or the session in the web chat.
    /// Any model included in plans, within the plan's monthly requests and tokens.
    Plan { user_id: String },
}

/// Everything the `/api/v1` handlers share.
pub struct Gateway {
    /// Permits for calls in flight (`CALLS_IN_FLIGHT_MAX`).
    pub calls: Arc<tokio::sync::Semaphore>,
    pub index: Arc<KeyIndex>,
    pub admission: Arc<Admission>,
    pub recorder: UsageRecorder,
    pub nodes: Arc<dyn nodes::NodeTransport>,
    /// The NATS nodes this instance routes to (NATS configured).
    pub nats_directory: Option<Arc<nats::Directory>>,
    /// Whether the in-process node's pool serves any servable model on its first call.
    pub in_process_pool: bool,
}
