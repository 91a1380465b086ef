//! Shapes shared by several providers, lenient field decoders, and `nextLink` paging.

use super::client::{ArmClient, Bucket, Call};
use super::error::ArmError;
use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

/// `{"id": "..."}` references (`sourceVault`, `managedDisk`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One page of an ARM list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListPage<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

/// Azure timestamps come as RFC 3339 with 7 fractional digits, sometimes without an offset
/// (Recovery Services) — read both as UTC; anything else becomes `None` rather than failing the
/// whole document.
pub(crate) fn lenient_time<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(v.as_ref().and_then(|v| v.as_str()).and_then(parse_time))
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// A code that is a string in some providers and a number in others (Recovery Services
/// `errorCode`).
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// `null` → empty vector (Azure sends both `[]` and `null`).
pub(crate) fn null_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

impl ArmClient {
    /// GETs `first` and follows `nextLink`s (same origin only) until the last page.
    pub(crate) async fn list_all<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        first: Url,
        bucket: Bucket,
        graph: bool,
    ) -> Result<Vec<T>, ArmError> {
        match self
            .list_up_to(operation, first, bucket, graph, 10_000)
            .await?
        {
            (out, false) => Ok(out),
            (_, true) => Err(ArmError::decode(
                operation,
                "more than 10000 pages; nextLink loops",
            )),
        }
    }

    /// Like [`Self::list_all`], reading at most `max_pages` pages: the items and whether more
    /// pages were left unread (a bounded read of a list that may be long).
    pub(crate) async fn list_up_to<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        first: Url,
        bucket: Bucket,
        graph: bool,
        max_pages: u32,
    ) -> Result<(Vec<T>, bool), ArmError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0u32;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > max_pages {
                return Ok((out, true));
            }
            let mut call = Call::new(operation, Method::GET, url.clone(), bucket);
            if graph {
                call = call.graph();
            }
            let page: ListPage<T> = self.send_json(&call).await?;
            out.extend(page.value);
            if let Some(link) = page.next_link.filter(|l| !l.is_empty()) {
                let base = if graph {
                    &self.inner.options.graph_endpoint
                } else {
                    &self.inner.endpoint
                };
                let u = base
                    .join(&link)
                    .map_err(|_| ArmError::decode(operation, "nextLink is not a URL"))?;
                if u.origin() != base.origin() {
                    return Err(ArmError::decode(
                        operation,
                        format!(
                            "nextLink leaves the endpoint's origin (host {:?})",
                            u.host_str()
                        ),
                    ));
                }
                next = Some(u);
            }
        }
        Ok((out, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_and_without_offset() {
        assert!(parse_time("2017-12-21T22:48:25.4353958Z").is_some());
        assert!(parse_time("2018-01-08T06:49:52.9906251").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
