//! Issue 15, scenarios 1-4: onboarding (and crash) runs at scale against the simulator, reduced
//! to figures. This module owns what the scenarios share: the onboarding fleet (every VM
//! ADE-encrypted and unprotected), the Event Grid events that announce them, the percentile
//! figures, and the end-of-run census of VM records. [`onboarding`] runs scenarios 1, 2 and 4
//! in process (the production handlers behind the [`crate::QueuePump`]); [`crashes`] runs
//! scenario 3 with real processes (`ade-backup local` and its `serve` child, killed with
//! SIGKILL). The tests in `tests/tests/reliability.rs` run them small with assertions; the
//! benchmark `tests/benches/reliability.rs` runs them at full size and prints the figures.

pub mod crashes;
pub mod onboarding;
pub mod restores;

use ade_backup_shared::messaging::OutboundMessage;
use ade_backup_shared::state::MemoryStateStore;
use ade_backup_sim::fleet::{AccessPolicy, Ade, KeyVaultModel, Permissions};
use ade_backup_sim::Fleet;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The queue Event Grid delivers ADE events to.
pub const EVENT_QUEUE: &str = "vm-encryption-events";

/// `Fleet::generate`, then every VM ADE-encrypted and unprotected: even VMs BEK-only in the
/// region's access-policy vault, odd ones BEK + KEK in its RBAC vault, every fourth BEK + KEK in
/// the access-policy vault (so some access-policy vaults need keys as well as secrets). The
/// access-policy vaults of odd subscriptions already give the Backup Management Service every
/// permission it needs (no write may touch them).
pub fn onboarding_fleet(subs: usize, vms: usize, seed: u64) -> Fleet {
    let mut f = Fleet::generate(subs, vms, seed);
    let sub_index: BTreeMap<String, usize> = f
        .subscriptions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    for (i, vm) in f.vms.iter_mut().enumerate() {
        let s = sub_index.get(&vm.subscription).copied().unwrap_or(0);
        let ri = usize::from(vm.location != "westeurope");
        vm.protection = None;
        // By VM within its subscription and region (the generator alternates regions VM by
        // VM), so every region of every subscription gets every kind.
        vm.ade = match (i / subs.max(1) / 2) % 4 {
            0 | 2 => Ade::Bek {
                key_vault: format!("kv-ap-{s}-{ri}"),
            },
            1 => Ade::BekKek {
                key_vault: format!("kv-rbac-{s}-{ri}"),
                kek_vault: None,
                kek: "kek".into(),
            },
            _ => Ade::BekKek {
                key_vault: format!("kv-ap-{s}-{ri}"),
                kek_vault: None,
                kek: "kek".into(),
            },
        };
    }
    let bms = f.backup_management_service_object_id.clone();
    let granted: Vec<String> = f
        .subscriptions
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.id.clone())
        .collect();
    let all = || vec!["get".into(), "list".into(), "backup".into()];
    for kv in f.key_vaults.iter_mut() {
        if kv.model == KeyVaultModel::AccessPolicy && granted.contains(&kv.subscription) {
            kv.access_policies.push(AccessPolicy {
                object_id: bms.clone(),
                permissions: Permissions {
                    keys: all(),
                    secrets: all(),
                    certificates: vec![],
                },
            });
        }
    }
    f
}

/// Lower-case id of `vm`'s Key Vault access-policy vault, and how many distinct permission sets
/// its VMs need (1: secrets only or keys + secrets only; 2: both, which may take two writes).
/// Vaults whose policy already grants everything are left out.
pub fn access_policy_needs(f: &Fleet) -> BTreeMap<String, u64> {
    let mut needs: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for vm in &f.vms {
        let (kv, kek) = match &vm.ade {
            Ade::Bek { key_vault } => (key_vault, false),
            Ade::BekKek { key_vault, .. } => (key_vault, true),
            _ => continue,
        };
        let Some(vault) = f
            .key_vaults
            .iter()
            .find(|k| &k.name == kv && k.subscription == vm.subscription)
        else {
            continue;
        };
        if vault.model != KeyVaultModel::AccessPolicy || !vault.access_policies.is_empty() {
            continue;
        }
        let id = crate::simulator::key_vault_id(&vault.subscription, &vault.resource_group, kv);
        let e = needs.entry(id.to_ascii_lowercase()).or_default();
        if kek {
            e.1 = true;
        } else {
            e.0 = true;
        }
    }
    needs
        .into_iter()
        .map(|(k, (bek, kek))| (k, u64::from(bek) + u64::from(kek)))
        .collect()
}

/// The resource id of every VM of `f`.
pub fn vm_ids(f: &Fleet) -> Vec<String> {
    f.vms
        .iter()
        .map(|v| crate::simulator::vm_id(&v.subscription, &v.resource_group, &v.name))
        .collect()
}

/// The `ResourceWriteSuccess` event Azure emits when the ADE extension of `vm` is written, in
/// the Event Grid schema (articles/event-grid/event-schema-subscriptions.md), as the Service
/// Bus message Event Grid delivers (body: an array, `MessageId`: the event id).
pub fn ade_event(vm: &str, tenant: &str, event_id: &str) -> OutboundMessage {
    let sub = vm.split('/').nth(2).unwrap_or_default();
    let resource = format!("{vm}/extensions/AzureDiskEncryption");
    let op = "Microsoft.Compute/virtualMachines/extensions/write";
    let ev = json!({
        "id": event_id,
        "topic": format!("/subscriptions/{sub}"),
        "subject": resource,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": chrono::Utc::now().to_rfc3339(),
        "data": {
            "authorization": {"scope": resource, "action": op},
            "correlationId": event_id,
            "httpRequest": {"method": "PUT", "url": format!("https://management.azure.com{resource}?api-version=2024-07-01")},
            "resourceProvider": "Microsoft.Compute",
            "resourceUri": resource,
            "operationName": op,
            "status": "Succeeded",
            "subscriptionId": sub,
            "tenantId": tenant
        },
        "dataVersion": "2.0",
        "metadataVersion": "1"
    });
    ade_backup_sim::events::event_message(EVENT_QUEUE, &ev).expect("an event serialises")
}

/// p50 / p99 / max of a set of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(mut xs: Vec<Duration>) -> Spread {
        xs.sort();
        let at = |q: f64| -> Duration {
            if xs.is_empty() {
                return Duration::ZERO;
            }
            let i = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len()) - 1;
            xs[i]
        };
        Spread {
            n: xs.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: xs.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={} ms p99={} ms max={} ms",
            self.n,
            self.p50.as_millis(),
            self.p99.as_millis(),
            self.max.as_millis()
        )
    }
}

/// VM records by status (`status` or `status: reason`), and operation id → VM id (lower case).
pub struct Census {
    pub by_status: BTreeMap<String, u64>,
    pub operation_vm: BTreeMap<String, String>,
    /// VM id (lower case) → status.
    pub vm_status: BTreeMap<String, String>,
}

impl Census {
    pub fn of(store: &MemoryStateStore) -> Census {
        let mut by_status = BTreeMap::new();
        let mut vm_status = BTreeMap::new();
        for k in store.keys("vms/") {
            let Some(v) = store.json(&k) else { continue };
            let status = v["status"].as_str().unwrap_or("?").to_string();
            let key = match v["reason"].as_str() {
                Some(r) if status != "protected" => format!("{status}: {r}"),
                _ => status.clone(),
            };
            *by_status.entry(key).or_default() += 1;
            if let Some(vm) = v["vmId"].as_str() {
                vm_status.insert(vm.to_ascii_lowercase(), status);
            }
        }
        let mut operation_vm = BTreeMap::new();
        for k in store.keys("operations/protect/") {
            let Some(v) = store.json(&k) else { continue };
            if let (Some(op), Some(vm)) = (v["operationId"].as_str(), v["vmId"].as_str()) {
                operation_vm.insert(op.to_string(), vm.to_ascii_lowercase());
            }
        }
        Census {
            by_status,
            operation_vm,
            vm_status,
        }
    }

    /// VMs of `vms` whose record is not `protected`.
    pub fn unprotected(&self, vms: &[String]) -> Vec<String> {
        vms.iter()
            .filter(|v| {
                self.vm_status
                    .get(&v.to_ascii_lowercase())
                    .map(String::as_str)
                    != Some("protected")
            })
            .cloned()
            .collect()
    }
}

/// The VM a delivery's body is about: the event's subject (a VM's extension) or the operation
/// named by `operationId`, lower case.
pub fn vm_of(body: &[u8], census: &Census) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(op) = v["operationId"].as_str() {
        return census.operation_vm.get(op).cloned();
    }
    let subject = v[0]["subject"].as_str()?.to_ascii_lowercase();
    let end = subject.find("/extensions/").unwrap_or(subject.len());
    Some(subject[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_nearest_rank_percentiles() {
        let ms = |n: u64| Duration::from_millis(n);
        let s = Spread::of((1..=100).map(ms).collect());
        assert_eq!((s.p50, s.p99, s.max), (ms(50), ms(99), ms(100)));
        assert_eq!(Spread::of(vec![]).max, Duration::ZERO);
    }

    #[test]
    fn the_onboarding_fleet_is_all_ade_and_unprotected_with_some_vaults_granted() {
        let f = onboarding_fleet(4, 40, 1);
        assert!(f
            .vms
            .iter()
            .all(|v| v.protection.is_none() && !matches!(v.ade, Ade::None)));
        f.validate().expect("consistent fleet");
        let needs = access_policy_needs(&f);
        // Even subscriptions' two access-policy vaults need grants; odd ones are granted.
        assert_eq!(needs.len(), 4, "{needs:?}");
        assert!(needs.values().all(|n| *n == 2), "{needs:?}");
    }
}
