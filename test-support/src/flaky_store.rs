//! [`FlakyStore`]: a state store that can be told to fail every write after the next `n`, to
//! play a crash between an Azure call and the write that records it, or to fail a random share
//! of writes (a storage account answering 503 now and then).

use ade_backup_shared::state::{
    ETag, LeaseAcquired, LeaseId, MemoryStateStore, StateError, StateStore,
};
use async_trait::async_trait;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A state store that can be told to fail after `n` more successful writes (a crash between an
/// Azure call and the write that records it).
#[derive(Debug)]
pub struct FlakyStore {
    pub inner: Arc<MemoryStateStore>,
    /// Writes still allowed before every write fails; negative: never fail.
    writes_left: AtomicI64,
    /// Share of writes that fail at random, in millionths (0: none).
    fail_ppm: AtomicU64,
    /// Dice state (splitmix64 counter: reproducible).
    dice: AtomicU64,
    /// Writes failed at random so far.
    injected: AtomicU64,
}

impl FlakyStore {
    pub fn new(inner: Arc<MemoryStateStore>) -> Self {
        Self {
            inner,
            writes_left: AtomicI64::new(-1),
            fail_ppm: AtomicU64::new(0),
            dice: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }
    /// From now on, fail `share` (0..=1) of writes at random.
    pub fn fail_share(&self, share: f64) {
        let ppm = (share.clamp(0.0, 1.0) * 1e6).round() as u64;
        self.fail_ppm.store(ppm, Ordering::SeqCst);
    }
    /// Writes failed by [`FlakyStore::fail_share`] so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
    fn roll_ppm(&self) -> u64 {
        let mut z = self
            .dice
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % 1_000_000
    }
    /// Let `n` writes succeed, then fail every write until [`FlakyStore::heal`].
    pub fn fail_after_writes(&self, n: i64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.writes_left.store(-1, Ordering::SeqCst);
    }
    fn check(&self) -> Result<(), StateError> {
        let ppm = self.fail_ppm.load(Ordering::SeqCst);
        if ppm > 0 && self.roll_ppm() < ppm {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StateError::Unavailable("simulated storage fault".into()));
        }
        let left = self.writes_left.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(StateError::Unavailable("simulated crash".into()));
        }
        self.writes_left.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl StateStore for FlakyStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        self.inner.get(key).await
    }
    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        self.check()?;
        self.inner.create(key, body).await
    }
    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        self.check()?;
        self.inner.replace(key, body, etag).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.inner.list(prefix).await
    }
    async fn acquire_lease(
        &self,
        key: &str,
        duration: Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        self.inner.acquire_lease(key, duration, proposed).await
    }
    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.inner.renew_lease(key, lease).await
    }
    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.inner.release_lease(key, lease).await
    }
    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        self.check()?;
        self.inner.replace_leased(key, body, lease).await
    }
}
