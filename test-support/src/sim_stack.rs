//! The stepwise stack of the restore and crash tests: [`SimStack`] runs the real handlers against
//! the real Azure simulator (sample fleet, on an ephemeral port), with a [`QueuePump`] that the
//! test drives one step at a time. Pumping delivers what the handlers sent to the function bound
//! to its queue, earliest scheduled first, advancing the simulator's clock to each message's
//! scheduled time (the handlers' manual clock follows); messages for other queues (status
//! replies, notifications) are kept for the test to read. Also owns the sample fleet's ids and
//! the stack's settings.

use crate::flaky_store::FlakyStore;
use crate::pump::{PumpOptions, QueuePump, Step};
use crate::simulator::spawn_simulator;
use ade_backup_functions::context::{Context, ManualClock};
use ade_backup_functions::handlers::{Outcome, Registry};
use ade_backup_functions::records::{restore_key, RestoreOperation, RestoreStatusUpdate};
use ade_backup_functions::settings::Settings;
use ade_backup_shared::arm::{ArmClient, ArmClientOptions, RetryPolicy};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::ids::TicketId;
use ade_backup_shared::messaging::OutboundMessage;
use ade_backup_shared::state::MemoryStateStore;
use ade_backup_sim::{Fleet, SimOptions, Simulator};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::simulator::vm_id;

pub const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";
pub const S2: &str = "9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22";
pub const RSV_WEU: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/rsv-weu";
pub const RSV_NEU: &str = "/subscriptions/9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/rsv-neu";
pub const STAGING_WEU: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stadebkpweu";
pub const STAGING_NEU: &str = "/subscriptions/9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stadebkpneu";
/// The queue the tests' ticketing system listens on.
pub const REPLY_QUEUE: &str = "ticket-status";

pub struct SimStack {
    pub sim: Simulator,
    pub ctx: Context,
    pub state: Arc<MemoryStateStore>,
    pub store: Arc<FlakyStore>,
    /// The handlers' sender: every message sent, what is queued, every delivery.
    pub pump: Arc<QueuePump>,
    pub clock: Arc<ManualClock>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Settings for the stack: protection rules and a restore allowlist over the sample fleet, a
/// 5-minute poll interval; `extra` overrides or adds variables.
pub fn stack_settings(
    arm: &str,
    bms: &str,
    extra: &[(&str, &str)],
) -> Result<Settings, ade_backup_functions::settings::SettingsError> {
    let rules = format!(
        r#"{{"rules": [
            {{"name": "s1", "match": {{"subscription": "{S1}"}}, "vaultId": "{RSV_WEU}", "policy": "DefaultPolicy"}},
            {{"name": "s2", "match": {{"subscription": "{S2}"}}, "vaultId": "{RSV_NEU}", "policy": "DefaultPolicy"}}
        ]}}"#
    );
    let allow = format!(
        r#"{{"entries": [
            {{"subscription": "{S1}", "sourceResourceGroups": ["*"], "resourceGroups": ["rg-restore", "rg-backup", "rg-app-web"], "subnetResourceGroups": ["rg-network"]}},
            {{"subscription": "{S2}", "sourceResourceGroups": ["*"], "resourceGroups": ["rg-restore", "rg-backup"], "subnetResourceGroups": ["rg-network"]}}
        ]}}"#
    );
    let mut vars: BTreeMap<String, String> = [
        ("ADE_BACKUP_STATE", "fs:/nonexistent/ade-backup-sim-stack"),
        (
            "ADE_BACKUP_SERVICEBUS_ENDPOINT",
            "https://test.servicebus.windows.net/",
        ),
        ("ADE_BACKUP_ARM_ENDPOINT", arm),
        ("ADE_BACKUP_GRAPH_ENDPOINT", arm),
        ("ADE_BACKUP_BMS_OBJECT_ID", bms),
        ("ADE_BACKUP_SUBSCRIPTIONS", &format!("{S1},{S2}")),
        ("ADE_BACKUP_PROTECTION_RULES", &rules),
        ("ADE_BACKUP_RESTORE_ALLOWLIST", &allow),
        ("ADE_BACKUP_POLL_INTERVAL_MS", "300000"),
        ("ADE_BACKUP_REPLY_QUEUES", REPLY_QUEUE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_lookup(|k| vars.get(k).cloned())
}

impl SimStack {
    /// Sample fleet, no throttling, simulated time advanced by the pump.
    pub async fn start() -> SimStack {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> SimStack {
        let (sim, url, tx) = spawn_simulator(
            Fleet::sample(),
            SimOptions {
                throttling: false,
                // Ids as Azure Backup spells them (issue 14, item 7): every flow runs against them.
                varied_casing: true,
                ..SimOptions::default()
            },
        )
        .await;
        let base = url.to_string();
        let settings = stack_settings(&base, &sim.backup_management_object_id(), extra)
            .expect("stack settings are valid");
        let state = Arc::new(MemoryStateStore::new());
        let store = Arc::new(FlakyStore::new(state.clone()));
        let pump = Arc::new(QueuePump::new(
            &Registry::production(),
            PumpOptions::service_bus(),
        ));
        let clock = Arc::new(ManualClock::new(sim.now()));
        let ctx = Context {
            state: store.clone(),
            sender: pump.clone(),
            settings: Arc::new(settings),
            clock: clock.clone(),
            arm: Arc::new(sim_arm_client(&base)),
            bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
            dead_letters: None,
            reads: Default::default(),
        };
        SimStack {
            sim,
            ctx,
            state,
            store,
            pump,
            clock,
            _shutdown: tx,
        }
    }

    /// What the pump drives in this stack.
    pub fn step(&self) -> Step<'_> {
        Step {
            ctx: &self.ctx,
            sim: &self.sim,
            clock: &self.clock,
        }
    }

    /// Delivers one message now (no duplicate detection), returning the outcome.
    pub async fn deliver(&self, message: &OutboundMessage, delivery_count: u32) -> Outcome {
        self.pump
            .deliver(self.step(), message, delivery_count)
            .await
    }

    /// Delivers everything until nothing is left (or `max` deliveries). Returns how many.
    pub async fn pump(&self, max: usize) -> usize {
        self.pump.pump(self.step(), max).await
    }

    /// Like [`SimStack::pump`], but stops (leaving it queued) before delivering the first
    /// message `stop` matches: a test can halt "between two steps".
    pub async fn pump_until(&self, max: usize, stop: impl Fn(&OutboundMessage) -> bool) -> usize {
        self.pump.pump_until(self.step(), max, stop).await
    }

    /// Status updates sent to `queue`, in send order.
    pub fn replies(&self, queue: &str) -> Vec<(OutboundMessage, RestoreStatusUpdate)> {
        self.pump
            .unrouted()
            .into_iter()
            .filter(|m| m.queue == queue)
            .map(|m| {
                let update = serde_json::from_slice(&m.body).expect("a status update");
                (m, update)
            })
            .collect()
    }

    /// The statuses reported for `ticket` on the reply queue, in order.
    pub fn ticket_statuses(&self, ticket: &str) -> Vec<String> {
        self.replies(REPLY_QUEUE)
            .into_iter()
            .filter(|(_, u)| u.ticket_id == ticket)
            .map(|(_, u)| u.status.to_string())
            .collect()
    }

    /// Protects `vm` with the real protection workflow (as if its encryption event arrived) and
    /// pumps until it settles. Returns the VM record.
    pub async fn protect(&self, vm: &str) -> serde_json::Value {
        let id = ade_backup_shared::ids::ResourceId::parse(vm).expect("vm id");
        self.clock.set(self.sim.now());
        ade_backup_functions::workflows::protect::evaluate(
            &self.ctx,
            &id,
            ade_backup_functions::workflows::protect::Origin::Sweep("test".into()),
        )
        .await
        .expect("evaluation");
        self.pump(500).await;
        self.state
            .json(&ade_backup_functions::records::vm_record_key(&id))
            .expect("a VM record")
    }
}

/// An ARM client on the simulator at `base`, with short retries (the simulator does not throttle
/// here).
fn sim_arm_client(base: &str) -> ArmClient {
    ArmClient::new(
        url::Url::parse(base).expect("sim url"),
        Arc::new(StaticToken(AccessToken::new("sim-token"))),
        ArmClientOptions {
            graph_endpoint: url::Url::parse(base).expect("sim url"),
            blob_endpoint: Some(url::Url::parse(&format!("{base}/_blob/")).expect("blob url")),
            key_vault_endpoint: Some(
                url::Url::parse(&format!("{base}/_keyvault/")).expect("key vault url"),
            ),
            retry: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                max_elapsed: Duration::from_secs(5),
                max_retry_after: Duration::from_millis(50),
            },
            ..Default::default()
        },
    )
    .expect("arm client")
}

/// Restore requests, driven through the stack.
impl SimStack {
    /// The restore document of `ticket`, if ade-backup recorded one.
    pub fn restore_doc(&self, ticket: &str) -> Option<RestoreOperation> {
        let t = TicketId::parse(ticket).expect("ticket");
        self.state
            .json(&restore_key(&t))
            .map(|v| serde_json::from_value(v).expect("a restore document"))
    }

    /// Puts a restore request on `restore-requests` (message id `id`) and pumps until quiet.
    pub async fn submit(&self, id: &str, body: &serde_json::Value) {
        let body = serde_json::to_vec(body).expect("json");
        self.pump.enqueue("restore-requests", id, body);
        self.pump(2000).await;
    }
}

/// A valid restore request for `vm` (latest recovery point, into `rg-restore`, staging in the
/// vault's region, answered on [`REPLY_QUEUE`]), with the fields of `extra` set or replaced.
pub fn restore_request(ticket: &str, vm: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "version": 1,
        "ticketId": ticket,
        "vmResourceId": vm,
        "recoveryPoint": "latest",
        "targetResourceGroup": format!("/subscriptions/{S1}/resourceGroups/rg-restore"),
        "stagingStorageAccountId": STAGING_WEU,
        "requestedBy": "jane@contoso.com",
        "replyTo": REPLY_QUEUE
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}
