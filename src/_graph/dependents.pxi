# Dependents (see the module docstring) and the one CSR transpose. Included by _core.pyx; the
# twins are ``_transpose``, ``transpose`` and ``_dependents`` in _pure.py.


cdef _Buf _transpose(i64 *ptr, i64 *ind, i64 *rows, Py_ssize_t nrows, i64 *remap, i64 *tptr,
                     Py_ssize_t nout):
    """The one CSR transpose: for every row ``r`` of ``rows`` (in that order) and every entry
    ``c`` of row ``r``, an entry ``r`` in row ``c`` -- both mapped through ``remap`` when it is
    given (node -> group), dropping the entries that map a row onto itself. Fills ``tptr``
    (``nout + 1`` zeros) and returns the entries, each row's in the order of ``rows``."""
    cdef Py_ssize_t i
    cdef i64 r, s, t, p
    for i in range(nrows):
        r = rows[i]
        s = r if remap == NULL else remap[r]
        for p in range(ptr[r], ptr[r + 1]):
            t = ind[p] if remap == NULL else remap[ind[p]]
            if remap == NULL or t != s:
                tptr[t + 1] += 1
    for i in range(nout):
        tptr[i + 1] += tptr[i]
    cdef _Buf fill_b = _Buf(nout, 0)
    cdef i64 *fill = fill_b.p
    for i in range(nout):
        fill[i] = tptr[i]
    cdef _Buf tind = _Buf(tptr[nout], 0)
    for i in range(nrows):
        r = rows[i]
        s = r if remap == NULL else remap[r]
        for p in range(ptr[r], ptr[r + 1]):
            t = ind[p] if remap == NULL else remap[ind[p]]
            if remap == NULL or t != s:
                tind.p[fill[t]] = s
                fill[t] += 1
    return tind


def transpose(indptr, indices, rows=None):
    """The reverse of a dependency CSR: node ``i``'s dependents.

    Parameters
    ----------
    indptr, indices : array
        A CSR as :func:`intern` returns it: node ``i`` depends on
        ``indices[indptr[i]:indptr[i+1]]``.
    rows : iterable of int, optional
        Only the dependencies of these nodes count, in this order (default: every node, in
        id order).

    Returns
    -------
    (dptr, dependents)
        Node ``i`` is depended on by ``dependents[dptr[i]:dptr[i+1]]``, in the order of
        ``rows``.

    Examples
    --------
    >>> dptr, dependents = transpose([0, 0, 1, 2], [0, 0])
    >>> list(dptr), list(dependents)
    ([0, 2, 2, 2], [1, 2])
    """
    cdef array ptr_a = per_node(indptr, len(indptr), "indptr")
    cdef array ind_a = per_node(indices, len(indices), "indices")
    cdef Py_ssize_t n = len(ptr_a) - 1
    cdef Py_ssize_t i
    cdef array rows_a
    if rows is None:
        rows_a = _new(n, False)
        for i in range(n):
            rows_a.data.as_longlongs[i] = i
    else:
        rows_a = array("q", rows)
        for i in range(len(rows_a)):
            if not 0 <= rows_a.data.as_longlongs[i] < n:
                raise IndexError(f"row id {rows_a[i]} out of range for {n} nodes")
    cdef array tptr = _new(n + 1)
    cdef _Buf tind = _transpose(ptr_a.data.as_longlongs, ind_a.data.as_longlongs,
                                rows_a.data.as_longlongs, len(rows_a), NULL,
                                tptr.data.as_longlongs, n)
    cdef array out = _new(tptr.data.as_longlongs[n], False)
    for i in range(len(out)):
        out.data.as_longlongs[i] = tind.p[i]
    return tptr, out


cdef void _dependents(_Work w) except *:
    """Dependents among the needed nodes (CSR ``dptr``/``dep_of``, in order); node ``u`` has
    ``dptr[u + 1] - dptr[u]`` of them."""
    w.dptr_b = _Buf(w.n + 1, 0)
    w.dptr = w.dptr_b.p
    w.dep_of_b = _transpose(w.indptr, w.indices, w.order, w.m, NULL, w.dptr, w.n)
    w.dep_of = w.dep_of_b.p
