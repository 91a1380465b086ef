//! Microsoft.Resources deployments of the templates a restore-disks job wrote: when a deployment
//! completes it creates the VM from the recovery point's disks, without the ADE extension (as
//! Azure's generated template does), so a Linux VM's encrypted data disks come up locked.

use super::{
    iso_duration, lc, ts, vm_resource_id, Disk, Failure, OpKindState, RestoredDisks, VmState, World,
};
use crate::fleet::{OsType, PowerState};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum DeploymentState {
    Running,
    Succeeded,
    Failed(Failure),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub template_uri: String,
    pub vm_name: String,
    pub start: DateTime<Utc>,
    pub done_at: DateTime<Utc>,
    pub state: DeploymentState,
    pub correlation_id: String,
    pub output_vm: Option<String>,
    /// The tags the template gives its VM (the VM and its NIC get them).
    pub tags: BTreeMap<String, String>,
}

impl World {
    /// Start a deployment; `tick` completes it at its `done_at`. Returns the operation id.
    pub fn start_deployment(&mut self, mut dep: Deployment) -> String {
        let key = lc(&dep.id);
        // A PUT of a deployment that already ran is an incremental redeploy (ARM's default
        // mode): the VM it created is kept, not a conflict.
        if let Some(prev) = self.deployments.get(&key) {
            dep.output_vm = prev.output_vm.clone();
        }
        self.deployments.insert(key.clone(), dep);
        self.active_deployments.insert(key.clone());
        self.insert_operation(Utc::now(), OpKindState::Deployment { key }, None)
    }

    /// A deployment reached its `done_at`: create its VM from the restored disks, unless the
    /// template is gone or a VM of that name exists (one this same deployment created is kept).
    pub(super) fn complete_deployment(&mut self, key: &str) {
        let Some(dep) = self.deployments.get(key).cloned() else {
            return;
        };
        let Some(restored) = self.restored.get(&lc(&dep.template_uri)).cloned() else {
            self.set_deployment(
                key,
                DeploymentState::Failed(Failure::new("InvalidContentLink", "template is gone")),
                None,
            );
            return;
        };
        let id = vm_resource_id(&dep.subscription, &dep.resource_group, &dep.vm_name);
        let redeploy = dep.output_vm.as_deref().is_some_and(|v| lc(v) == lc(&id));
        if redeploy && self.vms.contains_key(&lc(&id)) {
            self.set_deployment(key, DeploymentState::Succeeded, Some(id));
            return;
        }
        if self.vms.contains_key(&lc(&id)) {
            self.set_deployment(
                key,
                DeploymentState::Failed(Failure::new(
                    "Conflict",
                    format!("A virtual machine named {} already exists in resource group {}; the restored disks cannot be attached to it.", dep.vm_name, dep.resource_group),
                )),
                None,
            );
            return;
        }
        if self.field.deployments_failing.contains(&lc(&dep.vm_name)) {
            let f = Failure::new(
                "SkuNotAvailable",
                format!("The requested VM size for resource '{id}' is currently not available in location '{}'. Please try another size or deploy to a different location or zones.", restored.rp.location),
            );
            self.set_deployment(key, DeploymentState::Failed(f), None);
            return;
        }
        let vm = restored_vm_state(&dep, &restored, id.clone());
        self.register_vm_resources(&vm);
        self.vms.insert(lc(&id), vm);
        self.set_deployment(key, DeploymentState::Succeeded, Some(id));
    }

    fn set_deployment(&mut self, key: &str, state: DeploymentState, vm: Option<String>) {
        if let Some(d) = self.deployments.get_mut(key) {
            d.state = state;
            d.output_vm = vm;
        }
    }

    pub fn deployment_json(&self, d: &Deployment, now: DateTime<Utc>) -> Value {
        let (state, error) = match &d.state {
            DeploymentState::Running => ("Running", None),
            DeploymentState::Succeeded => ("Succeeded", None),
            DeploymentState::Failed(f) => ("Failed", Some(f)),
        };
        let end = if d.state == DeploymentState::Running {
            now
        } else {
            d.done_at
        };
        let mut props = json!({
            "provisioningState": state,
            "timestamp": ts(end),
            "duration": iso_duration(end - d.start),
            "correlationId": d.correlation_id,
            "mode": "Incremental",
            "templateLink": {"uri": d.template_uri},
            "parameters": {"VirtualMachineName": {"type": "String", "value": d.vm_name}},
            "outputResources": output_resources(d)
        });
        if let Some(f) = error {
            props["error"] = json!({"code": "DeploymentFailed", "message": "At least one resource deployment operation failed.", "details": [{"code": f.code, "message": f.message}]});
        }
        json!({"id": d.id, "name": d.name, "type": "Microsoft.Resources/deployments", "properties": props})
    }
}

/// `properties.outputResources`: the VM and the NIC the template created (the disks came from the
/// restore job, attached by the template).
fn output_resources(d: &Deployment) -> Vec<Value> {
    let Some(vm) = &d.output_vm else {
        return vec![];
    };
    let nic = super::resource_id(
        &d.subscription,
        &d.resource_group,
        super::NIC_TYPE,
        &format!("{}-nic", d.vm_name),
    );
    vec![json!({"id": vm}), json!({"id": nic})]
}

/// The VM a deployment creates (resource id `id`) from the disks the restore job created. It
/// carries the recovery point's encryption as `restored_encryption`; a Linux VM's encrypted
/// data disks are locked until ADE is reinstalled.
fn restored_vm_state(dep: &Deployment, restored: &RestoredDisks, id: String) -> VmState {
    let rp = &restored.rp;
    let locked =
        rp.encryption.is_some() && rp.os_type == OsType::Linux && !rp.data_disks.is_empty();
    let vm_id = ade_backup_shared::ids::deterministic_uuid(&["vm", &lc(&id), &dep.correlation_id])
        .to_string();
    VmState {
        id,
        subscription: dep.subscription.clone(),
        resource_group: dep.resource_group.clone(),
        name: dep.vm_name.clone(),
        location: rp.location.clone(),
        os_type: rp.os_type,
        vm_size: rp.vm_size.clone(),
        vm_id,
        os_disk: Disk {
            name: restored.disk_names.first().cloned().unwrap_or_default(),
            ..rp.os_disk.clone()
        },
        data_disks: rp
            .data_disks
            .iter()
            .enumerate()
            .map(|(i, d)| Disk {
                name: restored.disk_names.get(i + 1).cloned().unwrap_or_default(),
                ..d.clone()
            })
            .collect(),
        tags: dep.tags.clone(),
        power_state: PowerState::Running,
        extensions: BTreeMap::new(),
        encryption: None,
        data_disks_locked: locked,
        restored_encryption: rp.encryption.clone(),
        guest: Default::default(),
        created: dep.done_at,
    }
}
