//! What a restore drill cleans up, and the record of every delete asked for: the managed disks
//! and network interface a restore deployment created next to its VM (registered as standalone
//! resources when the deployment completes, `managed_by` the VM), and deletes of VMs, disks and
//! NICs. As in Azure, a disk or NIC attached to an existing VM cannot be deleted (409
//! `OperationNotAllowed` / 400 `NicInUse`); the VM goes first. Every DELETE request's resource id
//! is kept in `delete_requests` (whether or not something was there) and every actual deletion in
//! `deleted`, so tests can prove nothing outside a drill's resource group was ever touched.

use super::{lc, resource_id, Failure, VmState, World};

/// A managed disk or network interface, standalone in ARM (it outlives its VM unless deleted).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachedResource {
    pub id: String,
    pub name: String,
    pub rtype: &'static str,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    /// The VM it is attached to, while that VM exists.
    pub managed_by: Option<String>,
}

pub const DISK_TYPE: &str = "Microsoft.Compute/disks";
pub const NIC_TYPE: &str = "Microsoft.Network/networkInterfaces";

/// The NIC id a VM's network profile names (`{vm}-nic` in the VM's resource group).
pub fn nic_id(vm: &VmState) -> String {
    resource_id(
        &vm.subscription,
        &vm.resource_group,
        NIC_TYPE,
        &format!("{}-nic", vm.name),
    )
}

impl World {
    /// A deployment created `vm`: its disks and NIC exist as resources of their own.
    pub(super) fn register_vm_resources(&mut self, vm: &VmState) {
        let mut add = |rtype: &'static str, id: String, name: String| {
            self.attached.insert(
                lc(&id),
                AttachedResource {
                    id,
                    name,
                    rtype,
                    subscription: vm.subscription.clone(),
                    resource_group: vm.resource_group.clone(),
                    location: vm.location.clone(),
                    managed_by: Some(vm.id.clone()),
                },
            );
        };
        for d in std::iter::once(&vm.os_disk).chain(vm.data_disks.iter()) {
            let id = resource_id(&vm.subscription, &vm.resource_group, DISK_TYPE, &d.name);
            add(DISK_TYPE, id, d.name.clone());
        }
        add(NIC_TYPE, nic_id(vm), format!("{}-nic", vm.name));
    }

    /// Deletes a VM (its disks and NIC stay, detached). `false`: there was none.
    pub fn delete_vm(&mut self, key: &str) -> bool {
        self.delete_requests.push(key.to_string());
        let Some(vm) = self.vms.remove(key) else {
            return false;
        };
        for r in self.attached.values_mut() {
            if r.managed_by.as_deref().is_some_and(|m| lc(m) == key) {
                r.managed_by = None;
            }
        }
        self.deleted.push(vm.id);
        true
    }

    /// Deletes a disk or NIC of type `rtype`. `Ok(false)`: there was none; `Err`: it is attached
    /// to a VM that still exists.
    pub fn delete_attached(&mut self, key: &str, rtype: &str) -> Result<bool, Failure> {
        self.delete_requests.push(key.to_string());
        let Some(r) = self.attached.get(key).filter(|r| r.rtype == rtype) else {
            return Ok(false);
        };
        if let Some(vm) = r
            .managed_by
            .as_ref()
            .filter(|m| self.vms.contains_key(&lc(m)))
        {
            let f = if rtype == DISK_TYPE {
                Failure::new(
                    "OperationNotAllowed",
                    format!("Disk {} is attached to VM {vm}.", r.name),
                )
            } else {
                Failure::new(
                    "NicInUse",
                    format!("Network Interface {} is used by existing resource {vm}. In order to delete the network interface, it must be dissociated from the resource.", r.id),
                )
            };
            return Err(f);
        }
        if let Some(r) = self.attached.remove(key) {
            self.deleted.push(r.id);
        }
        Ok(true)
    }
}
