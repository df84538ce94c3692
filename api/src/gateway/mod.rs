//! The OpenAI-compatible gateway: key auth from the in-memory index (`index`), per-key limits
//! (`limits`), routing to a node (`nodes`) and durable metering of every call (the usage
//! recorder in `aiforge_commands::metering`). The HTTP handlers are in `chat`.

pub mod chat;
pub mod index;
pub mod limits;
pub mod local;
pub mod nats;
pub mod nodes;

use std::sync::Arc;

use aiforge_commands::metering::UsageRecorder;

/// Everything the `/api/v1` handlers share.
pub struct Gateway {
    pub index: Arc<index::KeyIndex>,
    pub recorder: UsageRecorder,
    pub nodes: Arc<dyn nodes::NodeTransport>,
}
