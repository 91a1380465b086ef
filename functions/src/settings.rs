//! Process settings, read once at start-up from environment variables (Azure app settings).
//!
//! | variable | required | rule |
//! |---|---|---|
//! | `ADE_BACKUP_STATE` | yes | `fs:DIR`, or a blob container URL `https://{account}.blob.core.windows.net/{container}` (no query string: SAS tokens are refused, use a managed identity) |
//! | `ADE_BACKUP_SERVICEBUS_ENDPOINT` | yes | `https://{namespace}.servicebus.windows.net/` (plain `http` only on loopback, for `ade-backup local`) |
//! | `ADE_BACKUP_ARM_ENDPOINT` | no, `https://management.azure.com` | URL, same rules |
//! | `ADE_BACKUP_GRAPH_ENDPOINT` | no, `https://graph.microsoft.com` | URL, same rules |
//! | `ADE_BACKUP_BMS_OBJECT_ID` | no | GUID: object id of the Backup Management Service principal; overrides the Graph lookup |
//! | `ADE_BACKUP_SUBSCRIPTIONS` | no | comma-separated subscription GUIDs the policy sweep covers |
//! | `ADE_BACKUP_MANAGEMENT_GROUPS` | no | comma-separated management group names (or ids) the policy sweep covers, every subscription below them included |
//! | `ADE_BACKUP_SWEEP_TAGS` | no | `key=value[,key=value]`: the sweep only considers VMs carrying every listed tag |
//! | `ADE_BACKUP_QUEUE_*` | no, see [`QueueNames`] | Service Bus queue names |
//! | `ADE_BACKUP_PROTECTION_RULES`, `ADE_BACKUP_RESTORE_ALLOWLIST`, `ADE_BACKUP_RBAC_ROLE`, ... | no | see [`WorkflowSettings`] |
//! | `ADE_BACKUP_RESTORE_KEY_MATERIAL`, `ADE_BACKUP_AAD_CLIENT_SECRET_URL` | no | Key Vault data-plane opt-ins, see [`KeyVaultSettings`] |
//!
//! Every error names the variable and the rule it breaks. Values are never echoed for URL
//! variables (they might carry a secret the rule is there to refuse).

mod keyvault;
mod redrive;

use crate::domain::kv_access::RbacRoleChoice;
use crate::domain::restore_allowlist::RestoreAllowlist;
use crate::domain::rules::ProtectionRules;
pub use keyvault::KeyVaultSettings;
pub use redrive::RedriveSettings;
use std::path::PathBuf;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("setting {var} is required: {rule}")]
    Missing {
        var: &'static str,
        rule: &'static str,
    },
    #[error("setting {var} is invalid: {rule}")]
    Invalid { var: &'static str, rule: String },
}

/// Where operation state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A directory on local disk (`ade-backup local`, tests).
    Fs(PathBuf),
    /// A blob container: account endpoint + container name.
    Blob { container_url: Url },
}

/// Service Bus queue names. Defaults match the `queueName`s in the `function.json` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    pub vm_encryption_events: String,
    pub restore_requests: String,
    pub grant_key_vault_access: String,
    pub backup_vm: String,
    pub restore_vm: String,
    pub redeploy_vm: String,
    /// Restore drills' worker queue.
    pub drill_vm: String,
}

impl QueueNames {
    /// ade-backup's own work queues: never a destination a request may choose.
    pub fn own(&self) -> [&str; 7] {
        [
            &self.drill_vm,
            &self.vm_encryption_events,
            &self.restore_requests,
            &self.grant_key_vault_access,
            &self.backup_vm,
            &self.restore_vm,
            &self.redeploy_vm,
        ]
    }
}

impl Default for QueueNames {
    fn default() -> Self {
        Self {
            vm_encryption_events: "vm-encryption-events".into(),
            restore_requests: "restore-requests".into(),
            grant_key_vault_access: "grant-key-vault-access".into(),
            backup_vm: "backup-vm".into(),
            restore_vm: "restore-vm".into(),
            redeploy_vm: "redeploy-vm".into(),
            drill_vm: "drill-vm".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub state: StateLocation,
    pub servicebus_endpoint: Url,
    pub arm_endpoint: Url,
    pub graph_endpoint: Url,
    /// `ADE_BACKUP_BLOB_ENDPOINT`: serve `https://{account}.blob.core.windows.net/…` from
    /// `{endpoint}/{account}/…` instead (the simulator). Unset in Azure.
    pub blob_endpoint: Option<Url>,
    pub bms_object_id: Option<uuid::Uuid>,
    pub subscriptions: Vec<uuid::Uuid>,
    pub management_groups: Vec<ade_backup_shared::arm::ManagementGroupId>,
    pub sweep_tags: crate::domain::sweep_scope::TagFilter,
    pub queues: QueueNames,
    pub workflow: WorkflowSettings,
    /// Restore drills (`ADE_BACKUP_DRILL_*`, see [`crate::domain::drill_config`]).
    pub drill: crate::domain::drill_config::DrillSettings,
}

/// How the workflows behave (rules, limits, timings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSettings {
    /// `ADE_BACKUP_PROTECTION_RULES`: JSON (inline, or `@path` to a file).
    pub protection_rules: ProtectionRules,
    /// `ADE_BACKUP_RESTORE_ALLOWLIST`: JSON (inline or `@path`): per subscription, the source VMs'
    /// resource groups, the target (and staging) resource groups and the subnets a restored VM
    /// may join. Empty: every restore is forbidden. See [`RestoreAllowlist`].
    pub restore_allowlist: RestoreAllowlist,
    /// `ADE_BACKUP_RBAC_ROLE`: `custom` (least privilege, default) or `key-vault-administrator`.
    pub rbac_role: RbacRoleChoice,
    /// `ADE_BACKUP_FIRST_BACKUP_RETENTION_DAYS` (1..=99, default 30).
    pub first_backup_retention_days: u32,
    /// `ADE_BACKUP_POLL_INTERVAL_MS`: delay of the follow-up messages that track Azure jobs.
    pub poll_interval: std::time::Duration,
    /// `ADE_BACKUP_RECHECK_DELAY_MS`: delay before looking again at a VM whose encryption is in progress.
    pub recheck_delay: std::time::Duration,
    /// `ADE_BACKUP_MAX_RECHECKS` (default 12).
    pub max_rechecks: u32,
    /// `ADE_BACKUP_MAX_POLLS`: follow-ups before a tracked Azure operation is declared stuck (default 720).
    pub max_polls: u32,
    /// `ADE_BACKUP_STEP_LEASE_MS`: how long a claimed step is protected from a concurrent invocation.
    pub step_lease: std::time::Duration,
    /// `ADE_BACKUP_QUEUE_NOTIFICATIONS`: messages for humans (blocked operations).
    pub notifications_queue: String,
    /// `ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE` (`true`/`false`, default false): allow staging in the
    /// vault's paired region.
    pub allow_cross_region_restore: bool,
    /// `ADE_BACKUP_REPLY_QUEUES`: the queues a restore request may name as `replyTo`
    /// (comma-separated, default `restore-status`). Never one of ade-backup's own queues.
    pub reply_queues: Vec<String>,
    /// `ADE_BACKUP_MAX_DELIVERY_COUNT`: the queues' `maxDeliveryCount` (default 10, as Service Bus):
    /// the delivery that fails transiently for the last time records why at `deadletters/`.
    pub max_delivery_count: u32,
    /// `ADE_BACKUP_ARM_RETRY_BUDGET_MS` (default 120000) and `ADE_BACKUP_ARM_REQUEST_TIMEOUT_MS`
    /// (default 60000): how long one ARM call may take with its retries. A step's claim lease is
    /// never shorter than this (plus a margin), so no takeover starts while a call is in flight.
    pub arm_retry_budget: std::time::Duration,
    pub arm_request_timeout: std::time::Duration,
    /// `ADE_BACKUP_RESTORE_KEY_MATERIAL`, `ADE_BACKUP_AAD_CLIENT_SECRET_URL`: see [`KeyVaultSettings`].
    pub key_vault: KeyVaultSettings,
    /// `ADE_BACKUP_REDRIVE_*`: the dead-letter redrive, see [`RedriveSettings`].
    pub redrive: RedriveSettings,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        Self {
            protection_rules: ProtectionRules::default(),
            restore_allowlist: RestoreAllowlist::default(),
            rbac_role: RbacRoleChoice::default(),
            first_backup_retention_days: 30,
            poll_interval: std::time::Duration::from_secs(60),
            recheck_delay: std::time::Duration::from_secs(300),
            max_rechecks: 12,
            max_polls: 720,
            step_lease: std::time::Duration::from_secs(120),
            notifications_queue: "notifications".into(),
            allow_cross_region_restore: false,
            reply_queues: vec!["restore-status".into()],
            max_delivery_count: 10,
            arm_retry_budget: std::time::Duration::from_secs(120),
            arm_request_timeout: std::time::Duration::from_secs(60),
            key_vault: KeyVaultSettings::default(),
            redrive: RedriveSettings::default(),
        }
    }
}

fn json_setting(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<String>, SettingsError> {
    match get(var) {
        None => Ok(None),
        Some(v) => match v.strip_prefix('@') {
            Some(path) => {
                std::fs::read_to_string(path)
                    .map(Some)
                    .map_err(|e| SettingsError::Invalid {
                        var,
                        rule: format!("could not read the file {path:?} it names: {e}"),
                    })
            }
            None => Ok(Some(v)),
        },
    }
}

/// A comma-separated list setting (blank entries skipped); `one` gives the rule an entry broke.
fn parse_list<T>(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    one: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, SettingsError> {
    get(var)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| one(s).map_err(|rule| SettingsError::Invalid { var, rule }))
        .collect()
}

fn parse_rbac_role(get: &dyn Fn(&str) -> Option<String>) -> Result<RbacRoleChoice, SettingsError> {
    match get("ADE_BACKUP_RBAC_ROLE").as_deref() {
        None | Some("custom") => Ok(RbacRoleChoice::CustomLeastPrivilege),
        Some("key-vault-administrator") => Ok(RbacRoleChoice::KeyVaultAdministrator),
        Some(other) => Err(SettingsError::Invalid {
            var: "ADE_BACKUP_RBAC_ROLE",
            rule: format!("must be custom or key-vault-administrator, got {other:?}"),
        }),
    }
}

fn parse_allow_cross_region_restore(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<bool, SettingsError> {
    match get("ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE").as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(SettingsError::Invalid {
            var: "ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE",
            rule: format!("must be true or false, got {other:?}"),
        }),
    }
}

/// `ADE_BACKUP_REPLY_QUEUES`: each name valid for the sender.
fn parse_reply_queues(get: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, SettingsError> {
    let Some(list) = get("ADE_BACKUP_REPLY_QUEUES") else {
        return Ok(WorkflowSettings::default().reply_queues);
    };
    list.split(',')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(|q| {
            validate_queue_name(q)
                .map(|()| q.to_string())
                .map_err(|rule| SettingsError::Invalid {
                    var: "ADE_BACKUP_REPLY_QUEUES",
                    rule: format!("{q:?} {rule}"),
                })
        })
        .collect()
}

/// A whole-number variable: `default` when unset, else a number in `min..=max`.
fn whole_number(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, SettingsError> {
    match get(var) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(SettingsError::Invalid {
                var,
                rule: format!("must be a whole number from {min} to {max}, got {v:?}"),
            }),
        },
    }
}

fn parse_workflow(get: &dyn Fn(&str) -> Option<String>) -> Result<WorkflowSettings, SettingsError> {
    let d = WorkflowSettings::default();
    let protection_rules = match json_setting(get, "ADE_BACKUP_PROTECTION_RULES")? {
        None => d.protection_rules,
        Some(text) => ProtectionRules::from_json(&text).map_err(|e| SettingsError::Invalid {
            var: "ADE_BACKUP_PROTECTION_RULES",
            rule: e.to_string(),
        })?,
    };
    let restore_allowlist = match json_setting(get, "ADE_BACKUP_RESTORE_ALLOWLIST")? {
        None => d.restore_allowlist,
        Some(text) => RestoreAllowlist::from_json(&text).map_err(|e| SettingsError::Invalid {
            var: "ADE_BACKUP_RESTORE_ALLOWLIST",
            rule: format!("must be {{\"entries\": [{{\"subscription\": GUID, \"sourceResourceGroups\": [names], \"resourceGroups\": [names], \"subnetResourceGroups\": [names], \"subnets\": [subnet ids]}}]}}, a name being a resource group name, \"prefix*\" or \"*\" (an omitted list allows nothing on its side): {e}"),
        })?,
    };
    let rbac_role = parse_rbac_role(get)?;
    let number = |var: &'static str, default: u64, min: u64, max: u64| {
        whole_number(get, var, default, min, max)
    };
    let ms = |var: &'static str,
              default: std::time::Duration|
     -> Result<std::time::Duration, SettingsError> {
        number(var, default.as_millis() as u64, 0, 86_400_000).map(std::time::Duration::from_millis)
    };
    let notifications_queue =
        get("ADE_BACKUP_QUEUE_NOTIFICATIONS").unwrap_or(d.notifications_queue);
    validate_queue_name(&notifications_queue).map_err(|rule| SettingsError::Invalid {
        var: "ADE_BACKUP_QUEUE_NOTIFICATIONS",
        rule: rule.to_string(),
    })?;
    let allow_cross_region_restore = parse_allow_cross_region_restore(get)?;
    Ok(WorkflowSettings {
        protection_rules,
        restore_allowlist,
        rbac_role,
        first_backup_retention_days: number("ADE_BACKUP_FIRST_BACKUP_RETENTION_DAYS", 30, 1, 99)?
            as u32,
        poll_interval: ms("ADE_BACKUP_POLL_INTERVAL_MS", d.poll_interval)?,
        recheck_delay: ms("ADE_BACKUP_RECHECK_DELAY_MS", d.recheck_delay)?,
        max_rechecks: number("ADE_BACKUP_MAX_RECHECKS", 12, 0, 1000)? as u32,
        max_polls: number("ADE_BACKUP_MAX_POLLS", 720, 1, 100_000)? as u32,
        step_lease: ms("ADE_BACKUP_STEP_LEASE_MS", d.step_lease)?,
        notifications_queue,
        allow_cross_region_restore,
        reply_queues: parse_reply_queues(get)?,
        max_delivery_count: number("ADE_BACKUP_MAX_DELIVERY_COUNT", 10, 1, 2000)? as u32,
        arm_retry_budget: ms("ADE_BACKUP_ARM_RETRY_BUDGET_MS", d.arm_retry_budget)?,
        arm_request_timeout: ms("ADE_BACKUP_ARM_REQUEST_TIMEOUT_MS", d.arm_request_timeout)?,
        key_vault: keyvault::parse(get)?,
        redrive: redrive::parse(get)?,
    })
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (tests pass a map instead of mutating the environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let state = parse_state(&required(
            &get,
            "ADE_BACKUP_STATE",
            "set it to fs:DIR or to a blob container URL",
        )?)?;
        let servicebus_endpoint = parse_endpoint(
            "ADE_BACKUP_SERVICEBUS_ENDPOINT",
            &required(
                &get,
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "set it to https://{namespace}.servicebus.windows.net/",
            )?,
        )?;
        let arm_endpoint = endpoint_or(
            &get,
            "ADE_BACKUP_ARM_ENDPOINT",
            "https://management.azure.com",
        )?;
        let graph_endpoint = endpoint_or(
            &get,
            "ADE_BACKUP_GRAPH_ENDPOINT",
            "https://graph.microsoft.com",
        )?;
        let blob_endpoint = get("ADE_BACKUP_BLOB_ENDPOINT")
            .map(|v| parse_endpoint("ADE_BACKUP_BLOB_ENDPOINT", &v))
            .transpose()?;
        let bms_object_id = parse_bms_object_id(&get)?;
        let SweepScope {
            subscriptions,
            management_groups,
            sweep_tags,
        } = parse_sweep_scope(&get)?;
        let queues = parse_queues(&get)?;
        let workflow = parse_workflow(&get)?;
        if let Some(q) = workflow
            .reply_queues
            .iter()
            .find(|q| queues.own().contains(&q.as_str()) || **q == workflow.notifications_queue)
        {
            return Err(SettingsError::Invalid {
                var: "ADE_BACKUP_REPLY_QUEUES",
                rule: format!("{q:?} is one of ade-backup's own queues; replies go to the ticketing systems' queues only"),
            });
        }
        let drill = crate::domain::drill_config::DrillSettings::from_lookup(
            &get,
            &workflow.restore_allowlist,
        )
        .map_err(|e| SettingsError::Invalid {
            var: e.var,
            rule: e.rule,
        })?;
        Ok(Self {
            drill,
            state,
            servicebus_endpoint,
            arm_endpoint,
            graph_endpoint,
            blob_endpoint,
            bms_object_id,
            subscriptions,
            management_groups,
            sweep_tags,
            queues,
            workflow,
        })
    }
}

/// A required setting's value; `rule` says what to set it to.
fn required(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    rule: &'static str,
) -> Result<String, SettingsError> {
    get(var).ok_or(SettingsError::Missing { var, rule })
}

/// An endpoint URL setting, `default` when unset.
fn endpoint_or(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<Url, SettingsError> {
    parse_endpoint(var, &get(var).unwrap_or_else(|| default.into()))
}

fn parse_bms_object_id(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<uuid::Uuid>, SettingsError> {
    get("ADE_BACKUP_BMS_OBJECT_ID")
        .map(|v| {
            uuid::Uuid::parse_str(&v).map_err(|_| SettingsError::Invalid {
                var: "ADE_BACKUP_BMS_OBJECT_ID",
                rule: format!("must be a GUID (object id of the Backup Management Service principal), got {v:?}"),
            })
        })
        .transpose()
}

/// What the policy sweep covers (the [`Settings`] fields of the same names).
struct SweepScope {
    subscriptions: Vec<uuid::Uuid>,
    management_groups: Vec<ade_backup_shared::arm::ManagementGroupId>,
    sweep_tags: crate::domain::sweep_scope::TagFilter,
}

fn parse_sweep_scope(get: &dyn Fn(&str) -> Option<String>) -> Result<SweepScope, SettingsError> {
    let subscriptions = parse_list(get, "ADE_BACKUP_SUBSCRIPTIONS", |s| {
        uuid::Uuid::parse_str(s)
            .map_err(|_| format!("must be comma-separated subscription GUIDs, {s:?} is not a GUID"))
    })?;
    let management_groups = parse_list(get, "ADE_BACKUP_MANAGEMENT_GROUPS", |s| {
        ade_backup_shared::arm::ManagementGroupId::parse(s).map_err(|_| {
            format!("must be comma-separated management group names or ids (1-90 of letters, digits, -_.(), not ending in '.'), {s:?} is not one")
        })
    })?;
    let sweep_tags = crate::domain::sweep_scope::TagFilter::parse(
        &get("ADE_BACKUP_SWEEP_TAGS").unwrap_or_default(),
    )
    .map_err(|rule| SettingsError::Invalid {
        var: "ADE_BACKUP_SWEEP_TAGS",
        rule,
    })?;
    Ok(SweepScope {
        subscriptions,
        management_groups,
        sweep_tags,
    })
}

/// `ADE_BACKUP_QUEUE_*`: each name validated, defaults from [`QueueNames::default`].
fn parse_queues(get: &dyn Fn(&str) -> Option<String>) -> Result<QueueNames, SettingsError> {
    let d = QueueNames::default();
    let queue = |var: &'static str, default: String| -> Result<String, SettingsError> {
        let name = get(var).unwrap_or(default);
        validate_queue_name(&name).map_err(|rule| SettingsError::Invalid {
            var,
            rule: format!("{rule} (got {name:?})"),
        })?;
        Ok(name)
    };
    Ok(QueueNames {
        vm_encryption_events: queue(
            "ADE_BACKUP_QUEUE_VM_ENCRYPTION_EVENTS",
            d.vm_encryption_events,
        )?,
        restore_requests: queue("ADE_BACKUP_QUEUE_RESTORE_REQUESTS", d.restore_requests)?,
        grant_key_vault_access: queue(
            "ADE_BACKUP_QUEUE_GRANT_KEY_VAULT_ACCESS",
            d.grant_key_vault_access,
        )?,
        backup_vm: queue("ADE_BACKUP_QUEUE_BACKUP_VM", d.backup_vm)?,
        restore_vm: queue("ADE_BACKUP_QUEUE_RESTORE_VM", d.restore_vm)?,
        redeploy_vm: queue("ADE_BACKUP_QUEUE_REDEPLOY_VM", d.redeploy_vm)?,
        drill_vm: queue("ADE_BACKUP_QUEUE_DRILL_VM", d.drill_vm)?,
    })
}

/// Parses an `ADE_BACKUP_STATE` value (`fs:DIR` or a blob container URL).
pub fn parse_state_location(v: &str) -> Result<StateLocation, SettingsError> {
    parse_state(v)
}

fn parse_state(v: &str) -> Result<StateLocation, SettingsError> {
    const VAR: &str = "ADE_BACKUP_STATE";
    if let Some(dir) = v.strip_prefix("fs:") {
        if dir.trim().is_empty() {
            return Err(SettingsError::Invalid {
                var: VAR,
                rule: "fs: must be followed by a directory path".into(),
            });
        }
        return Ok(StateLocation::Fs(PathBuf::from(dir)));
    }
    let url = parse_endpoint(VAR, v).map_err(|e| match e {
        SettingsError::Invalid { rule, .. } => SettingsError::Invalid {
            var: VAR,
            rule: format!("must be fs:DIR or a blob container URL: {rule}"),
        },
        other => other,
    })?;
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    // Azurite-style loopback URLs carry the account as the first path segment.
    let container = if is_loopback(&url) {
        segments.get(1).or(segments.first())
    } else {
        segments.first()
    };
    match container {
        Some(c) if validate_container_name(c) => Ok(StateLocation::Blob { container_url: url }),
        _ => Err(SettingsError::Invalid {
            var: VAR,
            rule: "a blob URL must name a container (3-63 lowercase letters, digits and single hyphens) as its path".into(),
        }),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An endpoint URL: https (http only on loopback), a host, no credentials, no query, no fragment.
fn parse_endpoint(var: &'static str, v: &str) -> Result<Url, SettingsError> {
    let invalid = |rule: &str| SettingsError::Invalid {
        var,
        rule: rule.to_string(),
    };
    let url = Url::parse(v).map_err(|_| invalid("must be an absolute URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                "must use https (plain http is allowed only on loopback)",
            ))
        }
        _ => return Err(invalid("must be an https URL")),
    }
    if url.host().is_none() {
        return Err(invalid("must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "must not carry a query string or fragment (SAS tokens and keys are not accepted; use a managed identity)",
        ));
    }
    Ok(url)
}

fn validate_container_name(c: &str) -> bool {
    (3..=63).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--")
}

/// Service Bus queue naming rules: the ones the sender applies before every send
/// (`ade_backup_shared::messaging::servicebus::validate_queue_name`), so a name that passes here
/// never fails at send time.
pub fn validate_queue_name(name: &str) -> Result<(), &'static str> {
    use ade_backup_shared::messaging::servicebus::validate_queue_name as sender_rule;
    use ade_backup_shared::messaging::MessagingError;
    match sender_rule(name) {
        Ok(()) => Ok(()),
        Err(MessagingError::InvalidQueue { rule, .. }) => Err(rule),
        Err(_) => Err("is not a valid queue name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| m.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("ADE_BACKUP_STATE", "fs:/var/lib/ade-backup"),
        (
            "ADE_BACKUP_SERVICEBUS_ENDPOINT",
            "https://ns.servicebus.windows.net/",
        ),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Settings, SettingsError> {
        let mut v: Vec<(&str, &str)> = BASE.to_vec();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        load(&v)
    }

    fn invalid_var(r: Result<Settings, SettingsError>) -> &'static str {
        match r {
            Err(SettingsError::Invalid { var, .. }) | Err(SettingsError::Missing { var, .. }) => {
                var
            }
            Ok(s) => panic!("expected an error, got {s:?}"),
        }
    }

    #[test]
    fn minimal_settings_take_defaults() {
        let s = with(&[]).expect("valid");
        assert_eq!(s.state, StateLocation::Fs("/var/lib/ade-backup".into()));
        assert_eq!(s.arm_endpoint.as_str(), "https://management.azure.com/");
        assert_eq!(s.graph_endpoint.as_str(), "https://graph.microsoft.com/");
        assert_eq!(s.queues, QueueNames::default());
        assert!(s.bms_object_id.is_none() && s.subscriptions.is_empty());
    }

    #[test]
    fn full_settings_parse() {
        let s = with(&[
            (
                "ADE_BACKUP_STATE",
                "https://acct.blob.core.windows.net/ade-state",
            ),
            ("ADE_BACKUP_ARM_ENDPOINT", "http://127.0.0.1:8080"),
            (
                "ADE_BACKUP_BMS_OBJECT_ID",
                "262044b1-e2ce-469f-a196-69ab7ada62d3",
            ),
            (
                "ADE_BACKUP_SUBSCRIPTIONS",
                "00000000-0000-0000-0000-000000000001, 00000000-0000-0000-0000-000000000002",
            ),
            ("ADE_BACKUP_QUEUE_BACKUP_VM", "backup-vm-eu"),
        ])
        .expect("valid");
        assert!(matches!(s.state, StateLocation::Blob { .. }));
        assert_eq!(s.arm_endpoint.as_str(), "http://127.0.0.1:8080/");
        assert!(s.bms_object_id.is_some());
        assert_eq!(s.subscriptions.len(), 2);
        assert_eq!(s.queues.backup_vm, "backup-vm-eu");
        let azurite = with(&[(
            "ADE_BACKUP_STATE",
            "http://127.0.0.1:10000/devstoreaccount1/state",
        )]);
        assert!(azurite.is_ok(), "{azurite:?}");
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(invalid_var(load(&[BASE[1]])), "ADE_BACKUP_STATE");
        assert_eq!(
            invalid_var(load(&[BASE[0]])),
            "ADE_BACKUP_SERVICEBUS_ENDPOINT"
        );
        for (var, bad) in [
            ("ADE_BACKUP_STATE", "fs:"),
            ("ADE_BACKUP_STATE", "/just/a/path"),
            (
                "ADE_BACKUP_STATE",
                "https://acct.blob.core.windows.net/state?sv=2024&sig=secret",
            ),
            ("ADE_BACKUP_STATE", "https://acct.blob.core.windows.net/"),
            (
                "ADE_BACKUP_STATE",
                "https://acct.blob.core.windows.net/Bad_Container",
            ),
            (
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "http://ns.servicebus.windows.net/",
            ),
            (
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "ns.servicebus.windows.net",
            ),
            (
                "ADE_BACKUP_ARM_ENDPOINT",
                "https://user:pw@management.azure.com",
            ),
            ("ADE_BACKUP_GRAPH_ENDPOINT", "ftp://graph.microsoft.com"),
            ("ADE_BACKUP_BMS_OBJECT_ID", "not-a-guid"),
            (
                "ADE_BACKUP_SUBSCRIPTIONS",
                "00000000-0000-0000-0000-000000000001,nope",
            ),
            ("ADE_BACKUP_MANAGEMENT_GROUPS", "mg-prod,has space"),
            ("ADE_BACKUP_SWEEP_TAGS", "backup=it's"),
            ("ADE_BACKUP_QUEUE_RESTORE_VM", "-starts-badly"),
            ("ADE_BACKUP_QUEUE_REDEPLOY_VM", "has space"),
        ] {
            assert_eq!(invalid_var(with(&[(var, bad)])), var, "{var}={bad}");
        }
    }

    #[test]
    fn sas_tokens_are_never_echoed_in_errors() {
        let err = with(&[(
            "ADE_BACKUP_STATE",
            "https://acct.blob.core.windows.net/state?sig=supersecret",
        )])
        .expect_err("refused");
        assert!(!err.to_string().contains("supersecret"), "{err}");
    }

    #[test]
    fn workflow_settings_parse_and_name_the_variable() {
        let s = with(&[
            ("ADE_BACKUP_RBAC_ROLE", "key-vault-administrator"),
            ("ADE_BACKUP_POLL_INTERVAL_MS", "50"),
            ("ADE_BACKUP_RESTORE_ALLOWLIST", r#"{"entries":[{"subscription":"00000000-0000-0000-0000-000000000001","resourceGroups":["*"]}]}"#),
        ])
        .expect("valid");
        assert_eq!(s.workflow.rbac_role, RbacRoleChoice::KeyVaultAdministrator);
        assert_eq!(
            s.workflow.poll_interval,
            std::time::Duration::from_millis(50)
        );
        assert_eq!(s.workflow.restore_allowlist.entries.len(), 1);
        assert_eq!(s.workflow.first_backup_retention_days, 30);
        for (var, val) in [
            ("ADE_BACKUP_RBAC_ROLE", "owner"),
            ("ADE_BACKUP_FIRST_BACKUP_RETENTION_DAYS", "0"),
            ("ADE_BACKUP_PROTECTION_RULES", "{not json"),
            ("ADE_BACKUP_RESTORE_ALLOWLIST", r#"{"entries": "all"}"#),
            (
                "ADE_BACKUP_RESTORE_ALLOWLIST",
                r#"{"entries":[{"subscription":"00000000-0000-0000-0000-000000000001","resourceGroups":["*"],"sourceResourceGroups":["rg-*-x"]}]}"#,
            ),
            ("ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE", "yes"),
            ("ADE_BACKUP_PROTECTION_RULES", "@/nonexistent/rules.json"),
        ] {
            match with(&[(var, val)]) {
                Err(SettingsError::Invalid { var: v, .. }) => assert_eq!(v, var),
                other => panic!("{var}={val}: {other:?}"),
            }
        }
    }
}
