//! Lease types and the lease rules shared by the stores that keep lease records themselves
//! (`FsStateStore` in a `~lease` file beside the document, in-memory test stores in a map).
//! `BlobStateStore` delegates to the Blob service, whose rules these mirror:
//! - acquire: allowed when there is no live lease, or the live lease has the proposed id;
//! - renew / release: allowed for the id of the current lease record, live or lapsed, as long as
//!   nobody has leased the document since (a new acquire replaces the record);
//! - write under lease: only while the lease is live and the id matches; plain writes fail while
//!   any lease is live.

use super::StateError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A lease id (a GUID on Blob storage).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(pub String);

impl LeaseId {
    /// A fresh random lease id.
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

/// What the document's lease looked like just before an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LeaseState {
    /// Never leased, or released by its holder.
    Available,
    /// Held (by the caller itself, when it re-acquires with its own id).
    Leased,
    /// The previous holder's lease ran out without a release: it crashed or overran.
    Expired,
    /// Someone broke the previous lease.
    Broken,
}

/// A successful acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAcquired {
    pub lease: LeaseId,
    pub previous: LeaseState,
}

/// One document's lease, as the self-managing stores persist it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub id: String,
    /// Unix milliseconds.
    pub expires_at_ms: i64,
    pub duration_ms: i64,
    pub released: bool,
}

/// Wall-clock milliseconds: leases are timed like the Blob service times them, in real time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn state_of(rec: Option<&LeaseRecord>, now: i64) -> LeaseState {
    match rec {
        None => LeaseState::Available,
        Some(r) if r.released => LeaseState::Available,
        Some(r) if r.expires_at_ms > now => LeaseState::Leased,
        Some(_) => LeaseState::Expired,
    }
}

/// Whether a live lease blocks plain (lease-less) writes.
pub fn blocks_plain_writes(rec: Option<&LeaseRecord>, now: i64) -> bool {
    state_of(rec, now) == LeaseState::Leased
}

/// Rejects durations the self-managing stores cannot honour (zero, or beyond a day).
pub fn check_duration(key: &str, duration: Duration) -> Result<i64, StateError> {
    if duration.is_zero() || duration > Duration::from_secs(24 * 3600) {
        return Err(StateError::InvalidLease {
            key: key.to_string(),
            seconds: duration.as_secs(),
            rule: "must be more than 0 and at most 24 hours",
        });
    }
    Ok(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

/// Applies an acquire to the current record: the new record to persist and the outcome.
pub fn acquire(
    key: &str,
    rec: Option<&LeaseRecord>,
    duration_ms: i64,
    proposed: &LeaseId,
    now: i64,
) -> Result<(LeaseRecord, LeaseAcquired), StateError> {
    let previous = state_of(rec, now);
    if previous == LeaseState::Leased && rec.is_some_and(|r| r.id != proposed.0) {
        return Err(StateError::Leased {
            key: key.to_string(),
        });
    }
    let next = LeaseRecord {
        id: proposed.0.clone(),
        expires_at_ms: now.saturating_add(duration_ms),
        duration_ms,
        released: false,
    };
    Ok((
        next,
        LeaseAcquired {
            lease: proposed.clone(),
            previous,
        },
    ))
}

fn held_record<'a>(
    key: &str,
    rec: Option<&'a LeaseRecord>,
    lease: &LeaseId,
) -> Result<&'a LeaseRecord, StateError> {
    match rec {
        Some(r) if r.id == lease.0 && !r.released => Ok(r),
        _ => Err(StateError::LeaseLost {
            key: key.to_string(),
        }),
    }
}

/// Applies a renew: the record with a new expiry.
pub fn renew(
    key: &str,
    rec: Option<&LeaseRecord>,
    lease: &LeaseId,
    now: i64,
) -> Result<LeaseRecord, StateError> {
    let r = held_record(key, rec, lease)?;
    Ok(LeaseRecord {
        expires_at_ms: now.saturating_add(r.duration_ms),
        ..r.clone()
    })
}

/// Applies a release: the record marked released.
pub fn release(
    key: &str,
    rec: Option<&LeaseRecord>,
    lease: &LeaseId,
) -> Result<LeaseRecord, StateError> {
    let r = held_record(key, rec, lease)?;
    Ok(LeaseRecord {
        released: true,
        ..r.clone()
    })
}

/// Checks a write under `lease`: only a live lease with that id allows it.
pub fn check_leased_write(
    key: &str,
    rec: Option<&LeaseRecord>,
    lease: &LeaseId,
    now: i64,
) -> Result<(), StateError> {
    let r = held_record(key, rec, lease)?;
    if r.expires_at_ms <= now {
        return Err(StateError::LeaseLost {
            key: key.to_string(),
        });
    }
    Ok(())
}

/// The lease records of an in-memory store (test doubles, embedded tools). The store calls
/// `check_write` inside the same critical section as its own precondition check.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    records: std::sync::Mutex<std::collections::HashMap<String, LeaseRecord>>,
}

impl MemoryLeases {
    fn records(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, LeaseRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `exists`: whether the document is there (leases need a document).
    pub fn acquire(
        &self,
        key: &str,
        exists: bool,
        duration: Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        let duration_ms = check_duration(key, duration)?;
        if !exists {
            return Err(StateError::Missing {
                key: key.to_string(),
            });
        }
        let mut records = self.records();
        let (rec, got) = acquire(key, records.get(key), duration_ms, proposed, now_ms())?;
        records.insert(key.to_string(), rec);
        Ok(got)
    }

    pub fn renew(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        let mut records = self.records();
        let rec = renew(key, records.get(key), lease, now_ms())?;
        records.insert(key.to_string(), rec);
        Ok(())
    }

    pub fn release(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        let mut records = self.records();
        let rec = release(key, records.get(key), lease)?;
        records.insert(key.to_string(), rec);
        Ok(())
    }

    /// A write with (`Some`) or without (`None`) a lease id: `LeaseLost` / `Conflict` when the
    /// lease rules forbid it.
    pub fn check_write(&self, key: &str, lease: Option<&LeaseId>) -> Result<(), StateError> {
        let records = self.records();
        let now = now_ms();
        match lease {
            Some(id) => check_leased_write(key, records.get(key), id, now),
            None if blocks_plain_writes(records.get(key), now) => Err(StateError::Conflict {
                key: key.to_string(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LeaseId {
        LeaseId(s.to_string())
    }

    #[test]
    fn a_live_lease_excludes_other_holders_and_plain_writes() {
        let (rec, got) = acquire("k", None, 1000, &id("a"), 0).expect("acquire");
        assert_eq!(got.previous, LeaseState::Available);
        assert!(blocks_plain_writes(Some(&rec), 500));
        assert!(matches!(
            acquire("k", Some(&rec), 1000, &id("b"), 500),
            Err(StateError::Leased { .. })
        ));
        // the holder itself may acquire again (a renew)
        let (_, again) = acquire("k", Some(&rec), 1000, &id("a"), 500).expect("re-acquire");
        assert_eq!(again.previous, LeaseState::Leased);
        assert!(check_leased_write("k", Some(&rec), &id("a"), 500).is_ok());
        assert!(matches!(
            check_leased_write("k", Some(&rec), &id("b"), 500),
            Err(StateError::LeaseLost { .. })
        ));
    }

    #[test]
    fn a_lapsed_lease_is_reported_expired_and_can_be_taken() {
        let (rec, _) = acquire("k", None, 1000, &id("a"), 0).expect("acquire");
        assert!(!blocks_plain_writes(Some(&rec), 1000));
        assert!(matches!(
            check_leased_write("k", Some(&rec), &id("a"), 1000),
            Err(StateError::LeaseLost { .. })
        ));
        let (taken, got) = acquire("k", Some(&rec), 1000, &id("b"), 1500).expect("take over");
        assert_eq!(got.previous, LeaseState::Expired);
        // the old holder cannot renew or release once someone else has leased it
        assert!(renew("k", Some(&taken), &id("a"), 1600).is_err());
        assert!(release("k", Some(&taken), &id("a")).is_err());
    }

    #[test]
    fn a_released_lease_is_available_and_renewal_extends() {
        let (rec, _) = acquire("k", None, 1000, &id("a"), 0).expect("acquire");
        let renewed = renew("k", Some(&rec), &id("a"), 900).expect("renew");
        assert_eq!(renewed.expires_at_ms, 1900);
        let released = release("k", Some(&renewed), &id("a")).expect("release");
        assert!(!blocks_plain_writes(Some(&released), 1000));
        let (_, got) = acquire("k", Some(&released), 1000, &id("b"), 1000).expect("acquire");
        assert_eq!(got.previous, LeaseState::Available);
    }

    #[test]
    fn durations_are_bounded() {
        assert!(check_duration("k", Duration::ZERO).is_err());
        assert!(check_duration("k", Duration::from_secs(2 * 24 * 3600)).is_err());
        assert_eq!(
            check_duration("k", Duration::from_secs(60)).expect("ok"),
            60_000
        );
    }
}
