//! `redrives/{queue}/{messageId}.json`: what the dead-letter redrive did with one message (see
//! `crate::workflows::redrive`). Written *before* each attempt, so an attempt that a crash cuts
//! short still counts against the cap: a message that kills the process cannot loop forever.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

text_enum! {
    /// How the last redrive attempt ended.
    pub enum RedriveOutcome {
        /// Started and not (yet) finished: the process may have died during it.
        Running = "running",
        /// The function completed: the dead letter was deleted.
        Completed = "completed",
        /// The function failed transiently again: the dead letter stays for the next attempt.
        Failed = "failed",
        /// The function judged the message poison: it stays dead-lettered for a human.
        Poison = "poison",
    }
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveRecord {
    pub queue: String,
    pub message_id: String,
    pub function: String,
    pub attempts: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    pub last_outcome: RedriveOutcome,
    /// The last failure, redacted (as every outcome text is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
