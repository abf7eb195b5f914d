#!/bin/sh
# azd hook (preprovision, predeploy): stop before anything reaches Azure when the mapping file the
# app will load is not in the deployment package. The app reads SYNC_MAPPING_FILE (default
# mapping.yaml, relative to the app root, which is the repository root) at start-up and refuses to
# start without it, so provisioning and deploying without it gives an app that never runs.
#
# Reads SYNC_MAPPING_FILE from the environment (azd passes the azd environment's values). Exits 0
# when the file is there, 1 with a message saying what to do when it is not. POSIX sh; the
# Windows twin is check-mapping.ps1.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/../.." && pwd)
file=${SYNC_MAPPING_FILE:-mapping.yaml}

fail() {
  printf 'entra-sync: %s\n' "$@" >&2
  exit 1
}

case $file in
  /* | [A-Za-z]:*)
    fail "SYNC_MAPPING_FILE is '$file', a path on this machine; in Azure it must be relative to the app root," \
      "for example: azd env set SYNC_MAPPING_FILE mapping.yaml" ;;
esac

# A directory .funcignore keeps out of the package (tests/, infra/, ...) would leave the file behind.
if [ -f "$root/.funcignore" ]; then
  while IFS= read -r pattern || [ -n "$pattern" ]; do
    case $pattern in
      */)
        case $file in
          "$pattern"* | "./$pattern"*)
            fail "the mapping file '$file' (SYNC_MAPPING_FILE) is under $pattern, which .funcignore keeps out" \
              "of the deployment package. Move it, for example to mapping.yaml at the repository root." ;;
        esac ;;
    esac
  done <"$root/.funcignore"
fi

if [ -f "$root/$file" ]; then
  printf "entra-sync: mapping file '%s' found\n" "$file"
  exit 0
fi

fail "the mapping file '$file' (SYNC_MAPPING_FILE) is not in $root." \
  "The app loads it at start-up and refuses to start without it, so nothing was provisioned or deployed." \
  "Create it from the documented example and fill in your group object ids:" \
  "  cp mapping.example.yaml $file" \
  "or point SYNC_MAPPING_FILE at your mapping, relative to the repository root:" \
  "  azd env set SYNC_MAPPING_FILE <path>" \
  "then run azd up again (README.md, 'Deploy to Azure', step 2)."
