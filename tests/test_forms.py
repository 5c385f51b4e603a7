"""Every graph form dask hands a scheduler, fed to ``daskray.get(dsk, keys)`` directly.

Each case runs on Ray (fused and unfused) and in debug mode, and is checked against a
hand-computed answer and against dask's own synchronous scheduler (``dask.local.get_sync``).
"""

from __future__ import annotations

import sys
from operator import add, mul

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import ray.cloudpickle
from dask._expr import FinalizeCompute
from dask._task_spec import Alias, DataNode, Dict, List, Set, Task, TaskRef, Tuple
from dask.base import collections_to_expr
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph
from dask.local import get_sync as dask_get_sync

import daskray

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inc(x):
    return x + 1


def identity(x):
    return x


def combine(a, b=0, *, c=0):
    return (a, b, c)


def boom(*args):
    raise RuntimeError("this task must not run")


MODES = ["ray", "ray-unfused", "debug"]


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def get(request, mode):
    """``daskray.get`` in one mode: on Ray (fused / unfused) or in-process (debug)."""
    if mode == "debug":
        return daskray.get_sync
    request.getfixturevalue("ray_ctx")
    if mode == "ray-unfused":
        return lambda dsk, keys, **kw: daskray.get(dsk, keys, fuse=False, **kw)
    return daskray.get


def assert_same(actual, expected):
    """Deep equality that also checks container types (tuple vs list) and numpy arrays."""
    assert type(actual) is type(expected), (type(actual), type(expected), actual, expected)
    if isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), (actual, expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for k in expected:
            assert_same(actual[k], expected[k])
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected)
    else:
        assert actual == expected


def check(get, dsk, keys, expected):
    """``get(dsk, keys)`` equals ``expected``, and so does dask's own scheduler."""
    assert_same(dask_get_sync(dsk, keys), expected)  # the expectation is dask's semantics
    assert_same(get(dsk, keys), expected)


# --------------------------------------------------------------------------------------------
# legacy tuple form


LEGACY_CASES = {
    "chain": ({"x": 1, "y": (inc, "x"), "z": (add, "x", (inc, "y"))}, "z", 4),
    "nested-tasks": (
        {"x": 2, "y": (add, (inc, (inc, "x")), (mul, "x", (add, "x", 10)))},
        "y",
        4 + 2 * 12,
    ),
    "list-of-keys": ({"x": 1, "y": (inc, "x"), "s": (sum, ["x", "y", 5])}, "s", 1 + 2 + 5),
    "nested-lists": (
        {"x": 1, "y": (inc, "x"), "l": (identity, ["x", ["y", (inc, "y")], [[5]]])},
        "l",
        [1, [2, 3], [[5]]],
    ),
    "dict-from-pairs": (
        {"x": 1, "y": (inc, "x"), "d": (dict, [["a", "x"], ["b", "y"]])},
        "d",
        {"a": 1, "b": 2},
    ),
    # dask's legacy form does not look inside dict arguments: keys there stay literal strings
    "dict-arg": (
        {"x": 1, "y": (inc, "x"), "d": (identity, {"a": "x", "b": ["y", 3], "c": "nokey"})},
        "d",
        {"a": "x", "b": ["y", 3], "c": "nokey"},
    ),
    "kwargs-via-apply": (
        {
            "x": 1,
            "y": (inc, "x"),
            "z": (dask.utils.apply, combine, ["x"], (dict, [["b", "y"], ["c", 7]])),
        },
        "z",
        (1, 2, 7),
    ),
    "string-not-a-key": (
        {"x": "a", "y": (add, "x", "nokey"), "w": (str.upper, "hello")},
        ["y", "w"],
        ("anokey", "HELLO"),
    ),
    "diamond": (
        {"a": 1, "b": (inc, "a"), "c": (mul, "a", 10), "d": (add, "b", "c")},
        ["d", "b"],
        (12, 2),
    ),
}


@pytest.mark.parametrize("case", list(LEGACY_CASES))
def test_legacy_tuple_graphs(get, case):
    dsk, keys, expected = LEGACY_CASES[case]
    check(get, dsk, keys, expected)


def test_legacy_wide_fan_in(get):
    dsk = {("x", i): i for i in range(50)}
    dsk.update({("y", i): (inc, ("x", i)) for i in range(50)})
    dsk["total"] = (sum, [("y", i) for i in range(50)])
    check(get, dsk, "total", sum(range(1, 51)))


# --------------------------------------------------------------------------------------------
# dask._task_spec nodes


def test_task_with_kwargs(get):
    dsk = {
        "x": DataNode("x", 3),
        "y": DataNode("y", 4),
        "z": Task("z", combine, TaskRef("x"), b=TaskRef("y"), c=5),
    }
    check(get, dsk, "z", (3, 4, 5))


def test_task_refs_and_plain_values_mixed_with_legacy(get):
    dsk = {
        "x": 10,  # literal
        "y": (inc, "x"),  # legacy
        "z": Task("z", add, TaskRef("x"), TaskRef("y")),
        "w": Task("w", mul, TaskRef("z"), 2),
    }
    check(get, dsk, ["w", "z"], (42, 21))


def test_nested_task_in_args(get):
    dsk = {
        "x": DataNode("x", 1),
        "y": DataNode("y", 2),
        "z": Task("z", add, TaskRef("x"), Task("inner", mul, TaskRef("y"), 100)),
    }
    check(get, dsk, "z", 201)


@pytest.mark.parametrize(
    "container, func, expected",
    [
        (List, list, [3, 2, 4]),
        (Tuple, tuple, (3, 2, 4)),
        (Set, frozenset, frozenset({3, 2, 4})),
    ],
    ids=["List", "Tuple", "Set"],
)
def test_sequence_containers_as_task_args(get, container, func, expected):
    dsk = {
        "x": DataNode("x", 3),
        "y": Task("y", inc, TaskRef("x")),
        "c": Task("c", func, container(TaskRef("x"), 2, TaskRef("y"))),
    }
    check(get, dsk, "c", expected)


def test_dict_container_as_task_arg(get):
    dsk = {
        "x": DataNode("x", 3),
        "y": Task("y", inc, TaskRef("x")),
        "d": Task("d", identity, Dict(a=TaskRef("x"), b=List(TaskRef("y"), 1), c="lit")),
    }
    check(get, dsk, "d", {"a": 3, "b": [4, 1], "c": "lit"})


def test_nested_containers_as_task_args(get):
    dsk = {
        "x": DataNode("x", 1),
        "y": Task("y", inc, TaskRef("x")),
        "n": Task(
            "n",
            identity,
            List(Dict(k=Tuple(TaskRef("x"), TaskRef("y"))), List(List(TaskRef("y")))),
        ),
    }
    check(get, dsk, "n", [{"k": (1, 2)}, [[2]]])


def test_alias_as_target_and_dependency(get):
    dsk = {
        "x": DataNode("x", 5),
        "a": Alias("a", "x"),
        "b": Alias("b", "a"),  # alias of an alias
        "t": Task("t", inc, TaskRef("b")),
        "u": Alias("u", "t"),  # alias of a task
    }
    check(get, dsk, ["a", "b", "t", "u"], (5, 5, 6, 6))


def test_alias_to_literal_and_task_fused_chain(get):
    dsk = {"x": 1}
    prev = "x"
    for i in range(10):
        dsk[f"t{i}"] = Task(f"t{i}", inc, TaskRef(prev))
        dsk[f"a{i}"] = Alias(f"a{i}", f"t{i}")
        prev = f"a{i}"
    check(get, dsk, [prev, "t0"], (11, 2))


def test_datanode_values(get):
    arr = np.arange(6).reshape(2, 3)
    dsk = {
        "arr": DataNode("arr", arr),
        "lst": DataNode("lst", [1, "x", 3]),  # "x" inside a DataNode is never a reference
        "x": DataNode("x", 99),
        "s": Task("s", np.sum, TaskRef("arr")),
    }
    check(get, dsk, ["s", "lst", "arr"], (np.int64(15), [1, "x", 3], arr))


# Nodes whose own ``.key`` differs from the key they are stored under in the graph: results
# are keyed by the mapping key, as with dask's own scheduler.


@pytest.mark.parametrize(
    "dsk, keys, expected",
    [
        pytest.param(
            {"x": DataNode("x", 3), "l": List(TaskRef("x"), 2)},
            "l",
            [3, 2],
            id="List-top-level",
        ),
        pytest.param(
            {"x": DataNode("x", 3), "d": Dict(a=TaskRef("x"))},
            "d",
            {"a": 3},
            id="Dict-top-level",
        ),
        pytest.param(
            {"x": 1, "l": List(TaskRef("x"), 2), "m": (len, "l")},
            "m",
            2,
            id="List-top-level-as-dependency",
        ),
        pytest.param(
            {"x": 1, "a": Task("q", inc, TaskRef("x"))},
            "a",
            2,
            id="Task-own-key-differs",
        ),
    ],
)
def test_node_key_differs_from_graph_key(get, dsk, keys, expected):
    check(get, dsk, keys, expected)


@pytest.mark.parametrize(
    "node", [Alias("x"), DataNode(None, 1)], ids=["Alias-own-key-x", "DataNode-key-None"]
)
def test_lone_node_key_differs_from_graph_key(get, mode, node):
    """``{"a": Alias("x")}`` / ``{"a": DataNode(None, 1)}`` at the head of a chain, alone in
    its group (unfused) or inside a fused group: either way its value is "a"'s."""
    dsk = {"x": 1, "a": node}
    prev = "a"
    for i in range(40):
        dsk[f"t{i}"] = (inc, prev)
        prev = f"t{i}"
    check(get, dsk, [prev, "a"], (41, 1))


# --------------------------------------------------------------------------------------------
# HighLevelGraph and dask-expr expressions


def test_highlevelgraph_of_layers(get):
    hlg = HighLevelGraph(
        {"a": {"x": 1, "y": (inc, "x")}, "b": {"z": (add, "y", 10)}},
        {"a": set(), "b": {"a"}},
    )
    check(get, hlg, ["z", "y"], (12, 2))


def test_array_highlevelgraph_with_nested_keys(get):
    x = (da.arange(16, chunks=4).reshape(4, 4) + 1).rechunk(2)
    graph = x.__dask_graph__()
    assert isinstance(graph, HighLevelGraph)
    keys = x.__dask_keys__()  # [[(name, 0, 0), (name, 0, 1)], [(name, 1, 0), (name, 1, 1)]]
    full = np.arange(1, 17).reshape(4, 4)
    expected = tuple(
        tuple(full[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] for j in range(2)) for i in range(2)
    )
    check(get, graph, keys, expected)


def test_finalize_compute_expression(get):
    """Exactly what ``dask.compute`` hands the scheduler: ``FinalizeCompute(expr).optimize()``."""
    x = da.arange(24, chunks=5).reshape(4, 6).rechunk(3)
    y = (x * 2).sum(axis=0)
    expr = FinalizeCompute(collections_to_expr([x, y], True)).optimize()
    assert not isinstance(expr, dict) and hasattr(expr, "__dask_graph__")
    keys = list(flatten(expr.__dask_keys__()))
    assert len(keys) == 2
    full = np.arange(24).reshape(4, 6)
    expected = (full, (full * 2).sum(axis=0))
    check(get, expr, keys, expected)


def test_dataframe_expression_object(get):
    pdf = pd.DataFrame({"a": range(10), "b": list("abcdefghij")})
    df = dd.from_pandas(pdf, npartitions=3)
    keys = df.__dask_keys__()
    assert len(keys) == 3
    parts = get(df.expr, keys)
    assert isinstance(parts, tuple) and len(parts) == 3
    pd.testing.assert_frame_equal(pd.concat(parts), df.compute(scheduler="sync"))
    assert parts[0]["a"].tolist() == [0, 1, 2, 3]
    ref = dask_get_sync(df.expr, keys)
    for p, r in zip(parts, ref):
        pd.testing.assert_frame_equal(p, r)


def test_dataframe_graph_mapping(get):
    pdf = pd.DataFrame({"a": range(10)})
    df = dd.from_pandas(pdf, npartitions=2)
    df = df[df.a % 2 == 0].a + 1
    parts = get(df.__dask_graph__(), df.__dask_keys__())
    pd.testing.assert_series_equal(pd.concat(parts), pdf.a[pdf.a % 2 == 0] + 1)


def test_dask_compute_passes_an_expression(get):
    """``dask.compute`` calls the scheduler with an expression object, not a Mapping."""
    seen = []

    def spy(dsk, keys, **kwargs):
        seen.append((type(dsk), keys))
        return get(dsk, keys, **kwargs)

    x = da.ones((6, 6), chunks=3)
    (total,) = dask.compute(x.sum(), scheduler=spy)
    assert total == 36
    assert len(seen) == 1
    typ, keys = seen[0]
    assert hasattr(typ, "__dask_graph__") and not issubclass(typ, dict)
    assert isinstance(keys, list)


# --------------------------------------------------------------------------------------------
# literal values, key types


def test_literal_values(get):
    arr = np.arange(5.0)
    dsk = {
        "i": 7,
        "l": [1, 2, [3]],
        "a": arr,
        "d": {"k": 1, "j": [2]},
        "s": "just a string",
        "n": None,
        "f": 2.5,
    }
    keys = ["i", "l", "a", "d", "s", "n", "f"]
    check(get, dsk, keys, (7, [1, 2, [3]], arr, {"k": 1, "j": [2]}, "just a string", None, 2.5))


def test_literal_numpy_array_shared_by_many_tasks(get):
    arr = np.arange(100)
    dsk = {"arr": arr}
    dsk.update({("p", i): (mul, "arr", i) for i in range(8)})
    dsk["total"] = (sum, [(np.sum, ("p", i)) for i in range(8)])
    check(get, dsk, "total", np.int64(arr.sum() * sum(range(8))))


def test_string_value_that_is_not_a_key(get):
    dsk = {"x": "y", "y2": "x", "z": (str.upper, "nokey"), "w": (add, "x", "!")}
    # "x" is a literal string "y"; "y2" refers to key "x" (a bare key is an alias)
    check(get, dsk, ["x", "y2", "z", "w"], ("y", "y", "NOKEY", "y!"))


def test_tuple_keys(get):
    arr = np.arange(6).reshape(2, 3)
    dsk = {
        ("x", 0, 1): arr,
        ("y", 0): (np.sum, ("x", 0, 1)),
        ("z",): (inc, ("y", 0)),
        ("w", ("n", 1)): (add, ("z",), ("y", 0)),
    }
    check(
        get,
        dsk,
        [("w", ("n", 1)), ("y", 0), ("x", 0, 1)],
        (np.int64(31), np.int64(15), arr),
    )


def test_int_and_float_keys(get):
    dsk = {1: 5, 2: (inc, 1), 2.5: (mul, 2, 10)}
    check(get, dsk, [2.5, 2, 1], (60, 6, 5))


def test_bytes_keys(get):
    # legacy tuples do not resolve bytes arguments (dask leaves them literal); TaskRef does
    dsk = {b"a": 5, b"b": Task(b"b", inc, TaskRef(b"a")), "c": (len, b"a")}
    check(get, dsk, [b"b", b"a", "c"], (6, 5, 1))


# --------------------------------------------------------------------------------------------
# the shape of ``keys``

GRAPH = {"x": 1, "y": (inc, "x"), "z": (add, "y", 10)}


@pytest.mark.parametrize(
    "keys, expected",
    [
        ("z", 12),
        (["z"], (12,)),
        (["x", "y", "z"], (1, 2, 12)),
        ([["x"], ["y", ["z"]]], ((1,), (2, (12,)))),
        (["z", "z", ["z"]], (12, 12, (12,))),
        ([[]], ((),)),
        ([[], ["y"], []], ((), (2,), ())),
    ],
    ids=["single", "one-list", "flat", "nested", "duplicates", "nested-empty", "mixed-empty"],
)
def test_keys_nesting(get, keys, expected):
    check(get, GRAPH, keys, expected)


def test_empty_keys_submit_nothing(get, monkeypatch):
    from daskray import _ray

    calls = []
    monkeypatch.setattr(_ray, "submit", lambda *a, **k: calls.append(a) or [])
    dsk = {"x": 1, "bad": (boom, "x")}
    assert get(dsk, []) == ()
    assert calls == []


def test_keys_subset_culls_unneeded_tasks(get):
    dsk = {"x": 1, "y": (inc, "x"), "bad": (boom, "y")}
    check(get, dsk, ["y"], (2,))


def test_requested_key_missing_raises(get):
    with pytest.raises(KeyError, match="nokey"):
        get({"x": 1}, ["x", "nokey"])


def test_not_a_graph_raises(get):
    with pytest.raises(TypeError, match="task graph"):
        get(42, "x")
