//! ade-backup's Azure Functions custom handler.
//!
//! The layers, top to bottom (each uses only the ones below it):
//! - [`host`]: the custom-handler protocol (`protocol`) and the axum server (`server`) the
//!   Functions host talks to.
//! - [`handlers`]: the function registry, the dispatch core and one module per function; the
//!   boundary where a [`engine::WorkflowError`] becomes transient (redeliver) or poison.
//! - [`workflows`]: protect, restore and sweep, step by step, on top of the engine.
//! - [`engine`]: the operation engine every multi-step workflow stands on (documents, step
//!   claims, polls of long-running Azure operations, next-phase messages, status reports).
//! - [`trigger`]: what a handler receives (a Service Bus message or a timer tick).
//! - [`domain`]: pure decision logic (events, ADE classification, rules, Key Vault access,
//!   restore requests, sweep plans, step claims) — no I/O, unit-tested.
//! - [`records`]: the documents kept in the state store and their keys.
//! - [`context`]: what handlers get (state store, sender, settings, clock).
//! - [`settings`]: environment configuration.
//! - [`status`], [`sweep_table`]: what `ade-backup status --ticket` and `ade-backup sweep --dry-run`
//!   print.
//!
//! With the `local` feature (default): `local`, the embedded Functions host and Service Bus
//! stand-in, and `local_stack`, that host plus the simulated Azure (`ade-backup local`). The
//! deployed binary is built without it and only serves.

pub mod cli;
pub mod context;
pub mod domain;
pub mod engine;
pub mod handlers;
pub mod host;
#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "local")]
pub mod local_stack;
pub mod read_cache;
pub mod records;
pub mod report;
pub mod settings;
pub mod status;
pub mod sweep_table;
pub mod trigger;
pub mod wiring;
pub mod workflows;
