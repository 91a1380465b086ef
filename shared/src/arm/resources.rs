//! Microsoft.Resources deployments: redeploy a VM from the template a restore job produced.
//!
//! Shapes: resources 2024-03-01 examples PutDeploymentResourceGroup.json,
//! PutDeploymentResourceGroupTemplateSpecsWithId.json (templateLink), GetDeploymentResourceGroup*.json.

use super::client::{ArmClient, Bucket};
use super::common::{lenient_time, null_vec, SubResource};
use super::error::ArmError;
use super::lro::Started;
use super::scope::{check_segment, ResourceGroupRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const RESOURCES_API_VERSION: &str = "2024-03-01";

/// `PUT deployments/{name}` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequest {
    pub properties: DeploymentRequestProperties,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequestProperties {
    /// Always `Incremental` (never deletes what the template does not mention).
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_link: Option<TemplateLink>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

/// A template URL; it usually carries a SAS, so `Debug` shows only scheme, host and path.
#[derive(Clone, PartialEq, Serialize)]
pub struct TemplateLink {
    pub uri: String,
}

impl std::fmt::Debug for TemplateLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = url::Url::parse(&self.uri)
            .map(|u| {
                format!(
                    "{}://{}{}",
                    u.scheme(),
                    u.host_str().unwrap_or(""),
                    u.path()
                )
            })
            .unwrap_or_else(|_| "<unparseable>".into());
        write!(f, "TemplateLink({shown}?<redacted>)")
    }
}

impl DeploymentRequest {
    pub fn inline(template: serde_json::Value, parameters: Option<serde_json::Value>) -> Self {
        Self {
            properties: DeploymentRequestProperties {
                mode: "Incremental",
                template: Some(template),
                template_link: None,
                parameters,
            },
        }
    }
    pub fn linked(uri: String, parameters: Option<serde_json::Value>) -> Self {
        Self {
            properties: DeploymentRequestProperties {
                mode: "Incremental",
                template: None,
                template_link: Some(TemplateLink { uri }),
                parameters,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Deployment {
    pub id: Option<String>,
    pub name: Option<String>,
    pub properties: DeploymentProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeploymentProperties {
    /// `Accepted`, `Running`, `Succeeded`, `Failed`, `Canceled`...
    pub provisioning_state: Option<String>,
    pub correlation_id: Option<String>,
    #[serde(deserialize_with = "lenient_time")]
    pub timestamp: Option<DateTime<Utc>>,
    pub duration: Option<String>,
    pub outputs: Option<serde_json::Value>,
    #[serde(deserialize_with = "null_vec")]
    pub output_resources: Vec<SubResource>,
    pub error: Option<DeploymentError>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeploymentError {
    pub code: Option<String>,
    pub message: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub details: Vec<DeploymentError>,
}

impl Deployment {
    pub fn state(&self) -> Option<&str> {
        self.properties.provisioning_state.as_deref()
    }
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state().map(str::to_ascii_lowercase).as_deref(),
            Some("succeeded" | "failed" | "canceled")
        )
    }
    /// The innermost error code (the outer one is usually just `DeploymentFailed`).
    pub fn root_error_code(&self) -> Option<&str> {
        let mut e = self.properties.error.as_ref()?;
        while let Some(d) = e.details.first() {
            e = d;
        }
        e.code.as_deref()
    }
}

impl ArmClient {
    fn deployment_url(&self, rg: &ResourceGroupRef, name: &str) -> Result<url::Url, ArmError> {
        check_segment("deploymentName", name)?;
        if name.len() > 64 {
            return Err(ArmError::invalid(
                "deploymentName",
                "must be at most 64 characters",
            ));
        }
        let tail = [
            "resourcegroups",
            rg.name(),
            "providers",
            "Microsoft.Resources",
            "deployments",
            name,
        ];
        self.subscription_url(rg.subscription(), &tail, RESOURCES_API_VERSION, &[])
    }

    /// `PUT .../deployments/{name}` (idempotent by name). Follow the returned operation, or
    /// re-read with `get_deployment`.
    pub async fn begin_put_deployment(
        &self,
        rg: &ResourceGroupRef,
        name: &str,
        request: &DeploymentRequest,
    ) -> Result<Started<Deployment>, ArmError> {
        let url = self.deployment_url(rg, name)?;
        let bucket = Bucket::Subscription(rg.subscription());
        self.begin_put("resources.deployment.put", url, bucket, request)
            .await
    }

    /// `GET .../deployments/{name}`.
    pub async fn get_deployment(
        &self,
        rg: &ResourceGroupRef,
        name: &str,
    ) -> Result<Deployment, ArmError> {
        let url = self.deployment_url(rg, name)?;
        let bucket = Bucket::Subscription(rg.subscription());
        self.get_json("resources.deployment.get", url, bucket).await
    }

    /// PUT and wait; returns the deployment read back (check `state()`: a failed deployment is
    /// returned as `ArmError::OperationFailed` when the async status says so).
    pub async fn put_deployment_and_wait(
        &self,
        rg: &ResourceGroupRef,
        name: &str,
        request: &DeploymentRequest,
        deadline: Duration,
    ) -> Result<Deployment, ArmError> {
        let started = self.begin_put_deployment(rg, name, request).await?;
        self.finish(started, deadline).await?;
        self.get_deployment(rg, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_link_debug_hides_sas() {
        let r = DeploymentRequest::linked(
            "https://sa.blob.core.windows.net/c/t.json?sv=2020&sig=SECRET".into(),
            None,
        );
        let d = format!("{r:?}");
        assert!(!d.contains("SECRET"), "{d}");
        assert!(d.contains("sa.blob.core.windows.net/c/t.json"));
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["properties"]["mode"], "Incremental");
        assert!(v["properties"]["templateLink"]["uri"]
            .as_str()
            .is_some_and(|s| s.contains("sig=")));
    }
}
