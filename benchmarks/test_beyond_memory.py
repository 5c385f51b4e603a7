"""Beyond memory (issue #11 point 6): a shuffle of more data than Ray's object store holds.

``daskray.bigbench.run_family`` runs each scheduler in its own subprocess, one after the other
(a local Ray of ``STORE_GB`` with a spilling directory for daskray; dask's disk shuffle on its
threaded scheduler beside it), and checks every row against the input's checksums. CI runs it
once, small, for correctness: every row must be right, never fast. The environment sizes it up:
``DASKRAY_BENCH_BIG_GB`` (default 0.5: 6.4x the store), ``DASKRAY_BENCH_BIG_STORE_GB`` (0.08:
80 MiB; Ray refuses a store under 75 MiB), ``DASKRAY_BENCH_BIG_OPS`` (shuffle),
``DASKRAY_BENCH_BIG_SCHEDULERS`` (daskray,disk) and ``DASKRAY_BENCH_BIG_LIMIT`` (900 s a
timed run: a guard against a hang, not a target).
"""

from __future__ import annotations

import os

from daskray import bigbench

GB = float(os.environ.get("DASKRAY_BENCH_BIG_GB", "0.5"))
STORE_GB = float(os.environ.get("DASKRAY_BENCH_BIG_STORE_GB", "0.08"))
OPS = os.environ.get("DASKRAY_BENCH_BIG_OPS", "shuffle").split(",")
SCHEDULERS = os.environ.get("DASKRAY_BENCH_BIG_SCHEDULERS", "daskray,disk").split(",")
LIMIT = float(os.environ.get("DASKRAY_BENCH_BIG_LIMIT", "900"))


def test_beyond_memory(benchmark, record, tmp_path):
    report = benchmark.pedantic(
        bigbench.run_family,
        args=(OPS, GB, STORE_GB, SCHEDULERS),
        kwargs={"cpus": 2, "limits": {"*": LIMIT}, "tmpdir": str(tmp_path)},
        rounds=1,
        iterations=1,
    )
    for row in report["rows"]:
        assert row["status"] == "ok", f"{row['scheduler']} {row['op']}: {row['error']}"
    for op in OPS:
        rows = [r for r in report["rows"] if r["op"] == op]
        record(
            f"big-{op}",
            {r["scheduler"]: r["seconds"] for r in rows},
            gib=round(rows[0]["data_gib"], 2),
            store_gib=STORE_GB,
            peak_gib={r["scheduler"]: round(r["peak_gib"], 2) for r in rows},
        )
    assert list(tmp_path.iterdir()) == []  # every spill and work folder removed
