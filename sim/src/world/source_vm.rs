//! What of a source VM decides whether Azure Backup can back it up, and the backup service's
//! own limits: the VM agent as the instance view reports it (`vmAgent`; a running VM without a
//! ready agent fails its backup's snapshot with `UserErrorGuestAgentStatusUnavailable`),
//! unmanaged (VHD) disks in the storage profile, and the anti-abuse limit on on-demand backups
//! (`CloudDosTimeboudLimitReached` once an item had [`ON_DEMAND_BACKUPS_PER_DAY`] in 24 h; Azure's
//! message recommends "not having more than 3 backups a day"). Shapes: compute 2024-07-01
//! `VirtualMachineAgentInstanceView`, `VirtualHardDisk`.

use super::{codes, lc, ts, Failure, ProtectedItem, VmState, World};
use crate::fleet::{PowerState, VmAgent};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

/// On-demand backups of one item Azure Backup accepts in a rolling 24 h; the next is refused.
pub const ON_DEMAND_BACKUPS_PER_DAY: usize = 3;

/// The backup service's anti-abuse error for on-demand backups (terraform-provider-azurerm PR
/// 12617, azure-cli 32441).
pub const DAILY_LIMIT_CODE: &str = "CloudDosTimeboudLimitReached";

/// The guest side of a VM: its agent and whether its disks are managed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GuestModel {
    pub agent: VmAgent,
    pub unmanaged_disks: bool,
}

/// `instanceView.vmAgent`, or `None` when no agent is installed.
pub(super) fn vm_agent_json(vm: &VmState, now: DateTime<Utc>) -> Option<Value> {
    let deallocated = vm.power_state == PowerState::Deallocated;
    let status = match (vm.guest.agent, deallocated) {
        (VmAgent::Absent, _) => return None,
        (VmAgent::Ready, false) => {
            json!({"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready", "message": "GuestAgent is running and processing the extensions.", "time": ts(now)})
        }
        _ => {
            json!({"code": "ProvisioningState/Unavailable", "level": "Warning", "displayStatus": "Not Ready", "message": "VM status blob is found but not yet populated.", "time": ts(now)})
        }
    };
    Some(json!({"vmAgentVersion": "2.7.41491.1102", "statuses": [status]}))
}

/// The disk reference of a storage-profile disk: `managedDisk`, or `vhd` for unmanaged disks.
pub(super) fn disk_reference(
    vm: &VmState,
    disk_name: &str,
    managed_id: String,
) -> (&'static str, Value) {
    if vm.guest.unmanaged_disks {
        let uri = format!(
            "https://{}vhds.blob.core.windows.net/vhds/{disk_name}.vhd",
            lc(&vm.name).replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        ("vhd", json!({"uri": uri}))
    } else {
        (
            "managedDisk",
            json!({"storageAccountType": "Premium_LRS", "id": managed_id}),
        )
    }
}

impl World {
    /// Why a backup's snapshot of `vm` fails before anything is read, if it does: disk exclusion
    /// on an encrypted VM, or a running VM whose agent is not ready.
    pub(super) fn snapshot_precondition(
        &self,
        item: &ProtectedItem,
        vm: &VmState,
    ) -> Option<Failure> {
        let encrypted = vm.encryption.is_some() || vm.restored_encryption.is_some();
        if encrypted && !item.excluded_disk_luns.is_empty() {
            return Some(Failure::new(
                codes::DISK_EXCLUSION,
                "Selective disk backup is not supported for encrypted VMs. Remove the disk exclusion settings of the protected item.",
            ));
        }
        self.agent_snapshot_failure(vm)
    }

    /// A backup snapshot of a running VM needs its agent: the failure when it is not ready.
    pub(super) fn agent_snapshot_failure(&self, vm: &VmState) -> Option<Failure> {
        let running = vm.power_state == PowerState::Running;
        (running && vm.guest.agent != VmAgent::Ready).then(|| {
            Failure::new(
                "UserErrorGuestAgentStatusUnavailable",
                "VM Agent unable to communicate with Azure Backup. Ensure the VM agent is installed, running and up to date, and that the VM can reach the Azure wire server.",
            )
        })
    }

    /// Counts an on-demand backup of `item_key` at `now`, or refuses it when the item already
    /// had [`ON_DEMAND_BACKUPS_PER_DAY`] in the last 24 h.
    pub fn take_on_demand_slot(
        &mut self,
        item_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Failure> {
        let taken = self
            .on_demand_backups
            .entry(item_key.to_string())
            .or_default();
        taken.retain(|t| now - *t < Duration::hours(24));
        if taken.len() >= ON_DEMAND_BACKUPS_PER_DAY {
            return Err(Failure::new(
                DAILY_LIMIT_CODE,
                "The operation is blocked, as a security precaution, since multiple attempts were made beyond an internal limit. We recommend not having more than 3 backups a day. Please retry the operation tomorrow.",
            ));
        }
        taken.push(now);
        Ok(())
    }

    /// Sets the VM agent of the VM stored under `vm_key` (scenario and tests: an agent that
    /// stops answering, or gets repaired).
    pub fn set_vm_agent(&mut self, vm_key: &str, agent: VmAgent) -> bool {
        match self.vms.get_mut(vm_key) {
            Some(vm) => {
                vm.guest.agent = agent;
                true
            }
            None => false,
        }
    }

    /// Sets the power state of the VM stored under `vm_key` (started, deallocated).
    pub fn set_power_state(&mut self, vm_key: &str, state: PowerState) -> bool {
        match self.vms.get_mut(vm_key) {
            Some(vm) => {
                vm.power_state = state;
                true
            }
            None => false,
        }
    }
}

/// The error body Azure sends with the daily limit (`isRetryable: false`).
pub fn daily_limit_body(f: &Failure) -> Value {
    json!({"error": {
        "code": f.code,
        "message": f.message,
        "isRetryable": false,
        "recommendedAction": ["Please retry the operation tomorrow."],
        "details": null
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;

    #[test]
    fn the_fourth_on_demand_backup_in_a_day_is_refused_then_allowed_a_day_later() {
        let t0 = Utc::now();
        let mut w = World::from_fleet(&Fleet::sample(), t0, Default::default());
        for i in 0..3 {
            assert!(w
                .take_on_demand_slot("item", t0 + Duration::hours(i))
                .is_ok());
        }
        let f = w
            .take_on_demand_slot("item", t0 + Duration::hours(4))
            .expect_err("limit");
        assert_eq!(f.code, DAILY_LIMIT_CODE);
        assert_eq!(daily_limit_body(&f)["error"]["isRetryable"], false);
        assert!(w.take_on_demand_slot("other", t0).is_ok(), "per item");
        assert!(w
            .take_on_demand_slot("item", t0 + Duration::hours(24))
            .is_ok());
    }
}
