"""What runs inside a Ray task (and in-process in debug mode): one fused group of dask tasks.

A group arrives as ``(tasks, in_keys, out_keys)`` -- dask ``GraphNode`` objects in execution
order, the keys of the values passed as further arguments (Ray has already resolved the
ObjectRefs into values), and the keys to return, one value each (``num_returns``). Nothing here
imports Ray, so the same function runs a plan without it.

Each task is called with only its own dependencies (``GraphNode.__call__`` checks its values
against the mapping it is given, which would cost the size of the whole group per task), and
a value is dropped as soon as the last task of the group that needs it has run, unless it is an
output: a group of 2,000 fused chunk operations holds no more than dask's own scheduler would.
"""

from __future__ import annotations

from typing import Any


def run_group(spec: tuple, *values: Any) -> Any:
    """Run a fused group; return its single output, or a tuple of its outputs."""
    tasks, in_keys, out_keys = spec
    cache = dict(zip(in_keys, values))
    if len(tasks) == 1:
        task = tasks[0]
        try:
            result = task(cache)
        except Exception as e:
            _annotate(e, task.key)
            raise
        cache[task.key] = result
    else:
        remaining: dict = {}
        for task in tasks:
            for d in task.dependencies:
                remaining[d] = remaining.get(d, 0) + 1
        outs = set(out_keys)
        for task in tasks:
            deps = task.dependencies
            try:
                cache[task.key] = task({d: cache[d] for d in deps})
            except Exception as e:
                _annotate(e, task.key)
                raise
            for d in deps:
                r = remaining[d] - 1
                if r == 0 and d not in outs:
                    del cache[d]
                else:
                    remaining[d] = r
    if len(out_keys) == 1:
        return cache[out_keys[0]]
    return tuple([cache[k] for k in out_keys])


def same(value: Any) -> Any:
    """Identity: re-keys a node stored under a key other than its own (see ``ingest``)."""
    return value


def _annotate(exc: BaseException, key: Any) -> None:
    """Name the dask key in the exception (kept when Ray pickles it back to the driver)."""
    note = f"daskray: raised by the task for key {key!r}"
    notes = getattr(exc, "__notes__", ())
    if note not in notes:
        exc.add_note(note)
