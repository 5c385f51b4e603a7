"""Persisted values: dask's future protocol, backed by Ray ObjectRefs.

``dask.persist(x, scheduler=daskray.get)`` rebuilds ``x`` around one :class:`RayFuture` per
key. dask recognises them (``__dask_future__ = True``): its optimizers turn them into
references to their keys, so a later graph built on the persisted collection *depends on keys it
does not contain*. :func:`persisted` hands ingest, for those keys, the ObjectRefs to pass to
the Ray tasks instead. The registry holds futures weakly: a value lives in Ray's object store
exactly as long as some persisted collection still holds its future.

What dask and the libraries built on it call on a future (surveyed in dask, xarray, dask-ml
and dask-image): ``key`` and ``result()`` (``dask.array.utils.assert_eq`` reads each persisted
chunk with it), ``__dask_future__`` and ``__dask_tokenize__``; ``copy.deepcopy`` (scikit-learn's
``clone`` of an estimator holding a persisted collection) and pickling. The rest of the
``concurrent.futures`` / ``distributed.Future`` surface -- ``done()``, ``status``,
``exception()``, ``traceback()``, ``cancel()``, ``release()``, ``add_done_callback()``,
``await`` -- works as there.

Pickling: a future pickles as its key and ObjectRef, as a ``distributed.Future`` pickles as its
key. Inside Ray's own serialization (a task argument, ``ray.put``: a dask-ml estimator holding
a persisted collection, shipped to a Ray task) Ray tracks the ref, and the value lives while
any copy does. Pickled out-of-band (``pickle.dumps`` in the driver) Ray pins the value for the
rest of the driver's Ray session (Ray's rule for refs that leave its sight); unpickled in any
process of the same Ray cluster, the future works; in another cluster ``result()`` fails.

This module talks to Ray (``ray.get``, ``ray.wait``, ``ray.cancel``) for the futures' methods
only, importing it when one is called, and is listed as such in ARCHITECTURE.md.
"""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import CancelledError
from typing import Any

from .results import writeable

#: key -> weak references to the live futures of that key, newest last. Several can live at
#: once (a collection persisted twice, a future unpickled next to its original); the newest
#: live one answers for the key, and a key is forgotten with the last of them.
_registry: dict = {}
_lock = threading.RLock()  # a weakref callback may run during a GC while it is held


class _Entry(weakref.ref):
    """A weak reference to a future that remembers its key (for :func:`_forget`)."""

    __slots__ = ("key",)

    def __init__(self, future: RayFuture, callback: Any) -> None:
        super().__init__(future, callback)
        self.key = future.key


def _forget(entry: _Entry) -> None:
    with _lock:
        entries = _registry.get(entry.key)
        if entries is not None:
            entries[:] = [e for e in entries if e is not entry and e() is not None]
            if not entries:
                del _registry[entry.key]


def _register(future: RayFuture) -> None:
    with _lock:
        _registry.setdefault(future.key, []).append(_Entry(future, _forget))


def _current(key: Any) -> RayFuture | None:
    """The newest live future of ``key``, if any."""
    with _lock:
        for entry in reversed(_registry.get(key, ())):
            f = entry()
            if f is not None and f.ref is not None:
                return f
    return None


def future(key: Any, ref: Any) -> RayFuture:
    """The future of ``key`` holding ``ref``: the live one if there is one already (a
    persisted collection persisted again), else a new one."""
    current = _current(key)
    if current is not None and current.ref == ref:
        return current
    return RayFuture(key, ref)


#: a finished value is fetched to tell an error from a result only up to this size (a failed
#: task's object is its pickled exception, a few KiB; a large object is a value)
_ERROR_BYTES = 100 * 1024


class RayFuture:
    """The persisted value of one dask key: its Ray ObjectRef (``.ref``).

    ``status`` is ``'pending'``, ``'finished'``, ``'error'`` or ``'cancelled'`` (after
    :meth:`cancel` or :meth:`release`).
    """

    __dask_future__ = True
    __slots__ = ("key", "ref", "_status", "__weakref__")

    def __init__(self, key: Any, ref: Any) -> None:
        self.key = key
        self.ref = ref
        self._status: str | None = None  # once known for good: finished, error, cancelled
        _register(self)

    def __repr__(self) -> str:
        return f"<RayFuture {self.key!r}{': ' + self._status if self._status else ''}>"

    def __dask_tokenize__(self):
        # with the ref: dask-expr reuses a live expression of equal token, which would hand a
        # collection persisted a second time the first one's futures
        ref = self.ref.hex() if self.ref is not None else None
        return ("daskray.RayFuture", self.key, ref)

    # -- concurrent.futures / distributed.Future ------------------------------------------

    def result(self, timeout: float | None = None) -> Any:
        """The value (fetched from Ray's object store: ``ray.get``), writeable; raises the
        task's error, ``TimeoutError`` after ``timeout`` seconds, ``CancelledError`` when
        cancelled or released."""
        import ray

        ref = self._live()
        return writeable(ray.get(ref, timeout=timeout))

    def done(self) -> bool:
        """Whether the value is computed (or failed, or the future was cancelled)."""
        import ray

        if self._status is not None:
            return True
        ready, _ = ray.wait([self.ref], timeout=0, fetch_local=False)
        return bool(ready)

    @property
    def status(self) -> str:
        """``'pending'``, ``'finished'``, ``'error'`` or ``'cancelled'``."""
        if self._status is None and self.done():
            self._status = "error" if self._error() is not None else "finished"
        return self._status or "pending"

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's error (None if it succeeded), waiting up to ``timeout`` seconds."""
        import ray

        ref = self._live()
        ready, _ = ray.wait([ref], timeout=timeout, fetch_local=False)
        if not ready:
            raise TimeoutError(f"{self!r} is not done after {timeout} s")
        return self._error()

    def traceback(self, timeout: float | None = None) -> Any:
        """The traceback of the task's error (None if it succeeded)."""
        error = self.exception(timeout)
        return error.__traceback__ if error is not None else None

    def cancel(self) -> bool:
        """Cancel the computation if it still runs and drop the value; ``result()`` then
        raises ``CancelledError``."""
        import ray

        if self.ref is not None and self._status is None:
            try:
                ray.cancel(self.ref, force=False, recursive=True)
            except Exception:  # noqa: BLE001 - finished already, or Ray going down
                pass
        self._drop()
        return True

    def release(self) -> None:
        """Drop this future's hold on the value (Ray frees it when nothing else holds it)."""
        self._drop()

    def cancelled(self) -> bool:
        return self._status == "cancelled"

    def add_done_callback(self, fn: Any) -> None:
        """Call ``fn(self)`` (in a Ray thread) once the value is computed or failed."""
        ref = self._live()
        ref.future().add_done_callback(lambda _: fn(self))

    def __await__(self):
        return self._result_async().__await__()

    async def _result_async(self) -> Any:
        value = await self._live()  # an ObjectRef is awaitable
        return writeable(value)

    # -- copying, pickling ---------------------------------------------------------------

    def __copy__(self) -> RayFuture:
        return self  # a handle: copies share the value, like the ObjectRef itself

    def __deepcopy__(self, memo: dict) -> RayFuture:
        return self

    def __reduce__(self):
        if self.ref is None:
            raise TypeError(f"{self!r} was {self._status}: there is no value to pickle")
        return _rebuild, (self.key, self.ref)

    # -- internals -----------------------------------------------------------------------

    def _live(self) -> Any:
        if self.ref is None:
            raise CancelledError(
                f"the persisted value of {self.key!r} was {self._status}; persist it again"
            )
        return self.ref

    def _error(self) -> BaseException | None:
        """The error held by the finished ref, or None (a large object is a value)."""
        import ray
        from ray.experimental import get_local_object_locations

        ref = self._live()
        try:
            size = (get_local_object_locations([ref]).get(ref) or {}).get("object_size")
        except Exception:  # noqa: BLE001 - an API that moved: look at the object itself
            size = None
        if size is not None and size > _ERROR_BYTES:
            return None
        try:
            ray.get(ref, timeout=0)
        except Exception as e:  # noqa: BLE001 - the task's error is the answer
            return e
        return None

    def _drop(self) -> None:
        self.ref = None
        self._status = "cancelled"


def _rebuild(key: Any, ref: Any) -> RayFuture:
    """Unpickle a :class:`RayFuture`: the live future of ``key`` holding ``ref`` if there is
    one in this process, else a new one."""
    return future(key, ref)


def persisted() -> dict:
    """Key -> ObjectRef of every persisted value still held by some collection (the newest
    live future's, where several hold one key)."""
    with _lock:
        keys = list(_registry)
    out = {}
    for k in keys:
        f = _current(k)
        if f is not None:
            out[k] = f.ref
    return out
