//! The simulated Azure the stacks run against: [`spawn_simulator`] serves a [`Simulator`] on an
//! ephemeral loopback port, [`SimClock`] makes it the handlers' clock, and the fleet helpers
//! build what runs on it (resource ids, a healthy generated fleet, one protection rule per vault,
//! short simulated job durations).

use ade_backup_functions::context::Clock;
use ade_backup_sim::fleet::{AccessPolicy, Ade, KeyVaultModel, Permissions, Protection};
use ade_backup_sim::{Fleet, SimOptions, Simulator};
use chrono::{DateTime, Utc};

/// Serves a new simulator on an ephemeral loopback port: the simulator, its base URL, and the
/// sender that stops it (dropping it stops it too).
pub async fn spawn_simulator(
    fleet: Fleet,
    options: SimOptions,
) -> (Simulator, url::Url, tokio::sync::oneshot::Sender<()>) {
    let sim = Simulator::new(fleet, options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral port");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = sim.clone();
    tokio::spawn(async move {
        let _ = s
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await;
    });
    let url = url::Url::parse(&format!("http://{addr}/")).expect("sim url");
    (sim, url, tx)
}

/// The handlers' clock is the simulator's clock, so recovery-point ages and scheduled messages
/// follow simulated time (and `Simulator::advance`).
pub struct SimClock(pub Simulator);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

pub fn vault_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}")
}

pub fn key_vault_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}")
}

pub fn vm_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// One rule per Recovery Services vault: its subscription and region, policy `DefaultPolicy`.
pub fn rules_for(fleet: &Fleet) -> String {
    let rules: Vec<serde_json::Value> = fleet
        .recovery_services_vaults
        .iter()
        .map(|v| {
            serde_json::json!({
                "name": format!("rule-{}", v.name),
                "match": {"subscription": v.subscription, "region": v.location},
                "vaultId": vault_id(&v.subscription, &v.resource_group, &v.name),
                "policy": "DefaultPolicy",
            })
        })
        .collect();
    serde_json::json!({ "rules": rules }).to_string()
}

/// `Fleet::generate`, then made healthy: every ADE VM protected with a recovery point an hour
/// old, every access-policy vault with the Backup Management Service's policy (RBAC vaults get
/// their role assignments from
/// [`Harness::grant_rbac`](crate::sweep_harness::Harness::grant_rbac)). `unprotected` ADE VMs (the first ones)
/// are left unprotected.
pub fn healthy_fleet(subs: usize, vms: usize, seed: u64, unprotected: usize) -> Fleet {
    let mut f = Fleet::generate(subs, vms, seed);
    let bms = f.backup_management_service_object_id.clone();
    for kv in f.key_vaults.iter_mut() {
        if kv.model == KeyVaultModel::AccessPolicy {
            kv.access_policies.push(AccessPolicy {
                object_id: bms.clone(),
                permissions: Permissions {
                    keys: vec!["get".into(), "list".into(), "backup".into()],
                    secrets: vec!["get".into(), "list".into(), "backup".into()],
                    certificates: vec![],
                },
            });
        }
    }
    let mut left = unprotected;
    for vm in f.vms.iter_mut() {
        if matches!(vm.ade, Ade::None) {
            continue;
        }
        if left > 0 {
            left -= 1;
            vm.protection = None;
            continue;
        }
        let sub_index = f
            .subscriptions
            .iter()
            .position(|s| s.id == vm.subscription)
            .unwrap_or(0);
        let region_index = usize::from(vm.location != "westeurope");
        vm.protection = Some(Protection {
            vault: format!("rsv-{sub_index}-{region_index}"),
            policy: "DefaultPolicy".into(),
            recovery_point_ages_hours: vec![1],
            excluded_disk_luns: vec![],
        });
    }
    f
}

/// Every simulated job and long-running operation takes `secs` seconds.
pub fn uniform_durations(secs: i64) -> ade_backup_sim::Durations {
    ade_backup_sim::Durations {
        backup_snapshot_secs: secs,
        backup_transfer_secs: secs,
        restore_secs: secs,
        configure_protection_secs: secs,
        refresh_secs: secs,
        ade_extension_secs: secs,
        other_extension_secs: secs,
        deployment_secs: secs,
        lro_accept_secs: secs,
    }
}

/// Short simulated durations, so a protection completes in a few simulated seconds.
pub fn quick_durations() -> ade_backup_sim::Durations {
    ade_backup_sim::Durations {
        backup_snapshot_secs: 2,
        backup_transfer_secs: 3,
        restore_secs: 5,
        ..uniform_durations(1)
    }
}
