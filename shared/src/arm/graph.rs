//! Microsoft Graph: the object id of a service principal by its appId (the Backup Management
//! Service's object id differs per tenant).

use super::client::{ArmClient, Bucket, Call};
use super::error::ArmError;
use super::scope::build_url;
use reqwest::Method;
use serde::Deserialize;

/// appId of the first-party "Backup Management Service" app.
pub const BACKUP_MANAGEMENT_SERVICE_APP_ID: uuid::Uuid =
    uuid::Uuid::from_u128(0x262044b1_e2ce_469f_a196_69ab7ada62d3);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    pub id: String,
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

impl ArmClient {
    /// `GET {graph}/v1.0/servicePrincipals(appId='{appId}')` → the principal's object id.
    pub async fn service_principal_object_id(
        &self,
        app_id: uuid::Uuid,
    ) -> Result<uuid::Uuid, ArmError> {
        // `app_id` is a Uuid, so the quoted key segment cannot carry anything but hex and dashes.
        let segment = format!("servicePrincipals(appId='{}')", app_id.hyphenated());
        let url = build_url(
            &self.inner.options.graph_endpoint,
            ["v1.0", segment.as_str()],
            None,
            &[],
        )?;
        let call = Call::new(
            "graph.servicePrincipal.get",
            Method::GET,
            url,
            Bucket::Tenant,
        )
        .graph();
        let sp: ServicePrincipal = self.send_json(&call).await?;
        uuid::Uuid::parse_str(&sp.id)
            .map_err(|_| ArmError::decode(call.operation, "servicePrincipal id is not a GUID"))
    }
}
