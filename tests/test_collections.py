"""End to end: dask collections computed with daskray equal dask's synchronous scheduler.

``mode`` runs a test fused on Ray (the default), unfused on Ray (``fuse=False``) and in
debug mode (the same plan in this process); tests without it run fused on Ray.
"""

from __future__ import annotations

import functools
import os
import sys
from operator import add

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import ray.cloudpickle
from dask._task_spec import Alias

import daskray

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(params=["fused", "unfused", "debug"])
def mode(request):
    return request.param


@pytest.fixture
def sched(request, mode):
    """A dask ``scheduler=`` value running daskray in ``mode``."""
    if mode == "debug":
        return functools.partial(daskray.get, debug=True)
    request.getfixturevalue("ray_ctx")
    if mode == "unfused":
        return functools.partial(daskray.get, fuse=False)
    return daskray.get


@pytest.fixture
def ray_sched(ray_ctx):
    """daskray on Ray with default options."""
    return daskray.get


def compute_both(*collections, scheduler):
    """``(daskray results, sync results)`` of the same collections."""
    got = dask.compute(*collections, scheduler=scheduler)
    want = dask.compute(*collections, scheduler="sync")
    assert len(got) == len(want) == len(collections)
    return got, want


def assert_arrays_match(got, want):
    for g, w in zip(got, want, strict=True):
        assert np.shape(g) == np.shape(w)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=0)


def sort_frame(df):
    """Rows in a defined order (by every column), index dropped."""
    return df.sort_values(list(df.columns)).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# dask.array


@pytest.fixture
def npx():
    return np.random.default_rng(0).standard_normal((12, 10))


def test_array_reductions(sched, npx):
    x = da.from_array(npx, chunks=(4, 3))
    exprs = [
        x.sum(),
        x.sum(axis=0),
        x.mean(axis=1),
        x.std(),
        x.std(axis=0, ddof=1),
        x.argmax(axis=0),
        x.argmax(axis=1),
        x.argmin(),
        x.max(axis=1),
    ]
    got, want = compute_both(*exprs, scheduler=sched)
    assert_arrays_match(got, want)
    np.testing.assert_allclose(got[2], npx.mean(axis=1))
    np.testing.assert_array_equal(got[5], npx.argmax(axis=0))


def test_array_transpose_add_and_matmul(sched):
    a = np.arange(100, dtype=float).reshape(10, 10) / 7
    x = da.from_array(a, chunks=4)
    got, want = compute_both(x + x.T, x @ x.T, (x @ x.T).sum(axis=1), scheduler=sched)
    assert_arrays_match(got, want)
    np.testing.assert_allclose(got[0], a + a.T)
    np.testing.assert_allclose(got[1], a @ a.T)


def test_array_rechunk(sched, npx):
    x = da.from_array(npx, chunks=(4, 3))
    y = x.rechunk((5, 7))
    z = y.rechunk((12, 1))
    got, want = compute_both(y, z, z[:, 3], scheduler=sched)
    assert_arrays_match(got, want)
    np.testing.assert_array_equal(got[1], npx)
    assert z.chunks == ((12,), (1,) * 10)


def test_array_map_overlap(sched, npx):
    x = da.from_array(npx, chunks=(4, 5))

    def diff(b):
        return b - np.roll(b, 1, axis=0)

    y = x.map_overlap(diff, depth={0: 1, 1: 0}, boundary="reflect")
    z = x.map_overlap(lambda b: b * 2, depth=2, boundary="none")
    got, want = compute_both(y, z, scheduler=sched)
    assert_arrays_match(got, want)
    np.testing.assert_allclose(got[1], npx * 2)


def test_array_map_blocks(sched):
    x = da.ones((6, 8), chunks=(3, 4), dtype=int)

    def tag(b, block_id=None):
        return b * (10 * block_id[0] + block_id[1])

    y = x.map_blocks(tag, dtype=int)
    z = da.map_blocks(np.add, x, y, dtype=int)
    got, want = compute_both(y, z, scheduler=sched)
    assert_arrays_match(got, want)
    assert got[0][0, 0] == 0 and got[0][0, 5] == 1 and got[0][4, 0] == 10 and got[0][5, 7] == 11


def test_array_slicing_and_fancy_indexing(sched, npx):
    x = da.from_array(npx, chunks=(4, 3))
    exprs = [
        x[2:9:2, ::-1],
        x[[0, 5, 3, 11], :],
        x[:, [9, 0, 4]],
        x[x[:, 0] > 0],
        x[3],
        x[np.array([1, 1, 2]), 4],
    ]
    got, want = compute_both(*exprs, scheduler=sched)
    assert_arrays_match(got, want)
    np.testing.assert_array_equal(got[0], npx[2:9:2, ::-1])
    np.testing.assert_array_equal(got[3], npx[npx[:, 0] > 0])


def test_array_from_numpy_shared_literal(sched):
    a = np.arange(120).reshape(12, 10)
    x = da.from_array(a, chunks=(5, 4))  # one DataNode holding `a`, getitem tasks on it
    got, want = compute_both(x, (x * 2).sum(axis=0), x[7:, 3:9], scheduler=sched)
    assert_arrays_match(got, want)
    np.testing.assert_array_equal(got[0], a)
    np.testing.assert_array_equal(got[1], (a * 2).sum(axis=0))


def test_array_random_with_seed(sched):
    x = da.random.default_rng(42).normal(size=(20, 20), chunks=5)
    y = da.random.RandomState(7).randint(0, 100, size=30, chunks=7)
    got, want = compute_both(x, x.mean(axis=0), y, scheduler=sched)
    assert_arrays_match(got, want)
    again = dask.compute(x, scheduler=sched)[0]
    np.testing.assert_array_equal(again, got[0])
    assert np.unique(got[0]).size == 400  # really random, not a constant


# --------------------------------------------------------------------------------------------
# dask.dataframe


@pytest.fixture
def pdf():
    rng = np.random.default_rng(1)
    n = 200
    return pd.DataFrame(
        {
            "k": rng.integers(0, 7, n),
            "v": rng.random(n),
            "w": np.arange(n),
            "s": rng.choice(["a", "b", "c"], n),
        }
    )


def test_dataframe_from_pandas(sched, pdf):
    ddf = dd.from_pandas(pdf, npartitions=4)
    got, want = compute_both(ddf, ddf.v.sum(), ddf[ddf.k > 3].w, scheduler=sched)
    pd.testing.assert_frame_equal(got[0], want[0])
    assert got[1] == pytest.approx(pdf.v.sum())
    pd.testing.assert_series_equal(got[2], want[2])
    assert len(got[0]) == len(pdf)


def test_dataframe_groupby_agg(sched, pdf):
    ddf = dd.from_pandas(pdf, npartitions=4)
    g1 = ddf.groupby("k").agg({"v": ["sum", "mean", "max"], "w": "count"})
    g2 = ddf.groupby(["k", "s"]).v.agg(["min", "std", "size"])
    g3 = ddf.groupby("s").w.sum(split_out=2)
    got, want = compute_both(g1, g2, g3, scheduler=sched)
    for g, w in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(
            pd.DataFrame(g).sort_index(), pd.DataFrame(w).sort_index(), check_exact=False
        )
    expected = pdf.groupby("k").v.mean()
    np.testing.assert_allclose(got[0][("v", "mean")].sort_index(), expected)


def test_dataframe_hash_merge(sched, pdf):
    left = dd.from_pandas(pdf, npartitions=3)
    right_p = pd.DataFrame({"k": np.arange(0, 7), "name": [f"n{i}" for i in range(7)]})
    right = dd.from_pandas(pd.concat([right_p] * 3), npartitions=2)
    merged = left.merge(right, on="k", how="inner", shuffle_method="tasks", broadcast=False)
    assert merged.npartitions > 1
    got, want = compute_both(merged, scheduler=sched)
    pd.testing.assert_frame_equal(sort_frame(got[0]), sort_frame(want[0]))
    assert len(got[0]) == 3 * len(pdf)


def test_dataframe_tasks_shuffle(sched, pdf):
    ddf = dd.from_pandas(pdf, npartitions=4)
    shuffled = ddf.shuffle("k", shuffle_method="tasks", npartitions=3)
    got, want = compute_both(shuffled, scheduler=sched)
    pd.testing.assert_frame_equal(
        got[0].sort_values("w").reset_index(drop=True),
        want[0].sort_values("w").reset_index(drop=True),
    )
    # every value of k lands in exactly one output partition
    parts = dask.compute(*shuffled.to_delayed(), scheduler=sched)
    assert len(parts) == 3
    seen: set = set()
    for p in parts:
        ks = set(p.k)
        assert not ks & seen
        seen |= ks
    assert seen == set(pdf.k)


def test_dataframe_set_index(sched, pdf):
    ddf = dd.from_pandas(pdf.sample(frac=1, random_state=3), npartitions=4)
    by_w = ddf.set_index("w")
    by_v = ddf.set_index("v", shuffle_method="tasks")
    got, want = compute_both(by_w, by_v, scheduler=sched)
    pd.testing.assert_frame_equal(got[0], want[0])
    pd.testing.assert_frame_equal(got[1], want[1])
    assert got[0].index.is_monotonic_increasing
    pd.testing.assert_frame_equal(got[0], pdf.set_index("w"), check_dtype=False)


def test_dataframe_read_parquet(sched, pdf, tmp_path):
    path = tmp_path / "pq"
    path.mkdir()
    for i, start in enumerate(range(0, len(pdf), 70)):
        chunk = pdf.iloc[start : start + 70]
        chunk.to_parquet(path / f"part.{i}.parquet", engine="pyarrow", index=False)
    ddf = dd.read_parquet(str(path), engine="pyarrow")
    sel = ddf[ddf.k >= 2][["w", "v"]]
    got, want = compute_both(ddf, sel, sel.v.sum(), scheduler=sched)
    pd.testing.assert_frame_equal(sort_frame(got[0]), sort_frame(want[0]))
    pd.testing.assert_frame_equal(sort_frame(got[1]), sort_frame(want[1]))
    assert got[2] == pytest.approx(pdf[pdf.k >= 2].v.sum())
    assert sorted(got[0].w) == list(range(len(pdf)))


def test_dataframe_to_parquet_through_daskray(ray_sched, pdf, tmp_path):
    ddf = dd.from_pandas(pdf, npartitions=3)
    ddf.to_parquet(str(tmp_path / "out"), compute_kwargs={"scheduler": ray_sched})
    back = pd.read_parquet(tmp_path / "out")
    assert len(list((tmp_path / "out").glob("*.parquet"))) == 3
    pd.testing.assert_frame_equal(
        sort_frame(back[["k", "v", "w"]]), sort_frame(pdf[["k", "v", "w"]])
    )


def _persisted_values(collection):
    return [v for v in dict(collection.__dask_graph__()).values() if not isinstance(v, Alias)]


def test_persist_under_config_then_compute(ray_ctx, pdf):
    from daskray.futures import RayFuture

    ddf = dd.from_pandas(pdf, npartitions=4)
    expected_frame = ddf[ddf.k > 1].compute(scheduler="sync")
    with dask.config.set(scheduler=daskray.get):
        persisted = ddf[ddf.k > 1].persist()
        # persisted partitions stay on Ray: one future (an ObjectRef) per partition
        values = _persisted_values(persisted)
        assert len(values) == persisted.npartitions
        assert all(isinstance(v, RayFuture) for v in values)
        total = (persisted.v * 2).sum().compute()
        frame = persisted.compute()
    assert total == pytest.approx((pdf[pdf.k > 1].v * 2).sum())
    pd.testing.assert_frame_equal(frame, expected_frame)
    assert frame.w.tolist() == pdf.w[pdf.k > 1].tolist()


# dask itself warns when one persist mixes a dataframe and an array; the test mixes them on
# purpose (one compute for both kinds)
@pytest.mark.filterwarnings("ignore:Computing mixed collections:UserWarning")
def test_dask_persist_several(sched, mode, pdf, npx):
    from daskray.futures import RayFuture

    ddf = dd.from_pandas(pdf, npartitions=3)
    x = da.from_array(npx, chunks=4) + 1
    frame = ddf.assign(z=ddf.v + ddf.w)
    pdf_p, x_p = dask.persist(frame, x, scheduler=sched)
    arr = _persisted_values(x_p)
    assert len(arr) == x_p.npartitions  # only data left
    # daskray.get itself offers dask's persist protocol (futures on Ray); through a
    # functools.partial of it dask persists by value, and daskray answers with futures too,
    # except in debug mode (no Ray: values)
    kind = np.ndarray if mode == "debug" else RayFuture
    assert all(isinstance(v, kind) for v in arr)
    (got_z,) = dask.compute(pdf_p.z.sum(), scheduler=sched)
    (got_x,) = dask.compute(x_p.sum(axis=0), scheduler=sched)
    assert got_z == pytest.approx((pdf.v + pdf.w).sum())
    np.testing.assert_allclose(got_x, (npx + 1).sum(axis=0))


# --------------------------------------------------------------------------------------------
# dask.bag


def test_bag_map_filter_fold_frequencies(sched):
    b = db.from_sequence(range(30), npartitions=4)
    mapped = b.map(lambda i: i * 3).filter(lambda i: i % 2 == 0)
    folded = b.fold(add)
    folded_init = b.fold(lambda acc, x: acc + [x % 4], lambda a, c: a + c, initial=[])
    freqs = b.map(lambda i: i % 3).frequencies()
    got, want = compute_both(mapped, folded, folded_init, freqs, scheduler=sched)
    assert got[0] == want[0] == [i * 3 for i in range(30) if (i * 3) % 2 == 0]
    assert got[1] == want[1] == sum(range(30))
    assert sorted(got[2]) == sorted(want[2]) == sorted(i % 4 for i in range(30))
    assert sorted(got[3]) == sorted(want[3]) == [(0, 10), (1, 10), (2, 10)]


@pytest.mark.parametrize("method", ["tasks", "disk"])
def test_bag_groupby(ray_sched, method):
    b = db.from_sequence(range(40), npartitions=5)
    grouped = b.groupby(lambda i: i % 4, shuffle=method).map(lambda kv: (kv[0], sorted(kv[1])))
    got, want = compute_both(grouped, scheduler=ray_sched)
    assert sorted(got[0]) == sorted(want[0])
    assert sorted(got[0]) == [(r, list(range(r, 40, 4))) for r in range(4)]


# --------------------------------------------------------------------------------------------
# dask.delayed


def test_delayed_dag(sched):
    @dask.delayed
    def load(i):
        return list(range(i, i + 5))

    @dask.delayed(nout=2)
    def split(xs):
        return xs[:2], xs[2:]

    @dask.delayed
    def pair(xs):
        return (min(xs), max(xs))  # returns a tuple (one value)

    @dask.delayed
    def combine(items, mapping, *, scale=1, extra=None):
        total = sum(sum(x) for x in items) + sum(mapping["a"]) + mapping["b"]["c"]
        return total * scale + (extra or 0)

    a, b = split(load(1))
    lo_hi = pair(b)
    result = combine(
        [a, b, [lo_hi[0], 100]],
        {"a": [lo_hi[1], 3], "b": {"c": a[0]}},
        scale=dask.delayed(2),
        extra=lo_hi[0],
    )
    got, want = compute_both(result, lo_hi, a, scheduler=sched)
    # a=[1,2], b=[3,4,5], lo_hi=(3,5); (3+12+103 + 8 + 1) * 2 + 3
    assert got[0] == want[0] == (3 + 12 + 103 + 8 + 1) * 2 + 3
    assert got[1] == want[1] == (3, 5)
    assert got[2] == want[2] == [1, 2]


def test_delayed_nested_containers_and_kwargs(sched):
    d = [dask.delayed(i) * 10 for i in range(4)]
    out = dask.delayed(lambda lst, dct, k=None: (sum(lst), dct["x"][1], k["y"]))(
        d, {"x": (d[0], d[3])}, k={"y": d[2]}
    )
    got, want = compute_both(out, {"nested": [d[1], {"z": d[2]}]}, scheduler=sched)
    assert got[0] == want[0] == (60, 30, 20)
    assert got[1] == want[1] == {"nested": [10, {"z": 20}]}


# --------------------------------------------------------------------------------------------
# daskray as the configured default scheduler


def test_config_set_then_plain_compute(ray_ctx, npx):
    x = da.from_array(npx, chunks=4)
    expected = (x @ x.T).trace().compute(scheduler="sync")
    with dask.config.set(scheduler=daskray.get):
        pid = dask.delayed(os.getpid)().compute()
        got = (x @ x.T).trace().compute()
        (items,) = dask.compute(db.from_sequence([1, 2, 3]).map(lambda i: i + 1))
    assert pid != os.getpid()  # it ran in a Ray worker, not here
    np.testing.assert_allclose(got, expected)
    assert items == [2, 3, 4]


def test_results_match_sync_on_a_larger_fused_graph(ray_sched):
    """Enough tasks that fusion builds multi-task groups with several outputs."""
    x = da.random.default_rng(3).random((60, 60), chunks=6)  # 100 chunks
    y = ((x + 1) * x.T).rechunk(15).sum(axis=1)
    got, want = compute_both(y, x.std(axis=0), scheduler=ray_sched)
    assert_arrays_match(got, want)


# --------------------------------------------------------------------------------------------
# results are ordinary, mutable objects (as with every dask scheduler)


def test_computed_array_is_writeable(ray_sched):
    x = da.arange(10, chunks=5) + 1
    want = x.compute(scheduler="sync")
    want += 1  # fine with dask's own scheduler
    got = x.compute(scheduler=ray_sched)
    got += 1
    np.testing.assert_array_equal(got, want)


def test_computed_dataframe_is_writeable(ray_sched, pdf):
    ddf = dd.from_pandas(pdf[["v", "w"]], npartitions=2) + 1
    want = ddf.compute(scheduler="sync")
    want.loc[0, "v"] = -1.0
    got = ddf.compute(scheduler=ray_sched)
    got.loc[0, "v"] = -1.0
    pd.testing.assert_frame_equal(got, want)


def arrays_and_frames(n):
    """A delayed function's nested result: arrays large enough for Ray's zero-copy reads."""
    import collections

    Pair = collections.namedtuple("Pair", "left right")
    big = np.arange(n, dtype="f8")
    return {
        "x": big,
        "df": pd.DataFrame({"a": big, "b": big * 2}),
        "nested": [(big.copy(), {"deep": big + 1})],
        "pair": Pair(big * 3, "label"),
    }


def test_nested_results_are_writeable(ray_sched):
    """Arrays and frames inside dicts, lists, tuples and namedtuples come back writeable, as
    from dask's schedulers (``ray.get`` alone hands out read-only views of the object store)."""
    got = dask.delayed(arrays_and_frames)(200_000).compute(scheduler=ray_sched)
    got["x"] += 1
    got["df"].loc[0, "a"] = -1.0
    got["nested"][0][0][:] = 0
    got["nested"][0][1]["deep"] += 1
    got["pair"].left[0] = 7.0
    assert type(got["pair"]).__name__ == "Pair" and got["pair"].right == "label"
    assert got["x"][1] == 2.0 and got["df"].a[0] == -1.0 and got["pair"].left[0] == 7.0


def test_bag_elements_are_writeable(ray_sched):
    b = db.from_sequence([np.arange(100_000) + i for i in range(4)], npartitions=2)
    for arr in b.map(lambda a: a * 2).compute(scheduler=ray_sched):
        arr += 1
    (kept,) = dask.persist(da.arange(300_000, chunks=100_000), scheduler=ray_sched)
    chunk = kept.dask[(kept.name, 0)].result()
    chunk += 1
