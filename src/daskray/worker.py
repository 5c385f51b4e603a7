"""What runs inside a Ray task (and in-process in debug mode): one fused group of dask tasks.

A group arrives as ``(tasks, in_keys, out_keys)`` -- dask ``GraphNode`` objects in execution
order, the keys of the values passed as further arguments (Ray has already resolved the
ObjectRefs into values), and the keys to return, one value each (``num_returns``) -- or as
``(tasks, in_keys, out_keys, in_layout, out_layout)`` when some values travel *batched*: the
outputs that the same groups read leave as one tuple, one Ray object instead of many (a
shuffle's map sends its pieces for one reducer group together). A layout has one entry per
argument (or return): the position of its key in ``in_keys`` (``out_keys``), or a tuple of
positions for a batch; None means one key each, in order. Nothing here imports Ray, so the same
function runs a plan without it.

On Ray a group runs *recorded* (:func:`run_group_recorded`): every warning its tasks raise is
caught (under ``simplefilter("always")``: the driver's filters decide what is shown) and
returned, with the key of the task that raised it, as one extra small value -- the Ray task's
*status*, which the driver fetches for every Ray task (see :mod:`daskray._ray`) and re-emits.
In-process (``debug=True``, the driver's own groups) warnings simply propagate.

Most tasks travel *lowered* (:func:`lower`): a plain ``Task`` -- no keyword arguments, its
arguments values or ``TaskRef``s -- becomes the tuple ``(key, func, args, refs)``, ``args``
with each ref's key in its place and ``refs`` the positions of those keys; a fused blockwise
task becomes such a tuple of :func:`run_subgraph`, its inner tasks lowered alike. A
tuple of plain values pickles in C; a ``Task`` object pickles and unpickles through
Python-level ``__getstate__``/``__setstate__`` (about 7 and 17 µs a task: most of the cost of a
million tiny tasks). :func:`_call` runs it as ``Task.__call__`` would.

Each task is called with only its own dependencies (``GraphNode.__call__`` checks its values
against the mapping it is given, which would cost the size of the whole group per task), and
a value is dropped as soon as the last task of the group that needs it has run, unless it is an
output: a group of 2,000 fused chunk operations holds no more than dask's own scheduler would.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from dask.utils import key_split

from ._compat import GraphNode, Task, TaskRef, execute_subgraph

_NO_STATE = object()
_state: list = [_NO_STATE]  # what this process's actor-pool setup() returned


def actor_state() -> Any:
    """What ``setup()`` returned in the actor of a :class:`daskray.ActorPool` running this
    task (a model loaded once per actor); a task not annotated ``ray_actor_pool=`` has none.

    >>> actor_state()
    Traceback (most recent call last):
    ...
    RuntimeError: daskray.actor_state(): this task runs on no actor pool; annotate it with dask.annotate(ray_actor_pool=NAME) (or compute with ray_actor_pool=NAME)
    """  # noqa: E501
    state = _state[0]
    if state is _NO_STATE:
        raise RuntimeError(
            "daskray.actor_state(): this task runs on no actor pool; annotate it with "
            "dask.annotate(ray_actor_pool=NAME) (or compute with ray_actor_pool=NAME)"
        )
    return state


def start_actor(setup: Any) -> None:
    """Run an actor pool's ``setup()`` in this (actor) process and keep what it returns."""
    _state[0] = setup()


def run_group_with_state(state: Any, spec: tuple, *values: Any) -> Any:
    """:func:`run_group` with :func:`actor_state` answering ``state`` (a local run of a pool's
    group, ``debug=True``)."""
    old, _state[0] = _state[0], state
    try:
        return run_group(spec, *values)
    finally:
        _state[0] = old


def run_group(spec: tuple, *values: Any) -> Any:
    """Run a fused group; return its single output, or a tuple of its outputs."""
    return _execute(spec, values, None)


def run_group_recorded(spec: tuple, *values: Any) -> tuple:
    """:func:`run_group` recording warnings: ``(*outputs, status)``, the status None or a list
    of ``(key, category, message, filename, lineno)``, one per warning raised."""
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        keys: list = []
        result = _execute(spec, values, None, (log, keys))
    outs = (result,) if _returns(spec) == 1 else result
    return (*outs, _status(log, keys))


def run_group_profiled(spec: tuple, *values: Any) -> tuple:
    """:func:`run_group_recorded`, timed: ``(*outputs, profile, status)`` with ``profile`` a
    dict of the group's wall-clock ``start``/``end`` (``time.time()``), its process id, per key
    prefix ``[tasks, seconds]``, and the sizes (``dask.sizeof``) of its inputs and outputs --
    what :mod:`daskray.report` draws and :func:`daskray.tune` learns task durations from."""
    from dask.sizeof import sizeof

    prefixes: dict = {}
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        keys: list = []
        start = time.time()
        result = _execute(spec, values, prefixes, (log, keys))
        end = time.time()
    outs = (result,) if _returns(spec) == 1 else result
    in_layout, out_layout = _layouts(spec)
    profile = {
        "start": start,
        "end": end,
        "pid": os.getpid(),
        "prefixes": prefixes,
        # one entry per key, in the order of in_keys and out_keys, batches unpacked
        "in_bytes": [sizeof(v) for v in _unbatched(values, in_layout, len(spec[1]))],
        "out_bytes": [sizeof(v) for v in _unbatched(outs, out_layout, len(spec[2]))],
    }
    return (*outs, profile, _status(log, keys))


def _layouts(spec: tuple) -> tuple:
    """A spec's ``(in_layout, out_layout)``: None for one key each (a 3-tuple spec has none)."""
    return spec[3:] or (None, None)


def _returns(spec: tuple) -> int:
    """How many values a group returns: one per output key, or per entry of its layout."""
    out_layout = _layouts(spec)[1]
    return len(spec[2]) if out_layout is None else len(out_layout)


def _unbatched(values: Any, layout: list | None, n: int) -> list:
    """The ``n`` values of the keys, in key order, from ``values`` laid out as ``layout``."""
    if layout is None:
        return list(values)
    flat: list = [None] * n
    for v, where in zip(values, layout):
        if type(where) is int:
            flat[where] = v
        else:
            for p, x in zip(where, v):
                flat[p] = x
    return flat


#: the warnings registry of re-emitted warnings (what a module's ``__warningregistry__`` is to
#: its own): the ``default`` and ``once`` actions show a re-emitted warning once, as there
_REEMITTED: dict = {}


def reemit(status: list | None, seen: set) -> None:
    """Re-emit the warnings a group recorded (its ``status``) through
    ``warnings.warn_explicit``, with their category, message (naming the dask key), file and
    line, so this process's filters decide what is shown; once per category, message and key
    prefix (``seen`` holds those already emitted)."""
    for key, category, message, filename, lineno in status or ():
        once = (category, message, key_split(key))
        if once in seen:
            continue
        seen.add(once)
        warnings.warn_explicit(
            f"{message} [daskray: warned by the task for key {key!r}]",
            category,
            filename,
            lineno,
            registry=_REEMITTED,
        )


def _status(log: list, keys: list) -> list | None:
    """The recorded warnings as plain data (their category travels by reference)."""
    if not log:
        return None
    return [(key, w.category, str(w.message), w.filename, w.lineno) for key, w in zip(keys, log)]


def _execute(spec: tuple, values: tuple, prefixes: dict | None, record: tuple | None = None):
    """The loop of :func:`run_group`; with ``prefixes``, also time each task into it; with
    ``record`` (a ``catch_warnings`` log and a list), name the key of each warning logged."""
    tasks, in_keys, out_keys = spec[:3]
    in_layout, out_layout = _layouts(spec)
    if in_layout is not None:
        values = _unbatched(values, in_layout, len(in_keys))
    cache = dict(zip(in_keys, values))
    log, keys = record if record is not None else (None, None)
    if len(tasks) == 1 and prefixes is None:
        task = tasks[0]
        key = task[0] if type(task) is tuple else task.key
        try:
            result = _call(task, cache, cache)
        except Exception as e:
            _annotate(e, key)
            raise
        cache[key] = result
        if log:
            keys.extend([key] * len(log))
    else:
        clock = time.perf_counter
        remaining: dict = {}
        every = [_dependencies(task) for task in tasks]
        for deps in every:
            for d in deps:
                remaining[d] = remaining.get(d, 0) + 1
        outs = set(out_keys)
        for task, deps in zip(tasks, every):
            key = task[0] if type(task) is tuple else task.key
            t0 = clock() if prefixes is not None else 0.0
            try:
                cache[key] = _call(task, cache)
            except Exception as e:
                _annotate(e, key)
                raise
            if prefixes is not None:
                tally = prefixes.setdefault(key_split(key), [0, 0.0])
                tally[0] += 1
                tally[1] += clock() - t0
            if log and len(log) > len(keys):
                keys.extend([key] * (len(log) - len(keys)))
            for d in deps:
                r = remaining[d] - 1
                if r == 0 and d not in outs:
                    del cache[d]
                else:
                    remaining[d] = r
    if out_layout is not None:
        outs = [
            cache[out_keys[w]] if type(w) is int else tuple([cache[out_keys[p]] for p in w])
            for w in out_layout
        ]
        return outs[0] if len(outs) == 1 else tuple(outs)
    if len(out_keys) == 1:
        return cache[out_keys[0]]
    return tuple([cache[k] for k in out_keys])


def lower(tasks: list) -> list:
    """``tasks`` as they travel to a worker: each plain ``Task`` lowered to ``(key, func, args,
    refs)`` (see the module docstring), a fused blockwise task to ``(key, run_subgraph, (inner
    tasks lowered, outkey, inkeys, *args), refs)``, every other node as it is.

    >>> from dask._task_spec import Task, TaskRef
    >>> lower([Task("b", max, TaskRef("a"), 3, TaskRef("a"))])
    [('b', <built-in function max>, ('a', 3, 'a'), (0, 2))]
    """
    out = []
    for t in tasks:
        if type(t) is not Task or t.kwargs:
            out.append(t)
            continue
        func, args = t.func, t.args
        if func is execute_subgraph:  # fused blockwise: its inner tasks lowered too
            if type(args[0]) is not dict:
                out.append(t)
                continue
            inner = args[0]
            func = run_subgraph
            args = (dict(zip(inner, lower(list(inner.values())))), *args[1:])
        refs = []
        for p, a in enumerate(args):
            if type(a) is TaskRef:
                refs.append(p)
            elif isinstance(a, (GraphNode, TaskRef)):
                break  # a nested node (or a ref of another kind): the task as it is
        else:
            if refs:
                plain = list(args)
                for p in refs:
                    plain[p] = args[p].key
                out.append((t.key, func, tuple(plain), tuple(refs)))
            else:
                out.append((t.key, func, args, ()))
            continue
        out.append(t)
    return out


def task_key(task: Any) -> Any:
    """The key of a task as it travels: a node's ``key``, a lowered tuple's first item."""
    return task[0] if type(task) is tuple else task.key


def _dependencies(task: Any) -> Any:
    """The keys a task (a node, or a lowered tuple) reads, each once."""
    if type(task) is not tuple:
        return task.dependencies
    _, _, args, refs = task
    if len(refs) < 2:
        return [args[p] for p in refs]
    return {args[p] for p in refs}


def _call(task: Any, cache: dict, values: dict | None = None) -> Any:
    """Run one task on the group's ``cache``: ``values`` is what it is called with when given
    (a mapping of just its inputs), else a mapping of its dependencies is made for it."""
    if type(task) is tuple:  # lowered: Task.__call__ on plain arguments and refs
        _, func, args, refs = task
        if refs:
            args = list(args)
            for p in refs:
                args[p] = cache[args[p]]
        return func(*args)
    if type(task) is Task and task.func is execute_subgraph:
        return _subgraph(task, cache)
    return task(values if values is not None else {d: cache[d] for d in task.dependencies})


def _subgraph(task: Task, values: dict) -> Any:
    """Run a task that dask's blockwise fusion made (``Task.fuse``: ``_execute_subgraph(inner,
    outkey, inkeys, *refs)``) as dask would, minus the cost: dask's ``execute_graph`` orders
    the few inner tasks with ``dask.order`` at every call (about 0.1 ms, most of a small
    chunk's time); the inner graph has one leaf, ``outkey``, of which every other inner task is
    an ancestor, so a depth-first walk from it runs exactly the same tasks."""
    inner, outkey, inkeys, *args = task.args
    if task.kwargs or type(inner) is not dict:
        return task({d: values[d] for d in task.dependencies})  # not fuse's shape: dask's way
    cache = {}
    for k, a in zip(inkeys, args):  # evaluated as Task.__call__ evaluates an argument
        if isinstance(a, TaskRef):
            cache[k] = values[a.key]
        elif isinstance(a, GraphNode):
            cache[k] = a({d: values[d] for d in a.dependencies})
        else:
            cache[k] = a
    return _walk(inner, outkey, cache)


def run_subgraph(inner: dict, outkey: Any, inkeys: Any, *args: Any) -> Any:
    """A fused blockwise task as it travels lowered (:func:`lower`): ``inner`` its lowered
    tasks, ``args`` the values of ``inkeys``; run as :func:`_subgraph` runs it."""
    return _walk(inner, outkey, dict(zip(inkeys, args)))


def _walk(inner: dict, outkey: Any, cache: dict) -> Any:
    """Run the inner tasks ``outkey`` needs, depth first from it, on ``cache`` (which holds
    the subgraph's inputs)."""
    order = []
    stack = [(outkey, False)]
    while stack:
        key, done = stack.pop()
        if done:
            order.append(key)
        elif key not in cache:
            cache[key] = None  # visited
            stack.append((key, True))
            for d in _dependencies(inner[key]):
                if d not in cache:
                    stack.append((d, False))
    for key in order:
        cache[key] = _call(inner[key], cache)
    return cache[outkey]


def same(value: Any) -> Any:
    """Identity: re-keys a node stored under a key other than its own (see ``ingest``)."""
    return value


def _annotate(exc: BaseException, key: Any) -> None:
    """Name the dask key in the exception (kept when Ray pickles it back to the driver)."""
    note = f"daskray: raised by the task for key {key!r}"
    notes = getattr(exc, "__notes__", ())
    if note not in notes:
        exc.add_note(note)
