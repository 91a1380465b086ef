//! Harness for the sweep tests and benchmarks: a spawned [`Simulator`], a [`Context`] whose
//! ArmClient points at it, a counting in-memory state store, and an in-process queue pump that
//! delivers what the handlers send through the real production handlers (honouring scheduled
//! delivery against the simulator's clock, and Service Bus duplicate detection by `MessageId`).
//!
//! Self-contained on purpose (only the workspace crates and tokio): the benchmarks in
//! `functions/benches/` include this file with `#[path]`.

use ade_backup_functions::context::{Clock, Context};
use ade_backup_functions::handlers::{self, FunctionSpec, Outcome, Registry};
use ade_backup_functions::host::protocol::{ServiceBusMessage, TriggerInput, TriggerSpec};
use ade_backup_functions::settings::Settings;
use ade_backup_shared::arm::{ArmClient, ArmClientOptions, RoleAssignmentProperties};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::messaging::{MessageSender, MessagingError, OutboundMessage};
use ade_backup_shared::state::MemoryStateStore;
use ade_backup_sim::fleet::{AccessPolicy, Ade, KeyVaultModel, Permissions, Protection};
use ade_backup_sim::{Fleet, SimOptions, Simulator};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handlers' clock is the simulator's clock, so recovery-point ages and scheduled messages
/// follow simulated time (and `Simulator::advance`).
pub struct SimClock(pub Simulator);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// A Service Bus stand-in: remembers every `MessageId` (duplicate detection), holds messages
/// until their scheduled time.
#[derive(Default)]
pub struct QueuePump {
    pending: Mutex<Vec<OutboundMessage>>,
    seen: Mutex<HashSet<String>>,
    /// Messages to queues no handler listens on (notifications for humans).
    pub unrouted: Mutex<Vec<OutboundMessage>>,
    pub sent: AtomicU64,
    pub duplicates: AtomicU64,
}

#[async_trait::async_trait]
impl MessageSender for QueuePump {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        let key = format!("{}|{}", message.queue, message.message_id);
        if !lock(&self.seen).insert(key) {
            self.duplicates.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        lock(&self.pending).push(message);
        Ok(())
    }
}

#[derive(Debug, Default, Clone)]
pub struct PumpReport {
    pub delivered: u64,
    pub transient_failures: u64,
    pub dead_lettered: Vec<String>,
    pub timed_out: bool,
}

impl QueuePump {
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Delivers messages through the production handlers until no message is left, or `timeout`
    /// (real time) passes. Transient failures are redelivered (delivery count + 1, up to 10).
    /// Like Service Bus with a Functions host, delivery is continuous: a message is handed to
    /// its handler as soon as it is due, whatever else is still running (no batch barrier).
    pub async fn drain(&self, ctx: &Context, timeout: std::time::Duration) -> PumpReport {
        self.drain_while(ctx, timeout, &std::sync::atomic::AtomicBool::new(false))
            .await
    }

    /// [`QueuePump::drain`] that keeps running while `producing` is true, even with nothing to
    /// deliver (a sweep that is still fanning out).
    pub async fn drain_while(
        &self,
        ctx: &Context,
        timeout: std::time::Duration,
        producing: &std::sync::atomic::AtomicBool,
    ) -> PumpReport {
        let registry = Registry::production();
        let by_queue: HashMap<String, FunctionSpec> = registry
            .specs()
            .filter_map(|s| match &s.trigger {
                TriggerSpec::ServiceBus { queue, .. } => Some((queue.to_string(), s.clone())),
                _ => None,
            })
            .collect();
        let deadline = std::time::Instant::now() + timeout;
        let mut report = PumpReport::default();
        let mut redeliveries: Vec<(OutboundMessage, u32)> = Vec::new();
        let mut running: tokio::task::JoinSet<(OutboundMessage, u32, Outcome)> =
            tokio::task::JoinSet::new();
        loop {
            let now = ctx.clock.now();
            let due: Vec<(OutboundMessage, u32)> = {
                let mut p = lock(&self.pending);
                let (due, later): (Vec<_>, Vec<_>) = p
                    .drain(..)
                    .partition(|m| m.scheduled_enqueue_time.is_none_or(|t| t <= now));
                *p = later;
                due.into_iter()
                    .map(|m| (m, 1))
                    .chain(redeliveries.drain(..))
                    .collect()
            };
            for (m, count) in due {
                let Some(spec) = by_queue.get(&m.queue).cloned() else {
                    lock(&self.unrouted).push(m);
                    continue;
                };
                let ctx = ctx.clone();
                running.spawn(async move {
                    let msg = ServiceBusMessage {
                        queue: m.queue.clone(),
                        body: m.body.clone(),
                        message_id: m.message_id.clone(),
                        delivery_count: count,
                        correlation_id: m.correlation_id.clone(),
                        content_type: Some(m.content_type.clone()),
                        subject: None,
                        enqueued_time: Some(ctx.clock.now()),
                        expires_at: None,
                        sequence_number: None,
                        user_properties: Default::default(),
                    };
                    let out = handlers::dispatch(&spec, TriggerInput::ServiceBus(msg), &ctx).await;
                    (m, count, out)
                });
            }
            if running.is_empty()
                && self.pending() == 0
                && redeliveries.is_empty()
                && !producing.load(Ordering::SeqCst)
            {
                return report;
            }
            if std::time::Instant::now() > deadline {
                report.timed_out = true;
                running.abort_all();
                return report;
            }
            // Wait for a handler to finish, or for scheduled messages to come due.
            let finished = tokio::select! {
                r = running.join_next(), if !running.is_empty() => r,
                _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => None,
            };
            let mut finished: Vec<_> = finished.into_iter().collect();
            while let Some(r) = running.try_join_next() {
                finished.push(r);
            }
            for r in finished {
                let Ok((m, count, out)) = r else {
                    report.transient_failures += 1;
                    continue;
                };
                report.delivered += 1;
                match out {
                    Outcome::Completed(_) => {}
                    Outcome::Failed {
                        dead_letter: Some(d),
                        ..
                    } => report
                        .dead_lettered
                        .push(format!("{}: {}: {}", m.message_id, d.reason, d.description)),
                    Outcome::Failed { error, .. } => {
                        report.transient_failures += 1;
                        if count >= 10 {
                            report.dead_lettered.push(format!(
                                "{}: MaxDeliveryCountExceeded: {error}",
                                m.message_id
                            ));
                        } else {
                            redeliveries.push((m, count + 1));
                        }
                    }
                }
            }
        }
    }
}

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

/// A running simulator plus a Context pointed at it.
pub struct Harness {
    pub sim: Simulator,
    pub url: url::Url,
    pub ctx: Context,
    pub store: Arc<MemoryStateStore>,
    pub pump: Arc<QueuePump>,
    pub fleet: Fleet,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn vault_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.RecoveryServices/vaults/{name}")
}

pub fn key_vault_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}")
}

pub fn vm_id(sub: &str, rg: &str, name: &str) -> ResourceId {
    ResourceId::parse(&format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    ))
    .expect("valid VM id")
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
/// their role assignments from [`Harness::grant_rbac`]). `unprotected` ADE VMs (the first ones)
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
        });
    }
    f
}

/// Short simulated durations, so a protection completes in a few simulated seconds.
pub fn quick_durations() -> ade_backup_sim::Durations {
    ade_backup_sim::Durations {
        backup_snapshot_secs: 2,
        backup_transfer_secs: 3,
        restore_secs: 5,
        configure_protection_secs: 1,
        refresh_secs: 1,
        ade_extension_secs: 1,
        other_extension_secs: 1,
        deployment_secs: 1,
        lro_accept_secs: 1,
    }
}

impl Harness {
    /// Starts the simulator and builds the Context. `env` adds or overrides settings.
    pub async fn start(fleet: Fleet, options: SimOptions, env: &[(&str, String)]) -> Harness {
        let (sim, url, tx) = spawn_simulator(fleet.clone(), options).await;
        let subs: Vec<String> = fleet.subscriptions.iter().map(|s| s.id.clone()).collect();
        let mut vars: HashMap<String, String> = [
            (
                "ADE_BACKUP_STATE",
                "fs:/nonexistent/ade-backup-sweep".to_string(),
            ),
            (
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "https://test.servicebus.windows.net/".to_string(),
            ),
            ("ADE_BACKUP_ARM_ENDPOINT", url.to_string()),
            ("ADE_BACKUP_GRAPH_ENDPOINT", url.to_string()),
            ("ADE_BACKUP_SUBSCRIPTIONS", subs.join(",")),
            (
                "ADE_BACKUP_BMS_OBJECT_ID",
                sim.backup_management_object_id(),
            ),
            ("ADE_BACKUP_PROTECTION_RULES", rules_for(&fleet)),
            ("ADE_BACKUP_POLL_INTERVAL_MS", "1000".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in env {
            vars.insert(k.to_string(), v.clone());
        }
        let settings =
            Settings::from_lookup(|k| vars.get(k).cloned()).expect("harness settings are valid");
        let arm = ArmClient::new(
            url.clone(),
            Arc::new(StaticToken(AccessToken::new("sim"))),
            ArmClientOptions::default().with_graph_endpoint(url.clone()),
        )
        .expect("arm client");
        let store = Arc::new(MemoryStateStore::new());
        let pump = Arc::new(QueuePump::default());
        let ctx = Context {
            state: store.clone(),
            sender: pump.clone(),
            settings: Arc::new(settings),
            clock: Arc::new(SimClock(sim.clone())),
            arm: Arc::new(arm),
            bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
        };
        Harness {
            sim,
            url,
            ctx,
            store,
            pump,
            fleet,
            shutdown: Some(tx),
        }
    }

    /// Assigns Key Vault Administrator to the Backup Management Service on every RBAC vault (what
    /// an owner or an earlier ade-backup run would have done). Setup: call before measuring.
    pub async fn grant_rbac(&self) {
        let bms = self.sim.backup_management_object_id();
        for kv in self
            .fleet
            .key_vaults
            .iter()
            .filter(|k| k.model == KeyVaultModel::Rbac)
        {
            let scope = ResourceId::parse(&key_vault_id(
                &kv.subscription,
                &kv.resource_group,
                &kv.name,
            ))
            .expect("kv id");
            let role = format!(
                "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483",
                kv.subscription
            );
            let props = RoleAssignmentProperties {
                role_definition_id: role,
                principal_id: bms.clone(),
                principal_type: Some("ServicePrincipal".into()),
                ..Default::default()
            };
            self.ctx
                .arm
                .put_role_assignment(&scope, uuid::Uuid::new_v4(), &props)
                .await
                .expect("role assignment in setup");
        }
    }

    /// Delivers every message the workflow sends until it is quiet.
    pub async fn settle(&self, timeout: std::time::Duration) -> PumpReport {
        self.pump.drain(&self.ctx, timeout).await
    }
}
