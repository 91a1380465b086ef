//! Owns nothing: the end-to-end tests are in `tests/` beside this folder and the sweep benchmark
//! in `benches/`. Their scaffolding (queue pump, simulator stacks, test server) is the
//! `ade-backup-test-support` crate. Cargo wants a library or binary in every package; this is it.
