//! `S3StateStore`: the `StateStore` contract over Amazon S3 conditional writes.
//!
//! - `create` is `PutObject` with `If-None-Match: *`, `replace` is `PutObject` with
//!   `If-Match: <ETag>`; S3 answers `412 Precondition Failed` when the condition fails and
//!   `409 ConditionalRequestConflict` when a concurrent conditional write to the same key won
//!   (both become `StateError::Conflict`). A `replace` of a missing key is a `404 NoSuchKey`,
//!   also a conflict, as on Blob. Source: Amazon S3 User Guide, "Add preconditions to S3
//!   operations with conditional requests" (conditional writes), and the `PutObject` API
//!   reference (`If-Match`, `If-None-Match`).
//! - Leases: S3 has none, so the lease record ([`LeaseRecord`], the rules in
//!   `ade_backup_shared::state::lease`) is kept in a sidecar object `{key}~lease` and every
//!   change to it is itself a conditional write, so two acquirers cannot both win. `~` is not a
//!   valid state key character, so a sidecar never collides with a document and `list` skips it.
//!   A plain write reads the sidecar first and conflicts while a lease is live; a plain write
//!   that read the sidecar just before another holder acquired can still land in that gap, but
//!   every document write is ETag-conditional, so nothing is ever silently overwritten.
//! - `list` is `ListObjectsV2` under the prefix, following continuation tokens.
//!
//! Every object lives under an optional key prefix in one bucket, so one bucket can hold
//! several deployments' state.

use ade_backup_shared::state::fs::validate_prefix;
use ade_backup_shared::state::lease::{self, LeaseRecord};
use ade_backup_shared::state::{
    validate_key, ETag, LeaseAcquired, LeaseId, StateError, StateStore,
};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::time::Duration;

/// The suffix of a document's lease sidecar object.
pub const LEASE_SUFFIX: &str = "~lease";

/// State documents in one S3 bucket, under `prefix`.
#[derive(Debug, Clone)]
pub struct S3StateStore {
    client: Client,
    bucket: String,
    prefix: String,
}

/// What a failed conditional write means for the caller.
enum WriteFailure {
    /// The precondition failed or a concurrent write won.
    Conflict,
    /// Anything else: the store is unavailable (the text keeps the SDK's error chain).
    Other(String),
}

/// The HTTP status and S3 error code of a failed call.
fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> (Option<u16>, Option<&str>) {
    (e.raw_response().map(|r| r.status().as_u16()), e.code())
}

fn unavailable<E: std::error::Error + 'static>(what: &str, key: &str, e: E) -> StateError {
    StateError::Unavailable(format!(
        "S3 {what} of {key} failed: {}",
        DisplayErrorContext(e)
    ))
}

impl S3StateStore {
    /// A store in `bucket`; `prefix` ("" or ending in `/`) is put before every key.
    pub fn new(
        client: Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Result<Self, StateError> {
        let prefix = prefix.into();
        if !prefix.is_empty() {
            let trimmed = prefix.trim_end_matches('/');
            validate_key(trimmed)?;
            if !prefix.ends_with('/') || trimmed.len() + 1 != prefix.len() {
                return Err(StateError::InvalidKey {
                    key: prefix,
                    rule: "a key prefix must be a valid key followed by exactly one '/'",
                });
            }
        }
        Ok(Self {
            client,
            bucket: bucket.into(),
            prefix,
        })
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The object's bytes and ETag, or `None` when it does not exist.
    async fn read(&self, object: &str, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(unavailable("GetObject", key, e)),
        };
        let etag = out.e_tag().map(str::to_string).ok_or_else(|| {
            StateError::Unavailable(format!("S3 GetObject of {key} returned no ETag"))
        })?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| unavailable("GetObject body", key, e))?;
        Ok(Some((body.into_bytes().to_vec(), ETag(etag))))
    }

    /// A conditional `PutObject`: `None` = create only (`If-None-Match: *`), `Some(etag)` =
    /// replace only that version (`If-Match`).
    async fn write(
        &self,
        object: &str,
        key: &str,
        body: &[u8],
        expected: Option<&ETag>,
    ) -> Result<ETag, WriteFailure> {
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(object)
            .content_type("application/json")
            .body(ByteStream::from(body.to_vec()));
        let put = match expected {
            None => put.if_none_match("*"),
            Some(etag) => put.if_match(&etag.0),
        };
        match put.send().await {
            Ok(out) => out.e_tag().map(|t| ETag(t.to_string())).ok_or_else(|| {
                WriteFailure::Other(format!("S3 PutObject of {key} returned no ETag"))
            }),
            Err(e) => match classify(&e) {
                (Some(412), _) | (Some(409), Some("ConditionalRequestConflict")) => {
                    Err(WriteFailure::Conflict)
                }
                (Some(404), Some("NoSuchKey")) if expected.is_some() => Err(WriteFailure::Conflict),
                _ => Err(WriteFailure::Other(format!(
                    "S3 PutObject of {key} failed: {}",
                    DisplayErrorContext(e)
                ))),
            },
        }
    }

    async fn write_doc(
        &self,
        key: &str,
        body: &[u8],
        expected: Option<&ETag>,
    ) -> Result<ETag, StateError> {
        self.write(&self.object_key(key), key, body, expected)
            .await
            .map_err(|f| match f {
                WriteFailure::Conflict => StateError::Conflict {
                    key: key.to_string(),
                },
                WriteFailure::Other(m) => StateError::Unavailable(m),
            })
    }

    /// The lease record and its sidecar's ETag.
    async fn lease_record(&self, key: &str) -> Result<Option<(LeaseRecord, ETag)>, StateError> {
        let object = self.object_key(&format!("{key}{LEASE_SUFFIX}"));
        match self.read(&object, key).await? {
            None => Ok(None),
            Some((bytes, etag)) => serde_json::from_slice(&bytes)
                .map(|r| Some((r, etag)))
                .map_err(|source| StateError::Corrupt {
                    key: format!("{key}{LEASE_SUFFIX}"),
                    source,
                }),
        }
    }

    /// Writes the lease record conditionally on the sidecar's version read before (`None`: no
    /// sidecar yet). A lost race means another holder changed the lease meanwhile.
    async fn put_lease(
        &self,
        key: &str,
        record: &LeaseRecord,
        expected: Option<&ETag>,
    ) -> Result<(), StateError> {
        let object = self.object_key(&format!("{key}{LEASE_SUFFIX}"));
        let body = serde_json::to_vec(record).map_err(|source| StateError::Corrupt {
            key: format!("{key}{LEASE_SUFFIX}"),
            source,
        })?;
        match self.write(&object, key, &body, expected).await {
            Ok(_) => Ok(()),
            Err(WriteFailure::Conflict) => Err(StateError::Leased {
                key: key.to_string(),
            }),
            Err(WriteFailure::Other(m)) => Err(StateError::Unavailable(m)),
        }
    }

    /// Conflict while another holder's lease is live (plain writes only).
    async fn check_no_live_lease(&self, key: &str) -> Result<(), StateError> {
        let record = self.lease_record(key).await?;
        if lease::blocks_plain_writes(record.as_ref().map(|(r, _)| r), lease::now_ms()) {
            return Err(StateError::Conflict {
                key: key.to_string(),
            });
        }
        Ok(())
    }
}

fn lost_if_leased(e: StateError) -> StateError {
    match e {
        StateError::Leased { key } => StateError::LeaseLost { key },
        other => other,
    }
}

#[async_trait]
impl StateStore for S3StateStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        validate_key(key)?;
        self.read(&self.object_key(key), key).await
    }

    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        validate_key(key)?;
        self.check_no_live_lease(key).await?;
        self.write_doc(key, body, None).await
    }

    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        validate_key(key)?;
        self.check_no_live_lease(key).await?;
        self.write_doc(key, body, Some(etag)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        validate_prefix(prefix)?;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object_key(prefix))
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable("ListObjectsV2", prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                if !key.contains('~') {
                    keys.push(key.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn acquire_lease(
        &self,
        key: &str,
        duration: Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        validate_key(key)?;
        let duration_ms = lease::check_duration(key, duration)?;
        if self.get(key).await?.is_none() {
            return Err(StateError::Missing {
                key: key.to_string(),
            });
        }
        let current = self.lease_record(key).await?;
        let (next, acquired) = lease::acquire(
            key,
            current.as_ref().map(|(r, _)| r),
            duration_ms,
            proposed,
            lease::now_ms(),
        )?;
        self.put_lease(key, &next, current.as_ref().map(|(_, e)| e))
            .await?;
        Ok(acquired)
    }

    async fn renew_lease(&self, key: &str, lease_id: &LeaseId) -> Result<(), StateError> {
        validate_key(key)?;
        let current = self.lease_record(key).await?;
        let next = lease::renew(
            key,
            current.as_ref().map(|(r, _)| r),
            lease_id,
            lease::now_ms(),
        )?;
        self.put_lease(key, &next, current.as_ref().map(|(_, e)| e))
            .await
            .map_err(lost_if_leased)
    }

    async fn release_lease(&self, key: &str, lease_id: &LeaseId) -> Result<(), StateError> {
        validate_key(key)?;
        let current = self.lease_record(key).await?;
        let next = lease::release(key, current.as_ref().map(|(r, _)| r), lease_id)?;
        self.put_lease(key, &next, current.as_ref().map(|(_, e)| e))
            .await
            .map_err(lost_if_leased)
    }

    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease_id: &LeaseId,
    ) -> Result<ETag, StateError> {
        validate_key(key)?;
        let current = self.lease_record(key).await?;
        lease::check_leased_write(
            key,
            current.as_ref().map(|(r, _)| r),
            lease_id,
            lease::now_ms(),
        )?;
        let Some((_, etag)) = self.get(key).await? else {
            return Err(StateError::Missing {
                key: key.to_string(),
            });
        };
        self.write_doc(key, body, Some(&etag)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn prefixes_must_be_keys_ending_in_one_slash() {
        assert!(S3StateStore::new(client(), "b", "").is_ok());
        assert!(S3StateStore::new(client(), "b", "prod/").is_ok());
        for bad in ["prod", "prod//", "/prod/", "a b/", "../"] {
            assert!(
                S3StateStore::new(client(), "b", bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn sidecars_cannot_collide_with_documents() {
        assert!(validate_key(&format!("runs/a.json{LEASE_SUFFIX}")).is_err());
    }
}
