//! Step bookkeeping shared by every multi-step operation (protection, restore, sweep repairs).
//!
//! At-least-once delivery means two invocations may work on the same operation at once, and any
//! invocation may crash between two steps. Each step is therefore *claimed* (a lease, written
//! with an ETag-conditional update) before its side effect, and marked *done* after it:
//! - a duplicate delivery finds the step done (skip) or claimed by a live lease (back off);
//! - a crashed invocation's lease expires and the redelivered message redoes the step, whose
//!   Azure call is idempotent or checked first (e.g. an existing backup job is adopted).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum StepState {
    Claimed {
        by: String,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    Done {
        at: DateTime<Utc>,
    },
    Failed {
        at: DateTime<Utc>,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub state: Option<StepState>,
    pub attempts: u32,
    /// Step-specific facts (Azure ids, poll URLs, counts).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Steps(pub BTreeMap<String, StepRecord>);

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This invocation owns the step now: do the side effect, then `finish`.
    Acquired,
    /// Someone finished it already: move on.
    AlreadyDone,
    /// Another invocation holds a live lease: let it work.
    HeldByOther { until: DateTime<Utc> },
}

impl Steps {
    pub fn get(&self, step: &str) -> Option<&StepRecord> {
        self.0.get(step)
    }

    pub fn is_done(&self, step: &str) -> bool {
        matches!(
            self.0.get(step).and_then(|r| r.state.as_ref()),
            Some(StepState::Done { .. })
        )
    }

    /// Tries to claim `step` for `by` with a lease. Mutates only when `Acquired`.
    pub fn claim(&mut self, step: &str, by: &str, now: DateTime<Utc>, lease: Duration) -> Claim {
        let rec = self.0.entry(step.to_string()).or_default();
        match &rec.state {
            Some(StepState::Done { .. }) => return Claim::AlreadyDone,
            Some(StepState::Claimed {
                by: holder, until, ..
            }) if *until > now && holder != by => return Claim::HeldByOther { until: *until },
            _ => {}
        }
        rec.attempts += 1;
        rec.state = Some(StepState::Claimed {
            by: by.to_string(),
            at: now,
            until: now + lease,
        });
        Claim::Acquired
    }

    pub fn finish(&mut self, step: &str, now: DateTime<Utc>, detail: Option<Value>) {
        let rec = self.0.entry(step.to_string()).or_default();
        rec.state = Some(StepState::Done { at: now });
        if let Some(d) = detail {
            rec.detail = d;
        }
    }

    pub fn fail(&mut self, step: &str, now: DateTime<Utc>, code: &str, message: &str) {
        let rec = self.0.entry(step.to_string()).or_default();
        rec.state = Some(StepState::Failed {
            at: now,
            code: code.to_string(),
            message: message.to_string(),
        });
    }

    /// Releases a claim without finishing (the step will be retried).
    pub fn release(&mut self, step: &str) {
        if let Some(rec) = self.0.get_mut(step) {
            if matches!(rec.state, Some(StepState::Claimed { .. })) {
                rec.state = None;
            }
        }
    }

    /// Forgets a step so it runs again (e.g. grant again after a permissions failure).
    pub fn reset(&mut self, step: &str) {
        if let Some(rec) = self.0.get_mut(step) {
            rec.state = None;
        }
    }

    pub fn set_detail(&mut self, step: &str, detail: Value) {
        self.0.entry(step.to_string()).or_default().detail = detail;
    }

    pub fn detail(&self, step: &str) -> Option<&Value> {
        self.0.get(step).map(|r| &r.detail).filter(|d| !d.is_null())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_exclude_live_leases_and_expire() {
        let t0 = Utc::now();
        let lease = Duration::seconds(60);
        let mut s = Steps::default();
        assert_eq!(s.claim("grant", "a", t0, lease), Claim::Acquired);
        assert!(matches!(
            s.claim("grant", "b", t0 + Duration::seconds(1), lease),
            Claim::HeldByOther { .. }
        ));
        // the same holder may re-enter (redelivery of its own message)
        assert_eq!(
            s.claim("grant", "a", t0 + Duration::seconds(2), lease),
            Claim::Acquired
        );
        // a crashed holder's lease expires
        assert_eq!(
            s.claim("grant", "b", t0 + Duration::seconds(120), lease),
            Claim::Acquired
        );
        assert_eq!(s.get("grant").expect("rec").attempts, 3);
        s.finish("grant", t0, None);
        assert_eq!(s.claim("grant", "c", t0, lease), Claim::AlreadyDone);
        s.reset("grant");
        assert_eq!(s.claim("grant", "c", t0, lease), Claim::Acquired);
    }
}
