//! The application layer of AIForge: it turns requests into commands on domain aggregates and
//! owns everything the domain must not touch: the event store on SQLite or PostgreSQL with its
//! global log (`store`), idempotent command execution (`framework`), the clock, password hashing
//! (`accounts`) and the event bus (`bus`). HTTP stays in `api/`; read models in `projections/`.

pub mod accounts;
pub mod blob;
pub mod bus;
pub mod chain;
pub mod clock;
pub mod compute;
pub mod conversations;
pub mod fees;
pub mod framework;
pub mod gateway;
pub mod groups;
pub mod job_logs;
pub mod lease;
pub mod liveness;
pub mod marketplace;
pub mod metering;
pub mod passes;
pub mod payments;
pub mod payouts;
pub mod platform_keys;
pub mod reactor;
pub mod sign_in_throttle;
pub mod stages;
pub mod store;
pub mod testing;
pub mod wallet_auth;
pub mod wallet_crypto;

pub use clock::{Clock, ManualClock, SystemClock};

pub use aiforge_domain::error_chain;
pub use framework::{CommandError, CommandMeta, Executor, Outcome};
pub use store::{Database, LogPosition, RecordedEvent, StoreError};
