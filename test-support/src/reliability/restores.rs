//! Restore tickets of the scenarios (3 and 4): the first VMs of a fleet made protected with a
//! recovery point, a restore request per such VM (as a ticketing system sends it to
//! `restore-requests`), the allowlist that lets them restore into `rg-restore`, and the census
//! of restore documents at the end of a run.

use crate::simulator::vm_id;
use ade_backup_shared::state::MemoryStateStore;
use ade_backup_sim::fleet::Protection;
use ade_backup_sim::Fleet;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The queue restore requests arrive on, and the reply queue the tickets name.
pub const REQUEST_QUEUE: &str = "restore-requests";
pub const REPLY_QUEUE: &str = "ticket-status";

/// A restore request: its ticket id (also its `MessageId`) and body.
pub struct RestoreRequest {
    pub ticket: String,
    pub body: Value,
}

/// Makes the first `n` VMs of `fleet` protected (in their region's vault, one recovery point
/// two hours old) and returns a restore request of each, into `rg-restore` of its subscription.
pub fn protect_for_restore(fleet: &mut Fleet, n: usize) -> Vec<RestoreRequest> {
    let subs: Vec<String> = fleet.subscriptions.iter().map(|s| s.id.clone()).collect();
    let mut requests = Vec::new();
    for (i, vm) in fleet.vms.iter_mut().enumerate().take(n) {
        let s = subs.iter().position(|x| *x == vm.subscription).unwrap_or(0);
        let ri = usize::from(vm.location != "westeurope");
        vm.protection = Some(Protection {
            vault: format!("rsv-{s}-{ri}"),
            policy: "DefaultPolicy".into(),
            recovery_point_ages_hours: vec![2],
            excluded_disk_luns: vec![],
        });
        let ticket = format!("CHG{:07}", i + 1);
        let sub = &vm.subscription;
        let staging = format!("/subscriptions/{sub}/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stgrestore{s}x{ri}");
        let body = json!({
            "version": 1, "ticketId": ticket,
            "vmResourceId": vm_id(sub, &vm.resource_group, &vm.name), "recoveryPoint": "latest",
            "targetResourceGroup": format!("/subscriptions/{sub}/resourceGroups/rg-restore"),
            "stagingStorageAccountId": staging, "requestedBy": "ops@contoso.com", "replyTo": REPLY_QUEUE
        });
        requests.push(RestoreRequest { ticket, body });
    }
    requests
}

/// `ADE_BACKUP_RESTORE_ALLOWLIST`: every subscription of `fleet` may restore any VM into
/// `rg-restore` (staging in `rg-backup`).
pub fn allowlist(fleet: &Fleet) -> String {
    let entries: Vec<Value> = fleet
        .subscriptions
        .iter()
        .map(|s| json!({"subscription": s.id, "sourceResourceGroups": ["*"], "resourceGroups": ["rg-restore", "rg-backup"], "subnetResourceGroups": ["*"]}))
        .collect();
    json!({ "entries": entries }).to_string()
}

/// Restore documents by status (`status`, or `status: code` of the last error).
pub fn tickets_by_status(store: &MemoryStateStore) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for k in store.keys("restores/") {
        let Some(v) = store.json(&k) else { continue };
        let status = v["status"].as_str().unwrap_or("?");
        let key = match v["lastError"]["code"].as_str() {
            Some(r) if status != "completed" => format!("{status}: {r}"),
            _ => status.to_string(),
        };
        *by.entry(key).or_default() += 1;
    }
    by
}
