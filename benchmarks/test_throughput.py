"""Throughput: daskray against ray_dask_get, dask's threaded and sync schedulers, in one run.

Every scheduler is timed in the same test, one after the other, on the same built workload
(``daskray.bench.side_by_side``), and their results are checked equal to daskray's. The
ratio table is printed at the end of the session (see ``conftest.py``). CI runs every workload
once at a small scale, for correctness; ``DASKRAY_BENCH_SCALE=1`` gives the target sizes.
"""

from __future__ import annotations

import resource
import time

import pytest
from conftest import OTHERS, SCALE

import daskray
from daskray import bench

SIDE_BY_SIDE = ["tiny-tree", "chains", "ones-sum", "transpose", "matmul", "groupby", "shuffle"]


@pytest.mark.parametrize("name", SIDE_BY_SIDE)
def test_side_by_side(benchmark, ray_ctx, record, name):
    w = bench.WORKLOADS[name]
    gets = bench.schedulers(["daskray", *OTHERS])
    for get in gets.values():  # warm every scheduler: worker start-up, imports
        bench.time_it(w, get, min(SCALE, 0.01))
    # pytest-benchmark times the whole side-by-side run once; the ratios come from inside it
    times, values = benchmark.pedantic(
        bench.side_by_side, args=(w, gets, SCALE), rounds=1, iterations=1
    )
    for sched, value in values.items():
        assert bench.same(values["daskray"], value), f"{name}: daskray and {sched} disagree"
    record(name, times)


def test_million_tasks_end_to_end(ray_ctx, record):
    """The 1,000,000-task graph (at scale 1): completes, right answer, driver peak RSS."""
    w = bench.WORKLOADS["million"]
    dsk, key = w.make(SCALE)
    t0 = time.perf_counter()
    value = daskray.get(dsk, key)
    elapsed = time.perf_counter() - t0
    n_chains = max(2, int(50_000 * SCALE))
    assert value == sum(c + 19 for c in range(n_chains))  # inc(c), then 18 more incs
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    record("million", {"daskray": elapsed}, tasks=len(dsk), peak_rss_gb=round(rss_gb, 2))


def test_plan_cost_per_node(record):
    """ingest -> order -> fuse -> plan per node, against dask.order.order on the same graph."""
    from dask._task_spec import convert_legacy_graph
    from dask.order import order

    from daskray import ingest, planning, scheduler

    dsk, key = bench.WORKLOADS["million"].make(SCALE)
    converted = convert_legacy_graph(dsk)  # dask's own materialization, not timed for either
    n = len(converted)
    t0 = time.perf_counter()
    with scheduler.gc_paused():  # as daskray.get runs these steps
        graph = ingest.ingest(converted, key)
        plan = planning.make_plan(graph, 2)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    prio = order(converted)
    theirs = time.perf_counter() - t0
    assert len(plan.order) == len(prio) == n
    record(
        "plan-cost",
        {"daskray": ours, "dask.order": theirs},
        nodes=n,
        us_per_node=round(ours / n * 1e6, 3),
        groups=plan.ngroups,
    )


def test_tuning_uneven(ray_ctx, record, tmp_path):
    """``bench.uneven`` (16 slow tasks beside many tiny ones) by task count, then with the
    profile that ``daskray.tune`` measured on it: groups sized by time spread the slow tasks."""
    import dask
    from dask.delayed import Delayed

    w = bench.WORKLOADS["uneven"]
    path = str(tmp_path / "profile.json")
    bench.time_it(w, daskray.get, 0.01)  # warm the workers
    before, expected = bench.time_it(w, daskray.get, SCALE, repeat=2)
    dsk, key = w.make(SCALE)
    profile = daskray.tune(Delayed(key, dsk), filename=path)
    with dask.config.set({"daskray.fusion.profile": path}):
        after, value = bench.time_it(w, daskray.get, SCALE, repeat=2)
    assert value == expected
    assert profile["prefixes"]["spin"] > 100 * profile["prefixes"]["inc"]
    record("uneven-tuned", {"daskray": after, "daskray-by-count": before})
