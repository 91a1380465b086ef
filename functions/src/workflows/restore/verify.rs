//! `RedeployVm`, last step: the restored VM must run and its disks must be as ADE leaves them
//! (none locked; the volumes the recorded `VolumeType` covers encrypted). A Windows VM that does
//! not run is reported with the BitLocker-recovery hint rather than declared restored.

use super::ade::{ade_next, restored_vm};
use super::{ade_of, again, fail, push, update_reporting, RedeployPhase, Why};
use crate::context::Context;
use crate::domain::ade::OsType;
use crate::engine::{self, WorkflowError};
use crate::records::{RestoreDetail, RestoreOperation, RestoreStatus, RestoreStep};
use ade_backup_shared::arm::VirtualMachine;

/// How many times `verify` looks again at a VM that is not running yet before failing.
const VERIFY_ATTEMPTS: u32 = 5;
/// How many times `verify` looks again at a running Windows VM whose guest agent is not ready
/// (one poll interval apart) before reporting `completed-needs-attention`.
const AGENT_ATTEMPTS: u32 = 6;

/// Per-disk encryption state of the instance view: (disk name, is OS disk, state).
pub fn disk_states(vm: &VirtualMachine) -> Vec<(String, bool, String)> {
    let os_name = vm.os_disk().and_then(|d| d.name.clone());
    let Some(iv) = vm.properties.instance_view.as_ref() else {
        return vec![];
    };
    iv.disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = d.name.clone().unwrap_or_default();
            let is_os = match &os_name {
                Some(n) => n.eq_ignore_ascii_case(&name),
                None => i == 0,
            };
            let st = d
                .statuses
                .iter()
                .filter_map(|s| s.code.as_deref())
                .find_map(|c| c.strip_prefix("EncryptionState/"))
                .unwrap_or("unknown")
                .to_string();
            (name, is_os, st)
        })
        .collect()
}

/// Disks that are not as ADE should leave them: none may be `locked`; the volumes the recorded
/// `VolumeType` covers must be `encrypted` (Linux `Data` leaves the OS disk unencrypted).
pub fn disk_problems(
    os: OsType,
    volume_type: Option<&str>,
    states: &[(String, bool, String)],
) -> Vec<String> {
    let vt = volume_type.unwrap_or("All").to_ascii_lowercase();
    let os_covered = vt == "all" || vt == "os";
    let data_covered = match os {
        OsType::Linux => vt == "all" || vt == "data",
        // Windows data volumes are BitLocker-protected inside the guest; ARM may show them
        // either way, so only a locked one is a problem.
        OsType::Windows => false,
    };
    states
        .iter()
        .filter(|(_, is_os, st)| {
            st == "locked"
                || (st != "encrypted" && ((*is_os && os_covered) || (!*is_os && data_covered)))
        })
        .map(|(n, is_os, st)| format!("{} {n}: {st}", if *is_os { "OS disk" } else { "data disk" }))
        .collect()
}

/// One look at the restored VM: completed, not yet running (look again), or failed.
pub(super) async fn verify(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::Verify);
    let ade = ade_of(&op)?.clone();
    let vm_id = restored_vm(&op)?;
    let vm = match ctx.arm.get_virtual_machine(&vm_id).await {
        Ok(vm) => vm,
        Err(e) if e.is_transient() => return Err(WorkflowError::arm("reading the restored VM", e)),
        Err(e) => {
            let c = e.code().unwrap_or("vm-not-found").to_string();
            let m = format!("the restored VM {vm_id} cannot be read: {e}");
            let next = "Look for the VM in the target resource group; the restored disks are kept.";
            return fail(ctx, &ticket, step, &c, &m, next).await;
        }
    };
    let power = vm.power_state().unwrap_or("unknown").to_string();
    let states = disk_states(&vm);
    let shown = states
        .iter()
        .map(|(n, _, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(", ");
    if power != "running" {
        if poll < VERIFY_ATTEMPTS && matches!(power.as_str(), "starting" | "unknown") {
            again(ctx, &op, RedeployPhase::Verify, poll).await?;
            return Ok(format!("{ticket}: VM power state {power}; looking again"));
        }
        let next = match ade.os_type {
            OsType::Windows => "Open the VM's boot diagnostics (serial console / screenshot): a restored Windows VM can wait at the BitLocker recovery screen. Get the BEK secret from the Key Vault to unlock it, then start the VM.",
            OsType::Linux => "Open the VM's boot diagnostics (serial log) to see why it does not run; the VM and its disks are kept.",
        };
        let m = format!("the restored VM {vm_id} is {power}, not running (disks: {shown})");
        return fail(ctx, &ticket, step, "vm-not-running", &m, next).await;
    }
    let problems = disk_problems(ade.os_type, ade.volume_type.as_deref(), &states);
    if !problems.is_empty() {
        let m = format!(
            "the restored VM {vm_id} runs but its disks are not unlocked: {}",
            problems.join("; ")
        );
        return fail(
            ctx,
            &ticket,
            step,
            "disks-not-unlocked",
            &m,
            &ade_next(&ade),
        )
        .await;
    }
    if ade.os_type == OsType::Windows && !agent_ready(&vm) {
        if poll < AGENT_ATTEMPTS {
            again(ctx, &op, RedeployPhase::Verify, poll).await?;
            return Ok(format!(
                "{ticket}: guest agent of {vm_id} not ready yet; looking again"
            ));
        }
        return needs_attention(ctx, &op, &vm, (power, shown)).await;
    }
    let message = match ade.os_type {
        OsType::Linux => format!(
            "completed: {vm_id} is running; ADE reinstalled and every disk it covers is encrypted and unlocked ({shown})"
        ),
        OsType::Windows => format!(
            "completed: {vm_id} is running (power state {power}) and its guest agent reports ready (Windows booted past BitLocker); Windows needs no ADE reinstall (the restored disks keep their BitLocker encryption settings); disk states: {shown}"
        ),
    };
    let detail = RestoreDetail {
        power_state: Some(power),
        disks: Some(shown),
        ..Default::default()
    };
    complete(ctx, &op, &vm, detail, message).await?;
    tracing::info!(ticket = %ticket, vm = %vm_id, "restore completed");
    Ok(format!("{ticket}: completed: {vm_id}"))
}

/// The guest agent reports ready: Windows booted (a VM waiting at the BitLocker recovery screen
/// runs as far as ARM can tell, but its agent never starts).
fn agent_ready(vm: &VirtualMachine) -> bool {
    vm.properties
        .instance_view
        .as_ref()
        .and_then(|iv| iv.vm_agent.as_ref())
        .is_some_and(|a| a.is_ready())
}

const BITLOCKER_NEXT: &str = "The VM runs but Windows did not finish booting: it is most likely waiting at the BitLocker recovery screen. 1) Open the VM's boot diagnostics (screenshot) or serial console to confirm. 2) Read the BEK secret named in the restore document's ADE settings from the Key Vault (az keyvault secret show --id <secretUrl>; with a KEK, unwrap it first) and enter it as the recovery key, or attach the OS disk to a rescue VM and unlock it with manage-bde -unlock -RecoveryKey. 3) Once the agent reports ready, the VM is usable; nothing was cleaned up.";

/// A Windows VM that runs but whose agent never became ready: final, with the BitLocker steps.
async fn needs_attention(
    ctx: &Context,
    op: &RestoreOperation,
    vm: &VirtualMachine,
    (power, shown): (String, String),
) -> Result<String, WorkflowError> {
    let vm_id = restored_vm(op)?;
    let message = format!(
        "{vm_id} was deployed and is {power}, but its guest agent never reported ready after {AGENT_ATTEMPTS} looks: Windows is probably waiting at the BitLocker recovery screen (disks: {shown})"
    );
    let detail = RestoreDetail {
        power_state: Some(power),
        disks: Some(shown),
        ..Default::default()
    };
    let why = Why {
        reason: Some("vm-agent-not-ready"),
        field: None,
        next_action: Some(BITLOCKER_NEXT),
    };
    let st = RestoreStatus::CompletedNeedsAttention;
    finish(ctx, op, vm, detail, (st, message, why)).await?;
    tracing::warn!(ticket = %op.ticket_id, vm = %vm_id, "restored Windows VM needs attention: guest agent not ready");
    Ok(format!(
        "{}: completed, needs attention: {vm_id}",
        op.ticket_id
    ))
}

/// Records the restore as `completed` with the restored disks' ids.
async fn complete(
    ctx: &Context,
    op: &RestoreOperation,
    vm: &VirtualMachine,
    detail: RestoreDetail,
    message: String,
) -> Result<(), WorkflowError> {
    let st = RestoreStatus::Completed;
    finish(ctx, op, vm, detail, (st, message, Why::default())).await
}

/// Records a final status of the verify step with the restored disks' ids.
async fn finish(
    ctx: &Context,
    op: &RestoreOperation,
    vm: &VirtualMachine,
    detail: RestoreDetail,
    (st, message, why): (RestoreStatus, String, Why<'_>),
) -> Result<(), WorkflowError> {
    let disk_ids: Vec<String> = vm
        .os_disk()
        .and_then(|d| d.managed_disk.as_ref().and_then(|m| m.id.clone()))
        .into_iter()
        .chain(
            vm.data_disks()
                .iter()
                .filter_map(|d| d.managed_disk.as_ref().and_then(|m| m.id.clone())),
        )
        .collect();
    let at = engine::now(ctx);
    let step = RestoreStep::Verify;
    update_reporting(ctx, &op.ticket_id, |o, sent| {
        if o.status.is_final() {
            return false;
        }
        o.steps.finish(step, at, Some(detail.clone()));
        o.azure.restored_disk_ids = disk_ids.clone();
        *sent = Some(push(o, at, st, Some(step), message.clone(), why));
        true
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_verification_follows_volume_type() {
        let s = |v: &[(&str, bool, &str)]| -> Vec<(String, bool, String)> {
            v.iter()
                .map(|(n, o, st)| (n.to_string(), *o, st.to_string()))
                .collect()
        };
        let linux_ok = s(&[("os", true, "notEncrypted"), ("d1", false, "encrypted")]);
        assert!(disk_problems(OsType::Linux, Some("Data"), &linux_ok).is_empty());
        assert_eq!(
            disk_problems(OsType::Linux, Some("All"), &linux_ok).len(),
            1
        );
        let locked = s(&[("os", true, "notEncrypted"), ("d1", false, "locked")]);
        assert_eq!(disk_problems(OsType::Linux, Some("Data"), &locked).len(), 1);
        let plain = s(&[("os", true, "notEncrypted"), ("d1", false, "notEncrypted")]);
        assert_eq!(disk_problems(OsType::Linux, Some("Data"), &plain).len(), 1);
        let win = s(&[("os", true, "encrypted"), ("d1", false, "notEncrypted")]);
        assert!(disk_problems(OsType::Windows, Some("All"), &win).is_empty());
        let win_bad = s(&[("os", true, "notEncrypted")]);
        assert_eq!(
            disk_problems(OsType::Windows, Some("All"), &win_bad).len(),
            1
        );
    }
}
