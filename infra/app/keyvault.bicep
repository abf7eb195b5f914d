// Key Vault (Azure RBAC authorization) holding entra-sync's secrets. The values arrive as secure
// parameters and are written through the control plane; the Function App reads them only through
// Key Vault references resolved with its user-assigned identity (Key Vault Secrets User).

@description('Required. Name of the Key Vault (3-24 characters).')
param name string

@description('Required. Azure region of the Key Vault.')
param location string

@description('Optional. Tags applied to the Key Vault.')
param tags object = {}

@description('Optional. Turn on purge protection (irreversible; keeps a deleted vault for the retention period, so `azd down --purge` cannot remove it). Recommended for production.')
param enablePurgeProtection bool = false

@description('Optional. Client secret of the Auth0 machine-to-machine application; empty when the mapping has no Auth0 target.')
@secure()
param auth0ClientSecret string = ''

@description('Optional. The secrets the mapping\'s other targets read: [{setting, vaultName}] (main.bicep\'s targetSet.secrets).')
param targetSecretNames array = []

@description('Optional. Their values, a JSON object setting name -> value (main.bicep\'s targetSecrets).')
@secure()
param targetSecrets string = '{}'

@description('Required. Shared secret Microsoft Graph echoes in every change notification (16 to 128 characters).')
@secure()
@minLength(16)
@maxLength(128)
param graphClientState string

@description('Optional. Slack or Teams incoming-webhook URL for security notifications; empty for none.')
@secure()
param notifyWebhookUrl string = ''

@description('Optional. Shared secret of the risk_alert push endpoint (x-risk-alert-secret header); empty for none, which refuses every call.')
@secure()
param riskAlertSecret string = ''

var hasAuth0Secret = !empty(auth0ClientSecret)
var auth0ClientSecretName = 'auth0-client-secret'
var hasNotifyWebhook = !empty(notifyWebhookUrl)
var notifyWebhookSecretName = 'notify-webhook-url'
var hasRiskAlertSecret = !empty(riskAlertSecret)
var riskAlertSecretName = 'risk-alert-secret'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // The service accepts only true or an absent value here: it cannot be switched off.
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
  }
}

resource auth0ClientSecretEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (hasAuth0Secret) {
  parent: vault
  name: auth0ClientSecretName
  properties: {
    value: auth0ClientSecret
    contentType: 'text/plain'
  }
}

resource graphClientStateEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'graph-client-state'
  properties: {
    value: graphClientState
    contentType: 'text/plain'
  }
}

resource notifyWebhookEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (hasNotifyWebhook) {
  parent: vault
  name: notifyWebhookSecretName
  properties: {
    value: notifyWebhookUrl
    contentType: 'text/plain'
  }
}

resource riskAlertSecretEntry 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (hasRiskAlertSecret) {
  parent: vault
  name: riskAlertSecretName
  properties: {
    value: riskAlertSecret
    contentType: 'text/plain'
  }
}

// One secret per setting a target reads (a SCIM application's token, a Salesforce org's secret).
resource targetSecretEntries 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for secret in targetSecretNames: {
    parent: vault
    name: secret.vaultName
    properties: {
      value: json(targetSecrets)[secret.setting]
      contentType: 'text/plain'
    }
  }
]

// Versionless secret URIs: the platform picks up a rotated value without a redeploy.
output name string = vault.name
output uri string = vault.properties.vaultUri
output references object = {
  AUTH0_CLIENT_SECRET: hasAuth0Secret
    ? '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${auth0ClientSecretName})'
    : ''
  GRAPH_CLIENT_STATE: '@Microsoft.KeyVault(SecretUri=${graphClientStateEntry.properties.secretUri})'
  NOTIFY_WEBHOOK_URL: hasNotifyWebhook
    ? '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${notifyWebhookSecretName})'
    : ''
  RISK_ALERT_SECRET: hasRiskAlertSecret
    ? '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${riskAlertSecretName})'
    : ''
}
@description('The app settings of the targets\' secrets: setting name -> its Key Vault reference.')
output targetReferences object = toObject(targetSecretNames, secret => (secret.setting), secret => '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${secret.vaultName})')
