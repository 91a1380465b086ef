// A restore staging storage account (where a restore-disks job writes disks and the VM template):
// the custom staging role (Microsoft.Storage/storageAccounts/write, what Azure Backup's RBAC
// table asks of the caller) and Storage Blob Data Reader (ade-backup reads the template blob).
targetScope = 'resourceGroup'

param principalId string
param storageAccountName string
param stagingRoleDefinitionId string

var roles = loadJsonContent('../roles.json').builtInRoles

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource staging 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, stagingRoleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: stagingRoleDefinitionId
  }
}

resource templateReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, roles.storageBlobDataReader)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}
