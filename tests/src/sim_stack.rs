//! The real handlers against the real Azure simulator, with an in-test message pump.
//!
//! [`SimStack::start`] runs a [`Simulator`] (sample fleet) on an ephemeral port and builds a
//! [`Context`] whose ARM client points at it. [`SimStack::pump`] plays the Service Bus part:
//! it takes what the handlers sent, delivers each message to the function bound to its queue
//! (earliest scheduled first, advancing the simulator's clock to the message's scheduled time),
//! redelivers on transient failure with `DeliveryCount + 1`, drops repeats of a `MessageId` seen
//! within the duplicate-detection window, and keeps messages for other queues (status replies,
//! notifications) for the test to read.

use crate::{MemoryStateStore, RecordingSender};
use ade_backup_functions::context::{Context, ManualClock};
use ade_backup_functions::handlers::{dispatch, Outcome, Registry};
use ade_backup_functions::host::protocol::{ServiceBusMessage, TriggerInput, TriggerSpec};
use ade_backup_functions::records::RestoreStatusUpdate;
use ade_backup_functions::settings::Settings;
use ade_backup_shared::arm::{ArmClient, ArmClientOptions, RetryPolicy};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::messaging::OutboundMessage;
use ade_backup_shared::state::{ETag, LeaseAcquired, LeaseId, StateError, StateStore};
use ade_backup_sim::{Fleet, SimOptions, Simulator};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";
pub const S2: &str = "9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22";
pub const RSV_WEU: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/rsv-weu";
pub const RSV_NEU: &str = "/subscriptions/9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22/resourceGroups/rg-backup/providers/Microsoft.RecoveryServices/vaults/rsv-neu";
pub const STAGING_WEU: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stadebkpweu";
pub const STAGING_NEU: &str = "/subscriptions/9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stadebkpneu";
/// The queue the tests' ticketing system listens on.
pub const REPLY_QUEUE: &str = "ticket-status";

pub fn vm_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// A state store that can be told to fail after `n` more successful writes (a crash between an
/// Azure call and the write that records it).
#[derive(Debug)]
pub struct FlakyStore {
    pub inner: Arc<MemoryStateStore>,
    /// Writes still allowed before every write fails; negative: never fail.
    writes_left: AtomicI64,
}

impl FlakyStore {
    pub fn new(inner: Arc<MemoryStateStore>) -> Self {
        Self {
            inner,
            writes_left: AtomicI64::new(-1),
        }
    }
    /// Let `n` writes succeed, then fail every write until [`FlakyStore::heal`].
    pub fn fail_after_writes(&self, n: i64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.writes_left.store(-1, Ordering::SeqCst);
    }
    fn check(&self) -> Result<(), StateError> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(StateError::Unavailable("simulated crash".into()));
        }
        self.writes_left.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl StateStore for FlakyStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        self.inner.get(key).await
    }
    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        self.check()?;
        self.inner.create(key, body).await
    }
    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        self.check()?;
        self.inner.replace(key, body, etag).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.inner.list(prefix).await
    }
    async fn acquire_lease(
        &self,
        key: &str,
        duration: Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        self.inner.acquire_lease(key, duration, proposed).await
    }
    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.inner.renew_lease(key, lease).await
    }
    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.inner.release_lease(key, lease).await
    }
    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        self.check()?;
        self.inner.replace_leased(key, body, lease).await
    }
}

/// One delivery made by the pump.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub queue: String,
    pub message_id: String,
    pub delivery_count: u32,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
struct Pending {
    message: OutboundMessage,
    delivery_count: u32,
    seq: u64,
}

pub struct SimStack {
    pub sim: Simulator,
    pub ctx: Context,
    pub state: Arc<MemoryStateStore>,
    pub store: Arc<FlakyStore>,
    pub sender: Arc<RecordingSender>,
    pub clock: Arc<ManualClock>,
    pub registry: Registry,
    /// Every delivery, in order.
    pub deliveries: Vec<Delivery>,
    /// Messages sent to queues no function listens on (status replies, notifications).
    pub outbox: Vec<OutboundMessage>,
    /// Service Bus duplicate detection (on by default, 10-minute window).
    pub duplicate_detection: bool,
    taken: usize,
    pending: Vec<Pending>,
    seen: BTreeMap<(String, String), DateTime<Utc>>,
    seq: u64,
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
            {{"subscription": "{S1}", "resourceGroups": ["rg-restore", "rg-backup", "rg-app-web"]}},
            {{"subscription": "{S2}", "resourceGroups": ["rg-restore", "rg-backup"]}}
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
        let (sim, url, tx) = crate::sweep_support::spawn_simulator(
            Fleet::sample(),
            SimOptions {
                throttling: false,
                ..SimOptions::default()
            },
        )
        .await;
        let base = url.to_string();
        let settings = stack_settings(&base, &sim.backup_management_object_id(), extra)
            .expect("stack settings are valid");
        let arm = ArmClient::new(
            url::Url::parse(&base).expect("sim url"),
            Arc::new(StaticToken(AccessToken::new("sim-token"))),
            ArmClientOptions {
                graph_endpoint: url::Url::parse(&base).expect("sim url"),
                blob_endpoint: Some(url::Url::parse(&format!("{base}/_blob/")).expect("blob url")),
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
        .expect("arm client");
        let state = Arc::new(MemoryStateStore::new());
        let store = Arc::new(FlakyStore::new(state.clone()));
        let sender = Arc::new(RecordingSender::default());
        let clock = Arc::new(ManualClock::new(sim.now()));
        let ctx = Context {
            state: store.clone(),
            sender: sender.clone(),
            settings: Arc::new(settings),
            clock: clock.clone(),
            arm: Arc::new(arm),
            bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
        };
        SimStack {
            sim,
            ctx,
            state,
            store,
            sender,
            clock,
            registry: Registry::production(),
            deliveries: vec![],
            outbox: vec![],
            duplicate_detection: true,
            taken: 0,
            pending: vec![],
            seen: BTreeMap::new(),
            seq: 0,
            _shutdown: tx,
        }
    }

    fn function_for(&self, queue: &str) -> Option<&'static str> {
        self.registry.specs().find_map(|s| match &s.trigger {
            TriggerSpec::ServiceBus { queue: q, .. } if *q == queue => Some(s.name),
            _ => None,
        })
    }

    /// Moves new sends into the pending queue (function queues) or the outbox (others).
    fn take_sent(&mut self) {
        let sent = self.sender.sent();
        for m in sent.into_iter().skip(self.taken) {
            self.taken += 1;
            if self.function_for(&m.queue).is_some() {
                self.seq += 1;
                self.pending.push(Pending {
                    message: m,
                    delivery_count: 1,
                    seq: self.seq,
                });
            } else {
                self.outbox.push(m);
            }
        }
    }

    /// Enqueues a message as an outside system would (e.g. a ticketing system's request).
    pub fn enqueue(&mut self, queue: &str, message_id: &str, body: Vec<u8>) {
        self.seq += 1;
        self.pending.push(Pending {
            message: OutboundMessage {
                queue: queue.to_string(),
                message_id: message_id.to_string(),
                correlation_id: None,
                scheduled_enqueue_time: None,
                content_type: "application/json".into(),
                body,
                properties: Default::default(),
            },
            delivery_count: 1,
            seq: self.seq,
        });
    }

    /// Delivers one message now (no duplicate detection), returning the outcome.
    pub async fn deliver(&mut self, message: &OutboundMessage, delivery_count: u32) -> Outcome {
        self.take_sent();
        let Some(function) = self.function_for(&message.queue) else {
            panic!("no function listens on {}", message.queue);
        };
        let spec = self
            .registry
            .get(function)
            .expect("registered function")
            .clone();
        self.clock.set(self.sim.now());
        let sb = ServiceBusMessage {
            queue: message.queue.clone(),
            body: message.body.clone(),
            message_id: message.message_id.clone(),
            delivery_count,
            correlation_id: message.correlation_id.clone(),
            content_type: Some(message.content_type.clone()),
            subject: None,
            enqueued_time: Some(self.sim.now()),
            expires_at: None,
            sequence_number: None,
            user_properties: Default::default(),
        };
        let outcome = dispatch(&spec, TriggerInput::ServiceBus(sb), &self.ctx).await;
        self.deliveries.push(Delivery {
            queue: message.queue.clone(),
            message_id: message.message_id.clone(),
            delivery_count,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Delivers everything until nothing is left (or `max` deliveries). Returns how many.
    pub async fn pump(&mut self, max: usize) -> usize {
        self.pump_until(max, |_| false).await
    }

    /// Index of the message Service Bus would hand out next (earliest scheduled, then FIFO).
    fn next_index(&self) -> Option<usize> {
        self.pending
            .iter()
            .enumerate()
            .min_by_key(|(_, p)| {
                (
                    p.message
                        .scheduled_enqueue_time
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                    p.seq,
                )
            })
            .map(|(i, _)| i)
    }

    /// Like [`SimStack::pump`], but stops (leaving it queued) before delivering the first
    /// message `stop` matches: a test can halt "between two steps".
    pub async fn pump_until(
        &mut self,
        max: usize,
        stop: impl Fn(&OutboundMessage) -> bool,
    ) -> usize {
        let mut n = 0;
        loop {
            self.take_sent();
            if n >= max {
                return n;
            }
            let Some(idx) = self.next_index() else {
                return n;
            };
            if stop(&self.pending[idx].message) {
                return n;
            }
            let p = self.pending.remove(idx);
            if let Some(at) = p.message.scheduled_enqueue_time {
                let now = self.sim.now();
                if at > now {
                    self.sim
                        .advance((at - now).to_std().unwrap_or(Duration::ZERO));
                }
            }
            let now = self.sim.now();
            if self.duplicate_detection && p.delivery_count == 1 {
                let key = (p.message.queue.clone(), p.message.message_id.clone());
                if let Some(first) = self.seen.get(&key) {
                    if now - *first < chrono::Duration::minutes(10) {
                        continue;
                    }
                }
                self.seen.insert(key, now);
            }
            n += 1;
            let outcome = self.deliver(&p.message, p.delivery_count).await;
            if let Outcome::Failed {
                dead_letter: None, ..
            } = outcome
            {
                // Abandoned: Service Bus redelivers after the lock; dead-letters after 10.
                if p.delivery_count < 10 {
                    self.seq += 1;
                    let mut m = p.message.clone();
                    m.scheduled_enqueue_time = Some(now + chrono::Duration::seconds(30));
                    self.pending.push(Pending {
                        message: m,
                        delivery_count: p.delivery_count + 1,
                        seq: self.seq,
                    });
                }
            }
        }
    }

    /// Takes the next queued message without delivering it (the test delivers it itself).
    pub fn take_next(&mut self) -> Option<OutboundMessage> {
        self.take_sent();
        let idx = self.next_index()?;
        Some(self.pending.remove(idx).message)
    }

    /// A crash: every message sent but not yet delivered is lost. Returns how many.
    pub fn lose_pending(&mut self) -> usize {
        self.take_sent();
        let n = self.pending.len();
        self.pending.clear();
        n
    }

    /// Messages waiting for delivery.
    pub fn pending_len(&mut self) -> usize {
        self.take_sent();
        self.pending.len()
    }

    /// Deliveries that ended dead-lettered, as `message id: reason`.
    pub fn dead_lettered(&self) -> Vec<String> {
        self.deliveries
            .iter()
            .filter_map(|d| match &d.outcome {
                Outcome::Failed {
                    dead_letter: Some(dl),
                    ..
                } => Some(format!("{}: {}", d.message_id, dl.reason)),
                _ => None,
            })
            .collect()
    }

    /// Status updates sent to `queue`, in send order.
    pub fn replies(&mut self, queue: &str) -> Vec<(OutboundMessage, RestoreStatusUpdate)> {
        self.take_sent();
        self.outbox
            .iter()
            .filter(|m| m.queue == queue)
            .map(|m| {
                (
                    m.clone(),
                    serde_json::from_slice(&m.body).expect("a status update"),
                )
            })
            .collect()
    }

    /// Deliveries to `queue` that completed successfully.
    pub fn completed(&self, queue: &str) -> usize {
        self.deliveries
            .iter()
            .filter(|d| d.queue == queue && matches!(d.outcome, Outcome::Completed(_)))
            .count()
    }

    /// Protects `vm` with the real protection workflow (as if its encryption event arrived) and
    /// pumps until it settles. Returns the VM record.
    pub async fn protect(&mut self, vm: &str) -> serde_json::Value {
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
