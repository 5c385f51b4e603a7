"""Dask annotations reach Ray as per-task options; infeasible requests fail before submission.

The session Ray declares 2 CPUs, 1 GPU and 2 units of a custom resource ``special`` (no
hardware needed: Ray only counts them).
"""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
import pytest

import daskray
from daskray import _ray
from daskray.annotations import AnnotationError, ResourceError, to_ray_options


def gpu_ids(block):
    import ray

    return np.array([len(ray.get_gpu_ids())] * len(block))


def visible(block):
    return np.array([os.environ.get("CUDA_VISIBLE_DEVICES") is not None] * len(block))


class Spy:
    def __init__(self, monkeypatch):
        self.calls = []
        real = _ray._remote
        spy = self

        def remote(num_returns, name, remote_args):
            fn = real(num_returns, name, remote_args)
            spy.calls.append((name, _ray.thaw(remote_args)))
            return fn

        monkeypatch.setattr(_ray, "_remote", remote)


@pytest.fixture
def spy(monkeypatch, ray_ctx):
    return Spy(monkeypatch)


def test_to_ray_options_mapping():
    assert to_ray_options({"resources": {"CPU": 2, "GPU": 0.5, "memory": 1e9, "ssd": 1}}) == {
        "num_cpus": 2,
        "num_gpus": 0.5,
        "memory": 1_000_000_000,
        "resources": {"ssd": 1},
    }
    assert to_ray_options({"retries": 3}) == {"max_retries": 3, "retry_exceptions": True}
    assert to_ray_options({"ray_remote_args": {"num_cpus": 0.5}, "resources": {"CPU": 2}}) == {
        "num_cpus": 0.5
    }


@pytest.mark.parametrize(
    "ann, match",
    [
        ({"resources": 3}, "resources=3"),
        ({"resources": {"GPU": -1}}, "amounts >= 0"),
        ({"resources": {"GPU": "one"}}, "amounts >= 0"),
        ({"retries": "2"}, "retries='2'"),
        ({"retries": 1.5}, "an int >= 0"),
        ({"ray_remote_args": [1]}, "a dict of Ray task options"),
    ],
)
def test_malformed_annotations_name_the_key(ann, match, monkeypatch, ray_ctx):
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    x = da.ones(10, chunks=5)
    # dask.annotate checks plain values itself; values computed per key reach the scheduler
    with dask.annotate(**{name: (lambda k, v=v: v) for name, v in ann.items()}):
        y = x + 1
    with pytest.raises(AnnotationError, match=match) as info:
        y.sum().compute(scheduler=daskray.get)
    assert "on key ('add-" in str(info.value)


def test_gpu_annotation_survives_dask_fusion_and_runs_on_gpu(spy):
    """
    ones -> [map_blocks on GPU] -> sum      dask's blockwise fusion would merge the annotated
                                            layer into the sum and drop the annotation
    """
    x = da.ones(40, chunks=10)
    with dask.annotate(resources={"GPU": 1}):
        y = x.map_blocks(gpu_ids, dtype=int)
    z = (x + 0).map_blocks(gpu_ids, dtype=int)  # same function, other keys, no annotation
    got_y, got_z = dask.compute(y, z, scheduler=daskray.get)
    assert (got_y == 1).all()  # a GPU was assigned to exactly those tasks
    assert (got_z == 0).all()  # the rest ran without one
    gpu_tasks = [opts for _, opts in spy.calls if opts.get("num_gpus")]
    assert gpu_tasks and all(o == {"num_gpus": 1} for o in gpu_tasks)
    assert any(not o for _, o in spy.calls)


def test_gpu_tasks_see_cuda_visible_devices(ray_ctx):
    x = da.ones(20, chunks=10)
    with dask.annotate(resources={"GPU": 1}):
        y = x.map_blocks(visible, dtype=bool)
    assert y.compute(scheduler=daskray.get).all()


def test_custom_resource_memory_and_retries_on_delayed(spy):
    @dask.delayed
    def one():
        return 1

    with dask.annotate(resources={"special": 1, "memory": 10_000_000}, retries=2):
        a = one()
    b = dask.delayed(sum)([a, one()])
    assert b.compute(scheduler=daskray.get) == 2
    opts = [o for _, o in spy.calls if o]
    assert opts == [
        {
            "resources": {"special": 1},
            "memory": 10_000_000,
            "max_retries": 2,
            "retry_exceptions": True,
        }
    ]


def test_callable_annotation_values_per_key(spy):
    x = da.ones(40, chunks=10)
    with dask.annotate(resources=lambda k: {"special": 1} if k[1] % 2 else {}):
        y = x + 1
    np.testing.assert_array_equal(y.compute(scheduler=daskray.get), np.full(40, 2.0))
    with_special = [o for _, o in spy.calls if o.get("resources")]
    assert with_special and all(o["resources"] == {"special": 1} for o in with_special)


def test_precedence_config_compute_keyword_annotation(spy):
    """config < ray_remote_args= < resources= < per-key annotation."""
    x = da.ones(20, chunks=10)
    with dask.annotate(resources={"CPU": 0.25}):
        y = x + 1
    with dask.config.set({"daskray.ray-remote-args": {"num_cpus": 0.5, "max_retries": 1}}):
        y.sum().compute(
            scheduler=daskray.get, ray_remote_args={"num_cpus": 0.75}, resources={"special": 1}
        )
    annotated = [o for _, o in spy.calls if o.get("num_cpus") == 0.25]
    others = [o for _, o in spy.calls if o.get("num_cpus") != 0.25]
    assert annotated and others
    for o in annotated:
        assert o == {"num_cpus": 0.25, "max_retries": 1, "resources": {"special": 1}}
    for o in others:
        assert o == {"num_cpus": 0.75, "max_retries": 1, "resources": {"special": 1}}


def test_different_options_never_share_a_ray_task(spy):
    x = da.ones(100, chunks=10)
    with dask.annotate(resources={"special": 1}):
        y = x + 1
    (y * 2).sum().compute(scheduler=daskray.get)
    # every group is homogeneous: the spy saw separate Ray tasks for each option set
    kinds = {tuple(sorted(o)) for _, o in spy.calls}
    assert kinds == {(), ("resources",)}


@pytest.mark.parametrize(
    "resources, what",
    [({"GPU": 2}, "'GPU': 2"), ({"tpu": 1}, "'tpu': 1"), ({"memory": 10**15}, "'memory'")],
)
def test_infeasible_requests_fail_fast(resources, what, monkeypatch, ray_ctx):
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    x = da.ones(10, chunks=5)
    with dask.annotate(resources=resources):
        y = x + 1
    with pytest.raises(ResourceError, match="No Ray node can run the tasks") as info:
        y.compute(scheduler=daskray.get)
    assert what in str(info.value)
    assert info.value.keys and all(k[0].startswith("add-") for k in info.value.keys)


def test_infeasible_compute_keyword(monkeypatch, ray_ctx):
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    with pytest.raises(ResourceError, match="'GPU': 4"):
        da.ones(10, chunks=5).sum().compute(scheduler=daskray.get, resources={"GPU": 4})
    monkeypatch.undo()  # and the cluster is still usable
    assert da.ones(10, chunks=5).sum().compute(scheduler=daskray.get) == 10


def _first_group(info, prefix):
    plan, names = info.plan, info.graph.names
    return min(plan.group_of[i] for i, k in enumerate(names) if str(k).startswith(prefix))


def test_priority_orders_submission(spy):
    """
    low0..low9 -> sum         two independent reductions; the one annotated priority=10 is
    high0..high9 -> add -> sum   submitted first although it comes second
    """
    a = da.ones(100, chunks=10, name="low").sum()
    with dask.annotate(priority=10):
        b = (da.zeros(100, chunks=10, name="high") + 1).sum()
    info = daskray.explain(a, b, cpus=2, fuse=False)
    assert _first_group(info, "('high'") < _first_group(info, "('low'")
    assert dask.compute(a, b, scheduler=daskray.get, fuse=False) == (100, 100)
    names = [n for n, _ in spy.calls]
    assert names.index("high") < names.index("low"), names
    # without the annotation, graph order: the first collection first
    b2 = (da.zeros(100, chunks=10, name="high") + 1).sum()
    info = daskray.explain(a, b2, cpus=2, fuse=False, optimize_graph=False)
    assert _first_group(info, "('low'") < _first_group(info, "('high'")


def test_priority_must_be_an_int(monkeypatch, ray_ctx):
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    with dask.annotate(priority=lambda k: "high"):
        y = da.ones(10, chunks=5) + 1
    with pytest.raises(AnnotationError, match="priority='high'"):
        y.compute(scheduler=daskray.get)


def test_compute_time_workers_keyword(spy, monkeypatch):
    from daskray.annotations import WorkerError

    node = spy_node = __import__("ray").get_runtime_context().get_node_id()
    x = da.ones(20, chunks=10).sum()
    assert x.compute(scheduler=daskray.get, workers=[node]) == 20
    strategies = {o.get("scheduling_strategy") for _, o in spy.calls}
    assert strategies == {("node_affinity", spy_node, False)}
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: pytest.fail("submitted"))
    with pytest.raises(WorkerError, match="no-such-node"):
        x.compute(scheduler=daskray.get, workers="no-such-node")


def test_retries_config_default_and_override(spy):
    x = da.ones(20, chunks=10)
    with dask.config.set({"daskray.retries": 4}):
        x.sum().compute(scheduler=daskray.get)
        assert {o.get("max_retries") for _, o in spy.calls} == {4}
        spy.calls.clear()
        x.sum().compute(scheduler=daskray.get, retries=1)
        assert {o.get("max_retries") for _, o in spy.calls} == {1}
    spy.calls.clear()
    x.sum().compute(scheduler=daskray.get)
    assert {o.get("max_retries") for _, o in spy.calls} == {None}


def test_an_alias_takes_the_class_of_the_value_it_names(monkeypatch):
    """``da.concatenate`` of annotated blocks names each block again (an ``Alias``, itself
    unannotated): the alias takes its block's options class, so it joins the block's group or
    stays alone (a lone alias is its target's ref, no Ray task), never bundled with other
    work elsewhere: a persisted alias lives where its block was made (``workers=``: that node)."""
    from daskray import scheduler
    from daskray._compat import Alias

    seen = {}
    real = scheduler.make_plan

    def spy(graph, cpus, fuse, classes, *args):
        seen.update(graph=graph, classes=classes, plan=real(graph, cpus, fuse, classes, *args))
        return seen["plan"]

    monkeypatch.setattr(scheduler, "make_plan", spy)
    x = da.ones((40, 4), chunks=(10, 4))
    parts = []
    for k in range(4):
        with dask.annotate(resources={"special": k % 2 + 1}):
            parts.append(x.blocks[k] + k)
    got = da.concatenate(parts).compute(scheduler=daskray.get, debug=True)
    np.testing.assert_array_equal(got, np.repeat(np.arange(4.0), 10)[:, None] + np.ones((40, 4)))
    graph, of, plan = seen["graph"], seen["classes"].of, seen["plan"]
    aliases = [
        i
        for i, n in enumerate(graph.nodes)
        if type(n) is Alias and graph.names[i][0].startswith("concatenate")
    ]
    assert len(aliases) == 4
    for i in aliases:
        (target,) = graph.indices[graph.indptr[i] : graph.indptr[i + 1]]
        assert of[i] == of[target] != 0
        g = plan.group_of[i]  # with the block, or alone (submit hands on the block's ref)
        alone = plan.members_ptr[g + 1] - plan.members_ptr[g] == 1
        assert g == plan.group_of[target] or alone
    assert len({of[i] for i in aliases}) == 2
