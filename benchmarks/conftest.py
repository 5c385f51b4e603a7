"""Benchmark settings and the side-by-side ratio table printed at the end of the run.

``DASKRAY_BENCH_SCALE`` sizes every workload (1.0 = the sizes the throughput targets are stated
for; the default, 0.02, is CI's quick correctness run). ``DASKRAY_BENCH_SCHEDULERS`` lists the
schedulers measured beside daskray (default: ray_dask_get,threads,sync).
"""

from __future__ import annotations

import json
import os

import pytest

SCALE = float(os.environ.get("DASKRAY_BENCH_SCALE", "0.02"))
OTHERS = [
    s
    for s in os.environ.get("DASKRAY_BENCH_SCHEDULERS", "ray_dask_get,threads,sync").split(",")
    if s
]
_ROWS: list[dict] = []


@pytest.fixture
def record():
    """Record one row of the ratio table: workload, seconds per scheduler, notes."""

    def add(workload: str, times: dict[str, float], **notes):
        _ROWS.append({"workload": workload, "times": times, **notes})

    return add


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    tr = terminalreporter
    tr.section(f"daskray side by side (scale {SCALE}; ratio = other / daskray, >1: daskray faster)")
    for row in _ROWS:
        times = row["times"]
        ours = times.get("daskray")
        parts = [f"daskray {ours:.3f}s"] if ours is not None else []
        for name, t in times.items():
            if name != "daskray":
                parts.append(f"{name} {t:.3f}s ({t / ours:.1f}x)" if ours else f"{name} {t:.3f}s")
        extra = "  ".join(f"{k}={v}" for k, v in row.items() if k not in ("workload", "times"))
        tr.write_line(
            f"{row['workload']:12s} " + "  ".join(parts) + (f"  {extra}" if extra else "")
        )
    out = os.environ.get("DASKRAY_BENCH_JSON")
    if out:
        with open(out, "w") as f:
            json.dump({"scale": SCALE, "rows": _ROWS}, f, indent=1)
