#!/usr/bin/env bash
# Grant entra-sync's managed identity the Microsoft Graph application permissions it needs, and no
# more. Safe to run again: permissions already granted are left alone and reported.
#
# Usage:
#   infra/scripts/grant-graph-permissions.sh [--principal-id OBJECT_ID] [--mail-send] [--dry-run]
#
#   --principal-id         object (principal) id of the managed identity's service principal.
#                          Default: $AZURE_MANAGED_IDENTITY_PRINCIPAL_ID, else `azd env get-value`.
#   --mail-send            also Mail.Send, where the mapping sends mail (an alerts email channel, an
#                          Auth0 welcome_mailbox); restrict it to that mailbox (README, "Email").
#   --dry-run              print what would be granted, change nothing.
#
# Needs: Azure CLI signed in (`az login`) as someone who may grant admin consent for Microsoft Graph
# application permissions (Privileged Role Administrator or Global Administrator).
#
# Permissions (application, least privileged for what entra-sync calls):
#   User.Read.All               users, users delta, subscriptions on /users
#   Group.Read.All              subscriptions on /groups (Graph's least-privileged permission for
#                               them; GroupMember.Read.All is not enough), groups delta
#                               (members@delta), transitive members
#   IdentityRiskyUser.Read.All  /identityProtection/riskyUsers
#   IdentityRiskEvent.Read.All  /identityProtection/riskDetections
#   Mail.Send (--mail-send)     /users/{mailbox}/sendMail, one mailbox by access policy
set -euo pipefail

GRAPH_APP_ID="00000003-0000-0000-c000-000000000000"
GRAPH_URL="https://graph.microsoft.com/v1.0"
PERMISSIONS=(
  "User.Read.All"
  "Group.Read.All"
  "IdentityRiskyUser.Read.All"
  "IdentityRiskEvent.Read.All"
)

principal_id="${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}"
dry_run=0

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --principal-id)
      [[ $# -ge 2 ]] || { echo "error: --principal-id needs a value" >&2; exit 2; }
      principal_id="$2"
      shift 2
      ;;
    --dry-run)
      dry_run=1
      shift
      ;;
    --mail-send)
      PERMISSIONS+=("Mail.Send")
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "error: unknown argument: $1" >&2
      usage >&2
      exit 2
      ;;
  esac
done

if [[ -z "$principal_id" ]] && command -v azd >/dev/null 2>&1; then
  principal_id="$(azd env get-value AZURE_MANAGED_IDENTITY_PRINCIPAL_ID 2>/dev/null || true)"
fi
if [[ ! "$principal_id" =~ ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$ ]]; then
  echo "error: no managed identity principal id; pass --principal-id or run after 'azd provision'" >&2
  exit 2
fi

graph_sp_id="$(az ad sp show --id "$GRAPH_APP_ID" --query id --output tsv)"
if [[ -z "$graph_sp_id" ]]; then
  echo "error: Microsoft Graph service principal not found in this tenant" >&2
  exit 1
fi

# Graph's application permissions as "<app role id><TAB><name>" lines, read once.
graph_roles="$(az ad sp show --id "$GRAPH_APP_ID" \
  --query "appRoles[?contains(allowedMemberTypes, 'Application')].[id, value]" --output tsv)"
role_id_of() { awk -F '\t' -v name="$1" '$2 == name { print $1; exit }' <<<"$graph_roles"; }
role_name_of() { awk -F '\t' -v id="$1" 'tolower($1) == tolower(id) { print $2; exit }' <<<"$graph_roles"; }

# App role ids the identity already holds on Microsoft Graph, one per line.
assigned="$(az rest --method GET \
  --url "$GRAPH_URL/servicePrincipals/$principal_id/appRoleAssignments" \
  --query "value[?resourceId=='$graph_sp_id'].appRoleId" --output tsv)"

wanted_ids=""
for permission in "${PERMISSIONS[@]}"; do
  role_id="$(role_id_of "$permission")"
  if [[ -z "$role_id" ]]; then
    echo "error: Microsoft Graph has no application permission named $permission" >&2
    exit 1
  fi
  wanted_ids+="$role_id"$'\n'
  if grep -qix -- "$role_id" <<<"$assigned"; then
    echo "already granted: $permission"
    continue
  fi
  if [[ "$dry_run" -eq 1 ]]; then
    echo "would grant: $permission ($role_id)"
    continue
  fi
  az rest --method POST \
    --url "$GRAPH_URL/servicePrincipals/$principal_id/appRoleAssignments" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"$principal_id\", \"resourceId\": \"$graph_sp_id\", \"appRoleId\": \"$role_id\"}" \
    --output none
  echo "granted: $permission"
done

# Report (never revoke) Graph permissions beyond the list, so an operator can review them.
while IFS= read -r role_id; do
  [[ -z "$role_id" ]] && continue
  if ! grep -qix -- "$role_id" <<<"$wanted_ids"; then
    name="$(role_name_of "$role_id")"
    echo "note: the identity also holds ${name:-$role_id}, which entra-sync does not need" >&2
  fi
done <<<"$assigned"
