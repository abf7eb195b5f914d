// The bearer tokens of the inbound SCIM sources (the mapping's sources of kind scim_inbox): one Key
// Vault secret per source, `scim-inbox-<source>-token`, and the Key Vault references the app reads
// them through, as the settings SCIM_INBOX_<SOURCE>_TOKEN (upper-cased, '-' as '_'). Deployed only
// when main.bicep names at least one source.
//
// A token is derived from the secret seed and the source's name: two name-based GUIDs (guid() is a
// SHA-1 hash of its arguments) without their dashes, 64 hex characters. Deriving it, not drawing it
// with newGuid(), is what keeps it stable: every provision writes the same value, so the Secret Token
// pasted into Entra stays right, while a new seed changes every source's token at the next provision.
// Tokens never leave this module: the outputs are Key Vault references, which hold no secret.

@description('Required. Name of the Key Vault the tokens are written to (keyvault.bicep\'s).')
param keyVaultName string

@description('Required. Names of the inbound SCIM sources, as the mapping\'s `sources:` names them (a-z, 0-9 and \'-\', starting with a letter).')
@minLength(1)
param sources array

@description('Required. Secret seed the tokens are derived from, at least 32 characters (e.g. `openssl rand -hex 32`). Keep it: a new seed is a new token for every source.')
@secure()
@minLength(32)
param tokenSeed string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource tokenEntries 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for source in sources: {
    parent: vault
    name: 'scim-inbox-${source}-token'
    properties: {
      value: '${replace(guid(tokenSeed, '1', source), '-', '')}${replace(guid(tokenSeed, '2', source), '-', '')}'
      contentType: 'text/plain'
    }
  }
]

// Versionless secret URIs, as keyvault.bicep's: a value set by hand in the vault is read without a
// redeploy (and overwritten by the next provision).
@description('The app settings of the inbound sources\' tokens: SCIM_INBOX_<SOURCE>_TOKEN -> its Key Vault reference.')
output references object = toObject(sources, source => 'SCIM_INBOX_${toUpper(replace(source, '-', '_'))}_TOKEN', source => '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/scim-inbox-${source}-token)')
