//! Can a backup run on this VM now? Checked before protecting (from the instance view the event
//! path already read, or one VM GET for the sweep's new protections) and again when a backup job
//! fails on the VM agent. A VM whose agent is not ready is `blocked: vm-agent-not-ready` with the
//! fix; a deallocated VM is `blocked: vm-deallocated` (it waits, nothing failed). Nothing is
//! attempted in Azure for either; the next scheduled sweep looks again.

use super::conclude;
use super::observe::{record_outcome, ObservedVm, SweepFacts};
use crate::context::Context;
use crate::domain::ade::OsType;
use crate::domain::source_vm::{self, agent_fix, Readiness, DEALLOCATED_MESSAGE};
use crate::engine::WorkflowError;
use crate::records::{ProtectStep, ProtectionOperation, ProtectionStatus as St};
use ade_backup_shared::ids::ResourceId;

/// Reason codes on the VM record.
pub const AGENT_NOT_READY: &str = "vm-agent-not-ready";
pub const DEALLOCATED: &str = "vm-deallocated";

/// The reason code and message for a VM that is not ready, `None` when it is.
pub fn blocked_reason(r: &Readiness, os: Option<OsType>) -> Option<(&'static str, String)> {
    match r {
        Readiness::Ready => None,
        Readiness::Deallocated => Some((DEALLOCATED, DEALLOCATED_MESSAGE.to_string())),
        Readiness::AgentNotReady { status } => Some((AGENT_NOT_READY, agent_fix(os, status))),
    }
}

/// Reads the VM with its instance view (`None`: it is gone).
async fn read_readiness(
    ctx: &Context,
    vm_id: &ResourceId,
) -> Result<Option<Readiness>, WorkflowError> {
    match ctx.arm.get_virtual_machine(vm_id).await {
        Ok(vm) => Ok(Some(source_vm::readiness(&vm))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(WorkflowError::arm("reading the VM's instance view", e)),
    }
}

/// Before protecting: `Some(line)` when the VM is not ready (recorded as blocked on its record).
/// The sweep's Resource Graph facts carry no instance view: the VM is read only when `facts`
/// asks for it (a new protection, or an agent failure last time).
pub(super) async fn check_before_protect(
    ctx: &Context,
    observed: &ObservedVm,
    facts: Option<&SweepFacts>,
) -> Result<Option<String>, WorkflowError> {
    let readiness = match (&observed.readiness, facts) {
        (Some(r), _) => r.clone(),
        (None, Some(f)) if f.check_agent => match read_readiness(ctx, &observed.id).await? {
            Some(r) => r,
            None => return Ok(Some(format!("{}: the VM no longer exists", observed.id))),
        },
        (None, _) => return Ok(None),
    };
    let Some((code, message)) = blocked_reason(&readiness, observed.os_type) else {
        return Ok(None);
    };
    record_outcome(ctx, &observed.id, St::Blocked, Some(code), &message).await?;
    Ok(Some(format!("{}: blocked: {code}", observed.id)))
}

/// A backup job failed with an agent error code: when the VM's agent is indeed not ready (or the
/// VM is deallocated) the operation ends `blocked` with the fix; `None` when the VM looks ready
/// (the caller reports Azure's failure as it is).
pub(super) async fn agent_failure(
    ctx: &Context,
    op: &ProtectionOperation,
    code: &str,
) -> Result<Option<String>, WorkflowError> {
    if !source_vm::is_agent_error(code) {
        return Ok(None);
    }
    let Some(readiness) = read_readiness(ctx, &op.vm_id).await? else {
        return Ok(None);
    };
    let Some((reason, message)) = blocked_reason(&readiness, Some(op.ade.os_type)) else {
        return Ok(None);
    };
    let message = format!("{message} (Azure Backup: {code})");
    let step = ProtectStep::TrackBackupJob;
    conclude(ctx, &op.operation_id, St::Blocked, step, reason, &message).await?;
    Ok(Some(format!("{}: blocked: {reason}", op.operation_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_for_each_readiness() {
        assert_eq!(blocked_reason(&Readiness::Ready, None), None);
        let (code, msg) =
            blocked_reason(&Readiness::Deallocated, Some(OsType::Linux)).expect("blocked");
        assert_eq!(code, DEALLOCATED);
        assert!(msg.contains("deallocated"));
        let r = Readiness::AgentNotReady {
            status: "Not Ready".into(),
        };
        let (code, msg) = blocked_reason(&r, Some(OsType::Windows)).expect("blocked");
        assert_eq!(code, AGENT_NOT_READY);
        assert!(msg.contains("Not Ready") && msg.contains("agent-windows"));
    }
}
