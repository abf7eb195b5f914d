# azd hook (predeploy; preprovision through preprovision.ps1) on Windows: the twin of
# check-mapping.sh, which explains why. Stops before anything reaches Azure when the mapping file
# named by SYNC_MAPPING_FILE (default mapping.yaml, relative to the repository root) is missing,
# left out of the deployment package, or invalid (read by python -m shared.mapping.deploy); with
# -WriteAzdEnv it also writes the targets the mapping names into the azd environment.
param([switch] $WriteAzdEnv)
$ErrorActionPreference = 'Stop'

$root = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).Path
$file = if ($env:SYNC_MAPPING_FILE) { $env:SYNC_MAPPING_FILE } else { 'mapping.yaml' }

function Stop-Hook([string[]] $Lines) {
    foreach ($line in $Lines) { [Console]::Error.WriteLine("entra-sync: $line") }
    exit 1
}

if ([System.IO.Path]::IsPathRooted($file)) {
    Stop-Hook @(
        "SYNC_MAPPING_FILE is '$file', a path on this machine; in Azure it must be relative to the app root,",
        'for example: azd env set SYNC_MAPPING_FILE mapping.yaml'
    )
}

# A directory .funcignore keeps out of the package (tests/, infra/, ...) would leave the file behind.
$relative = ($file -replace '\\', '/') -replace '^\./', ''
$funcignore = Join-Path $root '.funcignore'
if (Test-Path -LiteralPath $funcignore -PathType Leaf) {
    foreach ($pattern in Get-Content -LiteralPath $funcignore) {
        if ($pattern.EndsWith('/') -and $relative.StartsWith($pattern)) {
            Stop-Hook @(
                "the mapping file '$file' (SYNC_MAPPING_FILE) is under $pattern, which .funcignore keeps out",
                'of the deployment package. Move it, for example to mapping.yaml at the repository root.'
            )
        }
    }
}

if (Test-Path -LiteralPath (Join-Path $root $file) -PathType Leaf) {
    Write-Host "entra-sync: mapping file '$file' found"
    $python = $env:ENTRA_SYNC_PYTHON
    if (-not $python) {
        foreach ($candidate in @((Join-Path $root '.venv/Scripts/python.exe'), (Join-Path $root '.venv/bin/python'), 'python3', 'python')) {
            if (Get-Command $candidate -ErrorAction SilentlyContinue) { $python = $candidate; break }
        }
    }
    $env:PYTHONPATH = $root
    Push-Location $root
    try {
        if ($python) { & $python -c 'import shared.mapping.deploy' 2>$null | Out-Null }
        if (-not $python -or $LASTEXITCODE -ne 0) {
            Stop-Hook @(
                "the mapping is checked with the app's own code, which needs Python 3.11 and the app's packages:",
                '  python -m venv .venv; .venv\Scripts\pip install -r requirements.txt',
                '(or name an interpreter that has them: $env:ENTRA_SYNC_PYTHON = ''C:\path\to\python.exe''), then run azd again.'
            )
        }
        $mode = if ($WriteAzdEnv) { @() } else { @('--check-only') }
        & $python -m shared.mapping.deploy --mapping (Join-Path $root $file) @mode
        exit $LASTEXITCODE
    }
    finally { Pop-Location }
}

Stop-Hook @(
    "the mapping file '$file' (SYNC_MAPPING_FILE) is not in $root.",
    'The app loads it at start-up and refuses to start without it, so nothing was provisioned or deployed.',
    'Create it from the documented example and fill in your group object ids:',
    "  Copy-Item mapping.example.yaml $file",
    'or point SYNC_MAPPING_FILE at your mapping, relative to the repository root:',
    '  azd env set SYNC_MAPPING_FILE <path>',
    "then run azd up again (README.md, 'Deploy to Azure', step 2)."
)
