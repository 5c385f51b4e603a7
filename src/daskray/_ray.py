"""The one module that talks to Ray: connect, submit a plan, gather its outputs.

Submission is a single pass over the plan's groups, which the core numbered in a topological
order. Each group becomes one Ray task running :func:`daskray.worker.run_group` -- the same
module-level remote function for every group, so nothing is pickled per task but the group's
own task objects -- with the ObjectRefs of its inputs as arguments (Ray resolves them on the
worker; the driver never waits in between) and ``num_returns`` equal to its number of outputs,
so every consumer fetches only the values it needs. Two kinds of group never become Ray tasks:
a lone ``DataNode`` is ``ray.put`` once, the first time a group needs it (a literal shared by
many tasks travels once); a lone ``Alias`` reuses its target's ObjectRef.

The driver keeps an output's ObjectRef only until the last group that consumes it has been
submitted; after that Ray's reference counting owns the value, and only the requested keys'
refs survive the pass. Options objects (``.options(num_returns=..., name=...)``) are cached.
For :func:`gather` only, the pass also records one ObjectRef per Ray task (its first return),
dropped once the task is seen finished.

A group whose options name an actor pool (:mod:`daskray.pools`) is an actor method call instead,
``run``/``run_profiled`` of the pool's next actor in turn (:class:`_PoolCall`), with the same
arguments, ``num_returns`` and name, and the group's retries as ``max_task_retries``; the pool's
actors (:class:`_PoolActor`, each running the pool's ``setup()`` once) start on first use and
are attached to the pool object (:class:`_LivePool`) until it is stopped or the driver
connects elsewhere.

Gathering fails fast: it polls the compute's unfinished tasks (one ``ray.wait`` per poll),
looks for an error in each finished task's object when it is small, raises the first error
within a poll or so of the failure even while slow siblings still run, and cancels every task
of the compute still in flight; a ``KeyboardInterrupt`` while waiting cancels them too.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any

import ray
from dask.utils import key_split
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ._compat import Alias, DataNode
from .annotations import NODE_AFFINITY, POOL, WORKERS, freeze, thaw
from .planning import Classes, is_strategy, resolve_workers
from .worker import run_group, run_group_profiled, start_actor

_lock = threading.Lock()
_cpu_cache: list = [float("-inf"), 0]  # (time read, cluster CPUs)
_nodes_cache: list = [float("-inf"), []]  # (time read, ray.nodes())
_session: list = [None]  # the node id of the driver's Ray connection the caches describe


def reset() -> None:
    """Forget everything cached about the connected cluster (CPUs, nodes, options objects).

    :func:`connect` calls it when the driver's Ray connection changed (another ``ray.init``,
    another cluster); call it after switching clusters some other way.
    """
    _cpu_cache[:] = [float("-inf"), 0]
    _nodes_cache[:] = [float("-inf"), []]
    _options_cache.clear()
    _session[0] = None


def _same_session() -> None:
    """:func:`reset` the caches if the driver is no longer connected where they were read."""
    try:
        token = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - e.g. a Ray client without it: keep the caches' TTLs
        return
    if token != _session[0]:
        reset()
        _session[0] = token


#: why daskray refuses Ray Client, and what to use instead
RAY_CLIENT_ERROR = (
    "daskray does not run through Ray Client ({what}). Its submit path needs a driver that "
    "is a Ray worker of the cluster: persisted values and Ray Data blocks are ObjectRefs that "
    "it passes to tasks as arguments and locates (ray.experimental.get_object_locations), "
    "failures are read from the driver's own object table, and the Ray Data hand-off runs in "
    "the driver; a Ray Client driver holds proxies of all of these. Run the program on the "
    "cluster instead: as a Ray Job (ray job submit --address http://HEAD:8265 -- python "
    "prog.py), or on a cluster node with ray.init(address='auto') / RAY_ADDRESS=auto / "
    "daskray.enable(address='HEAD:PORT') (the GCS address, without ray://)."
)


def _client_mode() -> bool:
    """Whether this process is connected through Ray Client (``ray.init("ray://...")``)."""
    from ray.util.client import ray as client

    return client.is_connected()


def connect(address: str | None, num_cpus: int | None, init_kwargs: dict) -> None:
    """Make sure this process is connected to Ray: the given cluster, or a local one.

    A Ray Client address (``ray://...``) or connection raises ``ConnectionError`` naming what
    to use instead (:data:`RAY_CLIENT_ERROR`)."""
    if ray.is_initialized():
        if _client_mode():
            raise ConnectionError(RAY_CLIENT_ERROR.format(what="this driver is a Ray Client"))
        _same_session()
        return
    with _lock:
        if ray.is_initialized():
            _same_session()
            return
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address and address.startswith("ray://"):
            raise ConnectionError(RAY_CLIENT_ERROR.format(what=f"address {address!r}"))
        kwargs = dict(init_kwargs)
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                kwargs.setdefault("num_cpus", num_cpus)
                ray.init(address="local", **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised with how to fix it
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise ConnectionError(
                f"daskray could not start or reach {where}: {e}. "
                + (
                    "Check that the cluster is up (`ray status`) and the address is right, "
                    "or unset RAY_ADDRESS / daskray.address to start a local Ray."
                    if address
                    else "Check free memory and /tmp space, or connect to a running cluster "
                    "with daskray.enable(address=...) or RAY_ADDRESS."
                )
            ) from e
        _same_session()


@contextmanager
def local_ray(num_cpus: int | None = None, address: str | None = None):
    """Ray for a command (``daskray demo/bench/tune/info``): the connection already made, if
    any; else one started here -- a local Ray (``address="local"``, never some other cluster
    on the box) unless ``address`` is given -- and shut down on the way out."""
    if ray.is_initialized():
        yield
        return
    ray.init(
        address=address or "local",
        num_cpus=None if address else num_cpus,
        include_dashboard=None if address else False,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def cluster_cpus() -> int:
    """CPUs of the connected cluster (read at most every 10 s)."""
    now = time.monotonic()
    if now - _cpu_cache[0] > 10.0:
        _cpu_cache[1] = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _cpu_cache[0] = now
    return _cpu_cache[1]


def connected_cpus() -> int | None:
    """The connected cluster's CPUs, or None when this process has not connected to Ray."""
    return cluster_cpus() if ray.is_initialized() else None


def ray_version() -> str:
    return ray.__version__


def ray_dask_get() -> Any:
    """Ray's own Dask-on-Ray scheduler (``ray.util.dask.ray_dask_get``): the anchor that the
    demo and the benchmarks measure daskray against."""
    from ray.util.dask import ray_dask_get

    return ray_dask_get


def node_records(max_age: float = 10.0) -> list:
    """``ray.nodes()``, alive and dead, read at most every ``max_age`` seconds: the records
    :func:`daskray.planning.feasible` checks a plan's options against."""
    now = time.monotonic()
    if now - _nodes_cache[0] > max_age:
        _nodes_cache[1] = ray.nodes()
        _nodes_cache[0] = now
    return _nodes_cache[1]


def fetch(refs: list) -> list:
    """``ray.get`` for the driver's side channels (performance-report profiles): None for
    each ref whose task failed or was cancelled."""
    try:
        return ray.get(refs)
    except Exception:  # noqa: BLE001 - some failed: take the others one by one
        out = []
        for r in refs:
            try:
                out.append(ray.get(r))
            except Exception:  # noqa: BLE001 - that task's error is the compute's to raise
                out.append(None)
        return out


def alive_nodes() -> int:
    """How many nodes of the cluster are alive (read at most every 10 s)."""
    return sum(1 for n in node_records() if n.get("Alive"))


def object_locations(refs: list) -> list:
    """``(node id, bytes)`` of each ObjectRef from Ray's object location table; ``(None, 0)``
    where Ray knows no location (not created yet, or owned elsewhere and unknown)."""
    from ray.experimental import get_object_locations

    table = get_object_locations(refs)
    out = []
    for r in refs:
        loc = table.get(r) or {}
        nodes = loc.get("node_ids") or ()
        out.append((nodes[0], int(loc.get("object_size") or 0)) if nodes else (None, 0))
    return out


@ray.remote
def _run_group(spec: tuple, *values: Any) -> Any:
    return run_group(spec, *values)


@ray.remote
def _run_group_profiled(spec: tuple, *values: Any) -> tuple:
    *outs, profile = run_group_profiled(spec, *values)
    profile["node"] = ray.get_runtime_context().get_node_id()
    return (*outs, profile)


@ray.remote
class _PoolActor:
    """One actor of a :class:`daskray.ActorPool`: runs ``setup()`` once, then fused groups
    of the pool's tasks, which read its result with :func:`daskray.actor_state`."""

    def __init__(self, setup: Any) -> None:
        start_actor(setup)

    def run(self, spec: tuple, *values: Any) -> Any:
        return run_group(spec, *values)

    def run_profiled(self, spec: tuple, *values: Any) -> tuple:
        *outs, profile = run_group_profiled(spec, *values)
        profile["node"] = ray.get_runtime_context().get_node_id()
        return (*outs, profile)


class _LivePool:
    """The running actors of a pool (``pool._live``), handed out in turn."""

    def __init__(self, pool: Any) -> None:
        actor = _PoolActor.options(**pool.options())
        self.actors = [actor.remote(pool.setup) for _ in range(pool.size)]
        self.session = _session[0]
        self.turn = 0

    def pick(self) -> Any:
        actor = self.actors[self.turn % len(self.actors)]
        self.turn += 1
        return actor

    def stop(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone, or Ray shut down
                pass
        self.actors = []


def pool_actors(pool: Any) -> list:
    """The running actors of ``pool``, started now if they are not (or belong to another Ray
    session)."""
    live = pool._live
    if live is None or live.session != _session[0] or not live.actors:
        live = pool._live = _LivePool(pool)
    return live.actors


class _PoolCall:
    """``.remote(spec, *args)`` of a group on an actor pool: ``run`` (or ``run_profiled``) on
    the pool's next actor, with the group's ``num_returns``, name and retries."""

    def __init__(self, opts: dict, num_returns: int, name: str | None, profiled: bool) -> None:
        self.pool = opts[POOL]
        self.method = "run_profiled" if profiled else "run"
        self.options = {
            "num_returns": num_returns,
            "max_task_retries": opts.get("max_retries", 3),
            "retry_exceptions": bool(opts.get("retry_exceptions", False)),
        }
        if name:
            self.options["name"] = name

    def remote(self, spec: tuple, *args: Any) -> Any:
        pool_actors(self.pool)
        actor = self.pool._live.pick()
        return getattr(actor, self.method).options(**self.options).remote(spec, *args)


_options_cache: dict = {}


def _remote(num_returns: int, name: str | None, remote_args: tuple, profiled: bool = False):
    key = (num_returns, name, remote_args, profiled)
    fn = _options_cache.get(key)
    if fn is None:
        opts = thaw(remote_args)
        if POOL in opts:
            fn = _options_cache[key] = _PoolCall(opts, num_returns, name, profiled)
            return fn
        if name:
            opts["name"] = name
        strategy = opts.get("scheduling_strategy")
        if is_strategy(strategy, WORKERS):  # not resolved by planning.feasible (submit alone)
            _, workers, soft = strategy
            node = resolve_workers(workers, soft, node_records(), [name])
            strategy = (NODE_AFFINITY, node, soft)
        if is_strategy(strategy, NODE_AFFINITY):
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                strategy[1], soft=bool(strategy[2])
            )
        fn = (_run_group_profiled if profiled else _run_group).options(
            num_returns=num_returns, **opts
        )
        if len(_options_cache) > 4096:
            _options_cache.clear()
        _options_cache[key] = fn
    return fn


def submit(
    plan,
    nodes: list,
    targets: list,
    *,
    classes: Classes,
    task_names: bool,
    observer: Any = None,
) -> list:
    """Submit every group of ``plan``; return one ObjectRef (or local value) per target.

    A target that is a plain DataNode comes back as ``(False, value)``, others as
    ``(True, ref)``. Every Ray task gets the options of its group's class (``classes.of[i]``
    is node ``i``'s, and all members of a group share one). ``observer``, if given (a
    :class:`daskray.scheduler.Observer`), hears ``submitted(g)`` for every group as it is
    submitted and ``done(g)`` when it is seen finished (here or in :func:`gather`) when it
    ``listens``; with a ``profiles`` list, every Ray task runs timed
    (:func:`daskray.worker.run_group_profiled`) and ``(group, ref of its profile)`` is
    appended to it, for :mod:`daskray.report`.
    """
    names = plan.names
    ng = plan.ngroups
    mptr, members = plan.members_ptr, plan.members
    iptr, inputs = plan.inputs_ptr, plan.inputs
    optr, outputs = plan.outputs_ptr, plan.outputs
    # the last group consuming each input: its ref can be dropped after that submission
    last_use: dict = {}
    for g in range(ng):
        for q in range(iptr[g], iptr[g + 1]):
            last_use[inputs[q]] = g
    target_set = set(targets)
    refs: dict = {}
    data: dict = {}
    frozen = [freeze(o) for o in classes.options]
    of = classes.of
    progress = observer if observer is not None and observer.listens else None
    profiles = observer.profiles if observer is not None else None
    put = ray.put
    watch = _Watch(progress)  # for gather: one ref per Ray task that may still run

    def ref_of(i):
        r = refs.get(i)
        if r is None:  # a DataNode's value, put on first use
            r = refs[i] = put(data[i])
        return r

    try:
        for g in range(ng):
            if watch.error is not None:  # a task already failed: stop submitting
                raise watch.error
            m0, m1 = mptr[g], mptr[g + 1]
            if m1 - m0 == 1:
                i = members[m0]
                node = nodes[i]
                if type(node) is DataNode:
                    if isinstance(node.value, ray.ObjectRef):  # a persisted value: pass its ref
                        refs[i] = node.value
                    else:
                        data[i] = node.value
                    if progress is not None:
                        progress.submitted(g)
                        progress.done(g)
                    continue
                if type(node) is Alias and iptr[g + 1] - iptr[g] == 1:
                    refs[i] = ref_of(inputs[iptr[g]])
                    _release(g, iptr, inputs, last_use, refs, data, target_set)
                    if progress is not None:
                        progress.submitted(g)
                        progress.done(g)
                    continue
            ins = [inputs[q] for q in range(iptr[g], iptr[g + 1])]
            outs = [outputs[q] for q in range(optr[g], optr[g + 1])]
            spec = (
                [nodes[members[q]] for q in range(m0, m1)],
                [names[i] for i in ins],
                [names[i] for i in outs],
            )
            name = key_split(names[outs[-1]]) if task_names else None
            opts = frozen[of[members[m0]]] if of is not None else frozen[0]
            args = [ref_of(i) for i in ins]
            if profiles is None:
                result = _remote(len(outs), name, opts).remote(spec, *args)
            else:
                *result, stats = _remote(len(outs) + 1, name, opts, True).remote(spec, *args)
                profiles.append((g, stats))
                result = result[0] if len(outs) == 1 else result
            watch.add(result if len(outs) == 1 else result[0], g)
            if progress is not None:
                progress.submitted(g)
            if len(outs) == 1:
                refs[outs[0]] = result
            else:
                for i, r in zip(outs, result):
                    refs[i] = r
            _release(g, iptr, inputs, last_use, refs, data, target_set)
    except BaseException:
        # an interrupt (or any failure) half-way: nothing submitted may run on
        _cancel(watch.take())
        raise
    out = []
    for t in targets:
        if t in refs:
            out.append((True, refs[t]))
        else:
            out.append((False, data[t]))
    return _Handles(out, watch)


def _release(g, iptr, inputs, last_use, refs, data, target_set):
    for q in range(iptr[g], iptr[g + 1]):
        i = inputs[q]
        if last_use[i] == g and i not in target_set:
            refs.pop(i, None)
            data.pop(i, None)


def gather(handles: list) -> list:
    """Wait for the compute, failing fast; return the targets' values as writeable objects.

    ``handles`` is :func:`submit`'s answer: ``(is_ref, ObjectRef or value)`` per target, and as
    its ``watch`` attribute (absent on a plain list: then only the targets are watched) one
    ObjectRef per Ray task -- its first return -- for the tasks not yet seen finished.

    Why not only the targets: a task's error reaches the targets only through its consumers,
    and Ray starts a consumer only once all its inputs exist, so a task that fails at once next
    to a sibling that runs for minutes would surface minutes late. Nor can cancelling the
    targets stop the rest: ``ray.cancel(recursive=True)`` follows the tasks a task submitted
    itself, not the tasks that produce its arguments, and here the driver submits every task.

    So gather polls: one ``ray.wait(pending, num_returns=len(pending), timeout=~0.1 s,
    fetch_local=False)`` over the tasks' and targets' refs per poll, whatever their number (it
    returns at once when everything is done), and drops each ref the moment it is ready --
    holding the ref of a finished task would pin its value, and the driver keeps none (see
    :func:`submit`; :class:`_Watch` already drops finished tasks' refs while submitting). A
    finished task's object is checked for an error with ``ray.get`` only when it is small
    (``_CHECK_BYTES``, read from the driver's own object table, no RPC): a failed task's objects
    are its pickled error, a few KiB, while a large object is a value, never fetched to the
    driver just to look at it (an error larger than that surfaces through the targets, as
    before). The targets' values are fetched as they become ready, one ``ray.get`` per poll, so
    a success fetches nothing more than before.

    On the first error -- or a ``KeyboardInterrupt`` or any other exception while waiting --
    every task still pending is cancelled with ``ray.cancel(ref, force=False,
    recursive=True)`` (a queued task never starts; a running one gets a ``KeyboardInterrupt``
    at its next Python bytecode), the driver's refs are dropped (``handles`` is emptied and the
    frames below this one are cleared, so a kept traceback pins nothing), and the exception is
    re-raised. A task's error is what ``ray.get`` raises: an instance of the original exception
    type (a ``RayTaskError`` subclass of it) whose message holds the remote traceback, with the
    ``daskray: raised by the task for key ...`` note of :func:`daskray.worker.run_group` in
    both the message and ``__notes__``.
    """
    watch = getattr(handles, "watch", None)
    wanted = dict.fromkeys(h for is_ref, h in handles if is_ref)
    got: dict = {}
    pending = list(wanted)
    try:
        if watch is not None:
            pending = list(dict.fromkeys([*watch.take(), *pending]))
            if watch.error is not None:  # seen while submitting
                raise watch.error
        while pending:
            timeout = min(_POLL_MAX_S, _POLL_S + _POLL_PER_REF_S * len(pending))
            ready, pending = ray.wait(
                pending, num_returns=len(pending), timeout=timeout, fetch_local=False
            )
            if ready:
                _check(ready, wanted, got)
                if watch is not None:
                    watch.finished(ready)
            del ready
    except BaseException as e:
        _cancel(pending)
        pending = ready = wanted = got = watch = None
        handles.clear()
        if hasattr(handles, "watch"):
            handles.watch = None
        _tidy(e)
        raise
    return [writeable(got[h]) if is_ref else h for is_ref, h in handles]


def gather_only(handles: list, which: Any) -> list:
    """:func:`gather` of the entries ``which`` (indices) of ``handles``: wait for every task of
    the compute, failing fast, but fetch only those values; the others stay in the store."""
    return gather(_Handles([handles[i] for i in which], getattr(handles, "watch", None)))


def writeable(value: Any) -> Any:
    """A private, writeable copy of a numpy array or pandas object that ``ray.get`` returned as
    a zero-copy, read-only view of the object store; anything else as it is.

    dask's schedulers hand back ordinary mutable results (``a += 1`` after ``compute`` works);
    so does daskray. The copy is one memcpy of the requested outputs only.
    """
    mod = type(value).__module__
    if mod == "numpy":
        flags = getattr(value, "flags", None)
        if flags is not None and not flags.writeable:
            return value.copy()
    elif mod.startswith("pandas"):
        if _pandas_readonly(value):
            return value.copy(deep=True)
    return value


def _pandas_readonly(value: Any) -> bool:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        arrays = [value.iloc[:, i].array for i in range(value.shape[1])]
    elif isinstance(value, (pd.Series, pd.Index)):
        arrays = [value.array]
    else:
        return False
    for arr in arrays:
        data = getattr(arr, "_ndarray", None)
        if data is None:
            data = getattr(arr, "_data", None)
        flags = getattr(data, "flags", None)
        if flags is not None and not flags.writeable:
            return True
    return False


#: gather's poll: ``ray.wait`` returns after this long (or at once when all is done), plus a
#: little per pending ref (a poll costs about 0.5 us per ref), at most ``_POLL_MAX_S``: how
#: late a failure can surface
_POLL_S = 0.1
_POLL_PER_REF_S = 1e-6
_POLL_MAX_S = 1.0
#: a finished task's object is fetched to look for an error only up to this size (Ray inlines
#: objects up to 100 KiB in the owner's memory store, which is where a task's error lands)
_CHECK_BYTES = 100 * 1024
#: the watch prunes refs of finished tasks while submitting when it holds this many, and again
#: when it has doubled (amortized one ``ray.wait`` slot per task)
_PRUNE_MIN = 4096


class _Watch:
    """One ObjectRef per submitted Ray task (its first return), for :func:`gather`.

    While :func:`submit` runs, refs of tasks that have finished are dropped now and then (a
    ref to a finished task pins its value): their small objects are checked for an error
    first, and the first error is kept in ``error`` for :func:`gather` to raise.
    """

    __slots__ = ("refs", "error", "_limit", "progress", "groups")

    def __init__(self, progress: Any = None) -> None:
        self.refs: list = []
        self.error: BaseException | None = None
        self._limit = _PRUNE_MIN
        self.progress = progress
        self.groups: dict = {}  # ref -> group, only when someone listens (progress)

    def add(self, ref, group: int = -1) -> None:
        refs = self.refs
        refs.append(ref)
        if self.progress is not None:
            self.groups[ref] = group
        if len(refs) >= self._limit:
            self.prune()

    def finished(self, ready: list) -> None:
        """Tell ``progress`` which groups the ``ready`` refs belong to have finished."""
        if self.progress is not None:
            for r in ready:
                g = self.groups.pop(r, None)
                if g is not None:
                    self.progress.done(g)

    def prune(self) -> None:
        refs = self.refs
        ready, self.refs = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        del refs
        self._limit = max(_PRUNE_MIN, 2 * len(self.refs))
        self.finished(ready)
        if ready and self.error is None:
            try:
                _check(ready, {}, {})
            except Exception as e:  # noqa: BLE001 - a task failed: gather raises it
                _tidy(e)
                self.error = e.with_traceback(None)

    def take(self) -> list:
        """The refs, handed over: the watch keeps none."""
        refs, self.refs = self.refs, []
        return refs


class _Handles(list):
    """:func:`submit`'s answer: ``(is_ref, handle)`` per target, and the ``watch`` of its tasks."""

    __slots__ = ("watch",)

    def __init__(self, items: list, watch: _Watch | None) -> None:
        super().__init__(items)
        self.watch = watch


def _check(ready: list, wanted: dict, got: dict) -> None:
    """Fetch the ready refs in ``wanted`` into ``got``, and the other ready refs' objects when
    small; ``ray.get`` raises the error of any of them that failed."""
    fetch = [r for r in ready if r in wanted]
    others = [r for r in ready if r not in wanted] if len(fetch) < len(ready) else ()
    if others:
        try:
            locations = _locations(others)
        except Exception:  # noqa: BLE001 - an API that moved: watch the targets only
            locations = {}
        for r in others:
            size = (locations.get(r) or {}).get("object_size")
            if size is not None and size <= _CHECK_BYTES:
                fetch.append(r)
    if fetch:
        for r, v in zip(fetch, ray.get(fetch)):
            if r in wanted:
                got[r] = v


def _locations(refs: list) -> dict:
    """``{ref: {"object_size": ..., ...}}`` from the driver's own object table (no RPC)."""
    from ray.experimental import get_local_object_locations

    return get_local_object_locations(refs)


def _cancel(refs: list | None) -> None:
    """Cancel the tasks behind ``refs`` (finished ones and ``ray.put`` refs are left alone)."""
    for r in refs or ():
        try:
            ray.cancel(r, force=False, recursive=True)
        except Exception:  # noqa: BLE001 - finished, a put, or Ray going down
            pass


def _tidy(e: BaseException) -> None:
    """Ready an exception caught in :func:`gather` to travel on, pinning nothing.

    Make sure a task error shows the notes its cause carried (the dask key), and clear the
    finished driver frames that its tracebacks keep alive: those below the catching frame
    (``ray.get``/``ray.wait`` hold lists of ObjectRefs) and those Ray unpickled the remote
    traceback in (every frame of a rebuilt remote traceback links back to them, and they hold
    the ObjectRefs being fetched). The frames stay in the traceback, without their locals.
    """
    cause = getattr(e, "cause", None)
    notes = getattr(cause, "__notes__", None)
    if notes and cause is not e:
        have = getattr(e, "__notes__", ())
        for note in notes:
            if note not in have:
                e.add_note(note)
    own = e.__traceback__
    seen: set = set()
    for tb in (own.tb_next if own is not None else None, getattr(cause, "__traceback__", None)):
        while tb is not None:
            f = tb.tb_frame
            while f is not None and id(f) not in seen:
                seen.add(id(f))
                back = f.f_back
                try:
                    f.clear()
                except RuntimeError:  # still executing: this frame and its callers
                    break
                f = back
            tb = tb.tb_next
