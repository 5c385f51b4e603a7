"""dask.persist / x.persist() with daskray leave results in Ray's object store as ObjectRefs."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd

import daskray


def _values(collection):
    return list(dict(collection.__dask_graph__()).values())


def _is_future(v):
    from daskray.futures import RayFuture

    return isinstance(v, RayFuture)


def test_persist_keeps_object_refs_and_reuses_them(ray_ctx, monkeypatch):
    x = da.arange(1000, chunks=100) * 2
    (y,) = dask.persist(x, scheduler=daskray.get)
    values = _values(y)
    assert len(values) == 10
    assert all(_is_future(v) and isinstance(v.ref, ray_ctx.ObjectRef) for v in values)
    # the values were not fetched: computing on the persisted array runs on Ray from the refs
    from daskray import _ray

    gets = []
    real_get = _ray.ray.get
    monkeypatch.setattr(
        _ray.ray, "get", lambda refs, **k: gets.append(len(refs)) or real_get(refs, **k)
    )
    assert (y + 1).sum().compute(scheduler=daskray.get) == (np.arange(1000) * 2 + 1).sum()
    np.testing.assert_array_equal(y.compute(scheduler=daskray.get), np.arange(1000) * 2)
    assert gets  # fetched through daskray's gather, not through dask's persist
    # several later computes keep working on the same refs
    for _ in range(3):
        assert y.sum().compute(scheduler=daskray.get) == np.arange(1000).sum() * 2


def test_persist_under_enable_and_dataframes(ray_ctx):
    pdf = pd.DataFrame({"k": np.arange(100) % 7, "v": np.arange(100.0)})
    df = dd.from_pandas(pdf, npartitions=4)
    with daskray.enable():
        p = (df.v + 1).persist()
        arr = (da.ones(50, chunks=10) + 1).persist()
        assert all(_is_future(v) for v in _values(arr))
        pd.testing.assert_series_equal(p.compute(), pdf.v + 1)
        assert arr.sum().compute() == 100
    daskray.disable()


def test_persist_several_collections_and_debug(ray_ctx):
    a = da.ones(20, chunks=5)
    b = dask.delayed(sum)([1, 2, 3])
    pa, pb = dask.persist(a + 1, b, scheduler=daskray.get)
    assert pa.sum().compute(scheduler=daskray.get) == 40
    assert pb.compute(scheduler=daskray.get) == 6
    (pd_,) = dask.persist(a * 3, scheduler=daskray.get, debug=True)  # in-process: values
    np.testing.assert_array_equal(pd_.compute(scheduler="sync"), np.full(20, 3.0))


def test_persisted_values_are_released_with_the_collection(ray_ctx):
    import gc

    from daskray.futures import persisted

    (y,) = dask.persist(da.ones(100, chunks=10, name="released") + 1, scheduler=daskray.get)
    keys = set(dict(y.__dask_graph__()))
    assert keys <= set(persisted())
    del y
    gc.collect()
    assert not keys & set(persisted())


def test_persist_after_importing_ray_util_dask(ray_ctx):
    """Importing ray.util.dask patches dask.persist to pass ``ray_persist=True`` to every
    scheduler; daskray ignores it and still persists by reference."""
    import ray.util.dask  # noqa: F401 - the import is the point

    x = da.arange(100, chunks=25) * 3
    (px,) = dask.persist(x, scheduler=daskray.get)
    py = x.persist(scheduler=daskray.get)
    for p in (px, py):
        assert all(_is_future(v) for v in _values(p))
        np.testing.assert_array_equal(p.compute(scheduler=daskray.get), np.arange(100) * 3)


def test_persisting_twice_keeps_both_collections_computable(ray_ctx):
    """The same dataframe persisted twice gives two futures per key: dask-expr must not hand
    the second collection the first one's futures (they tokenize by ref), and dropping either
    collection leaves the other computable."""
    import gc

    pdf = pd.DataFrame({"a": np.arange(40), "b": np.arange(40.0) / 3})
    df = dd.from_pandas(pdf, npartitions=4) + 1
    (first,) = dask.persist(df, scheduler=daskray.get)
    (second,) = dask.persist(df, scheduler=daskray.get)
    refs = {v.ref.hex() for c in (first, second) for v in _values(c) if _is_future(v)}
    assert len(refs) == 8  # four partitions each, not shared
    del second
    gc.collect()
    pd.testing.assert_frame_equal(first.compute(scheduler=daskray.get), pdf + 1)
    (third,) = dask.persist(df, scheduler=daskray.get)
    del first
    gc.collect()
    pd.testing.assert_frame_equal(third.compute(scheduler=daskray.get), pdf + 1)
