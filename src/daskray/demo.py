"""The main job: real dask.array and dask.dataframe work on a local Ray, daskray beside
``ray.util.dask.ray_dask_get``, measured side by side in one process, results checked equal.

Run it with ``python -m daskray demo`` (``--small`` for a quick run). Both schedulers use the
same Ray instance (started here, all cores unless ``--num-cpus``), each workload is computed
once by each scheduler before timing (so worker start-up and imports count for neither), and
the times printed are the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import pandas as pd


def _workloads(small: bool) -> list[tuple[str, Callable[[], object]]]:
    import dask.array as da
    import dask.dataframe as dd

    n_ones = 2_000_000 if small else 8_000_000
    side = 2000 if small else 4000
    rows = 400_000 if small else 2_000_000

    def ones_sum():
        return da.ones(n_ones, chunks=2_000).sum()

    def transpose_mean():
        x = da.random.default_rng(0).random((side, side), chunks=side // 8)
        return (x + x.T).mean(axis=0).sum()

    def frame(nparts):
        rng = np.random.default_rng(0)
        pdf = pd.DataFrame(
            {"k": rng.integers(0, 100, rows), "v": rng.random(rows), "w": rng.random(rows)}
        )
        return dd.from_pandas(pdf, npartitions=nparts)

    def groupby_agg():
        return frame(32).groupby("k").agg({"v": "sum", "w": "mean"})

    def shuffle_sum():
        df = frame(16).shuffle("k", shuffle_method="tasks")
        return df.map_partitions(lambda p: p.assign(s=p.k * p.v)).s.sum()

    return [
        (f"da.ones({n_ones:,}, chunks=2000).sum()", ones_sum),
        (f"(x + x.T).mean(0).sum()  {side}x{side}", transpose_mean),
        (f"groupby-agg  {rows:,} rows / 32 partitions", groupby_agg),
        (f"tasks shuffle + sum  {rows:,} rows / 16 partitions", shuffle_sum),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daskray demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="smaller data, for a quick run")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per scheduler")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    args = parser.parse_args(argv)

    import ray
    from ray.util.dask import ray_dask_get

    from daskray import _ray

    with _ray.local_ray(args.num_cpus):
        return _demo(args, ray, ray_dask_get)


def _demo(args, ray, ray_dask_get) -> int:
    import daskray
    from daskray import bench

    print(
        f"daskray {daskray.__version__} (compiled core: {daskray.COMPILED}), ray "
        f"{ray.__version__}, {int(ray.cluster_resources()['CPU'])} CPUs"
    )
    header = f"{'workload':48s} {'daskray':>9s} {'ray_dask_get':>13s} {'speed-up':>9s}  agree"
    print(header)
    print("-" * len(header))
    ok = True
    for name, fn in _workloads(args.small):
        work = bench.Workload(name, lambda scale, fn=fn: (fn(), None), "demo")
        gets = {"daskray": daskray.get, "ray_dask_get": ray_dask_get}
        bench.side_by_side(work, gets, 1.0)  # warm both: worker start-up, imports
        times, values = bench.side_by_side(work, gets, 1.0, repeat=args.repeat)
        v_sync = fn().compute(scheduler="sync")
        ours = bench.same(values["daskray"], v_sync)
        agree = ours and bench.same(values["ray_dask_get"], v_sync)
        ok &= ours
        t_ours, t_ray = times["daskray"], times["ray_dask_get"]
        print(
            f"{name:48s} {t_ours:8.2f}s {t_ray:12.2f}s {t_ray / t_ours:8.1f}x  "
            f"{'yes' if agree else 'NO'}"
        )
    if not ok:
        print("daskray's results differ from dask's synchronous scheduler")
        return 1
    return 0
