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
    # retry every task this many times on any exception (None: Ray's default, 3 retries on
    # system failures such as a dead worker, none on exceptions); the `retries` annotation and
    # get(..., retries=n) override it
    "retries": None,
    # once no task of a compute has finished for this many seconds, check the object-spilling
    # directory of the driver's node every few seconds; raise if it is gone or unwritable
    # (Ray would retry spilling forever); None or 0: never check
    "spill-check-s": 10.0,
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
        # an input read by 2 to this many tasks runs with them, in one cluster (< 2: never)
        "cluster-fanout": 4,
        # pack the independent groups of each level of the group graph down to
        # groups-per-cpu x CPUs (graphs of any shape; see daskray._graph)
        "pack-levels": True,
        # a profile of task durations (daskray.tune): a path to its JSON file, or the dict;
        # with one, groups are sized by estimated time instead of task counts
        "profile": None,
        # with a profile: never aim a group at less than this many seconds of work
        "min-duration": 0.005,
        # what one Ray task costs (seconds): how many levels of a graph of any shape are
        # packed together is decided by a list schedule that charges it to every group
        "task-overhead": 0.001,
        # bytes per second at which a value moves between groups (serialized into Ray's
        # object store and read back): with a profile's sizes, what a value crossing costs
        "transfer-rate": 1e9,
    },
    "exchange": {
        # run dask's tasks shuffles as one all-to-all (daskray.exchange); False: as dask built
        "enabled": True,
        # input partitions larger than this are heavy: one Ray task per map and per reducer
        # (smaller ones are fused as any tasks)
        "heavy-bytes": 8_388_608,
        # the partition size assumed when neither literal data nor a probe tells it
        "partition-bytes": 67_108_864,
        # pieces (maps x reducers) beyond which maps take several input partitions ...
        "max-pieces": 2048,
        # ... but never more than this many bytes of them
        "map-bytes": 134_217_728,
        # reducers of a heavy exchange whose outputs a join reads (a merge) run this many at
        # a time; None: one per eighth of the object store an output fills (exchange.window)
        "reduce-window": None,
        # daskray.enable() sets dask's array.rechunk.threshold to this (dask's default, 4,
        # plans an all-to-all rechunk of more than ~8 blocks in several stages, each moving
        # all the data once more): single-stage up to ~threshold x (old + new blocks) slices
        "rechunk-threshold": 64,
    },
    "raydata": {
        # build Datasets with Ray Data's internal constructors (metadata computed in daskray's
        # own tasks) where this Ray's internals are known; False: the public from_*_refs
        "internal-api": True,
    },
    "locality": {
        # soft node affinity for tasks reading persisted values (see daskray.planning)
        "enabled": True,
        # ... when the node holding most of a task's persisted input holds at least this much
        "min-bytes": 1_048_576,
    },
}

dask.config.update_defaults({"daskray": DEFAULTS})


def option(name: str, override: Any = None) -> Any:
    """The value of ``daskray.<name>``, unless ``override`` is given (not None)."""
    if override is not None:
        return override
    return dask.config.get(f"daskray.{name}")


def as_config(options: dict[str, Any]) -> dict[str, Any]:
    """``{"num_cpus": 2, "fusion": {"groups_per_cpu": 8}}`` ->
    ``{"daskray.num-cpus": 2, "daskray.fusion.groups-per-cpu": 8}``; unknown names raise."""
    out: dict[str, Any] = {}
    stack = [("daskray", DEFAULTS, name, value) for name, value in options.items()]
    while stack:
        prefix, defaults, name, value = stack.pop()
        key = name.replace("_", "-")
        if key not in defaults:
            known = ", ".join(sorted(k.replace("-", "_") for k in defaults))
            raise TypeError(f"Unknown daskray option {name!r} under {prefix!r}; known: {known}")
        if isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
            stack.extend((f"{prefix}.{key}", defaults[key], k, v) for k, v in value.items())
        else:
            out[f"{prefix}.{key}"] = value
    return out
