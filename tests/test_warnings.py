"""Warnings raised inside tasks reach the caller, as on dask's local schedulers: workers record
every warning, the driver re-emits each (category, message, naming the key) once per category,
message and key prefix per compute, after the results are gathered, under its own filters."""

from __future__ import annotations

import os
import time
import warnings

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest

import daskray


class ChunkWarning(UserWarning):
    """A category of the tests' own: it reaches the driver by reference."""


def warn_block(block, message="odd chunk", category=ChunkWarning):
    warnings.warn(message, category, stacklevel=1)
    return block


def warn_with_index(i):
    warnings.warn(f"task {i % 2}", ChunkWarning, stacklevel=1)
    return i


def slow_touch(path, seconds):
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("done")
    return 1


@pytest.fixture(params=["ray", "debug"])
def sched(request, ray_ctx):
    return daskray.get if request.param == "ray" else daskray.get_sync


def test_task_warning_is_reemitted_with_category_message_and_key(sched):
    x = da.ones(8, chunks=2).map_blocks(warn_block, dtype=float)
    with pytest.warns(ChunkWarning, match="odd chunk") as record:
        out = x.sum().compute(scheduler=sched)
    assert out == 8
    messages = [str(w.message) for w in record if issubclass(w.category, ChunkWarning)]
    if sched is daskray.get:  # once per category, message and key prefix (4 chunks warned)
        assert len(messages) == 1
        # the key of the task that ran it: dask fused warn_block into the sum's first step
        assert "odd chunk [daskray: warned by the task for key ('sum-" in messages[0]
        assert record[0].filename == __file__  # where the task warned
    else:  # debug: the tasks run here, and warnings propagate as they are
        assert messages[0] == "odd chunk"


def test_distinct_messages_and_prefixes_each_come_once(ray_ctx):
    tasks = [dask.delayed(warn_with_index)(i, dask_key_name=f"w-{i}") for i in range(6)]
    other = dask.delayed(warn_with_index)(10, dask_key_name="other-0")
    with pytest.warns(ChunkWarning) as record:
        dask.compute(tasks, other, scheduler=daskray.get)
    seen = sorted(
        str(w.message).split(" [")[0] + " @" + str(w.message).split("'")[1].split("-")[0]
        for w in record
    )
    assert seen == ["task 0 @other", "task 0 @w", "task 1 @w"]


def test_dask_bag_take_warns_as_on_dasks_schedulers(ray_ctx):
    b = db.from_sequence(range(3), npartitions=3)
    for scheduler in ("sync", daskray.get):
        with dask.config.set(scheduler=scheduler):
            with pytest.warns(UserWarning, match="Insufficient elements for `take`"):
                assert b.take(5, npartitions=1) == (0,)


def test_an_error_filter_raises_once_every_task_is_done(ray_ctx, tmp_path):
    """Under ``-W error`` the warning raises in the driver, but only after the slow sibling
    finished: nothing of the compute is left running."""
    path = str(tmp_path / "slow")
    warned = dask.delayed(warn_block)(np.ones(2), "raised late")
    slow = dask.delayed(slow_touch)(path, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ChunkWarning, match="raised late"):
            dask.compute(warned, slow, scheduler=daskray.get)
        assert os.path.exists(path)


def test_ignored_warnings_stay_ignored(ray_ctx):
    x = da.ones(4, chunks=2).map_blocks(warn_block, "hush", DeprecationWarning, dtype=float)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "hush", DeprecationWarning)
        assert x.sum().compute(scheduler=daskray.get) == 4
    assert not record
