// entra-sync on Azure: one resource group with a Flex Consumption Function App (Python 3.11), its
// storage (queues, tables, deployment container; shared keys disabled), a Key Vault for secrets,
// Application Insights on Log Analytics, and one user-assigned managed identity with only the
// roles it needs. `azd up` provisions this and deploys the app (see azure.yaml and the README's "Deploy to Azure").
targetScope = 'subscription'

@description('Required. Name of the azd environment; used to name the resource group and derive a unique token for resource names.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Required. Azure region for every resource; it must offer the Flex Consumption plan (`az functionapp list-flexconsumption-locations`).')
@minLength(1)
param location string

@description('Optional. Name of the resource group; empty for rg-<environmentName>.')
param resourceGroupName string = ''

@description('Optional. Auth0 tenant domain, without scheme or path, e.g. contoso.eu.auth0.com; used only when the mapping has an Auth0 target.')
param auth0Domain string = ''

@description('Optional. Client id of the Auth0 machine-to-machine application; used only when the mapping has an Auth0 target.')
param auth0ClientId string = ''

@description('Optional. Client secret of the Auth0 machine-to-machine application, stored in Key Vault; used only when the mapping has an Auth0 target.')
@secure()
param auth0ClientSecret string = ''

@description('Optional. The targets the mapping names, as JSON written by the pre-provision hook (python -m shared.mapping.deploy): {"auth0": bool, "secrets": [{"setting", "vaultName"}], "settings": {name: value}}. Each secret gets a Key Vault secret and its app setting a Key Vault reference; nothing is created for a target the mapping does not name.')
param targetSet string = ''

@description('Optional. The values of targetSet\'s secrets as a JSON object (setting name -> value), written by the pre-provision hook from the azd environment (azd env set SCIM_HR_APP_TOKEN ...); stored in Key Vault only.')
@secure()
param targetSecrets string = '{}'

@description('Required. Shared secret that Microsoft Graph echoes in every change notification, 16 to 128 characters (e.g. `openssl rand -hex 32`); stored in Key Vault.')
@secure()
@minLength(16)
@maxLength(128)
param graphClientState string

@description('Optional. Slack or Teams incoming-webhook URL for security notifications; stored in Key Vault. Empty for none.')
@secure()
param notifyWebhookUrl string = ''

@description('Optional. Shared secret a Sentinel or Logic Apps playbook sends in the x-risk-alert-secret header of POST /api/risk_alert, 32 to 256 characters (e.g. `openssl rand -hex 32`); stored in Key Vault. Empty: the endpoint refuses every call.')
@secure()
param riskAlertSecret string = ''

@description('Optional. The inbound SCIM sources (the mapping\'s sources of kind scim_inbox), comma-separated, e.g. `hr-push,partners`; empty for none. Each gets its bearer token in Key Vault and the app setting SCIM_INBOX_<SOURCE>_TOKEN referencing it.')
param scimInboxSources string = ''

@description('Optional. Secret seed the inbound SCIM sources\' tokens are derived from, at least 32 characters (e.g. `openssl rand -hex 32`); required when scimInboxSources names a source. Keep it: a new seed is a new token for every source.')
@secure()
param scimInboxTokenSeed string = ''

@description('Optional. NCRONTAB schedule (six fields, seconds first) of the Graph delta sync: the safety net for missed notifications.')
param deltaSchedule string = '0 */5 * * * *'

@description('Optional. NCRONTAB schedule of the full reconciliation (nightly by default, 02:00 UTC).')
param reconcileSchedule string = '0 0 2 * * *'

@description('Optional. NCRONTAB schedule of the risky-users poll (Identity Protection allows 1 request per second per tenant).')
param riskSchedule string = '0 * * * * *'

@description('Optional. NCRONTAB schedule of the Graph subscriptions renewal (users and groups subscriptions live under 29 days).')
param subscriptionsSchedule string = '0 0 */6 * * *'

@description('Required. Path of the mapping file relative to the app root; deploy your own mapping.yaml (see mapping.example.yaml).')
param syncMappingFile string = 'mapping.yaml'

@description('Optional. Largest number of instances of the Function App, all functions together. Auth0 allows a tenant 16 requests/s on Enterprise, which one worker instance already uses up; see the README, "Performance tuning".')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 10

@description('Optional. Memory of each Function App instance in MB; Flex gives CPU in proportion (2048 MB: one vCPU, what one Python worker process can use).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Optional. Always-ready instances of sync_worker (the bulk queue), billed while idle; 0 lets bulk work wait for a cold start.')
@minValue(0)
@maxValue(10)
param workerAlwaysReady int = 1

@description('Optional. Always-ready instances of the HTTP functions (the webhooks), billed while idle: Graph wants an answer within 3 s, and a leaver\'s notification comes this way.')
@minValue(0)
@maxValue(10)
param httpAlwaysReady int = 1

@description('Optional. Always-ready instances of sync_lane (notifications, leavers, risk responses), billed while idle; keep at least 1 for the 2 s leaver goal.')
@minValue(0)
@maxValue(10)
param laneAlwaysReady int = 1

@description('Optional. Object id of an Entra security group of operators: its members get Storage Table Data Contributor and Storage Queue Data Contributor on the storage account, what `entra-sync status`, `backfill`, `poison` and `doctor` need from a laptop (README, "Operate from a laptop"). Empty for none.')
param operatorGroupId string = ''

@description('Optional. Email addresses the alert rules\' action group mails, comma-separated (e.g. `ops@contoso.com,secops@contoso.com`); empty for none.')
param alertEmails string = ''

@description('Optional. A webhook the alert rules\' action group calls (common alert schema); it embeds its own secret. Empty for none.')
@secure()
param alertWebhookUrl string = ''

@description('Optional. Seconds the lane\'s oldest message may wait before an alert.')
@minValue(5)
param laneAgeAlertSeconds int = 60

@description('Optional. Turn on Key Vault purge protection (irreversible). Recommended for production; leave off for environments you tear down with `azd down --purge`.')
param enableKeyVaultPurgeProtection bool = false

@description('Optional. Days the Log Analytics workspace keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
// The mapping's targets, as the pre-provision hook found them (none when it did not run).
var targets = json(!empty(targetSet) ? targetSet : '{"auth0": false, "secrets": [], "settings": {}}')
// A string, as azd passes it from SCIM_INBOX_SOURCES; the modules take the list.
var scimInboxSourceNames = filter(map(split(scimInboxSources, ','), source => trim(source)), source => !empty(source))
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    alertEmails: filter(map(split(alertEmails, ','), address => trim(address)), address => !empty(address))
    alertWebhookUrl: alertWebhookUrl
    laneAgeThresholdSeconds: laneAgeAlertSeconds
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    enablePurgeProtection: enableKeyVaultPurgeProtection
    auth0ClientSecret: targets.auth0 ? auth0ClientSecret : ''
    targetSecretNames: targets.secrets
    targetSecrets: targetSecrets
    graphClientState: graphClientState
    notifyWebhookUrl: notifyWebhookUrl
    riskAlertSecret: riskAlertSecret
  }
}

// Only with inbound sources: the module requires the seed, so naming a source without one stops
// the deployment here, before the app is changed.
module scimInbox 'app/scim-inbox.bicep' = if (!empty(scimInboxSourceNames)) {
  name: 'scim-inbox'
  scope: rg
  params: {
    keyVaultName: keyVault.outputs.name
    sources: scimInboxSourceNames
    tokenSeed: scimInboxTokenSeed
  }
}

// The event feed's Event Grid custom topic (app/events.bicep).
module events 'app/events.bicep' = {
  name: 'events'
  scope: rg
  params: {
    name: 'evgt-${resourceToken}'
    location: location
    tags: tags
    keyVaultName: keyVault.outputs.name
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    operatorGroupId: operatorGroupId
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultReferences: keyVault.outputs.references
    tenantId: tenant().tenantId
    auth0Domain: targets.auth0 ? auth0Domain : ''
    auth0ClientId: targets.auth0 ? auth0ClientId : ''
    targetSecretReferences: keyVault.outputs.targetReferences
    targetSettings: targets.settings
    scimInboxTokenReferences: !empty(scimInboxSourceNames) ? scimInbox.outputs.references : {}
    eventTopicSettings: {
      EVENTS_TOPIC_URL: events.outputs.endpoint
      EVENTS_TOPIC_KEY: events.outputs.keyReference
    }
    deltaSchedule: deltaSchedule
    reconcileSchedule: reconcileSchedule
    riskSchedule: riskSchedule
    subscriptionsSchedule: subscriptionsSchedule
    syncMappingFile: syncMappingFile
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    httpAlwaysReady: httpAlwaysReady
    workerAlwaysReady: workerAlwaysReady
    laneAlwaysReady: laneAlwaysReady
  }
  // The app starts resolving Key Vault references and reading storage as soon as it exists:
  // give the identity its roles first.
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_FUNCTION_URL string = 'https://${api.outputs.defaultHostName}'
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = 'https://${api.outputs.defaultHostName}'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output GRAPH_NOTIFICATION_URL string = api.outputs.notificationUrl
output GRAPH_LIFECYCLE_URL string = api.outputs.lifecycleUrl
// The settings the CLI reads besides the azd environment's own values (with AzureWebJobsStorage__accountName
// from AZURE_STORAGE_ACCOUNT_NAME), so an operator's shell with the azd environment loaded (README,
// "Operate from a laptop") runs `entra-sync status` against this deployment, signed in with az login.
output DELTA_SCHEDULE string = deltaSchedule
output RECONCILE_SCHEDULE string = reconcileSchedule
output RISK_SCHEDULE string = riskSchedule
output SUBSCRIPTIONS_SCHEDULE string = subscriptionsSchedule
output SYNC_MAPPING_FILE string = syncMappingFile
