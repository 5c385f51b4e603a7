# Interning (see the module docstring): keys -> dense ids, and the dependency CSR.
# Included by _core.pyx; the twin is ``intern`` in _pure.py.

cdef extern from *:
    """
    /* Reuse the hashes that a dict or set already stores for its keys: on 10^6 keys (tuples,
       whose hashes Python never caches) rehashing costs more than the rest of interning.
       These calls are CPython's own; 3.13 no longer exports them, so there the plain path
       runs. */
    #if PY_VERSION_HEX < 0x030D0000
    #define DR_KNOWN_HASH 1
    static int dr_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return _PyDict_Next(d, pos, key, NULL, hash);
    }
    static int dr_set_next(PyObject *s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return _PySet_NextEntry(s, pos, key, hash);
    }
    #else
    #define DR_KNOWN_HASH 0
    static int dr_dict_next(PyObject *d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return 0;
    }
    static int dr_set_next(PyObject *s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash) {
        return 0;
    }
    #endif
    """
    bint DR_KNOWN_HASH
    int dr_dict_next(object d, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash)
    int dr_set_next(object s, Py_ssize_t *pos, PyObject **key, Py_hash_t *hash)


cdef class KeyIndex:
    """``key -> id`` for the keys of an interned graph: a read-only mapping.

    A dict from keys to ids costs about 70 bytes a key on 64-bit CPython: a 24-byte entry, its
    share of the index table, and a 32-byte int object for every id past 256. Here each key
    costs one 8-byte slot of an open-addressing table (at most 3/4 full): the id + 1 in the low
    32 bits (0: empty) and 32 bits of the key's hash in the high ones, so that probing rarely
    touches a key that is not the one looked up. The keys themselves stay in ``names``; a
    probe follows CPython's dict (``i = 5 i + 1 + perturb``), which spreads keys whose hashes
    differ only in high bits (ints). Ids are made into ints only when asked for from Python.
    """
    cdef list names
    cdef uint64_t *slots
    cdef size_t mask
    cdef Py_ssize_t size

    def __cinit__(self, list names):
        cdef size_t cap = 8
        if len(names) >= 0xFFFFFFFF:
            raise OverflowError(f"a graph of {len(names)} keys is more than ids can number")
        while cap * 3 < <size_t> len(names) * 4:
            cap *= 2
        self.slots = <uint64_t *> PyMem_Calloc(cap, sizeof(uint64_t))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = cap - 1
        self.names = names
        self.size = 0

    def __dealloc__(self):
        PyMem_Free(self.slots)

    cdef Py_ssize_t find(self, PyObject *key, Py_hash_t h, size_t *at) except -2:
        # the id of key (hash h), or -1; *at: its slot, or the empty slot that ends the probe
        cdef size_t perturb = <size_t> h
        cdef size_t i = perturb & self.mask
        cdef uint64_t s
        cdef uint64_t frag = (<uint64_t> h ^ (<uint64_t> h >> 32)) & 0xFFFFFFFFu
        cdef Py_ssize_t j
        cdef PyObject *other
        while True:
            s = self.slots[i]
            if s == 0:
                at[0] = i
                return -1
            if s >> 32 == frag:
                j = <Py_ssize_t> (s & 0xFFFFFFFFu) - 1
                other = PyList_GET_ITEM(self.names, j)
                if other == key or PyObject_RichCompareBool(<object> other, <object> key, Py_EQ):
                    at[0] = i
                    return j
            perturb >>= 5
            i = (i * 5 + perturb + 1) & self.mask

    cdef int add(self, Py_ssize_t j, Py_hash_t h) except -1:
        # key names[j] (hash h) -> j; a key equal to an earlier one takes its place, as in dict
        cdef size_t at
        if self.find(PyList_GET_ITEM(self.names, j), h, &at) == -1:
            self.size += 1
        self.slots[at] = ((<uint64_t> h ^ (<uint64_t> h >> 32)) << 32) | <uint64_t> (j + 1)
        return 0

    cdef Py_ssize_t lookup(self, object key) except -2:
        cdef size_t at
        return self.find(<PyObject *> key, hash(key), &at)

    def __getitem__(self, key):
        cdef Py_ssize_t j = self.lookup(key)
        if j == -1:
            raise KeyError(key)
        return j

    def get(self, key, default=None):
        cdef Py_ssize_t j = self.lookup(key)
        return default if j == -1 else j

    def __contains__(self, key):
        return self.lookup(key) != -1

    def __len__(self):
        return self.size

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        return [k for j, k in enumerate(self.names) if self.lookup(k) == j]

    def values(self):
        return [self.lookup(k) for k in self.keys()]

    def items(self):
        return [(k, self.lookup(k)) for k in self.keys()]

    def __eq__(self, other):
        if not isinstance(other, (dict, KeyIndex)):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def __repr__(self):
        return f"KeyIndex({dict(self.items())!r})"

    def __reduce__(self):
        return (_key_index, (self.names,))


def _key_index(list names):
    """A :class:`KeyIndex` of ``names`` (unpickling)."""
    cdef KeyIndex index = KeyIndex(names)
    cdef Py_ssize_t i
    for i in range(len(names)):
        index.add(i, hash(names[i]))
    return index


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


cdef KeyIndex _index(list names, object source):
    # key -> id; the hashes come from ``source`` (a dict of ``names``, in order) when it has them
    cdef Py_ssize_t n = len(names)
    cdef KeyIndex index = KeyIndex(names)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t i = 0
    cdef PyObject *kp
    cdef Py_hash_t h
    if DR_KNOWN_HASH and type(source) is dict and len(<dict> source) == n:
        while dr_dict_next(source, &pos, &kp, &h):
            if kp != PyList_GET_ITEM(names, i):
                break
            index.add(i, h)
            i += 1
        if i == n:
            return index
    for i in range(i, n):
        key = names[i]
        try:
            h = hash(key)
        except TypeError:
            raise invalid_key_error(key, "it is not hashable") from None
        index.add(i, h)
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
        ``index`` maps key -> id (a read-only mapping); node ``i`` depends on
        ``indices[indptr[i]:indptr[i+1]]`` (sorted, without repeats).

    Examples
    --------
    >>> index, indptr, indices = intern(["x", "y"], [(), ("x",)])
    >>> dict(index), list(indptr), list(indices)
    ({'x': 0, 'y': 1}, [0, 0, 1], [0])
    """
    cdef Py_ssize_t n = len(names)
    cdef Py_ssize_t i, k, r, e, start, j
    cdef size_t at
    cdef dict missing = {}
    cdef object d
    cdef list who
    cdef list deps_l = deps if type(deps) is list else list(deps)
    if len(deps_l) != n:
        raise ValueError(f"names and deps differ in length: {n} != {len(deps_l)}")
    cdef KeyIndex index = _index(names, source)
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
                j = index.find(kp, h, &at)
                if j == -1:
                    _missing(missing, <object> kp, i)
                else:
                    ind[e] = j
                    e += 1
        else:
            for d in row:
                try:
                    h = hash(d)
                except TypeError:
                    raise invalid_key_error(
                        d, f"it is not hashable (a dependency of {names[i]!r})"
                    ) from None
                j = index.find(<PyObject *> d, h, &at)
                if j == -1:
                    _missing(missing, d, i)
                else:
                    ind[e] = j
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
