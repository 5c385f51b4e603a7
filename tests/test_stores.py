"""``dask.array.store`` on daskray: targets that can travel are written by the Ray tasks, those
that cannot (an open file, a thread lock, an in-memory numpy array) by the driver, after their
chunks were computed on Ray (see ``daskray.stores``)::

    chunk 0   chunk 1        on Ray
       |         |
    store 0   store 1        in the driver when the target cannot leave it
        \\     /
        finalize             in the driver too: downstream of a driver task
"""

from __future__ import annotations

import os
import threading

import dask
import dask.array as da
import numpy as np
import pytest

import daskray
from daskray import planning
from daskray.ingest import ingest
from daskray.stores import driver_bound


def pid_block(block):
    """This chunk, with each element replaced by the id of the process that computed it."""
    return np.full(block.shape, os.getpid(), dtype="i8")


class Unpicklable:
    """An array-like target that refuses to be pickled (like an open file)."""

    def __init__(self, shape):
        self.data = np.zeros(shape)
        self.lock = threading.Lock()
        self.writers: set = set()

    def __setitem__(self, index, value):
        with self.lock:
            self.writers.add(os.getpid())
            self.data[index] = value


def _driver_keys(collection):
    dsk = dict(collection.__dask_graph__())
    names = list(dsk)
    return {names[i] for i in driver_bound(names, list(dsk.values()))}


def test_driver_bound_finds_only_stores_that_cannot_travel():
    x = da.ones((4, 4), chunks=2) + 1
    local = da.store(x, np.zeros((4, 4)), compute=False, lock=False)
    assert len(_driver_keys(local)) == 4  # a numpy target: written where it lives
    locked = da.store(x, Unpicklable((4, 4)), compute=False, lock=threading.Lock())
    assert len(_driver_keys(locked)) == 4
    traveller = da.store(x, da.zeros((4, 4)), compute=False, lock=False)  # picklable
    assert _driver_keys(traveller) == set()
    assert _driver_keys(x) == set()  # no store at all


def test_driver_tasks_and_their_dependents_get_a_driver_class():
    stored = da.store(da.ones(4, chunks=2) + 1, np.zeros(4), compute=False, lock=False)
    graph = ingest(dict(stored.__dask_graph__()), list(stored.__dask_keys__()))
    classes = planning.driver_classes(graph, planning.Classes({}))
    in_driver = {
        graph.names[i] for i, c in enumerate(classes.of) if classes.options[c].get(planning.DRIVER)
    }
    assert {graph.names[i] for i in graph.driver} <= in_driver
    assert all("store-map" in str(k) for k in in_driver)
    assert not any("add" in str(k) or "ones" in str(k) for k in in_driver)


def test_store_into_a_numpy_array_writes_the_drivers_array(ray_ctx):
    """On Ray a numpy target would be pickled and written on a worker; the driver's array would
    stay zero. daskray writes it here, with chunks computed on Ray."""
    out = np.zeros((6, 6))
    x = da.arange(36, chunks=6).reshape(6, 6).rechunk(3) * 2
    da.store(x, out, scheduler=daskray.get, lock=False)
    np.testing.assert_array_equal(out, np.arange(36).reshape(6, 6) * 2)
    pids = np.zeros((6, 6), dtype="i8")
    da.store(x.map_blocks(pid_block, dtype="i8"), pids, scheduler=daskray.get, lock=False)
    assert os.getpid() not in set(pids.ravel().tolist())  # the chunks were computed on Ray


def test_store_to_an_unpicklable_target_with_a_thread_lock(ray_ctx):
    target = Unpicklable((4, 6))
    x = da.ones((4, 6), chunks=(2, 3)) * 5
    with daskray.enable():
        da.store(x, target, lock=threading.Lock(), flush=True)  # flush: xarray's keyword
    np.testing.assert_array_equal(target.data, np.full((4, 6), 5.0))
    assert target.writers == {os.getpid()}
    daskray.disable()


def test_store_return_stored_and_compute_false(ray_ctx):
    out = np.zeros(8)
    x = da.arange(8, chunks=4) + 10
    stored = da.store(x, out, lock=False, compute=False, return_stored=True)
    np.testing.assert_array_equal(stored.compute(scheduler=daskray.get), np.arange(8) + 10)
    np.testing.assert_array_equal(out, np.arange(8) + 10)
    out3 = np.zeros(8)  # compute=True, return_stored=True: dask persists the stores
    kept = da.store(x * 2, out3, lock=False, return_stored=True, scheduler=daskray.get)
    np.testing.assert_array_equal(out3, (np.arange(8) + 10) * 2)
    np.testing.assert_array_equal(kept.compute(scheduler=daskray.get), out3)
    out2 = np.zeros(8)
    delayed = da.store(x - 10, out2, lock=False, compute=False)
    dask.compute(delayed, scheduler=daskray.get)
    np.testing.assert_array_equal(out2, np.arange(8))


def test_zarr_targets_are_written_by_ray_tasks(ray_ctx, tmp_path):
    zarr = pytest.importorskip("zarr", reason="zarr is not installed")
    z = zarr.create_array(str(tmp_path / "z.zarr"), shape=(8, 8), chunks=(4, 4), dtype="i8")
    x = da.arange(64, chunks=16).reshape(8, 8).rechunk(4)
    assert _driver_keys(da.store(x, z, compute=False, lock=False)) == set()
    da.store(x, z, scheduler=daskray.get, lock=False)
    np.testing.assert_array_equal(z[:], np.arange(64).reshape(8, 8))
