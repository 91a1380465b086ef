//! Scopes above a resource (subscription, resource group) and the URL builder every operation
//! uses. `crate::ids::ResourceId` always names a resource inside a resource group; role
//! definitions, vault lists and deployments need the levels above it, so they get typed,
//! validated values here too — nothing reaches a URL path unvalidated.

use super::error::ArmError;
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::fmt;
use url::Url;

/// A subscription id (always a GUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(uuid::Uuid);

impl SubscriptionId {
    pub fn parse(s: &str) -> Result<Self, ArmError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ArmError::invalid("subscriptionId", format!("must be a GUID (got {s:?})")))
    }
    pub fn of(id: &ResourceId) -> Result<Self, ArmError> {
        Self::parse(id.subscription())
    }
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Self(u)
    }
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}
impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionId({self})")
    }
}

/// The naming rule resource groups and management groups share: 1-90 of letters, digits,
/// `-_.()`, not ending in `.`.
fn is_arm_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 90
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

/// A management group name (its id's last segment): 1-90 of letters, digits, `-_.()`, not ending
/// in `.` (Azure's naming rule), so it can go into a request body or URL unescaped.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ManagementGroupId(String);

impl ManagementGroupId {
    pub fn parse(s: &str) -> Result<Self, ArmError> {
        let name = s
            .trim()
            .rsplit("/managementGroups/")
            .next()
            .unwrap_or_default();
        if !is_arm_group_name(name) {
            return Err(ArmError::invalid(
                "managementGroup",
                format!("must be a management group name or id (1-90 of letters, digits, -_.(), not ending in '.'), got {s:?}"),
            ));
        }
        Ok(Self(name.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ManagementGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A resource group: subscription + validated name (1-90 of letters, digits, `-_.()`, not
/// ending in `.`, as ARM requires).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ResourceGroupRef {
    subscription: SubscriptionId,
    name: String,
}

impl ResourceGroupRef {
    pub fn new(subscription: SubscriptionId, name: &str) -> Result<Self, ArmError> {
        if !is_arm_group_name(name) {
            return Err(ArmError::invalid(
                "resourceGroup",
                format!("must be 1-90 letters, digits or -_.() not ending in '.' (got {name:?})"),
            ));
        }
        Ok(Self {
            subscription,
            name: name.to_string(),
        })
    }
    /// The resource group a resource lives in.
    pub fn of(id: &ResourceId) -> Result<Self, ArmError> {
        Self::new(SubscriptionId::of(id)?, id.resource_group())
    }
    pub fn subscription(&self) -> SubscriptionId {
        self.subscription
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A plain name segment (extension name, deployment name, job id, recovery point id...): the same
/// rule as a `ResourceId` segment — letters, digits, `-_.();`, not `.`/`..`, at most 260 chars.
pub(crate) fn check_segment(field: &'static str, s: &str) -> Result<(), ArmError> {
    let ok = !s.is_empty()
        && s.len() <= 260
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')' | ';'));
    if ok {
        Ok(())
    } else {
        Err(ArmError::invalid(
            field,
            format!("must be 1-260 letters, digits or -_.(); and not '.'/'..' (got {s:?})"),
        ))
    }
}

/// Fails unless `id` is of `full_type` (case-insensitive), so a key vault id cannot be sent to a
/// VM operation.
pub(crate) fn expect_type(
    field: &'static str,
    id: &ResourceId,
    full_type: &str,
) -> Result<(), ArmError> {
    if id.is_type(full_type) {
        Ok(())
    } else {
        Err(ArmError::invalid(
            field,
            format!("must be a {full_type} id (got type {})", id.full_type()),
        ))
    }
}

/// Appends already-validated segments to a base URL (which may carry its own path prefix, e.g. a
/// simulator mounted under `/arm`) and sets `api-version` plus extra query pairs.
pub(crate) fn build_url<'a>(
    base: &Url,
    segments: impl IntoIterator<Item = &'a str>,
    api_version: Option<&str>,
    query: &[(&str, &str)],
) -> Result<Url, ArmError> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|_| ArmError::invalid("endpoint", "must be an http(s) base URL"))?;
        segs.pop_if_empty();
        for s in segments {
            segs.push(s);
        }
    }
    {
        let mut q = url.query_pairs_mut();
        if let Some(v) = api_version {
            q.append_pair("api-version", v);
        }
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// The path segments of a resource id (after the leading `/`).
pub(crate) fn id_segments(id: &ResourceId) -> Vec<String> {
    id.to_string()
        .trim_start_matches('/')
        .split('/')
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls_under_a_prefix() {
        let base = Url::parse("http://127.0.0.1:9000/arm/").expect("url");
        let id = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1").expect("id");
        let segs = id_segments(&id);
        let url = build_url(
            &base,
            segs.iter().map(String::as_str),
            Some("2024-07-01"),
            &[("$expand", "instanceView")],
        )
        .expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9000/arm/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-07-01&%24expand=instanceView"
        );
    }

    #[test]
    fn segments_reject_traversal() {
        for bad in ["", "..", "a/b", "a?b", "a b", "x%2f"] {
            assert!(check_segment("name", bad).is_err(), "{bad}");
        }
        assert!(check_segment("name", "vm;iaasvmcontainerv2;rg;vm").is_ok());
        assert!(
            ResourceGroupRef::new(SubscriptionId::from_uuid(uuid::Uuid::nil()), "rg.").is_err()
        );
    }
}
