//! The documents ade-backup keeps in the state store, and their keys (layout in docs/state.md).
//!
//! - `operations/protect/{operationId}.json` — one VM protection (steps, Azure ids, errors)
//! - `vms/{subscription}/{resourceGroup}/{vm}.json` — per-VM record: current status, recorded ADE
//!   settings (used to reinstall ADE on a restored VM even when the source VM is gone)
//! - `restores/{ticket}.json` — one restore request, its history and status
//! - `runs/sweep/latest.json` — sweep guard + last summary; `runs/sweep/{runId}.json` — history
//! - `deadletters/{queue}/{messageId}.json` — poison messages with their reason

use crate::domain::ade::AdeSettings;
use crate::domain::rules::Selection;
use crate::domain::steps::Steps;
use ade_backup_shared::ids::{deterministic_uuid, ResourceId, TicketId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Makes an arbitrary string safe as one key segment: every character outside `[A-Za-z0-9-_.]`
/// (and a leading `.`) written as `=XX` (hex of its UTF-8 bytes) — reversible, collision-free.
pub fn key_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

pub fn vm_record_key(vm: &ResourceId) -> String {
    format!(
        "vms/{}/{}/{}.json",
        // ARM names are case-insensitive: one record per VM whatever the casing of the event
        key_segment(&vm.subscription().to_ascii_lowercase()),
        key_segment(&vm.resource_group().to_ascii_lowercase()),
        key_segment(&vm.name().to_ascii_lowercase())
    )
}

pub fn protect_operation_key(operation_id: &str) -> String {
    format!("operations/protect/{}.json", key_segment(operation_id))
}

pub fn restore_key(ticket: &TicketId) -> String {
    format!("restores/{}.json", key_segment(ticket.as_str()))
}

/// `deadletters/{queue}/{messageId}.json`: where a poison message's reason is kept.
pub fn dead_letter_key(queue: &str, message_id: &str) -> String {
    format!(
        "deadletters/{}/{}.json",
        key_segment(queue),
        key_segment(message_id)
    )
}

pub const SWEEP_LATEST_KEY: &str = "runs/sweep/latest.json";

pub fn sweep_run_key(run_id: &str) -> String {
    format!("runs/sweep/{}.json", key_segment(run_id))
}

/// Protection operation id: the VM plus the identity of its ADE keys (vault + KEK), so
/// re-encrypting with other keys starts a new operation while redeliveries reuse the same one.
pub fn protection_operation_id(vm: &ResourceId, settings: &AdeSettings) -> String {
    let kek = settings
        .key_encryption_key_url
        .as_ref()
        .map(|k| k.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    format!(
        "protect-{}",
        deterministic_uuid(&[
            "protect",
            &vm.canonical(),
            &settings.key_vault_resource_id.canonical(),
            &kek
        ])
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    pub at: DateTime<Utc>,
    pub step: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub status: String,
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

/// Status strings (also the per-VM record's `status`).
pub mod status {
    pub const IN_PROGRESS: &str = "in-progress";
    pub const PROTECTED: &str = "protected";
    pub const UNSUPPORTED: &str = "unsupported";
    pub const BLOCKED: &str = "blocked";
    pub const FAILED: &str = "failed";
    pub const NOT_ENCRYPTED: &str = "not-encrypted";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionOperation {
    pub operation_id: String,
    pub vm_id: ResourceId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// One of `status::*`.
    pub status: String,
    /// Reason code for unsupported / blocked / failed.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub ade: AdeSettings,
    pub target: Selection,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub steps: Steps,
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
}

impl ProtectionOperation {
    pub fn record(&mut self, now: DateTime<Utc>, status: &str, message: impl Into<String>) {
        let message = message.into();
        self.status = status.to_string();
        self.updated_at = now;
        // bounded: a long-lived operation must not grow without limit
        if self.history.len() >= 100 {
            self.history.remove(0);
        }
        self.history.push(HistoryEntry {
            at: now,
            status: status.to_string(),
            message,
        });
    }

    pub fn is_finished(&self) -> bool {
        self.status != status::IN_PROGRESS
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmRecord {
    pub vm_id: ResourceId,
    pub status: String,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::state::validate_key;

    #[test]
    fn keys_are_valid_and_injective() {
        let vm = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG(prod).x/providers/Microsoft.Compute/virtualMachines/vm.1").expect("id");
        let k = vm_record_key(&vm);
        assert!(validate_key(&k).is_ok(), "{k}");
        assert_ne!(key_segment("a=2e"), key_segment("a."));
        assert_ne!(key_segment("ab"), key_segment("AB="));
        for s in ["", ".", "..", "a/b", "x y", "é"] {
            assert!(
                validate_key(&format!("p/{}.json", key_segment(s))).is_ok(),
                "{s:?}"
            );
        }
        let t = TicketId::parse("JIRA:OPS-1").expect("ticket");
        assert!(validate_key(&restore_key(&t)).is_ok());
        assert!(validate_key(&dead_letter_key("restore-requests", "m/../x")).is_ok());
    }
}

/// Restore statuses reported to the ticket, in order.
pub mod restore_status {
    pub const ACCEPTED: &str = "accepted";
    pub const REJECTED: &str = "rejected";
    pub const RESTORING_DISKS: &str = "restoring-disks";
    pub const DISKS_RESTORED: &str = "disks-restored";
    pub const DEPLOYING: &str = "deploying";
    pub const REINSTALLING_ADE: &str = "reinstalling-ade";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";

    pub fn is_final(s: &str) -> bool {
        matches!(s, REJECTED | COMPLETED | FAILED)
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
    /// Name of the ARM deployment that recreates the VM (deterministic from the ticket id).
    #[serde(default)]
    pub deployment_name: Option<String>,
}

/// One status message to the ticketing system (also kept in the restore document's history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusUpdate {
    pub ticket_id: String,
    /// Monotonic per ticket: lets a ticketing system order updates and drop duplicates.
    pub sequence: u32,
    pub status: String,
    pub at: DateTime<Utc>,
    /// The step the status is about (e.g. `restore-disks`, `deploy`, `reinstall-ade`).
    pub step: Option<String>,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOperation {
    pub ticket_id: TicketId,
    /// Fingerprint of the accepted request: a different request with this ticket id is a conflict.
    pub fingerprint: String,
    pub request: Option<crate::domain::restore_request::RestoreRequest>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub reply_to: Option<String>,
    pub requested_by: Option<String>,
    /// ADE settings to reinstall (from the VM record captured at protection time).
    pub ade: Option<AdeSettings>,
    #[serde(default)]
    pub steps: Steps,
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
}

impl RestoreOperation {
    /// Appends a status update (returned, to be sent to `replyTo`).
    pub fn push_status(
        &mut self,
        now: DateTime<Utc>,
        status: &str,
        step: Option<&str>,
        message: impl Into<String>,
    ) -> RestoreStatusUpdate {
        let update = RestoreStatusUpdate {
            ticket_id: self.ticket_id.as_str().to_string(),
            sequence: self.history.len() as u32 + 1,
            status: status.to_string(),
            at: now,
            step: step.map(str::to_string),
            message: message.into(),
            reason: None,
            field: None,
            next_action: None,
            azure: self.azure.clone(),
        };
        self.status = status.to_string();
        self.updated_at = now;
        self.history.push(update.clone());
        update
    }
}
