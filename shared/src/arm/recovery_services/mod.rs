//! Microsoft.RecoveryServices (vaults) and its backup provider: policies, container refresh,
//! protectable/protected items, backup now, jobs, recovery points, restore.
//!
//! Shapes: recoveryservicesbackup 2023-04-01 examples (see `arm/EXAMPLES.md`), e.g.
//! AzureIaasVm/ProtectedItemOperationStatus.json (operationsStatus carries `properties.jobId`),
//! AzureIaasVm/TriggerRestore_RestoreDisks_IaasVMRestoreRequest_IdentityBasedRestoreDetails.json,
//! AzureIaasVm/RecoveryPoints_List.json, Common/RefreshContainers.json.
//!
//! One file per part of the service, each with its wire types beside the calls that use them:
//! - `vaults`: vaults (list, get) and backup policies (get, the RPO a schedule implies).
//! - `protection`: the container and protected item names, container refresh, protectable and
//!   protected items, enabling protection, backup now.
//! - `jobs`: backup jobs (get, list) and the typed `$filter` of the list.
//! - `recovery_points`: recovery points (list), their tiers and encryption keys.
//! - `restore`: the restore-disks request and its trigger.
//! - this file: the api-version, the resource types, and the one path both triggers (backup now,
//!   restore) take: a non-idempotent POST, then the wait for the job id.

mod jobs;
mod protection;
mod recovery_points;
mod restore;
mod vaults;

pub use jobs::{
    BackupJob, BackupJobFilter, BackupJobProperties, JobErrorInfo, JobExtendedInfo, JobOperation,
    JobStatus, JobTask,
};
pub use protection::{
    container_name, protected_item_id, protected_item_name, DiskExclusionProperties, DiskSelection,
    ExtendedProperties, ProtectableItem, ProtectableItemProperties, ProtectedItem,
    ProtectedItemProperties,
};
pub use recovery_points::{
    BekDetails, KekDetails, KeyAndSecretDetails, RecoveryPoint, RecoveryPointProperties,
    RecoveryPointTierInfo,
};
pub use restore::{EncryptionDetails, RestoreDisksRequest};
pub use vaults::{
    BackupPolicy, BackupPolicyProperties, HourlySchedule, RecoveryServicesVault, SchedulePolicy,
};

use super::client::{sub_bucket, ArmClient, Call};
use super::error::ArmError;
use super::lro::PendingOperation;
use crate::ids::ResourceId;
use reqwest::Method;
use serde::Serialize;
use std::time::Duration;

pub const RECOVERY_SERVICES_API_VERSION: &str = "2023-04-01";
pub const RECOVERY_VAULT_TYPE: &str = "Microsoft.RecoveryServices/vaults";
pub const BACKUP_POLICY_TYPE: &str = "Microsoft.RecoveryServices/vaults/backupPolicies";
const IAAS_FILTER: &str = "backupManagementType eq 'AzureIaasVM'";

impl ArmClient {
    /// `{base}/{tail...}?api-version=2023-04-01&{query}`.
    fn rs_url(
        &self,
        base: &ResourceId,
        tail: &[&str],
        query: &[(&str, &str)],
    ) -> Result<url::Url, ArmError> {
        self.id_url(base, tail, RECOVERY_SERVICES_API_VERSION, query)
    }

    /// POSTs a backup or restore trigger. Not idempotent: a repeat would start a second job, so
    /// the retry policy only repeats it on 429. The job id is only in the `operationsStatus`
    /// document, so an answer with nothing to follow is an error rather than "done".
    async fn begin_rs_job<B: Serialize>(
        &self,
        operation: &'static str,
        url: url::Url,
        vault: &ResourceId,
        body: &B,
    ) -> Result<PendingOperation, ArmError> {
        let call = Call::new(operation, Method::POST, url, sub_bucket(vault)?).json(body)?;
        let resp = self.send(&call).await?;
        self.pending_from(operation, &resp, true)?
            .ok_or_else(|| ArmError::decode(operation, "no operation to follow in the response"))
    }

    /// Waits for a trigger's operation to finish and returns the job id its final status carries
    /// (`properties.jobId`).
    async fn wait_for_job_id(
        &self,
        operation: &'static str,
        pending: PendingOperation,
        deadline: Duration,
    ) -> Result<String, ArmError> {
        let out = self.wait(pending, deadline).await?;
        out.job_id
            .ok_or_else(|| ArmError::decode(operation, "operation status has no jobId"))
    }
}
