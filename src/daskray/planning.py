"""Planning: everything between an ingested graph and a :class:`~daskray._graph.Plan`.

``daskray.get`` calls these steps in this order; each is a pure function of the graph, the
options and (for feasibility and locality) plain records that ``daskray._ray`` fetched::

    Graph ──option_classes──> Classes ──driver_classes──> Classes ──place──> Classes ─┐
      │                      (annotations)   (daskray.stores)       (locality)         │
      │                                           Classes <──feasible (node records)───┘
      └──priorities, sizing──> PlanOptions ──_graph.plan (the core)──> Plan

Option classes
--------------
Every node runs with some Ray options: ``daskray.ray-remote-args`` and the compute's keywords
(class 0, the *base*), merged with its own annotations (see :mod:`daskray.annotations`) and,
for tasks reading persisted values, a soft node affinity. Nodes with equal options share a
class; one interning table (:class:`Classes`) numbers them, so the classes that annotations
make and those that locality derives from them never collide. The core never fuses nodes of
different classes, so a Ray task's options are its group's.

Driver classes
--------------
A few tasks can only run in the driver process: the writes to a target that cannot be pickled
to a Ray worker (an open netCDF/HDF5 file, a thread lock; see :mod:`daskray.stores`).
:func:`driver_classes` gives them, and every task downstream of them, a class of their own
(their options plus :data:`DRIVER`); the core never fuses them with Ray tasks, and
``_ray.submit`` keeps their groups for ``_ray.gather`` to run here.

Sizing
------
:func:`sizing` reads the ``daskray.fusion`` options once. Without a profile every node costs
``1 + its number of dependencies`` and groups aim at ``groups-per-cpu`` per CPU of equal count,
between ``min-group-size`` and ``max-group-size``. With a profile (``daskray.tune``) a node
costs its key prefix's measured microseconds and groups aim at an equal share of the estimated
time, never under ``min-duration`` (below it a Ray task's own overhead dominates). Bundles of
independent sources or sinks are smaller again by ``groups-per-cpu``, since everything
downstream of a source bundle waits for all of it.

Locality
--------
Ray prefers, for a task whose arguments exist, the node holding most of their bytes -- but
only while that node has a free CPU; a busy node makes the raylet send the task elsewhere,
which then pulls the bytes. daskray submits a whole plan in one pass, so what exists at
submission are the values persisted by an earlier compute and ObjectRefs in the graph. For
those the driver knows where each lives and how large it is (``_ray.object_locations``), and
:func:`place` turns that into placement: every task downstream of located values carries, per
node, the bytes of located values it (transitively) reads; a task whose best node reaches
``daskray.locality.min-bytes`` gets its class's options plus a soft affinity to that node
(unless its options name a scheduling strategy already: the user's placement wins). A soft
affinity waits for a CPU on that node instead of spilling, and the core keeps tasks of
different nodes apart, so a chain on a persisted block stays one Ray task on the block's node.

Feasibility
-----------
:func:`feasible` checks every class against the cluster's node records (``ray.nodes()``) before
anything is submitted: a request no alive node can meet (GPUs on a cluster without them, an
unknown custom resource, too much memory; or more than the node a hard ``workers`` affinity
pins it to) is a :class:`~daskray.annotations.ResourceError` naming the keys, and ``workers``
names are resolved to node ids (:func:`resolve_workers`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import dask
from dask.utils import key_split

from . import _graph, pools
from ._compat import Alias, AnnotationsTombstone, DataNode
from .annotations import (
    NODE_AFFINITY,
    OPTIONS,
    POOL,
    WORKERS,
    AnnotationError,
    ResourceError,
    WorkerError,
    bad_annotation,
    freeze,
    to_ray_options,
)
from .ingest import Graph, is_object_ref

# --------------------------------------------------------------------------------------------
# option classes
# --------------------------------------------------------------------------------------------


class Classes:
    """Ray options classes: ``options[c]`` are the options of class ``c`` (class 0: the base
    options), ``of[i]`` node ``i``'s class, or ``of`` is None when every node is in class 0.

    >>> c = Classes({"num_cpus": 1})
    >>> c.intern({"num_cpus": 2}), c.intern({"num_cpus": 1}), c.intern({"num_cpus": 2})
    (1, 0, 1)
    """

    __slots__ = ("of", "options", "_table")

    def __init__(self, base: dict, of: list | None = None, options: list | None = None) -> None:
        self.options = [base] if options is None else list(options)
        self.of = of
        self._table = {freeze(o): c for c, o in enumerate(self.options)}

    def intern(self, options: dict) -> int:
        """The class of ``options``, new if no class has them yet."""
        frozen = freeze(options)
        cls = self._table.get(frozen)
        if cls is None:
            cls = self._table[frozen] = len(self.options)
            self.options.append(options)
        return cls

    def copy(self) -> Classes:
        return Classes(self.options[0], None if self.of is None else list(self.of), self.options)

    def needs_check(self) -> bool:
        """Whether any node asks for options at all (else nothing can be infeasible)."""
        return self.of is not None or any(self.options[0].values())

    def keys_of(self, cls: int, names: list, limit: int = 5) -> list:
        """Up to ``limit`` keys of class ``cls`` (for error messages)."""
        if self.of is None:
            return names[:limit]
        out = []
        for i, c in enumerate(self.of):
            if c == cls:
                out.append(names[i])
                if len(out) == limit:
                    break
        return out


def option_classes(graph: Graph, base: dict[str, Any]) -> Classes:
    """The options class of every node: ``base`` merged with its own annotations (for tasks
    on an actor pool, :func:`pool_options`)."""
    per_key: dict[Any, dict] = {}
    index = graph.index
    for name in OPTIONS:
        for key, value in graph.annotations.get(name, {}).items():
            if key in index and not isinstance(value, AnnotationsTombstone):
                per_key.setdefault(key, {})[name] = value
    if POOL in base:
        base = pool_options(base, "<compute keywords>")
    classes = Classes(base)
    if not per_key:
        return classes
    of = [0] * len(graph.names)
    for key, ann in per_key.items():
        opts = dict(base)
        own = to_ray_options(ann, key)
        if POOL in own or POOL in base:
            placed = [k for k in _NOT_ON_POOLS if k in own]
            if POOL in own and placed:
                raise AnnotationError(
                    f"Invalid annotations on key {key!r}: a task on the actor pool "
                    f"{own[POOL]!r} runs where its actors are, with their resources; drop "
                    f"{placed} (give the pool its resources: daskray.ActorPool(..., num_gpus=...))",
                    [key],
                )
            if POOL not in own:  # its own placement wins over a compute-wide pool
                opts = {k: v for k, v in opts.items() if k not in (POOL, *_NOT_ON_POOLS)}
            else:
                opts = pool_options({**opts, **own}, key)
                own = {}
        if "resources" in own and "resources" in base:
            own["resources"] = {**base["resources"], **own["resources"]}
        opts.update(own)
        of[index[key]] = classes.intern(opts)
    if len(classes.options) > 1:
        _aliases_follow(graph, of, per_key)
        classes.of = of
    return classes


def _aliases_follow(graph: Graph, of: list, own: dict) -> None:
    """An ``Alias`` without annotations of its own takes its target's class (in place).

    An alias is a second name for its target's value (``da.concatenate`` of blocks, a dask-expr
    projection); of a class of its own it would run as a Ray task of its own -- wherever Ray
    puts it, so a persisted alias of a block pinned with ``workers=`` would live on another node
    -- instead of being fused into the group that makes the value (or handed on as its ref).
    """
    nodes, names, indptr, indices = graph.nodes, graph.names, graph.indptr, graph.indices
    for i, node in enumerate(nodes):
        if type(node) is not Alias or names[i] in own:
            continue
        j = i  # follow a chain of aliases to the value behind it
        while type(nodes[j]) is Alias and names[j] not in own and indptr[j + 1] - indptr[j] == 1:
            j = indices[indptr[j]]
            if j == i:
                break
        of[i] = of[j]


#: the options key of a class whose groups run in the driver process, not on Ray (see
#: :mod:`daskray.stores`); :func:`daskray._ray.submit` never hands it to Ray
DRIVER = "daskray.driver"


def descendants(indptr: Any, indices: Any, start: Any, reverse: tuple | None = None) -> set:
    """The ids in ``start`` and every node that (transitively) depends on one of them;
    ``reverse``: the graph's ``transpose``, when the caller has it already.

    >>> sorted(descendants([0, 0, 1, 1, 2], [0, 2], [0]))
    [0, 1]
    """
    dptr, dependents = reverse if reverse is not None else _graph.transpose(indptr, indices)
    seen = set(start)
    stack = list(seen)
    while stack:
        i = stack.pop()
        for c in dependents[dptr[i] : dptr[i + 1]]:
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def driver_classes(graph: Graph, classes: Classes) -> Classes:
    """``classes`` with every task that must run in the driver (``graph.driver``) and every
    task downstream of one in a class of its own: its options plus :data:`DRIVER`.

    >>> from daskray.ingest import ingest
    >>> g = ingest({"a": 1, "b": (abs, "a"), "c": (abs, "b"), "d": (abs, "a")}, ["c", "d"])
    >>> g.driver = [g.index["b"]]
    >>> c = driver_classes(g, Classes({}))
    >>> [c.options[c.of[g.index[k]]] for k in "abcd"]
    [{}, {'daskray.driver': True}, {'daskray.driver': True}, {}]
    """
    if not len(graph.driver):
        return classes
    seen = descendants(graph.indptr, graph.indices, graph.driver)
    out = classes.copy()
    of = out.of if out.of is not None else [0] * len(graph.names)
    derived: dict[int, int] = {}
    for i in sorted(seen):
        cls = of[i]
        new = derived.get(cls)
        if new is None:
            new = derived[cls] = out.intern({**out.options[cls], DRIVER: True})
        of[i] = new
    out.of = of
    return out


#: options that place a Ray task, meaningless for a task on an actor pool
_NOT_ON_POOLS = ("num_cpus", "num_gpus", "memory", "resources", "scheduling_strategy")


def pool_options(opts: dict, key: Any) -> dict:
    """The options of a task on the actor pool ``opts["ray_actor_pool"]`` (a name or a
    :class:`~daskray.pools.ActorPool`): the pool itself, its actors' resources (what
    :func:`feasible` checks) and the task's retries (``max_retries``, default 3 as for a Ray
    task, ``retry_exceptions``); nothing else of ``opts`` applies to it.

    >>> pool = pools.ActorPool("doc-planning", dict, num_gpus=1)
    >>> pool_options({"ray_actor_pool": "doc-planning", "num_cpus": 4}, "k")
    {'ray_actor_pool': ActorPool('doc-planning', size=1), 'num_cpus': 1, 'num_gpus': 1, 'max_retries': 3}
    >>> pool.close()
    """  # noqa: E501
    pool = opts[POOL]
    if isinstance(pool, str):
        found = pools.lookup(pool)
        if found is None:
            raise AnnotationError(
                f"Unknown actor pool {pool!r} on key {key!r}: declare it first with "
                f"daskray.ActorPool({pool!r}, setup, size=...); declared: {pools.names()}",
                [key],
            )
        pool = found
    out: dict[str, Any] = {POOL: pool, "num_cpus": pool.num_cpus}
    for name, value in (("num_gpus", pool.num_gpus), ("memory", pool.memory)):
        if value:
            out[name] = value
    if pool.resources:
        out["resources"] = dict(pool.resources)
    out["max_retries"] = opts.get("max_retries", 3)
    if opts.get("retry_exceptions"):
        out["retry_exceptions"] = True
    return out


def priorities(names: list, index: dict, annotations: dict[str, dict]) -> list | None:
    """Per-node ``priority`` annotations (higher is submitted earlier; default 0), or None.

    >>> priorities(["a", "b"], {"a": 0, "b": 1}, {"priority": {"b": 5}})
    [0, 5]
    """
    given = annotations.get("priority")
    if not given:
        return None
    out = [0] * len(names)
    for key, value in given.items():
        if key not in index or isinstance(value, AnnotationsTombstone):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_annotation(key, "priority", value, "an int (higher runs earlier)")
        out[index[key]] = value
    return out if any(out) else None


# --------------------------------------------------------------------------------------------
# sizing
# --------------------------------------------------------------------------------------------


#: what one unit of the counted weights (a task, or one of its dependencies) costs in daskray's
#: worker: a 10,000-task lattice of tiny tasks (29,800 units) runs in 0.45 s in one process
_COUNTED_UNIT_S = 1.5e-5


@dataclass(frozen=True)
class Sizing:
    """Per-node ``weights`` (None: the core's default, 1 + number of dependencies), the
    target weights of a group and of a bundle, and how many groups should be runnable at once
    (``groups-per-cpu`` x CPUs; 0 without fusion), and what one Ray task costs in weight
    units (``task-overhead``: microseconds with a profile, else about 15 us a unit); with a
    profile that has ``sizes``, per node what moving its value to another group costs (its
    bytes over ``transfer-rate``, in microseconds)."""

    weights: list | None
    group: int
    bundle: int
    parallelism: int = 0
    task: int = 0
    moves: list | None = None


def sizing(graph: Graph, cpus: int, fuse: bool | None = None, heavy: tuple | None = None) -> Sizing:
    """How large fused groups are on ``cpus`` CPUs (see the module docstring): counted, or
    timed with ``daskray.fusion.profile``. ``fuse`` overrides ``daskray.fusion.enabled``;
    ``heavy``: :func:`heavy_exchanges`.

    >>> from daskray.ingest import ingest
    >>> g = ingest({("x", i): i for i in range(100)}, [("x", i) for i in range(100)])
    >>> sizing(g, cpus=2)
    Sizing(weights=None, group=13, bundle=3, parallelism=8, task=67, moves=None)
    """
    cfg = dask.config.get("daskray.fusion")
    if not (cfg["enabled"] if fuse is None else fuse):
        return Sizing(None, 1, 1)
    per_cpu = max(1, int(cfg["groups-per-cpu"]))
    parallelism = per_cpu * cpus if cfg["pack-levels"] else 0
    profile = load_profile(cfg["profile"])
    overhead = float(cfg["task-overhead"])
    task = round(overhead / (1e-6 if profile is not None else _COUNTED_UNIT_S))
    moves = None
    if profile is not None:  # measured durations: weights in microseconds
        weights = profile_weights(graph.names, profile)
        if profile.get("sizes"):
            moves = profile_moves(graph.names, profile, float(cfg["transfer-rate"]))
        floor = max(1, round(float(cfg["min-duration"]) * 1e6))
        group = max(floor, -(-sum(weights) // (cpus * per_cpu)))
        bundle = max(1, group // per_cpu)
    else:
        lo = max(1, int(cfg["min-group-size"]))
        hi = max(lo, int(cfg["max-group-size"]))
        total = len(graph.nodes) + len(graph.indices)  # the core's default weights, summed
        group = min(hi, max(lo, -(-total // (cpus * per_cpu))))
        weights, bundle = None, max(lo, group // per_cpu)
    if heavy is not None and heavy[0] and group > 1:
        weights = _exchange_weights(graph, weights, group, heavy)
    return Sizing(weights, group, bundle, parallelism, task, moves)


def heavy_exchanges(graph: Graph, store: int | None) -> tuple[list, list, list]:
    """Ids of the maps and reducers, of the pieces, and of the sources upstream of the maps,
    of the graph's heavy exchanges (and rechunks): those whose partitions pass
    ``daskray.exchange.heavy-bytes`` and that move more than half of ``store`` (the cluster's
    object store; None: unknown, as in debug mode). What fits in memory is fused as any tasks
    (see :mod:`daskray.exchange`)."""
    if graph.exchange is None:
        return [], [], []
    limit = int(dask.config.get("daskray.exchange.heavy-bytes"))
    heavy: list = []
    free: list = []
    upstream: list = []
    for w in graph.exchange:
        if w.partition_bytes > limit and (store is None or w.total_bytes > store // 2):
            heavy.extend(w.heavy)
            free.extend(w.free)
            upstream.extend(w.upstream)
    return heavy, free, upstream


def _flags(graph: Graph, heavy: list) -> Any:
    """The core's per-node flags: the graph's, plus ``PACK_ALONE`` on ``heavy`` (heavy
    exchanges' maps and reducers, and the sources upstream of their maps)."""
    if not heavy:
        return graph.flags
    flags = list(graph.flags) if graph.flags is not None else [0] * len(graph.nodes)
    for i in heavy:
        flags[i] |= _graph.PACK_ALONE
    return flags


def _exchange_weights(graph: Graph, weights: list | None, group: int, heavy: tuple) -> list:
    """Heavy exchanges' maps and reducers weigh just over half a group (no two share one; the
    chains reading a reducer's output, and its free pieces, still join it), their pieces
    nothing, the sources upstream of their maps just over a bundle (see
    :mod:`daskray.exchange`)."""
    if weights is None:
        indptr = graph.indptr
        weights = [1 + indptr[i + 1] - indptr[i] for i in range(len(graph.nodes))]
    for i in heavy[2]:  # over a bundle: never bundled together, still fused with a map
        weights[i] = max(weights[i], group // 4 + 1)
    for i in heavy[0]:
        weights[i] = group // 2 + 1
    for i in heavy[1]:
        weights[i] = 0
    return weights


_profiles: dict[Any, dict] = {}


def load_profile(profile: Any) -> dict | None:
    """The profile ``daskray.fusion.profile`` names: a dict as it is, a path read (and cached
    until the file changes); None for None. Raises ``ValueError`` for a malformed one."""
    if profile is None:
        return None
    if isinstance(profile, dict):
        return _checked_profile(profile, "the daskray.fusion.profile dict")
    path = os.fspath(profile)
    try:
        stamp = (path, os.stat(path).st_mtime_ns)
    except OSError as e:
        raise ValueError(
            f"daskray.fusion.profile names {path!r}, which cannot be read ({e}); write one "
            "with daskray.tune(...) or `daskray tune`, or unset the option"
        ) from None
    cached = _profiles.get(stamp)
    if cached is None:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except ValueError as e:
                raise ValueError(f"daskray.fusion.profile {path!r} is not JSON: {e}") from None
        cached = _profiles[stamp] = _checked_profile(data, repr(path))
    return cached


def _checked_profile(data: Any, what: str) -> dict:
    prefixes = data.get("prefixes") if isinstance(data, dict) else None
    sizes = data.get("sizes", {}) if isinstance(data, dict) else None
    if (
        not isinstance(prefixes, dict)
        or not isinstance(sizes, dict)
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for v in (*prefixes.values(), *sizes.values())
        )
    ):
        raise ValueError(
            f"{what} is not a daskray profile: expected {{'prefixes': {{prefix: seconds per "
            "task >= 0, ...}, 'default': seconds, 'sizes': {prefix: bytes >= 0, ...}}} as "
            "daskray.tune writes it ('sizes' may be left out)"
        )
    return data


def profile_weights(names: list, profile: dict) -> list[int]:
    """Per-node cost in microseconds (at least 1) from ``profile``.

    >>> profile_weights(["inc-1", ("spin", 0)], {"prefixes": {"spin": 0.04}, "default": 1e-6})
    [1, 40000]
    """
    table = profile["prefixes"]
    default = float(profile.get("default") or 0.0)
    return [max(1, round(table.get(key_split(k), default) * 1e6)) for k in names]


def profile_moves(names: list, profile: dict, rate: float) -> list[int]:
    """Per node, what moving its value between groups costs in microseconds: the mean bytes
    of its prefix in ``profile["sizes"]`` over ``rate`` bytes per second (0 when unknown).

    >>> profile_moves(["blk-1", ("x", 0)], {"sizes": {"blk": 8_000_000}}, 1e9)
    [8000, 0]
    """
    table = profile["sizes"]
    scale = 1e6 / rate
    return [round(table.get(key_split(k), 0) * scale) for k in names]


def make_plan(
    graph: Graph,
    cpus: int,
    fuse: bool | None = None,
    classes: Classes | None = None,
    store: int | None = None,
) -> _graph.Plan:
    """Plan ``graph`` for ``cpus`` CPUs and ``store`` bytes of object store (None: unknown):
    its sizing, priorities and classes, as one :class:`~daskray._graph.PlanOptions` for the
    core."""
    heavy = heavy_exchanges(graph, store)
    size = sizing(graph, cpus, fuse, heavy)
    cfg = dask.config.get("daskray.fusion")
    options = _graph.PlanOptions(
        group_weight=size.group,
        bundle_weight=size.bundle,
        split_fanout=int(cfg["split-fanout"]) if size.group > 1 else 0,
        cluster_fanout=int(cfg["cluster-fanout"]),
        weights=size.weights,
        classes=classes.of if classes is not None else None,
        flags=_flags(graph, heavy[0] + heavy[2]),
        priorities=priorities(graph.names, graph.index, graph.annotations),
        parallelism=size.parallelism,
        cpus=cpus,
        task_weight=size.task,
        move_weights=size.moves,
    )
    return _graph.plan(graph.names, graph.indptr, graph.indices, graph.targets, options)


# --------------------------------------------------------------------------------------------
# locality
# --------------------------------------------------------------------------------------------


def held_values(graph: Graph) -> list[int]:
    """Ids of the nodes whose values already live in Ray's object store (persisted values and
    ObjectRefs in the graph): the ones whose location :func:`place` can use."""
    if graph.flags is None:
        return []
    nodes = graph.nodes
    return [
        i
        for i, f in enumerate(graph.flags)
        if f and type(nodes[i]) is DataNode and is_object_ref(nodes[i].value)
    ]


def place(
    indptr: Any,
    indices: Any,
    located: dict[int, tuple[str, int]],
    classes: Classes,
    min_bytes: int,
) -> tuple[Classes, dict[int, str]]:
    """Soft node affinity for the tasks reading located values (see the module docstring).

    ``indptr``/``indices``: the graph's dependencies (CSR); ``located``: node id -> ``(Ray
    node id, bytes)`` of the values whose location is known. Returns the new classes and the
    node chosen for each placed task.

    >>> # 0 and 1 are persisted blocks on nodes "A" and "B"; 2 reads 0, 3 reads 1, 4 reads both
    >>> indptr, indices = [0, 0, 0, 1, 2, 4], [0, 1, 0, 1]
    >>> classes, home = place(indptr, indices, {0: ("A", 8), 1: ("B", 4)}, Classes({}), 4)
    >>> home
    {2: 'A', 3: 'B', 4: 'A'}
    >>> classes.of, classes.options[classes.of[3]]
    ([0, 0, 1, 2, 1], {'scheduling_strategy': ('node_affinity', 'B', True)})
    """
    n = len(indptr) - 1
    if not located or n == 0:
        return classes, {}
    home = _best_nodes(indptr, indices, located, min_bytes)
    if not home:
        return classes, {}
    placed = classes.copy()
    of = placed.of if placed.of is not None else [0] * n
    derived: dict[tuple[int, str], int] = {}
    for i, node in sorted(home.items()):  # class ids in node order, whatever the walk's order
        cls = of[i]
        if "scheduling_strategy" in placed.options[cls] or POOL in placed.options[cls]:
            continue  # the user's placement wins; a pool's tasks run where its actors are
        new = derived.get((cls, node))
        if new is None:
            opts = {**placed.options[cls], "scheduling_strategy": (NODE_AFFINITY, node, True)}
            new = derived[(cls, node)] = placed.intern(opts)
        of[i] = new
    placed.of = of
    return placed, dict(sorted(home.items()))


def _best_nodes(
    indptr: Any, indices: Any, located: dict[int, tuple[str, int]], min_bytes: int
) -> dict[int, str]:
    """The node holding most of each task's (transitively read) located bytes, where those
    reach ``min_bytes``: a walk in Kahn's order over the located values' descendants."""
    dptr, dependents = _graph.transpose(indptr, indices)
    seen = descendants(indptr, indices, located, (dptr, dependents))
    waiting = {i: sum(1 for d in indices[indptr[i] : indptr[i + 1]] if d in seen) for i in seen}
    weight: dict[int, dict[str, int]] = {i: {node: b} for i, (node, b) in located.items()}
    home: dict[int, str] = {}
    ready = [i for i in located if waiting[i] == 0]
    while ready:
        i = ready.pop()
        if i not in located:
            acc: dict[str, int] = {}
            for d in indices[indptr[i] : indptr[i + 1]]:
                for node, b in weight.get(d, {}).items():
                    acc[node] = acc.get(node, 0) + b
            if acc:
                best = max(acc, key=acc.__getitem__)
                weight[i] = {best: sum(acc.values())}  # its output, as large as its inputs
                if acc[best] >= min_bytes:
                    home[i] = best
        for c in dependents[dptr[i] : dptr[i + 1]]:
            waiting[c] -= 1
            if waiting[c] == 0:
                ready.append(c)
    return home


# --------------------------------------------------------------------------------------------
# feasibility
# --------------------------------------------------------------------------------------------


def is_strategy(strategy: Any, kind: str) -> bool:
    """Whether ``strategy`` is the plain-data ``(kind, node(s), soft)`` form."""
    return type(strategy) is tuple and len(strategy) == 3 and strategy[0] == kind


def feasible(classes: Classes, names: list, records: list) -> Classes:
    """``classes`` with ``workers`` affinities resolved to node ids, checked against
    ``records`` (``ray.nodes()``): raises :class:`ResourceError` if some class asks for more
    than any alive node offers, or than the node a hard affinity pins it to."""
    alive = [n for n in records if n.get("Alive")]
    out = classes.copy()
    for cls, opts in enumerate(out.options):
        strategy = opts.get("scheduling_strategy")
        if is_strategy(strategy, WORKERS):
            keys = classes.keys_of(cls, names)
            node = resolve_workers(strategy[1], strategy[2], records, keys)
            strategy = (NODE_AFFINITY, node, strategy[2])
            out.options[cls] = {**opts, "scheduling_strategy": strategy}
        pinned = is_strategy(strategy, NODE_AFFINITY) and not strategy[2]
        nodes = [n for n in alive if n["NodeID"] == strategy[1]] if pinned else alive
        need = _request(opts)
        if any(all(n["Resources"].get(k, 0) >= v for k, v in need.items()) for n in nodes):
            if POOL in opts:
                _pool_fits(opts[POOL], need, nodes, classes.keys_of(cls, names))
            continue
        keys = classes.keys_of(cls, names)
        hidden = ("node:", "object_store_memory")
        offered = [
            {k: v for k, v in n["Resources"].items() if not k.startswith(hidden)} for n in nodes
        ]
        where = (
            f"the node {strategy[1]} they are pinned to (workers=..., allow_other_workers="
            f"False) offers {offered[0] if offered else {}}"
            if pinned
            else f"the cluster's nodes offer {offered}"
        )
        raise ResourceError(
            f"No Ray node can run the tasks {keys}{' ...' if len(keys) == 5 else ''}: they "
            f"request {need}, and {where}. Lower the request (dask.annotate(resources=...), "
            "ray_remote_args), pin them elsewhere or add nodes that have it.",
            keys,
            need,
        )
    return out


def _pool_fits(pool: Any, need: dict, nodes: list, keys: list) -> None:
    """Raise :class:`ResourceError` unless ``nodes`` can hold ``pool.size`` actors that each
    hold ``need`` (counted against the nodes' total resources)."""
    fits = 0
    for n in nodes:
        res = n["Resources"]
        fits += min((int(res.get(k, 0) // v) for k, v in need.items()), default=pool.size)
    if fits < pool.size:
        raise ResourceError(
            f"The actor pool {pool.name!r} of the tasks {keys} needs {pool.size} actors of "
            f"{need}, and the cluster's alive nodes hold {fits}. Make the pool smaller, lower "
            "its resources or add nodes.",
            keys,
            need,
        )


def _request(opts: dict) -> dict:
    """The resources a Ray task with ``opts`` needs on one node (nonzero amounts only)."""
    need = {"CPU": opts.get("num_cpus", 1), "GPU": opts.get("num_gpus", 0)}
    need["memory"] = opts.get("memory", 0)
    need.update(opts.get("resources") or {})
    return {k: v for k, v in need.items() if v}


def resolve_workers(workers: tuple, soft: bool, records: list, keys: Any) -> str:
    """The node id a ``workers`` annotation pins its tasks to: the first entry naming an alive
    node (node id, IP or hostname) in ``records`` (``ray.nodes()``).

    Every entry must name a node the cluster knows, and an IP or hostname only one alive node
    (else the choice would be arbitrary); with ``soft`` and none of them alive, the first dead
    one (Ray then runs the tasks elsewhere). Otherwise :class:`WorkerError` names ``keys``.
    """
    chosen = dead = None
    for w in workers:
        matches = [n for n in records if n["NodeID"] == w] or [
            n for n in records if w in (n.get("NodeManagerAddress"), n.get("NodeManagerHostname"))
        ]
        live = list(dict.fromkeys(n["NodeID"] for n in matches if n.get("Alive")))
        if not matches:
            problem = f"{w!r} is no node of the Ray cluster"
        elif len(live) > 1:
            problem = f"{w!r} is the address of {len(live)} alive nodes {live}"
        else:
            if chosen is None and live:
                chosen = live[0]
            if dead is None and not live:
                dead = matches[0]["NodeID"]
            continue
        known = {n["NodeID"]: n.get("NodeManagerAddress") for n in records if n.get("Alive")}
        raise WorkerError(
            f"Invalid annotation workers={list(workers)!r} on keys {keys}: {problem}. Name "
            "nodes by node id (ray.nodes(), ray.get_runtime_context().get_node_id()), or by an "
            f"IP or hostname of exactly one node; the alive nodes (id: IP) are {known}.",
            keys,
            workers,
        )
    if chosen is None and soft:
        chosen = dead
    if chosen is None:
        raise WorkerError(
            f"Invalid annotation workers={list(workers)!r} on keys {keys}: none of these "
            "nodes is alive. Pin the tasks to an alive node, or let them run elsewhere with "
            "allow_other_workers=True.",
            keys,
            workers,
        )
    return chosen
