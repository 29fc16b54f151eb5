#!/usr/bin/env bash
# Build the lab extension into ../nbflow/labextension (the assets the Python package ships,
# so `pip install` needs no Node).  Needs npm (packages from the npm registry) and a Python
# with jupyterlab installed (its staging/ directory pins the shared JupyterLab packages).
#   PYTHON=.venv/bin/python extension/build.sh
set -euo pipefail
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
case "$PY" in /*) ;; *) PY="$PWD/$PY" ;; esac  # relative to where we were called from
cd "$(dirname "$0")"
# The committed build is kept when the sources have not changed since it was made (a rebuild
# of the same sources in another folder renames webpack's files: see source_hash.py).
# NBFLOW_EXTENSION_REBUILD=1 builds anyway.
sources=$("$PY" source_hash.py)
if [ "${NBFLOW_EXTENSION_REBUILD:-0}" != 1 ] && [ -f ../nbflow/labextension/source.sha256 ] \
   && [ "$(cat ../nbflow/labextension/source.sha256)" = "$sources" ]; then
  echo "extension: nbflow/labextension is built from these sources already"
  exit 0
fi
[ -d node_modules ] || npm ci --no-audit --no-fund || npm install --no-audit --no-fund
node_modules/.bin/tsc
core=$("$PY" -c "import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), 'staging'))")
# keep the previous assets until the new ones are there
rm -rf ../nbflow/labextension.old
[ -d ../nbflow/labextension ] && mv ../nbflow/labextension ../nbflow/labextension.old
if ! node_modules/.bin/build-labextension --core-path "$core" . >/tmp/nbflow-labextension-build.log 2>&1; then
  rm -rf ../nbflow/labextension
  [ -d ../nbflow/labextension.old ] && mv ../nbflow/labextension.old ../nbflow/labextension
  echo "extension: build failed (see /tmp/nbflow-labextension-build.log); kept the previous assets" >&2
  exit 1
fi
rm -rf ../nbflow/labextension.old
echo "$sources" > ../nbflow/labextension/source.sha256
echo "extension: built into nbflow/labextension"
