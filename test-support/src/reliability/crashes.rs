//! Scenario 3 (crashes): see `tests/tests/reliability.rs`.
