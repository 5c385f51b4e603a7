"""The hand-off's targets at full size, once: ``python benchmarks/raydata_targets.py``.

Starts a local Ray (2 CPUs, 3 GiB object store unless ``--num-cpus`` / ``--store-gib``), runs
the measurements of ``test_handoff.py`` at scale 1 and prints them as a table: the unpersisted
1,000-partition (1M-row) hand-off beside ``ray.data.from_dask`` (best of 2 after a warm-up),
the persisted hand-off, the driver's RSS growth handing over 1 GiB made in tasks, and the
round trip.
"""

from __future__ import annotations

import argparse

import ray
from test_handoff import measure_handoff, measure_round_trip, measure_rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--store-gib", type=float, default=3.0)
    args = parser.parse_args()
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        object_store_memory=int(args.store_gib * 2**30),
        include_dashboard=False,
        log_to_driver=False,
    )
    h = measure_handoff(1000)
    m = measure_rss(1024)
    r = measure_round_trip(1000)
    ratio = h["ray.data.from_dask"] / h["to_ray_dataset"]
    print("| measurement | figure | target |")
    print("|---|---|---|")
    print(
        f"| daskray.to_ray_dataset, 1,000 partitions / 1M rows, unpersisted | "
        f"{h['to_ray_dataset']:.2f} s | |"
    )
    print(f"| ray.data.from_dask, same collection | {h['ray.data.from_dask']:.2f} s | |")
    print(f"| speed-up | {ratio:.1f}x | >= 20x |")
    print(f"| daskray.to_ray_dataset, persisted | {h['persisted']:.3f} s | (reported) |")
    print(
        f"| driver RSS growth, {m['mib']} MiB hand-off ({m['seconds']:.2f} s) | "
        f"{m['rss_growth_mb']:.1f} MB | < 50 MB |"
    )
    print(
        f"| round trip: rows / dtypes / order | {r['rows']:,} / "
        f"{'kept' if r['dtypes_kept'] else 'CHANGED'} / "
        f"{'kept' if r['order_kept'] else 'CHANGED'} | all kept |"
    )
    print(f"| datasets agree (count, sum) | {h['agree']} | |")
    ray.shutdown()


if __name__ == "__main__":
    main()
