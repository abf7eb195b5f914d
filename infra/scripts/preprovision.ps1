# azd hook (preprovision) on Windows: the twin of preprovision.sh, which explains why. Checks the
# mapping file, then writes the targets it names into the azd environment for the Bicep.
$ErrorActionPreference = 'Stop'
& (Join-Path $PSScriptRoot 'check-mapping.ps1') -WriteAzdEnv
exit $LASTEXITCODE
