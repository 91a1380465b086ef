//! Reading a blob the control plane told us about (the template a restore-disks job wrote to the
//! staging account), and deleting a drill's staging blobs, with the process identity: Azure Storage accepts Entra ID bearer tokens
//! (scope `https://storage.azure.com/.default`, `x-ms-version` 2017-11-09 or later), so ade-backup
//! needs *Storage Blob Data Reader* on the staging account (and blob delete on a drill's) and
//! never handles account keys or SAS.

use super::{ArmClient, ArmError};
use crate::credential::STORAGE_SCOPE;
use crate::http::{read_bounded, BodyError};
use reqwest::Method;
use url::Url;

const STORAGE_VERSION: &str = "2021-08-06";
/// A JSON blob and the properties that say when and in which version it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonBlob {
    pub json: serde_json::Value,
    pub etag: Option<String>,
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Largest blob [`ArmClient::download_blob_json`] reads: a restore-disks template is tens of KiB.
pub const MAX_BLOB_BYTES: usize = 4 * 1024 * 1024;
/// Error code of a blob over [`MAX_BLOB_BYTES`].
pub const BLOB_TOO_LARGE: &str = "BlobTooLarge";

impl ArmClient {
    /// Maps `https://{account}.blob.core.windows.net/{path}` to the configured blob endpoint
    /// (`{blob_endpoint}/{account}/{path}`: the simulator, Azurite-style); unchanged otherwise.
    pub fn blob_url(&self, url: &Url) -> Result<Url, ArmError> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let Some(account) = host.strip_suffix(".blob.core.windows.net") else {
            return Err(ArmError::invalid(
                "blobUrl",
                "must be an https://{account}.blob.core.windows.net/ URL",
            ));
        };
        if url.scheme() != "https"
            || account.is_empty()
            || !account.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(ArmError::invalid(
                "blobUrl",
                "must be https with a storage account name",
            ));
        }
        let Some(base) = &self.inner.options.blob_endpoint else {
            let mut u = url.clone();
            u.set_query(None);
            return Ok(u);
        };
        let mut mapped = base.clone();
        let prefix: Vec<String> = base
            .path_segments()
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        {
            let mut segs = mapped
                .path_segments_mut()
                .map_err(|_| ArmError::invalid("blobEndpoint", "cannot take a path"))?;
            segs.clear().extend(prefix.iter()).push(account);
            for s in url.path_segments().into_iter().flatten() {
                segs.push(s);
            }
        }
        Ok(mapped)
    }

    /// Downloads a JSON blob (at most [`MAX_BLOB_BYTES`], refused from its `Content-Length` or
    /// cut off while streaming) with the process identity. A SAS query on the input URL is
    /// dropped, never sent, never logged.
    pub async fn download_blob_json(&self, url: &Url) -> Result<serde_json::Value, ArmError> {
        self.download_blob(url).await.map(|b| b.json)
    }

    /// [`ArmClient::download_blob_json`] with the blob's `ETag` and `Last-Modified`: whether it was
    /// written again after whoever should have written it.
    pub async fn download_blob(&self, url: &Url) -> Result<JsonBlob, ArmError> {
        const OP: &str = "storage.blob.get";
        let (target, resp) = self.blob_request(Method::GET, url, OP, "reading").await?;
        let status = resp.status().as_u16();
        let code = error_code(&resp);
        let message = format!("blob {} answered {status}", target.path());
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("etag");
        let last_modified = header("last-modified")
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(&v).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        match status {
            200 => match read_bounded(resp, MAX_BLOB_BYTES).await {
                Ok(body) => serde_json::from_slice(&body)
                    .map(|json| JsonBlob {
                        json,
                        etag,
                        last_modified,
                    })
                    .map_err(|e| ArmError::decode(OP, e)),
                Err(BodyError::Read(e)) => Err(ArmError::Transient {
                    operation: OP.into(),
                    status: Some(status),
                    code: None,
                    message: e.to_string(),
                }),
                Err(too_large) => Err(ArmError::Permanent {
                    operation: OP.into(),
                    status,
                    code: Some(BLOB_TOO_LARGE.into()),
                    message: format!("blob {}: {too_large}", target.path()),
                }),
            },
            404 => Err(ArmError::NotFound {
                operation: OP.into(),
                code,
                message,
            }),
            _ => Err(failure(OP, status, code, message)),
        }
    }

    /// One request to Blob storage with the process identity and the service version; the
    /// URL mapped by [`ArmClient::blob_url`] (SAS dropped). A connection failure is transient
    /// and its text carries no URL.
    async fn blob_request(
        &self,
        method: Method,
        url: &Url,
        op: &str,
        doing: &str,
    ) -> Result<(Url, reqwest::Response), ArmError> {
        let target = self.blob_url(url)?;
        let token = self.inner.credential.token(STORAGE_SCOPE).await?;
        let resp = self
            .inner
            .http
            .request(method, target.clone())
            .bearer_auth(token.secret())
            .header("x-ms-version", STORAGE_VERSION)
            .send()
            .await
            .map_err(|e| ArmError::Transient {
                operation: op.into(),
                status: None,
                code: None,
                message: format!("{doing} {}: {}", target.path(), e.without_url()),
            })?;
        Ok((target, resp))
    }
}

/// Blob storage's `x-ms-error-code`.
fn error_code(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A non-success answer: 408, 429 and 5xx are transient, anything else permanent.
fn failure(op: &str, status: u16, code: Option<String>, message: String) -> ArmError {
    match status {
        408 | 429 | 500..=599 => ArmError::Transient {
            operation: op.into(),
            status: Some(status),
            code,
            message,
        },
        _ => ArmError::Permanent {
            operation: op.into(),
            status,
            code,
            message,
        },
    }
}

impl ArmClient {
    /// Delete Blob (`DELETE https://{account}.blob.core.windows.net/{container}/{blob}`, 202
    /// Accepted) with the process identity: a drill removes its restore job's staging blobs (it
    /// needs `…/containers/blobs/delete` on the staging account). `Ok(false)`: it was not there
    /// (404), so a repeat converges. A SAS query on the URL is dropped, never sent.
    pub async fn delete_blob(&self, url: &Url) -> Result<bool, ArmError> {
        const OP: &str = "storage.blob.delete";
        let (target, resp) = self
            .blob_request(Method::DELETE, url, OP, "deleting")
            .await?;
        let status = resp.status().as_u16();
        let code = error_code(&resp);
        let message = format!("blob {} answered {status} to a delete", target.path());
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(failure(OP, status, code, message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::arm::{ArmClient, ArmClientOptions};
    use crate::credential::{AccessToken, StaticToken};
    use std::sync::Arc;
    use url::Url;

    fn client(blob: Option<&str>) -> ArmClient {
        ArmClient::new(
            Url::parse("http://127.0.0.1:1/").expect("url"),
            Arc::new(StaticToken(AccessToken::new("t"))),
            ArmClientOptions {
                blob_endpoint: blob.map(|b| Url::parse(b).expect("url")),
                ..Default::default()
            },
        )
        .expect("client")
    }

    #[test]
    fn blob_urls_map_to_the_endpoint_and_drop_any_sas() {
        let u =
            Url::parse("https://stg1.blob.core.windows.net/c1/azuredeploy.json?sv=1&sig=secret")
                .expect("url");
        assert_eq!(
            client(None).blob_url(&u).expect("ok").as_str(),
            "https://stg1.blob.core.windows.net/c1/azuredeploy.json"
        );
        for base in [
            "http://127.0.0.1:7/_blob/",
            "http://127.0.0.1:7//_blob",
            "http://127.0.0.1:7/_blob",
        ] {
            assert_eq!(
                client(Some(base)).blob_url(&u).expect("ok").as_str(),
                "http://127.0.0.1:7/_blob/stg1/c1/azuredeploy.json",
                "{base}"
            );
        }
        for bad in [
            "https://evil.example.com/c/b",
            "http://stg1.blob.core.windows.net/c/b",
        ] {
            assert!(
                client(None)
                    .blob_url(&Url::parse(bad).expect("url"))
                    .is_err(),
                "{bad}"
            );
        }
    }
}
