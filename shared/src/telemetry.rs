//! Telemetry: JSON logs through `tracing`, with redaction of anything secret-looking.
//! (Filled in by the foundation work; see `init`.)
