//! HTTP routes. Handlers are thin: extract, build a command or query, run it, map the result.

pub mod accounts;
pub mod ops;
