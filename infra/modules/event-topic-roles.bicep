// In ade-backup's resource group: what the system topic's identity needs to deliver events
// (Azure Service Bus Data Sender on the event queue only) and to dead-letter them (Storage Blob
// Data Contributor on the dead-letter container only).
targetScope = 'resourceGroup'

param topicPrincipalId string
param serviceBusNamespace string
param eventQueueName string
param deadLetterStorageAccountName string
param deadLetterContainerName string

var roles = loadJsonContent('../roles.json').builtInRoles

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespace
}

resource eventQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: namespace
  name: eventQueueName
}

resource deadLetterAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deadLetterStorageAccountName
}

resource deadLetterBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: deadLetterAccount
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: deadLetterBlobs
  name: deadLetterContainerName
}

resource sendRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: eventQueue
  name: guid(eventQueue.id, topicPrincipalId, roles.serviceBusDataSender)
  properties: {
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataSender)
  }
}

resource deadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: deadLetterContainer
  name: guid(deadLetterContainer.id, topicPrincipalId, roles.storageBlobDataContributor)
  properties: {
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

output eventQueueId string = eventQueue.id
output deadLetterStorageAccountId string = deadLetterAccount.id
