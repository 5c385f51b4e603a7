"""The one module that talks to Ray: connect, submit a plan, gather its outputs.

Submission is a single pass over the plan's groups, which the core numbered in a topological
order. Each group becomes one Ray task running :func:`daskray.worker.run_group_recorded` -- the
same module-level remote function for every group, so nothing is pickled per task but the
group's own task objects -- with the ObjectRefs of its inputs as arguments (Ray resolves them
on the worker; the driver never waits in between) and ``num_returns`` equal to its number of
outputs plus one, so every consumer fetches only the values it needs. The extra, last return
is the task's *status*: None, or the warnings its tasks raised -- a few bytes. Three kinds of
group never become Ray tasks: a lone ``DataNode`` is ``ray.put`` once, the first time a group
needs it (a literal shared by many tasks travels once); a lone ``Alias`` reuses its target's
ObjectRef; a group of a *driver* class (:data:`daskray.planning.DRIVER`: a write only this
process can make, see :mod:`daskray.stores`) is kept with its inputs for :func:`gather` to run
here.

The driver keeps an output's ObjectRef only until the last group that consumes it has been
submitted; after that Ray's reference counting owns the value, and only the requested keys'
refs survive the pass. Options objects (``.options(num_returns=..., name=...)``) are cached.
For :func:`gather` only, the pass also records each Ray task's status ref, dropped once the task
is seen finished.

A group whose options name an actor pool (:mod:`daskray.pools`) is an actor method call instead,
``run``/``run_profiled`` of the pool's next actor in turn (:class:`_PoolCall`), with the same
arguments, ``num_returns`` and name, and the group's retries (plus :data:`RESTARTING_RETRIES`)
as ``max_task_retries``; the pool's actors (:class:`_PoolActor`, each running the pool's
``setup()`` once) start on first use and are attached to the pool object (:class:`_LivePool`)
until it is stopped or the driver connects elsewhere.

Gathering fails fast: it polls the compute's unfinished tasks (one ``ray.wait`` per poll),
fetches each finished task's status (which raises its error, if it failed), raises the first
error within a poll or so of the failure even while slow siblings still run, and cancels every
task of the compute still in flight; a ``KeyboardInterrupt`` while waiting cancels them too.
Driver groups run as soon as their inputs are ready. Once everything is done, the warnings the
tasks recorded are re-emitted in this process.

A broken object-spilling directory does not fail a task: when the spilling directory of the
driver's node is deleted or made unwritable, Ray (2.60) retries the spills and restores forever
(its IO workers log ``PermissionError``/``FileNotFoundError``) and the compute hangs. So once no
task of a compute has finished for ``daskray.spill-check-s`` seconds, gathering looks at that
directory every few seconds and, if it is gone or unwritable, raises :class:`SpillDirectoryError`
naming it and the compute, and cancels the compute's tasks. A compute that starts while the
directory is back but Ray's per-node subdirectory in it is not recreates that subdirectory
(Ray makes it only when its IO workers start).
"""

from __future__ import annotations

import errno
import json
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
from .config import option
from .planning import DRIVER, Classes, is_strategy, resolve_workers
from .results import writeable
from .worker import lower, reemit, run_group_profiled, run_group_recorded, start_actor

_lock = threading.Lock()
_cpu_cache: list = [float("-inf"), 0]  # (time read, cluster CPUs)
_nodes_cache: list = [float("-inf"), []]  # (time read, ray.nodes())
_session: list = [None]  # the node id of the driver's Ray connection the caches describe
_spill_cache: list = [None]  # [(spilling directory, its per-node subdirectory)] of the session


def reset() -> None:
    """Forget everything cached about the connected cluster (CPUs, nodes, options objects,
    raylet stubs).

    :func:`connect` calls it when the driver's Ray connection changed (another ``ray.init``,
    another cluster); call it after switching clusters some other way.
    """
    _cpu_cache[:] = [float("-inf"), 0]
    _nodes_cache[:] = [float("-inf"), []]
    _options_cache.clear()
    _stubs.clear()
    _session[0] = None
    _spill_cache[0] = None


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


def store_bytes() -> int:
    """The object store of the cluster's alive nodes, in bytes (from the node records)."""
    return int(
        sum(n["Resources"].get("object_store_memory", 0) for n in node_records() if n.get("Alive"))
    )


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


#: the object store counters :func:`store_counters` reads per node, by their names in Ray's
#: ``ObjectStoreStats`` (the raylet's ``GetNodeStats`` reply)
STORE_COUNTERS = {
    "spilled_bytes": "spilled_bytes_total",
    "spilled_objects": "spilled_objects_total",
    "restored_bytes": "restored_bytes_total",
    "restored_objects": "restored_objects_total",
}
_stubs: dict = {}  # raylet address -> NodeManagerService stub


def store_counters(timeout: float = 10.0) -> dict[str, dict[str, int]]:
    """Per alive node (hex id): how many bytes and objects its object store has spilled to
    external storage and restored from it since the node started (:data:`STORE_COUNTERS`).

    One ``GetNodeStats`` RPC (``include_memory_info=False``) per raylet, all in flight at
    once: the counters ``ray memory --stats-only`` sums over the cluster, kept apart per node.
    A raylet that does not answer within ``timeout`` seconds (a node going down) is left out;
    so is everything when this process is not connected to Ray (a ``debug=True`` compute).
    """
    if not ray.is_initialized():
        return {}
    from ray._common.network_utils import build_address
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

    request = node_manager_pb2.GetNodeStatsRequest(include_memory_info=False)
    calls = []
    for n in node_records():
        if not n.get("Alive"):
            continue
        address = build_address(n["NodeManagerAddress"], n["NodeManagerPort"])
        stub = _stubs.get(address)
        if stub is None:
            stub = _stubs[address] = node_manager_pb2_grpc.NodeManagerServiceStub(
                init_grpc_channel(address)
            )
        calls.append((n["NodeID"], stub.GetNodeStats.future(request, timeout=timeout)))
    out = {}
    for node, call in calls:
        try:
            stats = call.result().store_stats
        except Exception:  # noqa: BLE001 - that raylet is gone or slow: no counters for it
            continue
        out[node] = {k: int(getattr(stats, field)) for k, field in STORE_COUNTERS.items()}
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


class SpillDirectoryError(OSError):
    """Ray's object-spilling directory on the driver's node is gone or unwritable while a
    compute waits for objects that Ray must spill or restore (``filename``: the directory)."""


def spill_paths() -> list:
    """``(directory, per-node subdirectory)`` for each directory the driver's node spills
    objects to (a ``filesystem`` spilling config); ``[]`` for any other kind of spilling or
    when Ray does not say. Read once per Ray session."""
    paths = _spill_cache[0]
    if paths is None:
        paths = _spill_cache[0] = _read_spill_paths()
    return paths


def _read_spill_paths() -> list:
    node = getattr(ray._private.worker.global_worker, "node", None)
    config = getattr(node, "_config", None) or {}
    text = config.get("object_spilling_config") or getattr(node, "_object_spilling_config", None)
    try:
        spec = json.loads(text) if isinstance(text, str) else (text or {})
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - an unreadable config, or no node: nothing to watch
        return []
    if spec.get("type") != "filesystem":
        return []
    dirs = spec.get("params", {}).get("directory_path") or []
    try:
        from ray._private.external_storage import DEFAULT_OBJECT_PREFIX as prefix
    except ImportError:  # pragma: no cover - the name of Ray 2.x
        prefix = "ray_spilled_objects"
    dirs = [dirs] if isinstance(dirs, str) else list(dirs)
    return [(d, os.path.join(d, f"{prefix}_{node_id}")) for d in dirs]


def _spill_dirs() -> list:
    """:func:`spill_paths`, flattened: directory, its subdirectory, next directory, ..."""
    return [path for pair in spill_paths() for path in pair]


def spill_watch() -> list:
    """An open descriptor of each spilling directory and per-node subdirectory of the driver's
    node (:func:`spill_paths`, flattened), None where there is none yet. Holding a directory
    open keeps its inode number from going to a directory made anew at the same path (Ray's IO
    workers remake a deleted one, and the file system would reuse the freed number), so
    :func:`spill_fault` tells the two apart; close them with :func:`close_watch`."""
    return [_open_dir(path) for path in _spill_dirs()]


def _open_dir(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None


def _same_dir(fd: int, st: os.stat_result | None) -> bool:
    """Whether the directory held open as ``fd`` still has links and is the one ``st`` (a
    stat of its path) describes."""
    held = os.fstat(fd)
    return (
        st is not None
        and held.st_nlink > 0
        and (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
    )


def close_watch(fds: list) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


def spill_fault(fds: list | None = None) -> tuple | None:
    """``(errno, what is wrong, path)`` of the first spilling directory of the driver's node
    (or its per-node subdirectory) that Ray cannot write to, or that is no longer the one
    watched in ``fds`` (:func:`spill_watch` taken earlier: deleted, or deleted and made anew
    -- the objects spilled in it are lost); None if all are fine."""
    wx = os.W_OK | os.X_OK
    for k, path in enumerate(_spill_dirs()):
        fd = fds[k] if fds is not None and k < len(fds) else None
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if fd is not None and not _same_dir(fd, st):
            if st is None:
                return errno.ENOENT, "does not exist (deleted?)", path
            return errno.ENOENT, "was deleted and made anew: what Ray spilled in it is lost", path
        if st is None:
            if k % 2 == 0:  # the directory (Ray makes a subdirectory when it first spills)
                return errno.ENOENT, "does not exist (deleted?)", path
        elif not os.path.isdir(path):
            return errno.ENOTDIR, "is not a directory", path
        elif not os.access(path, wx):
            return errno.EACCES, "is not writable", path
    return None


def repair_spilling() -> None:
    """Recreate Ray's per-node spilling subdirectory where its directory exists again but the
    subdirectory does not (Ray's IO workers make it only when they start: without it every
    spill fails)."""
    for d, sub in spill_paths():
        if os.path.isdir(d) and not os.path.lexists(sub):
            try:
                os.makedirs(sub, exist_ok=True)
            except OSError:  # not ours to make: the stall check reports it
                pass


@ray.remote
def _run_group(spec: tuple, *values: Any) -> tuple:
    return run_group_recorded(spec, *values)


@ray.remote
def _run_group_profiled(spec: tuple, *values: Any) -> tuple:
    *outs, profile, status = run_group_profiled(spec, *values)
    profile["node"] = ray.get_runtime_context().get_node_id()
    return (*outs, profile, status)


@ray.remote
class _PoolActor:
    """One actor of a :class:`daskray.ActorPool`: runs ``setup()`` once, then fused groups
    of the pool's tasks, which read its result with :func:`daskray.actor_state`."""

    def __init__(self, setup: Any) -> None:
        start_actor(setup)

    def run(self, spec: tuple, *values: Any) -> tuple:
        return run_group_recorded(spec, *values)  # (*outputs, status), as _run_group's

    def run_profiled(self, spec: tuple, *values: Any) -> tuple:
        *outs, profile, status = run_group_profiled(spec, *values)
        profile["node"] = ray.get_runtime_context().get_node_id()
        return (*outs, profile, status)


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


#: retries a pool call with retries gets on top of them: Ray (2.60) fails a call that finds
#: its actor restarting (a new worker process, ``setup()`` again: seconds on a loaded machine)
#: about once a second and counts each as a retry (ray-project/ray#44719), so a call queued on
#: an actor that died would use up a dask ``retries=3`` before the actor is back
RESTARTING_RETRIES = 10


class _PoolCall:
    """``.remote(spec, *args)`` of a group on an actor pool: ``run`` (or ``run_profiled``) on
    the pool's next actor, with the group's ``num_returns``, name and retries."""

    def __init__(self, opts: dict, num_returns: int, name: str | None, profiled: bool) -> None:
        self.pool = opts[POOL]
        self.method = "run_profiled" if profiled else "run"
        retries = opts.get("max_retries", 3)
        if retries > 0:
            retries += RESTARTING_RETRIES
        self.options = {
            "num_returns": num_returns,
            "max_task_retries": retries,
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
    """The remote function (options applied, cached) for a group of ``num_returns - 1``
    outputs (``num_returns - 2`` when ``profiled``): the last return is the task's status."""
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


#: the kinds of a target's handle in :func:`submit`'s answer
REF, VALUE, DRIVER_MADE = True, False, None


def submit(
    plan,
    nodes: list,
    targets: list,
    *,
    classes: Classes,
    task_names: bool,
    observer: Any = None,
) -> list:
    """Submit every group of ``plan``; return one handle ``(kind, handle)`` per target.

    A target that is a plain DataNode comes back as ``(VALUE, value)``, one made by a Ray task
    as ``(REF, ref)``, one made by a group of a driver class (see below) as ``(DRIVER_MADE,
    node id)``. Every Ray task gets the options of its group's class (``classes.of[i]`` is
    node ``i``'s, and all members of a group share one); groups of a class whose options hold
    :data:`daskray.planning.DRIVER` are not submitted but kept, with their inputs, for
    :func:`gather` to run in this process. ``observer``, if given (a
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
    # the groups consuming each input; the last one's submission drops its ref
    readers: dict = {}
    for g in range(ng):
        for q in range(iptr[g], iptr[g + 1]):
            readers.setdefault(inputs[q], []).append(g)
    target_set = set(targets)
    refs: dict = {}
    data: dict = {}
    batched: dict = {}  # node id -> (ref of its batch, node ids of the batch's values)
    frozen = [freeze(o) for o in classes.options]
    in_driver = [bool(o.get(DRIVER)) for o in classes.options]
    of = classes.of
    lone = _lone_aliases(plan, nodes)
    plain = _plain_readers(plan, of, in_driver, lone)
    progress = observer if observer is not None and observer.listens else None
    profiles = observer.profiles if observer is not None else None
    put = ray.put
    watch = _Watch(progress)  # for gather: the status ref of every Ray task that may still run
    driver = _DriverGroups(profiles)
    prefixes = watch.prefixes
    repair_spilling()

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
                if lone[g] and inputs[iptr[g]] not in driver.made:
                    refs[i] = ref_of(inputs[iptr[g]])
                    _release(g, iptr, inputs, readers, refs, data, batched, target_set)
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
            cls = of[members[m0]] if of is not None else 0
            if in_driver[cls]:
                driver.add(g, spec, ins, outs, refs, data)
                _release(g, iptr, inputs, readers, refs, data, batched, target_set)
                continue
            args, in_layout = _arguments(g, ins, ref_of, batched, driver)
            slots = _batches(outs, readers, plain, target_set)
            out_layout = None
            if len(slots) < len(outs):
                at = {i: p for p, i in enumerate(outs)}
                out_layout = [at[s[0]] if len(s) == 1 else tuple(at[i] for i in s) for s in slots]
            spec = (lower(spec[0]), spec[1], spec[2], in_layout, out_layout)
            name = key_split(names[outs[-1]]) if task_names else None
            prefixes[name] = None
            if profiles is None:
                *result, status = _remote(len(slots) + 1, name, frozen[cls]).remote(spec, *args)
            else:
                remote = _remote(len(slots) + 2, name, frozen[cls], True)
                *result, stats, status = remote.remote(spec, *args)
                profiles.append((g, stats))
            watch.add(status, g)
            if progress is not None:
                progress.submitted(g)
            for s, r in zip(slots, result):
                if len(s) == 1:
                    refs[s[0]] = r
                else:
                    batch = (r, s)
                    for i in s:
                        batched[i] = batch
            _release(g, iptr, inputs, readers, refs, data, batched, target_set)
    except BaseException:
        # an interrupt (or any failure) half-way: nothing submitted may run on
        _cancel(watch.take())
        raise
    out = []
    for t in targets:
        if t in refs:
            out.append((REF, refs[t]))
        elif t in driver.made:
            out.append((DRIVER_MADE, t))
        else:
            out.append((VALUE, data[t]))
    prefixes.pop(None, None)
    what = ", ".join(dict.fromkeys(key_split(names[t]) for t in targets[:50]))
    return _Handles(out, watch, driver if driver.groups else None, what)


def _release(g, iptr, inputs, readers, refs, data, batched, target_set):
    # group g was the last to read an input (not a target): drop what the driver holds of it
    for q in range(iptr[g], iptr[g + 1]):
        i = inputs[q]
        if readers[i][-1] == g and i not in target_set:
            refs.pop(i, None)
            data.pop(i, None)
            batched.pop(i, None)


def _lone_aliases(plan, nodes: list) -> list:
    """Per group: whether it is one ``Alias`` of one input, which :func:`submit` hands on as
    that input's ref (no Ray task)."""
    mptr, members, iptr = plan.members_ptr, plan.members, plan.inputs_ptr
    return [
        mptr[g + 1] - mptr[g] == 1
        and type(nodes[members[mptr[g]]]) is Alias
        and iptr[g + 1] - iptr[g] == 1
        for g in range(plan.ngroups)
    ]


def _plain_readers(plan, of: Any, in_driver: list, lone: list) -> list:
    """Per group: whether it must get its inputs one ref each (never batched): a group of a
    driver class (run by :class:`_DriverGroups`), or a ``lone`` alias."""
    mptr, members = plan.members_ptr, plan.members
    return [
        lone[g] or in_driver[of[members[mptr[g]]] if of is not None else 0]
        for g in range(plan.ngroups)
    ]


def _batches(outs: list, readers: dict, plain: list, target_set: set) -> list:
    """A group's returns: its outputs, those read by exactly the same groups (none of which
    needs its inputs one ref each, none a target) in one return together -- one Ray object
    for what one reducer group reads of a shuffle's map, not one per piece."""
    slots: list = []
    by_readers: dict = {}
    for i in outs:
        rs = readers.get(i)
        if i in target_set or rs is None or any(plain[h] for h in rs):
            slots.append([i])
            continue
        key = tuple(rs)
        k = by_readers.get(key)
        if k is None:
            by_readers[key] = len(slots)
            slots.append([i])
        else:
            slots[k].append(i)
    return slots


def _arguments(g: int, ins: list, ref_of: Any, batched: dict, driver: Any) -> tuple:
    """A Ray-submitted group's arguments -- one ref per input, one per batch of inputs -- and
    their layout for :func:`daskray.worker.run_group` (None: one ref per input, in order)."""
    args = []
    layout: list = []
    at: dict | None = None
    seen = set()  # batches passed, by their first value
    for p, i in enumerate(ins):
        if i in driver.made:
            driver.misplaced(g, i)
        batch = batched.get(i)
        if batch is None:
            args.append(ref_of(i))
            layout.append(p)
        elif batch[1][0] not in seen:
            seen.add(batch[1][0])
            if at is None:
                at = {x: q for q, x in enumerate(ins)}
            args.append(batch[0])
            layout.append(tuple(at[x] for x in batch[1]))
    return args, (layout if at is not None else None)


class _DriverGroups:
    """The groups that run in this process (a driver class: e.g. writes to a file only the
    driver holds open, see :mod:`daskray.planning`), each kept with its inputs -- ObjectRefs,
    plain values, or outputs of earlier driver groups -- and run by :func:`gather` as soon as
    its inputs are ready, in plan order. Their outputs stay here (``values``); their warnings
    are recorded like a Ray task's, for :func:`gather` to re-emit with the others."""

    __slots__ = ("groups", "made", "values", "waiting", "by_ref", "by_made", "profiles")

    def __init__(self, profiles: list | None) -> None:
        self.groups: list = []  # [g, spec, args, outs]; args: (kind, ref / value / node id)
        self.made: dict = {}  # node id -> index of the driver group making it
        self.values: dict = {}  # node id -> value, once made
        self.waiting: list = []  # per group: how many inputs are not ready yet
        self.by_ref: dict = {}  # ref -> indices of the groups waiting for it
        self.by_made: dict = {}  # node id -> indices of the groups waiting for it
        self.profiles = profiles

    def add(self, g: int, spec: tuple, ins: list, outs: list, refs: dict, data: dict) -> None:
        k = len(self.groups)
        args = []
        waiting = 0
        for i in ins:
            if i in self.made:
                args.append((DRIVER_MADE, i))
                self.by_made.setdefault(i, []).append(k)
                waiting += 1
            elif i in refs:
                args.append((REF, refs[i]))
                waiting += 1
            else:
                args.append((VALUE, data[i]))
        self.groups.append([g, spec, args, outs])
        self.made.update(dict.fromkeys(outs, k))
        self.waiting.append(waiting)

    def misplaced(self, g: int, i: int) -> Any:
        raise RuntimeError(
            f"daskray planned group {g} on Ray although it reads a value made in the driver "
            f"(node {i}): please report this bug"
        )

    def refs(self) -> list:
        """The Ray refs the groups wait for, indexed for :meth:`arrived`."""
        for k, (_, _, args, _) in enumerate(self.groups):
            for kind, h in args:
                if kind is REF:
                    self.by_ref.setdefault(h, []).append(k)
        return list(self.by_ref)

    def arrived(self, ready: list) -> None:
        for r in ready:
            for k in self.by_ref.pop(r, ()):
                self.waiting[k] -= 1

    def run_ready(self, progress: Any, statuses: list) -> None:
        """Run, in plan order, every group whose inputs are all ready (and those it makes
        ready); append their statuses (recorded warnings) to ``statuses``."""
        k = 0
        while k < len(self.groups):
            group = self.groups[k]
            if group[1] is None or self.waiting[k] > 0:
                k += 1
                continue
            g, spec, args, outs = group
            group[1] = group[2] = None  # run once; drop the inputs afterwards
            statuses.append(self._run(g, spec, args, outs, progress))
            for i in outs:  # its dependents come later in plan order: the loop reaches them
                for k2 in self.by_made.pop(i, ()):
                    self.waiting[k2] -= 1
            k += 1

    def _run(self, g: int, spec: tuple, args: list, outs: list, progress: Any) -> Any:
        fetched = iter(ray.get([h for kind, h in args if kind is REF]))
        values = [
            next(fetched) if kind is REF else h if kind is VALUE else self.values[h]
            for kind, h in args
        ]
        del fetched, args
        if progress is not None:
            progress.submitted(g)
        if self.profiles is not None:
            *result, profile, status = run_group_profiled(spec, *values)
            profile["node"] = "driver"
            self.profiles.append((g, profile))
        else:
            *result, status = run_group_recorded(spec, *values)
        self.values.update(zip(outs, result))
        if progress is not None:
            progress.done(g)
        return status


def gather(handles: list, fetch: bool = True) -> list:
    """Wait for the compute, failing fast; return the targets' values as writeable objects
    (with ``fetch=False``: wait all the same, but answer ``(is_ref, ref or value)`` per target,
    leaving the values made on Ray where they are -- what ``persist`` keeps).

    ``handles`` is :func:`submit`'s answer: ``(kind, handle)`` per target, and as its ``watch``
    attribute (absent on a plain list: then only the targets are watched) the *status* ref of
    every Ray task not yet seen finished, and as ``driver`` the groups to run here.

    Why watch every task, not only the targets: a task's error reaches the targets only through
    its consumers, and Ray starts a consumer only once all its inputs exist, so a task that
    fails at once next to a sibling that runs for minutes would surface minutes late. Nor can
    cancelling the targets stop the rest: ``ray.cancel(recursive=True)`` follows the tasks a
    task submitted itself, not the tasks that produce its arguments, and here the driver
    submits every task.

    So gather polls: one ``ray.wait(pending, num_returns=len(pending), timeout=~0.1 s,
    fetch_local=False)`` over the tasks' status refs, the targets' refs and the driver groups'
    inputs per poll, whatever their number (it returns at once when everything is done), and
    drops each ref the moment it is ready. Every Ray task's last return is its status: None,
    or the warnings its tasks raised (:func:`daskray.worker.run_group_recorded`) -- a few bytes,
    fetched for every finished task in one ``ray.get`` per poll, which raises the task's error
    if it failed (a failed task's every return is its error). The targets' values are fetched
    as they become ready. A driver group runs here as soon as its inputs are ready.

    On the first error -- or a ``KeyboardInterrupt`` or any other exception while waiting --
    every task still pending is cancelled with ``ray.cancel(ref, force=False,
    recursive=True)`` (a queued task never starts; a running one gets a ``KeyboardInterrupt``
    at its next Python bytecode), the driver's refs are dropped (``handles`` is emptied and the
    frames below this one are cleared, so a kept traceback pins nothing), and the exception is
    re-raised. A task's error is what ``ray.get`` raises: an instance of the original exception
    type (a ``RayTaskError`` subclass of it) whose message holds the remote traceback, with the
    ``daskray: raised by the task for key ...`` note of :func:`daskray.worker.run_group` in
    both the message and ``__notes__``.

    Once every task is done the recorded warnings are re-emitted here
    (:func:`daskray.worker.reemit`), under the driver's warning filters: a ``-W error`` filter
    raises then, with nothing left running.
    """
    watch = getattr(handles, "watch", None)
    driver = getattr(handles, "driver", None)
    wanted = dict.fromkeys(h for kind, h in handles if kind is REF) if fetch else {}
    got: dict = {}
    statuses: list = []
    pending = list(wanted)
    ready = None
    stall = _Stall(option("spill-check-s"))
    try:
        if watch is not None:
            extra = driver.refs() if driver is not None else []
            pending = list(dict.fromkeys([*watch.take(), *extra, *pending]))
            if watch.error is not None:  # seen while submitting
                raise watch.error
            statuses = watch.statuses
        if driver is not None:
            driver.run_ready(watch.progress, statuses)
        while pending:
            timeout = min(_POLL_MAX_S, _POLL_S + _POLL_PER_REF_S * len(pending))
            ready, pending = ray.wait(
                pending, num_returns=len(pending), timeout=timeout, fetch_local=False
            )
            if ready:
                _check(ready, wanted, got, watch)
                if watch is not None:
                    watch.finished(ready)
                if driver is not None:
                    driver.arrived(ready)
                    driver.run_ready(watch.progress, statuses)
            stall.tick(ready, handles, len(pending))
            del ready
    except BaseException as e:
        _cancel(pending)
        _note_spill_fault(e, stall.fds)
        pending = ready = wanted = got = watch = driver = None
        handles.clear()
        if hasattr(handles, "watch"):
            handles.watch = handles.driver = None
        _tidy(e)
        raise
    finally:
        stall.close()
    out = []
    for kind, h in handles:
        if kind is REF:
            out.append(writeable(got[h]) if fetch else (True, h))
        elif kind is DRIVER_MADE:
            value = writeable(driver.values[h])
            out.append(value if fetch else (False, value))
        else:
            out.append(h if fetch else (False, h))
    seen: set = set()
    for status in statuses:
        reemit(status, seen)
    return out


def gather_only(handles: list, which: Any) -> list:
    """:func:`gather` of the entries ``which`` (indices) of ``handles``: wait for every task of
    the compute, failing fast, but fetch only those values; the others stay in the store."""
    return gather(
        _Handles(
            [handles[i] for i in which],
            getattr(handles, "watch", None),
            getattr(handles, "driver", None),
            getattr(handles, "what", ""),
        )
    )


#: gather's poll: ``ray.wait`` returns after this long (or at once when all is done), plus a
#: little per pending ref (a poll costs about 0.5 us per ref), at most ``_POLL_MAX_S``: how
#: late a failure can surface
_POLL_S = 0.1
_POLL_PER_REF_S = 1e-6
_POLL_MAX_S = 1.0
#: the watch prunes refs of finished tasks while submitting when it holds this many, and again
#: when it has doubled (amortized one ``ray.wait`` slot per task)
_PRUNE_MIN = 4096


class _Watch:
    """The status ref (last return) of every submitted Ray task, for :func:`gather`.

    While :func:`submit` runs, refs of tasks that have finished are dropped now and then (a
    ref to a finished task pins its value): their statuses are fetched first -- the first
    error is kept in ``error`` for :func:`gather` to raise, the recorded warnings in
    ``statuses``.
    """

    __slots__ = ("refs", "error", "_limit", "progress", "groups", "unseen", "statuses", "prefixes")

    def __init__(self, progress: Any = None) -> None:
        self.refs: list = []
        self.error: BaseException | None = None
        self._limit = _PRUNE_MIN
        self.progress = progress
        self.groups: dict = {}  # ref -> group, only when someone listens (progress)
        self.unseen: set = set()  # the status refs whose status is not fetched yet
        self.statuses: list = []  # the fetched statuses that recorded warnings
        self.prefixes: dict = {}  # the key prefixes of the tasks submitted (task names)

    def add(self, ref, group: int = -1) -> None:
        refs = self.refs
        refs.append(ref)
        self.unseen.add(ref)
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
                _check(ready, {}, {}, self)
            except Exception as e:  # noqa: BLE001 - a task failed: gather raises it
                _tidy(e)
                self.error = e.with_traceback(None)

    def take(self) -> list:
        """The refs, handed over: the watch keeps none."""
        refs, self.refs = self.refs, []
        return refs


class _Handles(list):
    """:func:`submit`'s answer: ``(kind, handle)`` per target, the ``watch`` of its Ray tasks,
    the ``driver`` groups to run here (or None) and ``what`` is computed (the targets' key
    prefixes, for error messages)."""

    __slots__ = ("watch", "driver", "what")

    def __init__(self, items: list, watch: _Watch | None, driver: Any = None, what: str = ""):
        super().__init__(items)
        self.watch = watch
        self.driver = driver
        self.what = what


#: once stalled, :class:`_Stall` looks at the spilling directories this often (seconds)
_SPILL_EVERY_S = 2.0


class _Stall:
    """:func:`gather`'s watch over a stall: once no task of the compute has finished for
    ``after`` seconds (``daskray.spill-check-s``; None or 0: never), look at the driver's
    node's spilling directories every :data:`_SPILL_EVERY_S` (:func:`spill_fault`) and raise
    :class:`SpillDirectoryError` if one is gone or unwritable: Ray would wait forever. It
    holds the directories open from the start of the compute (:func:`spill_watch`); call
    :meth:`close` when the compute ends."""

    __slots__ = ("after", "last", "next", "fds")

    def __init__(self, after: float | None) -> None:
        self.after = after
        self.last = self.next = time.monotonic()
        self.fds = spill_watch() if after else []

    def tick(self, ready: list, handles: Any, pending: int) -> None:
        now = time.monotonic()
        if not self.after:
            return
        if None in self.fds:  # a (sub)directory Ray has made since: watch it from now on
            paths = _spill_dirs()
            self.fds = [_open_dir(paths[k]) if fd is None else fd for k, fd in enumerate(self.fds)]
        if ready:
            self.last = now
        elif now - self.last >= self.after and now >= self.next:
            self.next = now + _SPILL_EVERY_S
            fault = spill_fault(self.fds)
            if fault is not None:
                raise _spill_error(fault, now - self.last, handles, pending)

    def close(self) -> None:
        close_watch(self.fds)
        self.fds = []


def _note_spill_fault(e: BaseException, fds: list | None = None) -> None:
    """Add a note naming a broken spilling directory to an error of Ray's own (with one
    unwritable, Ray 2.60's raylet may abort on its fallback allocation there before
    :class:`_Stall` sees the stall: ``LocalRayletDiedError``)."""
    if not isinstance(e, Exception) or isinstance(e, SpillDirectoryError):
        return
    try:
        fault = spill_fault(fds)
    except Exception:  # noqa: BLE001 - Ray is down: nothing more to say
        return
    if fault is not None:
        e.add_note(f"daskray: Ray's object-spilling directory {fault[2]} {fault[1]}")


def _spill_error(fault: tuple, idle: float, handles: Any, pending: int) -> SpillDirectoryError:
    code, wrong, path = fault
    watch = getattr(handles, "watch", None)
    kinds = list(watch.prefixes) if watch is not None else []
    ran = ", ".join(kinds[:8]) + (", ..." if len(kinds) > 8 else "")
    what = getattr(handles, "what", "") or "?"
    return SpillDirectoryError(
        code,
        f"daskray: Ray's object-spilling directory {path} {wrong}, and no task of the compute "
        f"of {what!r} (tasks {ran or '?'}) has finished for {idle:.0f} s: Ray cannot spill or "
        f"restore objects there and would retry forever. The {pending} tasks still pending "
        "were cancelled. Restore the directory (mkdir it, chmod u+rwx) and compute again -- "
        "what was spilled in it is lost -- or start Ray with another object_spilling_directory",
        path,
    )


def _check(ready: list, wanted: dict, got: dict, watch: _Watch | None) -> None:
    """Fetch the ready refs in ``wanted`` into ``got`` and the ready status refs of ``watch``
    into its ``statuses``; ``ray.get`` raises the error of any task among them that failed."""
    fetch = [r for r in ready if r in wanted]
    if watch is not None and watch.unseen:
        unseen = watch.unseen
        status = [r for r in ready if r in unseen]
        unseen.difference_update(status)
        fetch.extend(status)
    if fetch:
        for r, v in zip(fetch, ray.get(fetch)):
            if r in wanted:
                got[r] = v
            elif type(v) is list and watch is not None:
                watch.statuses.append(v)


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
