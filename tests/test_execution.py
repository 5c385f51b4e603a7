"""How a plan reaches Ray: one pass, ObjectRef dependencies, num_returns, names, shared literals,
and no references left behind."""

from __future__ import annotations

import gc
import operator

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask._task_spec import Task, TaskRef

import daskray
from daskray import _ray
from daskray.worker import task_key


class Spy:
    """Records every Ray task daskray submits: (num_returns, name, spec, args)."""

    def __init__(self, monkeypatch):
        self.calls = []
        self.puts = 0
        real_remote = _ray._remote
        real_put = _ray.ray.put
        spy = self

        def remote(num_returns, name, remote_args):
            fn = real_remote(num_returns, name, remote_args)

            class Wrapped:
                def remote(self, spec, *args):
                    spy.calls.append((num_returns, name, spec, args))
                    return fn.remote(spec, *args)

            return Wrapped()

        def put(value, **kw):
            spy.puts += 1
            return real_put(value, **kw)

        monkeypatch.setattr(_ray, "_remote", remote)
        monkeypatch.setattr(_ray.ray, "put", put)


@pytest.fixture
def spy(monkeypatch, ray_ctx):
    return Spy(monkeypatch)


def test_dependencies_are_object_refs(spy, ray_ctx):
    """
    a   b        unfused: 3 Ray tasks, c receives a's and b's ObjectRefs
     \\ /
      c
    """
    dsk = {"a": (np.ones, 3), "b": (np.zeros, 3), "c": (np.add, "a", "b")}
    np.testing.assert_array_equal(daskray.get(dsk, "c", fuse=False), np.ones(3))
    assert len(spy.calls) == 3
    last = spy.calls[-1]
    assert [type(a) for a in last[3]] == [ray_ctx.ObjectRef, ray_ctx.ObjectRef]
    assert last[2][1] == ["a", "b"] and last[2][2] == ["c"]


def test_fusion_makes_few_ray_tasks(spy):
    x = da.ones(200_000, chunks=100).sum()  # ~2,700 dask tasks after dask's optimization
    assert x.compute(scheduler=daskray.get) == 200_000
    n_run = sum(len(spec[0]) for _, _, spec, _ in spy.calls)
    assert n_run > 2000
    assert 2 <= len(spy.calls) <= 40, len(spy.calls)


def test_task_names_carry_key_prefix(spy):
    x = (da.ones(100, chunks=10) + 1).sum()
    x.compute(scheduler=daskray.get, fuse=False)
    names = {c[1] for c in spy.calls}
    # dask's blockwise fusion names the chunk tasks after their last step (sum-partial)
    assert {"sum-partial", "sum-aggregate"} <= names, names
    with dask.config.set({"daskray.task-names": False}):
        spy.calls.clear()
        x.compute(scheduler=daskray.get)
        assert {c[1] for c in spy.calls} == {None}


def test_shared_literal_is_put_once(spy):
    """A DataNode used by many tasks in different Ray tasks travels once (ray.put)."""
    big = np.arange(100_000.0)
    dsk = {"big": big}
    for i in range(8):
        dsk[("part", i)] = (np.multiply, "big", i)
    dsk["total"] = (sum, [(np.sum, ("part", i)) for i in range(8)])
    assert daskray.get(dsk, "total", fuse=False) == big.sum() * 28
    assert spy.puts == 1
    for _, _, spec, _ in spy.calls:
        inlined = [t for t in spec[0] if getattr(t, "value", None) is big]
        assert not inlined, "literal inlined into a task spec"


def test_split_fanout_uses_num_returns(spy):
    """The tasks shuffle's split/getitem fan-out becomes one Ray task with several returns."""
    pdf = pd.DataFrame({"k": np.arange(400) % 13, "v": np.arange(400.0)})
    df = dd.from_pandas(pdf, npartitions=4).shuffle("k", shuffle_method="tasks")
    out = df.compute(scheduler=daskray.get)
    pd.testing.assert_frame_equal(
        out.sort_values("v"), pdf.sort_values("v"), check_index_type=False
    )
    multi = [c for c in spy.calls if c[0] > 2]  # the last return is the task's status
    assert multi, [c[0] for c in spy.calls]
    for num_returns, _, spec, _ in multi:  # one return per output, or per batch of them
        assert len(spec[2] if spec[4] is None else spec[4]) + 1 == num_returns


def test_outputs_read_by_the_same_groups_travel_as_one_object(spy):
    """A shuffle's map group sends the pieces that one reducer group reads as one batch (one
    Ray object), not one object per piece; the reducers unpack them."""
    pdf = pd.DataFrame({"k": np.arange(4000) % 97, "v": np.arange(4000.0)})
    df = dd.from_pandas(pdf, npartitions=16).shuffle("k", shuffle_method="tasks")
    with dask.config.set({"daskray.num-cpus": 2}):
        out = df.compute(scheduler=daskray.get)
    pd.testing.assert_frame_equal(
        out.sort_values("v"), pdf.sort_values("v"), check_index_type=False
    )
    batched_out = [spec for _, _, spec, _ in spy.calls if spec[4] is not None]
    batched_in = [spec for _, _, spec, _ in spy.calls if spec[3] is not None]
    assert batched_out and batched_in
    for spec in batched_out:  # every output key once, in batches of several
        flat = [p for w in spec[4] for p in ((w,) if type(w) is int else w)]
        assert sorted(flat) == list(range(len(spec[2])))
        assert any(type(w) is tuple and len(w) > 1 for w in spec[4])
    for spec in batched_in:  # fewer arguments than input keys
        flat = [p for w in spec[3] for p in ((w,) if type(w) is int else w)]
        assert sorted(flat) == list(range(len(spec[1])))
        assert len(spec[3]) < len(spec[1])
    pieces = sum(len(spec[2]) for spec in batched_out)
    returns = sum(len(spec[4]) for spec in batched_out)
    assert returns * 4 <= pieces, (returns, pieces)


def test_only_requested_keys_fetched_and_no_refs_left(ray_ctx):
    cw = ray_ctx._private.worker.global_worker.core_worker
    gc.collect()
    before = len(cw.get_all_reference_counts())
    x = da.random.default_rng(1).random((400, 400), chunks=100)
    y = (x @ x.T + 1).sum(axis=0)
    np.testing.assert_allclose(y.compute(scheduler=daskray.get), y.compute(scheduler="sync"))
    gc.collect()
    assert len(cw.get_all_reference_counts()) == before


def test_intermediate_refs_dropped_during_submission(spy, monkeypatch):
    """While submitting, the driver holds refs only until their last consumer is submitted."""
    held = []
    real_release = _ray._release

    def release(g, iptr, inputs, readers, refs, data, batched, target_set):
        real_release(g, iptr, inputs, readers, refs, data, batched, target_set)
        held.append(len(refs) + len(batched))

    monkeypatch.setattr(_ray, "_release", release)
    dsk = {("c", 0): 0}
    for i in range(1, 200):
        dsk[("c", i)] = (lambda v: v + 1, ("c", i - 1))
    assert daskray.get(dsk, ("c", 199), fuse=False) == 199
    assert max(held) <= 2


class Blocked(Task):
    """A task type that asks schedulers not to fuse it (dask's ``block_fusion``)."""

    @property
    def block_fusion(self) -> bool:
        return True


def test_block_fusion_node_runs_alone(spy):
    """
    c0 -> ... -> c19 -> [c20] -> c21 -> ... -> c39      c20 blocks fusion: it runs alone
    """
    dsk = {"c0": Task("c0", add1, 0)}
    for i in range(1, 40):
        cls = Blocked if i == 20 else Task
        dsk[f"c{i}"] = cls(f"c{i}", add1, TaskRef(f"c{i - 1}"))
    assert daskray.get(dsk, "c39") == 40
    groups = [[task_key(t) for t in spec[0]] for _, _, spec, _ in spy.calls]
    assert ["c20"] in groups, groups
    assert len(groups) < 20, groups  # the rest still fuses


def add1(x):
    return x + 1


def test_plain_tasks_travel_lowered_and_run_as_dask_runs_them(spy):
    """Plain Tasks reach the worker as tuples (no Task pickling); a task with keyword
    arguments, a nested node or a fused subgraph travels as it is; all of them give what
    dask's own scheduler gives, a literal that looks like a key included."""
    from dask._task_spec import Alias, DataNode, List

    dsk = {
        "a": Task("a", add1, 1),
        "b": Task("b", max, TaskRef("a"), 5, TaskRef("a")),  # one ref twice
        "c": Task("c", sorted, List(TaskRef("a"), TaskRef("b"), 0)),  # a nested node
        "d": Task("d", dict, x=TaskRef("b"), y=3),  # keyword arguments
        "e": DataNode("e", (1, 2)),
        "f": Task("f", operator.add, TaskRef("e"), ("a",)),  # ("a",) is data, not a ref
        "g": Alias("g", "f"),
        "h": Task("h", operator.add, TaskRef("g"), ()),  # no ref after a ref
        "i": Task("i", len, "abc"),  # no refs at all
    }
    keys = ["b", "c", "d", "f", "h", "i"]
    assert daskray.get(dsk, keys) == tuple(dask.get(dsk, keys))
    travelled = {task_key(t): t for _, _, spec, _ in spy.calls for t in spec[0]}
    assert travelled["b"][2:] == (("a", 5, "a"), (0, 2))
    assert travelled["f"][2:] == (("e", ("a",)), (0,))
    assert travelled["i"][2:] == (("abc",), ())
    assert type(travelled["a"]) is tuple and type(travelled["h"]) is tuple
    assert all(type(travelled[k]) is not tuple for k in travelled if k in "cdeg")


def test_fused_blockwise_tasks_travel_lowered(spy):
    """dask's blockwise-fused tasks (``_execute_subgraph``) travel as ``run_subgraph`` tuples
    with their inner tasks lowered (nested fused tasks too), and give dask's result."""
    from daskray.worker import run_subgraph

    x = da.arange(1600.0, chunks=100).reshape(40, 40).rechunk(10)
    y = ((x + 1) * 0.37).map_blocks(np.round, decimals=1) - x.T
    np.testing.assert_array_equal(y.compute(scheduler=daskray.get), y.compute(scheduler="sync"))
    travelled = [t for _, _, spec, _ in spy.calls for t in spec[0]]
    fused = [t for t in travelled if type(t) is tuple and t[1] is run_subgraph]
    assert fused
    inner = [n for t in fused for n in t[2][0].values()]
    assert any(type(n) is tuple for n in inner)


def test_a_lowered_task_names_its_key_when_it_fails(ray_ctx):
    dsk = {"a": Task("a", add1, 1), "b": Task("b", operator.truediv, TaskRef("a"), 0)}
    with pytest.raises(ZeroDivisionError) as info:
        daskray.get(dsk, "b")
    assert any("'b'" in note for note in getattr(info.value, "__notes__", ()))


def test_unfused_dataframe_graph_is_fused_by_daskray(ray_ctx):
    """dask-expr hands dask.compute an unfused graph (one task per partition and step);
    daskray's own fusion turns ~500 dask tasks into about groups-per-cpu x CPUs Ray tasks."""
    pdf = pd.DataFrame({"a": np.arange(10_000.0)})
    df = dd.from_pandas(pdf, npartitions=100)
    x = ((df.a + 1) * 2).sum()
    info = daskray.explain(x, cpus=2)
    assert len(info.plan.order) >= 400
    assert info.plan.ngroups <= 2 * 4 + 2, str(info)
    assert x.compute(scheduler=daskray.get) == ((pdf.a + 1) * 2).sum()
    unfused = daskray.explain(x, cpus=2, fuse=False)
    assert unfused.plan.ngroups == len(unfused.plan.order)


def test_dask_fused_subgraphs_run_without_dask_order(monkeypatch):
    """A task of dask's blockwise fusion (``Task.fuse``) runs its inner tasks in a walk from
    its output, with the same result as dask's own ``execute_graph`` (which orders the inner
    graph with dask.order at every call)."""
    import dask.order
    from dask._task_spec import DataNode

    from daskray.worker import run_group

    a = Task("a", operator.add, TaskRef("x"), 1)
    b = Task("b", operator.mul, TaskRef("a"), TaskRef("y"))
    c = Task("c", operator.sub, TaskRef("b"), TaskRef("a"))
    fused = Task.fuse(a, b, c, key="out")
    expected = fused({"x": 4, "y": 10})  # dask's way: ((4+1)*10) - 5
    # an input bound to a literal and one to a GraphNode, as dask.array's blockwise makes them
    bound = {"x": DataNode(None, 4), "y": TaskRef("y")}
    lit = Task("out2", fused.func, *fused.args[:3], *[bound[k] for k in fused.args[2]])
    assert lit({"y": 10}) == expected
    calls = []
    monkeypatch.setattr(dask.order, "order", lambda *a, **k: calls.append(1) or {})
    assert run_group(([fused], ["x", "y"], ["out"]), 4, 10) == expected == 45
    assert run_group(([lit], ["y"], ["out2"]), 10) == 45
    assert not calls


def test_dask_array_fused_chunks_through_daskray(ray_ctx):
    x = da.ones(40_000, chunks=1_000)
    y = ((x + 1) * 3 - x).sum()  # one fused subgraph per chunk
    assert y.compute(scheduler=daskray.get) == y.compute(scheduler="sync") == 40_000 * 5


def test_a_group_unpacks_and_packs_batches_as_its_layouts_say():
    """``(tasks, in_keys, out_keys, in_layout, out_layout)``: an argument that is a batch
    fills the keys its layout entry names, in that order; returns are laid out alike; the
    profile sizes one value per key, batches unpacked."""
    from daskray.worker import run_group, run_group_profiled, run_group_recorded

    tasks = [
        Task("s", operator.add, TaskRef("a"), TaskRef("c")),
        Task("d", operator.sub, TaskRef("b"), TaskRef("a")),
        Task("e", operator.mul, TaskRef("s"), 10),
    ]
    spec = (tasks, ["a", "b", "c"], ["s", "d", "e"], [(2, 0), 1], [(2, 0), 1])
    # the batch (c, a) = (100, 1), then b = 7: s = 101, d = 6, e = 1010
    assert run_group(spec, (100, 1), 7) == ((1010, 101), 6)
    assert run_group_recorded(spec, (100, 1), 7) == ((1010, 101), 6, None)
    *outs, profile, status = run_group_profiled(spec, (100, 1), 7)
    assert outs == [(1010, 101), 6] and status is None
    assert len(profile["in_bytes"]) == 3 and len(profile["out_bytes"]) == 3
    one = (tasks[:1], ["a", "c"], ["s"], [(0, 1)], [0])
    assert run_group(one, (2, 3)) == 5
