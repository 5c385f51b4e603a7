"""The ``daskray`` command: ``demo`` (default), ``bench``, ``tune`` and ``info``.

``daskray bench [WORKLOAD ...] --schedulers daskray,ray_dask_get,threads,sync`` runs the
benchmark workloads of :mod:`daskray.bench` side by side in one process, on one local Ray,
and writes a JSON file of the timings and a PNG bar chart of each scheduler's time relative to
``ray_dask_get`` (log scale). ``daskray bench big --op shuffle --gb 2 --store-gb 0.25`` runs
the beyond-memory family of :mod:`daskray.bigbench` instead: each scheduler in a fresh
subprocess under a time limit, a table row and a JSON record each. ``daskray tune WORKLOAD``
measures a workload's per-prefix task durations into a fusion profile (:mod:`daskray.tuning`)
and prints its run time by task count and with the profile. ``daskray info`` prints versions,
whether the compiled core is active, and the Ray cluster's nodes and resources.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def info(args: argparse.Namespace) -> int:
    import dask

    import daskray
    from daskray import _graph, _ray

    print(f"daskray {daskray.__version__}")
    print(f"compiled core: {_graph.COMPILED} ({_graph.plan.__module__})")
    print(f"ray {_ray.ray_version()}, dask {dask.__version__}, python {sys.version.split()[0]}")
    with _ray.local_ray(address=args.address):
        nodes = [n for n in _ray.node_records(max_age=0.0) if n.get("Alive")]
        print(f"ray cluster: {len(nodes)} node(s)")
        for n in nodes:
            res = {
                k: v
                for k, v in sorted(n["Resources"].items())
                if not k.startswith("node:") and k not in ("object_store_memory",)
            }
            print(f"  {n['NodeID'][:12]}  {n['NodeManagerAddress']}  {res}")
    return 0


def bench(args: argparse.Namespace) -> int:
    from daskray import _ray
    from daskray import bench as workloads

    names = args.workloads or [w for w in workloads.WORKLOADS if w != "million"]
    unknown = [w for w in names if w not in workloads.WORKLOADS]
    if unknown:
        args.parser.error(f"unknown workloads {unknown}; choose from {list(workloads.WORKLOADS)}")
    if args.plan_only:
        return _plan_only(args, names)
    gets = workloads.schedulers(args.schedulers.split(","))
    rows: list[dict[str, Any]] = []
    with _ray.local_ray(args.num_cpus):
        for name in names:
            w = workloads.WORKLOADS[name]
            for get in gets.values():  # warm-up: worker start-up and imports count for none
                workloads.time_it(w, get, min(args.scale, 0.01))
            peaks: dict[str, int] = {}
            times, values = workloads.side_by_side(w, gets, args.scale, args.repeat, peaks)
            first = next(iter(values.values()))
            agree = all(workloads.same(first, v) for v in values.values())
            rows.append(
                {
                    "workload": name,
                    "seconds": times,
                    "agree": agree,
                    "peak_rss_gb": {s: p / 2**30 for s, p in peaks.items()},
                }
            )
            shown = "  ".join(f"{s} {t:.3f}s" for s, t in times.items())
            print(f"{name:10s} {shown}  {'agree' if agree else 'RESULTS DIFFER'}", flush=True)
    report = {
        "scale": args.scale,
        "schedulers": list(gets),
        "cpus": args.num_cpus,
        "rows": rows,
    }
    with open(f"{args.output}.json", "w") as f:
        json.dump(report, f, indent=1)
    chart(report, f"{args.output}.png")
    print(f"wrote {args.output}.json and {args.output}.png")
    return 0 if all(r["agree"] for r in rows) else 1


def _plan_only(args: argparse.Namespace, names: list[str]) -> int:
    """``daskray bench --plan-only``: time interning + planning of raw-graph workloads."""
    from daskray import bench as workloads

    rows = []
    for name in names:
        try:
            row = workloads.plan_only(workloads.WORKLOADS[name], args.scale)
        except ValueError as e:
            args.parser.error(str(e))
        rows.append({"workload": name, **row})
        print(
            f"{name:10s} {row['tasks']:>12,} tasks  ingest+plan {row['plan_s']:.2f}s "
            f"({row['us_per_task']:.2f} us/task)  RSS +{row['rss_growth_bytes_per_task']:.0f} "
            f"B/task  {row['groups']:,} groups",
            flush=True,
        )
    with open(f"{args.output}.json", "w") as f:
        json.dump({"scale": args.scale, "plan_only": True, "rows": rows}, f, indent=1)
    print(f"wrote {args.output}.json")
    return 0


def tune(args: argparse.Namespace) -> int:
    import dask

    import daskray
    from daskray import _ray
    from daskray import bench as workloads

    w = workloads.WORKLOADS[args.workload]
    with _ray.local_ray(args.num_cpus):
        workloads.time_it(w, daskray.get, min(args.scale, 0.01))  # warm the workers
        with dask.config.set({"daskray.fusion.profile": None}):
            before, expected = workloads.time_it(w, daskray.get, args.scale, args.repeat)
            obj, keys = w.make(args.scale)
            if keys is None:
                profile = daskray.tune(obj, filename=args.output)
            else:  # a raw graph: wrap it as a collection dask can compute
                from dask.delayed import Delayed

                profile = daskray.tune(Delayed(keys, obj), filename=args.output)
        with dask.config.set({"daskray.fusion.profile": args.output}):
            after, value = workloads.time_it(w, daskray.get, args.scale, args.repeat)
    slowest = sorted(profile["prefixes"].items(), key=lambda kv: -kv[1])[:5]
    print(f"wrote {args.output}: per-task seconds of {len(profile['prefixes'])} prefixes")
    for prefix, secs in slowest:
        print(f"  {prefix:30s} {secs * 1e3:10.3f} ms")
    agree = workloads.same(expected, value)
    print(
        f"{args.workload}: {before:.3f}s by task count, {after:.3f}s with the profile "
        f"({before / after:.2f}x){'' if agree else '  RESULTS DIFFER'}"
    )
    return 0 if agree else 1


def chart(report: dict, path: str) -> None:
    """A grouped bar chart: each scheduler's time relative to ray_dask_get, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    scheds = report["schedulers"]
    base = "ray_dask_get" if "ray_dask_get" in scheds else scheds[0]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.5))
    width = 0.8 / len(scheds)
    for j, s in enumerate(scheds):
        ratios = [r["seconds"][s] / r["seconds"][base] for r in rows]
        xs = [i + (j - (len(scheds) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, ratios, width, label=s)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [r["workload"] for r in rows])
    ax.set_ylabel(f"time relative to {base} (log; lower is faster)")
    ax.set_title(f"daskray bench, scale {report['scale']}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    """The ``daskray`` command line: one subcommand per job (see the module docstring)."""
    from daskray import bench as workloads

    top = argparse.ArgumentParser(
        prog="daskray",
        description="daskray: a Dask scheduler on Ray. Without a command, runs the demo.",
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    p = sub.add_parser("demo", help="dask.array and dask.dataframe work: daskray vs ray_dask_get")
    p.add_argument("--small", action="store_true", help="smaller data, for a quick run")
    p.add_argument("--repeat", type=int, default=2, help="timed runs per scheduler")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    p.add_argument(
        "--ml",
        action="store_true",
        help="the ML pipeline instead: dask ETL -> Ray Data inference -> dask aggregate",
    )
    p.add_argument("--rows", type=int, default=None, help="rows of the ML pipeline's data")
    p.set_defaults(run=_demo)

    p = sub.add_parser(
        "bench",
        help="run benchmark workloads side by side (JSON + PNG); "
        "`bench big`: the beyond-memory family",
        epilog="daskray bench big --help: the beyond-memory family (a subprocess a scheduler)",
    )
    p.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"any of {', '.join(workloads.WORKLOADS)} (default: all but 'million')",
    )
    p.add_argument("--schedulers", default="daskray,ray_dask_get,threads,sync")
    p.add_argument("--scale", type=float, default=1.0, help="1.0: the target sizes")
    p.add_argument("--repeat", type=int, default=1, help="timed runs (best is kept)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    p.add_argument("--output", default="daskray-bench", help="writes OUTPUT.json/.png")
    p.add_argument(
        "--plan-only",
        action="store_true",
        help="time interning + planning of raw-graph workloads (no Ray), and RSS growth",
    )
    p.set_defaults(run=bench, parser=p)

    p = sub.add_parser(
        "tune",
        help="measure a workload's task durations into a fusion profile",
        description="measure a workload's task durations and write a fusion profile; "
        "show its run time before and after",
    )
    p.add_argument("workload", metavar="WORKLOAD", choices=list(workloads.WORKLOADS))
    p.add_argument("--scale", type=float, default=1.0, help="1.0: the target sizes")
    p.add_argument("--repeat", type=int, default=3, help="timed runs each (best is kept)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray")
    p.add_argument("--output", default="daskray-profile.json", help="the profile to write")
    p.set_defaults(run=tune)

    p = sub.add_parser("info", help="versions, the compiled core, the Ray cluster's nodes")
    p.add_argument("--address", default=None, help="Ray address (default: a local Ray)")
    p.set_defaults(run=info)
    return top


def big_parser() -> argparse.ArgumentParser:
    """``daskray bench big``: the beyond-memory family (:mod:`daskray.bigbench`)."""
    from daskray import bigbench

    p = argparse.ArgumentParser(
        prog="daskray bench big",
        description="Beyond-memory benchmarks: all-to-all operations over more data than the "
        "object store holds; each scheduler runs in a fresh subprocess under a time limit, "
        "its answer checked against the input's checksums.",
    )
    p.add_argument(
        "--op", default="shuffle", help=f"comma list of {', '.join(bigbench.OPS)} (default shuffle)"
    )
    p.add_argument("--gb", type=float, default=2.0, help="input GiB (default 2)")
    p.add_argument(
        "--store-gb",
        type=float,
        default=0.25,
        help="Ray's object store GiB (at least 75 MiB); p2p workers get this + 1 GiB each",
    )
    p.add_argument(
        "--partitions", type=int, default=None, help="input partitions (default: 20 MiB each)"
    )
    p.add_argument("--schedulers", default=",".join(bigbench.SCHEDULERS))
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of each scheduler")
    p.add_argument(
        "--limit",
        default=f"{bigbench.DEFAULT_LIMIT:g}",
        help="seconds a timed run may take before its row says DNF: SECONDS and/or "
        "NAME=SECONDS, comma-separated (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--tmpdir", default=None, help="where spill/temporary folders go")
    p.add_argument("--output", default="daskray-bench-big", help="writes OUTPUT(.json)")
    p.set_defaults(run=bigbench.main, parser=p)
    return p


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    """Run ``daskray [COMMAND] ...``; no command (or only options) runs the demo."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["demo", *argv]
    if argv[:2] == ["bench", "big"]:
        args = big_parser().parse_args(argv[2:])
    else:
        args = parser().parse_args(argv)
    return args.run(args)
