# Sourced by the hooks (POSIX sh): sets $python to an interpreter that can import the app's code
# (ENTRA_SYNC_PYTHON, else the repository's .venv, else python3 or python), or leaves it empty.
# Expects $root, the repository root.
python=${ENTRA_SYNC_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in "$root/.venv/bin/python" python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
      python=$candidate
      break
    fi
  done
fi
if [ -n "$python" ] && ! (cd "$root" && PYTHONPATH="$root" "$python" -c 'import shared.mapping.deploy') >/dev/null 2>&1; then
  python=
fi
