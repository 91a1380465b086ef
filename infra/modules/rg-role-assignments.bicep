// Role assignments of one principal at this resource group's scope (restore targets, subnet and
// Key Vault resource groups, Recovery Services vault resource groups).
targetScope = 'resourceGroup'

param principalId string
@description('Each: { roleDefinitionId: full role definition id, condition: ABAC condition or empty }.')
param assignments array

resource assigned 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for a in assignments: {
  name: guid(resourceGroup().id, principalId, a.roleDefinitionId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: a.roleDefinitionId
    condition: empty(a.condition) ? null : a.condition
    conditionVersion: empty(a.condition) ? null : '2.0'
  }
}]
