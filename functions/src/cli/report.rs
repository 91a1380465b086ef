//! `ade-backup report`: the fleet report from a state store (a local directory needs no Azure).
//! `-o html|json|csv|tsv|table`; `--out FILE` writes the file and prints its path.

use super::state;
use crate::report::{self, ReportFormat};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// State location (`fs:DIR` or a blob container URL); default: ADE_BACKUP_STATE, else
    /// fs:./.ade-backup/state (the local stack's).
    #[arg(long, env = "ADE_BACKUP_STATE")]
    pub state: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
    /// Write the report to this file (and print its path) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The report's clock (RFC 3339; default: now): ages and days left are counted from it.
    #[arg(long, value_parser = parse_time)]
    pub now: Option<DateTime<Utc>>,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2027-01-31T12:00:00Z"))
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Open(#[from] state::OpenStateError),
    #[error("reading the state: {0}")]
    State(#[from] ade_backup_shared::state::StateError),
    #[error("encoding the report: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the command: the report on stdout, or in `--out` with its path on stdout.
pub async fn run(args: ReportArgs) -> Result<(), ReportError> {
    let store = state::open(args.state.as_deref())?;
    let now = args.now.unwrap_or_else(Utc::now);
    let r = report::from_store(store.as_ref(), now).await?;
    let text = report::render(&r, args.output)?;
    match args.out {
        Some(path) => {
            write_file(&path, &text)?;
            println!("{}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Writes `text` to `path` (its folder created when missing).
pub fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)
}

/// `ade-backup local`'s last step: the HTML report of the run's state into `path`.
pub async fn write_html(state_root: &Path, path: &Path) -> Result<(), ReportError> {
    let store = state::open(Some(&format!("fs:{}", state_root.display())))?;
    let r = report::from_store(store.as_ref(), Utc::now()).await?;
    write_file(path, &report::html::render(&r))
}
