"""The main job: real dask.array and dask.dataframe work on a local Ray, daskray beside
``ray.util.dask.ray_dask_get`` and beside the best of dask's own local schedulers (threads,
sync), measured side by side in one process, results checked equal.

Run it with ``daskray`` or ``python -m daskray demo`` (``--small`` for a quick run). The
workloads are :mod:`daskray.bench`'s array, dataframe and graph-shape ones at half their
benchmark size (a tenth with ``--small``). All schedulers share one Ray instance (started here,
all cores unless ``--num-cpus``), each workload is computed once by each scheduler before
timing (so worker start-up and imports count for none), and the times printed are the best of
``--repeat`` runs.

``daskray demo --ml`` runs the other main job instead, one program across Dask and Ray's ML
side: a dask dataframe ETL (``dd.from_map`` of synthetic sales, bad records dropped, a derived
feature), a scikit-learn linear model fit on a tenth of it, the hand-off to Ray Data
(:func:`daskray.to_ray_dataset`), ``map_batches`` inference on Ray Data's actor pool (the
model shipped once per actor), the scored blocks back into dask
(:func:`daskray.from_ray_dataset`) and a per-store aggregate computed by daskray. The data
never passes through the driver; this module never imports Ray (the Dataset's methods do).
"""

from __future__ import annotations

import argparse

import dask

#: the bench workloads the demo runs
WORKLOADS = ("ones-sum", "transpose", "groupby", "shuffle", "random-dag", "stencil")


def run(args: argparse.Namespace) -> int:
    """``daskray demo``: ``args`` has ``small``, ``repeat``, ``num_cpus`` and ``ml``."""
    from daskray import _ray

    with _ray.local_ray(args.num_cpus):
        if getattr(args, "ml", False):
            rows = args.rows or (200_000 if args.small else 2_000_000)
            return ml(rows, max(2, rows // 20_000))
        return _demo(0.1 if args.small else 0.5, args.repeat)


def _demo(scale: float, repeat: int) -> int:
    import dask.local
    import dask.threaded

    import daskray
    from daskray import _ray, bench

    print(
        f"daskray {daskray.__version__} (compiled core: {daskray.COMPILED}), ray "
        f"{_ray.ray_version()}, {_ray.cluster_cpus()} CPUs"
    )
    header = (
        f"{'workload':34s} {'daskray':>8s} {'ray_dask_get':>13s} {'best local dask':>22s}  agree"
    )
    print(header)
    print("-" * len(header))
    gets = {
        "daskray": daskray.get,
        "ray_dask_get": _ray.ray_dask_get(),
        "threads": dask.threaded.get,
        "sync": dask.local.get_sync,
    }
    ok = True
    for name in WORKLOADS:
        work = bench.WORKLOADS[name]
        bench.side_by_side(work, gets, scale)  # warm all: worker start-up, imports
        times, values = bench.side_by_side(work, gets, scale, repeat=repeat)
        expected = bench.run(work.make(scale), dask.local.get_sync)
        ours = bench.same(values["daskray"], expected)
        agree = ours and all(bench.same(v, expected) for v in values.values())
        ok &= ours
        t_ours, t_ray = times["daskray"], times["ray_dask_get"]
        local = min(("threads", "sync"), key=times.__getitem__)
        print(
            f"{work.describe(scale):34s} {t_ours:7.2f}s {t_ray:7.2f}s {t_ray / t_ours:4.1f}x "
            f"{local:>7s} {times[local]:6.2f}s {times[local] / t_ours:4.1f}x  "
            f"{'yes' if agree else 'NO'}"
        )
    print("(x: the other scheduler's time / daskray's; above 1.0, daskray is faster)")
    if not ok:
        print("daskray's results differ from dask's synchronous scheduler")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# daskray demo --ml: dask ETL -> Ray Data inference -> dask aggregate, in one program
# ---------------------------------------------------------------------------------------------

#: the features the model reads
FEATURES = ["x1", "x2", "x3", "x3_sq"]


def sales(part: int, rows: int):
    """One partition of raw data (made in a Ray task): ``store``, features, the target ``y``,
    and a few rows with a missing or negative ``x1`` for the ETL to drop."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(part)
    x1, x2, x3 = rng.random(rows) * 10, rng.random(rows), rng.normal(size=rows)
    y = 3 * x1 - 2 * x2 + x3**2 + rng.normal(scale=0.1, size=rows)
    x1[rng.random(rows) < 0.01] = -1.0  # bad records
    store = rng.integers(0, 8, rows)
    return pd.DataFrame({"store": store, "x1": x1, "x2": x2, "x3": x3, "y": y})


class Predictor:
    """Ray Data ``map_batches`` inference: one model per actor, a ``pred`` column per batch."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, batch):
        return batch.assign(pred=self.model.predict(batch[FEATURES]))


def ml(rows: int, partitions: int) -> int:
    """Dask ETL -> ``daskray.to_ray_dataset`` -> Ray Data ``map_batches`` inference with a
    scikit-learn model (on Ray Data's actor pool) -> ``daskray.from_ray_dataset`` -> a dask
    aggregate; prints each step's time and the per-store errors; 0 if the model fits
    (R^2 > 0.95)."""
    import time

    import dask.dataframe as dd
    from sklearn.linear_model import LinearRegression

    import daskray

    clock = time.perf_counter
    print(f"ML pipeline: {rows:,} rows in {partitions} partitions")
    t0 = clock()
    raw = dd.from_map(sales, range(partitions), rows=rows // partitions)
    clean = raw[raw.x1 >= 0]
    clean = clean.assign(x3_sq=clean.x3**2)  # ETL: drop bad records, derive a feature
    train = clean.partitions[: max(1, partitions // 10)].compute(scheduler=daskray.get)
    model = LinearRegression().fit(train[FEATURES], train.y)
    t1 = clock()
    print(f"  dask ETL + fit on {len(train):,} rows   {t1 - t0:7.2f}s")
    ds = daskray.to_ray_dataset(clean)
    t2 = clock()
    print(f"  hand-off to Ray Data ({ds.num_blocks()} blocks)  {t2 - t1:7.2f}s")
    scored = ds.map_batches(
        Predictor,
        fn_constructor_args=(model,),
        batch_format="pandas",
        num_cpus=0.5,  # a callable class: Ray Data's autoscaling actor pool
    )
    back = daskray.from_ray_dataset(scored)  # runs the inference; blocks stay in Ray
    t3 = clock()
    print(f"  Ray Data map_batches inference    {t3 - t2:7.2f}s")
    back = back.assign(err=(back.pred - back.y).abs())
    stats = back.groupby("store")[["y", "pred", "err"]].mean()
    stats, total, sq = dask.compute(
        stats, back.y.var(), ((back.pred - back.y) ** 2).mean(), scheduler=daskray.get
    )
    t4 = clock()
    print(f"  dask aggregate over the results   {t4 - t3:7.2f}s")
    print(stats.round(3).to_string())
    r2 = 1 - sq / total
    print(f"R^2 {r2:.4f} over {int(back.shape[0].compute(scheduler=daskray.get)):,} rows")
    return 0 if r2 > 0.95 else 1
