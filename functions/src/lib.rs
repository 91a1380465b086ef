//! ade-backup's Azure Functions custom handler.
//!
//! - [`host`]: the custom-handler protocol (`protocol`) and the axum server (`server`) the
//!   Functions host talks to.
//! - [`handlers`]: the function registry, the dispatch core and one module per function.
//! - [`context`]: what handlers get (state store, sender, settings, clock).
//! - [`settings`]: environment configuration.

pub mod context;
pub mod handlers;
pub mod host;
pub mod settings;
