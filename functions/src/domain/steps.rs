//! Step bookkeeping shared by every multi-step operation (protection, restore).
//!
//! At-least-once delivery means two invocations may work on the same operation at once, and any
//! invocation may crash between two steps. Each step is therefore *claimed* (a lease, written
//! with an ETag-conditional update) before its side effect, and marked *done* after it:
//! - a duplicate delivery finds the step done (skip) or claimed by a live lease (back off);
//! - a crashed invocation's lease expires and the redelivered message redoes the step, whose
//!   Azure call is idempotent or checked first (e.g. an existing backup job is adopted).
//!
//! Steps are typed: a workflow names its steps with an enum ([`StepName`]) and keeps per-step
//! facts in a typed detail struct ([`StepDetail`]). On disk they are what they always were: a map
//! from the step's kebab-case name to `{state, attempts, detail}`; names this version does not know
//! (written by an older one) are kept as they are.

use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// A workflow's step enum: each variant has the kebab-case name stored in documents.
pub trait StepName: Copy + Eq + Debug + Send + Sync + 'static {
    fn as_str(self) -> &'static str;
}

/// A workflow's per-step facts (Azure ids, poll state). `Default` is "nothing recorded", which is
/// not written (`detail` absent, as before typed details).
pub trait StepDetail:
    Clone + Default + PartialEq + Debug + Serialize + DeserializeOwned + Send + Sync
{
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

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
#[serde(bound(serialize = "D: StepDetail", deserialize = "D: StepDetail"))]
pub struct StepRecord<D> {
    pub state: Option<StepState>,
    pub attempts: u32,
    /// Step-specific facts (Azure ids, poll URLs, counts).
    #[serde(default, skip_serializing_if = "StepDetail::is_empty")]
    pub detail: D,
}

/// The steps of one operation, keyed by step name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "D: StepDetail", deserialize = "D: StepDetail"))]
pub struct Steps<S, D> {
    #[serde(flatten)]
    records: BTreeMap<String, StepRecord<D>>,
    #[serde(skip)]
    names: std::marker::PhantomData<S>,
}

impl<S, D> Default for Steps<S, D> {
    fn default() -> Self {
        Self {
            records: BTreeMap::new(),
            names: std::marker::PhantomData,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This invocation owns the step now: do the side effect, then `finish`.
    Acquired,
    /// Someone finished it already: move on.
    AlreadyDone,
    /// Another invocation (`by`) holds a live lease: let it work.
    HeldByOther { by: String, until: DateTime<Utc> },
}

impl<S: StepName, D: StepDetail> Steps<S, D> {
    pub fn get(&self, step: S) -> Option<&StepRecord<D>> {
        self.records.get(step.as_str())
    }

    fn entry(&mut self, step: S) -> &mut StepRecord<D> {
        self.records.entry(step.as_str().to_string()).or_default()
    }

    pub fn is_done(&self, step: S) -> bool {
        matches!(self.state(step), Some(StepState::Done { .. }))
    }

    pub fn state(&self, step: S) -> Option<&StepState> {
        self.get(step).and_then(|r| r.state.as_ref())
    }

    /// How many times the step was claimed.
    pub fn attempts(&self, step: S) -> u32 {
        self.get(step).map_or(0, |r| r.attempts)
    }

    /// When the live (or crashed) claim on the step was taken.
    pub fn claimed_at(&self, step: S) -> Option<DateTime<Utc>> {
        match self.state(step) {
            Some(StepState::Claimed { at, .. }) => Some(*at),
            _ => None,
        }
    }

    /// Tries to claim `step` for `by` with a lease. Mutates only when `Acquired`.
    pub fn claim(&mut self, step: S, by: &str, now: DateTime<Utc>, lease: Duration) -> Claim {
        let rec = self.entry(step);
        match &rec.state {
            Some(StepState::Done { .. }) => return Claim::AlreadyDone,
            Some(StepState::Claimed {
                by: holder, until, ..
            }) if *until > now && holder != by => {
                return Claim::HeldByOther {
                    by: holder.clone(),
                    until: *until,
                }
            }
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

    /// Extends `by`'s live claim on `step` to `now + lease` (when it first claimed and how many
    /// attempts there were stay as they are). `false`: `by` does not hold the step any more.
    pub fn renew(&mut self, step: S, by: &str, now: DateTime<Utc>, lease: Duration) -> bool {
        match &mut self.entry(step).state {
            Some(StepState::Claimed {
                by: holder, until, ..
            }) if holder == by && *until > now => {
                *until = now + lease;
                true
            }
            _ => false,
        }
    }

    /// Marks the step done, replacing its detail when one is given.
    pub fn finish(&mut self, step: S, now: DateTime<Utc>, detail: Option<D>) {
        let rec = self.entry(step);
        rec.state = Some(StepState::Done { at: now });
        if let Some(d) = detail {
            rec.detail = d;
        }
    }

    pub fn fail(&mut self, step: S, now: DateTime<Utc>, code: &str, message: &str) {
        self.entry(step).state = Some(StepState::Failed {
            at: now,
            code: code.to_string(),
            message: message.to_string(),
        });
    }

    /// Releases a claim without finishing (the step will be retried).
    pub fn release(&mut self, step: S) {
        if let Some(rec) = self.records.get_mut(step.as_str()) {
            if matches!(rec.state, Some(StepState::Claimed { .. })) {
                rec.state = None;
            }
        }
    }

    /// Forgets a step so it runs again (e.g. grant again after a permissions failure).
    pub fn reset(&mut self, step: S) {
        if let Some(rec) = self.records.get_mut(step.as_str()) {
            rec.state = None;
        }
    }

    /// The step's recorded facts (the default when none were recorded).
    pub fn detail(&self, step: S) -> D {
        self.get(step).map(|r| r.detail.clone()).unwrap_or_default()
    }

    /// Changes the step's recorded facts in place.
    pub fn detail_mut(&mut self, step: S) -> &mut D {
        &mut self.entry(step).detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        Grant,
    }
    impl StepName for T {
        fn as_str(self) -> &'static str {
            "grant"
        }
    }
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Note {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    }
    impl StepDetail for Note {}

    #[test]
    fn claims_exclude_live_leases_and_expire() {
        let t0 = Utc::now();
        let lease = Duration::seconds(60);
        let mut s = Steps::<T, Note>::default();
        assert_eq!(s.claim(T::Grant, "a", t0, lease), Claim::Acquired);
        assert!(matches!(
            s.claim(T::Grant, "b", t0 + Duration::seconds(1), lease),
            Claim::HeldByOther { .. }
        ));
        // the same holder may re-enter (redelivery of its own message)
        assert_eq!(
            s.claim(T::Grant, "a", t0 + Duration::seconds(2), lease),
            Claim::Acquired
        );
        // a crashed holder's lease expires
        assert_eq!(
            s.claim(T::Grant, "b", t0 + Duration::seconds(120), lease),
            Claim::Acquired
        );
        assert_eq!(s.attempts(T::Grant), 3);
        s.finish(T::Grant, t0, None);
        assert_eq!(s.claim(T::Grant, "c", t0, lease), Claim::AlreadyDone);
        s.reset(T::Grant);
        assert_eq!(s.claim(T::Grant, "c", t0, lease), Claim::Acquired);
        // the holder renews its live claim; attempts stay; nobody else can, nor a lapsed holder
        assert!(s.renew(T::Grant, "c", t0 + Duration::seconds(30), lease));
        assert!(matches!(
            s.claim(T::Grant, "d", t0 + Duration::seconds(80), lease),
            Claim::HeldByOther { .. }
        ));
        assert!(!s.renew(T::Grant, "d", t0 + Duration::seconds(31), lease));
        assert!(!s.renew(T::Grant, "c", t0 + Duration::seconds(200), lease));
        assert_eq!(s.attempts(T::Grant), 4);
    }

    #[test]
    fn empty_details_are_not_written_and_unknown_steps_survive() {
        let doc = serde_json::json!({
            "grant": {"state": {"status": "done", "at": "2024-05-01T10:00:00Z"}, "attempts": 1},
            "protect-poll": {"state": null, "attempts": 0, "detail": {"note": "kept"}}
        });
        let s: Steps<T, Note> = serde_json::from_value(doc.clone()).expect("loads");
        assert!(s.is_done(T::Grant));
        assert_eq!(serde_json::to_value(&s).expect("json"), doc);
    }
}
