"""What a compute hands back: ordinary, writeable values, however nested.

``ray.get`` deserializes numpy arrays -- and the arrays inside pandas objects -- as zero-copy,
*read-only* views of Ray's object store. dask's own schedulers return ordinary mutable results
(``out["x"] += 1`` after ``compute`` works), and so does daskray: :func:`writeable` walks a
fetched value and replaces each read-only array or pandas object by a private copy (one memcpy),
wherever it sits:

* numpy arrays (masked and other subclasses too) and pandas Series / DataFrame / Index;
* inside lists and dicts (updated in place: a fetched container is the driver's own, fresh
  from deserialization) and tuples (rebuilt only when something inside changed; namedtuples
  keep their type), at any depth -- a delayed function's ``{"x": array, "df": frame}``, a
  bag's list of arrays.

An array that is writeable already (made in this process, or copied by pickle because it was
small) is returned as it is: nothing is copied twice. Values of other types (objects holding
arrays in their attributes) are left alone. Nothing here imports Ray.
"""

from __future__ import annotations

from typing import Any

#: types that never hold an array: returned at once
_ATOMS = frozenset((int, float, complex, bool, str, bytes, type(None)))


def writeable(value: Any) -> Any:
    """``value`` with every read-only numpy array or pandas object in it replaced by a
    writeable copy (see the module docstring).

    >>> import numpy as np
    >>> a = np.arange(3); a.flags.writeable = False
    >>> out = writeable({"x": a, "pair": (a, 1), "list": [a]})
    >>> out["x"].flags.writeable, out["pair"][0].flags.writeable, out["list"][0].flags.writeable
    (True, True, True)
    >>> b = np.arange(3)
    >>> writeable(b) is b
    True
    """
    t = type(value)
    if t in _ATOMS:
        return value
    if t is list:
        _in_place(value, range(len(value)))
        return value
    if t is dict:
        _in_place(value, list(value))
        return value
    if t is tuple:
        items = [writeable(v) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else tuple(items)
    mod = t.__module__
    if mod.startswith("numpy"):
        flags = getattr(value, "flags", None)
        if flags is not None and not flags.writeable:
            return value.copy()
        return value
    if mod.startswith("pandas"):
        return value.copy(deep=True) if _pandas_readonly(value) else value
    if isinstance(value, tuple):  # namedtuples and other tuple subclasses
        items = [writeable(v) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return t(*items) if hasattr(t, "_fields") else t(items)
    if isinstance(value, (list, dict)):
        _in_place(value, list(value) if isinstance(value, dict) else range(len(value)))
    return value


def _in_place(container: Any, keys: Any) -> None:
    for k in keys:
        v = container[k]
        if type(v) not in _ATOMS:
            w = writeable(v)
            if w is not v:
                container[k] = w


def _pandas_readonly(value: Any) -> bool:
    """Whether a pandas object's data is (partly) a read-only view."""
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
