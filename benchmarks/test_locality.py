"""Locality: how many bytes cross nodes with daskray and with ray_dask_get on 2 nodes.

Ray already places a task whose arguments are ObjectRefs on the node holding most of their
bytes (locality-aware leasing, decided when the arguments exist -- so also for daskray's tasks,
which are all submitted in one pass before their inputs exist). This measures what that gives.

Setup: a ``ray.cluster_utils.Cluster`` of two nodes with 1 CPU each (the driver on the head).
Each workload's graph is optimized by dask once (what either scheduler gets from
``compute()``), and every task of it -- aliases included, as identity tasks -- is wrapped in
:class:`Recorded`, which appends ``(key, node id, nbytes)`` to a per-process log file once the
task ran. Both schedulers run the very same wrapped graph. Two figures per run:

* ``cross_mb`` (task log): for every task and each dependency it reads, the value's bytes if
  the producer ran on another node -- counted once per (value, consuming node), since Ray keeps
  a pulled copy per node -- for values over 100 KiB (smaller ones are inlined: they travel
  through the driver wherever the tasks run);
* ``pulled_mb`` (Ray's own count, a cross-check): the growth of every node's object store
  ``cumulative_created_bytes`` (``GetNodeStats``: it counts pulled copies too) less the bytes
  of the objects the run created in the first place (task outputs over 100 KiB: every task's
  for ray_dask_get, every group output's for daskray, from its plan).

Workloads (blocks of 128 x 128 float64, 128 KiB, so that every block is a plasma object):
``blockwise`` ``((x + 1) * 2).sum(axis=0)`` -- dask fuses each block's chain into one task, so
only small partial sums move; ``transpose`` ``(y + y.T).sum(axis=0)`` with ``y = (x + 1) * 2``
-- every block of ``y`` is read by two tasks, ``(i, j)`` and ``(j, i)``; ``matmul``
``(y @ y.T).sum(axis=0)`` -- every block read by many.

``DASKRAY_BENCH_LOCALITY_LEASING=0`` starts the cluster with Ray's locality-aware leasing off
(``_system_config={"locality_aware_leasing_enabled": False}``), to see what it contributes.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time

import dask
import dask.array as da
import numpy as np
import pytest

import daskray
from daskray import _ray

INLINE_BYTES = 100 * 1024  # Ray's max_direct_call_object_size: smaller values are inlined
CHUNK = 128


class Recorded:
    """A task function that logs where it ran and the size of what it returned."""

    def __init__(self, func, key, log_dir):
        self.func, self.key, self.log_dir = func, key, log_dir

    def __call__(self, *args, **kwargs):
        import ray

        out = self.func(*args, **kwargs)
        node = ray.get_runtime_context().get_node_id()
        nbytes = int(getattr(out, "nbytes", 0))
        with open(os.path.join(self.log_dir, f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps([repr(self.key), node, nbytes]) + "\n")
        return out


def identity(x):
    return x


def recorded_graph(collection, log_dir):
    """dask's optimized graph of ``collection``, every task wrapped in :class:`Recorded`;
    ``(graph, keys, {repr(key): dependencies})``."""
    from dask._task_spec import Alias, Task, TaskRef, convert_legacy_graph

    (opt,) = dask.optimize(collection)
    keys = opt.__dask_keys__()
    dsk = convert_legacy_graph(dict(opt.__dask_graph__()))
    out, deps = {}, {}
    for key, node in dsk.items():
        if isinstance(node, Alias):
            node = Task(key, identity, TaskRef(node.target))
        if isinstance(node, Task):
            node = Task(key, Recorded(node.func, key, log_dir), *node.args, **node.kwargs)
        out[key] = node
        deps[repr(key)] = [repr(d) for d in node.dependencies]
    return out, keys, deps


def read_log(log_dir) -> dict:
    ran = {}
    for path in glob.glob(os.path.join(log_dir, "*.jsonl")):
        with open(path) as f:
            for line in f:
                key, node, nbytes = json.loads(line)
                ran[key] = (node, nbytes)
    return ran


def store_created_bytes() -> int:
    """Sum over alive nodes of the object store's ``cumulative_created_bytes``."""
    import ray
    from ray._private.internal_api import node_stats

    total = 0
    for n in ray.nodes():
        if n["Alive"]:
            reply = node_stats(n["NodeManagerAddress"], n["NodeManagerPort"], False)
            total += reply.store_stats.cumulative_created_bytes
    return total


def daskray_objects(dsk, keys) -> set:
    """The keys daskray stores as Ray objects: its plan's group outputs (as ``daskray.get``
    plans the graph on this cluster)."""
    from daskray import ingest, planning

    graph = ingest.ingest(dsk, keys)
    plan = planning.make_plan(graph, _ray.cluster_cpus())
    return {repr(graph.names[i]) for i in plan.outputs}


def measure(get, collection, objects_of) -> dict:
    """Run ``collection`` with ``get`` on its recorded graph; the transfer figures."""
    with tempfile.TemporaryDirectory() as log_dir:
        dsk, keys, deps = recorded_graph(collection, log_dir)
        before = store_created_bytes()
        t0 = time.perf_counter()
        value = get(dsk, keys)
        elapsed = time.perf_counter() - t0
        time.sleep(0.2)  # let the raylets' counters settle
        created = store_created_bytes() - before
        ran = read_log(log_dir)
    assert set(ran) == set(deps), "every task ran once and logged"
    pairs = {(d, ran[k][0]) for k, ds in deps.items() for d in ds}
    big = {(d, node) for d, node in pairs if ran[d][1] > INLINE_BYTES}
    cross = {(d, node) for d, node in big if ran[d][0] != node}
    objects = objects_of(dsk, keys) if objects_of else set(deps)
    primary = sum(ran[k][1] for k in objects if ran[k][1] > INLINE_BYTES)
    per_node: dict = {}
    for node, nbytes in ran.values():
        per_node[node] = per_node.get(node, 0) + nbytes
    return {
        "value": np.concatenate(value),  # the 1-d result's blocks
        "seconds": elapsed,
        "tasks": len(deps),
        "nodes_used": len(per_node),
        # the busiest node's share of the bytes the tasks produced (0.5: balanced)
        "busiest": max(per_node.values()) / max(1, sum(per_node.values())),
        "read_mb": sum(ran[d][1] for d, _ in big) / 1e6,
        "cross_mb": sum(ran[d][1] for d, _ in cross) / 1e6,
        "cross_reads": len(cross),
        "big_reads": len(big),
        "pulled_mb": (created - primary) / 1e6,
    }


def _workload(name: str, scale: float):
    k = max(4, round(16 * scale**0.5))  # blocks per side: 4 (CI) .. 16 (scale 1)
    x = da.random.default_rng(0).random((k * CHUNK, k * CHUNK), chunks=CHUNK)
    y = (x + 1) * 2
    if name == "blockwise":
        return y.sum(axis=0)
    if name == "transpose":
        return (y + y.T).sum(axis=0)
    if name == "matmul":
        return (y @ y.T).sum(axis=0)
    raise ValueError(name)


@pytest.fixture(scope="module")
def two_nodes(local_cluster):
    head = {"num_cpus": 1, "include_dashboard": False}
    if os.environ.get("DASKRAY_BENCH_LOCALITY_LEASING", "1") == "0":  # for comparison
        head["_system_config"] = {"locality_aware_leasing_enabled": False}
    with local_cluster(head, {"num_cpus": 1}) as (c, _):
        yield c


@pytest.mark.cluster
@pytest.mark.filterwarnings("ignore::dask.array.core.PerformanceWarning")  # matmul's chunks
@pytest.mark.parametrize("name", ["blockwise", "transpose", "matmul"])
def test_cross_node_bytes(benchmark, two_nodes, record, name):
    from conftest import SCALE  # here: Ray workers import this module, not conftest
    from ray.util.dask import ray_dask_get

    gets = {"daskray": (daskray.get, daskray_objects), "ray_dask_get": (ray_dask_get, None)}
    for get, of in gets.values():  # warm both nodes' workers (imports of this module too)
        measure(get, _workload(name, 0.0), of)

    def both():
        return {s: measure(get, _workload(name, SCALE), of) for s, (get, of) in gets.items()}

    runs = benchmark.pedantic(both, rounds=1, iterations=1)
    expected = _workload(name, SCALE).compute(scheduler="sync")
    for sched, r in runs.items():
        np.testing.assert_allclose(r["value"], expected, err_msg=sched)
        assert 0 <= r["cross_mb"] <= r["read_mb"]
    notes = {}
    for sched, r in runs.items():
        tag = "dr" if sched == "daskray" else "rdg"
        notes[f"{tag}_cross_mb"] = round(r["cross_mb"], 2)
        notes[f"{tag}_pulled_mb"] = round(r["pulled_mb"], 2)
        notes[f"{tag}_read_mb"] = round(r["read_mb"], 2)
        notes[f"{tag}_busiest"] = round(r["busiest"], 2)
    record(f"loc-{name}", {s: r["seconds"] for s, r in runs.items()}, **notes)


def top_of_sorted(block):
    """Some compute on a block (a sort), returning a small row."""
    return np.sort(block, axis=0)[-1:]


def make_block(k: int, side: int):
    return np.random.default_rng(k).random((side, side))


@pytest.mark.cluster
def test_persisted_blocks(benchmark, two_nodes, record):
    """Values already in the object store -- 3/4 of the blocks on the head, 1/4 on the other
    node, as a skewed earlier compute leaves them -- each read by a task. Ray alone spills
    part of the head's tasks to the idle node, which pulls their blocks; daskray's locality
    hints (soft affinity to the node holding the block) keep them where the blocks are.
    Figures: bytes of blocks read on another node, and seconds, for daskray with
    ``locality.enabled`` on and off and for ray_dask_get, on the very same graph."""
    import ray
    from conftest import SCALE
    from dask._task_spec import DataNode, Task, TaskRef
    from ray.util.dask import ray_dask_get
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(
        (n["NodeID"] for n in ray.nodes() if n["Alive"]),
        key=lambda n: n != ray.get_runtime_context().get_node_id(),
    )
    nblocks = max(8, round(64 * SCALE**0.5)) // 4 * 4
    side = 512  # 2 MiB blocks: Ray's locality hints and daskray's both apply
    homes = [nodes[0] if k % 4 else nodes[1] for k in range(nblocks)]
    make = ray.remote(make_block)

    def blocks() -> list:
        """Fresh blocks for each run: a block pulled by an earlier run has copies on both."""
        refs = [
            make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(h, soft=False)).remote(
                k, side
            )
            for k, h in enumerate(homes)
        ]
        ray.wait(refs, num_returns=len(refs), fetch_local=False)
        return refs

    expected = [np.sort(make_block(k, side), axis=0)[-1:] for k in range(nblocks)]

    def run(get) -> dict:
        refs = blocks()
        with tempfile.TemporaryDirectory() as log_dir:
            dsk = {("blk", k): DataNode(("blk", k), r) for k, r in enumerate(refs)}
            for k in range(nblocks):
                key = ("top", k)
                dsk[key] = Task(key, Recorded(top_of_sorted, key, log_dir), TaskRef(("blk", k)))
            keys = [("top", k) for k in range(nblocks)]
            t0 = time.perf_counter()
            got = get(dsk, keys)
            seconds = time.perf_counter() - t0
            ran = read_log(log_dir)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
        moved = [k for k in range(nblocks) if ran[repr(("top", k))][0] != homes[k]]
        return {"seconds": seconds, "cross_mb": len(moved) * side * side * 8 / 1e6}

    def on(get, enabled):
        def call(dsk, keys):
            with dask.config.set({"daskray.locality.enabled": enabled}):
                return get(dsk, keys)

        return call

    gets = {
        "daskray": on(daskray.get, True),
        "daskray_no_locality": on(daskray.get, False),
        "ray_dask_get": ray_dask_get,
    }
    for get in gets.values():  # warm both nodes' workers
        run(get)
    runs = benchmark.pedantic(
        lambda: {s: run(get) for s, get in gets.items()}, rounds=1, iterations=1
    )
    assert runs["daskray"]["cross_mb"] == 0, runs
    record(
        "loc-persisted",
        {s: r["seconds"] for s, r in runs.items()},
        **{f"{s}_cross_mb": round(r["cross_mb"], 1) for s, r in runs.items()},
    )
