"""The Ray Data hand-off: ``daskray.to_ray_dataset`` and ``daskray.from_ray_dataset``.

Both ways move ObjectRefs, never partitions: the tests spy on every ``ray.get`` of the driver
and check that none returns a block with rows (the blocks are made larger than Ray's 100 KiB
inlining limit there: smaller objects live in their owner's -- the driver's -- memory anyway).
Each hand-off runs through Ray Data's internal constructors (``daskray.raydata.internal-api``,
this Ray's default) and through the public ``from_*_refs`` ones; results, dtypes and partition
order must be the same.
"""

from __future__ import annotations

import copy
import os

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import daskray
from daskray import _raydata_compat, raydata

ROWS = 600
BIG = 6000  # rows per partition of the frames whose blocks must not be inlined (~170 KiB)


def part(i: int, log: str | None = None, rows: int = 100) -> pd.DataFrame:
    """Partition ``i`` of the test frame (``rows`` rows), made in a Ray task; logs the call."""
    if log:
        with open(os.path.join(log, f"{os.getpid()}-{i}-{os.urandom(4).hex()}"), "w"):
            pass
    n = np.arange(i * rows, (i + 1) * rows)
    return pd.DataFrame(
        {
            "n": n,
            "x": (n / 7).astype("float32"),
            "even": n % 2 == 0,
            "when": pd.Timestamp("2026-01-01") + pd.to_timedelta(n, unit="s"),
            "name": [f"r{v}" for v in n],
        }
    )


def frame(log: str | None = None, rows: int = 100) -> dd.DataFrame:
    return dd.from_map(part, range(ROWS // 100), log=log, rows=rows, meta=part(0).iloc[:0])


def expected() -> pd.DataFrame:
    return pd.concat([part(i) for i in range(ROWS // 100)], ignore_index=True)


@pytest.fixture(params=[True, False], ids=["internal", "public"])
def internal(request, ray_ctx):
    with dask.config.set({"daskray.raydata.internal-api": request.param}):
        assert raydata.use_internal_api() is request.param
        yield request.param


@pytest.fixture
def fetched(monkeypatch, ray_ctx):
    """Types of every value with rows that ``ray.get`` returns in this process."""
    seen: list = []
    real = ray_ctx.get

    def spy(refs, *args, **kwargs):
        out = real(refs, *args, **kwargs)
        for v in out if isinstance(refs, list) else [out]:
            if getattr(v, "shape", (1,))[:1] != (0,):  # not an empty frame (a meta)
                seen.append(type(v))
        return out

    monkeypatch.setattr(ray_ctx, "get", spy)
    return seen


def _no_blocks(types: list) -> None:
    import pyarrow as pa

    blocks = {t for t in types if issubclass(t, (pd.DataFrame, pd.Series, pa.Table, np.ndarray))}
    assert not blocks, f"the driver fetched {blocks}"


@pytest.mark.parametrize("block_format", ["pandas", "arrow"])
def test_dataframe_to_ray_dataset(internal, fetched, block_format):
    before = copy.deepcopy(dask.config.config)
    ds = daskray.to_ray_dataset(frame(rows=BIG), block_format=block_format)
    _no_blocks(fetched)
    assert dask.config.config == before  # no global scheduler (or anything else) set
    assert ds.num_blocks() == ROWS // 100 and ds.count() == ROWS // 100 * BIG
    got = ds.to_pandas()
    assert got.n.tolist() == list(range(ROWS // 100 * BIG))  # partition order is block order
    small = daskray.to_ray_dataset(frame(), block_format=block_format).to_pandas()
    pd.testing.assert_frame_equal(small, expected(), check_dtype=False)
    assert str(ds.schema().types[1]) in ("float32", "float")


def test_series_and_index(ray_ctx):
    pdf = pd.DataFrame({"v": np.arange(10.0)}, index=pd.Index(np.arange(10) * 3, name="k"))
    ddf = dd.from_pandas(pdf, npartitions=3)
    assert daskray.to_ray_dataset(ddf.v).to_pandas().columns.tolist() == ["v"]
    unnamed = daskray.to_ray_dataset(ddf.v.rename(None)).to_pandas()
    assert unnamed.columns.tolist() == [raydata.SERIES_COLUMN]
    kept = daskray.to_ray_dataset(ddf, index=True).to_pandas()
    pd.testing.assert_frame_equal(kept, pdf.reset_index())


def test_persisted_collection_is_not_recomputed(ray_ctx, tmp_path, fetched):
    from daskray.futures import RayFuture

    df = frame(log=str(tmp_path), rows=BIG)
    (kept,) = dask.persist(df, scheduler=daskray.get)
    refs = [v.ref for v in dict(kept.__dask_graph__()).values() if isinstance(v, RayFuture)]
    ray_ctx.wait(refs, num_returns=len(refs), fetch_local=False)  # persist does not wait
    calls = len(os.listdir(tmp_path))
    assert calls == ROWS // 100
    ds = daskray.to_ray_dataset(kept)
    _no_blocks(fetched)
    assert ds.count() == ROWS // 100 * BIG and len(os.listdir(tmp_path)) == calls


def test_array_blocks_along_axis_0(internal, fetched):
    x = da.arange(240_000, chunks=30_000).reshape(40_000, 6).rechunk((10_000, 3))  # 480 KB
    ds = daskray.to_ray_dataset(x)
    _no_blocks(fetched)
    assert ds.num_blocks() == 4 and ds.count() == 40_000
    assert ds.schema().names == ["data"]
    got = np.stack([row["data"] for row in ds.take(5)])
    np.testing.assert_array_equal(got, np.arange(30).reshape(5, 6))
    back = daskray.from_ray_dataset(ds, column="data")
    assert back.chunks == ((10_000,) * 4, (6,)) and back.dtype == x.dtype
    np.testing.assert_array_equal(back.compute(scheduler=daskray.get), x.compute())


def test_bag(internal, fetched):
    rows = db.from_sequence([{"k": i, "s": str(i)} for i in range(10)], npartitions=3)
    items = db.from_sequence(range(10), npartitions=4).map(lambda v: v * 2)
    made, ds = daskray.to_ray_dataset(rows), daskray.to_ray_dataset(items)
    _no_blocks(fetched)
    assert made.take_all() == [{"k": i, "s": str(i)} for i in range(10)]
    assert ds.num_blocks() == 4 and ds.take_all() == [{"item": 2 * i} for i in range(10)]


@pytest.mark.parametrize("block_format", ["pandas", "arrow"])
def test_round_trip_keeps_rows_dtypes_and_order(internal, block_format):
    df = frame()
    before = copy.deepcopy(dask.config.config)
    back = daskray.from_ray_dataset(daskray.to_ray_dataset(df, block_format=block_format))
    assert dask.config.config == before
    assert back.npartitions == df.npartitions
    assert back.divisions == tuple(range(0, ROWS, 100)) + (ROWS - 1,)
    assert dict(back.dtypes) == dict(df.dtypes)
    got = back.compute(scheduler=daskray.get)
    want = df.compute(scheduler="sync")  # dask's dtypes (its string conversion) included
    pd.testing.assert_frame_equal(got, want.set_axis(pd.RangeIndex(ROWS)))  # global row numbers
    third = back.partitions[2].compute(scheduler=daskray.get)
    pd.testing.assert_frame_equal(third, want.iloc[200:300].set_axis(pd.RangeIndex(200, 300)))
    total = back.n.sum().compute(scheduler=daskray.get)
    assert total == sum(range(ROWS))


def test_from_ray_dataset_of_ray_data_work(ray_ctx, fetched):
    ctx = ray_ctx.data.DataContext.get_current()
    ordered = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        ds = ray_ctx.data.range(50_000, override_num_blocks=5).map_batches(
            lambda b: {"id": b["id"], "sq": b["id"] ** 2}, batch_format="numpy"
        )
        df = daskray.from_ray_dataset(ds)
        _no_blocks(fetched)
    finally:
        ctx.execution_options.preserve_order = ordered
    assert df.npartitions == 5 and df.known_divisions and df.divisions[-1] == 49_999
    assert list(df.columns) == ["id", "sq"] and df.sq.dtype == np.int64
    got = df.compute(scheduler=daskray.get)
    assert got.id.tolist() == list(range(50_000)) and (got.sq == got.id**2).all()
    assert (df.sq.sum() / df.id.count()).compute(scheduler=daskray.get) == got.sq.mean()
    limited = daskray.from_ray_dataset(ds.limit(130))
    assert len(limited.compute(scheduler=daskray.get)) == 130


def test_from_an_empty_dataset_raises(ray_ctx):
    from ray.data.expressions import col

    ds = ray_ctx.data.range(10).filter(expr=col("id") < 0)
    with pytest.raises(ValueError, match="has no rows"):
        daskray.from_ray_dataset(ds)


def test_a_failing_partition_raises_its_error(ray_ctx):
    def bad(i):
        if i == 2:
            raise ZeroDivisionError("partition two")
        return part(i)

    df = dd.from_map(bad, range(4), meta=part(0).iloc[:0])
    with pytest.raises(ZeroDivisionError, match="partition two") as info:
        daskray.to_ray_dataset(df)
    assert "daskray: raised by the task for key" in str(info.value)


def test_unknown_ray_falls_back_to_the_public_constructors(ray_ctx, monkeypatch):
    monkeypatch.setattr(_raydata_compat.ray, "__version__", "2.59.3")
    assert not _raydata_compat.available() and not raydata.use_internal_api()
    with pytest.raises(RuntimeError, match="tested: 2.60"):
        _raydata_compat.metadata([_raydata_compat.block_metadata(part(0).drop(columns="name"))])
    used = []
    real = ray_ctx.data.from_pandas_refs
    monkeypatch.setattr(ray_ctx.data, "from_pandas_refs", lambda refs: used.append(1) or real(refs))
    assert daskray.to_ray_dataset(frame()).count() == ROWS and used == [1]
    monkeypatch.undo()
    assert _raydata_compat.available()


def test_bad_arguments(ray_ctx):
    with pytest.raises(TypeError, match="takes a dask DataFrame"):
        daskray.to_ray_dataset([1, 2])
    with pytest.raises(ValueError, match="block_format"):
        daskray.to_ray_dataset(frame(), block_format="csv")
    with pytest.raises(ValueError, match="needs Ray"):
        daskray.to_ray_dataset(frame(), debug=True)


def test_compact_metadata_is_ray_datas_own(ray_ctx):
    """The metadata daskray computes in its tasks for numpy-typed pandas blocks equals what
    Ray Data's ``BlockMetadataWithSchema.from_block`` says of them; other blocks get Ray
    Data's own."""
    from ray.data.block import BlockMetadataWithSchema

    plain = part(3).drop(columns="name").set_axis(pd.RangeIndex(300, 400))
    for block in (plain, plain.iloc[::2], part(1)):  # a RangeIndex, an Index, a str column
        (ours,) = _raydata_compat.metadata([_raydata_compat.block_metadata(block)])
        theirs = BlockMetadataWithSchema.from_block(block)
        assert (ours.num_rows, ours.size_bytes) == (theirs.num_rows, theirs.size_bytes)
        assert ours.schema == theirs.schema


def test_from_ray_dataset_blocks_are_located_inputs(ray_ctx):
    """The blocks enter daskray's graphs as persisted values (ObjectRefs run alone and are
    handed to their consumers), the inputs daskray places work next to on a cluster."""
    from daskray import ingest, planning

    df = daskray.from_ray_dataset(ray_ctx.data.range(100, override_num_blocks=4))
    (opt,) = dask.optimize(df.id + 1)
    graph = ingest.ingest(opt.__dask_graph__(), opt.__dask_keys__())
    held = planning.held_values(graph)
    assert len(held) == 4 and all(graph.names[i][0].startswith("ray-block-") for i in held)
