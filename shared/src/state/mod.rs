//! Operation state in blob storage, with optimistic concurrency.
//!
//! The contract (shared by `BlobStateStore`, `FsStateStore` and `MemoryStateStore`, proven by one
//! contract suite):
//! - `get` returns the document and its ETag, or `None`.
//! - `create` writes only if absent (`If-None-Match: *`); `StateError::Conflict` if it exists.
//! - `replace` writes only if the ETag still matches (`If-Match`); `StateError::Conflict` otherwise.
//! - `list` returns keys under a prefix, sorted.
//!
//! - Leases (Blob "Lease Blob" semantics): `acquire_lease` gives one holder an exclusive,
//!   expiring lease on an existing document; while it is live, `create`/`replace` fail with
//!   `Conflict` and only `replace_leased` with the lease id writes. Leasing changes neither the
//!   body nor the ETag and is not a document write (Azure bills Lease Blob as an "other"
//!   operation, not a write). A lease that lapses without a release is reported as `Expired` to
//!   the next acquirer, which is how a crashed holder is recognised.
//!
//! A lost race is always a typed conflict that the caller retries on fresh state, never a silent
//! overwrite. Keys are `/`-separated relative paths (see docs/state.md).

pub mod blob;
#[cfg(feature = "contract-suite")]
pub mod contract;
pub mod fs;
pub mod lease;
pub mod memory;

pub use blob::{BlobStateStore, BlobStateStoreOptions};
pub use fs::FsStateStore;
pub use lease::{LeaseAcquired, LeaseId, LeaseState};
pub use memory::MemoryStateStore;

use async_trait::async_trait;
use serde::{de::DeserializeOwned, Serialize};

/// Opaque version tag of a stored document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state conflict on {key}: the document changed or already exists")]
    Conflict { key: String },
    #[error("invalid state key {key:?}: {rule}")]
    InvalidKey { key: String, rule: &'static str },
    #[error("state document {key} is not valid JSON for its type: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state document {key} does not exist, so it cannot be leased")]
    Missing { key: String },
    #[error(
        "state document {key} is leased by another holder until its lease ends or is released"
    )]
    Leased { key: String },
    #[error("the lease on state document {key} is no longer held by this holder (it lapsed and was taken, or was never acquired)")]
    LeaseLost { key: String },
    #[error("invalid lease duration {seconds} s for {key}: {rule}")]
    InvalidLease {
        key: String,
        seconds: u64,
        rule: &'static str,
    },
}

#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError>;
    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError>;
    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError>;
    /// Takes an exclusive lease on the existing document `key` for `duration` (Blob: 15–60 s),
    /// proposing `proposed` as its id. `Missing` if there is no document, `Leased` if another
    /// holder's lease is live. Acquiring again with the id already held renews it.
    async fn acquire_lease(
        &self,
        key: &str,
        duration: std::time::Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError>;
    /// Extends a held lease by its duration; `LeaseLost` if someone else has taken it.
    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError>;
    /// Ends a held lease now; `LeaseLost` if someone else has taken it.
    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError>;
    /// Replaces the document under a held lease; `LeaseLost` if the lease is not ours.
    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError>;
}

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` segments, a safe character set.
pub fn validate_key(key: &str) -> Result<(), StateError> {
    let bad = |rule| {
        Err(StateError::InvalidKey {
            key: key.to_string(),
            rule,
        })
    };
    if key.is_empty() || key.len() > 512 {
        return bad("must be 1 to 512 characters");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return bad("must not start or end with '/'");
    }
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("segments must be non-empty and not '.' or '..'");
        }
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '=' | '@'))
    {
        return bad("only ASCII letters, digits and / - _ . = @ are allowed");
    }
    Ok(())
}

/// Typed JSON helpers over any store.
pub mod json {
    use super::*;

    pub async fn get<T: DeserializeOwned>(
        store: &dyn StateStore,
        key: &str,
    ) -> Result<Option<(T, ETag)>, StateError> {
        match store.get(key).await? {
            None => Ok(None),
            Some((bytes, etag)) => serde_json::from_slice(&bytes)
                .map(|v| Some((v, etag)))
                .map_err(|source| StateError::Corrupt {
                    key: key.to_string(),
                    source,
                }),
        }
    }

    fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
            key: key.to_string(),
            source,
        })
    }

    pub async fn create<T: Serialize + Sync>(
        store: &dyn StateStore,
        key: &str,
        value: &T,
    ) -> Result<ETag, StateError> {
        store.create(key, &encode(key, value)?).await
    }

    pub async fn replace<T: Serialize + Sync>(
        store: &dyn StateStore,
        key: &str,
        value: &T,
        etag: &ETag,
    ) -> Result<ETag, StateError> {
        store.replace(key, &encode(key, value)?, etag).await
    }

    /// [`StateStore::replace_leased`] with a typed value.
    pub async fn replace_leased<T: Serialize + Sync>(
        store: &dyn StateStore,
        key: &str,
        value: &T,
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        store.replace_leased(key, &encode(key, value)?, lease).await
    }

    /// Read-modify-write with optimistic concurrency: `f` is applied to the current document (or
    /// `None`) and may be called again on fresh state after a conflict. Returns the stored value.
    /// `f` returning `Ok(None)` means "no change": nothing is written.
    pub async fn update<T, E, F>(store: &dyn StateStore, key: &str, mut f: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync,
        E: From<StateError>,
        F: FnMut(Option<&T>) -> Result<Option<T>, E> + Send,
    {
        const MAX_ATTEMPTS: usize = 16;
        const BACKOFF_BASE_MS: u64 = 2;
        const BACKOFF_CAP_MS: u64 = 250;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current: Option<(T, ETag)> = get(store, key).await?;
            let next = f(current.as_ref().map(|(v, _)| v))?;
            let Some(next) = next else {
                return match current {
                    Some((v, _)) => Ok(v),
                    None => Err(E::from(StateError::Unavailable(format!(
                        "update of {key} produced no document"
                    )))),
                };
            };
            let written = match &current {
                None => create(store, key, &next).await,
                Some((_, etag)) => replace(store, key, &next, etag).await,
            };
            match written {
                Ok(_) => return Ok(next),
                Err(StateError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                    // Without a pause, contenders re-read and collide in lockstep, and one of
                    // 20 concurrent writers can lose all attempts. Full jitter, exponential, capped.
                    let cap_ms = (BACKOFF_BASE_MS << attempt.min(8)).min(BACKOFF_CAP_MS);
                    let pause = rand::random_range(0..=cap_ms);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(E::from(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_key;

    #[test]
    fn keys_reject_path_tricks() {
        assert!(validate_key("operations/protect/abc.json").is_ok());
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "./a", "a\\b", "a b", "a?b",
        ] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
