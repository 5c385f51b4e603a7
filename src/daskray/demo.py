"""The main job: real dask.array and dask.dataframe work on a local Ray, daskray beside
``ray.util.dask.ray_dask_get`` and beside the best of dask's own local schedulers (threads,
sync), measured side by side in one process, results checked equal.

Run it with ``daskray`` or ``python -m daskray demo`` (``--small`` for a quick run). The
workloads are :mod:`daskray.bench`'s array, dataframe and graph-shape ones at half their
benchmark size (a tenth with ``--small``). All schedulers share one Ray instance (started here,
all cores unless ``--num-cpus``), each workload is computed once by each scheduler before
timing (so worker start-up and imports count for none), and the times printed are the best of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse

#: the bench workloads the demo runs
WORKLOADS = ("ones-sum", "transpose", "groupby", "shuffle", "random-dag", "stencil")


def run(args: argparse.Namespace) -> int:
    """``daskray demo``: ``args`` has ``small``, ``repeat`` and ``num_cpus``."""
    from daskray import _ray

    with _ray.local_ray(args.num_cpus):
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
