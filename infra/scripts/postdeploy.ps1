# azd hook (postdeploy) on Windows: the twin of postdeploy.sh, which explains why. Runs
# subscriptions_renew once through the Functions admin API with the master key (read through az,
# sent in a header, never on a command line), then reports the subscriptions as entra-sync status
# reads them (bounded tries).
$ErrorActionPreference = 'Stop'

$root = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).Path
foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_NAME', 'SERVICE_API_URI') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        [Console]::Error.WriteLine("entra-sync: no $name in the azd environment: run azd provision first")
        exit 1
    }
}

$key = az functionapp keys list --resource-group $env:AZURE_RESOURCE_GROUP --name $env:AZURE_FUNCTION_NAME --query masterKey --output tsv
if ($LASTEXITCODE -ne 0) { exit 1 }
try {
    $answer = Invoke-WebRequest -Method Post -Uri "$($env:SERVICE_API_URI)/admin/functions/subscriptions_renew" `
        -Headers @{ 'x-functions-key' = $key } -ContentType 'application/json' -Body '{"input": ""}' -TimeoutSec 60
    $code = [int]$answer.StatusCode
}
catch { $code = if ($_.Exception.Response) { [int]$_.Exception.Response.StatusCode } else { 0 } }
if ($code -ne 202) {
    [Console]::Error.WriteLine("entra-sync: subscriptions_renew was not started (the admin API answered HTTP $code);")
    [Console]::Error.WriteLine('entra-sync: it runs on its schedule (SUBSCRIPTIONS_SCHEDULE) anyway. Retry with: azd hooks run postdeploy')
    exit 1
}
Write-Host 'entra-sync: subscriptions_renew started'

$python = $env:ENTRA_SYNC_PYTHON
if (-not $python) {
    foreach ($candidate in @((Join-Path $root '.venv/Scripts/python.exe'), 'python3', 'python')) {
        if (Get-Command $candidate -ErrorAction SilentlyContinue) { $python = $candidate; break }
    }
}
$env:PYTHONPATH = $root
# The CLI reads the account as the app does; the azd environment has it as an output.
if (-not $env:AzureWebJobsStorage__accountName) { $env:AzureWebJobsStorage__accountName = $env:AZURE_STORAGE_ACCOUNT_NAME }
$attempts = if ($env:ENTRA_SYNC_WAIT_ATTEMPTS) { [int]$env:ENTRA_SYNC_WAIT_ATTEMPTS } else { 12 }
Push-Location $root
try {
    while ($python -and $attempts -gt 0) {
        $attempts -= 1
        $report = & $python -m shared.cli status --json 2>$null | & $python -m shared.cli.subscriptions_report
        if ($LASTEXITCODE -eq 0) { $report | ForEach-Object { Write-Host $_ }; exit 0 }
        if ($attempts -gt 0) { Start-Sleep -Seconds 5 }
    }
}
finally { Pop-Location }
Write-Host 'entra-sync: the subscriptions are not readable from here yet: check with entra-sync status (needs the operator'
Write-Host "entra-sync: role, README 'Operate from a laptop'), or in Application Insights: traces | where message has 'subscriptions_renew'"
exit 0
