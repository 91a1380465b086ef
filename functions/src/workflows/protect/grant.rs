//! `GrantKeyVaultAccess`: give the Backup Management Service exactly what Azure Backup documents
//! on every Key Vault of the VM (the BEK's vault, and the KEK's when it is another one).
//! Access-policy vaults get a merged access policy; RBAC vaults a role assignment of the custom
//! least-privilege role (created once per subscription) or Key Vault Administrator. Our identity
//! lacking a permission blocks the operation and notifies a human.

use super::{conclude, BackupPhase, GrantMessage};
use crate::context::Context;
use crate::domain::kv_access::{self, KeyMode, Permissions, RbacRoleChoice};
use crate::engine::{
    self, claim_step, send_json, update_holding, ArmResultExt, Claimed, Phase, WorkflowError,
    Writer,
};
use crate::records::{self, ProtectDetail, ProtectStep, ProtectionOperation, ProtectionStatus};
use crate::trigger::ServiceBusMessage;
use crate::workflows::is_forbidden;
use ade_backup_shared::arm::{
    AccessPolicyEntry, ArmError, KeyVault, RoleAssignmentProperties, RoleDefinitionProperties,
};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::{json, StateError};
use serde_json::json as j;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// One Key Vault and what Azure Backup needs on it.
struct VaultNeed {
    vault: ResourceId,
    mode: KeyMode,
    secrets: bool,
    keys: bool,
}

fn needs(op: &ProtectionOperation) -> Vec<VaultNeed> {
    let bek = &op.ade.key_vault_resource_id;
    let mut out = vec![VaultNeed {
        vault: bek.clone(),
        mode: op.ade.key_mode(),
        secrets: true,
        keys: false,
    }];
    if let Some(kek) = &op.ade.kek_vault_resource_id {
        if kek == bek {
            out[0].keys = true;
        } else {
            out.push(VaultNeed {
                vault: kek.clone(),
                mode: KeyMode::BekKek,
                secrets: false,
                keys: true,
            });
        }
    }
    out
}

/// The Backup Management Service's object id in this tenant: the setting, or a Graph lookup by
/// its appId, once per process.
pub async fn bms_object_id(ctx: &Context) -> Result<uuid::Uuid, WorkflowError> {
    if let Some(id) = ctx.settings.bms_object_id {
        return Ok(id);
    }
    let arm = ctx.arm.clone();
    ctx.bms_object_id
        .get_or_try_init(|| async move {
            arm.service_principal_object_id(kv_access::backup_management_service_app_id())
                .await
                .doing("looking up the Backup Management Service object id (set ADE_BACKUP_BMS_OBJECT_ID to skip it)")
        })
        .await
        .copied()
}

/// Creates the least-privilege custom role once per subscription: the definition's GUID is
/// deterministic (a repeat PUT is a no-op) and a state marker saves the call after the first time.
/// infra/protected-subscription.bicep creates the same role and grants no
/// `roleDefinitions/write`: a refused PUT then goes on to the assignment, which names the missing
/// role if the deployment did not create it either (`RoleDefinitionDoesNotExist`).
async fn ensure_custom_role(ctx: &Context, sub: &str) -> Result<(), WorkflowError> {
    let marker = format!(
        "rbac/role-definitions/{}.json",
        records::key_segment(&sub.to_ascii_lowercase())
    );
    if ctx.state.get(&marker).await?.is_some() {
        return Ok(());
    }
    let subscription = ade_backup_shared::arm::scope::SubscriptionId::parse(sub)
        .map_err(|e| WorkflowError::poison("InvalidSubscription", e.to_string()))?;
    let role = kv_access::custom_role_definition_uuid(sub);
    let props = RoleDefinitionProperties::backup_key_vault_reader(
        &format!("{} ({sub})", kv_access::BACKUP_ROLE_NAME),
        subscription,
    );
    match ctx
        .arm
        .put_role_definition(subscription, role, &props)
        .await
    {
        Ok(_) => {}
        Err(e) if is_forbidden(&e) => {
            tracing::info!(subscription = %sub, "may not write the custom role definition; using the one infra/ deployed");
            return Ok(());
        }
        Err(e) => return Err(WorkflowError::arm("creating the custom role", e)),
    }
    let role_definition_id =
        kv_access::role_definition_id(RbacRoleChoice::CustomLeastPrivilege, sub);
    let body = j!({ "subscription": sub, "roleDefinitionId": role_definition_id, "createdAt": engine::now(ctx) });
    match json::create(ctx.state.as_ref(), &marker, &body).await {
        Ok(_) | Err(StateError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What the grant did on one vault.
enum GrantResult {
    AlreadyInPlace,
    Written(String),
    Denied(String),
}

/// A refusal of our own identity becomes `Denied` with the permission it lacks.
fn denied_or(
    e: ArmError,
    doing: &str,
    needs: &str,
    on: &ResourceId,
) -> Result<GrantResult, WorkflowError> {
    if is_forbidden(&e) {
        Ok(GrantResult::Denied(format!(
            "ade-backup's identity may not {doing} {on} (needs {needs}): {e}"
        )))
    } else {
        Err(WorkflowError::arm(doing, e))
    }
}

/// One grant per Key Vault at a time in this process: VMs of one vault onboarded together would
/// otherwise all read the policy as missing and all write it (issue 15, scenario 2). Another
/// instance can still race; `accessPolicies/add` merges, so that costs a redundant write only.
fn vault_lock(vault: &ResourceId) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: LazyLock<Locks> = LazyLock::new(Locks::default);
    let mut map = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(vault.canonical()).or_default().clone()
}

async fn grant_on_vault(
    ctx: &Context,
    need: &VaultNeed,
    bms: uuid::Uuid,
) -> Result<GrantResult, WorkflowError> {
    let lock = vault_lock(&need.vault);
    let _one_grant_at_a_time = lock.lock().await;
    let kv = match ctx.arm.get_key_vault(&need.vault).await {
        Ok(kv) => kv,
        Err(e) if e.is_not_found() => {
            return Ok(GrantResult::Denied(format!(
                "the Key Vault {} does not exist or is in another tenant",
                need.vault
            )))
        }
        Err(e) => {
            let needs = "Microsoft.KeyVault/vaults/read";
            return denied_or(e, "read the Key Vault", needs, &need.vault);
        }
    };
    if kv.rbac_enabled() {
        grant_role(ctx, need, &bms.to_string()).await
    } else {
        grant_access_policy(ctx, need, &kv, &bms.to_string()).await
    }
}

/// RBAC vault: a role assignment for the Backup Management Service at the vault's scope.
async fn grant_role(
    ctx: &Context,
    need: &VaultNeed,
    bms: &str,
) -> Result<GrantResult, WorkflowError> {
    let choice = ctx.settings.workflow.rbac_role;
    let sub = need.vault.subscription().to_string();
    let role_def_id = kv_access::role_definition_id(choice, &sub);
    // Already assigned (by us or by a human)?
    let list = match ctx.arm.list_role_assignments_at_scope(&need.vault).await {
        Ok(list) => list,
        Err(e) => {
            let needs = "Microsoft.Authorization/roleAssignments/read";
            return denied_or(e, "read role assignments on", needs, &need.vault);
        }
    };
    let has = list.iter().any(|a| {
        let role = a.properties.role_definition_id.to_ascii_lowercase();
        a.properties.principal_id.eq_ignore_ascii_case(bms)
            && (role.eq_ignore_ascii_case(&role_def_id)
                || role.ends_with(kv_access::KEY_VAULT_ADMINISTRATOR_ROLE))
    });
    if has {
        return Ok(GrantResult::AlreadyInPlace);
    }
    if choice == RbacRoleChoice::CustomLeastPrivilege {
        ensure_custom_role(ctx, &sub).await?;
    }
    let assignment = kv_access::role_assignment_uuid(&need.vault, bms, &role_def_id);
    let props = RoleAssignmentProperties {
        role_definition_id: role_def_id.clone(),
        principal_id: bms.to_string(),
        principal_type: Some("ServicePrincipal".to_string()),
        ..Default::default()
    };
    match ctx
        .arm
        .put_role_assignment(&need.vault, assignment, &props)
        .await
    {
        Ok(_) => Ok(GrantResult::Written(format!(
            "role assignment {assignment} ({role_def_id}) on {}",
            need.vault
        ))),
        Err(e)
            if e.code()
                .is_some_and(|c| c.eq_ignore_ascii_case("RoleAssignmentExists")) =>
        {
            Ok(GrantResult::AlreadyInPlace)
        }
        Err(e)
            if e.code()
                .is_some_and(|c| c.eq_ignore_ascii_case("RoleDefinitionDoesNotExist")) =>
        {
            Ok(GrantResult::Denied(format!(
                "the custom role {role_def_id} does not exist and ade-backup's identity may not create it (needs Microsoft.Authorization/roleDefinitions/write): deploy infra/protected-subscription.bicep in subscription {sub}, or set ADE_BACKUP_RBAC_ROLE=key-vault-administrator: {e}"
            )))
        }
        Err(e) => {
            let needs = "Microsoft.Authorization/roleAssignments/write";
            denied_or(e, "assign roles on", needs, &need.vault)
        }
    }
}

/// Access-policy vault: merge the missing permissions into the service's policy
/// (`accessPolicies/add`; nothing is replaced).
async fn grant_access_policy(
    ctx: &Context,
    need: &VaultNeed,
    kv: &KeyVault,
    bms: &str,
) -> Result<GrantResult, WorkflowError> {
    let all = kv_access::required_permissions(need.mode);
    let required = Permissions {
        keys: if need.keys { all.keys } else { vec![] },
        secrets: if need.secrets { all.secrets } else { vec![] },
    };
    let entries: Vec<kv_access::PolicyEntry> = kv
        .properties
        .access_policies
        .iter()
        .map(|p| kv_access::PolicyEntry {
            object_id: p.object_id.clone(),
            permissions: Permissions {
                keys: p.permissions.keys.clone(),
                secrets: p.permissions.secrets.clone(),
            },
        })
        .collect();
    if kv_access::access_policy_in_place(&entries, bms, &required) {
        return Ok(GrantResult::AlreadyInPlace);
    }
    let missing = kv_access::missing_permissions(&entries, bms, &required);
    let entry = AccessPolicyEntry {
        tenant_id: kv.properties.tenant_id.clone().unwrap_or_default(),
        object_id: bms.to_string(),
        application_id: None,
        permissions: ade_backup_shared::arm::Permissions {
            keys: missing.keys.clone(),
            secrets: missing.secrets.clone(),
            ..Default::default()
        },
    };
    match ctx
        .arm
        .add_key_vault_access_policies(&need.vault, &[entry])
        .await
    {
        Ok(_) => Ok(GrantResult::Written(format!(
            "access policy on {}: keys [{}] secrets [{}]",
            need.vault,
            missing.keys.join(", "),
            missing.secrets.join(", ")
        ))),
        Err(e) => {
            let needs = "Microsoft.KeyVault/vaults/accessPolicies/write";
            denied_or(e, "change access policies of", needs, &need.vault)
        }
    }
}

/// One `grant-key-vault-access` message.
pub async fn grant(
    ctx: &Context,
    msg: &GrantMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let step = ProtectStep::GrantKeyVaultAccess;
    let id = msg.operation_id.as_str();
    let op =
        match claim_step::<ProtectionOperation>(ctx, id, msg.generation, step, delivery).await? {
            Claimed::Go(op) => op,
            Claimed::Settled { line, .. } => return Ok(line),
        };
    let bms = bms_object_id(ctx).await?;
    let mut written = Vec::new();
    for need in needs(&op) {
        match grant_on_vault(ctx, &need, bms).await? {
            GrantResult::AlreadyInPlace => {}
            GrantResult::Written(w) => written.push(w),
            GrantResult::Denied(why) => return blocked(ctx, id, &why).await,
        }
    }
    let at = engine::now(ctx);
    let n = written.len();
    let detail = ProtectDetail {
        writes: Some(written),
        ..Default::default()
    };
    let writer = Writer::Claim(delivery);
    let Some(op) = update_holding::<ProtectionOperation>(ctx, id, step, writer, |op, _| {
        op.steps.finish(step, at, Some(detail.clone()));
        let note = match n {
            0 => "Key Vault access already in place".to_string(),
            n => format!("Key Vault access granted ({n} write(s))"),
        };
        op.record(at, ProtectionStatus::InProgress, note);
        true
    })
    .await?
    else {
        return Ok(engine::claim_lost(&id, step));
    };
    BackupPhase::Protect.send(ctx, &op, 0, None).await?;
    Ok(format!("{id}: Key Vault access in place ({n} write(s))"))
}

/// Our identity may not give the access: the operation is blocked and a human is told.
async fn blocked(ctx: &Context, id: &str, why: &str) -> Result<String, WorkflowError> {
    let code = "key-vault-access-denied";
    let st = ProtectionStatus::Blocked;
    let op = conclude(ctx, id, st, ProtectStep::GrantKeyVaultAccess, code, why).await?;
    notify(ctx, &op, code, why).await?;
    Ok(format!("{id}: blocked: {why}"))
}

/// A message for humans (ticket, chat, e-mail bridge) about an operation that needs them.
async fn notify(
    ctx: &Context,
    op: &ProtectionOperation,
    code: &str,
    message: &str,
) -> Result<(), WorkflowError> {
    let body = j!({
        "kind": "ade-backup.needsHuman",
        "operationId": op.operation_id,
        "vmId": op.vm_id.to_string(),
        "status": op.status,
        "reason": code,
        "message": message,
        "at": engine::now(ctx),
    });
    let id = format!("{}-g{}-notify-{code}", op.operation_id, op.generation);
    let queue = &ctx.settings.workflow.notifications_queue;
    send_json(ctx, queue, &id, &body, None, Some(&op.operation_id)).await
}
