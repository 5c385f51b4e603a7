# Sourced by ci/demo.sh and ci/test.sh: create .venv in the checkout and install daskray into it.
# $1: the pip extra to install ("" or "test").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "${1:-}" ]; then
    .venv/bin/python -m pip install -q -e ".[$1]"
else
    .venv/bin/python -m pip install -q -e .
fi
