//! The fleet report: what is protected, what drifted, what needs a human, restores, and how ready
//! the fleet is for the retirement of Azure Disk Encryption (15 September 2028).
//!
//! - [`load`] reads the state documents, [`build`] turns them into the [`model::FleetReport`]
//!   (every number counted from the documents), [`html`], [`text`] and JSON render it.
//! - [`facts`]: the ARM facts the documents lack (region, size, disks, encryption-at-host support,
//!   policy RPO and retention), gathered by the sweep and kept in `reports/facts.json`.
//! - [`publish`]: what the `PolicySweep` function (and `ade-backup sweep`) calls after a run
//!   (outside the run's own cost accounting): gather the facts, build the report
//!   and write `reports/latest.html`, `.json` and `.csv` next to the run's summary.

pub mod build;
pub mod drills;
pub mod facts;
pub mod html;
pub mod links;
pub mod load;
pub mod model;
pub mod readiness;
pub mod recovery_points;
pub mod retirement;
pub mod svg;
pub mod text;

pub use model::FleetReport;

use crate::context::Context;
use ade_backup_shared::state::{StateError, StateStore};
use chrono::{DateTime, Utc};

pub const LATEST_HTML_KEY: &str = "reports/latest.html";
pub const LATEST_JSON_KEY: &str = "reports/latest.json";
pub const LATEST_CSV_KEY: &str = "reports/latest.csv";

/// How the report is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
    Csv,
    Tsv,
    Table,
}

/// The report rendered in `format`.
pub fn render(report: &FleetReport, format: ReportFormat) -> Result<String, serde_json::Error> {
    Ok(match format {
        ReportFormat::Html => html::render(report),
        ReportFormat::Json => serde_json::to_string_pretty(report)? + "\n",
        ReportFormat::Csv => text::csv(report),
        ReportFormat::Tsv => text::tsv(report),
        ReportFormat::Table => text::table(report),
    })
}

/// Builds the report from a state store as of `now`.
pub async fn from_store(
    store: &dyn StateStore,
    now: DateTime<Utc>,
) -> Result<FleetReport, StateError> {
    let inputs = load::load(store).await?;
    Ok(build::build(&inputs, now))
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("the report could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Writes `value` at `key` whatever is there (the report is derived data: last writer wins).
async fn put(store: &dyn StateStore, key: &str, body: &[u8]) -> Result<(), StateError> {
    for _ in 0..4 {
        let r = match store.get(key).await? {
            None => store.create(key, body).await.map(|_| ()),
            Some((_, etag)) => store.replace(key, body, &etag).await.map(|_| ()),
        };
        match r {
            Err(StateError::Conflict { .. }) => continue,
            other => return other,
        }
    }
    Ok(())
}

/// After a sweep: gather the ARM facts, build the report, write facts and report to the state.
/// The sweep treats a failure as a warning (the report is derived data; the next run rewrites it).
pub async fn publish(ctx: &Context) -> Result<FleetReport, PublishError> {
    let store = ctx.state.as_ref();
    let mut inputs = load::load(store).await?;
    // The last sweep's facts: a VM's recovery points are reused from them while unchanged.
    let previous = std::mem::take(&mut inputs.facts);
    inputs.facts = facts::gather(ctx, &inputs.vms, &previous).await;
    put(
        store,
        facts::FACTS_KEY,
        &serde_json::to_vec_pretty(&inputs.facts)?,
    )
    .await?;
    let report = build::build(&inputs, ctx.clock.now());
    put(store, LATEST_HTML_KEY, html::render(&report).as_bytes()).await?;
    put(store, LATEST_JSON_KEY, &serde_json::to_vec_pretty(&report)?).await?;
    put(store, LATEST_CSV_KEY, text::csv(&report).as_bytes()).await?;
    Ok(report)
}

/// The sweep's one call at the end of a run: [`publish`], a failure logged as a warning.
pub async fn after_sweep(ctx: &Context, run_id: &str) {
    match publish(ctx).await {
        Ok(r) => tracing::info!(
            run_id,
            ade_vms = r.coverage.ade_vms,
            needs_human = r.needs_human.len(),
            "fleet report written to {LATEST_HTML_KEY}"
        ),
        Err(e) => {
            tracing::warn!(run_id, error = %e, "the fleet report could not be written; the next sweep tries again")
        }
    }
}
