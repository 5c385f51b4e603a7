"""Persisted values follow dask's future protocol (``daskray.futures.RayFuture``), and dask's own
``assert_eq`` helpers -- which persist, then read every chunk with ``.result()`` -- work with
``scheduler=daskray.get``."""

from __future__ import annotations

import asyncio
import copy
import pickle
import time
from concurrent.futures import CancelledError

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.array.utils import assert_eq as assert_eq_array
from dask.dataframe.utils import assert_eq as assert_eq_frame

import daskray
from daskray.futures import RayFuture, persisted


def boom(block):
    raise ValueError("boom in a persisted chunk")


def slow(block, seconds):
    time.sleep(seconds)
    return block


def test_persisted_chunks_are_futures_with_results(ray_ctx):
    p = da.ones(4, chunks=2).persist(scheduler=daskray.get)
    f = p.dask[(p.name, 0)]
    assert isinstance(f, RayFuture) and f.key == (p.name, 0)
    assert f.done() and f.status == "finished" and f.exception() is None
    assert f.traceback() is None
    out = f.result()
    np.testing.assert_array_equal(out, np.ones(2))
    out += 1  # writeable, not a view of the object store
    np.testing.assert_array_equal(f.result(timeout=10), np.ones(2))
    assert asyncio.run(_awaited(f)).tolist() == [1.0, 1.0]
    called = []
    f.add_done_callback(called.append)
    for _ in range(100):
        if called:
            break
        time.sleep(0.05)
    assert called == [f]


async def _awaited(f):
    return await f


def test_assert_eq_with_daskray(ray_ctx):
    """dask.array's and dask.dataframe's assert_eq, persisted (check_chunks) or not."""
    x = da.arange(24, chunks=5).reshape(4, 6).rechunk((2, 3))
    assert_eq_array(da.ones(4, chunks=2), np.ones(4), scheduler=daskray.get)
    assert_eq_array(x + 1, np.arange(24).reshape(4, 6) + 1, scheduler=daskray.get)
    (kept,) = dask.persist(x * 2, scheduler=daskray.get)
    assert_eq_array(kept, np.arange(24).reshape(4, 6) * 2, scheduler=daskray.get)
    assert_eq_array(
        kept.sum(axis=0), (np.arange(24).reshape(4, 6) * 2).sum(axis=0), scheduler=daskray.get
    )
    pdf = pd.DataFrame({"k": np.arange(40) % 3, "v": np.arange(40.0)})
    df = dd.from_pandas(pdf, npartitions=4)
    assert_eq_frame(df.v + 1, pdf.v + 1, scheduler=daskray.get)
    assert_eq_frame(df.groupby("k").v.sum(), pdf.groupby("k").v.sum(), scheduler=daskray.get)
    kept_df = df.persist(scheduler=daskray.get)
    assert_eq_frame(kept_df[kept_df.v > 10], pdf[pdf.v > 10], scheduler=daskray.get)


def test_error_status_and_exception(ray_ctx):
    """persist waits for its tasks, as dask's local schedulers do: a failing chunk raises
    there; a future around a failed ref reports it."""
    bad = da.ones(4, chunks=2).map_blocks(boom, dtype=float)
    with pytest.raises(ValueError, match="boom in a persisted chunk"):
        bad.persist(scheduler=daskray.get)
    f = RayFuture("hand-made-error", ray_ctx.remote(boom).remote(np.ones(2)))
    error = f.exception(timeout=30)
    assert isinstance(error, ValueError) and f.status == "error" and f.done()
    assert f.traceback() is not None
    with pytest.raises(ValueError, match="boom in a persisted chunk"):
        f.result()


def test_cancel_and_release(ray_ctx):
    (p,) = dask.persist(da.ones(6, chunks=2, name="to-cancel") + 1, scheduler=daskray.get)
    f0, f1 = p.dask[(p.name, 0)], p.dask[(p.name, 1)]
    assert (p.name, 0) in persisted()
    assert f0.cancel() and f0.cancelled() and f0.status == "cancelled" and f0.done()
    f1.release()
    assert f1.status == "cancelled"
    assert (p.name, 0) not in persisted() and (p.name, 1) not in persisted()
    for f in (f0, f1):
        with pytest.raises(CancelledError, match="was cancelled; persist it again"):
            f.result()
    with pytest.raises(Exception, match=str(p.name)):
        p.sum().compute(scheduler=daskray.get)


def test_pending_then_done(ray_ctx):
    """A future around a running task is pending until it is done."""
    f = RayFuture("hand-made", ray_ctx.remote(slow).remote(np.ones(2), 1.0))
    assert f.status == "pending" and not f.done()
    with pytest.raises(TimeoutError):
        f.exception(timeout=0.01)
    assert f.result(timeout=30).tolist() == [1.0, 1.0]
    assert f.done() and f.status == "finished"


def read_future(box):
    """In a Ray task: the sum of the value of the future in ``box``."""
    return float(box[0].result().sum())


def test_futures_copy_and_pickle(ray_ctx):
    """deepcopy (scikit-learn's clone) keeps the handle; pickling carries key and ObjectRef,
    and a pickled persisted collection computes anywhere in the same Ray session."""
    (p,) = dask.persist(da.arange(6, chunks=3) * 3, scheduler=daskray.get)
    f = p.dask[(p.name, 0)]
    assert copy.deepcopy(f) is f and copy.copy(f) is f
    clone = copy.deepcopy(p)
    np.testing.assert_array_equal(clone.compute(scheduler=daskray.get), np.arange(6) * 3)
    again = pickle.loads(pickle.dumps(p))
    assert again.dask[(p.name, 0)] is f  # the registered future, not a stranger
    np.testing.assert_array_equal(again.compute(scheduler=daskray.get), np.arange(6) * 3)
    # inside Ray's own serialization (a task argument) the ref travels with the future
    assert ray_ctx.get(ray_ctx.remote(read_future).remote([f])) == 9.0
