"""Named pools of Ray actors that dask tasks run on: state loaded once per actor, not per task.

A model loaded in every task costs its load time per task; one loaded in a Ray actor costs it
once per actor. A pool is declared once in the driver and chosen per task with a dask
annotation, as ``resources=`` or ``workers=`` are::

    def load_model():
        return joblib.load("model.joblib")          # runs once in each actor

    def predict(block):
        model = daskray.actor_state()              # the model this actor loaded
        return model.predict(block)

    pool = daskray.ActorPool("model", load_model, size=2, num_cpus=1)
    with dask.annotate(ray_actor_pool="model"):    # or ray_actor_pool=pool
        scores = features.map_blocks(predict)
    scores.compute(scheduler=daskray.get)          # or get(..., ray_actor_pool="model")

How it runs
-----------
The annotation makes its own options class (``{"ray_actor_pool": pool, ...}``, see
:func:`daskray.planning.option_classes`), so the core never fuses pool tasks with other tasks,
nor tasks of two pools together; fused groups of one pool's tasks are sent, in the plan's
topological order, round-robin to the pool's actors as actor method calls
(:mod:`daskray._ray`), with ObjectRef arguments like any group. Actors start on a pool's first
compute (each runs ``setup()`` once, in ``__init__``) and live until :meth:`ActorPool.close`,
the end of a ``with pool:`` block, or the driver's exit. An actor that dies is restarted by Ray
(``max_restarts``, default: always), running ``setup()`` again, and the calls it was running
or had queued are retried per the tasks' ``retries`` (default: 3 times, as Ray retries a task
whose worker died; with retries, a call also outlasts about ten seconds of its actor
restarting, which Ray counts as retries: ``daskray._ray.RESTARTING_RETRIES``). A pool's
actors hold their resources (``num_cpus``, ``num_gpus``, ``memory``, ``resources``) for their
lifetime: a pool of 2 actors with ``num_gpus=1`` needs two GPUs; a request the cluster
cannot hold is a :class:`~daskray.annotations.ResourceError` before anything is submitted.
Per-key ``resources``/``workers``/``ray_remote_args`` make no sense on a pool's tasks (they
run where the actors are) and are an error.

Nothing here imports Ray: :mod:`daskray._ray` attaches the live actors to the pool
(``_live``) and :meth:`ActorPool.close` stops them through it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .worker import actor_state

__all__ = ["ActorPool", "actor_state", "lookup"]

_lock = threading.Lock()
_pools: dict[str, ActorPool] = {}


class ActorPool:
    """A named pool of ``size`` Ray actors, each running ``setup()`` once when it starts; the
    tasks annotated ``ray_actor_pool=name`` run on them and read what ``setup`` returned with
    :func:`daskray.actor_state`.

    Declaring a pool under a name already in use closes the old pool. ``num_cpus`` (default
    1), ``num_gpus``, ``memory`` (bytes) and ``resources`` are each actor's, held while it
    lives; ``max_restarts`` is Ray's (-1: restart a dead actor whenever it dies).

    >>> pool = ActorPool("doc", dict, size=2, num_cpus=0.5)
    >>> pool, lookup("doc") is pool, pool.request()
    (ActorPool('doc', size=2), True, {'CPU': 0.5})
    >>> pool.close(); "doc" in names()
    False
    """

    def __init__(
        self,
        name: str,
        setup: Callable[[], Any],
        size: int = 1,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
        max_restarts: int = -1,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"an actor pool's name is a non-empty str, got {name!r}")
        if not callable(setup):
            raise TypeError(f"ActorPool {name!r}: setup must be callable, got {setup!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ActorPool {name!r}: size must be an int >= 1, got {size!r}")
        self.name = name
        self.setup = setup
        self.size = size
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.memory = memory
        self.resources = dict(resources or {})
        self.max_restarts = max_restarts
        self._live: Any = None  # set by daskray._ray while the actors run
        with _lock:
            old = _pools.get(name)
            _pools[name] = self
        if old is not None:
            old.stop()

    def __repr__(self) -> str:
        return f"ActorPool({self.name!r}, size={self.size})"

    def request(self) -> dict[str, float]:
        """What one actor holds, as node resources (``CPU``, ``GPU``, ``memory``, custom)."""
        need = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory or 0}
        need.update(self.resources)
        return {k: v for k, v in need.items() if v}

    def options(self) -> dict[str, Any]:
        """The Ray options of each actor."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "max_restarts": self.max_restarts}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.memory:
            opts["memory"] = int(self.memory)
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts

    def stop(self) -> None:
        """Stop the pool's actors (if running); the pool starts them again when next used."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def close(self) -> None:
        """Stop the actors and forget the name."""
        self.stop()
        with _lock:
            if _pools.get(self.name) is self:
                del _pools[self.name]

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def lookup(name: str) -> ActorPool | None:
    """The pool declared under ``name``, or None."""
    with _lock:
        return _pools.get(name)


def names() -> list[str]:
    """The names of the declared pools."""
    with _lock:
        return sorted(_pools)
