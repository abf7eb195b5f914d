// The event feed's Azure Event Grid custom topic: entra-sync publishes every effective change to it
// as a CloudEvents 1.0 event (see README "Alerts and events"), and subscribers (a Function, a Logic
// App, a webhook) take them from the topic with Event Grid's own retries and dead-lettering.
//
// The topic takes the CloudEvents schema. The app publishes with the topic's access key, written
// here to Key Vault as `events-topic-key` (its reference is the EVENTS_TOPIC_KEY app setting the
// mapping's alerts.events.secret_setting names). Role assignments live in rbac.bicep: a publisher
// that signs in with Entra ID instead would need EventGrid Data Sender on the topic there.

@description('Required. Name of the Event Grid custom topic.')
param name string

@description('Required. Azure region of the topic.')
param location string

@description('Optional. Tags applied to the topic.')
param tags object = {}

@description('Required. Name of the Key Vault the topic key is written to (keyvault.bicep\'s).')
param keyVaultName string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    publicNetworkAccess: 'Enabled'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource topicKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'events-topic-key'
  properties: {
    value: topic.listKeys().key1
    contentType: 'text/plain'
  }
}

@description('The topic\'s endpoint: the EVENTS_TOPIC_URL app setting the mapping\'s alerts.events.url_setting names.')
output endpoint string = topic.properties.endpoint

@description('The Key Vault reference of the topic key (the EVENTS_TOPIC_KEY app setting).')
output keyReference string = '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/events-topic-key)'
