"""Writes that only the driver can make: ``dask.array.store`` targets that cannot leave it.

``dask.array.store(sources, targets)`` -- behind every xarray ``to_netcdf``/``to_zarr`` and
dask's ``to_hdf5``/``to_zarr`` -- runs one ``load_store_chunk(x, out, index, region, lock,
...)`` task per chunk, holding the target ``out`` and the ``lock`` as literal arguments. On
dask's local schedulers every task runs in the process that made the target; on Ray a task's
arguments are pickled to a worker process, and some targets cannot follow:

* an open file: an ``h5py`` dataset, or the array wrapper of an xarray netCDF datastore --
  which also holds the *write lock xarray picked for the scheduler it recognised*: a
  ``threading.Lock`` for anything but dask.distributed and dask.multiprocessing
  (``cannot pickle '_thread.lock'``);
* an in-memory numpy array: a worker would write into its own copy, and the driver's array
  would stay as it was.

HDF5 (under netCDF4 and h5netcdf alike) allows one writer per file, and xarray keeps the file
open in the driver between its writes, so daskray does not hand such a write a lock of its own
and let workers reopen the file: the store tasks whose target or lock cannot travel run **in the
driver**, the one process that holds the file (:func:`driver_bound`), after their chunks were
computed on Ray and fetched; their locks then work as on dask's threaded scheduler. Targets that
can travel -- a zarr array, whose chunks are independent files (xarray checks the alignment) --
are written by the Ray tasks, where the data is; on a multi-node cluster their store must be
shared (a path every node sees, or object storage), as with dask.distributed.

Finding them costs one pass over the keys' names (``store-map`` is the name dask gives every
store layer, also inside the names dask's blockwise fusion makes); only the tasks so named are
looked into, their literal arguments pickled (once per object). Every task downstream of a
driver-bound one runs in the driver too (``daskray.planning.driver_classes``): Ray tasks
cannot take a value that the driver makes later.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import cloudpickle

from ._compat import DataNode, GraphNode, Task, TaskRef, execute_subgraph

#: the substring dask puts in the name of every store task (``token="store-map"``)
STORE_NAME = "store-map"
_target_of: dict = {}


def _targets() -> dict:
    """dask's store functions -> where their target sits: ``(positional index, keyword)``
    (dask.array is imported on the first graph with a store in it)."""
    if not _target_of:
        from dask.array.core import load_chunk, load_store_chunk

        _target_of.update({load_store_chunk: (1, "out"), load_chunk: (0, "out")})
    return _target_of


def driver_bound(names: list, nodes: list) -> list[int]:
    """Ids of the store tasks among ``nodes`` that must run in the driver (see the module
    docstring), in id order; [] for a graph without stores.

    >>> import numpy as np, dask.array as da
    >>> out = np.zeros(4)
    >>> stored = da.store(da.ones(4, chunks=2), out, compute=False, lock=False)
    >>> dsk = dict(stored.__dask_graph__())
    >>> len(driver_bound(list(dsk), list(dsk.values())))  # a numpy target stays here
    2
    """
    if not _may_store(names):
        return []
    verdicts: dict[int, bool] = {}
    targets = _targets()
    out = []
    for i, (name, node) in enumerate(zip(names, nodes)):
        if type(name) is tuple and name and type(name[0]) is str and STORE_NAME in name[0]:
            args = _store_args(node, targets)
            if any(not _travels(obj, target, verdicts) for obj, target in args):
                out.append(i)
    return out


def _may_store(names: list) -> bool:
    """Whether some key is named as a store task's: one pass over the keys' first elements."""
    try:
        firsts = set(map(itemgetter(0), names))
    except (TypeError, IndexError):  # an int or float key, or an empty tuple
        firsts = {k[0] for k in names if type(k) is tuple and k}
    return any(type(f) is str and STORE_NAME in f for f in firsts)


def _store_args(node: Any, targets: dict):
    """``(literal argument, is the target)`` of every store call in ``node``: a store task,
    one of dask's fused tasks (``_execute_subgraph(inner, outkey, inkeys, *args)``, nested as
    blockwise fusion nests them: an inner task's reference to one of ``inkeys`` means the
    matching outer argument) holding one, or a task wrapping one (dask's ``ProhibitReuse``
    renames keys by wrapping tasks in ``_identity`` tasks)."""
    stack: list = [(node, {})]
    while stack:
        task, env = stack.pop()
        if not isinstance(task, Task):
            continue
        args = task.args
        if task.func is execute_subgraph and len(args) >= 3 and type(args[0]) is dict:
            inner_env = dict(env)
            inner_env.update(zip(args[2], [_resolved(a, env) for a in args[3:]]))
            stack.extend((t, inner_env) for t in args[0].values())
            continue
        where = targets.get(task.func)
        if where is None:
            stack.extend((a, env) for a in args if isinstance(a, Task))
            continue
        position, keyword = where
        for p, arg in enumerate(args):
            for obj in _literals(arg, env):
                yield obj, p == position
        for k, arg in task.kwargs.items():
            for obj in _literals(arg, env):
                yield obj, k == keyword


def _resolved(arg: Any, env: dict) -> Any:
    return env.get(arg.key, arg) if isinstance(arg, TaskRef) else arg


def _literals(arg: Any, env: dict):
    """The plain objects in a task argument (references resolved through ``env``; the
    others, to values other tasks make, skipped)."""
    stack = [arg]
    while stack:
        a = _resolved(stack.pop(), env)
        if isinstance(a, GraphNode):
            if type(a) is DataNode:
                stack.append(a.value)
            elif isinstance(a, Task):
                stack.extend(a.args)
                stack.extend(a.kwargs.values())
        elif type(a) in (tuple, list):
            stack.extend(a)
        elif type(a) is dict:
            stack.extend(a.values())
        elif a is not None and not isinstance(a, TaskRef):
            yield a


def _travels(obj: Any, target: bool, verdicts: dict[int, bool]) -> bool:
    """Whether a store task holding ``obj`` can run on a Ray worker."""
    if type(obj) in (int, float, bool, str, slice):
        return True
    if target and type(obj).__module__.startswith("numpy") and hasattr(obj, "flags"):
        return False  # in this process's memory: a worker's write would be lost
    verdict = verdicts.get(id(obj))
    if verdict is None:
        try:
            cloudpickle.dumps(obj)
            verdict = True
        except Exception:  # noqa: BLE001 - whatever pickling raises: it cannot travel
            verdict = False
        verdicts[id(obj)] = verdict
    return verdict
