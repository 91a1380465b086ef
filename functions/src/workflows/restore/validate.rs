//! The rules of a restore request that need configuration or Azure: the restore allowlist, a VM
//! that ade-backup protects (its ADE settings recorded), the documented ADE restore limits, a Key
//! Vault a restored VM can fetch its secret from, the staging account's region, and a recovery
//! point that matches the request. Each rule that fails is a [`Refusal`] naming the field.

use super::key_material;
use super::redeploy::target_vm_id;
use super::submit::Refusal;
use super::{code, kek_clause};
use crate::context::Context;
use crate::domain::ade::AdeSettings;
use crate::domain::restore_request::{RecoveryPointChoice, RestoreRequest};
use crate::engine::{ArmResultExt, WorkflowError};
use crate::records::{vm_record_key, VmRecord};
use crate::workflows::{is_forbidden, protect};
use ade_backup_shared::arm::{GraphScope, RecoveryPoint, SubscriptionId};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::json;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// What the accepted restore will use.
pub(super) struct Plan {
    pub ade: AdeSettings,
    pub vault: ResourceId,
    pub region: String,
    pub recovery_point_id: String,
    pub recovery_point_time: Option<DateTime<Utc>>,
    pub warnings: Vec<String>,
}

/// A rule's answer: `Ok(Err(_))` is a rejection, `Err(_)` a failure to find out.
type Checked<T> = Result<Result<T, Refusal>, WorkflowError>;

/// Returns the refusal from a [`Checked`] rule, or its value.
macro_rules! check {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}

/// The rules that need Azure (and the configured allowlist).
pub(super) async fn validate(ctx: &Context, req: &RestoreRequest) -> Checked<Plan> {
    check!(allowed(ctx, req));
    check!(target_free(ctx, req).await);
    let (ade, vault) = check!(protected_vm(ctx, &req.vm_resource_id).await);
    let kv_location = check!(key_vault_usable(ctx, &ade).await);
    let region = check!(vault_region(ctx, &vault).await);
    let (kv, vm) = (&ade.key_vault_resource_id, &req.vm_resource_id);
    if let Some(r) = key_material::key_vault_placement(kv, kv_location.as_deref(), vm, &region) {
        return Ok(Err(r));
    }
    let mut warnings = Vec::new();
    check!(staging_in_region(ctx, req, &region, &mut warnings).await);
    let aad_secret = ctx.settings.workflow.key_vault.aad_client_secret.is_some();
    if ade.dual_pass && ade.os_type == crate::domain::ade::OsType::Linux && !aad_secret {
        warnings.push(format!("{}: the VM uses dual-pass ADE (an Azure AD application); ade-backup restores the disks and deploys the VM, then stops before reinstalling ADE, which needs the application's client secret", super::dual_pass::NEEDS_AAD_CREDENTIALS));
    }
    let rp = check!(recovery_point(ctx, req, &vault).await);
    warnings.extend(check!(key_material::present_or_restorable(ctx, &rp).await));
    let Some(recovery_point_id) = rp.name.clone() else {
        let what = "a recovery point has no name in the list response";
        return Err(WorkflowError::Incomplete(what.into()));
    };
    let recovery_point_time = rp.properties.recovery_point_time;
    Ok(Ok(Plan {
        ade,
        vault,
        region,
        recovery_point_id,
        recovery_point_time,
        warnings,
    }))
}

/// The restore allowlist (a refusal is a security event).
fn allowed(ctx: &Context, req: &RestoreRequest) -> Checked<()> {
    let Err(rej) = ctx.settings.workflow.restore_allowlist.check(req) else {
        return Ok(Ok(()));
    };
    tracing::warn!(
        security_event = true,
        ticket = %req.ticket_id,
        requested_by = req.requested_by.as_deref().unwrap_or(""),
        field = %rej.field,
        vm = %req.vm_resource_id,
        "restore request outside the restore allowlist refused: {}",
        rej.rule
    );
    let (list, choice) = match rej.field.as_str() {
        "vmResourceId" => (
            "sourceResourceGroups",
            "restore VMs of an allowed resource group",
        ),
        "targetSubnetId" => (
            "subnetResourceGroups or subnets",
            "choose an allowed subnet (or none)",
        ),
        _ => ("resourceGroups", "choose an allowed target"),
    };
    let next = format!("Ask the ade-backup operators to add it to {list} of the subscription's entry in ADE_BACKUP_RESTORE_ALLOWLIST if it is legitimate, or {choice}; submit a new ticket.");
    let mut r = Refusal::from(rej);
    r.code = code::FORBIDDEN.to_string();
    r.next_action = Some(next);
    Ok(Err(r))
}

/// No VM with the target name exists in the target resource group (else the disks would be
/// restored for a deployment that cannot succeed).
async fn target_free(ctx: &Context, req: &RestoreRequest) -> Checked<()> {
    let target = target_vm_id(req)?;
    let refusal = |why: String, next: &str| {
        let field = "targetVmName";
        Ok(Err(Refusal::new(
            code::TARGET_EXISTS,
            field,
            why,
            Some(next.into()),
        )))
    };
    match ctx.arm.get_virtual_machine(&target).await {
        Ok(_) => refusal(
            format!("a VM named {} already exists in {}", target.name(), req.target_resource_group.id()),
            "Choose another targetVmName (or target resource group) and submit a new ticket; ade-backup never replaces an existing VM.",
        ),
        Err(e) if e.is_not_found() => Ok(Ok(())),
        Err(e) if is_forbidden(&e) => refusal(
            format!("ade-backup may not read VMs in {}: {e}", req.target_resource_group.id()),
            "Grant ade-backup's identity its restore role on the target resource group, or choose an allowed one.",
        ),
        Err(e) => Err(WorkflowError::arm("checking the target VM name", e)),
    }
}

fn not_protected(why: String) -> Refusal {
    Refusal::new(
        code::NOT_PROTECTED,
        "vmResourceId",
        why,
        Some("Only VMs protected by ade-backup can be restored by ticket: their ADE settings were recorded when they were protected. Let ade-backup protect the VM (it does when ADE is enabled), or restore it by hand.".into()),
    )
}

/// The VM's recorded ADE settings and vault; a VM Azure Backup protected before ade-backup saw
/// it is adopted now, while it exists. Its ADE settings must be restorable by Azure Backup.
async fn protected_vm(ctx: &Context, vm: &ResourceId) -> Checked<(AdeSettings, ResourceId)> {
    let record = json::get::<VmRecord>(ctx.state.as_ref(), &vm_record_key(vm))
        .await?
        .map(|(r, _)| r);
    let record = match record {
        Some(r) if r.ade.is_some() && r.azure.vault_id.is_some() => Some(r),
        other => protect::adopt_protected_vm(ctx, vm).await?.or(other),
    };
    let Some(record) = record else {
        return Ok(Err(not_protected(format!(
            "{vm} is not protected: ade-backup has no record of it, and it is not an ADE VM protected in the vault its protection rule names"
        ))));
    };
    let vault = record.azure.vault_id.as_deref();
    let (Some(ade), Some(vault)) = (
        record.ade.clone(),
        vault.and_then(|v| ResourceId::parse(v).ok()),
    ) else {
        return Ok(Err(not_protected(format!(
            "the record of {vm} has no recorded ADE settings or no Recovery Services vault (status {})",
            record.status
        ))));
    };
    match restore_limit(&record, &ade) {
        Some(refusal) => Ok(Err(refusal)),
        None => Ok(Ok((ade, vault))),
    }
}

/// More than 16 disks or a disk over 4097 GB: Azure Backup cannot restore the ADE settings.
fn restore_limit(record: &VmRecord, ade: &AdeSettings) -> Option<Refusal> {
    let limits: Vec<&str> = record
        .warnings
        .iter()
        .filter(|w| w.starts_with("ade-restore-limit"))
        .map(String::as_str)
        .collect();
    if limits.is_empty() {
        return None;
    }
    let kek = kek_clause(ade, " ");
    Some(Refusal::new(
        code::ADE_RESTORE_LIMIT,
        "vmResourceId",
        format!(
            "Azure Backup cannot restore the ADE settings of this VM: {}",
            limits.join(" ")
        ),
        Some(format!(
            "Restore by hand: in the vault, restore the disks of the chosen recovery point; create the VM from the restored disks; then re-enable ADE on it with KeyVaultURL {}, KeyVaultResourceId {}{kek}, VolumeType {}.",
            ade.key_vault_url,
            ade.key_vault_resource_id,
            ade.volume_type.clone().unwrap_or_else(|| "All".into())
        )),
    ))
}

/// The Key Vault holding the BEK exists, can be read, and is enabled for disk encryption; its
/// region.
async fn key_vault_usable(ctx: &Context, ade: &AdeSettings) -> Checked<Option<String>> {
    let kv_id = &ade.key_vault_resource_id;
    match ctx.arm.get_key_vault(kv_id).await {
        Ok(kv) if !kv.enabled_for_disk_encryption() => Ok(Err(Refusal::new(
            code::KEY_VAULT_NOT_ENABLED,
            "vmResourceId",
            format!(
                "the Key Vault {kv_id} holding the VM's disk encryption secret has enabledForDiskEncryption=false: a restored VM could not fetch its passphrase"
            ),
            Some(format!(
                "Enable it (az keyvault update --name {} --enabled-for-disk-encryption true) and submit the request again under a new ticket id.",
                kv_id.name()
            )),
        ))),
        Ok(kv) => Ok(Ok(kv.location)),
        Err(e) if e.is_not_found() || is_forbidden(&e) => Ok(Err(Refusal::new(
            code::KEY_VAULT_UNAVAILABLE,
            "vmResourceId",
            format!(
                "the Key Vault {kv_id} holding the VM's disk encryption secret cannot be read: {e}"
            ),
            Some("Restore or recover the Key Vault (soft delete), or grant ade-backup Microsoft.KeyVault/vaults/read on it, then submit a new ticket.".into()),
        ))),
        Err(e) => Err(WorkflowError::arm("reading the Key Vault", e)),
    }
}

/// The region of the VM's Recovery Services vault (where the disks are restored).
async fn vault_region(ctx: &Context, vault: &ResourceId) -> Checked<String> {
    match ctx.arm.get_recovery_services_vault(vault).await {
        Ok(v) => Ok(Ok(v.location.unwrap_or_default())),
        Err(e) if e.is_not_found() => Ok(Err(not_protected(format!(
            "the Recovery Services vault {vault} recorded for this VM no longer exists"
        )))),
        Err(e) => Err(WorkflowError::arm("reading the Recovery Services vault", e)),
    }
}

/// The staging account exists and is in the vault's region (or cross-region is allowed).
async fn staging_in_region(
    ctx: &Context,
    req: &RestoreRequest,
    region: &str,
    warnings: &mut Vec<String>,
) -> Checked<()> {
    let account = &req.staging_storage_account_id;
    match staging_location(ctx, account).await? {
        None => Ok(Err(Refusal::new(
            code::STAGING_NOT_FOUND,
            "stagingStorageAccountId",
            format!("the storage account {account} does not exist (or ade-backup cannot see it)"),
            Some("Create it (general-purpose v2, in the vault's region) or name another one, and submit a new ticket.".into()),
        ))),
        Some(loc) if !loc.eq_ignore_ascii_case(region) => {
            if ctx.settings.workflow.allow_cross_region_restore {
                warnings.push(format!(
                    "staging-region: the staging account is in {loc}, the vault in {region}; allowed by ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE, Azure Backup decides whether it accepts it"
                ));
                return Ok(Ok(()));
            }
            Ok(Err(Refusal::new(
                code::STAGING_REGION,
                "stagingStorageAccountId",
                format!("the staging storage account is in {loc}; Azure Backup restores the disks of this VM in the vault's region {region}"),
                Some(format!("Name a storage account in {region} and submit a new ticket.")),
            )))
        }
        Some(_) => Ok(Ok(())),
    }
}

/// The newest recovery point that fits the request's choice.
pub fn choose_recovery_point<'a>(
    points: &'a [RecoveryPoint],
    choice: &RecoveryPointChoice,
) -> Option<&'a RecoveryPoint> {
    let time = |p: &&RecoveryPoint| p.properties.recovery_point_time;
    match choice {
        RecoveryPointChoice::Latest => points.iter().filter(|p| time(p).is_some()).max_by_key(time),
        RecoveryPointChoice::Id { id } => points.iter().find(|p| {
            p.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(id))
        }),
        RecoveryPointChoice::Before { before } => points
            .iter()
            .filter(|p| time(p).is_some_and(|t| t < *before))
            .max_by_key(time),
    }
}

/// The recovery point the request chose.
async fn recovery_point(
    ctx: &Context,
    req: &RestoreRequest,
    vault: &ResourceId,
) -> Checked<RecoveryPoint> {
    let vm = &req.vm_resource_id;
    let points = match ctx.arm.list_recovery_points(vault, vm).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => {
            return Ok(Err(not_protected(format!(
                "the vault {vault} has no protected item for {vm}"
            ))))
        }
        Err(e) => return Err(WorkflowError::arm("listing recovery points", e)),
    };
    let Some(rp) = choose_recovery_point(&points, &req.recovery_point) else {
        let newest = points
            .iter()
            .filter_map(|p| p.properties.recovery_point_time)
            .max()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "none".into());
        return Ok(Err(Refusal::new(
            code::RECOVERY_POINT_NOT_FOUND,
            "recoveryPoint",
            format!(
                "no recovery point matches {:?} ({} recovery point(s), newest {newest})",
                req.recovery_point,
                points.len()
            ),
            Some("Choose \"latest\", an existing recovery point id, or a later time.".into()),
        )));
    };
    Ok(Ok(rp.clone()))
}

/// Region of the staging storage account, by Resource Graph (the ARM client has no storage
/// account GET). The id is a validated `ResourceId`, whose segments cannot hold a quote, so it
/// cannot break out of the KQL literal.
async fn staging_location(
    ctx: &Context,
    account: &ResourceId,
) -> Result<Option<String>, WorkflowError> {
    let sub = SubscriptionId::parse(account.subscription())
        .map_err(|e| WorkflowError::poison("InvalidSubscription", e.to_string()))?;
    let query = format!(
        "resources | where type =~ 'microsoft.storage/storageaccounts' and id =~ '{account}'"
    );
    let rows = ctx
        .arm
        .resource_graph_query(&GraphScope::Subscriptions(vec![sub]), &query)
        .await
        .doing("looking up the staging storage account")?;
    let account = account.to_string();
    Ok(rows
        .iter()
        .find(|r| {
            r.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(&account))
        })
        .and_then(|r| r.get("location").and_then(Value::as_str))
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::arm::RecoveryPointProperties;

    fn rp(name: &str, t: &str) -> RecoveryPoint {
        RecoveryPoint {
            id: None,
            name: Some(name.into()),
            properties: RecoveryPointProperties {
                recovery_point_time: Some(
                    DateTime::parse_from_rfc3339(t)
                        .expect("time")
                        .with_timezone(&Utc),
                ),
                ..Default::default()
            },
        }
    }

    #[test]
    fn recovery_point_choice() {
        let pts = vec![
            rp("a", "2024-05-01T00:00:00Z"),
            rp("c", "2024-05-03T00:00:00Z"),
            rp("b", "2024-05-02T00:00:00Z"),
        ];
        let name =
            |c: &RecoveryPointChoice| choose_recovery_point(&pts, c).and_then(|p| p.name.clone());
        assert_eq!(name(&RecoveryPointChoice::Latest).as_deref(), Some("c"));
        assert_eq!(
            name(&RecoveryPointChoice::Id { id: "B".into() }).as_deref(),
            Some("b")
        );
        assert_eq!(name(&RecoveryPointChoice::Id { id: "x".into() }), None);
        let before = |t: &str| RecoveryPointChoice::Before {
            before: DateTime::parse_from_rfc3339(t)
                .expect("time")
                .with_timezone(&Utc),
        };
        // strictly before: a point exactly at the time is not taken
        assert_eq!(name(&before("2024-05-03T00:00:00Z")).as_deref(), Some("b"));
        assert_eq!(name(&before("2024-05-02T12:00:00Z")).as_deref(), Some("b"));
        assert_eq!(name(&before("2024-05-01T00:00:00Z")), None);
    }
}
