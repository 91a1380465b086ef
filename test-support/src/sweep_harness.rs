//! The continuous stack of the sweep tests and benchmarks: [`Harness`] runs a spawned simulator,
//! a [`Context`] whose ARM client points at it and whose clock is the simulator's, a counting
//! in-memory state store, and a [`QueuePump`] that delivers continuously what the handlers send.

use crate::pump::{PumpOptions, PumpReport, QueuePump};
use crate::simulator::{key_vault_id, rules_for, spawn_simulator, SimClock};
use ade_backup_functions::context::Context;
use ade_backup_functions::handlers::Registry;
use ade_backup_functions::settings::Settings;
use ade_backup_shared::arm::{ArmClient, ArmClientOptions, PacingPolicy, RoleAssignmentProperties};
use ade_backup_shared::credential::{AccessToken, StaticToken};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::MemoryStateStore;
use ade_backup_sim::fleet::KeyVaultModel;
use ade_backup_sim::{Fleet, SimOptions, Simulator};
use std::collections::HashMap;
use std::sync::Arc;

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
            ArmClientOptions {
                // The simulator's blob and Key Vault data planes (restore templates, ADE
                // secrets), as `ade-backup local` points its client at them.
                blob_endpoint: url.join("_blob/").ok(),
                key_vault_endpoint: url.join("_keyvault/").ok(),
                ..ArmClientOptions::default().with_graph_endpoint(url.clone())
            },
        )
        .expect("arm client");
        let store = Arc::new(MemoryStateStore::new());
        let pump = Arc::new(QueuePump::new(
            &Registry::production(),
            PumpOptions::once_per_id(),
        ));
        let ctx = Context {
            state: store.clone(),
            sender: pump.clone(),
            settings: Arc::new(settings),
            clock: Arc::new(SimClock(sim.clone())),
            arm: Arc::new(arm),
            bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
            dead_letters: None,
            reads: Default::default(),
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

    /// Another instance of the Functions app (it scales out): the same state store, queues and
    /// settings, but an ARM client of its own, so it paces itself with `pacing` as a separate
    /// process would.
    pub fn instance(&self, pacing: PacingPolicy) -> Context {
        let arm = ArmClient::new(
            self.url.clone(),
            Arc::new(StaticToken(AccessToken::new("sim"))),
            ArmClientOptions {
                pacing,
                ..ArmClientOptions::default().with_graph_endpoint(self.url.clone())
            },
        )
        .expect("arm client");
        Context {
            arm: Arc::new(arm),
            ..self.ctx.clone()
        }
    }

    /// Delivers every message the workflow sends until it is quiet.
    pub async fn settle(&self, timeout: std::time::Duration) -> PumpReport {
        self.pump.drain(&self.ctx, timeout).await
    }
}
