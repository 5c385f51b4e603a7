"""Every private dask name daskray uses, imported here and nowhere else.

daskray composes dask's public pieces and never patches dask; a few things it needs have no
public spelling yet: the task-spec node classes that dask's schedulers themselves run
(``dask._task_spec``) and the expression classes that tell a HighLevelGraph-backed collection
from a dask-expr one (``dask._expr``). When dask moves one of them, this module is the one
place to change. (``import dask`` loads both modules already: importing them costs nothing.)
"""

from __future__ import annotations

from dask._expr import CompositeExpr, FinalizeCompute, HLGExpr
from dask._expr import _AnnotationsTombstone as AnnotationsTombstone
from dask._expr import _ExprSequence as ExprSequence
from dask._expr import _HLGExprSequence as HLGExprSequence
from dask._task_spec import Alias, DataNode, GraphNode, Task, TaskRef, convert_legacy_graph
from dask._task_spec import _execute_subgraph as execute_subgraph

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
    "Task",
    "TaskRef",
    "convert_legacy_graph",
    "execute_subgraph",
]
