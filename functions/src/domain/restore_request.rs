//! Restore requests from ticketing systems (queue `restore-requests`), version 1.
//! JSON Schema: `schemas/restore-request.v1.schema.json`. Parse, don't validate: a
//! `RestoreRequest` only exists once every field passed its rule; each failure names the field.

use ade_backup_shared::ids::{ResourceId, TicketId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A rejection: the field, the rule, and a sentence a human can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {rule}")]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// Machine-readable reason, e.g. `invalid-field`, `unsupported-restore-type`, `forbidden`.
    pub code: String,
    pub field: String,
    pub rule: String,
}

pub fn reject(code: &str, field: &str, rule: impl Into<String>) -> Rejection {
    Rejection {
        code: code.to_string(),
        field: field.to_string(),
        rule: rule.into(),
    }
}

/// `/subscriptions/{s}/resourceGroups/{rg}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceGroupId {
    pub subscription: String,
    pub name: String,
}

impl ResourceGroupId {
    pub fn parse(field: &str, s: &str) -> Result<Self, Rejection> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 90
                && n != "."
                && n != ".."
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        };
        match parts.as_slice() {
            ["", subs, sub, rgs, rg]
                if subs.eq_ignore_ascii_case("subscriptions")
                    && rgs.eq_ignore_ascii_case("resourceGroups")
                    && uuid::Uuid::parse_str(sub).is_ok()
                    && ok_name(rg) =>
            {
                Ok(Self {
                    subscription: sub.to_string(),
                    name: rg.to_string(),
                })
            }
            _ => Err(reject(
                "invalid-field",
                field,
                "must be a resource group id: /subscriptions/{guid}/resourceGroups/{name}",
            )),
        }
    }
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.name
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RecoveryPointChoice {
    Latest,
    Id { id: String },
    Before { before: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    pub ticket_id: TicketId,
    pub vm_resource_id: ResourceId,
    pub recovery_point: RecoveryPointChoice,
    pub target_resource_group: ResourceGroupId,
    pub staging_storage_account_id: ResourceId,
    pub target_vm_name: Option<String>,
    pub target_subnet_id: Option<ResourceId>,
    pub requested_by: Option<String>,
    pub reply_to: Option<String>,
    /// SHA-256 of the request's meaningful fields: a different request reusing a ticket id is a conflict.
    pub fingerprint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    version: Option<Value>,
    ticket_id: Option<Value>,
    vm_resource_id: Option<Value>,
    recovery_point: Option<Value>,
    target_resource_group: Option<Value>,
    staging_storage_account_id: Option<Value>,
    target_vm_name: Option<Value>,
    target_subnet_id: Option<Value>,
    restore_type: Option<Value>,
    requested_by: Option<Value>,
    reply_to: Option<Value>,
}

fn string_field(
    field: &str,
    v: Option<Value>,
    required: bool,
) -> Result<Option<String>, Rejection> {
    match v {
        None | Some(Value::Null) if required => Err(reject("invalid-field", field, "is required")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(reject("invalid-field", field, "must be a string")),
    }
}

/// The ticket id alone, best effort, so even a rejected request can be answered on its ticket.
pub fn peek_ticket_id(body: &[u8]) -> Option<TicketId> {
    let v: Value = serde_json::from_slice(body).ok()?;
    TicketId::parse(v.get("ticketId")?.as_str()?).ok()
}

/// A queue name Service Bus accepts: the rule the sender applies before every send, so a
/// `replyTo` that passes here never fails at send time (`ticket-status-` does not pass).
pub fn valid_queue_name(s: &str) -> bool {
    ade_backup_shared::messaging::servicebus::validate_queue_name(s).is_ok()
}

/// Parses a queue message into a [`RestoreRequest`]. Fields are checked in a fixed order and the
/// first failure is the one reported: the message as a whole, `ticketId`, `restoreType`,
/// `vmResourceId`, `recoveryPoint`, the target fields, `requestedBy` / `replyTo`, then the
/// same-subscription rule.
pub fn parse(body: &[u8]) -> Result<RestoreRequest, Rejection> {
    let Wire {
        version: _,
        ticket_id,
        vm_resource_id,
        recovery_point,
        target_resource_group,
        staging_storage_account_id,
        target_vm_name,
        target_subnet_id,
        restore_type,
        requested_by,
        reply_to,
    } = read_wire(body)?;
    let ticket_id = parse_ticket_id(ticket_id)?;
    let restore_type = parse_restore_type(restore_type)?;
    let vm = string_field("vmResourceId", vm_resource_id, true)?.unwrap_or_default();
    let vm_resource_id = typed_id("vmResourceId", &vm, "Microsoft.Compute/virtualMachines")?;
    let recovery_point = parse_recovery_point(recovery_point)?;
    let target = parse_target(
        target_resource_group,
        staging_storage_account_id,
        target_vm_name,
        target_subnet_id,
    )?;
    let (requested_by, reply_to) = parse_reporting(requested_by, reply_to)?;
    target.check_subscription(vm_resource_id.subscription())?;
    let fingerprint = fingerprint(&[
        &vm_resource_id.canonical(),
        &serde_json::to_string(&recovery_point).unwrap_or_default(),
        &target.resource_group.id().to_ascii_lowercase(),
        &target.staging_storage_account_id.canonical(),
        target.vm_name.as_deref().unwrap_or(""),
        &target
            .subnet_id
            .as_ref()
            .map(|s| s.canonical())
            .unwrap_or_default(),
        &restore_type.to_ascii_lowercase(),
    ]);
    Ok(RestoreRequest {
        ticket_id,
        vm_resource_id,
        recovery_point,
        target_resource_group: target.resource_group,
        staging_storage_account_id: target.staging_storage_account_id,
        target_vm_name: target.vm_name,
        target_subnet_id: target.subnet_id,
        requested_by,
        reply_to,
        fingerprint,
    })
}

/// The message as a whole: size limit, a JSON object, only known fields, version 1 (or none; a
/// `null` field is an absent one).
fn read_wire(body: &[u8]) -> Result<Wire, Rejection> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(reject(
            "invalid-message",
            "$",
            format!(
                "message is {} bytes; the limit is {MAX_REQUEST_BYTES}",
                body.len()
            ),
        ));
    }
    let raw: Value = serde_json::from_slice(body).map_err(|e| {
        reject(
            "invalid-message",
            "$",
            format!("must be a JSON object ({e})"),
        )
    })?;
    if !raw.is_object() {
        return Err(reject("invalid-message", "$", "must be a JSON object"));
    }
    let wire: Wire = serde_json::from_value(raw)
        .map_err(|e| reject("invalid-message", "$", format!("unexpected shape: {e}")))?;
    match &wire.version {
        None => {}
        // JSON does not tell 1 from 1.0 (nor does JSON Schema's `"const": 1`): both are version 1.
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => {}
        Some(_) => {
            return Err(reject(
                "invalid-field",
                "version",
                "only version 1 is supported",
            ))
        }
    }
    Ok(wire)
}

/// `ticketId`: required, a valid ticket id.
fn parse_ticket_id(v: Option<Value>) -> Result<TicketId, Rejection> {
    let ticket = string_field("ticketId", v, true)?.unwrap_or_default();
    TicketId::parse(&ticket).map_err(|e| reject("invalid-field", "ticketId", e.rule))
}

/// `restoreType`: optional (default `restoreDisks`), and only `restoreDisks` is accepted.
fn parse_restore_type(v: Option<Value>) -> Result<String, Rejection> {
    let restore_type =
        string_field("restoreType", v, false)?.unwrap_or_else(|| "restoreDisks".to_string());
    check_restore_type(&restore_type)?;
    Ok(restore_type)
}

/// A resource id of one type; the rule names the field and the type.
fn typed_id(field: &str, s: &str, resource_type: &str) -> Result<ResourceId, Rejection> {
    let id = ResourceId::parse(s).map_err(|e| reject("invalid-field", field, e.rule))?;
    if !id.is_type(resource_type) {
        return Err(reject(
            "invalid-field",
            field,
            format!("must be a {resource_type} id"),
        ));
    }
    Ok(id)
}

/// `recoveryPoint`: absent or `"latest"`, a recovery point id, or `{"before": RFC 3339 time}`.
fn parse_recovery_point(v: Option<Value>) -> Result<RecoveryPointChoice, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(RecoveryPointChoice::Latest),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("latest") => {
            Ok(RecoveryPointChoice::Latest)
        }
        Some(Value::String(s)) => {
            if s.is_empty()
                || s.len() > 64
                || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(reject(
                    "invalid-field",
                    "recoveryPoint",
                    "must be \"latest\", a recovery point id (digits, letters, '-'), or {\"before\": RFC 3339 time}",
                ));
            }
            Ok(RecoveryPointChoice::Id { id: s })
        }
        Some(Value::Object(m)) => match (m.get("before"), m.len()) {
            (Some(Value::String(t)), 1) => Ok(RecoveryPointChoice::Before {
                before: DateTime::parse_from_rfc3339(t)
                    .map_err(|_| {
                        reject(
                            "invalid-field",
                            "recoveryPoint.before",
                            "must be an RFC 3339 time",
                        )
                    })?
                    .with_timezone(&Utc),
            }),
            _ => Err(reject(
                "invalid-field",
                "recoveryPoint",
                "an object must be exactly {\"before\": RFC 3339 time}",
            )),
        },
        Some(_) => Err(reject(
            "invalid-field",
            "recoveryPoint",
            "must be a string or {\"before\": time}",
        )),
    }
}

/// Where the restore lands: the fields that name the target resource group, the staging account
/// the disks' config and template are written to, and the optional VM name and subnet.
struct Target {
    resource_group: ResourceGroupId,
    staging_storage_account_id: ResourceId,
    vm_name: Option<String>,
    subnet_id: Option<ResourceId>,
}

impl Target {
    /// Same-subscription rule (Azure Backup, ADE VMs): target and staging in the VM's subscription.
    fn check_subscription(&self, sub: &str) -> Result<(), Rejection> {
        if !self.resource_group.subscription.eq_ignore_ascii_case(sub) {
            return Err(reject(
                "cross-subscription",
                "targetResourceGroup",
                format!(
                    "must be in the VM's subscription {sub} (got {}): Azure Backup restores encrypted VMs only within their subscription",
                    self.resource_group.subscription
                ),
            ));
        }
        let staging_sub = self.staging_storage_account_id.subscription();
        if !staging_sub.eq_ignore_ascii_case(sub) {
            return Err(reject(
                "cross-subscription",
                "stagingStorageAccountId",
                format!(
                    "must be in the VM's subscription {sub} (got {staging_sub}): Azure Backup restores encrypted VMs only within their subscription"
                ),
            ));
        }
        if let Some(subnet) = &self.subnet_id {
            if !subnet.subscription().eq_ignore_ascii_case(sub) {
                return Err(reject(
                    "cross-subscription",
                    "targetSubnetId",
                    format!("must be in the VM's subscription {sub}"),
                ));
            }
        }
        Ok(())
    }
}

/// `targetResourceGroup`, `stagingStorageAccountId`, `targetVmName`, `targetSubnetId`, in that
/// order (the first failing field is the one reported).
fn parse_target(
    resource_group: Option<Value>,
    staging: Option<Value>,
    vm_name: Option<Value>,
    subnet: Option<Value>,
) -> Result<Target, Rejection> {
    let rg = string_field("targetResourceGroup", resource_group, true)?.unwrap_or_default();
    let resource_group = ResourceGroupId::parse("targetResourceGroup", &rg)?;
    let sa = string_field("stagingStorageAccountId", staging, true)?.unwrap_or_default();
    let staging_storage_account_id = typed_id(
        "stagingStorageAccountId",
        &sa,
        "Microsoft.Storage/storageAccounts",
    )?;
    let vm_name = parse_target_vm_name(vm_name)?;
    let subnet_id = match string_field("targetSubnetId", subnet, false)? {
        None => None,
        Some(s) => Some(typed_id(
            "targetSubnetId",
            &s,
            "Microsoft.Network/virtualNetworks/subnets",
        )?),
    };
    Ok(Target {
        resource_group,
        staging_storage_account_id,
        vm_name,
        subnet_id,
    })
}

/// `targetVmName`: optional; 1-64 letters, digits, '-' or '_', not starting with '-'.
fn parse_target_vm_name(v: Option<Value>) -> Result<Option<String>, Rejection> {
    let name = string_field("targetVmName", v, false)?;
    if let Some(n) = &name {
        if n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || n.starts_with('-')
        {
            return Err(reject(
                "invalid-field",
                "targetVmName",
                "must be 1-64 letters, digits, '-' or '_', not starting with '-'",
            ));
        }
    }
    Ok(name)
}

/// Who asked and where answers go: `requestedBy` (at most 256 characters) and `replyTo` (a
/// Service Bus queue name).
fn parse_reporting(
    requested_by: Option<Value>,
    reply_to: Option<Value>,
) -> Result<(Option<String>, Option<String>), Rejection> {
    let requested_by = string_field("requestedBy", requested_by, false)?;
    // Characters, not bytes: as JSON Schema's `maxLength` counts them.
    if requested_by
        .as_ref()
        .is_some_and(|r| r.chars().count() > 256)
    {
        return Err(reject(
            "invalid-field",
            "requestedBy",
            "must be at most 256 characters",
        ));
    }
    let reply_to = string_field("replyTo", reply_to, false)?;
    if let Some(q) = &reply_to {
        if !valid_queue_name(q) {
            return Err(reject(
                "invalid-field",
                "replyTo",
                "must be a Service Bus queue name (letters, digits, '-', '_', '.', starting and ending with a letter or digit)",
            ));
        }
    }
    Ok((requested_by, reply_to))
}

fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(h.finalize())
}

/// Encrypted VMs can only be restored by restoring disks (Azure Backup docs).
fn check_restore_type(t: &str) -> Result<(), Rejection> {
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "restoredisks" => Ok(()),
        "replaceexisting" | "originallocation" | "replacedisks" => Err(reject(
            "unsupported-restore-type",
            "restoreType",
            format!("{t:?} is not supported for VMs encrypted with Azure Disk Encryption: Azure Backup cannot replace an existing encrypted VM; use restoreDisks (ade-backup then redeploys the VM)"),
        )),
        "createvm" | "alternatelocation" | "createnew" => Err(reject(
            "unsupported-restore-type",
            "restoreType",
            format!("{t:?} is not supported for VMs encrypted with Azure Disk Encryption: Azure Backup only restores their disks; use restoreDisks (ade-backup then creates the VM from the generated template)"),
        )),
        "filelevel" | "filerecovery" | "itemlevel" | "itemlevelrestore" | "file" => Err(reject(
            "unsupported-restore-type",
            "restoreType",
            format!("{t:?} is not supported: Azure Backup offers no file- or folder-level recovery for VMs encrypted with Azure Disk Encryption; restore the disks instead"),
        )),
        _ => Err(reject(
            "invalid-field",
            "restoreType",
            format!("{t:?} is not a restore type; the only one allowed for ADE VMs is restoreDisks"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: &str = "00000000-0000-0000-0000-000000000001";

    fn valid() -> Value {
        json!({
            "version": 1,
            "ticketId": "INC0012345",
            "vmResourceId": format!("/subscriptions/{S}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1"),
            "recoveryPoint": "latest",
            "targetResourceGroup": format!("/subscriptions/{S}/resourceGroups/rg-restore"),
            "stagingStorageAccountId": format!("/subscriptions/{S}/resourceGroups/rg-restore/providers/Microsoft.Storage/storageAccounts/stagingsa"),
            "targetVmName": "vm-1-restored",
            "requestedBy": "jane@contoso.com",
            "replyTo": "restore-status"
        })
    }

    fn parse_v(v: &Value) -> Result<RestoreRequest, Rejection> {
        parse(&serde_json::to_vec(v).expect("json"))
    }

    #[test]
    fn valid_request_parses() {
        let r = parse_v(&valid()).expect("valid");
        assert_eq!(r.ticket_id.as_str(), "INC0012345");
        assert_eq!(r.recovery_point, RecoveryPointChoice::Latest);
        let mut before = valid();
        before["recoveryPoint"] = json!({"before": "2026-11-20T00:00:00Z"});
        assert!(matches!(
            parse_v(&before).expect("valid").recovery_point,
            RecoveryPointChoice::Before { .. }
        ));
        let mut id = valid();
        id["recoveryPoint"] = json!("932883886256475");
        assert!(matches!(
            parse_v(&id).expect("valid").recovery_point,
            RecoveryPointChoice::Id { .. }
        ));
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("ticketId", json!(null), "ticketId", "invalid-field"),
            ("ticketId", json!("a/b"), "ticketId", "invalid-field"),
            ("restoreType", json!("replaceExisting"), "restoreType", "unsupported-restore-type"),
            ("restoreType", json!("createVm"), "restoreType", "unsupported-restore-type"),
            ("restoreType", json!("alternateLocation"), "restoreType", "unsupported-restore-type"),
            ("restoreType", json!("fileLevel"), "restoreType", "unsupported-restore-type"),
            ("vmResourceId", json!("/subscriptions/x"), "vmResourceId", "invalid-field"),
            ("recoveryPoint", json!({"before": "yesterday"}), "recoveryPoint.before", "invalid-field"),
            ("targetResourceGroup", json!("/subscriptions/00000000-0000-0000-0000-000000000002/resourceGroups/rg"), "targetResourceGroup", "cross-subscription"),
            ("stagingStorageAccountId", json!("/subscriptions/00000000-0000-0000-0000-000000000002/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa"), "stagingStorageAccountId", "cross-subscription"),
            ("replyTo", json!("../admin"), "replyTo", "invalid-field"),
        ];
        for (key, value, field, code) in cases {
            let mut v = valid();
            v[key] = value;
            let err = parse_v(&v).expect_err(key);
            assert_eq!(
                (err.field.as_str(), err.code.as_str()),
                (field, code),
                "{key}: {err}"
            );
        }
        let mut unknown = valid();
        unknown["extra"] = json!(1);
        assert_eq!(parse_v(&unknown).expect_err("unknown").field, "$");
        assert_eq!(parse(b"nope").expect_err("json").code, "invalid-message");
    }

    #[test]
    fn first_failing_field_is_reported_with_its_rule() {
        const OTHER: &str = "00000000-0000-0000-0000-000000000002";
        let vm = format!("/subscriptions/{S}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1");
        let subnet = |sub: &str| {
            format!("/subscriptions/{sub}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default")
        };
        let staging_other = format!("/subscriptions/{OTHER}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/sa");
        let cross = |got: &str| {
            format!("must be in the VM's subscription {S} (got {got}): Azure Backup restores encrypted VMs only within their subscription")
        };
        // (changes to a valid request, code, field, rule)
        type Case = (
            Vec<(&'static str, Value)>,
            &'static str,
            &'static str,
            String,
        );
        let cases: Vec<Case> = vec![
            (vec![("version", json!(2)), ("ticketId", json!(null))], "invalid-field", "version", "only version 1 is supported".into()),
            (vec![("ticketId", json!(7)), ("restoreType", json!("createVm"))], "invalid-field", "ticketId", "must be a string".into()),
            (vec![("restoreType", json!("nope")), ("vmResourceId", json!(null))], "invalid-field", "restoreType", "\"nope\" is not a restore type; the only one allowed for ADE VMs is restoreDisks".into()),
            (vec![("vmResourceId", json!(null)), ("recoveryPoint", json!(5))], "invalid-field", "vmResourceId", "is required".into()),
            (vec![("vmResourceId", json!(staging_other.clone()))], "invalid-field", "vmResourceId", "must be a Microsoft.Compute/virtualMachines id".into()),
            (vec![("recoveryPoint", json!("a b")), ("targetResourceGroup", json!("x"))], "invalid-field", "recoveryPoint", "must be \"latest\", a recovery point id (digits, letters, '-'), or {\"before\": RFC 3339 time}".into()),
            (vec![("recoveryPoint", json!({"before": "2026-11-20T00:00:00Z", "x": 1}))], "invalid-field", "recoveryPoint", "an object must be exactly {\"before\": RFC 3339 time}".into()),
            (vec![("recoveryPoint", json!(5))], "invalid-field", "recoveryPoint", "must be a string or {\"before\": time}".into()),
            (vec![("targetResourceGroup", json!("x")), ("stagingStorageAccountId", json!(null))], "invalid-field", "targetResourceGroup", "must be a resource group id: /subscriptions/{guid}/resourceGroups/{name}".into()),
            (vec![("stagingStorageAccountId", json!(null)), ("targetVmName", json!("-x"))], "invalid-field", "stagingStorageAccountId", "is required".into()),
            (vec![("stagingStorageAccountId", json!(vm.clone()))], "invalid-field", "stagingStorageAccountId", "must be a Microsoft.Storage/storageAccounts id".into()),
            (vec![("targetVmName", json!("-x")), ("targetSubnetId", json!(vm.clone()))], "invalid-field", "targetVmName", "must be 1-64 letters, digits, '-' or '_', not starting with '-'".into()),
            (vec![("targetSubnetId", json!(vm.clone())), ("requestedBy", json!(1))], "invalid-field", "targetSubnetId", "must be a Microsoft.Network/virtualNetworks/subnets id".into()),
            (vec![("requestedBy", json!("x".repeat(257))), ("replyTo", json!("../admin"))], "invalid-field", "requestedBy", "must be at most 256 characters".into()),
            (vec![("replyTo", json!("../admin")), ("targetResourceGroup", json!(format!("/subscriptions/{OTHER}/resourceGroups/rg")))], "invalid-field", "replyTo", "must be a Service Bus queue name (letters, digits, '-', '_', '.', starting and ending with a letter or digit)".into()),
            (vec![("targetResourceGroup", json!(format!("/subscriptions/{OTHER}/resourceGroups/rg"))), ("stagingStorageAccountId", json!(staging_other.clone()))], "cross-subscription", "targetResourceGroup", cross(OTHER)),
            (vec![("stagingStorageAccountId", json!(staging_other.clone())), ("targetSubnetId", json!(subnet(OTHER)))], "cross-subscription", "stagingStorageAccountId", cross(OTHER)),
            (vec![("targetSubnetId", json!(subnet(OTHER)))], "cross-subscription", "targetSubnetId", format!("must be in the VM's subscription {S}")),
        ];
        for (changes, code, field, rule) in cases {
            let mut v = valid();
            for (key, value) in &changes {
                v[*key] = value.clone();
            }
            let err = parse_v(&v).expect_err(field);
            assert_eq!(
                (err.code.as_str(), err.field.as_str(), err.rule.as_str()),
                (code, field, rule.as_str()),
                "{changes:?}"
            );
        }
        let mut ok = valid();
        ok["targetSubnetId"] = json!(subnet(S));
        ok["restoreType"] = json!("RestoreDisks");
        assert!(parse_v(&ok).expect("subnet").target_subnet_id.is_some());
    }

    #[test]
    fn numbers_and_lengths_are_read_as_json_schema_reads_them() {
        // 1.0 is the number 1; `requestedBy`'s limit counts characters, not UTF-8 bytes.
        let mut v = valid();
        v["version"] = json!(1.0);
        v["requestedBy"] = json!("\u{540d}".repeat(256));
        assert!(parse_v(&v).is_ok());
        v["requestedBy"] = json!("\u{540d}".repeat(257));
        assert_eq!(parse_v(&v).expect_err("too long").field, "requestedBy");
        v["version"] = json!(1.5);
        assert_eq!(parse_v(&v).expect_err("not 1").field, "version");
    }

    #[test]
    fn different_requests_have_different_fingerprints() {
        let a = parse_v(&valid()).expect("a");
        let mut v = valid();
        v["targetVmName"] = json!("other");
        let b = parse_v(&v).expect("b");
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(
            a.fingerprint,
            parse_v(&valid()).expect("a again").fingerprint
        );
    }

    #[test]
    fn fingerprints_are_stable() {
        // Stored in restore records: a changed fingerprint would turn a redelivery into a conflict.
        assert_eq!(
            parse_v(&valid()).expect("valid").fingerprint,
            "c78b28797f06f4c2eb9159dff22ec7295507e428fdcd5015551364ba1f7fe4ee"
        );
        let mut v = valid();
        v["targetSubnetId"] = json!(format!("/subscriptions/{S}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default"));
        v["recoveryPoint"] = json!({"before": "2026-11-20T00:00:00Z"});
        assert_eq!(
            parse_v(&v).expect("valid").fingerprint,
            "b8a5b8d4a69191a7610d58e657f6e567e091b327f2bead4d9b51028287df8989"
        );
    }
}
