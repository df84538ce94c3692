//! HTTP routes. Handlers are thin: extract, build a command or query, run it, map the result.

pub mod accounts;
pub mod admin;
pub mod blobs;
pub mod chat;
pub mod compute;
pub mod conversations;
pub mod group_revenue;
pub mod groups;
pub mod marketplace;
pub mod models;
pub mod openai;
pub mod ops;
pub mod payments;
pub mod revenue;
pub mod wallets;
