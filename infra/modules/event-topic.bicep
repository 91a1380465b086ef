// The Event Grid system topic for a subscription's resource events. A system topic is a
// resource-group resource with location 'global'; Azure allows one per source, so an existing one
// can be reused by name (it must have a system-assigned identity: docs/deploy.md).
targetScope = 'resourceGroup'

@description('Name of an existing Microsoft.Resources.Subscriptions system topic in this resource group to reuse; empty creates one.')
param existingTopicName string = ''
param topicName string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (empty(existingTopicName)) {
  name: topicName
  location: 'global'
  identity: { type: 'SystemAssigned' }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

resource reused 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = if (!empty(existingTopicName)) {
  name: existingTopicName
}

output name string = empty(existingTopicName) ? topic.name : reused.name
output principalId string = empty(existingTopicName) ? topic.identity.principalId : reused.identity.principalId
