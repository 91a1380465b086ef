//! Restore-side field failures (issue 14) the simulator can produce, and the switches that turn
//! them on: the restore daily limit (`CloudDosAbsoluteLimitReached`), recovery-point tiers served
//! as numbers (older api-versions), snapshot-tier copies whose keys no longer match the Key Vault,
//! and restored VMs whose guest agent never reports ready (Windows stuck at BitLocker recovery).
//! The Key Vault side (deleted secrets/keys, a vault changed after protection) lives in
//! `keyvault`; the switches are set through `Simulator` methods or the scenario action
//! `fieldFault`.

use super::{Failure, RecoveryPoint, VmState, World};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Azure's code for a restore refused by the backup service's daily restore limit (about ten
/// restores in 24 h, azure-cli issue 32441): `isRetryable` false.
pub const RESTORE_LIMIT_CODE: &str = "CloudDosAbsoluteLimitReached";
/// sim: a restore from a snapshot-tier copy whose BEK/KEK metadata no longer matches the Key
/// Vault. Azure's docs describe the failure and its remedy (restore from the vault tier) but
/// name no code; this one is the simulator's.
pub const SNAPSHOT_KEYS_CODE: &str = "UserErrorSnapshotKeyMismatch";

#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldSwitches {
    /// Restores of one protected item accepted in 24 h; the next one is refused with
    /// [`RESTORE_LIMIT_CODE`]. `None`: no limit.
    pub restore_limit_per_day: Option<u32>,
    /// Serve `recoveryPointTierDetails` `type`/`status` as numbers, as older examples do.
    pub numeric_tiers: bool,
    /// Recovery points (names) whose snapshot-tier copy fails to restore.
    pub stale_snapshot_keys: BTreeSet<String>,
    /// VMs (lower-case names) whose guest agent never reports ready once deployed.
    pub agent_never_ready: BTreeSet<String>,
    /// VMs (lower-case names) whose deployment fails before the VM is created.
    pub deployments_failing: BTreeSet<String>,
}

impl Default for FieldSwitches {
    fn default() -> Self {
        Self {
            restore_limit_per_day: Some(10),
            numeric_tiers: false,
            stale_snapshot_keys: BTreeSet::new(),
            agent_never_ready: BTreeSet::new(),
            deployments_failing: BTreeSet::new(),
        }
    }
}

impl World {
    /// `CloudDosAbsoluteLimitReached` when `item_key` already had its day's restores.
    pub fn check_restore_limit(&self, item_key: &str, now: DateTime<Utc>) -> Result<(), Failure> {
        let Some(limit) = self.field.restore_limit_per_day else {
            return Ok(());
        };
        let since = now - Duration::hours(24);
        let recent = self
            .jobs
            .values()
            .filter(|j| j.item_key == item_key && j.operation() == "Restore" && j.start > since)
            .count();
        if recent < limit as usize {
            return Ok(());
        }
        Err(Failure::new(
            RESTORE_LIMIT_CODE,
            format!("The number of restore operations for this item in the last 24 hours reached the limit of {limit}. Please retry the operation after the window passes."),
        ))
    }

    /// A snapshot-tier restore of a point whose snapshot keys are stale fails; the vault-tier
    /// copy (once the snapshot tier is gone, or a retry after such a failure) restores.
    pub(super) fn check_snapshot_keys(
        &mut self,
        rp: &RecoveryPoint,
        started: DateTime<Utc>,
    ) -> Result<(), Failure> {
        let from_snapshot = started < rp.instant_until;
        if !from_snapshot || !self.field.stale_snapshot_keys.remove(&rp.name) {
            return Ok(());
        }
        Err(Failure::new(
            SNAPSHOT_KEYS_CODE,
            "Restore from the snapshot tier failed: the disk encryption key metadata of the snapshot no longer matches the Key Vault. Restore from a vault-tier recovery point.",
        ))
    }

    /// The `recoveryPointTierDetails` of a point: strings, or numbers when switched on.
    pub(super) fn tier_details(&self, rp: &RecoveryPoint, now: DateTime<Utc>) -> Value {
        let snapshot_valid = now < rp.instant_until;
        let hardened = rp.hardened_at.is_some_and(|h| h <= now);
        if self.field.numeric_tiers {
            let mut t = vec![json!({"type": 1, "status": if snapshot_valid { 1 } else { 3 }})];
            if hardened {
                t.push(json!({"type": 2, "status": 1}));
            }
            return Value::Array(t);
        }
        let mut t = vec![
            json!({"type": "InstantRP", "status": if snapshot_valid { "Valid" } else { "Deleted" }}),
        ];
        if hardened {
            t.push(json!({"type": "HardenedRP", "status": "Valid"}));
        }
        Value::Array(t)
    }

    /// The instance view's `vmAgent` of a VM: ready, or never ready when switched on.
    /// The VM agent as the instance view shows it: a restored VM the `agentNeverReady` switch
    /// names never gets ready; otherwise the VM's own agent (`source_vm`).
    pub(super) fn vm_agent_json(&self, vm: &VmState, now: DateTime<Utc>) -> Option<Value> {
        if self.field.agent_never_ready.contains(&super::lc(&vm.name)) {
            return Some(
                json!({"vmAgentVersion": "Unknown", "statuses": [{"code": "ProvisioningState/Unavailable", "level": "Warning", "displayStatus": "Not Ready", "message": "VM Agent is unresponsive.", "time": super::ts(now)}]}),
            );
        }
        super::source_vm::vm_agent_json(vm, now)
    }
}

/// The AAD (dual-pass) versions of the ADE extension: Windows 1.x, Linux 0.x.
pub const DUAL_PASS_VERSIONS: (&str, &str) = ("1.1", "0.1");

impl VmState {
    /// Turns the VM's ADE extension into a dual-pass one: enabled with the Azure AD application
    /// `client_id` (`AADClientID` in its settings; the secret would be in `protectedSettings`,
    /// which ARM never returns) at the AAD extension version. `false` without an ADE extension.
    pub fn make_dual_pass(&mut self, client_id: &str) -> bool {
        let Some(ext) = self.extensions.values_mut().find(|e| e.is_ade()) else {
            return false;
        };
        ext.settings["AADClientID"] = json!(client_id);
        let linux = ext
            .ext_type
            .eq_ignore_ascii_case("AzureDiskEncryptionForLinux");
        let (windows_version, linux_version) = DUAL_PASS_VERSIONS;
        ext.type_handler_version = if linux {
            linux_version
        } else {
            windows_version
        }
        .into();
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::fleet::Fleet;
    use crate::world::{Durations, World};
    use chrono::Utc;

    #[test]
    fn a_fleet_vm_with_an_aad_client_id_has_a_dual_pass_ade_extension() {
        let mut fleet = Fleet::sample();
        let client = "8f6c2e1a-0b3d-4c5e-9a7b-1d2e3f4a5b6c";
        let vm = fleet
            .vms
            .iter_mut()
            .find(|v| v.name == "web-win-01")
            .expect("web-win-01");
        vm.ade_aad_client_id = Some(client.into());
        assert!(fleet.validate().is_ok());
        let w = World::from_fleet(&fleet, Utc::now(), Durations::default());
        let state = w
            .vms
            .values()
            .find(|v| v.name == "web-win-01")
            .expect("the VM");
        let ext = state
            .extensions
            .values()
            .find(|e| e.is_ade())
            .expect("ADE extension");
        assert_eq!(ext.settings["AADClientID"], client);
        assert_eq!(ext.type_handler_version, "1.1");
        // Dual-pass without ADE is not a fleet.
        let mut bad = Fleet::sample();
        let plain = bad
            .vms
            .iter_mut()
            .find(|v| v.name == "plain-win-01")
            .expect("plain-win-01");
        plain.ade_aad_client_id = Some(client.into());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn tiers_are_served_as_strings_or_as_numbers() {
        let now = Utc::now();
        let mut w = World::from_fleet(&Fleet::sample(), now, Durations::default());
        let rp = w
            .protected_items
            .values()
            .flat_map(|i| i.recovery_points.iter())
            .find(|r| r.hardened_at.is_some())
            .cloned()
            .expect("a hardened point");
        let strings = w.tier_details(&rp, now);
        assert!(strings.to_string().contains("\"HardenedRP\""), "{strings}");
        w.field.numeric_tiers = true;
        let numbers = w.tier_details(&rp, now);
        assert!(
            numbers.to_string().contains("{\"status\":1,\"type\":2}"),
            "{numbers}"
        );
    }
}
