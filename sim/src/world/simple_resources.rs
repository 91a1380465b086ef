//! Resources the simulator stores but gives no behaviour of their own: storage accounts (the
//! staging account a restore writes its disks and template to) and virtual networks (listed by
//! Resource Graph). Both are keyed by lower-case resource id.

use super::{lc, resource_id, World};
use crate::fleet::Fleet;
use serde_json::{json, Value};

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimpleResource {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub rtype: &'static str,
    pub properties: Value,
}

impl World {
    /// Add a fleet's storage accounts and virtual networks (keyed by lower-case resource id).
    pub(super) fn add_fleet_simple_resources(&mut self, fleet: &Fleet) {
        for sa in &fleet.storage_accounts {
            let id = resource_id(
                &sa.subscription,
                &sa.resource_group,
                "Microsoft.Storage/storageAccounts",
                &sa.name,
            );
            self.storage_accounts.insert(
                lc(&id),
                SimpleResource {
                    id: id.clone(),
                    name: sa.name.clone(),
                    subscription: sa.subscription.clone(),
                    resource_group: sa.resource_group.clone(),
                    location: sa.location.clone(),
                    rtype: "Microsoft.Storage/storageAccounts",
                    properties: json!({
                        "provisioningState": "Succeeded",
                        "primaryEndpoints": {"blob": format!("https://{}.blob.core.windows.net/", sa.name)}
                    }),
                },
            );
        }
        for vn in &fleet.virtual_networks {
            let id = resource_id(
                &vn.subscription,
                &vn.resource_group,
                "Microsoft.Network/virtualNetworks",
                &vn.name,
            );
            let subnets: Vec<Value> = vn
                .subnets
                .iter()
                .map(|s| json!({"id": format!("{id}/subnets/{s}"), "name": s}))
                .collect();
            self.virtual_networks.insert(
                lc(&id),
                SimpleResource {
                    id: id.clone(),
                    name: vn.name.clone(),
                    subscription: vn.subscription.clone(),
                    resource_group: vn.resource_group.clone(),
                    location: vn.location.clone(),
                    rtype: "Microsoft.Network/virtualNetworks",
                    properties: json!({"provisioningState": "Succeeded", "subnets": subnets}),
                },
            );
        }
    }
}
