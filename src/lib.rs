//! incidentd: an event-sourced incident engine for Postman monitor webhooks.
//!
//! `domain` is the pure core, `store` the only module that touches sled, `engine` the single
//! writer, `api` the only module that knows HTTP, and `server` wires them together.

pub mod api;
pub mod audit;
pub mod domain;
pub mod engine;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod store;
