// Parameters for infra/main.bicep: replace the two placeholders (docs/deploy.md "Prerequisites").
using 'main.bicep'

param prefix = 'adebackup'
param resourceGroupName = 'ade-backup'
// az ad sp show --id 262044b1-e2ce-469f-a196-69ab7ada62d3 --query id -o tsv
param backupManagementServiceObjectId = '00000000-0000-0000-0000-000000000000'
// ade-backup custom-role-id --subscription <this subscription id>
param keyVaultBackupRoleGuid = '00000000-0000-0000-0000-000000000000'
param protectionRules = '{"rules":[],"default":null}'
param restoreAllowlist = '{"entries":[]}'
param replyQueues = ['restore-status']
param maximumInstanceCount = 40
param instanceMemoryMB = 2048
