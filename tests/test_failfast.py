"""Fail fast: the first task error surfaces at once, and the rest of the compute is cancelled.

The slow tasks here sleep in short steps, so that a cancellation (``ray.cancel(force=False)``
raises ``KeyboardInterrupt`` at the next Python bytecode) stops them at once; each leaves
marker files next to ``path``: ``.started``, then ``.cancelled`` or ``.done``.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

import daskray
from daskray import _ray

SLOW_S = 8.0  # a slow task's run time; every check below must be far quicker


def slow(path, seconds=SLOW_S):
    open(path + ".started", "w").close()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.02)
    except KeyboardInterrupt:
        open(path + ".cancelled", "w").close()
        raise
    open(path + ".done", "w").close()
    return 1


def fail(x):
    raise ZeroDivisionError("boom")


def add(*args):
    return sum(args)


def big():
    return np.ones(1 << 18)  # 2 MiB: lives in the object store, not inlined


def nbytes(x):
    return x.nbytes


def _wait_for(predicate, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _counts():
    gc.collect()
    return ray_core().get_all_reference_counts()


def ray_core():
    import ray

    return ray._private.worker.global_worker.core_worker


@pytest.fixture
def first_refs(monkeypatch):
    """``{first output key: hex of its Ray task's first ObjectRef}`` for every task submitted."""
    seen: dict = {}
    real = _ray._remote

    class Spy:
        def __init__(self, fn):
            self.fn = fn

        def remote(self, spec, *args):
            result = self.fn.remote(spec, *args)
            first = result[0] if isinstance(result, list) else result
            seen[spec[2][0]] = first.hex().encode()  # the id only: a ref would pin the value
            return result

    monkeypatch.setattr(_ray, "_remote", lambda *a, **k: Spy(real(*a, **k)))
    return seen


def test_first_error_surfaces_at_once_and_cancels_the_rest(ray_ctx, tmp_path):
    """A task fails at once while its sibling runs for 8 s; the consumer of both could only
    report it after 8 s. The error comes within a second or two, with its type, the dask key
    and the remote traceback; the sibling is cancelled and nothing of the compute stays
    pinned, not even while the exception is kept."""
    s = str(tmp_path / "s")
    dsk = {"s": (slow, s), "f": (fail, 1), "t": (add, "s", "f")}
    assert daskray.get({"a": 1, "b": (add, "a", 1)}, "b") == 2  # warm the workers
    before = set(_counts())
    t0 = time.monotonic()
    with pytest.raises(ZeroDivisionError) as info:
        daskray.get(dsk, "t", fuse=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, f"the error took {elapsed:.1f} s to surface"
    e = info.value
    assert "boom" in str(e)
    note = "daskray: raised by the task for key 'f'"
    assert note in str(e) and note in e.__notes__
    assert "in fail" in str(e) and "test_failfast.py" in str(e)  # the remote traceback

    assert _wait_for(lambda: os.path.exists(s + ".cancelled"), 5.0), "slow sibling not cancelled"
    assert not os.path.exists(s + ".done")
    # the driver holds no ref of the compute, even while the exception is alive
    leaked = {k: v for k, v in _counts().items() if k not in before and v["local"]}
    assert not leaked, leaked
    del info, e
    assert _wait_for(lambda: not (set(_counts()) - before), 5.0), set(_counts()) - before
    # and the CPUs are free again
    t0 = time.monotonic()
    assert daskray.get({"a": 1, "b": (add, "a", 1)}, "b", fuse=False) == 2
    assert time.monotonic() - t0 < 3.0


def test_keyboard_interrupt_cancels_the_compute(ray_ctx, tmp_path):
    """Ctrl-C (a real SIGINT) while gathering: both running tasks are cancelled, the
    KeyboardInterrupt comes through, and the next compute runs at once on the freed CPUs."""
    s1, s2 = str(tmp_path / "s1"), str(tmp_path / "s2")
    dsk = {"s1": (slow, s1), "s2": (slow, s2), "t": (add, "s1", "s2")}
    main = threading.main_thread().ident
    sent = []

    def interrupt():
        if _wait_for(
            lambda: os.path.exists(s1 + ".started") and os.path.exists(s2 + ".started"), 6
        ):
            sent.append(time.monotonic())
            signal.pthread_kill(main, signal.SIGINT)

    timer = threading.Thread(target=interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            daskray.get(dsk, "t", fuse=False)
        caught = time.monotonic()
    finally:
        timer.join()
    assert sent and caught - sent[0] < 1.5
    for s in (s1, s2):
        assert _wait_for(lambda s=s: os.path.exists(s + ".cancelled"), 5.0), f"{s} not cancelled"
        assert not os.path.exists(s + ".done")
    t0 = time.monotonic()
    assert daskray.get({"a": 1, "b": (add, "a", 1)}, "b", fuse=False) == 2
    assert time.monotonic() - t0 < 3.0


def test_finished_tasks_are_not_pinned_while_waiting(ray_ctx, tmp_path, first_refs):
    """While a slow task runs, the value of a finished intermediate (2 MiB, consumed) is not
    held by the driver: gather watches one ref per unfinished task and drops it once done."""
    s = str(tmp_path / "s")
    dsk = {"big": (big,), "n": (nbytes, "big"), "s": (slow, s, 3.0), "t": (add, "n", "s")}
    seen: list = []

    def look():
        if _wait_for(lambda: os.path.exists(s + ".started"), 6):
            time.sleep(1.0)
            counts = ray_core().get_all_reference_counts()
            seen.append((counts.get(first_refs.get("big")), os.path.exists(s + ".done")))

    watcher = threading.Thread(target=look)
    watcher.start()
    try:
        assert daskray.get(dsk, "t", fuse=False) == (1 << 18) * 8 + 1
    finally:
        watcher.join()
    assert "big" in first_refs and seen
    count, slow_done = seen[0]
    assert not slow_done
    assert count is None or (count["local"], count["submitted"]) == (0, 0), count


def test_watch_drops_finished_tasks_and_keeps_the_first_error(ray_ctx, monkeypatch, tmp_path):
    """While submitting, the watch prunes finished tasks' refs and keeps the first error,
    which gather then raises before waiting for anything."""
    import ray

    monkeypatch.setattr(_ray, "_PRUNE_MIN", 4)
    ok, ok2 = ray.remote(add).remote(1, 2), ray.remote(add).remote(3)
    bad = ray.remote(fail).remote(1)
    ray.wait([ok, ok2, bad], num_returns=3)
    watch = _ray._Watch()
    for r in (ok, bad):
        watch.add(r)
    assert watch.refs == [ok, bad] and watch.error is None
    running = ray.remote(slow).remote(str(tmp_path / "r"), 30.0)
    watch.add(running)
    watch.add(ok2)
    assert watch.refs == [running]  # the finished ones were dropped, the running one kept
    assert isinstance(watch.error, ZeroDivisionError)
    handles = _ray._Handles([(True, ok)], watch)
    # cancel it running: on a loaded machine a cancel that meets the task while Ray is still
    # handing it to a worker can be lost (Ray's race, not gather's)
    started = tmp_path / "r.started"
    end = time.monotonic() + 60
    while not started.exists() and time.monotonic() < end:
        time.sleep(0.05)
    t0 = time.monotonic()
    with pytest.raises(ZeroDivisionError, match="boom"):
        _ray.gather(handles)
    assert time.monotonic() - t0 < 1.0
    assert handles == [] and handles.watch is None  # nothing left to pin
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(running, timeout=60)  # a loaded machine can take a while; uncancelled: 30 s


def test_gather_takes_a_plain_list(ray_ctx):
    """Without a watch (a plain list of handles) gather waits on the targets alone."""
    import ray

    arr = np.arange(4)
    ref = ray.put(arr)
    out = _ray.gather([(True, ref), (False, "x"), (True, ref)])
    assert out[1] == "x"
    for a in (out[0], out[2]):
        np.testing.assert_array_equal(a, arr)
        a += 1  # writeable
