//! `BlobStateStore`: the state contract on an Azure Blob Storage container (`azure_storage_blob`).
//!
//! Wire mapping (Blob service REST; confirmed against the `azure_storage_blob` 1.1.0 clients):
//! - `get` → Get Blob; the ETag is the response `ETag` header. 404 `BlobNotFound` → `None`.
//! - `create` → Put Blob with `If-None-Match: *`; 409 `BlobAlreadyExists` → `Conflict`.
//! - `replace` → Put Blob with `If-Match: <etag>`; 412 `ConditionNotMet` → `Conflict`, and a blob
//!   that vanished (404) is a conflict too: the document changed under the caller.
//! - `list` → List Blobs with `prefix`, following `NextMarker` pages.
//! - `acquire_lease` → Get Blob Properties (for `x-ms-lease-state`, so an `expired` lease — a
//!   holder that never released — is reported) then Lease Blob `acquire` with
//!   `x-ms-proposed-lease-id`; 409 `LeaseAlreadyPresent` → `Leased`, 404 → `Missing`. The Blob
//!   service allows 15–60 s leases (or infinite, which we never use: a crashed holder would block
//!   the document until someone breaks it).
//! - `renew_lease` / `release_lease` → Lease Blob `renew` / `release`; 409 `LeaseIdMismatch…` /
//!   `LeaseNotPresent…` / `LeaseLost` → `LeaseLost`.
//! - `replace_leased` → Put Blob with `x-ms-lease-id`; 412 lease errors → `LeaseLost`. A plain
//!   write to a leased blob fails 412 `LeaseIdMissing` → `Conflict`.
//!
//! Large bodies are split by the SDK into Put Block + Put Block List; the condition travels on the
//! final Put Block List, so the write stays all-or-nothing under the same precondition.
//!
//! Secrets: a SAS container URL carries its signature in the query string. No error text leaves
//! this module without every URL query and every SAS parameter value scrubbed (`Redactor`).

use super::fs::validate_prefix;
use super::lease::{LeaseAcquired, LeaseId, LeaseState};
use super::{validate_key, ETag, StateError, StateStore};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RequestContent, StatusCode, Url};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
    BlobContainerClientListBlobsOptions, LeaseState as BlobLeaseState,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures::TryStreamExt;
use std::sync::Arc;

/// Options for [`BlobStateStore::new`].
#[derive(Debug, Clone, Default)]
pub struct BlobStateStoreOptions {
    /// HTTP pipeline options (retries, transport) passed to the storage client.
    pub client_options: ClientOptions,
    /// Page size for `list` (List Blobs `maxresults`); service default (5000) when `None`.
    pub list_page_size: Option<u32>,
}

/// State store on one blob container. Cheap to clone.
#[derive(Clone)]
pub struct BlobStateStore {
    container: Arc<BlobContainerClient>,
    /// Container URL without its query, safe to show.
    display_url: String,
    redactor: Arc<Redactor>,
    list_page_size: Option<u32>,
}

impl std::fmt::Debug for BlobStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStateStore")
            .field("container", &self.display_url)
            .finish_non_exhaustive()
    }
}

impl BlobStateStore {
    /// `container_url` is `https://{account}.blob.core.windows.net/{container}`, optionally with a
    /// SAS query string (then `credential` is `None`, e.g. for Azurite). With a credential (Entra
    /// ID, managed identity) the URL must be https and carry no SAS.
    pub fn new(
        container_url: Url,
        credential: Option<Arc<dyn TokenCredential>>,
        options: BlobStateStoreOptions,
    ) -> Result<Self, StateError> {
        let redactor = Arc::new(Redactor::from_url(&container_url));
        let display_url = strip_query(container_url.as_str());
        let has_container = container_url
            .path_segments()
            .is_some_and(|mut s| s.any(|seg| !seg.is_empty()));
        if !has_container {
            return Err(StateError::Unavailable(format!(
                "state container URL {display_url} must name a container in its path"
            )));
        }
        if let Some(0) = options.list_page_size {
            return Err(StateError::Unavailable(
                "list_page_size must be at least 1".to_string(),
            ));
        }
        let client_options = BlobContainerClientOptions {
            client_options: options.client_options,
            ..Default::default()
        };
        let container = BlobContainerClient::new(container_url, credential, Some(client_options))
            .map_err(|e| {
            StateError::Unavailable(format!(
                "state container client for {display_url}: {}",
                redactor.error_text(&e)
            ))
        })?;
        Ok(Self {
            container: Arc::new(container),
            display_url,
            redactor,
            list_page_size: options.list_page_size,
        })
    }

    /// Creates the container if it does not exist (Azurite and dev setups; production containers
    /// come from infrastructure). Needs a credential or an account SAS allowed to create
    /// containers: a container SAS cannot.
    pub async fn ensure_container(&self) -> Result<(), StateError> {
        match self.container.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ContainerAlreadyExists") => Ok(()),
            Err(e) => Err(self.unavailable("create container", None, &e)),
        }
    }

    fn unavailable(&self, op: &str, key: Option<&str>, e: &azure_core::Error) -> StateError {
        let target = match key {
            Some(k) => format!("{} blob {k}", self.display_url),
            None => self.display_url.clone(),
        };
        let hint = if error_code(e) == Some("ContainerNotFound") {
            " (the state container does not exist: create it, or call ensure_container in dev)"
        } else {
            ""
        };
        StateError::Unavailable(format!(
            "{op} on {target}: {}{hint}",
            self.redactor.error_text(e)
        ))
    }

    /// Maps the outcome of a renew/release: a lease that is not ours is `LeaseLost`.
    fn lease_result(
        &self,
        op: &str,
        key: &str,
        result: Result<(), azure_core::Error>,
    ) -> Result<(), StateError> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_lease_lost(&e) => Err(StateError::LeaseLost {
                key: key.to_string(),
            }),
            Err(e) => Err(self.unavailable(op, Some(key), &e)),
        }
    }

    async fn upload(
        &self,
        key: &str,
        body: &[u8],
        options: BlobClientUploadOptions<'_>,
    ) -> Result<ETag, azure_core::Error> {
        let result = self
            .container
            .blob_client(key)
            .upload(RequestContent::from(body.to_vec()), Some(options))
            .await?;
        result.etag.map(|e| ETag(e.to_string())).ok_or_else(|| {
            azure_core::Error::with_message(ErrorKind::DataConversion, "Put Blob returned no ETag")
        })
    }
}

#[async_trait]
impl StateStore for BlobStateStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        validate_key(key)?;
        let blob = self.container.blob_client(key);
        let result = match blob.download(None).await {
            Ok(r) => r,
            Err(e) if error_code(&e) == Some("BlobNotFound") => return Ok(None),
            Err(e) => return Err(self.unavailable("read", Some(key), &e)),
        };
        let etag = result.properties.etag.clone().ok_or_else(|| {
            StateError::Unavailable(format!(
                "read on {} blob {key}: response had no ETag",
                self.display_url
            ))
        })?;
        let body = result
            .body
            .collect()
            .await
            .map_err(|e| self.unavailable("read body", Some(key), &e))?;
        Ok(Some((body.to_vec(), ETag(etag.to_string()))))
    }

    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        validate_key(key)?;
        let options = BlobClientUploadOptions::default().if_not_exists();
        match self.upload(key, body, options).await {
            Ok(etag) => Ok(etag),
            Err(e) if is_conflict(&e, false) => Err(StateError::Conflict {
                key: key.to_string(),
            }),
            Err(e) => Err(self.unavailable("create", Some(key), &e)),
        }
    }

    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        validate_key(key)?;
        let options = BlobClientUploadOptions {
            if_match: Some(etag.0.clone().into()),
            ..Default::default()
        };
        match self.upload(key, body, options).await {
            Ok(etag) => Ok(etag),
            Err(e) if is_conflict(&e, true) => Err(StateError::Conflict {
                key: key.to_string(),
            }),
            Err(e) => Err(self.unavailable("replace", Some(key), &e)),
        }
    }

    async fn acquire_lease(
        &self,
        key: &str,
        duration: std::time::Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        validate_key(key)?;
        let seconds = duration.as_secs();
        if !(15..=60).contains(&seconds) || duration.subsec_nanos() != 0 {
            return Err(StateError::InvalidLease {
                key: key.to_string(),
                seconds,
                rule: "Blob leases last whole seconds from 15 to 60",
            });
        }
        let blob = self.container.blob_client(key);
        let props = match blob.get_properties(None).await {
            Ok(r) => r,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => {
                return Err(StateError::Missing {
                    key: key.to_string(),
                })
            }
            Err(e) => return Err(self.unavailable("lease (properties)", Some(key), &e)),
        };
        let previous = match props.lease_state().ok().flatten() {
            Some(BlobLeaseState::Leased) => LeaseState::Leased,
            Some(BlobLeaseState::Expired) => LeaseState::Expired,
            Some(BlobLeaseState::Broken | BlobLeaseState::Breaking) => LeaseState::Broken,
            _ => LeaseState::Available,
        };
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(proposed.0.clone()),
            ..Default::default()
        };
        match blob.acquire_lease(seconds as i32, Some(options)).await {
            Ok(_) => Ok(LeaseAcquired {
                lease: proposed.clone(),
                previous,
            }),
            Err(e) if error_code(&e) == Some("LeaseAlreadyPresent") => Err(StateError::Leased {
                key: key.to_string(),
            }),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Err(StateError::Missing {
                key: key.to_string(),
            }),
            Err(e) => Err(self.unavailable("lease acquire", Some(key), &e)),
        }
    }

    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        validate_key(key)?;
        let blob = self.container.blob_client(key);
        let result = blob.renew_lease(lease.0.clone(), None).await.map(drop);
        self.lease_result("lease renew", key, result)
    }

    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        validate_key(key)?;
        let blob = self.container.blob_client(key);
        let result = blob.release_lease(lease.0.clone(), None).await.map(drop);
        self.lease_result("lease release", key, result)
    }

    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        validate_key(key)?;
        let options = BlobClientUploadOptions {
            lease_id: Some(lease.0.clone()),
            ..Default::default()
        };
        match self.upload(key, body, options).await {
            Ok(etag) => Ok(etag),
            Err(e) if is_lease_lost(&e) => Err(StateError::LeaseLost {
                key: key.to_string(),
            }),
            Err(e) => Err(self.unavailable("replace under lease", Some(key), &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        validate_prefix(prefix)?;
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
            maxresults: self
                .list_page_size
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.unavailable("list", None, &e))?;
        let mut keys = Vec::new();
        // The pager follows NextMarker across pages.
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| self.unavailable("list", None, &e))?
        {
            let Some(name) = item.name else { continue };
            if validate_key(&name).is_err() {
                tracing::warn!(blob = %name, "ignoring blob whose name is not a valid state key");
                continue;
            }
            if name.starts_with(prefix) {
                keys.push(name);
            }
        }
        keys.sort();
        Ok(keys)
    }
}

fn error_code(e: &azure_core::Error) -> Option<&str> {
    match e.kind() {
        ErrorKind::HttpResponse { error_code, .. } => error_code.as_deref(),
        _ => None,
    }
}

/// Whether a lease operation or a write under a lease failed because the lease is not ours (it
/// lapsed and was taken, was released, or the blob was never leased).
fn is_lease_lost(e: &azure_core::Error) -> bool {
    matches!(
        error_code(e),
        Some(
            "LeaseIdMismatchWithLeaseOperation"
                | "LeaseIdMismatchWithBlobOperation"
                | "LeaseNotPresentWithLeaseOperation"
                | "LeaseNotPresentWithBlobOperation"
                | "LeaseLost"
                | "LeaseIsBrokenAndCannotBeRenewed"
                | "LeaseIdMissing"
        )
    )
}

/// Whether a failed Put Blob lost an optimistic-concurrency race.
fn is_conflict(e: &azure_core::Error, replacing: bool) -> bool {
    match (e.http_status(), error_code(e)) {
        (_, Some("BlobAlreadyExists" | "ConditionNotMet")) => true,
        (Some(StatusCode::PreconditionFailed), _) => true,
        (Some(StatusCode::Conflict), None) => true,
        // If-Match on a blob that no longer exists: the document changed under the caller.
        (_, Some("BlobNotFound")) => replacing,
        _ => false,
    }
}

/// Scrubs SAS material from text bound for errors and logs.
#[derive(Debug, Default)]
struct Redactor {
    /// Every query parameter value of the configured URL, raw and percent-encoded forms.
    secrets: Vec<String>,
}

impl Redactor {
    fn from_url(url: &Url) -> Self {
        let mut secrets = Vec::new();
        if let Some(q) = url.query() {
            if !q.is_empty() {
                secrets.push(q.to_string());
            }
        }
        for (_, v) in url.query_pairs() {
            // Short values (`sp=r`, `sr=c`) would shred ordinary words; the signature and
            // anything long enough to matter are kept.
            if v.len() >= 8 {
                secrets.push(v.to_string());
                let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
                secrets.push(encoded);
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = strip_query(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[REDACTED]");
            }
        }
        out
    }

    /// The error, its HTTP status and storage error code, and its source chain, scrubbed.
    fn error_text(&self, e: &azure_core::Error) -> String {
        let mut text = match e.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => format!(
                "HTTP {} {}",
                u16::from(*status),
                error_code.as_deref().unwrap_or("(no error code)")
            ),
            _ => e.to_string(),
        };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.scrub(&text)
    }
}

/// Removes the query string (`?...`) from every http(s) URL in `text`.
fn strip_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["https://", "http://"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min();
        let Some(start) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let url_part = &rest[start..];
        let end = url_part
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .unwrap_or(url_part.len());
        let url = &url_part[..end];
        match url.find('?') {
            Some(q) => out.push_str(&url[..q]),
            None => out.push_str(url),
        }
        rest = &url_part[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAS_URL: &str = "http://127.0.0.1:10000/devstoreaccount1/state?sv=2020-12-06&sr=c&sp=racwl&se=2030-01-01T00%3A00%3A00Z&sig=AbCdEfGh%2BIjKlMnOp%2FqRsTuV%3D";

    #[test]
    fn strip_query_removes_every_url_query() {
        let text =
            "GET https://a.blob.core.windows.net/c/b?sv=1&sig=x failed (http://h/p?sig=y), retry";
        assert_eq!(
            strip_query(text),
            "GET https://a.blob.core.windows.net/c/b failed (http://h/p), retry"
        );
    }

    #[test]
    fn redactor_scrubs_signature_outside_urls_too() {
        let url = Url::parse(SAS_URL).expect("url");
        let r = Redactor::from_url(&url);
        let raw_sig = "AbCdEfGh+IjKlMnOp/qRsTuV=";
        let text = format!(
            "signature {raw_sig} rejected; encoded AbCdEfGh%2BIjKlMnOp%2FqRsTuV%3D; url {SAS_URL}"
        );
        let scrubbed = r.scrub(&text);
        assert!(!scrubbed.contains("AbCdEfGh"), "{scrubbed}");
        assert!(!scrubbed.contains("sig="), "{scrubbed}");
        assert!(scrubbed.contains("http://127.0.0.1:10000/devstoreaccount1/state"));
    }

    #[test]
    fn constructor_errors_never_show_the_sas() {
        // A credential needs https: the SDK rejects http and names the URL in its message.
        #[derive(Debug)]
        struct NoToken;
        #[async_trait]
        impl TokenCredential for NoToken {
            async fn get_token(
                &self,
                _scopes: &[&str],
                _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Err(azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "none",
                ))
            }
        }
        let url = Url::parse(SAS_URL).expect("url");
        let err = BlobStateStore::new(url, Some(Arc::new(NoToken)), Default::default())
            .expect_err("http with credential");
        let text = err.to_string();
        assert!(matches!(err, StateError::Unavailable(_)));
        assert!(!text.contains("sig"), "{text}");
        assert!(!text.contains("AbCdEfGh"), "{text}");
        assert!(
            text.contains("127.0.0.1:10000/devstoreaccount1/state"),
            "{text}"
        );
    }

    #[test]
    fn container_url_must_name_a_container() {
        let url = Url::parse("https://acct.blob.core.windows.net/").expect("url");
        let err = BlobStateStore::new(url, None, Default::default()).expect_err("no container");
        assert!(err.to_string().contains("must name a container"), "{err}");
    }

    #[test]
    fn conflict_classification() {
        let http = |status, code: Option<&str>| {
            azure_core::Error::new(
                ErrorKind::HttpResponse {
                    status,
                    error_code: code.map(str::to_string),
                    raw_response: None,
                },
                "x",
            )
        };
        assert!(is_conflict(
            &http(StatusCode::Conflict, Some("BlobAlreadyExists")),
            false
        ));
        assert!(is_conflict(
            &http(StatusCode::PreconditionFailed, Some("ConditionNotMet")),
            true
        ));
        assert!(is_conflict(
            &http(StatusCode::NotFound, Some("BlobNotFound")),
            true
        ));
        assert!(!is_conflict(
            &http(StatusCode::NotFound, Some("BlobNotFound")),
            false
        ));
        assert!(!is_conflict(
            &http(StatusCode::NotFound, Some("ContainerNotFound")),
            true
        ));
        assert!(!is_conflict(
            &http(StatusCode::Forbidden, Some("AuthorizationFailure")),
            false
        ));
    }
}
