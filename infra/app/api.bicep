// The entra-sync Function App on a Flex Consumption plan (Linux, Python 3.11), running as the
// user-assigned identity. Every setting shared/settings.py reads in Azure is set here; secrets are
// Key Vault references resolved through the same identity (keyVaultReferenceIdentity).

@description('Required. Name of the Function App.')
param name string

@description('Required. Name of the Flex Consumption plan.')
param planName string

@description('Required. Azure region of the plan and the app.')
param location string

@description('Optional. Tags applied to the plan and the app.')
param tags object = {}

@description('Optional. azd service name the app is tagged with (matches azure.yaml).')
param serviceName string = 'api'

@description('Required. Resource id of the user-assigned managed identity.')
param identityId string

@description('Required. Client id of the user-assigned managed identity.')
param identityClientId string

@description('Required. Name of the storage account used for AzureWebJobsStorage, queues and tables.')
param storageAccountName string

@description('Required. Blob endpoint of the storage account (ends with a slash).')
param storageBlobEndpoint string

@description('Required. Queue endpoint of the storage account.')
param storageQueueEndpoint string

@description('Required. Table endpoint of the storage account.')
param storageTableEndpoint string

@description('Required. Blob container that holds the deployment packages.')
param deploymentContainerName string

@description('Required. Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Required. Key Vault references by setting name: AUTH0_CLIENT_SECRET, GRAPH_CLIENT_STATE, NOTIFY_WEBHOOK_URL, RISK_ALERT_SECRET (the last two empty when not configured).')
param keyVaultReferences object

@description('Optional. Key Vault references of the inbound SCIM sources\' tokens by setting name (SCIM_INBOX_<SOURCE>_TOKEN), from scim-inbox.bicep.')
param scimInboxTokenReferences object = {}

@description('Optional. The event feed\'s Event Grid topic: EVENTS_TOPIC_URL (its endpoint) and EVENTS_TOPIC_KEY (the Key Vault reference of its key), the settings a mapping\'s `alerts.events: {kind: event_grid, url_setting: EVENTS_TOPIC_URL, secret_setting: EVENTS_TOPIC_KEY}` names.')
param eventTopicSettings object = {}

@description('Required. Entra tenant id (AZURE_TENANT_ID).')
param tenantId string

@description('Optional. Auth0 tenant domain, e.g. contoso.eu.auth0.com; empty when the mapping has no Auth0 target (no AUTH0_ setting is made).')
param auth0Domain string = ''

@description('Optional. Client id of the Auth0 machine-to-machine application.')
param auth0ClientId string = ''

@description('Optional. Key Vault references of the targets\' secrets by setting name (SCIM_<NAME>_TOKEN, <PREFIX>_CLIENT_SECRET), from keyvault.bicep.')
param targetSecretReferences object = {}

@description('Optional. The targets\' plain settings by name (a Salesforce org\'s <PREFIX>_INSTANCE_URL and _CLIENT_ID).')
param targetSettings object = {}

@description('Required. NCRONTAB schedule of the Graph delta timer.')
param deltaSchedule string

@description('Required. NCRONTAB schedule of the full reconciliation timer.')
param reconcileSchedule string

@description('Required. NCRONTAB schedule of the risky-users timer.')
param riskSchedule string

@description('Required. NCRONTAB schedule of the Graph subscriptions renewal timer.')
param subscriptionsSchedule string

@description('Required. Path of the mapping file relative to the app root; deploy your own mapping.yaml (see mapping.example.yaml).')
param syncMappingFile string = 'mapping.yaml'

@description('Optional. Largest number of instances of the whole app, all functions together. Auth0 allows a tenant 16 requests/s on Enterprise, which one worker instance already uses up, so more instances only wait on rate limits; see the README, "Performance tuning".')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 10

@description('Optional. Memory of each instance in MB; Flex gives CPU in proportion (2048 MB: one vCPU, what one Python worker process can use).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Optional. Always-ready (pre-started, billed while idle) instances of sync_worker, the bulk queue: bulk work starts without a cold start.')
@minValue(0)
@maxValue(10)
param workerAlwaysReady int = 1

@description('Optional. Always-ready instances of the HTTP functions (Flex scales them together as the group "http"): the webhooks answer Graph within its 3 s, and a leaver\'s notification reaches the lane, without waiting for a cold start.')
@minValue(0)
@maxValue(10)
param httpAlwaysReady int = 1

@description('Optional. Always-ready instances of sync_lane (notifications, leavers, risk responses): a cold start of several seconds would break the lane\'s 2 s goal for a leaver.')
@minValue(0)
@maxValue(10)
param laneAlwaysReady int = 1

// The Auth0 machine-to-machine application's settings, only for a mapping with an Auth0 target.
var auth0Settings = empty(auth0Domain) ? {} : {
  AUTH0_DOMAIN: auth0Domain
  AUTH0_CLIENT_ID: auth0ClientId
  AUTH0_CLIENT_SECRET: keyVaultReferences.AUTH0_CLIENT_SECRET
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // Flex scales the HTTP functions together ('http') and each queue-triggered function on
        // instances of its own ('function:<name>').
        alwaysReady: [
          {
            name: 'http'
            instanceCount: httpAlwaysReady
          }
          {
            name: 'function:sync_worker'
            instanceCount: workerAlwaysReady
          }
          {
            name: 'function:sync_lane'
            instanceCount: laneAlwaysReady
          }
        ]
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Separate from the site, so the settings can use the app's own default host name.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  // The settings of the mapping's targets and the inbound SCIM sources' tokens are named after them,
  // so they join the fixed ones here.
  properties: union({
    // Functions host storage, identity-based (the account has shared keys disabled).
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
    AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
    AzureWebJobsStorage__tableServiceUri: storageTableEndpoint

    // Telemetry with Entra authentication (local auth is disabled on the component).
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'

    // Microsoft Graph through the managed identity: no client secret.
    AZURE_TENANT_ID: tenantId
    AZURE_CLIENT_ID: identityClientId
    GRAPH_CLIENT_STATE: keyVaultReferences.GRAPH_CLIENT_STATE
    GRAPH_NOTIFICATION_URL: 'https://${functionApp.properties.defaultHostName}/api/graph_webhook'
    GRAPH_LIFECYCLE_URL: 'https://${functionApp.properties.defaultHostName}/api/graph_lifecycle'

    // Timers (six-field NCRONTAB, read by the trigger decorators as %NAME%).
    DELTA_SCHEDULE: deltaSchedule
    RECONCILE_SCHEDULE: reconcileSchedule
    RISK_SCHEDULE: riskSchedule
    SUBSCRIPTIONS_SCHEDULE: subscriptionsSchedule

    SYNC_MAPPING_FILE: syncMappingFile
    NOTIFY_WEBHOOK_URL: keyVaultReferences.NOTIFY_WEBHOOK_URL
    // Shared secret of the risk_alert push endpoint; empty refuses every call.
    RISK_ALERT_SECRET: keyVaultReferences.RISK_ALERT_SECRET
    // The inbound SCIM sources' tokens (the mapping's sources: names the sources to the app).
  }, auth0Settings, targetSecretReferences, targetSettings, scimInboxTokenReferences, eventTopicSettings)
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
output notificationUrl string = 'https://${functionApp.properties.defaultHostName}/api/graph_webhook'
output lifecycleUrl string = 'https://${functionApp.properties.defaultHostName}/api/graph_lifecycle'
