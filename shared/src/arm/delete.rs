//! Deleting the resources a restore drill created: virtual machines, managed disks and network
//! interfaces, each by its own ARM id and nothing else (no resource group deletes, no lists).
//!
//! Shapes (Azure/azure-rest-api-specs): `VirtualMachines_Delete` (compute 2024-07-01),
//! `Disks_Delete` (compute DiskRP 2024-03-02), `NetworkInterfaces_Delete` (network 2024-05-01):
//! `DELETE {id}?api-version=…` answers 200/204 when done (204: nothing there) or 202 with
//! `Azure-AsyncOperation` and/or `Location` to follow. A 404 means it is gone already, so a
//! repeated delete converges. `GET {id}` answering 404 is how a deletion is verified.

use super::client::{sub_bucket, ArmClient, Call};
use super::error::ArmError;
use super::lro::PendingOperation;
use crate::ids::ResourceId;
use reqwest::Method;

/// Compute (virtual machines), as the rest of the client.
pub const VM_DELETE_API_VERSION: &str = super::compute::COMPUTE_API_VERSION;
/// Compute DiskRP (managed disks).
pub const DISK_API_VERSION: &str = "2024-03-02";
/// Microsoft.Network (network interfaces).
pub const NETWORK_API_VERSION: &str = "2024-05-01";

/// The kinds of resource a drill may delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletableKind {
    VirtualMachine,
    Disk,
    NetworkInterface,
}

impl DeletableKind {
    /// The kind of `id`, if it is one a drill may delete.
    pub fn of(id: &ResourceId) -> Option<Self> {
        let is = |x: &str| id.is_type(x);
        if is("Microsoft.Compute/virtualMachines") {
            Some(Self::VirtualMachine)
        } else if is("Microsoft.Compute/disks") {
            Some(Self::Disk)
        } else if is("Microsoft.Network/networkInterfaces") {
            Some(Self::NetworkInterface)
        } else {
            None
        }
    }

    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Self::VirtualMachine => VM_DELETE_API_VERSION,
            Self::Disk => DISK_API_VERSION,
            Self::NetworkInterface => NETWORK_API_VERSION,
        }
    }

    pub(crate) fn operation(self, delete: bool) -> &'static str {
        match (self, delete) {
            (Self::VirtualMachine, true) => "compute.vm.delete",
            (Self::VirtualMachine, false) => "compute.vm.get",
            (Self::Disk, true) => "compute.disk.delete",
            (Self::Disk, false) => "compute.disk.get",
            (Self::NetworkInterface, true) => "network.nic.delete",
            (Self::NetworkInterface, false) => "network.nic.get",
        }
    }
}

/// What a delete request answered.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteStarted {
    /// Done (200/204), or nothing was there (404).
    Gone,
    /// Accepted (202): follow this.
    Pending(PendingOperation),
}

pub(crate) fn kind_of(id: &ResourceId) -> Result<DeletableKind, ArmError> {
    DeletableKind::of(id).ok_or_else(|| {
        ArmError::invalid(
            "resourceId",
            format!(
                "{} is not a virtual machine, managed disk or network interface",
                id.full_type()
            ),
        )
    })
}

impl ArmClient {
    /// `DELETE {id}` of a VM, managed disk or NIC. Idempotent: a repeat after it is gone is `Gone`.
    pub async fn begin_delete_resource(&self, id: &ResourceId) -> Result<DeleteStarted, ArmError> {
        let kind = kind_of(id)?;
        let op = kind.operation(true);
        let url = self.id_url(id, &[], kind.api_version(), &[])?;
        let call = Call::new(op, Method::DELETE, url, sub_bucket(id)?);
        match self.send(&call).await {
            Ok(resp) => match self.pending_from(op, &resp, false)? {
                Some(p) if resp.status == 202 => Ok(DeleteStarted::Pending(p)),
                _ => Ok(DeleteStarted::Gone),
            },
            Err(e) if e.is_not_found() => Ok(DeleteStarted::Gone),
            Err(e) => Err(e),
        }
    }

    /// Whether `id` (a VM, managed disk or NIC) still exists: `GET` answering 404 says gone.
    pub async fn resource_exists(&self, id: &ResourceId) -> Result<bool, ArmError> {
        let kind = kind_of(id)?;
        let url = self.id_url(id, &[], kind.api_version(), &[])?;
        let call = Call::new(kind.operation(false), Method::GET, url, sub_bucket(id)?);
        match self.send(&call).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vms_disks_and_nics_are_deletable() {
        let id = |t: &str| {
            ResourceId::parse(&format!(
                "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-drill/providers/{t}/x"
            ))
            .expect("id")
        };
        assert_eq!(
            DeletableKind::of(&id("Microsoft.Compute/virtualMachines")),
            Some(DeletableKind::VirtualMachine)
        );
        assert_eq!(
            DeletableKind::of(&id("microsoft.compute/DISKS")),
            Some(DeletableKind::Disk)
        );
        assert_eq!(
            DeletableKind::of(&id("Microsoft.Network/networkInterfaces")),
            Some(DeletableKind::NetworkInterface)
        );
        assert_eq!(
            DeletableKind::of(&id("Microsoft.Network/virtualNetworks")),
            None
        );
        assert_eq!(DeletableKind::of(&id("Microsoft.KeyVault/vaults")), None);
    }
}
