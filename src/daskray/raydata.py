"""Dask <-> Ray Data through Ray's object store: no partition passes through the driver.

A dask collection computed by daskray is one ObjectRef per partition, and a Ray Data
``Dataset`` is one ObjectRef per block, so the hand-off in either direction moves refs, not
data::

    to_ray_dataset(x):
      x's graph + per partition i:  block_i = to_block(part_i)   ─┐ one daskray compute; each
                                    meta_i  = metadata(block_i)  ─┘ block's tasks fuse with it
                                    (a DataFrame's pandas partitions are blocks as they are)
      ─> refs of block_0..n (left in the store), values of meta_0..n (small)
      ─> MaterializedDataset(FromPandas | FromArrow | FromNumpy | FromItems (refs, metadata))

    from_ray_dataset(ds):
      ds.iter_internal_ref_bundles() ─> (ref, rows) per block, in the Dataset's order
      ─> {("ray-block-...", i): RayFuture(ref)}             the refs, as persisted values
         {("from-ray-dataset-...", i): to_frame(block_i)}  rows offset_i .. offset_i + rows_i
      ─> dask DataFrame (meta: one tiny Ray task converts block 0's first zero rows;
         divisions: the global row numbers) or, with ``column=``, a dask Array

**to_ray_dataset.** What is not yet persisted is computed with daskray, the partitions become
Ray Data blocks in the same Ray tasks that made them (a dataframe as a pandas block -- the
partition itself: Ray Data ignores a pandas block's index, as ``from_pandas_refs`` does, so a
persisted collection's values are handed over in place -- or an Arrow table; the index as
columns with ``index=True``; an array row-wise, one ``"data"`` column as
``from_numpy`` makes it; a bag's items as rows as ``from_items`` makes them), and so does
their metadata: Ray Data's public constructors would run one more Ray task per block just to
read it. The Dataset is then built from the refs and the metadata with Ray Data's internal
constructors, behind :mod:`daskray._raydata_compat` and its Ray version check; on another Ray
(or with ``daskray.raydata.internal-api = False``) the blocks go to ``ray.data.from_pandas_refs``
/ ``from_arrow_refs`` / ``from_numpy_refs`` instead. Partition order is block order. Nothing
in dask's global configuration changes (Ray's ``Dataset.to_dask`` makes its scheduler dask's
default; this module never does).

**from_ray_dataset.** The Dataset is executed (if it is not materialized) into the object
store and its blocks are wrapped as persisted daskray values (:class:`~daskray.futures.RayFuture`),
so computing the result with daskray passes the block refs to Ray tasks that convert and use
them where the blocks live (daskray's locality, :mod:`daskray.planning`). Row ``k`` of the
Dataset is row ``k`` of the dataframe, whose index is the global row number (so divisions are
known). Compute the result with daskray: other schedulers cannot reach Ray's object store.
"""

from __future__ import annotations

from typing import Any

import ray
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from . import _raydata_compat as compat
from ._compat import Task, TaskRef
from .config import option
from .futures import RayFuture

#: the column name of a dask Series handed to Ray Data when it has no name
SERIES_COLUMN = "value"


def use_internal_api() -> bool:
    """Whether :func:`to_ray_dataset` builds Datasets with Ray Data's internal constructors
    (``daskray.raydata.internal-api`` and a Ray whose internals daskray knows)."""
    return bool(option("raydata.internal-api")) and compat.available()


def to_ray_dataset(
    x: Any, *, block_format: str = "pandas", index: bool = False, **kwargs: Any
) -> Any:
    """A ``ray.data.Dataset`` of the dask collection ``x``, made on Ray by daskray.

    Parameters
    ----------
    x : dask DataFrame, Series, Array or Bag
        A dataframe's partitions become blocks in order; an array's blocks along axis 0 (it is
        rechunked to one chunk along the other axes), as one ``"data"`` column; a bag's
        partitions, with mappings as rows and other items as ``{"item": x}``.
    block_format : {"pandas", "arrow"}
        The blocks of a dataframe: pandas DataFrames or Arrow tables.
    index : bool
        Keep a dataframe's index as column(s). By default it is not kept: Ray Data has no
        index and ignores a pandas block's.
    **kwargs
        :func:`daskray.get`'s keywords for the compute (``ray_remote_args=``, ``retries=``,
        ...).

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd                  # doctest: +SKIP
    >>> df = dd.from_pandas(pd.DataFrame({"a": range(6)}), npartitions=3)  # doctest: +SKIP
    >>> to_ray_dataset(df).take(2)                                 # doctest: +SKIP
    [{'a': 0}, {'a': 1}]
    """
    from . import _ray, scheduler

    if kwargs.get("debug"):
        raise ValueError("to_ray_dataset needs Ray: debug=True computes in this process")
    if block_format not in ("pandas", "arrow"):
        raise ValueError(f"block_format must be 'pandas' or 'arrow', got {block_format!r}")
    kind, x = _prepared(x)
    fast = use_internal_api()
    if kind == "dataframe":
        if block_format == "pandas" and not _pandas_blocks():
            block_format = "arrow"  # as ray.data.from_pandas_refs does then
        made, dataset_kind = block_format, block_format
    elif kind == "array":
        made, dataset_kind = ("block" if fast else "raw"), "numpy"
    else:
        made, dataset_kind = ("block" if fast else "raw"), ("items" if fast else "pandas")
    keys = list(flatten(x.__dask_keys__()))
    token = tokenize(x, kind, made, index, fast)
    name, meta_name = f"to-ray-dataset-{token}", f"ray-block-metadata-{token}"
    context = _data_context() if kind == "array" and fast else None
    direct = kind == "dataframe" and made == "pandas" and _as_they_are(x, index)
    layer: dict = {}
    blocks = []
    for i, key in enumerate(keys):
        block = key if direct else (name, i)
        if not direct:
            layer[block] = Task(block, to_block, TaskRef(key), kind, made, index, context)
        if fast:
            layer[(meta_name, i)] = Task((meta_name, i), compat.block_metadata, TaskRef(block))
        blocks.append(block)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[x])
    metas = [(meta_name, i) for i in range(len(keys))] if fast else []
    handles = scheduler.compute_refs(graph, blocks + metas, kwargs)
    metadata = _ray.gather_only(handles, range(len(blocks), len(handles)))
    refs = [ref for _, ref in handles[: len(blocks)]]
    del handles
    if fast:
        return compat.materialized(dataset_kind, refs, compat.metadata(metadata))
    return _public_constructor(dataset_kind)(refs)


def _prepared(x: Any) -> tuple[str, Any]:
    """``x``'s kind and the collection to compute: a dask-expr collection optimized, an
    array rechunked to blocks along axis 0 only."""
    import dask.array as da
    import dask.bag as db
    import dask.dataframe as dd

    if isinstance(x, (dd.DataFrame, dd.Series)):
        return "dataframe", x.optimize()
    if isinstance(x, da.Array):
        if x.ndim == 0:
            raise ValueError("to_ray_dataset needs an array of at least one dimension")
        if any(len(c) > 1 for c in x.chunks[1:]):
            x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
        return "array", x
    if isinstance(x, db.Bag):
        return "bag", x
    raise TypeError(
        f"to_ray_dataset takes a dask DataFrame, Series, Array or Bag, got {type(x).__name__}"
    )


def _as_they_are(x: Any, index: bool) -> bool:
    """Whether a dataframe's partitions are pandas blocks as they are: a DataFrame (not a
    Series) with string column names whose index is to be dropped. Ray Data ignores a pandas
    block's index (its conversions use ``preserve_index=False``, ``ignore_index=True``), as
    ``ray.data.from_pandas_refs`` does, so the partitions' refs are the blocks' refs and a
    persisted collection's values are used in place."""
    import dask.dataframe as dd

    return not index and isinstance(x, dd.DataFrame) and all(isinstance(c, str) for c in x.columns)


def _pandas_blocks() -> bool:
    from ray.data.context import DataContext

    return bool(DataContext.get_current().enable_pandas_block)


def _data_context() -> Any:
    from ray.data.context import DataContext

    return DataContext.get_current()


def _public_constructor(kind: str):
    return {
        "pandas": ray.data.from_pandas_refs,
        "arrow": ray.data.from_arrow_refs,
        "numpy": ray.data.from_numpy_refs,
    }[kind]


def to_block(part: Any, kind: str, made: str, index: bool, context: Any) -> Any:
    """One partition as a Ray Data block (runs inside daskray's Ray tasks).

    ``made``: ``"pandas"``/``"arrow"`` for a dataframe; for an array or a bag, ``"block"``
    (the block Ray Data's ``from_numpy``/``from_items`` would make) or ``"raw"`` (what the
    public constructors take: the ndarray; the bag's rows as a pandas DataFrame).

    >>> import pandas as pd
    >>> to_block(pd.Series([1, 2], index=[5, 6]), "dataframe", "pandas", False, None)
       value
    0      1
    1      2
    """
    if kind == "dataframe":
        frame = _frame(part, index)
        if made == "arrow":
            import pyarrow as pa

            return pa.Table.from_pandas(frame, preserve_index=False)
        return frame
    if kind == "array":
        return compat.array_block(part, context) if made == "block" else part
    items = list(part)
    if made == "block":
        return compat.items_block(items)
    from collections.abc import Mapping

    import pandas as pd

    if items and all(isinstance(i, Mapping) for i in items):
        return pd.DataFrame.from_records(items)
    return pd.DataFrame({"item": items})


def _frame(part: Any, index: bool) -> Any:
    import pandas as pd

    if isinstance(part, pd.Series):
        part = part.to_frame(SERIES_COLUMN if part.name is None else part.name)
    idx = part.index
    if not index and type(idx) is pd.RangeIndex and idx.start == 0 and idx.step == 1:
        frame = part  # already what reset_index(drop=True) would make
    else:
        frame = part.reset_index(drop=not index)
    if not all(isinstance(c, str) for c in frame.columns):  # Arrow needs string names
        frame.columns = [str(c) for c in frame.columns]
    return frame


# ---------------------------------------------------------------------------------------------
# Ray Data -> dask
# ---------------------------------------------------------------------------------------------


def from_ray_dataset(ds: Any, *, column: str | None = None) -> Any:
    """A dask DataFrame (or, with ``column``, Array) whose partitions are ``ds``'s blocks.

    ``ds`` is executed into Ray's object store if it is not materialized yet; its blocks stay
    there. Partition ``i`` is block ``i`` (empty blocks left out) converted where it lives by
    the compute that needs it; its index holds the global row numbers, so the divisions are
    known. With ``column``, the result is a dask Array of that column (a tensor column keeps
    its element shape), chunked by block along axis 0.

    Compute the result with daskray (``scheduler=daskray.get``): the blocks are persisted
    daskray values, which other schedulers cannot reach.

    Examples
    --------
    >>> ds = ray.data.range(10, override_num_blocks=2)             # doctest: +SKIP
    >>> from_ray_dataset(ds).npartitions, from_ray_dataset(ds).divisions  # doctest: +SKIP
    (2, (0, 5, 9))
    """
    entries = [e for e in compat.block_entries(ds) if e[1] != 0]
    if not entries:
        raise ValueError(
            "from_ray_dataset: the Dataset has no rows; dask needs at least one partition "
            "with the schema (build the dask collection from its schema instead)"
        )
    token = tokenize([ref.hex() for ref, _, _ in entries], column)
    held, name = f"ray-block-{token}", f"from-ray-dataset-{token}"
    first_ref, _, first_slice = entries[0]
    meta = ray.get(_empty.remote(first_ref, first_slice, column))
    rows = [r for _, r, _ in entries]
    known = all(r is not None for r in rows)
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + (r or 0))
    layer: dict = {}
    for i, (ref, _, piece) in enumerate(entries):
        layer[(held, i)] = RayFuture((held, i), ref)
        if column is None:
            layer[(name, i)] = Task((name, i), to_frame, TaskRef((held, i)), offsets[i], piece)
        else:
            key = (name, i) + (0,) * (meta.ndim - 1)
            layer[key] = Task(key, to_array, TaskRef((held, i)), column, piece)
    if column is None:
        import dask.dataframe as dd

        keys = [(name, i) for i in range(len(entries))]
        divisions = (*offsets[:-1], offsets[-1] - 1) if known else (None,) * (len(entries) + 1)
        return dd.from_graph(layer, meta, divisions, keys, "from-ray-dataset")
    import dask.array as da

    if not known:
        raise ValueError("from_ray_dataset(column=...): the Dataset's blocks have no row counts")
    chunks = (tuple(rows), *((n,) for n in meta.shape[1:]))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, meta=meta)


@ray.remote
def _empty(block: Any, piece: tuple | None, column: str | None) -> Any:
    """The first zero rows of ``block`` as a partition: the collection's ``meta``."""
    start = piece[0] if piece is not None else 0
    empty = (start, start)
    if column is None:
        return to_frame(block, 0, empty)
    return to_array(block, column, empty)


def _sliced(block: Any, piece: tuple | None) -> Any:
    from ray.data.block import BlockAccessor

    accessor = BlockAccessor.for_block(block)
    if piece is not None:
        accessor = BlockAccessor.for_block(accessor.slice(piece[0], piece[1], copy=False))
    return accessor


def to_frame(block: Any, start: int, piece: tuple | None) -> Any:
    """A block (rows ``piece`` of it, if given) as a pandas DataFrame whose index counts rows
    from ``start`` (runs inside daskray's Ray tasks).

    A pandas block is taken as it is; an Arrow table without extension (tensor) columns is
    converted by pyarrow, which restores the pandas dtypes recorded in its schema (those of a
    dataframe handed over with ``block_format="arrow"``) and gives numpy dtypes otherwise, as
    pandas itself does; Ray Data converts the rest (its ``to_pandas`` maps Arrow types to
    ``pd.ArrowDtype``).
    """
    import pandas as pd
    import pyarrow as pa

    accessor = _sliced(block, piece)
    table = accessor.to_block() if piece is not None else block
    if isinstance(table, pa.Table) and not any(
        isinstance(t, pa.ExtensionType) for t in table.schema.types
    ):
        frame = table.to_pandas()
    else:
        frame = accessor.to_pandas()
    return frame.set_axis(pd.RangeIndex(start, start + len(frame)), axis=0)


def to_array(block: Any, column: str, piece: tuple | None) -> Any:
    """Column ``column`` of a block (rows ``piece`` of it, if given) as an ndarray."""
    return _sliced(block, piece).to_numpy(column)
