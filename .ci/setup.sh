#!/usr/bin/env bash
# Everything a fresh machine needs: system packages (graphviz's `dot`, Debian's chromium for
# the browser tests) where we may install them, then a virtualenv with nbflow and its
# test/benchmark extras.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  command -v dot >/dev/null 2>&1 || missing+=(graphviz)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || echo "setup: could not install ${missing[*]}; the graph view falls back to a plain layout"
  fi
else
  command -v dot >/dev/null 2>&1 || echo "setup: graphviz 'dot' not found and cannot install it here (not root / no apt-get); the graph view falls back to a plain layout"
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev,dask]"

# The JupyterLab dashboard.  Its built assets are committed (nbflow/labextension/), so this
# only rebuilds them when npm is here and extension/ changed since they were built.  An editable install does not install the package's
# data files, so link them into the venv where Jupyter looks: the server extension's
# jupyter_server_config.d file and the lab extension's directory.
if command -v npm >/dev/null 2>&1; then
  PYTHON="$PWD/.venv/bin/python" extension/build.sh || echo "setup: using the committed lab extension assets"
else
  echo "setup: npm not found; using the committed lab extension assets (nbflow/labextension)"
fi
mkdir -p .venv/etc/jupyter/jupyter_server_config.d .venv/share/jupyter/labextensions
ln -sfn "$PWD/nbflow/server/jupyter-config/nbflow.json" .venv/etc/jupyter/jupyter_server_config.d/nbflow.json
ln -sfn "$PWD/nbflow/labextension" .venv/share/jupyter/labextensions/nbflow
echo "setup: done (.venv ready)"
