#!/bin/sh
# azd hook (postdeploy): create the Graph change-notification subscriptions now rather than at the
# next SUBSCRIPTIONS_SCHEDULE tick, by running subscriptions_renew once through the Functions admin
# API (POST /admin/functions/subscriptions_renew with the host's master key, read through az and
# handed to curl in a file, never on a command line), then report the subscriptions it made as
# `entra-sync status` reads them (bounded: ENTRA_SYNC_WAIT_ATTEMPTS tries, 5 s apart).
# Reading them needs the operator's data role on the storage account (README, "Operate from a
# laptop"); without it the hook says where to look instead. POSIX sh; the twin is postdeploy.ps1.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/../.." && pwd)
say() { printf 'entra-sync: %s\n' "$@"; }
for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_NAME SERVICE_API_URI; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    say "no $name in the azd environment: run azd provision first" >&2
    exit 1
  fi
done

headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
chmod 600 "$headers"
key=$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_NAME" \
  --query masterKey --output tsv)
printf 'x-functions-key: %s\nContent-Type: application/json\n' "$key" >"$headers"
code=$(curl --silent --show-error --max-time 60 --output /dev/null --write-out '%{http_code}' \
  --request POST --header "@$headers" --data '{"input": ""}' \
  "$SERVICE_API_URI/admin/functions/subscriptions_renew")
if [ "$code" != 202 ]; then
  say "subscriptions_renew was not started (the admin API answered HTTP $code);" \
    "it runs on its schedule (SUBSCRIPTIONS_SCHEDULE) anyway. Retry with: azd hooks run postdeploy" >&2
  exit 1
fi
say "subscriptions_renew started"

. "$root/infra/scripts/find-python.sh"
if [ -z "$python" ]; then
  say "see the subscriptions with entra-sync status once the app's packages are installed (README, \"Operate from a laptop\")"
  exit 0
fi
# The CLI reads the account as the app does; the azd environment has it as an output.
AzureWebJobsStorage__accountName=${AzureWebJobsStorage__accountName:-${AZURE_STORAGE_ACCOUNT_NAME:-}}
export AzureWebJobsStorage__accountName
attempts=${ENTRA_SYNC_WAIT_ATTEMPTS:-12}
while [ "$attempts" -gt 0 ]; do
  attempts=$((attempts - 1))
  if report=$(cd "$root" && PYTHONPATH="$root" "$python" -m shared.cli status --json 2>/dev/null \
    | PYTHONPATH="$root" "$python" -m shared.cli.subscriptions_report); then
    printf '%s\n' "$report"
    exit 0
  fi
  [ "$attempts" -gt 0 ] && sleep "${ENTRA_SYNC_WAIT_S:-5}"
done
say "the subscriptions are not readable from here yet: check with entra-sync status (needs the operator" \
  "role, README \"Operate from a laptop\"), or in Application Insights: traces | where message has 'subscriptions_renew'"
exit 0
