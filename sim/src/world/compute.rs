//! Microsoft.Compute: virtual machines, their disks and extensions. Owns the VM model, adding a
//! fleet's VMs, the extension lifecycle (put, then succeed or fail when `tick` reaches its
//! `ready_at`) and the ARM rendering of VMs, instance views and extensions. Shapes follow
//! compute `VirtualMachine_Get_WithInstanceView` (2024-07-01).

use super::source_vm::disk_reference;
use super::{lc, resource_id, ts, Encryption, OpKindState, World};
use crate::fleet::{self, OsType, PowerState};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Disk {
    pub name: String,
    pub lun: Option<u32>,
    pub size_gb: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum ExtState {
    Creating,
    Succeeded,
    Failed(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Extension {
    pub name: String,
    pub publisher: String,
    pub ext_type: String,
    pub type_handler_version: String,
    pub settings: Value,
    pub state: ExtState,
    pub ready_at: DateTime<Utc>,
}

impl Extension {
    pub fn is_ade(&self) -> bool {
        self.publisher
            .eq_ignore_ascii_case("Microsoft.Azure.Security")
            && (self.ext_type.eq_ignore_ascii_case("AzureDiskEncryption")
                || self
                    .ext_type
                    .eq_ignore_ascii_case("AzureDiskEncryptionForLinux"))
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VmState {
    pub id: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub os_type: OsType,
    pub vm_size: String,
    pub vm_id: String,
    pub os_disk: Disk,
    pub data_disks: Vec<Disk>,
    pub tags: BTreeMap<String, String>,
    pub power_state: PowerState,
    pub extensions: BTreeMap<String, Extension>,
    pub encryption: Option<Encryption>,
    /// Data disks restored from an ADE backup of a Linux VM stay locked until the ADE extension
    /// is reinstalled with the settings they were encrypted with.
    pub data_disks_locked: bool,
    pub restored_encryption: Option<Encryption>,
    pub created: DateTime<Utc>,
    /// The VM agent and disk kind (see `source_vm`).
    pub guest: super::GuestModel,
}

pub fn vm_resource_id(sub: &str, rg: &str, name: &str) -> String {
    resource_id(sub, rg, "Microsoft.Compute/virtualMachines", name)
}

/// A fleet VM as created 90 days before `now`, unencrypted and without extensions.
fn fleet_vm_state(vm: &fleet::Vm, now: DateTime<Utc>) -> VmState {
    let id = vm_resource_id(&vm.subscription, &vm.resource_group, &vm.name);
    let vm_id = ade_backup_shared::ids::deterministic_uuid(&["vm", &lc(&id)]).to_string();
    VmState {
        id,
        subscription: vm.subscription.clone(),
        resource_group: vm.resource_group.clone(),
        name: vm.name.clone(),
        location: vm.location.clone(),
        os_type: vm.os_type,
        vm_size: vm.vm_size.clone(),
        vm_id,
        os_disk: Disk {
            name: format!("{}_OsDisk_1", vm.name),
            lun: None,
            size_gb: vm.os_disk_size_gb,
        },
        data_disks: vm
            .data_disks
            .iter()
            .enumerate()
            .map(|(i, d)| Disk {
                name: format!("{}_DataDisk_{i}", vm.name),
                lun: Some(i as u32),
                size_gb: d.size_gb,
            })
            .collect(),
        tags: vm.tags.clone(),
        power_state: vm.power_state,
        extensions: BTreeMap::new(),
        encryption: None,
        data_disks_locked: false,
        restored_encryption: None,
        created: now - Duration::days(90),
        guest: super::GuestModel {
            agent: vm.vm_agent,
            unmanaged_disks: vm.unmanaged_disks,
        },
    }
}

impl World {
    /// Add a fleet's VM with its ADE (see `ade`) and its protection (see `recovery_services`).
    pub(crate) fn add_fleet_vm(&mut self, vm: &fleet::Vm, now: DateTime<Utc>) {
        let mut state = fleet_vm_state(vm, now);
        self.apply_fleet_ade(&mut state, vm);
        if let Some(p) = &vm.protection {
            self.protect_fleet_vm(&state, p, now);
        }
        self.vms.insert(lc(&state.id), state);
    }

    /// An extension reached its `ready_at`: it succeeds, unless it is ADE and its settings fail.
    pub(super) fn complete_extension(&mut self, vm_key: &str, ext_key: &str) {
        let Some(mut vm) = self.vms.remove(vm_key) else {
            return;
        };
        if let Some(ext) = vm.extensions.get(ext_key).cloned() {
            let mut state = ExtState::Succeeded;
            if ext.is_ade() {
                let op = ext.settings["EncryptionOperation"].as_str().unwrap_or("");
                if op.eq_ignore_ascii_case("EnableEncryption") {
                    match self.apply_ade(&mut vm, &ext.settings) {
                        Ok(enc) => vm.encryption = Some(enc),
                        Err(msg) => state = ExtState::Failed(msg),
                    }
                } else if op.eq_ignore_ascii_case("DisableEncryption") {
                    vm.encryption = None;
                }
            }
            if let Some(e) = vm.extensions.get_mut(ext_key) {
                e.state = state;
            }
        }
        self.vms.insert(vm_key.to_string(), vm);
    }

    /// Put (create or update) a VM extension; returns the operation id.
    pub fn put_extension(
        &mut self,
        vm_key: &str,
        ext: Extension,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let secs = if ext.is_ade() {
            self.durations.ade_extension_secs
        } else {
            self.durations.other_extension_secs
        };
        let key = lc(&ext.name);
        let vm = self.vms.get_mut(vm_key)?;
        let ext = Extension {
            ready_at: now + Duration::seconds(secs),
            state: ExtState::Creating,
            ..ext
        };
        vm.extensions.insert(key.clone(), ext);
        self.active_extensions
            .insert((vm_key.to_string(), key.clone()));
        let kind = OpKindState::Extension {
            vm_key: vm_key.to_string(),
            ext: key,
        };
        Some(self.insert_operation(now, kind, None))
    }

    pub fn vm_json(&self, vm: &VmState, instance_view: bool, now: DateTime<Utc>) -> Value {
        let mut props = json!({
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.vm_size},
            "storageProfile": storage_profile_json(vm),
            "osProfile": {
                "computerName": vm.name,
                "adminUsername": "azureuser",
                "allowExtensionOperations": true,
                "requireGuestProvisionSignal": true
            },
            "networkProfile": {"networkInterfaces": [{"id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}-nic", vm.subscription, vm.resource_group, vm.name)}]},
            "provisioningState": "Succeeded",
            "timeCreated": ts(vm.created)
        });
        if vm.os_type == OsType::Windows {
            props["osProfile"]["windowsConfiguration"] =
                json!({"provisionVMAgent": true, "enableAutomaticUpdates": true});
        } else {
            props["osProfile"]["linuxConfiguration"] =
                json!({"disablePasswordAuthentication": true, "provisionVMAgent": true});
        }
        if instance_view {
            props["instanceView"] = self.instance_view(vm, now);
        }
        let resources: Vec<Value> = vm
            .extensions
            .values()
            .map(|e| json!({"id": format!("{}/extensions/{}", vm.id, e.name)}))
            .collect();
        let mut out = json!({
            "name": vm.name,
            "id": vm.id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": vm.location,
            "tags": vm.tags,
            "properties": props
        });
        if !resources.is_empty() {
            out["resources"] = json!(resources);
        }
        out
    }

    /// Per-disk encryption state as the instance view reports it.
    pub fn disk_states(&self, vm: &VmState) -> Vec<(Disk, &'static str)> {
        let mut out = Vec::new();
        let enc_vol = vm.encryption.as_ref().map(|e| lc(&e.volume_type));
        let os_state = match (&enc_vol, &vm.restored_encryption) {
            (Some(v), _) if v != "data" => "encrypted",
            (None, Some(_)) if vm.os_type == OsType::Windows => "encrypted",
            _ => "notEncrypted",
        };
        out.push((vm.os_disk.clone(), os_state));
        for d in &vm.data_disks {
            let st = if vm.data_disks_locked {
                "locked"
            } else {
                match &enc_vol {
                    Some(v) if v != "os" => "encrypted",
                    _ => "notEncrypted",
                }
            };
            out.push((d.clone(), st));
        }
        out
    }

    fn instance_view(&self, vm: &VmState, now: DateTime<Utc>) -> Value {
        let enc = vm.encryption.as_ref().or(vm.restored_encryption.as_ref());
        let disks: Vec<Value> = self
            .disk_states(vm)
            .into_iter()
            .map(|(d, st)| {
                let mut v = json!({
                    "name": d.name,
                    "statuses": [
                        {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": ts(vm.created)},
                        {"code": format!("EncryptionState/{st}"), "level": if st == "locked" { "Warning" } else { "Info" },
                         "displayStatus": match st { "encrypted" => "Encryption is enabled on disk", "locked" => "Disk is encrypted but locked: the Azure Disk Encryption extension is not installed", _ => "Encryption is not enabled on disk" }}
                    ]
                });
                if let (true, Some(e)) = (st != "notEncrypted", enc) {
                    v["encryptionSettings"] = json!([e.settings_json()]);
                }
                v
            })
            .collect();
        let extensions: Vec<Value> = vm
            .extensions
            .values()
            .map(|e| {
                let (code, level, display, msg) = match &e.state {
                    ExtState::Creating => ("ProvisioningState/transitioning", "Info", "Provisioning in progress", "Enable in progress".to_string()),
                    ExtState::Succeeded => ("ProvisioningState/succeeded", "Info", "Provisioning succeeded", if e.is_ade() { "Encryption succeeded for data volumes".to_string() } else { "Enable succeeded".to_string() }),
                    ExtState::Failed(m) => ("ProvisioningState/failed", "Error", "Provisioning failed", m.clone()),
                };
                let mut v = json!({
                    "name": e.name,
                    "type": format!("{}.{}", e.publisher, e.ext_type),
                    "typeHandlerVersion": e.type_handler_version,
                    "statuses": [{"code": code, "level": level, "displayStatus": display, "message": msg, "time": ts(e.ready_at.min(now))}]
                });
                if e.is_ade() && e.state == ExtState::Succeeded {
                    v["substatuses"] = json!([self.ade_encryption_substatus(vm)]);
                }
                v
            })
            .collect();
        let (power_code, power_display) = match vm.power_state {
            PowerState::Running => ("PowerState/running", "VM running"),
            PowerState::Stopped => ("PowerState/stopped", "VM stopped"),
            PowerState::Deallocated => ("PowerState/deallocated", "VM deallocated"),
        };
        json!({
            "computerName": vm.name,
            "osName": if vm.os_type == OsType::Windows { "Windows Server 2022 Datacenter" } else { "ubuntu" },
            "osVersion": if vm.os_type == OsType::Windows { "10.0.20348" } else { "22.04" },
            "vmAgent": self.vm_agent_json(vm, now),
            "disks": disks,
            "extensions": extensions,
            "hyperVGeneration": "V2",
            "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": ts(vm.created)},
                {"code": power_code, "level": "Info", "displayStatus": power_display}
            ]
        })
    }

    /// The ADE extension's encryption substatus, as `az vm encryption show` reads it: code
    /// `ComponentStatus/EncryptionStatus/succeeded`, message a JSON object with the OS and data
    /// volumes' state (`Encrypted`, `NotEncrypted`, `NotMounted` for a locked data disk).
    fn ade_encryption_substatus(&self, vm: &VmState) -> Value {
        let states = self.disk_states(vm);
        let word = |st: &str| match st {
            "encrypted" => "Encrypted",
            "locked" => "NotMounted",
            _ => "NotEncrypted",
        };
        let os = states
            .first()
            .map(|(_, st)| word(st))
            .unwrap_or("NotEncrypted");
        let data = if states.len() <= 1 {
            "NotEncrypted"
        } else if states.iter().skip(1).all(|(_, st)| *st == "encrypted") {
            "Encrypted"
        } else if states.iter().skip(1).any(|(_, st)| *st == "locked") {
            "NotMounted"
        } else {
            "NotEncrypted"
        };
        let message = json!({"os": os, "data": data}).to_string();
        json!({"code": "ComponentStatus/EncryptionStatus/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "message": message})
    }

    pub fn extension_json(&self, vm: &VmState, e: &Extension) -> Value {
        let state = match e.state {
            ExtState::Creating => "Creating",
            ExtState::Succeeded => "Succeeded",
            ExtState::Failed(_) => "Failed",
        };
        json!({
            "name": e.name,
            "id": format!("{}/extensions/{}", vm.id, e.name),
            "type": "Microsoft.Compute/virtualMachines/extensions",
            "location": vm.location,
            "properties": {
                "autoUpgradeMinorVersion": true,
                "provisioningState": state,
                "publisher": e.publisher,
                "type": e.ext_type,
                "typeHandlerVersion": e.type_handler_version,
                "settings": e.settings
            }
        })
    }
}

/// A VM's `storageProfile`: its OS disk (with encryption settings when the OS volume is
/// encrypted) and data disks, managed unless the fleet says unmanaged (`vhd`).
fn storage_profile_json(vm: &VmState) -> Value {
    let disk_id = |name: &str| {
        resource_id(
            &vm.subscription,
            &vm.resource_group,
            "Microsoft.Compute/disks",
            name,
        )
    };
    let enc = vm.encryption.as_ref().or(vm.restored_encryption.as_ref());
    let os_encrypted = vm
        .encryption
        .as_ref()
        .is_some_and(|e| !e.volume_type.eq_ignore_ascii_case("Data"))
        || (vm.restored_encryption.is_some() && vm.os_type == OsType::Windows);
    let mut os_disk = json!({
        "osType": vm.os_type.as_str(),
        "name": vm.os_disk.name,
        "createOption": "FromImage",
        "caching": "ReadWrite",
        "deleteOption": "Detach",
        "diskSizeGB": vm.os_disk.size_gb
    });
    let (kind, reference) = disk_reference(vm, &vm.os_disk.name, disk_id(&vm.os_disk.name));
    os_disk[kind] = reference;
    if let (true, Some(e)) = (os_encrypted, enc) {
        os_disk["encryptionSettings"] = e.settings_json();
    }
    let data_disks: Vec<Value> = vm
        .data_disks
        .iter()
        .map(|d| {
            let mut disk = json!({
                "lun": d.lun.unwrap_or(0),
                "name": d.name,
                "createOption": "Attach",
                "caching": "None",
                "deleteOption": "Detach",
                "diskSizeGB": d.size_gb,
                "toBeDetached": false
            });
            let (kind, reference) = disk_reference(vm, &d.name, disk_id(&d.name));
            disk[kind] = reference;
            disk
        })
        .collect();
    json!({"osDisk": os_disk, "dataDisks": data_disks})
}
