//! Scenarios: timed actions played against a running simulator
//! (schema: `sim/schema/scenario.schema.json`).

use crate::{SimError, Simulator};
use ade_backup_shared::messaging::{MessageSender, OutboundMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    pub actions: Vec<TimedAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimedAction {
    /// Simulated seconds after the scenario starts.
    pub at_seconds: f64,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdeVariant {
    Bek,
    BekKek,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Put the ADE extension on a VM (as its owner would): the VM becomes encrypted after the
    /// extension's simulated duration, and a ResourceWriteSuccess event is published.
    #[serde(rename_all = "camelCase")]
    EnableAde {
        /// VM resource id, `resourceGroup/name`, or a name unique in the fleet.
        vm: String,
        variant: AdeVariant,
        key_vault: String,
        #[serde(default)]
        kek: Option<String>,
    },
    /// Send an arbitrary message (e.g. a restore request) to a queue.
    #[serde(rename_all = "camelCase")]
    SendMessage {
        queue: String,
        body: Value,
        #[serde(default)]
        message_id: Option<String>,
    },
    /// Drift: remove an identity's access policy (default: Backup Management Service) and its
    /// role assignments at the vault.
    #[serde(rename_all = "camelCase")]
    RemoveAccessPolicy {
        key_vault: String,
        #[serde(default)]
        object_id: Option<String>,
    },
    /// A restore-side field failure (issue 14), see [`crate::field::FieldFault`].
    #[serde(rename_all = "camelCase")]
    FieldFault { fault: crate::field::FieldFault },
    /// Drift: stop protection of a VM and retain its data, as an operator would (the item
    /// becomes ProtectionStopped with no policy; its recovery points stay).
    #[serde(rename_all = "camelCase")]
    StopProtection {
        /// VM resource id, `resourceGroup/name`, or a name unique in the fleet.
        vm: String,
    },
    /// The VM agent changes (stops answering, is removed, recovers): backups of a running VM
    /// fail without a ready agent (`UserErrorGuestAgentStatusUnavailable`).
    #[serde(rename_all = "camelCase")]
    SetVmAgent {
        /// VM resource id, `resourceGroup/name`, or a name unique in the fleet.
        vm: String,
        agent: crate::fleet::VmAgent,
    },
    /// The owner starts, stops or deallocates a VM.
    #[serde(rename_all = "camelCase")]
    SetPowerState {
        /// VM resource id, `resourceGroup/name`, or a name unique in the fleet.
        vm: String,
        state: crate::fleet::PowerState,
    },
    /// Drift: someone excludes data disks from a protected VM's backup (selective disk backup;
    /// an encrypted VM's backups then fail with `UserErrorEncryptedVmNotSupportedWithDiskEx`).
    #[serde(rename_all = "camelCase")]
    ExcludeDisks {
        /// VM resource id, `resourceGroup/name`, or a name unique in the fleet.
        vm: String,
        luns: Vec<u32>,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Io(format!("reading scenario {}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| SimError::InvalidScenario(format!("{}: {e}", path.display())))
    }
}

/// What a scenario run did, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScenarioReport {
    pub executed: Vec<String>,
}

/// Play `scenario` in simulated time. ADE events go to the simulator's event sink; if none is
/// set, to `sender`. `sendMessage` actions always go to `sender`.
pub async fn run_scenario(
    sim: &Simulator,
    scenario: &Scenario,
    sender: Arc<dyn MessageSender>,
) -> Result<ScenarioReport, SimError> {
    let start = sim.now();
    let mut actions: Vec<&TimedAction> = scenario.actions.iter().collect();
    actions.sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
    let mut report = ScenarioReport::default();
    for (i, a) in actions.into_iter().enumerate() {
        if !a.at_seconds.is_finite() || a.at_seconds < 0.0 {
            return Err(SimError::InvalidScenario(format!(
                "actions[{i}].atSeconds must be a non-negative number"
            )));
        }
        let target = start + chrono::Duration::milliseconds((a.at_seconds * 1000.0) as i64);
        wait_until(sim, target).await;
        let done = run_action(sim, scenario, i, &a.action, &sender).await?;
        report.executed.push(done);
    }
    Ok(report)
}

/// Sleep until the simulated clock reaches `target`.
async fn wait_until(sim: &Simulator, target: chrono::DateTime<chrono::Utc>) {
    loop {
        let now = sim.now();
        if now >= target {
            break;
        }
        let wait = sim
            .real_duration(target - now)
            .min(std::time::Duration::from_millis(50));
        tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
    }
}

/// Perform action number `i` of `scenario`; returns the line the report records for it.
async fn run_action(
    sim: &Simulator,
    scenario: &Scenario,
    i: usize,
    action: &Action,
    sender: &Arc<dyn MessageSender>,
) -> Result<String, SimError> {
    match action {
        Action::EnableAde {
            vm,
            variant,
            key_vault,
            kek,
        } => {
            let kek = match (variant, kek) {
                (AdeVariant::Bek, _) => None,
                (AdeVariant::BekKek, Some(k)) => Some(k.as_str()),
                (AdeVariant::BekKek, None) => {
                    return Err(SimError::InvalidScenario(format!(
                        "actions[{i}]: variant bek-kek needs kek"
                    )))
                }
            };
            let events = sim.enable_ade(vm, key_vault, kek)?;
            sim.publish_via(events, Some(sender.clone())).await;
            Ok(format!("enableAde {vm}"))
        }
        Action::SendMessage {
            queue,
            body,
            message_id,
        } => {
            let id = message_id.clone().unwrap_or_else(|| {
                ade_backup_shared::ids::deterministic_uuid(&[
                    "scenario",
                    &scenario.name,
                    &i.to_string(),
                ])
                .to_string()
            });
            let msg = OutboundMessage::json(queue, id, body)
                .map_err(|e| SimError::Messaging(e.to_string()))?;
            sender
                .send(msg)
                .await
                .map_err(|e| SimError::Messaging(e.to_string()))?;
            Ok(format!("sendMessage {queue}"))
        }
        Action::RemoveAccessPolicy {
            key_vault,
            object_id,
        } => {
            sim.remove_access(key_vault, object_id.as_deref())?;
            Ok(format!("removeAccessPolicy {key_vault}"))
        }
        Action::StopProtection { vm } => {
            sim.stop_protection(vm)?;
            Ok(format!("stopProtection {vm}"))
        }
        Action::FieldFault { fault } => {
            sim.field_fault(fault)?;
            Ok(format!("fieldFault {fault:?}"))
        }
        Action::SetVmAgent { vm, agent } => {
            sim.set_vm_agent(vm, *agent)?;
            Ok(format!("setVmAgent {vm} {agent:?}"))
        }
        Action::SetPowerState { vm, state } => {
            sim.set_power_state(vm, *state)?;
            Ok(format!("setPowerState {vm} {}", state.as_str()))
        }
        Action::ExcludeDisks { vm, luns } => {
            sim.exclude_disks(vm, luns)?;
            Ok(format!("excludeDisks {vm} {luns:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_scenario_parses() {
        let s: Scenario =
            serde_json::from_str(include_str!("../scenarios/sample.json")).expect("parses");
        assert!(s
            .actions
            .iter()
            .any(|a| matches!(a.action, Action::EnableAde { .. })));
        assert!(s
            .actions
            .iter()
            .any(|a| matches!(a.action, Action::SendMessage { .. })));
        assert!(s
            .actions
            .iter()
            .any(|a| matches!(a.action, Action::RemoveAccessPolicy { .. })));
        assert!(s
            .actions
            .iter()
            .any(|a| matches!(a.action, Action::StopProtection { .. })));
    }

    #[test]
    fn stop_protection_parses_and_needs_a_vm() {
        let s: Scenario = serde_json::from_str(
            r#"{"actions": [{"atSeconds": 5, "action": "stopProtection", "vm": "rg-app/web-01"}]}"#,
        )
        .expect("parses");
        assert_eq!(
            s.actions,
            vec![TimedAction {
                at_seconds: 5.0,
                action: Action::StopProtection {
                    vm: "rg-app/web-01".into()
                },
            }]
        );
        let missing = serde_json::from_str::<Scenario>(
            r#"{"actions": [{"atSeconds": 5, "action": "stopProtection"}]}"#,
        );
        assert!(missing.is_err(), "vm is required");
    }

    #[test]
    fn field_failure_switches_parse_with_their_values() {
        let s: Scenario = serde_json::from_str(
            r#"{"actions": [
                {"atSeconds": 1, "action": "setVmAgent", "vm": "web-01", "agent": "not-ready"},
                {"atSeconds": 2, "action": "setPowerState", "vm": "web-01", "state": "deallocated"},
                {"atSeconds": 3, "action": "excludeDisks", "vm": "web-01", "luns": [0, 2]}
            ]}"#,
        )
        .expect("parses");
        let vm = "web-01".to_string();
        assert_eq!(
            s.actions.into_iter().map(|a| a.action).collect::<Vec<_>>(),
            vec![
                Action::SetVmAgent {
                    vm: vm.clone(),
                    agent: crate::fleet::VmAgent::NotReady
                },
                Action::SetPowerState {
                    vm: vm.clone(),
                    state: crate::fleet::PowerState::Deallocated
                },
                Action::ExcludeDisks {
                    vm,
                    luns: vec![0, 2]
                },
            ]
        );
        let bad = r#"{"actions": [{"atSeconds": 1, "action": "setVmAgent", "vm": "a", "agent": "sleepy"}]}"#;
        assert!(serde_json::from_str::<Scenario>(bad).is_err());
    }
}
