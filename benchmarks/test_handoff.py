"""The Ray Data hand-off against Ray's own ``ray.data.from_dask``, and its memory and fidelity.

At scale 1 (``DASKRAY_BENCH_SCALE=1``, or ``python benchmarks/raydata_targets.py``) these are
the targets of the hand-off:

* an unpersisted dataframe of 1,000 partitions (1,000,000 rows, made in tasks by
  ``dd.from_map``): ``daskray.to_ray_dataset`` beside ``ray.data.from_dask`` on the same
  collection, side by side after a warm-up, best of 2 (target: >= 20x);
* the same collection persisted first: the hand-off alone;
* a 1 GiB collection made in tasks (128 partitions of 8 MiB): the driver's RSS growth during
  the hand-off (target: < 50 MB) -- the blocks stay in the object store;
* dask -> Ray Data -> dask keeps every row, dtype and the partition order.

CI runs them once at a small scale (0.02: 20 partitions, 21 MB) for correctness; timings are
recorded, never asserted.
"""

from __future__ import annotations

import time

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import psutil

import daskray

ROWS_PER_PART = 1000
MIB = 1 << 20


def rows(i: int, n: int = ROWS_PER_PART) -> pd.DataFrame:
    """Partition ``i`` of the 1M-row frame: ids, two floats, a category code (cheap to make:
    the figures are about the hand-off, which both sides pay the same partitions for)."""
    ids = np.arange(i * n, (i + 1) * n)
    x = ids * 0.5
    return pd.DataFrame({"id": ids, "x": x, "y": x * x, "k": ids % 7})


def frame(partitions: int) -> dd.DataFrame:
    return dd.from_map(rows, range(partitions), meta=rows(0, 0))


def megabytes(i: int, mib: int) -> pd.DataFrame:
    """A partition of ``mib`` MiB of float64 (4 columns), made in a task."""
    n = mib * MIB // 32
    rng = np.random.default_rng(i)
    return pd.DataFrame({c: rng.random(n) for c in "abcd"})


def best_of(n: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure_handoff(partitions: int) -> dict:
    """Best-of-2 seconds of daskray.to_ray_dataset and ray.data.from_dask on one unpersisted
    collection (both warmed up first), the persisted hand-off, and the datasets' agreement."""
    import ray

    df = frame(partitions)
    small = frame(4)
    daskray.to_ray_dataset(small).count()  # warm both: worker start-up, imports
    ray.data.from_dask(small).count()
    ours, ds = best_of(2, lambda: daskray.to_ray_dataset(df))
    theirs, ref = best_of(2, lambda: ray.data.from_dask(df))
    (kept,) = dask.persist(df, scheduler=daskray.get)
    kept.x.sum().compute(scheduler=daskray.get)  # wait until the partitions exist
    persisted, _ = best_of(2, lambda: daskray.to_ray_dataset(kept))
    agree = ds.count() == ref.count() == partitions * ROWS_PER_PART and np.isclose(
        ds.sum("x"), ref.sum("x")
    )
    return {
        "to_ray_dataset": ours,
        "ray.data.from_dask": theirs,
        "persisted": persisted,
        "agree": bool(agree),
    }


def rss() -> int:
    return psutil.Process().memory_info().rss


def measure_rss(total_mib: int, part_mib: int = 8) -> dict:
    """Driver RSS growth while handing over an unpersisted ``total_mib`` collection."""
    parts = max(2, total_mib // part_mib)
    df = dd.from_map(megabytes, range(parts), mib=part_mib, meta=megabytes(0, 0))
    daskray.to_ray_dataset(frame(2)).count()  # warm: imports, first-use allocations
    before = rss()
    t0 = time.perf_counter()
    ds = daskray.to_ray_dataset(df)
    seconds = time.perf_counter() - t0
    grown = rss() - before
    assert ds.num_blocks() == parts and ds.count() == parts * (part_mib * MIB // 32)
    return {"mib": parts * part_mib, "rss_growth_mb": grown / 1e6, "seconds": seconds}


def measure_round_trip(partitions: int) -> dict:
    """dask -> Ray Data -> dask: every row, dtype and the partition order."""
    df = frame(partitions).assign(name=lambda d: "r" + d.id.astype(str))
    back = daskray.from_ray_dataset(daskray.to_ray_dataset(df))
    want = df.compute(scheduler=daskray.get)
    got = back.compute(scheduler=daskray.get)
    same = got.reset_index(drop=True).equals(want.reset_index(drop=True))
    return {
        "rows": len(got),
        "dtypes_kept": dict(back.dtypes) == dict(df.dtypes) == dict(got.dtypes),
        "order_kept": bool(same and got.id.is_monotonic_increasing),
        "partitions": back.npartitions,
    }


def _scale() -> float:
    # imported here, not at the top: Ray workers import this module for ``rows`` and
    # ``megabytes``, and ``conftest`` on their path is another one
    from conftest import SCALE

    return SCALE


def test_handoff_against_from_dask(ray_ctx, record):
    scale = _scale()
    partitions = max(4, round(1000 * scale))
    got = measure_handoff(partitions)
    assert got["agree"]
    record(
        f"handoff-{partitions}",
        {"daskray": got["to_ray_dataset"], "ray.data.from_dask": got["ray.data.from_dask"]},
        persisted_s=round(got["persisted"], 3),
    )


def test_handoff_keeps_blocks_out_of_the_driver(ray_ctx, record):
    scale = _scale()
    total = max(16, round(1024 * scale))
    got = measure_rss(total)
    # at least a quarter of the data would show if it came through the driver
    assert got["rss_growth_mb"] < min(50, max(5.0, total * MIB / 4e6)), got
    record(
        f"rss-{got['mib']}MiB", {"daskray": got["seconds"]}, rss_mb=round(got["rss_growth_mb"], 1)
    )


def test_round_trip(ray_ctx, record):
    scale = _scale()
    partitions = max(4, round(1000 * scale))
    got = measure_round_trip(partitions)
    assert got == {
        "rows": partitions * ROWS_PER_PART,
        "dtypes_kept": True,
        "order_kept": True,
        "partitions": partitions,
    }
