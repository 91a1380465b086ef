//! Shared by the tests that run the bundled sample (`local_sample_run.rs`, `package.rs`).

pub mod sample_report;
