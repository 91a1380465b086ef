//! Microsoft.Features: a subscription's registration state of a preview/opt-in feature. The fleet
//! report reads `Microsoft.Compute/EncryptionAtHost`, which a subscription must register before
//! any VM in it can use encryption at host (Microsoft Learn, "Enable end-to-end encryption using
//! encryption at host": `az feature register --namespace Microsoft.Compute --name EncryptionAtHost`).
//!
//! Shape: azure-rest-api-specs resources `Microsoft.Features/stable/2021-07-01/features.json`,
//! operation `Features_Get` (`GET /subscriptions/{s}/providers/Microsoft.Features/providers/{ns}/features/{name}`
//! → one `FeatureResult`, as the items of example `listProviderFeatures.json`:
//! `{"properties": {"state": "Registered"}, "id", "type": "Microsoft.Features/providers/features",
//! "name": "{ns}/{name}"}`).

use super::client::{ArmClient, Bucket};
use super::error::ArmError;
use super::scope::{check_segment, SubscriptionId};
use serde::{Deserialize, Serialize};

pub const FEATURES_API_VERSION: &str = "2021-07-01";
/// The feature encryption at host needs, as (namespace, name).
pub const ENCRYPTION_AT_HOST_FEATURE: (&str, &str) = ("Microsoft.Compute", "EncryptionAtHost");

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FeatureResult {
    pub id: Option<String>,
    /// `{namespace}/{feature}`.
    pub name: Option<String>,
    pub properties: FeatureProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FeatureProperties {
    /// `NotRegistered`, `Registering`, `Registered`, `Unregistering`, `Unregistered`, `Pending`,
    /// `NotSpecified`.
    pub state: Option<String>,
}

/// What the report needs to know of a feature's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureState {
    Registered,
    /// `Registering` or `Pending`: asked for, not usable yet.
    Registering,
    /// Any other state (`NotRegistered`, `Unregistered`, ...).
    NotRegistered,
}

impl FeatureResult {
    pub fn state(&self) -> FeatureState {
        match self
            .properties
            .state
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            Some(s) if s == "registered" => FeatureState::Registered,
            Some(s) if s == "registering" || s == "pending" => FeatureState::Registering,
            _ => FeatureState::NotRegistered,
        }
    }
}

impl ArmClient {
    /// `GET /subscriptions/{s}/providers/Microsoft.Features/providers/{ns}/features/{name}`.
    pub async fn get_feature(
        &self,
        subscription: SubscriptionId,
        namespace: &str,
        feature: &str,
    ) -> Result<FeatureResult, ArmError> {
        check_segment("namespace", namespace)?;
        check_segment("feature", feature)?;
        let url = self.subscription_url(
            subscription,
            &[
                "providers",
                "Microsoft.Features",
                "providers",
                namespace,
                "features",
                feature,
            ],
            FEATURES_API_VERSION,
            &[],
        )?;
        self.get_json("features.get", url, Bucket::Subscription(subscription))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape_and_states() {
        let body = r#"{"properties":{"state":"Registered"},"id":"/subscriptions/ff23096b-f5a2-46ea-bd62-59c3e93fef9a/providers/Microsoft.Features/providers/Microsoft.Compute/features/EncryptionAtHost","type":"Microsoft.Features/providers/features","name":"Microsoft.Compute/EncryptionAtHost"}"#;
        let f: FeatureResult = serde_json::from_str(body).expect("parses");
        assert_eq!(f.state(), FeatureState::Registered);
        for (s, want) in [
            ("NotRegistered", FeatureState::NotRegistered),
            ("Registering", FeatureState::Registering),
            ("Pending", FeatureState::Registering),
            ("Unregistered", FeatureState::NotRegistered),
        ] {
            let f: FeatureResult =
                serde_json::from_value(serde_json::json!({"properties": {"state": s}}))
                    .expect("parses");
            assert_eq!(f.state(), want, "{s}");
        }
        assert_eq!(
            FeatureResult::default().state(),
            FeatureState::NotRegistered
        );
    }
}
