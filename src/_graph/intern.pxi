# Interning (see the module docstring): keys -> dense ids, and the dependency CSR.
# Included by _core.pyx; the twin is ``intern`` in _pure.py.

cdef extern from *:
    """
    /* Reuse the hashes that a dict or set already stores for its keys: on 10^6 keys (tuples,
       whose hashes Python never caches) rehashing costs more than the rest of interning.
       These calls are CPython's own; 3.13 no longer exports the first three, so there the
       plain path runs. */
    #if PY_VERSION_HEX < 0x030D0000
    #define DR_KNOWN_HASH 1
    static int dr_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return _PyDict_Next(d, pos, key, NULL, hash);
    }
    static int dr_set_next(PyObject *s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return _PySet_NextEntry(s, pos, key, hash);
    }
    static int dr_dict_set(PyObject *d, PyObject *key, PyObject *value, Py_hash_t hash) {
        return _PyDict_SetItem_KnownHash(d, key, value, hash);
    }
    #else
    #define DR_KNOWN_HASH 0
    static int dr_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return 0;
    }
    static int dr_set_next(PyObject *s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return 0;
    }
    static int dr_dict_set(PyObject *d, PyObject *key, PyObject *value, Py_hash_t hash) {
        return PyDict_SetItem(d, key, value);
    }
    #endif
    """
    bint DR_KNOWN_HASH
    int dr_dict_next(object d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash)
    int dr_set_next(object s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash)
    int dr_dict_set(object d, object key, object value, Py_hash_t hash) except -1
    PyObject *_PyDict_GetItem_KnownHash(object d, PyObject *key, Py_hash_t hash) except? NULL
    dict _PyDict_NewPresized(Py_ssize_t minused)

cdef void _sort_row(i64 *a, Py_ssize_t n) noexcept nogil:
    # insertion sort: dask rows are short (a handful of dependencies)
    cdef Py_ssize_t i, j
    cdef i64 x
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


cdef dict _known_hash_index(list names, object source):
    # key -> id from ``source``'s stored hashes; None unless its keys are ``names``, in order
    cdef Py_ssize_t n = len(names)
    if type(source) is not dict or len(<dict> source) != n:
        return None
    cdef dict index = _PyDict_NewPresized(n)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i = 0
    cdef PyObject *kp
    cdef Py_hash_t h
    while dr_dict_next(source, &pos, &kp, &h):
        if kp != <PyObject *> names[i]:
            return None
        dr_dict_set(index, <object> kp, i, h)
        i += 1
    return index


cdef void _missing(dict missing, object d, Py_ssize_t i) except *:
    # remember that node i needs the absent key d (once per node)
    cdef list who = missing.setdefault(d, [])
    if not who or who[len(who) - 1] != i:
        who.append(i)


def intern(list names, deps, source=None):
    """Intern keys to dense ids and build the dependency CSR.

    Parameters
    ----------
    names : list
        ``names[i]`` is the key of node ``i``.
    deps : sequence
        ``deps[i]`` iterates the keys node ``i`` depends on.
    source : dict, optional
        A dict whose keys are ``names``, in the same order (the graph mapping they came from):
        its stored hashes may be reused instead of hashing every key again. The result is the
        same without it.

    Returns
    -------
    (index, indptr, indices)
        ``index`` maps key -> id; node ``i`` depends on ``indices[indptr[i]:indptr[i+1]]``
        (sorted, without repeats).

    Examples
    --------
    >>> index, indptr, indices = intern(["x", "y"], [(), ("x",)])
    >>> index, list(indptr), list(indices)
    ({'x': 0, 'y': 1}, [0, 0, 1], [0])
    """
    cdef Py_ssize_t n = len(names)
    cdef Py_ssize_t i, k, r, e, start
    cdef dict index
    cdef dict missing = {}
    cdef object key, d
    cdef PyObject *j
    cdef list who
    cdef list deps_l = deps if type(deps) is list else list(deps)
    if len(deps_l) != n:
        raise ValueError(f"names and deps differ in length: {n} != {len(deps_l)}")
    index = _known_hash_index(names, source) if DR_KNOWN_HASH and source is not None else None
    if index is None:
        try:
            index = dict(zip(names, range(n)))
        except TypeError:
            index = {}
            for i in range(n):
                key = names[i]
                try:
                    index[key] = i
                except TypeError:
                    raise invalid_key_error(key, "it is not hashable") from None
    cdef Py_ssize_t total = 0
    cdef object row
    for i in range(n):
        row = deps_l[i]
        try:
            total += len(row)
        except TypeError:  # an iterator: take it as a tuple (in a copy of the caller's list)
            if deps_l is deps:
                deps_l = list(deps_l)
            deps_l[i] = row = tuple(row)
            total += len(row)
    cdef array indptr = _new(n + 1)
    cdef array indices = _new(total, False)
    cdef i64 *ind = indices.data.as_longlongs
    cdef Py_ssize_t spos
    cdef PyObject *kp
    cdef Py_hash_t h
    e = 0
    for i in range(n):
        start = e
        row = deps_l[i]
        if DR_KNOWN_HASH and (type(row) is frozenset or type(row) is set):
            spos = 0
            while dr_set_next(row, &spos, &kp, &h):  # a set stores its keys' hashes
                j = _PyDict_GetItem_KnownHash(index, kp, h)
                if j == NULL:
                    _missing(missing, <object> kp, i)
                else:
                    ind[e] = PyLong_AsLongLong(<object> j)
                    e += 1
        else:
            for d in row:
                try:
                    j = PyDict_GetItemWithError(index, d)
                except TypeError:
                    raise invalid_key_error(
                        d, f"it is not hashable (a dependency of {names[i]!r})"
                    ) from None
                if j == NULL:
                    _missing(missing, d, i)
                else:
                    ind[e] = PyLong_AsLongLong(<object> j)
                    e += 1
        _sort_row(ind + start, e - start)
        # drop repeats in place
        if e - start > 1:
            k = start + 1
            for r in range(start + 1, e):
                if ind[r] != ind[k - 1]:
                    ind[k] = ind[r]
                    k += 1
            e = k
        indptr.data.as_longlongs[i + 1] = e
    if missing:
        key, who = next(iter(missing.items()))
        raise missing_dependency_error(key, [names[r] for r in who])
    resize(indices, e)
    return index, indptr, indices
