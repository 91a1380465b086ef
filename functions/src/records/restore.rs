//! The restore document (`restores/{ticket}.json`): one restore request, its typed status and
//! steps, the Azure ids it produced and the status updates sent to the ticketing system.

use super::ErrorRecord;
use crate::domain::ade::AdeSettings;
use crate::domain::steps::{StepDetail, StepName, Steps};
use ade_backup_shared::arm::PendingOperation;
use ade_backup_shared::ids::TicketId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

text_enum! {
    /// Restore statuses reported to the ticket, in order.
    pub enum RestoreStatus {
        Accepted = "accepted",
        Rejected = "rejected",
        RestoringDisks = "restoring-disks",
        DisksRestored = "disks-restored",
        Deploying = "deploying",
        ReinstallingAde = "reinstalling-ade",
        /// Azure Backup's daily restore limit was reached: the step runs again when the window
        /// allows (the status says when).
        Deferred = "deferred",
        Completed = "completed",
        /// The VM was deployed and runs, but something needs a human (e.g. a Windows VM whose
        /// guest agent never became ready: BitLocker recovery).
        CompletedNeedsAttention = "completed-needs-attention",
        Failed = "failed",
    }
}

impl RestoreStatus {
    /// Nothing happens to a ticket after a final status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Completed | Self::CompletedNeedsAttention | Self::Failed
        )
    }
}

text_enum! {
    /// Steps of a restore (keys in the document's `steps`, and the `step` of status updates).
    /// Earlier versions named a timed-out poll by its phase (`deploy-poll`, `ade-poll`).
    pub enum RestoreStep {
        Validate = "validate",
        RestoreDisks = "restore-disks",
        TrackRestoreJob = "track-restore-job",
        Deploy = "deploy" | "deploy-poll",
        ReinstallAde = "reinstall-ade" | "ade-poll",
        Verify = "verify",
    }
}

impl StepName for RestoreStep {
    fn as_str(self) -> &'static str {
        RestoreStep::as_str(self)
    }
}

/// What a restore step records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDetail {
    /// When the step was first claimed: a restore job started by a crashed attempt is found by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// The restore request Azure is still accepting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOperation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<String>,
    /// When the restore job ended: its template may not have been written after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_ended: Option<DateTime<Utc>>,
    /// The template blob's `ETag` when the job was seen completed: the deployment uses that
    /// version or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_etag: Option<String>,
    /// How many times the step was deferred by Azure Backup's daily limit, and until when.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<DateTime<Utc>>,
    /// The one automatic retry from a vault-tier recovery point after a snapshot-tier restore
    /// failed (recorded before the retry's trigger is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_retry: Option<TierRetry>,
}

/// A restore job of a snapshot-tier recovery point failed with a key/snapshot mismatch; the
/// restore-disks step was started again, once, from `point` (vault tier only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierRetry {
    /// The restore job that failed (never adopted again, never retried twice).
    pub failed_job: String,
    /// The recovery point it restored (from its snapshot tier).
    pub failed_point: String,
    /// Azure's error code of the failure.
    pub code: String,
    /// The recovery point restored instead.
    pub point: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_time: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StepDetail for RestoreDetail {}

impl crate::engine::PendingDetail for RestoreDetail {
    fn pending(&self) -> Option<&PendingOperation> {
        self.pending.as_ref()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreAzureIds {
    pub vault_id: Option<String>,
    pub protected_item_id: Option<String>,
    pub recovery_point_id: Option<String>,
    pub recovery_point_time: Option<DateTime<Utc>>,
    pub restore_job_id: Option<String>,
    /// Template blob URI from the restore job (never with a SAS query).
    pub template_blob_uri: Option<String>,
    #[serde(default)]
    pub restored_disk_ids: Vec<String>,
    pub deployment_id: Option<String>,
    pub restored_vm_id: Option<String>,
    pub ade_extension_id: Option<String>,
    /// Config blob URI from the restore job (never with a SAS query).
    #[serde(default)]
    pub config_blob_uri: Option<String>,
    /// The restore job's Encryption Info blob URI (backups of the BEK secret and KEK; ADE VMs
    /// only; never with a SAS query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_info_blob_uri: Option<String>,
    /// Name of the ARM deployment that recreates the VM (deterministic from the ticket id).
    #[serde(default)]
    pub deployment_name: Option<String>,
}

impl RestoreAzureIds {
    /// What a ticket may see: everything but the staging blobs' URIs (whoever can write to the
    /// staging account must not learn where the template ade-backup deploys is kept).
    pub fn for_ticket(&self) -> Self {
        Self {
            template_blob_uri: None,
            config_blob_uri: None,
            encryption_info_blob_uri: None,
            ..self.clone()
        }
    }
}

/// One status message to the ticketing system (also kept in the restore document's history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusUpdate {
    pub ticket_id: String,
    /// Monotonic per ticket: lets a ticketing system order updates and drop duplicates.
    pub sequence: u32,
    pub status: RestoreStatus,
    pub at: DateTime<Utc>,
    /// The step the status is about (e.g. `restore-disks`, `deploy`, `reinstall-ade`).
    pub step: Option<RestoreStep>,
    /// A sentence for a human.
    pub message: String,
    /// Reason code on rejected / failed.
    pub reason: Option<String>,
    /// For rejected: the field at fault.
    pub field: Option<String>,
    /// For failed: what a human should do next.
    pub next_action: Option<String>,
    #[serde(default)]
    pub azure: RestoreAzureIds,
    /// The W3C trace id of the invocation that made this update (32 hex digits): the trace of the
    /// ticket in Application Insights or any OpenTelemetry backend. Absent in older documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOperation {
    pub ticket_id: TicketId,
    /// Fingerprint of the accepted request: a different request with this ticket id is a conflict.
    pub fingerprint: String,
    pub request: Option<crate::domain::restore_request::RestoreRequest>,
    pub status: RestoreStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub reply_to: Option<String>,
    pub requested_by: Option<String>,
    /// ADE settings to reinstall (from the VM record captured at protection time).
    pub ade: Option<AdeSettings>,
    #[serde(default)]
    pub steps: Steps<RestoreStep, RestoreDetail>,
    #[serde(default)]
    pub azure: RestoreAzureIds,
    #[serde(default)]
    pub history: Vec<RestoreStatusUpdate>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Region the restore runs in (the vault's).
    #[serde(default)]
    pub region: Option<String>,
    /// The Azure error behind a `failed` status.
    #[serde(default)]
    pub last_error: Option<ErrorRecord>,
    /// Status updates `replyTo` did not accept (their sequence numbers); sent again with the next
    /// status. A reply that cannot be delivered never stops the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undelivered: Vec<u32>,
    /// Why the last status could not be sent to `replyTo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_error: Option<String>,
}

impl RestoreOperation {
    /// Appends a status update (returned, to be sent to `replyTo`).
    pub fn push_status(
        &mut self,
        now: DateTime<Utc>,
        status: RestoreStatus,
        step: Option<RestoreStep>,
        message: impl Into<String>,
    ) -> RestoreStatusUpdate {
        let update = RestoreStatusUpdate {
            ticket_id: self.ticket_id.as_str().to_string(),
            sequence: self.history.len() as u32 + 1,
            status,
            at: now,
            step,
            message: message.into(),
            reason: None,
            field: None,
            next_action: None,
            azure: self.azure.for_ticket(),
            trace_id: ade_backup_shared::telemetry::current_trace_id(),
        };
        self.status = status;
        self.updated_at = now;
        self.history.push(update.clone());
        update
    }
}
