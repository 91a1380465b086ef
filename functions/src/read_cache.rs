//! Facts about shared resources that many VMs' events ask for and that change rarely, kept per
//! process for a short time so the event path reads each once per vault, not once per VM
//! (issue 15, scenario 1): a Recovery Services vault's location (fixed for the vault's life) and
//! a Key Vault's `enabledForDiskEncryption` (only a warning depends on it). Failures and "not
//! found" are never kept, so a missing vault is reported from a fresh read. Key Vault access
//! (policies, role assignments) is deliberately not here: the grant step always reads it fresh.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fact is kept. A vault deleted and re-created elsewhere under the same id within
/// this time would be placed by its old location once; the protect step's own call then fails
/// with Azure's error, which the operation reports.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The per-process facts (one per [`crate::context::Context`], shared by its clones).
#[derive(Debug, Default)]
pub struct ReadCache {
    pub vault_location: TtlCache<String>,
    pub key_vault_disk_encryption: TtlCache<bool>,
}

/// Values by canonical resource id, each kept for `ttl` from when it was read.
#[derive(Debug)]
pub struct TtlCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V> Default for TtlCache<V> {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl<V> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> TtlCache<V> {
    /// The kept value of `key` if it is younger than the TTL.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// The kept value, or `read`'s (kept when it is `Ok(Some(_))`; errors and `None` are not).
    pub async fn get_or_read<E, F>(&self, key: &str, read: F) -> Result<Option<V>, E>
    where
        F: Future<Output = Result<Option<V>, E>>,
    {
        if let Some(v) = self.get(key) {
            return Ok(Some(v));
        }
        let v = read.await?;
        if let Some(v) = &v {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            entries.insert(key.to_string(), (Instant::now(), v.clone()));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn read(calls: &AtomicUsize, v: Option<&str>) -> Result<Option<String>, String> {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(v.map(str::to_string))
    }

    #[tokio::test]
    async fn a_value_is_read_once_within_the_ttl_and_again_after_it() {
        let cache = TtlCache::new(Duration::from_millis(50));
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let v = cache
                .get_or_read("k", read(&calls, Some("westeurope")))
                .await;
            assert_eq!(v, Ok(Some("westeurope".to_string())));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(60));
        let _ = cache
            .get_or_read("k", read(&calls, Some("westeurope")))
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn not_found_and_errors_are_not_kept() {
        let cache: TtlCache<String> = TtlCache::default();
        let calls = AtomicUsize::new(0);
        assert_eq!(cache.get_or_read("k", read(&calls, None)).await, Ok(None));
        let failed: Result<Option<String>, String> = cache
            .get_or_read("k", async { Err("boom".to_string()) })
            .await;
        assert!(failed.is_err());
        assert_eq!(cache.get_or_read("k", read(&calls, None)).await, Ok(None));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "each miss read again");
    }
}
