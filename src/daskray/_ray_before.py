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
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import ray
from dask._task_spec import Alias, DataNode
from dask.utils import key_split

from .annotations import ResourceError, freeze, thaw
from .worker import run_group

_lock = threading.Lock()
_cpu_cache: list = [0.0, 0]  # (time read, cluster CPUs)


def connect(address: str | None, num_cpus: int | None, init_kwargs: dict) -> None:
    """Make sure this process is connected to Ray: the given cluster, or a local one."""
    if ray.is_initialized():
        return
    with _lock:
        if ray.is_initialized():
            return
        address = address or os.environ.get("RAY_ADDRESS") or None
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


def cluster_cpus() -> int:
    """CPUs of the connected cluster (read at most every 10 s)."""
    now = time.monotonic()
    if now - _cpu_cache[0] > 10.0:
        _cpu_cache[1] = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _cpu_cache[0] = now
    return _cpu_cache[1]


_nodes_cache: list = [0.0, []]  # (time read, alive nodes' resources)


def check_feasible(class_options: list, classes: list | None, names: list) -> None:
    """Raise :class:`ResourceError` if some options class asks for more than any alive node
    offers (GPUs on a cluster without them, an unknown custom resource, too much memory):
    Ray would otherwise queue those tasks forever. Names the keys and the request."""
    now = time.monotonic()
    if now - _nodes_cache[0] > 10.0:
        _nodes_cache[1] = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        _nodes_cache[0] = now
    nodes = _nodes_cache[1]
    for cls, opts in enumerate(class_options):
        need = {"CPU": opts.get("num_cpus", 1), "GPU": opts.get("num_gpus", 0)}
        need["memory"] = opts.get("memory", 0)
        need.update(opts.get("resources") or {})
        need = {k: v for k, v in need.items() if v}
        if any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
            continue
        if classes is None:
            keys = names[:5]
        else:
            keys = [names[i] for i, c in enumerate(classes) if c == cls][:5]
        hidden = ("node:", "object_store_memory")
        offered = [{k: v for k, v in node.items() if not k.startswith(hidden)} for node in nodes]
        raise ResourceError(
            f"No Ray node can run the tasks {keys}{' ...' if len(keys) == 5 else ''}: they "
            f"request {need}, and the cluster's nodes offer {offered}. Lower the request "
            "(dask.annotate(resources=...), ray_remote_args) or add nodes that have it.",
            keys,
            need,
        )


@ray.remote
def _run_group(spec: tuple, *values: Any) -> Any:
    return run_group(spec, *values)


_options_cache: dict = {}


def _remote(num_returns: int, name: str | None, remote_args: tuple):
    key = (num_returns, name, remote_args)
    fn = _options_cache.get(key)
    if fn is None:
        opts = thaw(remote_args)
        if name:
            opts["name"] = name
        fn = _run_group.options(num_returns=num_returns, **opts)
        if len(_options_cache) > 4096:
            _options_cache.clear()
        _options_cache[key] = fn
    return fn


def submit(
    plan,
    nodes: list,
    targets: list,
    *,
    remote_args: dict,
    task_names: bool,
    classes: list | None = None,
    class_options: list | None = None,
) -> list:
    """Submit every group of ``plan``; return one ObjectRef (or local value) per target.

    A target that is a plain DataNode comes back as ``(False, value)``, others as
    ``(True, ref)``. ``classes[i]`` is node ``i``'s options class and ``class_options[c]`` the
    Ray options of class ``c`` (all members of a group share one class); without them every
    Ray task gets ``remote_args``.
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
    if class_options is None:
        class_options = [remote_args]
    frozen = [freeze(o) for o in class_options]
    put = ray.put

    def ref_of(i):
        r = refs.get(i)
        if r is None:  # a DataNode's value, put on first use
            r = refs[i] = put(data[i])
        return r

    for g in range(ng):
        m0, m1 = mptr[g], mptr[g + 1]
        if m1 - m0 == 1:
            i = members[m0]
            node = nodes[i]
            if type(node) is DataNode:
                data[i] = node.value
                continue
            if type(node) is Alias and iptr[g + 1] - iptr[g] == 1:
                refs[i] = ref_of(inputs[iptr[g]])
                _release(g, iptr, inputs, last_use, refs, data, target_set)
                continue
        ins = [inputs[q] for q in range(iptr[g], iptr[g + 1])]
        outs = [outputs[q] for q in range(optr[g], optr[g + 1])]
        spec = (
            [nodes[members[q]] for q in range(m0, m1)],
            [names[i] for i in ins],
            [names[i] for i in outs],
        )
        name = key_split(names[outs[-1]]) if task_names else None
        opts = frozen[classes[members[m0]]] if classes is not None else frozen[0]
        result = _remote(len(outs), name, opts).remote(spec, *[ref_of(i) for i in ins])
        if len(outs) == 1:
            refs[outs[0]] = result
        else:
            for i, r in zip(outs, result):
                refs[i] = r
        _release(g, iptr, inputs, last_use, refs, data, target_set)
    out = []
    for t in targets:
        if t in refs:
            out.append((True, refs[t]))
        else:
            out.append((False, data[t]))
    return out


def _release(g, iptr, inputs, last_use, refs, data, target_set):
    for q in range(iptr[g], iptr[g + 1]):
        i = inputs[q]
        if last_use[i] == g and i not in target_set:
            refs.pop(i, None)
            data.pop(i, None)


def gather(handles: list) -> list:
    """Fetch the targets' values (one ``ray.get`` for all refs), as writeable objects."""
    refs = [h for is_ref, h in handles if is_ref]
    got = iter(ray.get(refs)) if refs else iter(())
    return [writeable(next(got)) if is_ref else h for is_ref, h in handles]


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
