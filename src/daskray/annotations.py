"""Dask annotations -> Ray options, per key, and the graph they must be read from.

Where annotations come from
---------------------------
``dask.annotate(...)`` stores annotations on HighLevelGraph layers. dask.array, dask.bag and
dask.delayed reach the scheduler as ``HLGExpr`` expressions whose low-level optimizer
(blockwise fusion) renames and merges keys -- and drops the annotations of what it fused. So
when any layer of such an expression carries annotations, daskray runs the expression's
*unoptimized* HighLevelGraph and reads the annotations from its layers: daskray fuses the graph
itself, and its fusion never merges tasks whose Ray options differ. The same holds for an
expression with a ``dask.array.store`` layer (:mod:`daskray.stores`): a write that must run in
the driver then takes none of the computation before it along. Other expressions
(dask-expr dataframes) give their annotations through ``__dask_annotations__()``; plain
HighLevelGraphs through their layers; plain dicts have none.

What they become (lowest precedence first)
------------------------------------------
1. ``daskray.ray-remote-args`` (config), then ``get(..., ray_remote_args={...})``;
2. ``get(..., resources={...}, retries=n)``: compute-wide defaults, spelled as annotations;
3. per key: ``priority`` -> submission order (the core puts ready groups holding a higher
   priority first; Ray has no task priorities of its own);
   ``resources`` -> ``num_cpus``/``num_gpus``/``memory`` (bytes)/``resources`` (custom),
   ``retries`` -> ``max_retries`` with ``retry_exceptions=True`` (dask retries on any error),
   ``workers`` (+ ``allow_other_workers``) -> node affinity (see below),
   then a ``ray_remote_args`` annotation, passed through as Ray options (ray.util.dask's
   spelling); ``ray_actor_pool`` (a :class:`daskray.ActorPool` or its name) -> the task runs
   on that pool's actors (see :mod:`daskray.pools`).

Callable annotation values are called with the key. A malformed value raises
:class:`AnnotationError` naming the key, before anything is submitted. Nodes with equal options
share a *class*; the core never groups nodes of different classes.

Workers -> node affinity
------------------------
``workers=`` names Ray nodes by node id (the hex string of ``ray.nodes()[i]["NodeID"]`` or
``ray.get_runtime_context().get_node_id()``), IP address or hostname; a list names several.
Ray pins a task to one node, so the task goes to the *first* entry that names an alive node
(a set is sorted first: dask gives it no order). ``allow_other_workers=True`` makes the
affinity soft: Ray runs the task elsewhere when that node is gone or can never fit it.

Here the annotation only becomes plain data, ``scheduling_strategy=("workers", names, soft)``
(options must stay hashable: they are frozen into classes); the Ray side
(:func:`daskray.planning.feasible`, before anything is submitted) resolves the names
against the cluster's nodes into ``("node_affinity", node_id, soft)``, and the Ray task is
given a ``NodeAffinitySchedulingStrategy`` when its options are built. Every entry must name a
node the cluster knows, and an IP or hostname exactly one alive node (nodes started on one
machine, as ``ray.cluster_utils.Cluster`` does, share theirs: name those by node id), else
:class:`WorkerError` names the keys. Hard affinity to a node that lacks the resources the
tasks ask for is a :class:`ResourceError`. An empty list pins nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

from dask.highlevelgraph import HighLevelGraph

from ._compat import AnnotationsTombstone, HLGExpr, HLGExprSequence
from ._graph import GraphError
from .stores import STORE_NAME

#: annotation names daskray maps to Ray options
OPTIONS = (
    "resources",
    "retries",
    "workers",
    "allow_other_workers",
    "ray_remote_args",
    "ray_actor_pool",
)
#: the option naming a task's actor pool (see :mod:`daskray.pools`)
POOL = "ray_actor_pool"
#: the plain-data forms of node affinity in options' ``scheduling_strategy`` (see module doc)
WORKERS, NODE_AFFINITY = "workers", "node_affinity"
#: annotation names daskray reads (``priority`` orders submission); others are ignored
KNOWN = (*OPTIONS, "priority")


class AnnotationError(GraphError, TypeError):
    """A dask annotation daskray cannot turn into Ray options. ``.keys`` names the tasks."""

    @property
    def keys(self) -> list:
        return self.args[1]


def bad_annotation(key: Any, name: str, value: Any, expected: str) -> AnnotationError:
    return AnnotationError(
        f"Invalid annotation {name}={value!r} on key {key!r}: expected {expected}. "
        "Fix the dask.annotate(...) call (or the compute keyword) that sets it.",
        [key],
    )


def to_ray_options(ann: Mapping[str, Any], key: Any = None) -> dict[str, Any]:
    """Ray options for one key's annotations, e.g. ``{"resources": {"GPU": 1}}`` ->
    ``{"num_gpus": 1}``.

    >>> to_ray_options({"resources": {"GPU": 1, "memory": 2e9, "ssd": 1}, "retries": 2})
    {'num_gpus': 1, 'memory': 2000000000, 'resources': {'ssd': 1}, 'max_retries': 2, 'retry_exceptions': True}
    """  # noqa: E501
    opts: dict[str, Any] = {}
    res = ann.get("resources")
    if res is not None:
        if not isinstance(res, Mapping):
            raise bad_annotation(key, "resources", res, "a dict such as {'GPU': 1, 'memory': 4e9}")
        custom = {}
        for name, amount in res.items():
            if not isinstance(name, str) or isinstance(amount, bool):
                raise bad_annotation(key, "resources", res, "resource names mapped to amounts >= 0")
            if not isinstance(amount, Real) or amount < 0:
                raise bad_annotation(key, "resources", res, "resource names mapped to amounts >= 0")
            if name == "CPU":
                opts["num_cpus"] = amount
            elif name == "GPU":
                opts["num_gpus"] = amount
            elif name.lower() == "memory":
                opts["memory"] = int(amount)
            else:
                custom[name] = amount
        if custom:
            opts["resources"] = custom
    retries = ann.get("retries")
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
            raise bad_annotation(key, "retries", retries, "an int >= 0 (or -1: retry forever)")
        opts["max_retries"] = retries
        opts["retry_exceptions"] = True
    workers = ann.get("workers")
    if workers is not None:
        names = _worker_names(workers, key)
        soft = ann.get("allow_other_workers")
        if soft is not None and not isinstance(soft, bool):
            raise bad_annotation(key, "allow_other_workers", soft, "True or False")
        if names:
            opts["scheduling_strategy"] = (WORKERS, names, bool(soft))
    pool = ann.get(POOL)
    if pool is not None:
        name = pool if isinstance(pool, str) else getattr(pool, "name", None)
        if not isinstance(name, str) or not name:
            raise bad_annotation(key, POOL, pool, "a daskray.ActorPool or its name")
        opts[POOL] = name
    rra = ann.get("ray_remote_args")
    if rra is not None:
        if not isinstance(rra, Mapping):
            raise bad_annotation(key, "ray_remote_args", rra, "a dict of Ray task options")
        opts.update(rra)
    return opts


def _worker_names(workers: Any, key: Any) -> tuple[str, ...]:
    """The node names of a ``workers`` annotation, in order (a set's sorted)."""
    expected = "a node id, IP or hostname, or a list of them"
    if isinstance(workers, str):
        workers = [workers]
    elif isinstance(workers, (set, frozenset)):
        if not all(isinstance(w, str) for w in workers):
            raise bad_annotation(key, "workers", workers, expected)
        workers = sorted(workers)
    elif not isinstance(workers, (list, tuple)):
        raise bad_annotation(key, "workers", workers, expected)
    if not all(isinstance(w, str) and w.strip() for w in workers):
        raise bad_annotation(key, "workers", workers, expected)
    return tuple(dict.fromkeys(w.strip() for w in workers))


class WorkerError(GraphError, LookupError):
    """A ``workers`` annotation names no node of the Ray cluster, or an IP (hostname) that
    several alive nodes share. ``.keys`` names (some of) the tasks, ``.workers`` the names."""

    @property
    def keys(self) -> list:
        return self.args[1]

    @property
    def workers(self) -> tuple:
        return self.args[2]


class ResourceError(GraphError):
    """No node of the cluster can ever run some tasks with the Ray options they ask for.

    ``.keys`` names (some of) the tasks, ``.request`` the resources they ask for.
    """

    @property
    def keys(self) -> list:
        return self.args[1]

    @property
    def request(self) -> dict:
        return self.args[2]


class _Frozen(tuple):
    """A frozen dict (see :func:`freeze`)."""


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of an options dict (for classes and caches)."""
    if isinstance(value, Mapping):
        return _Frozen(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The options dict of :func:`freeze`'s result."""
    if isinstance(value, _Frozen):
        return {k: thaw(v) for k, v in value}
    return value


def graph_and_annotations(dsk: Any) -> tuple[Any, dict[str, dict]]:
    """The task mapping to run and its annotations ``{name: {key: value}}`` (see module doc)."""
    if isinstance(dsk, (HLGExpr, HLGExprSequence)):
        parts = list(dsk.operands) if isinstance(dsk, HLGExprSequence) else [dsk]
        if all(isinstance(p, HLGExpr) for p in parts):
            hlgs = [p.hlg for p in parts]
            # annotations, or stores (daskray.stores: unfused, a write that must run in the
            # driver takes no computation with it)
            if any(
                layer.annotations or STORE_NAME in name
                for h in hlgs
                for name, layer in h.layers.items()
            ):
                merged = HighLevelGraph.merge(*hlgs)
                return dict(merged), _layer_annotations(merged)
        return dsk.__dask_graph__(), {}
    if isinstance(dsk, HighLevelGraph):
        return dsk, _layer_annotations(dsk)
    if isinstance(dsk, Mapping):
        return dsk, {}
    graph = getattr(dsk, "__dask_graph__", None)
    if graph is None:
        raise TypeError(
            f"daskray.get expects a task graph (a dict, a HighLevelGraph or a dask "
            f"expression), got {type(dsk).__name__}"
        )
    annotations = getattr(dsk, "__dask_annotations__", None)
    return graph(), dict(annotations()) if annotations is not None else {}


def _layer_annotations(hlg: Any) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for layer in hlg.layers.values():
        for name, value in (layer.annotations or {}).items():
            if name not in KNOWN or isinstance(value, AnnotationsTombstone):
                continue
            per_key = out.setdefault(name, {})
            if callable(value):
                per_key.update((k, value(k)) for k in layer)
            else:
                per_key.update(dict.fromkeys(layer, value))
    return out
