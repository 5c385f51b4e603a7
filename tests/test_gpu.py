"""A real GPU: a CuPy-backed dask array through daskray (skipped without CuPy and a CUDA device).

Runs on the session's local Ray, which declares ``num_gpus=1`` (``conftest.RAY_KWARGS``): on a
GPU machine Ray hands the annotated tasks GPU 0 through ``CUDA_VISIBLE_DEVICES``. The CuPy
stages are all annotated and end in :func:`to_host`, so the unannotated tasks (dask's
finalize) only see numpy whatever Ray does with ``CUDA_VISIBLE_DEVICES`` for tasks without a
GPU.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

import daskray

cupy = pytest.importorskip("cupy")


def _devices() -> int:
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no driver, no device
        return 0


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_devices() == 0, reason="no CUDA device"),
]


def to_host(block):
    """Back to numpy, checking the block lived on a GPU Ray assigned to this task."""
    import ray

    assert isinstance(block, cupy.ndarray), type(block)
    assert ray.get_gpu_ids(), "a GPU task without a GPU"
    return cupy.asnumpy(block)


def test_cupy_array_through_daskray(ray_ctx):
    n = 100_000
    x = da.arange(n, chunks=10_000, dtype="f8")
    with dask.annotate(resources={"GPU": 1}):
        g = x.map_blocks(cupy.asarray)  # CuPy blocks from here on, in GPU tasks only
        h = (g * 2 + 1) ** 2 - g
        # meta given: dask would otherwise call to_host on a numpy stand-in to infer it
        total = h.sum(keepdims=True).map_blocks(to_host, meta=np.array((), dtype="f8"))
        host = h.map_blocks(to_host, meta=np.array((), dtype="f8"))
    assert isinstance(g._meta, cupy.ndarray)
    got_host, got_total = dask.compute(host, total, scheduler=daskray.get)
    a = np.arange(n, dtype="f8")
    expected = (a * 2 + 1) ** 2 - a
    assert isinstance(got_host, np.ndarray)
    np.testing.assert_allclose(got_host, expected)
    np.testing.assert_allclose(got_total, [expected.sum()], rtol=1e-12)


def where(block, tag):
    """Record, per block, the GPUs Ray assigned to the task that ran it."""
    import ray

    out = np.empty(1, dtype=object)
    out[0] = (tag, ",".join(map(str, ray.get_gpu_ids())))
    return out


def test_only_annotated_tasks_get_the_gpu(ray_ctx):
    x = da.ones(40, chunks=10)
    with dask.annotate(resources={"GPU": 1}):
        on_gpu = x.map_blocks(where, "gpu", dtype=object, chunks=(1,))
    on_cpu = x.map_blocks(where, "cpu", dtype=object, chunks=(1,))
    gpu_rows, cpu_rows = dask.compute(on_gpu, on_cpu, scheduler=daskray.get)
    assert [ids for _, ids in gpu_rows] == ["0"] * 4, gpu_rows
    assert [ids for _, ids in cpu_rows] == [""] * 4, cpu_rows


def test_cupy_matmul_timing(ray_ctx):
    """A CuPy matrix product through daskray beside the same product in numpy (printed)."""
    import time

    n, c = 4000, 1000
    x = da.random.default_rng(0).random((n, n), chunks=c)
    with dask.annotate(resources={"GPU": 1}):
        g = x.map_blocks(cupy.asarray)
        y = (g @ g.T).sum(keepdims=True).map_blocks(to_host, meta=np.array((), dtype="f8"))
    cpu = (x @ x.T).sum()
    t0 = time.perf_counter()
    (got,) = dask.compute(y, scheduler=daskray.get)
    t1 = time.perf_counter()
    (want,) = dask.compute(cpu, scheduler=daskray.get)
    t2 = time.perf_counter()
    np.testing.assert_allclose(got.ravel()[0], want, rtol=1e-9)
    print(f"\nx @ x.T, {n}x{n}, {c}x{c} chunks: cupy {t1 - t0:.2f} s, numpy {t2 - t1:.2f} s")
