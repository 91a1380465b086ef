//! The tables of the simulated Resource Graph, rendered lazily: a table is first a list of
//! [`RowRef`]s (which resource, its type and subscription: no JSON), and a row is rendered only
//! when a query's condition needs its properties or a page serves it. A 100,000-VM world then
//! costs a query only the rows it asks for, not the whole table per query.

use crate::world::{lc, World};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// One row of a table, named by the key of its resource in the world.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRef {
    Vm(String),
    /// (VM key, extension name).
    Extension(String, String),
    KeyVault(String),
    RsVault(String),
    StorageAccount(String),
    VirtualNetwork(String),
    ProtectedItem(String),
    Job(String),
    RoleAssignment(String),
}

/// The rows of a Resource Graph table, unrendered: `resources` (VMs and their extensions, key
/// vaults, Recovery Services vaults, storage accounts, virtual networks),
/// `recoveryservicesresources` (protected items, backup jobs), `authorizationresources` (role
/// assignments).
pub fn table_refs(w: &World, table: &str) -> Vec<RowRef> {
    match table {
        "resources" => {
            let mut refs = Vec::new();
            for (k, vm) in &w.vms {
                refs.push(RowRef::Vm(k.clone()));
                for e in vm.extensions.keys() {
                    refs.push(RowRef::Extension(k.clone(), e.clone()));
                }
            }
            refs.extend(keys(&w.key_vaults, RowRef::KeyVault));
            refs.extend(keys(&w.rs_vaults, RowRef::RsVault));
            refs.extend(keys(&w.storage_accounts, RowRef::StorageAccount));
            refs.extend(keys(&w.virtual_networks, RowRef::VirtualNetwork));
            refs
        }
        "recoveryservicesresources" => {
            let mut refs = keys(&w.protected_items, RowRef::ProtectedItem);
            refs.extend(keys(&w.jobs, RowRef::Job));
            refs
        }
        "authorizationresources" => keys(&w.role_assignments, RowRef::RoleAssignment),
        _ => Vec::new(),
    }
}

impl RowRef {
    /// The row's `type` (lower-case), without rendering it.
    pub fn rtype(&self, w: &World) -> String {
        lc(match self {
            RowRef::Vm(_) => "Microsoft.Compute/virtualMachines",
            RowRef::Extension(..) => "Microsoft.Compute/virtualMachines/extensions",
            RowRef::KeyVault(_) => "Microsoft.KeyVault/vaults",
            RowRef::RsVault(_) => "Microsoft.RecoveryServices/vaults",
            RowRef::StorageAccount(k) => w.storage_accounts.get(k).map_or("", |r| r.rtype),
            RowRef::VirtualNetwork(k) => w.virtual_networks.get(k).map_or("", |r| r.rtype),
            RowRef::ProtectedItem(_) => {
                "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems"
            }
            RowRef::Job(_) => "Microsoft.RecoveryServices/vaults/backupJobs",
            RowRef::RoleAssignment(_) => "Microsoft.Authorization/roleAssignments",
        })
    }

    /// The row's `subscriptionId`, without rendering it (`None` once the resource is gone).
    pub fn subscription<'a>(&self, w: &'a World) -> Option<&'a str> {
        let vault = |k: &String| w.rs_vaults.get(k).map(|v| v.subscription.as_str());
        match self {
            RowRef::Vm(k) | RowRef::Extension(k, _) => {
                w.vms.get(k).map(|v| v.subscription.as_str())
            }
            RowRef::KeyVault(k) => w.key_vaults.get(k).map(|v| v.subscription.as_str()),
            RowRef::RsVault(k) => vault(k),
            RowRef::StorageAccount(k) => w.storage_accounts.get(k).map(|r| r.subscription.as_str()),
            RowRef::VirtualNetwork(k) => w.virtual_networks.get(k).map(|r| r.subscription.as_str()),
            RowRef::ProtectedItem(k) => w.protected_items.get(k).and_then(|i| vault(&i.vault_key)),
            RowRef::Job(k) => w.jobs.get(k).and_then(|j| vault(&j.vault_key)),
            RowRef::RoleAssignment(k) => w
                .role_assignments
                .get(k)
                .map(|ra| ra.scope.split('/').nth(2).unwrap_or_default()),
        }
    }

    /// The row as Resource Graph returns it; `None` when the resource is gone.
    pub fn render(&self, w: &World, now: DateTime<Utc>) -> Option<Value> {
        match self {
            RowRef::Vm(k) => w.vms.get(k).map(|vm| {
                let mut full = w.vm_json(vm, false, now);
                let power = vm.power_state.as_str();
                full["properties"]["extended"] = json!({"instanceView": {"powerState": {"code": format!("PowerState/{power}"), "level": "Info", "displayStatus": format!("VM {power}")}}});
                let rg = Rg::new(&vm.location, &vm.subscription, &vm.resource_group);
                row(w, &vm.id, &vm.name, self, &rg, json!(vm.tags), full["properties"].take())
            }),
            RowRef::Extension(k, name) => {
                let vm = w.vms.get(k)?;
                let e = vm.extensions.get(name)?;
                let mut ej = w.extension_json(vm, e);
                let rg = Rg::new(&vm.location, &vm.subscription, &vm.resource_group);
                let id = format!("{}/extensions/{}", vm.id, e.name);
                Some(row(w, &id, &e.name, self, &rg, json!({}), ej["properties"].take()))
            }
            RowRef::KeyVault(k) => w.key_vaults.get(k).map(|kv| {
                let mut j = w.kv_json(kv);
                let rg = Rg::new(&kv.location, &kv.subscription, &kv.resource_group);
                row(w, &kv.id, &kv.name, self, &rg, json!({}), j["properties"].take())
            }),
            RowRef::RsVault(k) => w.rs_vaults.get(k).map(|v| {
                let mut j = w.rs_vault_json(v);
                let rg = Rg::new(&v.location, &v.subscription, &v.resource_group);
                row(w, &v.id, &v.name, self, &rg, json!({}), j["properties"].take())
            }),
            RowRef::StorageAccount(k) => w.storage_accounts.get(k).map(|r| simple(w, r, self)),
            RowRef::VirtualNetwork(k) => w.virtual_networks.get(k).map(|r| simple(w, r, self)),
            RowRef::ProtectedItem(k) => {
                let item = w.protected_items.get(k)?;
                let v = w.rs_vaults.get(&item.vault_key)?;
                let mut j = w.protected_item_json(item);
                let rg = Rg::new(&v.location, &v.subscription, &v.resource_group);
                let id = w.protected_item_id(item);
                Some(row(w, &id, &item.name, self, &rg, json!({}), j["properties"].take()))
            }
            RowRef::Job(k) => {
                let job = w.jobs.get(k)?;
                let v = w.rs_vaults.get(&job.vault_key)?;
                let mut j = w.job_json(job, false, now);
                let id = j["id"].as_str().unwrap_or_default().to_string();
                let rg = Rg::new(&v.location, &v.subscription, &v.resource_group);
                Some(row(w, &id, &job.id, self, &rg, json!({}), j["properties"].take()))
            }
            RowRef::RoleAssignment(k) => w.role_assignments.get(k).map(|ra| {
                let sub = ra.scope.split('/').nth(2).unwrap_or_default();
                let group = ra.scope.split('/').nth(4).unwrap_or_default();
                let mut j = ra.to_json(&w.our_object_id);
                let rg = Rg::new("", sub, group);
                row(w, &ra.id, &ra.name, self, &rg, json!({}), j["properties"].take())
            }),
        }
    }
}

/// Where a row's resource lives.
struct Rg<'a> {
    location: &'a str,
    subscription: &'a str,
    group: &'a str,
}

impl<'a> Rg<'a> {
    fn new(location: &'a str, subscription: &'a str, group: &'a str) -> Self {
        Self {
            location,
            subscription,
            group,
        }
    }
}

fn simple(w: &World, r: &crate::world::SimpleResource, this: &RowRef) -> Value {
    let rg = Rg::new(&r.location, &r.subscription, &r.resource_group);
    row(
        w,
        &r.id,
        &r.name,
        this,
        &rg,
        json!({}),
        r.properties.clone(),
    )
}

/// A row in Resource Graph's column set.
fn row(
    w: &World,
    id: &str,
    name: &str,
    this: &RowRef,
    rg: &Rg,
    tags: Value,
    properties: Value,
) -> Value {
    json!({
        "id": id,
        "name": name,
        "type": this.rtype(w),
        "tenantId": w.tenant_id,
        "kind": "",
        "location": rg.location,
        "resourceGroup": lc(rg.group),
        "subscriptionId": rg.subscription,
        "managedBy": "",
        "sku": null,
        "plan": null,
        "properties": properties,
        "tags": tags,
        "identity": null,
        "zones": null,
        "extendedLocation": null
    })
}

fn keys<T>(m: &std::collections::BTreeMap<String, T>, f: fn(String) -> RowRef) -> Vec<RowRef> {
    m.keys().cloned().map(f).collect()
}
