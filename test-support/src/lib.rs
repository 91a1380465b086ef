//! Scaffolding shared by the end-to-end tests (`tests/`) and the benchmarks: nothing here ships.
//!
//! - [`pump`]: the one Service Bus stand-in ([`QueuePump`]): records what the handlers send and
//!   delivers it stepwise or continuously through the production dispatch;
//! - [`simulator`]: the one simulator spawner, its clock, fleet and resource-id helpers;
//! - [`sim_stack`]: the stepwise stack (sample fleet, test-driven pump) of the restore and crash
//!   tests;
//! - [`sweep_harness`]: the continuous stack of the sweep tests and benchmarks;
//! - [`app`]: the real custom-handler server in a task ([`spawn_app`], [`serve`]);
//! - [`flaky_store`]: a state store that fails writes on demand;
//! - [`fuzz`]: generated and mutated messages (proptest strategies, seeded runner);
//! - [`otlp`]: an in-process OTLP/HTTP receiver (traces and metrics) for the telemetry tests;
//! - [`receipt`]: a test-only handler that records each message it receives;
//! - [`serve_process`]: the real `ade-backup serve` process and host-shaped invocation payloads.

pub mod app;
pub mod flaky_store;
pub mod fuzz;
pub mod otlp;
pub mod pump;
pub mod receipt;
pub mod serve_process;
pub mod sim_stack;
pub mod simulator;
pub mod sweep_harness;

pub use app::{serve, spawn_app, spawn_app_with, TestApp};
pub use pump::QueuePump;
