"""Reliability on a real Ray: faults, memory pressure, concurrency, and the edges of connecting.

* worker death: Ray worker processes running this compute's tasks are SIGKILLed while it runs;
  Ray's system retries (``max_retries``, 3 by default) must still deliver the right answer;
  ``retries=n`` (application retries) re-runs a task that raises, and only then;
* memory: intermediates of ~3x the object store go through spilling on a dedicated local Ray,
  without the driver fetching them;
* concurrency: computes from 8 threads sharing the session Ray, and persisted collections
  shared by computes from several threads;
* no cluster: an unreachable ``RAY_ADDRESS`` fails fast with a ``ConnectionError`` that says
  how to fix it; an empty graph never starts Ray; a debug compute opens no listening socket.

Task functions are module-level so that Ray workers import them from this module.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from operator import add

import dask
import dask.array as da
import numpy as np
import psutil
import pytest

import daskray
from daskray import _ray

# -- task functions (run on Ray workers) -------------------------------------------------------


def slow_square(i, running_dir, seconds=0.15):
    """``i * i`` after ``seconds`` spent sleeping in small steps; while it runs, a file named
    after this worker's pid (holding ``i``) marks it as running here."""
    mark = os.path.join(running_dir, str(os.getpid()))
    with open(mark, "w") as f:
        f.write(str(i))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    os.remove(mark)
    return i * i


def total(*xs):
    return sum(xs)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def flaky(counter, fail_times, value):
    """Raise ``ValueError`` on the first ``fail_times`` calls (counted in the file ``counter``)."""
    n = int(_read(counter)) + 1 if os.path.exists(counter) else 1
    with open(counter, "w") as f:
        f.write(str(n))
    if n <= fail_times:
        raise ValueError(f"flaky failure {n} of {fail_times}")
    return value * 2


def chunk(i, n):
    return np.full(n, float(i))


def pair_sum(a, b):
    return a + b


def marked_chunk(i, marks):
    """A 1 MB chunk (stored in its node's object store); one mark file per attempt, naming
    the node it ran on."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    open(os.path.join(marks, f"{i}-{node}-{time.monotonic_ns()}"), "w").close()
    return np.full(1 << 17, float(i))


def gated_sum(x, gate):
    """``x.sum()``, once the file ``gate`` exists."""
    while not os.path.exists(gate):
        time.sleep(0.02)
    return float(x.sum())


def _attempts(counter):
    return int(_read(counter)) if os.path.exists(counter) else 0


# -- worker death ------------------------------------------------------------------------------

WORKER_TRIALS = 3
KILLS_PER_TRIAL = 3  # <= Ray's default max_retries (3): even one task hit every time succeeds


def _our_workers() -> set:
    """pids of this driver's Ray worker processes: the raylet's children other than its agents.

    (A worker renames itself ``ray::IDLE`` / ``ray::<task name>``, so its command line no
    longer shows ``default_worker.py``.)
    """
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = p.cmdline()
            parent = p.parent()
            if parent is None or not parent.cmdline()[0].endswith("raylet"):
                continue
            if any("default_worker.py" in part for part in cmd) or (
                cmd[0].startswith("ray::") and not cmd[0].endswith("Agent")
            ):
                pids.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            pass
    return pids


def _killer(running_dir, stop, kills, kills_wanted):
    """Every ~0.3 s, SIGKILL one of our workers that is running a task right now."""
    time.sleep(0.4)
    while not stop.is_set() and len(kills) < kills_wanted:
        workers = _our_workers()
        busy = []
        for name in os.listdir(running_dir):
            pid = int(name)
            if pid in workers:
                busy.append(pid)
            elif not psutil.pid_exists(pid):  # a worker killed before it could remove its mark
                try:
                    os.remove(os.path.join(running_dir, name))
                except FileNotFoundError:
                    pass
        if busy:
            pid = random.choice(busy)
            try:
                os.kill(pid, signal.SIGKILL)
                kills.append(pid)
            except ProcessLookupError:
                pass
            stop.wait(0.3)
        else:
            stop.wait(0.02)


@pytest.mark.parametrize("trial", range(WORKER_TRIALS))
def test_compute_survives_killed_workers(ray_ctx, tmp_path, trial):
    running = tmp_path / "running"
    running.mkdir()
    n = 40
    dsk = {("sq", i): (slow_square, i, str(running)) for i in range(n)}
    # a second layer of 4-way sums and a total, so consumers wait on retried producers
    for j in range(n // 4):
        dsk[("part", j)] = (total, *[("sq", 4 * j + k) for k in range(4)])
    dsk["total"] = (total, *[("part", j) for j in range(n // 4)])

    stop = threading.Event()
    kills: list = []
    t = threading.Thread(
        target=_killer, args=(str(running), stop, kills, KILLS_PER_TRIAL), daemon=True
    )
    t.start()
    try:
        start = time.monotonic()
        result = daskray.get(dsk, ["total", ("part", 0)], fuse=False)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        t.join(10)
    assert result == (sum(i * i for i in range(n)), sum(i * i for i in range(4)))
    # the fault really happened, while the compute ran
    assert len(kills) >= 2, f"only {len(kills)} workers killed in {elapsed:.1f} s"
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == "zombie" for p in kills)
    # and the session's Ray still works afterwards
    assert daskray.get({"a": 1, "b": (add, "a", 1)}, "b") == 2


def test_retries_rerun_a_failing_task(ray_ctx, tmp_path):
    # compute-wide retries=n: Ray retries application errors (retry_exceptions=True)
    c1 = str(tmp_path / "c1")
    assert daskray.get({"x": (flaky, c1, 2, 21)}, "x", retries=2) == 42
    assert _attempts(c1) == 3

    # too few retries: the original error, after exactly retries + 1 attempts
    c2 = str(tmp_path / "c2")
    with pytest.raises(ValueError, match="flaky failure 2 of 2"):
        daskray.get({"x": (flaky, c2, 2, 21)}, "x", retries=1)
    assert _attempts(c2) == 2

    # no retries: Ray's default does not retry application errors
    c3 = str(tmp_path / "c3")
    with pytest.raises(ValueError, match="flaky failure 1 of 1"):
        daskray.get({"x": (flaky, c3, 1, 21)}, "x")
    assert _attempts(c3) == 1

    # the same through a dask annotation, on one task of a bigger graph
    c4 = str(tmp_path / "c4")
    with dask.annotate(retries=3):
        y = dask.delayed(flaky)(c4, 3, 5)
    z = dask.delayed(add)(y, 1)
    assert z.compute(scheduler=daskray.get) == 11
    assert _attempts(c4) == 4


NODE_CHUNKS = 8


@pytest.mark.cluster
def test_lost_intermediates_are_reconstructed_after_node_death(ray_ctx, tmp_path):
    """A worker node dies holding intermediates that later tasks still need: Ray rebuilds them
    from lineage (re-running the tasks that made them) and the compute is still right."""
    from ray.cluster_utils import Cluster

    ray = ray_ctx
    marks, gate = tmp_path / "marks", str(tmp_path / "gate")
    marks.mkdir()
    ray.shutdown()  # the session's Ray; ray_ctx brings it back for later tests
    _ray.reset()
    c = None
    result: dict = {}
    try:
        c = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                # notice the dead node in about a second, not Ray's default ~15 s
                "_system_config": {
                    "health_check_initial_delay_ms": 0,
                    "health_check_period_ms": 200,
                    "health_check_timeout_ms": 500,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        victim = c.add_node(num_cpus=2, object_store_memory=80 * 2**20)
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        dsk = {("c", i): (marked_chunk, i, str(marks)) for i in range(NODE_CHUNKS)}
        dsk.update({("s", i): (gated_sum, ("c", i), gate) for i in range(NODE_CHUNKS)})
        dsk["total"] = (total, *[("s", i) for i in range(NODE_CHUNKS)])

        def run():
            try:
                result["value"] = daskray.get(dsk, "total", fuse=False)
            except BaseException as e:  # noqa: BLE001 - checked below
                result["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        end = time.monotonic() + 60
        while len(os.listdir(marks)) < NODE_CHUNKS and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.3)  # the chunks' values reach the node's object store
        assert all(victim.node_id in m for m in os.listdir(marks))
        # the only worker node dies with every chunk; a fresh one joins; the gate opens
        c.remove_node(victim, allow_graceful=False)
        c.add_node(num_cpus=2, object_store_memory=80 * 2**20)
        open(gate, "w").close()
        t.join(90)
        assert not t.is_alive(), "the compute hangs after the node died"
        assert "error" not in result, result.get("error")
        assert result["value"] == sum(float(i) * (1 << 17) for i in range(NODE_CHUNKS))
        # the lost chunks that were still needed ran again, on the new node
        again = [m for m in os.listdir(marks) if victim.node_id not in m]
        assert again, "no chunk was reconstructed"
    finally:
        ray.shutdown()  # ray_ctx restarts the session's Ray for the next test
        if c is not None:
            c.shutdown()
        _ray.reset()


# -- concurrency -------------------------------------------------------------------------------

THREADS = 8


def _run_threads(fn, n=THREADS):
    errors: list = []
    barrier = threading.Barrier(n)

    def run(t):
        try:
            barrier.wait(30)
            fn(t)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((t, e))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "a compute thread hangs"
    assert not errors, errors


def test_computes_from_many_threads(ray_ctx):
    done = [0] * THREADS

    def work(t):
        rng = np.random.default_rng(t)
        for rep in range(3):
            size = 2_000 + 500 * t + 100 * rep
            a = rng.random(size)
            x = da.from_array(a, chunks=250)
            got = dask.compute((x * (t + 1) + rep).sum(), x[::-1] - t, scheduler=daskray.get)
            np.testing.assert_allclose(got[0], (a * (t + 1) + rep).sum())
            np.testing.assert_array_equal(got[1], a[::-1] - t)
            dsk = {("k", t, i): (add, i, t * 1000 + rep) for i in range(50)}
            dsk["s"] = (total, *[("k", t, i) for i in range(50)])
            assert daskray.get(dsk, "s", fuse=rep % 2 == 0) == sum(
                i + t * 1000 + rep for i in range(50)
            )
            done[t] += 1

    _run_threads(work)
    assert done == [3] * THREADS


def test_persisted_collections_shared_by_threads(ray_ctx):
    a = np.arange(60_000, dtype=float).reshape(300, 200)
    b = np.random.default_rng(0).random((300, 200))
    x = da.from_array(a, chunks=(50, 50)) * 2
    y = da.from_array(b, chunks=(100, 100)) + 1
    px, py = dask.persist(x, y, scheduler=daskray.get)
    del x, y
    gc.collect()
    want_x, want_y = a * 2, b + 1

    def work(t):
        for rep in range(3):
            s, m, row = dask.compute(
                (px + py * t).sum(),
                (px[t::THREADS] - rep).mean(axis=0),
                py[t],
                scheduler=daskray.get,
            )
            np.testing.assert_allclose(s, (want_x + want_y * t).sum())
            np.testing.assert_allclose(m, (want_x[t::THREADS] - rep).mean(axis=0))
            np.testing.assert_allclose(row, want_y[t])
            gc.collect()

    _run_threads(work)
    # still valid after all of that
    np.testing.assert_array_equal(px.compute(scheduler=daskray.get), want_x)
    np.testing.assert_array_equal(py.compute(scheduler=daskray.get), want_y)


# -- memory: spilling --------------------------------------------------------------------------

STORE_BYTES = 80 * 2**20
CHUNK_N = 1_250_000  # float64: 10 MB
NCHUNKS = 24  # 240 MB of chunks, 3x the object store


def _spilled_bytes() -> int:
    import ray
    import ray._private.internal_api

    stats = ray._private.internal_api.get_memory_info_reply(
        ray._private.internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
    ).store_stats
    return stats.spilled_bytes_total


def test_intermediates_larger_than_the_object_store_spill(ray_ctx):
    ray = ray_ctx
    ray.shutdown()  # the session's Ray; ray_ctx brings it back for later tests
    try:
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
        )
        _ray.reset()
        # all chunks first (the first half of the pair sums needs all of them), then a tree of
        # pair sums: every intermediate is a 10 MB array in the object store
        dsk = {("c", i): (chunk, i, CHUNK_N) for i in range(NCHUNKS)}
        level = [("c", i) for i in range(NCHUNKS)]
        depth = 0
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level) - 1, 2):
                key = ("s", depth, j // 2)
                dsk[key] = (pair_sum, level[j], level[j + 1])
                nxt.append(key)
            if len(level) % 2:
                nxt.append(level[-1])
            level, depth = nxt, depth + 1
        proc = psutil.Process()
        gc.collect()
        rss0 = proc.memory_info().rss
        out = daskray.get(dsk, level[0], fuse=False)
        rss1 = proc.memory_info().rss
        np.testing.assert_array_equal(out, np.full(CHUNK_N, float(sum(range(NCHUNKS)))))
        spilled = _spilled_bytes()
        assert spilled >= STORE_BYTES, f"only {spilled} bytes spilled: no memory pressure"
        # the driver holds the answer (10 MB), not the 240 MB of intermediates
        grown = rss1 - rss0
        assert grown < out.nbytes + 40 * 2**20, f"driver RSS grew by {grown / 2**20:.0f} MiB"
    finally:
        ray.shutdown()  # ray_ctx restarts the session's Ray for the next test
        _ray.reset()


# -- no cluster: unreachable address, empty graph, no listener ---------------------------------


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _python(code: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.pop("RAY_ADDRESS", None)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: make ray.init(address=...) give up on an unreachable GCS in seconds rather than minutes:
#: the cluster-id fetch (py_gcs_connect_timeout_s, 30 s), the connect retries of
#: Node._init_gcs_client (NUM_REDIS_GET_RETRIES, 20 x ~1 s), the gRPC connect wait
FAST_FAIL_ENV = {
    "RAY_py_gcs_connect_timeout_s": "2",
    "RAY_gcs_rpc_server_connect_timeout_s": "1",
    "RAY_NUM_REDIS_GET_RETRIES": "1",
    "RAY_gcs_server_port_wait_time_s": "1",
}


def test_unreachable_address_fails_with_how_to_fix_it():
    port = _closed_port()
    code = """
        import time, daskray
        t = time.monotonic()
        try:
            daskray.get({"x": 1}, "x")
        except ConnectionError as e:
            print("ELAPSED", time.monotonic() - t)
            print("MESSAGE", str(e).replace("\\n", " "))
        else:
            print("NO ERROR")
    """
    start = time.monotonic()
    r = _python(code, {"RAY_ADDRESS": f"127.0.0.1:{port}", **FAST_FAIL_ENV}, timeout=40)
    assert time.monotonic() - start < 30, r.stdout + r.stderr
    assert "MESSAGE" in r.stdout, r.stdout + r.stderr[-3000:]
    message = r.stdout.split("MESSAGE", 1)[1]
    assert f"127.0.0.1:{port}" in message
    assert "RAY_ADDRESS" in message and "ray status" in message and "address" in message


def test_empty_graph_starts_no_ray():
    code = """
        import ray, daskray
        assert daskray.get({}, []) == ()
        assert daskray.get({}, [[], []]) == ((), ())
        print("INITIALIZED", ray.is_initialized())
    """
    # an unreachable RAY_ADDRESS too: any attempt to connect would fail loudly
    r = _python(code, {"RAY_ADDRESS": f"127.0.0.1:{_closed_port()}", **FAST_FAIL_ENV})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "INITIALIZED False" in r.stdout


def test_debug_compute_opens_no_listener():
    code = """
        import psutil, ray, daskray
        import dask.array as da
        x = (da.arange(10_000, chunks=500) * 2).sum()
        assert x.compute(scheduler=daskray.get, debug=True) == 2 * sum(range(10_000))
        me = psutil.Process()
        listening = [c for c in me.net_connections(kind="all") if c.status == "LISTEN"]
        print("LISTEN", listening)
        print("INITIALIZED", ray.is_initialized())
        print("CHILDREN", me.children(recursive=True))
    """
    r = _python(code)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LISTEN []" in r.stdout, r.stdout
    assert "INITIALIZED False" in r.stdout
    assert "CHILDREN []" in r.stdout
