"""``daskray.explain``: the plan daskray would run for some collections, without running it.

>>> import dask.array as da, daskray
>>> print(daskray.explain(da.ones(1000, chunks=10).sum(), cpus=2))   # doctest: +ELLIPSIS
Plan: ... dask tasks -> ... Ray tasks (... multi-output), ...
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from dask.utils import key_split

from ._compat import FinalizeCompute
from ._graph import Plan
from .ingest import Graph, ingest
from .planning import make_plan


@dataclass
class GroupInfo:
    """One Ray task of the plan."""

    id: int
    size: int  # dask tasks run by this Ray task
    inputs: int  # values it receives from other Ray tasks
    outputs: int  # values it returns (num_returns)
    prefixes: dict  # dask key prefix -> number of its tasks in the group


@dataclass
class Explanation:
    """What :func:`explain` returns: the plan, the ingested graph and a per-group summary."""

    plan: Plan
    graph: Graph
    groups: list[GroupInfo]

    @property
    def multi_output(self) -> list[GroupInfo]:
        """Groups that return several values (``num_returns > 1``)."""
        return [g for g in self.groups if g.outputs > 1]

    def __str__(self) -> str:
        p = self.plan
        sizes = sorted(g.size for g in self.groups)
        lines = [
            f"Plan: {len(p.order)} dask tasks -> {p.ngroups} Ray tasks "
            f"({len(self.multi_output)} multi-output), group sizes "
            f"min {sizes[0] if sizes else 0} / median {sizes[len(sizes) // 2] if sizes else 0}"
            f" / max {sizes[-1] if sizes else 0}, {len(p.inputs)} values passed between them",
            f"{'group':>6} {'tasks':>6} {'inputs':>7} {'outputs':>8}  prefixes",
        ]
        shown = self.groups if len(self.groups) <= 40 else self.groups[:20] + self.groups[-20:]
        for i, g in enumerate(shown):
            if len(self.groups) > 40 and i == 20:
                lines.append(f"{'...':>6}")
            top = ", ".join(f"{k} x{v}" for k, v in list(g.prefixes.items())[:3])
            lines.append(f"{g.id:>6} {g.size:>6} {g.inputs:>7} {g.outputs:>8}  {top}")
        return "\n".join(lines)


def explain(
    *collections: Any,
    cpus: int | None = None,
    fuse: bool | None = None,
    optimize_graph: bool = True,
    store: int | None = None,
) -> Explanation:
    """Plan ``collections`` as ``dask.compute`` would hand them to daskray, without running.

    Parameters
    ----------
    collections : dask collections
    cpus : int, optional
        Cluster CPUs to plan for; default: the connected Ray cluster's, else this machine's.
    fuse : bool, optional
        Override ``daskray.fusion.enabled``.
    optimize_graph : bool
        Apply dask's collection optimizations first, as ``dask.compute`` does.
    store : int, optional
        Bytes of Ray object store to plan for (what decides whether a shuffle or rechunk is
        heavy, and the window of its reducers, see :mod:`daskray.exchange`); default:
        unknown, so every exchange whose partitions pass ``daskray.exchange.heavy-bytes`` is
        planned heavy, without a window.
    """
    import os

    from dask.base import collections_to_expr
    from dask.core import flatten

    # as dask.compute: optimize_graph selects dask's low-level optimizations, and the
    # expression is always simplified
    expr = FinalizeCompute(collections_to_expr(list(collections), optimize_graph)).optimize()
    keys = list(flatten(expr.__dask_keys__()))
    if cpus is None:
        from . import _ray

        cpus = _ray.connected_cpus() or os.cpu_count() or 1
    graph = ingest(expr, keys, None if store is None else lambda: store)
    plan = make_plan(graph, cpus, fuse, store=store)
    groups = []
    for g in range(plan.ngroups):
        members, inputs, outputs = plan.group(g)
        prefixes = Counter(key_split(graph.names[i]) for i in members)
        groups.append(
            GroupInfo(g, len(members), len(inputs), len(outputs), dict(prefixes.most_common()))
        )
    return Explanation(plan, graph, groups)
