//! What a restore drill cleans up, and the record of every delete asked for: the managed disks
//! a restore-disks job created in its target resource group (unattached until a deployment
//! attaches them to its VM, `managed_by` the VM), the network interface the deployment created
//! next to its VM, their tags (`PATCH` of a disk, the template's tags for the NIC), and deletes
//! of VMs, disks and NICs. As in Azure, a disk or NIC attached to an existing VM cannot be deleted (409
//! `OperationNotAllowed` / 400 `NicInUse`); the VM goes first. Every DELETE request's resource id
//! is kept in `delete_requests` (whether or not something was there) and every actual deletion in
//! `deleted`, so tests can prove nothing outside a drill's resource group was ever touched.

use super::{lc, resource_id, Failure, VmState, World};
use std::collections::BTreeMap;

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
    pub tags: BTreeMap<String, String>,
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
    /// A deployment created `vm`: it attaches the disks the restore job created (a disk it names
    /// that does not exist is created, as for a template that creates its disks), and its NIC
    /// exists as a resource of its own, with the VM's tags (the template's).
    pub(super) fn register_vm_resources(&mut self, vm: &VmState) {
        for d in std::iter::once(&vm.os_disk).chain(vm.data_disks.iter()) {
            let id = resource_id(&vm.subscription, &vm.resource_group, DISK_TYPE, &d.name);
            let entry = self
                .attached
                .entry(lc(&id))
                .or_insert_with(|| attached(vm, DISK_TYPE, id, d.name.clone(), BTreeMap::new()));
            entry.managed_by = Some(vm.id.clone());
        }
        let mut nic = attached(
            vm,
            NIC_TYPE,
            nic_id(vm),
            format!("{}-nic", vm.name),
            vm.tags.clone(),
        );
        nic.managed_by = Some(vm.id.clone());
        self.attached.insert(lc(&nic.id), nic);
    }

    /// A restore-disks job created the managed disk `name` in its target resource group
    /// (unattached, untagged).
    pub(super) fn add_restored_disk(&mut self, sub: &str, rg: &str, name: &str, location: &str) {
        let id = resource_id(sub, rg, DISK_TYPE, name);
        self.attached.insert(
            lc(&id),
            AttachedResource {
                id,
                name: name.to_string(),
                rtype: DISK_TYPE,
                subscription: sub.to_string(),
                resource_group: rg.to_string(),
                location: location.to_string(),
                managed_by: None,
                tags: BTreeMap::new(),
            },
        );
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

    /// `PATCH` of a disk's or NIC's tags: the tags given replace the resource's (as ARM does).
    pub fn set_attached_tags(&mut self, key: &str, tags: BTreeMap<String, String>) -> bool {
        match self.attached.get_mut(key) {
            Some(r) => {
                r.tags = tags;
                true
            }
            None => false,
        }
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

fn attached(
    vm: &VmState,
    rtype: &'static str,
    id: String,
    name: String,
    tags: BTreeMap<String, String>,
) -> AttachedResource {
    AttachedResource {
        id,
        name,
        rtype,
        subscription: vm.subscription.clone(),
        resource_group: vm.resource_group.clone(),
        location: vm.location.clone(),
        managed_by: Some(vm.id.clone()),
        tags,
    }
}
