//! Reads what the report is built from out of the state store: VM records (`vms/`), restore
//! tickets (`restores/`), sweep runs (`runs/sweep/`), dead letters (`deadletters/`) and the ARM
//! facts the last sweep kept (`reports/facts.json`). A document that cannot be read is named in
//! the inputs' warnings and left out; it never stops the report.

use super::facts::{FleetFacts, FACTS_KEY};
use crate::records::{RestoreOperation, VmRecord, SWEEP_LATEST_KEY};
use crate::workflows::sweep::{SweepLatest, SweepSummary};
use ade_backup_shared::state::{json, StateError, StateStore};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A dead-letter record (`deadletters/{queue}/{messageId}.json`), the fields the report shows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeadLetterDoc {
    pub queue: String,
    pub message_id: String,
    pub reason: String,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct ReportInputs {
    pub vms: Vec<VmRecord>,
    pub restores: Vec<RestoreOperation>,
    /// History runs and the last run, each once, oldest first.
    pub sweeps: Vec<SweepSummary>,
    pub dead_letters: Vec<DeadLetterDoc>,
    pub facts: FleetFacts,
    /// Each VM's latest restore drill (`drill-vms/`).
    pub drills: Vec<crate::records::DrillVmIndex>,
    pub warnings: Vec<String>,
}

/// Every document under `prefix` that reads as `T` (others become warnings).
async fn all<T: DeserializeOwned>(
    store: &dyn StateStore,
    prefix: &str,
    skip: impl Fn(&str) -> bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<T>, StateError> {
    let mut out = Vec::new();
    for key in store.list(prefix).await? {
        if skip(&key) || !key.ends_with(".json") {
            continue;
        }
        match json::get::<T>(store, &key).await {
            Ok(Some((doc, _))) => out.push(doc),
            Ok(None) => {}
            Err(StateError::Corrupt { key, source }) => {
                warnings.push(format!("{key} left out: {source}"))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Reads the inputs (state unavailable is an error; a corrupt document is a warning).
pub async fn load(store: &dyn StateStore) -> Result<ReportInputs, StateError> {
    let mut warnings = Vec::new();
    let vms = all::<VmRecord>(store, "vms/", |_| false, &mut warnings).await?;
    let restores = all::<RestoreOperation>(store, "restores/", |_| false, &mut warnings).await?;
    let mut sweeps = all::<SweepSummary>(
        store,
        "runs/sweep/",
        |k| k == SWEEP_LATEST_KEY,
        &mut warnings,
    )
    .await?;
    let latest = match json::get::<SweepLatest>(store, SWEEP_LATEST_KEY).await {
        Ok(l) => l.and_then(|(l, _)| l.last),
        Err(StateError::Corrupt { key, source }) => {
            warnings.push(format!("{key} left out: {source}"));
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(last) = latest {
        if !sweeps.iter().any(|s| s.run_id == last.run_id) {
            sweeps.push(last);
        }
    }
    sweeps.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then(a.run_id.cmp(&b.run_id))
    });
    let dead_letters =
        all::<DeadLetterDoc>(store, "deadletters/", |_| false, &mut warnings).await?;
    let facts = match json::get::<FleetFacts>(store, FACTS_KEY).await {
        Ok(f) => f.map(|(f, _)| f).unwrap_or_default(),
        Err(StateError::Corrupt { key, source }) => {
            warnings.push(format!("{key} left out: {source}"));
            FleetFacts::default()
        }
        Err(e) => return Err(e),
    };
    let drills = all(
        store,
        crate::records::DRILL_VMS_PREFIX,
        |_| false,
        &mut warnings,
    )
    .await?;
    Ok(ReportInputs {
        drills,
        vms,
        restores,
        sweeps,
        dead_letters,
        facts,
        warnings,
    })
}
