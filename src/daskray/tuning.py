"""Benchmark-driven tuning: size fused groups by measured task durations, not task counts.

Without a profile the planner treats every dask task as costing ``1 + its number of
dependencies`` and cuts the graph into about ``fusion.groups-per-cpu`` groups per CPU of equal
*count*. That is right for graphs of uniformly small tasks, and wrong when costs are uneven: ten
one-second tasks fused next to each other become one ten-second Ray task while the other CPUs
idle.

:func:`tune` runs a computation once under a :class:`daskray.performance_report` -- every Ray
task then times each of its dask tasks -- and writes the mean seconds per task of every key
prefix to a JSON profile, with the mean size in bytes of the values of each prefix that left a
Ray task::

    {"daskray-profile": 1, "default": 1.2e-05,
     "prefixes": {"spin": 0.04, "inc": 1.1e-06, ...},
     "sizes": {"spin": 28, "inc": 28, ...}}

With ``daskray.fusion.profile`` set (a path to such a file, or the same dict), the planner
(:func:`daskray.planning.sizing`) weighs each task by its prefix's duration in microseconds
(prefixes not in the profile: the profile's ``default``, its mean over all tasks) and aims each
fused group at an equal share of the estimated time -- the total over ``CPUs x groups-per-cpu``
-- but never under ``fusion.min-duration`` seconds, below which a Ray task's own overhead
(about a millisecond) dominates. Count limits (``min-group-size``/``max-group-size``) do not
apply then. With ``sizes``, moving a value between groups is charged its bytes over
``fusion.transfer-rate`` (in the same microseconds) when the planner picks how to pack the group
graph's levels (see :mod:`daskray._graph`): heavy values stay inside groups.
"""

from __future__ import annotations

import json
from typing import Any


def tune(*collections: Any, filename: str | None = "daskray-profile.json", **kwargs: Any) -> dict:
    """Compute ``collections`` with daskray, timing every task; return (and write to
    ``filename``, unless None) the profile of mean seconds per task for each key prefix.

    ``kwargs`` go to :func:`daskray.get` (``ray_remote_args=``, ``fuse=``, ...). Use the
    profile with ``dask.config.set({"daskray.fusion.profile": filename})`` or
    ``daskray.enable(fusion={"profile": filename})``.
    """
    from functools import partial

    import dask

    from .report import performance_report
    from .scheduler import get

    with performance_report(None) as rep:
        dask.compute(*collections, scheduler=partial(get, **kwargs) if kwargs else get)
    measured = rep.prefixes()
    tasks = sum(p["tasks"] for p in measured.values())
    seconds = sum(p["seconds"] for p in measured.values())
    profile = {
        "daskray-profile": 1,
        "default": seconds / tasks if tasks else 0.0,
        "prefixes": {name: p["mean"] for name, p in measured.items()},
        "sizes": {name: round(p["bytes"]) for name, p in measured.items() if "bytes" in p},
    }
    if filename:
        with open(filename, "w", encoding="utf-8") as f:
            json.dump(profile, f, indent=1)
    return profile
