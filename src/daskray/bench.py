"""Benchmark workloads and a side-by-side runner (used by ``benchmarks/`` and the demo).

Each workload builds a fresh dask collection or raw graph at a given ``scale`` (1.0 is the size
the throughput targets are stated for; CI runs a small scale for correctness only) and knows how
to compute it with any scheduler ``get``. Schedulers are compared in one process, one after the
other on the same data and the same Ray, as ratios -- never as absolute times across runs.

The task functions live here, in the installed package, so Ray workers can import them.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._compat import Task, TaskRef


def inc(x):
    return x + 1


def add_all(*xs):
    return sum(xs)


@dataclass(frozen=True)
class Workload:
    name: str
    make: Callable[[float], tuple[Any, Any]]  # scale -> (graph or collection, keys or None)

    def describe(self, scale: float) -> str:
        """The workload's name and its number of dask tasks at ``scale``.

        >>> WORKLOADS["tiny-tree"].describe(0.01)
        'tiny-tree (208 dask tasks)'
        """
        obj, keys = self.make(scale)
        tasks = len(obj) if keys is not None else len(obj.__dask_graph__())
        return f"{self.name} ({tasks:,} dask tasks)"


def _n(base: int, scale: float, lo: int = 2) -> int:
    return max(lo, int(base * scale))


def _tree_reduce(dsk: dict, level: list, prefix: str, fanin: int = 32, tasks: bool = False) -> Any:
    """Add a ``fanin``-ary tree of ``add_all`` tasks over ``level`` to ``dsk``; its root key.
    ``tasks``: as dask ``Task`` objects rather than legacy tuples."""
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), fanin):
            k = (prefix, depth, j // fanin)
            if tasks:
                dsk[k] = Task(k, add_all, *map(TaskRef, level[j : j + fanin]))
            else:
                dsk[k] = (add_all, *level[j : j + fanin])
            nxt.append(k)
        level = nxt
        depth += 1
    return level[0]


def _chains(dsk: dict, n: int, length: int, prefix: str) -> list:
    """Add ``n`` chains of ``length`` ``inc`` tasks to ``dsk``; the keys of their ends."""
    for c in range(n):
        dsk[(prefix, c, 0)] = (inc, c)
        for i in range(1, length):
            dsk[(prefix, c, i)] = (inc, (prefix, c, i - 1))
    return [(prefix, c, length - 1) for c in range(n)]


def tiny_tree(scale: float):
    """``n`` independent tiny tasks reduced by a 32-ary tree (20,646 tasks at scale 1)."""
    n = _n(20_000, scale)
    dsk: dict = {("leaf", i): (inc, i) for i in range(n)}
    return dsk, _tree_reduce(dsk, [("leaf", i) for i in range(n)], "reduce")


def chains(scale: float, length: int = 20):
    """``n`` chains of 20 tiny tasks joined by one final task (20,001 tasks at scale 1)."""
    dsk: dict = {}
    ends = _chains(dsk, _n(1_000, scale), length, "chain")
    dsk["total"] = (add_all, *ends)
    return dsk, "total"


def huge(scale: float):
    """A 1,000,000-task graph (at scale 1): 50,000 chains of 19 tiny tasks, tree-reduced,
    built as dask ``Task`` objects -- what dask's collections hand a scheduler -- so that no
    scheduler pays dask's conversion of legacy tuples (14 us a task) inside the timing."""
    dsk: dict = {}
    ends = []
    for c in range(_n(50_000, scale)):
        k = ("h", c, 0)
        dsk[k] = Task(k, inc, c)
        for i in range(1, 19):
            prev, k = k, ("h", c, i)
            dsk[k] = Task(k, inc, TaskRef(prev))
        ends.append(k)
    return dsk, _tree_reduce(dsk, ends, "hr", tasks=True)


def ones_sum(scale: float):
    import dask.array as da

    return da.ones(_n(20_000_000, scale, 4_000), chunks=2_000).sum(), None


def transpose_mean(scale: float):
    import dask.array as da

    side = max(500, int(6000 * scale**0.5) // 500 * 500)
    x = da.random.default_rng(0).random((side, side), chunks=500)
    return (x + x.T).mean(axis=0).sum(), None


def matmul(scale: float):
    import dask.array as da

    side = max(1000, int(4000 * scale**0.5) // 1000 * 1000)
    x = da.random.default_rng(0).random((side, side), chunks=1000)
    return (x @ x.T).sum(), None


def _frame(rows: int, nparts: int):
    import dask.dataframe as dd

    rng = np.random.default_rng(0)
    pdf = pd.DataFrame(
        {"k": rng.integers(0, 1000, rows), "v": rng.random(rows), "w": rng.random(rows)}
    )
    return dd.from_pandas(pdf, npartitions=nparts)


def groupby_agg(scale: float):
    df = _frame(_n(4_000_000, scale, 10_000), 64)
    return df.groupby("k").agg({"v": "sum", "w": "mean"}), None


def tasks_shuffle(scale: float):
    df = _frame(_n(2_000_000, scale, 10_000), 32)
    return df.shuffle("k", shuffle_method="tasks").v.sum(), None


def spin(seconds: float, i: int) -> int:
    """Keep a CPU busy for ``seconds`` (a stand-in for real work of known cost)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return i


def uneven(scale: float):
    """Very uneven task costs: 16 ``spin`` tasks of 40 ms (x sqrt(scale)) beside 4,000 tiny
    ``inc`` tasks (x scale), all summed by a tree. Counted by tasks, the spins are neighbours
    and land in one or two fused groups; measured (``daskray tune uneven``), they spread out."""
    seconds = 0.04 * min(1.0, scale) ** 0.5
    dsk: dict = {("spin", i): (spin, seconds, i) for i in range(16)}
    n = _n(4_000, scale, 64)
    dsk.update({("inc", i): (inc, i) for i in range(n)})
    level = [("spin", i) for i in range(16)] + [("inc", i) for i in range(n)]
    return dsk, _tree_reduce(dsk, level, "total")


def random_dag(scale: float):
    """A random layered DAG of tiny tasks whose edges reach across layers (12,000 tasks and a
    reduction at scale 1): 40 layers, each task of a layer reads 1 to 3 tasks of any earlier
    layer (seeded); the tasks nobody reads are tree-reduced."""
    rng = random.Random(0)
    width = _n(300, scale, 4)
    dsk: dict = {("rdag", 0, j): (inc, j) for j in range(width)}
    earlier = list(dsk)
    for layer in range(1, 40):
        keys = [("rdag", layer, j) for j in range(width)]
        for k in keys:
            dsk[k] = (add_all, *rng.sample(earlier, rng.randint(1, 3)))
        earlier.extend(keys)
    read = {d for task in dsk.values() for d in task[1:] if isinstance(d, tuple)}
    return dsk, _tree_reduce(dsk, [k for k in earlier if k not in read], "rdag-sum")


def lattice(scale: float):
    """A diamond lattice of tiny tasks: ``(i, j)`` reads ``(i - 1, j)`` and ``(i, j - 1)`` (a
    wavefront; 10,000 tasks at scale 1)."""
    n = max(4, int(100 * scale**0.5))
    dsk: dict = {}
    for i in range(n):
        for j in range(n):
            deps = [(p, q) for p, q in ((i - 1, j), (i, j - 1)) if p >= 0 and q >= 0]
            dsk[("lat", i, j)] = (add_all, i + j, *[("lat", p, q) for p, q in deps])
    return dsk, ("lat", n - 1, n - 1)


def _smooth(block):
    """One Jacobi step of the 5-point stencil (the block's edge is map_overlap's halo)."""
    out = block.copy()
    out[1:-1, 1:-1] = (block[:-2, 1:-1] + block[2:, 1:-1] + block[1:-1, :-2] + block[1:-1, 2:]) / 4
    return out


def stencil(scale: float):
    """``map_overlap`` (a 5-point stencil, depth 1) then a ``rechunk`` to other blocks and a
    reduction: a halo exchange between neighbouring blocks (5,598 tasks at scale 1)."""
    import dask.array as da

    side = max(1000, int(4000 * scale**0.5) // 250 * 250)
    x = da.random.default_rng(0).random((side, side), chunks=250)
    y = x.map_overlap(_smooth, depth=1, boundary="reflect").rechunk((side // 10, side // 10))
    return (y * y).sum(axis=0).sum(), None


def join(scale: float):
    """A dataframe pipeline: filter, hash merge of two frames (tasks shuffle), groupby-sum
    (543 tasks at scale 1)."""
    a = _frame(_n(1_000_000, scale, 10_000), 16)
    rng = np.random.default_rng(1)
    pdf = pd.DataFrame({"k": np.arange(1000), "g": rng.integers(0, 20, 1000)})
    import dask.dataframe as dd

    b = dd.from_pandas(pdf, npartitions=4)
    joined = a[a.v > 0.2].merge(b, on="k", shuffle_method="tasks")
    return joined.groupby("g").w.sum(), None


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("tiny-tree", tiny_tree),
        Workload("chains", chains),
        Workload("ones-sum", ones_sum),
        Workload("transpose", transpose_mean),
        Workload("matmul", matmul),
        Workload("groupby", groupby_agg),
        Workload("shuffle", tasks_shuffle),
        Workload("million", huge),
        Workload("uneven", uneven),
        Workload("random-dag", random_dag),
        Workload("lattice", lattice),
        Workload("stencil", stencil),
        Workload("join", join),
    ]
}


def get_unpacked(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """``daskray.get`` without packing the levels of the group graph (for comparison)."""
    import dask

    import daskray

    with dask.config.set({"daskray.fusion.pack-levels": False}):
        return daskray.get(dsk, keys, **kwargs)


def schedulers(names: list[str]) -> dict[str, Callable]:
    """Scheduler ``get`` functions by name: daskray, daskray-unfused, daskray-unpacked,
    ray_dask_get, threads, sync."""
    out: dict[str, Callable] = {}
    for name in names:
        if name == "daskray":
            import daskray

            out[name] = daskray.get
        elif name == "daskray-unfused":
            from functools import partial

            import daskray

            out[name] = partial(daskray.get, fuse=False)
        elif name == "daskray-unpacked":
            out[name] = get_unpacked
        elif name == "ray_dask_get":
            from daskray import _ray

            out[name] = _ray.ray_dask_get()
        elif name == "threads":
            import dask.threaded

            out[name] = dask.threaded.get
        elif name == "sync":
            import dask.local

            out[name] = dask.local.get_sync
        else:
            raise ValueError(f"unknown scheduler {name!r}")
    return out


def same(a: Any, b: Any) -> bool:
    """Results equal up to float rounding (frames and series compared sorted by index).

    >>> same(pd.Series([1.0, 2.0], index=[1, 0]), pd.Series([2.0, 1.0]))
    True
    """
    if isinstance(a, (pd.DataFrame, pd.Series)):
        a, b = a.sort_index(), b.sort_index()
        if not a.index.equals(b.index):
            return False
        return a.shape == b.shape and bool(np.allclose(a.to_numpy(), b.to_numpy()))
    return bool(np.allclose(a, b))


def run(built: tuple[Any, Any], get: Callable) -> Any:
    """Compute a built workload ``(collection, None)`` or ``(graph, keys)`` with ``get``."""
    obj, keys = built
    return obj.compute(scheduler=get) if keys is None else get(obj, keys)


def time_it(workload: Workload, get: Callable, scale: float, repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (graph construction not timed) and the last result."""
    best, value = float("inf"), None
    for _ in range(repeat):
        built = workload.make(scale)
        t0 = time.perf_counter()
        value = run(built, get)
        best = min(best, time.perf_counter() - t0)
    return best, value


def rss() -> int:
    """This process's resident set size in bytes (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _reset_high_water_mark() -> bool:
    """Reset this process's peak RSS (``VmHWM``; Linux >= 4.0): True when it was."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def high_water_mark() -> int:
    """This process's peak RSS in bytes since start or the last reset (``VmHWM``; 0 where
    ``/proc`` does not say)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class PeakRss:
    """The driver's peak RSS while the block runs (``.peak``, bytes): the kernel's high-water
    mark, reset on entry, where Linux keeps one -- a sampling thread needs the GIL, which a
    compiled loop holds for seconds -- and the largest sample taken every 20 ms besides.
    ``measure`` and ``interval``: the sampled peak of another quantity, at another pace."""

    def __init__(self, measure: Callable[[], int] = rss, interval: float = 0.02) -> None:
        self.peak = 0
        self._measure = measure
        self._interval = interval
        self._hwm = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def sampled(self, value: int) -> None:
        """Take one sample (a subclass may do more with it)."""
        self.peak = max(self.peak, value)

    def _sample(self) -> None:
        while True:
            self.sampled(self._measure())
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakRss:
        self._hwm = self._measure is rss and _reset_high_water_mark()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sampled(self._measure())
        if self._hwm:
            self.sampled(high_water_mark())


def plan_only(workload: Workload, scale: float) -> dict[str, float]:
    """Time interning and planning of a raw-graph workload (not its construction) as
    ``daskray.get`` runs them, and the driver's RSS growth during it.

    >>> row = plan_only(WORKLOADS["tiny-tree"], 0.01)
    >>> row["tasks"], row["plan_s"] > 0
    (208, True)
    """
    import gc

    from . import ingest, planning, scheduler

    obj, keys = workload.make(scale)
    if keys is None:
        raise ValueError(f"--plan-only times raw graphs; {workload.name!r} is a collection")
    gc.collect()
    before = rss()
    with PeakRss() as peak:
        t0 = time.perf_counter()
        with scheduler.gc_paused():
            graph = ingest.ingest(obj, keys)
            plan = planning.make_plan(graph, os.cpu_count() or 1)
        seconds = time.perf_counter() - t0
    tasks = len(plan.order)
    return {
        "tasks": tasks,
        "plan_s": seconds,
        "us_per_task": seconds / tasks * 1e6,
        "rss_growth_bytes_per_task": (peak.peak - before) / tasks,
        "groups": plan.ngroups,
    }


def side_by_side(
    workload: Workload,
    gets: dict[str, Callable],
    scale: float,
    repeat: int = 1,
    peaks: dict[str, int] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Time every scheduler on the *same* built workload, one after the other.

    The workload is built once and computed once, untimed, with dask's sync scheduler first:
    dask-expr caches what it learns while optimizing an expression (a ``from_pandas``'s
    divisions, say) on the expression itself, so whichever scheduler ran first would otherwise
    pay for everyone. Returns best seconds and the result per scheduler; ``peaks``, when
    given, receives each scheduler's peak driver RSS (bytes) over its runs.
    """
    import dask.local

    built = workload.make(scale)
    run(built, dask.local.get_sync)
    times: dict[str, float] = {}
    values: dict[str, Any] = {}
    for name, get in gets.items():
        best = float("inf")
        with PeakRss() as peak:
            for _ in range(repeat):
                t0 = time.perf_counter()
                values[name] = run(built, get)
                best = min(best, time.perf_counter() - t0)
        times[name] = best
        if peaks is not None:
            peaks[name] = peak.peak
    return times, values
