//! A drill's own checks of the restored VM, beyond "the deployment succeeded" and beyond the
//! restore ticket's own check: the VM runs; its guest agent reports ready (a Windows VM whose
//! agent never starts is most likely at the BitLocker recovery screen); no disk is locked and the
//! volumes the recorded `VolumeType` covers are encrypted; on Linux the ADE extension succeeded
//! and its encryption substatus (`ComponentStatus/EncryptionStatus/succeeded`, message
//! `{"os": …, "data": …}`, as `az vm encryption show` reads it) reports those volumes
//! `Encrypted`; and the recovery point's BEK secret (and KEK) are still in their vaults. Every
//! finding is recorded; the first failure's code is the drill's reason. Read-only: a redelivery
//! repeats nothing.

use super::{restore_of, send_phase, update, DrillPhase};
use crate::context::Context;
use crate::domain::ade::{AdeSettings, OsType};
use crate::engine::WorkflowError;
use crate::records::{DrillRecord, DrillResult, DrillStatus, RestoreOperation};
use crate::workflows::restore::{disk_problems, disk_states, key_material_present};
use ade_backup_shared::arm::VirtualMachine;
use ade_backup_shared::ids::ResourceId;

/// One failed check: a code and what was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
}

fn finding(code: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        code,
        message: message.into(),
    }
}

/// The checks of the VM as read with its instance view.
pub fn check_vm(vm: &VirtualMachine, ade: &AdeSettings) -> Vec<Finding> {
    let mut out = Vec::new();
    let power = vm.power_state().unwrap_or("unknown");
    if power != "running" {
        out.push(finding(
            "vm-not-running",
            format!("the VM is {power}, not running"),
        ));
    }
    let ready = vm
        .properties
        .instance_view
        .as_ref()
        .and_then(|iv| iv.vm_agent.as_ref())
        .is_some_and(|a| a.is_ready());
    if !ready {
        let m = match ade.os_type {
            OsType::Windows => "the guest agent never reported ready: Windows is most likely waiting at the BitLocker recovery screen",
            OsType::Linux => "the guest agent never reported ready",
        };
        out.push(finding("vm-agent-not-ready", m));
    }
    let states = disk_states(vm);
    let problems = disk_problems(ade.os_type, ade.volume_type.as_deref(), &states);
    if !problems.is_empty() {
        out.push(finding(
            "disks-not-unlocked",
            format!("disks not as ADE leaves them: {}", problems.join("; ")),
        ));
    }
    if ade.os_type == OsType::Linux {
        out.extend(check_ade_status(vm, ade.volume_type.as_deref()));
    }
    out
}

/// Linux: the ADE extension's status and encryption substatus cover the recorded volumes.
fn check_ade_status(vm: &VirtualMachine, volume_type: Option<&str>) -> Option<Finding> {
    let iv = vm.properties.instance_view.as_ref()?;
    let ext = iv.extensions.iter().find(|e| {
        e.extension_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("azurediskencryption"))
    });
    let Some(ext) = ext else {
        return Some(finding(
            "ade-not-reporting",
            "the VM has no Azure Disk Encryption extension status",
        ));
    };
    let succeeded = ext.statuses.iter().any(|s| {
        s.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("ProvisioningState/succeeded"))
    });
    if !succeeded {
        return Some(finding(
            "ade-not-reporting",
            "the ADE extension did not report success",
        ));
    }
    let sub = ext.substatuses.iter().find(|s| {
        s.code.as_deref().is_some_and(|c| {
            c.to_ascii_lowercase()
                .starts_with("componentstatus/encryptionstatus/")
        })
    });
    let parsed = sub
        .and_then(|s| s.message.as_deref())
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok());
    let Some(v) = parsed else {
        return Some(finding(
            "ade-not-reporting",
            "the ADE extension reports no encryption substatus",
        ));
    };
    let vt = volume_type.unwrap_or("All").to_ascii_lowercase();
    let mut wrong = Vec::new();
    for (key, covered) in [
        ("os", vt == "all" || vt == "os"),
        ("data", vt == "all" || vt == "data"),
    ] {
        let state = v[key].as_str().unwrap_or("unknown");
        if covered && !state.eq_ignore_ascii_case("Encrypted") {
            wrong.push(format!("{key} volume {state}"));
        }
    }
    (!wrong.is_empty()).then(|| {
        finding(
            "ade-not-encrypted",
            format!("ADE reports {} (VolumeType {vt})", wrong.join(", ")),
        )
    })
}

/// The recovery point's key material is still in its vault.
async fn check_key_material(
    ctx: &Context,
    op: &RestoreOperation,
) -> Result<Option<Finding>, WorkflowError> {
    let (Some(vault), Some(rp_id)) = (
        op.azure
            .vault_id
            .as_deref()
            .and_then(|v| ResourceId::parse(v).ok()),
        op.azure.recovery_point_id.as_deref(),
    ) else {
        return Ok(Some(finding(
            "key-material-unknown",
            "the restore recorded no vault or recovery point",
        )));
    };
    let vm = &op
        .request
        .as_ref()
        .ok_or_else(|| WorkflowError::poison("InvalidDrill", "the restore has no request"))?
        .vm_resource_id;
    let points = ctx
        .arm
        .list_recovery_points(&vault, vm)
        .await
        .map_err(|e| WorkflowError::arm("listing recovery points", e))?;
    let Some(rp) = points.iter().find(|p| p.name.as_deref() == Some(rp_id)) else {
        return Ok(Some(finding(
            "recovery-point-not-found",
            format!("the recovery point {rp_id} is gone"),
        )));
    };
    Ok(match key_material_present(ctx, rp).await? {
        Ok(()) => None,
        Err(refusal) => Some(Finding {
            code: "key-material-missing",
            message: refusal.message,
        }),
    })
}

/// `verify`: runs every check, records them, and goes on to clean up.
pub(super) async fn verify(ctx: &Context, d: DrillRecord) -> Result<String, WorkflowError> {
    if d.status != DrillStatus::Verifying {
        send_phase(ctx, &d.drill_id, DrillPhase::Cleanup, 0, None).await?;
        return Ok(format!("{}: verified already", d.drill_id));
    }
    let started = ctx.clock.now();
    let op = restore_of(ctx, &d).await?.ok_or_else(|| {
        WorkflowError::poison("InvalidDrill", "the drill's restore document is gone")
    })?;
    let ade = op
        .ade
        .clone()
        .ok_or_else(|| WorkflowError::poison("InvalidDrill", "the restore has no ADE settings"))?;
    let mut findings = Vec::new();
    match op.azure.restored_vm_id.as_deref().map(ResourceId::parse) {
        Some(Ok(vm_id)) => match ctx.arm.get_virtual_machine(&vm_id).await {
            Ok(vm) => findings.extend(check_vm(&vm, &ade)),
            Err(e) if e.is_transient() => {
                return Err(WorkflowError::arm("reading the drilled VM", e))
            }
            Err(e) => findings.push(finding(
                "vm-not-found",
                format!("the restored VM cannot be read: {e}"),
            )),
        },
        _ => findings.push(finding("vm-not-found", "the restore recorded no VM")),
    }
    findings.extend(check_key_material(ctx, &op).await?);
    let secs = (ctx.clock.now() - started).num_seconds().max(0);
    let end = ctx.clock.now();
    update(ctx, &d.drill_id, |r| {
        if r.status != DrillStatus::Verifying {
            return false;
        }
        r.rto.verification_secs = Some(secs);
        r.rto.total_secs = Some((end - r.created_at).num_seconds().max(0));
        match findings.first() {
            None => {
                r.result = Some(DrillResult::Passed);
                r.checks.push("verify: running, agent ready, every covered volume encrypted and unlocked, key material present".into());
            }
            Some(first) => {
                r.result = Some(DrillResult::Failed);
                r.reason = Some(first.code.to_string());
                r.message = Some(first.message.clone());
                r.checks
                    .extend(findings.iter().map(|f| format!("verify: {}: {}", f.code, f.message)));
            }
        }
        r.status = DrillStatus::CleaningUp;
        true
    })
    .await?;
    send_phase(ctx, &d.drill_id, DrillPhase::Cleanup, 0, None).await?;
    let outcome = findings
        .first()
        .map_or("passed".to_string(), |f| format!("failed: {}", f.code));
    Ok(format!("{}: verification {outcome}", d.drill_id))
}
