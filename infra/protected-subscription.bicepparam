// Parameters for infra/protected-subscription.bicep in another protected subscription: the values
// come from main.bicep's outputs and `ade-backup custom-role-id` (docs/deploy.md).
using 'protected-subscription.bicep'

param principalId = '00000000-0000-0000-0000-000000000000'
param backupManagementServiceObjectId = '00000000-0000-0000-0000-000000000000'
param keyVaultBackupRoleGuid = '00000000-0000-0000-0000-000000000000'
param appSubscriptionId = '00000000-0000-0000-0000-000000000000'
param appResourceGroupName = 'ade-backup'
param serviceBusNamespace = 'adebackup-xxxxxxxxxxxxx'
param deadLetterStorageAccountName = 'adebackupsxxxxxxxxxxxxx'
