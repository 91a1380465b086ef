//! ade-backup's Azure simulator: an axum server that serves the ARM, Graph and Resource Graph
//! surface in `docs/arm-surface.md` over an in-memory world, with simulated time, ARM
//! throttling, fault injection and Event Grid events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ade_backup_sim::SimError> {
//! use ade_backup_sim::{Fleet, SimOptions, Simulator};
//! let sim = Simulator::new(Fleet::sample(), SimOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| ade_backup_sim::SimError::Io(e.to_string()))?;
//! sim.serve(listener, std::future::pending()).await
//! # }
//! ```
//!
//! Admin endpoints: `GET /_sim/stats`, `POST /_sim/stats/reset`, `GET /_sim/state`,
//! `GET|POST /_sim/faults`, `POST /_sim/advance {"seconds":N}`, `GET /_sim/time`,
//! `POST /_sim/throttling {"enabled":bool}`, `GET /_sim/events`.

pub mod clock;
pub mod events;
pub mod faults;
pub mod field;
pub mod fleet;
pub mod routes;
pub mod scenario;
pub mod throttle;
pub mod world;

pub use events::{RecordingSender, DEFAULT_EVENT_QUEUE};
pub use faults::{FaultConfig, FaultRule};
pub use fleet::Fleet;
pub use scenario::{run_scenario, Scenario};
pub use world::Durations;

use ade_backup_shared::messaging::MessageSender;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
    #[error("invalid scenario: {0}")]
    InvalidScenario(String),
    #[error("unknown {kind} {name:?} in the simulated world")]
    Unknown { kind: &'static str, name: String },
    #[error("{0}")]
    Io(String),
    #[error("could not publish message: {0}")]
    Messaging(String),
    #[error("invalid option {field}: {rule}")]
    InvalidOption { field: &'static str, rule: String },
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Simulated seconds per real second (60 000: a 20-minute job takes 20 ms).
    pub time_scale: f64,
    /// Simulated time at start (default: now).
    pub start_time: Option<DateTime<Utc>>,
    pub throttling: bool,
    pub faults: FaultConfig,
    /// Queue the simulated Event Grid subscription delivers to.
    pub event_queue: String,
    pub durations: Durations,
    /// Base URL for `Location`/`Azure-AsyncOperation` headers (default: from the Host header).
    pub public_base_url: Option<String>,
    /// Serve Recovery Services ids in the varied casing Azure Backup uses (`World::varied_casing`).
    pub varied_casing: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            start_time: None,
            throttling: true,
            faults: FaultConfig::default(),
            event_queue: DEFAULT_EVENT_QUEUE.to_string(),
            durations: Durations::default(),
            public_base_url: None,
            varied_casing: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteStats {
    pub access_policy_writes: u64,
    pub role_assignment_writes: u64,
    pub role_definition_writes: u64,
    pub protection_puts: u64,
    pub backup_now_calls: u64,
    pub restores: u64,
    pub deployments: u64,
    pub extension_puts: u64,
    /// VM, disk and NIC deletes answered 2xx (also when nothing was there: 204).
    pub deletes: u64,
}

impl WriteStats {
    pub(crate) fn bump(&mut self, kind: &str) {
        let f = match kind {
            "accessPolicyWrites" => &mut self.access_policy_writes,
            "roleAssignmentWrites" => &mut self.role_assignment_writes,
            "roleDefinitionWrites" => &mut self.role_definition_writes,
            "protectionPuts" => &mut self.protection_puts,
            "backupNowCalls" => &mut self.backup_now_calls,
            "restores" => &mut self.restores,
            "deployments" => &mut self.deployments,
            "extensionPuts" => &mut self.extension_puts,
            "deletes" => &mut self.deletes,
            _ => return,
        };
        *f += 1;
    }
}

/// Counters reported by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    /// Calls per operation name (e.g. `vm.get`, `rs.backupNow`), throttled ones included.
    pub calls: BTreeMap<String, u64>,
    pub throttled: u64,
    pub throttled_by_operation: BTreeMap<String, u64>,
    pub faults_injected: u64,
    pub faults_by_operation: BTreeMap<String, u64>,
    /// Successful writes per kind.
    pub writes: WriteStats,
    /// Successful access-policy writes per Key Vault (lower-case vault id).
    pub access_policy_writes_by_vault: BTreeMap<String, u64>,
    pub events_published: u64,
    pub event_publish_failures: u64,
    pub unauthenticated: u64,
}

impl SimStats {
    pub fn calls(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }
}

/// State shared by all handlers.
pub struct Shared {
    pub(crate) world: Mutex<world::World>,
    pub(crate) clock: clock::SimClock,
    pub(crate) throttle: throttle::Throttle,
    /// Resource Graph's own per-user quota (on with throttling).
    pub(crate) graph_quota: throttle::UserQuota,
    throttling: AtomicBool,
    pub(crate) faults: faults::Faults,
    stats: Mutex<SimStats>,
    sink: RwLock<Option<Arc<dyn MessageSender>>>,
    published: Mutex<Vec<Value>>,
    pub(crate) routes: Vec<routes::Route>,
    pub(crate) tenant_id: String,
    pub(crate) public_base_url: Option<String>,
    event_queue: String,
}

const KEEP_EVENTS: usize = 1000;

impl Shared {
    pub(crate) fn with_stats(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()))
    }
    pub(crate) fn stats_snapshot(&self) -> SimStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn throttling_enabled(&self) -> bool {
        self.throttling.load(Ordering::Relaxed)
    }
    pub(crate) fn set_throttling(&self, on: bool) {
        self.throttling.store(on, Ordering::Relaxed);
        if on {
            self.throttle.reset();
            self.graph_quota.reset();
        }
    }
    pub(crate) fn published_events(&self) -> Vec<Value> {
        self.published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub(crate) fn state_json(&self) -> Value {
        let now = self.clock.now();
        let mut w = self.world.lock().unwrap_or_else(|p| p.into_inner());
        w.tick(now);
        json!({"now": world::ts(now), "world": &*w})
    }

    pub(crate) async fn publish(&self, events: Vec<Value>) {
        self.publish_via(events, None).await
    }

    async fn publish_via(&self, events: Vec<Value>, fallback: Option<Arc<dyn MessageSender>>) {
        let sink = self
            .sink
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .or(fallback);
        for ev in events {
            {
                let mut log = self.published.lock().unwrap_or_else(|p| p.into_inner());
                if log.len() >= KEEP_EVENTS {
                    log.remove(0);
                }
                log.push(ev.clone());
            }
            let Some(sink) = &sink else {
                continue;
            };
            let sent = match events::event_message(&self.event_queue, &ev) {
                Ok(msg) => sink.send(msg).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok(()) => self.with_stats(|s| s.events_published += 1),
                Err(e) => {
                    tracing::warn!(error = %e, queue = %self.event_queue, "simulated Event Grid delivery failed");
                    self.with_stats(|s| s.event_publish_failures += 1);
                }
            }
        }
    }
}

/// The simulator. Cheap to clone; all clones share one world.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// Build a simulator. An inconsistent fleet is logged and loaded as far as it goes; use
    /// [`Simulator::try_new`] to reject it instead.
    pub fn new(fleet: Fleet, options: SimOptions) -> Simulator {
        if let Err(e) = fleet.validate() {
            tracing::warn!(error = %e, "fleet is inconsistent; dangling references are ignored");
        }
        Self::build(fleet, options)
    }

    pub fn try_new(fleet: Fleet, options: SimOptions) -> Result<Simulator, SimError> {
        fleet.validate()?;
        options
            .faults
            .validate()
            .map_err(|rule| SimError::InvalidOption {
                field: "faults",
                rule,
            })?;
        Ok(Self::build(fleet, options))
    }

    fn build(fleet: Fleet, options: SimOptions) -> Simulator {
        let start = options.start_time.unwrap_or_else(Utc::now);
        let clock = clock::SimClock::new(start, options.time_scale);
        let mut world = world::World::from_fleet(&fleet, start, options.durations.clone());
        world.varied_casing = options.varied_casing;
        let faults = faults::Faults::new(options.faults.clone());
        Simulator {
            shared: Arc::new(Shared {
                world: Mutex::new(world),
                clock,
                throttle: throttle::Throttle::new(),
                graph_quota: throttle::UserQuota::default(),
                throttling: AtomicBool::new(options.throttling),
                faults,
                stats: Mutex::new(SimStats::default()),
                sink: RwLock::new(None),
                published: Mutex::new(Vec::new()),
                routes: routes::all_routes(),
                tenant_id: fleet.tenant_id.clone(),
                public_base_url: options.public_base_url.clone(),
                event_queue: options.event_queue.clone(),
            }),
        }
    }

    /// The HTTP surface: Azure routes plus `/_sim/*`.
    pub fn router(&self) -> axum::Router {
        routes::admin::router()
            .merge(routes::blob::router())
            .merge(routes::keyvault_data::router())
            .fallback(routes::dispatch)
            .with_state(self.shared.clone())
    }

    /// Serve on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SimError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| SimError::Io(format!("simulator server failed: {e}")))
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats_snapshot()
    }

    pub fn reset_stats(&self) {
        self.shared.with_stats(|s| *s = SimStats::default());
    }

    /// Where simulated Event Grid events are delivered.
    pub fn set_event_sink(&self, sink: Arc<dyn MessageSender>) {
        *self.shared.sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Jump simulated time forward.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    pub(crate) fn real_duration(&self, sim: chrono::Duration) -> Duration {
        self.shared.clock.real_duration(sim)
    }

    pub fn set_faults(&self, config: FaultConfig) -> Result<(), SimError> {
        self.shared
            .faults
            .set(config)
            .map_err(|rule| SimError::InvalidOption {
                field: "faults",
                rule,
            })
    }

    pub fn set_throttling(&self, enabled: bool) {
        self.shared.set_throttling(enabled);
    }

    /// The whole world as JSON (same as `GET /_sim/state`).
    pub fn state(&self) -> Value {
        self.shared.state_json()
    }

    pub fn tenant_id(&self) -> String {
        self.shared.tenant_id.clone()
    }

    /// Object id of the Backup Management Service principal in the simulated tenant.
    pub fn backup_management_object_id(&self) -> String {
        self.with_world(|w| w.bms_object_id.clone())
    }

    /// Lower-case resource ids of every VM, disk and NIC DELETE request so far, in order.
    pub fn delete_requests(&self) -> Vec<String> {
        self.with_world(|w| w.delete_requests.clone())
    }

    /// Ids of every VM, disk and NIC deleted so far, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.with_world(|w| w.deleted.clone())
    }

    /// Whether a VM, managed disk or NIC of that id exists now.
    pub fn resource_exists(&self, id: &str) -> bool {
        let key = world::lc(id);
        self.with_world(|w| w.vms.contains_key(&key) || w.attached.contains_key(&key))
    }

    /// Replaces the tags of a VM, managed disk or NIC (what anyone with write access to the
    /// resource group could do). `false`: no such resource.
    pub fn set_tags(&self, id: &str, tags: &[(&str, &str)]) -> bool {
        let key = world::lc(id);
        let tags: std::collections::BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.with_world(|w| match w.vms.get_mut(&key) {
            Some(vm) => {
                vm.tags = tags;
                true
            }
            None => w.set_attached_tags(&key, tags),
        })
    }

    /// The tags of a VM, managed disk or NIC.
    pub fn tags_of(&self, id: &str) -> Option<std::collections::BTreeMap<String, String>> {
        let key = world::lc(id);
        self.with_world(|w| {
            w.vms
                .get(&key)
                .map(|v| v.tags.clone())
                .or_else(|| w.attached.get(&key).map(|r| r.tags.clone()))
        })
    }

    /// Ids of every standalone disk and NIC (those of restored VMs).
    pub fn attached_resources(&self) -> Vec<String> {
        self.with_world(|w| w.attached.values().map(|r| r.id.clone()).collect())
    }

    /// Whether the staging blob at `uri` (a restore job's template, config or Encryption Info) still exists.
    pub fn staging_blob_exists(&self, uri: &str) -> bool {
        let key = world::lc(uri);
        self.with_world(|w| {
            w.kv_data.encryption_blobs.contains_key(&key)
                || w.restored.values().any(|r| {
                    (world::lc(&r.template_uri) == key && !r.template_deleted)
                        || (world::lc(&r.config_uri) == key && !r.config_deleted)
                })
        })
    }

    /// Events published so far (the last 1000).
    pub fn published_events(&self) -> Vec<Value> {
        self.shared.published_events()
    }

    fn with_world<T>(&self, f: impl FnOnce(&mut world::World) -> T) -> T {
        let now = self.shared.clock.now();
        let mut w = self.shared.world.lock().unwrap_or_else(|p| p.into_inner());
        w.tick(now);
        f(&mut w)
    }

    fn resolve_vm(w: &world::World, vm: &str) -> Result<String, SimError> {
        let l = world::lc(vm);
        if w.vms.contains_key(&l) {
            return Ok(l);
        }
        let matches: Vec<&String> = w
            .vms
            .iter()
            .filter(|(_, v)| {
                let rg_name = world::lc(&format!("{}/{}", v.resource_group, v.name));
                rg_name == l || world::lc(&v.name) == l
            })
            .map(|(k, _)| k)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(SimError::Unknown {
                kind: "VM (or ambiguous name)",
                name: vm.to_string(),
            }),
        }
    }

    /// Put the ADE extension on `vm` with a key vault (and KEK name in the same vault), as a
    /// VM owner would. Returns the events to publish.
    pub(crate) fn enable_ade(
        &self,
        vm: &str,
        key_vault: &str,
        kek: Option<&str>,
    ) -> Result<Vec<Value>, SimError> {
        self.with_world(|w| {
            let key = Self::resolve_vm(w, vm)?;
            let (os, sub, vm_id) = match w.vms.get(&key) {
                Some(v) => (v.os_type, v.subscription.clone(), v.id.clone()),
                None => {
                    return Err(SimError::Unknown {
                        kind: "VM",
                        name: vm.to_string(),
                    })
                }
            };
            let settings = w
                .ade_settings_for(key_vault, kek.map(|k| (key_vault, k)), os)
                .ok_or_else(|| SimError::Unknown {
                    kind: "key vault or KEK",
                    name: format!("{key_vault}/{}", kek.unwrap_or("")),
                })?;
            let now = self.shared.clock.now();
            // Extensions install only on a running VM: an owner starts a deallocated VM to
            // encrypt it.
            w.set_power_state(&key, fleet::PowerState::Running);
            let ext = world::Extension::ade(os, settings, world::ExtState::Creating, now);
            let resource = format!("{vm_id}/extensions/{}", ext.name);
            w.put_extension(&key, ext, now);
            Ok(vec![events::resource_write_success(
                w,
                &sub,
                &resource,
                "Microsoft.Compute/virtualMachines/extensions/write",
                &format!("https://management.azure.com{resource}?api-version=2024-07-01"),
                now,
            )])
        })
    }

    /// Stop protection of `vm` (resource id, `resourceGroup/name` or a unique name) and retain
    /// its data, as an operator would in the portal: see [`world::World::stop_protection`].
    pub fn stop_protection(&self, vm: &str) -> Result<(), SimError> {
        self.with_world(|w| {
            let key = Self::resolve_vm(w, vm)?;
            let item_key = w
                .protected_items
                .iter()
                .find(|(_, i)| i.vm_key == key)
                .map(|(k, _)| k.clone())
                .ok_or_else(|| SimError::Unknown {
                    kind: "protected item (the VM is not protected) for VM",
                    name: vm.to_string(),
                })?;
            let now = self.shared.clock.now();
            w.stop_protection(&item_key, now)
                .map(|_| ())
                .map_err(|f| SimError::Unknown {
                    kind: "protected item",
                    name: format!("{item_key}: {}", f.message),
                })
        })
    }

    /// Create `vm` as its owner would (a plain VM, unprotected unless the fleet entry says so):
    /// e.g. a name taken in a restore's target resource group after the restore was accepted.
    pub fn add_vm(&self, vm: &fleet::Vm) {
        self.with_world(|w| {
            let now = self.shared.clock.now();
            w.add_fleet_vm(vm, now);
        })
    }

    /// Delete `vm` as its owner would: the VM is gone; Azure Backup keeps its protected item
    /// and recovery points (its next scheduled backup would fail `VM not found`).
    pub fn delete_vm(&self, vm: &str) -> Result<(), SimError> {
        self.with_world(|w| {
            let key = Self::resolve_vm(w, vm)?;
            w.vms.remove(&key);
            Ok(())
        })
    }

    /// Sets `vm`'s VM agent (it stops answering, or an owner repairs it): see `world::source_vm`.
    pub fn set_vm_agent(&self, vm: &str, agent: fleet::VmAgent) -> Result<(), SimError> {
        self.with_world(|w| {
            let key = Self::resolve_vm(w, vm)?;
            w.set_vm_agent(&key, agent);
            Ok(())
        })
    }

    /// The key of the protected item of `vm`.
    fn resolve_item(w: &world::World, vm: &str) -> Result<String, SimError> {
        let key = Self::resolve_vm(w, vm)?;
        w.protected_items
            .iter()
            .find(|(_, i)| i.vm_key == key)
            .map(|(k, _)| k.clone())
            .ok_or_else(|| SimError::Unknown {
                kind: "protected item (the VM is not protected) for VM",
                name: vm.to_string(),
            })
    }

    /// Someone excluded data disks `luns` from the backup of `vm`'s protected item (selective
    /// disk backup set up before the VM was encrypted, say): an encrypted VM's backups then fail
    /// with `UserErrorEncryptedVmNotSupportedWithDiskEx`.
    pub fn exclude_disks(&self, vm: &str, luns: &[u32]) -> Result<(), SimError> {
        self.with_world(|w| {
            let item_key = Self::resolve_item(w, vm)?;
            if let Some(i) = w.protected_items.get_mut(&item_key) {
                i.excluded_disk_luns = luns.to_vec();
            }
            Ok(())
        })
    }

    /// Someone else (the portal, a script) took `n` on-demand backups of `vm`'s protected item
    /// now: they count against Azure Backup's daily limit (see `world::source_vm`).
    pub fn take_on_demand_backups(&self, vm: &str, n: usize) -> Result<(), SimError> {
        self.with_world(|w| {
            let item_key = Self::resolve_item(w, vm)?;
            let now = self.shared.clock.now();
            for _ in 0..n {
                // Refusals past the limit are what the test wants to reach; ignore them here.
                let _ = w.take_on_demand_slot(&item_key, now);
            }
            Ok(())
        })
    }

    /// Where a Backup now past Azure Backup's daily limit is refused: `false` (default) answers
    /// the trigger call 400 `CloudDosTimeboudLimitReached`; `true` accepts it and fails its
    /// long-running operation with that error (both seen in the field).
    pub fn set_daily_limit_in_operation(&self, in_operation: bool) {
        self.with_world(|w| w.daily_limit_in_operation = in_operation);
    }

    /// Serve ids in the varied casing Azure Backup uses (see `World::varied_casing`).
    pub fn set_varied_casing(&self, on: bool) {
        self.with_world(|w| w.varied_casing = on);
    }

    /// Starts or deallocates `vm` as its owner would.
    pub fn set_power_state(&self, vm: &str, state: fleet::PowerState) -> Result<(), SimError> {
        self.with_world(|w| {
            let key = Self::resolve_vm(w, vm)?;
            w.set_power_state(&key, state);
            Ok(())
        })
    }

    /// The protected item of `vm` as `GET .../protectedItems/{item}` returns it, if the VM is
    /// protected.
    pub fn protected_item(&self, vm: &str) -> Result<Option<Value>, SimError> {
        self.with_world(|w| {
            let key = Self::resolve_vm(w, vm)?;
            Ok(w.protected_items
                .values()
                .find(|i| i.vm_key == key)
                .map(|i| w.protected_item_json(i)))
        })
    }

    pub(crate) async fn publish_via(
        &self,
        events: Vec<Value>,
        fallback: Option<Arc<dyn MessageSender>>,
    ) {
        self.shared.publish_via(events, fallback).await
    }

    /// Drift: remove `object_id`'s (default: Backup Management Service) access policy and role
    /// assignments at a key vault.
    pub(crate) fn remove_access(
        &self,
        key_vault: &str,
        object_id: Option<&str>,
    ) -> Result<(), SimError> {
        self.with_world(|w| {
            let who = object_id
                .map(str::to_string)
                .unwrap_or_else(|| w.bms_object_id.clone());
            let kv =
                w.key_vaults
                    .get_mut(&world::lc(key_vault))
                    .ok_or_else(|| SimError::Unknown {
                        kind: "key vault",
                        name: key_vault.to_string(),
                    })?;
            kv.access_policies
                .retain(|p| !p.object_id.eq_ignore_ascii_case(&who));
            let scope = world::lc(&kv.id);
            w.role_assignments.retain(|_, ra| {
                !(ra.principal_id.eq_ignore_ascii_case(&who) && world::lc(&ra.scope) == scope)
            });
            Ok(())
        })
    }
}

/// `ade-backup sim` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Fleet file (JSON, sim/schema/fleet.schema.json); default: the bundled sample fleet.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Generate a synthetic fleet instead: SUBSxVMS (e.g. 4x10000).
    #[arg(long, conflicts_with = "fleet")]
    pub generate: Option<String>,
    #[arg(long, default_value_t = 7071)]
    pub port: u16,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 600.0)]
    pub time_scale: f64,
    /// Disable ARM throttling.
    #[arg(long)]
    pub no_throttle: bool,
    /// Scenario file to play once the server is up.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
}

/// Run the simulator until Ctrl-C.
pub async fn run_cli(args: SimArgs) -> Result<(), SimError> {
    let fleet = match (&args.fleet, &args.generate) {
        (Some(p), _) => Fleet::load(p)?,
        (None, Some(spec)) => {
            let (s, v) = spec.split_once('x').ok_or(SimError::InvalidOption {
                field: "--generate",
                rule: "must be SUBSxVMS, e.g. 4x10000".into(),
            })?;
            let parse = |x: &str| {
                x.trim()
                    .parse::<usize>()
                    .map_err(|_| SimError::InvalidOption {
                        field: "--generate",
                        rule: format!("'{x}' is not a number"),
                    })
            };
            Fleet::generate(parse(s)?, parse(v)?, 1)
        }
        (None, None) => Fleet::sample(),
    };
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        return Err(SimError::InvalidOption {
            field: "--time-scale",
            rule: "must be a positive number".into(),
        });
    }
    let sim = Simulator::try_new(
        fleet,
        SimOptions {
            time_scale: args.time_scale,
            throttling: !args.no_throttle,
            ..SimOptions::default()
        },
    )?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| SimError::Io(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    tracing::info!(
        port = args.port,
        time_scale = args.time_scale,
        "Azure simulator listening"
    );
    if let Some(path) = &args.scenario {
        let scenario = Scenario::load(path)?;
        let sim2 = sim.clone();
        tokio::spawn(async move {
            let sink: Arc<dyn MessageSender> = Arc::new(RecordingSender::new());
            match run_scenario(&sim2, &scenario, sink).await {
                Ok(r) => tracing::info!(actions = r.executed.len(), "scenario finished"),
                Err(e) => tracing::error!(error = %e, "scenario failed"),
            }
        });
    }
    sim.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
