// ade-backup deployment: Function App (custom handler, Linux consumption/flex), Service Bus
// namespace + queues, state storage, Event Grid subscription on the subscription's events, and the
// least-privilege role assignments of the app's managed identity.
//
// Deploy:  az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.json
// Then publish the zip scripts/package.sh builds: host.json, one folder per function with its
// function.json, and the Linux `ade-backup` binary.
targetScope = 'resourceGroup'

@description('Name prefix for every resource.')
param prefix string = 'adebackup'
param location string = resourceGroup().location
@description('Object id of the Backup Management Service in this tenant (leave empty to look it up through Microsoft Graph at run time).')
param backupManagementServiceObjectId string = ''
@description('Protection rules (JSON, see README "Configuration").')
param protectionRules string = '{"rules":[],"default":null}'
@description('Restore allowlist (JSON, see README).')
param restoreAllowlist string = '{"entries":[]}'
@description('Subscriptions the policy sweep covers (comma-separated GUIDs; deploy infra/subscription.bicep in each).')
param sweepSubscriptions string = ''
@description('Management groups the policy sweep covers (comma-separated names); grant the identity Reader on each.')
param sweepManagementGroups string = ''
@description('Optional VM tag filter for the sweep: key=value[,key=value].')
param sweepTags string = ''

var queues = [
  'vm-encryption-events'
  'restore-requests'
  'grant-key-vault-access'
  'backup-vm'
  'restore-vm'
  'redeploy-vm'
  'restore-status'
  'notifications'
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take('${prefix}${uniqueString(resourceGroup().id)}', 24)
  location: location
  sku: { name: 'Standard_ZRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: { isVersioningEnabled: true }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'ade-backup-state'
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: '${prefix}-${uniqueString(resourceGroup().id)}'
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: { disableLocalAuth: true, minimumTlsVersion: '1.2' }
}

resource sbQueues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for q in queues: {
  parent: serviceBus
  name: q
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
  }
}]

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${prefix}-plan'
  location: location
  kind: 'functionapp'
  sku: { name: 'Y1', tier: 'Dynamic' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: '${prefix}-${uniqueString(resourceGroup().id)}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: ''
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'custom' }
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
        { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
        { name: 'ServiceBusConnection__clientId', value: identity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        { name: 'ADE_BACKUP_CREDENTIAL', value: 'managed-identity' }
        { name: 'ADE_BACKUP_STATE', value: 'https://${storage.name}.blob.${environment().suffixes.storage}/ade-backup-state' }
        { name: 'ADE_BACKUP_SERVICEBUS_ENDPOINT', value: 'https://${serviceBus.name}.servicebus.windows.net/' }
        { name: 'ADE_BACKUP_BMS_OBJECT_ID', value: backupManagementServiceObjectId }
        { name: 'ADE_BACKUP_PROTECTION_RULES', value: protectionRules }
        { name: 'ADE_BACKUP_RESTORE_ALLOWLIST', value: restoreAllowlist }
        { name: 'ADE_BACKUP_SUBSCRIPTIONS', value: sweepSubscriptions }
        { name: 'ADE_BACKUP_MANAGEMENT_GROUPS', value: sweepManagementGroups }
        { name: 'ADE_BACKUP_SWEEP_TAGS', value: sweepTags }
      ]
    }
  }
}

// Data-plane roles on our own resources.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var serviceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var serviceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'

resource stateRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: stateContainer
  name: guid(stateContainer.id, identity.id, storageBlobDataContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

resource sbSendRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: serviceBus
  name: guid(serviceBus.id, identity.id, serviceBusDataSender)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataSender)
  }
}

resource sbReceiveRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: serviceBus
  name: guid(serviceBus.id, identity.id, serviceBusDataReceiver)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', serviceBusDataReceiver)
  }
}

output functionAppName string = app.name
output principalId string = identity.properties.principalId
output serviceBusNamespace string = serviceBus.name
output eventQueueId string = resourceId('Microsoft.ServiceBus/namespaces/queues', serviceBus.name, 'vm-encryption-events')
