// One protected subscription: the custom roles ade-backup needs, the identity's role assignments
// (each at the narrowest scope the code needs, see docs/deploy.md "Roles"), and the Event Grid
// system topic + subscription that feed ADE extension writes to ade-backup's event queue.
// main.bicep deploys it for the app's own subscription; deploy it in every other one:
//   az deployment sub create --subscription <sub> -l <region> -f infra/protected-subscription.bicep \
//     -p infra/protected-subscription.bicepparam
targetScope = 'subscription'

@description('Principal (object) id of ade-backup\'s user-assigned identity (main.bicep output principalId).')
param principalId string
@description('Object id of the Backup Management Service principal in this tenant (az ad sp show --id 262044b1-e2ce-469f-a196-69ab7ada62d3 --query id).')
param backupManagementServiceObjectId string
@description('GUID of the custom Key Vault backup role in THIS subscription, as ade-backup computes it: `ade-backup custom-role-id --subscription <sub>`.')
param keyVaultBackupRoleGuid string
@description('Subscription and resource group of ade-backup itself (Service Bus, state storage).')
param appSubscriptionId string
param appResourceGroupName string
param serviceBusNamespace string
param eventQueueName string = 'vm-encryption-events'
param deadLetterStorageAccountName string
param deadLetterContainerName string = 'event-deadletters'
param location string = deployment().location
@description('Resource group for the Event Grid system topic (created when no existing topic is reused).')
param eventsResourceGroupName string = 'ade-backup-events'
@description('Reuse this subscription\'s existing Microsoft.Resources.Subscriptions system topic: { resourceGroup: name, name: topic }; empty object creates one.')
param existingSystemTopic object = {}
@description('Resource groups holding the Recovery Services vaults (Backup Operator there; empty: the whole subscription).')
param vaultResourceGroups array = []
@description('Resource groups holding the ADE Key Vaults (Key Vault roles there; empty: the whole subscription).')
param keyVaultResourceGroups array = []
@description('Resource groups restored VMs are created in (RESTORE_ALLOWLIST resourceGroups); they must exist.')
param restoreTargetResourceGroups array = []
@description('Resource groups of the virtual networks whose subnets restored VMs may join.')
param restoreSubnetResourceGroups array = []
@description('Staging storage accounts of restore-disks jobs: [{ resourceGroup: name, name: account }].')
param stagingStorageAccounts array = []
@description('Issue 14 item 3 (opt-in, with ADE_BACKUP_RESTORE_KEY_MATERIAL=true): let ade-backup put a recovery point\'s deleted BEK secret / KEK back from its backup (keys/restore and secrets/restore data actions) on the Key Vault resource groups (RBAC vaults; access-policy vaults need the keys/secrets "restore" permission in an access policy).')
param restoreKeyMaterial bool = false
@description('Issue 14 item 4 (opt-in, with ADE_BACKUP_AAD_CLIENT_SECRET_URL): { resourceGroup, vaultName, secretName } of the Key Vault secret holding the Azure AD application client secret of dual-pass ADE VMs; ade-backup gets only getSecret on that resource group (keep that vault in a resource group of its own). {} = none.')
param aadClientSecret object = {}
@description('Restore drills: the drill resource group (ADE_BACKUP_DRILL_TARGETS resourceGroup; it must exist). Empty: no drills. The identity restores into it and deletes what a drill created there, and nowhere else.')
param drillResourceGroup string = ''
@description('Restore drills: the drill staging account { resourceGroup: name, name: account } (also listed in stagingStorageAccounts); the identity may delete its blobs.')
param drillStagingStorageAccount object = {}

var roles = loadJsonContent('roles.json').builtInRoles
var sub = subscription().subscriptionId
var reuseTopic = !empty(existingSystemTopic)

// --- Custom roles ----------------------------------------------------------------------------

// The five dataActions Azure Backup needs on RBAC Key Vaults (functions/src/domain/kv_access.rs);
// same GUID, name and content as the code's PUT, so either may create it.
resource keyVaultBackupRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: keyVaultBackupRoleGuid
  properties: {
    roleName: 'ade-backup: Azure Backup Key Vault reader (${sub})'
    description: 'Lets Azure Backup read and back up ADE keys and secrets (ade-backup)'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/keys/backup/action'
          'Microsoft.KeyVault/vaults/secrets/backup/action'
          'Microsoft.KeyVault/vaults/secrets/getSecret/action'
          'Microsoft.KeyVault/vaults/keys/read'
          'Microsoft.KeyVault/vaults/secrets/readMetadata/action'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Access-policy vaults: read the vault, add the Backup Management Service's access policy.
resource accessPolicyWriterRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'ade-backup-key-vault-access-policy-writer')
  properties: {
    roleName: 'ade-backup: Key Vault access policy writer (${sub})'
    description: 'Read Key Vaults and add access policies (ade-backup grants Azure Backup access to ADE keys).'
    type: 'CustomRole'
    permissions: [
      {
        actions: ['Microsoft.KeyVault/vaults/read', 'Microsoft.KeyVault/vaults/accessPolicies/write']
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Enable backup: Azure Backup's RBAC table asks Microsoft.Compute/virtualMachines/write on the
// VM (the documented alternative to Virtual Machine Contributor).
resource vmBackupEnablerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'ade-backup-vm-backup-enabler')
  properties: {
    roleName: 'ade-backup: VM backup enabler (${sub})'
    description: 'Microsoft.Compute/virtualMachines/write, which enabling Azure VM backup needs on the VM.'
    type: 'CustomRole'
    permissions: [
      {
        actions: ['Microsoft.Compute/virtualMachines/read', 'Microsoft.Compute/virtualMachines/write']
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Restore, staging account: Microsoft.Storage/storageAccounts/write (RBAC table alternative to
// Storage Account Contributor).
resource stagingRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'ade-backup-restore-staging')
  properties: {
    roleName: 'ade-backup: restore staging account (${sub})'
    description: 'Microsoft.Storage/storageAccounts/write on the staging account of a restore-disks job.'
    type: 'CustomRole'
    permissions: [
      {
        actions: ['Microsoft.Storage/storageAccounts/read', 'Microsoft.Storage/storageAccounts/write']
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Restore, target resource group: resourceGroups/write (RBAC table alternative to Contributor
// for "Restore managed disks"); VM creation itself comes with Virtual Machine Contributor.
resource restoreTargetRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'ade-backup-restore-target')
  properties: {
    roleName: 'ade-backup: restore target resource group (${sub})'
    description: 'Microsoft.Resources/subscriptions/resourceGroups/write on a restore target resource group.'
    type: 'CustomRole'
    permissions: [
      {
        actions: ['Microsoft.Resources/subscriptions/resourceGroups/read', 'Microsoft.Resources/subscriptions/resourceGroups/write']
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Restore, networks: join the allowed subnets (RBAC table: virtualNetworks/read and
// subnets/join/action for the VM's network interface).
resource restoreSubnetJoinRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'ade-backup-restore-subnet-join')
  properties: {
    roleName: 'ade-backup: restore subnet join (${sub})'
    description: 'Join the allowed subnets when creating a restored VM.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Network/virtualNetworks/read'
          'Microsoft.Network/virtualNetworks/subnets/read'
          'Microsoft.Network/virtualNetworks/subnets/join/action'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Restore, Key Vaults: the restored VM's template references the ADE secret, which ARM allows
// only with Microsoft.KeyVault/vaults/deploy/action on the vault. Assigned only when restores are
// configured.
resource restoreKeyVaultDeployRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'ade-backup-restore-key-vault-deploy')
  properties: {
    roleName: 'ade-backup: restore Key Vault deploy (${sub})'
    description: 'Microsoft.KeyVault/vaults/deploy/action: deploy a restored ADE VM referencing its key vault secret.'
    type: 'CustomRole'
    permissions: [
      {
        actions: ['Microsoft.KeyVault/vaults/deploy/action']
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Restore, key material (opt-in): put a deleted BEK secret / KEK back from the backup a
// restore-disks job wrote (POST {vault}/keys/restore, /secrets/restore). Data actions only.
var keyMaterialRestoreRoleName = guid(subscription().id, 'ade-backup-restore-key-material')
resource keyMaterialRestoreRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (restoreKeyMaterial) {
  name: keyMaterialRestoreRoleName
  properties: {
    roleName: 'ade-backup: restore key material (${sub})'
    description: 'Restore a recovery point\'s deleted BEK secret / KEK into its Key Vault from Azure Backup\'s key-and-secret backup.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.KeyVault/vaults/keys/restore/action'
          'Microsoft.KeyVault/vaults/secrets/restore/action'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// Restore, dual-pass ADE (opt-in): read the one configured secret (the AAD application's client
// secret). getSecret only: no list, no metadata of other secrets.
var aadSecretReaderRoleName = guid(subscription().id, 'ade-backup-aad-secret-reader')
resource aadSecretReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(aadClientSecret)) {
  name: aadSecretReaderRoleName
  properties: {
    roleName: 'ade-backup: read the AAD application secret (${sub})'
    description: 'Read the Key Vault secret holding the Azure AD application client secret dual-pass ADE VMs need to get ADE back after a restore.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: ['Microsoft.KeyVault/vaults/secrets/getSecret/action']
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

// --- Role assignments ------------------------------------------------------------------------

// Role assignments on RBAC Key Vaults: write AND delete only of the custom Key Vault backup role or
// Key Vault Administrator, only for the Backup Management Service principal (ABAC condition,
// "Delegate Azure role assignment management to others with conditions").
var grantable = '${keyVaultBackupRoleGuid}, ${roles.keyVaultAdministrator}'
var rbacCondition = '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${grantable}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAnyValues:GuidEquals {${backupManagementServiceObjectId}})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${grantable}} AND @Resource[Microsoft.Authorization/roleAssignments:PrincipalId] ForAnyOfAnyValues:GuidEquals {${backupManagementServiceObjectId}}))'

var keyVaultAssignments = concat([
  { roleDefinitionId: accessPolicyWriterRole.id, condition: '' }
  { roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.roleBasedAccessControlAdministrator), condition: rbacCondition }
], empty(restoreTargetResourceGroups) ? [] : [{ roleDefinitionId: restoreKeyVaultDeployRole.id, condition: '' }], restoreKeyMaterial ? [{ roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyMaterialRestoreRoleName), condition: '' }] : [])

// Sweep discovery (Resource Graph), VM / vault / role assignment reads.
resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roles.reader)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.reader)
  }
}

// Enable backup on any protected VM of the subscription (the sweep's scope).
resource vmBackupEnabler 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, vmBackupEnablerRole.id)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: vmBackupEnablerRole.id
  }
}

resource backupOperatorSubscription 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (empty(vaultResourceGroups)) {
  name: guid(subscription().id, principalId, roles.backupOperator)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.backupOperator)
  }
}

module backupOperatorVaultGroups 'modules/rg-role-assignments.bicep' = [for rg in vaultResourceGroups: {
  scope: resourceGroup(rg)
  name: 'ade-backup-vault-roles-${uniqueString(rg)}'
  params: {
    principalId: principalId
    assignments: [{ roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.backupOperator), condition: '' }]
  }
}]

resource keyVaultRolesSubscription 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for a in keyVaultAssignments: if (empty(keyVaultResourceGroups)) {
  name: guid(subscription().id, principalId, a.roleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: a.roleDefinitionId
    condition: empty(a.condition) ? null : a.condition
    conditionVersion: empty(a.condition) ? null : '2.0'
  }
  dependsOn: [keyMaterialRestoreRole]
}]

module keyVaultRolesGroups 'modules/rg-role-assignments.bicep' = [for rg in keyVaultResourceGroups: {
  scope: resourceGroup(rg)
  name: 'ade-backup-kv-roles-${uniqueString(rg)}'
  params: {
    principalId: principalId
    assignments: keyVaultAssignments
  }
  dependsOn: [keyMaterialRestoreRole]
}]

module restoreTargets 'modules/rg-role-assignments.bicep' = [for rg in restoreTargetResourceGroups: {
  scope: resourceGroup(rg)
  name: 'ade-backup-restore-target-${uniqueString(rg)}'
  params: {
    principalId: principalId
    assignments: [
      { roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.virtualMachineContributor), condition: '' }
      { roleDefinitionId: restoreTargetRole.id, condition: '' }
    ]
  }
}]

module restoreSubnets 'modules/rg-role-assignments.bicep' = [for rg in restoreSubnetResourceGroups: {
  scope: resourceGroup(rg)
  name: 'ade-backup-restore-subnets-${uniqueString(rg)}'
  params: {
    principalId: principalId
    assignments: [{ roleDefinitionId: restoreSubnetJoinRole.id, condition: '' }]
  }
}]

module aadSecretReader 'modules/rg-role-assignments.bicep' = if (!empty(aadClientSecret)) {
  scope: resourceGroup(empty(aadClientSecret) ? 'unused' : aadClientSecret.resourceGroup)
  name: 'ade-backup-aad-secret-reader'
  params: {
    principalId: principalId
    assignments: [{ roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', aadSecretReaderRoleName), condition: '' }]
  }
  dependsOn: [aadSecretReaderRole]
}

module staging 'modules/staging-account-roles.bicep' = [for acct in stagingStorageAccounts: {
  scope: resourceGroup(acct.resourceGroup)
  name: 'ade-backup-staging-${uniqueString(acct.resourceGroup, acct.name)}'
  params: {
    principalId: principalId
    storageAccountName: acct.name
    stagingRoleDefinitionId: stagingRole.id
  }
}]

// --- Restore drills (issue 17) -------------------------------------------------------------------
// The drill resource group gets what restoring into it needs, the same as a restore target:
// Virtual Machine Contributor (create the VM; its Microsoft.Compute/virtualMachines/*,
// Microsoft.Compute/disks/* and Microsoft.Network/networkInterfaces/* also cover the clean-up's
// deletes) and the restore target role. Both only at the drill resource group: the identity can
// delete VMs, disks and NICs there and in the restore targets an operator listed, nowhere else.
var drillCustom = loadJsonContent('roles.json').customRoles.drillStagingBlobDelete

resource drillStagingBlobDeleteRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(drillResourceGroup)) {
  name: guid(subscription().id, 'ade-backup-drill-staging-blob-delete')
  properties: {
    roleName: 'ade-backup: drill staging blob delete (${sub})'
    description: 'Delete the staging blobs of a restore drill\'s restore job.'
    type: 'CustomRole'
    permissions: [
      {
        actions: drillCustom.actions
        notActions: []
        dataActions: drillCustom.dataActions
        notDataActions: []
      }
    ]
    assignableScopes: [subscription().id]
  }
}

module drillTarget 'modules/rg-role-assignments.bicep' = if (!empty(drillResourceGroup)) {
  scope: resourceGroup(drillResourceGroup)
  name: 'ade-backup-drill-target-${uniqueString(drillResourceGroup)}'
  params: {
    principalId: principalId
    assignments: [
      { roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.virtualMachineContributor), condition: '' }
      { roleDefinitionId: restoreTargetRole.id, condition: '' }
    ]
  }
}

module drillStaging 'modules/drill-staging-roles.bicep' = if (!empty(drillResourceGroup) && !empty(drillStagingStorageAccount)) {
  scope: resourceGroup(drillStagingStorageAccount.resourceGroup)
  name: 'ade-backup-drill-staging-${uniqueString(drillResourceGroup)}'
  params: {
    principalId: principalId
    storageAccountName: drillStagingStorageAccount.name
    blobDeleteRoleDefinitionId: drillStagingBlobDeleteRole.id
  }
}

// --- Event Grid: the subscription's resource events to ade-backup's event queue ----------------

resource eventsGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = if (!reuseTopic) {
  name: eventsResourceGroupName
  location: location
}

module topic 'modules/event-topic.bicep' = {
  scope: resourceGroup(reuseTopic ? existingSystemTopic.resourceGroup : eventsResourceGroupName)
  name: 'ade-backup-event-topic'
  params: {
    existingTopicName: reuseTopic ? existingSystemTopic.name : ''
    topicName: 'ade-backup-subscription-events'
  }
  dependsOn: [eventsGroup]
}

module topicRoles 'modules/event-topic-roles.bicep' = {
  scope: resourceGroup(appSubscriptionId, appResourceGroupName)
  name: 'ade-backup-event-roles-${uniqueString(subscription().id)}'
  params: {
    topicPrincipalId: topic.outputs.principalId
    serviceBusNamespace: serviceBusNamespace
    eventQueueName: eventQueueName
    deadLetterStorageAccountName: deadLetterStorageAccountName
    deadLetterContainerName: deadLetterContainerName
  }
}

module eventSubscription 'modules/event-subscription.bicep' = {
  scope: resourceGroup(reuseTopic ? existingSystemTopic.resourceGroup : eventsResourceGroupName)
  name: 'ade-backup-event-subscription'
  params: {
    topicName: topic.outputs.name
    eventQueueId: topicRoles.outputs.eventQueueId
    deadLetterStorageAccountId: topicRoles.outputs.deadLetterStorageAccountId
    deadLetterContainerName: deadLetterContainerName
  }
}

output keyVaultBackupRoleId string = keyVaultBackupRole.id
output systemTopicName string = topic.outputs.name
