#!/bin/sh
# azd hook (predeploy; preprovision through preprovision.sh): stop before anything reaches Azure
# when the mapping file the app will load is missing, left out of the deployment package, or
# invalid. The app reads SYNC_MAPPING_FILE (default mapping.yaml, relative to the app root, which is
# the repository root) at start-up and refuses to start without a valid one, so provisioning and
# deploying without it gives an app that never runs.
#
# The file is read with the app's own loader (python -m shared.mapping.deploy), so a problem is
# reported in the words of `entra-sync check`. With --write-azd-env (pre-provision) it also writes
# the targets the mapping names into the azd environment for the Bicep (see shared/mapping/deploy.py),
# after checking that every value they need is set.
#
# Reads SYNC_MAPPING_FILE from the environment (azd passes the azd environment's values) and
# ENTRA_SYNC_PYTHON (default: the repository's .venv, else python3). Exits 0 when all is well, 1 or
# 2 with a message saying what to do. POSIX sh; the Windows twin is check-mapping.ps1.
set -eu

mode=--check-only
if [ "${1:-}" = --write-azd-env ]; then
  mode=
fi

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
  . "$root/infra/scripts/find-python.sh"
  if [ -z "$python" ]; then
    fail "the mapping is checked with the app's own code, which needs Python 3.11 and the app's packages:" \
      "  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" \
      "(or name an interpreter that has them: export ENTRA_SYNC_PYTHON=/path/to/python), then run azd again."
  fi
  cd "$root"
  PYTHONPATH="$root" exec "$python" -m shared.mapping.deploy --mapping "$root/$file" ${mode:+"$mode"}
fi

fail "the mapping file '$file' (SYNC_MAPPING_FILE) is not in $root." \
  "The app loads it at start-up and refuses to start without it, so nothing was provisioned or deployed." \
  "Create it from the documented example and fill in your group object ids:" \
  "  cp mapping.example.yaml $file" \
  "or point SYNC_MAPPING_FILE at your mapping, relative to the repository root:" \
  "  azd env set SYNC_MAPPING_FILE <path>" \
  "then run azd up again (README.md, 'Deploy to Azure', step 2)."
