//! `RedeployVm`, Linux: reinstall the ADE extension on the restored VM with the settings recorded
//! when the source VM was protected (the template a restore job generates does not carry them),
//! then follow the extension until it is provisioned. The Key Vault is checked again first: a
//! vault without `enabledForDiskEncryption` leaves the VM unable to fetch its passphrase.

use super::{ade_of, again, code, fail, kek_clause, push, RedeployPhase, Why};
use crate::context::Context;
use crate::domain::ade::{AdeSettings, OsType, ADE_PUBLISHER};
use crate::engine::{
    self, claim_lost, claim_step, update_holding, Claimed, Phase, WorkflowError, Writer,
};
use crate::records::{RestoreOperation, RestoreStatus, RestoreStep};
use crate::trigger::ServiceBusMessage;
use ade_backup_shared::arm::{ProtectedSettings, VmExtension, VmExtensionProperties};
use ade_backup_shared::ids::{ResourceId, TicketId};

/// What a human does when the reinstall cannot be done automatically.
pub(super) fn ade_next(ade: &AdeSettings) -> String {
    let kek = kek_clause(ade, "=");
    format!(
        "The VM is deployed and kept. Reinstall ADE by hand: extension {} (publisher {ADE_PUBLISHER}) with settings EncryptionOperation=EnableEncryption, KeyVaultURL={}, KeyVaultResourceId={}{kek}, VolumeType={}; then check that the data disks mount.",
        ade.os_type.ade_extension_type(),
        ade.key_vault_url,
        ade.key_vault_resource_id,
        ade.volume_type.clone().unwrap_or_else(|| "All".into())
    )
}

/// The extension body that reinstalls ADE with the recorded public settings. No
/// `protectedSettings`: single-pass ADE reads the key from the vault with the VM's platform access
/// (dual-pass adds the AAD application's credentials, see `dual_pass::credentials`).
pub fn ade_extension(ade: &AdeSettings, location: &str) -> VmExtension {
    let version = ade.type_handler_version.clone().unwrap_or_else(|| {
        match ade.os_type {
            OsType::Linux => "1.1",
            OsType::Windows => "2.2",
        }
        .to_string()
    });
    VmExtension {
        location: Some(location.to_string()),
        properties: VmExtensionProperties {
            publisher: Some(ADE_PUBLISHER.to_string()),
            extension_type: Some(ade.os_type.ade_extension_type().to_string()),
            type_handler_version: Some(version),
            auto_upgrade_minor_version: Some(true),
            settings: Some(ade.to_extension_settings()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn extension_name(ade: &AdeSettings) -> String {
    if ade.extension_name.is_empty() {
        ade.os_type.ade_extension_type().to_string()
    } else {
        ade.extension_name.clone()
    }
}

pub(super) fn restored_vm(op: &RestoreOperation) -> Result<ResourceId, WorkflowError> {
    op.azure
        .restored_vm_id
        .as_deref()
        .and_then(|v| ResourceId::parse(v).ok())
        .ok_or_else(|| WorkflowError::poison("InvalidRestore", "no restored VM recorded"))
}

/// Checked again here, hours after validation: without it the VM cannot fetch its passphrase.
/// `Err(line)`: the ticket failed.
async fn key_vault_ready(
    ctx: &Context,
    ticket: &TicketId,
    ade: &AdeSettings,
) -> Result<Result<(), String>, WorkflowError> {
    let step = RestoreStep::ReinstallAde;
    let kv = &ade.key_vault_resource_id;
    match ctx.arm.get_key_vault(kv).await {
        Ok(v) if !v.enabled_for_disk_encryption() => {
            let m = format!("the Key Vault {kv} has enabledForDiskEncryption=false");
            let next = format!(
                "Enable disk encryption on the Key Vault, then: {}",
                ade_next(ade)
            );
            let c = code::KEY_VAULT_NOT_ENABLED;
            fail(ctx, ticket, step, c, &m, &next).await.map(Err)
        }
        Ok(_) => Ok(Ok(())),
        Err(e) if e.is_transient() => Err(WorkflowError::arm("reading the Key Vault", e)),
        Err(e) => {
            let m = format!("the Key Vault {kv} cannot be read: {e}");
            let c = code::KEY_VAULT_UNAVAILABLE;
            fail(ctx, ticket, step, c, &m, &ade_next(ade))
                .await
                .map(Err)
        }
    }
}

/// Put the ADE extension (unless a crashed attempt already put it with the same settings).
pub(super) async fn reinstall(
    ctx: &Context,
    op: RestoreOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::ReinstallAde);
    let op = match claim_step::<RestoreOperation>(ctx, &ticket, 0, step, delivery).await? {
        Claimed::Go(op) => op,
        Claimed::Settled { line, .. } => return Ok(line),
    };
    let ade = ade_of(&op)?.clone();
    let vm_id = restored_vm(&op)?;
    if let Err(line) = key_vault_ready(ctx, &ticket, &ade).await? {
        return Ok(line);
    }
    // Dual-pass: never a silent half-restore; without the AAD application's secret, no reinstall.
    let protected = if ade.dual_pass {
        match super::dual_pass::credentials(ctx, &ticket, &ade, &vm_id).await? {
            Ok(p) => Some(p),
            Err(line) => return Ok(line),
        }
    } else {
        None
    };
    let note = match put_extension(ctx, &ticket, &ade, &vm_id, protected).await? {
        Ok(note) => note,
        Err(line) => return Ok(line),
    };
    let at = engine::now(ctx);
    let name = extension_name(&ade);
    let ext_id = format!("{vm_id}/extensions/{name}");
    let message = format!(
        "reinstalling ADE on {vm_id}: {note} (KeyVaultResourceId {}{}, VolumeType {})",
        ade.key_vault_resource_id,
        if ade.key_encryption_key_url.is_some() {
            ", with KEK"
        } else {
            ""
        },
        ade.volume_type.clone().unwrap_or_else(|| "All".into())
    );
    let writer = Writer::Claim(delivery);
    let Some(op) = update_holding::<RestoreOperation>(ctx, &ticket, step, writer, |o, sent| {
        o.azure.ade_extension_id = Some(ext_id.clone());
        if o.status != RestoreStatus::ReinstallingAde {
            let st = RestoreStatus::ReinstallingAde;
            *sent = Some(push(o, at, st, Some(step), message.clone(), Why::default()));
        }
        true
    })
    .await?
    else {
        return Ok(claim_lost(&ticket, step));
    };
    again(ctx, &op, RedeployPhase::AdePoll, 0).await?;
    Ok(format!("{ticket}: {note}"))
}

/// The extension PUT. `Err(line)`: the ticket failed.
async fn put_extension(
    ctx: &Context,
    ticket: &TicketId,
    ade: &AdeSettings,
    vm_id: &ResourceId,
    protected: Option<ProtectedSettings>,
) -> Result<Result<String, String>, WorkflowError> {
    let step = RestoreStep::ReinstallAde;
    let vm = match ctx.arm.get_virtual_machine(vm_id).await {
        Ok(vm) => vm,
        Err(e) if e.is_transient() => return Err(WorkflowError::arm("reading the restored VM", e)),
        Err(e) => {
            let c = e.code().unwrap_or("vm-not-found").to_string();
            let m = format!("the restored VM {vm_id} cannot be read: {e}");
            return fail(ctx, ticket, step, &c, &m, &ade_next(ade))
                .await
                .map(Err);
        }
    };
    let name = extension_name(ade);
    let mut body = ade_extension(ade, &vm.location.clone().unwrap_or_default());
    let dual_pass = protected.is_some();
    body.properties.protected_settings = protected;
    // Already put by a crashed attempt with the same settings: follow it, no second PUT.
    if let Ok(ext) = ctx.arm.get_vm_extension(vm_id, &name).await {
        if ext.properties.settings == body.properties.settings {
            return Ok(Ok(
                "following the ADE extension already being installed".into()
            ));
        }
    }
    match ctx.arm.begin_put_vm_extension(vm_id, &name, &body).await {
        Ok(_) if dual_pass => Ok(Ok(format!(
            "installing {name} with the settings recorded at protection and the Azure AD application's credentials"
        ))),
        Ok(_) => Ok(Ok(format!(
            "installing {name} with the settings recorded at protection"
        ))),
        Err(e) if e.is_transient() => Err(WorkflowError::arm("installing the ADE extension", e)),
        Err(e) => {
            let c = e.code().unwrap_or("ade-reinstall-failed").to_string();
            fail(ctx, ticket, step, &c, &e.to_string(), &ade_next(ade))
                .await
                .map(Err)
        }
    }
}

/// Follow the extension until it is provisioned.
pub(super) async fn poll(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::ReinstallAde);
    if op.steps.is_done(step) {
        RedeployPhase::Verify.send(ctx, &op, 0, None).await?;
        return Ok(format!("{ticket}: ADE already reinstalled"));
    }
    let ade = ade_of(&op)?.clone();
    let vm_id = restored_vm(&op)?;
    let name = extension_name(&ade);
    let ext = match ctx.arm.get_vm_extension(&vm_id, &name).await {
        Ok(e) => e,
        Err(e) if e.is_transient() => {
            return Err(WorkflowError::arm("reading the ADE extension", e))
        }
        Err(e) => {
            let c = e.code().unwrap_or("ade-extension-missing").to_string();
            let m = format!("the ADE extension on {vm_id} cannot be read: {e}");
            return fail(ctx, &ticket, step, &c, &m, &ade_next(&ade)).await;
        }
    };
    let state = ext
        .properties
        .provisioning_state
        .clone()
        .unwrap_or_default();
    match state.to_ascii_lowercase().as_str() {
        "succeeded" => {
            let at = engine::now(ctx);
            let op = engine::update::<RestoreOperation>(ctx, &ticket, |o| {
                o.steps.finish(step, at, None);
                true
            })
            .await?;
            RedeployPhase::Verify.send(ctx, &op, 0, None).await?;
            Ok(format!("{ticket}: ADE extension provisioned"))
        }
        "failed" | "canceled" => {
            let why = extension_message(ctx, &vm_id, &name).await;
            let m = format!("the ADE extension on {vm_id} failed: {why}");
            fail(
                ctx,
                &ticket,
                step,
                "ade-reinstall-failed",
                &m,
                &ade_next(&ade),
            )
            .await
        }
        other => {
            again(ctx, &op, RedeployPhase::AdePoll, poll).await?;
            Ok(format!("{ticket}: ADE extension {other}"))
        }
    }
}

/// The extension's status message from the VM instance view (where ADE reports its errors).
async fn extension_message(ctx: &Context, vm_id: &ResourceId, name: &str) -> String {
    let Ok(vm) = ctx.arm.get_virtual_machine(vm_id).await else {
        return "no detail available".into();
    };
    vm.properties
        .instance_view
        .as_ref()
        .and_then(|iv| {
            iv.extensions.iter().find(|e| {
                e.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        })
        .and_then(|e| e.statuses.iter().find_map(|s| s.message.clone()))
        .unwrap_or_else(|| "no detail available".into())
}
