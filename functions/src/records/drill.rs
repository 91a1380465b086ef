//! The restore drill documents: `drills/{drillId}.json` (one drill: the restore ticket it
//! submitted, its typed status, the verification, the RTO per step and the clean-up), and
//! `drill-vms/{subscription}/{resourceGroup}/{vm}.json` (per VM: its latest drill, for the
//! scheduler's least-recently-drilled order and the fleet report).

use super::key_segment;
use ade_backup_shared::arm::PendingOperation;
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

text_enum! {
    /// Where a drill is.
    pub enum DrillStatus {
        /// The restore ticket runs (restore job, deployment, ADE reinstall).
        Restoring = "restoring",
        /// ade-backup's own checks of the restored VM.
        Verifying = "verifying",
        /// Deleting what the drill created.
        CleaningUp = "cleaning-up",
        /// Final: result, RTO and clean-up recorded.
        Done = "done",
    }
}

text_enum! {
    /// Whether the VM came back as it must.
    pub enum DrillResult {
        Passed = "passed",
        Failed = "failed",
    }
}

text_enum! {
    pub enum CleanupStatus {
        NotStarted = "not-started",
        Running = "running",
        /// Everything the drill created is verified gone.
        Done = "done",
        /// Retries ran out: some resources are left (listed); a human must delete them.
        Failed = "failed",
        /// A resource the drill's records name was refused right before its delete (no drill
        /// tag of this drill, or attached to a VM the drill does not delete): left as it is,
        /// listed with why; a human must look at it. Everything else is done.
        NeedsHuman = "needs-human",
    }
}

text_enum! {
    pub enum ItemState {
        /// Not asked to be deleted yet (or asked again after a failure).
        Pending = "pending",
        /// Delete accepted (202); the next pass `GET`s it until it answers 404.
        Deleting = "deleting",
        /// Verified gone (`GET` answers 404).
        Gone = "gone",
        /// Never deleted: the check before its delete failed (`error` says why).
        Refused = "refused",
    }
}

/// One resource the drill created and deletes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupItem {
    pub id: String,
    pub state: ItemState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOperation>,
    #[serde(default)]
    pub failures: u32,
    /// Passes it has been `deleting` (still there after its delete was accepted).
    #[serde(default)]
    pub waits: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A staging blob of the drill's restore job (template, config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupBlob {
    pub uri: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillCleanup {
    pub status: CleanupStatus,
    /// Whether the resources to delete were gathered (restore record, deployment outputs, the
    /// drill resource group's disks carrying this drill's tag).
    #[serde(default)]
    pub gathered: bool,
    #[serde(default)]
    pub items: Vec<CleanupItem>,
    #[serde(default)]
    pub blobs: Vec<CleanupBlob>,
    /// Ids the deployment or the restore named that a drill may not delete (outside the drill
    /// resource group, or of another type): never deleted, reported.
    #[serde(default)]
    pub refused: Vec<String>,
    /// Clean-up passes so far.
    #[serde(default)]
    pub passes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Default for DrillCleanup {
    fn default() -> Self {
        Self {
            status: CleanupStatus::NotStarted,
            gathered: false,
            items: vec![],
            blobs: vec![],
            refused: vec![],
            passes: 0,
            last_error: None,
        }
    }
}

/// Recovery time per step, in seconds (from the restore ticket's status times and the drill's
/// own verification).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRto {
    /// Accepted → disks restored (the restore-disks job).
    pub restore_job_secs: Option<i64>,
    /// Disks restored → the VM deployed.
    pub deployment_secs: Option<i64>,
    /// Linux: the ADE extension reinstalled and the restore's own check done.
    pub reinstall_secs: Option<i64>,
    /// The drill's verification (VM, agent, ADE status, key material).
    pub verification_secs: Option<i64>,
    /// Drill start → verified: what a real recovery of this VM would take.
    pub total_secs: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRecord {
    pub drill_id: String,
    pub vm_id: ResourceId,
    /// The protection rule the VM was drilled for (`None` from `ade-backup drill --vm`).
    pub rule: Option<String>,
    /// `schedule` (the timer) or `cli`.
    pub origin: String,
    /// The restore ticket (same id as the drill).
    pub ticket_id: String,
    /// `/subscriptions/{sub}/resourceGroups/{rg}`: the only place it creates and deletes.
    pub drill_resource_group: String,
    pub status: DrillStatus,
    pub result: Option<DrillResult>,
    /// Why it failed (a code: the restore's reason, or the drill's check).
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Every verification finding, passed and failed, for humans.
    #[serde(default)]
    pub checks: Vec<String>,
    #[serde(default)]
    pub rto: DrillRto,
    #[serde(default)]
    pub cleanup: DrillCleanup,
    /// The restore ticket's final status.
    pub restore_status: Option<String>,
    pub restored_vm_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The failure notification was sent.
    #[serde(default)]
    pub notified: bool,
}

impl DrillRecord {
    /// Open: not done yet (counts against the concurrency cap).
    pub fn is_open(&self) -> bool {
        self.status != DrillStatus::Done
    }
}

/// Per VM: its latest drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillVmIndex {
    pub vm_id: ResourceId,
    pub rule: Option<String>,
    pub last_drill_id: String,
    pub last_started: DateTime<Utc>,
    pub status: DrillStatus,
    pub result: Option<DrillResult>,
    pub reason: Option<String>,
    pub cleanup: CleanupStatus,
    pub total_rto_secs: Option<i64>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub const DRILLS_PREFIX: &str = "drills/";
pub const DRILL_VMS_PREFIX: &str = "drill-vms/";

pub fn drill_key(drill_id: &str) -> String {
    format!("{DRILLS_PREFIX}{}.json", key_segment(drill_id))
}

pub fn drill_vm_key(vm: &ResourceId) -> String {
    format!(
        "{DRILL_VMS_PREFIX}{}/{}/{}.json",
        key_segment(&vm.subscription().to_ascii_lowercase()),
        key_segment(&vm.resource_group().to_ascii_lowercase()),
        key_segment(&vm.name().to_ascii_lowercase())
    )
}
