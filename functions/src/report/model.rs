//! The fleet report's data: what every renderer (HTML, JSON, CSV, table) draws. Built from state
//! documents by [`super::build`]; every number here is counted from those documents.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The date Azure Disk Encryption retires: after it ADE disks no longer unlock on reboot and ADE
/// VMs can no longer be backed up (Microsoft Learn, "Azure Disk Encryption retirement").
pub fn ade_retirement_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2028, 9, 15).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetReport {
    pub generated_at: DateTime<Utc>,
    /// When the ARM facts (region, size, disks, RPO, retention) were gathered; `None`: the state
    /// holds none yet (no sweep wrote `reports/facts.json`).
    pub facts_gathered_at: Option<DateTime<Utc>>,
    pub coverage: Coverage,
    pub sweeps: Vec<SweepPoint>,
    pub needs_human: Vec<NeedsHumanRow>,
    pub freshness: Vec<FreshnessRow>,
    pub restores: Restores,
    pub dead_letters: Vec<DeadLetterRow>,
    pub retirement: Retirement,
    /// Restore drills: latest result per VM, never drilled, last failed.
    #[serde(default)]
    pub drills: super::drills::Drills,
    /// Documents left out and facts that could not be read.
    pub warnings: Vec<String>,
}

/// ADE VMs by outcome, overall and per subscription and region.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// VM records of ADE VMs (records of VMs found not encrypted are left out).
    pub ade_vms: u64,
    pub by_outcome: BTreeMap<String, u64>,
    pub groups: Vec<CoverageGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoverageGroup {
    pub subscription: String,
    /// `unknown` when no facts name the VM's region.
    pub region: String,
    pub by_outcome: BTreeMap<String, u64>,
}

/// One sweep run (history `runs/sweep/{runId}.json`, plus the last run in `latest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPoint {
    pub run_id: String,
    pub finished_at: DateTime<Utc>,
    pub status: String,
    pub ade_vms: u64,
    pub protected_items: u64,
    /// VMs with drift, summed over drift kinds.
    pub drift_found: u64,
    /// VMs the run started protection or repair for.
    pub repair_started: u64,
    pub needs_human: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedsHumanRow {
    pub vm_id: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub fix: String,
    /// The Microsoft Learn page explaining the fix.
    pub doc: DocLink,
}

/// A documentation page (from [`super::links`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocLink {
    pub title: String,
    pub url: String,
}

impl From<super::links::Doc> for DocLink {
    fn from(d: super::links::Doc) -> Self {
        Self {
            title: d.title.into(),
            url: d.url.into(),
        }
    }
}

/// A protected VM's latest recovery point against its policy's RPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freshness {
    Fresh,
    Stale,
    NoRecoveryPoint,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Stale => "stale",
            Self::NoRecoveryPoint => "no-recovery-point",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreshnessRow {
    pub vm_id: String,
    /// The backup policy's resource id (as Azure reported it at protection).
    pub policy: String,
    pub rpo_hours: i64,
    /// `policy` (read from the policy by the last sweep) or `default` (24 h: no facts).
    pub rpo_source: String,
    pub last_recovery_point: Option<DateTime<Utc>>,
    /// Hours since the last recovery point (0 for a point newer than the report's clock).
    pub age_hours: Option<i64>,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restores {
    pub tickets: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Time spent in each status before the next, over all tickets (ordered by status order).
    pub phases: Vec<PhaseDuration>,
    pub failures: Vec<RestoreFailureRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseDuration {
    pub phase: String,
    pub samples: u64,
    pub mean_seconds: f64,
    pub max_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFailureRow {
    pub ticket: String,
    pub status: String,
    pub step: String,
    pub reason: String,
    pub message: String,
    pub next_action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRow {
    pub queue: String,
    pub message_id: String,
    pub reason: String,
    pub description: String,
}

/// What still depends on ADE, and what can move to encryption at host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retirement {
    pub retirement_date: NaiveDate,
    /// Whole days from the report's clock to the retirement date (negative once past).
    pub days_left: i64,
    pub ade_vms: u64,
    /// Disks of the ADE VMs the facts describe.
    pub ade_disks: u64,
    /// ADE VMs the facts do not describe (their disks are not counted).
    pub vms_without_facts: u64,
    /// Key Vaults holding ADE keys or secrets (BEK and KEK vaults), by resource id.
    pub key_vaults: Vec<String>,
    /// ADE VMs with at least one recovery point (those points need ADE to restore).
    pub vms_with_recovery_points: u64,
    pub encryption_at_host: Vec<EncryptionAtHostRow>,
    /// Every ADE VM's recovery points as the last sweep listed them.
    pub recovery_points: Vec<RecoveryPointsRow>,
    /// Every recovery point whose retention runs past the retirement date, per VM.
    pub retained_past_retirement: Vec<RetentionRow>,
    /// The page on migrating off ADE.
    pub doc: DocLink,
}

/// One VM's recovery points (from the sweep's list; the latest point only when none was listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryPointsRow {
    pub vm_id: String,
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    /// When the VM's last recovery point expires.
    pub last_expiry: Option<DateTime<Utc>>,
    /// How many points' expiry came from each source (`recovery-point`, `policy-retention`,
    /// `unknown`).
    pub expiry_sources: BTreeMap<String, u64>,
    /// `list` (the sweep listed every point) or `record` (only the VM record's latest point).
    pub source: String,
    /// The list had more pages than the sweep reads per VM.
    pub truncated: bool,
}

/// Whether a VM's size supports encryption at host in its region, as the Resource SKUs API says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostEncryption {
    Supported,
    NotSupported,
    Unknown,
}

impl HostEncryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Supported => "supported",
            Self::NotSupported => "not-supported",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionAtHostRow {
    pub vm_id: String,
    pub region: String,
    pub size: String,
    pub encryption_at_host: HostEncryption,
    /// Can the VM move now, and if not, the first blocker.
    pub readiness: super::readiness::MoveReadiness,
    pub fix: String,
    pub doc: DocLink,
}

/// A recovery point retained past the retirement date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRow {
    pub vm_id: String,
    /// The recovery point's name (its id).
    pub recovery_point: String,
    pub recovery_point_time: DateTime<Utc>,
    pub retained_until: DateTime<Utc>,
    /// Azure's `expiryTime` of the point, or computed from the policy's retention.
    pub expiry_source: super::recovery_points::ExpirySource,
}

impl Retirement {
    pub fn eah_count(&self, which: HostEncryption) -> u64 {
        self.encryption_at_host
            .iter()
            .filter(|r| r.encryption_at_host == which)
            .count() as u64
    }
    pub fn readiness_count(&self, which: super::readiness::MoveReadiness) -> u64 {
        self.encryption_at_host
            .iter()
            .filter(|r| r.readiness == which)
            .count() as u64
    }
}
