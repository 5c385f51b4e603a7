"""Ray Data's internal names, imported here and nowhere else (the Ray Data twin of ``_compat``).

Ray Data's public constructors (``ray.data.from_pandas_refs``, ``from_arrow_refs``,
``from_numpy_refs``) take block refs but then run one Ray task per block just to read its
metadata (rows, bytes, schema) -- 1,000 tasks for a 1,000-partition dataframe, after daskray
already ran tasks that held every block in hand. So :mod:`daskray.raydata` computes the
metadata inside its own Ray tasks (:func:`block_metadata`, fused with the task that made the
block) and builds the ``MaterializedDataset`` the way those constructors do at their end
(:func:`materialized`): a ``LogicalPlan`` over a ``From*`` operator holding the refs and their
metadata, with ``DatasetStats``. Bag partitions become blocks with Ray Data's own
``DelegatingBlockBuilder``, as ``ray.data.from_items`` does (:func:`items_block`).

Those names live under ``ray.data._internal`` and change between Ray releases, so
:func:`available` says whether this Ray is one whose internals this module was written and
tested against (:data:`TESTED`, by ``major.minor``) *and* they import; otherwise daskray uses
the public constructors (``daskray.raydata.internal-api = False`` does too). Nothing here runs
at import time but the import of ``ray``.
"""

from __future__ import annotations

import functools
from typing import Any

import ray

#: the Ray releases (major, minor) whose Ray Data internals this module was checked against
TESTED = ((2, 60),)
#: the logical operator of each kind of hand-off (names in ray.data._internal.logical.operators)
OPERATORS = {
    "pandas": "FromPandas",
    "arrow": "FromArrow",
    "numpy": "FromNumpy",
    "items": "FromItems",
}


def ray_release(version: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of ``version`` (default: the installed Ray's).

    >>> ray_release("2.60.1")
    (2, 60)
    """
    parts = (version or ray.__version__).split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


@functools.cache
def _internals(release: tuple[int, int]) -> dict | None:
    if release not in TESTED:
        return None
    try:
        from ray.data._internal.delegating_block_builder import DelegatingBlockBuilder
        from ray.data._internal.logical import operators
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data._internal.pandas_block import PandasBlockSchema
        from ray.data._internal.stats import DatasetStats
        from ray.data.block import BlockExecStats, BlockMetadataWithSchema
        from ray.data.dataset import MaterializedDataset
    except ImportError:
        return None
    ops = {kind: getattr(operators, name, None) for kind, name in OPERATORS.items()}
    if not all(ops.values()):
        return None
    return {
        "builder": DelegatingBlockBuilder,
        "operators": ops,
        "plan": LogicalPlan,
        "stats": DatasetStats,
        "exec_stats": BlockExecStats,
        "metadata": BlockMetadataWithSchema,
        "pandas_schema": PandasBlockSchema,
        "dataset": MaterializedDataset,
    }


def available() -> bool:
    """Whether this Ray's Data internals are the ones this module knows."""
    return _internals(ray_release()) is not None


def _names() -> dict:
    names = _internals(ray_release())
    if names is None:
        raise RuntimeError(
            f"Ray {ray.__version__}'s Ray Data internals are not the ones daskray knows "
            f"(tested: {', '.join(f'{a}.{b}' for a, b in TESTED)}); use the public path "
            "(daskray.raydata.internal-api = False)"
        )
    return names


def block_metadata(block: Any) -> Any:
    """The metadata of ``block`` (runs inside daskray's Ray tasks): Ray Data's
    ``BlockMetadataWithSchema`` (:func:`metadata` reads either form).

    A pandas block of numpy-typed columns (numbers, bools, datetimes) comes back compact,
    ``(rows, bytes, column names, dtype strings)``: the size is what Ray Data's
    ``PandasBlockAccessor.size_bytes`` adds up for such columns, ``memory_usage(index=True,
    deep=False)`` (each column's itemsize times the rows, plus the index), without the calls
    that cost it a millisecond a block, and the tuple pickles in a tenth of the time of the
    metadata object (whose unpickling in the driver would cost more than the rest of the
    hand-off). Other blocks get Ray Data's own ``from_block``.
    """
    plain = _plain_frame(block)
    if plain is not None:
        columns, types = plain
        size = sum(t.itemsize for t in types) * len(block)
        size += int(block.index.memory_usage(deep=False))
        return (len(block), size, columns, tuple(t.str for t in types))
    names = _names()
    stats = names["exec_stats"].builder()
    return names["metadata"].from_block(block, block_exec_stats=stats.build())


def metadata(values: list) -> list:
    """Ray Data's ``BlockMetadataWithSchema`` for each of :func:`block_metadata`'s answers
    (in the driver): compact ones get one schema object per distinct schema."""
    import numpy as np

    names = _names()
    stats = names["exec_stats"].builder().build()  # made here: no per-block timings
    schemas: dict = {}
    out = []
    for v in values:
        if type(v) is tuple:
            rows, size, columns, types = v
            schema = schemas.get((columns, types))
            if schema is None:
                dtypes = tuple(np.dtype(t) for t in types)
                schema = schemas[(columns, types)] = names["pandas_schema"](columns, dtypes)
            v = names["metadata"](num_rows=rows, size_bytes=size, exec_stats=stats, schema=schema)
        out.append(v)
    return out


def _plain_frame(block: Any) -> tuple | None:
    """``(column names, dtypes)`` of a pandas DataFrame whose columns all have string names
    and numpy number, bool or datetime dtypes (the ``PandasBlockSchema`` Ray Data's accessor
    would make of it); None for any other block."""
    import numpy as np
    import pandas as pd

    if not isinstance(block, pd.DataFrame):
        return None
    dtypes = block.dtypes
    columns, types = tuple(dtypes.index.tolist()), tuple(dtypes.values.tolist())
    if all(isinstance(c, str) for c in columns) and all(
        isinstance(t, np.dtype) and t.kind in "biufcmM" for t in types
    ):
        return columns, types
    return None


def items_block(items: list) -> Any:
    """A Ray Data block of ``items`` as ``ray.data.from_items`` builds it: mappings are rows,
    anything else the row ``{"item": x}``."""
    from collections.abc import Mapping

    builder = _names()["builder"]()
    for item in items:
        builder.add(item if isinstance(item, Mapping) else {"item": item})
    return builder.build()


def array_block(array: Any, context: Any) -> Any:
    """The block ``ray.data.from_numpy_refs`` makes of ``array`` (one column, ``"data"``), under
    the driver's ``DataContext`` (runs inside daskray's Ray tasks)."""
    from ray.data.block import BlockAccessor
    from ray.data.context import DataContext

    DataContext._set_current(context)
    return BlockAccessor.batch_to_block({"data": array})


def materialized(kind: str, refs: list, metadata: list) -> Any:
    """The ``MaterializedDataset`` of the blocks ``refs`` with their ``metadata``, built as
    Ray Data's ``from_*_refs`` constructors build it (``kind``: a key of :data:`OPERATORS`)."""
    from ray.data.context import DataContext

    names = _names()
    op = names["operators"][kind](refs, metadata)
    stats = names["stats"](metadata={OPERATORS[kind]: metadata}, parent=None)
    context = DataContext.get_current().copy()
    return names["dataset"](names["plan"](op, context), context, stats)


def block_entries(ds: Any) -> list:
    """``(ref, rows, piece)`` of every block of ``ds`` in order, executing it if needed:
    ``rows`` from its metadata (None if unknown), ``piece`` the ``(start, stop)`` rows of the
    block that belong to the Dataset, or None for all of them. Reads the ``RefBundle``s of the
    public ``Dataset.iter_internal_ref_bundles()`` (whose entries were ``(ref, metadata)``
    tuples before Ray 2.60's ``BlockEntry``, and may carry ``slices``)."""
    out = []
    for bundle in ds.iter_internal_ref_bundles():
        blocks = list(bundle.blocks)
        slices = list(getattr(bundle, "slices", None) or [None] * len(blocks))
        for entry, piece in zip(blocks, slices):
            ref, meta = (entry.ref, entry.metadata) if hasattr(entry, "ref") else entry
            if piece is not None:
                out.append(
                    (
                        ref,
                        piece.end_offset - piece.start_offset,
                        (piece.start_offset, piece.end_offset),
                    )
                )
            else:
                out.append((ref, meta.num_rows, None))
    return out
