// The event subscription on the system topic: ADE extension writes only, delivered to the event
// queue and dead-lettered to a blob container, both with the topic's managed identity.
// Filters match functions/src/domain/events.rs: Microsoft.Resources.ResourceWriteSuccess whose
// data.operationName is the VM extension write and whose subject ends with an ADE extension name
// (ADE_EXTENSION_NAMES). Event Grid string filters are case-insensitive.
targetScope = 'resourceGroup'

param topicName string
param eventQueueId string
param deadLetterStorageAccountId string
param deadLetterContainerName string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

resource adeWrites 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'ade-backup-ade-extension-writes'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    deliveryWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      destination: {
        endpointType: 'ServiceBusQueue'
        properties: { resourceId: eventQueueId }
      }
    }
    filter: {
      includedEventTypes: ['Microsoft.Resources.ResourceWriteSuccess']
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: ['Microsoft.Compute/virtualMachines/extensions/write']
        }
        {
          operatorType: 'StringEndsWith'
          key: 'subject'
          values: ['/extensions/AzureDiskEncryption', '/extensions/AzureDiskEncryptionForLinux']
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
