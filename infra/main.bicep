// ade-backup, deployed with one command at subscription scope:
//   az deployment sub create -l <region> -f infra/main.bicep -p infra/main.bicepparam
// Creates the resource group with the application (modules/app.bicep: Flex Consumption Function
// App, identity, storage, Service Bus, Application Insights) and, for this subscription, the
// custom roles, role assignments and Event Grid subscription of protected-subscription.bicep.
// Other protected subscriptions: deploy protected-subscription.bicep there (docs/deploy.md).
// Then publish the package scripts/package.sh builds (docs/deploy.md "Publish the package").
targetScope = 'subscription'

@description('Name prefix for every resource (lowercase letters and digits, at most 11 characters: storage account names).')
@maxLength(11)
param prefix string = 'adebackup'
param location string = deployment().location
param resourceGroupName string = 'ade-backup'
@description('Object id of the Backup Management Service principal in this tenant: az ad sp show --id 262044b1-e2ce-469f-a196-69ab7ada62d3 --query id -o tsv')
param backupManagementServiceObjectId string
@description('GUID of the custom Key Vault backup role in this subscription: ade-backup custom-role-id --subscription <this subscription>')
param keyVaultBackupRoleGuid string
@description('ADE_BACKUP_PROTECTION_RULES (JSON, README "Configuration").')
param protectionRules string = '{"rules":[],"default":null}'
@description('ADE_BACKUP_RESTORE_ALLOWLIST (JSON, README "Configuration"); empty entries forbid every restore.')
param restoreAllowlist string = '{"entries":[]}'
@description('ADE_BACKUP_SUBSCRIPTIONS: subscriptions the sweep covers (deploy protected-subscription.bicep in each; this one is covered by this deployment).')
param sweepSubscriptions array = [subscription().subscriptionId]
@description('ADE_BACKUP_MANAGEMENT_GROUPS: management groups the sweep covers (grant Reader there: docs/deploy.md).')
param sweepManagementGroups array = []
@description('ADE_BACKUP_SWEEP_TAGS: key=value[,key=value].')
param sweepTags string = ''
@description('ADE_BACKUP_REPLY_QUEUES: queues a restore request may name as replyTo (created here; ade-backup may send to them).')
param replyQueues array = ['restore-status']
@description('ADE_BACKUP_RBAC_ROLE: custom (least privilege) or key-vault-administrator.')
@allowed(['custom', 'key-vault-administrator'])
param rbacRole string = 'custom'
@description('ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE.')
param allowCrossRegionRestore bool = false
@description('Queues\' maxDeliveryCount and ADE_BACKUP_MAX_DELIVERY_COUNT (must agree).')
param maxDeliveryCount int = 10
@description('Flex Consumption: largest instance count the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40
@description('Flex Consumption instance memory (MB).')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@description('Reuse this subscription\'s existing Microsoft.Resources.Subscriptions system topic: { resourceGroup: name, name: topic }; {} creates one.')
param existingSystemTopic object = {}
@description('See protected-subscription.bicep: narrow the roles to these resource groups of this subscription.')
param vaultResourceGroups array = []
param keyVaultResourceGroups array = []
param restoreTargetResourceGroups array = []
param restoreSubnetResourceGroups array = []
param stagingStorageAccounts array = []

// Queue names: the function.json queueNames and functions/src/settings.rs QueueNames defaults.
var eventQueue = 'vm-encryption-events'
var triggerQueues = [eventQueue, 'restore-requests', 'grant-key-vault-access', 'backup-vm', 'restore-vm', 'redeploy-vm', 'drill-vm']
// The code sends to these trigger queues (follow-ups and rechecks); never to restore-requests.
var selfSendQueues = [eventQueue, 'grant-key-vault-access', 'backup-vm', 'restore-vm', 'redeploy-vm', 'drill-vm']
var notificationsQueue = 'notifications'

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
}

module app 'modules/app.bicep' = {
  scope: group
  name: 'ade-backup-app'
  params: {
    prefix: prefix
    location: location
    triggerQueues: triggerQueues
    sendOnlyQueues: concat([notificationsQueue], replyQueues)
    selfSendQueues: selfSendQueues
    maxDeliveryCount: maxDeliveryCount
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    workflowSettings: {
      ADE_BACKUP_BMS_OBJECT_ID: backupManagementServiceObjectId
      ADE_BACKUP_PROTECTION_RULES: protectionRules
      ADE_BACKUP_RESTORE_ALLOWLIST: restoreAllowlist
      ADE_BACKUP_SUBSCRIPTIONS: join(sweepSubscriptions, ',')
      ADE_BACKUP_MANAGEMENT_GROUPS: join(sweepManagementGroups, ',')
      ADE_BACKUP_SWEEP_TAGS: sweepTags
      ADE_BACKUP_REPLY_QUEUES: join(replyQueues, ',')
      ADE_BACKUP_QUEUE_NOTIFICATIONS: notificationsQueue
      ADE_BACKUP_RBAC_ROLE: rbacRole
      ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE: string(allowCrossRegionRestore)
      ADE_BACKUP_MAX_DELIVERY_COUNT: string(maxDeliveryCount)
    }
  }
}

module protect 'protected-subscription.bicep' = {
  name: 'ade-backup-protected-subscription'
  params: {
    principalId: app.outputs.principalId
    backupManagementServiceObjectId: backupManagementServiceObjectId
    keyVaultBackupRoleGuid: keyVaultBackupRoleGuid
    appSubscriptionId: subscription().subscriptionId
    appResourceGroupName: resourceGroupName
    serviceBusNamespace: app.outputs.serviceBusNamespace
    eventQueueName: eventQueue
    deadLetterStorageAccountName: app.outputs.stateStorageAccountName
    deadLetterContainerName: app.outputs.eventDeadLetterContainerName
    location: location
    existingSystemTopic: existingSystemTopic
    vaultResourceGroups: vaultResourceGroups
    keyVaultResourceGroups: keyVaultResourceGroups
    restoreTargetResourceGroups: restoreTargetResourceGroups
    restoreSubnetResourceGroups: restoreSubnetResourceGroups
    stagingStorageAccounts: stagingStorageAccounts
  }
}

output resourceGroupName string = group.name
output functionAppName string = app.outputs.functionAppName
output principalId string = app.outputs.principalId
output serviceBusNamespace string = app.outputs.serviceBusNamespace
output stateStorageAccountName string = app.outputs.stateStorageAccountName
output appInsightsName string = app.outputs.appInsightsName
