//! The pure core of AIForge: aggregates, their commands and events, money and the rules that
//! decide what may happen. Nothing here performs IO, reads a clock or makes an id: those enter
//! through each aggregate's `Services` port or through the command itself, so every rule here is
//! unit-testable in microseconds. No tokio, no sqlx, no HTTP.

pub mod account;
pub mod admin;
pub mod fees;
pub mod group;
pub mod ledger;
pub mod money;
pub mod payment;
pub mod subscription;
pub mod wallet;

pub use money::{MoneyError, Usdt};
