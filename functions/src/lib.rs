pub mod domain;
pub mod records;
