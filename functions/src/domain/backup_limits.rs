//! Azure Backup's daily limit on on-demand backups, kept from our side: the backup service
//! refuses more than about three on-demand backups of an item a day with
//! `CloudDosTimeboudLimitReached` ("We recommend not having more than 3 backups a day. Please
//! retry the operation tomorrow.", `isRetryable: false`; azure-cli 32441, terraform-provider-azurerm
//! PR 12617). ade-backup counts its own backup-now calls per item and never asks for a fourth in
//! 24 h; when Azure refuses anyway (someone else took backups), the step waits a day. Pure.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// On-demand backups of one item ade-backup asks for in a rolling 24 h.
pub const ON_DEMAND_BACKUPS_PER_DAY: usize = 3;

/// The rolling window of the limit.
pub fn window() -> Duration {
    Duration::hours(24)
}

/// The times in `taken` still inside the window at `now` (older ones are forgotten).
pub fn recent(taken: &[DateTime<Utc>], now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    taken
        .iter()
        .copied()
        .filter(|t| now - *t < window())
        .collect()
}

/// Margin after a slot frees: our clock and Azure Backup's count need not agree to the second.
pub fn slack() -> Duration {
    Duration::minutes(5)
}

/// When the next on-demand backup may be asked for: `None` now, else when the oldest backup of
/// the window leaves it (plus [`slack`]).
pub fn next_slot(taken: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let recent = recent(taken, now);
    if recent.len() < ON_DEMAND_BACKUPS_PER_DAY {
        return None;
    }
    recent
        .iter()
        .min()
        .map(|oldest| *oldest + window() + slack())
}

/// When to try again after Azure itself refused with its daily limit: a day later ("retry the
/// operation tomorrow"), or when our own window frees a slot if that is later.
pub fn after_azure_refusal(taken: &[DateTime<Utc>], now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now + window();
    next_slot(taken, now).map_or(tomorrow, |t| t.max(tomorrow))
}

/// Why a backup waits (typed: stored on the operation and the VM record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeferReason {
    /// ade-backup already asked for [`ON_DEMAND_BACKUPS_PER_DAY`] on-demand backups in 24 h.
    DailyLimitOwn,
    /// Azure Backup refused with `CloudDosTimeboudLimitReached`.
    DailyLimitAzure,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DailyLimitOwn => "daily-limit-own",
            Self::DailyLimitAzure => "daily-limit-azure",
        }
    }
}

/// A step that waits for a window, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deferral {
    pub reason: DeferReason,
    pub until: DateTime<Utc>,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_a_day_then_wait_for_the_oldest_to_leave_the_window() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let h = Duration::hours;
        let taken = vec![t0 - h(30), t0 - h(10), t0 - h(5)];
        assert_eq!(next_slot(&taken, t0), None, "the 30 h old one is forgotten");
        let taken = vec![t0 - h(10), t0 - h(5), t0 - h(1)];
        assert_eq!(next_slot(&taken, t0), Some(t0 + h(14) + slack()));
        assert_eq!(recent(&taken, t0 + h(15)).len(), 2);
        assert_eq!(after_azure_refusal(&[], t0), t0 + h(24));
        assert_eq!(after_azure_refusal(&taken, t0), t0 + h(24));
        let full = vec![t0, t0, t0];
        assert_eq!(after_azure_refusal(&full, t0), t0 + h(24) + slack());
    }

    #[test]
    fn reasons_are_stored_as_kebab_case() {
        let d = Deferral {
            reason: DeferReason::DailyLimitAzure,
            until: Utc::now(),
            message: "m".into(),
        };
        let v = serde_json::to_value(&d).expect("json");
        assert_eq!(v["reason"], "daily-limit-azure");
        assert_eq!(DeferReason::DailyLimitOwn.as_str(), "daily-limit-own");
    }
}
