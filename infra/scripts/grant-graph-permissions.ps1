# Grant entra-sync's managed identity the Microsoft Graph application permissions it needs, and no
# more: the PowerShell twin of grant-graph-permissions.sh (same permissions, same steps, same
# messages). Safe to run again: permissions already granted are left alone and reported.
#
# Usage: ./infra/scripts/grant-graph-permissions.ps1 [-PrincipalId OBJECT_ID] [-MailSend] [-DryRun]
# -MailSend: also Mail.Send, where the mapping sends mail (an alerts email channel, an Auth0
# welcome_mailbox); restrict it to that mailbox (README, "Email").
# Needs: Azure CLI signed in (az login) as Privileged Role Administrator or Global Administrator.
param(
    [string] $PrincipalId = $env:AZURE_MANAGED_IDENTITY_PRINCIPAL_ID,
    [switch] $MailSend,
    [switch] $DryRun
)
$ErrorActionPreference = 'Stop'

$GraphAppId = '00000003-0000-0000-c000-000000000000'
$GraphUrl = 'https://graph.microsoft.com/v1.0'
$Permissions = @(
    'User.Read.All'
    'Group.Read.All'
    'IdentityRiskyUser.Read.All'
    'IdentityRiskEvent.Read.All'
)
if ($MailSend) { $Permissions += 'Mail.Send' }

if (-not $PrincipalId -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    $PrincipalId = (azd env get-value AZURE_MANAGED_IDENTITY_PRINCIPAL_ID 2>$null)
}
if ($PrincipalId -notmatch '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$') {
    [Console]::Error.WriteLine("error: no managed identity principal id; pass -PrincipalId or run after 'azd provision'")
    exit 2
}

$graphSpId = az ad sp show --id $GraphAppId --query id --output tsv
if ($LASTEXITCODE -ne 0 -or -not $graphSpId) {
    [Console]::Error.WriteLine('error: Microsoft Graph service principal not found in this tenant')
    exit 1
}
$roles = az ad sp show --id $GraphAppId --query "appRoles[?contains(allowedMemberTypes, 'Application')].{id: id, value: value}" --output json | ConvertFrom-Json
$assigned = @(az rest --method GET --url "$GraphUrl/servicePrincipals/$PrincipalId/appRoleAssignments" --query "value[?resourceId=='$graphSpId'].appRoleId" --output json | ConvertFrom-Json)
if ($LASTEXITCODE -ne 0) { exit 1 }

$wanted = @()
foreach ($permission in $Permissions) {
    $role = $roles | Where-Object { $_.value -eq $permission } | Select-Object -First 1
    if (-not $role) {
        [Console]::Error.WriteLine("error: Microsoft Graph has no application permission named $permission")
        exit 1
    }
    $wanted += $role.id
    if ($assigned -contains $role.id) { Write-Host "already granted: $permission"; continue }
    if ($DryRun) { Write-Host "would grant: $permission ($($role.id))"; continue }
    $body = @{ principalId = $PrincipalId; resourceId = $graphSpId; appRoleId = $role.id } | ConvertTo-Json -Compress
    $bodyFile = New-TemporaryFile
    try {
        Set-Content -LiteralPath $bodyFile -Value $body -NoNewline
        az rest --method POST --url "$GraphUrl/servicePrincipals/$PrincipalId/appRoleAssignments" --headers 'Content-Type=application/json' --body "@$bodyFile" --output none
        if ($LASTEXITCODE -ne 0) { exit 1 }
    }
    finally { Remove-Item -LiteralPath $bodyFile -ErrorAction SilentlyContinue }
    Write-Host "granted: $permission"
}

# Report (never revoke) Graph permissions beyond the list, so an operator can review them.
foreach ($roleId in $assigned) {
    if ($wanted -notcontains $roleId) {
        $name = ($roles | Where-Object { $_.id -eq $roleId } | Select-Object -First 1).value
        [Console]::Error.WriteLine("note: the identity also holds $(if ($name) { $name } else { $roleId }), which entra-sync does not need")
    }
}
