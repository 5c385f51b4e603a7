#!/usr/bin/env bash
# Install daskray into .venv and run the demo: dask.array and dask.dataframe work on a local Ray,
# daskray's time beside ray.util.dask.ray_dask_get's, results checked against dask's own.
set -euo pipefail
source "$(dirname "$0")/env.sh" ""
exec .venv/bin/python -m daskray demo "$@"
