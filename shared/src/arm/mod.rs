//! Azure Resource Manager (and Microsoft Graph) client for ade-backup.
//!
//! Contract: `docs/arm-surface.md` (paths and api-versions, shared with the simulator). Request
//! and response shapes follow the `Azure/azure-rest-api-specs` examples listed in `EXAMPLES.md`
//! next to this file.
//!
//! Layout: one module per service (`compute`, `keyvault`, `authorization`, `graph`,
//! `recovery_services` (a folder: vaults, protection, jobs, recovery points, restore),
//! `resources`, `resource_graph`), plus the machinery:
//! - `client`: [`ArmClient`], [`ArmClientOptions`], [`ArmStats`], and the single `send` path
//!   every request takes: token → pacing → HTTP → classify, inside the retry policy.
//! - `retry`: the one retry policy, built on `backon` (not the unmaintained `backoff` crate,
//!   RUSTSEC-2025-0012 / RUSTSEC-2024-0384): exponential backoff with full jitter, `Retry-After`
//!   wins, bounded attempts and elapsed time, idempotent requests only (non-idempotent POSTs
//!   retry only on 429).
//! - `pacing`: token buckets shaped like ARM's (per subscription × reads/writes/deletes, plus a
//!   tenant bucket), lowered by `x-ms-ratelimit-remaining-*`.
//! - `lro`: `Azure-AsyncOperation` / `Location` polling, blocking (`wait`) and one-shot
//!   (`poll_once` on a serializable [`PendingOperation`]) for short-lived handlers.
//! - `error`: [`ArmError`], classified (transient, throttled, permanent, not found, ...) with
//!   Azure's error code kept.
//! - `telemetry`: the client span of each call and the per-attempt metrics.
//! - `scope`: [`SubscriptionId`], [`ResourceGroupRef`] and the URL builder: every path is built
//!   from `ResourceId` or validated segments, never from raw input strings.
//!
//! Using it from a short-lived handler (no sleeping on long-running operations):
//!
//! ```text
//! let arm = ArmClient::new(endpoint, credential, ArmClientOptions::default())?;
//! let op: PendingOperation = arm.begin_backup_now(&vault, &vm, None).await?;
//! // put `op` (serde) into a follow-up message scheduled after `op.retry_after`
//! match arm.poll_once(&op).await? {
//!     PollOutcome::Pending(next) => { /* reschedule with `next` */ }
//!     PollOutcome::Done(out) => { let job_id = out.job_id; /* follow get_backup_job */ }
//! }
//! ```
//! Failures: `ArmError::is_transient()` → retry later (redelivery / scheduled message);
//! otherwise report `err.code()` (e.g. `UserErrorKeyVaultPermissionsNotConfigured`).
//! `ArmClient` is cheap to clone and clones share pacing buckets and counters, so one client
//! per process keeps the whole process under ARM's limits; `arm.stats()` prints as one line.
//!
//! Tokens are fetched per attempt from the [`crate::credential::TokenSource`] (which caches) and
//! never appear in errors or logs.

pub mod authorization;
mod client;
mod common;
pub mod compute;
pub mod delete;
pub mod drill_resources;
pub mod error;
pub mod features;
pub mod graph;
pub mod keyvault;
pub mod keyvault_objects;
pub mod lro;
pub mod pacing;
pub mod recovery_services;
pub mod resource_graph;
pub mod resources;
pub mod retry;
pub mod scope;
pub mod skus;
pub mod storage;
mod telemetry;
pub mod user_quota;

pub use authorization::{
    RoleAssignment, RoleAssignmentProperties, RoleDefinition, RoleDefinitionProperties,
    RolePermission, BACKUP_KEY_VAULT_DATA_ACTIONS,
};
/// The send-path pieces the Key Vault data-plane client shares (one classification, one retry).
pub(crate) use client::{classify, retry_after};
pub use client::{
    ArmClient, ArmClientOptions, ArmStats, MAX_ARM_RESPONSE_BYTES, RESPONSE_TOO_LARGE,
};
pub use common::SubResource;
pub use compute::{
    AdeExtensionSettings, DataDisk, DiskEncryptionSettings, DiskInstanceView,
    ExtensionInstanceView, InstanceViewStatus, KeyVaultKeyReference, KeyVaultSecretReference,
    OsDisk, ProtectedSettings, StorageProfile, VirtualMachine, VmExtension, VmExtensionProperties,
    VmInstanceView, VmProperties,
};
pub use delete::{DeletableKind, DeleteStarted};
pub use drill_resources::TaggedResource;
pub use error::ArmError;
pub use features::{FeatureResult, FeatureState};
pub use graph::{ServicePrincipal, BACKUP_MANAGEMENT_SERVICE_APP_ID};
pub use keyvault::{
    AccessPolicyEntry, AccessPolicyUpdateResult, KeyVault, KeyVaultProperties, Permissions,
};
pub use lro::{LroOutcome, PendingOperation, PollKind, PollOutcome, Started};
pub use pacing::{meter_paced_wait, BucketKey, BucketShape, PacingPolicy, RequestClass};
pub use recovery_services::{
    container_name, protected_item_id, protected_item_name, BackupJob, BackupJobFilter,
    BackupJobProperties, BackupPolicy, BackupPolicyProperties, DiskExclusionProperties,
    DiskSelection, EncryptionDetails, JobErrorInfo, JobExtendedInfo, JobOperation, JobStatus,
    KeyAndSecretDetails, ProtectableItem, ProtectedItem, ProtectedItemProperties, RecoveryPoint,
    RecoveryPointProperties, RecoveryPointTierInfo, RecoveryServicesVault, RestoreDisksRequest,
    SchedulePolicy,
};
pub use resource_graph::{queries, GraphRow, GraphScope, ResourceGraphPage};
pub use resources::{Deployment, DeploymentError, DeploymentProperties, DeploymentRequest};
pub use retry::RetryPolicy;
pub use scope::{ManagementGroupId, ResourceGroupRef, SubscriptionId};
pub use skus::{ResourceSku, SkuCapability, SkuRestriction};
pub use user_quota::QuotaShape;
