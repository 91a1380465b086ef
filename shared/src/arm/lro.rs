//! Long-running operations.
//!
//! ARM signals them with `Azure-AsyncOperation` (poll it; body `{"status": ..., "error": ...}`)
//! and/or `Location` (poll it; 202 while running, 200/204 when done), each with an optional
//! `Retry-After` in seconds. Recovery Services' backup-now and restore answer 202 with a
//! `Location` to `.../protectedItems/{item}/operationResults/{id}` (and, per the spec examples,
//! an `Azure-AsyncOperation` to `.../operationsStatus/{id}`); the job id is only in the
//! `operationsStatus` body (`properties.jobId`, example ProtectedItemOperationStatus.json), so for
//! those we poll `operationsStatus` — derived from the `Location` when the header is missing.
//!
//! Handlers are short-lived: the `begin_*` operations return a [`PendingOperation`] (serializable,
//! to put in a follow-up message) and [`ArmClient::poll_once`] checks it once. The `*_and_wait`
//! forms and [`ArmClient::wait`] loop over `poll_once` until a deadline, for the CLI and tests.
//!
//! Poll URLs come from response headers; they are only followed when they point at the same
//! origin as the client's endpoint, so a bearer token never goes to a host we did not choose.

use super::client::{retry_after, ArmClient, Bucket, Call, RawResponse};
use super::error::ArmError;
use super::scope::SubscriptionId;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use url::Url;

/// How to read a poll response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PollKind {
    /// Body `{"status": "InProgress|Succeeded|Failed|Canceled", "error": {...}, "properties": {...}}`.
    /// Also Recovery Services `operationsStatus`.
    AzureAsyncOperation,
    /// 202 while running; 200/201/204 when done (body = result, if any).
    Location,
}

/// An operation that has been started and not yet seen finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    /// The operation that started it (for logs and stats).
    pub operation: String,
    #[serde(with = "url_string")]
    pub poll_url: Url,
    pub kind: PollKind,
    /// When to poll next, as the service asked.
    pub retry_after: Option<Duration>,
}

/// A finished operation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LroOutcome {
    /// The final body, if the service sent one (Location: the resource; Azure-AsyncOperation: the
    /// status document).
    pub body: Option<serde_json::Value>,
    /// Recovery Services job id (`properties.jobId` of `operationsStatus`).
    pub job_id: Option<String>,
}

/// Result of one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    Pending(PendingOperation),
    Done(LroOutcome),
}

/// An operation's immediate answer plus, if it continues asynchronously, how to follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Started<T> {
    /// The body of the initial response (PUT returns the resource in its provisioning state).
    pub resource: Option<T>,
    /// `None` when the operation completed synchronously.
    pub pending: Option<PendingOperation>,
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: Option<String>,
    error: Option<ErrorBody>,
    properties: Option<StatusProperties>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusProperties {
    job_id: Option<String>,
}

impl ArmClient {
    /// Reads the LRO headers of an initial response. `rs_status` derives the Recovery Services
    /// `operationsStatus` URL from a `.../operationResults/{id}` `Location`.
    pub(crate) fn pending_from(
        &self,
        operation: &str,
        resp: &RawResponse,
        rs_status: bool,
    ) -> Result<Option<PendingOperation>, ArmError> {
        let retry = retry_after(&resp.headers);
        if let Some(h) = resp.header("azure-asyncoperation") {
            return Ok(Some(PendingOperation {
                operation: operation.to_string(),
                poll_url: self.check_poll_url(h)?,
                kind: PollKind::AzureAsyncOperation,
                retry_after: retry,
            }));
        }
        if let Some(h) = resp.header("location") {
            let url = self.check_poll_url(h)?;
            if rs_status {
                if let Some(status_url) = operation_results_to_status(&url) {
                    return Ok(Some(PendingOperation {
                        operation: operation.to_string(),
                        poll_url: status_url,
                        kind: PollKind::AzureAsyncOperation,
                        retry_after: retry,
                    }));
                }
            }
            return Ok(Some(PendingOperation {
                operation: operation.to_string(),
                poll_url: url,
                kind: PollKind::Location,
                retry_after: retry,
            }));
        }
        if resp.status == 202 {
            return Err(ArmError::decode(
                operation,
                "202 Accepted without an Azure-AsyncOperation or Location header",
            ));
        }
        Ok(None)
    }

    fn check_poll_url(&self, raw: &str) -> Result<Url, ArmError> {
        let url = self
            .inner
            .endpoint
            .join(raw)
            .map_err(|_| ArmError::invalid("pollUrl", "must be a URL"))?;
        let ep = &self.inner.endpoint;
        let same_origin = url.scheme() == ep.scheme()
            && url.host_str().map(str::to_ascii_lowercase)
                == ep.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == ep.port_or_known_default();
        if !same_origin {
            return Err(ArmError::invalid(
                "pollUrl",
                format!(
                    "must be on the ARM endpoint's origin {} (got host {:?})",
                    ep.origin().ascii_serialization(),
                    url.host_str()
                ),
            ));
        }
        Ok(url)
    }

    /// Polls once. `Failed`/`Canceled` become `ArmError::OperationFailed` carrying the error code.
    pub async fn poll_once(&self, op: &PendingOperation) -> Result<PollOutcome, ArmError> {
        let url = self.check_poll_url(op.poll_url.as_str())?;
        let bucket = subscription_in_path(&url)
            .map(Bucket::Subscription)
            .unwrap_or(Bucket::Tenant);
        let call = Call::new("lro.poll", Method::GET, url, bucket);
        let resp = self.send(&call).await?;
        let retry = retry_after(&resp.headers).or(op.retry_after);
        let still = || {
            PollOutcome::Pending(PendingOperation {
                retry_after: retry,
                ..op.clone()
            })
        };
        match op.kind {
            PollKind::Location => {
                if resp.status == 202 {
                    return Ok(still());
                }
                let body = if resp.body.is_empty() {
                    None
                } else {
                    serde_json::from_slice(&resp.body).ok()
                };
                let job_id = body
                    .as_ref()
                    .and_then(|b: &serde_json::Value| b.pointer("/properties/jobId"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                Ok(PollOutcome::Done(LroOutcome { body, job_id }))
            }
            PollKind::AzureAsyncOperation => {
                if resp.status == 202 && resp.body.is_empty() {
                    return Ok(still());
                }
                let parsed: StatusBody = resp.json("lro.poll")?;
                let status = parsed.status.unwrap_or_default();
                match status.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(PollOutcome::Done(LroOutcome {
                        job_id: parsed.properties.and_then(|p| p.job_id),
                        body: serde_json::from_slice(&resp.body).ok(),
                    })),
                    "failed" | "canceled" | "cancelled" => {
                        let (code, message) = parsed
                            .error
                            .map(|e| (e.code, e.message))
                            .unwrap_or((None, None));
                        Err(ArmError::OperationFailed {
                            operation: op.operation.clone(),
                            status,
                            code,
                            message: message.unwrap_or_default(),
                        })
                    }
                    _ => Ok(still()),
                }
            }
        }
    }

    /// Polls until done or `deadline` has passed, sleeping as `Retry-After` asks (or
    /// `options.default_poll_interval`).
    pub async fn wait(
        &self,
        op: PendingOperation,
        deadline: Duration,
    ) -> Result<LroOutcome, ArmError> {
        let start = Instant::now();
        let mut op = op;
        loop {
            match self.poll_once(&op).await? {
                PollOutcome::Done(d) => return Ok(d),
                PollOutcome::Pending(next) => op = next,
            }
            let elapsed = start.elapsed();
            let pause = op
                .retry_after
                .unwrap_or(self.inner.options.default_poll_interval);
            if elapsed + pause > deadline {
                return Err(ArmError::Timeout {
                    operation: op.operation.clone(),
                    after: deadline,
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// PUTs `body` where ARM may finish the write asynchronously: returns the resource as the
    /// first answer shows it (if that has a body) and how to follow the rest.
    pub(crate) async fn begin_put<T: DeserializeOwned, B: Serialize>(
        &self,
        operation: &'static str,
        url: Url,
        bucket: Bucket,
        body: &B,
    ) -> Result<Started<T>, ArmError> {
        let call = Call::new(operation, Method::PUT, url, bucket).json(body)?;
        let resp = self.send(&call).await?;
        let pending = self.pending_from(operation, &resp, false)?;
        let resource = if resp.body.is_empty() {
            None
        } else {
            Some(resp.json(operation)?)
        };
        Ok(Started { resource, pending })
    }

    /// `Started` → waited outcome (for the `*_and_wait` forms).
    pub(crate) async fn finish<T>(
        &self,
        started: Started<T>,
        deadline: Duration,
    ) -> Result<(Option<T>, Option<LroOutcome>), ArmError> {
        match started.pending {
            None => Ok((started.resource, None)),
            Some(p) => {
                let out = self.wait(p, deadline).await?;
                Ok((started.resource, Some(out)))
            }
        }
    }
}

// `url`'s serde feature is not enabled in the workspace; a string round-trip is all we need.
mod url_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use url::Url;
    pub fn serialize<S: Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(u.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let s = String::deserialize(d)?;
        Url::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `.../operationResults/{id}` → `.../operationsStatus/{id}` (query kept).
fn operation_results_to_status(url: &Url) -> Option<Url> {
    let segs: Vec<&str> = url.path_segments()?.collect();
    let n = segs.len();
    if n < 2 || !segs[n - 2].eq_ignore_ascii_case("operationResults") {
        return None;
    }
    // The fabric-level refreshContainers result has no operationsStatus twin.
    if n >= 4 && segs[n - 4].eq_ignore_ascii_case("backupFabrics") {
        return None;
    }
    let mut out = url.clone();
    {
        let mut m = out.path_segments_mut().ok()?;
        m.pop().pop().push("operationsStatus").push(segs[n - 1]);
    }
    Some(out)
}

fn subscription_in_path(url: &Url) -> Option<SubscriptionId> {
    let mut segs = url.path_segments()?;
    while let Some(s) = segs.next() {
        if s.eq_ignore_ascii_case("subscriptions") {
            return segs.next().and_then(|s| SubscriptionId::parse(s).ok());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_operations_status() {
        let u = Url::parse("https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/backupFabrics/Azure/protectionContainers/c/protectedItems/i/operationResults/abc?api-version=2023-04-01").expect("url");
        let s = operation_results_to_status(&u).expect("derived");
        assert!(s
            .as_str()
            .ends_with("/protectedItems/i/operationsStatus/abc?api-version=2023-04-01"));
        let fabric = Url::parse("https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/backupFabrics/Azure/operationResults/abc").expect("url");
        assert!(operation_results_to_status(&fabric).is_none());
        assert_eq!(
            subscription_in_path(&u).map(|s| s.to_string()).as_deref(),
            Some("00000000-0000-0000-0000-000000000000")
        );
    }
}
