//! The protection documents: one [`ProtectionOperation`] per VM and ADE key set
//! (`operations/protect/{operationId}.json`) and the per-VM [`VmRecord`]
//! (`vms/{subscription}/{resourceGroup}/{vm}.json`), with their typed statuses and steps.

use super::ErrorRecord;
use crate::domain::ade::AdeSettings;
use crate::domain::backup_limits::Deferral;
use crate::domain::rules::Selection;
use crate::domain::steps::{StepDetail, StepName, Steps};
use ade_backup_shared::arm::PendingOperation;
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

text_enum! {
    /// A protection's status (also the per-VM record's `status`).
    pub enum ProtectionStatus {
        /// A VM record nothing has concluded about yet (the sweep noted drift facts only).
        Unset = "",
        InProgress = "in-progress",
        Protected = "protected",
        Unsupported = "unsupported",
        Blocked = "blocked",
        Failed = "failed",
        NotEncrypted = "not-encrypted",
    }
}

// Not derived: the enum's derives come from `text_enum!`, which has no `#[default]` variant.
#[allow(clippy::derivable_impls)]
impl Default for ProtectionStatus {
    fn default() -> Self {
        Self::Unset
    }
}

text_enum! {
    /// Steps of a protection operation.
    pub enum ProtectStep {
        GrantKeyVaultAccess = "grant-key-vault-access",
        EnableProtection = "enable-protection",
        BackupNow = "backup-now",
        TrackBackupJob = "track-backup-job",
    }
}

impl StepName for ProtectStep {
    fn as_str(self) -> &'static str {
        ProtectStep::as_str(self)
    }
}

/// What a protection step records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectDetail {
    /// The long-running Azure operation the step started (enable protection, backup now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Key Vault writes the grant made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    /// The policy a protect request asked for (the item's own on a disk exclusion reset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
}

impl StepDetail for ProtectDetail {}

impl crate::engine::PendingDetail for ProtectDetail {
    fn pending(&self) -> Option<&PendingOperation> {
        self.pending.as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub status: ProtectionStatus,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionAzureIds {
    pub vault_id: Option<String>,
    pub protected_item_id: Option<String>,
    pub policy_id: Option<String>,
    pub backup_job_id: Option<String>,
    pub recovery_point_id: Option<String>,
    pub recovery_point_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionOperation {
    pub operation_id: String,
    pub vm_id: ResourceId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: ProtectionStatus,
    /// Reason code for unsupported / blocked / failed.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub ade: AdeSettings,
    pub target: Selection,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub steps: Steps<ProtectStep, ProtectDetail>,
    #[serde(default)]
    pub azure: ProtectionAzureIds,
    /// Bumped when the operation restarts; part of every message id, so a restart's messages are
    /// not taken for duplicates of the previous run's.
    #[serde(default)]
    pub generation: u32,
    /// How many times a backup failure sent the operation back to the grant step.
    #[serde(default)]
    pub grant_retries: u32,
    pub last_error: Option<ErrorRecord>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// What triggered it: `event:<id>` or `sweep:<runId>`.
    pub origin: String,
    /// The sweep that opened this generation saw (Resource Graph) no active protection for the
    /// VM, so the first protection attempt skips re-reading the protected item.
    #[serde(default)]
    pub known_unprotected: bool,
    /// When ade-backup asked Azure for an on-demand backup of the VM (last 24 h only): kept
    /// under Azure Backup's daily limit (`domain::backup_limits`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_demand_backups: Vec<DateTime<Utc>>,
    /// The backup step waits for a window (daily limit), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferral>,
    /// How many times a backup failing with `UserErrorEncryptedVmNotSupportedWithDiskEx` sent
    /// the operation back to the protect step to reset the item's disk exclusion (once at most).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_exclusion_repairs: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ProtectionOperation {
    pub fn record(
        &mut self,
        now: DateTime<Utc>,
        status: ProtectionStatus,
        message: impl Into<String>,
    ) {
        self.status = status;
        self.updated_at = now;
        // bounded: a long-lived operation must not grow without limit
        if self.history.len() >= 100 {
            self.history.remove(0);
        }
        self.history.push(HistoryEntry {
            at: now,
            status,
            message: message.into(),
        });
    }

    pub fn is_finished(&self) -> bool {
        self.status != ProtectionStatus::InProgress
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmRecord {
    pub vm_id: ResourceId,
    pub status: ProtectionStatus,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub operation_id: Option<String>,
    /// ADE settings as recorded at protection: what a restore reinstalls.
    pub ade: Option<AdeSettings>,
    pub target: Option<Selection>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub azure: ProtectionAzureIds,
    pub updated_at: DateTime<Utc>,
    /// Free-form facts for humans (e.g. sweep drift kinds).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub extra: Value,
    /// The VM's backup waits for a window (Azure Backup's daily limit), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferral>,
}

impl VmRecord {
    /// A record nothing is known about yet.
    pub fn new(vm_id: ResourceId, at: DateTime<Utc>) -> Self {
        Self {
            vm_id,
            status: ProtectionStatus::Unset,
            reason: None,
            message: None,
            operation_id: None,
            ade: None,
            target: None,
            warnings: vec![],
            azure: ProtectionAzureIds::default(),
            updated_at: at,
            extra: Value::Null,
            deferred: None,
        }
    }
}
