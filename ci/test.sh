#!/usr/bin/env bash
# Install daskray with its test extras into .venv and run the test suite twice: with the
# compiled core, then with the pure-Python twin (DASKRAY_NO_EXTENSIONS=1). The benchmarks run
# once, small, for correctness (pytest-benchmark disabled: one round each).
set -euo pipefail
source "$(dirname "$0")/env.sh" test
.venv/bin/python -c "import daskray._graph._core as m; print('compiled core:', m.__file__)"
.venv/bin/python -m pytest --durations=15 "$@"
DASKRAY_NO_EXTENSIONS=1 .venv/bin/python -m pytest tests -q --durations=15 "$@"
