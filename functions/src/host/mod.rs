//! The Azure Functions custom-handler boundary: the wire protocol and the HTTP server.

pub mod protocol;
pub mod server;
