// Per protected subscription: the Event Grid subscription that feeds VM-extension writes to the
// ade-backup queue, and the roles ade-backup's identity needs there (least privilege).
//   az deployment sub create -l <region> -f infra/subscription.bicep -p principalId=<id> eventQueueId=<id>
targetScope = 'subscription'

param principalId string
param eventQueueId string
param location string = deployment().location

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'ade-backup-subscription-events'
  location: 'global'
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

resource eventSub 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'ade-extension-writes'
  properties: {
    destination: {
      endpointType: 'ServiceBusQueue'
      properties: { resourceId: eventQueueId }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [ 'Microsoft.Resources.ResourceWriteSuccess' ]
      advancedFilters: [
        {
          operatorType: 'StringContains'
          key: 'data.operationName'
          values: [ 'Microsoft.Compute/virtualMachines/extensions/write', 'Microsoft.Compute/virtualMachines/write' ]
        }
      ]
    }
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}

// Roles of ade-backup's identity in this subscription:
// - Reader: discovery (Resource Graph) and VM reads.
// - Backup Contributor: protect, back up and restore (Recovery Services vaults).
// - Virtual Machine Contributor: redeploy restored VMs and reinstall the ADE extension.
// - Storage Blob Data Reader: read the template a restore-disks job writes to a staging account
//   (scope it to the staging accounts if you prefer; subscription scope shown for brevity).
// - Key Vault Contributor: write access policies on access-policy vaults (control plane only;
//   it grants no access to keys or secrets).
// - Role Based Access Control Administrator, constrained by a condition to assigning only the
//   ade-backup custom role or Key Vault Administrator: RBAC-model vaults.
// - A custom role for creating the ade-backup Key Vault role definition (roleDefinitions/write).
var roles = {
  reader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
  backupContributor: '5e467623-bb1f-42f4-a55d-6e525e11384b'
  vmContributor: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c'
  keyVaultContributor: 'f25e0fa2-a7c8-4377-a976-54943a77a395'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
}

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for r in items(roles): {
  name: guid(subscription().id, principalId, r.value)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', r.value)
  }
}]

var rbacAdmin = 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'
resource rbacAdminConstrained 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, rbacAdmin)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacAdmin)
    conditionVersion: '2.0'
    condition: '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {00482a5a-887f-4fb3-b363-3b7fe8e74483}))'
  }
}

output location string = location
