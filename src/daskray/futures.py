"""Persisted values: dask's third-party-future protocol, backed by Ray ObjectRefs.

``dask.persist(x, scheduler=daskray.get)`` rebuilds ``x`` around one :class:`RayFuture` per
key. dask recognises them (``__dask_future__ = True``): its optimizers turn them into
references to their keys, so a later graph built on the persisted collection *depends on keys it
does not contain*. :func:`persisted` hands ingest, for those keys, the ObjectRefs to pass to
the Ray tasks instead. The registry holds futures weakly: a value lives in Ray's object store
exactly as long as some persisted collection still holds its future.

Persisting the same collection twice makes two futures per key (equal values, different
refs). Each tokenizes with its ref, so dask-expr, which reuses a live expression of the same
token, never hands the second collection the first one's futures; and the registry keeps every
live future of a key, so dropping either collection leaves the other's key reachable.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_registry: dict = {}  # key -> weakref.WeakSet of its live futures
_lock = threading.Lock()


class RayFuture:
    """The persisted value of one dask key: its Ray ObjectRef (``.ref``)."""

    __dask_future__ = True
    __slots__ = ("key", "ref", "__weakref__")

    def __init__(self, key: Any, ref: Any) -> None:
        self.key = key
        self.ref = ref
        with _lock:
            held = _registry.get(key)
            if held is None:
                held = _registry[key] = weakref.WeakSet()
            held.add(self)

    def __repr__(self) -> str:
        return f"<RayFuture {self.key!r}>"

    def __dask_tokenize__(self):
        return ("daskray.RayFuture", self.key, self.ref.hex())

    def __reduce__(self):
        raise TypeError(
            f"a daskray persisted value ({self.key!r}) cannot be pickled: it refers to an "
            "object in this driver's Ray session; compute it instead"
        )


def persisted() -> dict:
    """Key -> ObjectRef of every persisted value still held by some collection."""
    out = {}
    with _lock:
        for key, held in list(_registry.items()):
            for future in held:
                out[key] = future.ref
                break
            else:
                del _registry[key]
    return out


def futures() -> list:
    """Every live :class:`RayFuture` (for tests and tools)."""
    with _lock:
        return [f for held in _registry.values() for f in held]
