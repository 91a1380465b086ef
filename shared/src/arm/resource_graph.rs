//! Azure Resource Graph: fleet discovery, 1,000 rows a page, following `$skipToken`. A fleet is
//! read as a stream ([`ArmClient::resource_graph_each`]): each page's rows are handed over one
//! by one while its body is decoded, so neither a page nor the fleet is ever held as rows.
//!
//! Shapes: resourcegraph 2022-10-01 examples ResourcesFirstPageQuery.json and
//! ResourcesNextPageQuery.json (`options.$skipToken` in, `$skipToken` out, absent on the last page).

use super::client::{ArmClient, Bucket, Call};
use super::error::ArmError;
use super::scope::{ManagementGroupId, SubscriptionId};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const RESOURCE_GRAPH_API_VERSION: &str = "2022-10-01";
pub const PAGE_SIZE: u32 = 1000;

/// One page of results.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGraphPage {
    #[serde(default)]
    pub total_records: Option<i64>,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub data: Vec<serde_json::Value>,
    #[serde(default, rename = "$skipToken")]
    pub skip_token: Option<String>,
}

/// Where a query looks: subscriptions, or management groups (every subscription below them).
/// Example `ResourcesMgBasicQuery.json` (2021-03-01+) sends `managementGroups` instead of
/// `subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphScope {
    Subscriptions(Vec<SubscriptionId>),
    ManagementGroups(Vec<ManagementGroupId>),
}

impl GraphScope {
    fn is_empty(&self) -> bool {
        match self {
            Self::Subscriptions(s) => s.is_empty(),
            Self::ManagementGroups(m) => m.is_empty(),
        }
    }
}

impl std::fmt::Display for GraphScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscriptions(s) => write!(f, "{} subscription(s)", s.len()),
            Self::ManagementGroups(m) => {
                let names: Vec<&str> = m.iter().map(ManagementGroupId::as_str).collect();
                write!(f, "management group(s) {}", names.join(", "))
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    management_groups: Option<Vec<String>>,
    query: &'a str,
    options: QueryOptions<'a>,
}

#[derive(Serialize)]
struct QueryOptions<'a> {
    #[serde(rename = "$top")]
    top: u32,
    #[serde(rename = "$skipToken", skip_serializing_if = "Option::is_none")]
    skip_token: Option<&'a str>,
    #[serde(rename = "resultFormat")]
    result_format: &'static str,
}

/// The queries the project sends (the subset the simulator implements; docs/arm-surface.md).
pub mod queries {
    pub const VIRTUAL_MACHINES: &str =
        "resources | where type =~ 'microsoft.compute/virtualmachines'";
    pub const ADE_EXTENSIONS: &str = "resources | where type =~ 'microsoft.compute/virtualmachines/extensions' and properties.publisher =~ 'Microsoft.Azure.Security'";
    pub const KEY_VAULTS: &str = "resources | where type =~ 'microsoft.keyvault/vaults'";
    pub const PROTECTED_ITEMS: &str = "recoveryservicesresources | where type =~ 'microsoft.recoveryservices/vaults/backupfabrics/protectioncontainers/protecteditems'";

    /// Role assignments of one principal (a GUID, so nothing can be injected into the query).
    pub fn role_assignments_of(principal: uuid::Uuid) -> String {
        format!(
            "authorizationresources | where type =~ 'microsoft.authorization/roleassignments' and properties.principalId =~ '{}'",
            principal.hyphenated()
        )
    }
}

impl ArmClient {
    /// One page (`skip_token` from the previous page). Tenant-level: uses the tenant bucket
    /// and Resource Graph's per-user quota. Safe to repeat (a read).
    pub async fn resource_graph_page(
        &self,
        scope: &GraphScope,
        query: &str,
        skip_token: Option<&str>,
    ) -> Result<ResourceGraphPage, ArmError> {
        let call = self.resource_graph_call(scope, query, skip_token)?;
        self.send_json(&call).await
    }

    /// One page whose rows are handed to `row` one by one as the body is decoded (the page's
    /// rows never exist together). Returns the page's `$skipToken` and row count.
    async fn resource_graph_page_each(
        &self,
        scope: &GraphScope,
        query: &str,
        skip_token: Option<&str>,
        row: &mut (dyn FnMut(serde_json::Value) + Send),
    ) -> Result<(Option<String>, u64), ArmError> {
        let call = self.resource_graph_call(scope, query, skip_token)?;
        let raw = self.send(&call).await?;
        let mut de = serde_json::Deserializer::from_slice(&raw.body);
        let page = serde::de::DeserializeSeed::deserialize(PageSeed { row }, &mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|e| ArmError::decode("resourceGraph.query", e))?;
        Ok(page)
    }

    /// Every row, following `$skipToken` to the end, handed to `row` as each page arrives: a
    /// page is dropped before the next is asked for, so a fleet is never held whole. Returns
    /// the number of rows.
    pub async fn resource_graph_each(
        &self,
        scope: &GraphScope,
        query: &str,
        mut row: impl FnMut(serde_json::Value) + Send,
    ) -> Result<u64, ArmError> {
        let row: &mut (dyn FnMut(serde_json::Value) + Send) = &mut row;
        let mut token: Option<String> = None;
        let mut pages = 0u32;
        let mut rows = 0u64;
        loop {
            pages += 1;
            if pages > 100_000 {
                return Err(ArmError::decode(
                    "resourceGraph.query",
                    "skipToken never ends",
                ));
            }
            let (next, n) = self
                .resource_graph_page_each(scope, query, token.as_deref(), row)
                .await?;
            rows += n;
            match next.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                Some(_) => {
                    return Err(ArmError::decode(
                        "resourceGraph.query",
                        "the same $skipToken came back twice",
                    ))
                }
                None => return Ok(rows),
            }
        }
    }

    /// Every row, following `$skipToken` to the end (for results known to be small; a fleet
    /// goes through [`ArmClient::resource_graph_each`]).
    pub async fn resource_graph_query(
        &self,
        scope: &GraphScope,
        query: &str,
    ) -> Result<Vec<serde_json::Value>, ArmError> {
        let mut rows = Vec::new();
        self.resource_graph_each(scope, query, |r| rows.push(r))
            .await?;
        Ok(rows)
    }

    /// The POST of one page.
    fn resource_graph_call(
        &self,
        scope: &GraphScope,
        query: &str,
        skip_token: Option<&str>,
    ) -> Result<Call, ArmError> {
        if scope.is_empty() {
            return Err(ArmError::invalid(
                "scope",
                "at least one subscription or management group is required",
            ));
        }
        let url = self.arm_url(
            ["providers", "Microsoft.ResourceGraph", "resources"],
            RESOURCE_GRAPH_API_VERSION,
            &[],
        )?;
        let (subscriptions, management_groups) = match scope {
            GraphScope::Subscriptions(s) => (Some(s.iter().map(|s| s.to_string()).collect()), None),
            GraphScope::ManagementGroups(m) => {
                (None, Some(m.iter().map(|m| m.to_string()).collect()))
            }
        };
        let body = QueryRequest {
            subscriptions,
            management_groups,
            query,
            options: QueryOptions {
                top: PAGE_SIZE,
                skip_token,
                result_format: "objectArray",
            },
        };
        Ok(Call::new(
            "resourceGraph.query",
            Method::POST,
            url,
            Bucket::ResourceGraph,
        )
        .json(&body)?
        .safe_to_repeat())
    }

    /// Every row, decoded as `T` (a row that does not fit is a `Decode` error naming its index).
    pub async fn resource_graph_query_as<T: DeserializeOwned>(
        &self,
        scope: &GraphScope,
        query: &str,
    ) -> Result<Vec<T>, ArmError> {
        self.resource_graph_query(scope, query)
            .await?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::from_value(v)
                    .map_err(|e| ArmError::decode("resourceGraph.query", format!("row {i}: {e}")))
            })
            .collect()
    }
}

/// Decodes a page object, handing each element of `data` to `row` as it is parsed.
struct PageSeed<'a> {
    row: &'a mut (dyn FnMut(serde_json::Value) + Send),
}

impl<'de> serde::de::DeserializeSeed<'de> for PageSeed<'_> {
    type Value = (Option<String>, u64);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PageSeed<'_> {
    type Value = (Option<String>, u64);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Resource Graph page object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut token, mut rows) = (None, 0u64);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => {
                    rows = map.next_value_seed(RowsSeed {
                        row: &mut *self.row,
                    })?
                }
                "$skipToken" => token = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok((token, rows))
    }
}

/// The `data` array, element by element.
struct RowsSeed<'a> {
    row: &'a mut (dyn FnMut(serde_json::Value) + Send),
}

impl<'de> serde::de::DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = u64;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowsSeed<'_> {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while let Some(v) = seq.next_element::<serde_json::Value>()? {
            (self.row)(v);
            n += 1;
        }
        Ok(n)
    }
}

/// The ARM resource shape every row has.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphRow {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub resource_group: Option<String>,
    #[serde(default)]
    pub tags: Option<serde_json::Value>,
    #[serde(default)]
    pub properties: Option<serde_json::Value>,
}
