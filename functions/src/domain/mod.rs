//! Pure domain logic shared by the handlers: no I/O here, so every rule is unit-tested.

pub mod ade;
pub mod backup_limits;
pub mod drill_config;
pub mod drill_tag;
pub mod events;
pub mod kv_access;
pub mod restore_allowlist;
pub mod restore_request;
pub mod restore_template;
pub mod rules;
pub mod source_vm;
pub mod steps;
pub mod sweep_plan;
pub mod sweep_scope;
