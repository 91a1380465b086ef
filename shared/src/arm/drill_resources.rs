//! What a restore drill reads and writes on the resources it may delete, besides the delete:
//! one VM, managed disk or NIC by id with its tags and what it is attached to (`GET`), the tags
//! of a managed disk (`Disks_Update`, `PATCH {id}` with `{"tags": …}`: the tags given replace
//! the disk's, so callers send the merged set), and the managed disks of one resource group
//! (`Disks_ListByResourceGroup`, `nextLink` paged). All in the drill resource group, under its
//! role assignments; nothing here reads above a resource group.
//!
//! Shapes (Azure/azure-rest-api-specs, compute DiskRP 2024-03-02 `disk.json`: `Disk.managedBy`,
//! `DiskUpdate.tags`; network 2024-05-01 `NetworkInterface.properties.virtualMachine.id`;
//! compute 2024-07-01 `VirtualMachine.tags`).

use super::client::{sub_bucket, ArmClient, Call};
use super::delete::{kind_of, DeletableKind, DISK_API_VERSION};
use super::error::ArmError;
use super::scope::ResourceGroupRef;
use crate::ids::ResourceId;
use reqwest::Method;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A VM, managed disk or NIC as a drill's clean-up sees it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaggedResource {
    #[serde(default)]
    pub id: Option<String>,
    /// Non-string tag values are dropped (ARM tags are strings).
    #[serde(default, deserialize_with = "string_tags")]
    pub tags: BTreeMap<String, String>,
    /// A disk: the VM it is attached to.
    #[serde(default)]
    pub managed_by: Option<String>,
    #[serde(default)]
    pub properties: TaggedProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaggedProperties {
    /// A NIC: the VM it is attached to.
    #[serde(default)]
    pub virtual_machine: Option<SubRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SubRef {
    #[serde(default)]
    pub id: Option<String>,
}

fn string_tags<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
        .collect())
}

impl TaggedResource {
    /// The tag `name` (tag names are case-insensitive in ARM; values are compared as given).
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The VM it is attached to (a disk's `managedBy`, a NIC's `virtualMachine`), if any.
    pub fn attached_to(&self) -> Option<&str> {
        self.managed_by
            .as_deref()
            .or(self
                .properties
                .virtual_machine
                .as_ref()
                .and_then(|v| v.id.as_deref()))
            .filter(|s| !s.is_empty())
    }
}

impl ArmClient {
    /// `GET {id}` of a VM, managed disk or NIC; `None`: 404 (it does not exist).
    pub async fn get_tagged_resource(
        &self,
        id: &ResourceId,
    ) -> Result<Option<TaggedResource>, ArmError> {
        let kind = kind_of(id)?;
        let url = self.id_url(id, &[], kind.api_version(), &[])?;
        let call = Call::new(kind.operation(false), Method::GET, url, sub_bucket(id)?);
        match self.send_json::<TaggedResource>(&call).await {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Disks_Update` with `{"tags": tags}` (replaces the disk's tags). Any 2xx is accepted
    /// (200 done, 202 accepted); callers confirm with [`Self::get_tagged_resource`].
    pub async fn patch_disk_tags(
        &self,
        id: &ResourceId,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ArmError> {
        if DeletableKind::of(id) != Some(DeletableKind::Disk) {
            return Err(ArmError::invalid(
                "resourceId",
                format!("{} is not a managed disk", id.full_type()),
            ));
        }
        let url = self.id_url(id, &[], DISK_API_VERSION, &[])?;
        let body = serde_json::json!({ "tags": tags });
        let call =
            Call::new("compute.disk.update", Method::PATCH, url, sub_bucket(id)?).json(&body)?;
        self.send(&call).await.map(|_| ())
    }

    /// `Disks_ListByResourceGroup`: every managed disk of `rg`.
    pub async fn list_disks(&self, rg: &ResourceGroupRef) -> Result<Vec<TaggedResource>, ArmError> {
        let url = self.subscription_url(
            rg.subscription(),
            &[
                "resourceGroups",
                rg.name(),
                "providers",
                "Microsoft.Compute",
                "disks",
            ],
            DISK_API_VERSION,
            &[],
        )?;
        let bucket = super::client::Bucket::Subscription(rg.subscription());
        self.list_all("compute.disk.list", url, bucket, false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_attachment_are_read_from_real_shapes() {
        let disk: TaggedResource = serde_json::from_value(serde_json::json!({
            "id": "/subscriptions/s/resourceGroups/rg-drill/providers/Microsoft.Compute/disks/d",
            "tags": {"Ade-Backup-Drill": "drill-1", "n": 1},
            "managedBy": "/subscriptions/s/resourceGroups/rg-drill/providers/Microsoft.Compute/virtualMachines/vm",
            "properties": {"diskState": "Attached"}
        }))
        .expect("disk");
        assert_eq!(disk.tag("ade-backup-drill"), Some("drill-1"));
        assert_eq!(disk.tags.len(), 1, "a non-string value is dropped");
        assert!(disk.attached_to().is_some_and(|v| v.ends_with("/vm")));
        let nic: TaggedResource = serde_json::from_value(serde_json::json!({
            "tags": null,
            "properties": {"virtualMachine": {"id": "/x/vm2"}}
        }))
        .expect("nic");
        assert_eq!(nic.attached_to(), Some("/x/vm2"));
        assert_eq!(nic.tag("ade-backup-drill"), None);
        let free: TaggedResource =
            serde_json::from_value(serde_json::json!({"managedBy": ""})).expect("free");
        assert_eq!(free.attached_to(), None);
    }
}
