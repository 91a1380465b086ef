//! ade-backup on AWS Lambda: the same handler registry and dispatch core as the Azure Functions
//! custom handler, behind a Lambda runtime instead of the Functions host.
//!
//! - [`router`]: SQS batches (partial batch failures) and EventBridge schedules → the registry;
//! - [`sqs_sender`]: `MessageSender` over SQS; [`delay`]: delays beyond 15 minutes as a chain;
//! - [`s3_state`]: `StateStore` over S3 conditional writes, with leases in sidecar objects;
//! - [`secrets`]: the Entra app credential from Secrets Manager; [`cert_assertion`]: the client
//!   assertion of a certificate credential (no OpenSSL);
//! - [`queues`], [`config`]: the settings; [`wiring`]: builds the router from them;
//! - [`relay`]: the Event Grid webhook → SQS relay (`ADE_BACKUP_LAMBDA_MODE=relay`, behind a
//!   Lambda function URL).

pub mod cert_assertion;
pub mod config;
pub mod delay;
pub mod queues;
pub mod relay;
pub mod router;
pub mod s3_state;
pub mod secrets;
pub mod sqs_sender;
pub mod wiring;
