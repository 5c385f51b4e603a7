"""Public API: daskray.get as a dask `get`, enable/disable, config, persist, the compiled core."""

from __future__ import annotations

import contextlib
import os

import dask
import dask.array as da
import numpy as np
import pytest
from dask.utils_test import GetFunctionTestMixin

import daskray
from daskray import _graph


def _pid(x):
    return os.getpid()


class TestGetOnRay(GetFunctionTestMixin):
    """dask's own conformance suite for a foreign ``get``, against Ray."""

    get = staticmethod(daskray.get)

    @pytest.fixture(autouse=True)
    def _ray(self, ray_ctx):
        yield


class TestGetUnfused(GetFunctionTestMixin):
    """The same suite with fusion off: one Ray task per dask task."""

    @staticmethod
    def get(dsk, keys, **kwargs):
        return daskray.get(dsk, keys, fuse=False, **kwargs)

    @pytest.fixture(autouse=True)
    def _ray(self, ray_ctx):
        yield


class TestGetSync(GetFunctionTestMixin):
    """The same suite in debug mode (the plan run in-process, no Ray)."""

    get = staticmethod(daskray.get_sync)


def test_compiled_core_is_default():
    if _graph.NO_EXTENSIONS:
        assert not _graph.COMPILED
        assert _graph.plan.__module__.endswith("_pure")
        return
    from daskray._graph import _core

    assert _core.__file__.endswith(".so"), _core.__file__
    assert _graph.COMPILED and _graph.plan is _core.plan and _graph.intern is _core.intern


def test_compute_and_persist_entry_points(ray_ctx):
    x = da.arange(100, chunks=10)
    y = (x * 2).sum()
    assert dask.compute(y, scheduler=daskray.get) == (9900,)
    assert y.compute(scheduler=daskray.get) == 9900
    with dask.config.set(scheduler=daskray.get):
        assert y.compute() == 9900
        (z,) = dask.persist(x * 3)
    np.testing.assert_array_equal(z.compute(scheduler=daskray.get), np.arange(100) * 3)
    z2 = (x + 1).persist(scheduler=daskray.get)
    np.testing.assert_array_equal(z2.compute(scheduler=daskray.get), np.arange(100) + 1)


def test_runs_on_ray_workers(ray_ctx):
    """Under daskray the tasks run in Ray worker processes, not in the driver."""
    pids = dask.compute(*[dask.delayed(_pid)(i) for i in range(4)], scheduler=daskray.get)
    assert os.getpid() not in pids


def test_enable_registers_names_and_is_a_context_manager(ray_ctx):
    daskray.disable()
    with pytest.raises(ValueError, match="Expected one of"):
        dask.compute(dask.delayed(_pid)(1), scheduler="ray")
    with daskray.enable(fusion={"groups_per_cpu": 3}):
        assert dask.config.get("scheduler") is daskray.get
        assert dask.config.get("daskray.fusion.groups-per-cpu") == 3
        for name in ("ray", "daskray"):
            (pid,) = dask.compute(dask.delayed(_pid)(1), scheduler=name)
            assert pid != os.getpid()
    assert dask.config.get("scheduler", None) is not daskray.get
    assert dask.config.get("daskray.fusion.groups-per-cpu") == 4
    daskray.disable()
    with pytest.raises(ValueError, match="Expected one of"):
        dask.compute(dask.delayed(_pid)(1), scheduler="daskray")


def test_enable_without_context_and_disable(ray_ctx):
    daskray.enable(num_cpus=2)
    try:
        assert dask.config.get("scheduler") is daskray.get
        assert dask.config.get("daskray.num-cpus") == 2
    finally:
        daskray.disable()
        # enable() also chose the tasks shuffle; leave dask's default for later tests
        dask.config.set(
            {
                "daskray.num-cpus": None,
                "dataframe.shuffle.method": None,
                "array.rechunk.threshold": 4,
            }
        )
    assert not dask.config.get("scheduler", None)


def test_enable_selects_tasks_shuffle_unless_set():
    import dask.dataframe as dd
    import pandas as pd

    df = dd.from_pandas(pd.DataFrame({"k": [1, 2, 3, 1], "v": [1.0, 2, 3, 4]}), npartitions=2)
    with daskray.enable():
        assert dask.config.get("dataframe.shuffle.method") == "tasks"
        keys = {str(k) for k in dict(df.shuffle("k").__dask_graph__())}
        assert any("taskshuffle" in k for k in keys) and not any("disk" in k for k in keys)
    with dask.config.set({"dataframe.shuffle.method": "disk"}), daskray.enable():
        assert dask.config.get("dataframe.shuffle.method") == "disk"
    daskray.disable()


def test_enable_plans_all_to_all_rechunks_in_one_stage_unless_the_threshold_is_set():
    import dask.array as da

    x = da.ones((4000, 64), chunks=(50, 64))  # 80 row blocks, to 64 column blocks

    def stages(threshold_config):
        with dask.config.set({"array.rechunk.method": "tasks"}), threshold_config:
            y = x.rechunk((4000, 1))
            return len({k[0] for k in dict(y.__dask_graph__()) if "rechunk-merge" in k[0]})

    assert stages(contextlib.nullcontext()) > 1  # dask's default threshold: staged
    with daskray.enable():
        assert dask.config.get("array.rechunk.threshold") == 64
    assert stages(daskray.enable()) == 1
    with dask.config.set({"array.rechunk.threshold": 8}), daskray.enable():
        assert dask.config.get("array.rechunk.threshold") == 8  # the user's choice stays
    with daskray.enable(exchange={"rechunk_threshold": 16}):
        assert dask.config.get("array.rechunk.threshold") == 16
    daskray.disable()
    assert dask.config.get("array.rechunk.threshold") == 4


def test_enable_rejects_unknown_options():
    with pytest.raises(TypeError, match="Unknown daskray option 'nmu_cpus' under 'daskray'"):
        daskray.enable(nmu_cpus=2)
    with pytest.raises(TypeError, match="Unknown daskray option 'size' under 'daskray.fusion'"):
        daskray.enable(fusion={"size": 2})


def test_get_ignores_unknown_keywords_and_warns_on_close_misses():
    """Keywords meant for other schedulers are accepted and ignored, silently; a close miss of
    one of daskray's own keywords warns, naming both."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert daskray.get({"x": 1}, "x", debug=True, colour="red") == 1
        for name in ("flush", "num_workers", "pool", "chunksize", "optimize_graph", "sync"):
            assert daskray.get({"x": 1}, "x", debug=True, **{name: True}) == 1
    with pytest.warns(UserWarning, match="ignores the keyword 'reties': did you mean 'retries'"):
        assert daskray.get({"x": 1}, "x", debug=True, reties=2) == 1
    with pytest.warns(UserWarning, match="'num_cpu': did you mean 'num_cpus'"):
        assert daskray.get({"x": 1}, "x", debug=True, num_cpu=2) == 1


def test_config_defaults_documented():
    """Every default in daskray.config appears in the README's option table."""
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from walk(f"{prefix}{k}.", v)
            else:
                yield f"{prefix}{k}"

    for name in walk("daskray.", daskray.config.DEFAULTS):
        assert f"`{name}`" in readme, name
        assert dask.config.get(name) == dask.config.get(name)  # registered with dask


def test_empty_request_submits_nothing(monkeypatch):
    from daskray import _ray

    def boom(*a, **k):
        raise AssertionError("submitted")

    monkeypatch.setattr(_ray, "submit", boom)
    assert daskray.get({"x": 1}, []) == ()
    assert daskray.get({}, []) == ()
    assert daskray.get({"x": 1}, [[], []]) == ((), ())


def test_gc_paused_nests_and_restores():
    import gc

    from daskray.scheduler import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # the user's choice is kept
    finally:
        gc.enable()
