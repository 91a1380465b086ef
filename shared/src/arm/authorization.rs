//! Microsoft.Authorization: custom role definition put, role assignment put, role assignments
//! listed at a scope. Names are GUIDs chosen by the caller (deterministic ids make the PUTs
//! idempotent).
//!
//! Shapes: authorization 2022-04-01 examples PutRoleDefinition.json, RoleAssignments_Create.json,
//! RoleAssignments_ListForScope.json.

use super::client::{sub_bucket, ArmClient, Bucket};
use super::common::null_vec;
use super::error::ArmError;
use super::scope::SubscriptionId;
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};

pub const AUTHORIZATION_API_VERSION: &str = "2022-04-01";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoleDefinition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub properties: RoleDefinitionProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinitionProperties {
    pub role_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `CustomRole` for ours.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub role_type: Option<String>,
    #[serde(default, deserialize_with = "null_vec")]
    pub permissions: Vec<RolePermission>,
    #[serde(default, deserialize_with = "null_vec")]
    pub assignable_scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RolePermission {
    #[serde(deserialize_with = "null_vec")]
    pub actions: Vec<String>,
    #[serde(deserialize_with = "null_vec")]
    pub not_actions: Vec<String>,
    #[serde(deserialize_with = "null_vec")]
    pub data_actions: Vec<String>,
    #[serde(deserialize_with = "null_vec")]
    pub not_data_actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoleAssignment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub properties: RoleAssignmentProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    pub role_definition_id: String,
    pub principal_id: String,
    /// `ServicePrincipal` for the Backup Management Service (lets ARM skip the replication
    /// check for a principal it has not seen yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The dataActions Azure Backup needs on an RBAC Key Vault (least privilege; Azure docs
/// backup-azure-vms-encryption.md).
pub const BACKUP_KEY_VAULT_DATA_ACTIONS: &[&str] = &[
    "Microsoft.KeyVault/vaults/keys/backup/action",
    "Microsoft.KeyVault/vaults/secrets/backup/action",
    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "Microsoft.KeyVault/vaults/keys/read",
    "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
];

impl RoleAssignment {
    /// The role definition's GUID. ARM answers with `/providers/Microsoft.Authorization/...` or
    /// `/subscriptions/{s}/providers/...` forms for the same role; the GUID is the stable part.
    pub fn role_definition_guid(&self) -> Option<uuid::Uuid> {
        self.properties
            .role_definition_id
            .rsplit('/')
            .next()
            .and_then(|g| uuid::Uuid::parse_str(g).ok())
    }
    pub fn principal_guid(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(&self.properties.principal_id).ok()
    }
}

impl RoleDefinitionProperties {
    /// A custom role granting exactly [`BACKUP_KEY_VAULT_DATA_ACTIONS`], assignable in the
    /// subscription.
    pub fn backup_key_vault_reader(role_name: &str, subscription: SubscriptionId) -> Self {
        Self {
            role_name: role_name.to_string(),
            description: Some(
                "Lets Azure Backup read and back up ADE keys and secrets (ade-backup)".into(),
            ),
            role_type: Some("CustomRole".into()),
            permissions: vec![RolePermission {
                data_actions: BACKUP_KEY_VAULT_DATA_ACTIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ..Default::default()
            }],
            assignable_scopes: vec![format!("/subscriptions/{subscription}")],
        }
    }
}

impl ArmClient {
    /// `PUT /subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{id}`.
    pub async fn put_role_definition(
        &self,
        subscription: SubscriptionId,
        role_definition_id: uuid::Uuid,
        properties: &RoleDefinitionProperties,
    ) -> Result<RoleDefinition, ArmError> {
        let name = role_definition_id.hyphenated().to_string();
        let url = self.subscription_url(
            subscription,
            &[
                "providers",
                "Microsoft.Authorization",
                "roleDefinitions",
                &name,
            ],
            AUTHORIZATION_API_VERSION,
            &[],
        )?;
        let body = RoleDefinition {
            properties: properties.clone(),
            ..Default::default()
        };
        let bucket = Bucket::Subscription(subscription);
        self.put_json("authorization.roleDefinition.put", url, bucket, &body)
            .await
    }

    /// `PUT {scope}/providers/Microsoft.Authorization/roleAssignments/{name}`. A second PUT of
    /// the same assignment under another name fails with code `RoleAssignmentExists` (409).
    pub async fn put_role_assignment(
        &self,
        scope: &ResourceId,
        assignment_name: uuid::Uuid,
        properties: &RoleAssignmentProperties,
    ) -> Result<RoleAssignment, ArmError> {
        if uuid::Uuid::parse_str(&properties.principal_id).is_err() {
            return Err(ArmError::invalid("principalId", "must be a GUID"));
        }
        let name = assignment_name.hyphenated().to_string();
        let url = self.id_url(
            scope,
            &[
                "providers",
                "Microsoft.Authorization",
                "roleAssignments",
                &name,
            ],
            AUTHORIZATION_API_VERSION,
            &[],
        )?;
        let body = RoleAssignment {
            properties: RoleAssignmentProperties {
                scope: None,
                ..properties.clone()
            },
            ..Default::default()
        };
        self.put_json(
            "authorization.roleAssignment.put",
            url,
            sub_bucket(scope)?,
            &body,
        )
        .await
    }

    /// `GET {scope}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()` — the
    /// assignments at the scope and above it (inherited), all pages.
    pub async fn list_role_assignments_at_scope(
        &self,
        scope: &ResourceId,
    ) -> Result<Vec<RoleAssignment>, ArmError> {
        let url = self.id_url(
            scope,
            &["providers", "Microsoft.Authorization", "roleAssignments"],
            AUTHORIZATION_API_VERSION,
            &[("$filter", "atScope()")],
        )?;
        self.list_all(
            "authorization.roleAssignments.list",
            url,
            sub_bucket(scope)?,
            false,
        )
        .await
    }
}
