// Restore drills, staging account: delete the staging blobs of a drill's restore job (custom role
// with only Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete, defined in
// protected-subscription.bicep from roles.json). Assigned on the drill's staging account only.
targetScope = 'resourceGroup'

param principalId string
param storageAccountName string
param blobDeleteRoleDefinitionId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobDelete 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, blobDeleteRoleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: blobDeleteRoleDefinitionId
  }
}
