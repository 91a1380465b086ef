//! Operator CLI conventions shared by the commands (`main.rs` wires them): the `-o/--output`
//! formats, opening a state store without Azure when it is a local directory, the `report`
//! command, and a progress line on a terminal.

pub mod drill;
pub mod output;
pub mod plan_json;
pub mod progress;
pub mod report;
pub mod state;

pub use output::OutputFormat;
