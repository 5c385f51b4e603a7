"""``daskray.get``: ingest -> plan -> submit -> gather, one room per step.

::

    dsk, keys ──ingest──> Graph (interned ids, CSR) ──plan (compiled core)──> Plan (groups)
                                                                                 │
    values <──gather── ObjectRefs of the requested keys <──submit (one pass)─────┘

The plan is the whole contract between the steps: the same plan runs on Ray (``_ray.submit``)
or in this process (:func:`run_local`, for ``debug=True`` / :func:`get_sync`), so a failing task
can be stepped through with ``pdb`` exactly as Ray would have run it.
"""

from __future__ import annotations

import difflib
import functools
import gc
import os
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any

from dask.callbacks import local_callbacks, unpack_callbacks
from dask.utils import key_split

from . import _graph, planning, report
from ._compat import CompositeExpr, ExprSequence, called_by_dask_persist
from .annotations import ResourceError, WorkerError, to_ray_options
from .config import option
from .futures import future
from .ingest import Graph, ingest
from .planning import Classes, make_plan
from .worker import reemit, run_group, run_group_profiled, run_group_with_state

#: annotations that get(...) also takes as compute-wide defaults
_COMPUTE_ANNOTATIONS = (
    "resources",
    "retries",
    "workers",
    "allow_other_workers",
    "ray_actor_pool",
)
#: every keyword get(...) reads (a close miss of one of these warns, see :class:`_Request`)
KEYWORDS = (
    "debug",
    "fuse",
    "ray_remote_args",
    *_COMPUTE_ANNOTATIONS,
    "address",
    "num_cpus",
    "callbacks",
)
#: keywords other schedulers define, which dask and libraries pass to whichever scheduler runs
#: (``dask.array.store`` and every xarray ``to_zarr``/``to_netcdf`` pass ``flush=True``;
#: dask.persist passes ``ray_persist`` once ray.util.dask is imported, which patches it):
#: accepted and ignored, never warned about
OTHER_SCHEDULERS_KEYWORDS = frozenset(
    (
        "flush",  # dask.array.store
        "num_workers",  # dask.threaded / dask.multiprocessing / dask.local
        "pool",
        "chunksize",
        "cache",
        "get_id",
        "pack_exception",
        "raise_exception",
        "rerun_exceptions_locally",
        "dumps",
        "loads",
        "func_dumps",
        "func_loads",
        "initializer",
        "optimize_graph",
        "ray_persist",  # ray.util.dask
        "ray_callbacks",
        "sync",  # distributed.Client.get
        "asynchronous",
        "direct",
        "priority",
        "fifo_timeout",
        "actors",
    )
)


def run_local(
    plan: _graph.Plan,
    graph: Graph,
    observer: Observer | None = None,
    classes: Classes | None = None,
) -> list:
    """Run ``plan`` group by group in this process; return the targets' values. With an
    ``observer`` whose ``profiles`` is a list (a performance report is open), every group runs
    timed, as on Ray, and its profile (on node ``"local"``) is appended to it. Groups on an
    actor pool (``classes``) run with the state of one local ``setup()`` call per pool."""
    names, nodes = graph.names, graph.nodes
    profiles = observer.profiles if observer is not None else None
    seen: set = set()
    values: dict = {}
    states: dict = {}
    for g in range(plan.ngroups):
        if observer is not None:
            observer.submitted(g)
        members, inputs, outputs = plan.group(g)
        spec = (
            [nodes[i] for i in members],
            [names[i] for i in inputs],
            [names[i] for i in outputs],
        )
        args = [values[i] for i in inputs]
        pool = _pool_of(classes, members[0]) if classes is not None else None
        if pool is not None:  # an actor pool's group: with the pool's local state
            if pool.name not in states:
                states[pool.name] = pool.setup()
            result = run_group_with_state(states[pool.name], spec, *args)
            result = [result] if len(outputs) == 1 else result
        elif profiles is None:
            result = run_group(spec, *args)
            result = [result] if len(outputs) == 1 else result
        else:  # a performance report is open: time the group, warnings propagate as they are
            *result, profile, status = run_group_profiled(spec, *args)
            profile["node"] = "local"
            profiles.append((g, profile))
            reemit(status, seen)
        values.update(zip(outputs, result))
        if observer is not None:
            observer.done(g)
    return [values[t] for t in graph.targets]


def _pool_of(classes: Classes, i: int) -> Any:
    opts = classes.options[classes.of[i] if classes.of is not None else 0]
    return opts.get("ray_actor_pool")


def get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Compute ``keys`` of the dask graph ``dsk`` on Ray.

    Use it as ``dask.compute(x, scheduler=daskray.get)``, ``x.compute(scheduler=daskray.get)``,
    under ``dask.config.set(scheduler=daskray.get)`` or, after :func:`daskray.enable`, as
    ``scheduler="ray"``.

    Parameters
    ----------
    dsk : Mapping or dask expression
        The task graph, in any form dask produces.
    keys : key or nested list of keys
        What to compute; the result is nested the same way (lists come back as tuples).
    debug : bool, optional
        Run the very same plan in this process, without Ray (see :func:`get_sync`).
    fuse : bool, optional
        Override ``daskray.fusion.enabled``.
    ray_remote_args : dict, optional
        Ray options for every Ray task of this compute (``num_cpus``, ``resources``, ...).
    resources, retries, workers, allow_other_workers, ray_actor_pool : optional
        Compute-wide defaults spelled as dask annotations (``resources={"GPU": 1}``,
        ``ray_actor_pool="model"``); per-key annotations override them (see
        :mod:`daskray.annotations`, :mod:`daskray.pools`).
    address, num_cpus : optional
        Override ``daskray.address`` / ``daskray.num-cpus`` when Ray is not yet connected.
    **other
        Keywords meant for other schedulers (``flush``, ``num_workers``, ``pool``, ...) are
        accepted and ignored, as dask's own schedulers do; a close miss of one of the above
        (``retry=``) warns.

    Examples
    --------
    >>> from operator import add
    >>> get({"x": 1, "y": (add, "x", 10)}, "y", debug=True)
    11
    >>> get({"x": 1, "y": (add, "x", 10)}, [["x"], "y"], debug=True)
    ((1,), 11)
    """
    if called_by_dask_persist():  # through functools.partial(get, ...): keep the values on Ray
        return _persisted(dsk, keys, kwargs)
    return _compute(dsk, keys, kwargs, fetch=True)


def _persisted(dsk: Any, keys: list, kwargs: dict) -> list:
    """dask.persist's by-value call ``schedule(expr, keys)`` answered with a
    :class:`daskray.futures.RayFuture` per key (a value where nothing was made on Ray), which
    dask puts in the persisted collections' graphs: the values stay in Ray's object store, as
    with :func:`persist`."""
    _, handles = _compute(dsk, keys, kwargs, fetch=False)
    return [future(k, h) if is_ref else h for k, (is_ref, h) in zip(keys, handles, strict=True)]


def compute_refs(dsk: Any, keys: list, kwargs: dict) -> list:
    """Compute the flat list ``keys`` of ``dsk`` on Ray and leave the values there: one
    ``(is_ref, ObjectRef or local value)`` per key, with the compute's task watch for
    :func:`daskray._ray.gather_only` (the hand-offs of :mod:`daskray.raydata` use it)."""
    return _compute(dsk, keys, dict(kwargs), fetch=False)[1]


def _connect(request: _Request) -> Any:
    """Connect to the cluster ``request`` names (or start one); :mod:`daskray._ray`."""
    from . import _ray

    _ray.connect(request.address, request.num_cpus, option("init-kwargs"))
    return _ray


def _store(request: _Request) -> int:
    """The cluster's object store bytes, connecting to it (what sizes the window of a heavy
    exchange's reducers, :func:`daskray.exchange.window`)."""
    return _connect(request).store_bytes()


def _compute(dsk: Any, keys: Any, kwargs: dict, fetch: bool) -> Any:
    """:func:`get`'s pipeline; ``fetch=False`` (persist) answers ``(graph, handles)``: an
    ObjectRef, or a local value, per requested key, left where it is."""
    request = _Request(kwargs)
    started = time.time()
    with gc_paused():
        graph = ingest(dsk, keys, None if request.debug else functools.partial(_store, request))
        classes = planning.driver_classes(graph, planning.option_classes(graph, request.base))
    if not graph.targets:
        return graph.repack([]) if fetch else (graph, [])
    if request.debug:
        plan = make_plan(graph, os.cpu_count() or 1, request.fuse, classes)
        with observing(plan, graph, request.callbacks, started, on_ray=False) as observer:
            values = run_local(plan, graph, observer, classes)
            observer.sent(plan)
            observer.gathered()
        return graph.repack(values) if fetch else (graph, [(False, v) for v in values])

    _ray = _connect(request)
    classes = _feasible(_placed(graph, classes), graph.names)
    with gc_paused():
        plan = make_plan(graph, _ray.cluster_cpus(), request.fuse, classes, _ray.store_bytes())
    with observing(plan, graph, request.callbacks, started) as observer:
        with gc_paused():
            handles = _ray.submit(
                plan,
                graph.nodes,
                graph.targets,
                classes=classes,
                task_names=bool(option("task-names")),
                observer=observer,
            )
        observer.sent(plan)
        del plan
        values = _ray.gather(handles, fetch=fetch)
        observer.gathered()
        return graph.repack(values) if fetch else (graph, values)


class _Request:
    """:func:`get`'s keywords, read once: what to run how, and the base Ray options."""

    __slots__ = ("debug", "fuse", "base", "address", "num_cpus", "callbacks")

    def __init__(self, kwargs: dict) -> None:
        self.debug = bool(kwargs.pop("debug", False))
        self.fuse = kwargs.pop("fuse", None)
        remote_args = kwargs.pop("ray_remote_args", None)
        defaults = {k: kwargs.pop(k) for k in _COMPUTE_ANNOTATIONS if k in kwargs}
        if "retries" not in defaults and option("retries") is not None:
            defaults["retries"] = option("retries")
        self.address = option("address", kwargs.pop("address", None))
        self.num_cpus = option("num-cpus", kwargs.pop("num_cpus", None))
        self.callbacks = kwargs.pop("callbacks", None)
        _ignore(kwargs)
        base = dict(option("ray-remote-args"))
        base.update(remote_args or {})
        base.update(to_ray_options(defaults, "<compute keywords>"))
        self.base = base


def _ignore(unknown: dict) -> None:
    """Accept and ignore keywords meant for other schedulers, as dask's own schedulers do
    (``dask.array.store`` passes ``flush=True``); warn about a close miss of one of daskray's
    own keywords (``retry=2`` for ``retries=2``), which would otherwise be silently lost."""
    for name in sorted(unknown):
        if name in OTHER_SCHEDULERS_KEYWORDS:
            continue
        close = difflib.get_close_matches(name, KEYWORDS, n=1, cutoff=0.8)
        if close:
            warnings.warn(
                f"daskray.get ignores the keyword {name!r}: did you mean {close[0]!r}?",
                UserWarning,
                stacklevel=5,
            )


def _placed(graph: Graph, classes: Classes) -> Classes:
    """Locality hints (:func:`daskray.planning.place`) for the tasks reading values that
    already live in Ray's object store, on a cluster of more than one node."""
    from . import _ray

    if graph.flags is None or not option("locality.enabled") or _ray.alive_nodes() < 2:
        return classes
    held = planning.held_values(graph)
    if not held:
        return classes
    where = _ray.object_locations([graph.nodes[i].value for i in held])
    located = {i: w for i, w in zip(held, where) if w[0] is not None}
    min_bytes = int(option("locality.min-bytes"))
    return planning.place(graph.indptr, graph.indices, located, classes, min_bytes)[0]


def _feasible(classes: Classes, names: list) -> Classes:
    """:func:`daskray.planning.feasible` on the cluster's node records; a check that fails on
    cached records is repeated once on fresh ones (a node just added)."""
    from . import _ray

    if not classes.needs_check():
        return classes
    try:
        return planning.feasible(classes, names, _ray.node_records())
    except (ResourceError, WorkerError):
        return planning.feasible(classes, names, _ray.node_records(max_age=0.0))


class Observer:
    """Everything that watches a compute, as one object passed down the pipeline: dask's
    callbacks (a :class:`Relay`, or None) and the active performance report's record of the
    compute (or None). :func:`daskray._ray.submit` calls ``submitted(g)``/``done(g)`` when it
    ``listens`` and appends the Ray tasks' profile refs to ``profiles`` when it is a list."""

    __slots__ = ("relay", "record", "profiles", "listens")

    def __init__(self, relay: Relay | None, record: Any) -> None:
        self.relay = relay
        self.record = record
        self.profiles = record.refs if record is not None else None
        self.listens = relay is not None

    def submitted(self, g: int) -> None:
        if self.relay is not None:
            self.relay.submitted(g)

    def done(self, g: int) -> None:
        if self.relay is not None:
            self.relay.done(g)

    def sent(self, plan: _graph.Plan) -> None:
        """Every group is submitted."""
        if self.record is not None:
            self.record.submitted = time.time()
            self.record.describe(plan)

    def gathered(self) -> None:
        """The values are back."""
        if self.record is not None:
            self.record.finished = time.time()


@contextmanager
def observing(
    plan: _graph.Plan,
    graph: Graph,
    callbacks: Any,
    started: float | None,
    on_ray: bool = True,
):
    """The compute's :class:`Observer`: the active dask callbacks (``callbacks=`` or
    ``Callback.active``), finished (``errored`` or not) on the way out, and -- unless
    ``started`` is None (a local run) -- a record in the active performance report, ended on
    the way out too (with ``on_ray``, the report reads Ray's object store counters as the
    compute starts and as it ends)."""
    recorder = report.active() if started is not None else None
    record = None
    if recorder is not None:
        label = report.label_of(graph.names, graph.targets)
        record = recorder.start(label, len(plan.order), started, on_ray=on_ray)
    if callbacks is not None:  # Callback objects as well as dask's 5-tuples
        callbacks = [getattr(cb, "_callback", cb) for cb in callbacks]
    with local_callbacks(callbacks) as active:
        relay = Relay(plan, graph, active) if active else None
        try:
            yield Observer(relay, record)
        except BaseException:
            if relay is not None:
                relay.finish(errored=True)
            raise
        finally:
            if record is not None:
                recorder.end(record)
        if relay is not None:
            relay.finish(errored=False)


class Relay:
    """dask's callback protocol (``dask.callbacks.Callback``), driven by execution on Ray.

    ``start(dsk)`` and ``start_state(dsk, state)`` run before submission; ``pretask(key, dsk,
    state)`` runs for every task of a group as the group is submitted, and ``posttask(key,
    result, dsk, state, worker_id)`` for every task of a group when its Ray task is seen
    finished (``result`` is None: values stay on Ray; ``worker_id`` is the Ray task's name);
    ``finish(dsk, state, errored)`` at the end. ``state`` has dask's ``waiting``, ``ready``,
    ``running`` and ``finished`` sets of keys, so ``dask.diagnostics.ProgressBar`` moves as
    groups complete on the cluster.
    """

    def __init__(self, plan: _graph.Plan, graph: Graph, callbacks: Any) -> None:
        self.plan = plan
        self.names = graph.names
        start, start_state, self.pretask, self.posttask, self.finishers = unpack_callbacks(
            callbacks
        )
        self.dsk = dict(zip(graph.names, graph.nodes))
        self.state = {
            "waiting": {graph.names[i] for i in plan.order},
            "ready": set(),
            "running": set(),
            "finished": set(),
            "released": set(),
            "cache": {},
        }
        for f in start:
            f(self.dsk)
        for f in start_state:
            f(self.dsk, self.state)

    def _keys(self, g: int) -> list:
        members = self.plan.members
        return [
            self.names[members[q]]
            for q in range(self.plan.members_ptr[g], self.plan.members_ptr[g + 1])
        ]

    def submitted(self, g: int) -> None:
        waiting, running = self.state["waiting"], self.state["running"]
        for key in self._keys(g):
            waiting.discard(key)
            running.add(key)
            for f in self.pretask:
                f(key, self.dsk, self.state)

    def done(self, g: int) -> None:
        running, finished = self.state["running"], self.state["finished"]
        keys = self._keys(g)
        worker = key_split(keys[-1])
        for key in keys:
            running.discard(key)
            finished.add(key)
            for f in self.posttask:
                f(key, None, self.dsk, self.state, worker)

    def finish(self, errored: bool) -> None:
        for f in self.finishers:
            f(self.dsk, self.state, errored)


def persist(collections: list, optimize_graph: bool = True, **kwargs: Any) -> list:
    """dask's persist protocol (``dask.persist`` calls ``get.persist`` when it exists): compute
    ``collections`` on Ray and rebuild them around futures of their keys
    (:class:`daskray.futures.RayFuture`, holding the ObjectRefs), without copying the values to
    this process. Later computes on the persisted collections pass the refs to their Ray tasks;
    the values live in Ray's object store as long as the persisted collections do.

    Collections made of several expressions (dask's private ``CompositeExpr``) go through
    dask's own persist with a ``functools.partial`` of :func:`get`, which answers it with
    futures too (:func:`_persisted`). Like dask's local schedulers, persist returns once every
    task is done: errors raise here, tasks' warnings are shown here.
    """
    import functools

    import dask
    from dask.base import collections_to_expr
    from dask.core import flatten

    expr = collections_to_expr(collections, optimize_graph)
    parts = list(expr.operands) if isinstance(expr, ExprSequence) else [expr]
    if any(isinstance(e, CompositeExpr) for e in parts):
        return list(dask.persist(*collections, scheduler=functools.partial(get, **kwargs)))
    expr = expr.optimize()
    keys_of = [list(flatten(k)) for k in expr.__dask_keys__()]
    _, handles = _compute(expr, [k for ks in keys_of for k in ks], kwargs, fetch=False)
    values = {}
    for k, (is_ref, handle) in zip([k for ks in keys_of for k in ks], handles, strict=True):
        values[k] = future(k, handle) if is_ref else handle
    out = []
    for coll, keys in zip(collections, keys_of, strict=True):
        rebuild, state = coll.__dask_postpersist__()
        out.append(rebuild({k: values[k] for k in keys}, *state))
    return out


get.persist = persist


_gc_lock = threading.Lock()
_gc_state = {"pausers": 0, "was_enabled": False}


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while a graph is ingested, planned, submitted.

    These steps allocate one or more objects per task and no cycles; with 10^6 tasks the
    collector would otherwise rescan the growing heap over and over (a third of the planning
    time in a busy process). Nested and concurrent computes share the pause; the collector is
    restored as it was when the last one leaves.
    """
    with _gc_lock:
        if _gc_state["pausers"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
            gc.disable()
        _gc_state["pausers"] += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["pausers"] -= 1
            if _gc_state["pausers"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


def get_sync(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """:func:`get` with ``debug=True``: the same plan, run in this process without Ray."""
    kwargs["debug"] = True
    return get(dsk, keys, **kwargs)
