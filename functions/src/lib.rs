pub mod domain;
pub mod local;
