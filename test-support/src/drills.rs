//! Restore drills on the [`SimStack`]: settings with a drill target (`rg-drill` in the first
//! subscription, the `vnet-weu/restore` subnet, the WEU staging account) granted by the restore
//! allowlist, and readers of the drill documents.

use crate::sim_stack::{SimStack, S1, S2, STAGING_WEU};
use ade_backup_functions::records::{drill_key, DrillRecord};

pub const DRILL_RG: &str = "rg-drill";

/// The drill subnet: isolated, in `rg-network`.
pub fn drill_subnet() -> String {
    format!("/subscriptions/{S1}/resourceGroups/rg-network/providers/Microsoft.Network/virtualNetworks/vnet-weu/subnets/restore")
}

/// `ADE_BACKUP_*` overrides for drills, plus `extra`.
pub fn drill_settings(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let allow = format!(
        r#"{{"entries": [
            {{"subscription": "{S1}", "sourceResourceGroups": ["*"], "resourceGroups": ["rg-restore", "rg-backup", "{DRILL_RG}"], "subnetResourceGroups": ["rg-network"]}},
            {{"subscription": "{S2}", "sourceResourceGroups": ["*"], "resourceGroups": ["rg-restore", "rg-backup"], "subnetResourceGroups": ["rg-network"]}}
        ]}}"#
    );
    let targets = format!(
        r#"{{"targets": [{{"resourceGroup": "/subscriptions/{S1}/resourceGroups/{DRILL_RG}", "subnetId": "{}", "stagingStorageAccountId": "{STAGING_WEU}"}}]}}"#,
        drill_subnet()
    );
    let mut v = vec![
        ("ADE_BACKUP_RESTORE_ALLOWLIST", allow),
        ("ADE_BACKUP_DRILL_TARGETS", targets),
        ("ADE_BACKUP_DRILL_NOTIFY_QUEUE", "drill-alerts".to_string()),
    ];
    for (k, val) in extra {
        v.retain(|(n, _)| n != k);
        v.push((k, val.clone()));
    }
    v
}

impl SimStack {
    /// A stack with [`drill_settings`].
    pub async fn start_drills(extra: &[(&'static str, String)]) -> SimStack {
        let vars = drill_settings(extra);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        SimStack::start_with(&refs).await
    }

    /// The drill document `id`.
    pub fn drill(&self, id: &str) -> DrillRecord {
        let v = self.state.json(&drill_key(id)).expect("a drill document");
        serde_json::from_value(v).expect("a drill document")
    }

    /// Messages sent to `queue` that no function handles (notifications), as JSON.
    pub fn unrouted_json(&self, queue: &str) -> Vec<serde_json::Value> {
        self.pump
            .unrouted()
            .into_iter()
            .filter(|m| m.queue == queue)
            .map(|m| serde_json::from_slice(&m.body).expect("json"))
            .collect()
    }
}
