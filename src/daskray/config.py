"""daskray's options, kept in ``dask.config`` under ``daskray.*``.

The defaults below are registered with dask when daskray is imported, so
``dask.config.get("daskray.fusion.groups-per-cpu")`` works and ``DASK_DASKRAY__NUM_CPUS=4`` or a
dask YAML file can set them like any dask option. ``daskray.enable(num_cpus=4)`` and
``get(..., num_cpus=4)`` take the same names with underscores.
"""

from __future__ import annotations

from typing import Any

import dask

DEFAULTS: dict[str, Any] = {
    # Ray address to connect to; None: $RAY_ADDRESS, else start a local Ray
    "address": None,
    # CPUs of the embedded local Ray; None: all cores
    "num-cpus": None,
    # extra keyword arguments for the embedded ray.init(...)
    "init-kwargs": {},
    # Ray options applied to every Ray task (num_cpus, resources, ...)
    "ray-remote-args": {},
    # name Ray tasks after the dask key prefix (visible in the dashboard and `ray timeline`)
    "task-names": True,
    "fusion": {
        # False: one Ray task per dask task (for debugging)
        "enabled": True,
        # aim for this many fused groups per cluster CPU, so the cluster stays busy
        "groups-per-cpu": 4,
        # never fuse more than this many tasks (by weight) into one Ray task
        "max-group-size": 10_000,
        # never make groups smaller than this (when fusion is on)
        "min-group-size": 1,
        # a task with at least this many getitem-style dependents runs with them (num_returns)
        "split-fanout": 2,
    },
}

dask.config.update_defaults({"daskray": DEFAULTS})


def option(name: str, override: Any = None) -> Any:
    """The value of ``daskray.<name>``, unless ``override`` is given (not None)."""
    if override is not None:
        return override
    return dask.config.get(f"daskray.{name}")


def as_config(options: dict[str, Any]) -> dict[str, Any]:
    """``{"num_cpus": 2}`` -> ``{"daskray.num-cpus": 2}``, rejecting unknown names."""
    out = {}
    for name, value in options.items():
        key = name.replace("_", "-")
        head = key.split(".")[0]
        if head not in DEFAULTS:
            known = ", ".join(sorted(k.replace("-", "_") for k in DEFAULTS))
            raise TypeError(f"Unknown daskray option {name!r}; known options: {known}")
        out[f"daskray.{key}"] = value
    return out
