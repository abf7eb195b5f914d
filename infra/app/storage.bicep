// The storage account behind the Functions host (AzureWebJobsStorage), the Flex Consumption
// deployment container, and entra-sync's own queues and tables. Shared keys are disabled: every
// client (host, app code, deployment) authenticates with the managed identity.

@description('Required. Name of the storage account (3-24 lower-case letters and digits).')
param name string

@description('Required. Azure region of the storage account.')
param location string

@description('Optional. Tags applied to the storage account.')
param tags object = {}

@description('Required. Blob container that holds the Flex Consumption deployment packages.')
param deploymentContainerName string

// The same names as shared/names.py (QUEUES, TABLES); tests/infra checks that they agree.
var queueNames = [
  'sync-work'
  'sync-work-poison'
  'sync-lane'
  'sync-lane-poison'
]
var tableNames = [
  'SyncLocks'
  'SyncLinks'
  'SyncState'
  'SyncAudit'
]

var reportsContainerName = 'sync-reports'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }

    // Reconciliation reports (JSON, CSV, HTML per run), read back by `entra-sync report`.
    resource reportsContainer 'containers' = {
      name: reportsContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'

    resource queues 'queues' = [
      for queueName in queueNames: {
        name: queueName
      }
    ]
  }

  resource tableService 'tableServices' = {
    name: 'default'

    resource tables 'tables' = [
      for tableName in tableNames: {
        name: tableName
      }
    ]
  }
}

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainerName
