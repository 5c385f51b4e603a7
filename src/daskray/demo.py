"""The main job: real dask.array and dask.dataframe work on a local Ray, daskray beside
``ray.util.dask.ray_dask_get``, measured side by side in one process, results checked equal.

Run it with ``daskray`` or ``python -m daskray demo`` (``--small`` for a quick run). The
workloads are :mod:`daskray.bench`'s array and dataframe ones at half their benchmark size
(a tenth with ``--small``). Both schedulers use the same Ray instance (started here, all cores
unless ``--num-cpus``), each workload is computed once by each scheduler before timing (so
worker start-up and imports count for neither), and the times printed are the best of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse

#: the bench workloads the demo runs
WORKLOADS = ("ones-sum", "transpose", "groupby", "shuffle")


def run(args: argparse.Namespace) -> int:
    """``daskray demo``: ``args`` has ``small``, ``repeat`` and ``num_cpus``."""
    from daskray import _ray

    with _ray.local_ray(args.num_cpus):
        return _demo(0.1 if args.small else 0.5, args.repeat)


def _demo(scale: float, repeat: int) -> int:
    import dask.local

    import daskray
    from daskray import _ray, bench

    print(
        f"daskray {daskray.__version__} (compiled core: {daskray.COMPILED}), ray "
        f"{_ray.ray_version()}, {_ray.cluster_cpus()} CPUs"
    )
    header = f"{'workload':48s} {'daskray':>9s} {'ray_dask_get':>13s} {'speed-up':>9s}  agree"
    print(header)
    print("-" * len(header))
    gets = {"daskray": daskray.get, "ray_dask_get": _ray.ray_dask_get()}
    ok = True
    for name in WORKLOADS:
        work = bench.WORKLOADS[name]
        bench.side_by_side(work, gets, scale)  # warm both: worker start-up, imports
        times, values = bench.side_by_side(work, gets, scale, repeat=repeat)
        expected = bench.run(work.make(scale), dask.local.get_sync)
        ours = bench.same(values["daskray"], expected)
        agree = ours and bench.same(values["ray_dask_get"], expected)
        ok &= ours
        t_ours, t_ray = times["daskray"], times["ray_dask_get"]
        print(
            f"{work.describe(scale):48s} {t_ours:8.2f}s {t_ray:12.2f}s {t_ray / t_ours:8.1f}x  "
            f"{'yes' if agree else 'NO'}"
        )
    if not ok:
        print("daskray's results differ from dask's synchronous scheduler")
        return 1
    return 0
