"""Every private dask name daskray uses, imported here and nowhere else.

daskray composes dask's public pieces and never patches dask; a few things it needs have no
public spelling yet: the task-spec node classes that dask's schedulers themselves run
(``dask._task_spec``) and the expression classes that tell a HighLevelGraph-backed collection
from a dask-expr one (``dask._expr``). When dask moves one of them, this module is the one
place to change. (``import dask`` loads both modules already: importing them costs nothing.)

One more private convention lives here: how ``dask.persist`` calls a scheduler that has no
``persist`` of its own (``functools.partial(daskray.get, ...)``): ``schedule(expr, keys)`` from
its own frame, keeping the answers as the persisted graph's values
(:func:`called_by_dask_persist`).
"""

from __future__ import annotations

import sys

import dask.base
from dask._expr import CompositeExpr, FinalizeCompute, HLGExpr
from dask._expr import _AnnotationsTombstone as AnnotationsTombstone
from dask._expr import _ExprSequence as ExprSequence
from dask._expr import _HLGExprSequence as HLGExprSequence
from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef, convert_legacy_graph
from dask._task_spec import _execute_subgraph as execute_subgraph

_PERSIST_CODE = dask.base.persist.__code__


def called_by_dask_persist() -> bool:
    """Whether the function calling this one was called by ``dask.persist`` itself (through a
    ``functools.partial``, which adds no frame): its answers become the persisted values."""
    caller = sys._getframe(2)
    return caller is not None and caller.f_code is _PERSIST_CODE


def shuffle_group_function():
    """dask-expr's group function of its tasks shuffle (``SimpleShuffle._shuffle_group``), or
    None while ``dask.dataframe`` is not imported (a graph holding one has imported it)."""
    mod = sys.modules.get("dask.dataframe.dask_expr._shuffle")
    return None if mod is None else mod.SimpleShuffle._shuffle_group


def rechunk_concat_function():
    """dask.array's ``concatenate_shaped`` (what its tasks rechunk merges slices with), or
    None while ``dask.array`` is not imported."""
    mod = sys.modules.get("dask.array.core")
    return None if mod is None else mod.concatenate_shaped


def rechunk_split_function():
    """dask.array's ``chunk.getitem`` (what its tasks rechunk slices old blocks with: a slice
    smaller than its block is copied, so it does not hold the block), or None while
    ``dask.array`` is not imported."""
    mod = sys.modules.get("dask.array.chunk")
    return None if mod is None else mod.getitem


def frame_concat():
    """dask.dataframe's ``_concat`` (what dask's shuffles concatenate their pieces with)."""
    from dask.dataframe.core import _concat

    return _concat


__all__ = [
    "Alias",
    "AnnotationsTombstone",
    "CompositeExpr",
    "DataNode",
    "ExprSequence",
    "FinalizeCompute",
    "GraphNode",
    "HLGExpr",
    "HLGExprSequence",
    "called_by_dask_persist",
    "Task",
    "TaskRef",
    "convert_legacy_graph",
    "execute_subgraph",
    "frame_concat",
    "rechunk_concat_function",
    "rechunk_split_function",
    "shuffle_group_function",
]
