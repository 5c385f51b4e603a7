"""Dask annotations -> Ray options, per key, and the graph they must be read from.

Where annotations come from
---------------------------
``dask.annotate(...)`` stores annotations on HighLevelGraph layers. dask.array, dask.bag and
dask.delayed reach the scheduler as ``HLGExpr`` expressions whose low-level optimizer
(blockwise fusion) renames and merges keys -- and drops the annotations of what it fused. So
when any layer of such an expression carries annotations, daskray runs the expression's
*unoptimized* HighLevelGraph and reads the annotations from its layers: daskray fuses the graph
itself, and its fusion never merges tasks whose Ray options differ. Other expressions
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
   then a ``ray_remote_args`` annotation, passed through as Ray options (ray.util.dask's
   spelling).

Callable annotation values are called with the key. A malformed value raises
:class:`AnnotationError` naming the key, before anything is submitted. Nodes with equal options
share a *class*; the core never groups nodes of different classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

from ._graph import GraphError

#: annotation names daskray maps to Ray options
OPTIONS = ("resources", "retries", "ray_remote_args")
#: annotation names daskray reads (``priority`` orders submission); others are ignored
KNOWN = (*OPTIONS, "priority")


class AnnotationError(GraphError, TypeError):
    """A dask annotation daskray cannot turn into Ray options. ``.keys`` names the tasks."""

    @property
    def keys(self) -> list:
        return self.args[1]


def _bad(key: Any, name: str, value: Any, expected: str) -> AnnotationError:
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
            raise _bad(key, "resources", res, "a dict such as {'GPU': 1, 'memory': 4e9}")
        custom = {}
        for name, amount in res.items():
            if not isinstance(name, str) or isinstance(amount, bool):
                raise _bad(key, "resources", res, "resource names mapped to amounts >= 0")
            if not isinstance(amount, Real) or amount < 0:
                raise _bad(key, "resources", res, "resource names mapped to amounts >= 0")
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
            raise _bad(key, "retries", retries, "an int >= 0 (or -1: retry forever)")
        opts["max_retries"] = retries
        opts["retry_exceptions"] = True
    rra = ann.get("ray_remote_args")
    if rra is not None:
        if not isinstance(rra, Mapping):
            raise _bad(key, "ray_remote_args", rra, "a dict of Ray task options")
        opts.update(rra)
    return opts


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
    from dask._expr import HLGExpr, _HLGExprSequence
    from dask.highlevelgraph import HighLevelGraph

    if isinstance(dsk, (HLGExpr, _HLGExprSequence)):
        parts = list(dsk.operands) if isinstance(dsk, _HLGExprSequence) else [dsk]
        if all(isinstance(p, HLGExpr) for p in parts):
            hlgs = [p.hlg for p in parts]
            if any(layer.annotations for h in hlgs for layer in h.layers.values()):
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
    from dask._expr import _AnnotationsTombstone

    out: dict[str, dict] = {}
    for layer in hlg.layers.values():
        for name, value in (layer.annotations or {}).items():
            if name not in KNOWN or isinstance(value, _AnnotationsTombstone):
                continue
            per_key = out.setdefault(name, {})
            if callable(value):
                per_key.update((k, value(k)) for k in layer)
            else:
                per_key.update(dict.fromkeys(layer, value))
    return out


def classes_of(
    names: list, index: dict, annotations: dict[str, dict], base: dict[str, Any]
) -> tuple[list | None, list[dict]]:
    """Per-node class ids and the Ray options of each class (class 0: ``base`` options).

    Returns ``(None, [base])`` when no node has options of its own.
    """
    from dask._expr import _AnnotationsTombstone

    per_key: dict[Any, dict] = {}
    for name in OPTIONS:
        for key, value in annotations.get(name, {}).items():
            if key in index and not isinstance(value, _AnnotationsTombstone):
                per_key.setdefault(key, {})[name] = value
    if not per_key:
        return None, [base]
    table: dict[Any, int] = {freeze(base): 0}
    options = [base]
    classes = [0] * len(names)
    for key, ann in per_key.items():
        opts = dict(base)
        own = to_ray_options(ann, key)
        if "resources" in own and "resources" in base:
            own["resources"] = {**base["resources"], **own["resources"]}
        opts.update(own)
        frozen = freeze(opts)
        cls = table.get(frozen)
        if cls is None:
            cls = table[frozen] = len(options)
            options.append(opts)
        classes[index[key]] = cls
    return (classes if len(options) > 1 else None), options


def priorities_of(names: list, index: dict, annotations: dict[str, dict]) -> list | None:
    """Per-node ``priority`` annotations (higher is submitted earlier; default 0), or None.

    >>> priorities_of(["a", "b"], {"a": 0, "b": 1}, {"priority": {"b": 5}})
    [0, 5]
    """
    from dask._expr import _AnnotationsTombstone

    given = annotations.get("priority")
    if not given:
        return None
    out = [0] * len(names)
    for key, value in given.items():
        if key not in index or isinstance(value, _AnnotationsTombstone):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, "priority", value, "an int (higher runs earlier)")
        out[index[key]] = value
    return out if any(out) else None
