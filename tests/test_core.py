"""Tests of the graph core: interning, ordering, culling, cycles and fusion into groups.

In the style of dask's ``dask/tests/test_order.py``: every hand-made graph is drawn in its
test's docstring, and tests check the plan's *invariants* (:func:`check_plan`) rather than one
incidental order. Arrows point from a task to the tasks that depend on it (data flow), so
``a ─> b`` means "b depends on a".

Most tests take the ``core`` fixture (``tests/conftest.py``) and so run on both the compiled
core ``daskray._graph._core`` and its pure-Python twin ``daskray._graph._pure``. The parity tests
at the end import both modules directly and feed them the same random graphs (hypothesis); the
compiled side is skipped only when ``DASKRAY_NO_EXTENSIONS`` selects the twin.
"""

from __future__ import annotations

from array import array
from dataclasses import replace
from itertools import pairwise

import pytest
from daskray._graph import NO_EXTENSIONS, _pure
from daskray._graph._common import (
    BLOCK_FUSION,
    PACK_ALONE,
    PASS_THROUGH,
    CycleError,
    GraphError,
    InvalidKeyError,
    MissingDependencyError,
    Plan,
    PlanOptions,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if NO_EXTENSIONS:
    _core = None
else:
    from daskray._graph import _core

needs_core = pytest.mark.skipif(
    _core is None, reason="compiled core deselected by DASKRAY_NO_EXTENSIONS"
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def build(core, graph: dict, targets=None):
    """Intern ``{key: deps}`` with ``core``; returns ``names, index, indptr, indices, tids``.

    ``targets`` (keys) defaults to every key.
    """
    names = list(graph)
    index, indptr, indices = core.intern(names, [graph[k] for k in names])
    tids = [index[k] for k in (names if targets is None else targets)]
    return names, index, indptr, indices, tids


def deps_of(indptr, indices, v):
    return list(indices[indptr[v] : indptr[v + 1]])


def groups(plan: Plan) -> list[list]:
    """The members of every group, as lists of node ids."""
    return [list(plan.group(g)[0]) for g in range(plan.ngroups)]


def check_plan(plan: Plan, indptr, indices, targets, *, classes=None, flags=None):
    """Assert every invariant of ``plan`` for the graph ``indptr``/``indices`` and ``targets``.

    ``classes``/``flags``, when given, also check that a group never mixes fusion classes and
    that a ``BLOCK_FUSION`` node is alone in its group.
    """
    n = len(plan.names)
    assert len(indptr) == n + 1
    for a in (
        plan.order,
        plan.group_of,
        plan.members_ptr,
        plan.members,
        plan.inputs_ptr,
        plan.inputs,
        plan.outputs_ptr,
        plan.outputs,
    ):
        assert isinstance(a, array) and a.typecode == "q"
    deps = [deps_of(indptr, indices, v) for v in range(n)]
    targets = list(targets)
    tset = set(targets)

    # the nodes the targets need, computed independently (iteratively)
    needed = set()
    stack = list(tset)
    while stack:
        v = stack.pop()
        if v in needed:
            continue
        needed.add(v)
        stack.extend(deps[v])

    # order: a topological order of exactly the needed nodes, each once
    order = list(plan.order)
    assert len(order) == len(set(order)), "a node appears twice in order"
    assert set(order) == needed, "order is not exactly the nodes the targets need"
    pos = {v: i for i, v in enumerate(order)}
    for v in order:
        for d in deps[v]:
            assert pos[d] < pos[v], f"{plan.names[v]!r} ordered before its dependency"

    # group_of: -1 exactly for culled nodes
    ng = plan.ngroups
    assert len(plan.group_of) == n
    for v in range(n):
        if v in needed:
            assert 0 <= plan.group_of[v] < ng
        else:
            assert plan.group_of[v] == -1, f"culled node {plan.names[v]!r} is in a group"

    # members CSR: every needed node in exactly one group, groups non-empty, members in order
    for ptr, flat in (
        (plan.members_ptr, plan.members),
        (plan.inputs_ptr, plan.inputs),
        (plan.outputs_ptr, plan.outputs),
    ):
        assert len(ptr) == ng + 1 and ptr[0] == 0 and ptr[ng] == len(flat)
        assert all(ptr[g] <= ptr[g + 1] for g in range(ng))
    assert sorted(plan.members) == sorted(order)
    dependents = {v: [] for v in needed}
    for v in needed:
        for d in deps[v]:
            dependents[d].append(v)
    for g in range(ng):
        members, inputs, outputs = (list(a) for a in plan.group(g))
        assert members, f"group {g} is empty"
        assert all(plan.group_of[v] == g for v in members)
        assert [pos[v] for v in members] == sorted(pos[v] for v in members), (
            f"members of group {g} are not in order's order"
        )
        mset = set(members)
        # inputs: exactly the external dependencies, no repeats, all from earlier groups
        external = {d for v in members for d in deps[v] if d not in mset}
        assert len(inputs) == len(set(inputs)), f"group {g} lists an input twice"
        assert set(inputs) == external, f"group {g} inputs are not its external dependencies"
        for d in inputs:
            assert plan.group_of[d] < g, f"group {g} needs later group {plan.group_of[d]}"
        # outputs: exactly the members that are targets or feed another group
        expected = {
            v for v in members if v in tset or any(plan.group_of[u] != g for u in dependents[v])
        }
        assert len(outputs) == len(set(outputs)), f"group {g} lists an output twice"
        assert set(outputs) == expected, f"group {g} outputs are wrong"
        assert outputs, f"group {g} has no output"
        if classes is not None:
            assert len({classes[v] for v in members}) == 1, f"group {g} mixes classes"
        if flags is not None and len(members) > 1:
            for v in members:
                assert not flags[v] & BLOCK_FUSION, f"blocked {plan.names[v]!r} is not alone"


def default_weights(indptr):
    """The core's default cost of a node: 1 + its number of dependencies."""
    return [1 + indptr[i + 1] - indptr[i] for i in range(len(indptr) - 1)]


def check_group_weights(plan: Plan, weights, group_weight, bundle_weight=0):
    """A group of several nodes weighs at most about twice the larger target weight."""
    bound = 2 * max(group_weight, bundle_weight) + 2 * max(weights, default=0)
    for g in range(plan.ngroups):
        members = plan.group(g)[0]
        if len(members) > 1:
            assert sum(weights[v] for v in members) <= bound, f"group {g} is too heavy"


def chain(n, prefix="a"):
    """``{a0: (), a1: (a0,), ...}``."""
    return {f"{prefix}{i}": (() if i == 0 else (f"{prefix}{i - 1}",)) for i in range(n)}


def _csr(rows):
    ptr, flat = array("q", [0]), array("q")
    for r in rows:
        flat.extend(r)
        ptr.append(len(flat))
    return ptr, flat


def _rebuild(plan, members=None, inputs=None, outputs=None, **fields):
    """A copy of ``plan`` with some fields replaced; members/inputs/outputs as lists of rows."""
    rows = [[list(a) for a in plan.group(g)] for g in range(plan.ngroups)]
    members = [r[0] for r in rows] if members is None else members
    inputs = [r[1] for r in rows] if inputs is None else inputs
    outputs = [r[2] for r in rows] if outputs is None else outputs
    kw = dict(zip(Plan.__slots__, plan._fields(), strict=True))
    kw["members_ptr"], kw["members"] = _csr(members)
    kw["inputs_ptr"], kw["inputs"] = _csr(inputs)
    kw["outputs_ptr"], kw["outputs"] = _csr(outputs)
    kw["ngroups"] = len(members)
    kw.update(fields)
    return Plan(**kw)


def test_check_plan_catches_broken_plans():
    """check_plan itself can fail: it rejects hand-broken copies of a valid plan.

    a0 ─> a1 ─> a2* ─> a3 ─> a4 ─> a5*      (targets a2, a5; x is culled)
    └──> x
    """
    graph = dict(chain(6))
    graph["x"] = ("a0",)
    names, index, indptr, indices, tids = build(_pure, graph, ["a5", "a2"])
    p = _pure.plan(names, indptr, indices, tids, PlanOptions(group_weight=1))
    check_plan(p, indptr, indices, tids)
    assert _rebuild(p) == p  # the helper rebuilds faithfully
    members = [list(p.group(g)[0]) for g in range(p.ngroups)]
    inputs = [list(p.group(g)[1]) for g in range(p.ngroups)]
    outputs = [list(p.group(g)[2]) for g in range(p.ngroups)]
    swapped = array("q", p.order)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    culled_in = array("q", p.group_of)
    culled_in[index["x"]] = 0
    rev = {g: p.ngroups - 1 - g for g in range(p.ngroups)}
    reversed_gof = array("q", [rev.get(g, -1) for g in p.group_of])
    broken = [
        _rebuild(p, order=swapped),  # a dependency after its dependent
        _rebuild(p, order=p.order[:-1]),  # a needed node missing from order
        _rebuild(p, order=p.order + array("q", [index["x"]])),  # a culled node in order
        _rebuild(p, group_of=culled_in),  # a culled node in a group
        _rebuild(p, inputs=[[]] + [[]] + inputs[2:]),  # a missing input
        _rebuild(p, inputs=inputs[:1] + [inputs[1] * 2] + inputs[2:]),  # an input twice
        _rebuild(p, outputs=outputs[:3] + [[]] + outputs[4:]),  # a group without output
        _rebuild(  # groups numbered against the data flow
            p,
            members=members[::-1],
            inputs=inputs[::-1],
            outputs=outputs[::-1],
            group_of=reversed_gof,
        ),
    ]
    q = _pure.plan(names, indptr, indices, tids, PlanOptions(weights=[1] * 7, group_weight=100))
    check_plan(q, indptr, indices, tids)
    assert q.ngroups == 1
    (qm,) = [list(q.group(0)[0])]
    broken += [
        _rebuild(q, members=[qm[::-1]]),  # members out of order
        _rebuild(q, outputs=[[index["a5"]]]),  # the inner target a2 not an output
        _rebuild(q, outputs=[[index["a1"], index["a2"], index["a5"]]]),  # a needless output
        _rebuild(  # split in two, the second group missing its input a2
            q,
            members=[qm[:3], qm[3:]],
            inputs=[[], []],
            outputs=[[2], [5]],
            group_of=array("q", [0, 0, 0, 1, 1, 1, -1]),
        ),
    ]
    for b in broken:
        with pytest.raises(AssertionError):
            check_plan(b, indptr, indices, tids)
    with pytest.raises(AssertionError):  # classes mixed in one group
        check_plan(q, indptr, indices, tids, classes=[0, 0, 0, 1, 1, 1, 0])
    with pytest.raises(AssertionError):  # a blocked inner node in a group of several
        check_plan(q, indptr, indices, tids, flags=[0, 0, 0, BLOCK_FUSION, 0, 0, 0])


# --------------------------------------------------------------------------------------------
# intern
# --------------------------------------------------------------------------------------------


def test_intern_small(core):
    """
    x ─> y ─> z
    └─────────^
    """
    index, indptr, indices = core.intern(["x", "y", "z"], [(), ["x"], ("y", "x")])
    assert index == {"x": 0, "y": 1, "z": 2}
    assert isinstance(indptr, array) and indptr.typecode == "q"
    assert isinstance(indices, array) and indices.typecode == "q"
    assert list(indptr) == [0, 0, 1, 3]
    assert list(indices) == [0, 0, 1]


def test_intern_deps_sorted_and_collapsed(core):
    """Rows are sorted by id without repeats, whatever the order or container of the deps.

    a  b  c  d
    └──┴──┴──┴─> e     e lists d, a, c, a, b, d (and a set of them for f)
    """
    names = ["a", "b", "c", "d", "e", "f", "g"]
    deps = [
        (),
        (),
        (),
        (),
        ["d", "a", "c", "a", "b", "d"],
        {"c", "a", "d"},
        iter(["b", "b", "b"]),
    ]
    index, indptr, indices = core.intern(names, deps)
    assert deps_of(indptr, indices, 4) == [0, 1, 2, 3]
    assert deps_of(indptr, indices, 5) == [0, 2, 3]
    assert deps_of(indptr, indices, 6) == [1]
    assert list(indptr) == [0, 0, 0, 0, 0, 4, 7, 8]


def test_intern_mixed_keys(core):
    """Tuple, str, bytes and int keys intern alike; ``('x', 1)`` and ``'x'`` differ."""
    names = [("x", 0), ("x", 1), "x", b"x", 7, ("x", 1, 2)]
    deps = [(), [("x", 0)], [("x", 1), ("x", 0)], ["x"], [b"x", ("x", 0)], [7]]
    index, indptr, indices = core.intern(names, deps)
    assert index == {k: i for i, k in enumerate(names)}
    assert [deps_of(indptr, indices, i) for i in range(6)] == [[], [0], [0, 1], [2], [0, 3], [4]]


def test_intern_source_reuses_hashes_with_the_same_result(core):
    """``source`` (the dict the names came from) changes nothing in the result; a dict whose
    keys are not ``names`` in order is ignored. Dependencies as frozensets (what dask's
    ``GraphNode.dependencies`` are) and missing keys in them are handled alike."""
    graph = {
        ("a", i): frozenset() if i < 3 else frozenset({("a", i - 1), ("a", i - 3)})
        for i in range(50)
    }
    names = list(graph)
    deps = list(graph.values())
    plain = core.intern(names, deps)
    for source in (graph, dict(reversed(graph.items())), {"other": 1}, None):
        got = core.intern(names, deps, source)
        assert got[0] == plain[0] and list(got[1]) == list(plain[1])
        assert list(got[2]) == list(plain[2])
    with pytest.raises(MissingDependencyError) as info:
        core.intern(["b", "c"], [frozenset(), frozenset({"b", "zz"})], {"b": 0, "c": 1})
    assert info.value.key == "zz" and info.value.dependents == ["c"]


def test_intern_length_mismatch(core):
    with pytest.raises(ValueError, match="names and deps differ in length: 2 != 1"):
        core.intern(["a", "b"], [()])


def test_missing_dependency(core):
    """
    a ─> b <─ c?      c is not a key
    """
    with pytest.raises(MissingDependencyError) as info:
        core.intern(["a", "b"], [(), ("a", "c")])
    e = info.value
    assert isinstance(e, GraphError) and isinstance(e, ValueError)
    assert e.key == "c"
    assert e.dependents == ["b"]
    assert str(e).startswith("Missing dependency 'c' for dependents ['b']. ")


@pytest.mark.parametrize("ndependents", [1, 10, 11, 13])
def test_missing_dependency_lists_at_most_ten(core, ndependents):
    """
    d0 d1 ... dN       all depend on the missing ('m', 0)
    """
    names = [f"d{i}" for i in range(ndependents)]
    with pytest.raises(MissingDependencyError) as info:
        core.intern(names, [[("m", 0)]] * ndependents)
    e = info.value
    assert e.key == ("m", 0)
    assert e.dependents == names  # the attribute keeps all of them
    shown = ", ".join(repr(k) for k in names[:10])
    if ndependents > 10:
        shown += f", ... and {ndependents - 10} more"
    assert str(e).startswith(f"Missing dependency ('m', 0) for dependents [{shown}]. ")
    assert "d10" not in str(e)


def test_missing_dependency_first_missing_key_is_reported(core):
    """Of several missing keys, the one met first (in ``names`` order) is reported, with all of
    its dependents, even those after a dependent of another missing key."""
    names = ["a", "b", "c", "d"]
    deps = [(), ("x",), ("y", "a"), ("x", "y")]
    with pytest.raises(MissingDependencyError) as info:
        core.intern(names, deps)
    assert info.value.key == "x"
    assert info.value.dependents == ["b", "d"]


def test_missing_dependency_dependent_listed_once(core):
    """
    c? ═> b         b lists the missing c twice (dependencies are collapsed elsewhere)
    """
    with pytest.raises(MissingDependencyError) as info:
        core.intern(["b"], [("c", "c")])
    assert info.value.dependents == ["b"]
    assert "['b']" in str(info.value)


@pytest.mark.parametrize("bad", [["b"], ("x", ["y"]), {"k": 1}])
def test_unhashable_name(core, bad):
    with pytest.raises(InvalidKeyError) as info:
        core.intern(["a", bad], [(), ("a",)])
    assert isinstance(info.value, TypeError) and isinstance(info.value, GraphError)
    assert info.value.key == bad
    assert str(info.value).startswith(f"Invalid key {bad!r}: it is not hashable. ")


@pytest.mark.parametrize("bad", [["a"], ("x", ["y"])])
def test_unhashable_dependency(core, bad):
    """
    a ─> b <─ [a]      b names an unhashable dependency
    """
    with pytest.raises(InvalidKeyError) as info:
        core.intern(["a", "b"], [(), ("a", bad)])
    assert isinstance(info.value, TypeError)
    assert info.value.key == bad
    assert str(info.value).startswith(
        f"Invalid key {bad!r}: it is not hashable (a dependency of 'b'). "
    )


# --------------------------------------------------------------------------------------------
# plan: order, culling, cycles
# --------------------------------------------------------------------------------------------


def test_empty(core):
    names, _, indptr, indices, _ = build(core, {})
    p = core.plan(names, indptr, indices, [], PlanOptions(group_weight=10))
    assert p.ngroups == 0 and len(p.order) == 0
    check_plan(p, indptr, indices, [])


def test_no_targets_culls_everything(core):
    names, _, indptr, indices, _ = build(core, chain(5))
    p = core.plan(names, indptr, indices, [], PlanOptions(group_weight=10))
    assert p.ngroups == 0 and len(p.order) == 0
    assert list(p.group_of) == [-1] * 5
    check_plan(p, indptr, indices, [])


@pytest.mark.parametrize("group_weight", [1, 2, 10])
def test_culling(core, group_weight):
    """
    a ─> b ─> c        target: c
    │
    └──> x ─> y        x, y, z are not needed (x depends on a, but nothing needed
         z ──^         depends on x): culled, and a is not an output on x's account
    """
    graph = {"a": (), "b": ("a",), "c": ("b",), "x": ("a",), "z": (), "y": ("x", "z")}
    names, index, indptr, indices, tids = build(core, graph, ["c"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=group_weight))
    check_plan(p, indptr, indices, tids)
    assert {names[v] for v in p.order} == {"a", "b", "c"}
    for k in "xyz":
        assert p.group_of[index[k]] == -1
    if group_weight >= 3:  # the chain fuses, and x (culled) must not make a an output
        assert p.ngroups == 1
        assert list(p.outputs) == [index["c"]]


@pytest.mark.parametrize("group_weight", [1, 2, 3, 10])
def test_diamond(core, group_weight):
    """
        a
       / \\
      b   c
       \\ /
        d
    """
    graph = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    names, index, indptr, indices, tids = build(core, graph, ["d"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=group_weight))
    check_plan(p, indptr, indices, tids)
    assert p.order[0] == index["a"] and p.order[-1] == index["d"]
    if group_weight == 1:
        assert p.ngroups == 4
        d_members, d_inputs, d_outputs = p.group(p.group_of[index["d"]])
        assert sorted(d_inputs) == [index["b"], index["c"]]
        assert list(d_outputs) == [index["d"]]


def test_diamond_both_middles_targets(core):
    """
        a
       / \\
      b*  c*       * targets, along with d
       \\ /
        d*
    """
    graph = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    names, index, indptr, indices, tids = build(core, graph, ["b", "d", "c"])
    for gw in (1, 10):
        p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=gw))
        check_plan(p, indptr, indices, tids)
        outs = {names[v] for v in p.outputs}
        assert {"b", "c", "d"} <= outs


def test_chain_no_fusion(core):
    """
    a0 ─> a1 ─> ... ─> a19      group_weight 1: one group per node, in chain order
    """
    names, index, indptr, indices, tids = build(core, chain(20), ["a19"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=1))
    check_plan(p, indptr, indices, tids)
    assert list(p.order) == list(range(20))
    assert p.ngroups == 20
    for g in range(20):
        members, inputs, outputs = p.group(g)
        assert list(members) == [g] and list(outputs) == [g]
        assert list(inputs) == ([] if g == 0 else [g - 1])


def test_chain_fused(core):
    """
    a0 ─> a1 ─> ... ─> a19      group_weight 100: one group, one output
    """
    names, index, indptr, indices, tids = build(core, chain(20), ["a19"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100))
    check_plan(p, indptr, indices, tids)
    assert p.ngroups == 1
    assert list(p.group(0)[0]) == list(range(20))
    assert len(p.inputs) == 0 and list(p.outputs) == [19]


def test_chain_with_inner_target(core):
    """
    a0 ─> ... ─> a7* ─> ... ─> a19*     an inner target is an output of its group
    """
    names, index, indptr, indices, tids = build(core, chain(20), ["a19", "a7"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100))
    check_plan(p, indptr, indices, tids)
    assert index["a7"] in p.outputs and index["a19"] in p.outputs


def test_chain_ids_reversed(core):
    """The same chain with ids running against the data flow: order follows the deps.

    a19 ─> a18 ─> ... ─> a0     (node 0 depends on node 1, ...)
    """
    graph = {f"a{i}": (() if i == 19 else (f"a{i + 1}",)) for i in range(20)}
    names, index, indptr, indices, tids = build(core, graph, ["a0"])
    for gw in (1, 7, 100):
        p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=gw))
        check_plan(p, indptr, indices, tids)
        assert list(p.order) == list(range(19, -1, -1))


def test_self_dependency(core):
    """
    a ─┐
    ^──┘
    """
    names, index, indptr, indices, tids = build(core, {"a": ("a",)})
    with pytest.raises(CycleError) as info:
        core.plan(names, indptr, indices, tids)
    assert isinstance(info.value, GraphError) and isinstance(info.value, ValueError)
    assert info.value.cycle == ["a", "a"]
    assert "  -> 'a'\n  -> 'a'\n" in str(info.value)


def test_three_cycle(core):
    """
    ┌─> a ─> b ─> c ─┐
    └────────────────┘ ─> x (target)
    """
    graph = {"x": ("c",), "a": ("c",), "b": ("a",), "c": ("b",), "y": ()}
    names, index, indptr, indices, tids = build(core, graph, ["y", "x"])
    with pytest.raises(CycleError) as info:
        core.plan(names, indptr, indices, tids, PlanOptions(group_weight=10))
    cyc = info.value.cycle
    assert len(cyc) == 4 and cyc[0] == cyc[-1]
    assert set(cyc) == {"a", "b", "c"}
    for k, dep in pairwise(cyc):  # each key depends on the next
        assert dep in graph[k]
    msg = str(info.value)
    assert msg.startswith("Cycle detected between the following keys:\n")
    for k in cyc:
        assert f"  -> {k!r}" in msg


def test_cycle_not_needed_is_culled(core):
    """A cycle that no target needs is culled, not reported.

    a ─> b ─┐     target: t
    ^───────┘
    s ─> t
    """
    graph = {"a": ("b",), "b": ("a",), "s": (), "t": ("s",)}
    names, index, indptr, indices, tids = build(core, graph, ["t"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=10))
    check_plan(p, indptr, indices, tids)
    assert p.group_of[index["a"]] == p.group_of[index["b"]] == -1
    with pytest.raises(CycleError):
        core.plan(names, indptr, indices, [index["t"], index["b"]])


def test_plan_argument_errors(core):
    names, index, indptr, indices, tids = build(core, chain(3))
    with pytest.raises(IndexError, match="target id 3 out of range for 3 nodes"):
        core.plan(names, indptr, indices, [3])
    with pytest.raises(IndexError, match="target id -1 out of range for 3 nodes"):
        core.plan(names, indptr, indices, [-1])
    with pytest.raises(ValueError, match="indptr must have 4 entries, got 3"):
        core.plan(names, indptr[:-1], indices, [2])


@pytest.mark.parametrize("what", ["weights", "classes", "flags"])
def test_plan_per_node_length_checked(core, what, request):
    """A per-node sequence of the wrong length is refused with the same text by both."""
    names, index, indptr, indices, tids = build(core, chain(3))
    for bad in ([1], [1, 1, 1, 1]):
        with pytest.raises(ValueError, match=f"{what} must have 3 entries, got {len(bad)}"):
            core.plan(names, indptr, indices, [2], PlanOptions(group_weight=5, **{what: bad}))


def test_duplicate_targets(core):
    """A target given twice is planned (and output) once."""
    names, index, indptr, indices, tids = build(core, chain(4))
    p = core.plan(names, indptr, indices, [3, 1, 3, 1], PlanOptions(group_weight=1))
    check_plan(p, indptr, indices, [3, 1])
    assert sorted(p.outputs) == [0, 1, 2, 3]


def test_plan_equality_is_not_trivial(core):
    """Plan.__eq__ compares fields: the parity tests below rely on it."""
    names, index, indptr, indices, tids = build(core, chain(6), ["a5"])
    p1 = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=1))
    p2 = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=1))
    p3 = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=10))
    p4 = core.plan(names, indptr, indices, [index["a4"]], PlanOptions(group_weight=1))
    assert p1 == p2
    assert p1 != p3 and p1 != p4
    assert p1 != "not a plan"


# --------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------
#
# Most fusion tests pass unit weights, so that "weight" reads as "number of tasks"; the core's
# default weight (1 + number of dependencies) has its own test.


def ones(names):
    return [1] * len(names)


def tree_reduction(leaves=64, fan_in=8):
    """Leaves ``('l', i)``; level ``k`` sums ``fan_in`` nodes of level ``k-1``; returns the graph
    and the root's key."""
    graph = {("l", i): () for i in range(leaves)}
    level = [("l", i) for i in range(leaves)]
    depth = 0
    while len(level) > 1:
        depth += 1
        nxt = []
        for j in range(0, len(level), fan_in):
            k = ("s", depth, j // fan_in)
            graph[k] = tuple(level[j : j + fan_in])
            nxt.append(k)
        level = nxt
    return graph, level[0]


def test_default_weights(core):
    """Without weights a node costs 1 + its number of dependencies.

    l0 .. l63 ─> s0 .. s7 ─> root     (tree reduction, fan-in 8)
    """
    graph, root = tree_reduction(64, 8)
    names, index, indptr, indices, tids = build(core, graph, [root])
    w = default_weights(indptr)
    assert w[index[root]] == 9 and w[index[("l", 0)]] == 1
    for gw in (4, 10, 30):
        p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=gw))
        assert p == core.plan(names, indptr, indices, tids, PlanOptions(weights=w, group_weight=gw))
        check_plan(p, indptr, indices, tids)
        check_group_weights(p, w, gw)
    # and the default differs from unit weights: the same graph fuses differently
    p_default = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=10))
    p_ones = core.plan(
        names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=10)
    )
    assert p_default != p_ones


@pytest.mark.parametrize("group_weight", [0, 1])
def test_no_fusion_one_group_per_node(core, group_weight):
    """group_weight <= 1: every needed node is its own group (tree reduction of 64), whatever
    bundle_weight says."""
    graph, root = tree_reduction()
    names, index, indptr, indices, tids = build(core, graph, [root])
    for bw in (0, 100):
        p = core.plan(
            names, indptr, indices, tids, PlanOptions(group_weight=group_weight, bundle_weight=bw)
        )
        check_plan(p, indptr, indices, tids)
        assert p.ngroups == len(p.order) == len(names)
        assert all(len(m) == 1 for m in groups(p))


@pytest.mark.parametrize("group_weight", [4, 10, 20])
def test_tree_reduction_splits_into_parallel_groups(core, group_weight):
    """
    l0 .. l7   l8 .. l15   ...   l56 .. l63        64 leaves, fan-in 8
    └──┬───┘   └───┬───┘         └───┬────┘
       s0          s1      ...       s7
       └───────────┴────┬────────────┘
                       root

    With a small group_weight the leaves are not run as one Ray task: several groups of
    leaves without inputs run in parallel, and no group is much above group_weight.
    """
    graph, root = tree_reduction(64, 8)
    names, index, indptr, indices, tids = build(core, graph, [root])
    w = ones(names)
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=w, group_weight=group_weight))
    check_plan(p, indptr, indices, tids)
    sources = [g for g in range(p.ngroups) if len(p.group(g)[1]) == 0]
    assert len(sources) >= 2, "the leaves were not split into parallel groups"
    assert len(sources) >= 64 // (2 * group_weight)
    assert max(len(m) for m in groups(p)) <= 2 * group_weight
    assert p.ngroups < len(names), "nothing was fused"
    # the root's group is last and returns the root only
    assert p.group_of[index[root]] == p.ngroups - 1
    assert list(p.group(p.ngroups - 1)[2]) == [index[root]]


def test_tree_reduction_large_weight_is_one_group(core):
    graph, root = tree_reduction(64, 8)
    names, index, indptr, indices, tids = build(core, graph, [root])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=1000))
    check_plan(p, indptr, indices, tids)
    assert p.ngroups == 1


def independent_chains(nchains=50, length=5):
    graph = {}
    for c in range(nchains):
        for i in range(length):
            graph[(f"c{c}", i)] = () if i == 0 else ((f"c{c}", i - 1),)
    return graph, [(f"c{c}", length - 1) for c in range(nchains)]


def test_sink_bundles(core):
    """
    c0_0 ─> c0_1 ─> ... ─> c0_4*
    c1_0 ─> c1_1 ─> ... ─> c1_4*      50 independent chains of 5, tops are targets
     ...
    c49_0 ─> ...        ─> c49_4*

    group_weight 50 (unit weights): the chains are bundled whole into about 250 / 50 = 5 groups.
    """
    graph, tops = independent_chains(50, 5)
    names, index, indptr, indices, tids = build(core, graph, tops)
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=50))
    check_plan(p, indptr, indices, tids)
    assert 5 <= p.ngroups <= 6
    assert len(p.inputs) == 0
    for g in range(p.ngroups):
        chains = {names[v][0] for v in p.group(g)[0]}
        # chains are never cut: a group holds 5 nodes of each of its chains and their tops
        assert len(p.group(g)[0]) == 5 * len(chains)
        assert {names[v][0] for v in p.group(g)[2]} == chains
        assert len(p.group(g)[2]) == len(chains)


@pytest.mark.parametrize("bundle_weight", [10, 100, 1000])
def test_bundle_weight_sizes_sink_bundles(core, bundle_weight):
    """The same 50 chains of 5 with group_weight 50: bundle_weight sets the bundles' size."""
    graph, tops = independent_chains(50, 5)
    names, index, indptr, indices, tids = build(core, graph, tops)
    p = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(weights=ones(names), group_weight=50, bundle_weight=bundle_weight),
    )
    check_plan(p, indptr, indices, tids)
    check_group_weights(p, ones(names), 50, bundle_weight)
    expected = -(-250 // bundle_weight)  # ceil
    assert expected <= p.ngroups <= 2 * expected
    assert max(len(m) for m in groups(p)) <= max(2 * bundle_weight, 5)


def test_sink_bundles_respect_classes(core):
    """
    a0  a1  a2  ...  a19       independent targets, classes alternate 0/1
    """
    graph = {f"a{i}": () for i in range(20)}
    names, index, indptr, indices, tids = build(core, graph)
    classes = [i % 2 for i in range(20)]
    p = core.plan(names, indptr, indices, tids, PlanOptions(classes=classes, group_weight=100))
    check_plan(p, indptr, indices, tids, classes=classes)
    assert p.ngroups == 2
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100))
    assert p.ngroups == 1  # control: one class, one bundle


def sources_graph(k=10, fan=2):
    """``r_i`` (no dependencies) feed ``t_i = f(r_i, ..., r_(i+fan-1 mod k))``: ``x + x.T``'s
    shape for ``fan=2``; each source is read by ``fan`` tasks."""
    graph = {("r", i): () for i in range(k)}
    for i in range(k):
        graph[("t", i)] = tuple(("r", (i + j) % k) for j in range(fan))
    return graph, [("t", i) for i in range(k)]


def test_source_bundles(core):
    """
    r0   r1   r2  ...  r9         sources, each read by five tasks (more than CLUSTER_FANOUT)
    │ ╲  │ ╲  │ ╲      │ ╲
    t0   t1   t2  ...  t9 ...     t_i needs r_i .. r_(i+4 mod 10); t_i are targets

    Unit weights, group_weight 5: the sources are bundled (groups without inputs, 5 sources
    each), and so are the sinks t_i, but never sources with sinks.
    """
    graph, targets = sources_graph(10, fan=5)
    names, index, indptr, indices, tids = build(core, graph, targets)
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=5))
    check_plan(p, indptr, indices, tids)
    rs = {index[("r", i)] for i in range(10)}
    src_groups = {p.group_of[v] for v in rs}
    assert 2 <= len(src_groups) <= 4
    for g in src_groups:
        members, inputs, outputs = p.group(g)
        assert set(members) <= rs, "a source bundle holds a non-source"
        assert len(inputs) == 0
        assert len(members) >= 2
    # control: bundle_weight 1 leaves every source alone
    p1 = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(weights=ones(names), group_weight=5, bundle_weight=1),
    )
    check_plan(p1, indptr, indices, tids)
    assert len({p1.group_of[v] for v in rs}) == 10


def test_clusters_keep_shared_inputs_with_their_readers(core):
    """``x + x.T``'s shape: block ``(i, j)`` and ``(j, i)`` are read by the same two tasks.
    Each pair of sources runs in the group of its two readers, so no source value leaves its
    group; clusters without inputs are bundled up to ``bundle_weight``. A ring (each source
    read by two tasks, every task by a different pair) is cut into clusters of at most
    ``group_weight``, and the plan stays valid."""
    graph = {("r", i): () for i in range(12)}
    graph.update({("t", i): (("r", i), ("r", i ^ 1)) for i in range(12)})
    targets = [("t", i) for i in range(12)]
    names, index, indptr, indices, tids = build(core, graph, targets)
    p = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(weights=ones(names), group_weight=8, bundle_weight=8),
    )
    check_plan(p, indptr, indices, tids)
    assert p.ngroups == 3  # 6 clusters of 4, two per bundle
    for g in range(p.ngroups):
        members, inputs, outputs = p.group(g)
        assert len(members) == 8 and not inputs
        assert {names[v][0] for v in outputs} == {"t"}, "no source value leaves its group"

    graph, targets = sources_graph(12, fan=2)  # the ring
    names, index, indptr, indices, tids = build(core, graph, targets)
    p = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(weights=ones(names), group_weight=6, bundle_weight=6),
    )
    check_plan(p, indptr, indices, tids)
    assert max(len(p.group(g)[0]) for g in range(p.ngroups)) <= 6
    assert any({names[v][0] for v in p.group(g)[0]} == {"r", "t"} for g in range(p.ngroups))


def test_cluster_that_would_form_a_cycle_is_not_made(core):
    """r1 and r2 are each read by two tasks, but r2 depends (through x, which also needs z)
    on a, a reader of r1: {r1, a, b, r2, e} as one group would wait for x, which waits for it.

    r1 ──> a ──> x <── z
    │            │
    │            v
    └──> b <──── r2 ──> e          b, e targets
    """
    graph = {
        "r1": (),
        "z": (),
        "a": ("r1",),
        "x": ("a", "z"),
        "r2": ("x",),
        "b": ("r1", "r2"),
        "e": ("r2",),
    }
    names, index, indptr, indices, tids = build(core, graph, ["b", "e"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=100))
    check_plan(p, indptr, indices, tids)
    g = p.group_of[index["r2"]]
    assert p.group_of[index["a"]] != g or p.group_of[index["x"]] == g
    # control: without x's detour the same shape is one cluster
    graph["r2"] = ()
    names, index, indptr, indices, tids = build(core, graph, ["b", "e", "x"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=100))
    check_plan(p, indptr, indices, tids)
    assert p.group_of[index["r1"]] == p.group_of[index["b"]] == p.group_of[index["r2"]]


def test_piece_with_an_input_is_not_a_source(core):
    """A small tree that receives a value from outside is not bundled with the sources: here
    that bundle would form a cycle of groups (p2's group -> y -> p1 in p2's group).

    p2 ──> y ──> p1 ──> t1*
    │      │     └────> t2*
    └─> t3*└──> t4*             split groups off (split_fanout 0)
    """
    graph = {
        "p2": (),
        "y": ("p2",),
        "p1": ("y",),
        "t1": ("p1",),
        "t2": ("p1",),
        "t3": ("p2",),
        "t4": ("y",),
    }
    names, index, indptr, indices, tids = build(core, graph, ["t1", "t2", "t3", "t4"])
    p = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(weights=ones(names), group_weight=20, split_fanout=0, cluster_fanout=0),
    )
    check_plan(p, indptr, indices, tids)
    assert p.group_of[index["p1"]] != p.group_of[index["p2"]]
    assert p.group_of[index["y"]] != p.group_of[index["p2"]]


@pytest.mark.parametrize("closed", ["bundle", "single"])
def test_piece_fed_by_a_closed_group_is_not_a_source(core, closed):
    """A piece whose children were closed into a group of their own receives their values:
    it is no source, else {S, u} would be a group on a cycle (S -> D -> l1 -> u).

    closed="bundle":                           closed="single":

    S ──> D ──> l1 ──┐                         S ──> D ──> l0 ──> l1 ──> u ──> T3*
    │     │    l2 ───┴─> u ──> T3*             │     │                   └──> T4*
    └─> T1*└─> T2*       └──> T4*              └─> T1*└─> T2*

    group_weight 2: [l1 l2] (or [l0 l1]) is closed below u; split groups off.
    """
    graph = {"S": (), "D": ("S",), "T1": ("S",), "T2": ("D",)}
    if closed == "bundle":
        graph.update({"l1": ("D",), "l2": (), "u": ("l1", "l2")})
        below = ["l1", "l2"]
    else:
        graph.update({"l0": ("D",), "l1": ("l0",), "u": ("l1",)})
        below = ["l0", "l1"]
    graph.update({"T3": ("u",), "T4": ("u",)})
    names, index, indptr, indices, tids = build(core, graph, ["T1", "T2", "T3", "T4"])
    p = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(
            weights=ones(names), group_weight=2, split_fanout=0, bundle_weight=10, cluster_fanout=0
        ),
    )
    check_plan(p, indptr, indices, tids)
    assert sorted(groups(p)[p.group_of[index[below[0]]]]) == sorted(index[k] for k in below)
    assert p.group_of[index["u"]] != p.group_of[index["S"]]


def test_heavy_child_piece_is_its_own_group(core):
    """A child piece that reaches group_weight on its own is closed alone; a light sibling
    stays pending on the parent.

                         a ──────┐
    b0 ─> b1 ─> b2 ─> b3 ─> b4 ──┴─> u*        group_weight 5, unit weights
    """
    graph = {"a": ()}  # a's id comes first: the light piece is met first
    graph.update(chain(5, "b"))
    graph["u"] = ("a", "b4")
    names, index, indptr, indices, tids = build(core, graph, ["u"])
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=5))
    check_plan(p, indptr, indices, tids)
    assert sorted(groups(p)[p.group_of[index["b4"]]]) == [index[f"b{i}"] for i in range(5)]
    assert p.group_of[index["a"]] == p.group_of[index["u"]]


def split_graph(k=8, with_load=True):
    """``load ─> s ─> g_i ─> h_i``: s fans out to k getitems, h_i needs g_i and g_{i+1}."""
    graph = {}
    if with_load:
        graph["load"] = ()
        graph["s"] = ("load",)
    else:
        graph["s"] = ()
    for i in range(k):
        graph[("g", i)] = ("s",)
    for i in range(k):
        graph[("h", i)] = (("g", i), ("g", (i + 1) % k))
    return graph, [("h", i) for i in range(k)]


@pytest.mark.parametrize("with_load", [False, True])
def test_split_group(core, with_load):
    """
             load
              │
              s
      ┌───┬───┼─── ... ──┐
      g0  g1  g2   ...   g7      each g_i depends only on s (getitem of a split)
      │ ╲ │ ╲ │ ╲        │ ╲
      h0  h1  h2   ...   h7 ...  h_i depends on g_i and g_(i+1 mod 8)

    s and its getitems run as one Ray task that returns each g_i (>= 8 outputs).
    """
    graph, targets = split_graph(8, with_load)
    names, index, indptr, indices, tids = build(core, graph, targets)
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=20))
    check_plan(p, indptr, indices, tids)
    g = p.group_of[index["s"]]
    assert all(p.group_of[index[("g", i)]] == g for i in range(8))
    members, inputs, outputs = p.group(g)
    assert len(outputs) >= 8
    assert {names[v] for v in outputs} >= {("g", i) for i in range(8)}
    # no h_i joins the split's group: each needs two getitems
    assert not any(p.group_of[index[t]] == g for t in targets)


@pytest.mark.parametrize("split_fanout", [0, 1, 9])
def test_split_fanout_disables_split(core, split_fanout):
    """The same split graph with split_fanout above the fan-out (or < 2): no split group.

    s ─> g0 .. g7 ─> h0 .. h7      (see test_split_group)
    """
    graph, targets = split_graph(8, with_load=False)
    names, index, indptr, indices, tids = build(core, graph, targets)
    p = core.plan(
        names,
        indptr,
        indices,
        tids,
        PlanOptions(weights=ones(names), group_weight=20, split_fanout=split_fanout),
    )
    check_plan(p, indptr, indices, tids)
    assert p.group_of[index["s"]] != p.group_of[index[("g", 0)]]


def test_split_group_respects_group_weight(core):
    """
            s
      ┌──┬──┼── ... ──┐
      g0 g1 g2  ...  g39 ─> h_i (two getitems each)

    A split of 40 getitems with group_weight 10 does not run all 40 in s's group.
    """
    graph, targets = split_graph(40, with_load=False)
    names, index, indptr, indices, tids = build(core, graph, targets)
    p = core.plan(names, indptr, indices, tids, PlanOptions(weights=ones(names), group_weight=10))
    check_plan(p, indptr, indices, tids)
    assert 2 <= len(p.group(p.group_of[index["s"]])[0]) <= 2 * 10


def test_classes_never_share_a_group(core):
    """
    a0 ─> a1 ─> a2 ─> a3 ─> ... ─> a11      classes 0 0 0 1 1 1 0 0 0 2 2 2
    """
    names, index, indptr, indices, tids = build(core, chain(12), ["a11"])
    classes = [0, 0, 0, 1, 1, 1, 0, 0, 0, 2, 2, 2]
    p = core.plan(names, indptr, indices, tids, PlanOptions(classes=classes, group_weight=100))
    check_plan(p, indptr, indices, tids, classes=classes)
    assert groups(p) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    # control: without classes the chain is one group
    assert core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100)).ngroups == 1


def test_classes_in_split(core):
    """
        s (class 0)
    ┌───┼───┬───┐
    g0  g1  g2  g3        g0, g1 class 0; g2, g3 class 1: only g0, g1 join s
    │╲  │╲  │╲  │╲
    h0  h1  h2  h3
    """
    graph, targets = split_graph(4, with_load=False)
    names, index, indptr, indices, tids = build(core, graph, targets)
    classes = [0] * len(names)
    for i in (2, 3):
        classes[index[("g", i)]] = 1
    p = core.plan(names, indptr, indices, tids, PlanOptions(classes=classes, group_weight=20))
    check_plan(p, indptr, indices, tids, classes=classes)
    s = p.group_of[index["s"]]
    assert p.group_of[index[("g", 0)]] == p.group_of[index[("g", 1)]] == s
    assert p.group_of[index[("g", 2)]] != s and p.group_of[index[("g", 3)]] != s


@pytest.mark.parametrize("big", [2**31, 2**62, 2**63 - 1])
def test_classes_extreme_values(core, big, request):
    """Classes are arbitrary int64 values: ``big`` and ``-big`` are different classes.

    a   b        two independent targets of classes big and -big
    """
    names, index, indptr, indices, tids = build(core, {"a": (), "b": ()})
    classes = [big, -big]
    p = core.plan(names, indptr, indices, tids, PlanOptions(classes=classes, group_weight=10))
    check_plan(p, indptr, indices, tids, classes=classes)
    assert p.ngroups == 2


def test_block_fusion_in_chain(core):
    """
    a0 ─> a1 ─> [a2] ─> a3 ─> a4       a2 is flagged BLOCK_FUSION: it runs alone
    """
    names, index, indptr, indices, tids = build(core, chain(5), ["a4"])
    flags = [0, 0, BLOCK_FUSION, 0, 0]
    p = core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=100))
    check_plan(p, indptr, indices, tids, flags=flags)
    assert groups(p) == [[0, 1], [2], [3, 4]]
    # a flag bit other than BLOCK_FUSION does not block fusion
    flags = [2, 0, 0, 0, 0]
    assert (
        core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=100)).ngroups
        == 1
    )


def test_block_fusion_split_head(core):
    """
       load
        │
       [s]              s is flagged BLOCK_FUSION: no split group forms around it
    ┌──┬──┼── ... ──┐
    g0 g1 g2  ...  g7 ─> h_i
    """
    graph, targets = split_graph(8, with_load=True)
    names, index, indptr, indices, tids = build(core, graph, targets)
    flags = [0] * len(names)
    flags[index["s"]] = BLOCK_FUSION
    p = core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=20))
    check_plan(p, indptr, indices, tids, flags=flags)
    assert list(p.group(p.group_of[index["s"]])[0]) == [index["s"]]
    # control: unflagged, s has company
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=20))
    assert len(p.group(p.group_of[index["s"]])[0]) > 1


def test_block_fusion_getitem(core):
    """
          s
    ┌──┬──┼── ... ──┐
    g0 g1 [g2] ... g7 ─> h_i       g2 is flagged: s's split group goes on without it
    """
    graph, targets = split_graph(8, with_load=False)
    names, index, indptr, indices, tids = build(core, graph, targets)
    flags = [0] * len(names)
    flags[index[("g", 2)]] = BLOCK_FUSION
    p = core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=20))
    check_plan(p, indptr, indices, tids, flags=flags)
    assert list(p.group(p.group_of[index[("g", 2)]])[0]) == [index[("g", 2)]]
    assert p.group_of[index[("g", 1)]] == p.group_of[index["s"]]


def test_block_fusion_tree_node(core):
    """
    l0  l1  l2  l3
    └───┴─┬─┴───┘
         [m]          m (one dependency of t, with four of its own) is flagged
          │
    x ──> t           x, l_i and t fuse as they may, m stays alone
    """
    graph = {"l0": (), "l1": (), "l2": (), "l3": (), "m": ("l0", "l1", "l2", "l3")}
    graph.update({"x": (), "t": ("m", "x")})
    names, index, indptr, indices, tids = build(core, graph, ["t"])
    flags = [0] * len(names)
    flags[index["m"]] = BLOCK_FUSION
    p = core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=100))
    check_plan(p, indptr, indices, tids, flags=flags)
    assert list(p.group(p.group_of[index["m"]])[0]) == [index["m"]]
    assert p.ngroups == 3  # [l0..l3] [m] [x t]
    assert (
        core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100)).ngroups == 1
    )  # control


def test_block_fusion_sink_is_alone(core):
    """
    [a]   b   c      three independent targets, a flagged BLOCK_FUSION: a must run alone
    """
    names, index, indptr, indices, tids = build(core, {"a": (), "b": (), "c": ()})
    flags = [BLOCK_FUSION, 0, 0]
    p = core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=10))
    assert list(p.group(p.group_of[0])[0]) == [0]


def test_block_fusion_source_is_alone(core):
    """
    [a]   b          a is flagged BLOCK_FUSION: a must run alone
    │ ╲ ╱ │
    │  ╳  │
    │ ╱ ╲ │
    c     d          c and d (targets) both need a and b
    """
    graph = {"a": (), "b": (), "c": ("a", "b"), "d": ("a", "b")}
    names, index, indptr, indices, tids = build(core, graph, ["c", "d"])
    flags = [BLOCK_FUSION, 0, 0, 0]
    p = core.plan(names, indptr, indices, tids, PlanOptions(flags=flags, group_weight=10))
    assert list(p.group(p.group_of[0])[0]) == [0]


# --------------------------------------------------------------------------------------------
# large graphs: no recursion
# --------------------------------------------------------------------------------------------


def test_long_chain(core):
    """
    0 ─> 1 ─> 2 ─> ... ─> n-1      200,000 nodes (100,000 for the pure twin)
    """
    n = 100_000 if core is _pure else 200_000
    names = list(range(n))
    deps = [()] + [(i - 1,) for i in range(1, n)]
    index, indptr, indices = core.intern(names, deps)
    p = core.plan(names, indptr, indices, [n - 1], PlanOptions(group_weight=1))
    assert p.order == array("q", range(n))
    assert p.ngroups == n and p.members == array("q", range(n))
    assert p.inputs == array("q", range(n - 1))
    # group_weight 1000: runs of about 1000 consecutive links, each fed by the one before
    p = core.plan(names, indptr, indices, [n - 1], PlanOptions(group_weight=1000))
    assert p.order == array("q", range(n))
    assert n // 1000 <= p.ngroups <= 2 * n // 1000
    assert p.members == array("q", range(n))
    sizes = [p.members_ptr[g + 1] - p.members_ptr[g] for g in range(p.ngroups)]
    assert max(sizes) <= 2 * 1000
    ends = list(p.members_ptr[1:])
    assert list(p.outputs) == [e - 1 for e in ends]
    assert list(p.inputs) == [e - 1 for e in ends[:-1]]


def test_long_cycle(core):
    """
    0 ─> 1 ─> ... ─> n-1 ─┐      a cycle through 50,000 nodes
    ^─────────────────────┘
    """
    n = 50_000
    names = list(range(n))
    deps = [(n - 1,)] + [(i - 1,) for i in range(1, n)]
    index, indptr, indices = core.intern(names, deps)
    with pytest.raises(CycleError) as info:
        core.plan(names, indptr, indices, [0])
    assert len(info.value.cycle) == n + 1


# --------------------------------------------------------------------------------------------
# parity of the two implementations on random graphs (hypothesis)
# --------------------------------------------------------------------------------------------


def _key(draw, i):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return f"k{i}"
    if kind == 1:
        return ("x", i)
    if kind == 2:
        return ("y-abc", i, draw(st.integers(0, 3)))
    return i


@st.composite
def dags(draw, max_nodes=60):
    """A random DAG as ``(names, deps_keys, rank_deps)``; node ranks only depend on lower
    ranks, and node ids are a random permutation of ranks (ids are not a topological order)."""
    n = draw(st.integers(1, max_nodes))
    perm = draw(st.permutations(range(n)))  # rank -> id
    names = [None] * n
    for r in range(n):
        names[perm[r]] = _key(draw, r)
    rdeps = []
    for r in range(n):
        if r == 0:
            rdeps.append([])
        else:
            rdeps.append(draw(st.lists(st.integers(0, r - 1), max_size=4)))
    return n, perm, names, rdeps


def _containers(draw, keys):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return list(keys)
    if kind == 1:
        return tuple(keys)
    return set(keys)


@st.composite
def plan_args(draw):
    n, perm, names, rdeps = draw(dags())
    deps = [None] * n
    for r in range(n):
        deps[perm[r]] = _containers(draw, [names[perm[j]] for j in rdeps[r]])
    targets = draw(st.lists(st.integers(0, n - 1), max_size=n))
    weights = draw(st.none() | st.lists(st.integers(0, 5), min_size=n, max_size=n))
    classes = draw(st.none() | st.lists(st.integers(0, 2), min_size=n, max_size=n))
    flags = draw(
        st.none()
        | st.lists(
            st.sampled_from(
                [0, 0, 0, 0, BLOCK_FUSION, PACK_ALONE, BLOCK_FUSION | PACK_ALONE, PASS_THROUGH]
            ),
            min_size=n,
            max_size=n,
        )
    )
    group_weight = draw(st.integers(1, 30))
    split_fanout = draw(st.integers(0, 4))
    bundle_weight = draw(st.integers(0, 30))  # 0: group_weight
    return names, deps, targets, weights, classes, flags, group_weight, split_fanout, bundle_weight


@st.composite
def prioritized_plan_args(draw):
    args = draw(plan_args())
    n = len(args[0])
    priorities = draw(st.none() | st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    parallelism = draw(st.sampled_from([0, 0, 1, 2, 4]))
    cpus = draw(st.sampled_from([0, 1, 2]))
    task_weight = draw(st.sampled_from([0, 1, 5, 20]))
    moves = draw(st.none() | st.lists(st.integers(0, 40), min_size=n, max_size=n))
    return (*args, priorities, parallelism, cpus, task_weight, moves)


HYPOTHESIS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(plan_args())
def test_random_dag_invariants(args):
    """check_plan holds for the pure twin on random DAGs (and on the compiled core via the
    parity test below)."""
    names, deps, targets, weights, classes, flags, gw, sf, bw = args
    index, indptr, indices = _pure.intern(names, deps)
    opts = PlanOptions(
        weights=weights,
        classes=classes,
        flags=flags,
        group_weight=gw,
        split_fanout=sf,
        bundle_weight=bw,
    )
    p = _pure.plan(names, indptr, indices, targets, opts)
    check_plan(p, indptr, indices, targets, classes=classes, flags=flags)
    w = default_weights(indptr) if weights is None else weights
    check_group_weights(p, w, gw, bw)
    if gw <= 1:
        assert p.ngroups == len(p.order)
    if weights is None:
        assert p == _pure.plan(names, indptr, indices, targets, replace(opts, weights=w))
    if bw == 0:
        assert p == _pure.plan(names, indptr, indices, targets, replace(opts, bundle_weight=gw))


@needs_core
@HYPOTHESIS
@given(prioritized_plan_args())
def test_parity_random_dag(args):
    names, deps, targets, weights, classes, flags, gw, sf, bw, prio, par, cpus, tw, moves = args
    r_core = _core.intern(names, deps)
    r_pure = _pure.intern(names, deps)
    assert r_core == r_pure
    index, indptr, indices = r_core
    opts = PlanOptions(
        weights=weights,
        classes=classes,
        flags=flags,
        group_weight=gw,
        split_fanout=sf,
        bundle_weight=bw,
        priorities=prio,
        parallelism=par,
        cpus=cpus,
        task_weight=tw,
        move_weights=moves,
    )
    p_core = _core.plan(names, indptr, indices, targets, opts)
    p_pure = _pure.plan(names, indptr, indices, targets, opts)
    assert p_core == p_pure
    check_plan(p_core, indptr, indices, targets, classes=classes, flags=flags)
    w = default_weights(indptr) if weights is None else weights
    check_group_weights(p_core, w, gw, bw)
    if prio is not None:  # priorities reorder groups, never change them
        plain = _pure.plan(names, indptr, indices, targets, replace(opts, priorities=None))
        assert plain.ngroups == p_core.ngroups
        assert sorted(map(tuple, map(list, _members(plain)))) == sorted(
            map(tuple, map(list, _members(p_core)))
        )


def _members(plan):
    return [plan.group(g)[0] for g in range(plan.ngroups)]


def _layered(layers: int, width: int, reads: int, seed: int = 0):
    """A layered DAG: every node of a layer reads ``reads`` random nodes of any earlier layer
    (edges reach across layers); the target is a node reading every unread node."""
    import random

    rng = random.Random(seed)
    graph: dict = {("n", 0, j): () for j in range(width)}
    earlier = list(graph)
    for layer in range(1, layers):
        keys = [("n", layer, j) for j in range(width)]
        for k in keys:
            graph[k] = tuple(rng.sample(earlier, reads))
        earlier.extend(keys)
    read = {d for ds in graph.values() for d in ds}
    graph["top"] = tuple(k for k in earlier if k not in read)
    return graph


def _group_levels_of(plan, indptr, indices) -> dict[int, int]:
    """Top level of every group of ``plan`` in its group graph (computed independently)."""
    level: dict[int, int] = {}
    for g in range(plan.ngroups):  # group ids are a topological order
        members, inputs, _ = plan.group(g)
        level[g] = max((level[plan.group_of[u]] + 1 for u in inputs), default=0)
    return level


@pytest.mark.parametrize("parallelism", [4, 8])
def test_levels_pack_any_dag_and_keep_parallelism(core, parallelism):
    """
    layer 0   o o o o o ... (64)
    layer 1   o o o o o ...        each node reads 2 nodes of any earlier layer
      ...                          trees and clusters leave ~one group per node;
    layer 9   o o o o o ...        levels pack each level into `parallelism` groups
    """
    graph = _layered(10, 64, 2)
    names, index, indptr, indices, tids = build(core, graph, ["top"])
    loose = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=200))
    packed = core.plan(
        names, indptr, indices, tids, PlanOptions(group_weight=200, parallelism=parallelism)
    )
    check_plan(packed, indptr, indices, tids)
    check_group_weights(packed, default_weights(indptr), 200)
    assert loose.ngroups > 150  # the other steps find little to fuse in 641 nodes
    assert packed.ngroups <= 8 * parallelism
    # every level of the group graph that had more than `parallelism` groups keeps that many
    per_level: dict[int, int] = {}
    for _g, lv in _group_levels_of(packed, indptr, indices).items():
        per_level[lv] = per_level.get(lv, 0) + 1
    loose_levels: dict[int, int] = {}
    for _g, lv in _group_levels_of(loose, indptr, indices).items():
        loose_levels[lv] = loose_levels.get(lv, 0) + 1
    assert max(loose_levels.values()) > parallelism
    assert max(per_level.values()) == parallelism  # packed down to it, never below
    assert sum(1 for c in per_level.values() if c == parallelism) >= 4


def test_levels_keep_classes_and_blocked_nodes_apart(core):
    graph = _layered(4, 32, 2, seed=1)
    names, index, indptr, indices, tids = build(core, graph, ["top"])
    classes = [i % 2 for i in range(len(names))]
    flags = [BLOCK_FUSION if i % 7 == 0 else 0 for i in range(len(names))]
    opts = PlanOptions(group_weight=100, classes=classes, flags=flags, parallelism=2, task_weight=5)
    p = core.plan(names, indptr, indices, tids, opts)
    check_plan(p, indptr, indices, tids, classes=classes, flags=flags)
    assert p.ngroups < len(names) // 2


def test_levels_never_pack_a_pack_alone_group(core):
    """A group holding a ``PACK_ALONE`` node (an exchange's map or reducer, whose arguments
    Ray holds in its object store together) keeps the members the other steps gave it."""
    graph = _layered(4, 32, 2, seed=3)
    names, index, indptr, indices, tids = build(core, graph, ["top"])
    flags = [PACK_ALONE if i % 5 == 0 else 0 for i in range(len(names))]
    loose = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100, flags=flags))
    opts = PlanOptions(group_weight=100, flags=flags, parallelism=2)
    packed = core.plan(names, indptr, indices, tids, opts)
    check_plan(packed, indptr, indices, tids)
    assert packed.ngroups <= loose.ngroups // 2  # the rest is packed
    for v in range(len(names)):
        if flags[v] and loose.group_of[v] != -1:
            alone = sorted(loose.group(loose.group_of[v])[0])
            assert sorted(packed.group(packed.group_of[v])[0]) == alone


def test_levels_off_without_fusion_or_parallelism(core):
    graph = _layered(5, 20, 2, seed=2)
    names, index, indptr, indices, tids = build(core, graph, ["top"])
    a = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100))
    b = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=100, parallelism=0))
    assert a == b
    c = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=1, parallelism=8))
    assert c.ngroups == len(c.order)


def _lattice(n: int) -> dict:
    """``(i, j)`` reads ``(i - 1, j)`` and ``(i, j - 1)``: a wavefront of 2n - 1 levels."""
    return {
        (i, j): tuple(d for d in ((i - 1, j), (i, j - 1)) if min(d) >= 0)
        for i in range(n)
        for j in range(n)
    }


def _depth(plan, indptr, indices) -> int:
    return max(_group_levels_of(plan, indptr, indices).values()) + 1


def test_bands_tile_a_lattice(core):
    """
    (0,0) ─> (0,1) ─> ...        a 40 x 40 wavefront: 79 levels of at most 40 tiny tasks.
      │        │                  Level by level it is 79 dependent rounds of Ray tasks;
      v        v                  bands of levels cut into segments make tiles, a few
    (1,0) ─> (1,1) ─> ...        dozen, that still run side by side
    """
    names, index, indptr, indices, tids = build(core, _lattice(40), [(39, 39)])
    opts = PlanOptions(group_weight=600, parallelism=8, cpus=2, task_weight=60)
    p = core.plan(names, indptr, indices, tids, opts)
    check_plan(p, indptr, indices, tids)
    check_group_weights(p, default_weights(indptr), 600)
    levels_only = core.plan(names, indptr, indices, tids, replace(opts, task_weight=0))
    assert _depth(levels_only, indptr, indices) >= 79  # no taller band pays without a task cost
    assert p.ngroups <= 60
    assert _depth(p, indptr, indices) <= 30
    per_level: dict[int, int] = {}
    for lv in _group_levels_of(p, indptr, indices).values():
        per_level[lv] = per_level.get(lv, 0) + 1
    assert max(per_level.values()) >= 2  # tiles side by side, not one chain


def test_bands_weigh_a_ray_tasks_cost(core):
    """The dearer a Ray task, the fewer groups: the list schedule trades them against the
    heaviest path."""
    graph = _layered(12, 48, 2, seed=4)
    names, index, indptr, indices, tids = build(core, graph, ["top"])
    counts = []
    for task_weight in (0, 20, 400):
        opts = PlanOptions(group_weight=300, parallelism=8, cpus=2, task_weight=task_weight)
        p = core.plan(names, indptr, indices, tids, opts)
        check_plan(p, indptr, indices, tids)
        counts.append(p.ngroups)
    assert counts[0] > counts[1] > counts[2]


def _crossing(plan, indptr, indices, sizes) -> int:
    """What the values read from other groups weigh, each once per reading group."""
    total = 0
    for g in range(plan.ngroups):
        total += sum(sizes[i] for i in plan.group(g)[1])
    return total


def test_bands_keep_heavy_values_inside_groups(core):
    """With what moving each value costs (``move_weights``, from its estimated bytes), the
    schedule that picks the bands charges every value a group reads from another: when values
    are heavy the plan moves fewer of them."""
    graph = _layered(12, 48, 2, seed=5)
    names, index, indptr, indices, tids = build(core, graph, ["top"])
    opts = PlanOptions(group_weight=300, parallelism=8, cpus=2, task_weight=20)
    light = core.plan(names, indptr, indices, tids, opts)
    ones = [1] * len(names)
    moved = [_crossing(light, indptr, indices, ones)]
    for heavy in (20, 200):
        p = core.plan(
            names, indptr, indices, tids, replace(opts, move_weights=[heavy] * len(names))
        )
        check_plan(p, indptr, indices, tids)
        moved.append(_crossing(p, indptr, indices, ones))
    assert moved[0] > moved[1] >= moved[2], moved


def test_clusters_stop_at_fanout_squared_nodes(core):
    """In a lattice every input has 2 readers: unbounded, clusters would grow into a few
    blobs of ``group_weight`` that run one after another; they stop at 16 nodes."""
    names, index, indptr, indices, tids = build(core, _lattice(30), [(29, 29)])
    p = core.plan(names, indptr, indices, tids, PlanOptions(group_weight=1000))
    check_plan(p, indptr, indices, tids)
    sizes = [len(p.group(g)[0]) for g in range(p.ngroups)]
    assert max(sizes) < 2 * 30  # the largest: the border chains the trees fuse
    assert sum(1 for s in sizes if 4 < s <= 16) >= 5  # clusters, none past 16 nodes


def test_a_lone_pass_through_node_is_never_packed(core):
    """
    s ─┬─> a0  a1 ... a7        an alias of one key (PASS_THROUGH) costs nothing alone:
       └─> t0  t1 ... t7        the eight aliases stay alone, the eight tasks are packed
    """
    graph = {"s": ()}
    graph.update({f"a{i}": ("s",) for i in range(8)})
    graph.update({f"t{i}": ("s",) for i in range(8)})
    names, index, indptr, indices, tids = build(core, graph, [k for k in graph if k != "s"])
    flags = [PASS_THROUGH if n.startswith("a") else 0 for n in names]
    opts = PlanOptions(group_weight=100, split_fanout=0, flags=flags, parallelism=2, cpus=2)
    p = core.plan(names, indptr, indices, tids, replace(opts, task_weight=10))
    check_plan(p, indptr, indices, tids, flags=flags)
    for i in range(8):
        assert list(p.group(p.group_of[index[f"a{i}"]])[0]) == [index[f"a{i}"]]
    assert len({p.group_of[index[f"t{i}"]] for i in range(8)}) <= 2


def test_priorities_put_ready_groups_first(core):
    """
    a0 a1 a2     b0 b1 b2      two independent sink bundles/chains; b is prioritized
    """
    names = ["a0", "a1", "a2", "b0", "b1", "b2"]
    deps = [(), ("a0",), ("a1",), (), ("b0",), ("b1",)]
    index, indptr, indices = core.intern(names, deps)
    plain = core.plan(names, indptr, indices, [2, 5])
    assert plain.group_of[2] < plain.group_of[5]
    p = core.plan(names, indptr, indices, [2, 5], PlanOptions(priorities=[0, 0, 0, 1, 1, 1]))
    assert p.group_of[5] < p.group_of[2]
    assert p.group_of[3] == 0  # b's chain starts the plan
    with pytest.raises(ValueError, match="priorities must have 6 entries, got 2"):
        core.plan(names, indptr, indices, [2, 5], PlanOptions(priorities=[1, 2]))


@st.composite
def cyclic_args(draw):
    """A random DAG plus a cycle: ranks a < b, k depends on k-1 for a < k <= b, and a depends on
    b (a self-dependency when a == b). Some node of the cycle is a target."""
    n, perm, names, rdeps = draw(dags(max_nodes=40))
    a = draw(st.integers(0, n - 1))
    b = draw(st.integers(a, n - 1))
    for k in range(a + 1, b + 1):
        rdeps[k] = rdeps[k] + [k - 1]
    rdeps[a] = rdeps[a] + [b]
    deps = [None] * n
    for r in range(n):
        deps[perm[r]] = _containers(draw, [names[perm[j]] for j in rdeps[r]])
    on_cycle = perm[draw(st.integers(a, b))]
    targets = draw(st.lists(st.integers(0, n - 1), max_size=5))
    targets.insert(draw(st.integers(0, len(targets))), on_cycle)
    gw = draw(st.integers(1, 30))
    return names, deps, targets, gw


def _check_cycle(e: CycleError, names, deps):
    cyc = e.cycle
    assert cyc[0] == cyc[-1]
    assert len(set(cyc[:-1])) == len(cyc) - 1
    for k, d in pairwise(cyc):
        assert d in deps[names.index(k)], f"{k!r} does not depend on {d!r}"
    for k in cyc:
        assert f"  -> {k!r}\n" in str(e)


@HYPOTHESIS
@given(cyclic_args())
def test_random_cycle(args):
    names, deps, targets, gw = args
    index, indptr, indices = _pure.intern(names, deps)
    with pytest.raises(CycleError) as info:
        _pure.plan(names, indptr, indices, targets, PlanOptions(group_weight=gw))
    _check_cycle(info.value, names, deps)


@needs_core
@HYPOTHESIS
@given(cyclic_args())
def test_parity_random_cycle(args):
    names, deps, targets, gw = args
    index, indptr, indices = _core.intern(names, deps)
    assert (index, indptr, indices) == _pure.intern(names, deps)
    with pytest.raises(CycleError) as i_core:
        _core.plan(names, indptr, indices, targets, PlanOptions(group_weight=gw))
    with pytest.raises(CycleError) as i_pure:
        _pure.plan(names, indptr, indices, targets, PlanOptions(group_weight=gw))
    assert i_core.value.cycle == i_pure.value.cycle
    assert str(i_core.value) == str(i_pure.value)
    _check_cycle(i_core.value, names, deps)


@st.composite
def missing_args(draw):
    """A random DAG in which some nodes also name keys that are not in the graph (each row
    names a missing key at most once)."""
    n, perm, names, rdeps = draw(dags(max_nodes=40))
    missing = [("missing", j) for j in range(draw(st.integers(1, 3)))]
    deps = []
    for i in range(n):
        r = perm.index(i)
        keys = [names[perm[j]] for j in rdeps[r]]
        extra = draw(st.lists(st.sampled_from(missing), max_size=2, unique=True))
        keys += extra
        deps.append(draw(st.permutations(keys)))
    # make sure some node names a missing key (up to 15 of them, to pass the limit of 10)
    for i in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=15, unique=True)):
        if not any(k in missing for k in deps[i]):
            deps[i] = list(deps[i]) + [missing[0]]
    return names, deps, missing


def _check_missing(e: MissingDependencyError, names, deps, missing):
    assert e.key in missing and e.key not in names
    # the first key met (by node, then within the row) is the one reported
    first = next(k for ds in deps for k in ds if k in missing)
    assert e.key == first
    assert e.dependents == [names[i] for i in range(len(names)) if e.key in deps[i]]
    shown = e.dependents[:10]
    assert str(e).startswith(
        f"Missing dependency {e.key!r} for dependents [{', '.join(map(repr, shown))}"
    )
    assert ("... and" in str(e)) == (len(e.dependents) > 10)


@HYPOTHESIS
@given(missing_args())
def test_random_missing(args):
    names, deps, missing = args
    with pytest.raises(MissingDependencyError) as info:
        _pure.intern(names, deps)
    _check_missing(info.value, names, deps, missing)


@needs_core
@HYPOTHESIS
@given(missing_args())
def test_parity_random_missing(args):
    names, deps, missing = args
    with pytest.raises(MissingDependencyError) as i_core:
        _core.intern(names, deps)
    with pytest.raises(MissingDependencyError) as i_pure:
        _pure.intern(names, deps)
    assert str(i_core.value) == str(i_pure.value)
    assert i_core.value.key == i_pure.value.key
    assert i_core.value.dependents == i_pure.value.dependents
    _check_missing(i_core.value, names, deps, missing)


# keys whose hashes collide in the low bits (ints 2**20 apart, -1 and -2 hash alike), that
# compare equal across types (1, 1.0, True), and tuples, strings and bytes
_awkward_keys = st.one_of(
    st.integers(-3, 3),
    st.integers(0, 50).map(lambda i: i << 20),
    st.sampled_from([1.0, 0.5, True, False, -1, -2, "", b"", ()]),
    st.text(max_size=3),
    st.tuples(st.sampled_from(["x", "y"]), st.integers(0, 5)),
)


@needs_core
@HYPOTHESIS
@given(st.lists(_awkward_keys, max_size=60, unique=True), st.lists(_awkward_keys, max_size=20))
def test_parity_key_index_is_a_dict_of_ids(names, probes):
    """The compiled core's ``KeyIndex`` answers as the twin's dict does: ids, ``len``,
    membership, ``get``, absent keys, equal keys of other types (1, 1.0, True), and keys
    built anew (equal, not identical); it pickles."""
    import pickle

    names = list(dict.fromkeys(names))  # a graph's keys come from a dict: no two are equal
    index, _, _ = _core.intern(names, [()] * len(names))
    twin, _, _ = _pure.intern(names, [()] * len(names))
    assert index == twin and twin == index and len(index) == len(twin)
    assert dict(index) == twin and sorted(map(repr, index)) == sorted(map(repr, twin))
    for k in names + probes + [tuple(list(k)) if isinstance(k, tuple) else k for k in names]:
        assert (k in index) == (k in twin)
        assert index.get(k, "absent") == twin.get(k, "absent")
        if k in twin:
            assert index[k] == twin[k]
        else:
            with pytest.raises(KeyError):
                index[k]
    assert pickle.loads(pickle.dumps(index)) == twin


@needs_core
def test_key_index_rejects_unhashable_lookups_and_numbers_many_keys():
    index, indptr, indices = _core.intern([("k", i) for i in range(100_000)], [()] * 100_000)
    with pytest.raises(TypeError):
        index.get(["k", 1])
    with pytest.raises(TypeError):
        [1] in index  # noqa: B015
    assert all(index[("k", i)] == i for i in range(0, 100_000, 997))
    assert ("k", 100_000) not in index and len(index) == 100_000
    assert repr(_core.intern(["a"], [()])[0]) == "KeyIndex({'a': 0})"
