"""Annotations on a real multi-node Ray cluster: where tasks actually run.

One ``ray.cluster_utils.Cluster`` per module, three nodes on this box, each with 1 CPU::

    head   CPU                       the driver's node
    gpu    CPU, GPU (declared)       Ray assigns a GPU id and sets CUDA_VISIBLE_DEVICES
    ssd    CPU, ssd=2 (custom)

Task functions report the node they ran on (``ray.get_runtime_context().get_node_id()``) and
the GPUs Ray gave them, so the tests check placement, not only the options daskray asked for.
The session's own Ray (``conftest.RAY_KWARGS``) is shut down first; ``ray_ctx`` brings it back
for later tests. The first tests need no Ray: ``workers`` parsing and node resolution on
made-up ``ray.nodes()`` records.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import dask
import dask.array as da
import numpy as np
import pytest

import daskray
from daskray import _ray, ingest, planning, scheduler
from daskray.annotations import (
    AnnotationError,
    ResourceError,
    WorkerError,
    freeze,
    to_ray_options,
)

cluster_test = pytest.mark.cluster


def where(block):
    """The node id this task ran on, per element."""
    import ray

    return np.full(block.shape, ray.get_runtime_context().get_node_id(), dtype="U64")


def gpu_info(block):
    """``node id|GPU ids|CUDA_VISIBLE_DEVICES`` of this task, per element."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    ids = ",".join(str(i) for i in ray.get_gpu_ids())
    info = f"{node}|{ids}|{os.environ.get('CUDA_VISIBLE_DEVICES', '-')}"
    return np.full(block.shape, info, dtype="U128")


def nodes_of(values) -> set:
    return {str(v).split("|")[0] for v in np.ravel(values)}


# -- no Ray needed: parsing and resolution -----------------------------------------------------


def _record(node_id, ip, alive=True, host="box"):
    return {
        "NodeID": node_id,
        "NodeManagerAddress": ip,
        "NodeManagerHostname": host,
        "Alive": alive,
        "Resources": {"CPU": 1.0},
    }


RECORDS = [
    _record("aa" * 28, "10.0.0.1", host="a"),
    _record("bb" * 28, "10.0.0.2", host="b"),
    _record("cc" * 28, "10.0.0.3", host="c"),
    _record("c3" * 28, "10.0.0.3", host="c"),  # a second node on one machine
    _record("dd" * 28, "10.0.0.4", alive=False, host="d"),
    _record("ee" * 28, "10.0.0.5", alive=False, host="e"),
]


def test_workers_annotation_becomes_plain_data():
    assert to_ray_options({"workers": "10.0.0.1"}) == {
        "scheduling_strategy": ("workers", ("10.0.0.1",), False)
    }
    opts = to_ray_options({"workers": ["b", "a", "b"], "allow_other_workers": True})
    assert opts == {"scheduling_strategy": ("workers", ("b", "a"), True)}  # order kept
    assert to_ray_options({"workers": {"b", "a"}})["scheduling_strategy"][1] == ("a", "b")
    assert hash(freeze(opts))  # frozen into an options class as it is
    assert to_ray_options({"workers": []}) == {}  # pins nothing
    assert to_ray_options({"allow_other_workers": True}) == {}  # alone: nothing to loosen
    # a ray_remote_args annotation still has the last word
    assert to_ray_options(
        {"workers": "a", "ray_remote_args": {"scheduling_strategy": "SPREAD"}}
    ) == {"scheduling_strategy": "SPREAD"}


@pytest.mark.parametrize(
    "ann, match",
    [
        ({"workers": 3}, "workers=3"),
        ({"workers": ["a", 1]}, r"workers=\['a', 1\]"),
        ({"workers": [""]}, "a node id, IP or hostname"),
        ({"workers": "a", "allow_other_workers": "yes"}, "allow_other_workers='yes'"),
    ],
)
def test_malformed_workers_annotation(ann, match):
    with pytest.raises(AnnotationError, match=match) as info:
        to_ray_options(ann, ("k", 0))
    assert info.value.keys == [("k", 0)]


@pytest.mark.parametrize(
    "workers, soft, expected",
    [
        (("cc" * 28,), False, "cc" * 28),  # node id
        (("10.0.0.2",), False, "bb" * 28),  # IP of one node
        (("a",), False, "aa" * 28),  # hostname
        (("10.0.0.4", "b", "a"), False, "bb" * 28),  # first *alive* entry
        (("dd" * 28, "ee" * 28), True, "dd" * 28),  # none alive, soft: Ray runs it elsewhere
    ],
)
def test_resolve_workers(workers, soft, expected):
    assert planning.resolve_workers(workers, soft, RECORDS, ["k"]) == expected


@pytest.mark.parametrize(
    "workers, soft, match",
    [
        (("nowhere",), True, "'nowhere' is no node of the Ray cluster"),
        (("a", "typo"), False, "'typo' is no node"),  # every entry must exist
        (("10.0.0.3",), False, "'10.0.0.3' is the address of 2 alive nodes"),
        (("c",), True, "2 alive nodes"),
        (("dd" * 28,), False, "none of these nodes is alive"),
    ],
)
def test_resolve_workers_errors(workers, soft, match):
    with pytest.raises(WorkerError, match=match) as info:
        planning.resolve_workers(workers, soft, RECORDS, [("x", 1)])
    assert info.value.keys == [("x", 1)] and "('x', 1)" in str(info.value)
    assert info.value.workers == workers


# -- a real cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(local_cluster):
    head = {"num_cpus": 1, "include_dashboard": False}
    gpu, ssd = {"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 1, "resources": {"ssd": 2}}
    with local_cluster(head, gpu, ssd) as (c, (gpu_node, ssd_node)):
        yield SimpleNamespace(
            cluster=c,
            head=c.head_node.node_id,
            gpu=gpu_node.node_id,
            ssd=ssd_node.node_id,
            ip=c.head_node.node_ip_address,
        )


@pytest.fixture
def no_submit(monkeypatch):
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))


@cluster_test
def test_cluster_is_up(cluster):
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert alive == {cluster.head, cluster.gpu, cluster.ssd}
    assert ray.get_runtime_context().get_node_id() == cluster.head
    assert _ray.cluster_cpus() == 3  # no cached count of the session's Ray


@cluster_test
def test_gpu_annotation_runs_exactly_those_tasks_on_the_gpu_node(cluster):
    x = da.arange(16, chunks=4)
    with dask.annotate(resources={"GPU": 1}):
        y = x.map_blocks(gpu_info, dtype="U128")
    z = (x + 1).map_blocks(gpu_info, dtype="U128")  # unannotated: anywhere, no GPU
    got_y, got_z = dask.compute(y, z, scheduler=daskray.get)
    for info in got_y:
        node, ids, visible = str(info).split("|")
        assert node == cluster.gpu
        assert ids == "0" and visible == "0"  # a GPU assigned, and CUDA told so
    for info in got_z:
        assert str(info).split("|")[1] == ""  # no GPU given to the rest


@cluster_test
def test_custom_resource_pins_tasks_to_its_node(cluster):
    x = da.arange(16, chunks=2)
    with dask.annotate(resources={"ssd": 1}):
        y = x.map_blocks(where, dtype="U64")
    assert nodes_of(y.compute(scheduler=daskray.get, fuse=False)) == {cluster.ssd}


@cluster_test
def test_hard_affinity_per_layer_never_fused_together(cluster):
    """
    x -> y: workers=[gpu node] -> z: workers=[ssd node, gpu node]   one compute, two pins; a
                                                                     chain daskray would fuse
    """
    x = da.arange(16, chunks=4)
    with dask.annotate(workers=[cluster.gpu]):
        y = x.map_blocks(where, dtype="U64")
    with dask.annotate(workers=[cluster.ssd, cluster.gpu]):  # the first alive entry wins
        z = y.map_blocks(lambda b: where(b), dtype="U64")
    got_y, got_z = dask.compute(y, z, scheduler=daskray.get)
    assert nodes_of(got_y) == {cluster.gpu}
    assert nodes_of(got_z) == {cluster.ssd}


@cluster_test
def test_hard_affinity_on_delayed(cluster):
    @dask.delayed
    def node():
        import ray

        return ray.get_runtime_context().get_node_id()

    with dask.annotate(workers=cluster.ssd):
        pinned = [node() for _ in range(4)]
    assert set(dask.compute(*pinned, scheduler=daskray.get)) == {cluster.ssd}


@cluster_test
def test_soft_affinity(cluster, no_submit, monkeypatch):
    x = da.arange(8, chunks=2)
    # the pinned node fits the tasks: they run there
    with dask.annotate(workers=[cluster.gpu], allow_other_workers=True):
        y = x.map_blocks(where, dtype="U64")
    # the pinned node can never fit them (no ssd there): soft lets Ray run them elsewhere ...
    with dask.annotate(workers=[cluster.gpu], allow_other_workers=True, resources={"ssd": 1}):
        z = x.map_blocks(where, dtype="U64", name="where-z")  # not y's keys
    monkeypatch.undo()
    got_y, got_z = dask.compute(y, z, scheduler=daskray.get)
    assert nodes_of(got_y) == {cluster.gpu}
    assert nodes_of(got_z) == {cluster.ssd}
    # ... while hard affinity there fails before anything is submitted
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    with dask.annotate(workers=[cluster.gpu], resources={"ssd": 1}):
        w = x.map_blocks(where, dtype="U64")
    with pytest.raises(ResourceError, match="they are pinned to") as info:
        w.compute(scheduler=daskray.get)
    assert cluster.gpu in str(info.value) and "'ssd': 1" in str(info.value)
    assert info.value.keys and all(k[0].startswith("where-") for k in info.value.keys)


@cluster_test
@pytest.mark.parametrize(
    "workers, match",
    [
        ("f" * 56, "is no node of the Ray cluster"),
        ("10.255.255.1", "'10.255.255.1' is no node"),
        (None, "is the address of 3 alive nodes"),  # the cluster's IP: every node has it
    ],
)
def test_unknown_or_ambiguous_worker_fails_before_submission(cluster, no_submit, workers, match):
    workers = workers or cluster.ip
    x = da.arange(8, chunks=2)
    with dask.annotate(workers=workers):
        y = x + 1
    with pytest.raises(WorkerError, match=match) as info:
        y.sum().compute(scheduler=daskray.get)
    assert info.value.keys and all(k[0].startswith("add-") for k in info.value.keys)
    assert repr(info.value.keys[0]) in str(info.value)


@cluster_test
@pytest.mark.parametrize(
    "resources, what",
    [({"GPU": 2}, "'GPU': 2"), ({"tpu": 1}, "'tpu': 1"), ({"ssd": 3}, "'ssd': 3")],
)
def test_infeasible_requests_name_the_keys(cluster, no_submit, resources, what):
    x = da.arange(8, chunks=2)
    with dask.annotate(resources=resources):
        y = x + 1
    with pytest.raises(ResourceError, match="No Ray node can run the tasks") as info:
        y.sum().compute(scheduler=daskray.get)
    assert what in str(info.value)
    assert info.value.keys and all(k[0].startswith("add-") for k in info.value.keys)
    assert repr(info.value.keys[0]) in str(info.value)


@cluster_test
def test_results_equal_dask_sync_on_the_cluster(cluster):
    rng = da.random.default_rng(42)
    x = rng.random((60, 60), chunks=20)
    with dask.annotate(resources={"GPU": 1}):
        y = np.sin(x) + 1
    with dask.annotate(resources={"ssd": 1}, retries=1):
        z = y @ y.T
    with dask.annotate(workers=[cluster.gpu], allow_other_workers=True):
        w = (z - z.mean(axis=0)).sum(axis=1)
    v = (w * 2).cumsum(axis=0)
    ours = dask.compute(v, z, scheduler=daskray.get)
    theirs = dask.compute(v, z, scheduler="sync")
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-8)  # (v ends near 0)


@cluster_test
def test_connect_forgets_the_caches_of_another_cluster(cluster):
    _ray.node_records()  # fills the node cache for this cluster
    assert {n["NodeID"] for n in _ray._nodes_cache[1]} >= {cluster.head, cluster.gpu}
    _ray._session[0] = "another cluster's node"
    _ray._cpu_cache[:] = [float("inf"), 99]
    _ray.connect(None, None, {})
    assert _ray._nodes_cache[1] == [] and _ray.cluster_cpus() == 3
    assert _ray._session[0] == cluster.head


def node_id():
    import ray

    return ray.get_runtime_context().get_node_id()


@cluster_test
@pytest.mark.parametrize("form", ["workers", "node_affinity"])
def test_remote_builds_the_affinity_strategy(cluster, form):
    """``_remote`` turns the plain-data affinity into a NodeAffinitySchedulingStrategy, and
    resolves a ``workers`` form itself when ``planning.feasible`` did not (submit called alone)."""
    import ray
    from dask._task_spec import Task

    target = (cluster.ssd,) if form == "workers" else cluster.ssd
    opts = freeze({"scheduling_strategy": (form, target, False)})
    spec = ([Task("k", node_id)], [], ["k"])
    # two returns: the value and the task's status (its recorded warnings)
    refs = [_ray._remote(2, None, opts).remote(spec)[0] for _ in range(3)]
    assert set(ray.get(refs)) == {cluster.ssd}


def where_slowly(block):
    """The node this task ran on, as a 1x1 block, after a pause that keeps its node busy."""
    import time

    time.sleep(0.05)
    return np.full((1, 1), node_id(), dtype="U64")


def _persisted_on(nodes_per_block, x):
    """``x`` persisted by daskray, block ``k`` on node ``nodes_per_block[k]`` (all created)."""
    import ray

    parts = []
    for k, node in enumerate(nodes_per_block):
        with dask.annotate(workers=[node]):
            parts.append(x.blocks[k] + 0)
    (xp,) = dask.persist(da.concatenate(parts), scheduler=daskray.get)
    refs = list(daskray.futures.persisted().values())
    ray.wait(refs, num_returns=len(refs), fetch_local=False)  # located from now on
    return xp


@cluster_test
def test_tasks_on_persisted_blocks_run_where_the_blocks_are(cluster):
    """12 blocks of 2 MiB on the head, 4 on the ssd node, 1 CPU each: Ray alone spills some of
    the head's consumers to idle nodes (pulling their blocks); daskray's soft affinity keeps
    every consumer on its block's node. Small blocks (under ``locality.min-bytes``) and
    ``locality.enabled=False`` leave Ray free; a ``workers`` annotation wins."""
    homes = [cluster.head] * 12 + [cluster.ssd] * 4
    x = da.random.default_rng(0).random((16 * 512, 512), chunks=512)  # 2 MiB blocks
    xp = _persisted_on(homes, x)

    def ran_on(y, **annotations):
        with dask.annotate(**annotations):
            y = y.map_blocks(where_slowly, dtype="U64", chunks=(1, 1))
        return y.compute().ravel().tolist()

    with dask.config.set(scheduler=daskray.get):
        assert ran_on(xp + 1) == homes
        with dask.config.set({"daskray.locality.min-bytes": 4 << 20}):  # blocks too small now
            graph = ingest.ingest(*_graph_of(xp + 1))
            classes = scheduler._placed(graph, planning.Classes({}))
            assert classes.of is None and classes.options == [{}]
        with dask.config.set({"daskray.locality.enabled": False}):
            graph = ingest.ingest(*_graph_of(xp + 1))
            assert graph.flags is not None  # ObjectRef inputs, placement not asked for
        assert ran_on(xp, workers=[cluster.gpu]) == [cluster.gpu] * 16
        np.testing.assert_array_equal((xp * 2).sum(axis=0).compute(), (x * 2).sum(axis=0))


def nodes_of_rows(frame):
    """The node each row of a partition was converted on (the task's node)."""
    import pandas as pd

    return pd.Series([node_id()] * len(frame), index=frame.index, dtype=object)


@cluster_test
def test_from_ray_dataset_computes_where_the_blocks_live(cluster):
    """A Dataset whose 4 MiB blocks were made on the ssd node: daskray converts and uses them
    there (soft affinity to the node holding the block), not on the idle head or gpu node."""
    import ray

    pytest.importorskip("ray.data")
    ds = ray.data.range(4 * 262_144, override_num_blocks=4).map_batches(
        _doubled, batch_format="numpy", resources={"ssd": 1}
    )
    ds = ds.materialize()
    df = daskray.from_ray_dataset(ds)
    assert df.npartitions == 4
    ran = df.map_partitions(nodes_of_rows, meta=(None, object)).compute(scheduler=daskray.get)
    assert set(ran) == {cluster.ssd} and len(ran) == 4 * 262_144


def _doubled(batch):
    return {"id": batch["id"], "x": batch["id"] * 2.0}


def _graph_of(collection):
    (opt,) = dask.optimize(collection)
    return opt.__dask_graph__(), opt.__dask_keys__()


@cluster_test
def test_report_counts_bytes_moved_between_nodes(cluster, tmp_path):
    """A 2 MB block made on the head and read on the ssd node: the report says so."""
    x = da.random.default_rng(1).random((500, 500), chunks=500)  # one 2 MB block
    with dask.annotate(workers=[cluster.head]):
        y = x + 1
    with dask.annotate(workers=[cluster.ssd]):
        z = y.sum()
    with daskray.performance_report(str(tmp_path / "r.html")) as rep:
        got = z.compute(scheduler=daskray.get)
    np.testing.assert_allclose(got, (x + 1).sum().compute(scheduler="sync"))
    (s,) = rep.summary()
    assert s["nodes"] == 2
    assert 2_000_000 <= s["cross_node_bytes"] <= s["read_bytes"]
    lanes = {e["pid"] for e in rep.chrome_trace()["traceEvents"] if e.get("cat") == "ray-task"}
    assert len(lanes) == 2  # one trace process per node
