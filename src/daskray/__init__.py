"""daskray: a high-throughput Dask scheduler on Ray.

>>> import dask, daskray                                   # doctest: +SKIP
>>> dask.compute(x, scheduler=daskray.get)                 # doctest: +SKIP
>>> with daskray.enable(num_cpus=2):                       # doctest: +SKIP
...     x.compute(scheduler="ray")

A compiled core (``daskray._graph``) interns the graph, orders it and fuses it into groups; the
Python layer ingests every graph form dask produces and submits the plan to Ray in one pass.
Options live in ``dask.config`` under ``daskray.*`` (see :mod:`daskray.config`).
:class:`performance_report` records what computes did on the cluster (HTML, Chrome trace);
:func:`tune` measures task durations into a profile that sizes fused groups by time
(:mod:`daskray.tuning`).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import dask
import dask.base

from . import config as _config
from ._graph import (
    COMPILED,
    CycleError,
    GraphError,
    InvalidKeyError,
    MissingDependencyError,
    Plan,
)
from .explain import explain
from .pools import ActorPool, actor_state
from .report import performance_report
from .scheduler import get, get_sync
from .tuning import tune

__version__ = version("daskray")

#: names that ``scheduler=`` resolves to daskray once :func:`enable` has run
SCHEDULER_NAMES = ("ray", "daskray")

__all__ = [
    "COMPILED",
    "ActorPool",
    "CycleError",
    "GraphError",
    "InvalidKeyError",
    "MissingDependencyError",
    "Plan",
    "actor_state",
    "disable",
    "enable",
    "explain",
    "from_ray_dataset",
    "get",
    "get_sync",
    "performance_report",
    "to_ray_dataset",
    "tune",
]

#: names served by :mod:`daskray.raydata`, imported on first use (it imports Ray)
_RAYDATA = ("to_ray_dataset", "from_ray_dataset")


def __getattr__(name: str) -> Any:
    if name in _RAYDATA:
        from . import raydata

        return getattr(raydata, name)
    raise AttributeError(f"module 'daskray' has no attribute {name!r}")


#: dask's own default ``array.rechunk.threshold`` (dask.yaml)
_DASK_RECHUNK_THRESHOLD = 4


def enable(**options: Any) -> dask.config.set:
    """Make daskray dask's scheduler; returns ``dask.config.set(...)`` (a context manager).

    ``options`` are daskray options with underscores (``num_cpus=2``, ``address="auto"``,
    ``fusion={"groups-per-cpu": 8}``, ...); they are set under ``daskray.*``. Also registers
    ``scheduler="ray"`` and ``scheduler="daskray"`` with dask's scheduler names, and selects
    dask's tasks-based dataframe shuffle unless ``dataframe.shuffle.method`` is already set
    (dask's default without a distributed Client is a disk shuffle, which needs one shared
    disk). Unless ``array.rechunk.threshold`` was changed from dask's default, it becomes
    ``daskray.exchange.rechunk-threshold``: dask then plans a rechunk between incompatible
    chunkings as one all-to-all (every old block sliced once, every new block concatenated
    once) up to ~that many times more slices than blocks, where its default plans several
    stages that each move all the data once more.

    Examples
    --------
    >>> import daskray
    >>> with daskray.enable(num_cpus=2):
    ...     dask.config.get("daskray.num-cpus")
    2
    """
    settings = _config.as_config(options)
    if dask.config.get("dataframe.shuffle.method", None) is None:
        # dask picks the partd "disk" shuffle when no distributed Client exists; its files live
        # on one node's disk, so a multi-node Ray cluster needs the tasks shuffle
        settings["dataframe.shuffle.method"] = "tasks"
    if dask.config.get("array.rechunk.threshold", None) == _DASK_RECHUNK_THRESHOLD:
        settings["array.rechunk.threshold"] = settings.get(
            "daskray.exchange.rechunk-threshold",
            dask.config.get("daskray.exchange.rechunk-threshold"),
        )
    for name in SCHEDULER_NAMES:
        dask.base.named_schedulers[name] = get
    return dask.config.set(scheduler=get, **settings)


def disable() -> None:
    """Undo :func:`enable`: unregister the scheduler names and stop using daskray by default."""
    for name in SCHEDULER_NAMES:
        if dask.base.named_schedulers.get(name) is get:
            del dask.base.named_schedulers[name]
    if dask.config.get("scheduler", None) is get:
        dask.config.set(scheduler=None)
