pub mod azurite;
pub mod wire;
