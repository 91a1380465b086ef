// The ade-backup application in its resource group: user-assigned identity, host storage (Flex
// deployment container too), state storage, Service Bus namespace and queues, Log Analytics +
// Application Insights, the Flex Consumption (FC1) plan and the Function App, and the data-plane
// roles of the identity on these resources only.
targetScope = 'resourceGroup'

param prefix string
param location string
@description('Service Bus queues the functions are triggered by (receive).')
param triggerQueues array
@description('Queues ade-backup sends to besides its trigger queues (notifications, reply queues).')
param sendOnlyQueues array
@description('Queues ade-backup sends to among its trigger queues (follow-ups, rechecks).')
param selfSendQueues array
param maxDeliveryCount int
param maximumInstanceCount int
param instanceMemoryMB int
@description('App settings the code reads (functions/src/settings.rs), name -> value.')
param workflowSettings object

var roles = loadJsonContent('../roles.json').builtInRoles
var suffix = uniqueString(resourceGroup().id)
var deploymentContainerName = 'app-package'
var stateContainerName = 'ade-backup-state'
var eventDeadLetterContainerName = 'event-deadletters'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id'
  location: location
}

// Host storage: AzureWebJobsStorage (identity-based) and the Flex deployment container.
resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No VNet integration in this template: the Flex platform and Event Grid reach the account over its public endpoint; access is Entra-only (allowSharedKeyAccess false). docs/deploy.md "Going private".
  // checkov:skip=CKV_AZURE_206:Zone-redundant (Standard_ZRS); geo-replication is not needed for host storage or state the sweep rebuilds.
  // checkov:skip=CKV_AZURE_43:The name is computed (take(prefix + letter + uniqueString(), 24)): lowercase letters and digits, 3-24 characters; checkov cannot evaluate it.
  name: take('${prefix}h${suffix}', 24)
  location: location
  sku: { name: 'Standard_ZRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

// State storage: operation records (ADE_BACKUP_STATE) and Event Grid's dead letters.
resource stateStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No VNet integration in this template: the Flex platform and Event Grid reach the account over its public endpoint; access is Entra-only (allowSharedKeyAccess false). docs/deploy.md "Going private".
  // checkov:skip=CKV_AZURE_206:Zone-redundant (Standard_ZRS); geo-replication is not needed for host storage or state the sweep rebuilds.
  // checkov:skip=CKV_AZURE_43:The name is computed (take(prefix + letter + uniqueString(), 24)): lowercase letters and digits, 3-24 characters; checkov cannot evaluate it.
  name: take('${prefix}s${suffix}', 24)
  location: location
  sku: { name: 'Standard_ZRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
  }
}

resource stateBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: stateStorage
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: { enabled: true, days: 14 }
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: stateBlobs
  name: stateContainerName
  properties: { publicAccess: 'None' }
}

resource eventDeadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: stateBlobs
  name: eventDeadLetterContainerName
  properties: { publicAccess: 'None' }
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: '${prefix}-${suffix}'
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

// Queue properties as ade-backup expects them (README "Architecture"): duplicate detection
// 10 min, lock 1 min, maxDeliveryCount = ADE_BACKUP_MAX_DELIVERY_COUNT, dead-lettering on expiry.
resource queues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for q in concat(triggerQueues, sendOnlyQueues): {
  parent: serviceBus
  name: q
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    lockDuration: 'PT1M'
    maxDeliveryCount: maxDeliveryCount
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
  }
}]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

// Entra-authenticated ingestion only (DisableLocalAuth): the app authenticates with its identity
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and needs Monitoring Metrics Publisher.
resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy depends on the region's support; set properties.zoneRedundant where available (docs/deploy.md).
  name: '${prefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

var baseSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: hostStorage.name }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
  { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: '${serviceBus.name}.servicebus.windows.net' }
  { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
  { name: 'ServiceBusConnection__clientId', value: identity.properties.clientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsights.properties.ConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
  { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
  { name: 'ADE_BACKUP_CREDENTIAL', value: 'managed-identity' }
  { name: 'ADE_BACKUP_STATE', value: 'https://${stateStorage.name}.blob.${environment().suffixes.storage}/${stateContainerName}' }
  { name: 'ADE_BACKUP_SERVICEBUS_ENDPOINT', value: 'https://${serviceBus.name}.servicebus.windows.net/' }
]

var workflowSettingsList = [for s in items(workflowSettings): { name: s.key, value: s.value }]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:Service Bus triggers and zip deployment need the default public endpoint without VNet integration; no HTTP function is exposed.
  // checkov:skip=CKV_AZURE_17:Client certificates do not apply: no HTTP-triggered function is exposed (Service Bus and timer triggers only).
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero on queue length; a minimum instance count would only add cost (the queues buffer work).
  // checkov:skip=CKV_AZURE_213:No HTTP endpoint to probe: the custom handler answers only the Functions host on localhost.
  name: '${prefix}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      runtime: { name: 'custom', version: '1.0' }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
    }
    siteConfig: {
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: concat(baseSettings, workflowSettingsList)
    }
  }
  dependsOn: [hostRoles, stateRole, monitoringRole]
}

// --- The identity's data-plane roles, each on one resource -------------------------------------

// Host storage: Storage Blob Data Owner on the host account (Functions docs, "Connecting to host
// storage with an identity": blob leases for timers and singletons, the deployment container).
resource hostRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: hostStorage
  name: guid(hostStorage.id, identity.id, roles.storageBlobDataOwner)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// State: Storage Blob Data Contributor on the state container only.
resource stateRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: stateContainer
  name: guid(stateContainer.id, identity.id, roles.storageBlobDataContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource monitoringRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Service Bus: Data Receiver on each trigger queue, Data Sender on each queue the code sends to.
resource receiveRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in triggerQueues: {
  scope: queues[i]
  name: guid(serviceBus.id, q, identity.id, roles.serviceBusDataReceiver)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
  }
}]

resource selfSendRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in triggerQueues: if (contains(selfSendQueues, q)) {
  scope: queues[i]
  name: guid(serviceBus.id, q, identity.id, roles.serviceBusDataSender)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}]

resource sendOnlyRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in sendOnlyQueues: {
  scope: queues[length(triggerQueues) + i]
  name: guid(serviceBus.id, q, identity.id, roles.serviceBusDataSender)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}]

output functionAppName string = app.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
output serviceBusNamespace string = serviceBus.name
output stateStorageAccountName string = stateStorage.name
output eventDeadLetterContainerName string = eventDeadLetterContainerName
output appInsightsName string = appInsights.name
