//! `MemoryStateStore`: the state contract in process memory, with counters. For tests, benches
//! and one-shot tools (nothing survives the process). Proven by the same contract suite as the
//! fs and blob stores.

use super::fs::validate_prefix;
use super::lease::{LeaseAcquired, LeaseId, MemoryLeases};
use super::{validate_key, ETag, StateError, StateStore};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Documents in a map; ETags are a counter. `fail_writes` simulates an outage of the store.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    docs: Mutex<BTreeMap<String, (Vec<u8>, ETag)>>,
    next_etag: AtomicU64,
    leases: MemoryLeases,
    /// While true, every write fails `Unavailable`.
    pub fail_writes: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    lease_calls: AtomicU64,
}

impl MemoryStateStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn docs(&self) -> MutexGuard<'_, BTreeMap<String, (Vec<u8>, ETag)>> {
        // A panicking test must not wedge every later user on a poisoned lock.
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn etag(&self) -> ETag {
        ETag(format!(
            "\"{}\"",
            self.next_etag.fetch_add(1, Ordering::SeqCst)
        ))
    }

    fn begin_write(&self, key: &str) -> Result<(), StateError> {
        validate_key(key)?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StateError::Unavailable("simulated outage".into()));
        }
        Ok(())
    }

    /// Reads (get and list) so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
    /// Write attempts (create, replace, replace under lease) so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
    /// Lease calls (acquire, renew, release) so far.
    pub fn lease_calls(&self) -> u64 {
        self.lease_calls.load(Ordering::SeqCst)
    }

    /// The document at `key` as JSON, if any (not counted).
    pub fn json(&self, key: &str) -> Option<serde_json::Value> {
        self.docs()
            .get(key)
            .and_then(|(b, _)| serde_json::from_slice(b).ok())
    }

    /// Puts a document as is, bypassing every condition and counter (test setup).
    pub fn put_json(&self, key: &str, v: &serde_json::Value) {
        let body = serde_json::to_vec(v).unwrap_or_default();
        let etag = self.etag();
        self.docs().insert(key.to_string(), (body, etag));
    }

    /// Keys under `prefix` (not counted).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.docs()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        validate_key(key)?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.docs().get(key).cloned())
    }

    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        self.begin_write(key)?;
        let mut docs = self.docs();
        if docs.contains_key(key) {
            return Err(StateError::Conflict {
                key: key.to_string(),
            });
        }
        self.leases.check_write(key, None)?;
        let etag = self.etag();
        docs.insert(key.to_string(), (body.to_vec(), etag.clone()));
        Ok(etag)
    }

    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        self.begin_write(key)?;
        let mut docs = self.docs();
        self.leases.check_write(key, None)?;
        match docs.get(key) {
            Some((_, current)) if current == etag => {
                let next = self.etag();
                docs.insert(key.to_string(), (body.to_vec(), next.clone()));
                Ok(next)
            }
            _ => Err(StateError::Conflict {
                key: key.to_string(),
            }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        validate_prefix(prefix)?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.keys(prefix))
    }

    async fn acquire_lease(
        &self,
        key: &str,
        duration: std::time::Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        validate_key(key)?;
        self.lease_calls.fetch_add(1, Ordering::SeqCst);
        let docs = self.docs();
        self.leases
            .acquire(key, docs.contains_key(key), duration, proposed)
    }

    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        validate_key(key)?;
        self.lease_calls.fetch_add(1, Ordering::SeqCst);
        self.leases.renew(key, lease)
    }

    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        validate_key(key)?;
        self.lease_calls.fetch_add(1, Ordering::SeqCst);
        self.leases.release(key, lease)
    }

    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        self.begin_write(key)?;
        let mut docs = self.docs();
        self.leases.check_write(key, Some(lease))?;
        let next = self.etag();
        docs.insert(key.to_string(), (body.to_vec(), next.clone()));
        Ok(next)
    }
}
