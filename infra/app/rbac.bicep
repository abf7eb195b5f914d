// Role assignments for the managed identity: only what entra-sync needs, each at the narrowest
// scope that works. Names are guid(scope, principal, role), so a redeploy is idempotent.

@description('Required. Principal (object) id of the user-assigned managed identity.')
param principalId string

@description('Required. Name of the storage account the identity uses.')
param storageAccountName string

@description('Required. Name of the Key Vault holding the app\'s secrets.')
param keyVaultName string

@description('Required. Name of the Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Optional. Object id of the Entra group of operators (entra-sync CLI from a laptop); empty for none.')
param operatorGroupId string = ''

// Built-in role definition ids.
// Storage Blob Data Owner: the Functions host keeps leases and keys in blobs with
// AzureWebJobsStorage, and Flex Consumption reads its deployment package from a container.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Queue Data Contributor: the sync-work queue trigger, enqueueing, poison messages.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Storage Table Data Contributor: SyncLocks, SyncLinks, SyncState, SyncAudit.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Key Vault Secrets User: read secret values to resolve the Key Vault references.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
// Monitoring Metrics Publisher: send telemetry to Application Insights with Entra auth.
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

var storageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

// The operators' data roles: the CLI reads and writes the tables (runs, audit, state) and the queues
// (status, poison, backfill); it needs no blobs, no keys and no secrets.
var operatorRoles = empty(operatorGroupId) ? [] : [
  storageQueueDataContributor
  storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoles: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: {
      principalId: principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]

resource secretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource operatorAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in operatorRoles: {
    name: guid(storage.id, operatorGroupId, roleId)
    scope: storage
    properties: {
      principalId: operatorGroupId
      principalType: 'Group'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    }
  }
]
