//! Opening the state store for an operator command: a local directory needs no Azure, so no
//! credential is built (and none prints anything); a blob container gets the configured identity.

use crate::settings::{parse_state_location, StateLocation};
use crate::wiring;
use ade_backup_shared::state::{FsStateStore, StateStore};
use std::sync::Arc;

/// The default state: the local stack's.
pub const DEFAULT_STATE: &str = "fs:./.ade-backup/state";

#[derive(Debug, thiserror::Error)]
pub enum OpenStateError {
    #[error("--state: {0}")]
    Location(#[from] crate::settings::SettingsError),
    #[error("state directory {dir}: {message}")]
    Fs { dir: String, message: String },
    #[error(transparent)]
    Wiring(#[from] wiring::WiringError),
}

pub fn open(state: Option<&str>) -> Result<Arc<dyn StateStore>, OpenStateError> {
    let location = parse_state_location(state.unwrap_or(DEFAULT_STATE))?;
    match &location {
        StateLocation::Fs(dir) => {
            if !dir.is_dir() {
                return Err(OpenStateError::Fs {
                    dir: dir.display().to_string(),
                    message: "no such directory (run `ade-backup local` first, or pass --state)"
                        .into(),
                });
            }
            let store = FsStateStore::new(dir.clone()).map_err(|e| OpenStateError::Fs {
                dir: dir.display().to_string(),
                message: e.to_string(),
            })?;
            Ok(Arc::new(store))
        }
        StateLocation::Blob { .. } => {
            let identity = wiring::identity_from_env(|k| std::env::var(k).ok())?;
            Ok(wiring::state_store(&location, &identity)?)
        }
    }
}
