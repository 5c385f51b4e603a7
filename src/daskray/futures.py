"""Persisted values: dask's third-party-future protocol, backed by Ray ObjectRefs.

``dask.persist(x, scheduler=daskray.get)`` rebuilds ``x`` around one :class:`RayFuture` per
key. dask recognises them (``__dask_future__ = True``): its optimizers turn them into
references to their keys, so a later graph built on the persisted collection *depends on keys it
does not contain*. :func:`persisted` hands ingest, for those keys, the ObjectRefs to pass to
the Ray tasks instead. The registry holds futures weakly: a value lives in Ray's object store
exactly as long as some persisted collection still holds its future.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

_registry: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_lock = threading.Lock()


class RayFuture:
    """The persisted value of one dask key: its Ray ObjectRef (``.ref``)."""

    __dask_future__ = True
    __slots__ = ("key", "ref", "__weakref__")

    def __init__(self, key: Any, ref: Any) -> None:
        self.key = key
        self.ref = ref
        with _lock:
            _registry[key] = self

    def __repr__(self) -> str:
        return f"<RayFuture {self.key!r}>"

    def __dask_tokenize__(self):
        return ("daskray.RayFuture", self.key)

    def __reduce__(self):
        raise TypeError(
            f"a daskray persisted value ({self.key!r}) cannot be pickled: it refers to an "
            "object in this driver's Ray session; compute it instead"
        )


def persisted() -> dict:
    """Key -> ObjectRef of every persisted value still held by some collection."""
    with _lock:
        return {k: f.ref for k, f in _registry.items()}
