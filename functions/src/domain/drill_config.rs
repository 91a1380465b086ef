//! Restore drills' configuration and the pure decisions behind them: where a drill restores to
//! (a drill resource group, an isolated subnet and a staging account per subscription, from
//! `ADE_BACKUP_DRILL_TARGETS`, checked against the restore allowlist at start-up), the caps
//! (`ADE_BACKUP_DRILL_MAX_CONCURRENT`, `ADE_BACKUP_DRILL_DAILY_CAP`), the period within which
//! every protected VM is drilled (`ADE_BACKUP_DRILL_PERIOD_DAYS`), which VMs a run picks, and the
//! restore request a drill submits (never built from a message: from the configuration only).

use super::restore_allowlist::RestoreAllowlist;
use super::restore_request::{self, RestoreRequest};
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Where drills of one subscription's VMs restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillTarget {
    /// `/subscriptions/{sub}/resourceGroups/{rg}`: the drill resource group (nothing else ever
    /// is deleted by a drill).
    pub resource_group: String,
    pub subscription: String,
    pub resource_group_name: String,
    /// The isolated subnet (no route to production networks) a drilled VM joins.
    pub subnet_id: ResourceId,
    /// Staging account of the restore job (same subscription and region as the vault).
    pub staging_storage_account_id: ResourceId,
}

impl DrillTarget {
    /// Whether `id` lies inside the drill resource group.
    pub fn contains(&self, id: &ResourceId) -> bool {
        same_guid(id.subscription(), &self.subscription)
            && id
                .resource_group()
                .eq_ignore_ascii_case(&self.resource_group_name)
    }
}

fn same_guid(a: &str, b: &str) -> bool {
    match (uuid::Uuid::parse_str(a), uuid::Uuid::parse_str(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSettings {
    /// Empty: drills are off (the timer does nothing, `ade-backup drill` refuses).
    pub targets: Vec<DrillTarget>,
    /// Every protected VM is drilled at least once per this many days (default 30).
    pub period_days: u32,
    /// At most this many drills run at once (default 2).
    pub max_concurrent: u32,
    /// At most this many drills start per UTC day (default 5).
    pub daily_cap: u32,
    /// Where a failed drill's notification goes (default: the notifications queue).
    pub notify_queue: Option<String>,
}

impl Default for DrillSettings {
    fn default() -> Self {
        Self {
            targets: vec![],
            period_days: 30,
            max_concurrent: 2,
            daily_cap: 5,
            notify_queue: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetsWire {
    targets: Vec<TargetWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetWire {
    resource_group: String,
    subnet_id: String,
    staging_storage_account_id: String,
}

/// A setting that is not as it must be: the variable and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {rule}")]
pub struct DrillSettingError {
    pub var: &'static str,
    pub rule: String,
}

const TARGETS: &str = "ADE_BACKUP_DRILL_TARGETS";

fn bad(var: &'static str, rule: impl Into<String>) -> DrillSettingError {
    DrillSettingError {
        var,
        rule: rule.into(),
    }
}

impl DrillSettings {
    /// Reads the drill settings; every target must be granted by the restore allowlist (one
    /// entry: the drill resource group, the staging account's group and the subnet).
    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        allowlist: &RestoreAllowlist,
    ) -> Result<Self, DrillSettingError> {
        let d = Self::default();
        let number = |var: &'static str, default: u32, max: u32| -> Result<u32, _> {
            match get(var) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| bad(var, format!("must be a whole number from 1 to {max}"))),
            }
        };
        let targets = match get(TARGETS) {
            None => vec![],
            Some(text) => parse_targets(&text, allowlist)?,
        };
        Ok(Self {
            targets,
            period_days: number("ADE_BACKUP_DRILL_PERIOD_DAYS", d.period_days, 366)?,
            max_concurrent: number("ADE_BACKUP_DRILL_MAX_CONCURRENT", d.max_concurrent, 100)?,
            daily_cap: number("ADE_BACKUP_DRILL_DAILY_CAP", d.daily_cap, 1000)?,
            notify_queue: get("ADE_BACKUP_DRILL_NOTIFY_QUEUE"),
        })
    }

    /// The target for VMs of `subscription`.
    pub fn target_for(&self, subscription: &str) -> Option<&DrillTarget> {
        self.targets
            .iter()
            .find(|t| same_guid(&t.subscription, subscription))
    }
}

fn parse_targets(
    text: &str,
    allowlist: &RestoreAllowlist,
) -> Result<Vec<DrillTarget>, DrillSettingError> {
    let wire: TargetsWire = serde_json::from_str(text)
        .map_err(|e| bad(TARGETS, format!("not {{\"targets\": [{{\"resourceGroup\", \"subnetId\", \"stagingStorageAccountId\"}}]}}: {e}")))?;
    let mut out: Vec<DrillTarget> = Vec::new();
    for (i, t) in wire.targets.into_iter().enumerate() {
        let at = |rule: String| bad(TARGETS, format!("targets[{i}]: {rule}"));
        let rg = restore_request::ResourceGroupId::parse("resourceGroup", &t.resource_group)
            .map_err(|r| at(r.rule))?;
        let subnet = ResourceId::parse(&t.subnet_id)
            .ok()
            .filter(|s| s.is_type("Microsoft.Network/virtualNetworks/subnets"))
            .ok_or_else(|| {
                at("subnetId must be a Microsoft.Network/virtualNetworks/subnets id".into())
            })?;
        let staging = ResourceId::parse(&t.staging_storage_account_id)
            .ok()
            .filter(|s| s.is_type("Microsoft.Storage/storageAccounts"))
            .ok_or_else(|| {
                at("stagingStorageAccountId must be a Microsoft.Storage/storageAccounts id".into())
            })?;
        if !same_guid(subnet.subscription(), &rg.subscription)
            || !same_guid(staging.subscription(), &rg.subscription)
        {
            return Err(at("the subnet and the staging account must be in the drill resource group's subscription (a restore never leaves its subscription)".into()));
        }
        if out
            .iter()
            .any(|o| same_guid(&o.subscription, &rg.subscription))
        {
            return Err(at(format!(
                "a second target for subscription {}",
                rg.subscription
            )));
        }
        let target = DrillTarget {
            resource_group: rg.id(),
            subscription: rg.subscription.clone(),
            resource_group_name: rg.name.clone(),
            subnet_id: subnet,
            staging_storage_account_id: staging,
        };
        let probe_vm = format!(
            "{}/providers/Microsoft.Compute/virtualMachines/probe",
            target.resource_group
        );
        let probe = drill_request_json("drill-probe", &probe_vm, "probe-drill", &target);
        let req = restore_request::parse(probe.to_string().as_bytes()).map_err(|r| at(r.rule))?;
        allowlist.check_destination(&req).map_err(|r| {
            at(format!(
                "not granted by ADE_BACKUP_RESTORE_ALLOWLIST: {}",
                r.rule
            ))
        })?;
        out.push(target);
    }
    Ok(out)
}

/// The restore request a drill of `vm` submits: latest recovery point, into the drill resource
/// group and isolated subnet, no `replyTo` (the drill reads the restore document).
pub fn drill_request_json(
    ticket: &str,
    vm: &str,
    target_vm_name: &str,
    target: &DrillTarget,
) -> serde_json::Value {
    json!({
        "version": 1,
        "ticketId": ticket,
        "vmResourceId": vm,
        "recoveryPoint": "latest",
        "targetResourceGroup": target.resource_group,
        "stagingStorageAccountId": target.staging_storage_account_id.to_string(),
        "targetSubnetId": target.subnet_id.to_string(),
        "targetVmName": target_vm_name,
        "requestedBy": "ade-backup restore drill"
    })
}

/// Parses the request a drill submits (the same parser a ticket goes through).
pub fn drill_request(
    ticket: &str,
    vm: &ResourceId,
    target: &DrillTarget,
) -> Result<(RestoreRequest, Vec<u8>), restore_request::Rejection> {
    let body = drill_request_json(ticket, &vm.to_string(), &drill_vm_name(vm), target);
    let bytes = body.to_string().into_bytes();
    restore_request::parse(&bytes).map(|r| (r, bytes))
}

/// 12 hex digits of the SHA-256 of the VM's id (lower case): stable per VM.
pub fn vm_hash(vm: &ResourceId) -> String {
    let digest = Sha256::digest(vm.to_string().to_ascii_lowercase().as_bytes());
    hex::encode(digest)[..12].to_string()
}

/// `drill-{yyyymmdd}-{vm hash}`: one drill per VM per UTC day; also the restore ticket id.
pub fn drill_id(vm: &ResourceId, at: DateTime<Utc>) -> String {
    format!("drill-{}-{}", at.format("%Y%m%d"), vm_hash(vm))
}

/// The drilled VM's name: `dr-{vm hash}` (a valid Windows and Linux name, never the source's).
pub fn drill_vm_name(vm: &ResourceId) -> String {
    format!("dr-{}", vm_hash(vm))
}

/// A protected VM a run may drill.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub vm: ResourceId,
    pub rule: String,
    /// When its last drill started (`None`: never drilled).
    pub last_drill: Option<DateTime<Utc>>,
    /// A drill of it is running, or a real restore of it is in flight.
    pub busy: bool,
}

/// How many more drills may start now.
pub fn room(s: &DrillSettings, running: u32, started_today: u32) -> u32 {
    s.max_concurrent
        .saturating_sub(running)
        .min(s.daily_cap.saturating_sub(started_today))
}

/// The VMs a scheduled run drills: per protection rule, those not drilled within the period,
/// least recently drilled first (never drilled first of all), `ceil(rule size / period)` of them
/// (at least one) so the whole rule is covered within the period of daily runs; then the rules
/// are interleaved so every rule gets its turn, and cut at `room`.
pub fn pick(
    s: &DrillSettings,
    candidates: &[Candidate],
    now: DateTime<Utc>,
    room: u32,
) -> Vec<Candidate> {
    let mut by_rule: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_rule.entry(c.rule.as_str()).or_default().push(c);
    }
    let period = chrono::Duration::days(i64::from(s.period_days));
    let mut queues: Vec<Vec<&Candidate>> = Vec::new();
    for (_, vms) in by_rule {
        let quota = vms.len().div_ceil(s.period_days.max(1) as usize).max(1);
        let mut due: Vec<&Candidate> = vms
            .into_iter()
            .filter(|c| !c.busy && c.last_drill.is_none_or(|t| now - t >= period))
            .collect();
        due.sort_by_key(|c| (c.last_drill, c.vm.to_string().to_ascii_lowercase()));
        due.truncate(quota);
        queues.push(due);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < room as usize && queues.iter().any(|q| i < q.len()) {
        for q in &queues {
            if let Some(c) = q.get(i) {
                if out.len() < room as usize {
                    out.push((*c).clone());
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
