#!/usr/bin/env bash
# The real-GPU check (tests/test_gpu.py): run on a machine with CUDA and CuPy.
#
# Where that machine cannot reach a package index, put wheels for the missing packages (ray,
# dask, a cp3XX daskray wheel, ...) in .whl/ first: they are installed into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L
python3 -c "import cupy, ray, dask, daskray, daskray._graph as g
print('cupy', cupy.__version__, 'ray', ray.__version__, 'dask', dask.__version__,
      'daskray compiled core:', g.COMPILED)"
python3 -m pytest -p no:cacheprovider -s -rA tests/test_gpu.py tests/test_annotations.py "$@"
