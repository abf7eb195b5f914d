# azd hook (postprovision) on Windows: the twin of postprovision.sh, which explains why. Grants the
# managed identity its Microsoft Graph permissions, or prints what an administrator must run.
$ErrorActionPreference = 'Stop'

$principal = $env:AZURE_MANAGED_IDENTITY_PRINCIPAL_ID
$tenant = if ($env:AZURE_TENANT_ID) { $env:AZURE_TENANT_ID } else { '<tenant id>' }
if (-not $principal) {
    [Console]::Error.WriteLine('entra-sync: no AZURE_MANAGED_IDENTITY_PRINCIPAL_ID in the azd environment: was infra/main.bicep provisioned?')
    exit 1
}

# The mapping sends mail (preprovision wrote ENTRA_SYNC_MAIL_SEND): Mail.Send too.
$mailSend = ($env:ENTRA_SYNC_MAIL_SEND -eq 'true')
$mail = if ($mailSend) { ' --mail-send' } else { '' }
$mailPs = if ($mailSend) { ' -MailSend' } else { '' }
try {
    & (Join-Path $PSScriptRoot 'grant-graph-permissions.ps1') -PrincipalId $principal -MailSend:$mailSend
    $granted = ($LASTEXITCODE -eq 0)
}
catch { $granted = $false }
if ($granted) {
    Write-Host "entra-sync: the managed identity $principal holds the Microsoft Graph permissions it needs"
    exit 0
}

foreach ($line in @(
        'the Microsoft Graph permissions could not be granted with your sign-in (granting application',
        'permissions needs Privileged Role Administrator or Global Administrator). The app is deployed but',
        'reads nothing from Entra ID until an administrator runs, from a clone of this repository:',
        "  az login --tenant $tenant",
        "  bash infra/scripts/grant-graph-permissions.sh --principal-id $principal$mail",
        'or in PowerShell:',
        "  ./infra/scripts/grant-graph-permissions.ps1 -PrincipalId $principal$mailPs",
        'then: azd hooks run postdeploy (creates the Graph subscriptions).'
    )) { [Console]::Error.WriteLine("entra-sync: $line") }
exit 0
