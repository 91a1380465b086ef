//! `RedeployVm`, first part: deploy the template the restore job wrote into the target resource
//! group (read with our identity from the staging account, deployed inline: no SAS is minted),
//! and follow the deployment until the VM exists. Linux VMs go on to [`super::ade`], Windows VMs
//! to [`super::verify`].

use super::{
    ade, ade_of, again, fail, open_restore, push, request_of, template, verify, RedeployMessage,
    RedeployPhase, Why,
};
use crate::context::Context;
use crate::domain::ade::OsType;
use crate::domain::restore_request::RestoreRequest;
use crate::engine::{
    self, claim_lost, claim_step, update_holding, Claimed, Phase, WorkflowError, Writer,
};
use crate::records::{RestoreDetail, RestoreOperation, RestoreStatus, RestoreStep};
use crate::trigger::ServiceBusMessage;
use ade_backup_shared::arm::{Deployment, DeploymentRequest, ResourceGroupRef, SubscriptionId};
use ade_backup_shared::ids::{deterministic_uuid, ResourceId, TicketId};
use serde_json::{json as j, Value};

pub(super) const DEPLOY_NEXT: &str = "The restored disks are kept (target resource group and staging storage account). Fix the cause shown (for example a VM with that name already exists), then deploy the template from the restore job by hand or submit a new ticket with another targetVmName.";
const TIMED_OUT_NEXT: &str = "Look at the deployment / extension in the target resource group; the restored disks and anything deployed are kept.";

/// One `redeploy-vm` message.
pub async fn redeploy(
    ctx: &Context,
    msg: &RedeployMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let op = match open_restore(ctx, msg, TIMED_OUT_NEXT).await? {
        Ok(op) => op,
        Err(line) => return Ok(line),
    };
    match msg.phase {
        RedeployPhase::Deploy => deploy(ctx, op, delivery).await,
        RedeployPhase::DeployPoll => deploy_poll(ctx, op, msg.poll).await,
        RedeployPhase::ReinstallAde => ade::reinstall(ctx, op, delivery).await,
        RedeployPhase::AdePoll => ade::poll(ctx, op, msg.poll).await,
        RedeployPhase::Verify => verify::verify(ctx, op, msg.poll).await,
    }
}

/// ARM deployment name for a ticket: readable, deterministic, at most 64 characters of the
/// allowed set. The hash keeps two tickets that sanitize alike apart.
pub fn deployment_name(ticket: &TicketId) -> String {
    let readable: String = ticket
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let h = deterministic_uuid(&["restore-deployment", ticket.as_str()]).simple();
    format!("adeb-restore-{readable}-{}", &h.to_string()[..8])
}

fn target_rg(req: &RestoreRequest) -> Result<ResourceGroupRef, WorkflowError> {
    SubscriptionId::parse(&req.target_resource_group.subscription)
        .and_then(|s| ResourceGroupRef::new(s, &req.target_resource_group.name))
        .map_err(|e| WorkflowError::poison("InvalidRestore", e.to_string()))
}

pub(super) fn target_vm_name(req: &RestoreRequest) -> String {
    req.target_vm_name
        .clone()
        .unwrap_or_else(|| format!("{}-restored", req.vm_resource_id.name()))
}

pub(super) fn target_vm_id(req: &RestoreRequest) -> Result<ResourceId, WorkflowError> {
    ResourceId::parse(&format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{}",
        req.target_resource_group.id(),
        target_vm_name(req)
    ))
    .map_err(|e| WorkflowError::poison("InvalidRestore", e.to_string()))
}

/// Template parameters: the VM name and, when a subnet is given, its network (the parameter
/// names of the template Azure Backup generates for a restore-disks job).
fn deployment_parameters(req: &RestoreRequest) -> Value {
    let mut p = j!({ "VirtualMachineName": { "value": target_vm_name(req) } });
    if let Some(subnet) = &req.target_subnet_id {
        let vnet = subnet
            .parent()
            .map(|v| v.name().to_string())
            .unwrap_or_default();
        p["VirtualNetwork"] = j!({ "value": vnet });
        p["VirtualNetworkResourceGroup"] = j!({ "value": subnet.resource_group() });
        p["Subnet"] = j!({ "value": subnet.name() });
    }
    p
}

/// Start the deployment (or adopt the one a crashed attempt started: it is named after the
/// ticket).
async fn deploy(
    ctx: &Context,
    op: RestoreOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::Deploy);
    let op = match claim_step::<RestoreOperation>(ctx, &ticket, 0, step, delivery).await? {
        Claimed::Go(op) => op,
        Claimed::Settled { line, .. } => return Ok(line),
    };
    let req = request_of(&op)?.clone();
    let rg = target_rg(&req)?;
    let name = deployment_name(&ticket);
    let existing = match ctx.arm.get_deployment(&rg, &name).await {
        Ok(d) => Some(d),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(WorkflowError::arm("reading the deployment", e)),
    };
    let note = match existing {
        Some(d) => format!("adopted deployment {name} ({})", d.state().unwrap_or("?")),
        None => match start_deployment(ctx, &op, &req, &rg, &name).await? {
            Ok(note) => note,
            Err(line) => return Ok(line),
        },
    };
    let at = engine::now(ctx);
    let dep_id = format!(
        "{}/providers/Microsoft.Resources/deployments/{name}",
        req.target_resource_group.id()
    );
    let vm_name = target_vm_name(&req);
    let message = format!("deploying the VM {vm_name} from the restore template ({note})");
    let writer = Writer::Claim(delivery);
    let Some(op) = update_holding::<RestoreOperation>(ctx, &ticket, step, writer, |o, sent| {
        o.azure.deployment_name = Some(name.clone());
        o.azure.deployment_id = Some(dep_id.clone());
        if o.status != RestoreStatus::Deploying {
            let st = RestoreStatus::Deploying;
            *sent = Some(push(o, at, st, Some(step), message.clone(), Why::default()));
        }
        true
    })
    .await?
    else {
        return Ok(claim_lost(&ticket, step));
    };
    again(ctx, &op, RedeployPhase::DeployPoll, 0).await?;
    Ok(format!("{ticket}: {note}"))
}

/// Reads and checks the template the restore job wrote and starts its deployment. `Err(line)`: the ticket
/// failed.
async fn start_deployment(
    ctx: &Context,
    op: &RestoreOperation,
    req: &RestoreRequest,
    rg: &ResourceGroupRef,
    name: &str,
) -> Result<Result<String, String>, WorkflowError> {
    let (ticket, step) = (&op.ticket_id, RestoreStep::Deploy);
    let mut content = match template::fetch_checked(ctx, op, req).await? {
        Ok(t) => t,
        Err(line) => return Ok(Err(line)),
    };
    // A drill's resources carry its tag; no other restore's ever do (whatever the template says).
    let drill = super::drill_tags::drill_of(ctx, op).await?;
    crate::domain::drill_tag::tag_template(&mut content, drill.as_deref());
    let request = DeploymentRequest::inline(content, Some(deployment_parameters(req)));
    match ctx.arm.begin_put_deployment(rg, name, &request).await {
        Ok(_) => Ok(Ok(format!("deployment {name} started"))),
        Err(e) if e.is_transient() => Err(WorkflowError::arm("starting the deployment", e)),
        Err(e) => {
            let c = e.code().unwrap_or("deployment-failed").to_string();
            fail(ctx, ticket, step, &c, &e.to_string(), DEPLOY_NEXT)
                .await
                .map(Err)
        }
    }
}

/// Follow the deployment until it ends.
async fn deploy_poll(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::Deploy);
    if op.steps.is_done(step) {
        // A crash after recording may have lost the next message: send it again (fixed id).
        send_after_deploy(ctx, &op).await?;
        return Ok(format!("{ticket}: deployment already done"));
    }
    let req = request_of(&op)?.clone();
    let rg = target_rg(&req)?;
    let name = op
        .azure
        .deployment_name
        .clone()
        .unwrap_or_else(|| deployment_name(&ticket));
    let d = match ctx.arm.get_deployment(&rg, &name).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => {
            // Recorded as started but not there: start it again (the PUT is idempotent by name).
            let op = engine::update::<RestoreOperation>(ctx, &ticket, |o| {
                o.steps.reset(step);
                true
            })
            .await?;
            RedeployPhase::Deploy.send(ctx, &op, poll, None).await?;
            return Ok(format!(
                "{ticket}: deployment {name} not found; starting it again"
            ));
        }
        Err(e) => return Err(WorkflowError::arm("reading the deployment", e)),
    };
    let state = d.state().unwrap_or("").to_ascii_lowercase();
    match state.as_str() {
        "succeeded" => deployed(ctx, op, &req, &d, &name).await,
        "failed" | "canceled" => {
            let c = d
                .root_error_code()
                .unwrap_or("deployment-failed")
                .to_string();
            let mut e = d.properties.error.as_ref();
            while let Some(inner) = e.and_then(|x| x.details.first()) {
                e = Some(inner);
            }
            let text = e
                .and_then(|x| x.message.clone())
                .unwrap_or_else(|| format!("deployment {name} {state}"));
            let m = format!("deployment {name} {state}: {text}");
            fail(ctx, &ticket, step, &c, &m, DEPLOY_NEXT).await
        }
        _ => {
            again(ctx, &op, RedeployPhase::DeployPoll, poll).await?;
            Ok(format!("{ticket}: deployment {name} {state}"))
        }
    }
}

/// The deployment succeeded: record the VM it created and go on.
async fn deployed(
    ctx: &Context,
    op: RestoreOperation,
    req: &RestoreRequest,
    d: &Deployment,
    name: &str,
) -> Result<String, WorkflowError> {
    // The VM reported as restored is the one the request named, in the target resource group.
    let expected = target_vm_id(req)?;
    let vms: Vec<ResourceId> = d
        .properties
        .output_resources
        .iter()
        .filter_map(|r| r.id.as_deref())
        .filter_map(|id| ResourceId::parse(id).ok())
        .filter(|id| id.is_type("Microsoft.Compute/virtualMachines"))
        .collect();
    if vms.iter().any(|v| v.canonical() != expected.canonical()) {
        let shown: Vec<String> = vms.iter().map(ToString::to_string).collect();
        let m = format!(
            "deployment {name} created {} instead of {expected}",
            shown.join(", ")
        );
        tracing::warn!(security_event = true, ticket = %op.ticket_id, "{m}");
        let c = "restore-target-mismatch";
        return fail(ctx, &op.ticket_id, RestoreStep::Deploy, c, &m, DEPLOY_NEXT).await;
    }
    let vm_id = expected;
    let at = engine::now(ctx);
    let detail = RestoreDetail {
        deployment: Some(name.to_string()),
        ..Default::default()
    };
    let op = engine::update::<RestoreOperation>(ctx, &op.ticket_id, |o| {
        o.steps
            .finish(RestoreStep::Deploy, at, Some(detail.clone()));
        o.azure.restored_vm_id = Some(vm_id.to_string());
        true
    })
    .await?;
    send_after_deploy(ctx, &op).await?;
    Ok(format!(
        "{}: deployment {name} succeeded: {vm_id}",
        op.ticket_id
    ))
}

/// Linux: reinstall ADE; Windows: straight to verification (no reinstall needed).
async fn send_after_deploy(ctx: &Context, op: &RestoreOperation) -> Result<(), WorkflowError> {
    let phase = match ade_of(op)?.os_type {
        OsType::Linux => RedeployPhase::ReinstallAde,
        OsType::Windows => RedeployPhase::Verify,
    };
    phase.send(ctx, op, 0, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_are_safe() {
        let t = TicketId::parse("JIRA:OPS-1.2").expect("ticket");
        let n = deployment_name(&t);
        assert!(n.len() <= 64, "{n}");
        assert!(n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(n, deployment_name(&t));
        let other = TicketId::parse("JIRA-OPS-1-2").expect("ticket");
        assert_ne!(
            n,
            deployment_name(&other),
            "sanitized alike, still distinct"
        );
        let long = TicketId::parse(&"x".repeat(64)).expect("ticket");
        assert!(deployment_name(&long).len() <= 64);
    }
}
