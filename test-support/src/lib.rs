//! Scaffolding shared by the end-to-end tests (`tests/`) and the benchmarks: nothing here ships.
//!
//! - [`bench`]: what a benchmark was asked to run, a free port;
//! - [`pump`]: the one Service Bus stand-in ([`QueuePump`]): records what the handlers send and
//!   delivers it stepwise or continuously through the production dispatch;
//! - [`simulator`]: the one simulator spawner, its clock, fleet and resource-id helpers;
//! - [`sim_stack`]: the stepwise stack (sample fleet, test-driven pump) of the restore and crash
//!   tests;
//! - [`drills`]: restore-drill settings and readers on the [`sim_stack`];
//! - [`sweep_harness`]: the continuous stack of the sweep tests and benchmarks;
//! - [`app`]: the real custom-handler server in a task ([`spawn_app`], [`serve`]);
//! - [`flaky_store`]: a state store that fails writes on demand;
//! - [`fuzz`]: generated and mutated messages (proptest strategies, seeded runner);
//! - [`otlp`]: an in-process OTLP/HTTP receiver (traces and metrics) for the telemetry tests;
//! - [`otel_capture`]: a test-local tracer provider and subscriber (spans and JSON logs in
//!   memory, installed for one thread) for the in-process telemetry tests;
//! - [`receipt`]: a test-only handler that records each message it receives;
//! - [`serve_process`]: the real `ade-backup serve` process and host-shaped invocation payloads;
//! - [`moto`]: the AWS emulator (moto server) on a free port;
//! - [`lambda_runtime_api`]: a local Lambda Runtime API; [`lambda_process`]: the real Lambda
//!   binary pointed at it;
//! - [`lambda_stack`] (feature `aws`): all of that together, with queues, DLQs and the bucket;
//! - [`sqs_event_source`] (feature `aws`): Lambda's SQS event source mapping over moto, and SDK
//!   clients for moto.

pub mod app;
pub mod bench;
pub mod dead_letters;
pub mod drills;
pub mod flaky_store;
pub mod fuzz;
pub mod lambda_process;
pub mod lambda_runtime_api;
#[cfg(feature = "aws")]
pub mod lambda_stack;
pub mod moto;
pub mod otel_capture;
pub mod otlp;
pub mod pump;
pub mod receipt;
pub mod reliability;
pub mod serve_process;
pub mod sim_stack;
pub mod simulator;
#[cfg(feature = "aws")]
pub mod sqs_event_source;
pub mod sweep_harness;
pub mod zip_package;

pub use app::{serve, spawn_app, spawn_app_with, TestApp};
pub use pump::QueuePump;
