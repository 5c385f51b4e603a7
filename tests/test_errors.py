"""Bad input: a clear error naming the keys, raised before anything reaches Ray."""

from __future__ import annotations

from operator import add

import pytest
from dask._task_spec import Alias, Task, TaskRef

import daskray
from daskray import _ray


@pytest.fixture
def no_submit(monkeypatch, ray_ctx):
    """Fail the test if anything is submitted to Ray; yields the list of submissions."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("graph was submitted despite bad input")

    monkeypatch.setattr(_ray, "submit", spy)
    yield calls
    assert calls == []


def inc(x):
    return x + 1


def test_cycle(no_submit):
    """
    a -> b -> c -> a
    """
    dsk = {"a": (inc, "c"), "b": (inc, "a"), "c": (inc, "b"), "d": (inc, "a")}
    with pytest.raises(daskray.CycleError) as info:
        daskray.get(dsk, "d")
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    for k in "abc":
        assert f"'{k}'" in str(info.value)
    assert "Cycle detected" in str(info.value)


def test_self_cycle(no_submit):
    dsk = {"x": Task("x", inc, TaskRef("x"))}
    with pytest.raises(daskray.CycleError, match="'x'") as info:
        daskray.get(dsk, "x")
    assert info.value.cycle == ["x", "x"]


def test_missing_dependency(no_submit):
    dsk = {"y": Task("y", add, TaskRef("x"), 1), "z": Alias("z", "w"), "v": 1}
    with pytest.raises(daskray.MissingDependencyError) as info:
        daskray.get(dsk, ["y", "z"])
    msg = str(info.value)
    assert "Missing dependency 'x' for dependents ['y']" in msg
    assert info.value.key == "x" and info.value.dependents == ["y"]


def test_missing_requested_key_is_keyerror(no_submit):
    with pytest.raises(KeyError, match="Requested keys not in the graph: 'nope', \\('t', 1\\)"):
        daskray.get({"x": 1}, ["x", ["nope", ("t", 1)]])


def test_unhashable_requested_key(no_submit):
    with pytest.raises(daskray.InvalidKeyError, match="not hashable") as info:
        daskray.get({"x": 1}, [{"a": 1}])
    assert isinstance(info.value, TypeError)


def test_non_callable_task(no_submit):
    with pytest.raises(TypeError, match="Task 'y' has a non-callable function 5"):
        daskray.get({"x": 1, "y": Task("y", 5, TaskRef("x"))}, "y")


def test_not_a_graph(no_submit):
    with pytest.raises(TypeError, match="expects a task graph"):
        daskray.get([1, 2, 3], "x")


def test_cluster_usable_after_errors(ray_ctx):
    with pytest.raises(daskray.CycleError):
        daskray.get({"a": (inc, "b"), "b": (inc, "a")}, "a")
    assert daskray.get({"a": 1, "b": (inc, "a")}, "b") == 2


def test_task_error_names_key_and_keeps_type(ray_ctx):
    def fail(x):
        raise ZeroDivisionError("boom")

    dsk = {"a": 1, "b": (fail, "a"), "c": (inc, "b")}
    for fuse in (True, False):
        with pytest.raises(ZeroDivisionError) as info:
            daskray.get(dsk, "c", fuse=fuse)
        assert "boom" in str(info.value)
        assert "'b'" in str(info.value)
    with pytest.raises(ZeroDivisionError) as info:
        daskray.get_sync(dsk, "c")
    assert any("'b'" in n for n in info.value.__notes__)
