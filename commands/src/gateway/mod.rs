//! The gateway's application layer, shared by every way a call arrives (the OpenAI-compatible
//! API with a key, the web chat with a session): the in-memory index of keys and subscriptions
//! folded from the log (`index`) and admission with its holds (`admission`). Transport (HTTP,
//! SSE, NATS nodes) stays in `api/`.

pub mod admission;
pub mod index;

pub use admission::{Admission, AdmissionError, AdmissionStore, Admitted, CallTerms};
pub use index::{KeyIndex, PlanGrant, PlanModel, Subscription};
