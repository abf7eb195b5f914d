#!/bin/sh
# azd hook (preprovision): check the mapping file as check-mapping.sh does, then write the targets
# it names into the azd environment (ENTRA_SYNC_TARGETS, ENTRA_SYNC_TARGET_SECRETS,
# SCIM_INBOX_SOURCES), which infra/main.parameters.json hands to the Bicep: parameters, Key Vault
# secrets and app settings exist only for those targets. A value a target needs and the azd
# environment lacks stops the provision with the `azd env set` command that supplies it.
# POSIX sh; the Windows twin is preprovision.ps1.
set -eu
exec sh "$(dirname -- "$0")/check-mapping.sh" --write-azd-env
