"""Ingest: every graph form dask hands a scheduler, turned into one interned graph.

dask calls a scheduler as ``get(dsk, keys)`` where ``dsk`` is any of

* a dask-expr expression (``dask.compute`` passes ``FinalizeCompute(expr)``): we ask it for
  ``__dask_graph__()`` -- or, when its layers carry annotations, run its unoptimized graph
  (see :mod:`daskray.annotations`);
* a ``HighLevelGraph`` (a Mapping of layers) or a plain dict, whose values are
  ``dask._task_spec`` nodes (``Task``, ``DataNode``, ``Alias``, containers), legacy tuples
  ``(func, *args)``, references to other keys, or literal data;

and ``keys`` is a key or an arbitrarily nested list of keys; the answer has the same nesting,
lists as tuples (dask's ``nested_get``). ``dask._task_spec.convert_legacy_graph`` (dask's own,
public conversion) normalizes every value to a ``GraphNode``; the compiled core then interns
keys to ids. Everything that can be wrong with the request -- a requested key that is not in
the graph, an unhashable key, a task whose function is not callable, a missing dependency, a
cycle -- raises here or in the core, before anything is submitted.
"""

from __future__ import annotations

from itertools import repeat
from operator import attrgetter, is_
from typing import Any

from . import _graph, exchange
from ._compat import Alias, DataNode, GraphNode, Task, convert_legacy_graph
from ._graph import InvalidKeyError, MissingDependencyError
from .annotations import graph_and_annotations
from .futures import RayFuture, persisted
from .stores import driver_bound
from .worker import same


class Graph:
    """An ingested graph: ``names[i]``/``nodes[i]`` are key and ``GraphNode`` of id ``i``."""

    __slots__ = (
        "names",
        "nodes",
        "index",
        "indptr",
        "indices",
        "targets",
        "request",
        "flags",
        "annotations",
        "driver",
        "exchange",
    )

    def __init__(
        self, names, nodes, index, indptr, indices, targets, request, flags, annotations, driver=()
    ):
        self.exchange = None  # exchange.Weighed of each exchange and rechunk, ids for keys
        self.driver = driver  # ids of the tasks that must run in the driver (daskray.stores)
        self.flags = flags
        self.annotations = annotations
        self.names = names
        self.nodes = nodes
        self.index = index
        self.indptr = indptr
        self.indices = indices
        self.targets = targets
        self.request = request

    def repack(self, values: list) -> Any:
        """Arrange ``values`` (one per entry of ``targets``) as the request was nested."""
        it = iter(values)

        def build(req):
            if isinstance(req, list):
                return tuple(build(r) for r in req)
            return next(it)

        return build(self.request)


def _flatten_request(keys: Any, out: list) -> None:
    stack = [keys]
    while stack:
        k = stack.pop()
        if isinstance(k, list):
            stack.extend(reversed(k))
        else:
            out.append(k)


_dependencies = attrgetter("dependencies")
_key = attrgetter("key")
_func = attrgetter("func")


def _functions(nodes: list, types: set) -> set | list:
    """The distinct functions of the graph's tasks: a set, built without a list of one entry
    per task (10^7 of them take 80 MB), or a list when one is unhashable."""
    if Task not in types:
        return []
    tasks = nodes if types == {Task} else [n for n in nodes if type(n) is Task]
    try:
        return set(map(_func, tasks))
    except TypeError:
        return list(map(_func, tasks))


def _flags(nodes: list, types: set) -> list | None:
    """Per-node core flags (``BLOCK_FUSION``, ``PASS_THROUGH``), or None when no node sets any.

    ``GraphNode.block_fusion`` is a property that only subclasses override, so only nodes of
    such types are asked. A ``DataNode`` holding a Ray ObjectRef (a persisted value) also runs
    alone: its ref is handed to consumers as a task argument, which Ray resolves; inside a
    fused group it would reach the task as a bare ref. An ``Alias`` of one key is
    ``PASS_THROUGH``: alone in its group it costs nothing (``daskray._ray.submit`` hands on its
    target's ref), packed with other groups it would be a Ray task copying the value.
    """
    base = GraphNode.block_fusion
    special = {t for t in types if t.block_fusion is not base}
    refs = DataNode in types and any(is_object_ref(n.value) for n in nodes if type(n) is DataNode)
    if not special and not refs and Alias not in types:
        return None
    block, alone = _graph.BLOCK_FUSION, _graph.PASS_THROUGH
    flags = [
        block
        if (type(n) in special and n.block_fusion)
        or (type(n) is DataNode and is_object_ref(n.value))
        else alone
        if type(n) is Alias and len(n.dependencies) == 1
        else 0
        for n in nodes
    ]
    return flags if any(flags) else None


def is_object_ref(value: Any) -> bool:
    t = type(value)
    return t.__name__ == "ObjectRef" and t.__module__.startswith("ray")


def _nodes(
    mapping: dict, wanted: list, annotated: frozenset = frozenset(), store: Any = None
) -> tuple[list, list, set, dict | None, tuple | None]:
    """Keys and ``GraphNode`` values of a task mapping, checked.

    A mapping whose values are all ``GraphNode`` already (what dask-expr and HighLevelGraph
    layers produce) is taken as it is; only legacy values go through dask's
    ``convert_legacy_graph``. The per-node checks run as C-level ``map``/comprehensions: on
    10^6 nodes each Python-level step per node costs a tenth of a second. The fourth result is
    the dict whose keys ``names`` are, in order (for :func:`daskray._graph.intern` to reuse
    their hashes), or None. The fifth: when dask tasks shuffles were replaced by exchanges
    (:mod:`daskray.exchange`; none whose intermediate keys are ``wanted``) or it has a tasks
    rechunk, a ``Weighed`` for each, else None.
    """
    nodes = list(mapping.values())
    source = None
    if all(map(isinstance, nodes, repeat(GraphNode))):
        names = list(mapping)
        source = mapping
        types = set(map(type, nodes))
        if Alias in types:  # drop self-aliases, as convert_legacy_graph does
            keep = [
                i for i, n in enumerate(nodes) if not (type(n) is Alias and n.target == names[i])
            ]
            if len(keep) < len(names):
                names = [names[i] for i in keep]
                nodes = [nodes[i] for i in keep]
                source = None
    else:
        converted = convert_legacy_graph(mapping)
        names = list(converted)
        nodes = list(converted.values())
        source = converted
        types = set(map(type, nodes))
    funcs = _functions(nodes, types)
    if not all(map(callable, funcs)):
        for k, node in zip(names, nodes):
            if type(node) is Task and not callable(node.func):
                raise TypeError(
                    f"Task {k!r} has a non-callable function {node.func!r}; a task is "
                    "(callable, *args) or dask._task_spec.Task(key, callable, ...)"
                )
    if not all(map(is_, map(_key, nodes), names)) and list(map(_key, nodes)) != names:
        for i, (k, node) in enumerate(zip(names, nodes)):
            if node.key != k:
                # stored under another key than its own (a top-level List with key None, an
                # Alias or DataNode built without a key): results are keyed by the graph key
                nodes[i] = Task(k, same, node)
    rewritten = exchange.rewrite(names, nodes, wanted, funcs, annotated, store) if funcs else None
    if rewritten is not None:
        names_, nodes, weighed = rewritten
        if names_ is not names:
            source = None
        return names_, nodes, types, source, weighed
    return names, nodes, types, source, None


def _add_held(names, nodes, deps, types, wanted, held, mapping) -> None:
    """Add a ``DataNode`` holding the ObjectRef of each persisted key in ``wanted`` that the
    graph has no task for."""
    extra = {
        k: None
        for k in wanted
        if _hashable(k) and k in held and not isinstance(mapping.get(k), GraphNode)
    }
    if extra:
        names.extend(extra)
        nodes.extend(DataNode(k, held[k]) for k in extra)
        deps.extend(() for _ in extra)
        types.add(DataNode)


def _hashable(k: Any) -> bool:
    try:
        hash(k)
    except TypeError:
        return False
    return True


def ingest(dsk: Any, keys: Any, store: Any = None) -> Graph:
    """Normalize ``dsk`` and ``keys`` into a :class:`Graph`; raise on bad input. ``store``: a
    callable answering the cluster's object store bytes, asked only when the graph holds a
    heavy exchange that joins read (see :func:`daskray.exchange.rewrite`)."""
    mapping, annotations = graph_and_annotations(dsk)
    if not isinstance(mapping, dict):
        mapping = dict(mapping)  # materialize a HighLevelGraph's layers
    flat: list = []
    _flatten_request(keys, flat)
    annotated = frozenset(k for keys in annotations.values() for k in keys)
    names, nodes, types, source, exchanged = _nodes(mapping, flat, annotated, store)
    deps = list(map(_dependencies, nodes))
    held = persisted()
    if held:  # values persisted on Ray that this graph refers to: their refs, as data
        if DataNode in types:
            for i, n in enumerate(nodes):
                if type(n) is DataNode and type(n.value) is RayFuture:
                    nodes[i] = DataNode(n.key, n.value.ref)
        # requested as they are (dask's conversion drops a graph entry whose value is a future)
        _add_held(names, nodes, deps, types, flat, held, mapping)
    try:
        index, indptr, indices = _graph.intern(names, deps, source)
    except MissingDependencyError as e:
        if e.key not in held:
            raise
        # referred to by key only (dask-expr) or as a graph entry dropped in conversion
        _add_held(names, nodes, deps, types, [d for ds in deps for d in ds], held, mapping)
        index, indptr, indices = _graph.intern(names, deps)

    targets = []
    missing = []
    for k in flat:
        try:
            i = index.get(k)
        except TypeError:
            raise InvalidKeyError(
                f"Requested key {k!r} is not hashable; request dask keys (str, bytes, int, "
                "float or tuples of those), or a list of them.",
                k,
            ) from None
        if i is None:
            missing.append(k)
        else:
            targets.append(i)
    if missing:
        shown = ", ".join(repr(k) for k in missing[:10])
        raise KeyError(
            f"Requested keys not in the graph: {shown}"
            + (f" ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    flags = _flags(nodes, types)
    driver = driver_bound(names, nodes) if Task in types else []
    graph = Graph(names, nodes, index, indptr, indices, targets, keys, flags, annotations, driver)
    if exchanged is not None:
        for w in exchanged:  # ids of the keys the targets need
            w.heavy = [index[k] for k in w.heavy if k in index]
            w.free = [index[k] for k in w.free if k in index]
            w.upstream = [index[k] for k in w.upstream if k in index]
        graph.exchange = exchanged
    return graph
