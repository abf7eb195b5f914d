#!/bin/sh
# azd hook (postprovision): grant the app's managed identity its Microsoft Graph application
# permissions (grant-graph-permissions.sh, which leaves granted ones alone). Granting them needs
# Privileged Role Administrator or Global Administrator; when the signed-in identity is neither,
# the hook prints exactly what an administrator must run and lets azd go on: the app is deployed and
# starts, and reads Entra ID once the grant is made. POSIX sh (the grant itself is a bash script);
# the Windows twin is postprovision.ps1.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
principal=${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}
tenant=${AZURE_TENANT_ID:-<tenant id>}

if [ -z "$principal" ]; then
  printf 'entra-sync: %s\n' "no AZURE_MANAGED_IDENTITY_PRINCIPAL_ID in the azd environment: was infra/main.bicep provisioned?" >&2
  exit 1
fi

mail=""  # the mapping sends mail (preprovision wrote ENTRA_SYNC_MAIL_SEND): Mail.Send too
if [ "${ENTRA_SYNC_MAIL_SEND:-false}" = "true" ]; then
  mail="--mail-send"
fi

# shellcheck disable=SC2086 # $mail is one flag or nothing
if bash "$here/grant-graph-permissions.sh" --principal-id "$principal" $mail; then
  printf 'entra-sync: %s\n' "the managed identity $principal holds the Microsoft Graph permissions it needs"
  exit 0
fi

printf 'entra-sync: %s\n' \
  "the Microsoft Graph permissions could not be granted with your sign-in (granting application" \
  "permissions needs Privileged Role Administrator or Global Administrator). The app is deployed but" \
  "reads nothing from Entra ID until an administrator runs, from a clone of this repository:" \
  "  az login --tenant $tenant" \
  "  bash infra/scripts/grant-graph-permissions.sh --principal-id $principal $mail" \
  "or in PowerShell:" \
  "  ./infra/scripts/grant-graph-permissions.ps1 -PrincipalId $principal" \
  "then: azd hooks run postdeploy (creates the Graph subscriptions)." >&2
exit 0
