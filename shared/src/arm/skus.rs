//! Microsoft.Compute Resource SKUs: which VM sizes a region offers and their capabilities (the
//! fleet report reads `EncryptionAtHostSupported`, the capability Azure documents for finding the
//! sizes that support encryption at host).
//!
//! Shape: azure-rest-api-specs compute `ResourceSkus/stable/2021-07-01` example
//! `ListAvailableResourceSkusForARegion.json` (`GET /subscriptions/{s}/providers/Microsoft.Compute/skus?api-version=2021-07-01&$filter=location eq '{region}'`).

use super::client::{ArmClient, Bucket};
use super::common::null_vec;
use super::error::ArmError;
use super::scope::{check_segment, SubscriptionId};
use serde::{Deserialize, Serialize};

pub const RESOURCE_SKUS_API_VERSION: &str = "2021-07-01";
/// The capability naming encryption-at-host support.
pub const ENCRYPTION_AT_HOST_SUPPORTED: &str = "EncryptionAtHostSupported";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceSku {
    /// `virtualMachines`, `disks`, ...
    pub resource_type: Option<String>,
    /// The size, e.g. `Standard_D2s_v3`.
    pub name: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub locations: Vec<String>,
    #[serde(deserialize_with = "null_vec")]
    pub capabilities: Vec<SkuCapability>,
    #[serde(deserialize_with = "null_vec")]
    pub restrictions: Vec<SkuRestriction>,
}

/// `ResourceSkuRestrictions`: where the SKU cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SkuRestriction {
    /// `Location` or `Zone`.
    #[serde(rename = "type")]
    pub restriction_type: Option<String>,
    /// The locations (or zones) the restriction applies to.
    #[serde(deserialize_with = "null_vec")]
    pub values: Vec<String>,
    /// `QuotaId` or `NotAvailableForSubscription`.
    pub reason_code: Option<String>,
}

/// The restriction reason meaning the subscription cannot deploy the size there.
pub const NOT_AVAILABLE_FOR_SUBSCRIPTION: &str = "NotAvailableForSubscription";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SkuCapability {
    pub name: String,
    pub value: String,
}

impl ResourceSku {
    /// A capability's value (names compared case-insensitively).
    pub fn capability(&self, name: &str) -> Option<&str> {
        self.capabilities
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map(|c| c.value.as_str())
    }

    /// `EncryptionAtHostSupported`: `Some(true|false)` when the SKU states it.
    pub fn encryption_at_host_supported(&self) -> Option<bool> {
        self.capability(ENCRYPTION_AT_HOST_SUPPORTED)
            .map(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The size is restricted for this subscription in `location` (a `Location` restriction
    /// naming it with `NotAvailableForSubscription`): it cannot be (re)allocated there.
    pub fn restricted_in(&self, location: &str) -> bool {
        self.restrictions.iter().any(|r| {
            r.restriction_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("Location"))
                && r.reason_code
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(NOT_AVAILABLE_FOR_SUBSCRIPTION))
                && r.values.iter().any(|v| v.eq_ignore_ascii_case(location))
        })
    }

    pub fn is_virtual_machine(&self) -> bool {
        self.resource_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("virtualMachines"))
    }
}

impl ArmClient {
    /// `GET /subscriptions/{s}/providers/Microsoft.Compute/skus?$filter=location eq '{region}'`
    /// (all pages).
    pub async fn list_resource_skus(
        &self,
        subscription: SubscriptionId,
        location: &str,
    ) -> Result<Vec<ResourceSku>, ArmError> {
        check_segment("location", location)?;
        let filter = format!("location eq '{location}'");
        let url = self.subscription_url(
            subscription,
            &["providers", "Microsoft.Compute", "skus"],
            RESOURCE_SKUS_API_VERSION,
            &[("$filter", &filter)],
        )?;
        self.list_all(
            "compute.skus.list",
            url,
            Bucket::Subscription(subscription),
            false,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape() {
        let body = r#"{"value":[{"resourceType":"virtualMachines","name":"Standard_A1_v2","tier":"Standard","size":"A1_v2","family":"standardAv2Family","locations":["westus"],"locationInfo":[{"location":"westus","zones":[]}],"capabilities":[{"name":"MaxResourceVolumeMB","value":"10240"},{"name":"EncryptionAtHostSupported","value":"False"}],"restrictions":[]},{"resourceType":"disks","name":"Premium_LRS","locations":["westus"],"capabilities":null,"restrictions":null}]}"#;
        #[derive(Deserialize)]
        struct Page {
            value: Vec<ResourceSku>,
        }
        let page: Page = serde_json::from_str(body).expect("parses");
        assert_eq!(page.value[0].encryption_at_host_supported(), Some(false));
        assert!(page.value[0].is_virtual_machine());
        assert_eq!(page.value[1].encryption_at_host_supported(), None);
        assert!(!page.value[1].is_virtual_machine());
        assert!(!page.value[0].restricted_in("westus"));
    }

    #[test]
    fn a_location_restriction_for_the_subscription_restricts_the_size() {
        let sku: ResourceSku = serde_json::from_value(serde_json::json!({
            "resourceType": "virtualMachines", "name": "Standard_D2s_v3",
            "restrictions": [
                {"type": "Zone", "values": ["northeurope"], "restrictionInfo": {"locations": ["northeurope"], "zones": ["1"]}, "reasonCode": "NotAvailableForSubscription"},
                {"type": "Location", "values": ["westeurope"], "restrictionInfo": {"locations": ["westeurope"]}, "reasonCode": "NotAvailableForSubscription"}
            ]
        }))
        .expect("parses");
        assert!(sku.restricted_in("WestEurope"));
        assert!(
            !sku.restricted_in("northeurope"),
            "a zone restriction leaves the region usable"
        );
    }
}
